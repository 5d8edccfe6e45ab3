//! `wharf-bench server`: the server of issue 3 measured as a real process
//! (`target/release/wharf serve`), from a client on loopback, against floors measured
//! in the same run.
//!
//! ```text
//! cargo build --release -p wharf -p wharf-bench
//! target/release/wharf-bench server [--pipelines 10000] [--runs 1000000] [--requests 2000]
//!     [--triggers 200] [--concurrent 1000] [--slots 8] [--clients 32] [--wharf target/release/wharf]
//!     [--dir PATH]   # keep the data directories (empty/, burst/, loaded/) there
//! ```
//!
//! Four parts, each on a fresh data directory:
//! 1. **RSS idle**: `VmRSS` of `/proc/<pid>/status` one second after `/healthz` first
//!    answers, with an empty data directory.
//! 2. **Trigger to first task start** (empty server, nothing else running): `--triggers`
//!    runs of a one-task pipeline (`script: 'true'`), one after another. The latency is
//!    the task's `running` transition in the stored record minus the client's
//!    `jiff::Timestamp` taken just before sending `POST /pipelines/{id}/runs` (same
//!    machine, same clock). Split by the record's own times: send → `queued` (the
//!    request reaching `enqueue`), `queued` → run `running` (the insert, the answer, the
//!    scheduler), run `running` → task `running` (workspace and stage start). Floors:
//!    a `GET /healthz` round trip from the same client, and a bare `sh -c true`.
//! 3. **1,000 concurrent trivial runs** with `--max-parallel-tasks 8`: a pipeline with
//!    `concurrency: allow`, `--concurrent` runs started by `--clients` concurrent
//!    requests, then waited for; every run must have succeeded and the numbers must be
//!    1..N exactly once. Total is from the first request to the last record written
//!    (`updated_at`). Floor: N bare `sh -c true` spawns, `--slots` at a time.
//! 4. **At size**: `--pipelines` pipelines and `--runs` succeeded run records loaded
//!    straight into SQLite (through `wharf_store::Store::open`, one transaction), then
//!    the server started on them: start time, RSS one second after the start and once
//!    the server is idle (no CPU used for 2 s: it sweeps retention at start), then
//!    `--requests` × `GET /pipelines/{random}/runs?limit=50&page={1..3}` and
//!    `--requests` × `GET /pipelines?limit=50&page={random}` (p50/p90/p99/max), and
//!    RSS after them.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wharf_core::run::{Cause, Progress, RunRecord, StageRecord, TaskRecord};
use wharf_core::status::Status;

pub(crate) const TOKEN: &str = "wharf-bench-admin-token";

/// The server at size and under load (issue 3): memory and start, page latency at size,
/// trigger to first task, 1,000 concurrent trivial runs.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Pipelines loaded straight into SQLite for the measurements at size.
    #[arg(long, default_value_t = 10_000, value_parser = crate::positive)]
    pipelines: usize,
    /// Succeeded run records loaded with them (spread evenly over the pipelines).
    #[arg(long, default_value_t = 1_000_000)]
    runs: usize,
    /// Requests per page-latency measurement.
    #[arg(long, default_value_t = 2_000, value_parser = crate::positive)]
    requests: usize,
    /// Runs triggered one at a time for the trigger latency.
    #[arg(long, default_value_t = 200, value_parser = crate::positive)]
    triggers: usize,
    /// Runs of the concurrent burst.
    #[arg(long, default_value_t = 1_000, value_parser = crate::positive)]
    concurrent: usize,
    /// `--max-parallel-tasks` of the burst's server (and the floor's parallelism).
    #[arg(long, default_value_t = 8, value_parser = crate::positive)]
    slots: usize,
    /// Concurrent clients starting the burst.
    #[arg(long, default_value_t = 32, value_parser = crate::positive)]
    clients: usize,
    /// The `wharf` binary to measure.
    #[arg(long, default_value = "target/release/wharf")]
    wharf: PathBuf,
    /// Keep the data directories (empty/, burst/, loaded/) here instead of a temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
}

// ---------------------------------------------------------------------------------
// The server process and the client
// ---------------------------------------------------------------------------------

pub(crate) struct Wharf {
    child: Child,
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    /// From spawning the process to the first `200` from `/healthz`.
    pub(crate) started_in: Duration,
}

impl Wharf {
    pub(crate) async fn start(binary: &Path, data: &Path, extra: &[&str]) -> Wharf {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        std::fs::create_dir_all(data).unwrap();
        // A root server runs host tasks as its task user, who must pass through the
        // directories above the data dir (a temp dir is 0700).
        if let Some(parent) = data.parent() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711));
        }
        let log = std::fs::File::create(data.with_extension("log")).unwrap();
        let mut cmd = Command::new(binary);
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"]).arg(data).args(extra);
        for (key, _) in std::env::vars() {
            if key.starts_with("WHARF_") {
                cmd.env_remove(key);
            }
        }
        // `warn`: an info line per run start and end would be part of what is measured.
        cmd.env("WHARF_ADMIN_TOKEN", TOKEN)
            .env("WHARF_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let spawned = Instant::now();
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot run {}: {e} (build it: cargo build --release -p wharf)", binary.display())
        });
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let mut wharf = Wharf { child, base: format!("http://127.0.0.1:{port}"), client, started_in: Duration::ZERO };
        loop {
            if let Ok(r) = wharf.client.get(format!("{}/healthz", wharf.base)).send().await
                && r.status().is_success()
            {
                wharf.started_in = spawned.elapsed();
                return wharf;
            }
            if let Some(status) = wharf.child.try_wait().unwrap() {
                panic!("wharf serve ended ({status}); see {}", data.with_extension("log").display());
            }
            assert!(spawned.elapsed() < Duration::from_secs(120), "wharf serve did not answer /healthz within 120 s");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `VmRSS` and `VmHWM` (peak) in KiB.
    pub(crate) fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// `RssAnon` and `RssFile` in KiB: the process's own memory, and the files mapped
    /// in (mostly the binary's code, shared with the page cache).
    pub(crate) fn rss_split(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        (field("RssAnon:"), field("RssFile:"))
    }

    /// CPU time used so far (user + system), from `/proc/<pid>/stat`.
    pub(crate) fn cpu(&self) -> Duration {
        self.cpu_split().0
    }

    /// CPU time of the server's own threads, and of its ended children (tasks): utime +
    /// stime, and cutime + cstime, in 10 ms ticks.
    pub(crate) fn cpu_split(&self) -> (Duration, Duration) {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        // utime, stime, cutime and cstime are fields 14 to 17 (1-based); after the
        // command, 12 to 15.
        let ticks = |i: usize| fields[i].parse::<u64>().unwrap() + fields[i + 1].parse::<u64>().unwrap();
        (Duration::from_millis(ticks(11) * 10), Duration::from_millis(ticks(13) * 10))
    }

    /// Waits until the server uses no CPU for 2 s (at most `limit`); returns when it
    /// went quiet (since the start) and the CPU time it had used by then.
    pub(crate) async fn settle(&self, limit: Duration) -> (Duration, Duration) {
        let t = Instant::now();
        let (mut last, mut quiet_since) = (self.cpu(), Instant::now());
        let mut busy_until = t;
        while quiet_since.elapsed() < Duration::from_secs(2) && t.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = self.cpu();
            if now > last + Duration::from_millis(10) {
                quiet_since = Instant::now();
                busy_until = Instant::now();
            }
            last = now;
        }
        (busy_until - t + self.started_in, last)
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    pub(crate) async fn get(&self, path: &str) -> Value {
        let r = self.client.get(self.url(path)).bearer_auth(TOKEN).send().await.unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    pub(crate) async fn post(&self, path: &str, body: String) -> Value {
        let r = self.client.post(self.url(path)).bearer_auth(TOKEN).body(body).send().await.unwrap();
        assert!(r.status().is_success(), "POST {path}: {}", r.status());
        r.json().await.unwrap()
    }

    pub(crate) async fn create_pipeline(&self, yaml: &str) -> i64 {
        self.post("/pipelines", yaml.to_owned()).await["id"].as_i64().unwrap()
    }

    pub(crate) async fn healthz(&self) -> Duration {
        let t = Instant::now();
        let r = self.client.get(format!("{}/healthz", self.base)).send().await.unwrap();
        assert!(r.status().is_success());
        r.bytes().await.unwrap();
        t.elapsed()
    }

    pub(crate) fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Wharf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// xorshift64*: enough randomness to pick pipelines and pages.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// The value at quantile `q` (0..=1) of `xs`, sorted in place.
pub(crate) fn quantile(xs: &mut [Duration], q: f64) -> Duration {
    xs.sort();
    xs[((xs.len() - 1) as f64 * q).round() as usize]
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

pub(crate) fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

pub(crate) fn since(from: jiff::Timestamp, to: jiff::Timestamp) -> Duration {
    to.duration_since(from).unsigned_abs()
}

fn spawn_true() -> Duration {
    let t = Instant::now();
    let status = Command::new("sh").arg("-c").arg("true").status().expect("spawn sh");
    assert!(status.success());
    t.elapsed()
}

pub(crate) fn is_terminal(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "stopped" | "timed_out" | "skipped")
}

/// When `progress` (a record part as JSON) first reached `status`.
pub(crate) fn at(progress: &Value, status: &str) -> Option<jiff::Timestamp> {
    progress["history"].as_array()?.iter().find(|t| t["status"] == status)?["at"].as_str()?.parse().ok()
}

const TRIVIAL: &str = "      - {name: t, type: script, script: 'true'}\n";

fn trivial_pipeline(name: &str, concurrency: &str) -> String {
    format!("name: {name}\nconcurrency: {concurrency}\nstages:\n  - name: Build\n    tasks:\n{TRIVIAL}")
}

/// Reads `wharf_<name> <n>` from the Prometheus text.
fn metric(text: &str, name: &str) -> i64 {
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(-1)
}

// ---------------------------------------------------------------------------------
// The parts
// ---------------------------------------------------------------------------------

pub(crate) struct Latency {
    pub(crate) total: Vec<Duration>,
    pub(crate) to_queued: Vec<Duration>,
    pub(crate) queued_to_run: Vec<Duration>,
    pub(crate) run_to_task: Vec<Duration>,
    pub(crate) post_rtt: Vec<Duration>,
    pub(crate) to_task_end: Vec<Duration>,
    pub(crate) healthz: Vec<Duration>,
    pub(crate) spawn: Vec<Duration>,
}

pub(crate) async fn trigger_latency(wharf: &Wharf, n: usize) -> Latency {
    let id = wharf.create_pipeline(&trivial_pipeline("trigger", "queue")).await;
    let mut l = Latency {
        total: vec![],
        to_queued: vec![],
        queued_to_run: vec![],
        run_to_task: vec![],
        post_rtt: vec![],
        to_task_end: vec![],
        healthz: vec![],
        spawn: vec![],
    };
    let warmup = 10;
    for i in 0..warmup + n {
        let sent = jiff::Timestamp::now();
        let t = Instant::now();
        let accepted = wharf.post(&format!("/pipelines/{id}/runs"), String::new()).await;
        let rtt = t.elapsed();
        let run = accepted["id"].as_i64().unwrap();
        // The run ends within milliseconds; look late, so polling does not compete with it.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let record = loop {
            let record = wharf.get(&format!("/runs/{run}")).await;
            if is_terminal(record["status"].as_str().unwrap()) {
                break record;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(record["status"], "succeeded", "{record:#}");
        if i < warmup {
            continue;
        }
        let task = &record["stages"][0]["tasks"][0];
        let (queued, run_running, task_running, task_end) =
            (at(&record, "queued"), at(&record, "running"), at(task, "running"), at(task, "succeeded"));
        let (queued, run_running, task_running, task_end) =
            (queued.unwrap(), run_running.unwrap(), task_running.unwrap(), task_end.unwrap());
        l.total.push(since(sent, task_running));
        l.to_queued.push(since(sent, queued));
        l.queued_to_run.push(since(queued, run_running));
        l.run_to_task.push(since(run_running, task_running));
        l.to_task_end.push(since(sent, task_end));
        l.post_rtt.push(rtt);
        // The floors, interleaved with the runs so they see the same machine.
        l.healthz.push(wharf.healthz().await);
        l.spawn.push(spawn_true());
    }
    l
}

pub(crate) struct Burst {
    pub(crate) total: Duration,
    pub(crate) seen_done: Duration,
    pub(crate) stored_done: Duration,
    pub(crate) posts: Duration,
    pub(crate) succeeded: usize,
    pub(crate) peak_rss: u64,
    pub(crate) floor: Duration,
    pub(crate) first_tenth: Duration,
    pub(crate) last_tenth: Duration,
    /// CPU time of the server's threads, and of its tasks, from the first request until
    /// every run was stored as ended.
    pub(crate) server_cpu: Duration,
    pub(crate) task_cpu: Duration,
}

/// `n` runs of the trivial pipeline from `clients` clients, against `n` bare
/// `sh -c true`, `slots` at a time.
pub(crate) async fn concurrent_runs(wharf: &Wharf, n: usize, clients: usize, slots: usize) -> Burst {
    burst(wharf, &trivial_pipeline("burst", "allow"), n, clients, || host_floor(n, slots)).await
}

/// `n` runs of the pipeline `yaml` started at once from `clients` clients; every run
/// must succeed. `floor` is measured after them, in the same run. The clock starts once
/// the server has finished starting (no CPU for 2 s): a first start's own work — the
/// admin password's Argon2 hash, about 0.1 s of CPU — is not the runs'.
pub(crate) async fn burst(
    wharf: &Wharf,
    yaml: &str,
    n: usize,
    clients: usize,
    floor: impl FnOnce() -> Duration,
) -> Burst {
    let id = wharf.create_pipeline(yaml).await;
    wharf.settle(Duration::from_secs(30)).await;
    let client = wharf.client.clone();
    let url = wharf.url(&format!("/pipelines/{id}/runs"));
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = wharf.cpu_split();
    let first_sent = jiff::Timestamp::now();
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (client, url, next) = (client.clone(), url.clone(), next.clone());
        set.spawn(async move {
            let mut numbers = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let r = client.post(&url).bearer_auth(TOKEN).send().await.unwrap();
                assert_eq!(r.status().as_u16(), 201);
                let v: Value = r.json().await.unwrap();
                numbers.push(v["number"].as_i64().unwrap());
            }
            numbers
        });
    }
    let mut accepted = Vec::new();
    while let Some(numbers) = set.join_next().await {
        accepted.extend(numbers.unwrap());
    }
    let posts = t.elapsed();
    let seen_done = loop {
        let text = wharf.client.get(format!("{}/metrics", wharf.base)).send().await.unwrap().text().await.unwrap();
        if metric(&text, "wharf_queue_length") == 0 && metric(&text, "wharf_active_runs") == 0 {
            break t.elapsed();
        }
        assert!(t.elapsed() < Duration::from_secs(600), "the runs did not end within 10 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The metrics count a run inactive a moment before its last record is stored (see
    // docs/BENCHMARKS.md): wait for every stored status to be terminal too.
    let stored_done = loop {
        let mut ended = 0;
        for page in 1..=n.div_ceil(200) {
            let listed = wharf.get(&format!("/pipelines/{id}/runs?limit=200&page={page}")).await;
            ended += listed["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| is_terminal(r["status"].as_str().unwrap()))
                .count();
        }
        if ended >= n {
            break t.elapsed();
        }
        assert!(t.elapsed() < Duration::from_secs(600), "the runs did not end within 10 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let cpu_after = wharf.cpu_split();
    let (server_cpu, task_cpu) = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    let (_, peak_rss) = wharf.rss();
    // Every run, by number, exactly once, and all succeeded.
    let mut numbers = Vec::new();
    let mut succeeded = 0;
    let mut last_write = 0_i64;
    let mut writes = Vec::new();
    let mut unsucceeded = Vec::new();
    for page in 1.. {
        let listed = wharf.get(&format!("/pipelines/{id}/runs?limit=200&page={page}")).await;
        let items = listed["items"].as_array().unwrap();
        if items.is_empty() {
            break;
        }
        for item in items {
            numbers.push(item["number"].as_i64().unwrap());
            if item["status"] == "succeeded" {
                succeeded += 1;
            } else {
                unsucceeded.push(item["id"].as_i64().unwrap());
            }
            last_write = last_write.max(item["updated_at"].as_i64().unwrap());
            writes.push(item["updated_at"].as_i64().unwrap());
        }
    }
    numbers.sort();
    accepted.sort();
    let expected: Vec<i64> = (1..=n as i64).collect();
    assert_eq!(accepted, expected, "the API accepted every run once, numbered 1..{n}");
    assert_eq!(numbers, expected, "every run is listed once, numbered 1..{n}");
    for id in &unsucceeded {
        let run = wharf.get(&format!("/runs/{id}")).await;
        let task = &run["stages"][0]["tasks"][0];
        eprintln!(
            "run #{} (id {id}) {}: {}; task {}: {} (exit code {}, history {})",
            run["number"],
            run["status"],
            run["reason"],
            task["status"],
            task["reason"],
            task["exit_code"],
            task["history"]
        );
        let log = wharf.client.get(wharf.url(&format!("/runs/{id}/log"))).bearer_auth(TOKEN).send().await.unwrap();
        eprintln!("{}", log.text().await.unwrap());
    }
    assert_eq!(succeeded, n, "every run succeeded");
    let total = Duration::from_millis((last_write - first_sent.as_millisecond()).max(0) as u64);
    // Does a run cost more when the pipeline has more runs? Time for the first and the
    // last tenth of the runs to end.
    writes.sort();
    let tenth = (n / 10).max(1);
    let first_tenth = Duration::from_millis((writes[tenth - 1] - first_sent.as_millisecond()).max(0) as u64);
    let last_tenth = Duration::from_millis((writes[n - 1] - writes[n - 1 - tenth]).max(0) as u64);
    let floor = floor();
    Burst {
        total,
        seen_done,
        stored_done,
        posts,
        succeeded,
        peak_rss,
        floor,
        first_tenth,
        last_tenth,
        server_cpu,
        task_cpu,
    }
}

/// `n` × `sh -c true`, `slots` at a time.
fn host_floor(n: usize, slots: usize) -> Duration {
    let t = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..slots)
        .map(|_| {
            let next = next.clone();
            std::thread::spawn(move || {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    spawn_true();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    t.elapsed()
}

/// Writes `pipelines` pipelines (one version each) and `runs` succeeded runs spread
/// evenly over them straight into the database, in one transaction.
pub(crate) async fn load(db: &Path, pipelines: usize, runs: usize) -> Duration {
    let t = Instant::now();
    let store = wharf_store::Store::open(&format!("sqlite://{}", db.display())).await.expect("open the store");
    let pool = store.sqlite_pool().expect("the benchmark store is SQLite");
    let mut tx = pool.begin().await.unwrap();
    let base = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 365);
    let per = |p: usize| runs / pipelines + usize::from(p < runs % pipelines);
    for p in 0..pipelines {
        let name = format!("p{p:06}");
        let created = base.as_millisecond();
        let n = per(p) as i64;
        sqlx::query(
            // As the server leaves them: `timers_version` says their timers (none) were
            // computed from version 1, and `events_repo` that no event starts them.
            "INSERT INTO pipelines (id, project, name, active, version, timers_version, last_number, increment, \
                                    created_at, updated_at, events_repo) \
             VALUES (?, 'admin', ?, 1, 1, 1, ?, ?, ?, ?, '')",
        )
        .bind(p as i64 + 1)
        .bind(&name)
        .bind(n)
        .bind(n)
        .bind(created)
        .bind(created)
        .execute(&mut *tx)
        .await
        .unwrap();
        // With the listing the server saves with every version.
        let source = trivial_pipeline(&name, "queue");
        let model = wharf_pipeline::parse(&source).expect("the trivial pipeline parses");
        sqlx::query(
            "INSERT INTO pipeline_versions (pipeline_id, version, source, listing, created_at) VALUES (?, 1, ?, ?, ?)",
        )
        .bind(p as i64 + 1)
        .bind(source)
        .bind(wharf_api::pipelines::VersionListing::of(&model).to_json())
        .bind(created)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    // Up to 100 rows per statement; the statement text is the same for full chunks, so
    // sqlx prepares it once.
    const CHUNK: usize = 100;
    let statement = |rows: usize| {
        let values = vec!["(?, ?, ?, 1, 'succeeded', ?, ?, ?)"; rows].join(", ");
        format!(
            "INSERT INTO runs (pipeline_id, number, increment, version, status, record, created_at, updated_at) \
             VALUES {values}"
        )
    };
    let full = statement(CHUNK);
    let mut rows: Vec<(i64, i64, String, i64)> = Vec::with_capacity(CHUNK);
    let flush = async |rows: &mut Vec<(i64, i64, String, i64)>, tx: &mut sqlx::SqliteConnection| {
        if rows.is_empty() {
            return;
        }
        let sql = if rows.len() == CHUNK { full.clone() } else { statement(rows.len()) };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (pipeline, number, record, created) in rows.drain(..) {
            q = q.bind(pipeline).bind(number).bind(number).bind(record).bind(created).bind(created + 2_000);
        }
        q.execute(&mut *tx).await.unwrap();
    };
    for p in 0..pipelines {
        let name = format!("p{p:06}");
        for number in 1..=per(p) as i64 {
            let created = base + jiff::SignedDuration::from_secs(number * 600 + p as i64);
            let record = record(&name, number as u64, created);
            rows.push((p as i64 + 1, number, serde_json::to_string(&record).unwrap(), created.as_millisecond()));
            if rows.len() == CHUNK {
                flush(&mut rows, &mut *tx).await;
            }
        }
    }
    flush(&mut rows, &mut *tx).await;
    tx.commit().await.unwrap();
    store.pool().close().await;
    t.elapsed()
}

/// A succeeded run of one stage with one task, with every transition's time.
fn record(pipeline: &str, number: u64, created: jiff::Timestamp) -> RunRecord {
    let ms = |n: i64| created + jiff::SignedDuration::from_millis(n);
    let done = |start: i64, end: i64| {
        let mut p = Progress::new(created);
        p.advance(Status::Running, ms(start)).unwrap();
        p.advance(Status::Succeeded, ms(end)).unwrap();
        p
    };
    RunRecord {
        pipeline: pipeline.to_owned(),
        number,
        cause: Cause::Manual { user: "admin".into() },
        parameters: BTreeMap::new(),
        progress: done(3, 1_900),
        reason: None,
        checkout: None,
        stages: vec![StageRecord {
            name: "Build".into(),
            rollback: false,
            progress: done(4, 1_899),
            reason: None,
            reused_from: None,
            tasks: vec![TaskRecord {
                name: "t".into(),
                task_type: "script".into(),
                progress: done(5, 1_898),
                attempts: 1,
                attempt_started: None,
                exit_code: Some(0),
                outputs: BTreeMap::new(),
                reason: None,
                approval: None,
            }],
        }],
    }
}

pub(crate) struct Pages {
    pub(crate) runs: Vec<Duration>,
    pub(crate) pipelines: Vec<Duration>,
}

pub(crate) async fn page_latency(wharf: &Wharf, pipelines: usize, requests: usize) -> Pages {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let pages = pipelines.div_ceil(50);
    let mut out = Pages { runs: Vec::with_capacity(requests), pipelines: Vec::with_capacity(requests) };
    let get = async |path: String| {
        let t = Instant::now();
        let r = wharf.client.get(wharf.url(&path)).bearer_auth(TOKEN).send().await.unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        let body = r.bytes().await.unwrap();
        assert!(body.starts_with(b"{\"items\":["), "GET {path}");
        t.elapsed()
    };
    // Warm-up: the first requests open connections and prepare statements.
    for _ in 0..20 {
        get(format!("/pipelines/{}/runs?limit=50&page=1", 1 + rng.below(pipelines))).await;
    }
    for _ in 0..requests {
        let path = format!("/pipelines/{}/runs?limit=50&page={}", 1 + rng.below(pipelines), 1 + rng.below(3));
        out.runs.push(get(path).await);
    }
    for _ in 0..requests {
        out.pipelines.push(get(format!("/pipelines?limit=50&page={}", 1 + rng.below(pages))).await);
    }
    out
}

fn row(name: &str, xs: &mut [Duration], goal: &str) -> String {
    format!(
        "| {name} | {} | {} | {} | {} | {} | {goal} |",
        xs.len(),
        ms(quantile(xs, 0.5)),
        ms(quantile(xs, 0.9)),
        ms(quantile(xs, 0.99)),
        ms(quantile(xs, 1.0)),
    )
}

/// The header of a server measurement: the binary, the cores, the load, and a warning
/// when the data directories are on ext4 without a journal, where a burst's file
/// creations slow down after deletions (docs/BENCHMARKS.md, issue 19).
pub(crate) fn print_machine(wharf: &Path, dir: &Path) {
    let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "server: {}, cores: {}, load average at start: {}",
        wharf.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_avg.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    if let Some(device) = unjournaled_ext4(dir) {
        println!(
            "note: {} is on ext4 without a journal ({device}): it does not reuse inodes deleted in the last \
             minutes, so the burst slows after anything removed many files there (an earlier run of this \
             bench); TMPDIR on a journaled file system or tmpfs avoids it",
            dir.display()
        );
    }
    if let Some(order) = startup_order(wharf) {
        println!("{order}");
    }
}

/// How much of the start-up link order (`crates/cli/link/startup.order`, read from the
/// working directory) the binary has, and whether those functions lie together: a
/// stale list or a build without the layout shows in the idle memory, and here says why.
fn startup_order(wharf: &Path) -> Option<String> {
    let list = std::fs::read_to_string("crates/cli/link/startup.order").ok()?;
    let nm = Command::new("nm").args(["--defined-only", "--size-sort", "-S"]).arg(wharf).output().ok()?;
    let listed: std::collections::HashSet<&str> = list.lines().collect();
    let symbols = String::from_utf8_lossy(&nm.stdout);
    // Lines: address, size, type, name.
    // A name can stand for several local symbols (C `static` functions, say); each of
    // them is placed, but the list's name counts once.
    let mut found = std::collections::HashSet::new();
    let (mut lowest, mut highest, mut size) = (u64::MAX, 0, 0);
    for line in symbols.lines() {
        let mut parts = line.splitn(4, ' ');
        let (Some(address), Some(length), Some(_), Some(name)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if listed.contains(name)
            && let (Ok(address), Ok(length)) = (u64::from_str_radix(address, 16), u64::from_str_radix(length, 16))
        {
            found.insert(name);
            (lowest, highest, size) = (lowest.min(address), highest.max(address + length), size + length);
        }
    }
    let together = !found.is_empty() && highest - lowest < 2 * size;
    Some(format!(
        "start-up link order: {} of {} listed functions are in the binary, {} (scripts/link-order.sh \
         regenerates the list)",
        found.len(),
        listed.len(),
        if together { "laid out together" } else { "**not** laid out together" }
    ))
}

/// The device of the ext4 file system holding `dir` when it has no journal (its
/// `/sys/fs/ext4/<device>/journal_task` says `<none>`).
fn unjournaled_ext4(dir: &Path) -> Option<String> {
    let dir = std::fs::canonicalize(dir).ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // Fields: id, parent, major:minor, root, mount point, options, …, "-", type, source.
    let (point, fstype, source) = mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            Some((PathBuf::from(point), right.next()?.to_owned(), right.next()?.to_owned()))
        })
        .filter(|(point, _, _)| dir.starts_with(point))
        .max_by_key(|(point, _, _)| point.as_os_str().len())?;
    let device = source.rsplit('/').next()?.to_owned();
    let journal = std::fs::read_to_string(format!("/sys/fs/ext4/{device}/journal_task")).ok()?;
    (fstype == "ext4" && journal.trim() == "<none>").then(|| format!("{source} on {}", point.display()))
}

pub fn main(args: Args) {
    wharf_bench::require_binary(&args.wharf);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = wharf_bench::work_dir(args.dir.as_deref(), tmp.path());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        print_machine(&args.wharf, &dir);

        // 1 and 2: an empty server.
        let wharf = Wharf::start(&args.wharf, &dir.join("empty"), &[]).await;
        let empty_start = wharf.started_in;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (idle_rss, _) = wharf.rss();
        let mut lat = trigger_latency(&wharf, args.triggers).await;
        let (after_triggers_rss, _) = wharf.rss();
        wharf.stop();

        // 3: a burst of runs through 8 slots.
        let slots = args.slots.to_string();
        let wharf = Wharf::start(&args.wharf, &dir.join("burst"), &["--max-parallel-tasks", slots.as_str()]).await;
        let burst = concurrent_runs(&wharf, args.concurrent, args.clients, args.slots).await;
        wharf.stop();

        // 4: at size.
        let data = dir.join("loaded");
        std::fs::create_dir_all(&data).unwrap();
        let loaded_in = load(&data.join("wharf.db"), args.pipelines, args.runs).await;
        let db_bytes = std::fs::metadata(data.join("wharf.db")).map_or(0, |m| m.len());
        let wharf = Wharf::start(&args.wharf, &data, &[]).await;
        let loaded_start = wharf.started_in;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (loaded_early_rss, _) = wharf.rss();
        // The server may work after its start (the retention sweep): wait for it.
        let (loaded_busy, loaded_cpu) = wharf.settle(Duration::from_secs(300)).await;
        let (loaded_idle_rss, _) = wharf.rss();
        let mut pages = page_latency(&wharf, args.pipelines, args.requests).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (loaded_after_rss, loaded_peak_rss) = wharf.rss();
        wharf.stop();

        println!();
        println!("### Memory and start");
        println!();
        println!("| server state | start to first /healthz ms | VmRSS MiB | goal |");
        println!("|---|---|---|---|");
        println!("| empty data dir, idle 1 s after start | {} | {} | < 30 |", ms(empty_start), mib(idle_rss));
        println!("| empty, after the trigger runs | | {} | |", mib(after_triggers_rss));
        println!("| {} burst runs done (peak VmHWM) | | {} | |", args.concurrent, mib(burst.peak_rss));
        println!(
            "| {} pipelines + {} runs ({} MiB database), 1 s after start | {} | {} | |",
            args.pipelines,
            args.runs,
            db_bytes / (1024 * 1024),
            ms(loaded_start),
            mib(loaded_early_rss)
        );
        println!(
            "| same, idle (no CPU for 2 s; busy until {:.1} s after start, {:.1} s of CPU) | | {} | < 30 |",
            loaded_busy.as_secs_f64(),
            loaded_cpu.as_secs_f64(),
            mib(loaded_idle_rss)
        );
        println!(
            "| same, after the page requests (peak VmHWM {}) | | {} | |",
            mib(loaded_peak_rss),
            mib(loaded_after_rss)
        );
        println!();
        println!("(loading them straight into SQLite took {:.1} s)", loaded_in.as_secs_f64());
        println!();
        println!("### Latency, ms");
        println!();
        println!("| measurement | n | p50 | p90 | p99 | max | goal |");
        println!("|---|---|---|---|---|---|---|");
        println!("{}", row("GET /pipelines/{id}/runs?limit=50&page=1..3 (at size)", &mut pages.runs, "p99 < 20"));
        println!("{}", row("GET /pipelines?limit=50&page=random (at size)", &mut pages.pipelines, ""));
        println!("{}", row("trigger → first task `running`", &mut lat.total, "median < 10"));
        println!("{}", row("· send → run `queued` (request reaches enqueue)", &mut lat.to_queued, ""));
        println!("{}", row("· `queued` → run `running` (insert, answer, scheduler)", &mut lat.queued_to_run, ""));
        println!("{}", row("· run `running` → task `running` (workspace, stage)", &mut lat.run_to_task, ""));
        println!("{}", row("POST /pipelines/{id}/runs round trip (client)", &mut lat.post_rtt, ""));
        println!("{}", row("trigger → task `succeeded`", &mut lat.to_task_end, ""));
        println!("{}", row("floor: GET /healthz round trip", &mut lat.healthz, ""));
        println!("{}", row("floor: sh -c true", &mut lat.spawn, ""));
        println!();
        println!("### {} concurrent trivial runs, --max-parallel-tasks {}", args.concurrent, args.slots);
        println!();
        println!("| measurement | value |");
        println!("|---|---|");
        println!(
            "| runs succeeded, numbers 1..{} each once | {}/{} |",
            args.concurrent, burst.succeeded, args.concurrent
        );
        println!("| {} starts accepted ({} clients) | {} ms |", args.concurrent, args.clients, ms(burst.posts));
        println!("| first request → last record written | {} ms |", ms(burst.total));
        println!("| runs per second | {:.0} |", args.concurrent as f64 / burst.total.as_secs_f64());
        println!(
            "| (client saw the metrics idle / every stored run ended after) | {} ms / {} ms |",
            ms(burst.seen_done),
            ms(burst.stored_done)
        );
        println!(
            "| first tenth of the runs ended after / last tenth took | {} ms / {} ms |",
            ms(burst.first_tenth),
            ms(burst.last_tenth)
        );
        println!(
            "| CPU per run: the server's threads / its tasks | {:.2} ms / {:.2} ms |",
            burst.server_cpu.as_secs_f64() * 1e3 / args.concurrent as f64,
            burst.task_cpu.as_secs_f64() * 1e3 / args.concurrent as f64
        );
        println!("| floor: {} × sh -c true, {} at a time | {} ms |", args.concurrent, args.slots, ms(burst.floor));
        println!("| ratio to the floor | {:.1} |", burst.total.as_secs_f64() / burst.floor.as_secs_f64());
    });
}
