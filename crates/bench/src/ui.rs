//! `wharf-bench ui`: the server time of the web UI's first render (issue 7), with
//! `--pipelines` pipelines (default 1,000) and `--runs` run records loaded straight
//! into SQLite, against a real `wharf serve` process on loopback.
//!
//! ```text
//! cargo build --release -p wharf -p wharf-bench
//! target/release/wharf-bench ui [--pipelines 1000] [--runs 100000] [--reps 200] [--wharf target/release/wharf]
//! ```
//!
//! A page's first render needs, from the server: the HTML shell, its stylesheet and
//! JavaScript modules, and the API answers the page draws from. Each repetition
//! requests exactly those, one after another over one keep-alive connection (a
//! browser fetches several at once, so this sum is an upper bound), and the table
//! shows the total per page:
//! - **pipeline list**: `/pipelines`, `app.css`, `app.js`, `auth.js`, `ui.js`,
//!   `pipelines.js`, `dialogs.js`, then `GET /api/v1/pipelines?limit=50&page=P` (P at random);
//! - **run page**: `/runs/ID`, the same shell assets, `run.js`, `log.js`, `ansi.js`,
//!   `dialogs.js`, then `GET /api/v1/runs/ID` and the selected task's log stream up to
//!   its first event (ID a random record of a random pipeline).
//!
//! The floor is the same number of `GET /healthz` round trips on the same connection.

use super::server::{TOKEN, Wharf, load, ms, quantile};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The server time of the web UI's first render (issue 7).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Pipelines loaded straight into SQLite.
    #[arg(long, default_value_t = 1_000, value_parser = crate::positive)]
    pipelines: usize,
    /// Succeeded run records loaded with them.
    #[arg(long, default_value_t = 100_000)]
    runs: usize,
    /// Measured repetitions of each page.
    #[arg(long, default_value_t = 200, value_parser = crate::positive)]
    reps: usize,
    /// The `wharf` binary to measure.
    #[arg(long, default_value = "target/release/wharf")]
    wharf: PathBuf,
}

const SHELL_ASSETS: [&str; 7] = [
    "/ui/app.css",
    "/ui/js/app.js",
    "/ui/js/auth.js",
    "/ui/js/ui.js",
    "/ui/js/i18n.js",
    "/ui/js/i18n/en.js",
    "/ui/js/i18n/zh-CN.js",
];

/// GETs `path` (with the token for the API), reads the whole body; fails on an error.
async fn fetch(wharf: &Wharf, path: &str) -> usize {
    let url = format!("{}{path}", wharf.base);
    let r = wharf.client.get(url).bearer_auth(TOKEN).send().await.unwrap();
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    r.bytes().await.unwrap().len()
}

/// The stream's first event (a line, or `end` for a log without lines).
async fn first_event(wharf: &Wharf, path: &str) {
    let mut r = wharf.client.get(format!("{}{path}", wharf.base)).bearer_auth(TOKEN).send().await.unwrap();
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    let mut seen = Vec::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        seen.extend_from_slice(&chunk);
        if seen.windows(2).any(|w| w == b"\n\n") {
            return;
        }
    }
}

pub fn main(args: Args) {
    assert!(args.wharf.exists(), "{} not found; build it: cargo build --release -p wharf", args.wharf.display());
    let tmp = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "server: {}, cores: {}, load average at start: {}",
            args.wharf.display(),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            load_avg.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        );
        let data = tmp.path().join("loaded");
        std::fs::create_dir_all(&data).unwrap();
        load(&data.join("wharf.db"), args.pipelines, args.runs).await;
        let wharf = Wharf::start(&args.wharf, &data, &[]).await;
        wharf.settle(Duration::from_secs(300)).await;

        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut below = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let pages = args.pipelines.div_ceil(50);
        let per_pipeline = (args.runs / args.pipelines).max(1);
        let (mut list, mut run, mut floor_list, mut floor_run) = (vec![], vec![], vec![], vec![]);
        let mut bytes = (0, 0);
        for rep in 0..args.reps + 20 {
            // The first 20 warm the connection and the caches; they are not counted.
            let t = Instant::now();
            let mut n = fetch(&wharf, "/pipelines").await;
            for asset in SHELL_ASSETS.iter().chain(&["/ui/js/pipelines.js", "/ui/js/dialogs.js"]) {
                n += fetch(&wharf, asset).await;
            }
            n += fetch(&wharf, &format!("/api/v1/pipelines?limit=50&page={}", 1 + below(pages))).await;
            let list_time = t.elapsed();
            bytes.0 = n;

            let pipeline = 1 + below(args.pipelines);
            let runs = wharf.get(&format!("/pipelines/{pipeline}/runs?limit=1&page={}", 1 + below(per_pipeline))).await;
            let Some(id) = runs["items"][0]["id"].as_i64() else { panic!("pipeline {pipeline} has no runs: {runs}") };
            let t = Instant::now();
            let mut n = fetch(&wharf, &format!("/runs/{id}")).await;
            for asset in
                SHELL_ASSETS.iter().chain(&["/ui/js/run.js", "/ui/js/log.js", "/ui/js/ansi.js", "/ui/js/dialogs.js"])
            {
                n += fetch(&wharf, asset).await;
            }
            n += fetch(&wharf, &format!("/api/v1/runs/{id}")).await;
            first_event(&wharf, &format!("/api/v1/runs/{id}/tasks/t/log/stream")).await;
            let run_time = t.elapsed();
            bytes.1 = n;

            let floor = async |k: usize| {
                let mut total = Duration::ZERO;
                for _ in 0..k {
                    total += wharf.healthz().await;
                }
                total
            };
            let (fl, fr) = (floor(8).await, floor(11).await);
            if rep >= 20 {
                list.push(list_time);
                run.push(run_time);
                floor_list.push(fl);
                floor_run.push(fr);
            }
        }
        println!();
        println!(
            "{} pipelines, {} runs; {} repetitions; times in ms (sequential requests on one connection)",
            args.pipelines, args.runs, args.reps
        );
        println!();
        println!(
            "| page | requests | bytes | p50 | p90 | p99 | max | floor p50 (as many /healthz) | p50 / floor | goal |"
        );
        println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for (name, xs, floor, requests, size) in [
            ("pipeline list", &mut list, &mut floor_list, 8, bytes.0),
            ("run page", &mut run, &mut floor_run, 11, bytes.1),
        ] {
            let p50 = quantile(xs, 0.5);
            let f50 = quantile(floor, 0.5);
            println!(
                "| {name} | {requests} | {size} | {} | {} | {} | {} | {} | {:.1}× | < 100 ms |",
                ms(p50),
                ms(quantile(xs, 0.9)),
                ms(quantile(xs, 0.99)),
                ms(quantile(xs, 1.0)),
                ms(f50),
                p50.as_secs_f64() / f50.as_secs_f64()
            );
        }
    });
}
