//! The host executor against a real `/bin/sh`: exit codes, environment, output
//! splitting, process-group cleanup and stop handling. Time bounds are generous upper
//! limits, never sleeps that a slow machine could lose.

use std::path::Path;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use wharf_executor::host::{HostConfig, HostExecutor};
use wharf_executor::{
    Executor, ExecutorError, Exit, LogLine, LogSink, MAX_LINE_BYTES, StopReason, StopRequest, Stream, TaskSpec,
};

/// Collects every line and wakes waiters on each one.
#[derive(Default)]
struct Collect {
    lines: Mutex<Vec<LogLine>>,
    added: Notify,
}

impl LogSink for Collect {
    fn line(&self, line: LogLine) {
        self.lines.lock().unwrap().push(line);
        self.added.notify_waiters();
    }
}

impl Collect {
    fn texts(&self, stream: Stream) -> Vec<String> {
        let lines = self.lines.lock().unwrap();
        lines.iter().filter(|l| l.stream == stream).map(|l| l.text.clone()).collect()
    }

    /// Waits (at most 10 s) until a line of `stream` contains `needle`.
    async fn wait_for(&self, stream: Stream, needle: &str) {
        let wait = async {
            loop {
                let mut added = pin!(self.added.notified());
                added.as_mut().enable();
                if self.texts(stream).iter().any(|t| t.contains(needle)) {
                    return;
                }
                added.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("no {stream:?} line containing {needle:?}"));
    }
}

/// `PATH` only, so scripts can run `sleep`, `cat`, `head` but see nothing else.
fn executor() -> HostExecutor {
    HostExecutor::new(HostConfig {
        base_env: vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())],
        ..HostConfig::default()
    })
}

fn spec(dir: &Path, script: &str) -> TaskSpec {
    TaskSpec {
        run: "demo#1".into(),
        stage: "build".into(),
        task: "test".into(),
        attempt: 1,
        workdir: dir.to_path_buf(),
        script: script.into(),
        image: None,
        env: Vec::new(),
        output_file: dir.join(".wharf-output"),
        labels: vec![],
        cluster: None,
    }
}

fn no_stop() -> (watch::Sender<Option<StopRequest>>, watch::Receiver<Option<StopRequest>>) {
    watch::channel(None)
}

async fn run_with(exec: &HostExecutor, spec: TaskSpec) -> (Exit, Arc<Collect>) {
    let logs = Arc::new(Collect::default());
    let (_tx, rx) = no_stop();
    let exit = exec.run(spec, logs.clone(), rx).await.expect("run");
    (exit, logs)
}

async fn run(dir: &Path, script: &str) -> (Exit, Arc<Collect>) {
    run_with(&executor(), spec(dir, script)).await
}

fn exited(code: i32) -> Exit {
    Exit { code: Some(code), signal: None, stopped: None }
}

/// Whether `pid` is still a live process (a zombie awaiting its reaper counts as dead).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

#[tokio::test]
async fn exit_codes_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (exit, _) = run(dir.path(), "true").await;
    assert_eq!(exit, exited(0));
    assert!(exit.succeeded());
    let (exit, _) = run(dir.path(), "exit 3").await;
    assert_eq!(exit, exited(3));
    assert!(!exit.succeeded());
}

#[tokio::test]
async fn a_failing_command_stops_the_script() {
    let dir = tempfile::tempdir().unwrap();
    let (exit, logs) = run(dir.path(), "echo before\nfalse\necho after").await;
    assert_eq!(exit, exited(1));
    assert_eq!(logs.texts(Stream::Stdout), ["before"]);
}

#[tokio::test]
async fn task_env_overrides_base_env_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let exec = HostExecutor::new(HostConfig {
        base_env: vec![("A".into(), "base-a".into()), ("B".into(), "base-b".into())],
        ..HostConfig::default()
    });
    let mut task = spec(dir.path(), r#"echo "$A $B $C""#);
    task.env = vec![("B".into(), "task-b".into()), ("C".into(), "first".into()), ("C".into(), "last".into())];
    let (exit, logs) = run_with(&exec, task).await;
    assert_eq!(exit, exited(0));
    assert_eq!(logs.texts(Stream::Stdout), ["base-a task-b last"]);
}

#[tokio::test]
async fn the_host_environment_is_not_inherited() {
    let dir = tempfile::tempdir().unwrap();
    let exec = HostExecutor::new(HostConfig::default());
    let (exit, logs) = run_with(&exec, spec(dir.path(), r#"echo "${HOME-unset} ${CARGO_MANIFEST_DIR-unset}""#)).await;
    assert_eq!(exit, exited(0));
    assert_eq!(logs.texts(Stream::Stdout), ["unset unset"]);
}

#[tokio::test]
async fn stdout_and_stderr_are_separate_and_ordered() {
    let dir = tempfile::tempdir().unwrap();
    let script = "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done";
    let (exit, logs) = run(dir.path(), script).await;
    assert_eq!(exit, exited(0));
    assert_eq!(logs.texts(Stream::Stdout), ["out1", "out2", "out3", "out4", "out5"]);
    assert_eq!(logs.texts(Stream::Stderr), ["err1", "err2", "err3", "err4", "err5"]);
    assert!(logs.texts(Stream::System).is_empty());
}

#[tokio::test]
async fn a_long_line_is_split_into_bounded_pieces_that_reassemble() {
    let dir = tempfile::tempdir().unwrap();
    // 200 KB of two-byte and one-byte chars, no newline: piece boundaries fall inside
    // a char unless the splitter respects them.
    let blob: String = "aé".repeat(200 * 1024 / 3);
    std::fs::write(dir.path().join("blob"), &blob).unwrap();
    let (exit, logs) = run(dir.path(), "cat blob").await;
    assert_eq!(exit, exited(0));
    let pieces = logs.texts(Stream::Stdout);
    assert!(pieces.len() >= 3, "{} pieces", pieces.len());
    assert!(pieces.iter().all(|p| p.len() <= MAX_LINE_BYTES));
    assert!(pieces.iter().all(|p| !p.is_empty()));
    assert!(pieces.concat() == blob, "pieces do not reassemble the line");
}

#[tokio::test]
async fn a_line_of_exactly_the_limit_stays_whole() {
    let dir = tempfile::tempdir().unwrap();
    let line = "x".repeat(MAX_LINE_BYTES);
    std::fs::write(dir.path().join("line"), format!("{line}\r\nnext\n")).unwrap();
    let (exit, logs) = run(dir.path(), "cat line").await;
    assert_eq!(exit, exited(0));
    assert_eq!(logs.texts(Stream::Stdout), [line, "next".into()]);
}

#[tokio::test]
async fn invalid_utf8_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (exit, logs) = run(dir.path(), r"printf 'a\377b\n\300\n'").await;
    assert_eq!(exit, exited(0));
    assert_eq!(logs.texts(Stream::Stdout), ["a\u{FFFD}b", "\u{FFFD}"]);
}

#[tokio::test]
async fn crlf_is_stripped_and_a_last_line_without_newline_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (exit, logs) = run(dir.path(), r"printf 'one\r\n\ntwo\nthree'").await;
    assert_eq!(exit, exited(0));
    assert_eq!(logs.texts(Stream::Stdout), ["one", "", "two", "three"]);
}

#[tokio::test]
async fn the_workdir_is_the_current_directory_and_writable() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = spec(dir.path(), r#"pwd; echo KEY=value >> "$WHARF_OUTPUT""#);
    std::fs::write(&task.output_file, "").unwrap();
    task.env = vec![("WHARF_OUTPUT".into(), task.output_file.display().to_string())];
    let output_file = task.output_file.clone();
    let (exit, logs) = run_with(&executor(), task).await;
    assert_eq!(exit, exited(0));
    let cwd = dir.path().canonicalize().unwrap();
    assert_eq!(logs.texts(Stream::Stdout), [cwd.display().to_string()]);
    assert_eq!(std::fs::read_to_string(output_file).unwrap(), "KEY=value\n");
}

#[tokio::test]
async fn an_ignored_image_is_mentioned_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut task = spec(dir.path(), "echo hi");
    task.image = Some("alpine:3.20".into());
    let (exit, logs) = run_with(&executor(), task).await;
    assert_eq!(exit, exited(0));
    let lines = logs.lines.lock().unwrap();
    assert_eq!(lines[0].stream, Stream::System);
    assert!(lines[0].text.contains("ignores image alpine:3.20"), "{lines:?}");
    assert_eq!(lines[1].text, "hi");
}

#[tokio::test]
async fn background_processes_do_not_outlive_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (exit, logs) = run(dir.path(), "sleep 1000 &\necho $!\necho done").await;
    assert!(started.elapsed() < Duration::from_secs(5), "run waited for the background job");
    assert_eq!(exit, exited(0));
    let stdout = logs.texts(Stream::Stdout);
    assert_eq!(stdout[1], "done");
    let pid: i32 = stdout[0].parse().unwrap();
    // SIGKILL was sent before run returned; give the kernel a moment to tear it down.
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!alive(pid), "background sleep {pid} survived the task");
}

#[tokio::test]
async fn dropping_run_kills_the_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let exec = executor();
    let logs = Arc::new(Collect::default());
    let (_tx, rx) = no_stop();
    let script = "sleep 1000 &\necho $!\necho ready\nsleep 1000";
    {
        let running = exec.run(spec(dir.path(), script), logs.clone(), rx);
        tokio::select! {
            _ = running => panic!("the script ended by itself"),
            () = logs.wait_for(Stream::Stdout, "ready") => {}
        }
    }
    let pid: i32 = logs.texts(Stream::Stdout)[0].parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!alive(pid), "background sleep {pid} survived the dropped run");
}

async fn run_and_stop(script: &str, first: StopRequest, second: Option<StopRequest>) -> (Exit, Arc<Collect>, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let exec = executor();
    let logs = Arc::new(Collect::default());
    let (tx, rx) = no_stop();
    let started = Instant::now();
    let running = exec.run(spec(dir.path(), script), logs.clone(), rx);
    let stopper = async {
        logs.wait_for(Stream::Stdout, "ready").await;
        tx.send(Some(first)).unwrap();
        if let Some(second) = second {
            logs.wait_for(Stream::System, "SIGTERM").await;
            tx.send(Some(second)).unwrap();
        }
    };
    let (exit, ()) = tokio::join!(running, stopper);
    (exit.expect("run"), logs, started.elapsed())
}

#[tokio::test]
async fn stop_sends_sigterm_and_a_trapping_script_exits_cleanly() {
    let request = StopRequest { reason: StopReason::Stopped, grace: Duration::from_secs(30) };
    let script = "trap 'echo caught; exit 0' TERM\necho ready\nsleep 30 &\nwait";
    let (exit, logs, took) = run_and_stop(script, request, None).await;
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(exit, Exit { code: Some(0), signal: None, stopped: Some(StopReason::Stopped) });
    assert!(!exit.succeeded());
    assert_eq!(logs.texts(Stream::Stdout), ["ready", "caught"]);
    let system = logs.texts(Stream::System);
    assert_eq!(system, ["stopping: sent SIGTERM to the process group (reason: stopped by user)"]);
}

#[tokio::test]
async fn a_script_ignoring_sigterm_is_killed_after_the_grace() {
    let request = StopRequest { reason: StopReason::Stopped, grace: Duration::from_millis(300) };
    let (exit, logs, took) = run_and_stop("trap '' TERM\necho ready\nsleep 30", request, None).await;
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(exit, Exit { code: None, signal: Some(9), stopped: Some(StopReason::Stopped) });
    let system = logs.texts(Stream::System);
    assert_eq!(system.len(), 2, "{system:?}");
    assert_eq!(system[1], "did not exit within 300ms of SIGTERM; sent SIGKILL");
}

#[tokio::test]
async fn a_second_request_with_a_shorter_grace_kills_now() {
    let slow = StopRequest { reason: StopReason::Stopped, grace: Duration::from_secs(60) };
    let now = StopRequest { grace: Duration::ZERO, ..slow };
    let (exit, logs, took) = run_and_stop("trap '' TERM\necho ready\nsleep 30", slow, Some(now)).await;
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(exit.signal, Some(9));
    assert_eq!(exit.stopped, Some(StopReason::Stopped));
    let system = logs.texts(Stream::System);
    assert!(system.last().unwrap().contains("sent SIGKILL"), "{system:?}");
}

#[tokio::test]
async fn a_timeout_is_reported_as_such() {
    let request = StopRequest { reason: StopReason::TimedOut, grace: Duration::from_secs(10) };
    let (exit, logs, _) = run_and_stop("echo ready\nsleep 30", request, None).await;
    assert_eq!(exit.stopped, Some(StopReason::TimedOut));
    // sh -e exits with the status of the SIGTERMed sleep, or dies of SIGTERM itself.
    assert!(exit.signal == Some(15) || exit.code == Some(143), "{exit:?}");
    assert!(logs.texts(Stream::System)[0].contains("(reason: timed out)"));
}

#[tokio::test]
async fn a_task_stopped_before_it_starts_does_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let logs = Arc::new(Collect::default());
    let (_tx, rx) = watch::channel(Some(StopRequest { reason: StopReason::Stopped, grace: Duration::from_secs(10) }));
    let exit = executor().run(spec(dir.path(), "touch ran"), logs.clone(), rx).await.expect("run");
    assert_eq!(exit, Exit { code: None, signal: None, stopped: Some(StopReason::Stopped) });
    assert!(!dir.path().join("ran").exists());
    assert!(logs.texts(Stream::System)[0].contains("not started"));
}

#[tokio::test]
async fn a_missing_workdir_fails_to_start_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let (_tx, rx) = no_stop();
    let err = executor().run(spec(&missing, "true"), Arc::new(Collect::default()), rx).await.unwrap_err();
    let ExecutorError::Start { message, source } = &err else { panic!("{err:?}") };
    assert_eq!(message, &format!("the working directory {} does not exist", missing.display()));
    assert_eq!(source.as_ref().and_then(|s| s.raw_os_error()), Some(2), "ENOENT from chdir");

    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let (_tx, rx) = no_stop();
    let err = executor().run(spec(&file, "true"), Arc::new(Collect::default()), rx).await.unwrap_err();
    let ExecutorError::Start { message, .. } = &err else { panic!("{err:?}") };
    assert_eq!(message, &format!("the working directory {} is not a directory", file.display()));
}

#[tokio::test]
async fn a_missing_shell_fails_to_start_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let exec = HostExecutor::new(HostConfig { shell: "/no/such/shell".into(), ..HostConfig::default() });
    let (_tx, rx) = no_stop();
    let err = exec.run(spec(dir.path(), "true"), Arc::new(Collect::default()), rx).await.unwrap_err();
    assert_eq!(err.to_string(), "could not start the task: the shell /no/such/shell does not exist");

    // Found but not executable: the step and the system's word for it.
    let exec = HostExecutor::new(HostConfig { shell: dir.path().to_owned(), ..HostConfig::default() });
    let (_tx, rx) = no_stop();
    let err = exec.run(spec(dir.path(), "true"), Arc::new(Collect::default()), rx).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "could not start the task: could not run the shell {0} in {0}: executing the program (execve) \
             failed: Permission denied (os error 13)",
            dir.path().display()
        )
    );
}

#[test]
fn only_script_tasks_are_supported() {
    let exec = executor();
    assert_eq!(exec.name(), "host");
    assert!(exec.supports("script").is_ok());
    let err = exec.supports("image").unwrap_err();
    assert!(matches!(err, ExecutorError::Unsupported(_)));
    assert_eq!(
        err.to_string(),
        "task type `image` is built by the image builder on the Docker Engine, not by an executor; \
         the host executor runs only `script` tasks"
    );
    assert!(exec.supports("canary").is_err());
}

/// Not a test: the per-task cost of the host executor over a bare spawn. Run with
/// `cargo test -p wharf-executor --release --test host -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a check: run with --ignored --nocapture to print the timings"]
async fn measure_host_executor_overhead() {
    const N: u32 = 200;
    let dir = tempfile::tempdir().unwrap();
    // The inherited environment, as `wharf` passes it, so both sides exec the same env.
    let exec = HostExecutor::new(HostConfig { base_env: std::env::vars().collect(), ..HostConfig::default() });

    // Warm up both paths (page cache, lazy runtime setup).
    for _ in 0..10 {
        run_with(&exec, spec(dir.path(), "true")).await;
        tokio::process::Command::new("sh").arg("-c").arg("true").status().await.unwrap();
    }

    let started = Instant::now();
    for _ in 0..N {
        let status = tokio::process::Command::new("sh").arg("-c").arg("true").status().await.unwrap();
        assert!(status.success());
    }
    let bare = started.elapsed();

    let started = Instant::now();
    for _ in 0..N {
        let (exit, _) = run_with(&exec, spec(dir.path(), "true")).await;
        assert!(exit.succeeded());
    }
    let host = started.elapsed();

    println!(
        "{N} x `sh -c true`: bare {bare:?} ({:?}/task), HostExecutor {host:?} ({:?}/task), \
         overhead {:?}/task",
        bare / N,
        host / N,
        host.saturating_sub(bare) / N
    );
}

/// What `run` says when the process cannot even be spawned, with the environment `env`
/// and the script `script`.
async fn start_error(env: Vec<(String, String)>, script: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec(dir.path(), script);
    spec.env = env;
    let (_tx, rx) = no_stop();
    let err = executor().run(spec, Arc::new(Collect::default()), rx).await.unwrap_err();
    let ExecutorError::Start { message, .. } = &err else { panic!("{err:?}") };
    assert!(!message.contains("working directory"), "the directory is fine: {message}");
    err.to_string()
}

#[tokio::test]
async fn a_spawn_error_says_its_real_cause() {
    assert_eq!(
        start_error(vec![("TOKEN".into(), "a\0b".into())], "true").await,
        "could not start the task: the environment variable `TOKEN` contains a NUL byte"
    );
    assert_eq!(start_error(vec![], "echo a\0b").await, "could not start the task: the script contains a NUL byte");
    // Linux refuses one string over 128 KiB in a process's arguments or environment.
    let big = "x".repeat(200_000);
    let said = start_error(vec![("BIG".into(), big)], "true").await;
    assert!(said.contains("argument list too long") && said.contains("E2BIG"), "{said}");
    assert!(said.contains("200004 bytes"), "the size of the largest entry: {said}");
}
