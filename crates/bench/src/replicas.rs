//! `wharf-bench replicas`: the reliability suite of issue 18 and runs/s on 1 vs 3
//! replicas. Several `wharf serve` processes on 127.0.0.1 share one PostgreSQL database
//! (each its own data directory, the same secret key and admin token), as
//! docs/operations.md "Running replicas" describes.
//!
//! ```text
//! cargo build --release -p wharf -p wharf-bench
//! target/release/wharf-bench replicas [--runs 1000] [--replicas 3] [--clients 8]
//!     [--database-url postgres://USER:PASSWORD@HOST:PORT]   # default: scripts/pg-test-env.sh
//!     [--wharf target/release/wharf] [--dir PATH] [--skip-throughput]
//! ```
//!
//! **The suite** ([`suite`], also run by `crates/cli/tests/replicas.rs` with 60 runs):
//! the replicas start at once on an empty database; pipelines are created across them
//! (work pipelines with `concurrency: allow`, one with `queue`, and timer pipelines
//! `every_minutes: 1`); `--runs` runs are submitted round-robin through the API by
//! `--clients` concurrent clients; a third of the way in the first replica is killed
//! with SIGKILL and started again, two thirds in the second one is stopped with
//! SIGTERM and started again. Each run's one host task appends a marker line naming
//! its run to a file outside every data directory, then prints numbered log lines.
//! Once every run has ended (bounded) it asserts: every accepted run (`201` with an id)
//! exists and ran exactly once (markers counted; a host task that a SIGKILL cut may
//! leave its run failed as interrupted, counted apart, with at most one marker), no
//! run is left queued or running, each succeeded run's log lines arrive exactly once
//! when read through every replica (so through one that did not run it), the `queue`
//! pipeline never ran two runs at once, and every timer due time between the timer's
//! creation and the end fired exactly once.
//!
//! **Runs/s** ([`throughput`]): the same trivial runs on a fresh database, first through
//! 1 replica, then through `--replicas`, no faults; from the first request to the last
//! run's end.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wharf_api::runs::RunListed;
use wharf_core::run::Cause;
use wharf_core::status::Status;

/// The built-in admin's token on every replica.
pub const TOKEN: &str = "wharf-replicas-admin-token";
/// The secret key every replica shares (a test key: 32 bytes, base64).
const SECRET_KEY: &str = "d2hhcmYtcmVwbGljYXMtc3VpdGUtdGVzdC1rZXkhISE=";
/// Lines a suite task prints after its marker.
const LINES: usize = 5;
/// The most examples kept per kind of problem.
const EXAMPLES: usize = 5;

/// The reliability suite and runs/s on 1 vs N replicas sharing one PostgreSQL.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Runs submitted in the suite and in each throughput measurement.
    #[arg(long, default_value_t = 1_000, value_parser = positive)]
    runs: usize,
    /// Replicas (at least 2: one is killed, another stopped).
    #[arg(long, default_value_t = 3, value_parser = at_least_two)]
    replicas: usize,
    /// Concurrent clients submitting runs.
    #[arg(long, default_value_t = 8, value_parser = positive)]
    clients: usize,
    /// `--max-parallel-tasks` of each replica.
    #[arg(long, default_value_t = 8, value_parser = positive)]
    slots: usize,
    /// A PostgreSQL server (`postgres://USER:PASSWORD@HOST:PORT`, no database: one is
    /// created per measurement and dropped after); default: the test cluster of
    /// `scripts/pg-test-env.sh`.
    #[arg(long)]
    database_url: Option<String>,
    /// The `wharf` binary.
    #[arg(long, default_value = "target/release/wharf")]
    wharf: PathBuf,
    /// Keep the data directories, server logs and marker files here (must not exist yet).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Only the suite, no runs/s measurement.
    #[arg(long)]
    skip_throughput: bool,
    /// Only the runs/s measurement, no suite.
    #[arg(long, conflicts_with = "skip_throughput")]
    skip_suite: bool,
    /// How long to wait for every run to end after the last submission, in seconds.
    #[arg(long, default_value_t = 600, value_parser = positive)]
    settle_secs: usize,
}

fn positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{text}` is not a whole number of at least 1")),
    }
}

fn at_least_two(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 2 => Ok(n),
        _ => Err(format!("`{text}` is not a whole number of at least 2")),
    }
}

// ---------------------------------------------------------------------------------
// Replicas
// ---------------------------------------------------------------------------------

/// One `wharf serve` process (and its later lives on the same port and data dir).
struct Replica {
    index: usize,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Replica {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self, wharf: &Path, database_url: &str, slots: usize) -> Result<(), String> {
        std::fs::create_dir_all(&self.data).map_err(|e| format!("{}: {e}", self.data.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let mut cmd = Command::new(wharf);
        cmd.args(["serve", "--executor", "host", "--listen", &format!("127.0.0.1:{}", self.port), "--data-dir"])
            .arg(&self.data)
            .args(["--max-parallel-tasks", &slots.to_string(), "--stop-grace", "2s"]);
        for (key, _) in std::env::vars() {
            if key.starts_with("WHARF_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("WHARF_DATABASE_URL", database_url)
            .env("WHARF_ADMIN_TOKEN", TOKEN)
            .env("WHARF_ADMIN_PASSWORD", "wharf-replicas-admin-password")
            .env("WHARF_SECRET_KEY", SECRET_KEY)
            .env("WHARF_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e} (build it: cargo build --release -p wharf)", wharf.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits (at most 120 s) for `/healthz`; an exit on the way is an error naming the log.
    async fn healthy(&mut self, client: &reqwest::Client) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{}/healthz", self.base())).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail = log.lines().rev().take(10).collect::<Vec<_>>();
                let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
                return Err(format!(
                    "replica {} ended ({status}); its log {} ends:\n{tail}",
                    self.index,
                    self.log.display()
                ));
            }
            if started.elapsed() > Duration::from_secs(120) {
                return Err(format!("replica {} did not answer /healthz within 120 s", self.index));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and the exit collected.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then at most `grace` for the process to end (SIGKILL after, said in
    /// the answer). Returns how long it took.
    async fn terminate(&mut self, grace: Duration) -> Result<Duration, String> {
        let Some(mut child) = self.child.take() else { return Ok(Duration::ZERO) };
        let started = Instant::now();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).map_err(|e| format!("SIGTERM: {e}"))?;
        while started.elapsed() < grace {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("replica {} did not end within {grace:?} of SIGTERM (killed)", self.index))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The replicas and an API client for them.
struct Cluster {
    replicas: Vec<Mutex<Replica>>,
    bases: Vec<String>,
    up: Vec<AtomicBool>,
    client: reqwest::Client,
    wharf: PathBuf,
    database_url: String,
    slots: usize,
}

impl Cluster {
    /// `n` replicas on `database_url`, started at once (schema creation races on purpose).
    /// Also says which replicas failed that start (each then started again alone).
    async fn start(
        wharf: &Path,
        database_url: &str,
        dir: &Path,
        n: usize,
        slots: usize,
    ) -> Result<(Cluster, Vec<String>), String> {
        // A root server runs host tasks as its task user, who must pass through `dir`.
        set_mode(dir, 0o711)?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| e.to_string())?;
        let mut replicas = Vec::with_capacity(n);
        for index in 0..n {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("a free port: {e}"))?
                .port();
            let mut replica = Replica {
                index,
                data: dir.join(format!("replica{index}")),
                log: dir.join(format!("replica{index}.log")),
                port,
                child: None,
            };
            replica.spawn(wharf, database_url, slots)?;
            replicas.push(replica);
        }
        // A replica that failed the simultaneous start is a problem, said; it is started
        // again alone so the rest of the suite still runs.
        let mut start_problems = Vec::new();
        let mut failed = Vec::new();
        for replica in &mut replicas {
            if let Err(e) = replica.healthy(&client).await {
                start_problems.push(e);
                failed.push(replica.index);
            }
        }
        for index in failed {
            replicas[index].spawn(wharf, database_url, slots)?;
            replicas[index].healthy(&client).await?;
        }
        let cluster = Cluster {
            bases: replicas.iter().map(Replica::base).collect(),
            up: replicas.iter().map(|_| AtomicBool::new(true)).collect(),
            replicas: replicas.into_iter().map(Mutex::new).collect(),
            client,
            wharf: wharf.to_owned(),
            database_url: database_url.to_owned(),
            slots,
        };
        Ok((cluster, start_problems))
    }

    fn url(&self, replica: usize, path: &str) -> String {
        format!("{}/api/v1{path}", self.bases[replica])
    }

    /// A replica that is up, starting the search at `from`.
    fn live(&self, from: usize) -> usize {
        let n = self.bases.len();
        (0..n).map(|k| (from + k) % n).find(|&r| self.up[r].load(Ordering::SeqCst)).unwrap_or(from % n)
    }

    async fn get(&self, replica: usize, path: &str) -> Result<Value, String> {
        let r = self
            .client
            .get(self.url(replica, path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .map_err(|e| format!("GET {path} on replica {replica}: {e}"))?;
        let status = r.status();
        if !status.is_success() {
            return Err(format!("GET {path} on replica {replica}: {status}: {}", r.text().await.unwrap_or_default()));
        }
        r.json().await.map_err(|e| format!("GET {path} on replica {replica}: {e}"))
    }

    async fn post(&self, replica: usize, path: &str, body: String) -> Result<(reqwest::StatusCode, Value), String> {
        let r = self
            .client
            .post(self.url(replica, path))
            .bearer_auth(TOKEN)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST {path} on replica {replica}: {e}"))?;
        let status = r.status();
        let body = r.text().await.map_err(|e| format!("POST {path} on replica {replica}: {e}"))?;
        Ok((status, serde_json::from_str(&body).unwrap_or(Value::String(body))))
    }

    async fn create_pipeline(&self, replica: usize, yaml: String) -> Result<i64, String> {
        let (status, body) = self.post(replica, "/pipelines", yaml).await?;
        body["id"].as_i64().ok_or_else(|| format!("creating a pipeline on replica {replica}: {status}: {body}"))
    }

    /// Every run of `pipeline`, with cause and times (pages of 200, at most 1,000 pages).
    async fn runs(&self, pipeline: i64) -> Result<Vec<RunListed>, String> {
        let mut all = Vec::new();
        for page in 1..=1_000 {
            let replica = self.live(page);
            let body =
                self.get(replica, &format!("/pipelines/{pipeline}/runs?full=true&limit=200&page={page}")).await?;
            let items: Vec<RunListed> = serde_json::from_value(body["items"].clone())
                .map_err(|e| format!("the runs of pipeline {pipeline}: {e}"))?;
            let total = body["total"].as_u64().unwrap_or(0) as usize;
            let last = items.len() < 200;
            all.extend(items);
            if last || all.len() >= total {
                break;
            }
        }
        Ok(all)
    }

    async fn kill9(&self, replica: usize) {
        self.up[replica].store(false, Ordering::SeqCst);
        self.replicas[replica].lock().unwrap().kill9();
    }

    async fn terminate(&self, replica: usize) -> Result<Duration, String> {
        self.up[replica].store(false, Ordering::SeqCst);
        let child = self.replicas[replica].lock().unwrap().child.take();
        // The wait must not hold the lock across awaits: a stand-in replica holds the child.
        let mut stand_in = Replica { index: replica, data: PathBuf::new(), log: PathBuf::new(), port: 0, child };
        stand_in.terminate(Duration::from_secs(90)).await
    }

    async fn restart(&self, replica: usize) -> Result<(), String> {
        let mut taken = {
            let mut guard = self.replicas[replica].lock().unwrap();
            guard.spawn(&self.wharf, &self.database_url, self.slots)?;
            Replica {
                index: replica,
                data: guard.data.clone(),
                log: guard.log.clone(),
                port: guard.port,
                child: guard.child.take(),
            }
        };
        let healthy = taken.healthy(&self.client).await;
        self.replicas[replica].lock().unwrap().child = taken.child.take();
        healthy?;
        self.up[replica].store(true, Ordering::SeqCst);
        Ok(())
    }

    fn stop_all(&self) {
        for replica in &self.replicas {
            replica.lock().unwrap().kill9();
        }
    }
}

fn set_mode(dir: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(|e| format!("{}: {e}", dir.display()))
}

// ---------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------

/// What the suite does: sizes, bounds, where.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The `wharf` binary.
    pub wharf: PathBuf,
    /// An empty PostgreSQL database of its own.
    pub database_url: String,
    /// Where data directories, server logs and the marker file go.
    pub dir: PathBuf,
    pub replicas: usize,
    pub runs: usize,
    pub clients: usize,
    /// `--max-parallel-tasks` of each replica.
    pub slots: usize,
    /// How long each suite task sleeps after its marker (so a SIGKILL finds tasks running).
    pub task_ms: u64,
    /// Timer pipelines (`every_minutes: 1`); the suite waits until `timer_dues` due
    /// times passed after their creation (so at least that many fired).
    pub timers: usize,
    pub timer_dues: usize,
    /// The bound on waiting for every run to end after the last submission.
    pub settle: Duration,
}

impl Plan {
    /// The small version the test suite runs: 60 runs on 3 replicas, one timer due time.
    pub fn small(wharf: PathBuf, database_url: String, dir: PathBuf) -> Plan {
        Plan {
            wharf,
            database_url,
            dir,
            replicas: 3,
            runs: 60,
            clients: 6,
            slots: 8,
            task_ms: 300,
            timers: 2,
            timer_dues: 1,
            settle: Duration::from_secs(90),
        }
    }
}

/// A kind of problem: how many, and a few examples.
#[derive(Default, Debug)]
pub struct Problem {
    pub count: usize,
    pub examples: Vec<String>,
}

/// What the suite found.
#[derive(Default, Debug)]
pub struct Outcome {
    pub submitted: usize,
    /// Answered `201` with an id.
    pub accepted: usize,
    /// Submissions that got no `201` (a replica went down under them, …); not failures.
    pub not_accepted: Problem,
    /// Runs found in the database whose submission got no answer (stored, answer lost).
    pub unanswered_but_stored: usize,
    /// Work runs that succeeded with exactly one marker.
    pub ran_once: usize,
    /// Work runs failed as interrupted (a SIGKILL cut their host task), at most one marker.
    pub interrupted: usize,
    /// Timer runs, and the due times they covered.
    pub timer_runs: usize,
    pub timer_dues: usize,
    pub log_reads: usize,
    /// From the first submission to the last run's end.
    pub elapsed: Duration,
    /// How long the graceful stop took (SIGTERM to exit).
    pub graceful_stop: Option<Duration>,
    /// What went wrong, by kind.
    pub problems: BTreeMap<&'static str, Problem>,
    /// The whole logs of the first runs that ran more than once (what the servers said).
    pub twice_logs: Vec<String>,
}

impl Outcome {
    fn problem(&mut self, kind: &'static str, example: String) {
        let p = self.problems.entry(kind).or_default();
        p.count += 1;
        if p.examples.len() < EXAMPLES {
            p.examples.push(example);
        }
    }

    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// The counts and every kind of problem, as lines a person reads.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "| measurement | value |");
        let _ = writeln!(s, "|---|---|");
        let _ = writeln!(s, "| runs submitted / accepted (201) | {} / {} |", self.submitted, self.accepted);
        let _ = writeln!(s, "| submissions not accepted (replica down) | {} |", self.not_accepted.count);
        let _ = writeln!(s, "| stored runs whose answer was lost | {} |", self.unanswered_but_stored);
        let _ = writeln!(s, "| accepted runs that ran exactly once (succeeded, one marker) | {} |", self.ran_once);
        let _ =
            writeln!(s, "| runs interrupted by the SIGKILL (at most one marker, not rerun) | {} |", self.interrupted);
        let _ = writeln!(
            s,
            "| timer runs / due times passed, each fired once | {} / {} |",
            self.timer_runs, self.timer_dues
        );
        let _ = writeln!(s, "| task logs read through every replica | {} |", self.log_reads);
        if let Some(d) = self.graceful_stop {
            let _ = writeln!(s, "| SIGTERM → exit of the stopped replica | {:.1} s |", d.as_secs_f64());
        }
        let _ = writeln!(s, "| first submission → last run ended | {:.1} s |", self.elapsed.as_secs_f64());
        let _ = writeln!(s, "| problems | {} |", self.problems.values().map(|p| p.count).sum::<usize>());
        for (kind, p) in &self.problems {
            let _ = writeln!(s, "\nPROBLEM {kind}: {} time(s), e.g.", p.count);
            for e in &p.examples {
                let _ = writeln!(s, "  - {e}");
            }
        }
        for log in &self.twice_logs {
            let _ = writeln!(s, "\n{log}");
        }
        for e in &self.not_accepted.examples {
            let _ = writeln!(s, "(not accepted: {e})");
        }
        s
    }
}

/// One suite run's pipeline YAML: a host task that appends its marker, sleeps and
/// prints its numbered lines. `every_minutes: 1` in UTC when `timer`.
fn suite_pipeline(name: &str, concurrency: &str, markers: &Path, task_ms: u64, timer: bool) -> String {
    let triggers = if timer { "triggers:\n  - every_minutes: 1\n    timezone: UTC\n" } else { "" };
    let sleep = if task_ms > 0 { format!("sleep {}.{:03}; ", task_ms / 1000, task_ms % 1000) } else { String::new() };
    format!(
        "name: {name}\nexecutor: host\nconcurrency: {concurrency}\n{triggers}stages:\n  - name: Work\n    tasks:\n      \
         - name: t\n        type: script\n        script: 'echo \"M ${{PIPELINE_NAME}} ${{BUILD_ID}} $WHARF_WORKSPACE\" >> {markers}; \
         {sleep}for i in {lines}; do echo \"line $i of ${{PIPELINE_NAME}}#${{BUILD_ID}}\"; done'\n",
        markers = markers.display(),
        lines = (1..=LINES).map(|i| i.to_string()).collect::<Vec<_>>().join(" "),
    )
}

/// Markers per (pipeline name, run number): how many, and the replicas (data
/// directories) they were written on.
struct Markers(BTreeMap<(String, u64), Vec<String>>);

impl Markers {
    fn read(file: &Path) -> Markers {
        let mut seen: BTreeMap<(String, u64), Vec<String>> = BTreeMap::new();
        for line in std::fs::read_to_string(file).unwrap_or_default().lines() {
            let mut words = line.split_whitespace();
            if let (Some("M"), Some(name), Some(Ok(number))) =
                (words.next(), words.next(), words.next().map(str::parse))
            {
                // `…/replicaN/workspaces/<run>/src`: the replica that ran it.
                let place = words.next().unwrap_or_default();
                let replica = place.split('/').find(|p| p.starts_with("replica")).unwrap_or("?");
                seen.entry((name.to_owned(), number)).or_default().push(replica.to_owned());
            }
        }
        Markers(seen)
    }

    fn count(&self, name: &str, number: u64) -> usize {
        self.0.get(&(name.to_owned(), number)).map_or(0, Vec::len)
    }

    /// `2 markers (replica0, replica2)`.
    fn said(&self, name: &str, number: u64) -> String {
        let on = self.0.get(&(name.to_owned(), number)).cloned().unwrap_or_default();
        format!("{} markers ({})", on.len(), on.join(", "))
    }
}

struct Accepted {
    id: i64,
    pipeline: usize,
    number: u64,
}

/// The reliability suite (see the module's text). `Err` when it could not be carried
/// out at all (a replica would not start); problems it found are in the `Outcome`.
pub async fn suite(plan: &Plan) -> Result<Outcome, String> {
    let markers = plan.dir.join("markers");
    set_mode(&plan.dir, 0o711)?;
    set_mode(&markers, 0o777)?;
    let marker_file = markers.join("markers.txt");
    std::fs::write(&marker_file, b"").map_err(|e| format!("{}: {e}", marker_file.display()))?;
    set_file_mode(&marker_file, 0o666)?;

    let (cluster, start_problems) =
        Cluster::start(&plan.wharf, &plan.database_url, &plan.dir, plan.replicas, plan.slots).await?;
    let cluster = Arc::new(cluster);
    let mut result = suite_on(plan, &cluster, &marker_file).await;
    if let Ok(outcome) = &mut result {
        for e in start_problems {
            outcome.problem("simultaneous start", e);
        }
    }
    cluster.stop_all();
    result
}

fn set_file_mode(file: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: {e}", file.display()))
}

async fn suite_on(plan: &Plan, cluster: &Arc<Cluster>, marker_file: &Path) -> Result<Outcome, String> {
    let mut out = Outcome::default();
    let n = plan.replicas;
    // Pipelines, created round-robin across the replicas: 3 with `allow`, 1 with
    // `queue`, then the timer pipelines.
    let mut pipelines: Vec<(i64, String)> = Vec::new();
    let mut specs: Vec<(String, &str, bool)> = (0..3).map(|i| (format!("work{i}"), "allow", false)).collect();
    specs.push(("queued".into(), "queue", false));
    let work = specs.len();
    specs.extend((0..plan.timers).map(|i| (format!("timer{i}"), "allow", true)));
    let timers_created = jiff::Timestamp::now();
    for (k, (name, concurrency, timer)) in specs.iter().enumerate() {
        let task_ms = if *timer { 0 } else { plan.task_ms };
        let id =
            cluster.create_pipeline(k % n, suite_pipeline(name, concurrency, marker_file, task_ms, *timer)).await?;
        pipelines.push((id, name.clone()));
    }

    // Submissions round-robin across the work pipelines and the replicas that are up.
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(Mutex::new(Vec::<Accepted>::new()));
    let refused = Arc::new(Mutex::new(Vec::<String>::new()));
    let first_sent = Instant::now();
    let first_sent_at = jiff::Timestamp::now();
    let mut clients = Vec::new();
    for _ in 0..plan.clients {
        let (cluster, next, accepted, refused) = (cluster.clone(), next.clone(), accepted.clone(), refused.clone());
        let ids: Vec<i64> = pipelines[..work].iter().map(|p| p.0).collect();
        let runs = plan.runs;
        clients.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= runs {
                    break;
                }
                let pipeline = i % ids.len();
                let replica = cluster.live(i % cluster.bases.len());
                match cluster.post(replica, &format!("/pipelines/{}/runs", ids[pipeline]), String::new()).await {
                    Ok((status, body)) if status == reqwest::StatusCode::CREATED => {
                        let (Some(id), Some(number)) = (body["id"].as_i64(), body["number"].as_u64()) else {
                            refused.lock().unwrap().push(format!("201 without id and number: {body}"));
                            continue;
                        };
                        accepted.lock().unwrap().push(Accepted { id, pipeline, number });
                    }
                    Ok((status, body)) => refused.lock().unwrap().push(format!("replica {replica}: {status}: {body}")),
                    Err(e) => refused.lock().unwrap().push(e),
                }
            }
        }));
    }

    // The faults: SIGKILL of replica 0 a third of the way, SIGTERM of replica 1 at two
    // thirds; each started again at once.
    let wait_for = |share: usize| {
        let next = next.clone();
        let runs = plan.runs;
        async move {
            let started = Instant::now();
            while next.load(Ordering::SeqCst) < runs * share / 3 && started.elapsed() < Duration::from_secs(600) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(1).await;
    cluster.kill9(0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.restart(0).await?;
    wait_for(2).await;
    match cluster.terminate(1).await {
        Ok(took) => out.graceful_stop = Some(took),
        Err(e) => out.problem("graceful stop", e),
    }
    cluster.restart(1).await?;
    for client in clients {
        client.await.map_err(|e| format!("a client task: {e}"))?;
    }
    let accepted = std::mem::take(&mut *accepted.lock().unwrap());
    let refused = std::mem::take(&mut *refused.lock().unwrap());
    out.submitted = plan.runs;
    out.accepted = accepted.len();
    out.not_accepted.count = refused.len();
    out.not_accepted.examples = refused.into_iter().take(EXAMPLES).collect();

    // Timers: wait until `timer_dues` whole minutes passed since their creation, then
    // (at most 60 s more: a busy replica fires late) until each of those due times has
    // its run, then deactivate them so the picture stops moving. The due times checked
    // are those up to the last one that had passed when the waiting began.
    let first_due = timers_created.as_second().div_euclid(60) * 60 + 60;
    let timers_until = first_due + 60 * (plan.timer_dues.max(1) as i64 - 1) + 1;
    let deadline = Instant::now() + plan.settle;
    let mut last_due = first_due - 60;
    if plan.timers > 0 {
        while jiff::Timestamp::now().as_second() < timers_until && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        last_due = jiff::Timestamp::now().as_second().div_euclid(60) * 60;
        let fired_by = Instant::now() + Duration::from_secs(60);
        'fired: while Instant::now() < fired_by.min(deadline) {
            for (id, _) in &pipelines[work..] {
                let dues: BTreeSet<i64> = cluster
                    .runs(*id)
                    .await?
                    .iter()
                    .filter_map(|r| match r.record.as_ref().map(|r| &r.cause) {
                        Some(Cause::Timer { due }) => Some(due.as_second()),
                        _ => None,
                    })
                    .collect();
                if (first_due..=last_due).step_by(60).any(|due| !dues.contains(&due)) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue 'fired;
                }
            }
            break;
        }
    }
    for (k, (id, _)) in pipelines[work..].iter().enumerate() {
        let (status, body) =
            cluster.post(cluster.live(k), &format!("/pipelines/{id}/deactivate"), String::new()).await?;
        if !status.is_success() {
            return Err(format!("deactivating timer pipeline {id}: {status}: {body}"));
        }
    }

    // Wait (bounded) until no run is queued, pending, running or waiting.
    let mut all: Vec<(usize, RunListed)>;
    loop {
        all = Vec::new();
        for (k, (id, _)) in pipelines.iter().enumerate() {
            all.extend(cluster.runs(*id).await?.into_iter().map(|r| (k, r)));
        }
        let busy = all.iter().filter(|(_, r)| !r.summary.status.is_terminal()).count();
        if busy == 0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    out.elapsed = all
        .iter()
        .filter_map(|(_, r)| r.record.as_ref()?.times.finished_at)
        .max()
        .map_or(first_sent.elapsed(), |end| end.duration_since(first_sent_at).unsigned_abs());

    let markers = Markers::read(marker_file);
    for (k, run) in &all {
        let name = &pipelines[*k].1;
        if markers.count(name, run.summary.number as u64) > 1 && out.twice_logs.len() < EXAMPLES {
            let log = log_lines(cluster, cluster.live(0), run.summary.id, "").await.unwrap_or_else(|e| e);
            let log: String = log.chars().take(2_000).collect();
            out.twice_logs.push(format!(
                "the whole log of run {} ({name}#{}), which ran twice:\n{log}",
                run.summary.id, run.summary.number
            ));
        }
    }
    let by_id: BTreeMap<i64, &(usize, RunListed)> = all.iter().map(|entry| (entry.1.summary.id, entry)).collect();
    for (_, run) in &all {
        if !run.summary.status.is_terminal() {
            out.problem(
                "stuck",
                format!("run {} is still {} after the wait", run.summary.id, run.summary.status.as_str()),
            );
        }
    }

    // Every accepted work run: exists, ran exactly once (or was interrupted, at most once).
    let accepted_ids: BTreeSet<i64> = accepted.iter().map(|a| a.id).collect();
    let mut succeeded: Vec<(i64, String, u64)> = Vec::new();
    for a in &accepted {
        let name = &pipelines[a.pipeline].1;
        let Some((k, run)) = by_id.get(&a.id).copied() else {
            out.problem(
                "accepted run missing",
                format!("run {} ({name}#{}) answered 201 but is not listed", a.id, a.number),
            );
            continue;
        };
        if *k != a.pipeline || run.summary.number as u64 != a.number {
            out.problem(
                "accepted run changed",
                format!(
                    "run {} answered as {name}#{} is listed as {}#{}",
                    a.id, a.number, pipelines[*k].1, run.summary.number
                ),
            );
        }
        let marks = markers.count(name, a.number);
        match run.summary.status {
            Status::Succeeded if marks == 1 => {
                out.ran_once += 1;
                succeeded.push((a.id, name.clone(), a.number));
            }
            Status::Succeeded => out.problem(
                "not exactly once",
                format!("run {} ({name}#{}) succeeded with {}", a.id, a.number, markers.said(name, a.number)),
            ),
            status if status.is_terminal() => {
                let reason = cluster.get(cluster.live(0), &format!("/runs/{}", a.id)).await?["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if status == Status::Failed && reason.contains("interrupted") && marks <= 1 {
                    out.interrupted += 1;
                } else {
                    out.problem(
                        "not exactly once",
                        format!(
                            "run {} ({name}#{}) ended {} ({reason}) with {marks} markers",
                            a.id,
                            a.number,
                            status.as_str()
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    // Runs nobody was told about (stored, the answer lost with its replica): at most once.
    for (k, run) in &all {
        if *k >= work || accepted_ids.contains(&run.summary.id) {
            continue;
        }
        out.unanswered_but_stored += 1;
        let marks = markers.count(&pipelines[*k].1, run.summary.number as u64);
        if marks > 1 {
            out.problem(
                "not exactly once",
                format!(
                    "run {} ({}#{}) (answer lost) has {marks} markers",
                    run.summary.id, pipelines[*k].1, run.summary.number
                ),
            );
        }
    }

    // The `queue` pipeline: never two runs at once.
    let queue_k = work - 1;
    let mut spans: Vec<(jiff::Timestamp, jiff::Timestamp, i64)> = all
        .iter()
        .filter(|(k, _)| *k == queue_k)
        .filter_map(|(_, r)| {
            let times = &r.record.as_ref()?.times;
            Some((times.started_at?, times.finished_at?, r.summary.number))
        })
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        if w[1].0 < w[0].1 {
            out.problem(
                "queue overlap",
                format!("queued#{} started at {} before queued#{} ended at {}", w[1].2, w[1].0, w[0].2, w[0].1),
            );
        }
    }

    // Timers: each due time at most once; each one from the first due time after the
    // creation to the deactivation fired (exactly once).
    for (k, (_, name)) in pipelines.iter().enumerate().skip(work) {
        let mut dues: BTreeMap<i64, Vec<&RunListed>> = BTreeMap::new();
        for (kk, run) in &all {
            if *kk != k {
                continue;
            }
            match run.record.as_ref().map(|r| &r.cause) {
                Some(Cause::Timer { due }) => dues.entry(due.as_second()).or_default().push(run),
                other => {
                    out.problem("timer run without a timer cause", format!("{name}#{}: {other:?}", run.summary.number))
                }
            }
        }
        out.timer_runs += dues.values().map(Vec::len).sum::<usize>();
        for (due, runs) in &dues {
            if runs.len() > 1 {
                let numbers: Vec<i64> = runs.iter().map(|r| r.summary.number).collect();
                out.problem("timer fired twice", format!("{name} due {due} (epoch s) ran as {numbers:?}"));
            }
            for run in runs {
                let number = run.summary.number as u64;
                if run.summary.status == Status::Succeeded && markers.count(name, number) != 1 {
                    out.problem(
                        "not exactly once",
                        format!("{name}#{number} succeeded with {}", markers.said(name, number)),
                    );
                }
                if run.summary.status == Status::Succeeded {
                    succeeded.push((run.summary.id, name.clone(), run.summary.number as u64));
                }
            }
        }
        let mut due = first_due;
        while due <= last_due {
            out.timer_dues += 1;
            if !dues.contains_key(&due) {
                out.problem("timer due time missed", format!("{name} due {due} (epoch s) has no run"));
            }
            due += 60;
        }
    }

    // Logs: every succeeded run's lines, exactly once, through every replica.
    let next = Arc::new(AtomicUsize::new(0));
    let succeeded = Arc::new(succeeded);
    let found = Arc::new(Mutex::new(Vec::<(&'static str, String)>::new()));
    let mut readers = Vec::new();
    for _ in 0..plan.clients {
        let (cluster, next, succeeded, found) = (cluster.clone(), next.clone(), succeeded.clone(), found.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0;
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((id, name, number)) = succeeded.get(i / cluster.bases.len()) else { break };
                let replica = i % cluster.bases.len();
                reads += 1;
                match log_lines(&cluster, replica, *id, "t").await {
                    Ok(text) => {
                        for line in 1..=LINES {
                            let want = format!(" out line {line} of {name}#{number}");
                            let times = text.lines().filter(|l| l.ends_with(&want)).count();
                            if times != 1 {
                                found.lock().unwrap().push((
                                    if times == 0 { "log line missing" } else { "log line repeated" },
                                    format!("run {id} ({name}#{number}) through replica {replica}: line {line} {times} times"),
                                ));
                                break;
                            }
                        }
                    }
                    Err(e) => found.lock().unwrap().push(("log unreadable", e)),
                }
            }
            reads
        }));
    }
    for reader in readers {
        out.log_reads += reader.await.map_err(|e| format!("a log reader: {e}"))?;
    }
    for (kind, example) in std::mem::take(&mut *found.lock().unwrap()) {
        out.problem(kind, example);
    }
    Ok(out)
}

/// The stored log of task `task` of run `id` (the whole run's with `""`), through `replica`.
async fn log_lines(cluster: &Cluster, replica: usize, id: i64, task: &str) -> Result<String, String> {
    let path =
        if task.is_empty() { format!("/runs/{id}/log") } else { format!("/runs/{id}/tasks/{task}/log?offset=0") };
    let r = cluster
        .client
        .get(cluster.url(replica, &path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .map_err(|e| format!("GET {path} on replica {replica}: {e}"))?;
    let status = r.status();
    let text = r.text().await.map_err(|e| format!("GET {path} on replica {replica}: {e}"))?;
    if !status.is_success() {
        return Err(format!("GET {path} on replica {replica}: {status}: {text}"));
    }
    Ok(text)
}

// ---------------------------------------------------------------------------------
// Runs per second
// ---------------------------------------------------------------------------------

/// Runs/s of `runs` trivial runs (`concurrency: allow`, four pipelines) through
/// `replicas` replicas on an empty database: from the first request to the last run's
/// end. Every run must succeed.
pub async fn throughput(
    wharf: &Path,
    database_url: &str,
    dir: &Path,
    replicas: usize,
    runs: usize,
    clients: usize,
    slots: usize,
) -> Result<(Duration, usize), String> {
    let (cluster, start_problems) = Cluster::start(wharf, database_url, dir, replicas, slots).await?;
    if let Some(e) = start_problems.first() {
        eprintln!("(a replica failed the simultaneous start and was started again alone: {e})");
    }
    let cluster = Arc::new(cluster);
    let result = async {
        let mut ids = Vec::new();
        for k in 0..4 {
            let yaml = format!(
                "name: fast{k}\nexecutor: host\nconcurrency: allow\nstages:\n  - name: Work\n    tasks:\n      \
                 - {{name: t, type: script, script: 'true'}}\n"
            );
            ids.push(cluster.create_pipeline(k % replicas, yaml).await?);
        }
        let next = Arc::new(AtomicUsize::new(0));
        let first_sent_at = jiff::Timestamp::now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (cluster, next, ids) = (cluster.clone(), next.clone(), ids.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= runs {
                        return Ok(());
                    }
                    let path = format!("/pipelines/{}/runs", ids[i % ids.len()]);
                    let (status, body) = cluster.post(i % cluster.bases.len(), &path, String::new()).await?;
                    if status != reqwest::StatusCode::CREATED {
                        return Err(format!("POST {path}: {status}: {body}"));
                    }
                }
            }));
        }
        for task in tasks {
            task.await.map_err(|e| format!("a client task: {e}"))??;
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let mut all = Vec::new();
            for id in &ids {
                all.extend(cluster.runs(*id).await?);
            }
            let done = all.iter().filter(|r| r.summary.status.is_terminal()).count();
            if done == all.len() && all.len() >= runs {
                let succeeded = all.iter().filter(|r| r.summary.status == Status::Succeeded).count();
                let end = all.iter().filter_map(|r| r.record.as_ref()?.times.finished_at).max();
                let took = end.map_or(Duration::ZERO, |end| end.duration_since(first_sent_at).unsigned_abs());
                return Ok((took, succeeded));
            }
            if Instant::now() >= deadline {
                return Err(format!("{done} of {} runs ended within 600 s", all.len()));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    .await;
    cluster.stop_all();
    result
}

// ---------------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------------

/// A PostgreSQL server and the databases made on it (dropped at the end).
struct Databases {
    base: String,
    made: Vec<String>,
}

impl Databases {
    fn new(base: Option<String>) -> Result<Databases, String> {
        let base = match base {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg-test-env.sh");
                let out = Command::new("bash")
                    .arg(&script)
                    .stderr(Stdio::inherit())
                    .output()
                    .map_err(|e| format!("running {}: {e}", script.display()))?;
                if !out.status.success() {
                    return Err(format!("{} failed (its reason is above); or pass --database-url", script.display()));
                }
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .find_map(|l| l.strip_prefix("WHARF_TEST_PG_URL="))
                    .ok_or("scripts/pg-test-env.sh printed no WHARF_TEST_PG_URL")?
                    .to_owned()
            }
        };
        Ok(Databases { base, made: vec![] })
    }

    async fn admin(&self) -> Result<sqlx::PgConnection, String> {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&format!("{}/postgres", self.base))
            .await
            .map_err(|e| format!("connecting to the PostgreSQL server's `postgres` database: {e}"))
    }

    async fn create(&mut self, what: &str) -> Result<String, String> {
        let name = format!("wharf_bench_{what}_{}", std::process::id());
        let mut conn = self.admin().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
        self.made.push(name.clone());
        Ok(format!("{}/{name}", self.base))
    }

    async fn drop_all(&mut self) {
        let Ok(mut conn) = self.admin().await else { return };
        for name in self.made.drain(..) {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                .execute(&mut conn)
                .await;
        }
    }
}

pub fn main(args: Args) {
    crate::require_binary(&args.wharf);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = crate::work_dir(args.dir.as_deref(), tmp.path());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let passed = runtime.block_on(async {
        let mut dbs = match Databases::new(args.database_url.clone()) {
            Ok(dbs) => dbs,
            Err(e) => {
                eprintln!("wharf-bench replicas: {e}");
                return false;
            }
        };
        let passed = measure(&args, &dir, &mut dbs).await.unwrap_or_else(|e| {
            eprintln!("wharf-bench replicas: {e}");
            false
        });
        dbs.drop_all().await;
        passed
    });
    if !passed {
        std::process::exit(1);
    }
}

async fn measure(args: &Args, dir: &Path, dbs: &mut Databases) -> Result<bool, String> {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "wharf-bench replicas: {}, cores: {}, load average at start: {}",
        args.wharf.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    if !args.skip_throughput {
        println!();
        println!("### {} trivial runs, --max-parallel-tasks {} per replica", args.runs, args.slots);
        println!();
        println!("| replicas | first request → last run ended | runs/s | succeeded |");
        println!("|---|---|---|---|");
        let mut counts = vec![1, args.replicas];
        counts.dedup();
        for n in counts {
            let url = dbs.create(&format!("rate{n}")).await?;
            let (took, succeeded) =
                throughput(&args.wharf, &url, &dir.join(format!("rate{n}")), n, args.runs, args.clients, args.slots)
                    .await?;
            println!(
                "| {n} | {:.2} s | {:.0} | {succeeded}/{} |",
                took.as_secs_f64(),
                args.runs as f64 / took.as_secs_f64(),
                args.runs
            );
        }
    }
    if args.skip_suite {
        return Ok(true);
    }
    let url = dbs.create("suite").await?;
    let plan = Plan {
        wharf: args.wharf.clone(),
        database_url: url,
        dir: dir.join("suite"),
        replicas: args.replicas,
        runs: args.runs,
        clients: args.clients,
        slots: args.slots,
        task_ms: 200,
        timers: 3,
        timer_dues: 1,
        settle: Duration::from_secs(args.settle_secs as u64),
    };
    println!();
    println!(
        "### The suite: {} runs on {} replicas, replica 0 SIGKILLed and restarted, replica 1 SIGTERMed and restarted",
        args.runs, args.replicas
    );
    println!();
    let outcome = suite(&plan).await?;
    print!("{}", outcome.summary());
    println!();
    println!("{}", if outcome.passed() { "PASSED" } else { "FAILED" });
    Ok(outcome.passed())
}
