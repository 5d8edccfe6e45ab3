//! Re-attach after a restart, on the fake executor and a paused clock: a run is cut
//! off mid-stage (its engine future dropped, as a killed server's would be), then a
//! second engine continues the same record. Finished tasks are not run again and keep
//! their outputs, a running task the executor still has is adopted (with its attempt
//! number and resume point), a running task it lost fails as interrupted (and retries
//! when it may), tasks that had not started run as usual.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use wharf_core::run::RunRecord;
use wharf_core::status::Status;
use wharf_engine::{EngineConfig, INTERRUPTED, Observer, Part, Resume};
use wharf_executor::fake::{Behavior, FakeExecutor};
use wharf_executor::{LogLine, LogResume};

const YAML: &str = "
name: reattach
stages:
  - name: A
    tasks:
      - name: a1
        type: script
        script: echo a1
        outputs: [VERSION]
  - name: B
    mode: parallel
    tasks:
      - name: b1
        type: script
        script: echo b1
      - name: b2
        type: script
        script: echo b2
      - name: b3
        type: script
        script: echo b3
        retries: 1
      - name: b4
        type: script
        script: echo b4
  - name: C
    tasks:
      - name: c1
        type: script
        script: echo \"version ${VERSION}\"
";

/// Keeps the latest record, as the server's store would.
#[derive(Default)]
struct LastRecord(Mutex<Option<RunRecord>>);

impl Observer for LastRecord {
    fn changed(&self, record: &RunRecord, _part: Part) {
        *self.0.lock().unwrap() = Some(record.clone());
    }
    fn log(&self, _part: Part, _line: &LogLine) {}
}

#[tokio::test(start_paused = true)]
async fn a_reattached_run_adopts_skips_and_finishes() {
    let dirs = Dirs::new();
    let pipeline = pipeline(YAML);
    let config = EngineConfig { max_parallel_tasks: 2, ..EngineConfig::default() };

    // First life: a1 writes VERSION; in B, b1 ends, b2 and b3 run, b4 waits for a slot.
    let first = FakeExecutor::new();
    first.on("a1", vec![Behavior { outputs: vec![("VERSION".into(), "1.2".into())], ..ok_after(1) }]);
    first.on("b1", vec![ok_after(2)]);
    first.on("b2", vec![ok_after(100)]);
    first.on("b3", vec![ok_after(100)]);
    let engine = fake_engine(&first, config.clone());
    let stored = Arc::new(LastRecord::default());
    let (_stop_tx, stop_rx) = watch::channel(None);
    let request = request(pipeline.clone(), dirs.checkout());
    tokio::select! {
        _ = engine.run(request.clone(), stored.clone(), stop_rx) => panic!("the run should still be going"),
        () = tokio::time::sleep(secs(10)) => {}
    }
    drop(engine);
    let record = stored.0.lock().unwrap().clone().unwrap();
    let status = |name: &str| task_record(&record, name).progress.status;
    assert_eq!(
        [status("a1"), status("b1"), status("b2"), status("b3"), status("b4"), status("c1")],
        [Status::Succeeded, Status::Succeeded, Status::Running, Status::Running, Status::Pending, Status::Queued]
    );

    // Second life: b2's attempt is still there, b3's is lost.
    let second = FakeExecutor::new();
    second.on_adopt("b2", Behavior { lines: vec!["b2 resumed".into()], ..ok_after(5) });
    second.on("b3", vec![ok_after(1)]);
    let engine = fake_engine(&second, config);
    let Part::Task(s, t) = task(&record, "b2") else { unreachable!() };
    let resume_point = LogResume { since_second: 1_700_000_000, skip_lines: 3 };
    let resume = Resume::reattach(record.clone(), BTreeMap::from([((s, t), resume_point)])).expect("re-attachable");
    let mut again = request.clone();
    again.resume = Some(resume);
    let recorder = Recorder::new();
    let (_stop_tx, stop_rx) = watch::channel(None);
    let done = engine.run(again, recorder.clone(), stop_rx).await;

    assert_eq!(done.progress.status, Status::Succeeded, "{:?}", done.reason);
    assert_eq!(done.number, record.number);
    // Nothing that had finished ran again.
    for name in ["a1", "b1"] {
        assert!(second.calls_of(name).is_empty(), "{name} ran again");
        assert_eq!(task_record(&done, name).progress.history, task_record(&record, name).progress.history);
    }
    // b2 was adopted, as its first attempt, with the resume point.
    let adopted = second.adopted();
    assert_eq!(adopted.len(), 1);
    assert_eq!((adopted[0].0.task.as_str(), adopted[0].0.attempt, adopted[0].1), ("b2", 1, resume_point));
    assert_eq!(task_record(&done, "b2").attempts, 1);
    assert_eq!(recorder.output(task(&done, "b2")), ["b2 resumed"]);
    // b3's attempt was lost: interrupted, then its retry ran.
    let b3 = task_record(&done, "b3");
    assert_eq!((b3.progress.status, b3.attempts), (Status::Succeeded, 2));
    assert!(recorder.lines(task(&done, "b3")).iter().any(|l| l.contains(INTERRUPTED)), "{:?}", recorder.all_lines());
    assert_eq!(second.calls_of("b3").iter().map(|c| c.spec.attempt).collect::<Vec<_>>(), [2]);
    // b4 and c1 ran as usual; c1 saw a1's output from before the restart.
    assert_eq!(second.calls_of("b4").len(), 1);
    let c1 = &second.calls_of("c1")[0].spec;
    assert!(c1.env.contains(&("VERSION".into(), "1.2".into())), "{:?}", c1.env);
    // The record's history goes on from where it was: one `running` for the run.
    assert_eq!(history(&done, Part::Run), statuses("queued running succeeded"));
}

#[tokio::test(start_paused = true)]
async fn a_lost_attempt_without_retries_fails_the_run_as_interrupted() {
    let dirs = Dirs::new();
    let pipeline = pipeline(
        "name: lost\nstages:\n  - name: A\n    tasks:\n      - name: long\n        type: script\n        script: sleep 100\n",
    );
    let first = FakeExecutor::new();
    first.on("long", vec![ok_after(100)]);
    let engine = fake_engine(&first, EngineConfig::default());
    let stored = Arc::new(LastRecord::default());
    let (_stop_tx, stop_rx) = watch::channel(None);
    let request = request(pipeline, dirs.checkout());
    tokio::select! {
        _ = engine.run(request.clone(), stored.clone(), stop_rx) => panic!("the run should still be going"),
        () = tokio::time::sleep(secs(5)) => {}
    }
    let record = stored.0.lock().unwrap().clone().unwrap();
    let second = FakeExecutor::new();
    let engine = fake_engine(&second, EngineConfig::default());
    let mut again = request;
    again.resume = Resume::reattach(record, BTreeMap::new());
    let (_stop_tx, stop_rx) = watch::channel(None);
    let done = engine.run(again, Recorder::new(), stop_rx).await;
    assert_eq!(done.progress.status, Status::Failed);
    assert_eq!(task_record(&done, "long").reason.as_deref(), Some(INTERRUPTED));
    assert!(second.calls().is_empty(), "a lost attempt is not started again without retries");
}
