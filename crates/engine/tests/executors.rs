//! One list of scenarios, every real executor: each file in `tests/executors/` is a pipeline
//! with real scripts (the same YAML everywhere) and, in `x-` fields, what the run must look
//! like afterwards (`x-expect`, read by `common/scenario.rs` as for the fake executor's
//! scenarios). Each file runs, on the real clock, on
//!
//! - `host`: shells on this machine;
//! - `docker`: containers of the test busybox image on the test environment's Docker Engine;
//! - `kubernetes`: pods of that image on the Kubernetes test double (`wharf-kube-fake` with
//!   its kubelet, which runs them on the same Docker Engine), through `KubeExecutor`, the
//!   workspace a `hostPath`;
//! - `kubernetes_claim`: the same with the `claim` workspace: one PersistentVolumeClaim per
//!   run (bound at once by the fake, like a local-path provisioner), the checkout copied in
//!   by a seed pod, outputs back through the termination message;
//! - `live`: pods on a real cluster, when `WHARF_TEST_KUBECONFIG` names a kubeconfig
//!   (optionally `WHARF_TEST_KUBECONTEXT`, `WHARF_TEST_OUTBOUND_ALLOW` for a cluster on a
//!   private network, `WHARF_TEST_IMAGE` for the image, default `busybox:1.37`). Skipped
//!   with the reason otherwise, also under `CI=true`: no cluster exists on the CI machines.
//!   The workspace reaches pods as `hostPath` volumes, so the cluster's node must see this
//!   machine's temporary directory at the same path (a one-node cluster on this machine,
//!   k3s or `minikube --driver=none`, or kind with an `extraMounts` entry for `$TMPDIR`);
//!   with `WHARF_TEST_WORKSPACE=claim` it is a volume claim per run instead (any cluster;
//!   `WHARF_TEST_STORAGE_CLASS` names the class, default the cluster's).
//!
//! The executors get the image as their default (a server's `--default-image`), so the YAML
//! names none and the host executor has no image to ignore. Container executors cannot tell
//! stdout from stderr apart everywhere (Kubernetes merges them), so a scenario that prints to
//! both compares them in any order.
//!
//! Fields besides `x-expect`:
//!
//! ```yaml
//! x-parameters: {WHO: wharf}           # given when the run starts (through `prepare`)
//! x-secrets: {API_TOKEN: tok-…}        # the run's secrets; no log line or record may hold them
//! x-engine: {slots: 1, grace: 1s}      # EngineConfig (default 8 slots, 2s grace)
//! x-stop: {when: "task: text", grace: 5s}  # a person's stop once the task printed `text`
//! x-git-repo: REPO                     # a git repository (one commit on `main`, file
//!                                      # README) given as parameter REPO; the run checks it out
//! ```
//!
//! After every run, on every executor: nothing it started is left (`Executor::leftovers`
//! by the run's label), and on Kubernetes the namespace holds no pod, no Secret and no
//! PersistentVolumeClaim.

mod common;

use common::scenario::{check, duration, entries, get, string_map, text, tree};
use common::{Dirs, Recorder};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use wharf_engine::{Engine, EngineConfig, Part};
use wharf_executor::host::{HostConfig, HostExecutor};
use wharf_executor::{Executor, StopReason, StopRequest};
use wharf_kube::{Connection, FileAccess, KubeExecutor, KubeExecutorConfig, Policy, Workspace};
use wharf_kube_fake::{KubeFake, Options};

/// The label every scenario's tasks carry (`TaskSpec::labels`), with a value unique to the run.
const LABEL: &str = "WHARF_TEST_SCENARIO";

#[derive(Clone, Copy, Debug)]
enum On {
    Host,
    Docker,
    Kubernetes,
    KubernetesClaim,
    Live,
}

/// An executor to run one scenario on, and what to look at afterwards.
struct Target {
    executor: Arc<dyn Executor>,
    /// The namespace the pods run in, and how to reach it.
    cluster: Option<(kube::Client, String)>,
    /// The namespace is the test's own and goes when it ends (a real cluster's).
    delete_namespace: bool,
    _fake: Option<KubeFake>,
}

/// The executor `on` names, or `None` when its environment is missing (the reason printed;
/// only the live suite may skip under `CI=true`).
async fn target(on: On, slug: &str) -> Option<Target> {
    let host = || {
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        HostExecutor::new(HostConfig { base_env: vec![("PATH".into(), path)], ..HostConfig::default() })
    };
    match on {
        On::Host => Some(Target { executor: Arc::new(host()), cluster: None, delete_namespace: false, _fake: None }),
        On::Docker => {
            let env = wharf_testenv::containers_or_fail_in_ci()?;
            let docker = wharf_docker::DockerExecutor::new(wharf_docker::DockerConfig {
                socket: Some(env.docker),
                network: Some("none".into()),
                default_image: Some(env.busybox_image),
                credentials: None,
            })
            .unwrap();
            Some(Target { executor: Arc::new(docker), cluster: None, delete_namespace: false, _fake: None })
        }
        On::Kubernetes | On::KubernetesClaim => {
            let env = wharf_testenv::containers_or_fail_in_ci()?;
            let workspace = match on {
                On::KubernetesClaim => Workspace::Claim { storage_class: None, size: "1Gi".into() },
                _ => Workspace::HostPath,
            };
            let fake = KubeFake::start(Options { kubelet: Some("docker".into()), ..Options::default() }).await.unwrap();
            let policy = Policy::new(&["127.0.0.1"]).unwrap();
            let conn = Connection::from_kubeconfig(&fake.kubeconfig(), None, &FileAccess::Refuse, &policy).unwrap();
            let namespace = format!("ecp-devops-{slug}");
            let executor = kube_target(&conn, &namespace, env.busybox_image, workspace).await;
            Some(Target {
                executor,
                cluster: Some((conn.client().clone(), namespace)),
                delete_namespace: false,
                _fake: Some(fake),
            })
        }
        On::Live => {
            let Some(path) = std::env::var_os("WHARF_TEST_KUBECONFIG") else {
                eprintln!(
                    "skipped: WHARF_TEST_KUBECONFIG is not set (no real cluster to run pods on; not a failure, also \
                     under CI=true)"
                );
                return None;
            };
            let path = Path::new(&path);
            let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let context = std::env::var("WHARF_TEST_KUBECONTEXT").ok();
            let base = path.parent().unwrap_or(Path::new(".")).to_owned();
            let allow = std::env::var("WHARF_TEST_OUTBOUND_ALLOW").unwrap_or_default();
            let allow: Vec<&str> = allow.split(',').filter(|e| !e.trim().is_empty()).collect();
            let policy = Policy::new(&allow).unwrap_or_else(|e| panic!("WHARF_TEST_OUTBOUND_ALLOW: {e}"));
            let conn = Connection::from_kubeconfig(&text, context.as_deref(), &FileAccess::Allow { base }, &policy)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let image = std::env::var("WHARF_TEST_IMAGE").unwrap_or_else(|_| "busybox:1.37".into());
            // RandomState is seeded randomly per process and instance: a name no one else uses.
            let random = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8);
            let namespace = format!("wharf-live-{slug}-{:08x}", random as u32);
            let workspace = match std::env::var("WHARF_TEST_WORKSPACE").as_deref() {
                Ok("claim") => Workspace::Claim {
                    storage_class: std::env::var("WHARF_TEST_STORAGE_CLASS").ok(),
                    size: "1Gi".into(),
                },
                _ => Workspace::HostPath,
            };
            let executor = kube_target(&conn, &namespace, image, workspace).await;
            Some(Target {
                executor,
                cluster: Some((conn.client().clone(), namespace)),
                delete_namespace: true,
                _fake: None,
            })
        }
    }
}

/// A fresh namespace and a `KubeExecutor` whose pods run there.
async fn kube_target(conn: &Connection, namespace: &str, image: String, workspace: Workspace) -> Arc<dyn Executor> {
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).unwrap();
    Api::<Namespace>::all(conn.client().clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {namespace}: {e}"));
    let config = KubeExecutorConfig {
        namespace: namespace.to_owned(),
        default_image: Some(image),
        workspace,
        pending_limit: wharf_kube::executor::DEFAULT_PENDING_LIMIT,
    };
    Arc::new(KubeExecutor::new(conn, config))
}

/// `"compile: started"` → where task `compile` sits in the pipeline, and `started`.
fn line_of(pipeline: &wharf_core::model::Pipeline, when: &str) -> (Part, String) {
    let (name, text) = when.split_once(": ").unwrap_or_else(|| panic!("x-stop.when `{when}`: `task: text`"));
    for (s, stage) in pipeline.stages.iter().enumerate() {
        if let Some(t) = stage.tasks.iter().position(|t| t.name.to_string() == name) {
            return (Part::Task(s, t), text.to_owned());
        }
    }
    panic!("x-stop.when: no task `{name}`");
}

async fn run_on(on: On, file: &str) {
    let slug: String = file.trim_end_matches(".yaml").chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let slug = slug.to_ascii_lowercase();
    let Some(target) = target(on, &slug).await else { return };
    let cluster = target.cluster.clone().filter(|_| target.delete_namespace);
    // On a real cluster the namespace goes whatever the scenario's outcome.
    let outcome = tokio::spawn(scenario(on, file.to_owned(), target)).await;
    if let Some((client, namespace)) = cluster {
        let _ = Api::<Namespace>::all(client).delete(&namespace, &DeleteParams::default()).await;
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn scenario(on: On, file: String, target: Target) {
    let file = file.as_str();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/executors").join(file);
    let yaml = std::fs::read_to_string(&path).unwrap();
    let pipeline = common::pipeline(&yaml);
    let root = tree(&yaml);

    let mut config = EngineConfig { timeout_grace: Duration::from_secs(2), ..EngineConfig::default() };
    if let Some(engine) = get(&root, "x-engine") {
        for (key, value) in entries(engine) {
            match key {
                "slots" => config.max_parallel_tasks = text(value).parse().unwrap(),
                "grace" => config.timeout_grace = duration(value),
                other => panic!("{file}: unknown x-engine field `{other}`"),
            }
        }
    }
    let engine = Engine::new(config, target.executor.clone());
    let dirs = Dirs::new();
    let secrets = get(&root, "x-secrets").map(string_map).unwrap_or_default();
    let mut given = get(&root, "x-parameters").map(string_map).unwrap_or_default();
    let repo = get(&root, "x-git-repo").map(|name| {
        let repo = common::GitRepo::new();
        given.insert(text(name).to_owned(), repo.url());
        repo
    });
    let workspace = if repo.is_some() { dirs.checkout() } else { dirs.existing() };
    let mut request = common::request(pipeline.clone(), workspace);
    request.parameters = engine.prepare(&pipeline, &given, &secrets).unwrap_or_else(|e| panic!("{file}: {e}"));
    request.secrets = secrets.clone();
    let run_label = format!("{file}-{on:?}-{}", std::process::id());
    request.labels = vec![(LABEL.into(), run_label.clone())];

    let recorder = Recorder::new();
    let started = Instant::now();
    let record = match get(&root, "x-stop") {
        Some(stop) => {
            let (part, line) = line_of(&pipeline, text(get(stop, "when").expect("x-stop.when")));
            let grace = get(stop, "grace").map_or(Duration::from_secs(10), duration);
            let waiter = recorder.clone();
            let printed = async move { waiter.wait_for_line(part, &line).await };
            let stop = Some(StopRequest { reason: StopReason::Stopped, grace });
            common::run_stopped_when(&engine, request, recorder.clone(), printed, stop).await
        }
        None => {
            let (_stop_tx, stop_rx) = watch::channel(None);
            let record = engine.run(request, recorder.clone(), stop_rx).await;
            recorder.assert_consistent_with(&record);
            record
        }
    };
    let elapsed = started.elapsed();
    let all = || recorder.all_lines().iter().map(|(p, l)| format!("{p:?} {l}\n")).collect::<String>();
    let file = &format!("{file} on {on:?}");
    // What went wrong is easier to see with the whole log.
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(file, &root, &record, &recorder, elapsed)))
        .is_err()
    {
        panic!("{file}: see above; the run's log:\n{}", all());
    }
    for value in secrets.values() {
        for (part, line) in recorder.all_lines() {
            assert!(!line.contains(value.as_str()), "{file}: a secret in the log of {part:?}: {line}");
        }
        // Nor in two pieces of a line cut at the longest a log line holds.
        for part in common::parts(&record) {
            let joined: String = recorder.output(part).concat();
            assert!(!joined.contains(value.as_str()), "{file}: a secret across lines of {part:?}");
        }
        assert!(!format!("{record:?}").contains(value.as_str()), "{file}: the record holds a secret");
    }

    // Nothing is left, in any outcome.
    let left = target.executor.leftovers(LABEL).await.unwrap();
    let ours: Vec<_> = left.iter().filter(|l| l.owner == run_label).map(|l| l.id.clone()).collect();
    assert!(ours.is_empty(), "{file}: left behind: {ours:?}");
    if let Some((client, namespace)) = &target.cluster {
        let pods = Api::<Pod>::namespaced(client.clone(), namespace);
        let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
        let names = |items: Vec<kube::api::ObjectMeta>| items.into_iter().filter_map(|m| m.name).collect::<Vec<_>>();
        let pods =
            names(pods.list(&ListParams::default()).await.unwrap().items.into_iter().map(|p| p.metadata).collect());
        // A real cluster's service-account token controller may put its own Secrets in a
        // new namespace (before Kubernetes 1.24): only the executor's count.
        let secrets = names(
            secrets
                .list(&ListParams::default().labels(LABEL))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|s| s.metadata)
                .collect(),
        );
        let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace);
        let claims =
            names(claims.list(&ListParams::default()).await.unwrap().items.into_iter().map(|c| c.metadata).collect());
        assert_eq!(
            (pods, secrets, claims),
            (vec![], vec![], vec![]),
            "{file}: pods, Secrets and claims left in {namespace}"
        );
    }
}

macro_rules! scenarios {
    ($($name:ident => $file:literal,)*) => {
        mod host {
            $(#[tokio::test] async fn $name() { super::run_on(super::On::Host, $file).await })*
        }
        mod docker {
            $(#[tokio::test] async fn $name() { super::run_on(super::On::Docker, $file).await })*
        }
        mod kubernetes {
            $(#[tokio::test] async fn $name() { super::run_on(super::On::Kubernetes, $file).await })*
        }
        mod kubernetes_claim {
            $(#[tokio::test] async fn $name() { super::run_on(super::On::KubernetesClaim, $file).await })*
        }
        mod live {
            $(#[tokio::test] async fn $name() { super::run_on(super::On::Live, $file).await })*
        }

        /// A scenario file that no test names would silently never run.
        #[test]
        fn every_scenario_file_is_run() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/executors");
            let mut files: Vec<String> =
                std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            files.sort();
            let mut named = vec![$($file.to_owned()),*];
            named.sort();
            assert_eq!(files, named);
        }
    };
}

scenarios! {
    s01_outputs_and_the_workspace => "01_outputs_and_the_workspace.yaml",
    s02_variables_parameters_env => "02_variables_parameters_env.yaml",
    s03_exit_codes_and_failure => "03_exit_codes_and_failure.yaml",
    s04_retries => "04_retries.yaml",
    s05_parallel_tasks_run_at_once => "05_parallel_tasks_run_at_once.yaml",
    s06_secrets_are_masked => "06_secrets_are_masked.yaml",
    s07_declared_output_missing => "07_declared_output_missing.yaml",
    s08_task_timeout => "08_task_timeout.yaml",
    s09_stop => "09_stop.yaml",
    s10_log_lines => "10_log_lines.yaml",
    s11_checkout => "11_checkout.yaml",
    s12_long_lines => "12_long_lines.yaml",
}
