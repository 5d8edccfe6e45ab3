//! The lifecycle on the fake executor: queueing, each concurrency policy, stopping, and
//! what a restart does with what the previous process left. No shells and no fixed
//! waits: tasks that must run until stopped have no timer at all
//! ([`Behavior::until_stopped`]), the others run a fraction of a second, and the tests
//! wait for states, not for time.
//!
//! The clock is tokio's real one: with a paused clock, the SQLite pool's acquire
//! timeout (on tokio's timer) fires while a connection is being opened on its worker
//! thread, because the paused runtime jumps ahead whenever it is idle.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wharf_core::model::ExecutorKind;
use wharf_core::run::Cause;
use wharf_core::status::Status;
use wharf_executor::fake::{Behavior, FakeExecutor};
use wharf_executor::{AttemptId, Leftover};
use wharf_lifecycle::notify::{Notifier, RunEvent, RunEventKind};
use wharf_lifecycle::{Executors, HostPolicy, Lifecycle, RunError, Settings};
use wharf_store::logs::{LogFiles, LogKey};
use wharf_store::{PipelineRow, RunRow, Store};

struct World {
    dir: Arc<tempfile::TempDir>,
    store: Store,
    fake: Arc<FakeExecutor>,
    runs: Lifecycle,
}

async fn world() -> World {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let store = Store::open(&dir.path().join("wharf.db").display().to_string()).await.unwrap();
    let fake = FakeExecutor::new();
    let runs = lifecycle(&dir, &store, fake.clone()).await;
    World { dir, store, fake, runs }
}

/// A lifecycle on `store` with `fake` as the host executor, started (recovery run).
async fn lifecycle(dir: &tempfile::TempDir, store: &Store, fake: Arc<FakeExecutor>) -> Lifecycle {
    lifecycle_told(dir, store, fake, Arc::default()).await
}

/// One event the lifecycle told: (run id, kind, status, reason).
type Event = (i64, RunEventKind, Status, Option<String>);

/// What the lifecycle told its notifier.
#[derive(Default)]
struct Told(Mutex<Vec<Event>>);

impl Notifier for Told {
    fn notify(&self, event: RunEvent) {
        let told = (event.run_id, event.kind, event.record.progress.status, event.record.reason);
        self.0.lock().unwrap().push(told);
    }
}

impl Told {
    /// Waits (at most 20 s) for the end of run `id` to be told.
    async fn ended(&self, id: i64) -> (Status, Option<String>) {
        for _ in 0..2000 {
            let told = self.0.lock().unwrap().iter().find(|t| t.0 == id && t.1 == RunEventKind::Ended).cloned();
            if let Some((_, _, status, reason)) = told {
                return (status, reason);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the end of run {id} was never told: {:?}", self.0.lock().unwrap());
    }
}

/// [`lifecycle`] telling `told`, set before recovery runs (as the server does).
async fn lifecycle_told(dir: &tempfile::TempDir, store: &Store, fake: Arc<FakeExecutor>, told: Arc<Told>) -> Lifecycle {
    let logs = LogFiles::new(dir.path().join("logs"), 1_000_000);
    let executors = Executors::new(ExecutorKind::Host).register(ExecutorKind::Host, fake);
    let host = HostPolicy { allowed: true, forks: false, unavailable: None, task_gid: None };
    let runs = Lifecycle::new(store.clone(), logs, Settings::new(dir.path().to_path_buf()), executors, host);
    runs.set_notifier(told);
    runs.start().await.unwrap();
    runs
}

fn one_task(name: &str, concurrency: &str) -> String {
    format!(
        "name: {name}\nconcurrency: {concurrency}\nstages:\n  - name: Main\n    tasks:\n      - {{name: main, type: \
         script, script: work}}\n"
    )
}

impl World {
    async fn pipeline(&self, name: &str, concurrency: &str) -> PipelineRow {
        self.store.create_pipeline("admin", name, &one_task(name, concurrency)).await.unwrap()
    }

    async fn start(&self, pipeline: &PipelineRow) -> i64 {
        let cause = Cause::Manual { user: "admin".into() };
        self.runs.enqueue(pipeline, pipeline.version, cause, BTreeMap::new(), None, None).await.unwrap().id
    }

    async fn run(&self, id: i64) -> RunRow {
        self.store.run(id).await.unwrap()
    }

    /// Waits (at most 20 s) until `done` holds for the stored run.
    async fn until(&self, id: i64, what: &str, done: impl Fn(&RunRow) -> bool) -> RunRow {
        for _ in 0..2000 {
            let row = self.run(id).await;
            if done(&row) {
                return row;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("run {id} never got {what}: {:#?}", self.run(id).await.record);
    }

    async fn running(&self, id: i64) -> RunRow {
        self.until(id, "its task running", |r| r.record.stages[0].tasks[0].progress.status == Status::Running).await
    }

    async fn ended(&self, id: i64) -> RunRow {
        let row = self.until(id, "an end", |r| r.summary.status.is_terminal()).await;
        // The final record is stored before the run leaves `active`.
        for _ in 0..100 {
            if !self.runs.is_active(id) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        row
    }
}

fn until_stopped() -> Vec<Behavior> {
    vec![Behavior { until_stopped: true, ..Behavior::default() }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_runs_one_after_the_other() {
    let w = world().await;
    // The first runs until stopped, so the test sees it running however slow the
    // machine is; the second (same task name) finishes by itself.
    w.fake.on("main", until_stopped());
    let p = w.pipeline("queued", "queue").await;
    let first = w.start(&p).await;
    w.running(first).await;
    w.fake.on("main", vec![Behavior { runs_for: Duration::from_millis(100), ..Behavior::default() }]);
    let second = w.start(&p).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(w.run(second).await.summary.status, Status::Queued, "it waits while the first runs");
    assert_eq!((w.runs.queued(), w.runs.active_numbers(p.id)), (1, vec![1]));

    w.runs.stop(first).await.unwrap();
    let first = w.ended(first).await;
    let second = w.ended(second).await;
    assert_eq!((first.summary.status, second.summary.status), (Status::Stopped, Status::Succeeded));
    let first_end = first.record.progress.finished_at().unwrap();
    assert!(second.record.progress.started_at().unwrap() >= first_end, "the second started after the first ended");
    let calls = w.fake.calls_of("main");
    assert_eq!(calls.len(), 2);
    assert!(calls[1].started >= calls[0].ended, "never two at once: {calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_runs_side_by_side() {
    let w = world().await;
    w.fake.on("main", vec![Behavior { runs_for: Duration::from_millis(300), ..Behavior::default() }]);
    let p = w.pipeline("together", "allow").await;
    let (first, second) = (w.start(&p).await, w.start(&p).await);
    w.ended(first).await;
    w.ended(second).await;
    let calls = w.fake.calls_of("main");
    assert_eq!(calls.len(), 2);
    assert!(calls[1].started < calls[0].ended && calls[0].started < calls[1].ended, "they overlapped: {calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_previous_stops_the_older_run_and_says_why() {
    let w = world().await;
    w.fake.on("main", until_stopped());
    let p = w.pipeline("latest-wins", "cancel-previous").await;
    let first = w.start(&p).await;
    w.running(first).await;
    w.fake.on("main", vec![Behavior::default()]);
    let second = w.start(&p).await;

    let first = w.ended(first).await;
    assert_eq!(first.summary.status, Status::Stopped);
    let reason = first.record.reason.clone().unwrap();
    assert!(reason.contains("superseded by run #2"), "{reason}");
    let task = &first.record.stages[0].tasks[0];
    assert_eq!(task.progress.status, Status::Stopped);
    assert!(!task.reason.as_deref().unwrap_or("").contains("by user"), "no person stopped it: {task:?}");
    assert!(!first.record.stages[0].reason.as_deref().unwrap_or("").contains("by user"));
    assert_eq!(w.ended(second).await.summary.status, Status::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_previous_supersedes_older_queued_runs_before_they_start() {
    let w = world().await;
    w.fake.on("main", until_stopped());
    let p = w.pipeline("burst", "cancel-previous").await;
    let first = w.start(&p).await;
    w.running(first).await;
    // Two more arrive at once: only the newest starts.
    let (second, third) = (w.start(&p).await, w.start(&p).await);
    w.running(third).await;
    let second = w.ended(second).await;
    assert_eq!(second.summary.status, Status::Stopped);
    // Superseded before it started, or (when the scheduler looked between the two)
    // just after.
    let reason = second.record.reason.clone().unwrap();
    assert!(reason == "superseded by a newer run before it started" || reason.contains("run #3"), "{reason}");
    assert_eq!(w.runs.active_numbers(p.id), [3], "only the newest runs");
    assert_eq!(w.ended(first).await.summary.status, Status::Stopped);
    w.runs.stop(third).await.unwrap();
    assert_eq!(w.ended(third).await.summary.status, Status::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_queued_run_never_runs_and_a_finished_one_is_a_conflict() {
    let w = world().await;
    w.fake.on("main", until_stopped());
    let p = w.pipeline("one-at-a-time", "queue").await;
    let first = w.start(&p).await;
    w.running(first).await;
    let second = w.start(&p).await;
    w.runs.stop(second).await.unwrap();
    let stopped = w.ended(second).await;
    assert_eq!(stopped.summary.status, Status::Stopped);
    assert_eq!(stopped.record.reason.as_deref(), Some("stopped by user before it started"));
    assert!(stopped.record.stages[0].tasks.iter().all(|t| t.progress.status == Status::Skipped));

    w.runs.stop(first).await.unwrap();
    let first = w.ended(first).await;
    assert_eq!(first.summary.status, Status::Stopped);
    assert_eq!(first.record.reason.as_deref(), Some("stopped by user"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(w.fake.calls_of("main").len(), 1, "the stopped queued run never started");
    assert!(matches!(w.runs.stop(second).await, Err(RunError::Conflict(why)) if why.contains("already stopped")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_pipeline_or_unknown_parameter_is_refused_with_the_field() {
    let w = world().await;
    let mut p = w.pipeline("refused", "queue").await;
    let cause = || Cause::Manual { user: "admin".into() };
    let given = BTreeMap::from([("NOPE".to_owned(), "x".to_owned())]);
    match w.runs.enqueue(&p, p.version, cause(), given, None, None).await {
        Err(RunError::Invalid { problems, .. }) => {
            assert_eq!(problems[0].path, "parameters");
            assert!(problems[0].message.contains("NOPE"), "{problems:?}");
        }
        other => panic!("{other:?}"),
    }
    p.active = false;
    let inactive = w.runs.enqueue(&p, p.version, cause(), BTreeMap::new(), None, None).await;
    assert!(matches!(inactive, Err(RunError::Conflict(why)) if why.contains("inactive")));
    assert_eq!(w.store.runs(p.id, 10, 0).await.unwrap().1, 0, "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_continues_what_can_be_adopted_requeues_what_never_ran_and_fails_the_rest() {
    let w = world().await;
    w.fake.on("main", until_stopped());
    let p = w.pipeline("survivor", "allow").await;
    let (adoptable, interrupted) = (w.start(&p).await, w.start(&p).await);
    w.running(adoptable).await;
    w.running(interrupted).await;
    let waiting = w.pipeline("waiter", "allow").await;
    let unstarted = w.start(&waiting).await;
    w.running(unstarted).await;
    // The "crash": the records stay as they are; the unstarted run looks as one that
    // waited for a slot (taken from the queue, nothing executed).
    let mut row = w.run(unstarted).await;
    let task = &mut row.record.stages[0].tasks[0];
    task.progress.status = Status::Pending;
    task.progress.history.pop();
    task.attempts = 0;
    w.store.save_record(unstarted, &row.record).await.unwrap();

    // A new process on the same data: its executor still has the first run's task,
    // and something of another server, and something that cannot be adopted.
    let fake = FakeExecutor::new();
    let prefix = |run: i64| w.runs.run_label(run);
    let attempt = Some(AttemptId { stage: "Main".into(), task: "main".into(), attempt: 1 });
    fake.leave(Leftover { id: "kept".into(), owner: prefix(adoptable), attempt: attempt.clone() });
    fake.leave(Leftover { id: "stray".into(), owner: prefix(interrupted), attempt: None });
    fake.leave(Leftover { id: "not-ours".into(), owner: "0123456789abcdef/1".into(), attempt: attempt.clone() });
    fake.on_adopt("main", Behavior { runs_for: Duration::from_millis(100), ..Behavior::default() });
    fake.on("main", vec![Behavior::default()]);
    let told = Arc::new(Told::default());
    let runs = lifecycle_told(&w.dir, &w.store, fake.clone(), told.clone()).await;
    let w = World { dir: w.dir.clone(), store: w.store.clone(), fake: fake.clone(), runs };
    assert_eq!(w.ended(adoptable).await.summary.status, Status::Succeeded, "the adopted task finished");
    assert_eq!(fake.adopted().len(), 1);
    let failed = w.ended(interrupted).await;
    assert_eq!(failed.summary.status, Status::Failed);
    assert_eq!(failed.record.reason.as_deref(), Some(wharf_core::settle::INTERRUPTED));
    // The interrupted run's failure is told, with its cause.
    let interrupted_told = (Status::Failed, Some(wharf_core::settle::INTERRUPTED.to_owned()));
    assert_eq!(told.ended(interrupted).await, interrupted_told);
    let requeued = w.ended(unstarted).await;
    assert_eq!(requeued.summary.status, Status::Succeeded, "queued again and run: {:#?}", requeued.record);
    assert_eq!(requeued.summary.number, 1, "under its own number");
    let run_log =
        String::from_utf8(w.runs.logs().read_from(unstarted, LogKey::Run, 0, 100_000).await.unwrap()).unwrap();
    assert!(run_log.contains(" sys ") && run_log.contains("queued again"), "{run_log}");
    let mut discarded = fake.discarded();
    discarded.sort();
    assert_eq!(discarded, ["stray"], "only this server's, and only what nobody adopted");
}

#[tokio::test]
async fn a_run_that_cannot_start_fails_with_why_and_that_is_told() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let store = Store::open(&dir.path().join("wharf.db").display().to_string()).await.unwrap();
    let fake = FakeExecutor::new();
    let told = Arc::new(Told::default());
    let runs = lifecycle_told(&dir, &store, fake.clone(), told.clone()).await;
    let w = World { dir: dir.clone(), store, fake, runs };
    w.fake.on("main", vec![Behavior { exit_code: 3, ..Behavior::default() }]);
    let p = w.pipeline("fragile", "allow").await;
    let first = w.start(&p).await;
    assert_eq!(w.ended(first).await.summary.status, Status::Failed);
    assert_eq!(told.ended(first).await.0, Status::Failed, "an ordinary failure is told too");
    // The next run cannot start: its directory cannot be made (a file is in the way).
    let workspaces = dir.path().join("workspaces");
    std::fs::remove_dir_all(&workspaces).unwrap();
    std::fs::write(&workspaces, "in the way").unwrap();
    let second = w.start(&p).await;
    let ended = w.ended(second).await;
    assert_eq!(ended.summary.status, Status::Failed);
    assert!(ended.record.stages[0].tasks[0].attempts == 0, "nothing ran: {:#?}", ended.record);
    let why = ended.record.reason.clone().expect("the reason");
    assert!(why.contains("workspaces"), "{why}");
    assert_eq!(told.ended(second).await, (Status::Failed, Some(why)));
}
