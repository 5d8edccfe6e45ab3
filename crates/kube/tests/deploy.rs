//! `deploy-yaml` (wharf_kube::deploy::KubeDeployer) against the Kubernetes API test double,
//! over HTTPS with the kubeconfig it writes; where another client must act first (a field
//! owned by another manager), the real kubectl does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wharf_executor::deploy::{Applied, ClusterLogin, DeployError, DeployExit, DeploySpec, Deployer};
use wharf_executor::{LogLine, LogSink, StopReason, StopRequest};
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
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn has(&self, needle: &str) -> bool {
        self.all().iter().any(|l| l.contains(needle))
    }
}

/// The server's outbound policy as a test configures it: the fake listens on 127.0.0.1.
fn local() -> wharf_kube::Policy {
    wharf_kube::Policy::new(&["127.0.0.1"]).unwrap()
}

async fn fake(options: Options) -> KubeFake {
    KubeFake::start(options).await.unwrap()
}

async fn with_namespace(fake: &KubeFake, ns: &str) {
    let conn = Connection::from_kubeconfig(&fake.kubeconfig(), None, &FileAccess::Refuse, &local()).unwrap();
    ensure_namespace(&conn, ns, &BTreeMap::new()).await.unwrap();
}

fn spec(kubeconfig: String, namespace: &str, manifests: &str) -> DeploySpec {
    DeploySpec {
        run: "deploy-2048#7".into(),
        stage: "Deploy".into(),
        task: "deploy-2048".into(),
        file: "2048_env.yaml".into(),
        manifests: manifests.into(),
        cluster: ClusterLogin { name: "test-cluster".into(), kubeconfig, context: None },
        namespace: namespace.into(),
    }
}

type Outcome = (Result<DeployExit, DeployError>, Arc<Lines>);

async fn deploy(kubeconfig: String, namespace: &str, manifests: &str) -> Outcome {
    let (_tx, stop) = tokio::sync::watch::channel(None);
    let lines = Arc::new(Lines::default());
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        KubeDeployer::new(local()).deploy(spec(kubeconfig, namespace, manifests), lines.clone(), stop),
    )
    .await
    .expect("the deploy ends within 60 s");
    (result, lines)
}

fn deployed(outcome: &Outcome) -> Vec<Applied> {
    match &outcome.0 {
        Ok(DeployExit::Deployed(applied)) => applied.clone(),
        other => panic!("{other:?}\nlog:\n{}", outcome.1.all().join("\n")),
    }
}

fn failed(outcome: &Outcome) -> String {
    match &outcome.0 {
        Err(e) => e.to_string(),
        other => panic!("expected a failure, got {other:?}\nlog:\n{}", outcome.1.all().join("\n")),
    }
}

/// The seed's 2048_env.yaml (best practice 5.1), `${BUILD_ID}` already substituted, without
/// its Ingress (`networking.k8s.io/v1beta1`, gone since Kubernetes 1.22).
const GAME: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: jack-2048
spec:
  selector:
    matchLabels:
      application: jack-2048
  strategy:
    rollingUpdate:
      maxSurge: 3
      maxUnavailable: 70%
    type: RollingUpdate
  template:
    metadata:
      labels:
        application: jack-2048
    spec:
      containers:
      - image: hub.ecns.io/devops/jack-2048:alpha-7
        imagePullPolicy: IfNotPresent
        name: jack-2048
        ports:
        - containerPort: 80
          protocol: TCP
---
apiVersion: v1
kind: Service
metadata:
  name: svc-2048
  labels:
    application: jack-2048
spec:
  ports:
  - name: port-2048
    port: 80
    protocol: TCP
    targetPort: 80
  selector:
    application: jack-2048
  type: ClusterIP
"#;

fn faulted(fault: &str) -> String {
    GAME.replacen(
        "  name: jack-2048\nspec:",
        &format!("  name: jack-2048\n  annotations:\n    kube-fake.wharf.dev/fault: {fault}\nspec:"),
        1,
    )
}

#[tokio::test]
async fn the_2048_game_is_applied_and_rolled_out() {
    let fake = fake(Options { rollout_delay: Duration::from_millis(200), ..Options::default() }).await;
    with_namespace(&fake, "games").await;
    let outcome = deploy(fake.kubeconfig(), "games", GAME).await;
    let applied = deployed(&outcome);
    let names: Vec<String> =
        applied.iter().map(|a| format!("{}/{}/{}", a.kind, a.namespace.as_deref().unwrap_or("-"), a.name)).collect();
    assert_eq!(names, ["Deployment/games/jack-2048", "Service/games/svc-2048"]);
    assert!(applied.iter().all(|a| a.resource_version.parse::<u64>().is_ok()), "{applied:?}");
    let log = outcome.1.all();
    assert!(log.contains(&"Waiting for deployment spec update to be observed...".to_owned()), "{log:#?}");
    assert!(log.contains(&"deployment \"jack-2048\" successfully rolled out".to_owned()), "{log:#?}");
    assert!(outcome.1.has(&format!("applied {}", applied[0])), "{log:#?}");
    // The objects are the cluster's now, owned by the field manager `wharf`.
    let conn = Connection::from_kubeconfig(&fake.kubeconfig(), None, &FileAccess::Refuse, &local()).unwrap();
    let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> = kube::Api::namespaced(conn.client().clone(), "games");
    let d = api.get("jack-2048").await.unwrap();
    let managers: Vec<_> = d.metadata.managed_fields.iter().flatten().filter_map(|m| m.manager.clone()).collect();
    assert_eq!(managers, ["wharf"]);
    // Applying the same file again changes nothing and is done at once.
    let again = deploy(fake.kubeconfig(), "games", GAME).await;
    assert_eq!(deployed(&again)[1], applied[1], "the Service is unchanged");
}

#[tokio::test]
async fn namespaces_then_the_file_order() {
    let fake = fake(Options::default()).await;
    let file = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: fast}\n---\n\
                apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
                apiVersion: v1\nkind: Secret\nmetadata: {name: keys, namespace: shop}\nstringData: {a: b}\n";
    let outcome = deploy(fake.kubeconfig(), "shop", file).await;
    let order: Vec<String> = deployed(&outcome).iter().map(|a| format!("{} {:?}", a.kind, a.namespace)).collect();
    assert_eq!(order, ["Namespace None", "ConfigMap Some(\"shop\")", "Secret Some(\"shop\")"]);
}

#[tokio::test]
async fn a_missing_namespace_is_not_created() {
    let fake = fake(Options::default()).await;
    let outcome = deploy(fake.kubeconfig(), "games", GAME).await;
    let err = failed(&outcome);
    assert!(err.starts_with("cluster `test-cluster`, namespace `games`: the namespace does not exist"), "{err}");
    assert!(err.contains("namespaces \"games\" not found"), "{err}");
}

#[tokio::test]
async fn another_namespace_is_refused_before_any_write() {
    let fake = fake(Options::default()).await;
    with_namespace(&fake, "games").await;
    with_namespace(&fake, "x").await;
    let file = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: first}}\n---\n{GAME}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: x}}\nspec: {{}}\n"
    );
    let err = failed(&deploy(fake.kubeconfig(), "games", &file).await);
    assert_eq!(
        err,
        "2048_env.yaml: document 4 (Deployment web, line 46) names namespace `x`; this task deploys to `games`: set \
         the task's namespace or split the file"
    );
    let conn = Connection::from_kubeconfig(&fake.kubeconfig(), None, &FileAccess::Refuse, &local()).unwrap();
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(conn.client().clone(), "games");
    assert!(cms.get_opt("first").await.unwrap().is_none(), "nothing was written");
}

#[tokio::test]
async fn a_bad_document_is_refused_before_any_write() {
    let fake = fake(Options::default()).await;
    with_namespace(&fake, "games").await;
    let file = format!("{GAME}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels: {{a: b}}\n");
    let err = failed(&deploy(fake.kubeconfig(), "games", &file).await);
    assert_eq!(err, "2048_env.yaml: document 3 (line 42): ConfigMap: `metadata.name` is missing");
    let conn = Connection::from_kubeconfig(&fake.kubeconfig(), None, &FileAccess::Refuse, &local()).unwrap();
    let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> = kube::Api::namespaced(conn.client().clone(), "games");
    assert!(api.get_opt("jack-2048").await.unwrap().is_none(), "nothing was written");
}

#[tokio::test]
async fn an_unknown_kind_asks_for_its_crd() {
    let fake = fake(Options::default()).await;
    with_namespace(&fake, "games").await;
    let file = format!("{GAME}---\napiVersion: games.example.com/v1\nkind: Leaderboard\nmetadata: {{name: top}}\n");
    let err = failed(&deploy(fake.kubeconfig(), "games", &file).await);
    assert_eq!(
        err,
        "2048_env.yaml: document 3 (Leaderboard top, line 42): cluster `test-cluster` does not know the kind \
         `Leaderboard` in `games.example.com/v1`: install its CRD first"
    );
}

#[tokio::test]
async fn a_removed_api_version_names_the_served_one() {
    let fake = fake(Options::default()).await;
    with_namespace(&fake, "games").await;
    let old = GAME.replacen("apiVersion: apps/v1", "apiVersion: apps/v1beta1", 1);
    let err = failed(&deploy(fake.kubeconfig(), "games", &old).await);
    assert_eq!(
        err,
        "2048_env.yaml: document 1 (Deployment jack-2048, line 1): cluster `test-cluster` serves `Deployment` in \
         `apps/v1`, not in `apps/v1beta1` (an API version newer Kubernetes removed?): change the document's apiVersion"
    );
}

#[tokio::test]
async fn each_fault_fails_fast_in_kubernetes_words() {
    let fake = fake(Options::default()).await;
    with_namespace(&fake, "games").await;
    let cases = [
        (
            "image-pull-backoff",
            "Deployment games/jack-2048: pod jack-2048-",
            "container jack-2048 is waiting: ImagePullBackOff: Back-off pulling image \"hub.ecns.io/devops/jack-2048:alpha-7\" \
             (the rollout cannot finish); the kubelet says: Failed: Failed to pull image \"hub.ecns.io/devops/jack-2048:alpha-7\": \
             rpc error: code = NotFound",
        ),
        (
            "crash-loop",
            "Deployment games/jack-2048: pod jack-2048-",
            "container jack-2048 is waiting: CrashLoopBackOff: back-off restarting failed container",
        ),
        (
            "progress-deadline",
            "Deployment games/jack-2048: deployment \"jack-2048\" exceeded its progress deadline",
            "(ProgressDeadlineExceeded: ReplicaSet \"jack-2048-1\" has timed out progressing.)",
        ),
        (
            "quota-exceeded",
            "Deployment games/jack-2048: deployment \"jack-2048\" cannot create its pods (FailedCreate: ",
            "pods \"jack-2048-1-\" is forbidden: exceeded quota: compute-resources",
        ),
    ];
    for (fault, first, second) in cases {
        // A namespace each: the fake has no ReplicaSets to tell an earlier rollout's pods apart.
        with_namespace(&fake, fault).await;
        let started = std::time::Instant::now();
        let err = failed(&deploy(fake.kubeconfig(), fault, &faulted(fault)).await);
        let first = first.replace("games", fault);
        let first = first.as_str();
        assert!(err.starts_with(&format!("cluster `test-cluster`, namespace `{fault}`: ")), "{fault}: {err}");
        assert!(err.contains(first) && err.contains(second), "{fault}: {err}");
        assert!(started.elapsed() < Duration::from_secs(10), "{fault}: failed after {:?}", started.elapsed());
    }
}

#[tokio::test]
async fn stop_ends_a_wait_that_would_not_end() {
    let fake = fake(Options::default()).await;
    with_namespace(&fake, "games").await;
    let (tx, stop) = tokio::sync::watch::channel(None);
    let lines = Arc::new(Lines::default());
    let spec = spec(fake.kubeconfig(), "games", &faulted("never-ready"));
    let deployer = KubeDeployer::new(local());
    let task = deployer.deploy(spec, lines.clone(), stop);
    let stopper = async {
        for _ in 0..200 {
            if lines.has("0 of 1 updated replicas are available") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        tx.send(Some(StopRequest { reason: StopReason::TimedOut, grace: Duration::from_secs(5) })).unwrap();
        std::time::Instant::now()
    };
    let (result, sent) = tokio::join!(task, stopper);
    assert!(sent.elapsed() < Duration::from_secs(1), "the stop took {:?}", sent.elapsed());
    assert_eq!(result.unwrap(), DeployExit::Stopped(StopReason::TimedOut), "{:#?}", lines.all());
    assert!(
        lines.has("Waiting for deployment \"jack-2048\" rollout to finish: 0 of 1 updated replicas are available..."),
        "{:#?}",
        lines.all()
    );
}

#[tokio::test]
async fn an_admission_refusal_is_the_api_servers_words() {
    let fake = fake(Options::default()).await;
    with_namespace(&fake, "games").await;
    let err = failed(&deploy(fake.kubeconfig(), "games", &faulted("admission-denied")).await);
    assert!(
        err.starts_with(
            "cluster `test-cluster`, namespace `games`: the API server refused to apply Deployment games/jack-2048 \
             (document 1 (Deployment jack-2048, line 1)): admission webhook \"deny.kube-fake.wharf.dev\" denied the request"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn rbac_forbidden_says_which_verb_on_which_resource() {
    let fake = fake(Options { restricted_token: Some("viewer".into()), ..Options::default() }).await;
    with_namespace(&fake, "games").await;
    let kubeconfig = fake.kubeconfig().replace(fake.token(), "viewer");
    let err = failed(&deploy(kubeconfig, "games", GAME).await);
    assert_eq!(
        err,
        "cluster `test-cluster`, namespace `games`: RBAC forbids apply Deployment games/jack-2048 (document 1 \
         (Deployment jack-2048, line 1)): deployments.apps \"jack-2048\" is forbidden: User \
         \"system:serviceaccount:default:kube-fake-viewer\" cannot patch resource \"deployments\" in API group \"apps\" \
         in the namespace \"games\""
    );
}

#[tokio::test]
async fn expired_credentials_and_an_unreachable_cluster() {
    let fake = fake(Options::default()).await;
    let wrong = fake.kubeconfig().replace(fake.token(), "expired-token");
    let err = failed(&deploy(wrong, "games", GAME).await);
    assert!(err.starts_with(&format!("cluster `test-cluster` at {} refused the credentials", fake.url())), "{err}");
    assert!(err.contains("401 Unauthorized"), "{err}");
    assert!(!err.contains("expired-token"), "{err}");
    let kubeconfig = fake.kubeconfig();
    drop(fake);
    let err = failed(&deploy(kubeconfig, "games", GAME).await);
    assert!(err.starts_with("cluster `test-cluster` is unreachable at https://127.0.0.1:"), "{err}");
}

#[tokio::test]
async fn an_internal_address_the_policy_refuses() {
    let fake = fake(Options::default()).await;
    let (_tx, stop) = tokio::sync::watch::channel(None);
    let strict = KubeDeployer::new(wharf_kube::Policy::default());
    let err =
        strict.deploy(spec(fake.kubeconfig(), "games", GAME), Arc::new(Lines::default()), stop).await.unwrap_err();
    let err = err.to_string();
    assert!(err.starts_with("cluster `test-cluster`: its kubeconfig: "), "{err}");
    assert!(err.contains("127.0.0.1"), "{err}");
}

#[tokio::test]
async fn two_hundred_objects_in_one_file() {
    let fake = fake(Options::default()).await;
    with_namespace(&fake, "bulk").await;
    let file: String = (0..200)
        .map(|i| format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i:03}\ndata:\n  index: \"{i}\"\n"))
        .collect::<Vec<_>>()
        .join("---\n");
    let applied = deployed(&deploy(fake.kubeconfig(), "bulk", &file).await);
    assert_eq!(applied.len(), 200);
    for (i, a) in applied.iter().enumerate() {
        assert_eq!(a.name, format!("cm-{i:03}"));
    }
    let conn = Connection::from_kubeconfig(&fake.kubeconfig(), None, &FileAccess::Refuse, &local()).unwrap();
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(conn.client().clone(), "bulk");
    let list = cms.list(&Default::default()).await.unwrap();
    assert_eq!(list.items.len(), 200);
    let c = list.items.iter().find(|c| c.metadata.name.as_deref() == Some("cm-123")).unwrap();
    assert_eq!(c.data.as_ref().unwrap()["index"], "123");
}

// ---- with the real kubectl ---------------------------------------------------------------

const KUBECTL: &str = "/usr/bin/kubectl";

/// `Some(path)` when kubectl is here; otherwise prints why the test skips, and fails under `CI=true`.
fn kubectl_or_skip() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var("WHARF_TEST_KUBECTL").unwrap_or_else(|_| KUBECTL.into()));
    if path.exists() {
        return Some(path);
    }
    assert!(std::env::var_os("CI").is_none_or(|v| v != "true"), "{} is required when CI=true", path.display());
    eprintln!("SKIPPED: no kubectl at {} (set WHARF_TEST_KUBECTL)", path.display());
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_another_manager_owns_is_logged_and_taken() {
    let Some(kubectl) = kubectl_or_skip() else { return };
    let fake = fake(Options::default()).await;
    with_namespace(&fake, "games").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&config).unwrap();
    let first = GAME.replacen("spec:\n  selector:", "spec:\n  replicas: 1\n  selector:", 1);
    let mut child = tokio::process::Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(&config)
        .args(["apply", "--server-side", "--field-manager=ops-team", "-n", "games", "-f", "-"])
        .env("HOME", dir.path())
        .env_remove("KUBECONFIG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(first.as_bytes()).await.unwrap();
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mine = GAME.replacen("spec:\n  selector:", "spec:\n  replicas: 3\n  selector:", 1);
    let outcome = deploy(fake.kubeconfig(), "games", &mine).await;
    deployed(&outcome);
    assert!(
        outcome.1.has(
            "Deployment games/jack-2048: field .spec.replicas is managed by \"ops-team\" (conflict with \"ops-team\"); \
             wharf takes it over (force)"
        ),
        "{:#?}",
        outcome.1.all()
    );
    assert!(outcome.1.has("deployment \"jack-2048\" successfully rolled out"), "{:#?}", outcome.1.all());
}

#[tokio::test]
async fn stateful_sets_and_daemon_sets_roll_out_too() {
    let fake = fake(Options { rollout_delay: Duration::from_millis(100), ..Options::default() }).await;
    with_namespace(&fake, "data").await;
    let file = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  replicas: 2\n  serviceName: db\n  \
                selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: \
                [{name: db, image: pg}]}\n---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  \
                selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec: \
                {containers: [{name: agent, image: a}]}\n";
    let outcome = deploy(fake.kubeconfig(), "data", file).await;
    assert_eq!(deployed(&outcome).len(), 2);
    let log = outcome.1.all();
    assert!(log.contains(&"Waiting for statefulset spec update to be observed...".to_owned()), "{log:#?}");
    // The fake defaults `partition: 0`, as a real API server does: kubectl's partitioned message.
    assert!(log.contains(&"partitioned roll out complete: 2 new pods have been updated...".to_owned()), "{log:#?}");
    assert!(log.contains(&"daemon set \"agent\" successfully rolled out".to_owned()), "{log:#?}");
}

#[tokio::test]
async fn stop_ends_a_deploy_whose_cluster_does_not_answer() {
    let fake = fake(Options::default()).await;
    // Accepts connections and never says a word (a cluster behind a black hole).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", silent.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    let kubeconfig = fake.kubeconfig().replace(&fake.url(), &url);
    let (tx, stop) = tokio::sync::watch::channel(None);
    let lines = Arc::new(Lines::default());
    let deployer = KubeDeployer::new(local());
    let task = deployer.deploy(spec(kubeconfig, "games", GAME), lines.clone(), stop);
    let stopper = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tx.send(Some(StopRequest { reason: StopReason::Stopped, grace: Duration::from_secs(5) })).unwrap();
        std::time::Instant::now()
    };
    let (result, sent) = tokio::join!(task, stopper);
    assert!(sent.elapsed() < Duration::from_secs(1), "the stop took {:?}", sent.elapsed());
    assert_eq!(result.unwrap(), DeployExit::Stopped(StopReason::Stopped));
    assert!(lines.has("deploy-yaml: stopped by user; what was applied stays applied"), "{:#?}", lines.all());
    hold.abort();
}
