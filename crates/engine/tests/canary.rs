//! `canary` tasks in the engine on the real Kubernetes deployer against the Kubernetes
//! API test double: a canary promoted step by step, one that fails mid-way and one cut
//! off by its timeout, both rolled back to the stable Deployment as it was.

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use wharf_core::status::Status;
use wharf_engine::{Clusters, Engine, RunRequest};
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
fn approval_between_steps_is_refused_at_start_and_a_plain_engine_has_no_canary() {
    let yaml = canary("steps: [50, 100], approval: true");
    let err = engine().prepare(&pipeline(&yaml), &BTreeMap::new(), &BTreeMap::new()).unwrap_err().to_string();
    assert!(err.contains("`approval: true` between canary steps is not built yet"), "{err}");
    let err = host_engine().prepare(&pipeline(&canary("steps: [100]")), &BTreeMap::new(), &BTreeMap::new());
    assert!(err.unwrap_err().to_string().contains("`canary` tasks need the Wharf server"));
}
