//! Executors run tasks. The engine hands one a [`TaskSpec`] and gets an [`Exit`]
//! back; nothing else crosses this seam: executors never see the store, the engine
//! never sees processes, containers or pods.
//!
//! Start with [`Executor`] (running an attempt, taking one over after a restart,
//! reporting and discarding what an earlier server process left, whether a task runs
//! on the host), then [`host`] (a process group per task in the run's workspace) and
//! [`fake`] (scripted outcomes on tokio's clock, for engine and lifecycle tests).
//! [`stored`] is the one format of a log line on disk.

pub mod build;
pub mod chart;
pub mod deploy;
pub mod fake;
pub mod handover;
pub mod host;
pub mod lines;
pub mod routed;
pub mod spawn;
pub mod stored;

use jiff::Timestamp;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Everything an executor needs to run one attempt of one task. Values are final:
/// variables are already resolved, the script already rendered for the shell.
#[derive(Clone, Debug)]
pub struct TaskSpec {
    /// `<pipeline>#<number>`, for labels and log lines.
    pub run: String,
    pub stage: String,
    pub task: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The checked-out source; the task's working directory.
    pub workdir: PathBuf,
    /// Shell code run with `sh -e`.
    pub script: String,
    /// `image:tag` for container executors; the host executor says in the log that it
    /// ignores it.
    pub image: Option<String>,
    /// Added to (and overriding) the executor's base environment, in this order.
    pub env: Vec<(String, String)>,
    /// The file the task appends `KEY=VALUE` lines to (`$WHARF_OUTPUT`). Exists, empty.
    pub output_file: PathBuf,
    /// Identify what runs the task, for finding it again (after a restart of the
    /// server): environment variables on the host executor, container labels on
    /// Docker. Keys are variable names.
    pub labels: Vec<(String, String)>,
    /// The pipeline's `cluster:`, resolved: what the kubernetes executor runs the task's
    /// pod on. `None` when the pipeline names no cluster.
    pub cluster: Option<TaskCluster>,
}

/// A registered cluster and the namespace (its `ecp-devops-<id>`) a task's pod runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskCluster {
    pub login: deploy::ClusterLogin,
    pub namespace: String,
    /// How the task's pod is scheduled: the task's settings over the pipeline's over the
    /// cluster's defaults, merged.
    pub pod: wharf_core::pod::PodSettings,
    /// How long its pod may stay `Pending` before the attempt fails with the scheduler's
    /// reason; `None`: the executor's default.
    pub pending_limit: Option<std::time::Duration>,
    /// How the run's workspace reaches the pod: the cluster's setting.
    pub workspace: wharf_core::pod::WorkspaceSettings,
}

/// Which stream a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    /// Written by Wharf itself (what it ran, which signal ended it, …).
    System,
}

/// One line of task output, without its line ending, stamped when it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub at: Timestamp,
    pub stream: Stream,
    pub text: String,
    /// The line was longer than [`MAX_LINE_BYTES`] and goes on in the next line of the
    /// same stream. Masking uses it to catch a secret cut in two.
    pub continued: bool,
}

impl LogLine {
    /// A line Wharf itself writes into a task's log, stamped now.
    pub fn system(text: impl Into<String>) -> LogLine {
        LogLine { at: Timestamp::now(), stream: Stream::System, text: text.into(), continued: false }
    }
}

/// What an attempt is doing, as its executor sees it (reported through [`LogSink::phase`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for resources before it can run (a pod the scheduler has not placed, its
    /// image being pulled): the task's `pending` status, not counted by any timeout.
    /// `reason` says what it waits for, in the platform's own words.
    Pending { reason: String },
    /// Running: timeouts count from here.
    Running,
}

/// Where an executor sends log lines. Called from any task, in the order lines were
/// read per stream; must not block for long.
pub trait LogSink: Send + Sync {
    fn line(&self, line: LogLine);

    /// The attempt's phase changed. An attempt is `Running` from the start of
    /// [`Executor::run`] (or [`Executor::adopt`]) unless its executor reports `Pending`;
    /// one that does reports `Running` once the task really starts (or simply returns,
    /// when it never did). Executors whose tasks start at once report nothing. Default:
    /// ignored.
    fn phase(&self, phase: Phase) {
        let _ = phase;
    }
}

/// Longest line kept as one; longer output is split at this many bytes (on a char
/// boundary), so a binary blob without newlines cannot exhaust memory.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Why the engine wants a running task to end. Its `Display` is how a log line or
/// record says it: `stopped by user`, `timed out`, `superseded by run #5
/// (concurrency: cancel-previous)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// A person stopped the run (or Ctrl-C in `wharf run`).
    Stopped,
    /// A task, stage or pipeline timeout ran out.
    TimedOut,
    /// A newer run of the same pipeline, run number `by`, took the run's place (the
    /// pipeline's concurrency policy is `cancel-previous`).
    Superseded { by: u64 },
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Stopped => f.write_str("stopped by user"),
            StopReason::TimedOut => f.write_str("timed out"),
            StopReason::Superseded { by } => write!(f, "superseded by run #{by} (concurrency: cancel-previous)"),
        }
    }
}

/// A request to end a task: ask politely (SIGTERM or the equivalent), then after
/// `grace` force it (SIGKILL, container kill, pod delete).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopRequest {
    pub reason: StopReason,
    pub grace: Duration,
}

/// The engine's side sends at most one meaningful request; later sends may shorten
/// the grace (a second Ctrl-C means "now").
pub type StopSignal = watch::Receiver<Option<StopRequest>>;

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    /// The process's exit code, when it exited by itself.
    pub code: Option<i32>,
    /// The signal that ended it, when one did (15 = SIGTERM, 9 = SIGKILL).
    pub signal: Option<i32>,
    /// Set when the attempt ended because of a [`StopRequest`].
    pub stopped: Option<StopReason>,
}

impl Exit {
    pub fn succeeded(&self) -> bool {
        self.code == Some(0) && self.stopped.is_none()
    }
}

/// The executor could not run the task at all (as opposed to the task failing).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutorError {
    /// The executor lacks something the task needs (a task type, a feature).
    #[error("{0}")]
    Unsupported(String),
    /// Starting the process, container or pod failed; the message says what and why.
    #[error("could not start the task: {message}")]
    Start {
        message: String,
        #[source]
        source: Option<std::io::Error>,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where the stored log of a task taken over after a restart ends (see
/// [`Executor::adopt`]): the output lines already stored are exactly the task's first
/// lines up to this point, in the order the executor reads them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogResume {
    /// Output lines stamped before this second (Unix seconds, the executor's own
    /// timestamps as stored) are all stored already; 0: nothing is stored.
    pub since_second: i64,
    /// How many of the task's output lines (stdout and stderr, not `System`) stamped at
    /// or after `since_second` are stored already.
    pub skip_lines: u64,
}

/// Which attempt of which task something was started for, as an executor records it
/// on what it starts (container labels on Docker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptId {
    pub stage: String,
    pub task: String,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// Something an earlier process of the server started for a task and that outlived
/// it, found again after a restart by the value of one of its [`TaskSpec::labels`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leftover {
    /// The executor's handle (a container id, a process group id).
    pub id: String,
    /// The value of the label it was asked for (which server and run it belongs to).
    pub owner: String,
    /// The attempt it runs, when the executor can take it over with
    /// [`Executor::adopt`]; `None`: it can only be [discarded](Executor::discard) (host
    /// processes, whose pipes died with the server).
    pub attempt: Option<AttemptId>,
}

/// Runs tasks. Implementations: [`host::HostExecutor`], [`fake::FakeExecutor`].
///
/// Contract:
/// - [`Executor::run`] runs one attempt to its end and returns its [`Exit`]. It may be
///   called concurrently for tasks of a parallel stage; each call is independent.
/// - Every line the task prints reaches `logs` before `run` returns.
/// - When `stop` carries a request, `run` ends the task (gracefully, then forcibly
///   after the grace) and returns promptly with `Exit::stopped` set. Nothing the task
///   started may outlive `run`'s return (process group, container, pod).
/// - `Err` means the task could not be run (the attempt failed without running); a task
///   that ran and failed is `Ok` with a non-zero code.
pub trait Executor: Send + Sync {
    /// `host`, `docker`, `kubernetes`, `fake`.
    fn name(&self) -> &'static str;

    /// Whether this executor can run a task of this `type:` at all; the engine asks
    /// before the run starts so that an impossible pipeline fails before doing work.
    fn supports(&self, task_type: &str) -> Result<(), ExecutorError>;

    /// Where `spec` will run, for the task's log (`on the host, as user wharf-task`,
    /// `in a container of busybox:1.35`): a person must never have to guess whether a
    /// task ran on the server's machine.
    fn placement(&self, spec: &TaskSpec) -> String {
        let _ = spec;
        format!("on the {} executor", self.name())
    }

    fn run<'a>(
        &'a self,
        spec: TaskSpec,
        logs: Arc<dyn LogSink>,
        stop: StopSignal,
    ) -> BoxFuture<'a, Result<Exit, ExecutorError>>;

    /// Takes over an attempt that an earlier process of the server started with this
    /// same `spec` (same labels, stage, task and attempt) and that may still be
    /// running: resumes its log after `resume` (no line twice, none lost), then behaves
    /// like [`Executor::run`] until it ends (stop, cleanup, every line in `logs` first).
    /// `Ok(None)`: there is nothing to take over (never started, already cleaned up,
    /// or an executor whose tasks die with the server, like the host's); the engine then
    /// counts the attempt as interrupted. Default: `Ok(None)`.
    fn adopt<'a>(
        &'a self,
        spec: TaskSpec,
        logs: Arc<dyn LogSink>,
        stop: StopSignal,
        resume: LogResume,
    ) -> BoxFuture<'a, Result<Option<Exit>, ExecutorError>> {
        let _ = (spec, logs, stop, resume);
        Box::pin(async { Ok(None) })
    }

    /// What earlier processes of the server left behind that carries the label `label`
    /// (any value), for the server to adopt or [`discard`](Executor::discard) at start.
    /// Default: nothing.
    fn leftovers<'a>(&'a self, label: &'a str) -> BoxFuture<'a, Result<Vec<Leftover>, ExecutorError>> {
        let _ = label;
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Ends and removes a leftover nobody will adopt. Idempotent: one already gone is
    /// fine. Default: nothing to do.
    fn discard<'a>(&'a self, leftover: &'a Leftover) -> BoxFuture<'a, Result<(), ExecutorError>> {
        let _ = leftover;
        Box::pin(async { Ok(()) })
    }

    /// Whether a `script` task with this image (its own or the pipeline's default) runs
    /// on the server's host, with the rights that gives: the server refuses such runs
    /// where host execution is not allowed. Default: no.
    fn runs_on_host(&self, image: Option<&str>) -> bool {
        let _ = image;
        false
    }

    /// The run has ended, in any outcome (succeeded, failed, stopped, timed out): release
    /// what the executor kept for the whole run (the kubernetes executor's per-run volume
    /// claim). Failures are the executor's to log; what it leaves is found again by
    /// [`Executor::leftovers`] at the next start. Default: nothing to release.
    fn run_ended<'a>(&'a self, run: &'a RunEnd) -> BoxFuture<'a, ()> {
        let _ = run;
        Box::pin(async {})
    }
}

/// A run that ended, as [`Executor::run_ended`] is told: the same `run`, `labels` and
/// `cluster` its tasks' [`TaskSpec`]s carried.
#[derive(Clone, Debug)]
pub struct RunEnd {
    pub run: String,
    pub labels: Vec<(String, String)>,
    pub cluster: Option<TaskCluster>,
}
