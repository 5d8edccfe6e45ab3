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
use wharf_api::clusters::{Cluster, ClusterInUse, ClusterSettings, Clusters, NewCluster};

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
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Change how the kubernetes executor runs pods on a cluster: the pod defaults, the
    /// pending limit and the workspace (only the settings given change).
    Set {
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
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
        ClustersCommand::Add { name, kubeconfig, context, project, no_verify, settings } => {
            let settings = new_settings(&settings)?;
            let kubeconfig = read_kubeconfig(&kubeconfig)?;
            let body = NewCluster { name, kubeconfig, context, project, settings };
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
        ClustersCommand::Set { name, settings } => {
            let Some(patch) = settings.patch()? else {
                bail!("nothing to change: give a setting (see `wharf clusters set --help`)");
            };
            let saved: Cluster = client.fetch_with(Method::PATCH, client.url(&["clusters", &name]), &patch).await?;
            println!("cluster {}: settings saved", saved.name);
            print!("{}", report::columns(&settings_facts(&saved.settings)));
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

/// The kubernetes executor's settings of a cluster, as flags. Each flag given replaces
/// that setting; `--settings` takes the same settings as JSON (a merge patch: `null`
/// clears), the flags applied over it.
#[derive(clap::Args, Debug, Default)]
pub struct SettingsArgs {
    /// The task pods' cpu request (`500m`, `2`); an empty value clears it.
    #[arg(long, value_name = "QUANTITY")]
    pub cpu_request: Option<String>,
    /// The task pods' memory request (`512Mi`); an empty value clears it.
    #[arg(long, value_name = "QUANTITY")]
    pub memory_request: Option<String>,
    /// The task pods' cpu limit; an empty value clears it.
    #[arg(long, value_name = "QUANTITY")]
    pub cpu_limit: Option<String>,
    /// The task pods' memory limit; an empty value clears it.
    #[arg(long, value_name = "QUANTITY")]
    pub memory_limit: Option<String>,
    /// A label the node must carry (`KEY=VALUE`, repeatable; replaces the node selector;
    /// `--node-selector ''` clears it).
    #[arg(long, value_name = "KEY=VALUE")]
    pub node_selector: Vec<String>,
    /// A toleration as `kubectl taint` writes taints: `KEY[=VALUE][:EFFECT]`, or
    /// `KEY:EFFECT` / `:EFFECT` with `Exists` for no value (repeatable; replaces the
    /// tolerations; `--toleration ''` clears them).
    #[arg(long, value_name = "KEY[=VALUE][:EFFECT]")]
    pub toleration: Vec<String>,
    /// The task pods' service account; an empty value clears it.
    #[arg(long, value_name = "NAME")]
    pub service_account: Option<String>,
    /// How long a task's pod may stay `Pending` (`90s`, `10m`); an empty value: the
    /// default (10m).
    #[arg(long, value_name = "DURATION")]
    pub pending_limit: Option<String>,
    /// How the run's checkout reaches the task pods: `host-path` (a one-node cluster the
    /// server shares) or `claim` (a volume claim per run: any cluster).
    #[arg(long, value_name = "MODE")]
    pub workspace: Option<String>,
    /// The run claims' StorageClass; an empty value: the cluster's default class.
    #[arg(long, value_name = "CLASS")]
    pub storage_class: Option<String>,
    /// The run claims' size (`1Gi` by default); an empty value: the default.
    #[arg(long, value_name = "QUANTITY")]
    pub workspace_size: Option<String>,
    /// The settings as JSON (the API's `ClusterSettings`), or `@FILE`.
    #[arg(long, value_name = "JSON")]
    pub settings: Option<String>,
}

impl SettingsArgs {
    /// The settings given, as a JSON merge patch; `None` when none was.
    pub fn patch(&self) -> Result<Option<serde_json::Value>> {
        use serde_json::{Value, json};
        let mut patch = match &self.settings {
            None => json!({}),
            Some(text) => {
                let text = match text.strip_prefix('@') {
                    Some(file) => std::fs::read_to_string(file)
                        .with_context(|| format!("cannot read the settings file {file}"))?,
                    None => text.clone(),
                };
                let value: Value = serde_json::from_str(&text).context("--settings is not JSON")?;
                if !value.is_object() {
                    bail!("--settings must be a JSON object of settings (`{{\"pending_limit\": \"5m\"}}`)");
                }
                value
            }
        };
        // An empty text clears the setting.
        let text = |v: &str| if v.is_empty() { Value::Null } else { Value::String(v.to_owned()) };
        let mut set = |path: &[&str], value: Value| {
            let mut at = &mut patch;
            for key in &path[..path.len() - 1] {
                let object = at.as_object_mut().expect("patch levels are objects");
                at = object.entry(key.to_string()).or_insert_with(|| json!({}));
                if !at.is_object() {
                    *at = json!({});
                }
            }
            at.as_object_mut().expect("patch levels are objects").insert(path[path.len() - 1].to_owned(), value);
        };
        for (path, value) in [
            (["resources", "requests", "cpu"], &self.cpu_request),
            (["resources", "requests", "memory"], &self.memory_request),
            (["resources", "limits", "cpu"], &self.cpu_limit),
            (["resources", "limits", "memory"], &self.memory_limit),
        ] {
            if let Some(v) = value {
                set(&path, text(v));
            }
        }
        if !self.node_selector.is_empty() {
            let mut labels = serde_json::Map::new();
            for pair in self.node_selector.iter().filter(|p| !p.is_empty()) {
                let Some((k, v)) = pair.split_once('=') else {
                    bail!("--node-selector {pair:?}: give KEY=VALUE");
                };
                labels.insert(k.to_owned(), Value::String(v.to_owned()));
            }
            set(&["node_selector"], Value::Object(labels));
        }
        if !self.toleration.is_empty() {
            let all: Vec<Value> = self.toleration.iter().filter(|t| !t.is_empty()).map(|t| toleration(t)).collect();
            set(&["tolerations"], Value::Array(all));
        }
        for (path, value) in [
            (&["service_account"][..], &self.service_account),
            (&["pending_limit"][..], &self.pending_limit),
            (&["workspace", "mode"][..], &self.workspace),
            (&["workspace", "storage_class"][..], &self.storage_class),
            (&["workspace", "size"][..], &self.workspace_size),
        ] {
            if let Some(v) = value {
                set(path, text(v));
            }
        }
        Ok(patch.as_object().is_some_and(|o| !o.is_empty()).then_some(patch))
    }
}

/// `KEY[=VALUE][:EFFECT]` as a toleration: with a value `Equal`, without `Exists`.
fn toleration(text: &str) -> serde_json::Value {
    let (rest, effect) = match text.rsplit_once(':') {
        Some((rest, effect)) => (rest, Some(effect)),
        None => (text, None),
    };
    let mut t = serde_json::Map::new();
    match rest.split_once('=') {
        Some((key, value)) => {
            t.insert("key".into(), key.into());
            t.insert("operator".into(), "Equal".into());
            t.insert("value".into(), value.into());
        }
        None => {
            if !rest.is_empty() {
                t.insert("key".into(), rest.into());
            }
            t.insert("operator".into(), "Exists".into());
        }
    }
    if let Some(effect) = effect.filter(|e| !e.is_empty()) {
        t.insert("effect".into(), effect.into());
    }
    serde_json::Value::Object(t)
}

/// The settings for `add`: the patch over every default, read as the API's type (a
/// field it does not know is an error here, before anything is sent).
fn new_settings(args: &SettingsArgs) -> Result<Option<ClusterSettings>> {
    let Some(patch) = args.patch()? else { return Ok(None) };
    let mut value = serde_json::to_value(ClusterSettings::default()).expect("settings serialize");
    merge(&mut value, patch);
    Ok(Some(serde_json::from_value(value).context("the cluster settings")?))
}

/// RFC 7386 merge: objects field by field, `null` removes.
fn merge(target: &mut serde_json::Value, patch: serde_json::Value) {
    match (target.as_object_mut(), patch) {
        (Some(object), serde_json::Value::Object(fields)) => {
            for (k, v) in fields {
                if v.is_null() {
                    object.remove(&k);
                } else {
                    merge(object.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (_, patch) => *target = patch,
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
    out.push_str("  kubernetes executor settings (wharf clusters set):\n");
    out.push_str(&report::columns(&settings_facts(&c.settings)));
    out
}

/// The settings, one line each (`-` for a default).
fn settings_facts(s: &ClusterSettings) -> Vec<Vec<String>> {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let pair = |req: &Option<String>, lim: &Option<String>| format!("{} / {}", or_dash(req), or_dash(lim));
    let r = &s.resources;
    let selector: Vec<String> = s.node_selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let tolerations: Vec<String> = s
        .tolerations
        .iter()
        .map(|t| {
            let mut text = t.key.clone().unwrap_or_default();
            if let Some(v) = &t.value {
                text.push_str(&format!("={v}"));
            }
            if let Some(e) = &t.effect {
                text.push_str(&format!(":{e}"));
            }
            if t.operator.as_deref() == Some("Exists") {
                text.push_str(" (exists)");
            }
            text
        })
        .collect();
    let mut workspace = s.workspace.mode.clone();
    if s.workspace.mode == "claim" {
        workspace.push_str(&format!(
            ", {} of class {}",
            s.workspace.size.as_deref().unwrap_or("1Gi"),
            s.workspace.storage_class.as_deref().unwrap_or("(the cluster's default)")
        ));
    }
    let joined = |v: Vec<String>| if v.is_empty() { "-".to_owned() } else { v.join(", ") };
    vec![
        vec!["    cpu (request / limit)".into(), pair(&r.requests.cpu, &r.limits.cpu)],
        vec!["    memory (request / limit)".into(), pair(&r.requests.memory, &r.limits.memory)],
        vec!["    node selector".into(), joined(selector)],
        vec!["    tolerations".into(), joined(tolerations)],
        vec!["    service account".into(), or_dash(&s.service_account)],
        vec!["    pending limit".into(), s.pending_limit.clone().unwrap_or_else(|| "10m (default)".into())],
        vec!["    workspace".into(), workspace],
    ]
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
            settings: Default::default(),
            created_by: "admin".into(),
            created_at: 0,
        }
    }

    #[test]
    fn settings_flags_make_a_merge_patch() {
        let args = SettingsArgs {
            cpu_request: Some("250m".into()),
            memory_limit: Some(String::new()),
            node_selector: vec!["pool=ci".into()],
            toleration: vec!["gpu=yes:NoSchedule".into(), "spot".into(), ":NoExecute".into()],
            workspace: Some("claim".into()),
            settings: Some(r#"{"pending_limit": "5m", "resources": {"limits": {"cpu": "2"}}}"#.into()),
            ..Default::default()
        };
        let patch = args.patch().unwrap().unwrap();
        assert_eq!(
            patch,
            serde_json::json!({
                "pending_limit": "5m",
                "resources": {"limits": {"cpu": "2", "memory": null}, "requests": {"cpu": "250m"}},
                "node_selector": {"pool": "ci"},
                "tolerations": [
                    {"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"},
                    {"key": "spot", "operator": "Exists"},
                    {"operator": "Exists", "effect": "NoExecute"},
                ],
                "workspace": {"mode": "claim"},
            })
        );
        assert!(SettingsArgs::default().patch().unwrap().is_none());
        let made = new_settings(&args).unwrap().unwrap();
        assert_eq!(made.resources.limits.cpu.as_deref(), Some("2"));
        assert_eq!(made.workspace.mode, "claim");
        let bad = SettingsArgs { settings: Some(r#"{"pendin_limit": "5m"}"#.into()), ..Default::default() };
        assert!(format!("{:#}", new_settings(&bad).unwrap_err()).contains("pendin_limit"));
        assert!(show(&cluster("healthy", None)).contains("    workspace                 host-path\n"));
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
