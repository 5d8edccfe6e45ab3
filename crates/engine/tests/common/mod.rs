//! Fixtures shared by the engine's behaviour tests: a [`Recorder`] observer that keeps
//! every status change and log line (and checks each change against the state
//! machine as it happens), pipeline and request builders, and engines on the fake and
//! the host executor.

#![allow(dead_code, reason = "each test binary uses its own part of the fixtures")]

pub mod scenario;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tempfile::TempDir;
use tokio::sync::watch;
use wharf_core::model::Pipeline;
use wharf_core::run::{Cause, RunRecord};
use wharf_core::status::Status;
use wharf_engine::{Engine, EngineConfig, Observer, Part, RunRequest, StopReason, Workspace};
use wharf_executor::fake::{Behavior, FakeExecutor};
use wharf_executor::host::{HostConfig, HostExecutor};
use wharf_executor::{LogLine, StopRequest, Stream};

/// Every observer call, in order, plus the changes the state machine forbids.
#[derive(Default)]
struct Seen {
    changes: Vec<(Part, Status)>,
    lines: Vec<(Part, LogLine)>,
    last: HashMap<Part, Status>,
    illegal: Vec<String>,
    record: Option<RunRecord>,
}

/// An [`Observer`] that records everything it is told.
pub struct Recorder {
    seen: Mutex<Seen>,
    /// Counts log lines, so a test can wait for one without polling.
    line_count: watch::Sender<usize>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder { seen: Mutex::default(), line_count: watch::Sender::new(0) }
    }
}

pub fn status_of(record: &RunRecord, part: Part) -> Status {
    progress_of(record, part).status
}

fn progress_of(record: &RunRecord, part: Part) -> &wharf_core::run::Progress {
    match part {
        Part::Run => &record.progress,
        Part::Checkout => &record.checkout.as_ref().expect("the record has a checkout").progress,
        Part::Stage(s) => &record.stages[s].progress,
        Part::Task(s, t) => &record.stages[s].tasks[t].progress,
    }
}

/// The statuses a part went through, from its record.
pub fn history(record: &RunRecord, part: Part) -> Vec<Status> {
    progress_of(record, part).history.iter().map(|t| t.status).collect()
}

impl Observer for Recorder {
    fn changed(&self, record: &RunRecord, part: Part) {
        let status = status_of(record, part);
        let mut seen = self.seen.lock().unwrap();
        let before = seen.last.get(&part).copied().unwrap_or(Status::Queued);
        if before != status && !before.can_become(status) {
            seen.illegal.push(format!("{part:?}: {before} -> {status}"));
        }
        seen.last.insert(part, status);
        seen.changes.push((part, status));
        seen.record = Some(record.clone());
    }

    fn log(&self, part: Part, line: &LogLine) {
        self.seen.lock().unwrap().lines.push((part, line.clone()));
        self.line_count.send_modify(|n| *n += 1);
    }
}

impl Recorder {
    pub fn new() -> Arc<Self> {
        Arc::new(Recorder::default())
    }

    /// The statuses the observer saw `part` go through, starting at `queued` (every
    /// part is created queued; only the run's creation is announced).
    pub fn transitions(&self, part: Part) -> Vec<Status> {
        let seen = self.seen.lock().unwrap();
        let mut out = vec![Status::Queued];
        for (p, status) in &seen.changes {
            if *p == part && out.last() != Some(status) {
                out.push(*status);
            }
        }
        out
    }

    /// The record as of the last change announced.
    pub fn last_record(&self) -> RunRecord {
        self.seen.lock().unwrap().record.clone().expect("a change was announced")
    }

    /// Every change in the order it was announced.
    pub fn changes(&self) -> Vec<(Part, Status)> {
        self.seen.lock().unwrap().changes.clone()
    }

    /// Log lines of `part` (any stream), in order.
    pub fn lines(&self, part: Part) -> Vec<String> {
        self.seen.lock().unwrap().lines.iter().filter(|(p, _)| *p == part).map(|(_, l)| l.text.clone()).collect()
    }

    /// Log lines of `part` that the task printed itself (not Wharf's system lines).
    pub fn output(&self, part: Part) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.lines
            .iter()
            .filter(|(p, l)| *p == part && l.stream != Stream::System)
            .map(|(_, l)| l.text.clone())
            .collect()
    }

    pub fn all_lines(&self) -> Vec<(Part, String)> {
        self.seen.lock().unwrap().lines.iter().map(|(p, l)| (*p, l.text.clone())).collect()
    }

    /// Waits (on whatever clock the test runs) until a log line of `part` contains `text`.
    pub async fn wait_for_line(&self, part: Part, text: &str) {
        let mut count = self.line_count.subscribe();
        loop {
            if self.lines(part).iter().any(|l| l.contains(text)) {
                return;
            }
            count.changed().await.expect("the recorder lives as long as the test");
        }
    }

    /// The observer saw exactly what the record says, every change was one the state
    /// machine allows, and everything ended.
    pub fn assert_consistent_with(&self, record: &RunRecord) {
        let illegal = self.seen.lock().unwrap().illegal.clone();
        assert!(illegal.is_empty(), "changes the state machine forbids: {illegal:?}");
        for part in parts(record) {
            assert_eq!(self.transitions(part), history(record, part), "observed vs recorded history of {part:?}");
            assert!(status_of(record, part).is_terminal(), "{part:?} ended {}", status_of(record, part));
        }
    }
}

/// Every part of a record: the run, the checkout if any, each stage and task.
pub fn parts(record: &RunRecord) -> Vec<Part> {
    let mut out = vec![Part::Run];
    if record.checkout.is_some() {
        out.push(Part::Checkout);
    }
    for (s, stage) in record.stages.iter().enumerate() {
        out.push(Part::Stage(s));
        out.extend((0..stage.tasks.len()).map(|t| Part::Task(s, t)));
    }
    out
}

/// Where a task sits in the record, by its (pipeline-unique) name.
pub fn task(record: &RunRecord, name: &str) -> Part {
    for (s, stage) in record.stages.iter().enumerate() {
        if let Some(t) = stage.tasks.iter().position(|t| t.name == name) {
            return Part::Task(s, t);
        }
    }
    panic!("no task `{name}` in the record");
}

pub fn stage(record: &RunRecord, name: &str) -> Part {
    Part::Stage(
        record.stages.iter().position(|s| s.name == name).unwrap_or_else(|| panic!("no stage `{name}` in the record")),
    )
}

pub fn task_record<'r>(record: &'r RunRecord, name: &str) -> &'r wharf_core::run::TaskRecord {
    let Part::Task(s, t) = task(record, name) else { unreachable!() };
    &record.stages[s].tasks[t]
}

/// `"queued running succeeded"` → the statuses.
pub fn statuses(words: &str) -> Vec<Status> {
    words.split_whitespace().map(|w| w.parse().unwrap_or_else(|e| panic!("{e}"))).collect()
}

pub fn pipeline(yaml: &str) -> Arc<Pipeline> {
    Arc::new(wharf_pipeline::parse(yaml).unwrap_or_else(|d| panic!("{}", d.render("pipeline.yaml", yaml))))
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Runs for `n` seconds and exits 0.
pub fn ok_after(n: u64) -> Behavior {
    Behavior { runs_for: secs(n), ..Behavior::default() }
}

/// Runs for `n` seconds and exits 1.
pub fn fail_after(n: u64) -> Behavior {
    Behavior { runs_for: secs(n), exit_code: 1, ..Behavior::default() }
}

pub fn stop_request(grace: Duration) -> Option<StopRequest> {
    Some(StopRequest { reason: StopReason::Stopped, grace })
}

/// A temporary directory holding the run's source (`src`) and run files (`run`).
pub struct Dirs {
    pub tmp: TempDir,
}

impl Dirs {
    pub fn new() -> Self {
        let tmp = TempDir::new().unwrap();
        std::fs::create_dir(tmp.path().join("src")).unwrap();
        Dirs { tmp }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn src(&self) -> PathBuf {
        self.tmp.path().join("src")
    }

    pub fn existing(&self) -> Workspace {
        Workspace::Existing { src: self.src(), run_dir: self.tmp.path().join("run") }
    }

    pub fn checkout(&self) -> Workspace {
        Workspace::Checkout { dir: self.tmp.path().join("ws") }
    }
}

/// Run #7 of its pipeline, the pipeline's 42nd start, started locally.
pub fn request(pipeline: Arc<Pipeline>, workspace: Workspace) -> RunRequest {
    RunRequest {
        pipeline,
        number: 7,
        increment: 42,
        cause: Cause::Local { user: "tester".into() },
        parameters: BTreeMap::new(),
        secrets: BTreeMap::new(),
        workspace,
        commit: None,
        git_ref: None,
        resume: None,
        created_at: None,
        labels: vec![],
        registries: Default::default(),
        clusters: Default::default(),
        local_sources: true,
        approvals: None,
        signals: None,
    }
}

pub fn fake_engine(fake: &Arc<FakeExecutor>, config: EngineConfig) -> Engine {
    Engine::new(config, fake.clone())
}

/// A host executor whose shells find programs on this machine's `PATH`.
pub fn host_engine() -> Engine {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let host = HostExecutor::new(HostConfig { base_env: vec![("PATH".into(), path)], ..HostConfig::default() });
    Engine::new(EngineConfig { timeout_grace: secs(2), ..EngineConfig::default() }, Arc::new(host))
}

/// Runs `request` to its end with nobody stopping it; checks the observer agrees with
/// the record.
pub async fn run(engine: &Engine, request: RunRequest) -> (RunRecord, Arc<Recorder>) {
    let recorder = Recorder::new();
    let (_stop_tx, stop_rx) = watch::channel(None);
    let record = engine.run(request, recorder.clone(), stop_rx).await;
    recorder.assert_consistent_with(&record);
    (record, recorder)
}

/// Runs `request` and sends `stop` once `when` resolves.
pub async fn run_stopped_when(
    engine: &Engine,
    request: RunRequest,
    recorder: Arc<Recorder>,
    when: impl std::future::Future<Output = ()>,
    stop: Option<StopRequest>,
) -> RunRecord {
    let (stop_tx, stop_rx) = watch::channel(None);
    let run = engine.run(request, recorder.clone(), stop_rx);
    tokio::pin!(run);
    let record = tokio::select! {
        record = &mut run => record,
        () = when => {
            stop_tx.send_replace(stop);
            run.await
        }
    };
    recorder.assert_consistent_with(&record);
    record
}

/// A git repository with one commit on branch `main` (file `README`), made with the
/// `git` program; `url()` is its `file://` address.
pub struct GitRepo {
    pub tmp: TempDir,
    pub commit: String,
}

impl GitRepo {
    pub fn new() -> Self {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path();
        git(dir, &["init", "--quiet", "--initial-branch=main"]);
        std::fs::write(dir.join("README"), "hello from the repo\n").unwrap();
        git(dir, &["add", "README"]);
        git(dir, &["-c", "user.name=t", "-c", "user.email=t@e", "commit", "--quiet", "-m", "first commit"]);
        let commit = git(dir, &["rev-parse", "HEAD"]);
        GitRepo { tmp, commit }
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.tmp.path().display())
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out =
        std::process::Command::new("git").arg("-C").arg(dir).args(args).env("LC_ALL", "C").output().expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
