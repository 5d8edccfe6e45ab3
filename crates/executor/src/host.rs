//! The host executor: runs a `script` task as `sh -e -c <script>` directly on this
//! machine, in the run's workspace, with nothing installed beyond a POSIX shell. Each
//! attempt gets a process group of its own; that group is the unit Wharf signals on
//! stop and kills when the shell exits, so nothing a task starts outlives it. Start
//! with [`HostExecutor::new`]; the lifecycle of one attempt is in `run_script`, the
//! stop/kill rules in `supervise`, the line splitting in `pump`.
//!
//! With [`HostConfig::user`] (a server running as root) the shell runs as that
//! unprivileged user instead: the workspace is handed to it first ([`handover`]),
//! `HOME` is a directory of the run's own, and `USER`/`LOGNAME` name it. Both cases
//! start the shell through [`crate::spawn`] (which says why not std's `Command`).

use crate::handover::{self, TaskUser};
use crate::spawn::{Child, Ids, Nul, Spawn, SpawnError, Step};
use crate::{
    BoxFuture, Executor, ExecutorError, Exit, Leftover, LogLine, LogSink, MAX_LINE_BYTES, StopReason, StopRequest,
    StopSignal, Stream, TaskSpec,
};
use jiff::Timestamp;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::fmt;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::pin::pin;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

/// How long output is still read after the process group was killed. Only a process
/// that left the group (`setsid`, a double fork into a new session) can still hold the
/// pipes open by then; Wharf cannot kill it and must not wait for it forever.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// How much output one read asks for at most.
const READ_CHUNK: usize = 16 * 1024;

/// How the host executor starts shells.
#[derive(Clone)]
pub struct HostConfig {
    /// The POSIX shell run as `<shell> -e -c <script>`: a path (`PATH` is not searched).
    /// Default `/bin/sh`.
    pub shell: PathBuf,
    /// The environment every task starts from (the task's `env` is applied on top).
    /// The binary passes the environment it inherited; this library never reads the
    /// environment itself, so an empty list means an empty environment.
    pub base_env: Vec<(String, String)>,
    /// Run tasks as this user (the process must be root to switch to it). `None`: as
    /// the process's own user, with `base_env`'s `HOME`.
    pub user: Option<TaskUser>,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self { shell: PathBuf::from("/bin/sh"), base_env: Vec::new(), user: None }
    }
}

/// Values of the inherited environment may be tokens; `Debug` shows only the names.
impl fmt::Debug for HostConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostConfig")
            .field("shell", &self.shell)
            .field("base_env", &self.base_env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("user", &self.user)
            .finish()
    }
}

/// Runs `script` tasks as shell processes on this machine. Cheap to share: one
/// instance serves concurrent `run` calls.
#[derive(Debug)]
pub struct HostExecutor {
    config: HostConfig,
}

impl HostExecutor {
    pub fn new(config: HostConfig) -> Self {
        Self { config }
    }

    async fn run_script(
        &self,
        spec: TaskSpec,
        logs: Arc<dyn LogSink>,
        mut stop: StopSignal,
    ) -> Result<Exit, ExecutorError> {
        let logs = &*logs;
        // Marks the current value seen, so `changed()` below fires only for later ones.
        let already = *stop.borrow_and_update();
        if let Some(req) = already {
            system(logs, format!("not started: {} before it began", req.reason));
            return Ok(Exit { code: None, signal: None, stopped: Some(req.reason) });
        }
        if let Some(image) = &spec.image {
            system(logs, format!("the host executor ignores image {image}; the script runs directly on this machine"));
        }

        let home = match &self.config.user {
            Some(user) => Some(hand_over(&spec, user.clone()).await?),
            None => None,
        };
        let mut env: Vec<(&str, &str)> = self.config.base_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        if let (Some(user), Some(home)) = (&self.config.user, &home) {
            let home = home.to_str().ok_or_else(|| ExecutorError::Start {
                message: format!("the task's home directory {} is not UTF-8", home.display()),
                source: None,
            })?;
            env.extend([("HOME", home), ("USER", user.name.as_str()), ("LOGNAME", user.name.as_str())]);
        }
        env.extend(spec.env.iter().chain(&spec.labels).map(|(k, v)| (k.as_str(), v.as_str())));
        // A process group of its own, stdin from /dev/null, stdout and stderr to pipes;
        // as the task user (real and effective ids, no supplementary groups) if set.
        let started = Spawn {
            program: &self.config.shell,
            args: &["-e", "-c", &spec.script],
            env,
            workdir: &spec.workdir,
            ids: self.config.user.as_ref().map(|u| Ids { uid: u.uid, gid: u.gid }),
        }
        .spawn();
        let mut child = started.map_err(|e| self.start_error(&spec, e))?;
        let pid = child.id();
        // `spawn` made the shell the leader of a new process group named by its pid.
        let mut group = ProcessGroup::new(Pid::from_raw(pid));

        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let mut output =
            pin!(async { tokio::join!(pump(stdout, Stream::Stdout, logs), pump(stderr, Stream::Stderr, logs),) });
        let mut output_done = false;
        let outcome = {
            let mut supervised = pin!(supervise(&mut child, &mut group, &mut stop, logs));
            loop {
                tokio::select! {
                    outcome = &mut supervised => break outcome,
                    _ = &mut output, if !output_done => output_done = true,
                }
            }
        };
        // The group is dead by now, so the pipes reach EOF as soon as the kernel has
        // torn its members down; only an escaped process can make this time out.
        if !output_done && tokio::time::timeout(DRAIN_TIMEOUT, &mut output).await.is_err() {
            system(
                logs,
                format!(
                    "stopped reading output {DRAIN_TIMEOUT:?} after the task ended: a process \
                     outside its process group still holds its stdout or stderr open"
                ),
            );
        }
        let (status, stopped) = outcome?;
        Ok(Exit { code: status.code(), signal: status.signal(), stopped })
    }

    /// Says why the shell did not start in the terms of the task: which value holds a
    /// NUL byte, which entry made the arguments too long, which path is missing.
    fn start_error(&self, spec: &TaskSpec, error: SpawnError) -> ExecutorError {
        let workdir = spec.workdir.display();
        let shell = self.config.shell.display();
        let env = || self.config.base_env.iter().chain(&spec.env).chain(&spec.labels);
        let errno = error.io().and_then(io::Error::raw_os_error).map(Errno::from_raw);
        let message = match (&error, errno) {
            (SpawnError::Nul(Nul::Arg(_)), _) => "the script contains a NUL byte".to_owned(),
            (SpawnError::Nul(Nul::Workdir), _) => format!("the working directory {workdir} contains a NUL byte"),
            (SpawnError::Nul(Nul::Program), _) => format!("the shell's path {shell} contains a NUL byte"),
            (SpawnError::Nul(Nul::Env(_)), _) => format!("{error}"),
            (SpawnError::Child { step: Step::Exec, .. }, Some(Errno::E2BIG)) => {
                let total: usize = spec.script.len() + env().map(|(k, v)| k.len() + v.len() + 2).sum::<usize>();
                let (what, largest) = env()
                    .map(|(k, v)| (format!("the environment variable `{k}`"), k.len() + 1 + v.len()))
                    .chain([("the script".to_owned(), spec.script.len())])
                    .max_by_key(|(_, len)| *len)
                    .unwrap_or_default();
                format!(
                    "the script and environment are too large for a process (E2BIG: argument list too long): \
                     {total} bytes in all; the largest is {what}, {largest} bytes (Linux takes at most 131072 \
                     bytes in one argument or variable)"
                )
            }
            (SpawnError::Child { step: Step::Exec, .. }, Some(Errno::ENOENT)) => {
                format!("the shell {shell} does not exist")
            }
            (SpawnError::Child { step: Step::Chdir, .. }, Some(Errno::ENOENT)) => {
                format!("the working directory {workdir} does not exist")
            }
            (SpawnError::Child { step: Step::Chdir, .. }, Some(Errno::ENOTDIR)) => {
                format!("the working directory {workdir} is not a directory")
            }
            (SpawnError::Child { step: Step::Chdir, .. }, Some(Errno::EACCES)) => {
                format!("the working directory {workdir} is not accessible")
            }
            _ => format!("could not run the shell {shell} in {workdir}: {error}"),
        };
        let source = match error {
            SpawnError::Nul(_) => None,
            SpawnError::Setup { source, .. } | SpawnError::Child { source, .. } => Some(source),
        };
        ExecutorError::Start { message, source }
    }
}

impl Executor for HostExecutor {
    fn name(&self) -> &'static str {
        "host"
    }

    fn placement(&self, _spec: &TaskSpec) -> String {
        match &self.config.user {
            Some(user) => format!("on the host (this machine), as user {}", user.name),
            None => "on the host (this machine), as the server's own user".to_owned(),
        }
    }

    fn supports(&self, task_type: &str) -> Result<(), ExecutorError> {
        let needs = match task_type {
            "script" => return Ok(()),
            "image" => "is built by the image builder on the Docker Engine, not by an executor",
            "chart-publish" => "is packaged and pushed by the engine on the chart registry, not by an executor",
            "deploy-yaml" | "chart-deploy" | "canary" => {
                "is applied by the engine on a registered cluster, not by an executor"
            }
            "approval" => "is handled by the engine, not by an executor",
            _ => "is not a task type Wharf knows",
        };
        Err(ExecutorError::Unsupported(format!(
            "task type `{task_type}` {needs}; the host executor runs only `script` tasks"
        )))
    }

    fn run<'a>(
        &'a self,
        spec: TaskSpec,
        logs: Arc<dyn LogSink>,
        stop: StopSignal,
    ) -> BoxFuture<'a, Result<Exit, ExecutorError>> {
        Box::pin(self.run_script(spec, logs, stop))
    }

    /// The process groups of tasks an earlier server process started: their processes
    /// carry the label as an environment variable. They can only be discarded (their
    /// output went to pipes that died with that process).
    fn leftovers<'a>(&'a self, label: &'a str) -> BoxFuture<'a, Result<Vec<Leftover>, ExecutorError>> {
        let found = labelled_groups(label);
        Box::pin(async move { Ok(found) })
    }

    /// SIGKILL to the whole process group.
    fn discard<'a>(&'a self, leftover: &'a Leftover) -> BoxFuture<'a, Result<(), ExecutorError>> {
        let result = match leftover.id.parse::<i32>() {
            Ok(group) if group > 1 => match killpg(Pid::from_raw(group), Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => Ok(()),
                Err(e) => Err(ExecutorError::Io {
                    context: format!("cannot kill the leftover process group {group}"),
                    source: e.into(),
                }),
            },
            _ => Err(ExecutorError::Unsupported(format!("`{}` is not a process group of this executor", leftover.id))),
        };
        Box::pin(async move { result })
    }

    fn runs_on_host(&self, _image: Option<&str>) -> bool {
        true
    }
}

/// The process groups whose processes' environment has `label=…` (one leftover per
/// group, owned by the label's value). Linux only (reads /proc); elsewhere none.
/// Every task runs in a group of its own (`setpgid(0, 0)` in [`crate::spawn`]), so killing the group
/// ends everything the task started and did not move to a new session.
fn labelled_groups(label: &str) -> Vec<Leftover> {
    let needle = format!("{label}=");
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut groups: Vec<Leftover> = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        let Some(owner) = environ.split(|b| *b == 0).find_map(|var| var.strip_prefix(needle.as_bytes())) else {
            continue;
        };
        // A process whose group is unknown (it ended meanwhile) or is init's is left alone.
        let Ok(group) = nix::unistd::getpgid(Some(Pid::from_raw(pid))) else { continue };
        if group.as_raw() <= 1 {
            continue;
        }
        let id = group.as_raw().to_string();
        if !groups.iter().any(|g| g.id == id) {
            groups.push(Leftover { id, owner: String::from_utf8_lossy(owner).into_owned(), attempt: None });
        }
    }
    groups
}

/// Makes the workspace, the task's `$WHARF_OUTPUT` and a home directory for the run
/// (`home` beside the workspace) the task user's. The checkout is handed over once: a
/// workspace whose top the user owns was handed over whole before. Returns `HOME`.
async fn hand_over(spec: &TaskSpec, user: TaskUser) -> Result<PathBuf, ExecutorError> {
    let (workdir, output) = (spec.workdir.clone(), spec.output_file.clone());
    let work = tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::MetadataExt;
        let given = std::fs::symlink_metadata(&workdir).is_ok_and(|m| m.uid() == user.uid && m.gid() == user.gid);
        if !given {
            handover::give_tree(&workdir, &user)?;
        }
        handover::give_file(&output, &user)?;
        let home = workdir.parent().unwrap_or(&workdir).join("home");
        handover::give_dir(&home, &user)?;
        Ok::<_, String>(home)
    });
    match work.await {
        Ok(Ok(home)) => Ok(home),
        Ok(Err(message)) => Err(ExecutorError::Start { message, source: None }),
        Err(e) => {
            Err(ExecutorError::Start { message: format!("handing the workspace over failed: {e}"), source: None })
        }
    }
}

/// A stop being carried out: SIGTERM went out at `term_sent`, SIGKILL follows at
/// `kill_at` (`None` once it went out).
struct Stopping {
    reason: StopReason,
    term_sent: Instant,
    kill_at: Option<Instant>,
}

/// Waits for the shell to exit while acting on stop requests, then kills whatever it
/// left in its process group.
///
/// The rule: the task is the shell. It ends when the shell exits, and at that moment
/// every process still in its group (`sleep 100 &`, a daemon the script forgot) is
/// SIGKILLed. Waiting for them instead would let a stray background job hold the task
/// (and, through the inherited pipes, the log drain) open forever.
async fn supervise(
    child: &mut Child,
    group: &mut ProcessGroup,
    stop: &mut StopSignal,
    logs: &dyn LogSink,
) -> Result<(ExitStatus, Option<StopReason>), ExecutorError> {
    let mut stopping: Option<Stopping> = None;
    let mut watching = true;
    let waited = loop {
        let kill_at = stopping.as_ref().and_then(|s| s.kill_at);
        tokio::select! {
            // An exit that raced a stop request wins: the task ended by itself.
            biased;
            waited = child.wait() => break waited,
            changed = stop.changed(), if watching => match changed {
                Ok(()) => {
                    let request = *stop.borrow_and_update();
                    if let Some(request) = request {
                        begin_or_hurry_stop(request, &mut stopping, group, logs);
                    }
                }
                // The engine dropped its sender: no stop can come any more.
                Err(_) => watching = false,
            },
            () = tokio::time::sleep_until(kill_at.unwrap_or_else(Instant::now)),
                if kill_at.is_some() =>
            {
                if let Some(s) = stopping.as_mut()
                    && let Some(planned) = s.kill_at.take()
                {
                    // The planned grace, not the measured one: "10s", not "10.000213s".
                    let waited = round_to_millis(planned - s.term_sent);
                    match group.signal(Signal::SIGKILL) {
                        Ok(()) => system(
                            logs,
                            format!("did not exit within {waited:?} of SIGTERM; sent SIGKILL"),
                        ),
                        Err(e) => system(logs, format!("could not send SIGKILL: {e}")),
                    }
                }
            }
        }
    };
    let reap_error = group.kill_after_exit().err();
    let status =
        waited.map_err(|source| ExecutorError::Io { context: "waiting for the task's shell".to_owned(), source })?;
    if let Some(e) = reap_error {
        system(logs, format!("could not kill what the script left in its process group: {e}"));
    }
    Ok((status, stopping.map(|s| s.reason)))
}

/// The first request sends SIGTERM and starts the grace; a later one can only bring
/// the SIGKILL closer (a second Ctrl-C with a zero grace means now).
fn begin_or_hurry_stop(
    request: StopRequest,
    stopping: &mut Option<Stopping>,
    group: &ProcessGroup,
    logs: &dyn LogSink,
) {
    let now = Instant::now();
    let reason = request.reason;
    match stopping {
        None => {
            match group.signal(Signal::SIGTERM) {
                Ok(()) => system(logs, format!("stopping: sent SIGTERM to the process group (reason: {reason})")),
                Err(e) => system(logs, format!("stopping (reason: {reason}): could not send SIGTERM: {e}")),
            }
            *stopping = Some(Stopping { reason: request.reason, term_sent: now, kill_at: Some(now + request.grace) });
        }
        Some(Stopping { kill_at: Some(kill_at), .. }) => {
            let sooner = now + request.grace;
            if sooner < *kill_at {
                *kill_at = sooner;
                let when = if request.grace.is_zero() { "now".to_owned() } else { format!("in {:?}", request.grace) };
                system(logs, format!("stop requested again (reason: {reason}); SIGKILL {when}"));
            }
        }
        // SIGKILL already went out; nothing is left to hurry.
        Some(_) => {}
    }
}

/// The task's process group. Dropping it (when `run`'s future is dropped mid-task)
/// SIGKILLs the group, so cancelling `run` leaves nothing behind either.
struct ProcessGroup {
    id: Pid,
    done: bool,
}

impl ProcessGroup {
    fn new(id: Pid) -> Self {
        Self { id, done: false }
    }

    /// Signals every process in the group; a group that is already gone is fine.
    fn signal(&self, signal: Signal) -> nix::Result<()> {
        match killpg(self.id, signal) {
            Err(Errno::ESRCH) => Ok(()),
            other => other,
        }
    }

    /// Called right after the shell (the group leader) was reaped. Its pid, and so the
    /// group id, could in principle be reused once the last member is gone, but pids
    /// are handed out cyclically and this runs microseconds later, so the window is
    /// negligible; afterwards the group is never signalled again.
    fn kill_after_exit(&mut self) -> nix::Result<()> {
        self.done = true;
        self.signal(Signal::SIGKILL)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if !self.done {
            // Nothing to report to: the caller gave up on this task.
            let _ = self.signal(Signal::SIGKILL);
        }
    }
}

/// Reads one pipe to EOF and sends it to `logs` line by line. Memory stays bounded: a
/// line longer than [`MAX_LINE_BYTES`] is sent in pieces as it arrives, so at most
/// about `MAX_LINE_BYTES + READ_CHUNK` bytes are buffered.
async fn pump<R: AsyncRead + Unpin>(reader: Option<R>, stream: Stream, logs: &dyn LogSink) {
    let Some(mut reader) = reader else { return };
    let mut pending: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    // `pending[..scanned]` is known to hold no '\n'.
    let mut scanned = 0;
    loop {
        pending.reserve(READ_CHUNK);
        let read = match reader.read_buf(&mut pending).await {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let at = Timestamp::now();
                if !pending.is_empty() {
                    send(logs, stream, at, strip_cr(&pending));
                }
                let name = match stream {
                    Stream::Stdout => "stdout",
                    Stream::Stderr => "stderr",
                    Stream::System => "log",
                };
                system(logs, format!("reading the task's {name} failed: {e}"));
                return;
            }
        };
        let at = Timestamp::now();
        if read == 0 {
            // A last line without a newline is still a line.
            if !pending.is_empty() {
                send(logs, stream, at, strip_cr(&pending));
            }
            return;
        }
        let mut start = 0;
        while let Some(i) = pending[scanned..].iter().position(|&b| b == b'\n') {
            let end = scanned + i;
            send(logs, stream, at, strip_cr(&pending[start..end]));
            start = end + 1;
            scanned = start;
        }
        scanned = pending.len();
        // One byte of slack past the limit, so a line of exactly MAX_LINE_BYTES whose
        // "\r\n" arrives in a later read is not split into itself and an empty line.
        while pending.len() - start > MAX_LINE_BYTES + 1 {
            let cut = start + crate::lines::utf8_cut(&pending[start..], MAX_LINE_BYTES);
            send_piece(logs, stream, at, &pending[start..cut], true);
            start = cut;
        }
        pending.drain(..start);
        scanned -= start;
    }
}

/// Sends one whole line (see [`crate::lines::emit`]).
fn send(logs: &dyn LogSink, stream: Stream, at: Timestamp, bytes: &[u8]) {
    send_piece(logs, stream, at, bytes, false);
}

fn send_piece(logs: &dyn LogSink, stream: Stream, at: Timestamp, bytes: &[u8], continued: bool) {
    crate::lines::emit(&mut |line| logs.line(line), stream, at, bytes, continued);
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn system(logs: &dyn LogSink, text: String) {
    logs.line(LogLine::system(text));
}

fn round_to_millis(d: Duration) -> Duration {
    Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
