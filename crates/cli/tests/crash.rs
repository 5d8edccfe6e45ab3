//! The crash test of issue 3 ("Durability"): the real `wharf serve` is started on a
//! loopback port with a temporary data directory, runs with long host tasks are started
//! over the API, the server is killed with SIGKILL in the middle of them, started again
//! on the same data directory, and the stored state, the logs and the recovery rules
//! are checked:
//!
//! - every run record is still there, and every log line a client saw before the kill
//!   is still in the stored log (the stored log starts with what was seen, and its
//!   `line N` sequence has no gap);
//! - a run that was running is `failed` with the reason "interrupted by server
//!   restart", so is its running task; tasks and stages that had not started are
//!   `skipped`; the run's own log says why;
//! - a run of a pipeline with `retry_on_restart: true` is failed with a reason naming
//!   the new run ("started again as run #N"), and run #N exists and runs;
//! - a run that was queued behind another (`concurrency: queue`) starts after the
//!   restart and succeeds;
//! - numbering goes on: `BUILD_ID` and `SYS_INCREMENT` continue after the restart;
//! - the task processes the killed server had started do not outlive the restart.
//!
//! What happens to the task processes between the kill and the restart is printed
//! (run with `--nocapture` to read it): a task that writes output dies of SIGPIPE at its
//! next write, since the read ends of its pipes died with the server; a quiet one
//! (`sleep`) lives on, re-parented to PID 1, until something kills it: the restarted
//! server's sweep of its previous life's processes (`WHARF_SERVER_RUN`), checked last.
//!
//! The whole test takes about 2 s; tasks print a line every 50 ms for up to 30 s and the
//! quiet one sleeps 25 s, so a recovery that does not kill them, or a stop that does
//! not work, is visible. Whatever the test saw started is SIGKILLed when it ends.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN: &str = "crash-test-admin-token";
const INTERRUPTED: &str = "interrupted by server restart";

/// The long task: its shell's pid first (the process group's id), then 600 numbered
/// lines 50 ms apart (about 30 s).
const LONG_SCRIPT: &str = "echo pid $$; i=0; while [ $i -lt 600 ]; do echo line $i; i=$((i+1)); sleep 0.05; done";

fn long_pipeline(name: &str, extra: &str) -> String {
    format!(
        "name: {name}\n{extra}stages:\n  - name: Build\n    tasks:\n      - name: long\n        type: script\n        \
         script: '{LONG_SCRIPT}'\n      - name: after\n        type: script\n        script: echo after\n  \
         - name: Ship\n    tasks:\n      - name: ship\n        type: script\n        script: echo ship\n"
    )
}

/// `concurrency: queue`; with `LONG=1` the run is long, otherwise it prints its
/// numbers and ends.
fn queue_pipeline() -> String {
    format!(
        "name: crash-queue\nconcurrency: queue\nparameters:\n  - name: LONG\n    default: '0'\nstages:\n  \
         - name: Build\n    tasks:\n      - name: long\n        type: script\n        script: |\n          \
         echo \"build $BUILD_ID inc $SYS_INCREMENT\"\n          if [ \"$LONG\" = 1 ]; then {LONG_SCRIPT}; fi\n"
    )
}

/// A task that prints its pid and then writes nothing: SIGPIPE cannot end it.
const QUIET_PIPELINE: &str = "name: crash-quiet\nstages:\n  - name: Build\n    tasks:\n      - name: long\n        \
                              type: script\n        script: 'echo pid $$; sleep 25; echo woke'\n";

// ---------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------

mod served;
use served::{Server, free_port};

/// This test's `wharf serve`, life `life` on the data directory under `root`.
async fn start_server(root: &Path, port: u16, life: u32) -> Server {
    Server::start(root, port, life, TOKEN, &[], Duration::from_secs(10)).await
}

impl Server {
    async fn create_pipeline(&self, yaml: &str) -> i64 {
        self.post("/pipelines", yaml, 201).await["id"].as_i64().unwrap()
    }

    /// Starts a run; returns (run id, number).
    async fn start_run(&self, pipeline: i64, parameters: Value) -> (i64, i64) {
        let accepted = self
            .post(&format!("/pipelines/{pipeline}/runs"), json!({ "parameters": parameters }).to_string(), 201)
            .await;
        (accepted["id"].as_i64().unwrap(), accepted["number"].as_i64().unwrap())
    }
}

/// Kills, when the test ends however it ends, the task process groups it saw started.
#[derive(Default)]
struct Groups(Vec<i32>);

impl Drop for Groups {
    fn drop(&mut self) {
        for &group in &self.0 {
            if !group_members(group).is_empty() {
                let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
            }
        }
    }
}

fn status(v: &Value) -> &str {
    v["status"].as_str().unwrap_or_else(|| panic!("no status in {v}"))
}

/// A terminal status.
fn ended(v: &Value) -> bool {
    matches!(status(v), "succeeded" | "failed" | "stopped" | "timed_out" | "skipped")
}

fn reason(v: &Value) -> &str {
    v["reason"].as_str().unwrap_or("")
}

fn task(run: &Value, stage: usize, task: usize) -> &Value {
    &run["stages"][stage]["tasks"][task]
}

/// The text of each stored line: `<time> <out|err|sys> <text>` → `<text>`.
/// The texts of a stored log's lines, without the engine's own (`sys`: where it runs…).
fn texts(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.split(' ').nth(1) != Some("sys")).map(|l| l.splitn(3, ' ').nth(2).unwrap_or("")).collect()
}

/// The `N` of every `line N`, in order.
fn numbered(log: &str) -> Vec<u32> {
    texts(log).iter().filter_map(|t| t.strip_prefix("line ")?.parse().ok()).collect()
}

fn pid_in(log: &str) -> Option<i32> {
    texts(log).iter().find_map(|t| t.strip_prefix("pid ")?.trim().parse().ok())
}

/// A process that exists and is not a zombie (PID 1 here does not reap).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            !matches!(stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()), Some('Z' | 'X'))
        }
    }
}

/// The live (non-zombie) processes of a process group, with their parent and command.
fn group_members(group: i32) -> Vec<(i32, i32, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return out };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((head, rest)) = stat.rsplit_once(')') else { continue };
        // After the command: state, ppid, pgrp, …
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() < 3 || matches!(fields[0], "Z" | "X") {
            continue;
        }
        if fields[2].parse::<i32>().ok() == Some(group) {
            let comm = head.split_once('(').map_or("", |(_, c)| c).to_owned();
            out.push((pid, fields[1].parse().unwrap_or(0), comm));
        }
    }
    out
}

/// Waits up to `within` for every one of `groups` to be empty; returns the survivors.
async fn survivors_after(groups: &[(&str, i32)], within: Duration) -> Vec<String> {
    let until = Instant::now() + within;
    loop {
        let left: Vec<String> = groups
            .iter()
            .filter_map(|(what, g)| {
                let members = group_members(*g);
                (!members.is_empty()).then(|| format!("{what} (group {g}): {members:?}"))
            })
            .collect();
        if left.is_empty() || Instant::now() >= until {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_runs_loses_nothing_and_recovers_by_the_rules() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let port = free_port();
    let mut groups = Groups::default();

    // ---- first life: pipelines, runs, then SIGKILL in the middle of them ----
    let mut server = start_server(&root, port, 1).await;
    let plain = server.create_pipeline(&long_pipeline("crash-plain", "")).await;
    let retry = server.create_pipeline(&long_pipeline("crash-retry", "retry_on_restart: true\n")).await;
    let queue = server.create_pipeline(&queue_pipeline()).await;
    let quiet = server.create_pipeline(QUIET_PIPELINE).await;

    let (plain_run, n) = server.start_run(plain, json!({})).await;
    assert_eq!(n, 1);
    let (retry_run, n) = server.start_run(retry, json!({})).await;
    assert_eq!(n, 1);
    let (queue_long, n) = server.start_run(queue, json!({ "LONG": "1" })).await;
    assert_eq!(n, 1);
    let (queue_waiting, n) = server.start_run(queue, json!({})).await;
    assert_eq!(n, 2);
    let (quiet_run, n) = server.start_run(quiet, json!({})).await;
    assert_eq!(n, 1);

    // Wait until the long tasks are running (in the database) and have printed at
    // least 20 lines, as a client sees them through the tail.
    let long_runs = [("crash-plain #1", plain_run), ("crash-retry #1", retry_run), ("crash-queue #1", queue_long)];
    let mut seen: Vec<(i64, String)> = Vec::new();
    let mut pids: Vec<(String, i32)> = Vec::new();
    for (what, id) in long_runs {
        server
            .wait_run(id, Duration::from_secs(10), "the long task running", |r| status(task(r, 0, 0)) == "running")
            .await;
        let until = Instant::now() + Duration::from_secs(10);
        let log = loop {
            let log = server.task_log(id, "long").await;
            if numbered(&log).len() >= 20 {
                break log;
            }
            assert!(Instant::now() < until, "{what}: fewer than 20 lines within 10 s:\n{log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let pid = pid_in(&log).unwrap_or_else(|| panic!("{what}: no `pid` line in\n{log}"));
        groups.0.push(pid);
        pids.push((what.to_owned(), pid));
        seen.push((id, log));
    }
    server
        .wait_run(quiet_run, Duration::from_secs(10), "the quiet task running", |r| status(task(r, 0, 0)) == "running")
        .await;
    let quiet_pid = {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = pid_in(&server.task_log(quiet_run, "long").await) {
                break pid;
            }
            assert!(Instant::now() < until, "crash-quiet #1 printed no pid");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    groups.0.push(quiet_pid);
    pids.push(("crash-quiet #1".to_owned(), quiet_pid));
    let waiting = server.run(queue_waiting).await;
    assert_eq!(status(&waiting), "queued", "crash-queue #2 waits behind #1: {waiting:#}");
    for (what, pid) in &pids {
        assert!(alive(*pid), "{what}: its shell {pid} should be running before the kill");
    }

    let server_pid = server.pid();
    server.kill9();
    let killed_at = Instant::now();

    // What the kill leaves running: the tasks' process groups are not the server's,
    // so SIGKILL of the server does not reach them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!("server {server_pid} killed with SIGKILL; 500 ms later:");
    for (what, pid) in &pids {
        let members = group_members(*pid);
        eprintln!(
            "  {what}: shell {pid} {}; its process group: {}",
            if alive(*pid) { "ALIVE" } else { "gone" },
            if members.is_empty() { "empty".to_owned() } else { format!("{members:?}") }
        );
    }
    // Observed: the printing shells die of SIGPIPE at their next `echo` (the read ends
    // of their pipes died with the server) and their `sleep 0.05` ends by itself; the
    // quiet task writes nothing, so it lives on, re-parented to PID 1. Only the
    // restart below may (and must) end it.

    // The stored logs hold everything seen before the kill (read straight from disk too).
    for (id, log) in &seen {
        let on_disk = std::fs::read_to_string(root.join("data/logs").join(id.to_string()).join("0-0.log")).unwrap();
        assert!(on_disk.starts_with(log.as_str()), "run {id}: the log file lost lines seen before the kill");
    }

    // ---- second life ----
    let server = start_server(&root, port, 2).await;
    eprintln!("restarted {:?} after the kill", killed_at.elapsed());

    // Every record is still there.
    for id in [plain_run, retry_run, queue_long, queue_waiting, quiet_run] {
        server.run(id).await;
    }
    for (pipeline, total) in [(plain, 1), (queue, 2), (quiet, 1)] {
        let listed = server.get(&format!("/pipelines/{pipeline}/runs")).await;
        assert!(listed["total"].as_i64().unwrap() >= total, "pipeline {pipeline} lost runs: {listed:#}");
    }

    // Every line seen before the kill is still in the log, in order, with no gap.
    for (id, before) in &seen {
        let after = server.task_log(*id, "long").await;
        assert!(
            after.starts_with(before.as_str()),
            "run {id}: the stored log does not start with what was seen before the kill\n--- seen:\n{before}\n--- stored:\n{after}"
        );
        let numbers = numbered(&after);
        assert!(
            numbers.iter().copied().eq(0..numbers.len() as u32),
            "run {id}: lines missing or repeated: {numbers:?}"
        );
    }

    // The interrupted runs: failed, with the reason; the running task failed with it;
    // what had not started is skipped.
    for (what, id) in [("crash-plain #1", plain_run), ("crash-queue #1", queue_long), ("crash-quiet #1", quiet_run)] {
        let run = server.run(id).await;
        assert_eq!(status(&run), "failed", "{what}: {run:#}");
        assert_eq!(reason(&run), INTERRUPTED, "{what}");
        assert_eq!(status(task(&run, 0, 0)), "failed", "{what}: the running task");
        assert_eq!(reason(task(&run, 0, 0)), INTERRUPTED, "{what}: the running task");
        assert!(run["finished_at"].is_string(), "{what}: no finish time: {run:#}");
        let run_log = server.task_log(id, "@run").await;
        assert!(run_log.contains(INTERRUPTED), "{what}: the run log does not say why:\n{run_log}");
    }
    let run = server.run(plain_run).await;
    assert_eq!(status(&run["stages"][0]), "failed");
    assert_eq!(status(task(&run, 0, 1)), "skipped", "the task after the interrupted one: {run:#}");
    assert_eq!(status(&run["stages"][1]), "skipped", "the stage after: {run:#}");
    assert_eq!(status(task(&run, 1, 0)), "skipped");

    // retry_on_restart: failed, naming the new run, which exists and runs.
    let run = server.run(retry_run).await;
    assert_eq!(status(&run), "failed", "crash-retry #1: {run:#}");
    let why = reason(&run);
    assert!(why.starts_with(INTERRUPTED), "crash-retry #1: {why}");
    let again: i64 = why
        .split_once("started again as run #")
        .and_then(|(_, n)| n.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .unwrap_or_else(|| panic!("crash-retry #1's reason names no new run: {why}"));
    assert_eq!(again, 2, "the new run is the pipeline's next number");
    assert_eq!(status(task(&run, 0, 0)), "failed");
    assert_eq!(reason(task(&run, 0, 0)), INTERRUPTED);
    assert_eq!(status(task(&run, 0, 1)), "skipped");
    let run_log = server.task_log(retry_run, "@run").await;
    assert!(run_log.contains(&format!("started again as run #{again}")), "crash-retry #1's run log:\n{run_log}");
    let listed = server.get(&format!("/pipelines/{retry}/runs")).await;
    let new_run = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["number"] == again)
        .unwrap_or_else(|| panic!("run #{again} of crash-retry is not listed: {listed:#}"))["id"]
        .as_i64()
        .unwrap();
    let rerun = server
        .wait_run(new_run, Duration::from_secs(10), "the long task running", |r| status(task(r, 0, 0)) == "running")
        .await;
    assert_eq!(rerun["number"], again);
    assert_eq!(rerun["cause"], json!({ "kind": "rerun", "of": 1 }));
    let until = Instant::now() + Duration::from_secs(10);
    let rerun_pid = loop {
        let log = server.task_log(new_run, "long").await;
        if let (Some(pid), true) = (pid_in(&log), !numbered(&log).is_empty()) {
            break pid;
        }
        assert!(Instant::now() < until, "crash-retry #{again} printed nothing:\n{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    groups.0.push(rerun_pid);

    // The queued run starts and succeeds; numbering and SYS_INCREMENT go on.
    let run = server.wait_run(queue_waiting, Duration::from_secs(10), "success", ended).await;
    assert_eq!(status(&run), "succeeded", "crash-queue #2 after the restart: {run:#}");
    assert_eq!(texts(&server.task_log(queue_waiting, "long").await), ["build 2 inc 2"]);
    let (next, number) = server.start_run(queue, json!({})).await;
    assert_eq!(number, 3, "crash-queue numbering goes on");
    let run = server.wait_run(next, Duration::from_secs(10), "an end", ended).await;
    assert_eq!(status(&run), "succeeded", "{run:#}");
    assert_eq!(run["increment"], 3);
    assert_eq!(texts(&server.task_log(next, "long").await), ["build 3 inc 3"]);
    let (next_plain, number) = server.start_run(plain, json!({})).await;
    assert_eq!(number, 2, "crash-plain numbering goes on");
    let (next_quiet, number) = server.start_run(quiet, json!({})).await;
    assert_eq!(number, 2, "crash-quiet numbering goes on");

    // Stop what is still running, so nothing outlives the test.
    for id in [new_run, next_plain, next_quiet] {
        let (code, text) = server.send(reqwest::Method::POST, &format!("/runs/{id}/stop"), None).await;
        assert!(code == 202 || code == 409, "stop run {id}: {code} {text}");
        let run = server.wait_run(id, Duration::from_secs(15), "an end", ended).await;
        assert!(matches!(status(&run), "stopped" | "succeeded"), "run {id}: {run:#}");
    }
    let stopped = server.run(new_run).await;
    assert_eq!(status(&stopped), "stopped", "crash-retry #{again} was stopped: {stopped:#}");
    assert!(!alive(rerun_pid), "the stopped re-run's shell {rerun_pid} is gone");

    // Nothing the first life started is still running once the second one has started.
    let groups_of_first_life: Vec<(&str, i32)> = pids.iter().map(|(w, p)| (w.as_str(), *p)).collect();
    let left = survivors_after(&groups_of_first_life, Duration::from_secs(2)).await;
    assert!(
        left.is_empty(),
        "task processes of the killed server are still running after the restart: {left:?}\nserver log:\n{}",
        server.log_text()
    );

    drop(server);
    eprintln!("crash test took {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(40), "the crash test should stay under 40 s");
}

/// A run that was only waiting for a slot when the server was killed (its task
/// `pending`, nothing executed) is queued again after the restart under its own
/// number, and runs; the run that held the slot keeps the interrupted-run rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_for_a_slot_is_queued_again_after_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let port = free_port();
    let mut groups = Groups::default();
    let one_slot = ["--max-parallel-tasks", "1"];
    let mut server = Server::start(&root, port, 1, TOKEN, &one_slot, Duration::from_secs(10)).await;
    let holder = server.create_pipeline(QUIET_PIPELINE).await;
    let waiter = server
        .create_pipeline(
            "name: crash-waiter\nstages:\n  - name: Build\n    tasks:\n      - name: main\n        type: script\n        \
             script: echo \"ran as $BUILD_ID\"\n",
        )
        .await;
    let (holding, _) = server.start_run(holder, json!({})).await;
    server.wait_run(holding, Duration::from_secs(10), "the slot taken", |r| status(task(r, 0, 0)) == "running").await;
    let until = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Some(pid) = pid_in(&server.task_log(holding, "long").await) {
            break pid;
        }
        assert!(Instant::now() < until, "the slot holder printed no pid");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    groups.0.push(pid);
    let (waiting, number) = server.start_run(waiter, json!({})).await;
    assert_eq!(number, 1);
    server
        .wait_run(waiting, Duration::from_secs(10), "waiting for the slot", |r| status(task(r, 0, 0)) == "pending")
        .await;
    server.kill9();

    let server = Server::start(&root, port, 2, TOKEN, &one_slot, Duration::from_secs(10)).await;
    let held = server.wait_run(holding, Duration::from_secs(10), "an end", ended).await;
    assert_eq!((status(&held), reason(&held)), ("failed", INTERRUPTED), "{held:#}");
    let run = server.wait_run(waiting, Duration::from_secs(10), "an end", ended).await;
    assert_eq!(status(&run), "succeeded", "the waiting run ran after the restart: {run:#}");
    assert_eq!(run["number"], 1, "under its own number");
    assert_eq!(texts(&server.task_log(waiting, "main").await), ["ran as 1"]);
    let run_log = server.task_log(waiting, "@run").await;
    assert!(run_log.contains("queued again"), "its run log says why:\n{run_log}");
    let listed = server.get(&format!("/pipelines/{waiter}/runs")).await;
    assert_eq!(listed["total"], 1, "no second run: {listed:#}");
}
