//! The Kubernetes executor against the test double with its kubelet on, so pods really run
//! on the local Docker Engine from the test registry's busybox image: env from a Secret,
//! exit codes, `$WHARF_OUTPUT` and the workspace through hostPath, logs with the container's
//! timestamps, stop and timeout deleting the pod with a grace period, a pod the scheduler
//! cannot place (its reason in the log), an image that cannot be pulled, and nothing left
//! in the namespace afterwards.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::Api;
use kube::api::{ListParams, PostParams};
use tokio::sync::watch;
use wharf_core::pod::{PodSettings, Quantities, Resources, Toleration};
use wharf_executor::deploy::ClusterLogin;
use wharf_executor::{
    Executor, LogLine, LogResume, LogSink, Phase, StopReason, StopRequest, Stream, TaskCluster, TaskSpec,
};
use wharf_kube::{
    ClusterExecutor, ClusterSource, Connection, FileAccess, KubeExecutor, KubeExecutorConfig, Policy, Workspace,
};
use wharf_kube_fake::{FAULT_ANNOTATION, KubeFake, Options, Taint};

#[derive(Default)]
struct Collect(Mutex<Vec<LogLine>>, Mutex<Vec<Phase>>);

impl LogSink for Collect {
    fn line(&self, line: LogLine) {
        self.0.lock().unwrap().push(line);
    }
    fn phase(&self, phase: Phase) {
        self.1.lock().unwrap().push(phase);
    }
}

impl Collect {
    fn texts(&self, stream: Stream) -> Vec<String> {
        self.0.lock().unwrap().iter().filter(|l| l.stream == stream).map(|l| l.text.clone()).collect()
    }
    fn all(&self) -> String {
        self.0.lock().unwrap().iter().map(|l| format!("{:?} {}\n", l.stream, l.text)).collect()
    }
}

struct Fixture {
    _fake: KubeFake,
    conn: Connection,
    executor: Arc<KubeExecutor>,
    namespace: String,
    image: String,
    dir: tempfile::TempDir,
}

async fn fixture(namespace: &str, fault: Option<&str>) -> Option<Fixture> {
    fixture_on(namespace, fault, Vec::new()).await
}

/// The fixture on a fake whose node has these taints.
async fn fixture_on(namespace: &str, fault: Option<&str>, taints: Vec<Taint>) -> Option<Fixture> {
    let env = wharf_testenv::containers_or_fail_in_ci()?;
    let fake = KubeFake::start(Options { kubelet: Some("docker".into()), taints, ..Options::default() }).await.unwrap();
    let conn = Connection::from_kubeconfig(
        &fake.kubeconfig(),
        None,
        &FileAccess::Refuse,
        &Policy::new(&["127.0.0.1"]).unwrap(),
    )
    .unwrap();
    let mut ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": namespace}})).unwrap();
    if let Some(fault) = fault {
        ns.metadata.annotations = Some([(FAULT_ANNOTATION.to_owned(), fault.to_owned())].into());
    }
    Api::<Namespace>::all(conn.client().clone()).create(&PostParams::default(), &ns).await.unwrap();
    let executor = KubeExecutor::new(
        &conn,
        KubeExecutorConfig {
            namespace: namespace.to_owned(),
            default_image: None,
            workspace: Workspace::HostPath,
            pending_limit: Duration::from_secs(600),
        },
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::create_dir_all(dir.path().join("outputs")).unwrap();
    Some(Fixture {
        _fake: fake,
        conn,
        executor: Arc::new(executor),
        namespace: namespace.to_owned(),
        image: env.busybox_image,
        dir,
    })
}

impl Fixture {
    /// Another executor on the same namespace, with this pending limit.
    fn executor_with_pending_limit(&self, pending_limit: Duration) -> KubeExecutor {
        KubeExecutor::new(
            &self.conn,
            KubeExecutorConfig {
                namespace: self.namespace.clone(),
                default_image: None,
                workspace: Workspace::HostPath,
                pending_limit,
            },
        )
    }

    fn spec(&self, task: &str, script: &str) -> TaskSpec {
        let output_file = self.dir.path().join("outputs").join(format!("{task}.env"));
        std::fs::write(&output_file, b"").unwrap();
        TaskSpec {
            run: "kube-test#1".into(),
            stage: "Build".into(),
            task: task.into(),
            attempt: 1,
            workdir: self.dir.path().join("src"),
            script: script.into(),
            image: Some(self.image.clone()),
            env: vec![
                ("GREETING".into(), "hello from env".into()),
                ("TOKEN".into(), "s3cr3t-value".into()),
                ("WHARF_OUTPUT".into(), output_file.display().to_string()),
                ("WHARF_WORKSPACE".into(), self.dir.path().join("src").display().to_string()),
            ],
            output_file,
            labels: vec![("WHARF_SERVER_RUN".into(), "abc/42".into())],
            cluster: None,
        }
    }

    /// Pods and Secrets left in the namespace.
    async fn left(&self) -> (usize, usize) {
        let pods = Api::<Pod>::namespaced(self.conn.client().clone(), &self.namespace);
        let secrets = Api::<Secret>::namespaced(self.conn.client().clone(), &self.namespace);
        (
            pods.list(&ListParams::default()).await.unwrap().items.len(),
            secrets.list(&ListParams::default()).await.unwrap().items.len(),
        )
    }
}

fn no_stop() -> (watch::Sender<Option<StopRequest>>, watch::Receiver<Option<StopRequest>>) {
    watch::channel(None)
}

#[tokio::test]
async fn script_env_outputs_exit_code_and_nothing_left() {
    let Some(f) = fixture("ecp-devops-basic", None).await else { return };
    let logs = Arc::new(Collect::default());
    let spec = f.spec(
        "basic",
        "echo \"$GREETING\"\necho to stderr >&2\npwd\necho VERSION=1.2.3 >> \"$WHARF_OUTPUT\"\n\
         echo made > \"$WHARF_WORKSPACE/made.txt\"\necho 'a \"b\" $c'\nexit 3",
    );
    let (_tx, rx) = no_stop();
    let started = jiff::Timestamp::now();
    let exit = f.executor.run(spec.clone(), logs.clone(), rx).await.unwrap();
    assert_eq!((exit.code, exit.signal, exit.stopped), (Some(3), None, None), "{}", logs.all());
    // Kubernetes merges stderr into the one container log.
    let mut out = logs.texts(Stream::Stdout);
    out.sort();
    let mut want = vec!["hello from env", "to stderr", spec.workdir.to_str().unwrap(), "a \"b\" $c"];
    want.sort();
    assert_eq!(out, want, "{}", logs.all());
    // The container's timestamps, not Wharf's reading time.
    for line in logs.0.lock().unwrap().iter().filter(|l| l.stream != Stream::System) {
        assert!(line.at >= started - jiff::SignedDuration::from_secs(1) && line.at <= jiff::Timestamp::now());
    }
    assert_eq!(std::fs::read_to_string(&spec.output_file).unwrap(), "VERSION=1.2.3\n");
    assert_eq!(std::fs::read_to_string(spec.workdir.join("made.txt")).unwrap(), "made\n");
    assert!(logs.all().contains("pod ecp-devops-basic/wharf-"), "{}", logs.all());
    assert_eq!(f.left().await, (0, 0), "the pod and its env Secret are deleted");

    // `sh -e`, exit 0.
    let logs = Arc::new(Collect::default());
    let (_tx, rx) = no_stop();
    let exit = f.executor.run(f.spec("dash-e", "echo one; false; echo never"), logs.clone(), rx).await.unwrap();
    assert_eq!(exit.code, Some(1));
    assert_eq!(logs.texts(Stream::Stdout), ["one"]);
    let (_tx, rx) = no_stop();
    let exit = f.executor.run(f.spec("ok", "true"), Arc::new(Collect::default()), rx).await.unwrap();
    assert!(exit.succeeded());
}

#[tokio::test]
async fn env_travels_in_a_secret_never_in_the_pod_spec() {
    let Some(f) = fixture("ecp-devops-secret", None).await else { return };
    let pods = Api::<Pod>::namespaced(f.conn.client().clone(), &f.namespace);
    let (tx, rx) = no_stop();
    let logs = Arc::new(Collect::default());
    let run = tokio::spawn({
        let executor = f.executor.clone();
        let spec = f.spec("secret", "echo started; sleep 30");
        let logs = logs.clone();
        async move { executor.run(spec, logs, rx).await }
    });
    let pod = loop {
        if let Some(p) = pods.list(&ListParams::default()).await.unwrap().items.into_iter().next() {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = serde_json::to_string(&pod).unwrap();
    assert!(!text.contains("s3cr3t-value"), "{text}");
    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(labels["wharf.run"], "kube-test_1");
    assert_eq!(labels["wharf.stage"], "Build");
    assert_eq!(labels["wharf.task"], "secret");
    assert_eq!(labels["wharf.attempt"], "1");
    assert_eq!(labels["WHARF_SERVER_RUN"], "abc_42");
    assert_eq!(pod.metadata.annotations.unwrap()["WHARF_SERVER_RUN"], "abc/42");
    let secret = Api::<Secret>::namespaced(f.conn.client().clone(), &f.namespace)
        .get(pod.metadata.name.as_deref().unwrap())
        .await
        .unwrap();
    let owner = &secret.metadata.owner_references.unwrap()[0];
    assert_eq!((owner.kind.as_str(), Some(&owner.uid)), ("Pod", pod.metadata.uid.as_ref()));
    tx.send(Some(StopRequest { reason: StopReason::Stopped, grace: Duration::from_secs(5) })).unwrap();
    let exit = run.await.unwrap().unwrap();
    assert_eq!(exit.stopped, Some(StopReason::Stopped), "{}", logs.all());
    assert_eq!(f.left().await, (0, 0));
}

#[tokio::test]
async fn stop_and_timeout_delete_the_pod_with_a_grace_period() {
    let Some(f) = fixture("ecp-devops-stop", None).await else { return };
    for (reason, grace, script) in [
        // Exits on SIGTERM.
        (StopReason::Stopped, Duration::from_secs(20), "echo started; sleep 60"),
        // Ignores SIGTERM: killed after the grace.
        (StopReason::TimedOut, Duration::from_millis(300), "trap '' TERM; echo started; while :; do sleep 1; done"),
    ] {
        let logs = Arc::new(Collect::default());
        let (tx, rx) = no_stop();
        let run = tokio::spawn({
            let executor = f.executor.clone();
            let spec = f.spec("stop", script);
            let logs = logs.clone();
            async move { executor.run(spec, logs, rx).await }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !logs.texts(Stream::Stdout).contains(&"started".to_owned()) {
            assert!(std::time::Instant::now() < deadline, "never started: {}", logs.all());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let asked = std::time::Instant::now();
        tx.send(Some(StopRequest { reason, grace })).unwrap();
        let exit = tokio::time::timeout(Duration::from_secs(30), run).await.unwrap().unwrap().unwrap();
        assert_eq!(exit.stopped, Some(reason), "{}", logs.all());
        assert!(!exit.succeeded());
        assert!(asked.elapsed() < Duration::from_secs(15), "took {:?}", asked.elapsed());
        assert!(logs.all().contains("deleted the pod with a grace period of"), "{}", logs.all());
        assert_eq!(f.left().await, (0, 0));
    }
}

#[tokio::test]
async fn unschedulable_pod_is_pending_with_the_schedulers_reason() {
    let Some(f) = fixture("ecp-devops-full", Some("unschedulable")).await else { return };
    let logs = Arc::new(Collect::default());
    let (tx, rx) = no_stop();
    let run = tokio::spawn({
        let executor = f.executor.clone();
        let spec = f.spec("pending", "echo never");
        let logs = logs.clone();
        async move { executor.run(spec, logs, rx).await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !logs.all().contains("Insufficient cpu") {
        assert!(std::time::Instant::now() < deadline, "no reason: {}", logs.all());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        logs.all()
            .contains("pending: the scheduler cannot place the pod: 0/1 nodes are available: 1 Insufficient cpu."),
        "{}",
        logs.all()
    );
    // The task is `pending` with the scheduler's words, never `running`.
    let phases = logs.1.lock().unwrap().clone();
    assert_eq!(
        phases.last(),
        Some(&Phase::Pending {
            reason: "the scheduler cannot place the pod: 0/1 nodes are available: 1 Insufficient cpu. preemption: \
                     0/1 nodes are available: 1 No preemption victims found for incoming pod."
                .into()
        }),
        "{phases:?}"
    );
    assert!(!phases.contains(&Phase::Running), "{phases:?}");
    tx.send(Some(StopRequest { reason: StopReason::Stopped, grace: Duration::from_secs(1) })).unwrap();
    let exit = run.await.unwrap().unwrap();
    assert_eq!(exit.stopped, Some(StopReason::Stopped));
    assert_eq!(f.left().await, (0, 0));

    // Waiting is bounded by the pending limit, not by a timeout: the attempt fails with the
    // scheduler's reason and the FAQ's "not enough resources" advice.
    let executor = f.executor_with_pending_limit(Duration::from_secs(2));
    let logs = Arc::new(Collect::default());
    let (_tx, rx) = no_stop();
    let started = std::time::Instant::now();
    let err = executor.run(f.spec("limited", "echo never"), logs.clone(), rx).await.unwrap_err().to_string();
    assert!(started.elapsed() >= Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(err.contains("stayed pending for 2s"), "{err}");
    assert!(err.contains("not enough resources"), "{err}");
    assert!(err.contains("0/1 nodes are available: 1 Insufficient cpu."), "{err}");
    assert_eq!(f.left().await, (0, 0));
}

/// A pod that starts at once reports no phase: its task is `running` throughout, as on
/// the other executors.
#[tokio::test]
async fn a_pod_that_starts_at_once_is_running_throughout() {
    let Some(f) = fixture("ecp-devops-phase", None).await else { return };
    let logs = Arc::new(Collect::default());
    let (_tx, rx) = no_stop();
    let exit = f.executor.run(f.spec("phase", "echo hi"), logs.clone(), rx).await.unwrap();
    assert!(exit.succeeded(), "{}", logs.all());
    let phases = logs.1.lock().unwrap().clone();
    assert_eq!(phases, [], "{phases:?}");
}
#[tokio::test]
async fn image_that_cannot_be_pulled_is_a_clear_error() {
    let Some(f) = fixture("ecp-devops-pull", None).await else { return };
    let mut spec = f.spec("pull", "true");
    spec.image = Some("127.0.0.1:5055/wharf-test/no-such-image:1".into());
    let (_tx, rx) = no_stop();
    let err = f.executor.run(spec, Arc::new(Collect::default()), rx).await.unwrap_err().to_string();
    assert!(err.contains("cannot pull image 127.0.0.1:5055/wharf-test/no-such-image:1: ErrImagePull"), "{err}");
    assert_eq!(f.left().await, (0, 0));

    let mut spec = f.spec("no-image", "true");
    spec.image = None;
    let (_tx, rx) = no_stop();
    let err = f.executor.run(spec, Arc::new(Collect::default()), rx).await.unwrap_err().to_string();
    assert!(err.contains("names no image"), "{err}");
    assert!(f.executor.supports("image").unwrap_err().to_string().contains("kubernetes executor"));
}

/// The kubelet as kubectl sees it: `kubectl run` starts a real container, `kubectl logs
/// -f --timestamps` follows it, the pod ends `Failed` with the exit code, the Events are a
/// kubelet's, and `kubectl delete --grace-period` stops a running pod and waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_runs_follows_and_deletes_pods_on_the_kubelet() {
    let Some(env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let Some(tools) = wharf_testenv::k8s_tools_or_fail_in_ci() else { return };
    let fake = KubeFake::start(Options { kubelet: Some("docker".into()), ..Options::default() }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&config).unwrap();
    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new(&tools.kubectl)
            .arg("--kubeconfig")
            .arg(&config)
            .args(args)
            .env("HOME", dir.path())
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "kubectl {args:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
        text
    };
    let image = format!("--image={}", env.busybox_image);
    tokio::task::block_in_place(|| {
        kubectl(&[
            "run",
            "hello",
            &image,
            "--restart=Never",
            "--command",
            "--",
            "sh",
            "-c",
            "echo one; sleep 1; echo two; exit 3",
        ]);
        let phase = |name: &str| kubectl(&["get", "pod", name, "-o", "jsonpath={.status.phase}"]);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while phase("hello") == "Pending" || phase("hello").is_empty() {
            assert!(std::time::Instant::now() < deadline, "never ran");
            std::thread::sleep(Duration::from_millis(100));
        }
        let logs = kubectl(&["logs", "-f", "--timestamps", "hello"]);
        let lines: Vec<&str> = logs.lines().map(|l| l.split_once(' ').map_or(l, |(_, t)| t)).collect();
        assert_eq!(lines, ["one", "two"], "{logs}");
        assert!(logs.starts_with("20"), "RFC 3339 timestamps: {logs}");
        while phase("hello") == "Running" {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(phase("hello"), "Failed");
        let code = kubectl(&[
            "get",
            "pod",
            "hello",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}",
        ]);
        assert_eq!(code, "3");
        let events = kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=hello",
            "-o",
            "jsonpath={.items[*].reason}",
        ]);
        for reason in ["Scheduled", "Pulled", "Created", "Started"] {
            assert!(events.contains(reason), "{reason} in {events}");
        }
        kubectl(&["delete", "pod", "hello"]);

        kubectl(&["run", "sleeper", &image, "--restart=Never", "--command", "--", "sh", "-c", "echo up; sleep 60"]);
        while phase("sleeper") != "Running" {
            assert!(std::time::Instant::now() < deadline + Duration::from_secs(30), "never ran");
            std::thread::sleep(Duration::from_millis(100));
        }
        let asked = std::time::Instant::now();
        kubectl(&["delete", "pod", "sleeper", "--grace-period=2"]);
        assert!(asked.elapsed() < Duration::from_secs(15), "{:?}", asked.elapsed());
        let gone = std::process::Command::new(&tools.kubectl)
            .arg("--kubeconfig")
            .arg(&config)
            .args(["get", "pod", "sleeper"])
            .env("HOME", dir.path())
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"), "{gone:?}");
    });
}

/// The spec on a cluster with these pod settings (the engine merges them from the task, the
/// pipeline and the cluster's defaults) and this pending limit.
fn on_cluster(f: &Fixture, mut spec: TaskSpec, pod: PodSettings, pending_limit: Option<Duration>) -> TaskSpec {
    spec.cluster = Some(TaskCluster {
        login: ClusterLogin { name: "fake".into(), kubeconfig: f._fake.kubeconfig(), context: None },
        namespace: f.namespace.clone(),
        pod,
        pending_limit,
        workspace: Default::default(),
    });
    spec
}

fn requests(cpu: &str) -> PodSettings {
    PodSettings {
        resources: Resources {
            requests: Quantities { cpu: Some(cpu.into()), memory: Some("64Mi".into()) },
            limits: Quantities { cpu: None, memory: Some("256Mi".into()) },
        },
        ..PodSettings::default()
    }
}

/// Resources, node selector, tolerations and service account reach the pod spec, and the
/// test double's scheduler honours them: a selector no node matches and a request above the
/// node's allocatable stay `Pending` with the scheduler's words until the pending limit; a
/// pod that waits for another pod's cpu runs once that one ends; a toleration the API server
/// refuses is a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduling_fields_reach_the_pod_and_the_scheduler_honours_them() {
    let Some(f) = fixture("ecp-devops-sched", None).await else { return };
    let pods = Api::<Pod>::namespaced(f.conn.client().clone(), &f.namespace);

    // Everything in the pod spec.
    let mut settings = requests("250m");
    settings.node_selector = [("kubernetes.io/os".to_owned(), "linux".to_owned())].into();
    settings.tolerations = vec![Toleration {
        key: Some("ci".into()),
        operator: Some("Exists".into()),
        value: None,
        effect: Some("NoSchedule".into()),
    }];
    settings.service_account = Some("default".into());
    let spec = on_cluster(&f, f.spec("fields", "echo started; sleep 2"), settings, None);
    let logs = Arc::new(Collect::default());
    let (_tx, rx) = no_stop();
    let run = tokio::spawn({
        let (executor, logs) = (f.executor.clone(), logs.clone());
        async move { executor.run(spec, logs, rx).await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let pod = loop {
        if let Some(p) = pods.list(&ListParams::default()).await.unwrap().items.into_iter().next() {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "no pod: {}", logs.all());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let spec_json = serde_json::to_value(pod.spec.unwrap()).unwrap();
    assert_eq!(spec_json["nodeSelector"], serde_json::json!({"kubernetes.io/os": "linux"}));
    assert_eq!(
        spec_json["tolerations"],
        serde_json::json!([{"key": "ci", "operator": "Exists", "effect": "NoSchedule"}])
    );
    assert_eq!(spec_json["serviceAccountName"], "default");
    assert_eq!(spec_json["automountServiceAccountToken"], true);
    assert_eq!(
        spec_json["containers"][0]["resources"],
        serde_json::json!({"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}})
    );
    assert!(run.await.unwrap().unwrap().succeeded(), "{}", logs.all());

    // No node carries the label: pending with the scheduler's reason, then the limit.
    let settings =
        PodSettings { node_selector: [("disktype".to_owned(), "ssd".to_owned())].into(), ..PodSettings::default() };
    let spec = on_cluster(&f, f.spec("selector", "true"), settings, Some(Duration::from_secs(1)));
    let logs = Arc::new(Collect::default());
    let err = f.executor.run(spec, logs.clone(), no_stop().1).await.unwrap_err().to_string();
    assert!(err.contains("0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector"), "{err}");
    assert!(err.contains("stayed pending for 1s"), "{err}");

    // More cpu than the node has: "insufficient cpu", the FAQ's not-enough-resources case.
    let spec = on_cluster(&f, f.spec("huge", "true"), requests("5"), Some(Duration::from_secs(1)));
    let err = f.executor.run(spec, Arc::new(Collect::default()), no_stop().1).await.unwrap_err().to_string();
    assert!(err.contains("0/1 nodes are available: 1 Insufficient cpu"), "{err}");
    assert!(err.contains("not enough resources"), "{err}");

    // Two pods that do not fit together: the second waits (pending) for the first.
    let first = on_cluster(&f, f.spec("first", "echo started; sleep 3"), requests("3"), None);
    let second = on_cluster(&f, f.spec("second", "echo ran"), requests("2"), None);
    let (first_logs, second_logs) = (Arc::new(Collect::default()), Arc::new(Collect::default()));
    let one = tokio::spawn({
        let (executor, logs) = (f.executor.clone(), first_logs.clone());
        async move { executor.run(first, logs, no_stop().1).await }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while first_logs.texts(Stream::Stdout).is_empty() {
        assert!(std::time::Instant::now() < deadline, "first never ran: {}", first_logs.all());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let two = f.executor.run(second, second_logs.clone(), no_stop().1).await.unwrap();
    assert!(two.succeeded(), "{}", second_logs.all());
    assert!(one.await.unwrap().unwrap().succeeded(), "{}", first_logs.all());
    let phases = second_logs.1.lock().unwrap().clone();
    let waited = phases.iter().position(
        |p| matches!(p, Phase::Pending { reason } if reason.contains("0/1 nodes are available: 1 Insufficient cpu")),
    );
    let ran = phases.iter().position(|p| *p == Phase::Running);
    assert!(waited.is_some() && waited < ran, "{phases:?}");
    assert_eq!(second_logs.texts(Stream::Stdout), ["ran"]);
    assert_eq!(first_logs.1.lock().unwrap().clone(), [], "the first pod started at once");

    // An operator the API server does not know.
    let settings = PodSettings {
        tolerations: vec![Toleration {
            key: Some("ci".into()),
            operator: Some("Maybe".into()),
            value: None,
            effect: None,
        }],
        ..PodSettings::default()
    };
    let spec = on_cluster(&f, f.spec("operator", "true"), settings, None);
    let err = f.executor.run(spec, Arc::new(Collect::default()), no_stop().1).await.unwrap_err().to_string();
    assert!(err.contains("spec.tolerations[0].operator: Unsupported value: \"Maybe\""), "{err}");
    assert_eq!(f.left().await, (0, 0));
}

/// The pods' clusters for a [`ClusterExecutor`], as the server's store gives them.
struct OneCluster(ClusterLogin, String);

impl ClusterSource for OneCluster {
    fn clusters(&self) -> wharf_executor::BoxFuture<'_, Result<Vec<(ClusterLogin, String)>, String>> {
        let one = vec![(self.0.clone(), self.1.clone())];
        Box::pin(async move { Ok(one) })
    }
}

/// A killed server (`run`'s future leaked, never dropped, so nothing cleans up) leaves its
/// pod running; a new executor finds it by label, adopts it, resumes its log after what was
/// stored (no line lost, none twice), and ends it as `run` would. What belongs to no run
/// that goes on (a pending pod, its Secret) is reported and discarded through the
/// server's `ClusterExecutor`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_executor_adopts_the_pod_a_killed_server_left_and_resumes_its_log_once() {
    let Some(f) = fixture("ecp-devops-adopt", None).await else { return };
    let script =
        "i=0; while [ $i -lt 40 ]; do echo line $i; i=$((i+1)); sleep 0.05; done; echo DONE=1 >> \"$WHARF_OUTPUT\"";
    let spec = f.spec("adopt", script);
    let first = Arc::new(Collect::default());
    let (_tx, rx) = no_stop();
    let mut running = Box::pin(f.executor.run(spec.clone(), first.clone(), rx));
    tokio::select! {
        exit = &mut running => panic!("ended before the kill: {exit:?} {}", first.all()),
        () = async {
            while first.texts(Stream::Stdout).len() < 5 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } => {}
    }
    // kill -9: the supervisor vanishes without its cleanup.
    std::mem::forget(running);
    let stored: Vec<(i64, String)> = first
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.stream == Stream::Stdout)
        .map(|l| (l.at.as_second(), l.text.clone()))
        .collect();
    assert!(stored.len() >= 5 && stored.len() < 40, "{stored:?}");
    let since_second = stored.last().unwrap().0;
    let skip_lines = stored.iter().filter(|(s, _)| *s >= since_second).count() as u64;

    // The restarted server's executor: a new connection.
    let restarted = f.executor_with_pending_limit(Duration::from_secs(600));
    let left = restarted.leftovers("WHARF_SERVER_RUN").await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].owner, "abc/42");
    assert_eq!(
        left[0].attempt,
        Some(wharf_executor::AttemptId { stage: "Build".into(), task: "adopt".into(), attempt: 1 })
    );
    let logs = Arc::new(Collect::default());
    let (_tx, rx) = no_stop();
    let exit = restarted
        .adopt(spec.clone(), logs.clone(), rx, LogResume { since_second, skip_lines })
        .await
        .unwrap()
        .expect("the pod is there to adopt");
    assert_eq!(exit.code, Some(0), "{}", logs.all());
    assert!(logs.all().contains("the server restarted; took over pod ecp-devops-adopt/wharf-"), "{}", logs.all());
    let mut all: Vec<String> = stored.iter().map(|(_, l)| l.clone()).collect();
    all.extend(logs.texts(Stream::Stdout));
    let expected: Vec<String> = (0..40).map(|i| format!("line {i}")).collect();
    assert_eq!(all, expected, "stored + resumed = every line once");
    assert_eq!(std::fs::read_to_string(&spec.output_file).unwrap(), "DONE=1\n");
    assert_eq!(f.left().await, (0, 0), "the adopted pod and its Secret are deleted");
    // Nothing left to adopt: `None`.
    let (_tx, rx) = no_stop();
    assert!(restarted.adopt(spec, logs, rx, LogResume::default()).await.unwrap().is_none());

    // A pod of a run that is not continued (pending: the node has no room for it), left
    // by a killed server, is found and discarded through the server's executor.
    let mut orphan = on_cluster(&f, f.spec("orphan", "echo never"), requests("5"), None);
    orphan.labels = vec![("WHARF_SERVER_RUN".into(), "abc/43".into())];
    let orphaned = Arc::new(Collect::default());
    let mut running = Box::pin(f.executor.run(orphan, orphaned.clone(), no_stop().1));
    tokio::select! {
        exit = &mut running => panic!("ended: {exit:?} {}", orphaned.all()),
        () = async {
            while !orphaned.1.lock().unwrap().iter().any(|p| matches!(p, Phase::Pending { reason } if reason.contains("Insufficient cpu"))) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } => {}
    }
    std::mem::forget(running);
    let login = ClusterLogin { name: "fake".into(), kubeconfig: f._fake.kubeconfig(), context: None };
    let server = ClusterExecutor::new(Policy::new(&["127.0.0.1"]).unwrap(), None)
        .with_clusters(Arc::new(OneCluster(login, f.namespace.clone())));
    let left = server.leftovers("WHARF_SERVER_RUN").await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].id.starts_with("fake/ecp-devops-adopt/wharf-"), "{left:?}");
    assert_eq!(left[0].owner, "abc/43");
    assert_eq!(f.left().await, (1, 1));
    server.discard(&left[0]).await.unwrap();
    server.discard(&left[0]).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while f.left().await != (0, 0) {
        assert!(std::time::Instant::now() < deadline, "left: {:?}", f.left().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `claim` workspace: the run's first task makes one PersistentVolumeClaim (as kubectl
/// sees it: `Bound`, the cluster's class and size, the run's label) and fills it with the
/// checkout; the next task sees what the first wrote there (and the server's directory does
/// not: no hostPath); outputs come back; a restart's leftovers name the claim; the run's end
/// deletes it, and nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_claim_carries_its_workspace_and_goes_with_the_run() {
    let Some(f) = fixture("ecp-devops-claim", None).await else { return };
    let Some(tools) = wharf_testenv::k8s_tools_or_fail_in_ci() else { return };
    let executor = KubeExecutor::new(
        &f.conn,
        KubeExecutorConfig {
            namespace: f.namespace.clone(),
            default_image: None,
            workspace: Workspace::Claim { storage_class: Some("local-path".into()), size: "2Gi".into() },
            pending_limit: Duration::from_secs(600),
        },
    );
    std::fs::write(f.dir.path().join("src/README"), "from the checkout\n").unwrap();
    let logs = Arc::new(Collect::default());
    let first = f.spec("first", "cat README; echo made > made.txt; echo VERSION=1.2.3 >> \"$WHARF_OUTPUT\"");
    let (_tx, rx) = no_stop();
    let exit = executor.run(first.clone(), logs.clone(), rx).await.unwrap();
    assert_eq!(exit.code, Some(0), "{}", logs.all());
    assert!(logs.texts(Stream::Stdout).contains(&"from the checkout".to_owned()), "{}", logs.all());
    assert_eq!(std::fs::read_to_string(&first.output_file).unwrap(), "VERSION=1.2.3\n");
    assert!(!f.dir.path().join("src/made.txt").exists(), "the pod wrote to the claim, not the server's directory");

    // What kubectl sees of the claim.
    let config = f.dir.path().join("kubeconfig");
    f._fake.write_kubeconfig(&config).unwrap();
    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new(&tools.kubectl)
            .arg("--kubeconfig")
            .arg(&config)
            .args(["-n", "ecp-devops-claim"])
            .args(args)
            .env("HOME", f.dir.path())
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed: serde_json::Value =
        serde_json::from_str(&tokio::task::block_in_place(|| kubectl(&["get", "pvc", "-o", "json"]))).unwrap();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed:#}");
    let claim = &items[0];
    let name = claim["metadata"]["name"].as_str().unwrap().to_owned();
    assert_eq!(claim["status"]["phase"], "Bound");
    assert_eq!(claim["spec"]["storageClassName"], "local-path");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "2Gi");
    assert_eq!(claim["metadata"]["labels"]["wharf.run"], "kube-test_1");
    assert_eq!(claim["metadata"]["annotations"]["wharf.run"], "kube-test#1");
    let table = tokio::task::block_in_place(|| kubectl(&["get", "pvc"]));
    let header: Vec<&str> = table.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header[..3], ["NAME", "STATUS", "VOLUME"], "{table}");
    let row: Vec<&str> = table.lines().nth(1).unwrap_or("").split_whitespace().collect();
    assert_eq!(
        (row[0], row[1], row[3], row[4], row[5]),
        (name.as_str(), "Bound", "2Gi", "RWO", "local-path"),
        "{table}"
    );

    // The next task of the run mounts the same claim.
    let logs = Arc::new(Collect::default());
    let (_tx, rx) = no_stop();
    let exit = executor.run(f.spec("second", "cat made.txt; cat README"), logs.clone(), rx).await.unwrap();
    assert_eq!(exit.code, Some(0), "{}", logs.all());
    assert_eq!(logs.texts(Stream::Stdout), ["made", "from the checkout"], "{}", logs.all());
    assert!(!logs.all().contains("copies the checkout"), "filled once: {}", logs.all());

    // A restart finds the claim by its label, without an attempt.
    let left = executor.leftovers("WHARF_SERVER_RUN").await.unwrap();
    let found: Vec<_> = left.iter().filter(|l| l.id == name).collect();
    assert_eq!(found.len(), 1, "{left:?}");
    assert!(found[0].attempt.is_none() && found[0].owner == "abc/42", "{left:?}");

    // The run's end deletes it; nothing is left.
    let end = wharf_executor::RunEnd { run: "kube-test#1".into(), labels: first.labels.clone(), cluster: None };
    executor.run_ended(&end).await;
    let listed = tokio::task::block_in_place(|| kubectl(&["get", "pvc", "-o", "name"]));
    assert_eq!(listed.trim(), "", "no claim left");
    assert_eq!(f.left().await, (0, 0), "no pod, no Secret left");
    assert!(executor.leftovers("WHARF_SERVER_RUN").await.unwrap().is_empty());
}

/// A node tainted `dedicated=ci:NoSchedule` takes the task whose tolerations match it; a
/// task without them stays pending with the scheduler's reason until its pending limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tainted_node_takes_only_tasks_that_tolerate_it() {
    let taints = vec!["dedicated=ci:NoSchedule".parse().unwrap()];
    let Some(f) = fixture_on("ecp-devops-taint", None, taints).await else { return };
    let tolerant = PodSettings {
        tolerations: vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("ci".into()),
            effect: Some("NoSchedule".into()),
        }],
        ..PodSettings::default()
    };
    let logs = Arc::new(Collect::default());
    let (_tx, rx) = no_stop();
    let spec = on_cluster(&f, f.spec("tolerant", "echo placed on the tainted node"), tolerant, None);
    let exit = f.executor.run(spec, logs.clone(), rx).await.unwrap();
    assert!(exit.succeeded(), "{}", logs.all());
    assert!(logs.all().contains("placed on the tainted node"), "{}", logs.all());

    let logs = Arc::new(Collect::default());
    let (_tx, rx) = no_stop();
    let spec = on_cluster(&f, f.spec("intolerant", "echo never"), PodSettings::default(), Some(Duration::from_secs(2)));
    let err = f.executor.run(spec, logs.clone(), rx).await.unwrap_err().to_string();
    let why = "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: ci}. preemption: 0/1 nodes are \
               available: 1 Preemption is not helpful for scheduling.";
    assert!(err.contains("stayed pending for 2s: no node of the cluster takes it: "), "{err}");
    assert!(err.contains(why), "{err}");
    assert!(err.contains("check the task's `node_selector` and `tolerations`"), "{err}");
    assert!(!err.contains("not enough resources"), "a taint is no shortage: {err}");
    let phases = logs.1.lock().unwrap().clone();
    assert_eq!(
        phases.last(),
        Some(&Phase::Pending { reason: format!("the scheduler cannot place the pod: {why}") }),
        "{phases:?}"
    );
    assert!(!logs.all().contains("never"), "{}", logs.all());
    assert_eq!(f.left().await, (0, 0));
}

/// Dropping the test double removes the containers its kubelet started, a running one
/// included (the kubelet talks to the Docker Engine API; the container is `kube-fake-<uid>`),
/// and their directories on this machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_fake_removes_its_containers() {
    let Some(f) = fixture("ecp-devops-drop", None).await else { return };
    let pods = Api::<Pod>::namespaced(f.conn.client().clone(), &f.namespace);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "sleeper"},
        "spec": {"restartPolicy": "Never",
                 "containers": [{"name": "task", "image": f.image, "command": ["sleep", "300"]}]}
    }))
    .unwrap();
    let uid = pods.create(&PostParams::default(), &pod).await.unwrap().metadata.uid.unwrap();
    let mut phase = String::new();
    for _ in 0..200 {
        phase = pods.get("sleeper").await.unwrap().status.and_then(|s| s.phase).unwrap_or_default();
        if phase == "Running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(phase, "Running");
    let container = format!("kube-fake-{uid}");
    let state = || {
        let out = std::process::Command::new("docker")
            .args(["inspect", "-f", "{{.State.Status}}", &container])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(state(), "running");
    // The pod's directory (its termination message file) on this machine.
    let pod_dirs = || {
        std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(&format!("-{uid}")))
            .count()
    };
    assert_eq!(pod_dirs(), 1);
    drop(f);
    assert_eq!(state(), "", "container {container} is left after the fake was dropped");
    assert_eq!(pod_dirs(), 0, "the pod's directory is left after the fake was dropped");
}
