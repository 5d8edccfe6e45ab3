//! `wharf runs start|stop|rerun|retry|list|show|approve|reject|approvals`, and following a run live as
//! `wharf run` shows it.

use super::logs::{PATIENCE, shown_line, stream_log, whole_log};
use super::{Client, Conn, key, when, with_query};
use crate::report;
use anyhow::{Context, Result};
use reqwest::Method;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::mpsc;
use wharf_api::Paged;
use wharf_api::gates::{Decide, Decided, WaitingApproval};
use wharf_api::runs::{Accepted, RunDetail, RunSummary, StartRun};
use wharf_core::run::RunRecord;
use wharf_core::status::Status;

/// How often a followed run is looked at.
const POLL: Duration = Duration::from_millis(300);

#[derive(clap::Args, Debug)]
pub struct RunsArgs {
    #[command(flatten)]
    pub conn: Conn,
    #[command(subcommand)]
    pub command: RunsCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum RunsCommand {
    /// Start a run of a pipeline.
    Start {
        /// The pipeline's name or id.
        pipeline: String,
        /// A run parameter, `KEY=VALUE` (repeatable).
        #[arg(short = 'p', long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Show the run's progress and logs until it ends; the exit code is its outcome.
        #[arg(short, long)]
        follow: bool,
    },
    /// Stop a run (its tasks get SIGTERM, then SIGKILL after the server's grace).
    Stop {
        /// The run: `PIPELINE#N` (`hello#3`) or its id.
        run: String,
    },
    /// Run a record again with its version, parameters and commit.
    Rerun {
        /// The run: `PIPELINE#N` (`hello#3`) or its id.
        run: String,
        /// Show the new run's progress and logs until it ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Retry a run from its failed stage, reusing what succeeded.
    Retry {
        /// The run: `PIPELINE#N` (`hello#3`) or its id.
        run: String,
        /// Show the new run's progress and logs until it ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// List the runs of a pipeline, newest first. Without a server (`--server`,
    /// `WHARF_SERVER`), the runs kept by `wharf run` in the data directory when it has
    /// some of this pipeline.
    List {
        /// The pipeline's name (or id, on a server).
        pipeline: String,
        /// How many runs to show [default: 50].
        #[arg(long)]
        limit: Option<usize>,
        /// Which page of `--limit` runs (1 is the newest).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        page: u64,
        /// List the runs kept by `wharf run` in the data directory, even when a server is set.
        #[arg(long)]
        local: bool,
        /// Where `wharf run` keeps its runs.
        #[arg(long, default_value = ".wharf", env = "WHARF_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// A run's stages and tasks with status and duration, its cause and outcome.
    Show {
        /// The run: `PIPELINE#N` (`hello#3`) or its id.
        run: String,
    },
    /// Approve a waiting `approval` task of a run.
    Approve {
        /// The run: `PIPELINE#N` (`hello#3`) or its id.
        run: String,
        /// The approval task's name.
        task: String,
        /// A comment kept with the decision.
        #[arg(short = 'm', long = "message", value_name = "COMMENT")]
        comment: Option<String>,
    },
    /// Reject a waiting `approval` task of a run: the task fails with the comment.
    Reject {
        /// The run: `PIPELINE#N` (`hello#3`) or its id.
        run: String,
        /// The approval task's name.
        task: String,
        /// Why: the task's reason.
        #[arg(short = 'm', long = "message", value_name = "COMMENT")]
        comment: Option<String>,
    },
    /// The approval tasks waiting now that you may decide.
    Approvals,
}

/// A local listing: `(pipeline, data_dir, limit, page)`.
pub type LocalListing<'a> = (&'a str, &'a Path, usize, u64);

impl RunsArgs {
    /// `runs list` answered from `wharf run`'s data directory: when `--local` says so,
    /// or when no server is set and the data directory has runs of the pipeline.
    pub fn local_listing(&self) -> Option<LocalListing<'_>> {
        let RunsCommand::List { pipeline, limit, page, local, data_dir } = &self.command else { return None };
        let has_local = || data_dir.join("pipelines").join(pipeline).is_dir();
        let no_server = self.conn.server.as_deref().is_none_or(|s| s.trim().is_empty());
        (*local || (no_server && has_local())).then_some((
            pipeline.as_str(),
            data_dir.as_path(),
            limit.unwrap_or(50),
            *page,
        ))
    }
}

/// The exit code a finished run gives, as `wharf run`.
fn run_exit(status: Status) -> ExitCode {
    match status {
        Status::Succeeded => ExitCode::SUCCESS,
        Status::TimedOut => ExitCode::from(124),
        Status::Stopped => ExitCode::from(130),
        _ => ExitCode::FAILURE,
    }
}

/// How every command names a run: `run #3 of hello (id 12)`.
pub(super) fn named(run: &RunDetail) -> String {
    format!("run #{} of {} (id {})", run.number, run.pipeline, run.id)
}

/// `✔ run #3 succeeded in 1.2s: reason`.
pub(super) fn outcome_line(record: &RunRecord) -> String {
    let took = record.progress.wall_time(jiff::Timestamp::now()).map(report::human).unwrap_or_else(|| "-".into());
    let status = record.progress.status;
    let reason = record.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
    format!("{} run #{} {status} in {took}{reason}", report::mark(status), record.number)
}

pub async fn runs(args: RunsArgs) -> Result<ExitCode> {
    let client = Client::new(&args.conn)?;
    match args.command {
        RunsCommand::Start { pipeline, params, follow } => {
            let parameters = crate::key_values(&params, "parameter")?;
            let accepted: Accepted =
                client.post(&["pipelines", key(&pipeline)?, "runs"], &StartRun { parameters }).await?;
            println!("started run #{} of {pipeline} (id {})", accepted.number, accepted.id);
            after_start(&client, &accepted, follow).await
        }
        RunsCommand::Stop { run } => {
            let run = client.run(&run).await?;
            client.perform(Method::POST, client.url(&["runs", &run.id.to_string(), "stop"]), None).await?;
            println!("stopping {} (its tasks get SIGTERM, then SIGKILL after the server's grace)", named(&run));
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Rerun { run, follow } => {
            let run = client.run(&run).await?;
            let accepted: Accepted =
                client.fetch(Method::POST, client.url(&["runs", &run.id.to_string(), "rerun"])).await?;
            println!(
                "started run #{} of {} (id {}), a re-run of run #{} with its version, parameters and commit",
                accepted.number, run.pipeline, accepted.id, run.number
            );
            after_start(&client, &accepted, follow).await
        }
        RunsCommand::Retry { run, follow } => {
            let run = client.run(&run).await?;
            let accepted: Accepted =
                client.fetch(Method::POST, client.url(&["runs", &run.id.to_string(), "retry"])).await?;
            println!(
                "started run #{} of {} (id {}), a retry of run #{} from its failed stage",
                accepted.number, run.pipeline, accepted.id, run.number
            );
            after_start(&client, &accepted, follow).await
        }
        RunsCommand::List { pipeline, limit, page, .. } => list_runs(&client, &pipeline, limit, page).await,
        RunsCommand::Show { run } => show_run(&client, &run).await,
        RunsCommand::Approve { run, task, comment } => decide(&client, &run, &task, "approve", comment).await,
        RunsCommand::Reject { run, task, comment } => decide(&client, &run, &task, "reject", comment).await,
        RunsCommand::Approvals => {
            let list: wharf_api::Listed<WaitingApproval> = client.get(&["approvals"]).await?;
            if list.items.is_empty() {
                println!("no approval is waiting for you");
            }
            for w in &list.items {
                let given = w.decisions.iter().filter(|d| d.verdict == "approve").count();
                println!(
                    "{}#{} {}/{} ({given} of {} approvals){}",
                    w.pipeline,
                    w.number,
                    w.stage,
                    w.task,
                    w.required,
                    w.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `runs approve|reject`: the run is named as given (an approver who may not see the
/// pipeline names it by id).
async fn decide(client: &Client, run: &str, task: &str, verb: &str, comment: Option<String>) -> Result<ExitCode> {
    let body = Decide { comment: comment.unwrap_or_default() };
    let decided: Decided = client.post(&["runs", run, "tasks", task, verb], &body).await?;
    let done = if verb == "approve" { "approved" } else { "rejected" };
    match decided.state.as_str() {
        "waiting" => {
            let given = decided.decisions.iter().filter(|d| d.verdict == "approve").count();
            println!("{done} {task} of run {run}; {given} of {} approvals given, it goes on waiting", decided.required);
        }
        state => println!("{done} {task} of run {run}: the task is {state}"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn after_start(client: &Client, accepted: &Accepted, follow: bool) -> Result<ExitCode> {
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    let id = u64::try_from(accepted.id).context("the server's answer has no run id")?;
    let record = follow_run(client, id).await?;
    println!();
    print!("{}", report::table(&record));
    println!("\n{}", outcome_line(&record));
    Ok(run_exit(record.progress.status))
}

async fn list_runs(client: &Client, pipeline: &str, limit: Option<usize>, page: u64) -> Result<ExitCode> {
    let limit = limit.unwrap_or(50);
    let url = with_query(
        client.url(&["pipelines", key(pipeline)?, "runs"]),
        &[("limit", limit.to_string()), ("page", page.to_string())],
    );
    let answer: Paged<RunSummary> = client.fetch(Method::GET, url).await?;
    let items = answer.items;
    let total = u64::try_from(answer.total).unwrap_or(0);
    if items.is_empty() {
        if total == 0 {
            println!("no runs of `{pipeline}` yet");
        } else {
            println!("no runs on page {page} ({total} runs, {limit} a page)");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows =
        vec![vec!["RUN".to_owned(), "ID".into(), "STATUS".into(), "VERSION".into(), "CREATED".into(), "NOTE".into()]];
    for r in &items {
        let mut note = Vec::new();
        if let Some(of) = r.retry_of {
            note.push(format!("retry of run {of}"));
        }
        if let Some(commit) = &r.commit {
            note.push(format!("commit {}", commit.get(..12).unwrap_or(commit)));
        }
        rows.push(vec![
            format!("#{}", r.number),
            r.id.to_string(),
            r.status.to_string(),
            r.version.to_string(),
            when(Some(r.created_at)),
            note.join(", "),
        ]);
    }
    print!("{}", report::columns(&rows));
    let shown_to = (page - 1) * limit as u64 + items.len() as u64;
    if shown_to < total {
        println!("… {} older runs (--page {})", total - shown_to, page + 1);
    }
    Ok(ExitCode::SUCCESS)
}

async fn show_run(client: &Client, run: &str) -> Result<ExitCode> {
    let detail = client.run(run).await?;
    let id = detail.id;
    let (version, retry_of, commit) = (detail.version, detail.retry_of, detail.commit.clone());
    let record = RunRecord::from(detail);
    println!("run #{} of {} (id {id}, version {version})", record.number, record.pipeline);
    println!("  cause: {}", record.cause.describe());
    if let Some(of) = retry_of {
        println!("  retry of: run {of}");
    }
    if !record.parameters.is_empty() {
        let params: Vec<String> = record.parameters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("  parameters: {}", params.join(" "));
    }
    if let Some(commit) = commit {
        println!("  commit: {commit}");
    }
    let status = record.progress.status;
    println!("  status: {status}");
    if let Some(reason) = &record.reason {
        println!("  reason: {reason}");
    }
    println!();
    print!("{}", report::table(&record));
    // What went wrong where, when something did.
    for stage in &record.stages {
        for task in &stage.tasks {
            if let Some(reason) = &task.reason {
                println!("  {}/{}: {reason}", stage.name, task.name);
            }
        }
    }
    if status.is_terminal() {
        println!("\n{}", outcome_line(&record));
    } else {
        let took = record.progress.wall_time(jiff::Timestamp::now()).map(report::human).unwrap_or_else(|| "-".into());
        println!("\n{} run #{} {status} for {took}", report::mark(status), record.number);
    }
    Ok(ExitCode::SUCCESS)
}

enum Follow {
    Line(String, String),
    Ended(String, Option<String>),
}

/// What the follower knows of one log (a task's, the checkout's or the run's).
struct Followed {
    label: String,
    ended: bool,
    announced: bool,
}

/// Shows a run live as `wharf run` does: a line when a task starts and ends, and every
/// log line prefixed with `[stage/task]`. A running task's log is followed live (several
/// at once for parallel tasks); one already finished when first seen is shown whole, in
/// record order. Returns the final record.
pub(super) async fn follow_run(client: &Client, run: u64) -> Result<RunRecord> {
    // The run exists and the server answers, before anything is followed.
    client.run(&run.to_string()).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Follow>();
    let mut followed: HashMap<String, Followed> = HashMap::new();
    let mut record: Option<RunRecord> = None;
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = |key: &str, label: String, followed: &mut HashMap<String, Followed>| {
        let tx = tx.clone();
        let client = client.clone();
        let key = key.to_owned();
        followed.insert(key.clone(), Followed { label: label.clone(), ended: false, announced: false });
        tokio::spawn(async move {
            let lines = tx.clone();
            let result = stream_log(&client, run, &key, |line| {
                let _ = lines.send(Follow::Line(label.clone(), line));
            })
            .await;
            let _ = tx.send(Follow::Ended(key, result.err().map(|e| format!("{e:#}"))));
        });
    };
    start("@run", "run".into(), &mut followed);
    loop {
        tokio::select! {
            Some(message) = rx.recv() => match message {
                Follow::Line(label, line) => println!("[{label}] {}", shown_line(&line)),
                Follow::Ended(key, error) => {
                    if let Some(f) = followed.get_mut(&key) {
                        f.ended = true;
                        if let Some(error) = error {
                            eprintln!("warning: cannot follow the log of {}: {error}", f.label);
                        }
                    }
                    if let Some(now) = &record {
                        announce(now, &mut followed);
                    }
                }
            },
            _ = tick.tick() => {
                let now = RunRecord::from(client.run_patiently(run).await?);
                announce(&now, &mut followed);
                let mut parts: Vec<(String, String, Status)> = Vec::new();
                if let Some(c) = &now.checkout {
                    parts.push(("@checkout".into(), "checkout".into(), c.progress.status));
                }
                for stage in &now.stages {
                    for task in &stage.tasks {
                        parts.push((task.name.clone(), format!("{}/{}", stage.name, task.name), task.progress.status));
                    }
                }
                for (key, label, status) in parts {
                    if followed.contains_key(&key) || matches!(status, Status::Queued | Status::Pending | Status::Skipped) {
                        continue;
                    }
                    if status.is_terminal() {
                        // Over before we looked: show it whole, now, in order.
                        let log = whole_log(client, run, &key).await?;
                        for line in String::from_utf8_lossy(&log).lines() {
                            println!("[{label}] {}", shown_line(line));
                        }
                        followed.insert(key, Followed { label, ended: true, announced: false });
                        announce(&now, &mut followed);
                    } else {
                        println!("▶ {label} {status}");
                        start(&key, label, &mut followed);
                    }
                }
                record = Some(now);
            }
        }
        if let Some(now) = &record
            && now.progress.status.is_terminal()
            && followed.values().all(|f| f.ended)
        {
            announce(now, &mut followed);
            return Ok(record.expect("just seen"));
        }
    }
}

/// The closing line of each part whose log is complete and whose status is final.
fn announce(record: &RunRecord, followed: &mut HashMap<String, Followed>) {
    let now = jiff::Timestamp::now();
    if let Some(c) = &record.checkout
        && let Some(f) = followed.get_mut("@checkout")
        && f.ended
        && !f.announced
        && c.progress.status.is_terminal()
    {
        f.announced = true;
        let status = c.progress.status;
        let detail =
            c.commit.as_deref().map(|s| s.get(..12).unwrap_or(s).to_owned()).or(c.reason.clone()).unwrap_or_default();
        println!("{} checkout {status} {detail}", report::mark(status));
    }
    for stage in &record.stages {
        for task in &stage.tasks {
            if let Some(f) = followed.get_mut(&task.name)
                && f.ended
                && !f.announced
                && task.progress.status.is_terminal()
            {
                f.announced = true;
                let status = task.progress.status;
                let took = task.progress.wall_time(now).map(report::human).unwrap_or_default();
                let reason = task.reason.as_deref().map(|r| format!(" — {r}")).unwrap_or_default();
                println!("{} {} {status} {took}{reason}", report::mark(status), f.label);
            }
        }
    }
}

impl Client {
    /// `GET /runs/{id}`.
    /// The run `run` names: `PIPELINE#N` or its id (the server resolves both).
    pub(super) async fn run(&self, run: &str) -> Result<RunDetail> {
        self.get(&["runs", run]).await
    }

    /// [`Client::run`], waiting out a server that is briefly away (a restart).
    async fn run_patiently(&self, id: u64) -> Result<RunDetail> {
        let started = tokio::time::Instant::now();
        let mut warned = false;
        loop {
            match self.run(&id.to_string()).await {
                Err(e) if e.downcast_ref::<super::Unreachable>().is_some() && started.elapsed() < PATIENCE => {
                    if !warned {
                        eprintln!("lost the connection to the server at {}; trying again…", self.shown);
                        warned = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => return other,
            }
        }
    }
}
