//! `image` tasks in a builder pod ([`KubeBuilder`]) against the test double with its kubelet
//! on. No BuildKit image can be pulled here, so the builder image is a stand-in built by the
//! test from the busybox test image ([`wharf_testenv::buildkit_standin`]): its `buildctl-daemonless.sh` checks the arguments and
//! environment Wharf gives it as BuildKit would read them (the checkout's Dockerfile and
//! context, build args, `--output type=image,…,push=true`, the docker config of the
//! registry login, `BUILDKITD_FLAGS`), prints build-like lines and writes the metadata
//! file with a digest as `buildctl --metadata-file` does; Wharf's own wrapper around it
//! turns that into the termination message. What a real BuildKit does with those arguments
//! is checked by the live suite only (`tests/live.rs`, on `WHARF_TEST_KUBECONFIG`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::Api;
use kube::api::{ListParams, PostParams};
use tokio::sync::watch;
use wharf_executor::Executor;
use wharf_executor::build::{BuildExit, BuildSpec, ImageBuilder, RegistryLogin};
use wharf_executor::deploy::ClusterLogin;
use wharf_executor::{LogLine, LogSink, StopReason, StopRequest, Stream, TaskCluster};
use wharf_kube::builder::{DOCKER_CONFIG_DIR, KubeBuilder};
use wharf_kube::{Connection, FileAccess, KubeExecutor, KubeExecutorConfig, Policy, Workspace};
use wharf_kube_fake::{KubeFake, Options};

const PASSWORD: &str = "s3cr3t-registry-pass";

#[derive(Default)]
struct Collect(Mutex<Vec<LogLine>>);

impl LogSink for Collect {
    fn line(&self, line: LogLine) {
        self.0.lock().unwrap().push(line);
    }
}

impl Collect {
    fn texts(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().filter(|l| l.stream != Stream::System).map(|l| l.text.clone()).collect()
    }
    fn all(&self) -> String {
        self.0.lock().unwrap().iter().map(|l| format!("{:?} {}\n", l.stream, l.text)).collect()
    }
}

struct Fixture {
    fake: KubeFake,
    conn: Connection,
    builder: Arc<KubeBuilder>,
    namespace: String,
    registry: String,
    dir: tempfile::TempDir,
}

async fn fixture(namespace: &str) -> Option<Fixture> {
    let env = wharf_testenv::containers_or_fail_in_ci()?;
    let standin = wharf_testenv::buildkit_standin(&env);
    let fake = KubeFake::start(Options { kubelet: Some("docker".into()), ..Options::default() }).await.unwrap();
    let policy = Policy::new(&["127.0.0.1"]).unwrap();
    let conn = Connection::from_kubeconfig(&fake.kubeconfig(), None, &FileAccess::Refuse, &policy).unwrap();
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).unwrap();
    Api::<Namespace>::all(conn.client().clone()).create(&PostParams::default(), &ns).await.unwrap();
    let builder = KubeBuilder::new(policy, Some(standin));
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("app")).unwrap();
    std::fs::create_dir_all(src.join("docker")).unwrap();
    std::fs::write(src.join("app/index.html"), "<p>2048</p>").unwrap();
    std::fs::write(src.join("docker/Dockerfile"), "FROM busybox\nCOPY index.html /www/\n").unwrap();
    Some(Fixture {
        fake,
        conn,
        builder: Arc::new(builder),
        namespace: namespace.to_owned(),
        registry: env.registry,
        dir,
    })
}

impl Fixture {
    fn checkout(&self) -> PathBuf {
        self.dir.path().join("src").canonicalize().unwrap()
    }

    fn spec(&self, task: &str, build_args: &[(&str, &str)]) -> BuildSpec {
        let checkout = self.checkout();
        BuildSpec {
            run: "kube-build#3".into(),
            stage: "Build".into(),
            task: task.into(),
            context: checkout.join("app"),
            dockerfile: checkout.join("docker/Dockerfile"),
            build_args: build_args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            image: format!("{}/devops/jack-2048:alpha-3", self.registry),
            registry: RegistryLogin {
                name: "local".into(),
                host: self.registry.clone(),
                username: Some("wharf".into()),
                password: Some(PASSWORD.into()),
                insecure: true,
            },
            labels: vec![("org.opencontainers.image.revision".into(), "abc123".into())],
            checkout,
            owner_labels: vec![("WHARF_SERVER_RUN".into(), "abc/42".into())],
            cluster: Some(TaskCluster {
                login: ClusterLogin { name: "fake".into(), kubeconfig: self.fake.kubeconfig(), context: None },
                namespace: self.namespace.clone(),
                pod: Default::default(),
                pending_limit: None,
                workspace: Default::default(),
            }),
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.conn.client().clone(), &self.namespace)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.conn.client().clone(), &self.namespace)
    }

    /// Pods and Secrets left in the namespace.
    async fn left(&self) -> (usize, usize) {
        (
            self.pods().list(&ListParams::default()).await.unwrap().items.len(),
            self.secrets().list(&ListParams::default()).await.unwrap().items.len(),
        )
    }

    /// Starts a build in the background.
    fn start(
        &self,
        spec: BuildSpec,
        logs: Arc<Collect>,
    ) -> (
        watch::Sender<Option<StopRequest>>,
        tokio::task::JoinHandle<Result<BuildExit, wharf_executor::build::BuildError>>,
    ) {
        let (tx, rx) = watch::channel(None);
        let builder = self.builder.clone();
        (tx, tokio::spawn(async move { builder.build(spec, logs, rx).await }))
    }
}

async fn wait_for_line(logs: &Collect, text: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !logs.texts().iter().any(|l| l.contains(text)) {
        assert!(std::time::Instant::now() < deadline, "no line {text:?}: {}", logs.all());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_build_streams_its_log_and_returns_the_digest_from_the_termination_message() {
    let Some(f) = fixture("ecp-devops-build").await else { return };
    let logs = Arc::new(Collect::default());
    let spec = f.spec("build-image", &[("VERSION", "1.2.3")]);
    let (_tx, run) = f.start(spec.clone(), logs.clone());
    let exit = run.await.unwrap().unwrap_or_else(|e| panic!("{e}: {}", logs.all()));
    let BuildExit::Built(built) = exit else { panic!("{exit:?}: {}", logs.all()) };
    assert_eq!(built.image, spec.image);
    let texts = logs.texts();
    for want in [
        "#1 [internal] load build definition from Dockerfile".to_owned(),
        "#1 FROM busybox".to_owned(),
        "#2 [internal] load build context: index.html ".to_owned(),
        "#3 build args: VERSION=1.2.3".to_owned(),
        format!("#4 registry login from {DOCKER_CONFIG_DIR}/config.json"),
        format!("#7 pushing manifest for {},push=true,registry.insecure=true {} done", spec.image, built.digest),
    ] {
        assert!(texts.contains(&want), "{want:?} in {}", logs.all());
    }
    // The digest the stand-in wrote to the metadata file, through the termination message.
    assert!(built.digest.starts_with("sha256:") && built.digest.len() == 71, "{}", built.digest);
    let all = logs.all();
    assert!(all.contains("in builder pod ecp-devops-build/wharf-build-"), "{all}");
    assert!(all.contains(&format!("pushed {} ({})", spec.image, built.digest)), "{all}");
    assert!(!all.contains(PASSWORD), "{all}");
    assert_eq!(f.left().await, (0, 0), "the builder pod and its Secret are deleted");

    // A registry without a login: no Secret, no docker config.
    let logs = Arc::new(Collect::default());
    let mut spec = f.spec("anonymous", &[]);
    spec.registry.username = None;
    spec.registry.password = None;
    spec.registry.insecure = false;
    let (_tx, run) = f.start(spec.clone(), logs.clone());
    let exit = run.await.unwrap().unwrap_or_else(|e| panic!("{e}: {}", logs.all()));
    assert!(matches!(exit, BuildExit::Built(_)), "{exit:?}");
    assert!(!logs.all().contains("registry login"), "{}", logs.all());
    assert!(logs.all().contains(&format!("pushing manifest for {},push=true sha256:", spec.image)), "{}", logs.all());
    assert_eq!(f.left().await, (0, 0));
}

#[tokio::test]
async fn a_failed_build_says_why_and_leaves_nothing() {
    let Some(f) = fixture("ecp-devops-build-fail").await else { return };
    let logs = Arc::new(Collect::default());
    let (_tx, run) = f.start(f.spec("fails", &[("FAIL", "1")]), logs.clone());
    let err = run.await.unwrap().unwrap_err().to_string();
    assert!(err.contains("failed in builder pod wharf-build-"), "{err}");
    assert!(err.contains("(exit code 1)"), "{err}");
    assert!(
        err.ends_with(
            ": error: failed to solve: process \"/bin/sh -c make\" did not complete successfully: exit code: 2"
        ),
        "{err}"
    );
    assert!(err.contains("registry `local`"), "{err}");
    assert!(logs.texts().iter().any(|l| l.starts_with("#6 ERROR:")), "{}", logs.all());
    assert_eq!(f.left().await, (0, 0));

    // Built, but the metadata names no digest: the wrapper fails the build.
    let logs = Arc::new(Collect::default());
    let (_tx, run) = f.start(f.spec("no-digest", &[("NODIGEST", "1")]), logs.clone());
    let err = run.await.unwrap().unwrap_err().to_string();
    assert!(err.contains("(exit code 3): wharf: buildctl wrote no containerimage.digest"), "{err}");
    assert_eq!(f.left().await, (0, 0));

    // A context reached through a link (a task of the run may make one): refused.
    let logs = Arc::new(Collect::default());
    let mut spec = f.spec("linked", &[]);
    std::os::unix::fs::symlink(f.checkout().join("app"), f.checkout().join("linked")).unwrap();
    spec.context = f.checkout().join("linked");
    let (_tx, run) = f.start(spec, logs.clone());
    let err = run.await.unwrap().unwrap_err().to_string();
    assert!(err.contains("(exit code 2): wharf: ") && err.contains("linked leads through a symbolic link"), "{err}");
    assert_eq!(f.left().await, (0, 0));

    // No cluster (the pipeline is not on the kubernetes executor): a clear error.
    let mut spec = f.spec("nowhere", &[]);
    spec.cluster = None;
    let (_tx, rx) = watch::channel(None);
    let err = f.builder.build(spec, Arc::new(Collect::default()), rx).await.unwrap_err().to_string();
    assert!(err.contains("no Docker Engine") && err.contains("executor: kubernetes"), "{err}");
}

#[tokio::test]
async fn the_builder_pod_is_rootless_buildkits_and_the_login_stays_in_its_secret() {
    let Some(f) = fixture("ecp-devops-build-spec").await else { return };
    let logs = Arc::new(Collect::default());
    let (tx, run) = f.start(f.spec("spec", &[("SLEEP", "60")]), logs.clone());
    wait_for_line(&logs, "#5 sleeping").await;
    let pod = f.pods().list(&ListParams::default()).await.unwrap().items.into_iter().next().unwrap();
    let name = pod.metadata.name.clone().unwrap();
    let text = serde_json::to_string(&pod).unwrap();
    assert!(!text.contains(PASSWORD), "{text}");
    let json: serde_json::Value = serde_json::to_value(&pod).unwrap();
    let c = &json["spec"]["containers"][0];
    assert_eq!(c["image"], wharf_testenv::BUILDKIT_STANDIN);
    assert_eq!(c["securityContext"]["seccompProfile"]["type"], "Unconfined");
    assert_eq!(c["securityContext"]["appArmorProfile"]["type"], "Unconfined");
    assert_eq!(c["securityContext"]["runAsUser"], 1000);
    let env: Vec<(String, String)> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_owned(), e["value"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert!(env.contains(&("BUILDKITD_FLAGS".into(), "--oci-worker-no-process-sandbox".into())), "{env:?}");
    assert!(env.contains(&("DOCKER_CONFIG".into(), DOCKER_CONFIG_DIR.into())), "{env:?}");
    assert_eq!(json["spec"]["automountServiceAccountToken"], false);
    let volumes = json["spec"]["volumes"].as_array().unwrap();
    let config = volumes.iter().find(|v| v["name"] == "docker-config").unwrap();
    assert_eq!(config["secret"]["secretName"], name.as_str());
    assert_eq!(config["secret"]["items"][0]["key"], ".dockerconfigjson");
    let checkout = volumes.iter().find(|v| v["name"] == "checkout").unwrap();
    assert_eq!(checkout["hostPath"]["path"], f.checkout().to_str().unwrap());
    let mounts = c["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().all(|m| m["readOnly"] == true), "{mounts:?}");
    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(labels["wharf.run"], "kube-build_3");
    assert_eq!(labels["wharf.task"], "spec");
    assert_eq!(labels["wharf.build"], "true");
    assert_eq!(labels["WHARF_SERVER_RUN"], "abc_42");
    // No attempt: after a restart the server deletes it rather than take it over.
    assert!(!labels.contains_key("wharf.attempt"), "{labels:?}");
    assert_eq!(pod.metadata.annotations.clone().unwrap()["WHARF_SERVER_RUN"], "abc/42");
    // What a restarted server's executor reports of it: the pod (and its Secret, under the
    // same name) with no attempt, which the server deletes rather than take over.
    let executor = KubeExecutor::new(
        &f.conn,
        KubeExecutorConfig {
            namespace: f.namespace.clone(),
            default_image: None,
            workspace: Workspace::HostPath,
            pending_limit: Duration::from_secs(600),
        },
    );
    let left = executor.leftovers("WHARF_SERVER_RUN").await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!((left[0].id.as_str(), left[0].owner.as_str(), &left[0].attempt), (name.as_str(), "abc/42", &None));

    let secret = f.secrets().get(&name).await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
    let owner = &secret.metadata.owner_references.clone().unwrap()[0];
    assert_eq!((owner.kind.as_str(), Some(&owner.uid)), ("Pod", pod.metadata.uid.as_ref()));
    let config = &secret.data.unwrap()[".dockerconfigjson"].0;
    let config: serde_json::Value = serde_json::from_slice(config).unwrap();
    use base64::Engine as _;
    let auth = config["auths"][f.registry.as_str()]["auth"].as_str().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.decode(auth).unwrap();
    assert_eq!(String::from_utf8(auth).unwrap(), format!("wharf:{PASSWORD}"));

    // A stop deletes the pod with the grace period and ends the build at once.
    let asked = std::time::Instant::now();
    tx.send(Some(StopRequest { reason: StopReason::Stopped, grace: Duration::from_secs(2) })).unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(30), run).await.unwrap().unwrap().unwrap();
    assert_eq!(exit, BuildExit::Stopped(StopReason::Stopped), "{}", logs.all());
    assert!(asked.elapsed() < Duration::from_secs(15), "took {:?}", asked.elapsed());
    assert!(logs.all().contains("deleted the pod with a grace period of 2s"), "{}", logs.all());
    assert!(!logs.all().contains("pushing manifest"), "{}", logs.all());
    assert_eq!(f.left().await, (0, 0));

    // Stopped before it began: no pod at all.
    let (tx, rx) = watch::channel(None);
    tx.send(Some(StopRequest { reason: StopReason::TimedOut, grace: Duration::ZERO })).unwrap();
    let exit = f.builder.build(f.spec("late", &[]), Arc::new(Collect::default()), rx).await.unwrap();
    assert_eq!(exit, BuildExit::Stopped(StopReason::TimedOut));
    assert_eq!(f.left().await, (0, 0));
}
