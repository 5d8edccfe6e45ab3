//! Replicas: two lifecycles, each with its own data directory and store connection,
//! on one PostgreSQL database, as two `wharf serve` processes would be (see
//! `wharf_lifecycle::replicas`). Runs are accepted on both; each starts exactly once,
//! a pipeline's `queue` policy holds across them, and a replica that dies has its run
//! taken over. Without a test PostgreSQL the tests say why they skip (and fail under
//! `CI=true`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use wharf_core::model::ExecutorKind;
use wharf_core::run::Cause;
use wharf_core::status::Status;
use wharf_executor::fake::{Behavior, FakeExecutor};
use wharf_executor::{AttemptId, Leftover};
use wharf_lifecycle::{Executors, HostPolicy, Lifecycle, Settings};
use wharf_store::logs::LogFiles;
use wharf_store::{PipelineRow, Store};

/// A started replica on `url` with its own data directory and `fake` as its executor.
async fn replica(url: &str, dir: &tempfile::TempDir, fake: Arc<FakeExecutor>, lease: Duration) -> (Store, Lifecycle) {
    let store = Store::open(url).await.expect("the replica opens the store");
    let logs = LogFiles::new(dir.path().join("logs"), 1_000_000);
    let executors = Executors::new(ExecutorKind::Host).register(ExecutorKind::Host, fake);
    let host = HostPolicy { allowed: true, forks: false, unavailable: None, task_gid: None };
    let settings = Settings { lease, ..Settings::new(dir.path().to_path_buf()) };
    let runs = Lifecycle::new(store.clone(), logs, settings, executors, host);
    runs.start().await.expect("the replica starts");
    (store, runs)
}

fn pipeline_yaml(concurrency: &str) -> String {
    format!(
        "name: app\nconcurrency: {concurrency}\nstages:\n  - name: Main\n    tasks:\n      - {{name: main, type: \
         script, script: work}}\n"
    )
}

async fn enqueue(runs: &Lifecycle, pipeline: &PipelineRow) -> i64 {
    let cause = Cause::Manual { user: "admin".into() };
    runs.enqueue(pipeline, pipeline.version, cause, BTreeMap::new(), None, None).await.expect("accepted").id
}

/// Waits (at most 60 s) until every run of `ids` has ended; their statuses.
async fn all_ended(store: &Store, ids: &[i64]) -> Vec<Status> {
    for _ in 0..600 {
        let mut statuses = Vec::new();
        for id in ids {
            statuses.push(store.run(*id).await.unwrap().summary.status);
        }
        if statuses.iter().all(|s| s.is_terminal()) {
            return statuses;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("runs never all ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_accepted_on_two_replicas_each_start_once() {
    let Some(db) = wharf_testenv::postgres_or_fail_in_ci() else { return };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (fake_a, fake_b) = (FakeExecutor::new(), FakeExecutor::new());
    for fake in [&fake_a, &fake_b] {
        fake.on("main", vec![Behavior { runs_for: Duration::from_millis(50), ..Default::default() }]);
    }
    let (store, a) = replica(&db.url, &dir_a, fake_a.clone(), Duration::from_secs(30)).await;
    let (_, b) = replica(&db.url, &dir_b, fake_b.clone(), Duration::from_secs(30)).await;
    let pipeline = store.create_pipeline("admin", "app", &pipeline_yaml("allow")).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..24 {
        ids.push(enqueue(if n % 2 == 0 { &a } else { &b }, &pipeline).await);
    }
    let statuses = all_ended(&store, &ids).await;
    assert!(statuses.iter().all(|s| *s == Status::Succeeded), "{statuses:?}");
    let mut started: Vec<String> = fake_a.calls().into_iter().chain(fake_b.calls()).map(|c| c.spec.run).collect();
    started.sort();
    let mut once = started.clone();
    once.dedup();
    assert_eq!(started.len(), ids.len(), "every run's task started exactly once across both: {started:?}");
    assert_eq!(once, started, "no run started on both replicas");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_policy_holds_across_replicas() {
    let Some(db) = wharf_testenv::postgres_or_fail_in_ci() else { return };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (fake_a, fake_b) = (FakeExecutor::new(), FakeExecutor::new());
    for fake in [&fake_a, &fake_b] {
        fake.on("main", vec![Behavior { runs_for: Duration::from_millis(200), ..Default::default() }]);
    }
    let (store, a) = replica(&db.url, &dir_a, fake_a.clone(), Duration::from_secs(30)).await;
    let (_, b) = replica(&db.url, &dir_b, fake_b.clone(), Duration::from_secs(30)).await;
    let pipeline = store.create_pipeline("admin", "app", &pipeline_yaml("queue")).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(enqueue(if n % 2 == 0 { &a } else { &b }, &pipeline).await);
    }
    let statuses = all_ended(&store, &ids).await;
    assert!(statuses.iter().all(|s| *s == Status::Succeeded), "{statuses:?}");
    let mut calls: Vec<_> = fake_a.calls().into_iter().chain(fake_b.calls()).collect();
    calls.sort_by_key(|c| c.started);
    assert_eq!(calls.len(), ids.len());
    for pair in calls.windows(2) {
        assert!(pair[1].started >= pair[0].ended, "{} started before {} ended", pair[1].spec.run, pair[0].spec.run);
    }
    // In the order they were accepted.
    let order: Vec<String> = calls.iter().map(|c| c.spec.run.clone()).collect();
    let expected: Vec<String> = (1..=ids.len()).map(|n| format!("app#{n}")).collect();
    assert_eq!(order, expected);
}

/// Replica A dies (its runtime is dropped, as `kill -9` would end it) with a run
/// whose task still runs; B takes the run over once A's lease lapses and re-attaches
/// the task (the fake's leftover stands for its container).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_run_is_taken_over_and_reattached() {
    let Some(db) = wharf_testenv::postgres_or_fail_in_ci() else { return };
    let lease = Duration::from_secs(1);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let fake_a = FakeExecutor::new();
    fake_a.on("main", vec![Behavior { until_stopped: true, ..Default::default() }]);
    let runtime_a = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (url, path_a) = (db.url.clone(), dir_a.path().to_path_buf());
    let (run_id, label) = runtime_a
        .spawn({
            let fake_a = fake_a.clone();
            async move {
                let dir = tempfile::TempDir::new_in(&path_a).unwrap();
                let (store, a) = replica(&url, &dir, fake_a, lease).await;
                let pipeline = store.create_pipeline("admin", "app", &pipeline_yaml("queue")).await.unwrap();
                let id = enqueue(&a, &pipeline).await;
                for _ in 0..600 {
                    let row = store.run(id).await.unwrap();
                    if row.record.stages[0].tasks[0].progress.status == Status::Running {
                        std::mem::forget(dir);
                        return (id, a.run_label(id));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                panic!("the run never ran on A");
            }
        })
        .await
        .unwrap();
    runtime_a.shutdown_background();

    let fake_b = FakeExecutor::new();
    let attempt = Some(AttemptId { stage: "Main".into(), task: "main".into(), attempt: 1 });
    fake_b.leave(Leftover { id: "container-1".into(), owner: label, attempt });
    fake_b.on_adopt("main", Behavior { runs_for: Duration::from_millis(100), ..Default::default() });
    let (store, _b) = replica(&db.url, &dir_b, fake_b.clone(), lease).await;
    let statuses = all_ended(&store, &[run_id]).await;
    assert_eq!(statuses, [Status::Succeeded], "{:#?}", store.run(run_id).await.unwrap().record);
    assert_eq!(fake_b.adopted().len(), 1, "B re-attached A's task");
    assert_eq!(fake_b.calls().len(), 1, "B ran the task only as the one it adopted, nothing anew");
    let row = store.run(run_id).await.unwrap();
    assert_eq!(row.summary.number, 1);
    assert!(fake_b.discarded().is_empty(), "the adopted task was not discarded");
}

/// An approval decided on replica B wakes the task waiting on replica A (the
/// decision is stored, and B's notice rings A's bell).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_decided_on_another_replica_wakes_the_waiting_task() {
    let Some(db) = wharf_testenv::postgres_or_fail_in_ci() else { return };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (store, a) = replica(&db.url, &dir_a, FakeExecutor::new(), Duration::from_secs(30)).await;
    let (_, b) = replica(&db.url, &dir_b, FakeExecutor::new(), Duration::from_secs(30)).await;
    let yaml = "name: gated\nstages:\n  - name: Review\n    tasks:\n      - {name: sign, type: approval, approvers: \
                [ann], required: 1}\n";
    let pipeline = store.create_pipeline("admin", "gated", yaml).await.unwrap();
    let id = enqueue(&a, &pipeline).await;
    for _ in 0..600 {
        let row = store.run(id).await.unwrap();
        if row.record.stages[0].tasks[0].progress.status == Status::Waiting {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ann = wharf_lifecycle::approvals::Person { user: "ann".into(), role: "user".into(), admin: false };
    b.decide(id, "sign", &ann, wharf_core::approval::Verdict::Approve, "ship it").await.expect("ann may approve");
    let started = std::time::Instant::now();
    assert_eq!(all_ended(&store, &[id]).await, [Status::Succeeded]);
    assert!(started.elapsed() < Duration::from_secs(20), "woken by the notice, not by chance");
}

/// A replica killed the moment a task began leaves a run that looks begun, not one
/// that "executed nothing" and another replica would start a second time: by the
/// time the executor is asked to run the task, the stored record holds the attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_is_stored_before_its_task_is_started() {
    let Some(db) = wharf_testenv::postgres_or_fail_in_ci() else { return };
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeExecutor::new();
    // `first` makes the store busy (a write, then the pause between writes) just as
    // `main` begins.
    fake.on("first", vec![Behavior { runs_for: Duration::from_millis(20), ..Default::default() }]);
    fake.on("main", vec![Behavior { runs_for: Duration::from_millis(300), ..Default::default() }]);
    let (store, a) = replica(&db.url, &dir, fake.clone(), Duration::from_secs(30)).await;
    let yaml = "name: app\nstages:\n  - name: One\n    tasks:\n      - {name: first, type: script, script: work}\n  \
                - name: Two\n    tasks:\n      - {name: main, type: script, script: work}\n";
    let pipeline = store.create_pipeline("admin", "app", yaml).await.unwrap();
    for _ in 0..5 {
        let id = enqueue(&a, &pipeline).await;
        let before = fake.begun().iter().filter(|spec| spec.task == "main").count();
        let mut seen = false;
        for _ in 0..5_000 {
            if fake.begun().iter().filter(|spec| spec.task == "main").count() > before {
                let record = store.run(id).await.unwrap().record;
                let task = &record.stages[1].tasks[0];
                assert_eq!(task.attempts, 1, "the task started before its attempt was stored: {record:#?}");
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(seen, "the task never started");
        assert_eq!(all_ended(&store, &[id]).await, [Status::Succeeded]);
    }
}
