//! The fake's own test is the real `kubectl` (1.32 at /usr/bin/kubectl on the CI image):
//! every command here is what a user would type against a cluster.

use std::path::{Path, PathBuf};
use std::time::Duration;

use wharf_kube_fake::{KubeFake, Options, Taint};

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

struct Kubectl {
    bin: PathBuf,
    config: PathBuf,
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use tokio::io::AsyncWriteExt;
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("--kubeconfig").arg(&self.config).args(args);
        cmd.env("HOME", self.config.parent().unwrap()).env_remove("KUBECONFIG");
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn kubectl");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).await.unwrap();
        }
        drop(input);
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish in 60 s"))
            .unwrap();
        Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, None).await
    }

    async fn ok_with(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin).await;
        assert!(out.ok, "kubectl {args:?} failed:\nstdout: {}\nstderr: {}", out.stdout, out.stderr);
        out.stdout
    }
}

async fn setup(dir: &Path, options: Options) -> Option<(KubeFake, Kubectl)> {
    let bin = kubectl_or_skip()?;
    let fake = KubeFake::start(options).await.expect("start kube-fake");
    let config = dir.join("kubeconfig");
    fake.write_kubeconfig(&config).unwrap();
    Some((fake, Kubectl { bin, config }))
}

const MANIFEST: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
      annotations: {kube-fake.wharf.dev/logs: "listening on :80"}
    spec:
      containers:
      - name: web
        image: registry.example/web:1
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 80
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
  labels: {tier: front}
data:
  mode: fast
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_rolls_out_gets_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_fake, k)) = setup(dir.path(), Options::default()).await else { return };

    let version = k.ok(&["version", "-o", "json"]).await;
    assert!(version.contains("v1.32.0-kube-fake"), "{version}");

    let nodes = k.ok(&["get", "nodes", "-o", "jsonpath={.items[*].status.conditions[0].status}"]).await;
    assert_eq!(nodes, "True", "one ready node by default");

    assert!(k.ok(&["create", "namespace", "shop"]).await.contains("namespace/shop created"));

    let applied = k.ok_with(&["apply", "--server-side", "-f", "-"], Some(MANIFEST)).await;
    assert!(applied.contains("deployment.apps/web serverside-applied"), "{applied}");
    assert!(applied.contains("service/web serverside-applied"), "{applied}");

    let rollout = k.ok(&["-n", "shop", "rollout", "status", "deployment/web", "--timeout=20s"]).await;
    assert!(rollout.contains("successfully rolled out"), "{rollout}");

    let yaml = k.ok(&["-n", "shop", "get", "deployment", "web", "-o", "yaml", "--show-managed-fields"]).await;
    for want in [
        "uid: ",
        "resourceVersion: ",
        "creationTimestamp: ",
        "generation: 1",
        "manager: kubectl",
        "operation: Apply",
        "observedGeneration: 1",
        "availableReplicas: 2",
        "image: registry.example/web:1",
    ] {
        assert!(yaml.contains(want), "no {want:?} in\n{yaml}");
    }

    // A second apply with a change bumps the generation and rolls out again.
    let changed = MANIFEST.replace("web:1", "web:2");
    k.ok_with(&["apply", "--server-side", "-f", "-"], Some(&changed)).await;
    k.ok(&["-n", "shop", "rollout", "status", "deployment/web", "--timeout=20s"]).await;
    let generation = k.ok(&["-n", "shop", "get", "deployment", "web", "-o", "jsonpath={.metadata.generation}"]).await;
    assert_eq!(generation, "2");

    let table = k.ok(&["-n", "shop", "get", "cm", "-l", "tier=front"]).await;
    assert!(table.contains("settings"), "{table}");
    let none = k.run(&["-n", "shop", "get", "cm", "-l", "tier=back"], None).await;
    assert!(none.ok && none.stderr.contains("No resources found in shop namespace."), "{}", none.stderr);
    let pods = k.ok(&["-n", "shop", "get", "pods", "-l", "app=web", "-o", "name"]).await;
    assert_eq!(pods.lines().count(), 2, "{pods}");
    assert!(pods.lines().all(|p| p.starts_with("pod/web-")), "{pods}");
    let logs = k.ok(&["-n", "shop", "logs", "deployment/web"]).await;
    assert_eq!(logs, "listening on :80\n");

    let missing = k.run(&["-n", "shop", "get", "deployment", "nothere"], None).await;
    assert!(!missing.ok);
    assert!(
        missing.stderr.contains(r#"Error from server (NotFound): deployments.apps "nothere" not found"#),
        "{}",
        missing.stderr
    );

    let deleted = k.ok(&["-n", "shop", "delete", "deployment", "web"]).await;
    assert!(deleted.contains(r#"deployment.apps "web" deleted"#), "{deleted}");
    let gone = k.run(&["-n", "shop", "get", "deployment", "web"], None).await;
    assert!(gone.stderr.contains("NotFound"), "{}", gone.stderr);
    let orphans = k.run(&["-n", "shop", "get", "pods"], None).await;
    assert!(orphans.stderr.contains("No resources found in shop namespace."), "{}", orphans.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_deadline_fault_fails_rollout_status() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_fake, k)) = setup(dir.path(), Options::default()).await else { return };
    let manifest = MANIFEST.split("---").next().unwrap().replace("namespace: shop", "namespace: default").replace(
        "labels: {app: web}\nspec:",
        "labels: {app: web}\n  annotations: {kube-fake.wharf.dev/fault: progress-deadline}\nspec:",
    );
    k.ok_with(&["apply", "--server-side", "-f", "-"], Some(&manifest)).await;
    let out = k.run(&["rollout", "status", "deployment/web", "--timeout=20s"], None).await;
    assert!(!out.ok);
    assert!(out.stderr.contains(r#"deployment "web" exceeded its progress deadline"#), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_status_waits_for_the_scripted_delay() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options { rollout_delay: Duration::from_millis(1500), ..Options::default() };
    let Some((_fake, k)) = setup(dir.path(), options).await else { return };
    let manifest = MANIFEST.split("---").next().unwrap().replace("namespace: shop", "namespace: default");
    k.ok_with(&["apply", "--server-side", "-f", "-"], Some(&manifest)).await;
    let started = std::time::Instant::now();
    let out = k.ok(&["rollout", "status", "deployment/web", "--timeout=20s"]).await;
    assert!(out.contains("successfully rolled out"), "{out}");
    assert!(started.elapsed() >= Duration::from_millis(1000), "rolled out after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_unauthorized() {
    let dir = tempfile::tempdir().unwrap();
    let Some((fake, k)) = setup(dir.path(), Options::default()).await else { return };
    let bad = fake.kubeconfig().replace(fake.token(), "wrong");
    std::fs::write(&k.config, bad).unwrap();
    let out = k.run(&["get", "namespaces"], None).await;
    assert!(!out.ok);
    assert!(out.stderr.contains("Unauthorized") || out.stderr.contains("must be logged in"), "{}", out.stderr);
}

const WORKLOADS: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 2
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: db, image: pg}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: a, image: agent}]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_patches_conflicts_creates_and_watches() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_fake, k)) = setup(dir.path(), Options::default()).await else { return };

    // Client-side apply (create, then strategic merge patches) and the other workload kinds' rollouts.
    k.ok_with(&["apply", "-f", "-"], Some(WORKLOADS)).await;
    k.ok(&["rollout", "status", "statefulset/db", "--timeout=20s"]).await;
    let ds = k.ok(&["rollout", "status", "daemonset/agent", "--timeout=20s"]).await;
    assert!(ds.contains(r#"daemon set "agent" successfully rolled out"#), "{ds}");
    let all = k.ok(&["get", "all"]).await;
    assert!(all.contains("statefulset.apps/db") && all.contains("daemonset.apps/agent"), "{all}");

    // Merge and JSON patches; another manager's server-side apply then conflicts, until forced.
    k.ok(&["patch", "statefulset", "db", "--type", "merge", "-p", r#"{"spec":{"replicas":3}}"#]).await;
    k.ok(&[
        "patch",
        "statefulset",
        "db",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#,
    ])
    .await;
    k.ok(&["label", "statefulset", "db", "tier=data"]).await;
    let sts = k
        .ok(&[
            "get",
            "statefulset",
            "db",
            "-o",
            "jsonpath={.spec.replicas} {.metadata.labels.tier} {.metadata.generation}",
        ])
        .await;
    assert_eq!(sts, "4 data 3");
    let sts_only = WORKLOADS.split("---").next().unwrap();
    let conflict = k.run(&["apply", "--server-side", "--field-manager=ci", "-f", "-"], Some(sts_only)).await;
    assert!(!conflict.ok);
    assert!(
        conflict
            .stderr
            .contains(r#"Apply failed with 1 conflict: conflict with "kubectl-patch" using apps/v1: .spec.replicas"#),
        "{}",
        conflict.stderr
    );
    k.ok_with(&["apply", "--server-side", "--force-conflicts", "--field-manager=ci", "-f", "-"], Some(sts_only)).await;
    let replicas = k.ok(&["get", "statefulset", "db", "-o", "jsonpath={.spec.replicas}"]).await;
    assert_eq!(replicas, "2");

    // What kubectl create sends as protobuf.
    k.ok(&["create", "configmap", "settings", "--from-literal=mode=fast"]).await;
    k.ok(&["create", "secret", "generic", "token", "--from-literal=pw=hunter2"]).await;
    assert_eq!(k.ok(&["get", "secret", "token", "-o", "jsonpath={.data.pw}"]).await, "aHVudGVyMg==");
    let exists = k.run(&["create", "configmap", "settings"], None).await;
    assert!(
        exists.stderr.contains(r#"failed to create configmap: configmaps "settings" already exists"#),
        "{}",
        exists.stderr
    );

    // A watch sees a change made while it runs.
    let watcher = {
        let (bin, config) = (k.bin.clone(), k.config.clone());
        tokio::spawn(async move {
            let k = Kubectl { bin, config };
            k.run(&["get", "configmaps", "-w", "--request-timeout=4s", "-o", "name"], None).await
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    k.ok(&["create", "configmap", "late", "--from-literal=a=b"]).await;
    let watched = watcher.await.unwrap();
    assert!(watched.stdout.contains("configmap/late"), "stdout: {}\nstderr: {}", watched.stdout, watched.stderr);

    let forbidden = k.run(&["delete", "namespace", "default"], None).await;
    assert!(forbidden.stderr.contains("this namespace may not be deleted"), "{}", forbidden.stderr);
}

fn with_fault(fault: &str) -> String {
    MANIFEST.split("---").next().unwrap().replace("namespace: shop", "namespace: default").replacen(
        "labels: {app: web}\nspec:",
        &format!("labels: {{app: web}}\n  annotations: {{kube-fake.wharf.dev/fault: {fault}}}\nspec:"),
        1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_backoff_shows_in_pods_and_events() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_fake, k)) = setup(dir.path(), Options::default()).await else { return };
    k.ok_with(&["apply", "--server-side", "-f", "-"], Some(&with_fault("image-pull-backoff"))).await;
    let mut reasons = String::new();
    for _ in 0..100 {
        reasons = k
            .ok(&[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "jsonpath={.items[*].status.containerStatuses[*].state.waiting.reason}",
            ])
            .await;
        if !reasons.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(reasons, "ImagePullBackOff ImagePullBackOff");
    let pod = k.ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[0].metadata.name}"]).await;
    let events = k
        .ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod}"),
            "-o",
            "jsonpath={range .items[*]}{.type} {.reason}: {.message}{\"\\n\"}{end}",
        ])
        .await;
    assert!(events.contains("Normal Scheduled: Successfully assigned default/"), "{events}");
    assert!(events.contains("Warning Failed: Error: ErrImagePull"), "{events}");
    assert!(events.contains("Normal BackOff: Back-off pulling image \"registry.example/web:1\""), "{events}");
    assert!(events.contains("Warning Failed: Error: ImagePullBackOff"), "{events}");
    // Deleting the workload takes its pods' events with them.
    k.ok(&["delete", "deployment", "web"]).await;
    let left = k.ok(&["get", "events", "--field-selector", &format!("involvedObject.name={pod}"), "-o", "name"]).await;
    assert_eq!(left.trim(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_pods_restart_and_back_off() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_fake, k)) = setup(dir.path(), Options::default()).await else { return };
    k.ok_with(&["apply", "--server-side", "-f", "-"], Some(&with_fault("crash-loop"))).await;
    let mut state = String::new();
    for _ in 0..100 {
        state = k
            .ok(&[
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "jsonpath={.items[0].status.containerStatuses[0].state.waiting.reason} {.items[0].status.containerStatuses[0].restartCount}",
            ])
            .await;
        if state.trim() != "" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "CrashLoopBackOff 5");
    let events =
        k.ok(&["get", "events", "--field-selector", "reason=BackOff", "-o", "jsonpath={.items[*].message}"]).await;
    assert!(events.contains("Back-off restarting failed container web in pod web-"), "{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_webhook_refuses_in_its_words() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_fake, k)) = setup(dir.path(), Options::default()).await else { return };
    let out = k.run(&["apply", "--server-side", "-f", "-"], Some(&with_fault("admission-denied"))).await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains(
            "admission webhook \"deny.kube-fake.wharf.dev\" denied the request: Deployment \"web\" carries the annotation"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(k.ok(&["get", "deployments", "-o", "name"]).await.trim(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_token_reads_but_rbac_forbids_writes() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options { restricted_token: Some("viewer-token".into()), ..Options::default() };
    let Some((fake, k)) = setup(dir.path(), options).await else { return };
    std::fs::write(&k.config, fake.kubeconfig().replace(fake.token(), "viewer-token")).unwrap();
    assert!(k.ok(&["get", "namespaces", "-o", "name"]).await.contains("namespace/default"));
    let manifest = with_fault("none");
    let out = k.run(&["apply", "--server-side", "-f", "-"], Some(&manifest)).await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains(
            "deployments.apps \"web\" is forbidden: User \"system:serviceaccount:default:kube-fake-viewer\" cannot \
             patch resource \"deployments\" in API group \"apps\" in the namespace \"default\""
        ),
        "{}",
        out.stderr
    );
    let out = k.run(&["create", "namespace", "games"], None).await;
    assert!(!out.ok);
    assert!(
        out.stderr.contains(
            "namespaces is forbidden: User \"system:serviceaccount:default:kube-fake-viewer\" cannot create resource \
             \"namespaces\" in API group \"\" at the cluster scope"
        ),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_keeps_a_deployment_from_making_pods() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_fake, k)) = setup(dir.path(), Options::default()).await else { return };
    k.ok_with(&["apply", "--server-side", "-f", "-"], Some(&with_fault("quota-exceeded"))).await;
    let query = "jsonpath={.status.conditions[?(@.type==\"ReplicaFailure\")].reason}: {.status.conditions[?(@.type==\"ReplicaFailure\")].message}";
    let mut condition = String::new();
    for _ in 0..100 {
        condition = k.ok(&["get", "deployment", "web", "-o", query]).await;
        if condition != ": " {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        condition,
        "FailedCreate: pods \"web-1-\" is forbidden: exceeded quota: compute-resources, requested: pods=1, used: pods=0, limited: pods=0"
    );
    assert_eq!(k.ok(&["get", "pods", "-o", "name"]).await.trim(), "");
    let out = k.run(&["rollout", "status", "deployment/web", "--timeout=1s"], None).await;
    assert!(!out.ok, "kubectl waits (and times out) on a quota");
    assert!(out.stdout.contains("0 out of 2 new replicas have been updated"), "{}", out.stdout);
}

/// The node's taints as the scheduler honours them, set at start and with `kubectl taint`:
/// a pod that does not tolerate a `NoSchedule` or `NoExecute` taint stays `Pending` with the
/// real scheduler's words, one that does is placed. The kubelet's Docker Engine is a socket
/// that is not there: placing is what is tested, a placed pod then waits in
/// `CreateContainerError` saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_honours_node_taints() {
    let dir = tempfile::tempdir().unwrap();
    let taint: Taint = "dedicated=ci:NoSchedule".parse().unwrap();
    let options = Options {
        kubelet: Some(format!("unix://{}", dir.path().join("no-docker.sock").display())),
        taints: vec![taint],
        ..Options::default()
    };
    let Some((_fake, k)) = setup(dir.path(), options).await else { return };
    let taints = k
        .ok(&[
            "get",
            "node",
            "kube-fake-node-0",
            "-o",
            "jsonpath={.spec.taints[*].key}={.spec.taints[*].value}:{.spec.taints[*].effect}",
        ])
        .await;
    assert_eq!(taints, "dedicated=ci:NoSchedule");
    let tolerating = |key: &str, operator: &str, value: &str| {
        format!(
            r#"{{"spec": {{"tolerations": [{{"key": "{key}", "operator": "{operator}"{}}}]}}}}"#,
            if value.is_empty() { String::new() } else { format!(r#", "value": "{value}""#) }
        )
    };
    let run = |name: &'static str, overrides: Option<String>| {
        let k = &k;
        async move {
            let mut args = vec!["run", name, "--image=busybox", "--restart=Never"];
            if let Some(o) = &overrides {
                args.extend(["--overrides", o.as_str()]);
            }
            args.extend(["--", "true"]);
            k.ok(&args).await;
        }
    };
    // What the pod is waiting for: the scheduler's message, else the container's reason.
    let state = |name: &'static str| {
        let k = &k;
        async move {
            let path = "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}|{.status.containerStatuses[0].state.waiting.reason}";
            for _ in 0..100 {
                let out = k.ok(&["get", "pod", name, "-o", path]).await;
                if out != "|" && out != "|ContainerCreating" {
                    return out;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("pod {name} was neither placed nor refused");
        }
    };
    let refused = |taint: &str| {
        format!(
            "0/1 nodes are available: 1 node(s) had untolerated taint {{{taint}}}. preemption: 0/1 nodes are \
             available: 1 Preemption is not helpful for scheduling.|"
        )
    };
    run("plain", None).await;
    run("tolerant", Some(tolerating("dedicated", "Equal", "ci"))).await;
    run("wrong-value", Some(tolerating("dedicated", "Equal", "batch"))).await;
    assert_eq!(state("plain").await, refused("dedicated: ci"));
    assert_eq!(state("wrong-value").await, refused("dedicated: ci"));
    assert_eq!(state("tolerant").await, "|CreateContainerError");
    let events = k
        .ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=plain",
            "-o",
            "jsonpath={range .items[*]}{.type} {.reason}: {.message}{\"\\n\"}{end}",
        ])
        .await;
    assert!(
        events.contains(&format!("Warning FailedScheduling: {}", refused("dedicated: ci").trim_end_matches('|'))),
        "{events}"
    );
    let waiting =
        k.ok(&["get", "pod", "tolerant", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.message}"]).await;
    let socket = dir.path().join("no-docker.sock");
    assert!(waiting.contains(&format!("cannot reach the Docker Engine at {}", socket.display())), "{waiting}");

    // `kubectl taint … -` takes it off: the waiting pod is placed.
    k.ok(&["taint", "nodes", "kube-fake-node-0", "dedicated=ci:NoSchedule-"]).await;
    let mut placed = String::new();
    for _ in 0..100 {
        placed =
            k.ok(&["get", "pod", "plain", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason}"]).await;
        if placed == "CreateContainerError" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(placed, "CreateContainerError");

    // `NoExecute` keeps pods off too; `Exists` tolerates the key whatever its value, and a
    // `PreferNoSchedule` taint only steers.
    k.ok(&["taint", "nodes", "kube-fake-node-0", "gpu=a100:NoExecute", "spot=yes:PreferNoSchedule"]).await;
    run("no-gpu", None).await;
    run("any-gpu", Some(tolerating("gpu", "Exists", ""))).await;
    assert_eq!(state("no-gpu").await, refused("gpu: a100"));
    assert_eq!(state("any-gpu").await, "|CreateContainerError");
}
