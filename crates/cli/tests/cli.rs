//! End-to-end tests of the `wharf` binary: each test runs the real executable with
//! `std::process::Command` in a temporary directory of its own, with `--data-dir`
//! inside it, and checks what a person sees (exit code, stdout, stderr) and what is
//! kept (`run.json`, per-task log files).
//!
//! Tests marked `#[ignore = "bug: …"]` describe the expected behaviour of a bug that is
//! not fixed yet; run them with `cargo test -p wharf --test cli -- --ignored`.

use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use wharf_core::run::RunRecord;

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

/// How long any single `wharf` invocation may take before the test gives up on it.
const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------

/// A temporary directory holding the pipeline files, the data directory (`data/`) and
/// anything else a test creates.
struct Sandbox {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("create a tempdir");
        let root = tmp.path().canonicalize().expect("canonicalize the tempdir");
        Sandbox { _tmp: tmp, root }
    }

    fn path(&self) -> &Path {
        &self.root
    }

    /// Writes `text` to `name` (relative to the sandbox) and returns its path.
    fn write(&self, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
        let path = self.root.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn pipeline_dir(&self, pipeline: &str) -> PathBuf {
        self.data().join("pipelines").join(pipeline)
    }

    fn run_dir(&self, pipeline: &str, number: u64) -> PathBuf {
        self.pipeline_dir(pipeline).join("runs").join(number.to_string())
    }

    /// `wharf` with the sandbox as working directory and a clean slate of the
    /// environment variables that would change its behaviour.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(WHARF);
        cmd.args(args)
            .current_dir(&self.root)
            .env_remove("WHARF_DATA_DIR")
            .env_remove("TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn spawn(&self, args: &[&str]) -> Running {
        Running::spawn(self.command(args))
    }

    /// Runs `wharf ARGS…` to its end.
    fn wharf(&self, args: &[&str]) -> Outcome {
        self.spawn(args).finish(DEADLINE)
    }

    /// `wharf run FILE --data-dir <sandbox>/data EXTRA…`.
    fn run(&self, file: &str, extra: &[&str]) -> Outcome {
        let data = self.data();
        let mut args = vec!["run", file, "--data-dir", data.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.wharf(&args)
    }

    fn spawn_run(&self, file: &str, extra: &[&str]) -> Running {
        let data = self.data();
        let mut args = vec!["run", file, "--data-dir", data.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.spawn(&args)
    }

    /// `run.json` of run `number` as JSON.
    fn record(&self, pipeline: &str, number: u64) -> Value {
        let path = self.run_dir(pipeline, number).join("run.json");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
    }

    /// `run.json` of run `number` as the [`RunRecord`] it must be.
    fn typed_record(&self, pipeline: &str, number: u64) -> RunRecord {
        serde_json::from_value(self.record(pipeline, number)).expect("run.json is a RunRecord")
    }

    fn task_log_path(&self, pipeline: &str, number: u64, stage: &str, task: &str) -> PathBuf {
        self.run_dir(pipeline, number).join("logs").join(stage).join(format!("{task}.log"))
    }

    fn task_log(&self, pipeline: &str, number: u64, stage: &str, task: &str) -> String {
        let path = self.task_log_path(pipeline, number, stage, task);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    }

    /// Asserts that `wharf run` created nothing for `pipeline` (no run directory).
    fn assert_no_runs(&self, pipeline: &str) {
        let runs = self.pipeline_dir(pipeline).join("runs");
        assert!(!runs.exists(), "{} was created although the run could not start", runs.display());
    }
}

/// Collects a pipe in the background into a buffer that can be read while it grows.
fn capture(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    let thread = thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => sink.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    });
    (buf, thread)
}

/// A `wharf` process that is still going.
struct Running {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    started: Instant,
}

impl Running {
    fn spawn(mut cmd: Command) -> Self {
        let started = Instant::now();
        let mut child = cmd.spawn().expect("start wharf");
        let (stdout, a) = capture(child.stdout.take().unwrap());
        let (stderr, b) = capture(child.stderr.take().unwrap());
        Running { child, stdout, stderr, readers: vec![a, b], started }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits until `find` recognises something in stdout, or panics after `within`.
    fn wait_for_stdout<T>(&mut self, within: Duration, find: impl Fn(&str) -> Option<T>) -> T {
        let until = Instant::now() + within;
        loop {
            if let Some(found) = find(&self.stdout_so_far()) {
                return found;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // One last look: the reader may have been a moment behind.
                thread::sleep(Duration::from_millis(100));
                if let Some(found) = find(&self.stdout_so_far()) {
                    return found;
                }
                panic!(
                    "wharf ended ({status}) before the expected output\nstdout:\n{}\nstderr:\n{}",
                    self.stdout_so_far(),
                    self.stderr_so_far()
                );
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!(
                    "the expected output did not come within {within:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout_so_far(),
                    self.stderr_so_far()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).expect("signal wharf");
    }

    /// Waits for the process to end (killing it and failing after `deadline`).
    fn finish(mut self, deadline: Duration) -> Outcome {
        let waited_from = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for wharf") {
                break status;
            }
            if waited_from.elapsed() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "wharf did not end within {deadline:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout_so_far(),
                    self.stderr_so_far()
                );
            }
            thread::sleep(Duration::from_millis(5));
        };
        let ended = Instant::now();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Outcome {
            code: status.code(),
            stdout: self.stdout_so_far(),
            stderr: self.stderr_so_far(),
            took: ended - self.started,
        }
    }
}

/// What a finished `wharf` left behind.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    /// From start to exit, on the test's clock.
    took: Duration,
}

impl Outcome {
    #[track_caller]
    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code\n--- stdout:\n{}\n--- stderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// The rows of the closing table (header excluded), split on whitespace.
    #[track_caller]
    fn table(&self) -> Vec<Vec<String>> {
        let lines: Vec<&str> = self.stdout.lines().collect();
        let header = lines
            .iter()
            .rposition(|l| l.split_whitespace().collect::<Vec<_>>() == ["STAGE", "TASK", "STATUS", "DURATION"])
            .unwrap_or_else(|| panic!("no STAGE TASK STATUS DURATION table in stdout:\n{}", self.stdout));
        lines[header + 1..]
            .iter()
            .take_while(|l| !l.trim().is_empty())
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .collect()
    }
}

/// One line of a log file: `<timestamp> out|err|sys <text>`.
#[derive(Debug, PartialEq, Eq)]
struct LogLine {
    tag: String,
    text: String,
}

#[track_caller]
fn parse_log(text: &str) -> Vec<LogLine> {
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            let at = parts.next().unwrap_or_default();
            let tag = parts.next().unwrap_or_default();
            let text = parts.next().unwrap_or_default();
            assert!(at.parse::<jiff::Timestamp>().is_ok(), "log line without a timestamp: {line:?}");
            assert!(at.ends_with('Z'), "log timestamps are UTC: {line:?}");
            assert!(["out", "err", "sys"].contains(&tag), "log line without out|err|sys: {line:?}");
            LogLine { tag: tag.to_owned(), text: text.to_owned() }
        })
        .collect()
}

fn line(tag: &str, text: &str) -> LogLine {
    LogLine { tag: tag.to_owned(), text: text.to_owned() }
}

fn status(v: &Value) -> &str {
    v["status"].as_str().unwrap_or_else(|| panic!("no status in {v}"))
}

/// The statuses of a record's history, in order.
fn history(v: &Value) -> Vec<String> {
    v["history"]
        .as_array()
        .unwrap_or_else(|| panic!("no history in {v}"))
        .iter()
        .map(|t| {
            assert!(
                t["at"].as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok()).is_some(),
                "bad transition time in {t}"
            );
            status(t).to_owned()
        })
        .collect()
}

/// `stages[s].tasks[t]` of a record.
fn task(record: &Value, s: usize, t: usize) -> &Value {
    &record["stages"][s]["tasks"][t]
}

/// True if the process is gone: no `/proc/<pid>` or a zombie nobody reaped yet (PID 1
/// in this container does not reap).
fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()) == Some('Z'),
    }
}

/// Waits a little for the kernel to finish killing `pid`.
fn gone_soon(pid: i32) -> bool {
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        if process_gone(pid) {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    process_gone(pid)
}

/// Finds `pids <a> <b>` printed by a task, prefixed by `[stage/task] `.
fn find_pids(stdout: &str) -> Option<(i32, i32)> {
    stdout.lines().find_map(|l| {
        let rest = l.split_once("] pids ")?.1;
        let (a, b) = rest.trim().split_once(' ')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    })
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A name for a file in /tmp that no other test (or run) uses.
fn unique_tmp(prefix: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    PathBuf::from(format!("/tmp/{prefix}-{}-{nanos}", std::process::id()))
}

/// Runs git in `dir` without any global or system configuration.
#[track_caller]
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@e",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A git repository in `<sandbox>/repo` with one commit on `main`; returns its
/// `file://` URL and the commit's sha.
fn make_repo(sb: &Sandbox) -> (String, String) {
    let repo = sb.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("hello.txt"), "hello from git\n").unwrap();
    std::fs::write(repo.join("VERSION"), "2.7\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first commit"]);
    let sha = git(&repo, &["rev-parse", "HEAD"]);
    assert_eq!(sha.len(), 40);
    (format!("file://{}", repo.display()), sha)
}

// ---------------------------------------------------------------------------------
// 1. A successful run
// ---------------------------------------------------------------------------------

const HELLO: &str = r#"name: hello
stages:
  - name: Build
    tasks:
      - name: compile
        type: script
        script: |
          echo "compiling in $(pwd)"
          echo "a warning" >&2
  - name: Test
    tasks:
      - name: unit
        type: script
        script: echo "all 3 tests passed"
"#;

#[test]
fn a_successful_run_shows_logs_and_a_table_and_keeps_record_and_logs() {
    let sb = Sandbox::new();
    sb.write("hello.yaml", HELLO);
    let out = sb.run("hello.yaml", &[]);
    out.expect_code(0)
        .stdout_has("Run #1 of hello")
        // Without `source:` the tasks run in the pipeline file's directory.
        .stdout_has(&format!("[Build/compile] compiling in {}\n", sb.path().display()))
        .stdout_has("[Build/compile] a warning\n")
        .stdout_has("[Test/unit] all 3 tests passed\n")
        .stdout_has("run #1 succeeded");

    // The log lines come before the closing table.
    let log_at = out.stdout.find("[Test/unit] all 3 tests passed").unwrap();
    let table_at = out.stdout.find("STAGE").unwrap();
    assert!(log_at < table_at, "the table closes the output:\n{}", out.stdout);
    let rows = out.table();
    assert_eq!(rows.len(), 2, "one row per task: {rows:?}");
    for (row, (stage, task)) in rows.iter().zip([("Build", "compile"), ("Test", "unit")]) {
        assert_eq!((row[0].as_str(), row[1].as_str(), row[2].as_str()), (stage, task, "succeeded"), "{rows:?}");
        assert_eq!(row.len(), 4, "{row:?}");
        assert!(row[3].ends_with("ms") || row[3].ends_with('s'), "a duration: {row:?}");
    }

    let record = sb.record("hello", 1);
    assert_eq!(record["pipeline"], "hello");
    assert_eq!(record["number"], 1);
    assert_eq!(status(&record), "succeeded");
    assert_eq!(history(&record), ["queued", "running", "succeeded"]);
    assert!(record.get("reason").is_none(), "a successful run has no reason: {record}");
    let stages = record["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2);
    for stage in stages {
        assert_eq!(status(stage), "succeeded", "{stage}");
        assert_eq!(history(stage).last().map(String::as_str), Some("succeeded"));
        for task in stage["tasks"].as_array().unwrap() {
            assert_eq!(status(task), "succeeded", "{task}");
            let h = history(task);
            assert!(h.contains(&"running".to_owned()) && h.last().unwrap() == "succeeded", "{h:?}");
            assert_eq!(task["exit_code"], 0);
            assert_eq!(task["attempts"], 1);
            assert_eq!(task["type"], "script");
        }
    }
    // run.json is the engine's RunRecord, with times that make sense.
    let typed = sb.typed_record("hello", 1);
    let wall = typed.progress.wall_time(jiff::Timestamp::now()).expect("the run started");
    assert!(wall < Duration::from_secs(30), "{wall:?}");
    assert!(typed.progress.finished_at().is_some());

    let compile = parse_log(&sb.task_log("hello", 1, "Build", "compile"));
    assert!(compile.contains(&line("out", &format!("compiling in {}", sb.path().display()))), "{compile:?}");
    assert!(compile.contains(&line("err", "a warning")), "{compile:?}");
    let unit = parse_log(&sb.task_log("hello", 1, "Test", "unit"));
    assert!(unit.contains(&line("out", "all 3 tests passed")), "{unit:?}");
    assert!(!unit.iter().any(|l| l.text.contains("compiling")), "each task has its own log: {unit:?}");
}

// ---------------------------------------------------------------------------------
// 2. Numbering
// ---------------------------------------------------------------------------------

#[test]
fn runs_are_numbered_and_listed_newest_first() {
    let sb = Sandbox::new();
    sb.write(
        "numbered.yaml",
        "name: numbered\nstages:\n  - name: Build\n    tasks:\n      - name: show\n        type: script\n        script: echo \"build=${BUILD_ID} inc=${SYS_INCREMENT} env=$BUILD_ID\"\n",
    );
    for n in 1..=3u64 {
        sb.run("numbered.yaml", &[])
            .expect_code(0)
            .stdout_has(&format!("Run #{n} of numbered"))
            .stdout_has(&format!("[Build/show] build={n} inc={n} env={n}\n"));
        let record = sb.record("numbered", n);
        assert_eq!(record["number"], n);
        let log = parse_log(&sb.task_log("numbered", n, "Build", "show"));
        assert!(log.contains(&line("out", &format!("build={n} inc={n} env={n}"))), "run {n}: {log:?}");
    }
    let counters: Value =
        serde_json::from_slice(&std::fs::read(sb.pipeline_dir("numbered").join("counters.json")).unwrap()).unwrap();
    assert_eq!(counters["last_number"], 3);

    let data = sb.data();
    let out = sb.wharf(&["runs", "list", "numbered", "--data-dir", data.to_str().unwrap()]);
    out.expect_code(0);
    let listed: Vec<(u64, String)> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            let mut words = l.split_whitespace();
            let number = words.next().unwrap().trim_start_matches('#').parse().unwrap();
            (number, words.next().unwrap().to_owned())
        })
        .collect();
    assert_eq!(
        listed,
        [(3, "succeeded".to_owned()), (2, "succeeded".to_owned()), (1, "succeeded".to_owned())],
        "{}",
        out.stdout
    );

    let out = sb.wharf(&["runs", "list", "numbered", "--data-dir", data.to_str().unwrap(), "--limit", "1"]);
    out.expect_code(0);
    assert_eq!(out.stdout.lines().filter(|l| l.starts_with('#')).count(), 1, "{}", out.stdout);
    assert!(out.stdout.lines().next().unwrap().starts_with("#3"), "{}", out.stdout);

    let out = sb.wharf(&["runs", "list", "never-ran", "--local", "--data-dir", data.to_str().unwrap()]);
    out.expect_code(0).stdout_has("no runs of `never-ran`");
}

#[test]
fn concurrent_runs_of_one_pipeline_get_distinct_numbers() {
    let sb = Sandbox::new();
    sb.write(
        "busy.yaml",
        "name: busy\nstages:\n  - name: S\n    tasks:\n      - {name: t, type: script, script: 'echo n=${BUILD_ID}'}\n",
    );
    let running: Vec<Running> = (0..4).map(|_| sb.spawn_run("busy.yaml", &["--quiet"])).collect();
    let mut numbers: Vec<u64> = running
        .into_iter()
        .map(|r| {
            let out = r.finish(DEADLINE);
            out.expect_code(0);
            let n = out.stdout.split_once("Run #").and_then(|(_, rest)| rest.split_whitespace().next()).unwrap();
            n.parse().unwrap()
        })
        .collect();
    numbers.sort();
    assert_eq!(numbers, [1, 2, 3, 4]);
    for n in 1..=4 {
        assert_eq!(sb.record("busy", n)["number"], n);
        assert!(sb.task_log("busy", n, "S", "t").contains(&format!("out n={n}")));
    }
}

// ---------------------------------------------------------------------------------
// 3. A failing task
// ---------------------------------------------------------------------------------

#[test]
fn a_failing_task_fails_the_run_and_skips_what_follows() {
    let sb = Sandbox::new();
    sb.write(
        "fail.yaml",
        r#"name: fail
stages:
  - name: Build
    tasks:
      - name: broken
        type: script
        script: |
          echo "about to fail"
          exit 3
          echo "never printed"
      - name: after
        type: script
        script: echo "after ran"
  - name: Deploy
    tasks:
      - name: ship
        type: script
        script: echo "shipped"
"#,
    );
    let out = sb.run("fail.yaml", &[]);
    out.expect_code(1).stdout_has("[Build/broken] about to fail").stdout_has("exit code 3").stdout_has("run #1 failed");
    assert!(
        !out.stdout.contains("never printed") && !out.stdout.contains("after ran") && !out.stdout.contains("shipped"),
        "{}",
        out.stdout
    );
    let rows = out.table();
    let statuses: Vec<(&str, &str, &str)> =
        rows.iter().map(|r| (r[0].as_str(), r[1].as_str(), r[2].as_str())).collect();
    assert_eq!(statuses, [("Build", "broken", "failed"), ("Build", "after", "skipped"), ("Deploy", "ship", "skipped")]);

    let record = sb.record("fail", 1);
    assert_eq!(status(&record), "failed");
    let reason = record["reason"].as_str().expect("a failed run says why");
    assert!(reason.contains("broken") && reason.contains("exit code 3"), "{reason}");
    let broken = task(&record, 0, 0);
    assert_eq!(status(broken), "failed");
    assert_eq!(broken["exit_code"], 3);
    assert!(broken["reason"].as_str().unwrap().contains("exit code 3"), "{broken}");
    assert_eq!(status(task(&record, 0, 1)), "skipped");
    assert_eq!(status(&record["stages"][0]), "failed");
    assert_eq!(status(&record["stages"][1]), "skipped");
    assert_eq!(status(task(&record, 1, 0)), "skipped");
    assert!(!history(task(&record, 1, 0)).contains(&"running".to_owned()), "a skipped task never ran");
    let log = parse_log(&sb.task_log("fail", 1, "Build", "broken"));
    assert!(log.contains(&line("out", "about to fail")), "{log:?}");
}

#[test]
fn a_retried_task_and_a_rollback_are_recorded() {
    let sb = Sandbox::new();
    sb.write(
        "rb.yaml",
        r#"name: rb
stages:
  - name: Deploy
    on_error: rollback
    tasks:
      - name: flaky
        type: script
        retries: 1
        script: |
          if [ ! -f flaky.seen ]; then touch flaky.seen; echo "first try"; exit 1; fi
          echo "second try"
      - {name: boom, type: script, script: exit 7}
  - name: Never
    tasks:
      - {name: n, type: script, script: echo never}
on_failure:
  - name: Undo
    tasks:
      - {name: undo, type: script, script: echo undoing}
"#,
    );
    let out = sb.run("rb.yaml", &[]);
    out.expect_code(1)
        .stdout_has("[Deploy/flaky] second try")
        .stdout_has("[Undo/undo] undoing")
        .stdout_has("succeeded (2 attempts)");
    let record = sb.record("rb", 1);
    assert_eq!(status(&record), "failed");
    assert!(record["reason"].as_str().unwrap().contains("rolled back"), "{record}");
    assert_eq!(task(&record, 0, 0)["attempts"], 2);
    assert_eq!(status(task(&record, 0, 0)), "succeeded");
    assert_eq!(status(task(&record, 0, 1)), "failed");
    assert_eq!(status(&record["stages"][1]), "skipped");
    assert_eq!(record["stages"][2]["name"], "Undo");
    assert_eq!(record["stages"][2]["rollback"], true);
    assert_eq!(status(task(&record, 2, 0)), "succeeded");
    let flaky = parse_log(&sb.task_log("rb", 1, "Deploy", "flaky"));
    assert!(flaky.contains(&line("out", "first try")) && flaky.contains(&line("out", "second try")), "{flaky:?}");
    assert!(flaky.iter().any(|l| l.tag == "sys" && l.text.contains("retrying")), "{flaky:?}");
}

// ---------------------------------------------------------------------------------
// 4. --quiet
// ---------------------------------------------------------------------------------

#[test]
fn quiet_hides_task_output_but_not_statuses_the_table_or_the_log_files() {
    let sb = Sandbox::new();
    sb.write("hello.yaml", HELLO);
    let out = sb.run("hello.yaml", &["--quiet"]);
    out.expect_code(0)
        .stdout_has("Build/compile succeeded")
        .stdout_has("Test/unit succeeded")
        .stdout_has("run #1 succeeded");
    for hidden in ["compiling in", "a warning", "all 3 tests passed", "[Build/compile]", "[Test/unit]"] {
        assert!(!out.stdout.contains(hidden), "--quiet shows {hidden:?}:\n{}", out.stdout);
        assert!(!out.stderr.contains(hidden), "--quiet shows {hidden:?} on stderr:\n{}", out.stderr);
    }
    assert_eq!(out.table().len(), 2);
    assert!(out.table().iter().all(|r| r[2] == "succeeded"));
    // The log files are kept as usual.
    let log = parse_log(&sb.task_log("hello", 1, "Test", "unit"));
    assert!(log.contains(&line("out", "all 3 tests passed")), "{log:?}");
}

// ---------------------------------------------------------------------------------
// 5. Validation errors
// ---------------------------------------------------------------------------------

const BROKEN: &str = "name: broken
timout: 5
stages:
  - name: Build
    tasks:
      - name: t
        type: scrpt
        script: echo hi
";

/// Checks the compiler-style rendering: `error: file:line:col: path: message`, the
/// source line and a caret under the column.
#[track_caller]
fn assert_rendered(stderr: &str, file: &str, line_no: usize, col: usize, path: &str, message: &str) {
    let head = format!("error: {file}:{line_no}:{col}: {path}: ");
    let lines: Vec<&str> = stderr.lines().collect();
    let at =
        lines.iter().position(|l| l.starts_with(&head)).unwrap_or_else(|| panic!("no {head:?} in stderr:\n{stderr}"));
    assert!(lines[at].contains(message), "{:?} lacks {message:?}", lines[at]);
    let source = lines[at + 2];
    let caret = lines[at + 3];
    let gutter = format!("{line_no} | ");
    assert!(source.trim_start().starts_with(&gutter), "source line expected after the message:\n{stderr}");
    let source_text = BROKEN.lines().nth(line_no - 1).unwrap();
    assert!(source.ends_with(source_text), "{source:?} shows line {line_no} ({source_text:?})");
    let caret_col = caret.find('^').unwrap_or_else(|| panic!("no caret line:\n{stderr}"));
    let text_start = source.len() - source_text.len();
    assert_eq!(caret_col - text_start + 1, col, "the caret points at column {col}:\n{source}\n{caret}");
    assert!(caret.trim_start().starts_with('|'), "{caret:?}");
}

#[test]
fn validate_reports_every_problem_with_file_line_column_and_caret() {
    let sb = Sandbox::new();
    sb.write("broken.yaml", BROKEN);
    sb.write("hello.yaml", HELLO);

    let out = sb.wharf(&["validate", "broken.yaml"]);
    out.expect_code(2).stderr_has("2 errors in broken.yaml");
    assert_rendered(&out.stderr, "broken.yaml", 2, 1, "timout", "unknown field `timout`; did you mean `timeout`?");
    assert_rendered(&out.stderr, "broken.yaml", 7, 15, "stages[0].tasks[0].type", "`scrpt`");
    assert!(out.stderr.contains("did you mean `script`?"), "{}", out.stderr);
    assert!(!out.stdout.contains("ok"), "{}", out.stdout);

    let out = sb.wharf(&["validate", "hello.yaml"]);
    out.expect_code(0).stdout_has("hello.yaml: ok").stdout_has("pipeline `hello`, 2 stages, 2 tasks");
    assert!(out.stderr.is_empty(), "{}", out.stderr);

    // Several files: every one is checked, one bad file makes the exit code 2.
    let out = sb.wharf(&["validate", "hello.yaml", "broken.yaml"]);
    out.expect_code(2).stdout_has("hello.yaml: ok").stderr_has("broken.yaml:7:15");
}

#[test]
fn run_refuses_an_invalid_pipeline_before_creating_anything() {
    let sb = Sandbox::new();
    sb.write("broken.yaml", BROKEN);
    let out = sb.run("broken.yaml", &[]);
    out.expect_code(2);
    assert_rendered(&out.stderr, "broken.yaml", 7, 15, "stages[0].tasks[0].type", "`scrpt`");
    assert_rendered(&out.stderr, "broken.yaml", 2, 1, "timout", "unknown field");
    assert!(!out.stdout.contains("Run #"), "{}", out.stdout);
    sb.assert_no_runs("broken");
    assert!(!sb.pipeline_dir("broken").exists());
}

#[test]
fn command_line_mistakes_exit_2() {
    let sb = Sandbox::new();
    sb.wharf(&["run", "missing.yaml", "--data-dir", "data"]).expect_code(2).stderr_has("missing.yaml");
    sb.wharf(&["frobnicate"]).expect_code(2);
    sb.wharf(&["validate"]).expect_code(2);
    assert!(!sb.data().exists());
}

// ---------------------------------------------------------------------------------
// 6. Parameters and secrets
// ---------------------------------------------------------------------------------

const PARAMS: &str = r#"name: params
parameters:
  - name: TARGET
  - name: GREETING
    default: hello
stages:
  - name: Deploy
    tasks:
      - name: show
        type: script
        script: echo "${GREETING} ${TARGET}!"
"#;

#[test]
fn parameters_reach_the_scripts_and_are_recorded() {
    let sb = Sandbox::new();
    sb.write("params.yaml", PARAMS);
    sb.run("params.yaml", &["-p", "TARGET=staging"]).expect_code(0).stdout_has("[Deploy/show] hello staging!\n");
    let record = sb.record("params", 1);
    assert_eq!(record["parameters"], serde_json::json!({"TARGET": "staging", "GREETING": "hello"}));

    sb.run("params.yaml", &["-p", "TARGET=prod", "--param", "GREETING=hi=there"])
        .expect_code(0)
        .stdout_has("[Deploy/show] hi=there prod!\n");
    assert_eq!(sb.record("params", 2)["parameters"]["GREETING"], "hi=there");
}

#[test]
fn parameter_values_are_data_not_shell_code() {
    let sb = Sandbox::new();
    sb.write("params.yaml", PARAMS);
    let marker = unique_tmp("pwned-param");
    let value =
        format!("TARGET=$(touch {}) `touch {}`; touch {}", marker.display(), marker.display(), marker.display());
    let out = sb.run("params.yaml", &["-p", &value]);
    let created = marker.exists();
    let _ = std::fs::remove_file(&marker);
    out.expect_code(0).stdout_has(&format!("[Deploy/show] hello $(touch {})", marker.display()));
    assert!(!created, "a parameter value ran as shell code");
}

#[test]
fn unknown_and_missing_parameters_are_refused_before_the_run() {
    let sb = Sandbox::new();
    sb.write("params.yaml", PARAMS);

    let out = sb.run("params.yaml", &["-p", "TARGET=x", "-p", "NOPE=1"]);
    out.expect_code(2).stderr_has("unknown parameter `NOPE`").stderr_has("TARGET");
    sb.assert_no_runs("params");

    let out = sb.run("params.yaml", &[]);
    out.expect_code(2).stderr_has("parameter `TARGET` has no default and was not given").stderr_has("-p TARGET=VALUE");
    sb.assert_no_runs("params");

    let out = sb.run("params.yaml", &["-p", "TARGET"]);
    out.expect_code(2).stderr_has("KEY=VALUE");
    sb.assert_no_runs("params");
    assert!(!out.stdout.contains("Run #"));
}

const SECRETS: &str = r#"name: secrets
stages:
  - name: Build
    tasks:
      - name: login
        type: script
        secrets: [TOKEN]
        outputs: [LEAKED]
        script: |
          echo "token=$TOKEN braces=${TOKEN}"
          echo "to stderr: $TOKEN" >&2
          echo "LEAKED=x${TOKEN}x" >> "$WHARF_OUTPUT"
      - name: other
        type: script
        script: |
          echo "other sees [$TOKEN]"
          echo "output ${tasks.login.LEAKED}"
"#;

#[test]
fn secrets_are_masked_everywhere() {
    let sb = Sandbox::new();
    sb.write("secrets.yaml", SECRETS);
    let out = sb.run("secrets.yaml", &["-s", "TOKEN=hunter22"]);
    out.expect_code(0)
        .stdout_has("[Build/login] token=*** braces=***\n")
        .stdout_has("[Build/login] to stderr: ***\n")
        // Only tasks that name a secret get it.
        .stdout_has("[Build/other] other sees []\n")
        .stdout_has("[Build/other] output x***x\n");
    assert!(
        !out.stdout.contains("hunter22") && !out.stderr.contains("hunter22"),
        "secret in clear:\n{}\n{}",
        out.stdout,
        out.stderr
    );

    let login = parse_log(&sb.task_log("secrets", 1, "Build", "login"));
    assert!(login.contains(&line("out", "token=*** braces=***")), "{login:?}");
    assert!(login.contains(&line("err", "to stderr: ***")), "{login:?}");
    let record = sb.record("secrets", 1);
    assert_eq!(task(&record, 0, 0)["outputs"]["LEAKED"], "x***x");

    // Nothing kept in the data directory has it in clear: logs, record, anything.
    // ($WHARF_OUTPUT files are exempt: they are what the task itself wrote.)
    for file in files_under(&sb.data()) {
        if file.parent().is_some_and(|p| p.ends_with("outputs")) {
            continue;
        }
        let bytes = std::fs::read(&file).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("hunter22"), "{} holds the secret in clear", file.display());
    }
}

#[test]
fn secrets_from_the_environment_and_from_a_file_are_masked_too() {
    let sb = Sandbox::new();
    sb.write("secrets.yaml", SECRETS);
    let data = sb.data();
    let mut cmd = sb.command(&["run", "secrets.yaml", "--data-dir", data.to_str().unwrap(), "-s", "TOKEN"]);
    cmd.env("TOKEN", "from-env-s3cret");
    let out = Running::spawn(cmd).finish(DEADLINE);
    out.expect_code(0).stdout_has("token=*** braces=***");
    assert!(!out.stdout.contains("from-env-s3cret"), "{}", out.stdout);

    sb.write("secrets.env", "# a comment\n\nTOKEN=file-s3cret\n");
    let out = sb.run("secrets.yaml", &["--secrets-file", "secrets.env"]);
    out.expect_code(0).stdout_has("token=*** braces=***");
    assert!(!out.stdout.contains("file-s3cret"), "{}", out.stdout);

    // Values shorter than 8 characters are refused, naming the secret and the rule.
    let out = sb.run("secrets.yaml", &["-s", "TOKEN=abc"]);
    out.expect_code(2).stderr_has("--secret TOKEN").stderr_has("at least 8");
    sb.write("short.env", "TOKEN=x\n");
    let out = sb.run("secrets.yaml", &["--secrets-file", "short.env"]);
    out.expect_code(2).stderr_has("short.env line 1: secret TOKEN").stderr_has("at least 8");

    // `-s NAME` without the variable set is a command-line error.
    let out = sb.run("secrets.yaml", &["-s", "TOKEN"]);
    out.expect_code(2).stderr_has("TOKEN");
}

#[test]
fn a_secret_that_was_not_given_stops_the_run_before_it_starts() {
    let sb = Sandbox::new();
    sb.write("secrets.yaml", SECRETS);
    let out = sb.run("secrets.yaml", &[]);
    out.expect_code(2).stderr_has("Build/login").stderr_has("the secret `TOKEN` is not set");
    assert!(!out.stdout.contains("Run #"), "{}", out.stdout);
    sb.assert_no_runs("secrets");
    // Another secret does not stand in for it.
    sb.run("secrets.yaml", &["-s", "OTHER=other-value"]).expect_code(2).stderr_has("`TOKEN`");
    sb.assert_no_runs("secrets");
}

#[test]

fn a_secret_at_the_long_line_split_is_still_masked() {
    let sb = Sandbox::new();
    // 65533 bytes of padding put the split (at 64 KiB) inside the secret; the sleep
    // makes sure the line is cut before its end arrives.
    sb.write(
        "long.yaml",
        r#"name: long
stages:
  - name: Build
    tasks:
      - name: leak
        type: script
        secrets: [TOKEN]
        script: |
          pad=$(head -c 65533 /dev/zero | tr '\0' x)
          printf '%s%s' "$pad" "$TOKEN"
          sleep 0.5
          echo " end"
"#,
    );
    let out = sb.run("long.yaml", &["-s", "TOKEN=hunter22", "--quiet"]);
    out.expect_code(0);
    let log = parse_log(&sb.task_log("long", 1, "Build", "leak"));
    let joined: String = log.iter().filter(|l| l.tag == "out").map(|l| l.text.as_str()).collect();
    assert!(joined.ends_with(" end"), "the whole output is kept");
    assert!(
        !joined.contains("hunter22"),
        "the secret can be read back from the log: ...{}",
        &joined[joined.len().saturating_sub(20)..]
    );
    assert!(!log.iter().any(|l| l.text.ends_with("hun")), "half the secret is in the log");
}

// ---------------------------------------------------------------------------------
// 7. Outputs
// ---------------------------------------------------------------------------------

#[test]
fn outputs_flow_to_later_tasks_and_into_the_record() {
    let sb = Sandbox::new();
    sb.write(
        "outputs.yaml",
        r#"name: outputs
stages:
  - name: Build
    tasks:
      - name: version
        type: script
        outputs: [VERSION]
        script: |
          echo "VERSION=1.4.${BUILD_ID}" >> "$WHARF_OUTPUT"
          echo "EXTRA=not declared" >> "$WHARF_OUTPUT"
  - name: Deploy
    tasks:
      - name: ship
        type: script
        env: { MSG: "shipping ${VERSION}" }
        script: |
          echo "plain=${VERSION}"
          echo "qualified=${tasks.version.VERSION}"
          echo "env=$MSG"
"#,
    );
    let out = sb.run("outputs.yaml", &[]);
    out.expect_code(0)
        .stdout_has("[Deploy/ship] plain=1.4.1\n")
        .stdout_has("[Deploy/ship] qualified=1.4.1\n")
        .stdout_has("[Deploy/ship] env=shipping 1.4.1\n");
    let record = sb.record("outputs", 1);
    assert_eq!(task(&record, 0, 0)["outputs"]["VERSION"], "1.4.1");
    assert_eq!(task(&record, 0, 0)["outputs"]["EXTRA"], "not declared");
    assert!(task(&record, 1, 0).get("outputs").is_none_or(|o| o.as_object().unwrap().is_empty()), "{record}");
}

#[test]
fn a_declared_output_that_is_not_written_fails_the_task() {
    let sb = Sandbox::new();
    sb.write(
        "noout.yaml",
        "name: noout\nstages:\n  - name: Build\n    tasks:\n      - {name: version, type: script, outputs: [VERSION], script: 'echo forgot'}\n  - name: Deploy\n    tasks:\n      - {name: ship, type: script, script: 'echo ${VERSION}'}\n",
    );
    let out = sb.run("noout.yaml", &[]);
    out.expect_code(1).stdout_has("VERSION");
    let record = sb.record("noout", 1);
    assert_eq!(status(task(&record, 0, 0)), "failed");
    assert!(task(&record, 0, 0)["reason"].as_str().unwrap().contains("VERSION"), "{record}");
    assert_eq!(status(task(&record, 1, 0)), "skipped");
}

// ---------------------------------------------------------------------------------
// 8. Timeouts
// ---------------------------------------------------------------------------------

#[test]
fn a_task_timeout_ends_the_run_with_124_and_kills_the_task() {
    let sb = Sandbox::new();
    sb.write(
        "slow.yaml",
        r#"name: slow
stages:
  - name: Build
    tasks:
      - name: nap
        type: script
        timeout: 1s
        script: |
          sleep 30 &
          echo "pids $$ $!"
          sleep 30
  - name: After
    tasks:
      - {name: x, type: script, script: echo after}
"#,
    );
    let out = sb.run("slow.yaml", &["--grace", "1"]);
    out.expect_code(124).stdout_has("timed_out");
    assert!(out.took < Duration::from_secs(6), "took {:?}", out.took);
    assert!(out.took >= Duration::from_millis(900), "ended before the timeout: {:?}", out.took);
    let record = sb.record("slow", 1);
    assert_eq!(status(&record), "timed_out");
    assert_eq!(status(&record["stages"][0]), "timed_out");
    let nap = task(&record, 0, 0);
    assert_eq!(status(nap), "timed_out");
    assert!(nap["reason"].as_str().unwrap().contains("task timeout of 1s"), "{nap}");
    assert_eq!(status(&record["stages"][1]), "skipped");
    let log = parse_log(&sb.task_log("slow", 1, "Build", "nap"));
    assert!(log.iter().any(|l| l.tag == "sys" && l.text.contains("SIGTERM")), "{log:?}");
    let (shell, child) = find_pids(&out.stdout).expect("the task printed its pids");
    assert!(gone_soon(shell), "the task's shell {shell} survived its timeout");
    assert!(gone_soon(child), "the task's background child {child} survived its timeout");
}

#[test]
fn a_task_that_ignores_sigterm_is_killed_after_the_grace() {
    let sb = Sandbox::new();
    sb.write(
        "stubborn.yaml",
        "name: stubborn\nstages:\n  - name: Build\n    tasks:\n      - name: t\n        type: script\n        timeout: 1s\n        script: |\n          trap '' TERM\n          echo \"pids $$ $$\"\n          sleep 30\n",
    );
    let out = sb.run("stubborn.yaml", &["--grace", "1"]);
    out.expect_code(124);
    assert!(out.took >= Duration::from_millis(1900), "SIGKILL came before the grace: {:?}", out.took);
    assert!(out.took < Duration::from_secs(8), "took {:?}", out.took);
    let log = parse_log(&sb.task_log("stubborn", 1, "Build", "t"));
    assert!(log.iter().any(|l| l.tag == "sys" && l.text.contains("SIGKILL")), "{log:?}");
    let (shell, _) = find_pids(&out.stdout).unwrap();
    assert!(gone_soon(shell));
}

#[test]
fn the_pipeline_timeout_ends_the_run() {
    let sb = Sandbox::new();
    sb.write(
        "pt.yaml",
        "name: pt\ntimeout: 1s\nstages:\n  - name: Build\n    tasks:\n      - {name: nap, type: script, script: sleep 30}\n  - name: After\n    tasks:\n      - {name: x, type: script, script: echo x}\n",
    );
    let out = sb.run("pt.yaml", &["--grace", "1"]);
    out.expect_code(124);
    assert!(out.took < Duration::from_secs(6), "took {:?}", out.took);
    let record = sb.record("pt", 1);
    assert_eq!(status(&record), "timed_out");
    assert!(record["reason"].as_str().unwrap().contains("pipeline timeout"), "{record}");
    assert_eq!(status(&record["stages"][1]), "skipped");
}

// ---------------------------------------------------------------------------------
// 9. Stop (Ctrl-C)
// ---------------------------------------------------------------------------------

const HANG: &str = r#"name: hang
stages:
  - name: Build
    tasks:
      - name: wait
        type: script
        script: |
          sleep 30 &
          echo "pids $$ $!"
          sleep 30
  - name: Later
    tasks:
      - {name: x, type: script, script: echo later}
"#;

#[test]
fn ctrl_c_stops_the_run_with_130_and_kills_its_processes() {
    let sb = Sandbox::new();
    sb.write("hang.yaml", HANG);
    let mut running = sb.spawn_run("hang.yaml", &["--grace", "5"]);
    let (shell, child) = running.wait_for_stdout(Duration::from_secs(20), find_pids);
    assert!(!process_gone(shell) && !process_gone(child), "the task's processes run before the stop");
    running.signal(nix::sys::signal::Signal::SIGINT);
    let signalled = Instant::now();
    let out = running.finish(Duration::from_secs(10));
    assert!(signalled.elapsed() < Duration::from_secs(10));
    out.expect_code(130).stderr_has("stopping the run").stdout_has("run #1 stopped");
    assert!(!out.stdout.contains("[Later/x] later"), "{}", out.stdout);

    let record = sb.record("hang", 1);
    assert_eq!(status(&record), "stopped");
    assert_eq!(record["reason"], "stopped by user");
    assert_eq!(status(task(&record, 0, 0)), "stopped");
    assert_eq!(status(&record["stages"][1]), "skipped");
    assert!(gone_soon(shell), "the task's shell {shell} outlived the stop");
    assert!(gone_soon(child), "the task's background child {child} outlived the stop");
    // The logs of a stopped run are kept.
    let log = parse_log(&sb.task_log("hang", 1, "Build", "wait"));
    assert!(log.iter().any(|l| l.text.starts_with("pids ")), "{log:?}");
    assert!(log.iter().any(|l| l.tag == "sys" && l.text.contains("stopped by user")), "{log:?}");
}

#[test]
fn a_second_ctrl_c_kills_without_waiting_for_the_grace() {
    let sb = Sandbox::new();
    sb.write(
        "stubborn.yaml",
        "name: stubborn\nstages:\n  - name: Build\n    tasks:\n      - name: t\n        type: script\n        script: |\n          trap '' TERM INT\n          echo \"pids $$ $$\"\n          sleep 60\n",
    );
    let mut running = sb.spawn_run("stubborn.yaml", &["--grace", "60"]);
    let (shell, _) = running.wait_for_stdout(Duration::from_secs(20), find_pids);
    running.signal(nix::sys::signal::Signal::SIGINT);
    running.wait_for_stdout(Duration::from_secs(5), |s| s.contains("sent SIGTERM").then_some(()));
    running.signal(nix::sys::signal::Signal::SIGINT);
    let second = Instant::now();
    let out = running.finish(Duration::from_secs(10));
    out.expect_code(130);
    assert!(second.elapsed() < Duration::from_secs(5), "the second Ctrl-C did not hurry the kill");
    assert_eq!(status(&sb.record("stubborn", 1)), "stopped");
    assert!(gone_soon(shell));
}

#[test]
fn sigterm_stops_the_run_like_ctrl_c() {
    let sb = Sandbox::new();
    sb.write("hang.yaml", HANG);
    let mut running = sb.spawn_run("hang.yaml", &["--grace", "5"]);
    let (shell, child) = running.wait_for_stdout(Duration::from_secs(20), find_pids);
    running.signal(nix::sys::signal::Signal::SIGTERM);
    let out = running.finish(Duration::from_secs(10));
    out.expect_code(130);
    assert_eq!(status(&sb.record("hang", 1)), "stopped");
    assert!(gone_soon(shell) && gone_soon(child));
}

// ---------------------------------------------------------------------------------
// 10. Source checkout
// ---------------------------------------------------------------------------------

#[test]
fn a_pipeline_with_a_source_runs_in_a_fresh_checkout() {
    let sb = Sandbox::new();
    let (url, sha) = make_repo(&sb);
    sb.write(
        "co.yaml",
        format!(
            r#"name: co
source:
  repo: {url}
  branch: main
stages:
  - name: Build
    tasks:
      - name: look
        type: script
        script: |
          cat hello.txt
          echo "version=$(cat VERSION)"
          echo "commit=${{GIT_COMMIT}} branch=${{GIT_BRANCH}} url=${{GIT_URL}}"
          echo "pwd=$(pwd)"
"#
        ),
    );
    let out = sb.run("co.yaml", &[]);
    out.expect_code(0)
        .stdout_has("[Build/look] hello from git\n")
        .stdout_has("[Build/look] version=2.7\n")
        .stdout_has(&format!("[Build/look] commit={sha} branch=main url={url}\n"))
        .stdout_has(&format!("[Build/look] pwd={}\n", sb.run_dir("co", 1).join("src").display()));
    let rows = out.table();
    assert_eq!(rows[0][..3], ["Scm_Clone_main", "checkout", "succeeded"], "{rows:?}");
    let record = sb.record("co", 1);
    let checkout = &record["checkout"];
    assert_eq!(status(checkout), "succeeded");
    assert_eq!(checkout["commit"], sha.as_str());
    assert_eq!(checkout["branch"], "main");
    assert_eq!(checkout["repo"], url.as_str());
    let log = parse_log(&std::fs::read_to_string(sb.run_dir("co", 1).join("logs/checkout.log")).unwrap());
    assert!(log.iter().any(|l| l.tag == "sys" && l.text.contains("clone")), "{log:?}");
    assert!(log.iter().any(|l| l.text.contains(&sha)), "{log:?}");
}

#[test]
fn a_missing_branch_fails_the_run_naming_branch_and_repository() {
    let sb = Sandbox::new();
    let (url, _) = make_repo(&sb);
    sb.write(
        "co.yaml",
        format!("name: co\nsource:\n  repo: {url}\n  branch: no-such-branch\nstages:\n  - name: Build\n    tasks:\n      - {{name: t, type: script, script: echo ran}}\n"),
    );
    let out = sb.run("co.yaml", &[]);
    out.expect_code(1);
    assert!(!out.stdout.contains("[Build/t] ran"), "{}", out.stdout);
    let record = sb.record("co", 1);
    assert_eq!(status(&record), "failed");
    let reason = record["reason"].as_str().unwrap();
    assert!(reason.contains("no-such-branch") && reason.contains(&url), "{reason}");
    assert_eq!(status(&record["checkout"]), "failed");
    assert_eq!(status(&record["stages"][0]), "skipped");
    // The person sees it too.
    let last = out.stdout.lines().find(|l| l.contains("run #1 failed")).unwrap();
    assert!(last.contains("no-such-branch") && last.contains(&url), "{last}");
}

#[test]
fn a_branch_parameter_cannot_inject_shell_code() {
    let sb = Sandbox::new();
    let (url, _) = make_repo(&sb);
    sb.write(
        "co.yaml",
        format!("name: co\nparameters:\n  - name: BRANCH\n    default: main\nsource:\n  repo: {url}\n  branch: ${{BRANCH}}\nstages:\n  - name: Build\n    tasks:\n      - {{name: t, type: script, script: echo ran}}\n"),
    );
    sb.run("co.yaml", &[]).expect_code(0).stdout_has("[Build/t] ran");

    let marker = unique_tmp("pwned");
    let attacks = [
        format!("$(touch {})", marker.display()),
        format!("$(touch${{IFS}}{})", marker.display()),
        format!("`touch {}`", marker.display()),
        format!("main;touch {}", marker.display()),
        "--upload-pack=touch".to_owned(),
    ];
    for (i, attack) in attacks.iter().enumerate() {
        let out = sb.run("co.yaml", &["-p", &format!("BRANCH={attack}")]);
        let created = marker.exists();
        let _ = std::fs::remove_file(&marker);
        assert!(!created, "the branch {attack:?} ran a command");
        assert_ne!(out.code, Some(0), "{attack:?} was accepted:\n{}", out.stdout);
        assert!(!out.stdout.contains("[Build/t] ran"), "{}", out.stdout);
        let record = sb.record("co", i as u64 + 2);
        let reason = record["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("branch name") && reason.contains("is not valid"),
            "unclear message for {attack:?}: {reason}"
        );
        out.stdout_has("is not valid");
    }
}

#[test]

fn the_checkout_record_names_the_repository_and_branch_actually_used() {
    let sb = Sandbox::new();
    let (url, _) = make_repo(&sb);
    sb.write(
        "co.yaml",
        "name: co\nparameters:\n  - name: REPO\n  - name: BRANCH\n    default: main\nsource:\n  repo: ${REPO}\n  branch: ${BRANCH}\nstages:\n  - name: Build\n    tasks:\n      - {name: t, type: script, script: echo ran}\n",
    );
    let out = sb.run("co.yaml", &["-p", &format!("REPO={url}")]);
    out.expect_code(0).stdout_has(&format!("checkout {url} (main)"));
    assert_eq!(sb.record("co", 1)["checkout"]["repo"], url.as_str());

    let out = sb.run("co.yaml", &["-p", &format!("REPO={url}"), "-p", "BRANCH=nope"]);
    out.expect_code(1);
    assert!(!out.stdout.contains("${"), "templates shown instead of values:\n{}", out.stdout);
    assert_eq!(out.table()[0][0], "Scm_Clone_nope");
    let checkout = &sb.record("co", 2)["checkout"];
    assert_eq!(checkout["repo"], url.as_str());
    assert_eq!(checkout["branch"], "nope");
}

// ---------------------------------------------------------------------------------
// 11. Hostile input and `wharf init`
// ---------------------------------------------------------------------------------

#[test]
fn a_huge_pipeline_file_is_refused_quickly() {
    let sb = Sandbox::new();
    sb.write("big.yaml", format!("name: big\ndescription: \"{}\"\nstages: []\n", "x".repeat(10 * 1024 * 1024)));
    let out = sb.run("big.yaml", &[]);
    out.expect_code(2).stderr_has("a pipeline file may be at most 2097152 bytes").stderr_has("big.yaml");
    assert!(out.took < Duration::from_secs(5), "took {:?}", out.took);
    assert!(out.stderr.len() < 10_000, "the error does not echo the file: {} bytes", out.stderr.len());
    sb.assert_no_runs("big");
    sb.wharf(&["validate", "big.yaml"]).expect_code(2).stderr_has("at most 2097152 bytes");
}

#[test]
fn an_alias_bomb_is_refused_quickly() {
    let sb = Sandbox::new();
    let mut bomb =
        String::from("name: bomb\na: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for i in 1..12u8 {
        let p = (b'a' + i - 1) as char;
        let c = (b'a' + i) as char;
        bomb.push_str(&format!("{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"));
    }
    bomb.push_str("stages:\n  - name: S\n    tasks: [{name: t, type: script, script: x}]\n");
    sb.write("bomb.yaml", bomb);
    let out = sb.run("bomb.yaml", &[]);
    out.expect_code(2).stderr_has("expands to more than");
    assert!(out.took < Duration::from_secs(5), "took {:?}", out.took);
    sb.assert_no_runs("bomb");
    let out = sb.wharf(&["validate", "bomb.yaml"]);
    out.expect_code(2);
    assert!(out.took < Duration::from_secs(5));
}

#[test]
fn a_task_name_that_climbs_out_of_the_log_directory_is_refused() {
    let sb = Sandbox::new();
    sb.write("evil.yaml", "name: evil\nstages:\n  - name: S\n    tasks:\n      - name: ../evil\n        type: script\n        script: echo x\n");
    let out = sb.run("evil.yaml", &[]);
    out.expect_code(2)
        .stderr_has("evil.yaml:5:15: stages[0].tasks[0].name: `../evil` is not a valid stage or task name");
    sb.assert_no_runs("evil");
    assert!(files_under(sb.path()).iter().all(|f| !f.to_string_lossy().ends_with("evil.log")));
    sb.write(
        "evil2.yaml",
        "name: ../evil\nstages:\n  - name: S\n    tasks:\n      - {name: t, type: script, script: x}\n",
    );
    sb.run("evil2.yaml", &[]).expect_code(2).stderr_has("not a valid pipeline name");
    assert!(!sb.data().join("evil").exists() && !sb.path().join("evil").exists());
}

#[test]
fn a_pipeline_file_that_is_not_utf8_is_refused() {
    let sb = Sandbox::new();
    sb.write(
        "latin1.yaml",
        b"name: latin1\ndescription: caf\xe9\nstages:\n  - name: S\n    tasks: [{name: t, type: script, script: x}]\n",
    );
    let out = sb.run("latin1.yaml", &[]);
    out.expect_code(2).stderr_has("latin1.yaml").stderr_has("not UTF-8");
    sb.assert_no_runs("latin1");
    sb.wharf(&["validate", "latin1.yaml"]).expect_code(2).stderr_has("not UTF-8");
}

#[test]
fn init_writes_a_starter_that_runs_with_the_four_default_stages() {
    let sb = Sandbox::new();
    let out = sb.wharf(&["init", "demo-app", "-o", "wharf.yaml"]);
    out.expect_code(0).stdout_has("wharf.yaml");
    let written = std::fs::read_to_string(sb.path().join("wharf.yaml")).unwrap();
    assert!(written.contains("name: demo-app"), "{written}");
    assert!(written.contains("# source:") && written.contains("timeout: 0"), "{written}");
    sb.wharf(&["validate", "wharf.yaml"]).expect_code(0).stdout_has("ok (pipeline `demo-app`, 3 stages, 3 tasks)");

    let out = sb.run("wharf.yaml", &[]);
    out.expect_code(0).stdout_has("run #1 succeeded");
    let record = sb.record("demo-app", 1);
    let stages: Vec<&str> = record["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(stages, ["Build", "Test", "Deploy"]);
    for (s, name) in stages.iter().enumerate() {
        assert_eq!(status(&record["stages"][s]), "succeeded");
        out.stdout_has(&format!("from {name}, run 1"));
    }
    assert_eq!(out.table().len(), 3);

    // It does not overwrite, and refuses bad names.
    sb.wharf(&["init", "other", "-o", "wharf.yaml"]).expect_code(2).stderr_has("already exists");
    assert_eq!(std::fs::read_to_string(sb.path().join("wharf.yaml")).unwrap(), written);
    sb.wharf(&["init", "../x", "-o", "x.yaml"]).expect_code(2);
    assert!(!sb.path().join("x.yaml").exists());
    sb.wharf(&["init", "to-stdout", "-o", "-"]).expect_code(0).stdout_has("name: to-stdout");
}

// ---------------------------------------------------------------------------------
// 12. Parallel stages
// ---------------------------------------------------------------------------------

const PARALLEL: &str = "name: par
stages:
  - name: Test
    mode: parallel
    tasks:
      - {name: a, type: script, script: sleep 1}
      - {name: b, type: script, script: sleep 1}
";

#[test]
fn a_parallel_stage_runs_its_tasks_at_once() {
    let sb = Sandbox::new();
    sb.write("par.yaml", PARALLEL);
    sb.run("par.yaml", &["--quiet"]).expect_code(0);
    let record = sb.typed_record("par", 1);
    let now = jiff::Timestamp::now();
    let stage = &record.stages[0];
    let wall = stage.progress.wall_time(now).expect("the stage ran");
    assert!(wall < Duration::from_millis(1900), "the parallel stage took {wall:?}");
    assert!(wall >= Duration::from_millis(950), "the tasks did not really sleep: {wall:?}");
    for task in &stage.tasks {
        let took = task.progress.wall_time(now).unwrap();
        assert!(took >= Duration::from_millis(950), "{} took {took:?}", task.name);
    }
    // They overlap: each started before the other finished.
    let (a, b) = (&stage.tasks[0].progress, &stage.tasks[1].progress);
    assert!(a.started_at().unwrap() < b.finished_at().unwrap() && b.started_at().unwrap() < a.finished_at().unwrap());
}

#[test]
fn max_parallel_limits_the_tasks_running_at_once() {
    let sb = Sandbox::new();
    sb.write("par.yaml", PARALLEL);
    sb.run("par.yaml", &["--quiet", "--max-parallel", "1"]).expect_code(0);
    let record = sb.typed_record("par", 1);
    let wall = record.stages[0].progress.wall_time(jiff::Timestamp::now()).unwrap();
    assert!(wall >= Duration::from_millis(1900), "with one slot the two 1 s tasks took {wall:?}");
}

// ---------------------------------------------------------------------------------
// Processes and `wharf runs` display
// ---------------------------------------------------------------------------------

#[test]
fn what_a_task_leaves_running_is_killed_when_it_ends() {
    let sb = Sandbox::new();
    sb.write(
        "bg.yaml",
        "name: bg\nstages:\n  - name: S\n    tasks:\n      - name: t\n        type: script\n        script: |\n          sleep 30 &\n          echo \"pids $$ $!\"\n",
    );
    let out = sb.run("bg.yaml", &[]);
    out.expect_code(0);
    assert!(out.took < Duration::from_secs(10), "a background job held the task open: {:?}", out.took);
    let (_, child) = find_pids(&out.stdout).unwrap();
    assert!(gone_soon(child), "the background `sleep 30` ({child}) outlived its task");
}

#[test]

fn runs_listing_columns_line_up() {
    let sb = Sandbox::new();
    sb.write(
        "mixed.yaml",
        "name: mixed\nparameters:\n  - name: CODE\n    default: \"0\"\nstages:\n  - name: S\n    tasks:\n      - {name: t, type: script, script: 'exit ${CODE}'}\n",
    );
    sb.run("mixed.yaml", &[]).expect_code(0);
    sb.run("mixed.yaml", &["-p", "CODE=1"]).expect_code(1);
    let data = sb.data();
    let out = sb.wharf(&["runs", "list", "mixed", "--data-dir", data.to_str().unwrap()]);
    out.expect_code(0);
    let starts: Vec<usize> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            let date = l.split_whitespace().nth(2).unwrap();
            l[..l.find(date).unwrap()].chars().count()
        })
        .collect();
    assert_eq!(starts.len(), 2, "{}", out.stdout);
    assert_eq!(starts[0], starts[1], "the start-time column is not aligned:\n{}", out.stdout);
}

/// `wharf serve` says each thing once: a port in use, the default of `--log-format`.
#[test]
fn serve_says_a_busy_port_and_its_defaults_once() {
    let sb = Sandbox::new();
    let help = sb.wharf(&["serve", "--help"]);
    help.expect_code(0);
    assert_eq!(help.stdout.matches("[default: text]").count(), 1, "{}", help.stdout);

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = busy.local_addr().unwrap().to_string();
    let data = sb.path().join("serve-data");
    let out = sb.wharf(&["serve", "--listen", &listen, "--data-dir", data.to_str().unwrap()]);
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    let error = out.stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(error.starts_with(&format!("error: cannot listen on {listen}: ")), "{}", out.stderr);
    assert_eq!(error.matches("Address already in use").count(), 1, "{error}");
}

/// A machine without CA certificates still runs a server: the notification client,
/// which reads the trust store, is built at the first webhook sent, not at start (it
/// stopped the start with "cannot build the notification client: builder error").
/// The start gets as far as listening: a busy port is what it reports.
#[test]
fn serve_starts_without_ca_certificates() {
    let sb = Sandbox::new();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = busy.local_addr().unwrap().to_string();
    let data = sb.path().join("serve-data");
    let no_certs = sb.path().join("no-certs");
    std::fs::create_dir(&no_certs).unwrap();
    let mut cmd = sb.command(&["serve", "--listen", &listen, "--data-dir", data.to_str().unwrap()]);
    cmd.env("SSL_CERT_FILE", no_certs.join("none.pem")).env("SSL_CERT_DIR", &no_certs);
    let out = Running::spawn(cmd).finish(DEADLINE);
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    let error = out.stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(error.starts_with(&format!("error: cannot listen on {listen}: ")), "{}", out.stderr);
}

#[test]
fn wharf_run_refuses_approval_tasks_saying_they_need_the_server() {
    let sb = Sandbox::new();
    sb.write(
        "gated.yaml",
        "name: gated\nstages:\n  - name: Review\n    tasks:\n      - {name: sign, type: approval, approvers: [ann]}\n",
    );
    sb.wharf(&["run", "gated.yaml", "--data-dir", "data"])
        .expect_code(2)
        .stderr_has("Review/sign: `approval` tasks need the Wharf server")
        .stderr_has("`wharf run` has nobody to ask");
    sb.assert_no_runs("gated");
}
