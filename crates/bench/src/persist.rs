//! `wharf-bench persist`: what persisting a large run costs the server (issue 11,
//! finding 3), measured from outside the `wharf serve` process so that any two
//! binaries (before and after a change) compare in the same run of the machine.
//!
//! ```text
//! cargo build -p wharf -p wharf-bench
//! target/debug/wharf-bench persist --wharf A [--wharf B …] [--stages 5] [--tasks 100]
//!     [--slots 8] [--huge 0] [--huge-rss-mib 3072] [--huge-secs 120]
//! ```
//!
//! For each binary, on a fresh data directory:
//! 1. **complete**: a pipeline of `--stages` stages of `--tasks` parallel `true` tasks
//!    run to its end;
//! 2. **stop**: the same shape running `sleep 30`, stopped once `--slots` tasks run
//!    (the rest are pending), waited for until `stopped`;
//! 3. **huge** (`--huge N` > 0): one stage of N parallel `sleep 30` tasks, stopped as
//!    in 2, with the server killed when its RSS passes `--huge-rss-mib` or the stop
//!    takes longer than `--huge-secs` (a binary with size limits refuses it at save).
//!
//! Each reports the server's peak RSS (`VmHWM`), the CPU time it used, the bytes it
//! wrote (`wchar` of `/proc/<pid>/io`, less the bytes of the answers the bench read,
//! so mostly the SQLite WAL and the log files), the status changes of the run (history
//! entries of the final record) and the bytes written per change; and, where the
//! binary has them, its `wharf_run_record_{updates,writes,written_bytes}_total`.

use crate::server::Wharf;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What persisting a large run costs the server, per binary (issue 11).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A `wharf` binary to measure; repeat to compare builds in the same run.
    #[arg(long = "wharf", value_name = "PATH", default_value = "target/debug/wharf")]
    binaries: Vec<PathBuf>,
    /// Stages of the pipeline.
    #[arg(long, default_value_t = 5, value_parser = crate::positive)]
    stages: usize,
    /// Parallel tasks per stage.
    #[arg(long, default_value_t = 100, value_parser = crate::positive)]
    tasks: usize,
    /// `--max-parallel-tasks` of the server.
    #[arg(long, default_value_t = 8, value_parser = crate::positive)]
    slots: usize,
    /// Tasks of the one-stage "huge" scenario (0: skip it).
    #[arg(long, default_value_t = 0)]
    huge: usize,
    /// The huge scenario kills the server above this RSS.
    #[arg(long, default_value_t = 3072)]
    huge_rss_mib: u64,
    /// The huge scenario kills the server when the stop takes longer.
    #[arg(long, default_value_t = 120)]
    huge_secs: u64,
}

fn pipeline(name: &str, stages: usize, tasks: usize, script: &str) -> String {
    let mut yaml = format!("name: {name}\nconcurrency: allow\nstages:\n");
    for s in 0..stages {
        yaml.push_str(&format!("  - name: s{s}\n    mode: parallel\n    tasks:\n"));
        for t in 0..tasks {
            yaml.push_str(&format!("      - {{name: s{s}-t{t}, type: script, script: '{script}'}}\n"));
        }
    }
    yaml
}

/// One measured scenario.
#[derive(Default)]
struct Figures {
    outcome: String,
    wall: Duration,
    peak_rss_kib: u64,
    cpu: Duration,
    written: u64,
    changes: u64,
    metrics: Option<(u64, u64, u64)>,
}

/// `wchar` of the process: bytes it handed to `write` and friends.
fn wchar(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("wchar: ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Status changes a final record holds: every history entry of the run, checkout,
/// stages and tasks (the first, `queued`, is the creation, not a change).
fn changes(run: &Value) -> u64 {
    let count = |v: &Value| v["history"].as_array().map_or(0, |h| h.len().saturating_sub(1) as u64);
    let mut n = count(run) + count(&run["checkout"]);
    for stage in run["stages"].as_array().into_iter().flatten() {
        n += count(stage);
        n += stage["tasks"].as_array().into_iter().flatten().map(count).sum::<u64>();
    }
    n
}

fn count_status(run: &Value, status: &str) -> usize {
    run["stages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["tasks"].as_array().into_iter().flatten())
        .filter(|t| t["status"] == status)
        .count()
}

/// The three record counters, when the binary has them.
async fn record_metrics(wharf: &Wharf, read: &mut u64) -> Option<(u64, u64, u64)> {
    let text = wharf.client.get(format!("{}/metrics", wharf.base)).send().await.ok()?.text().await.ok()?;
    *read += text.len() as u64;
    let value = |name: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{name} ")))?.parse().ok();
    Some((
        value("wharf_run_record_updates_total")?,
        value("wharf_run_record_writes_total")?,
        value("wharf_run_record_written_bytes_total")?,
    ))
}

/// `GET /runs/{id}`, adding the answer's bytes to `read`; `None` once the server is gone.
async fn run_of(wharf: &Wharf, id: i64, read: &mut u64) -> Option<Value> {
    let r = wharf.client.get(wharf.url(&format!("/runs/{id}"))).bearer_auth(crate::server::TOKEN).send().await;
    let text = r.ok()?.text().await.ok()?;
    *read += text.len() as u64;
    serde_json::from_str(&text).ok()
}

/// Kills `pid` (SIGKILL) once its RSS passes `limit_kib` or `within` has passed; looks
/// every 20 ms, on a thread of its own (the server may be too busy to answer the
/// bench). Returns why it killed, if it did.
fn guard(pid: u32, limit_kib: u64, within: Duration) -> std::thread::JoinHandle<Option<String>> {
    let started = Instant::now();
    std::thread::spawn(move || {
        loop {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return None };
            let rss: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0);
            if status.lines().any(|l| l.starts_with("State:") && l.contains('Z')) {
                return None;
            }
            if rss > limit_kib || started.elapsed() > within {
                let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
                return Some(format!(
                    "killed at {} MiB RSS after {:.1} s",
                    rss / 1024,
                    started.elapsed().as_secs_f64()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// Runs one scenario on a fresh server; `stop`: stop once the slots are busy. A
/// pipeline refused at save is an outcome too.
async fn scenario(
    binary: &std::path::Path,
    data: PathBuf,
    yaml: &str,
    slots: usize,
    stop: bool,
    limits: (u64, u64),
) -> Figures {
    let wharf = Wharf::start(binary, &data, &["--max-parallel-tasks", &slots.to_string(), "--executor", "host"]).await;
    let pid = wharf.pid();
    let saved = wharf.client.post(wharf.url("/pipelines")).bearer_auth(crate::server::TOKEN).body(yaml.to_owned());
    let saved = saved.send().await.unwrap();
    if !saved.status().is_success() {
        let status = saved.status();
        let body: Value = saved.json().await.unwrap_or_default();
        let detail = &body["error"]["details"][0];
        return Figures {
            outcome: format!(
                "refused at save ({status}): {}:{} {}: {}",
                detail["line"],
                detail["column"],
                detail["path"].as_str().unwrap_or(""),
                detail["message"].as_str().unwrap_or("")
            ),
            ..Figures::default()
        };
    }
    let id = saved.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let mut read = 0;
    let before = record_metrics(&wharf, &mut read).await;
    let (w0, c0) = (wchar(pid), wharf.cpu());
    read = 0;
    let started = Instant::now();
    let run = wharf.post(&format!("/pipelines/{id}/runs"), json!({}).to_string()).await;
    let run_id = run["id"].as_i64().unwrap();
    let watchdog = guard(pid, limits.0 * 1024, Duration::from_secs(limits.1));
    let mut stop_sent = false;
    let mut peak = 0;
    let last = loop {
        tokio::time::sleep(Duration::from_millis(if stop_sent || !stop { 500 } else { 100 })).await;
        if watchdog.is_finished() {
            break Value::Null;
        }
        peak = wharf.rss().1;
        let Some(run) = run_of(&wharf, run_id, &mut read).await else { break Value::Null };
        if ["succeeded", "failed", "stopped", "timed_out"].contains(&run["status"].as_str().unwrap_or("")) {
            break run;
        }
        if stop && !stop_sent && count_status(&run, "running") >= slots {
            let r = wharf.client.post(wharf.url(&format!("/runs/{run_id}/stop"))).bearer_auth(crate::server::TOKEN);
            r.send().await.unwrap();
            stop_sent = true;
        }
    };
    let wall = started.elapsed();
    if last.is_null() {
        let why = watchdog.join().unwrap().unwrap_or_else(|| "the server died".to_owned());
        return Figures { outcome: why, wall, peak_rss_kib: peak, ..Figures::default() };
    }
    let (_, peak) = wharf.rss();
    let cpu = wharf.cpu() - c0;
    let written = wchar(pid).saturating_sub(w0).saturating_sub(read);
    let after = record_metrics(&wharf, &mut 0).await;
    let metrics = before.zip(after).map(|(b, a)| (a.0 - b.0, a.1 - b.1, a.2 - b.2));
    wharf.stop();
    let _ = watchdog.join();
    Figures {
        outcome: last["status"].as_str().unwrap_or("?").to_owned(),
        wall,
        peak_rss_kib: peak,
        cpu,
        written,
        changes: changes(&last),
        metrics,
    }
}

pub fn main(args: Args) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let temp = tempfile::tempdir().unwrap();
        let (stages, tasks) = (args.stages, args.tasks);
        let shape = format!("{stages} × {tasks}");
        let mut scenarios = vec![
            (format!("complete, {shape} `true`"), pipeline("complete", stages, tasks, "true"), false),
            (format!("stop, {shape} `sleep 30`"), pipeline("stop", stages, tasks, "sleep 30"), true),
        ];
        if args.huge > 0 {
            scenarios.push((format!("stop, 1 × {} `sleep 30`", args.huge), pipeline("huge", 1, args.huge, "sleep 30"), true));
        }
        println!(
            "| binary | scenario | outcome | wall s | peak RSS MiB | CPU s | bytes written | status changes | bytes / change | updates / writes / record bytes (metrics) |"
        );
        println!("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
        for (b, binary) in args.binaries.iter().enumerate() {
            for (s, (name, yaml, stop)) in scenarios.iter().enumerate() {
                let data = temp.path().join(format!("b{b}-s{s}"));
                let f = scenario(binary, data, yaml, args.slots, *stop, (args.huge_rss_mib, args.huge_secs)).await;
                let per_change = f.written.checked_div(f.changes).map_or("–".to_owned(), |b| b.to_string());
                let metrics = f.metrics.map_or("–".to_owned(), |(u, w, bytes)| format!("{u} / {w} / {bytes}"));
                println!(
                    "| {} | {name} | {} | {:.2} | {:.1} | {:.2} | {} | {} | {per_change} | {metrics} |",
                    binary.display(),
                    f.outcome,
                    f.wall.as_secs_f64(),
                    f.peak_rss_kib as f64 / 1024.0,
                    f.cpu.as_secs_f64(),
                    f.written,
                    f.changes,
                );
            }
        }
    });
}
