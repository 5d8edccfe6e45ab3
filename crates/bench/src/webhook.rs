//! `wharf-bench webhook`: a signed GitHub push delivered to a real `wharf serve`
//! process on loopback, until the first task of the run it starts is `running` (host
//! executor), and deliveries per second sustained with none lost.
//!
//! ```text
//! cargo build --release -p wharf -p wharf-bench
//! target/release/wharf-bench webhook [--latency 200] [--deliveries 2000] [--clients 32]
//!     [--slots 8] [--wharf target/release/wharf] [--dir PATH]
//! ```
//!
//! Setup: a bare git repository on disk (`file://`) with a branch per delivery (`b0`,
//! `b1`, …), each with a commit of its own (so every delivery is a new commit and
//! starts a run), a `github` binding with a webhook secret, and a
//! pipeline with `events: [push]` on that repository, one `script: 'true'` task and
//! `concurrency: queue` (the default): what a burst of pushes gets in practice, runs
//! that wait their turn while every delivery is taken at once. Each delivery is the documented push payload (the scm
//! fixture) with its own `ref` and `X-GitHub-Delivery`, signed with
//! `X-Hub-Signature-256` as GitHub signs it.
//!
//! 1. **Latency** (`--latency` deliveries, one at a time, after 10 warm-up ones): from
//!    the client's clock just before sending to the task's `running` transition in the
//!    stored record, split into send → run `queued` (verify, store the delivery,
//!    match, enqueue), `queued` → run `running`, run `running` → checkout done (a
//!    `git clone` of the branch) → task `running`. Floors measured in the same loop:
//!    a `GET /healthz` round trip, the same run started through the API
//!    (`POST /pipelines/{id}/runs`, the trigger-via-API path, also with its checkout),
//!    and a bare `git clone --depth 1 --branch <b>` of the repository.
//! 2. **Sustained** (`--deliveries` deliveries from `--clients` concurrent clients):
//!    deliveries per second from the first send to the last answer (each answer comes
//!    after the delivery and its queued run are stored); then every delivery must be
//!    stored `started` with exactly one run, every run must end `succeeded` (they run
//!    one after another), and the run count must equal the delivery count.

use crate::server::{Wharf, at, is_terminal, ms, quantile, since};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const SECRET: &str = "wharf-bench-webhook-secret";
const WARMUP: usize = 10;
const PUSH: &str = include_str!("../../scm/tests/fixtures/webhooks/github/push.json");

/// A webhook delivery to the first task, and deliveries per second (issue 5).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Deliveries sent one at a time for the latency.
    #[arg(long, default_value_t = 200, value_parser = crate::positive)]
    latency: usize,
    /// Deliveries of the sustained burst.
    #[arg(long, default_value_t = 2_000, value_parser = crate::positive)]
    deliveries: usize,
    /// Concurrent clients of the burst.
    #[arg(long, default_value_t = 32, value_parser = crate::positive)]
    clients: usize,
    /// `--max-parallel-tasks` of the server.
    #[arg(long, default_value_t = 8, value_parser = crate::positive)]
    slots: usize,
    /// The `wharf` binary to measure.
    #[arg(long, default_value = "target/release/wharf")]
    wharf: PathBuf,
    /// Keep the data directory and the repository here instead of a temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A bare repository with one commit on `main` and branches `b0..b{branches}`, each
/// one commit of its own on top (as pushes are: a new commit each). Returns its
/// `file://` address and the commit of each branch.
fn repository(dir: &Path, branches: usize) -> (String, Vec<String>) {
    let work = dir.join("work");
    let bare = dir.join("repo.git");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "--quiet", "--initial-branch", "main"]);
    std::fs::write(work.join("README"), "bench\n").unwrap();
    git(&work, &["add", "README"]);
    git(&work, &["-c", "user.name=bench", "-c", "user.email=bench@example.com", "commit", "--quiet", "-m", "one"]);
    let base = git(&work, &["rev-parse", "HEAD"]);
    git(dir, &["clone", "--quiet", "--bare", work.to_str().unwrap(), bare.to_str().unwrap()]);
    // One `git fast-import` makes every branch's commit (same tree, its own message).
    let mut stream = String::new();
    for i in 0..branches {
        stream.push_str(&format!(
            "commit refs/heads/b{i}\ncommitter bench <bench@example.com> 1700000000 +0000\ndata {}\nb{i}\n\nfrom {base}\n\n",
            format!("b{i}\n").len()
        ));
    }
    let mut child = Command::new("git")
        .arg("-C")
        .arg(&bare)
        .args(["fast-import", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(stream.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    let listed = git(&bare, &["for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads/"]);
    let mut commits = vec![String::new(); branches];
    for line in listed.lines() {
        let (name, commit) = line.split_once(' ').unwrap();
        if let Some(i) = name.strip_prefix('b').and_then(|n| n.parse::<usize>().ok()) {
            commits[i] = commit.to_owned();
        }
    }
    assert!(commits.iter().all(|c| c.len() == 40), "every branch has its commit");
    (format!("file://{}", bare.display()), commits)
}

/// The documented push payload, pushing `commit` to branch `branch` of `repo`.
fn push_body(template: &Value, repo: &str, branch: &str, commit: &str) -> Vec<u8> {
    let mut body = template.clone();
    body["ref"] = json!(format!("refs/heads/{branch}"));
    body["after"] = json!(commit);
    body["head_commit"]["id"] = json!(commit);
    body["repository"]["clone_url"] = json!(repo);
    serde_json::to_vec(&body).unwrap()
}

fn signature(body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!("sha256={}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Sends one delivery; returns the run it started.
async fn deliver(client: &reqwest::Client, hook: &str, id: &str, body: Vec<u8>) -> i64 {
    let response = client
        .post(hook)
        .header("content-type", "application/json")
        .header("user-agent", "GitHub-Hookshot/bench")
        .header("x-github-event", "push")
        .header("x-github-delivery", id)
        .header("x-hub-signature-256", signature(&body))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "delivery {id}: {answer}");
    let runs = answer["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "delivery {id}: {answer}");
    runs[0]["id"].as_i64().unwrap()
}

/// Polls until the run ends; it must succeed.
async fn finished(wharf: &Wharf, run: i64) -> Value {
    tokio::time::sleep(Duration::from_millis(10)).await;
    loop {
        let record = wharf.get(&format!("/runs/{run}")).await;
        if is_terminal(record["status"].as_str().unwrap()) {
            assert_eq!(record["status"], "succeeded", "{record:#}");
            return record;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[derive(Default)]
struct Latency {
    total: Vec<Duration>,
    to_queued: Vec<Duration>,
    queued_to_run: Vec<Duration>,
    run_to_checkout: Vec<Duration>,
    checkout_to_task: Vec<Duration>,
    api: Vec<Duration>,
    healthz: Vec<Duration>,
    clone: Vec<Duration>,
}

/// send → task `running`, and the parts, from a record.
fn task_running(record: &Value, sent: jiff::Timestamp) -> (Duration, [Duration; 4]) {
    let task = &record["stages"][0]["tasks"][0];
    let queued = at(record, "queued").unwrap();
    let running = at(record, "running").unwrap();
    let checkout = &record["checkout"];
    let cloned = at(checkout, "succeeded").unwrap();
    let task = at(task, "running").unwrap();
    (since(sent, task), [since(sent, queued), since(queued, running), since(running, cloned), since(cloned, task)])
}

fn bare_clone(repo: &str, branch: &str, into: &Path) -> Duration {
    let _ = std::fs::remove_dir_all(into);
    let t = Instant::now();
    let status = Command::new("git")
        .args(["clone", "--quiet", "--depth", "1", "--branch", branch, repo])
        .arg(into)
        .status()
        .expect("git clone");
    assert!(status.success());
    t.elapsed()
}

async fn latency(wharf: &Wharf, pipeline: i64, repo: &str, commits: &[String], n: usize, scratch: &Path) -> Latency {
    let template: Value = serde_json::from_str(PUSH).unwrap();
    let hook = format!("{}/hooks/github/gh", wharf.base);
    let mut l = Latency::default();
    for (i, commit) in commits.iter().enumerate().take(WARMUP + n) {
        let branch = format!("b{i}");
        let body = push_body(&template, repo, &branch, commit);
        let sent = jiff::Timestamp::now();
        let run = deliver(&wharf.client, &hook, &format!("latency-{i}"), body).await;
        let record = finished(wharf, run).await;
        // The API path: the same pipeline, the same checkout (of `main`).
        let api_sent = jiff::Timestamp::now();
        let accepted = wharf.post(&format!("/pipelines/{pipeline}/runs"), String::new()).await;
        let api_record = finished(wharf, accepted["id"].as_i64().unwrap()).await;
        let healthz = wharf.healthz().await;
        let clone = bare_clone(repo, &branch, &scratch.join("clone"));
        if i < WARMUP {
            continue;
        }
        let (total, [to_queued, queued_to_run, run_to_checkout, checkout_to_task]) = task_running(&record, sent);
        l.total.push(total);
        l.to_queued.push(to_queued);
        l.queued_to_run.push(queued_to_run);
        l.run_to_checkout.push(run_to_checkout);
        l.checkout_to_task.push(checkout_to_task);
        l.api.push(task_running(&api_record, api_sent).0);
        l.healthz.push(healthz);
        l.clone.push(clone);
    }
    l
}

struct Sustained {
    answered: Duration,
    all_done: Duration,
    stored: i64,
    started: usize,
    runs: i64,
}

async fn sustained(
    wharf: &Wharf,
    pipeline: i64,
    repo: &str,
    commits: &[String],
    first_branch: usize,
    n: usize,
    clients: usize,
) -> Sustained {
    let template: Value = serde_json::from_str(PUSH).unwrap();
    // Bodies and signatures are made before the clock starts.
    let bodies: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
        (0..n)
            .map(|k| {
                let branch = format!("b{}", first_branch + k);
                (format!("sustained-{k}"), push_body(&template, repo, &branch, &commits[first_branch + k]))
            })
            .collect(),
    );
    let before = wharf.get("/deliveries?limit=1").await["total"].as_i64().unwrap();
    let runs_before = wharf.get(&format!("/pipelines/{pipeline}/runs?limit=1")).await["total"].as_i64().unwrap();
    let hook = format!("{}/hooks/github/gh", wharf.base);
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (client, hook, next, bodies) = (wharf.client.clone(), hook.clone(), next.clone(), bodies.clone());
        set.spawn(async move {
            let mut runs = Vec::new();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some((id, body)) = bodies.get(k) else { return runs };
                runs.push(deliver(&client, &hook, id, body.clone()).await);
            }
        });
    }
    let mut runs = Vec::new();
    while let Some(started) = set.join_next().await {
        runs.extend(started.unwrap());
    }
    let answered = t.elapsed();
    for run in &runs {
        loop {
            let record = wharf.get(&format!("/runs/{run}")).await;
            if is_terminal(record["status"].as_str().unwrap()) {
                assert_eq!(record["status"], "succeeded", "{record:#}");
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(900), "the runs did not end within 15 minutes");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let all_done = t.elapsed();
    // Every delivery stored, `started`, with its one run.
    let mut started = 0;
    let total = wharf.get("/deliveries?limit=1").await["total"].as_i64().unwrap();
    for page in 1..=n.div_ceil(200) {
        let listed = wharf.get(&format!("/deliveries?limit=200&page={page}")).await;
        for d in listed["items"].as_array().unwrap() {
            if d["delivery_id"].as_str().unwrap().starts_with("sustained-")
                && d["verdict"] == "started"
                && d["runs"].as_array().unwrap().len() == 1
            {
                started += 1;
            }
        }
    }
    let runs_after = wharf.get(&format!("/pipelines/{pipeline}/runs?limit=1")).await["total"].as_i64().unwrap();
    let mut unique = runs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), n, "every delivery started its own run");
    Sustained { answered, all_done, stored: total - before, started, runs: runs_after - runs_before }
}

fn row(name: &str, xs: &mut [Duration], floor: Duration) {
    let (p50, p99) = (quantile(xs, 0.5), quantile(xs, 0.99));
    println!(
        "| {name} | {} | {} | {} | {:.2}× |",
        ms(p50),
        ms(p99),
        ms(*xs.last().unwrap()),
        p50.as_secs_f64() / floor.as_secs_f64().max(1e-9)
    );
}

/// A server with a `github` binding and a pipeline on a local repository with
/// `branches` branches, each with its own commit: (server, pipeline id, repository, commits).
async fn hooked_server(binary: &Path, root: &Path, branches: usize, slots: usize) -> (Wharf, i64, String, Vec<String>) {
    let (repo, commits) = repository(&root.join("git"), branches);
    let slots = slots.to_string();
    let wharf = Wharf::start(binary, &root.join("webhook"), &["--max-parallel-tasks", &slots]).await;
    let binding = json!({ "name": "gh", "provider": "github", "webhook_secret": SECRET });
    wharf.post("/bindings", binding.to_string()).await;
    let yaml = format!(
        "name: hooked\nconcurrency: queue\nsource:\n  repo: '{repo}'\n  branch: main\ntriggers:\n  - events: [push]\n\
         stages:\n  - name: Build\n    tasks:\n      - {{name: t, type: script, script: 'true'}}\n"
    );
    let pipeline = wharf.create_pipeline(&yaml).await;
    (wharf, pipeline, repo, commits)
}

/// `n` deliveries one at a time (after the warm-up): delivery → first task `running`,
/// and a bare `git clone --depth 1` of the same branch after each (`wharf-bench figures`).
pub(crate) async fn delivery_and_clone(binary: &Path, root: &Path, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let (wharf, pipeline, repo, commits) = hooked_server(binary, root, WARMUP + n, 8).await;
    let l = latency(&wharf, pipeline, &repo, &commits, n, root).await;
    wharf.stop();
    (l.total, l.clone)
}

pub fn main(args: Args) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let temp = tempfile::tempdir().unwrap();
        let root = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
        std::fs::create_dir_all(&root).unwrap();
        let branches = WARMUP + args.latency + args.deliveries;
        let (wharf, pipeline, repo, commits) = hooked_server(&args.wharf, &root, branches, args.slots).await;

        let mut l = latency(&wharf, pipeline, &repo, &commits, args.latency, &root).await;
        let floor = quantile(&mut l.healthz.clone(), 0.5);
        println!("\n## Webhook delivery → first task running ({} deliveries, one at a time)\n", args.latency);
        println!("| measure | p50 ms | p99 ms | max ms | p50 / healthz |");
        println!("| --- | ---: | ---: | ---: | ---: |");
        row("**delivery → task running**", &mut l.total, floor);
        row("… send → run queued (verify, store, match, enqueue)", &mut l.to_queued, floor);
        row("… queued → run running", &mut l.queued_to_run, floor);
        row("… run running → checkout done (git clone)", &mut l.run_to_checkout, floor);
        row("… checkout done → task running", &mut l.checkout_to_task, floor);
        row("floor: API trigger → task running (same pipeline, same checkout)", &mut l.api, floor);
        row("floor: bare `git clone --depth 1` of the branch", &mut l.clone, floor);
        row("floor: `GET /healthz` round trip", &mut l.healthz, floor);

        let s =
            sustained(&wharf, pipeline, &repo, &commits, WARMUP + args.latency, args.deliveries, args.clients).await;
        let rate = args.deliveries as f64 / s.answered.as_secs_f64();
        println!(
            "\n## Sustained: {} signed deliveries from {} clients, {} task slots\n",
            args.deliveries, args.clients, args.slots
        );
        println!("| measure | value |");
        println!("| --- | ---: |");
        println!(
            "| deliveries answered (202, one run each) | {:.3} s → **{rate:.0} deliveries/s** |",
            s.answered.as_secs_f64()
        );
        println!("| every run ended (`succeeded`) | {:.3} s |", s.all_done.as_secs_f64());
        println!(
            "| deliveries stored / `started` with one run | {} / {} of {} |",
            s.stored, s.started, args.deliveries
        );
        println!("| runs created | {} of {} |", s.runs, args.deliveries);
        assert_eq!(s.stored as usize, args.deliveries, "every delivery stored");
        assert_eq!(s.started, args.deliveries, "every delivery started its run");
        assert_eq!(s.runs as usize, args.deliveries, "one run per delivery");
        wharf.stop();
    });
}
