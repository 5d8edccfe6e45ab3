//! End-to-end tests of the client commands (`wharf pipelines`, `wharf runs`, `wharf
//! logs`) against a real server: each test starts `wharf serve` on a free loopback port
//! with a data directory of its own and the admin token `t`, runs the `wharf` binary
//! against it, and checks what a person sees (exit code, stdout, stderr).
//!
//! Tests marked `#[ignore = "bug: …"]` describe the expected behaviour of a bug that is
//! not fixed yet; run them with `cargo test -p wharf --test client -- --ignored`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");
const TOKEN: &str = "t";

/// How long any single `wharf` invocation may take before the test gives up on it.
const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

/// `wharf` with none of the `WHARF_*` variables of the environment the tests run in.
fn clean_command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(WHARF);
    cmd.args(args).current_dir(dir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WHARF_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// What a finished `wharf` printed and returned.
#[derive(Debug)]
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
    args: String,
}

impl Outcome {
    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "`wharf {}` exited {} (expected {code})\nstdout:\n{}\nstderr:\n{}",
            self.args, self.code, self.stdout, self.stderr
        );
        self
    }

    fn stdout_has(&self, text: &str) -> &Self {
        assert!(self.stdout.contains(text), "`wharf {}`: stdout lacks {text:?}:\n{}", self.args, self.stdout);
        self
    }

    fn stderr_has(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "`wharf {}`: stderr lacks {text:?}:\nstderr:\n{}\nstdout:\n{}",
            self.args,
            self.stderr,
            self.stdout
        );
        self
    }

    /// The run id of `started run #N … (id ID)`.
    fn run_id(&self) -> u64 {
        let line = self
            .stdout
            .lines()
            .find(|l| l.starts_with("started run #"))
            .unwrap_or_else(|| panic!("`wharf {}` started no run:\n{}\n{}", self.args, self.stdout, self.stderr));
        let at = line.find("(id ").expect("an id") + 4;
        line[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    }
}

/// Runs `cmd` to its end, reading both pipes while it goes; kills it after `deadline`.
fn finish(mut cmd: Command, deadline: Duration) -> Outcome {
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut child = cmd.spawn().expect("start wharf");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let until = Instant::now() + deadline;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`wharf {}` did not end within {deadline:?}\nstdout:\n{}\nstderr:\n{}",
                args.join(" "),
                out.join().unwrap(),
                err.join().unwrap()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        args: args.join(" "),
    }
}

/// `wharf serve` on a free port with a data directory of its own; killed when dropped.
struct Server {
    child: Child,
    port: u16,
    url: String,
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Server {
    fn start() -> Server {
        Server::start_with(&[])
    }

    /// With more environment for `wharf serve` (`WHARF_OUTBOUND_ALLOW` for a cluster on
    /// loopback).
    fn start_with(env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().expect("create a tempdir");
        let root = tmp.path().canonicalize().unwrap();
        wharf_testenv::server_root(&root);
        std::fs::create_dir_all(root.join("work")).unwrap();
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let data = root.join("data");
        let log = std::fs::File::create(root.join("server.log")).unwrap();
        let mut cmd = clean_command(&root, &["serve", "--listen", &listen, "--data-dir", data.to_str().unwrap()]);
        cmd.env("WHARF_ADMIN_TOKEN", TOKEN)
            .env("WHARF_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("WHARF_STOP_GRACE", "2s")
            .envs(env.iter().copied())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        let child = cmd.spawn().expect("start wharf serve");
        let mut server = Server { child, port, url: format!("http://{listen}"), _tmp: tmp, root };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if http_get(self.port, "/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("wharf serve ended ({status}) before it was ready:\n{}", self.log());
            }
            assert!(Instant::now() < until, "wharf serve was not ready within 30s:\n{}", self.log());
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default()
    }

    fn work(&self) -> PathBuf {
        self.root.join("work")
    }

    /// Writes `text` to `work/name` and returns its path.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.work().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `wharf ARGS…` in `work/` with `WHARF_SERVER` and `WHARF_TOKEN` set for this server.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = clean_command(&self.work(), args);
        cmd.env("WHARF_SERVER", &self.url).env("WHARF_TOKEN", TOKEN);
        cmd
    }

    fn wharf(&self, args: &[&str]) -> Outcome {
        finish(self.command(args), DEADLINE)
    }

    /// `wharf ARGS…` with `input` on standard input (passwords, secret values).
    fn wharf_with_input(&self, args: &[&str], input: &str, token: Option<&str>) -> Outcome {
        use std::io::Write;
        let mut cmd = clean_command(&self.work(), args);
        cmd.env("WHARF_SERVER", &self.url).stdin(Stdio::piped());
        if let Some(token) = token {
            cmd.env("WHARF_TOKEN", token);
        }
        let mut child = cmd.spawn().expect("start wharf");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            args: args.join(" "),
        }
    }

    /// `wharf pipelines apply` of `yaml` written to `<name>.yaml`.
    fn apply(&self, name: &str, yaml: &str) -> Outcome {
        let file = self.write(&format!("{name}.yaml"), yaml);
        let out = self.wharf(&["pipelines", "apply", file.to_str().unwrap()]);
        out.expect_code(0);
        out
    }

    /// Waits until `wharf runs show ID` says `status: <status>`.
    fn wait_status(&self, id: u64, status: &str) -> Outcome {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.wharf(&["runs", "show", &id.to_string()]);
            if out.code == 0 && out.stdout.contains(&format!("status: {status}\n")) {
                return out;
            }
            assert!(Instant::now() < until, "run {id} never became {status}:\n{}\n{}", out.stdout, out.stderr);
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain `GET` over loopback: the whole answer, or `None` when nothing listens.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// Lines of `text` that contain `needle`.
fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

const HELLO_V1: &str = "\
name: hello
description: Says hello
parameters:
  - name: WHO
    default: nobody
  - name: CODE
    default: \"0\"
stages:
  - name: Build
    tasks:
      - name: greet
        type: script
        script: |
          echo \"hello ${WHO}\"
          exit ${CODE}
";

fn hello_v2() -> String {
    format!(
        "{HELLO_V1}  - name: Test
    mode: parallel
    tasks:
      - {{name: unit, type: script, script: 'echo unit ok'}}
      - {{name: lint, type: script, script: 'echo lint ok'}}
"
    )
}

// ---------------------------------------------------------------------------------
// pipelines
// ---------------------------------------------------------------------------------

#[test]
fn apply_creates_then_updates_and_list_show_yaml_copy_delete() {
    let srv = Server::start();
    srv.apply("hello", HELLO_V1).stdout_has("created pipeline hello (id 1, version 1)");
    srv.apply("hello", &hello_v2()).stdout_has("updated pipeline hello to version 2");

    let list = srv.wharf(&["pipelines", "list"]);
    list.expect_code(0);
    let header = list.stdout.lines().next().unwrap();
    for column in ["NAME", "ID", "ACTIVE", "VERSION", "LAST RUN"] {
        assert!(header.contains(column), "no {column} column:\n{}", list.stdout);
    }
    let row: Vec<&str> = list.stdout.lines().find(|l| l.starts_with("hello ")).unwrap().split_whitespace().collect();
    assert_eq!(row, ["hello", "1", "admin", "yes", "2", "-"], "{}", list.stdout);

    let show = srv.wharf(&["pipelines", "show", "hello"]);
    show.expect_code(0)
        .stdout_has("pipeline hello (id 1, project admin, active)")
        .stdout_has("Says hello")
        .stdout_has("Build (sequential)")
        .stdout_has("- greet")
        .stdout_has("Test (parallel)")
        .stdout_has("- unit")
        .stdout_has("- lint")
        .stdout_has("versions");
    let versions: Vec<&str> = show
        .stdout
        .split("versions\n")
        .nth(1)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(versions, ["2", "1"], "{}", show.stdout);
    // By id, the same pipeline.
    srv.wharf(&["pipelines", "show", "1"]).expect_code(0).stdout_has("pipeline hello (id 1");

    let yaml = srv.wharf(&["pipelines", "yaml", "hello"]);
    assert_eq!(yaml.expect_code(0).stdout, hello_v2());
    let yaml = srv.wharf(&["pipelines", "yaml", "hello", "--version", "1"]);
    assert_eq!(yaml.expect_code(0).stdout, HELLO_V1);
    srv.wharf(&["pipelines", "yaml", "hello", "--version", "7"]).expect_code(2).stderr_has("not found");

    srv.wharf(&["pipelines", "copy", "hello", "hello-copy"])
        .expect_code(0)
        .stdout_has("copied pipeline hello to hello-copy (id 2");
    let copy = srv.wharf(&["pipelines", "show", "hello-copy"]);
    copy.expect_code(0).stdout_has("pipeline hello-copy (id 2").stdout_has("- greet").stdout_has("- lint");
    srv.wharf(&["pipelines", "copy", "hello", "hello-copy"]).expect_code(2);

    srv.wharf(&["pipelines", "delete", "hello-copy"]).expect_code(0).stdout_has("deleted pipeline hello-copy");
    let list = srv.wharf(&["pipelines", "list"]);
    assert!(!list.expect_code(0).stdout.contains("hello-copy"), "{}", list.stdout);
    srv.wharf(&["pipelines", "show", "hello-copy"]).expect_code(2).stderr_has("pipeline `hello-copy` not found");
}

#[test]
fn apply_with_run_saves_and_starts_a_run() {
    let srv = Server::start();
    let file = srv.write("hello.yaml", HELLO_V1);
    let out = srv.wharf(&["pipelines", "apply", file.to_str().unwrap(), "--run"]);
    out.expect_code(0).stdout_has("created pipeline hello (id 1, version 1)").stdout_has("started run #1 of hello");
    srv.wait_status(out.run_id(), "succeeded");
    let out = srv.wharf(&["pipelines", "apply", file.to_str().unwrap(), "--run"]);
    out.expect_code(0).stdout_has("updated pipeline hello to version 2").stdout_has("started run #2 of hello");
    srv.wait_status(out.run_id(), "succeeded");
    let list = srv.wharf(&["pipelines", "list"]);
    list.expect_code(0).stdout_has("#2 succeeded");
}

#[test]
fn a_deactivated_pipeline_refuses_runs_until_activated() {
    let srv = Server::start();
    srv.apply("hello", HELLO_V1);
    srv.wharf(&["pipelines", "deactivate", "hello"]).expect_code(0).stdout_has("pipeline hello is inactive");
    let list = srv.wharf(&["pipelines", "list"]);
    let row: Vec<&str> = list.stdout.lines().find(|l| l.starts_with("hello ")).unwrap().split_whitespace().collect();
    assert_eq!(row[3], "no", "{}", list.stdout);
    srv.wharf(&["pipelines", "show", "hello"]).expect_code(0).stdout_has("inactive)");

    srv.wharf(&["runs", "start", "hello"])
        .expect_code(2)
        .stderr_has("pipeline `hello` is inactive; activate it to start runs");

    srv.wharf(&["pipelines", "activate", "1"]).expect_code(0).stdout_has("pipeline hello is active");
    srv.wharf(&["runs", "start", "hello", "--follow"]).expect_code(0).stdout_has("succeeded");
}

#[test]
fn unknown_pipelines_and_runs_are_bad_input() {
    let srv = Server::start();
    srv.wharf(&["pipelines", "show", "nope"]).expect_code(2).stderr_has("pipeline `nope` not found");
    srv.wharf(&["runs", "start", "nope"]).expect_code(2).stderr_has("not found");
    srv.wharf(&["runs", "show", "99"]).expect_code(2).stderr_has("not found");
    srv.wharf(&["logs", "99"]).expect_code(2).stderr_has("not found");
    srv.wharf(&["runs", "list", "nope"]).expect_code(2).stderr_has("not found");
    srv.wharf(&["runs", "show", "seven"]).expect_code(2);
    srv.wharf(&["runs", "start", "nope", "-p", "NOEQUALS"]).expect_code(2).stderr_has("KEY=VALUE");
}

// ---------------------------------------------------------------------------------
// runs
// ---------------------------------------------------------------------------------

#[test]
fn runs_start_follow_shows_the_task_lines_and_the_outcome() {
    let srv = Server::start();
    srv.apply("hello", &hello_v2());

    let ok = srv.wharf(&["runs", "start", "hello", "-p", "WHO=world", "--follow"]);
    ok.expect_code(0)
        .stdout_has("started run #1 of hello (id 1)")
        .stdout_has("[Build/greet] hello world\n")
        .stdout_has("[Test/unit] unit ok\n")
        .stdout_has("[Test/lint] lint ok\n")
        .stdout_has("✔ run #1 succeeded");
    // The closing table, as `wharf run` prints it.
    let table: Vec<Vec<&str>> = ok
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("STAGE"))
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(table[0], ["STAGE", "TASK", "STATUS", "DURATION"], "{}", ok.stdout);
    assert_eq!(&table[1][..3], ["Build", "greet", "succeeded"], "{}", ok.stdout);
    assert_eq!(table.len(), 4, "{}", ok.stdout);
    assert_eq!(count(&ok.stdout, "hello world"), 1, "each line once:\n{}", ok.stdout);

    let failed = srv.wharf(&["runs", "start", "hello", "-p", "CODE=3", "--follow"]);
    failed
        .expect_code(1)
        .stdout_has("[Build/greet] hello nobody\n")
        .stdout_has("✘ Build/greet failed")
        .stdout_has("✘ run #2 failed")
        .stdout_has("exit code 3");
    assert!(!failed.stdout.contains("[Test/unit]"), "a skipped task ran:\n{}", failed.stdout);

    // Without --follow: the id at once, exit 0 whatever the run does.
    let quick = srv.wharf(&["runs", "start", "1", "-p", "CODE=4"]);
    quick.expect_code(0).stdout_has("started run #3 of 1");
    srv.wait_status(quick.run_id(), "failed");
}

#[test]
fn runs_list_is_newest_first_with_pages_and_show_has_the_table_and_cause() {
    let srv = Server::start();
    srv.apply("hello", HELLO_V1);
    let first = srv.wharf(&["runs", "start", "hello", "-p", "WHO=one", "--follow"]);
    first.expect_code(0);
    srv.wharf(&["runs", "start", "hello", "-p", "CODE=5", "--follow"]).expect_code(1);
    srv.wharf(&["runs", "start", "hello", "-p", "WHO=three", "--follow"]).expect_code(0);

    let list = srv.wharf(&["runs", "list", "hello"]);
    list.expect_code(0);
    let rows: Vec<(String, String)> = list
        .stdout
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[0].to_owned(), w[2].to_owned())
        })
        .collect();
    let expected = [("#3", "succeeded"), ("#2", "failed"), ("#1", "succeeded")];
    assert_eq!(rows, expected.map(|(a, b)| (a.to_owned(), b.to_owned())), "{}", list.stdout);
    assert!(list.stdout.starts_with("RUN"), "{}", list.stdout);

    let page = srv.wharf(&["runs", "list", "hello", "--limit", "1", "--page", "2"]);
    page.expect_code(0).stdout_has("#2").stdout_has("1 older runs (--page 3)");
    assert_eq!(count(&page.stdout, "#"), 1, "{}", page.stdout);
    srv.wharf(&["runs", "list", "hello", "--limit", "1", "--page", "9"]).expect_code(0).stdout_has("no runs on page 9");

    let show = srv.wharf(&["runs", "show", &first.run_id().to_string()]);
    show.expect_code(0)
        .stdout_has("run #1 of hello (id 1, version 1)")
        .stdout_has("cause: started by admin")
        .stdout_has("parameters: CODE=0 WHO=one")
        .stdout_has("status: succeeded")
        .stdout_has("STAGE  TASK   STATUS     DURATION")
        .stdout_has("✔ run #1 succeeded in");
    // A run by its number in its pipeline, as the list shows it, is the same run.
    let show = srv.wharf(&["runs", "show", "hello#2"]);
    show.expect_code(0)
        .stdout_has("run #2 of hello (id 2")
        .stdout_has("status: failed")
        .stdout_has("reason: stage `Build` failed")
        .stdout_has("Build/greet: exit code 5")
        .stdout_has("✘ run #2 failed");
    srv.wharf(&["logs", "hello#2", "greet"]).expect_code(0);
    srv.wharf(&["runs", "show", "hello#9"]).expect_code(2).stderr_has("run `hello#9` not found");
    srv.wharf(&["runs", "show", "nope#1"]).expect_code(2).stderr_has("not found");
    srv.wharf(&["runs", "show", "hello#x"]).expect_code(2).stderr_has("a run is `PIPELINE#N` or its id");
}

#[test]
fn stop_rerun_and_retry() {
    let srv = Server::start();
    srv.apply("slow", "name: slow\nstages:\n  - name: S\n    tasks:\n      - {name: t, type: script, script: 'echo going; sleep 30; echo never'}\n");
    let started = srv.wharf(&["runs", "start", "slow"]);
    let id = started.expect_code(0).run_id();
    srv.wait_status(id, "running");
    srv.wharf(&["runs", "stop", "slow#1"]).expect_code(0).stdout_has(&format!("stopping run #1 of slow (id {id})"));
    srv.wait_status(id, "stopped").stdout_has("■ run #1 stopped");
    srv.wharf(&["runs", "stop", &id.to_string()]).expect_code(2).stderr_has("already stopped");

    // Re-run: the record's own parameters, again.
    srv.apply("hello", HELLO_V1);
    let first = srv.wharf(&["runs", "start", "hello", "-p", "WHO=again", "--follow"]);
    let first_id = first.expect_code(0).run_id();
    srv.apply("hello", &hello_v2()); // a new version, which the re-run must not use
    let rerun = srv.wharf(&["runs", "rerun", &first_id.to_string(), "--follow"]);
    rerun
        .expect_code(0)
        .stdout_has("of hello (id ")
        .stdout_has("a re-run of run #1 with")
        .stdout_has("[Build/greet] hello again\n");
    assert!(!rerun.stdout.contains("Test"), "the re-run took the new version:\n{}", rerun.stdout);
    srv.wharf(&["runs", "show", &rerun.run_id().to_string()])
        .expect_code(0)
        .stdout_has("cause: re-run of #1")
        .stdout_has("version 1)");

    // Retry: the failed stage again, in the kept workspace, with the earlier outputs.
    srv.apply(
        "flaky",
        "name: flaky
stages:
  - name: Prepare
    tasks:
      - {name: prep, type: script, script: 'echo prepared; echo \"V=42\" >> \"$WHARF_OUTPUT\"'}
  - name: Check
    tasks:
      - name: check
        type: script
        script: |
          if [ -f marker ]; then echo \"second try V=${tasks.prep.V}\"; else touch marker; echo \"first try\"; exit 1; fi
",
    );
    let failed = srv.wharf(&["runs", "start", "flaky", "--follow"]);
    failed.expect_code(1).stdout_has("[Check/check] first try");
    let failed_id = failed.run_id();
    let retry = srv.wharf(&["runs", "retry", &failed_id.to_string(), "--follow"]);
    retry
        .expect_code(0)
        .stdout_has("a retry of run #1 from its failed stage")
        .stdout_has("[Check/check] second try V=42\n");
    assert!(!retry.stdout.contains("[Prepare/prep]"), "the succeeded stage ran again:\n{}", retry.stdout);
    let show = srv.wharf(&["runs", "show", &retry.run_id().to_string()]);
    show.expect_code(0).stdout_has("cause: retry of #1").stdout_has(&format!("retry of: run {failed_id}"));
    // A run that succeeded has nothing to retry.
    srv.wharf(&["runs", "retry", &first_id.to_string()]).expect_code(2).stderr_has("no failed stage");
}

const TWICE: &str = "\
name: twice
stages:
  - name: Prepare
    tasks:
      - {name: prep, type: script, script: 'echo prepared; echo \"V=42\" >> \"$WHARF_OUTPUT\"'}
  - name: Check
    tasks:
      - name: check
        type: script
        script: |
          if [ -f marker ]; then echo \"check passes V=${tasks.prep.V}\"; else touch marker; echo \"check fails\"; exit 1; fi
  - name: Final
    tasks:
      - name: final
        type: script
        script: |
          if [ -f marker2 ]; then echo \"final passes\"; else touch marker2; echo \"final fails\"; exit 1; fi
";

#[test]
fn retrying_a_retry_keeps_reusing_what_succeeded_before() {
    let srv = Server::start();
    srv.apply("twice", TWICE);
    let first = srv.wharf(&["runs", "start", "twice", "--follow"]);
    first.expect_code(1).stdout_has("[Check/check] check fails");
    let second = srv.wharf(&["runs", "retry", &first.run_id().to_string(), "--follow"]);
    second.expect_code(1).stdout_has("[Check/check] check passes V=42").stdout_has("[Final/final] final fails");
    assert!(!second.stdout.contains("[Prepare/prep]"), "{}", second.stdout);

    // The retry of the retry: only Final is left to do.
    let third = srv.wharf(&["runs", "retry", &second.run_id().to_string(), "--follow"]);
    third.expect_code(0).stdout_has("[Final/final] final passes");
    assert!(!third.stdout.contains("[Prepare/prep]"), "Prepare ran again:\n{}", third.stdout);
    assert!(!third.stdout.contains("[Check/check]"), "Check ran again:\n{}", third.stdout);

    // It succeeded: nothing is left to retry.
    srv.wharf(&["runs", "retry", &third.run_id().to_string()]).expect_code(2).stderr_has("no failed stage");
}

#[test]
fn runs_list_reads_local_runs_without_a_server() {
    let srv = Server::start();
    srv.write("hello.yaml", HELLO_V1);
    // `wharf run` keeps its runs in ./.wharf.
    finish(clean_command(&srv.work(), &["run", "hello.yaml", "-p", "WHO=local"]), DEADLINE).expect_code(0);

    let local = finish(clean_command(&srv.work(), &["runs", "list", "hello"]), DEADLINE);
    local.expect_code(0);
    assert!(local.stdout.starts_with("#1 "), "not the local listing:\n{}", local.stdout);

    // With a server, the server's runs (there are none yet); --local insists on the local ones.
    srv.apply("hello", HELLO_V1);
    srv.wharf(&["runs", "list", "hello"]).expect_code(0).stdout_has("no runs of `hello` yet");
    let forced = srv.wharf(&["runs", "list", "hello", "--local"]);
    assert!(forced.expect_code(0).stdout.starts_with("#1 "), "{}", forced.stdout);

    // Local runs of another pipeline do not count: the server is asked.
    let away = finish(
        {
            let mut cmd = clean_command(&srv.work(), &["runs", "list", "other", "--token", TOKEN]);
            cmd.env("WHARF_SERVER", format!("http://127.0.0.1:{}", free_port()));
            cmd
        },
        DEADLINE,
    );
    away.expect_code(1).stderr_has("cannot reach the server");
}

// ---------------------------------------------------------------------------------
// logs
// ---------------------------------------------------------------------------------

const LINES: &str = "\
name: lines
stages:
  - name: Build
    tasks:
      - name: count
        type: script
        script: |
          for i in 1 2 3 4 5; do echo \"line $i\"; sleep 0.2; done
  - name: After
    tasks:
      - {name: done, type: script, script: 'echo all done'}
";

#[test]
fn logs_whole_run_one_task_and_follow() {
    let srv = Server::start();
    srv.apply("lines", LINES);
    let id = srv.wharf(&["runs", "start", "lines"]).run_id().to_string();

    // Following one task live: every line once, then the end of its log.
    let follow = srv.wharf(&["logs", &id, "count", "-f"]);
    follow.expect_code(0);
    // The task's own output (its first line, `sys`, says where it runs).
    let got: Vec<&str> = follow.stdout.lines().filter_map(|l| l.split_once(" out ").map(|(_, t)| t)).collect();
    assert!(follow.stdout.lines().next().unwrap_or("").contains(" sys runs on the host"), "{}", follow.stdout);
    assert_eq!(got, ["line 1", "line 2", "line 3", "line 4", "line 5"], "{}", follow.stdout);

    srv.wait_status(id.parse().unwrap(), "succeeded");
    let whole = srv.wharf(&["logs", &id]);
    whole.expect_code(0).stdout_has("===== lines #1 succeeded =====").stdout_has("===== Build/count succeeded =====");
    whole.stdout_has("out line 5\n").stdout_has("===== After/done succeeded =====").stdout_has("out all done\n");

    let task = srv.wharf(&["logs", &id, "done"]);
    task.expect_code(0);
    assert_eq!(task.stdout.lines().count(), 2, "where it ran, then its output: {}", task.stdout);
    assert!(task.stdout.ends_with(" out all done\n"), "{}", task.stdout);
    srv.wharf(&["logs", &id, "nope"]).expect_code(2).stderr_has("task `nope`");

    // Following a finished run shows it all, in order.
    let run = srv.wharf(&["logs", &id, "-f"]);
    run.expect_code(0);
    // The task lines (not the engine's own `·` lines, which say where each task runs).
    let order: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with('[') && !l.contains("] · ")).collect();
    assert_eq!(
        order,
        [
            "[Build/count] line 1",
            "[Build/count] line 2",
            "[Build/count] line 3",
            "[Build/count] line 4",
            "[Build/count] line 5",
            "[After/done] all done"
        ],
        "{}",
        run.stdout
    );
    run.stdout_has("✔ run #1 succeeded");
}

#[test]
fn logs_follow_of_a_running_run_lasts_until_its_end() {
    let srv = Server::start();
    srv.apply("lines", LINES);
    let id = srv.wharf(&["runs", "start", "lines"]).run_id().to_string();
    let run = srv.wharf(&["logs", &id, "-f"]);
    run.expect_code(0).stdout_has("[After/done] all done\n").stdout_has("✔ run #1 succeeded");
    for i in 1..=5 {
        assert_eq!(count(&run.stdout, &format!("[Build/count] line {i}")), 1, "{}", run.stdout);
    }
}

/// A TCP proxy to `upstream` that cuts its first connection in the middle of the answer,
/// right inside the event that carries `marker` — a network dropping a long stream.
/// Later connections pass untouched. Returns the port and the count of connections.
fn flaky_proxy(upstream: u16, marker: &'static [u8]) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { return };
            let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(k) = c_read.read(&mut buf) {
                    if k == 0 || s_write.write_all(&buf[..k]).is_err() {
                        break;
                    }
                }
            });
            let (mut s_read, mut c_write) = (server, client);
            thread::spawn(move || {
                let mut seen_so_far = Vec::new();
                let mut buf = [0u8; 8192];
                while let Ok(k) = s_read.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    let from = seen_so_far.len();
                    seen_so_far.extend_from_slice(&buf[..k]);
                    let cut = (n == 0)
                        .then(|| seen_so_far.windows(marker.len()).position(|w| w == marker))
                        .flatten()
                        .map(|at| at + marker.len() / 2);
                    match cut {
                        Some(cut) => {
                            let _ = c_write.write_all(&seen_so_far[from.min(cut)..cut]);
                            let _ = c_write.shutdown(Shutdown::Both);
                            let _ = s_read.shutdown(Shutdown::Both);
                            return;
                        }
                        None => {
                            if c_write.write_all(&buf[..k]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = c_write.shutdown(Shutdown::Both);
            });
        }
    });
    (port, connections)
}

#[test]
fn logs_follow_resumes_after_a_dropped_connection_without_losing_or_repeating_lines() {
    let srv = Server::start();
    srv.apply("lines", LINES);
    let id = srv.wharf(&["runs", "start", "lines"]).run_id().to_string();
    let (port, connections) = flaky_proxy(srv.port, b"out line 3");
    let through = format!("http://127.0.0.1:{port}");
    let follow = srv.wharf(&["logs", &id, "count", "-f", "--server", &through]);
    follow.expect_code(0);
    // The task's own output (its first line, `sys`, says where it runs).
    let got: Vec<&str> = follow.stdout.lines().filter_map(|l| l.split_once(" out ").map(|(_, t)| t)).collect();
    assert!(follow.stdout.lines().next().unwrap_or("").contains(" sys runs on the host"), "{}", follow.stdout);
    assert_eq!(got, ["line 1", "line 2", "line 3", "line 4", "line 5"], "{}\n{}", follow.stdout, follow.stderr);
    assert!(connections.load(Ordering::SeqCst) >= 2, "the stream was never cut and resumed");
}

// ---------------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------------

const ADMIN_PASSWORD: &str = "cli-admin-password";

#[test]
fn login_users_tokens_and_secrets_from_the_command_line() {
    let server = Server::start();
    // `wharf login`: a password in, a token out.
    let login = server.wharf_with_input(&["login", "admin"], &format!("{ADMIN_PASSWORD}\n"), None);
    login.expect_code(0).stdout_has("export WHARF_TOKEN=wharf_");
    let token = login.stdout.trim().strip_prefix("export WHARF_TOKEN=").unwrap().to_owned();
    // A wrong password says so (not "bearer token"), and how many tries are left.
    let wrong = server.wharf_with_input(&["login", "admin"], "wrong-password\n", None);
    wrong.expect_code(2).stderr_has("wrong user name or password (4 more tries from this address");
    assert!(!wrong.stderr.contains("bearer token"), "{}", wrong.stderr);

    // Users: add (password from stdin), list.
    server.wharf(&["users", "add", "ann", "--role", "manager", "--project", "admin"]).expect_code(0);
    let out = server.wharf_with_input(&["users", "add", "bo", "--password-stdin"], "bo-password-1\n", Some(&token));
    out.expect_code(0).stdout_has("created user bo (user)");
    server.wharf(&["users", "list"]).expect_code(0).stdout_has("ann").stdout_has("manager");

    // Tokens: create (printed once), list (never the token), revoke.
    let made = server.wharf(&["tokens", "create", "ci", "--user", "ann", "--scope", "read", "--expires-in-days", "7"]);
    made.expect_code(0);
    let ci = made.stdout.trim().to_owned();
    assert!(ci.starts_with("wharf_"), "{}", made.stdout);
    let list = server.wharf(&["tokens", "list", "--user", "ann"]);
    list.expect_code(0).stdout_has("ci").stdout_has("read").stdout_has("active");
    assert!(!list.stdout.contains(&ci));
    server.wharf(&["tokens", "revoke", "ci", "--user", "ann"]).expect_code(0);
    server.wharf(&["tokens", "list", "--user", "ann"]).expect_code(0).stdout_has("revoked");
    let refused = server.wharf_with_input(&["pipelines", "list"], "", Some(&ci));
    refused.expect_code(2).stderr_has("refused the token");

    // Users: disable (their tokens refused at once), enable, delete; yourself refused.
    let bo = server.wharf_with_input(&["tokens", "create", "bo-ci", "--user", "bo"], "", Some(&token));
    let bo = bo.stdout.trim().to_owned();
    server.wharf(&["users", "disable", "bo"]).expect_code(0).stdout_has("disabled user bo");
    server.wharf(&["users", "list"]).expect_code(0).stdout_has("disabled");
    server.wharf_with_input(&["pipelines", "list"], "", Some(&bo)).expect_code(2).stderr_has("refused the token");
    server.wharf(&["users", "enable", "bo"]).expect_code(0);
    server.wharf_with_input(&["pipelines", "list"], "", Some(&bo)).expect_code(0);
    server.wharf(&["users", "delete", "bo"]).expect_code(0).stdout_has("deleted user bo");
    server.wharf_with_input(&["pipelines", "list"], "", Some(&bo)).expect_code(2).stderr_has("refused the token");
    server.wharf(&["users", "delete", "admin"]).expect_code(2).stderr_has("yourself");

    // Secrets: the value from stdin, never printed; list shows names. Short values are
    // refused with the server's reason.
    let short = server.wharf_with_input(&["secrets", "set", "DEPLOY_KEY"], "abc\n", Some(&token));
    short.expect_code(2).stderr_has("`DEPLOY_KEY`").stderr_has("at least 8");
    let set = server.wharf_with_input(&["secrets", "set", "DEPLOY_KEY"], "cli-secret-value-42\n", Some(&token));
    set.expect_code(0);
    let listed = server.wharf(&["secrets", "list"]);
    listed.expect_code(0).stdout_has("admin/DEPLOY_KEY");
    assert!(!listed.stdout.contains("cli-secret-value-42"));
    server.wharf(&["secrets", "delete", "DEPLOY_KEY"]).expect_code(0);
    assert!(!server.wharf(&["secrets", "list"]).stdout.contains("DEPLOY_KEY"));
}

#[test]
fn a_wrong_or_missing_token_is_refused_with_a_hint() {
    let srv = Server::start();
    let wrong = srv.wharf(&["pipelines", "list", "--token", "wrong"]);
    wrong.expect_code(2).stderr_has("the server refused the token: set WHARF_TOKEN or --token");
    let mut cmd = srv.command(&["pipelines", "list"]);
    cmd.env_remove("WHARF_TOKEN");
    finish(cmd, DEADLINE).expect_code(2).stderr_has("set WHARF_TOKEN or --token");
    // The token from the environment is enough.
    srv.wharf(&["pipelines", "list"]).expect_code(0).stdout_has("no pipelines yet");
}

#[test]
fn an_invalid_pipeline_file_prints_each_problem_with_line_and_column() {
    let srv = Server::start();
    let file = srv.write(
        "bad.yaml",
        "name: bad\nstages:\n  - name: S\n    tasks:\n      - name: t\n        type: scrip\n        script: echo\n",
    );
    let out = srv.wharf(&["pipelines", "apply", file.to_str().unwrap()]);
    out.expect_code(2).stderr_has("the pipeline is not valid").stderr_has("stages[0].tasks[0].type (6:15): ");
    srv.wharf(&["pipelines", "list"]).expect_code(0).stdout_has("no pipelines yet");

    // Valid YAML for the first version, invalid for the update: the same report.
    srv.apply("good", "name: good\nstages:\n  - name: S\n    tasks:\n      - {name: t, type: script, script: echo}\n");
    let file = srv.write("good.yaml", "name: good\nstages:\n  - name: S\n    tasks: []\n    bogus: 1\n");
    let out = srv.wharf(&["pipelines", "apply", file.to_str().unwrap()]);
    out.expect_code(2).stderr_has("the pipeline is not valid");
    assert!(out.stderr.lines().skip(1).all(|l| l.contains(" (") && l.contains("): ")), "{}", out.stderr);

    srv.wharf(&["pipelines", "apply", "missing.yaml"]).expect_code(2).stderr_has("cannot read missing.yaml");
}

#[test]
fn a_server_that_is_down_is_named() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["pipelines", "list", "--server", url.as_str()],
        vec!["runs", "show", "1", "--server", url.as_str()],
        vec!["logs", "1", "-f", "--server", url.as_str()],
    ] {
        let out = finish(clean_command(dir.path(), &args), DEADLINE);
        out.expect_code(1).stderr_has(&format!("cannot reach the server at {url}"));
    }
    // A server that is not a URL is bad input.
    let out = finish(clean_command(dir.path(), &["pipelines", "list", "--server", "not a url"]), DEADLINE);
    out.expect_code(2).stderr_has("is not a URL");
}

#[test]
fn registries_add_list_upload_tags_and_delete_a_tag() {
    let Some(env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let server = Server::start();
    let workspace = format!("cli{}", std::process::id());
    let add = |password: &str| {
        let mut cmd = server.command(&[
            "registries",
            "add",
            "local",
            "--url",
            &env.registry_url,
            "--insecure",
            "--username",
            &env.registry_user,
            "--workspace",
            &workspace,
        ]);
        cmd.env("WHARF_REGISTRY_PASSWORD", password);
        finish(cmd, DEADLINE)
    };
    add("wrong").expect_code(2).stderr_has(&format!("registry {} refused the credentials", env.registry));
    add(&env.registry_password).expect_code(0).stdout_has("registered registry local at http://");
    server.wharf(&["registries", "list"]).expect_code(0).stdout_has(&format!("workspaces: {workspace}"));

    // A docker save tarball of the busybox image under a name of this test's own.
    let image = format!("up{}", std::process::id());
    let tag = format!("wharf-cli/{image}:v1");
    let docker = |args: &[&str]| {
        let out = Command::new("docker").args(args).output().unwrap();
        assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let tarball = server.work().join("image.tar");
    docker(&["tag", &env.busybox_image, &tag]);
    docker(&["save", &tag, "-o", tarball.to_str().unwrap()]);
    docker(&["rmi", &tag]);

    server
        .wharf(&["registries", "upload", "local", "image.tar", "--workspace", "nowhere"])
        .expect_code(2)
        .stderr_has(&format!("`nowhere` is not a workspace of registry local (registered: {workspace})"));
    let reference = format!("{}/{workspace}/{image}:v1", env.registry);
    server
        .wharf(&["registries", "upload", "local", "image.tar", "--workspace", &workspace])
        .expect_code(0)
        .stdout_has(&format!("pushed {reference} (sha256:"));
    server
        .wharf(&["registries", "repos", "local", "--workspace", &workspace])
        .expect_code(0)
        .stdout_has(&format!("{workspace}/{image}\n"));
    let tags = server.wharf(&["registries", "tags", "local", &format!("{workspace}/{image}")]);
    tags.expect_code(0).stdout_has("v1").stdout_has(&reference).stdout_has(" MiB");
    server
        .wharf(&["registries", "delete-tag", "local", &format!("{workspace}/{image}:v1")])
        .expect_code(0)
        .stdout_has(&format!("deleted {reference}"));
    server
        .wharf(&["registries", "delete-tag", "local", &format!("{workspace}/{image}:v1")])
        .expect_code(2)
        .stderr_has("not found");
}

/// A pipeline whose latest version deploys to the cluster `cluster`.
fn deploying_pipeline(name: &str, cluster: &str) -> String {
    format!(
        "name: {name}\nexecutor: host\nstages:\n  - name: Deploy\n    tasks:\n      - name: apply\n        type: deploy-yaml\n        \
         file: k8s/app.yaml\n        cluster: {cluster}\n        namespace: games\n"
    )
}

#[test]
fn clusters_add_list_show_and_remove_against_a_kube_fake() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let options = wharf_kube_fake::Options { ready_nodes: 2, unready_nodes: 1, ..Default::default() };
    let fake = runtime.block_on(wharf_kube_fake::KubeFake::start(options)).expect("start the kube-fake");
    // The fake listens on loopback, which the server refuses to call unless listed.
    let server = Server::start_with(&[("WHARF_OUTBOUND_ALLOW", "127.0.0.1")]);
    server
        .wharf(&["clusters", "list"])
        .expect_code(0)
        .stdout_has("no clusters yet; register one with: wharf clusters add NAME --kubeconfig FILE");

    let kubeconfig = fake.kubeconfig();
    server.write("kubeconfig", &kubeconfig);
    server.write("wrong-token", &kubeconfig.replace(fake.token(), "not-the-token"));
    server.write("malformed", "apiVersion: v1\nkind: Config\nclusters: [\n");
    let dead = format!("https://127.0.0.1:{}", free_port());
    server.write("dead", &kubeconfig.replace(&fake.url(), &dead));

    // What is wrong is said, with the exit code of a refusal (2) or of a failure
    // elsewhere (1: the cluster cannot be reached).
    let add = |file: &str| server.wharf(&["clusters", "add", "prod", "--kubeconfig", file]);
    add("malformed").expect_code(2).stderr_has("kubeconfig");
    add("wrong-token").expect_code(2).stderr_has("unauthorized");
    add("dead").expect_code(1).stderr_has(&format!("{dead} is unreachable"));
    add("missing").expect_code(2).stderr_has("cannot open the kubeconfig missing");

    let out = add("kubeconfig");
    out.expect_code(0)
        .stdout_has(&format!("registered cluster prod at {} (context kube-fake, project admin)", fake.url()))
        .stdout_has("health: healthy, Kubernetes v1.32.0-kube-fake, nodes 2/3 ready")
        .stdout_has("pipeline namespace: ecp-devops-");
    add("kubeconfig").expect_code(2).stderr_has("prod");

    // From standard input, registered without contacting it.
    let later = server.wharf_with_input(
        &["clusters", "add", "later", "--kubeconfig", "-", "--no-verify"],
        &kubeconfig.replace(&fake.url(), &dead),
        Some(TOKEN),
    );
    later.expect_code(0).stdout_has("health: unchecked, not contacted yet");
    // Checking it now says why it fails, and fails.
    server.wharf(&["clusters", "check", "later"]).expect_code(1).stdout_has("cluster later: unreachable");
    server
        .wharf(&["clusters", "check", "prod"])
        .expect_code(0)
        .stdout_has("cluster prod: healthy, Kubernetes v1.32.0-kube-fake");

    let list = server.wharf(&["clusters", "list"]);
    list.expect_code(0)
        .stdout_has("NAME")
        .stdout_has("v1.32.0-kube-fake")
        .stdout_has("2/3")
        .stdout_has("later (unreachable): ");
    let prod = list.stdout.lines().find(|l| l.starts_with("prod ")).expect("a row for prod");
    assert!(prod.contains("healthy") && prod.contains(&fake.url()) && prod.contains("ecp-devops-"), "{prod}");

    let show = server.wharf(&["clusters", "show", "prod"]);
    show.expect_code(0)
        .stdout_has("cluster prod (id ")
        .stdout_has("  nodes      2 of 3 ready\n")
        .stdout_has("  health     healthy\n")
        .stdout_has("  context    kube-fake\n");
    for out in [&list, &show] {
        assert!(!out.stdout.contains(fake.token()), "no answer carries the kubeconfig's token:\n{}", out.stdout);
    }
    server.wharf(&["clusters", "show", "nowhere"]).expect_code(2);

    // The kubernetes executor's settings: changed by flags, refused at their field.
    server
        .wharf(&[
            "clusters",
            "set",
            "prod",
            "--cpu-request",
            "250m",
            "--node-selector",
            "pool=ci",
            "--toleration",
            "ci:NoSchedule",
            "--workspace",
            "claim",
            "--storage-class",
            "local-path",
            "--pending-limit",
            "90s",
        ])
        .expect_code(0)
        .stdout_has("cluster prod: settings saved")
        .stdout_has("    cpu (request / limit)     250m / -\n")
        .stdout_has("    tolerations               ci:NoSchedule (exists)\n")
        .stdout_has("    pending limit             1m30s\n")
        .stdout_has("    workspace                 claim, 1Gi of class local-path\n");
    server
        .wharf(&["clusters", "set", "prod", "--cpu-limit", "100m"])
        .expect_code(2)
        .stderr_has("resources.requests.cpu")
        .stderr_has("the cpu request `250m` is more than its limit `100m`");
    server.wharf(&["clusters", "set", "prod"]).expect_code(2).stderr_has("nothing to change");
    server
        .wharf(&["clusters", "set", "prod", "--cpu-request", "", "--workspace", "host-path"])
        .expect_code(0)
        .stdout_has("    cpu (request / limit)     - / -\n")
        .stdout_has("    workspace                 host-path\n");

    // A pipeline deploying to prod holds it; the refusal names the pipeline.
    server.apply("shop-deploy", &deploying_pipeline("shop-deploy", "prod"));
    server.wharf(&["clusters", "remove", "prod"]).expect_code(2).stderr_has("shop-deploy");
    server.wharf(&["pipelines", "delete", "shop-deploy"]).expect_code(0);
    server.wharf(&["clusters", "remove", "prod"]).expect_code(0).stdout_has("removed cluster prod");
    server.wharf(&["clusters", "remove", "later"]).expect_code(0);
    server.wharf(&["clusters", "list"]).expect_code(0).stdout_has("no clusters yet");
    drop(fake);
}

#[test]
fn runs_approve_and_reject_decide_waiting_approval_tasks() {
    let srv = Server::start();
    srv.apply(
        "gated",
        "name: gated\nconcurrency: allow\nstages:\n  - name: Review\n    tasks:\n      - {name: sign, type: approval, approvers: [admin], message: 'Ship it?'}\n  - name: Ship\n    tasks:\n      - {name: ship, type: script, script: 'echo shipped'}\n",
    );
    let first = srv.wharf(&["runs", "start", "gated"]).expect_code(0).run_id();
    let second = srv.wharf(&["runs", "start", "gated"]).expect_code(0).run_id();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let list = srv.wharf(&["runs", "approvals"]);
        if count(&list.stdout, "Review/sign") == 2 {
            list.stdout_has("gated#1 Review/sign (0 of 1 approvals): Ship it?");
            break;
        }
        assert!(Instant::now() < until, "the approvals never waited:\n{}", list.stdout);
        thread::sleep(Duration::from_millis(100));
    }
    srv.wharf(&["runs", "approve", "gated#1", "sign", "-m", "go"])
        .expect_code(0)
        .stdout_has("approved sign of run gated#1: the task is approved");
    srv.wait_status(first, "succeeded");
    srv.wharf(&["runs", "reject", &second.to_string(), "sign", "-m", "not today"])
        .expect_code(0)
        .stdout_has("rejected sign of run 2: the task is rejected");
    srv.wait_status(second, "failed").stdout_has("rejected by admin: not today");
    srv.wharf(&["runs", "approve", "gated#1", "sign"]).expect_code(2).stderr_has("is not waiting for a decision");
    srv.wharf(&["runs", "approvals"]).expect_code(0).stdout_has("no approval is waiting for you");
}

/// A release as `chart-deploy` would leave it: revision `n` of `web` in `default`, one ConfigMap.
fn release_revision(runtime: &tokio::runtime::Runtime, fake: &wharf_kube_fake::KubeFake, value: &str) {
    use wharf_kube::release::{ChartRecord, ReleaseRequest, install_or_upgrade};
    let _in_runtime = runtime.enter();
    let policy = wharf_kube::Policy::new(&["127.0.0.1"]).unwrap();
    let conn =
        wharf_kube::Connection::from_kubeconfig(&fake.kubeconfig(), None, &wharf_kube::FileAccess::Refuse, &policy)
            .unwrap();
    let ctx = wharf_kube::deploy::Ctx { cluster: "prod", conn: &conn, namespace: "default" };
    let chart: ChartRecord = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "nginx", "version": format!("1.0.{value}"), "apiVersion": "v2", "appVersion": "1.27"}
    }))
    .unwrap();
    let request = ReleaseRequest {
        release: "web".into(),
        chart,
        config: serde_json::from_value(serde_json::json!({"value": value})).unwrap(),
        manifest: format!(
            "---\n# Source: nginx/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  v: \"{value}\"\n"
        ),
        hooks: vec![],
        notes: "Thanks for installing nginx.".into(),
        crds: String::new(),
        source: None,
    };
    struct Quiet;
    impl wharf_executor::LogSink for Quiet {
        fn line(&self, _: wharf_executor::LogLine) {}
    }
    let (_tx, mut stop) = tokio::sync::watch::channel(None);
    runtime.block_on(install_or_upgrade(&conn, &ctx, request, &Quiet, &mut stop)).unwrap();
}

#[test]
fn releases_list_show_rollback_and_uninstall_against_a_kube_fake() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(wharf_kube_fake::KubeFake::start(Default::default())).expect("start the kube-fake");
    let server = Server::start_with(&[("WHARF_OUTBOUND_ALLOW", "127.0.0.1")]);
    server.write("kubeconfig", &fake.kubeconfig());
    server.wharf(&["clusters", "add", "prod", "--kubeconfig", "kubeconfig"]).expect_code(0);
    server.wharf(&["releases", "list", "prod"]).expect_code(0).stdout_has("no releases in cluster prod");
    release_revision(&runtime, &fake, "1");
    release_revision(&runtime, &fake, "2");

    let list = server.wharf(&["releases", "list", "prod"]);
    list.expect_code(0).stdout_has("NAMESPACE").stdout_has("APP VERSION");
    let row = list.stdout.lines().find(|l| l.starts_with("default ")).expect("a row for web");
    assert!(
        row.contains(" web ") && row.contains(" 2 ") && row.contains("deployed") && row.contains("nginx-1.0.2"),
        "{row}"
    );
    server.wharf(&["releases", "list", "prod", "-n", "kube-system"]).expect_code(0).stdout_has("no releases");

    server
        .wharf(&["releases", "show", "prod", "default", "web"])
        .expect_code(0)
        .stdout_has("release web in namespace default (deployed)")
        .stdout_has("not deployed by Wharf")
        .stdout_has(r#"{"value":"2"}"#)
        .stdout_has("Install complete")
        .stdout_has("Upgrade complete")
        .stdout_has("Thanks for installing nginx.");
    server.wharf(&["releases", "show", "prod", "default", "nope"]).expect_code(2).stderr_has("release `nope`");

    server
        .wharf(&["releases", "rollback", "prod", "default", "web", "1"])
        .expect_code(0)
        .stdout_has("release web in namespace default rolled back to revision 1: revision 3, deployed")
        .stdout_has("ConfigMap/default/web@");
    server
        .wharf(&["releases", "rollback", "prod", "default", "web", "9"])
        .expect_code(2)
        .stderr_has("has no revision 9");
    // Helm's own release remembers no registry: the upgrade says what to give.
    server
        .wharf(&["releases", "upgrade", "prod", "default", "web", "--version", "1.0.3"])
        .expect_code(2)
        .stderr_has("give `registry` and `workspace`");
    server
        .wharf(&["releases", "uninstall", "prod", "default", "web"])
        .expect_code(0)
        .stdout_has("uninstalled release web from namespace default: 1 object(s) deleted");
    server.wharf(&["releases", "list", "prod"]).expect_code(0).stdout_has("no releases in cluster prod");
    drop(fake);
}

#[test]
fn pipelines_hook_prints_a_stage_hook_url_once() {
    let srv = Server::start();
    srv.apply(
        "hooked",
        "name: hooked\nstages:\n  - name: Release\n    wait: {hook: true}\n    tasks:\n      - {name: release, type: script, script: 'echo released'}\n",
    );
    srv.wharf(&["pipelines", "hook", "hooked", "Release"])
        .expect_code(0)
        .stdout_has("hook URL of stage Release of pipeline hooked (shown this once")
        .stdout_has("/hooks/stages/wharf_");
    srv.wharf(&["pipelines", "hook", "hooked", "Nope"]).expect_code(2).stderr_has("stage `Nope`");
}
