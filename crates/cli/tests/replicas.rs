//! The reliability suite of issue 18, small: 3 `wharf serve` replicas on 127.0.0.1
//! sharing one database of the test PostgreSQL, 60 runs submitted across them while
//! one replica is killed with SIGKILL and started again and another is stopped with
//! SIGTERM and started again; then every accepted run ran exactly once (or was
//! interrupted by the kill, once at most), none is left queued or running, every log
//! line reads once through every replica, the `queue` pipeline never overlapped and
//! every timer due time fired once. The harness is `wharf_bench::replicas`
//! (`wharf-bench replicas --runs 1000` runs it at size).

use std::time::Instant;
use wharf_bench::replicas::{Plan, suite};

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_run_every_accepted_run_once_through_a_kill_and_a_graceful_stop() {
    let Some(pg) = wharf_testenv::postgres_or_fail_in_ci() else { return };
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan::small(WHARF.into(), pg.url.clone(), dir.path().join("suite"));
    let started = Instant::now();
    let outcome = suite(&plan).await.unwrap_or_else(|e| panic!("the suite could not run: {e}"));
    let summary = outcome.summary();
    eprintln!("{summary}(in {:.1} s)", started.elapsed().as_secs_f64());
    if !outcome.passed() {
        // Kept for a look: data directories, the servers' logs, the marker file.
        eprintln!("(kept: {})", dir.keep().display());
        for i in 0..plan.replicas {
            let log = std::fs::read_to_string(plan.dir.join(format!("replica{i}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!("--- replica {i}'s log, last lines:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
    }
    assert!(outcome.passed(), "{summary}");
    assert!(outcome.accepted >= plan.runs * 2 / 3, "most submissions are accepted: {summary}");
    assert!(outcome.ran_once > 0 && outcome.timer_dues >= 1, "{summary}");
}
