//! `wharf pipelines apply|list|show|copy|delete|activate|deactivate|schedule|yaml|hook`.

use super::{Client, Conn, key, when, with_query, write_out};
use crate::report;
use anyhow::{Context, Result};
use reqwest::Method;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use wharf_api::Paged;
use wharf_api::pipelines::{CopyPipeline, Pipeline, PipelineListed, PipelineShown, Saved};
use wharf_api::runs::RunSummary;
use wharf_api::schedule::Schedule;

#[derive(clap::Args, Debug)]
pub struct PipelinesArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub command: PipelinesCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum PipelinesCommand {
    /// Create a pipeline from a YAML file, or save the file as a new version of the
    /// pipeline that has its name.
    Apply {
        /// The pipeline file (YAML).
        file: PathBuf,
        /// Start a run of the saved version.
        #[arg(long)]
        run: bool,
    },
    /// List the pipelines with their last run.
    List,
    /// A pipeline's summary, stages and tasks, and versions.
    Show {
        /// The pipeline's name or id.
        pipeline: String,
    },
    /// Copy a pipeline (stages, timeout, all of it) under a new name.
    Copy {
        /// The pipeline to copy (name or id).
        source: String,
        /// The new pipeline's name.
        name: String,
    },
    /// Delete a pipeline with its runs and logs.
    Delete {
        /// The pipeline's name or id.
        pipeline: String,
    },
    /// Let a pipeline start runs again.
    Activate {
        /// The pipeline's name or id.
        pipeline: String,
    },
    /// Stop a pipeline from starting runs; its history is kept.
    Deactivate {
        /// The pipeline's name or id.
        pipeline: String,
    },
    /// The next fire times of each of a pipeline's timer triggers.
    Schedule {
        /// The pipeline's name or id.
        pipeline: String,
        /// How many times per trigger, 1 to 50.
        #[arg(long, value_name = "N", default_value_t = 5)]
        count: u32,
    },
    /// Make (or replace) the hook URL of a stage that waits with `hook: true`; the URL
    /// is shown this once.
    Hook {
        /// The pipeline's name or id.
        pipeline: String,
        /// The stage's name.
        stage: String,
    },
    /// Print a pipeline's saved YAML.
    #[command(disable_version_flag = true)]
    Yaml {
        /// The pipeline's name or id.
        pipeline: String,
        /// A saved version [default: the latest].
        #[arg(long, value_name = "N")]
        version: Option<u64>,
    },
}

pub async fn pipelines(args: PipelinesArgs) -> Result<ExitCode> {
    let client = Client::new(&args.conn)?;
    match args.command {
        PipelinesCommand::Apply { file, run } => apply(&client, &file, run).await,
        PipelinesCommand::List => list_pipelines(&client).await,
        PipelinesCommand::Show { pipeline } => show_pipeline(&client, &pipeline).await,
        PipelinesCommand::Copy { source, name } => {
            let saved: Saved = client.post(&["pipelines", key(&source)?, "copy"], &CopyPipeline { name }).await?;
            println!("copied pipeline {source} to {} (id {}, version {})", saved.name, saved.id, saved.version);
            Ok(ExitCode::SUCCESS)
        }
        PipelinesCommand::Delete { pipeline } => {
            client.perform(Method::DELETE, client.url(&["pipelines", key(&pipeline)?]), None).await?;
            println!("deleted pipeline {pipeline} with its runs");
            Ok(ExitCode::SUCCESS)
        }
        PipelinesCommand::Activate { pipeline } => set_active(&client, &pipeline, true).await,
        PipelinesCommand::Deactivate { pipeline } => set_active(&client, &pipeline, false).await,
        PipelinesCommand::Schedule { pipeline, count } => schedule(&client, &pipeline, count).await,
        PipelinesCommand::Hook { pipeline, stage } => {
            let hook: wharf_api::signals::StageHook =
                client.post(&["pipelines", key(&pipeline)?, "stages", &stage, "hook"], &serde_json::json!({})).await?;
            println!(
                "hook URL of stage {} of pipeline {} (shown this once; it is the stage's password):",
                hook.stage, hook.pipeline
            );
            println!("{}{}", client.shown.trim_end_matches('/'), hook.url);
            println!("signal it: curl -X POST -H 'Content-Type: application/json' -d '{{\"NAME\":\"value\"}}' URL");
            Ok(ExitCode::SUCCESS)
        }
        PipelinesCommand::Yaml { pipeline, version } => {
            let url = client.url(&["pipelines", key(&pipeline)?, "yaml"]);
            let url = with_query(url, &version.map(|v| ("version", v.to_string())).into_iter().collect::<Vec<_>>());
            let (_, body) = client.bytes(url).await?;
            write_out(&body)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn schedule(client: &Client, pipeline: &str, count: u32) -> Result<ExitCode> {
    let url = with_query(client.url(&["pipelines", key(pipeline)?, "schedule"]), &[("count", count.to_string())]);
    let shown: Schedule = client.fetch(Method::GET, url).await?;
    print!("{}", schedule_text(&shown));
    Ok(ExitCode::SUCCESS)
}

/// A JSON value as a person reads it: text bare, `null` empty.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `trigger 1: every_hours: 2, at_minute: 28 (Asia/Shanghai)` and its times, one a line.
fn schedule_text(shown: &Schedule) -> String {
    let name = &shown.name;
    if shown.triggers.is_empty() {
        return format!("pipeline {name} has no timer triggers\n");
    }
    let mut out = format!("pipeline {name}: next fire times\n");
    if !shown.active {
        out.push_str("(inactive: its timers fire nothing until it is activated)\n");
    }
    for trigger in &shown.triggers {
        let kind = &trigger.kind;
        // The trigger's fields are as the YAML writes them: free-form by kind.
        let brief = |v: &Value| match v {
            Value::Array(items) => format!("[{}]", items.iter().map(text).collect::<Vec<_>>().join(", ")),
            other => text(other),
        };
        let mut fields = vec![format!("{kind}: {}", brief(&trigger.trigger[kind]))];
        if let Some(map) = trigger.trigger.as_object() {
            fields.extend(map.iter().filter(|(k, _)| *k != kind).map(|(k, v)| format!("{k}: {}", brief(v))));
        }
        out.push_str(&format!("trigger {}: {} ({})\n", trigger.index, fields.join(", "), trigger.timezone));
        for time in &trigger.next {
            // 2021-03-25T14:54:00+08:00 → 2021-03-25 14:54:00 +08:00
            let shown = match (time.get(..10), time.get(11..19), time.get(19..)) {
                (Some(day), Some(clock), Some(offset)) if time.as_bytes()[10] == b'T' => {
                    format!("{day} {clock} {}", if offset == "Z" { "+00:00" } else { offset })
                }
                _ => time.clone(),
            };
            out.push_str(&format!("  {shown}\n"));
        }
    }
    out
}

async fn set_active(client: &Client, pipeline: &str, active: bool) -> Result<ExitCode> {
    let verb = if active { "activate" } else { "deactivate" };
    let row: Pipeline = client.fetch(Method::POST, client.url(&["pipelines", key(pipeline)?, verb])).await?;
    let now = if row.active { "active" } else { "inactive" };
    let note = if active { "" } else { "; it starts no runs until activated, and its history is kept" };
    println!("pipeline {} is {now}{note}", row.name);
    Ok(ExitCode::SUCCESS)
}

/// Every pipeline, page after page.
async fn all_pipelines(client: &Client) -> Result<Vec<PipelineListed>> {
    let mut items = Vec::new();
    for page in 1.. {
        let url = with_query(client.url(&["pipelines"]), &[("limit", "200".into()), ("page", page.to_string())]);
        let answer: Paged<PipelineListed> = client.fetch(Method::GET, url).await?;
        let got = answer.items.len();
        let done = got < 200 || (items.len() + got) as i64 >= answer.total;
        items.extend(answer.items);
        if done {
            break;
        }
    }
    Ok(items)
}

async fn apply(client: &Client, file: &Path, run: bool) -> Result<ExitCode> {
    let yaml = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let shown = file.display().to_string();
    // The name decides between create and update. A file that does not validate here
    // goes to the server anyway, which reports its problems with line and column.
    let parsed = wharf_pipeline::parse(&yaml).ok();
    let project: Vec<(&str, String)> =
        parsed.as_ref().and_then(|p| p.project.clone()).map(|p| ("project", p)).into_iter().collect();
    let mut query = project.clone();
    if run {
        query.push(("run", "true".into()));
    }
    let existing = match &parsed {
        None => None,
        Some(p) => {
            let name = p.name.as_str();
            let found: Option<PipelineShown> =
                client.find(with_query(client.url(&["pipelines", name]), &project)).await?;
            match found {
                Some(shown) if shown.pipeline.name == name => Some(shown.pipeline.id),
                // A name of digits reads as an id: look for the name itself.
                Some(_) => all_pipelines(client)
                    .await?
                    .into_iter()
                    .find(|row| {
                        row.pipeline.name == name
                            && p.project.as_deref().is_none_or(|want| row.pipeline.project == want)
                    })
                    .map(|row| row.pipeline.id),
                None => None,
            }
        }
    };
    let (method, url) = match existing {
        Some(id) => (Method::PUT, with_query(client.url(&["pipelines", &id.to_string()]), &query)),
        None => (Method::POST, with_query(client.url(&["pipelines"]), &query)),
    };
    let request = client.request(method, url).header("content-type", "application/yaml").body(yaml);
    let saved: Saved = client.answer(request).await.with_context(|| format!("cannot save {shown}"))?;
    let name = &saved.name;
    if existing.is_some() {
        println!("updated pipeline {name} to version {}", saved.version);
    } else {
        println!("created pipeline {name} (id {}, version {})", saved.id, saved.version);
    }
    if let Some(hook) = &saved.webhook {
        // Installed or present: one line; otherwise what a person must do.
        let mark = match hook.status {
            wharf_api::pipelines::WebhookStatus::Installed | wharf_api::pipelines::WebhookStatus::Present => "webhook",
            _ => "webhook (needs you)",
        };
        eprintln!("{mark}: {}", hook.message);
    }
    if let Some(run) = &saved.run {
        println!("started run #{} of {name} (id {})", run.number, run.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// `#3 succeeded` for a run summary.
fn run_brief(summary: Option<&RunSummary>) -> String {
    match summary {
        Some(run) => format!("#{} {}", run.number, run.status),
        None => "-".into(),
    }
}

async fn list_pipelines(client: &Client) -> Result<ExitCode> {
    let items = all_pipelines(client).await?;
    if items.is_empty() {
        println!("no pipelines yet; create one with: wharf pipelines apply FILE");
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![vec![
        "NAME".to_owned(),
        "ID".into(),
        "PROJECT".into(),
        "ACTIVE".into(),
        "VERSION".into(),
        "LAST RUN".into(),
    ]];
    for item in &items {
        let p = &item.pipeline;
        rows.push(vec![
            p.name.clone(),
            p.id.to_string(),
            p.project.clone(),
            if p.active { "yes".into() } else { "no".into() },
            p.version.to_string(),
            run_brief(item.last_run.as_ref()),
        ]);
    }
    print!("{}", report::columns(&rows));
    Ok(ExitCode::SUCCESS)
}

fn stage_lines(out: &mut String, stages: &[wharf_core::model::Stage]) {
    for stage in stages {
        let mut notes = vec![format!("{:?}", stage.mode).to_lowercase()];
        if stage.on_error != wharf_core::model::ErrorPolicy::Stop {
            notes.push(format!("on error: {}", format!("{:?}", stage.on_error).to_lowercase()));
        }
        if let Some(t) = stage.timeout {
            notes.push(format!("timeout {t}"));
        }
        out.push_str(&format!("  {} ({})\n", stage.name, notes.join(", ")));
        let rows: Vec<Vec<String>> = stage
            .tasks
            .iter()
            .map(|task| {
                let kind = serde_json::to_value(&task.kind).ok();
                let kind = kind.as_ref().and_then(|k| k["type"].as_str()).unwrap_or("?").to_owned();
                let mut extra = Vec::new();
                if let Some(t) = task.timeout {
                    extra.push(format!("timeout {t}"));
                }
                if task.retries > 0 {
                    extra.push(format!("retries {}", task.retries));
                }
                vec![format!("    - {}", task.name), kind, extra.join(", ")]
            })
            .collect();
        out.push_str(&report::columns(&rows));
    }
}

async fn show_pipeline(client: &Client, pipeline: &str) -> Result<ExitCode> {
    let shown: PipelineShown = client.get(&["pipelines", key(pipeline)?]).await?;
    let p = &shown.pipeline;
    let active = if p.active { "active" } else { "inactive" };
    let mut out = format!("pipeline {} (id {}, project {}, {active})\n", p.name, p.id, p.project);
    let mut facts: Vec<Vec<String>> = Vec::new();
    if let Some(d) = &shown.description {
        facts.push(vec!["  description".into(), d.clone()]);
    }
    facts.push(vec!["  version".into(), format!("{} (saved {})", p.version, when(Some(p.updated_at)))]);
    let model: Option<wharf_core::model::Pipeline> = serde_json::from_value(shown.definition.clone()).ok();
    if let Some(m) = &model {
        if let Some(source) = &m.source {
            let branch = source.branch.as_deref().map(|b| format!(" (branch {b})")).unwrap_or_default();
            facts.push(vec!["  source".into(), format!("{}{branch}", source.repo)]);
        }
        if let Some(t) = m.timeout {
            facts.push(vec!["  timeout".into(), t.to_string()]);
        }
        let concurrency = serde_json::to_value(m.concurrency).ok().map(|v| text(&v)).unwrap_or_default();
        facts.push(vec!["  concurrency".into(), concurrency]);
        if !m.parameters.is_empty() {
            let params: Vec<String> = serde_json::to_value(&m.parameters)
                .ok()
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .map(|p| match p.get("default") {
                    Some(d) if !d.is_null() => format!("{}={}", text(&p["name"]), text(d)),
                    _ => text(&p["name"]),
                })
                .collect();
            facts.push(vec!["  parameters".into(), params.join(", ")]);
        }
    }
    let last = match &shown.last_run {
        None => "-".to_owned(),
        Some(run) => format!("{} (id {})", run_brief(Some(run)), run.id),
    };
    facts.push(vec!["  last run".into(), last]);
    if !shown.active_runs.is_empty() {
        let numbers: Vec<String> = shown.active_runs.iter().map(|n| format!("#{n}")).collect();
        facts.push(vec!["  in progress".into(), numbers.join(", ")]);
    }
    out.push_str(&report::columns(&facts));
    match &model {
        Some(m) => {
            out.push_str("stages\n");
            stage_lines(&mut out, &m.stages);
            if !m.on_failure.is_empty() {
                out.push_str("on failure\n");
                stage_lines(&mut out, &m.on_failure);
            }
        }
        None => {
            // A definition this client's model cannot read (a newer server): its
            // stages and tasks by name, as the JSON has them.
            out.push_str("stages\n");
            for stage in shown.definition["stages"].as_array().into_iter().flatten() {
                out.push_str(&format!("  {}\n", text(&stage["name"])));
                for task in stage["tasks"].as_array().into_iter().flatten() {
                    out.push_str(&format!("    - {}  {}\n", text(&task["name"]), text(&task["type"])));
                }
            }
        }
    }
    out.push_str("versions\n");
    let mut rows = vec![vec!["  VERSION".to_owned(), "SAVED".into()]];
    let mut versions = shown.versions.clone();
    versions.sort_by_key(|v| std::cmp::Reverse(v.version));
    for v in &versions {
        rows.push(vec![format!("  {}", v.version), when(Some(v.created_at))]);
    }
    out.push_str(&report::columns(&rows));
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schedule(value: Value) -> Schedule {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_schedule_shows_each_trigger_as_written_and_its_times() {
        let shown = schedule(json!({
            "pipeline": 1, "name": "nightly", "version": 1, "active": true, "after": "2021-03-25T14:00:00+08:00",
            "triggers": [
                { "index": 1, "kind": "every_hours", "trigger": { "every_hours": 2, "at_minute": 28 },
                  "timezone": "Asia/Shanghai", "missed": "once",
                  "next": ["2021-03-25T16:28:00+08:00", "2021-03-25T18:28:00+08:00"] },
                { "index": 2, "kind": "weekly", "trigger": { "weekly": ["mon", "thu"], "at": "09:00" },
                  "timezone": "UTC", "missed": "once", "next": ["2021-03-29T09:00:00Z"] }
            ]
        }));
        assert_eq!(
            schedule_text(&shown),
            "pipeline nightly: next fire times\n\
             trigger 1: every_hours: 2, at_minute: 28 (Asia/Shanghai)\n  2021-03-25 16:28:00 +08:00\n  2021-03-25 18:28:00 +08:00\n\
             trigger 2: weekly: [mon, thu], at: 09:00 (UTC)\n  2021-03-29 09:00:00 +00:00\n"
        );
        let none = schedule(json!({ "pipeline": 2, "name": "plain", "version": 1, "active": false,
                                    "after": "2021-03-25T14:00:00Z", "triggers": [] }));
        assert_eq!(schedule_text(&none), "pipeline plain has no timer triggers\n");
    }
}
