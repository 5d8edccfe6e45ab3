//! `canary` tasks in the engine on the real Kubernetes deployer against the Kubernetes
//! API test double: a canary promoted step by step, one that fails mid-way and one cut
//! off by its timeout, both rolled back to the stable Deployment as it was; with
//! `approval: true`, a canary that waits for people between steps (off the pipeline's
//! clock), is rejected mid-way and rolled back, and one that goes on waiting after a
//! restart and is promoted.

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wharf_core::approval::{Decision, Verdict};
use wharf_core::run::CanaryStep;
use wharf_core::status::Status;
use wharf_engine::approval::{ApprovalAsk, ApprovalGate};
use wharf_engine::{Clusters, Engine, Part, Resume, RunRequest};
use wharf_executor::BoxFuture;
use wharf_executor::deploy::{ClusterLogin, DeployExit, DeploySpec, Deployer};
use wharf_kube::deploy::KubeDeployer;
use wharf_kube::{Connection, FileAccess, ensure_namespace};
use wharf_kube_fake::{KubeFake, Options};

const STABLE: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: 'reg.example/web:1'}]
";

fn local() -> wharf_kube::Policy {
    wharf_kube::Policy::new(&["127.0.0.1"]).unwrap()
}

struct Cluster {
    fake: KubeFake,
    conn: Connection,
}

impl Cluster {
    async fn start() -> Cluster {
        let fake = KubeFake::start(Options::default()).await.unwrap();
        let conn = Connection::from_kubeconfig(&fake.kubeconfig(), None, &FileAccess::Refuse, &local()).unwrap();
        ensure_namespace(&conn, "shop", &BTreeMap::new()).await.unwrap();
        let deploy = DeploySpec {
            run: "shop#1".into(),
            stage: "Deploy".into(),
            task: "deploy".into(),
            file: "web.yaml".into(),
            manifests: STABLE.into(),
            cluster: login(&fake),
            namespace: "shop".into(),
        };
        let (_tx, rx) = tokio::sync::watch::channel(None);
        let done = KubeDeployer::new(local()).deploy(deploy, Arc::new(Quiet), rx).await.unwrap();
        assert!(matches!(done, DeployExit::Deployed(_)));
        Cluster { fake, conn }
    }

    fn api(&self) -> Api<Deployment> {
        Api::namespaced(self.conn.client().clone(), "shop")
    }

    /// (replicas, image) of `name`, `None` when it does not exist.
    async fn shape(&self, name: &str) -> Option<(i32, String)> {
        let spec = self.api().get_opt(name).await.unwrap()?.spec.unwrap();
        Some((spec.replicas.unwrap(), spec.template.spec.unwrap().containers[0].image.clone().unwrap()))
    }
}

struct Quiet;
impl wharf_executor::LogSink for Quiet {
    fn line(&self, _: wharf_executor::LogLine) {}
}

fn login(fake: &KubeFake) -> ClusterLogin {
    ClusterLogin { name: "prod".into(), kubeconfig: fake.kubeconfig(), context: None }
}

fn engine() -> Engine {
    host_engine().with_deployer(Arc::new(KubeDeployer::new(local())))
}

fn request_with(dirs: &Dirs, cluster: &Cluster, yaml: &str) -> RunRequest {
    let mut request = request(pipeline(yaml), dirs.existing());
    request.clusters = Clusters {
        by_name: BTreeMap::from([("prod".to_owned(), login(&cluster.fake))]),
        namespaces: BTreeMap::new(),
        ..Default::default()
    };
    request
}

fn canary(extra: &str) -> String {
    format!(
        "name: shop\nstages:\n  - name: Release\n    tasks:\n      - {{name: canary, type: canary, deployment: web, \
         cluster: prod, namespace: shop, image: 'reg.example/web:${{BUILD_ID}}', {extra}}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_is_promoted_step_by_step() {
    let cluster = Cluster::start().await;
    let dirs = Dirs::new();
    let yaml = canary("steps: [25, 50, 100]");
    let engine = engine();
    engine.prepare(&pipeline(&yaml), &BTreeMap::new(), &BTreeMap::new()).unwrap();
    let (record, recorder) = run(&engine, request_with(&dirs, &cluster, &yaml)).await;
    let log = recorder.lines(task(&record, "canary")).join("\n");
    assert_eq!(record.progress.status, Status::Succeeded, "{:?}\n{log}", record.reason);
    assert!(log.contains("step 25%: canary 1 of 4 replica(s), stable 3"), "{log}");
    assert!(log.contains("step 50%: canary 2 of 4 replica(s), stable 2"), "{log}");
    assert_eq!(task_record(&record, "canary").outputs["canary"], "promoted");
    assert_eq!(cluster.shape("web").await, Some((4, "reg.example/web:7".into())));
    assert_eq!(cluster.shape("web-canary").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_mid_way_and_a_timeout_roll_back_to_the_stable_version() {
    let cluster = Cluster::start().await;
    let dirs = Dirs::new();
    let engine = engine();
    // Mid-way: after the 25 % step (during its pause) the new version turns bad.
    let yaml = canary("steps: [25, 50, 100], pause: 1s");
    let running = run(&engine, request_with(&dirs, &cluster, &yaml));
    let sabotage = async {
        for _ in 0..100 {
            if let Some((1, _)) = cluster.shape("web-canary").await {
                let bad = serde_json::json!({"metadata": {"annotations": {"kube-fake.wharf.dev/fault": "progress-deadline"}}});
                cluster.api().patch("web-canary", &PatchParams::default(), &Patch::Merge(&bad)).await.unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the canary never reached 25 %");
    };
    let ((record, recorder), ()) = tokio::join!(running, sabotage);
    let log = recorder.lines(task(&record, "canary")).join("\n");
    assert_eq!(record.progress.status, Status::Failed, "{log}");
    assert!(log.contains("progress deadline") && log.contains("rolled back: web-canary deleted"), "{log}");
    assert_eq!(cluster.shape("web").await, Some((4, "reg.example/web:1".into())));
    assert_eq!(cluster.shape("web-canary").await, None);

    // Its own timeout, during a long pause: a stop, then the same rollback.
    let yaml = canary("steps: [50, 100], pause: 10m, timeout: 1s");
    let (record, recorder) = run(&engine, request_with(&dirs, &cluster, &yaml)).await;
    let log = recorder.lines(task(&record, "canary")).join("\n");
    assert_eq!(record.progress.status, Status::TimedOut, "{log}");
    assert!(log.contains("at 50%, pausing 600s") && log.contains("rolled back"), "{log}");
    assert_eq!(cluster.shape("web").await, Some((4, "reg.example/web:1".into())));
    assert_eq!(cluster.shape("web-canary").await, None);
}

#[test]
fn approval_between_steps_needs_approvals_and_a_plain_engine_has_no_canary() {
    let yaml = canary("steps: [50, 100], approval: true");
    let err = engine().prepare(&pipeline(&yaml), &BTreeMap::new(), &BTreeMap::new()).unwrap_err().to_string();
    assert!(err.contains("`approval: true` between canary steps needs the Wharf server"), "{err}");
    engine().with_approvals().prepare(&pipeline(&yaml), &BTreeMap::new(), &BTreeMap::new()).unwrap();
    let err = host_engine().prepare(&pipeline(&canary("steps: [100]")), &BTreeMap::new(), &BTreeMap::new());
    assert!(err.unwrap_err().to_string().contains("`canary` tasks need the Wharf server"));
}

/// A gate that answers each question with the next scripted decisions, after a delay;
/// it keeps the keys it was asked under. With no answer left it never answers.
#[derive(Default)]
struct StepGate {
    asked: Mutex<Vec<ApprovalAsk>>,
    answers: Mutex<VecDeque<(Duration, Vec<Decision>)>>,
}

impl StepGate {
    fn new(answers: Vec<(Duration, Vec<Decision>)>) -> Arc<StepGate> {
        Arc::new(StepGate { asked: Mutex::default(), answers: Mutex::new(answers.into()) })
    }

    fn keys(&self) -> Vec<String> {
        self.asked.lock().unwrap().iter().map(|a| a.task.clone()).collect()
    }
}

impl ApprovalGate for StepGate {
    fn decided(&self, ask: ApprovalAsk) -> BoxFuture<'static, Result<Vec<Decision>, String>> {
        self.asked.lock().unwrap().push(ask);
        let answer = self.answers.lock().unwrap().pop_front();
        Box::pin(async move {
            match answer {
                Some((after, decisions)) => {
                    tokio::time::sleep(after).await;
                    Ok(decisions)
                }
                None => std::future::pending().await,
            }
        })
    }
}

fn decision(user: &str, verdict: Verdict, comment: &str) -> Decision {
    Decision { user: user.into(), verdict, comment: comment.into(), at: jiff::Timestamp::now() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn between_steps_people_decide_off_the_clock_and_a_rejection_mid_way_rolls_back() {
    let cluster = Cluster::start().await;
    let dirs = Dirs::new();
    let engine = engine().with_approvals();
    // The first decision takes longer than the whole pipeline may run: waiting for
    // people is not running time.
    let yaml = canary("steps: [25, 50, 100], approval: true").replacen("name: shop\n", "name: shop\ntimeout: 2s\n", 1);
    let gate = StepGate::new(vec![
        (secs(3), vec![decision("ann", Verdict::Approve, "looks fine")]),
        (Duration::ZERO, vec![decision("bob", Verdict::Reject, "error rate up")]),
    ]);
    let mut request = request_with(&dirs, &cluster, &yaml);
    request.approvals = Some(gate.clone());
    let (record, recorder) = run(&engine, request).await;
    let part = task(&record, "canary");
    let log = recorder.lines(part).join("\n");
    assert_eq!(record.progress.status, Status::Failed, "{:?}\n{log}", record.reason);
    let canary = task_record(&record, "canary");
    assert_eq!(canary.reason.as_deref(), Some("rejected at 50% by bob: error rate up"), "{log}");
    // One question per step, each under its own key.
    assert_eq!(gate.keys(), ["canary@25%", "canary@50%"]);
    let asked = gate.asked.lock().unwrap()[1].rule.message.clone();
    assert_eq!(asked.as_deref(), Some("canary `canary` is at 50%: go on to 100%?"));
    let waits = recorder.transitions(part).iter().filter(|s| **s == Status::Waiting).count();
    assert_eq!(waits, 2, "{:?}", recorder.transitions(part));
    let approval = canary.approval.as_ref().expect("the last question in the record");
    assert_eq!(approval.canary, Some(CanaryStep { percent: 50, total: 4 }));
    assert_eq!(approval.decisions.len(), 1);
    assert!(log.contains("canary: approved by ann; going on to 50%"), "{log}");
    assert!(log.contains("canary: rejected at 50% by bob: error rate up; rolling back"), "{log}");
    assert!(log.contains("rolled back: web-canary deleted"), "{log}");
    recorder.assert_consistent_with(&record);
    assert_eq!(cluster.shape("web").await, Some((4, "reg.example/web:1".into())));
    assert_eq!(cluster.shape("web-canary").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_waiting_between_steps_goes_on_waiting_after_a_restart() {
    let cluster = Cluster::start().await;
    let dirs = Dirs::new();
    let engine = engine().with_approvals();
    let yaml = canary("steps: [25, 50, 100], approval: true");
    // A first life: the canary reaches 25 % and waits; then "the server dies".
    let mut request = request_with(&dirs, &cluster, &yaml);
    request.approvals = Some(StepGate::new(vec![]));
    let recorder = Recorder::new();
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(None);
    {
        let run = engine.run(request, recorder.clone(), stop_rx);
        tokio::select! {
            _ = run => panic!("the run ended while waiting"),
            () = recorder.wait_for_line(Part::Task(0, 0), "waiting at 25%") => {}
        }
    }
    let record = recorder.last_record();
    let waiting = task_record(&record, "canary");
    assert_eq!(waiting.progress.status, Status::Waiting);
    assert_eq!(waiting.approval.as_ref().unwrap().canary, Some(CanaryStep { percent: 25, total: 4 }));
    assert_eq!(cluster.shape("web-canary").await.map(|(n, _)| n), Some(1));
    assert_eq!(cluster.shape("web").await.map(|(n, _)| n), Some(3));

    // The second life goes on waiting at the same step, then on to the promotion.
    let gate = StepGate::new(vec![
        (Duration::ZERO, vec![decision("ann", Verdict::Approve, "")]),
        (Duration::ZERO, vec![decision("ann", Verdict::Approve, "")]),
    ]);
    let mut request = request_with(&dirs, &cluster, &yaml);
    request.resume = Some(Resume::reattach(record, Default::default()).expect("a waiting run can be continued"));
    request.approvals = Some(gate.clone());
    let recorder = Recorder::new();
    let record = engine.run(request, recorder.clone(), tokio::sync::watch::channel(None).1).await;
    let log = recorder.lines(task(&record, "canary")).join("\n");
    assert_eq!(record.progress.status, Status::Succeeded, "{:?}\n{log}", record.reason);
    assert_eq!(gate.keys(), ["canary@25%", "canary@50%"]);
    assert!(log.contains("canary: still waiting, after a server restart, at 25%"), "{log}");
    assert!(!log.contains("created Deployment"), "the canary is not begun again: {log}");
    assert_eq!(task_record(&record, "canary").outputs["canary"], "promoted");
    assert_eq!(task_record(&record, "canary").attempts, 1, "the same attempt went on");
    assert_eq!(cluster.shape("web").await, Some((4, "reg.example/web:7".into())));
    assert_eq!(cluster.shape("web-canary").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tasks_own_timeout_counts_the_wait_before_a_restart() {
    let cluster = Cluster::start().await;
    let dirs = Dirs::new();
    let engine = engine().with_approvals();
    let yaml = canary("steps: [50, 100], approval: true, timeout: 3s");
    let mut request = request_with(&dirs, &cluster, &yaml);
    request.approvals = Some(StepGate::new(vec![]));
    let recorder = Recorder::new();
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(None);
    {
        let run = engine.run(request, recorder.clone(), stop_rx);
        tokio::select! {
            _ = run => panic!("the run ended while waiting"),
            () = recorder.wait_for_line(Part::Task(0, 0), "waiting at 50%") => {}
        }
    }
    // The server is down longer than the task may take.
    tokio::time::sleep(secs(3)).await;
    let mut request = request_with(&dirs, &cluster, &yaml);
    request.resume = Some(Resume::reattach(recorder.last_record(), Default::default()).unwrap());
    request.approvals = Some(StepGate::new(vec![]));
    let started = std::time::Instant::now();
    // A new observer, as after a restart (it never saw the first life's changes).
    let recorder = Recorder::new();
    let record = engine.run(request, recorder.clone(), tokio::sync::watch::channel(None).1).await;
    let log = recorder.lines(task(&record, "canary")).join("\n");
    assert_eq!(record.progress.status, Status::TimedOut, "{log}");
    assert!(started.elapsed() < secs(2), "the timeout started afresh: {:?}\n{log}", started.elapsed());
    assert!(log.contains("rolled back"), "{log}");
    assert_eq!(cluster.shape("web").await, Some((4, "reg.example/web:1".into())));
    assert_eq!(cluster.shape("web-canary").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_people_decide_rolls_the_canary_back() {
    let cluster = Cluster::start().await;
    let dirs = Dirs::new();
    let engine = engine().with_approvals();
    let yaml = canary("steps: [25, 100], approval: true");
    let mut request = request_with(&dirs, &cluster, &yaml);
    request.approvals = Some(StepGate::new(vec![]));
    let recorder = Recorder::new();
    let waiting = recorder.wait_for_line(Part::Task(0, 0), "waiting at 25%");
    let record = run_stopped_when(&engine, request, recorder.clone(), waiting, stop_request(secs(1))).await;
    let log = recorder.lines(task(&record, "canary")).join("\n");
    assert_eq!(record.progress.status, Status::Stopped, "{log}");
    assert_eq!(task_record(&record, "canary").progress.status, Status::Stopped, "{log}");
    assert!(log.contains("rolled back: web-canary deleted"), "{log}");
    assert_eq!(cluster.shape("web").await, Some((4, "reg.example/web:1".into())));
    assert_eq!(cluster.shape("web-canary").await, None);
}
