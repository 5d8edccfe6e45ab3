//! `approval` tasks on the engine with a gate the test controls: waiting does not
//! count against the pipeline timeout, the task's own timeout ends it `timed_out`, a
//! rejection fails it with the comment, a stop ends the wait, and a re-attached run's
//! waiting task goes on waiting. Paused clock.

mod common;

use common::{Dirs, Recorder, ok_after, pipeline, request, secs, stop_request, task, task_record};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use wharf_core::approval::{Decision, Verdict};
use wharf_core::status::Status;
use wharf_engine::approval::{ApprovalAsk, ApprovalGate};
use wharf_engine::{EngineConfig, Resume};
use wharf_executor::BoxFuture;
use wharf_executor::fake::FakeExecutor;

/// A gate whose answer the test sends; it remembers what it was asked.
#[derive(Default)]
struct TestGate {
    asked: Mutex<Vec<ApprovalAsk>>,
    answer: Mutex<Option<oneshot::Receiver<Vec<Decision>>>>,
}

impl TestGate {
    fn new() -> (Arc<TestGate>, oneshot::Sender<Vec<Decision>>) {
        let (tx, rx) = oneshot::channel();
        (Arc::new(TestGate { asked: Mutex::default(), answer: Mutex::new(Some(rx)) }), tx)
    }
}

impl ApprovalGate for TestGate {
    fn decided(&self, ask: ApprovalAsk) -> BoxFuture<'static, Result<Vec<Decision>, String>> {
        self.asked.lock().unwrap().push(ask);
        let rx = self.answer.lock().unwrap().take();
        Box::pin(async move {
            match rx {
                Some(rx) => rx.await.map_err(|_| "gate closed".to_owned()),
                None => std::future::pending().await,
            }
        })
    }
}

fn decision(user: &str, verdict: Verdict, comment: &str) -> Decision {
    Decision { user: user.into(), verdict, comment: comment.into(), at: jiff::Timestamp::now() }
}

const GATED: &str = "name: p
timeout: 10s
variables: {ENVIRONMENT: prod}
stages:
  - name: Build
    tasks:
      - {name: build, type: script, script: make}
  - name: Review
    tasks:
      - {name: sign, type: approval, approvers: [ann, 'role:manager'], required: 2, message: 'ship to ${ENVIRONMENT}?', timeout: 1h}
  - name: Deploy
    tasks:
      - {name: deploy, type: script, script: deploy}
";

#[tokio::test(start_paused = true)]
async fn an_approval_waits_longer_than_the_pipeline_timeout_and_approval_lets_the_run_go_on() {
    let fake = FakeExecutor::new();
    fake.on("build", vec![ok_after(1)]);
    fake.on("deploy", vec![ok_after(1)]);
    let engine = common::fake_engine(&fake, EngineConfig::default()).with_approvals();
    let dirs = Dirs::new();
    let (gate, answer) = TestGate::new();
    let mut req = request(pipeline(GATED), dirs.existing());
    req.approvals = Some(gate.clone());
    let recorder = Recorder::new();
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(None);
    let run = engine.run(req, recorder.clone(), stop_rx);
    let decide = async {
        recorder.wait_for_line(wharf_engine::Part::Task(1, 0), "waiting for 2 approvals").await;
        // Far beyond the pipeline's 10 s of running time.
        tokio::time::sleep(secs(600)).await;
        answer.send(vec![decision("ann", Verdict::Approve, ""), decision("bob", Verdict::Approve, "ok")]).unwrap();
    };
    let (record, ()) = tokio::join!(run, decide);
    assert_eq!(record.progress.status, Status::Succeeded, "{record:#?}");
    let sign = task_record(&record, "sign");
    let path: Vec<Status> = sign.progress.history.iter().map(|h| h.status).collect();
    assert_eq!(path, [Status::Queued, Status::Running, Status::Waiting, Status::Succeeded]);
    let approval = sign.approval.as_ref().unwrap();
    assert_eq!(approval.message.as_deref(), Some("ship to prod?"));
    assert_eq!((approval.required, approval.decisions.len()), (2, 2));
    let asked = gate.asked.lock().unwrap().clone();
    assert_eq!((asked[0].stage.as_str(), asked[0].task.as_str()), ("Review", "sign"));
    assert_eq!(asked[0].rule.message.as_deref(), Some("ship to prod?"));
    assert!(recorder.lines(task(&record, "sign")).iter().any(|l| l.contains("approved by ann, bob")));
    assert_eq!(task_record(&record, "deploy").progress.status, Status::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn a_rejection_fails_the_task_with_the_comment_and_skips_the_rest() {
    let fake = FakeExecutor::new();
    fake.on("build", vec![ok_after(1)]);
    let engine = common::fake_engine(&fake, EngineConfig::default()).with_approvals();
    let dirs = Dirs::new();
    let (gate, answer) = TestGate::new();
    let mut req = request(pipeline(GATED), dirs.existing());
    req.approvals = Some(gate);
    answer
        .send(vec![decision("ann", Verdict::Approve, ""), decision("cid", Verdict::Reject, "not on a Friday")])
        .unwrap();
    let (record, _) = common::run(&engine, req).await;
    assert_eq!(record.progress.status, Status::Failed);
    assert_eq!(task_record(&record, "sign").reason.as_deref(), Some("rejected by cid: not on a Friday"));
    assert_eq!(task_record(&record, "deploy").progress.status, Status::Skipped);
    assert_eq!(
        record.reason.as_deref(),
        Some("stage `Review` failed: task `sign` failed (rejected by cid: not on a Friday)")
    );
}

#[tokio::test(start_paused = true)]
async fn the_task_timeout_bounds_the_wait_and_a_stop_ends_it() {
    let fake = FakeExecutor::new();
    fake.on("build", vec![ok_after(1)]);
    let engine = common::fake_engine(&fake, EngineConfig::default()).with_approvals();
    let dirs = Dirs::new();
    let (gate, _answer) = TestGate::new();
    let mut req = request(pipeline(GATED), dirs.existing());
    req.approvals = Some(gate);
    let started = tokio::time::Instant::now();
    let (record, _) = common::run(&engine, req).await;
    assert_eq!(task_record(&record, "sign").progress.status, Status::TimedOut);
    assert_eq!(
        task_record(&record, "sign").reason.as_deref(),
        Some("timed out: nobody decided within the task timeout of 1h")
    );
    assert!(started.elapsed() >= secs(3600) && started.elapsed() < secs(3700));

    let (gate, _answer) = TestGate::new();
    let mut req = request(pipeline(GATED), dirs.existing());
    req.approvals = Some(gate);
    let recorder = Recorder::new();
    let waiting = {
        let recorder = recorder.clone();
        async move { recorder.wait_for_line(wharf_engine::Part::Task(1, 0), "waiting").await }
    };
    let record = common::run_stopped_when(&engine, req, recorder, waiting, stop_request(secs(1))).await;
    assert_eq!(record.progress.status, Status::Stopped);
    assert_eq!(task_record(&record, "sign").progress.status, Status::Stopped);
}

#[tokio::test(start_paused = true)]
async fn without_a_gate_the_task_fails_saying_why() {
    let fake = FakeExecutor::new();
    fake.on("build", vec![ok_after(1)]);
    let engine = common::fake_engine(&fake, EngineConfig::default()).with_approvals();
    let dirs = Dirs::new();
    let (record, _) = common::run(&engine, request(pipeline(GATED), dirs.existing())).await;
    assert_eq!(
        task_record(&record, "sign").reason.as_deref(),
        Some("`approval` tasks need the Wharf server (approvals are given in the UI, API or CLI)")
    );
}

#[tokio::test(start_paused = true)]
async fn a_reattached_run_goes_on_waiting_with_the_time_waited_counted() {
    let fake = FakeExecutor::new();
    fake.on("build", vec![ok_after(1)]);
    fake.on("deploy", vec![ok_after(1)]);
    let engine = common::fake_engine(&fake, EngineConfig::default()).with_approvals();
    let dirs = Dirs::new();
    // A first life: the run waits, then "the server dies" (the run is dropped).
    let (gate, _answer) = TestGate::new();
    let mut req = request(pipeline(GATED), dirs.existing());
    req.approvals = Some(gate);
    let recorder = Recorder::new();
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(None);
    {
        let run = engine.run(req, recorder.clone(), stop_rx);
        tokio::select! {
            _ = run => panic!("the run ended while waiting"),
            () = recorder.wait_for_line(wharf_engine::Part::Task(1, 0), "waiting for 2") => {}
        }
    }
    let record = recorder.last_record();
    assert_eq!(task_record(&record, "sign").progress.status, Status::Waiting);
    assert_eq!(record.progress.status, Status::Running);

    // The second life continues it; the decision arrives.
    let (gate, answer) = TestGate::new();
    let mut req = request(pipeline(GATED), dirs.existing());
    req.resume = Some(Resume::reattach(record, Default::default()).expect("a waiting run can be continued"));
    req.approvals = Some(gate.clone());
    answer.send(vec![decision("ann", Verdict::Approve, ""), decision("bob", Verdict::Approve, "")]).unwrap();
    // A new observer, as after a restart (it never saw the first life's changes).
    let recorder = Recorder::new();
    let record = engine.run(req, recorder.clone(), tokio::sync::watch::channel(None).1).await;
    assert_eq!(record.progress.status, Status::Succeeded, "{record:#?}");
    assert_eq!(gate.asked.lock().unwrap()[0].rule.message.as_deref(), Some("ship to prod?"));
    assert!(recorder.lines(task(&record, "sign")).iter().any(|l| l.contains("still waiting, after a server restart")));
    // The build ran once, in the first life.
    assert_eq!(fake.calls().iter().filter(|c| c.spec.task == "build").count(), 1);
}
