//! `wharf releases …`: Helm releases (template instances) in a registered cluster —
//! every release `chart-deploy` or `helm install` made — listed, shown with their history,
//! rolled back, upgraded and uninstalled through the server (docs/api.md "Releases").

use super::{Client, Conn};
use crate::report;
use anyhow::{Context, Result};
use reqwest::Method;
use std::process::ExitCode;
use std::time::Duration;
use wharf_api::releases::{Operation, Release, ReleaseDetail, Releases, Rollback, Upgrade};

/// Rollbacks, upgrades and uninstalls wait for hooks and rollouts (the server gives up
/// after 10 minutes); the call waits a little longer than that.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(660);

#[derive(clap::Args, Debug)]
pub struct ReleasesArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub command: ReleasesCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum ReleasesCommand {
    /// The releases in a cluster at their latest revision (Wharf's and Helm's).
    List {
        cluster: String,
        /// Only this namespace.
        #[arg(long, short = 'n')]
        namespace: Option<String>,
    },
    /// One release: its values, notes, where its chart came from and its history.
    Show { cluster: String, namespace: String, release: String },
    /// A new revision from an old one (as `helm rollback`).
    Rollback { cluster: String, namespace: String, release: String, revision: u32 },
    /// Upgrade to another chart version, pulled from where the release came from.
    #[command(disable_version_flag = true)]
    Upgrade {
        cluster: String,
        namespace: String,
        release: String,
        /// The chart version.
        #[arg(long = "version", id = "chart_version", value_name = "VERSION")]
        version: String,
        /// The values as a JSON object (replacing the release's; kept when left out).
        #[arg(long, value_name = "JSON")]
        values: Option<String>,
        /// The registry to pull from [default: the one the release remembers].
        #[arg(long)]
        registry: Option<String>,
        /// The workspace to pull from [default: the one the release remembers].
        #[arg(long)]
        workspace: Option<String>,
    },
    /// Uninstall: hooks run, the release's objects and its history deleted.
    Uninstall { cluster: String, namespace: String, release: String },
}

pub async fn releases(args: ReleasesArgs) -> Result<ExitCode> {
    let client = Client::new(&args.conn)?;
    match args.command {
        ReleasesCommand::List { cluster, namespace } => {
            let mut url = client.url(&["clusters", &cluster, "releases"]);
            if let Some(ns) = &namespace {
                url.query_pairs_mut().append_pair("namespace", ns);
            }
            let answer: Releases = client.fetch(Method::GET, url).await?;
            print!("{}", list(&cluster, &answer));
            Ok(ExitCode::SUCCESS)
        }
        ReleasesCommand::Show { cluster, namespace, release } => {
            let shown: ReleaseDetail =
                client.get(&["clusters", &cluster, "namespaces", &namespace, "releases", &release]).await?;
            print!("{}", show(&shown));
            Ok(ExitCode::SUCCESS)
        }
        ReleasesCommand::Rollback { cluster, namespace, release, revision } => {
            let url = client.url(&["clusters", &cluster, "namespaces", &namespace, "releases", &release, "rollback"]);
            let request = client.request(Method::POST, url).timeout(OPERATION_TIMEOUT).json(&Rollback { revision });
            let done: Operation = client.answer(request).await?;
            print!("{}", operation(&format!("rolled back to revision {revision}"), &done));
            Ok(ExitCode::SUCCESS)
        }
        ReleasesCommand::Upgrade { cluster, namespace, release, version, values, registry, workspace } => {
            let values = match values {
                Some(text) => {
                    let value: serde_json::Value = serde_json::from_str(&text).context("--values is not JSON")?;
                    match value {
                        serde_json::Value::Object(map) => Some(map),
                        _ => anyhow::bail!("--values must be a JSON object ({{\"replicaCount\": 2}})"),
                    }
                }
                None => None,
            };
            let body = Upgrade { version: version.clone(), values, registry, workspace };
            let url = client.url(&["clusters", &cluster, "namespaces", &namespace, "releases", &release, "upgrade"]);
            let request = client.request(Method::POST, url).timeout(OPERATION_TIMEOUT).json(&body);
            let done: Operation = client.answer(request).await?;
            print!("{}", operation(&format!("upgraded to chart version {version}"), &done));
            Ok(ExitCode::SUCCESS)
        }
        ReleasesCommand::Uninstall { cluster, namespace, release } => {
            let url = client.url(&["clusters", &cluster, "namespaces", &namespace, "releases", &release]);
            let request = client.request(Method::DELETE, url).timeout(OPERATION_TIMEOUT);
            let done: Operation = client.answer(request).await?;
            println!(
                "uninstalled release {} from namespace {}: {} object(s) deleted",
                done.release,
                done.namespace,
                done.objects.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn row(r: &Release) -> Vec<String> {
    vec![
        r.namespace.clone(),
        r.name.clone(),
        r.revision.to_string(),
        r.status.clone(),
        format!("{}-{}", r.chart, r.version),
        if r.app_version.is_empty() { "-".into() } else { r.app_version.clone() },
        r.updated.clone(),
    ]
}

fn list(cluster: &str, answer: &Releases) -> String {
    let mut out = if answer.items.is_empty() {
        format!("no releases in cluster {cluster}\n")
    } else {
        let mut rows = vec![
            ["NAMESPACE", "NAME", "REVISION", "STATUS", "CHART", "APP VERSION", "UPDATED"].map(String::from).to_vec(),
        ];
        rows.extend(answer.items.iter().map(row));
        report::columns(&rows)
    };
    for why in &answer.unreadable {
        out.push_str(&format!("unreadable: {why}\n"));
    }
    out
}

fn show(d: &ReleaseDetail) -> String {
    let r = &d.release;
    let mut out = format!("release {} in namespace {} ({})\n", r.name, r.namespace, r.status);
    let facts = vec![
        vec!["  chart".to_owned(), format!("{}-{}", r.chart, r.version)],
        vec!["  app version".into(), if r.app_version.is_empty() { "-".into() } else { r.app_version.clone() }],
        vec!["  revision".into(), r.revision.to_string()],
        vec!["  updated".into(), r.updated.clone()],
        vec!["  source".into(), d.source.clone().unwrap_or_else(|| "- (not deployed by Wharf)".into())],
        vec!["  values".into(), serde_json::Value::Object(d.values.clone()).to_string()],
    ];
    out.push_str(&report::columns(&facts));
    out.push_str("history:\n");
    let mut rows =
        vec![["REVISION", "UPDATED", "STATUS", "CHART", "APP VERSION", "DESCRIPTION"].map(String::from).to_vec()];
    for h in &d.history {
        rows.push(vec![
            h.revision.to_string(),
            h.updated.clone(),
            h.status.clone(),
            format!("{}-{}", h.chart, h.version),
            if h.app_version.is_empty() { "-".into() } else { h.app_version.clone() },
            h.description.clone(),
        ]);
    }
    out.push_str(&report::columns(&rows));
    if !d.notes.is_empty() {
        out.push_str("notes:\n");
        out.push_str(&d.notes);
        if !d.notes.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

fn operation(what: &str, done: &Operation) -> String {
    let mut out = format!(
        "release {} in namespace {} {what}: revision {}, {}\n",
        done.release, done.namespace, done.revision, done.status
    );
    for o in &done.objects {
        out.push_str(&format!("  {o}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_api::releases::Revision;

    fn release(name: &str) -> Release {
        Release {
            name: name.into(),
            namespace: "games".into(),
            chart: "nginx".into(),
            version: "1.0.7".into(),
            app_version: String::new(),
            revision: 3,
            status: "deployed".into(),
            updated: "2026-12-07T10:00:00Z".into(),
            description: "Rollback to 1".into(),
        }
    }

    #[test]
    fn the_list_is_helm_lists_columns() {
        let answer =
            Releases { items: vec![release("web")], total: 1, unreadable: vec!["Secret x: not base64".into()] };
        let out = list("prod", &answer);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE") && lines[0].contains("APP VERSION"), "{out}");
        assert!(lines[1].contains("web") && lines[1].contains("nginx-1.0.7") && lines[1].contains(" - "), "{out}");
        assert_eq!(lines[2], "unreadable: Secret x: not base64");
        assert_eq!(
            list("prod", &Releases { items: vec![], total: 0, unreadable: vec![] }),
            "no releases in cluster prod\n"
        );
    }

    #[test]
    fn show_has_the_history_and_the_source() {
        let d = ReleaseDetail {
            release: release("web"),
            values: serde_json::from_str(r#"{"replicaCount": 2}"#).unwrap(),
            notes: "hello".into(),
            source: None,
            history: vec![Revision {
                revision: 1,
                status: "superseded".into(),
                chart: "nginx".into(),
                version: "1.0.6".into(),
                app_version: "1.27".into(),
                updated: "2026-12-07T09:00:00Z".into(),
                description: "Install complete".into(),
            }],
        };
        let out = show(&d);
        assert!(out.starts_with("release web in namespace games (deployed)\n"), "{out}");
        assert!(out.contains("not deployed by Wharf") && out.contains(r#"{"replicaCount":2}"#), "{out}");
        assert!(
            out.contains("nginx-1.0.6") && out.contains("Install complete") && out.ends_with("notes:\nhello\n"),
            "{out}"
        );
    }
}
