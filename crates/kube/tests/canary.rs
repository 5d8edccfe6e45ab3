//! `canary` (wharf_kube::canary through the KubeDeployer) against the Kubernetes API test
//! double: the steps' replica counts and labels, the promotion, a failure mid-way and a
//! stop, each rolled back to the stable replicas with the canary deleted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use wharf_executor::deploy::{CanaryAction, CanaryExit, CanarySpec, ClusterLogin, DeployExit, DeploySpec, Deployer};
use wharf_executor::{LogLine, LogSink, StopReason, StopRequest};
use wharf_kube::canary::{CANARY_LABEL, TOTAL_ANNOTATION};
use wharf_kube::deploy::KubeDeployer;
use wharf_kube::{Connection, FileAccess, ensure_namespace};
use wharf_kube_fake::{KubeFake, Options};

#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl LogSink for Lines {
    fn line(&self, line: LogLine) {
        self.0.lock().unwrap().push(line.text);
    }
}

impl Lines {
    fn has(&self, needle: &str) -> bool {
        self.0.lock().unwrap().iter().any(|l| l.contains(needle))
    }
}

const STABLE: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: 'reg.example/team/web:1'}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
";

struct Env {
    _fake: KubeFake,
    conn: Connection,
    deployer: KubeDeployer,
    spec: CanarySpec,
}

fn local() -> wharf_kube::Policy {
    wharf_kube::Policy::new(&["127.0.0.1"]).unwrap()
}

/// A fake with namespace `shop` and the stable `web` (4 replicas, image `…:1`) and its Service.
async fn env(rollout_delay: Duration) -> Env {
    let fake = KubeFake::start(Options { rollout_delay, ..Default::default() }).await.unwrap();
    let conn = Connection::from_kubeconfig(&fake.kubeconfig(), None, &FileAccess::Refuse, &local()).unwrap();
    ensure_namespace(&conn, "shop", &BTreeMap::new()).await.unwrap();
    let cluster = ClusterLogin { name: "test-cluster".into(), kubeconfig: fake.kubeconfig(), context: None };
    let deployer = KubeDeployer::new(local());
    let deploy = DeploySpec {
        run: "shop#1".into(),
        stage: "Deploy".into(),
        task: "deploy".into(),
        file: "web.yaml".into(),
        manifests: STABLE.into(),
        cluster: cluster.clone(),
        namespace: "shop".into(),
    };
    let (_tx, rx) = tokio::sync::watch::channel(None);
    let applied = deployer.deploy(deploy, Arc::new(Lines::default()), rx).await.unwrap();
    assert!(matches!(applied, DeployExit::Deployed(_)), "{applied:?}");
    let spec = CanarySpec {
        run: "shop#2".into(),
        stage: "Release".into(),
        task: "canary".into(),
        cluster,
        namespace: "shop".into(),
        deployment: "web".into(),
        image: "reg.example/team/web:2".into(),
    };
    Env { _fake: fake, conn, deployer, spec }
}

impl Env {
    async fn act(&self, action: CanaryAction, logs: &Arc<Lines>) -> Result<CanaryExit, String> {
        let (_tx, rx) = tokio::sync::watch::channel(None);
        self.deployer.canary(&self.spec, action, logs.clone(), rx).await.map_err(|e| e.to_string())
    }

    fn api(&self) -> Api<Deployment> {
        Api::namespaced(self.conn.client().clone(), "shop")
    }

    async fn deployment(&self, name: &str) -> Option<Deployment> {
        self.api().get_opt(name).await.unwrap()
    }

    /// (replicas, first container's image) of Deployment `name`.
    async fn shape(&self, name: &str) -> Option<(i32, String)> {
        let d = self.deployment(name).await?;
        let spec = d.spec.unwrap();
        let image = spec.template.spec.unwrap().containers[0].image.clone().unwrap();
        Some((spec.replicas.unwrap(), image))
    }
}

#[tokio::test]
async fn each_step_moves_replicas_then_the_new_image_goes_into_the_stable_deployment() {
    let env = env(Duration::ZERO).await;
    let logs = Arc::new(Lines::default());
    assert_eq!(env.act(CanaryAction::Begin, &logs).await.unwrap(), CanaryExit::Done { total: 4 });

    let canary = env.deployment("web-canary").await.expect("the canary exists");
    let labels = canary.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().labels.clone().unwrap();
    assert_eq!(labels.get("app").map(String::as_str), Some("web"), "the Service's selector matches the canary's pods");
    assert_eq!(labels.get(CANARY_LABEL).map(String::as_str), Some("web"));
    let selector = canary.spec.as_ref().unwrap().selector.match_labels.clone().unwrap();
    assert_eq!(selector.get(CANARY_LABEL).map(String::as_str), Some("web"), "stable pods lack it: no overlap");
    assert_eq!(canary.metadata.annotations.unwrap().get(TOTAL_ANNOTATION).map(String::as_str), Some("4"));
    assert_eq!(env.shape("web-canary").await, Some((0, "reg.example/team/web:2".into())));

    for (percent, canary, stable) in [(25, 1, 3), (50, 2, 2), (90, 4, 1)] {
        let step = env.act(CanaryAction::Step { percent, total: 4 }, &logs).await.unwrap();
        assert_eq!(step, CanaryExit::Done { total: 4 });
        assert_eq!(env.shape("web-canary").await, Some((canary, "reg.example/team/web:2".into())), "{percent}%");
        assert_eq!(env.shape("web").await, Some((stable, "reg.example/team/web:1".into())), "{percent}%");
    }
    assert!(logs.has("step 25%: canary 1 of 4 replica(s), stable 3"));

    env.act(CanaryAction::Promote { total: 4 }, &logs).await.unwrap();
    assert_eq!(env.shape("web").await, Some((4, "reg.example/team/web:2".into())));
    assert!(env.deployment("web-canary").await.is_none(), "the canary is deleted");
    assert!(logs.has("promoted: web runs reg.example/team/web:2"));
}

#[tokio::test]
async fn a_failure_mid_way_is_rolled_back_exactly() {
    let env = env(Duration::ZERO).await;
    let logs = Arc::new(Lines::default());
    env.act(CanaryAction::Begin, &logs).await.unwrap();
    env.act(CanaryAction::Step { percent: 25, total: 4 }, &logs).await.unwrap();
    assert_eq!(env.shape("web").await.unwrap().0, 3);
    // The new version turns bad: its next pods never become ready.
    let bad = json!({"metadata": {"annotations": {"kube-fake.wharf.dev/fault": "progress-deadline"}}});
    env.api().patch("web-canary", &PatchParams::default(), &Patch::Merge(&bad)).await.unwrap();

    let failed = env.act(CanaryAction::Step { percent: 50, total: 4 }, &logs).await.unwrap_err();
    assert!(failed.contains("web-canary") && failed.contains("progress deadline"), "{failed}");
    assert_eq!(env.shape("web").await.unwrap().0, 3, "the stable one is not scaled down before the canary is up");

    assert_eq!(env.act(CanaryAction::Abort, &logs).await.unwrap(), CanaryExit::Done { total: 4 });
    assert_eq!(env.shape("web").await, Some((4, "reg.example/team/web:1".into())));
    assert!(env.deployment("web-canary").await.is_none());
    assert!(logs.has("rolled back: web-canary deleted, web unchanged"));
    // Nothing left to undo the second time.
    env.act(CanaryAction::Abort, &logs).await.unwrap();
    assert!(logs.has("no Deployment web-canary: nothing to undo"));
}

#[tokio::test]
async fn a_stop_ends_the_wait_and_the_abort_restores() {
    // Rollouts take 3 s here: the stop comes while the canary's is under way.
    let env = env(Duration::from_secs(3)).await;
    let logs = Arc::new(Lines::default());
    env.act(CanaryAction::Begin, &logs).await.unwrap();
    let (tx, rx) = tokio::sync::watch::channel(None);
    let step = env.deployer.canary(&env.spec, CanaryAction::Step { percent: 50, total: 4 }, logs.clone(), rx);
    let stopper = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send(Some(StopRequest { reason: StopReason::Stopped, grace: Duration::from_secs(5) })).unwrap();
    };
    let (exit, ()) = tokio::join!(step, stopper);
    assert_eq!(exit.unwrap(), CanaryExit::Stopped(StopReason::Stopped));
    env.act(CanaryAction::Abort, &logs).await.unwrap();
    assert_eq!(env.shape("web").await, Some((4, "reg.example/team/web:1".into())));
    assert!(env.deployment("web-canary").await.is_none());
}

#[tokio::test]
async fn a_leftover_canary_is_undone_before_a_new_one_and_a_missing_stable_is_named() {
    let env = env(Duration::ZERO).await;
    let logs = Arc::new(Lines::default());
    env.act(CanaryAction::Begin, &logs).await.unwrap();
    env.act(CanaryAction::Step { percent: 50, total: 4 }, &logs).await.unwrap();
    // A server died here; the next run begins again from the recorded total.
    assert_eq!(env.act(CanaryAction::Begin, &logs).await.unwrap(), CanaryExit::Done { total: 4 });
    assert!(logs.has("left from an earlier canary"));
    assert_eq!(env.shape("web").await.unwrap().0, 4);
    assert_eq!(env.shape("web-canary").await.unwrap().0, 0);

    let mut other = env.spec.clone();
    other.deployment = "nope".into();
    let (_tx, rx) = tokio::sync::watch::channel(None);
    let err = env.deployer.canary(&other, CanaryAction::Begin, logs.clone(), rx).await.unwrap_err().to_string();
    assert!(err.contains("cluster `test-cluster`, namespace `shop`") && err.contains("`nope` does not exist"), "{err}");
}
