//! `wharf clusters …`: the Kubernetes clusters pipelines deploy to (DESIGN.md §10
//! Clusters), with the same connection, errors and exit codes as the other client
//! commands ([`crate::client`]). The kubeconfig goes to the server once, on `add`; no
//! answer carries it back.

use super::http::CALL_TIMEOUT;
use super::{ApiError, Client, Conn, when};
use crate::report;
use anyhow::{Context, Result, bail};
use reqwest::{Method, StatusCode};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use wharf_api::clusters::{Cluster, ClusterInUse, Clusters, NewCluster};

/// Kubeconfigs are a few KiB (embedded certificates included); a bigger file is the
/// wrong file.
const MAX_KUBECONFIG: u64 = 1024 * 1024;

#[derive(clap::Args, Debug)]
pub struct ClustersArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub command: ClustersCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ClustersCommand {
    /// Register a cluster from a kubeconfig; the server checks it (version, namespaces,
    /// nodes) and creates the pipeline namespace `ecp-devops-<short id>`.
    Add {
        name: String,
        /// The kubeconfig file (`-` reads standard input). Its text is sealed on the
        /// server and never shown again.
        #[arg(long, value_name = "FILE")]
        kubeconfig: PathBuf,
        /// The context to use [default: the file's current-context].
        #[arg(long, value_name = "CONTEXT")]
        context: Option<String>,
        /// The project whose pipelines may deploy to it [default: admin].
        #[arg(long, value_name = "PROJECT")]
        project: Option<String>,
        /// Register without contacting the cluster (its health shows `unchecked`).
        #[arg(long)]
        no_verify: bool,
    },
    /// Clusters with their server, version, nodes, pipeline namespace and health.
    List,
    /// One cluster in full, with its last check's error.
    Show { name: String },
    /// Check a cluster now (and apply its pipeline namespace again: what one added with
    /// --no-verify needs once it is reachable).
    Check { name: String },
    /// Forget a cluster (refused while pipelines deploy to it; nothing in the cluster is
    /// deleted).
    Remove { name: String },
}

pub async fn clusters(args: ClustersArgs) -> Result<ExitCode> {
    let client = Client::new(&args.conn)?;
    match args.command {
        ClustersCommand::Add { name, kubeconfig, context, project, no_verify } => {
            let kubeconfig = read_kubeconfig(&kubeconfig)?;
            let body = NewCluster { name, kubeconfig, context, project };
            let mut target = client.url(&["clusters"]);
            if no_verify {
                target.set_query(Some("verify=false"));
            }
            let saved: Cluster = client.fetch_with(Method::POST, target, &body).await?;
            println!(
                "registered cluster {} at {} (context {}, project {})",
                saved.name, saved.server, saved.context, saved.project
            );
            println!("  health: {}", health_line(&saved));
            println!("  pipeline namespace: {}", saved.namespace);
            Ok(ExitCode::SUCCESS)
        }
        ClustersCommand::List => {
            let answer: Clusters = client.get(&["clusters"]).await?;
            print!("{}", list(&answer.items));
            Ok(ExitCode::SUCCESS)
        }
        ClustersCommand::Show { name } => {
            let shown: Cluster = client.get(&["clusters", &name]).await?;
            print!("{}", show(&shown));
            Ok(ExitCode::SUCCESS)
        }
        ClustersCommand::Check { name } => {
            let checked: Cluster = client.fetch(Method::POST, client.url(&["clusters", &name, "check"])).await?;
            println!("cluster {}: {}", checked.name, health_line(&checked));
            // A check that failed is the command's failure too (scripts wait on it).
            Ok(if checked.health.status == "healthy" { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        ClustersCommand::Remove { name } => {
            let request = client.request(Method::DELETE, client.url(&["clusters", &name])).timeout(CALL_TIMEOUT);
            let response = client.send_reading(request, in_use).await?;
            response.bytes().await.context("reading the server's answer")?;
            println!("removed cluster {name}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The kubeconfig's text from a file or standard input, bounded and non-empty.
fn read_kubeconfig(path: &Path) -> Result<String> {
    let (shown, mut reader): (String, Box<dyn Read>) = if path == Path::new("-") {
        ("standard input".into(), Box::new(std::io::stdin()))
    } else {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open the kubeconfig {}", path.display()))?;
        (path.display().to_string(), Box::new(file))
    };
    let mut bytes = Vec::new();
    reader
        .by_ref()
        .take(MAX_KUBECONFIG + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read the kubeconfig {shown}"))?;
    if bytes.len() as u64 > MAX_KUBECONFIG {
        bail!("the kubeconfig {shown} is over {} KiB: is it the right file?", MAX_KUBECONFIG / 1024);
    }
    let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("the kubeconfig {shown} is not UTF-8 text"))?;
    if text.trim().is_empty() {
        bail!("the kubeconfig {shown} is empty");
    }
    Ok(text)
}

/// A refused `DELETE` names the pipelines still deploying to the cluster.
fn in_use(status: StatusCode, body: &[u8]) -> Option<anyhow::Error> {
    if status != StatusCode::CONFLICT {
        return None;
    }
    let refused: ClusterInUse = serde_json::from_slice(body).ok()?;
    let said = refused.error.message;
    let message = if refused.pipelines.is_empty() {
        said
    } else {
        format!("{said}\n  still used by the pipelines: {}", refused.pipelines.join(", "))
    };
    Some(ApiError { status: status.as_u16(), message, details: vec![] }.into())
}

/// `healthy, Kubernetes v1.33.2, nodes 3/3 ready`, or what went wrong.
fn health_line(c: &Cluster) -> String {
    let mut parts = vec![c.health.status.clone()];
    if let Some(version) = &c.version {
        parts.push(format!("Kubernetes {version}"));
    }
    if let Some(nodes) = c.nodes {
        parts.push(format!("nodes {}/{} ready", nodes.ready, nodes.total));
    }
    if c.health.status == "unchecked" {
        parts.push("not contacted yet".into());
    }
    let mut line = parts.join(", ");
    if let Some(error) = &c.health.error {
        line.push_str(": ");
        line.push_str(error);
    }
    line
}

fn list(items: &[Cluster]) -> String {
    if items.is_empty() {
        return "no clusters yet; register one with: wharf clusters add NAME --kubeconfig FILE\n".into();
    }
    let mut rows = vec![
        ["NAME", "PROJECT", "SERVER", "VERSION", "NODES", "NAMESPACE", "HEALTH", "CHECKED"].map(String::from).to_vec(),
    ];
    for c in items {
        rows.push(vec![
            c.name.clone(),
            c.project.clone(),
            c.server.clone(),
            c.version.clone().unwrap_or_else(|| "-".into()),
            c.nodes.map(|n| format!("{}/{}", n.ready, n.total)).unwrap_or_else(|| "-".into()),
            c.namespace.clone(),
            c.health.status.clone(),
            when(c.health.checked_at),
        ]);
    }
    let mut out = report::columns(&rows);
    // The reasons under the table, where a long message does not stretch the columns.
    for c in items {
        if let Some(error) = &c.health.error {
            out.push_str(&format!("{} ({}): {error}\n", c.name, c.health.status));
        }
    }
    out
}

fn show(c: &Cluster) -> String {
    let mut out = format!("cluster {} (id {}, project {})\n", c.name, c.id, c.project);
    let mut facts = vec![
        vec!["  server".to_owned(), c.server.clone()],
        vec!["  context".into(), c.context.clone()],
        vec!["  version".into(), c.version.clone().unwrap_or_else(|| "-".into())],
        vec![
            "  nodes".into(),
            c.nodes.map(|n| format!("{} of {} ready", n.ready, n.total)).unwrap_or_else(|| "-".into()),
        ],
        vec!["  namespace".into(), c.namespace.clone()],
        vec!["  health".into(), c.health.status.clone()],
        vec!["  checked".into(), when(c.health.checked_at)],
    ];
    if let Some(error) = &c.health.error {
        facts.push(vec!["  error".into(), error.clone()]);
    }
    facts.push(vec!["  created".into(), format!("{} by {}", when(Some(c.created_at)), c.created_by)]);
    out.push_str(&report::columns(&facts));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_api::clusters::{Health, Nodes};

    fn cluster(status: &str, error: Option<&str>) -> Cluster {
        Cluster {
            id: 3,
            name: "prod".into(),
            project: "shop".into(),
            server: "https://10.0.0.1:6443".into(),
            context: "prod-admin".into(),
            version: error.is_none().then(|| "v1.33.2".into()),
            nodes: error.is_none().then_some(Nodes { ready: 2, total: 3 }),
            namespace: "ecp-devops-1a2b3c".into(),
            health: Health { status: status.into(), error: error.map(str::to_owned), checked_at: None },
            created_by: "admin".into(),
            created_at: 0,
        }
    }

    #[test]
    fn the_list_puts_each_reason_under_the_table() {
        let out = list(&[cluster("healthy", None), cluster("unauthorized", Some("Unauthorized"))]);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("NAME") && lines[0].contains("NODES") && lines[0].ends_with("CHECKED"));
        assert!(lines[1].contains("v1.33.2") && lines[1].contains("2/3") && lines[1].contains("healthy"));
        assert!(lines[2].contains("unauthorized") && lines[2].contains(" - "));
        assert_eq!(lines[3], "prod (unauthorized): Unauthorized");
        assert!(list(&[]).contains("wharf clusters add NAME --kubeconfig FILE"));
    }

    #[test]
    fn show_and_add_say_the_health_and_its_error() {
        let out = show(&cluster("unreachable", Some("connection refused")));
        assert!(out.starts_with("cluster prod (id 3, project shop)\n"));
        assert!(
            out.contains("  health     unreachable\n") && out.contains("  error      connection refused\n"),
            "{out}"
        );
        assert_eq!(health_line(&cluster("healthy", None)), "healthy, Kubernetes v1.33.2, nodes 2/3 ready");
        assert_eq!(
            health_line(&cluster("unchecked", None)),
            "unchecked, Kubernetes v1.33.2, nodes 2/3 ready, not contacted yet"
        );
    }

    #[test]
    fn a_refusal_names_the_pipelines_in_use() {
        let body = br#"{"error": {"status": 409, "message": "cluster prod is in use", "details": []},
                        "pipelines": ["shop-deploy", "web"]}"#;
        let error = in_use(StatusCode::CONFLICT, body).expect("read as ClusterInUse");
        assert_eq!(error.to_string(), "cluster prod is in use\n  still used by the pipelines: shop-deploy, web");
        assert_eq!(super::super::exit_code(&error), 2);
        let common = br#"{"error": {"status": 409, "message": "busy", "details": []}}"#;
        assert!(in_use(StatusCode::CONFLICT, common).is_none(), "the common body is left to ApiError");
        assert!(in_use(StatusCode::NOT_FOUND, body).is_none());
    }

    #[test]
    fn a_kubeconfig_must_be_a_small_text_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(read_kubeconfig(&empty).unwrap_err().to_string().contains("is empty"));
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_KUBECONFIG as usize + 1]).unwrap();
        assert!(read_kubeconfig(&big).unwrap_err().to_string().contains("is over 1024 KiB"));
        let missing = dir.path().join("missing");
        assert!(read_kubeconfig(&missing).unwrap_err().to_string().contains("cannot open the kubeconfig"));
    }
}
