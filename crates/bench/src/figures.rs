//! `wharf-bench figures`: the figures of issue 19 in one run, each beside its goal and,
//! where one exists, a floor measured in the same run — so a regression shows the day
//! it lands.
//!
//! ```text
//! cargo build --release -p wharf -p wharf-bench
//! target/release/wharf-bench figures [--pipelines 10000] [--runs 1000000] [--requests 500]
//!     [--concurrent 1000] [--slots 8] [--clients 32] [--wharf target/release/wharf]
//! ```
//!
//! The measurements are `wharf-bench server`'s (see `server.rs`), fewer of them:
//! 1. an empty data directory: start to first `/healthz` (and the CPU time the server
//!    used by then, in 10 ms ticks: less at the mercy of a busy machine), then the resident memory once
//!    the server used no CPU for 2 s (`VmRSS`, split into `RssAnon`, the server's own
//!    memory, and `RssFile`, mostly the binary's code mapped from the page cache);
//! 2. `--concurrent` trivial runs (`concurrency: allow`) from `--clients` clients on
//!    `--max-parallel-tasks --slots`, against the floor of as many bare `sh -c true`,
//!    `--slots` at a time;
//! 3. at size (`--pipelines` pipelines, `--runs` run records, loaded straight into
//!    SQLite as the server would have stored them): start to first `/healthz`, idle
//!    memory as in 1, and `--requests` × `GET /pipelines?limit=50&page={random}`
//!    (with as many run-list pages before them), against `GET /healthz` round trips.

use crate::server::{Wharf, concurrent_runs, load, mib, ms, page_latency, quantile};
use std::path::PathBuf;
use std::time::Duration;

/// The figures of issue 19 in one run, with their goals and floors (issue 19).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Pipelines loaded straight into SQLite for the figures at size.
    #[arg(long, default_value_t = 10_000, value_parser = crate::positive)]
    pipelines: usize,
    /// Succeeded run records loaded with them.
    #[arg(long, default_value_t = 1_000_000)]
    runs: usize,
    /// Pipeline-list pages requested at size (and as many run-list pages before them).
    #[arg(long, default_value_t = 500, value_parser = crate::positive)]
    requests: usize,
    /// Trivial runs started at once.
    #[arg(long, default_value_t = 1_000, value_parser = crate::positive)]
    concurrent: usize,
    /// `--max-parallel-tasks` of that server, and the floor's parallelism.
    #[arg(long, default_value_t = 8, value_parser = crate::positive)]
    slots: usize,
    /// Concurrent clients starting the runs.
    #[arg(long, default_value_t = 32, value_parser = crate::positive)]
    clients: usize,
    /// The `wharf` binary to measure.
    #[arg(long, default_value = "target/release/wharf")]
    wharf: PathBuf,
}

/// Resident memory once idle: (VmRSS, RssAnon, RssFile) in KiB, and when it went quiet.
async fn idle_memory(wharf: &Wharf) -> ((u64, u64, u64), Duration) {
    let (quiet_after, _) = wharf.settle(Duration::from_secs(120)).await;
    let (rss, _) = wharf.rss();
    let (anon, file) = wharf.rss_split();
    ((rss, anon, file), quiet_after)
}

fn memory(kib: (u64, u64, u64)) -> String {
    format!("{} MiB ({} own + {} mapped files)", mib(kib.0), mib(kib.1), mib(kib.2))
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

pub fn main(args: Args) {
    assert!(
        args.wharf.exists(),
        "{} not found; build it: cargo build --release -p wharf -p wharf-bench",
        args.wharf.display()
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "server: {}, cores: {}, load average at start: {}",
            args.wharf.display(),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            load_avg.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        );

        let wharf = Wharf::start(&args.wharf, &dir.join("empty"), &[]).await;
        let (empty_start, empty_cpu) = (wharf.started_in, wharf.cpu());
        let (empty_mem, _) = idle_memory(&wharf).await;
        wharf.stop();

        let slots = args.slots.to_string();
        let wharf = Wharf::start(&args.wharf, &dir.join("burst"), &["--max-parallel-tasks", slots.as_str()]).await;
        let burst = concurrent_runs(&wharf, args.concurrent, args.clients, args.slots).await;
        wharf.stop();

        let data = dir.join("loaded");
        std::fs::create_dir_all(&data).unwrap();
        let loaded_in = load(&data.join("wharf.db"), args.pipelines, args.runs).await;
        let wharf = Wharf::start(&args.wharf, &data, &[]).await;
        let (sized_start, sized_cpu) = (wharf.started_in, wharf.cpu());
        let (sized_mem, quiet_after) = idle_memory(&wharf).await;
        let mut healthz = Vec::with_capacity(args.requests);
        for _ in 0..args.requests {
            healthz.push(wharf.healthz().await);
        }
        let mut pages = page_latency(&wharf, args.pipelines, args.requests).await;
        wharf.stop();

        let list_p99 = quantile(&mut pages.pipelines, 0.99);
        let list_p50 = quantile(&mut pages.pipelines, 0.5);
        let healthz_p99 = quantile(&mut healthz, 0.99);
        let healthz_p50 = quantile(&mut healthz, 0.5);
        let ratio = burst.total.as_secs_f64() / burst.floor.as_secs_f64();
        let size = format!("{} pipelines + {} runs", args.pipelines, args.runs);
        println!();
        println!("| figure | measured | floor in the same run | goal | |");
        println!("|---|---|---|---|---|");
        println!(
            "| start → first `/healthz`, {size} (server CPU by then) | {} ms ({} ms) | empty data dir: {} ms ({} ms) | < 50 ms | {} |",
            ms(sized_start),
            sized_cpu.as_millis(),
            ms(empty_start),
            empty_cpu.as_millis(),
            met(sized_start < Duration::from_millis(50))
        );
        println!(
            "| idle RSS, {size} (quiet {:.1} s after start) | {} | | ≤ 20 MiB | {} |",
            quiet_after.as_secs_f64(),
            memory(sized_mem),
            met(sized_mem.0 <= 20 * 1024)
        );
        println!("| idle RSS, empty data dir | {} | | ≤ 12 MiB | {} |", memory(empty_mem), met(empty_mem.0 <= 12 * 1024));
        println!(
            "| `GET /pipelines?limit=50&page=random` at size, p99 (p50) | {} ms ({} ms) | `GET /healthz` p99 {} ms (p50 {} ms) | p99 < 5 ms | {} |",
            ms(list_p99),
            ms(list_p50),
            ms(healthz_p99),
            ms(healthz_p50),
            met(list_p99 < Duration::from_millis(5))
        );
        println!(
            "| {} concurrent trivial runs, {} slots ({}/{} succeeded) | {} ms, {:.0} runs/s, **{ratio:.1}×** the floor | {} × `sh -c true`, {} at a time: {} ms | ≤ 2× | {} |",
            args.concurrent,
            args.slots,
            burst.succeeded,
            args.concurrent,
            ms(burst.total),
            args.concurrent as f64 / burst.total.as_secs_f64(),
            args.concurrent,
            args.slots,
            ms(burst.floor),
            met(ratio <= 2.0 && burst.succeeded == args.concurrent)
        );
        println!();
        println!(
            "(loading the data straight into SQLite took {:.1} s; not measured here: the docker and webhook figures, see `wharf-bench docker` and `wharf-bench webhook`)",
            loaded_in.as_secs_f64()
        );
    });
}
