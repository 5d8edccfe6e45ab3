//! Re-attach after a crash (issue 4, DESIGN.md §3 Durability) with the real
//! `wharf serve --executor docker` and the real Docker Engine: runs with `script`
//! tasks in the local busybox image are started over the API, the server is killed
//! with SIGKILL while their containers run, and started again on the same data
//! directory. Checked:
//!
//! - a run whose container still runs is continued: `succeeded`, its task log holds
//!   every line exactly once (the lines stored before the kill, then the rest resumed
//!   from the daemon), its output reaches the next stage;
//! - a run whose container ended while no server watched gets that container's exit
//!   code, remaining lines and outputs;
//! - a container labelled for a run that does not exist is removed at the restart;
//! - no container of any of these runs is left once they end, and a run stopped over
//!   the API leaves none either.

use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const TOKEN: &str = "docker-crash-test-admin-token";

fn pipeline(name: &str, image: &str, lines: u32) -> String {
    format!(
        "name: {name}\ndefault_image: {image}\nstages:\n  - name: Build\n    mode: parallel\n    tasks:\n      \
         - name: long\n        type: script\n        outputs: [RESULT]\n        script: |\n          \
         i=0; while [ $i -lt {lines} ]; do echo line $i; i=$((i+1)); sleep 0.05; done\n          \
         echo RESULT=ok-{name} >> \"$WHARF_OUTPUT\"\n      \
         - name: short\n        type: script\n        script: echo short\n  \
         - name: Ship\n    tasks:\n      - name: ship\n        type: script\n        script: echo \"shipping ${{RESULT}}\"\n"
    )
}

mod served;
use served::{Server, free_port};

/// This test's `wharf serve`, life `life` on the data directory under `root`.
async fn start_server(root: &Path, port: u16, life: u32) -> Server {
    Server::start(
        root,
        port,
        life,
        TOKEN,
        &["--executor", "docker", "--docker-network", "none"],
        Duration::from_secs(15),
    )
    .await
}

impl Server {
    /// Saves the pipeline and starts a run of it; returns the run's id.
    async fn start_run(&self, yaml: &str) -> i64 {
        let pipeline = self.post("/pipelines", yaml, 201).await["id"].as_i64().unwrap();
        self.post(&format!("/pipelines/{pipeline}/runs"), json!({}).to_string(), 201).await["id"].as_i64().unwrap()
    }
}

fn status(v: &Value) -> &str {
    v["status"].as_str().unwrap_or_else(|| panic!("no status in {v}"))
}

fn ended(v: &Value) -> bool {
    matches!(status(v), "succeeded" | "failed" | "stopped" | "timed_out" | "skipped")
}

fn task<'v>(run: &'v Value, name: &str) -> &'v Value {
    run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["tasks"].as_array().unwrap())
        .find(|t| t["name"] == name)
        .unwrap_or_else(|| panic!("no task {name} in {run:#}"))
}

fn texts(log: &str) -> Vec<&str> {
    log.lines().map(|l| l.splitn(3, ' ').nth(2).unwrap_or("")).collect()
}

fn numbered(log: &str) -> Vec<u32> {
    texts(log).iter().filter_map(|t| t.strip_prefix("line ")?.parse().ok()).collect()
}

/// `docker …` (the CLI, for looking from outside), its stdout.
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker runs");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Ids of the containers (any state) labelled `WHARF_SERVER_RUN=<value>`.
fn containers_of(value: &str) -> Vec<String> {
    docker(&["ps", "-aq", "--filter", &format!("label=WHARF_SERVER_RUN={value}")]).lines().map(str::to_owned).collect()
}

/// Removes, however the test ends, every container labelled for its server.
struct Cleanup(Option<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Some(prefix) = &self.0 else { return };
        let Ok(out) = Command::new("docker").args(["ps", "-aq", "--filter", "label=WHARF_SERVER_RUN"]).output() else {
            return;
        };
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let label = Command::new("docker")
                .args(["inspect", "-f", "{{index .Config.Labels \"WHARF_SERVER_RUN\"}}", id])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default();
            if label.starts_with(prefix.as_str()) {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_task_then_the_restarted_server_finishes_the_runs() {
    let Some(env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let image = env.busybox_image.clone();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let port = free_port();
    let mut cleanup = Cleanup(None);

    // ---- first life ----
    let mut server = start_server(&root, port, 1).await;
    // 140 lines 50 ms apart (7 s): still running after the restart.
    let long_run = server.start_run(&pipeline("dc-long", &image, 140)).await;
    // 60 lines (3 s): ends while no server watches.
    let quick_run = server.start_run(&pipeline("dc-quick", &image, 60)).await;

    let mut seen = Vec::new();
    for id in [quick_run, long_run] {
        let until = Instant::now() + Duration::from_secs(20);
        let log = loop {
            let log = server.task_log(id, "long").await;
            if numbered(&log).len() >= 8 {
                break log;
            }
            assert!(Instant::now() < until, "run {id}: fewer than 8 lines within 20 s:\n{log}\n{}", server.log_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        seen.push(log);
    }
    let run = server.run(long_run).await;
    assert_eq!(status(task(&run, "long")), "running");
    // The label that ties containers to this data directory, read off a real one.
    let label = {
        let ids = docker(&["ps", "-q", "--filter", "label=wharf.task=long", "--filter", "label=wharf.run=dc-long#1"]);
        let id = ids.lines().next().expect("the long task's container runs").to_owned();
        docker(&["inspect", "-f", "{{index .Config.Labels \"WHARF_SERVER_RUN\"}}", &id]).trim().to_owned()
    };
    let prefix = label.rsplit_once('/').map(|(p, _)| format!("{p}/")).expect("<hash>/<run id>");
    cleanup.0 = Some(prefix.clone());
    assert_eq!(label, format!("{prefix}{long_run}"));
    // A container of a run that does not exist (as a deleted run would leave).
    let stray = format!("{prefix}999999");
    docker(&["create", "--label", &format!("WHARF_SERVER_RUN={stray}"), &image, "true"]);
    assert_eq!(containers_of(&stray).len(), 1);

    server.kill9();
    // Let the quick task end while nobody watches.
    let quick_container = containers_of(&format!("{prefix}{quick_run}"));
    assert_eq!(quick_container.len(), 1, "the quick task's container (the short task's is removed)");
    let until = Instant::now() + Duration::from_secs(20);
    while docker(&["inspect", "-f", "{{.State.Running}}", &quick_container[0]]).trim() != "false" {
        assert!(Instant::now() < until, "the quick container did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let long_container = containers_of(&label);
    assert_eq!(docker(&["inspect", "-f", "{{.State.Running}}", &long_container[0]]).trim(), "true");

    // ---- second life ----
    let server = start_server(&root, port, 2).await;
    for (id, before, lines) in [(quick_run, &seen[0], 60), (long_run, &seen[1], 140)] {
        let run = server.wait_run(id, Duration::from_secs(30), "an end", ended).await;
        assert_eq!(status(&run), "succeeded", "run {id}: {run:#}\nserver log:\n{}", server.log_text());
        let result = task(&run, "long")["outputs"]["RESULT"].as_str().unwrap_or("").to_owned();
        assert!(result.starts_with("ok-dc-"), "run {id}: the output written after the restart: {run:#}");
        let log = server.task_log(id, "long").await;
        assert!(log.starts_with(before.as_str()), "run {id}: the stored log lost lines seen before the kill");
        assert_eq!(numbered(&log), (0..lines).collect::<Vec<_>>(), "run {id}: every line exactly once:\n{log}");
        let ship = server.task_log(id, "ship").await;
        assert!(texts(&ship).iter().any(|t| t.starts_with("shipping ok-dc-")), "run {id}: {ship}");
        assert!(containers_of(&format!("{prefix}{id}")).is_empty(), "run {id} left a container");
    }
    assert!(containers_of(&stray).is_empty(), "the container of a run that does not exist is removed");

    // A run stopped over the API leaves no container either.
    let stopped = server.start_run(&pipeline("dc-stop", &image, 2000)).await;
    server
        .wait_run(stopped, Duration::from_secs(20), "the long task running", |r| status(task(r, "long")) == "running")
        .await;
    let until = Instant::now() + Duration::from_secs(20);
    while containers_of(&format!("{prefix}{stopped}")).is_empty() {
        assert!(Instant::now() < until, "no container for the run to stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, text) = server.send(reqwest::Method::POST, &format!("/runs/{stopped}/stop"), None).await;
    assert_eq!(code, 202, "{text}");
    let run = server.wait_run(stopped, Duration::from_secs(30), "an end", ended).await;
    assert_eq!(status(&run), "stopped", "{run:#}");
    assert!(containers_of(&format!("{prefix}{stopped}")).is_empty(), "the stopped run left a container");
}
