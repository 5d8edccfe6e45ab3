//! The client commands: `wharf pipelines …`, `wharf runs …` and `wharf logs …` against a
//! Wharf server's REST API (`/api/v1`, DESIGN.md §9), with a bearer token.
//!
//! Exit codes: 0 done, 1 the run ended unsuccessfully (`--follow`; 124 timed out and 130
//! stopped, as `wharf run`), the server failed (5xx) or cannot be reached, 2 the input or
//! the request was refused (4xx: unknown pipeline, invalid YAML, wrong token, conflict).

use crate::report;
use anyhow::{Context, Result, bail};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::mpsc;
use wharf_core::run::RunRecord;
use wharf_core::status::Status;

/// Where the client looks when neither `--server` nor `WHARF_SERVER` says.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// How often a followed run is looked at.
const POLL: Duration = Duration::from_millis(300);

/// How long a follower keeps trying to get back to a server that went away.
const PATIENCE: Duration = Duration::from_secs(30);

const TOKEN_HINT: &str = "set WHARF_TOKEN or --token";

// ---------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------

/// Which server, and the token to show it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Conn {
    /// The server's URL [default: http://127.0.0.1:8080].
    #[arg(long, env = "WHARF_SERVER", value_name = "URL", global = true)]
    pub server: Option<String>,
    /// The API token (sent as `Authorization: Bearer TOKEN`).
    #[arg(long, env = "WHARF_TOKEN", value_name = "TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
}

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
        /// The run's id.
        run: u64,
    },
    /// Run a record again with its version, parameters and commit.
    Rerun {
        /// The run's id.
        run: u64,
        /// Show the new run's progress and logs until it ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Retry a run from its failed stage, reusing what succeeded.
    Retry {
        /// The run's id.
        run: u64,
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
        /// The run's id.
        run: u64,
    },
}

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// The run's id.
    pub run: u64,
    /// One task's log (or `@checkout`, `@run`) instead of the whole run's.
    pub task: Option<String>,
    /// Follow the log live until the task (or the run) ends.
    #[arg(short, long)]
    pub follow: bool,
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

// ---------------------------------------------------------------------------------
// Errors and exit codes
// ---------------------------------------------------------------------------------

/// One problem the server named, with where it is.
#[derive(Debug, Clone)]
pub struct Detail {
    pub path: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: String,
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = match (self.line, self.column) {
            (Some(line), Some(col)) => format!("({line}:{col})"),
            (Some(line), None) => format!("(line {line})"),
            _ => String::new(),
        };
        match (self.path.is_empty(), at.is_empty()) {
            (true, true) => write!(f, "{}", self.message),
            (true, false) => write!(f, "{at}: {}", self.message),
            (false, true) => write!(f, "{}: {}", self.path, self.message),
            (false, false) => write!(f, "{} {at}: {}", self.path, self.message),
        }
    }
}

/// The server said no: its status, message and details.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub details: Vec<Detail>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        for detail in &self.details {
            write!(f, "\n  {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// Reads `{"error": {"status", "message", "details"}}`, or makes do with the text.
    fn from_body(status: StatusCode, body: &[u8]) -> ApiError {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let error = parsed.as_ref().and_then(|v| v.get("error"));
        match error.and_then(|e| e["message"].as_str()) {
            Some(message) => {
                let details = error
                    .and_then(|e| e["details"].as_array())
                    .map(|items| {
                        items
                            .iter()
                            .map(|d| Detail {
                                path: d["path"].as_str().unwrap_or_default().to_owned(),
                                line: d["line"].as_u64(),
                                column: d["column"].as_u64(),
                                message: d["message"].as_str().unwrap_or_default().to_owned(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                ApiError { status: status.as_u16(), message: message.to_owned(), details }
            }
            None => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let text: String = text.chars().take(500).collect();
                let message = if text.is_empty() {
                    format!("the server answered {status}")
                } else {
                    format!("the server answered {status}: {text}")
                };
                ApiError { status: status.as_u16(), message, details: vec![] }
            }
        }
    }
}

/// The server could not be reached at all.
#[derive(Debug)]
pub struct Unreachable {
    pub server: String,
    pub cause: String,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot reach the server at {}: {} (is `wharf serve` running there? set --server or WHARF_SERVER)",
            self.server, self.cause
        )
    }
}

impl std::error::Error for Unreachable {}

/// The exit code for an error: 1 when the server failed or is away, 2 for the rest
/// (what was asked is wrong or refused).
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(api) = cause.downcast_ref::<ApiError>() {
            return if api.status >= 500 { 1 } else { 2 };
        }
        if cause.downcast_ref::<Unreachable>().is_some() {
            return 1;
        }
    }
    2
}

/// The innermost cause's words ("Connection refused (os error 111)").
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last = err;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

// ---------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------

#[derive(Clone)]
pub struct Client {
    pub(crate) http: reqwest::Client,
    base: Url,
    /// The server as given, for messages.
    pub(crate) shown: String,
    token: Option<String>,
}

impl Client {
    pub fn new(conn: &Conn) -> Result<Client> {
        let given = conn.server.as_deref().map(str::trim).filter(|s| !s.is_empty()).unwrap_or(DEFAULT_SERVER);
        let base = Url::parse(given).with_context(|| format!("--server `{given}` is not a URL"))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            bail!("--server `{given}`: expected an http:// URL such as {DEFAULT_SERVER}");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("cannot set up the HTTP client")?;
        let token = conn.token.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned);
        Ok(Client { http, base, shown: given.trim_end_matches('/').to_owned(), token })
    }

    /// `<server>/api/v1/<segments…>`, each segment percent-encoded.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().expect("checked in Client::new");
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends; a transport failure is [`Unreachable`], an error status an [`ApiError`].
    async fn send(&self, request: RequestBuilder) -> Result<Response> {
        let response =
            request.send().await.map_err(|e| Unreachable { server: self.shown.clone(), cause: root_cause(&e) })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        let mut error = ApiError::from_body(status, &body);
        if status == StatusCode::UNAUTHORIZED {
            error.message = match self.token {
                Some(_) => format!("the server refused the token: {TOKEN_HINT}"),
                None => format!("the server needs a token: {TOKEN_HINT}"),
            };
            error.details.clear();
        }
        Err(error.into())
    }

    /// A JSON call with an optional JSON body; `Value::Null` for an empty answer.
    pub(crate) async fn call(&self, method: Method, url: Url, body: Option<Value>) -> Result<Value> {
        let mut request = self.request(method, url).timeout(Duration::from_secs(120));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = self.send(request).await?;
        let bytes =
            response.bytes().await.map_err(|e| Unreachable { server: self.shown.clone(), cause: root_cause(&e) })?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).context("the server's answer is not the JSON expected")
    }

    pub(crate) async fn get(&self, segments: &[&str]) -> Result<Value> {
        self.call(Method::GET, self.url(segments), None).await
    }

    pub(crate) async fn post(&self, segments: &[&str], body: Option<Value>) -> Result<Value> {
        self.call(Method::POST, self.url(segments), body).await
    }

    /// Sends a streamed body; the answer as JSON.
    pub(crate) async fn send_json(
        &self,
        method: Method,
        url: Url,
        body: reqwest::Body,
        timeout: Duration,
    ) -> Result<Value> {
        let response = self.send(self.request(method, url).timeout(timeout).body(body)).await?;
        let bytes =
            response.bytes().await.map_err(|e| Unreachable { server: self.shown.clone(), cause: root_cause(&e) })?;
        serde_json::from_slice(&bytes).context("the server's answer is not the JSON expected")
    }

    /// `GET`, or `None` when the server says 404.
    async fn find(&self, url: Url) -> Result<Option<Value>> {
        match self.call(Method::GET, url, None).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.downcast_ref::<ApiError>().is_some_and(|a| a.status == 404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A text answer as bytes.
    async fn bytes(&self, url: Url) -> Result<(reqwest::header::HeaderMap, Vec<u8>)> {
        let response = self.send(self.request(Method::GET, url)).await?;
        let headers = response.headers().clone();
        let bytes =
            response.bytes().await.map_err(|e| Unreachable { server: self.shown.clone(), cause: root_cause(&e) })?;
        Ok((headers, bytes.to_vec()))
    }

    /// `GET /runs/{id}`: the answer as JSON and as the record it holds.
    async fn run(&self, id: u64) -> Result<(Value, RunRecord)> {
        let value = self.get(&["runs", &id.to_string()]).await?;
        let record: RunRecord =
            serde_json::from_value(value.clone()).context("the server's run is not the record expected")?;
        Ok((value, record))
    }

    /// [`Client::run`], waiting out a server that is briefly away (a restart).
    async fn run_patiently(&self, id: u64) -> Result<(Value, RunRecord)> {
        let started = tokio::time::Instant::now();
        let mut warned = false;
        loop {
            match self.run(id).await {
                Err(e) if e.downcast_ref::<Unreachable>().is_some() && started.elapsed() < PATIENCE => {
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

/// A pipeline name or id as a path segment (`.` and `..` would move the path).
fn key(text: &str) -> Result<&str> {
    if text.is_empty() || text == "." || text == ".." {
        bail!("`{text}` is not a pipeline name or id");
    }
    Ok(text)
}

pub(crate) fn with_query(mut url: Url, pairs: &[(&str, String)]) -> Url {
    if !pairs.is_empty() {
        let mut query = url.query_pairs_mut();
        for (k, v) in pairs {
            query.append_pair(k, v);
        }
    }
    url
}

// ---------------------------------------------------------------------------------
// Output helpers
// ---------------------------------------------------------------------------------

/// Milliseconds since the epoch as local time.
pub(crate) fn when(ms: Option<i64>) -> String {
    let Some(ms) = ms else { return "-".into() };
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S").to_string(),
        Err(_) => "-".into(),
    }
}

pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `#3 succeeded` for a run summary.
fn run_brief(summary: &Value) -> String {
    if summary.is_null() {
        return "-".into();
    }
    format!("#{} {}", text(&summary["number"]), text(&summary["status"]))
}

/// A stored log line (`<time> <out|err|sys> <text>`) as `wharf run` shows it.
fn shown_line(line: &str) -> String {
    let parsed = line.split_once(' ').and_then(|(at, rest)| {
        let (tag, text) = rest.split_once(' ').unwrap_or((rest, ""));
        (at.len() >= 20 && at.ends_with('Z') && at.as_bytes()[4] == b'-').then_some((tag, text))
    });
    match parsed {
        Some(("out" | "err", text)) => text.to_owned(),
        Some(("sys", text)) => format!("· {text}"),
        _ => line.to_owned(),
    }
}

fn write_out(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
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

/// `✔ run #3 succeeded in 1.2s: reason`.
fn outcome_line(record: &RunRecord) -> String {
    let took = record.progress.wall_time(jiff::Timestamp::now()).map(report::human).unwrap_or_else(|| "-".into());
    let status = record.progress.status;
    let reason = record.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
    format!("{} run #{} {status} in {took}{reason}", report::mark(status), record.number)
}

// ---------------------------------------------------------------------------------
// pipelines
// ---------------------------------------------------------------------------------

pub async fn pipelines(args: PipelinesArgs) -> Result<ExitCode> {
    let client = Client::new(&args.conn)?;
    match args.command {
        PipelinesCommand::Apply { file, run } => apply(&client, &file, run).await,
        PipelinesCommand::List => list_pipelines(&client).await,
        PipelinesCommand::Show { pipeline } => show_pipeline(&client, &pipeline).await,
        PipelinesCommand::Copy { source, name } => {
            let saved = client.post(&["pipelines", key(&source)?, "copy"], Some(json!({ "name": name }))).await?;
            println!(
                "copied pipeline {source} to {} (id {}, version {})",
                text(&saved["name"]),
                text(&saved["id"]),
                text(&saved["version"])
            );
            Ok(ExitCode::SUCCESS)
        }
        PipelinesCommand::Delete { pipeline } => {
            client.call(Method::DELETE, client.url(&["pipelines", key(&pipeline)?]), None).await?;
            println!("deleted pipeline {pipeline} with its runs");
            Ok(ExitCode::SUCCESS)
        }
        PipelinesCommand::Activate { pipeline } => set_active(&client, &pipeline, true).await,
        PipelinesCommand::Deactivate { pipeline } => set_active(&client, &pipeline, false).await,
        PipelinesCommand::Schedule { pipeline, count } => schedule(&client, &pipeline, count).await,
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
    let shown = client.call(Method::GET, url, None).await?;
    print!("{}", schedule_text(&shown));
    Ok(ExitCode::SUCCESS)
}

/// `trigger 1: every_hours: 2, at_minute: 28 (Asia/Shanghai)` and its times, one a line.
fn schedule_text(shown: &Value) -> String {
    let name = text(&shown["name"]);
    let triggers = shown["triggers"].as_array().cloned().unwrap_or_default();
    if triggers.is_empty() {
        return format!("pipeline {name} has no timer triggers\n");
    }
    let mut out = format!("pipeline {name}: next fire times\n");
    if shown["active"] == false {
        out.push_str("(inactive: its timers fire nothing until it is activated)\n");
    }
    for trigger in &triggers {
        let kind = text(&trigger["kind"]);
        let brief = |v: &Value| match v {
            Value::Array(items) => format!("[{}]", items.iter().map(text).collect::<Vec<_>>().join(", ")),
            other => text(other),
        };
        let mut fields = vec![format!("{kind}: {}", brief(&trigger["trigger"][&kind]))];
        if let Some(map) = trigger["trigger"].as_object() {
            fields.extend(map.iter().filter(|(k, _)| **k != kind).map(|(k, v)| format!("{k}: {}", brief(v))));
        }
        out.push_str(&format!(
            "trigger {}: {} ({})\n",
            text(&trigger["index"]),
            fields.join(", "),
            text(&trigger["timezone"])
        ));
        for time in trigger["next"].as_array().into_iter().flatten() {
            // 2021-03-25T14:54:00+08:00 → 2021-03-25 14:54:00 +08:00
            let time = text(time);
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
    let row = client.post(&["pipelines", key(pipeline)?, verb], None).await?;
    let now = if row["active"].as_bool().unwrap_or(active) { "active" } else { "inactive" };
    let note = if active { "" } else { "; it starts no runs until activated, and its history is kept" };
    println!("pipeline {} is {now}{note}", text(&row["name"]));
    Ok(ExitCode::SUCCESS)
}

/// Every pipeline, page after page.
async fn all_pipelines(client: &Client) -> Result<Vec<Value>> {
    let mut items = Vec::new();
    for page in 1.. {
        let url = with_query(client.url(&["pipelines"]), &[("limit", "200".into()), ("page", page.to_string())]);
        let answer = client.call(Method::GET, url, None).await?;
        let got = answer["items"].as_array().cloned().unwrap_or_default();
        let done = got.len() < 200 || items.len() + got.len() >= answer["total"].as_u64().unwrap_or(0) as usize;
        items.extend(got);
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
            let found = client.find(with_query(client.url(&["pipelines", name]), &project)).await?;
            match found {
                Some(row) if row["name"].as_str() == Some(name) => Some(row["id"].clone()),
                // A name of digits reads as an id: look for the name itself.
                Some(_) => all_pipelines(client)
                    .await?
                    .into_iter()
                    .find(|row| {
                        row["name"].as_str() == Some(name)
                            && p.project.as_deref().is_none_or(|want| row["project"].as_str() == Some(want))
                    })
                    .map(|row| row["id"].clone()),
                None => None,
            }
        }
    };
    let saved = match &existing {
        Some(id) => {
            let url = with_query(client.url(&["pipelines", &text(id)]), &query);
            let request = client.request(Method::PUT, url).header("content-type", "application/yaml").body(yaml);
            let response = client.send(request).await.with_context(|| format!("cannot save {shown}"))?;
            response.json::<Value>().await.context("the server's answer is not the JSON expected")?
        }
        None => {
            let url = with_query(client.url(&["pipelines"]), &query);
            let request = client.request(Method::POST, url).header("content-type", "application/yaml").body(yaml);
            let response = client.send(request).await.with_context(|| format!("cannot save {shown}"))?;
            response.json::<Value>().await.context("the server's answer is not the JSON expected")?
        }
    };
    let name = text(&saved["name"]);
    if existing.is_some() {
        println!("updated pipeline {name} to version {}", text(&saved["version"]));
    } else {
        println!("created pipeline {name} (id {}, version {})", text(&saved["id"]), text(&saved["version"]));
    }
    if !saved["run"].is_null() {
        println!("started run #{} of {name} (id {})", text(&saved["run"]["number"]), text(&saved["run"]["id"]));
    }
    Ok(ExitCode::SUCCESS)
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
        rows.push(vec![
            text(&item["name"]),
            text(&item["id"]),
            text(&item["project"]),
            if item["active"].as_bool().unwrap_or(false) { "yes".into() } else { "no".into() },
            text(&item["version"]),
            run_brief(&item["last_run"]),
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
    let p = client.get(&["pipelines", key(pipeline)?]).await?;
    let active = if p["active"].as_bool().unwrap_or(false) { "active" } else { "inactive" };
    let mut out =
        format!("pipeline {} (id {}, project {}, {active})\n", text(&p["name"]), text(&p["id"]), text(&p["project"]));
    let mut facts: Vec<Vec<String>> = Vec::new();
    if let Some(d) = p["description"].as_str() {
        facts.push(vec!["  description".into(), d.to_owned()]);
    }
    facts.push(vec!["  version".into(), format!("{} (saved {})", text(&p["version"]), when(p["updated_at"].as_i64()))]);
    let model: Option<wharf_core::model::Pipeline> = serde_json::from_value(p["definition"].clone()).ok();
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
    let last = if p["last_run"].is_null() {
        "-".to_owned()
    } else {
        format!("{} (id {})", run_brief(&p["last_run"]), text(&p["last_run"]["id"]))
    };
    facts.push(vec!["  last run".into(), last]);
    if let Some(active_runs) = p["active_runs"].as_array().filter(|a| !a.is_empty()) {
        let numbers: Vec<String> = active_runs.iter().map(|n| format!("#{}", text(n))).collect();
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
            out.push_str("stages\n");
            for stage in p["definition"]["stages"].as_array().into_iter().flatten() {
                out.push_str(&format!("  {}\n", text(&stage["name"])));
                for task in stage["tasks"].as_array().into_iter().flatten() {
                    out.push_str(&format!("    - {}  {}\n", text(&task["name"]), text(&task["type"])));
                }
            }
        }
    }
    out.push_str("versions\n");
    let mut rows = vec![vec!["  VERSION".to_owned(), "SAVED".into()]];
    let mut versions = p["versions"].as_array().cloned().unwrap_or_default();
    versions.sort_by_key(|v| std::cmp::Reverse(v["version"].as_i64()));
    for v in &versions {
        rows.push(vec![format!("  {}", text(&v["version"])), when(v["created_at"].as_i64())]);
    }
    out.push_str(&report::columns(&rows));
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------
// runs
// ---------------------------------------------------------------------------------

pub async fn runs(args: RunsArgs) -> Result<ExitCode> {
    let client = Client::new(&args.conn)?;
    match args.command {
        RunsCommand::Start { pipeline, params, follow } => {
            let parameters = crate::key_values(&params, "parameter")?;
            let accepted =
                client.post(&["pipelines", key(&pipeline)?, "runs"], Some(json!({ "parameters": parameters }))).await?;
            println!("started run #{} of {pipeline} (id {})", text(&accepted["number"]), text(&accepted["id"]));
            after_start(&client, &accepted, follow).await
        }
        RunsCommand::Stop { run } => {
            client.post(&["runs", &run.to_string(), "stop"], None).await?;
            println!("stopping run {run} (its tasks get SIGTERM, then SIGKILL after the server's grace)");
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Rerun { run, follow } => {
            let accepted = client.post(&["runs", &run.to_string(), "rerun"], None).await?;
            println!(
                "started run #{} (id {}), a re-run of run {run} with its version, parameters and commit",
                text(&accepted["number"]),
                text(&accepted["id"])
            );
            after_start(&client, &accepted, follow).await
        }
        RunsCommand::Retry { run, follow } => {
            let accepted = client.post(&["runs", &run.to_string(), "retry"], None).await?;
            println!(
                "started run #{} (id {}), a retry of run {run} from its failed stage",
                text(&accepted["number"]),
                text(&accepted["id"])
            );
            after_start(&client, &accepted, follow).await
        }
        RunsCommand::List { pipeline, limit, page, .. } => list_runs(&client, &pipeline, limit, page).await,
        RunsCommand::Show { run } => show_run(&client, run).await,
    }
}

async fn after_start(client: &Client, accepted: &Value, follow: bool) -> Result<ExitCode> {
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    let id = accepted["id"].as_u64().context("the server's answer has no run id")?;
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
    let answer = client.call(Method::GET, url, None).await?;
    let items = answer["items"].as_array().cloned().unwrap_or_default();
    let total = answer["total"].as_u64().unwrap_or(0);
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
        if !r["retry_of"].is_null() {
            note.push(format!("retry of run {}", text(&r["retry_of"])));
        }
        if let Some(commit) = r["commit"].as_str() {
            note.push(format!("commit {}", commit.get(..12).unwrap_or(commit)));
        }
        rows.push(vec![
            format!("#{}", text(&r["number"])),
            text(&r["id"]),
            text(&r["status"]),
            text(&r["version"]),
            when(r["created_at"].as_i64()),
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

async fn show_run(client: &Client, id: u64) -> Result<ExitCode> {
    let (value, record) = client.run(id).await?;
    let version = value["version"].as_i64().map(|v| format!(", version {v}")).unwrap_or_default();
    println!("run #{} of {} (id {id}{version})", record.number, record.pipeline);
    println!("  cause: {}", record.cause.describe());
    if let Some(of) = value["retry_of"].as_i64() {
        println!("  retry of: run {of}");
    }
    if !record.parameters.is_empty() {
        let params: Vec<String> = record.parameters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("  parameters: {}", params.join(" "));
    }
    if let Some(commit) = value["commit"].as_str() {
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

// ---------------------------------------------------------------------------------
// logs
// ---------------------------------------------------------------------------------

pub async fn logs(args: LogsArgs) -> Result<ExitCode> {
    let client = Client::new(&args.conn)?;
    let run = args.run.to_string();
    match (args.task, args.follow) {
        (None, false) => {
            let (_, body) = client.bytes(client.url(&["runs", &run, "log"])).await?;
            write_out(&body)?;
        }
        (Some(task), false) => {
            let mut offset = 0u64;
            loop {
                let url =
                    with_query(client.url(&["runs", &run, "tasks", &task, "log"]), &[("offset", offset.to_string())]);
                let (headers, body) = client.bytes(url).await?;
                write_out(&body)?;
                let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                let size = header("x-log-size").unwrap_or(0);
                let next = header("x-next-offset").unwrap_or(offset + body.len() as u64);
                if body.is_empty() || next >= size {
                    break;
                }
                offset = next;
            }
        }
        (Some(task), true) => {
            let mut out = std::io::stdout();
            stream_log(&client, args.run, &task, |line| {
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            })
            .await?;
        }
        (None, true) => {
            let record = follow_run(&client, args.run).await?;
            println!("{}", outcome_line(&record));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One event of a Server-Sent Events stream.
#[derive(Debug, PartialEq)]
struct SseEvent {
    event: String,
    data: String,
    id: Option<String>,
}

/// Turns the bytes of a Server-Sent Events stream into events, whatever the chunking.
#[derive(Default)]
struct SseParser {
    buf: Vec<u8>,
    data: Vec<String>,
    event: Option<String>,
    id: Option<String>,
    pending: bool,
}

impl SseParser {
    fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let mut raw: Vec<u8> = self.buf.drain(..=end).collect();
            raw.pop();
            if raw.last() == Some(&b'\r') {
                raw.pop();
            }
            let line = String::from_utf8_lossy(&raw);
            if line.is_empty() {
                if self.pending {
                    out.push(SseEvent {
                        event: self.event.take().unwrap_or_else(|| "message".into()),
                        data: std::mem::take(&mut self.data).join("\n"),
                        id: self.id.clone(),
                    });
                    self.pending = false;
                }
                continue;
            }
            if line.starts_with(':') {
                continue; // a comment: keep-alive
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "data" => self.data.push(value.to_owned()),
                "event" => self.event = Some(value.to_owned()),
                "id" => self.id = Some(value.to_owned()),
                _ => continue,
            }
            self.pending = true;
        }
        out
    }
}

/// Follows a task's log through the SSE endpoint until its `end` event, handing each
/// line to `sink`. A dropped connection is taken up again from the last event's id
/// (`Last-Event-ID`), so no line is lost or repeated.
async fn stream_log(client: &Client, run: u64, task: &str, mut sink: impl FnMut(String)) -> Result<()> {
    let url = client.url(&["runs", &run.to_string(), "tasks", task, "log", "stream"]);
    let mut last_id: Option<String> = None;
    let mut since_progress = tokio::time::Instant::now();
    let mut warned = false;
    let mut connected = false;
    let mut empty_answers = 0;
    loop {
        let mut request = client.request(Method::GET, url.clone()).header("accept", "text/event-stream");
        if let Some(id) = &last_id {
            request = request.header("last-event-id", id.as_str());
        }
        match client.send(request).await {
            Ok(mut response) => {
                connected = true;
                let mut parser = SseParser::default();
                let mut got_any = false;
                while let Ok(Some(bytes)) = response.chunk().await {
                    got_any = true;
                    empty_answers = 0;
                    since_progress = tokio::time::Instant::now();
                    for event in parser.feed(&bytes) {
                        if event.event == "end" {
                            return Ok(());
                        }
                        if event.event == "message" {
                            sink(event.data);
                        }
                        if event.id.is_some() {
                            last_id = event.id;
                        }
                    }
                }
                // The connection ended before the log did: take it up again, unless the
                // server keeps answering with nothing at all.
                if !got_any {
                    empty_answers += 1;
                    if empty_answers >= 20 {
                        bail!("the server keeps ending the log stream of `{task}` without sending anything");
                    }
                }
            }
            // Patience only for a server that was there a moment ago.
            Err(e) if e.downcast_ref::<Unreachable>().is_some() && connected => {
                if since_progress.elapsed() > PATIENCE {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
        if !warned && since_progress.elapsed() > Duration::from_secs(2) {
            eprintln!("lost the log stream of `{task}`; reconnecting…");
            warned = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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

/// A finished log, whole, through the plain tail endpoint.
async fn whole_log(client: &Client, run: u64, task: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let url = with_query(
            client.url(&["runs", &run.to_string(), "tasks", task, "log"]),
            &[("offset", out.len().to_string())],
        );
        let (headers, body) = client.bytes(url).await?;
        let size = headers.get("x-log-size").and_then(|v| v.to_str().ok()?.parse::<usize>().ok()).unwrap_or(0);
        out.extend_from_slice(&body);
        if body.is_empty() || out.len() >= size {
            return Ok(out);
        }
    }
}

/// Shows a run live as `wharf run` does: a line when a task starts and ends, and every
/// log line prefixed with `[stage/task]`. A running task's log is followed live (several
/// at once for parallel tasks); one already finished when first seen is shown whole, in
/// record order. Returns the final record.
async fn follow_run(client: &Client, run: u64) -> Result<RunRecord> {
    // The run exists and the server answers, before anything is followed.
    client.run(run).await?;
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
                let (_, now) = client.run_patiently(run).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_survive_any_chunking() {
        let stream = b"id: 10\ndata: first line\n\n: keep-alive\n\nid: 25\ndata: second\r\n\r\nevent: end\ndata: \n\n";
        let whole = SseParser::default().feed(stream);
        for size in 1..stream.len() {
            let mut parser = SseParser::default();
            let events: Vec<SseEvent> = stream.chunks(size).flat_map(|c| parser.feed(c)).collect();
            assert_eq!(events, whole, "chunks of {size}");
        }
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0], SseEvent { event: "message".into(), data: "first line".into(), id: Some("10".into()) });
        assert_eq!(whole[1].data, "second");
        assert_eq!(whole[1].id.as_deref(), Some("25"));
        assert_eq!(whole[2].event, "end");
    }

    #[test]
    fn a_half_received_event_is_not_delivered() {
        let mut parser = SseParser::default();
        assert!(parser.feed(b"id: 5\ndata: par").is_empty());
    }

    #[test]
    fn details_show_path_and_position() {
        let error = ApiError {
            status: 422,
            message: "the pipeline is not valid (2 problem(s))".into(),
            details: vec![
                Detail {
                    path: "stages[0].tasks[0].type".into(),
                    line: Some(7),
                    column: Some(15),
                    message: "bad".into(),
                },
                Detail { path: "parameters".into(), line: None, column: None, message: "missing X".into() },
            ],
        };
        assert_eq!(
            error.to_string(),
            "the pipeline is not valid (2 problem(s))\n  stages[0].tasks[0].type (7:15): bad\n  parameters: missing X"
        );
        assert_eq!(exit_code(&anyhow::Error::new(error)), 2);
        let server = ApiError { status: 500, message: "internal".into(), details: vec![] };
        assert_eq!(exit_code(&anyhow::Error::new(server).context("while saving")), 1);
    }

    #[test]
    fn stored_lines_show_as_wharf_run_shows_them() {
        assert_eq!(shown_line("2025-01-02T03:04:05.678Z out hello world"), "hello world");
        assert_eq!(shown_line("2025-01-02T03:04:05.678Z sys exit code 0"), "· exit code 0");
        assert_eq!(shown_line("2025-01-02T03:04:05.678Z out "), "");
        assert_eq!(shown_line("[wharf] log truncated"), "[wharf] log truncated");
    }

    #[test]
    fn the_schedule_shows_each_trigger_as_written_and_its_times() {
        let shown = json!({
            "name": "nightly", "active": true,
            "triggers": [
                { "index": 1, "kind": "every_hours", "trigger": { "every_hours": 2, "at_minute": 28 },
                  "timezone": "Asia/Shanghai", "next": ["2021-03-25T16:28:00+08:00", "2021-03-25T18:28:00+08:00"] },
                { "index": 2, "kind": "weekly", "trigger": { "weekly": ["mon", "thu"], "at": "09:00" },
                  "timezone": "UTC", "next": ["2021-03-29T09:00:00Z"] }
            ]
        });
        assert_eq!(
            super::schedule_text(&shown),
            "pipeline nightly: next fire times\n\
             trigger 1: every_hours: 2, at_minute: 28 (Asia/Shanghai)\n  2021-03-25 16:28:00 +08:00\n  2021-03-25 18:28:00 +08:00\n\
             trigger 2: weekly: [mon, thu], at: 09:00 (UTC)\n  2021-03-29 09:00:00 +00:00\n"
        );
        let none = json!({ "name": "plain", "active": false, "triggers": [] });
        assert_eq!(super::schedule_text(&none), "pipeline plain has no timer triggers\n");
    }

    #[test]
    fn urls_encode_each_segment_under_the_base_path() {
        let conn = Conn { server: Some("http://example.test:9/wharf/".into()), token: None };
        let client = Client::new(&conn).unwrap();
        let url = client.url(&["runs", "7", "tasks", "Unit tests", "log"]);
        assert_eq!(url.as_str(), "http://example.test:9/wharf/api/v1/runs/7/tasks/Unit%20tests/log");
        let bare = Client::new(&Conn { server: Some("http://h:1".into()), token: None }).unwrap();
        assert_eq!(bare.url(&["pipelines"]).as_str(), "http://h:1/api/v1/pipelines");
        assert!(Client::new(&Conn { server: Some("ftp://h".into()), token: None }).is_err());
    }
}
