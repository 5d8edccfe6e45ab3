//! `wharf-bench figures`: the figures of issue 19 in one run, each beside its goal and,
//! where one exists, a floor measured in the same run — so a regression shows the day
//! it lands.
//!
//! ```text
//! cargo build --release -p wharf -p wharf-bench
//! target/release/wharf-bench figures [--pipelines 10000] [--runs 1000000] [--requests 500]
//!     [--concurrent 1000] [--slots 8] [--clients 32] [--docker-runs 100] [--docker-slots 2]
//!     [--image wharf-test/busybox:1.35] [--deliveries 50] [--wharf target/release/wharf]
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
//!    (with as many run-list pages before them), against `GET /healthz` round trips;
//! 4. `--docker-runs` runs of one container task (`echo hi` in `--image`, network
//!    `none`) started at once on a server with `--max-parallel-tasks --docker-slots`
//!    and the Docker executor, against the same containers over the Engine API,
//!    `--docker-slots` at a time (needs dockerd and the image: `bash
//!    scripts/test-env.sh`; `--docker-runs 0` leaves it out);
//! 5. `--deliveries` signed GitHub pushes one at a time, delivery → first task
//!    `running` (the run clones the pushed branch), against a bare `git clone --depth 1`
//!    of the same branch (`wharf-bench webhook`'s latency part; `0` leaves it out).

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
    /// Container runs started at once (0: no Docker figure).
    #[arg(long, default_value_t = 100)]
    docker_runs: usize,
    /// `--max-parallel-tasks` of the Docker server, and the floor's parallelism.
    #[arg(long, default_value_t = 2, value_parser = crate::positive)]
    docker_slots: usize,
    /// The image of the container runs.
    #[arg(long, default_value = "wharf-test/busybox:1.35")]
    image: String,
    /// Webhook deliveries for the delivery → first task figure (0: none).
    #[arg(long, default_value_t = 50)]
    deliveries: usize,
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
    wharf_bench::require_binary(&args.wharf);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        crate::server::print_machine(&args.wharf, dir);

        let wharf = Wharf::start(&args.wharf, &dir.join("empty"), &[]).await;
        let (empty_start, empty_cpu) = (wharf.started_in, wharf.cpu());
        let (empty_mem, _) = idle_memory(&wharf).await;
        wharf.stop();

        let slots = args.slots.to_string();
        let wharf = Wharf::start(&args.wharf, &dir.join("burst"), &["--max-parallel-tasks", slots.as_str()]).await;
        let burst = concurrent_runs(&wharf, args.concurrent, args.clients, args.slots).await;
        wharf.stop();

        let containers = if args.docker_runs > 0 {
            let slots = args.docker_slots.to_string();
            let flags = ["--executor", "docker", "--docker-network", "none", "--max-parallel-tasks", slots.as_str()];
            let wharf = Wharf::start(&args.wharf, &dir.join("docker"), &flags).await;
            let yaml = format!(
                "name: containers\nconcurrency: allow\nstages:\n  - name: Build\n    tasks:\n      \
                 - {{name: t, type: script, image: '{}', script: 'echo hi'}}\n",
                args.image
            );
            // Warm up the daemon and the image's layers first, the floor's way.
            crate::docker::api_slots_floor(&args.image, args.docker_slots, args.docker_slots).await;
            let image = args.image.clone();
            let (n, slots) = (args.docker_runs, args.docker_slots);
            let floor = || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                std::thread::spawn(move || runtime.block_on(crate::docker::api_slots_floor(&image, n, slots)))
                    .join()
                    .expect("the Engine API floor")
            };
            let runs = crate::server::burst(&wharf, &yaml, args.docker_runs, args.clients, floor).await;
            wharf.stop();
            Some(runs)
        } else {
            None
        };

        let hooks = if args.deliveries > 0 {
            Some(crate::webhook::delivery_and_clone(&args.wharf, &dir.join("hooks"), args.deliveries).await)
        } else {
            None
        };

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
            "| {} concurrent trivial runs, {} slots ({}/{} succeeded) | {} ms, {:.0} runs/s, **{ratio:.1}×** the floor; CPU per run: server {:.2} ms, task {:.2} ms | {} × `sh -c true`, {} at a time: {} ms | ≤ 2× | {} |",
            args.concurrent,
            args.slots,
            burst.succeeded,
            args.concurrent,
            ms(burst.total),
            args.concurrent as f64 / burst.total.as_secs_f64(),
            burst.server_cpu.as_secs_f64() * 1e3 / args.concurrent as f64,
            burst.task_cpu.as_secs_f64() * 1e3 / args.concurrent as f64,
            args.concurrent,
            args.slots,
            ms(burst.floor),
            met(ratio <= 2.0 && burst.succeeded == args.concurrent)
        );
        if let Some(b) = &containers {
            let rate = args.docker_runs as f64 / b.total.as_secs_f64();
            let floor_rate = args.docker_runs as f64 / b.floor.as_secs_f64();
            println!(
                "| {} container runs (`echo hi`, network none), {} slots ({}/{} succeeded) | {} ms, {rate:.2} runs/s, **{:.0} %** of the floor | Engine API create/start/wait/remove, {} at a time: {} ms, {floor_rate:.2}/s | ≥ 95 % | {} |",
                args.docker_runs,
                args.docker_slots,
                b.succeeded,
                args.docker_runs,
                ms(b.total),
                100.0 * rate / floor_rate,
                args.docker_slots,
                ms(b.floor),
                met(rate >= 0.95 * floor_rate && b.succeeded == args.docker_runs)
            );
        }
        if let Some((mut total, mut clone)) = hooks {
            let (task, bare) = (quantile(&mut total, 0.5), quantile(&mut clone, 0.5));
            let ratio = task.as_secs_f64() / bare.as_secs_f64();
            println!(
                "| webhook delivery → first task `running`, p50 of {} (p99) | {} ms ({} ms), **{ratio:.2}×** the floor | bare `git clone --depth 1` of the branch, p50 {} ms | ≤ 1.05× | {} |",
                args.deliveries,
                ms(task),
                ms(quantile(&mut total, 0.99)),
                ms(bare),
                met(ratio <= 1.05)
            );
        }
        println!();
        println!("(loading the data straight into SQLite took {:.1} s)", loaded_in.as_secs_f64());
    });
}
