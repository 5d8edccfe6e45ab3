//! Timers on replicas: two lifecycles (two servers) on one PostgreSQL race for the same
//! due times, through their timer loops and through the loop's own steps at explicit
//! instants; every due time starts exactly one run.

use std::time::Duration;
use wharf_core::model::ExecutorKind;
use wharf_core::run::Cause;
use wharf_executor::fake::FakeExecutor;
use wharf_lifecycle::timers::start_runs;
use wharf_lifecycle::{Executors, HostPolicy, Lifecycle, Settings};
use wharf_store::logs::LogFiles;
use wharf_store::timers::NewTimer;
use wharf_store::{PipelineRow, Store, now_ms};

const PIPELINE: &str = "name: ticking\ntriggers:\n  - every_minutes: 1\nstages:\n  - name: Main\n    tasks:\n      \
                        - {name: main, type: script, script: work}\n";

async fn replica(url: &str, dir: &tempfile::TempDir) -> Lifecycle {
    let store = Store::open(url).await.unwrap();
    let logs = LogFiles::for_store(&store, dir.path().join("logs"), 1_000_000);
    let executors = Executors::new(ExecutorKind::Host).register(ExecutorKind::Host, FakeExecutor::new());
    let host = HostPolicy { allowed: true, forks: false, unavailable: None, task_gid: None };
    let runs = Lifecycle::new(store, logs, Settings::new(dir.path().to_path_buf()), executors, host);
    runs.start().await.unwrap();
    runs
}

/// The due times (epoch ms) of the pipeline's timer runs, in run order.
async fn timer_runs(store: &Store, pipeline: &PipelineRow) -> Vec<i64> {
    let (runs, _) = store.runs(pipeline.id, 1000, 0).await.unwrap();
    let mut dues = Vec::new();
    for summary in runs.iter().rev() {
        if let Cause::Timer { due } = store.run(summary.id).await.unwrap().record.cause {
            dues.push(due.as_millisecond());
        }
    }
    dues
}

async fn set_due(store: &Store, pipeline: &PipelineRow, due: i64) {
    let timer = NewTimer { trigger_index: 0, next_run_at: Some(due), last_due: None };
    store.replace_timers(pipeline.id, pipeline.version, &[timer]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_timer_loops_on_one_database_fire_a_due_time_once() {
    let Some(pg) = wharf_testenv::postgres_or_fail_in_ci() else { return };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = replica(&pg.url, &dir_a).await;
    let b = replica(&pg.url, &dir_b).await;
    let pipeline = a.store().create_pipeline("admin", "ticking", PIPELINE).await.unwrap();

    // The loops' own steps, at explicit instants: both replicas find the same due time
    // and start its run at once, ten times over.
    for round in 0..10 {
        let due = 1_000_000 + round * 60_000;
        set_due(a.store(), &pipeline, due).await;
        let now = jiff::Timestamp::from_millisecond(due + 10).unwrap();
        let (fa, fb) = tokio::join!(a.timers().due(now), b.timers().due(now));
        let (fa, fb) = (fa.unwrap(), fb.unwrap());
        assert_eq!((fa.len(), fb.len()), (1, 1), "both see the due time");
        tokio::join!(start_runs(&a, fa), start_runs(&b, fb));
        let row = a.store().pipeline_timers(pipeline.id).await.unwrap().remove(0);
        assert_eq!(row.last_due, Some(due), "the row moved on past the due time");
    }
    let expected: Vec<i64> = (0..10).map(|round| 1_000_000 + round * 60_000).collect();
    assert_eq!(timer_runs(a.store(), &pipeline).await, expected, "each due time once");

    // The loops themselves: a due time a moment from now, both loops running.
    let due = now_ms() + 1500;
    set_due(a.store(), &pipeline, due).await;
    tokio::join!(a.start_timers(), b.start_timers());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while timer_runs(a.store(), &pipeline).await.len() < 11 {
        assert!(std::time::Instant::now() < deadline, "the due time never fired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Give the slower loop its chance to (wrongly) fire too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dues = timer_runs(a.store(), &pipeline).await;
    assert_eq!(dues.len(), 11, "{dues:?}");
    assert_eq!(dues[10], due);
    a.shutdown();
    b.shutdown();
}
