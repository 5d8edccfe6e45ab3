//! `deploy-yaml` tasks in the engine, on a recording deployer: the file read from inside
//! the checkout with `${…}` substituted (errors name the line), the cluster resolved
//! among the run's, outputs, masking, stop and timeout.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use wharf_core::status::Status;
use wharf_engine::{Clusters, Engine, RunRequest};
use wharf_executor::deploy::{Applied, ClusterLogin, DeployError, DeployExit, DeploySpec, Deployer};
use wharf_executor::{BoxFuture, LogLine, LogSink, StopSignal, Stream};

/// Records what it was asked to deploy; "applies" every `name:` line as a Deployment,
/// or waits for a stop when the namespace is `forever`, or fails when it is `broken`.
#[derive(Default)]
struct Recording {
    specs: Mutex<Vec<DeploySpec>>,
}

impl Deployer for Recording {
    fn deploy<'a>(
        &'a self,
        spec: DeploySpec,
        logs: Arc<dyn LogSink>,
        mut stop: StopSignal,
    ) -> BoxFuture<'a, Result<DeployExit, DeployError>> {
        Box::pin(async move {
            self.specs.lock().unwrap().push(spec.clone());
            logs.line(LogLine {
                at: jiff::Timestamp::now(),
                stream: Stream::Stdout,
                text: format!("applying to {} as {}", spec.cluster.name, spec.manifests.lines().last().unwrap_or("")),
                continued: false,
            });
            match spec.namespace.as_str() {
                "forever" => loop {
                    if let Some(request) = *stop.borrow_and_update() {
                        return Ok(DeployExit::Stopped(request.reason));
                    }
                    if stop.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                },
                "broken" => Err(DeployError(
                    "cluster `prod`, namespace `broken`: Deployment web: ImagePullBackOff: Back-off pulling image"
                        .into(),
                )),
                _ => Ok(DeployExit::Deployed(
                    spec.manifests
                        .lines()
                        .filter_map(|l| l.trim().strip_prefix("name: "))
                        .enumerate()
                        .map(|(i, name)| Applied {
                            kind: "Deployment".into(),
                            namespace: Some(spec.namespace.clone()),
                            name: name.to_owned(),
                            resource_version: (100 + i).to_string(),
                        })
                        .collect(),
                )),
            }
        })
    }
}

fn engine(deployer: &Arc<Recording>) -> Engine {
    host_engine().with_deployer(deployer.clone())
}

fn clusters() -> Clusters {
    let login = ClusterLogin { name: "prod".into(), kubeconfig: "kubeconfig-text".into(), context: None };
    Clusters {
        by_name: BTreeMap::from([("prod".to_owned(), login)]),
        namespaces: BTreeMap::new(),
        ..Default::default()
    }
}

fn request_with(dirs: &Dirs, yaml: &str) -> RunRequest {
    let mut request = request(pipeline(yaml), dirs.existing());
    request.clusters = clusters();
    request
}

const DEPLOY_AND_USE: &str = "name: app
variables: {app: jack-2048}
stages:
  - name: Deploy
    tasks:
      - name: apply
        type: deploy-yaml
        file: k8s/${app}.yaml
        cluster: prod
        namespace: games
        secrets: [TOKEN]
  - name: Check
    tasks:
      - name: use
        type: script
        script: echo \"applied ${tasks.apply.applied}\"
";

const MANIFEST: &str = "kind: Deployment
metadata:
  name: ${app}
spec:
  image: reg/devops/jack-2048:alpha-${BUILD_ID}
  command: [\"sh\", \"-c\", \"echo $HOME $${NOT_OURS}\"]
  token: ${TOKEN}
";

#[tokio::test]
async fn a_deploy_task_substitutes_the_file_and_its_outputs_feed_later_tasks() {
    let dirs = Dirs::new();
    std::fs::create_dir_all(dirs.src().join("k8s")).unwrap();
    std::fs::write(dirs.src().join("k8s/jack-2048.yaml"), MANIFEST).unwrap();
    let deployer = Arc::new(Recording::default());
    let engine = engine(&deployer);
    let p = pipeline(DEPLOY_AND_USE);
    let secrets = BTreeMap::from([("TOKEN".to_owned(), "kube-secret-value".to_owned())]);
    engine.prepare(&p, &BTreeMap::new(), &secrets).unwrap();
    let mut request = request_with(&dirs, DEPLOY_AND_USE);
    request.secrets = secrets;
    let (record, recorder) = run(&engine, request).await;
    assert_eq!(record.progress.status, Status::Succeeded, "{:?}", record.reason);

    let specs = deployer.specs.lock().unwrap().clone();
    assert_eq!(specs.len(), 1);
    let spec = &specs[0];
    assert_eq!(spec.file, "k8s/jack-2048.yaml");
    assert_eq!(spec.namespace, "games");
    assert_eq!(spec.cluster.kubeconfig, "kubeconfig-text");
    assert_eq!(spec.run, "app#7");
    assert_eq!(
        spec.manifests,
        "kind: Deployment
metadata:
  name: jack-2048
spec:
  image: reg/devops/jack-2048:alpha-7
  command: [\"sh\", \"-c\", \"echo $HOME ${NOT_OURS}\"]
  token: kube-secret-value
"
    );
    let applied = &task_record(&record, "apply").outputs["applied"];
    assert_eq!(applied, "Deployment/games/jack-2048@100");
    assert_eq!(recorder.output(task(&record, "use")), vec!["applied Deployment/games/jack-2048@100"]);
    // A listed secret substituted into the file is masked in the log.
    let log = recorder.lines(task(&record, "apply")).join("\n");
    assert!(log.contains("token: ***") && !log.contains("kube-secret-value"), "{log}");
}

#[tokio::test]
async fn bad_fields_files_and_clusters_fail_before_anything_is_applied() {
    let dirs = Dirs::new();
    std::fs::create_dir_all(dirs.src().join("k8s")).unwrap();
    std::fs::write(dirs.src().join("k8s/app.yaml"), "kind: Service\nmetadata:\n  name: ${NOPE}\n").unwrap();
    std::fs::write(dirs.src().join("k8s/ok.yaml"), "kind: Service\n").unwrap();
    std::fs::write(dirs.src().join("k8s/bin.yaml"), [0xff, 0xfe, 0x00]).unwrap();
    std::os::unix::fs::symlink("/etc", dirs.src().join("etc-link")).unwrap();
    let deployer = Arc::new(Recording::default());
    let engine = engine(&deployer);
    let cases = [
        ("file: k8s/app.yaml", "file: `k8s/app.yaml` line 3: ${NOPE} has no value"),
        ("file: '${P}'", "file: `../../etc/passwd` leaves the checkout"),
        ("file: etc-link/passwd", "file: `etc-link/passwd` leads outside the checkout"),
        (
            "file: k8s/App.yaml",
            "file: `k8s/App.yaml` does not exist in the checkout (names are case-sensitive; there is `app.yaml`)",
        ),
        ("file: k8s", "file: `k8s` is not a file"),
        ("file: k8s/bin.yaml", "file: `k8s/bin.yaml` is not UTF-8 text"),
        ("file: k8s/ok.yaml, namespace: Games", "namespace: `Games` is not a Kubernetes namespace name"),
        (
            "file: k8s/ok.yaml, cluster: staging",
            "cluster: `staging` is not a cluster of this pipeline's project (registered: prod)",
        ),
    ];
    for (fields, expected) in cases {
        let mut fields = fields.to_owned();
        for default in ["cluster: prod", "namespace: games"] {
            if !fields.contains(&default[..default.find(':').unwrap() + 1]) {
                fields.push_str(", ");
                fields.push_str(default);
            }
        }
        let yaml = format!(
            "name: app\nparameters: [{{name: P, default: ../../etc/passwd}}]\nstages:\n  - name: Deploy\n    tasks:\n      - {{name: apply, type: deploy-yaml, {fields}}}\n"
        );
        let mut request = request_with(&dirs, &yaml);
        request.parameters = engine.prepare(&request.pipeline, &BTreeMap::new(), &BTreeMap::new()).unwrap();
        let (record, _) = run(&engine, request).await;
        assert_eq!(record.progress.status, Status::Failed, "{fields}");
        let reason = task_record(&record, "apply").reason.clone().unwrap_or_default();
        assert!(reason.contains(expected), "{fields}: {reason}\n  expected: {expected}");
    }
    assert!(deployer.specs.lock().unwrap().is_empty(), "nothing was applied");

    // No cluster at all: the message says how to register one.
    let yaml = "name: app\nstages:\n  - name: Deploy\n    tasks:\n      - {name: apply, type: deploy-yaml, file: k8s/ok.yaml, cluster: prod, namespace: games}\n";
    let mut request = request_with(&dirs, yaml);
    request.clusters = Clusters::default();
    let (record, _) = run(&engine, request).await;
    let reason = task_record(&record, "apply").reason.clone().unwrap_or_default();
    assert!(reason.contains("none is registered: add one with `wharf clusters add`"), "{reason}");
}

#[tokio::test]
async fn a_failed_deploy_says_why_and_without_a_deployer_the_run_is_refused() {
    let dirs = Dirs::new();
    std::fs::write(dirs.src().join("app.yaml"), "kind: Deployment\n").unwrap();
    let deployer = Arc::new(Recording::default());
    let yaml = "name: app\nstages:\n  - name: Deploy\n    tasks:\n      - {name: apply, type: deploy-yaml, file: app.yaml, cluster: prod, namespace: broken}\n";
    let (record, recorder) = run(&engine(&deployer), request_with(&dirs, yaml)).await;
    assert_eq!(record.progress.status, Status::Failed);
    let reason = task_record(&record, "apply").reason.clone().unwrap_or_default();
    assert!(reason.contains("ImagePullBackOff"), "{reason}");
    assert!(recorder.lines(task(&record, "apply")).iter().any(|l| l.contains("ImagePullBackOff")));

    let err = host_engine().prepare(&pipeline(yaml), &BTreeMap::new(), &BTreeMap::new()).unwrap_err().to_string();
    assert!(
        err.contains("Deploy/apply: `deploy-yaml` tasks need the Wharf server, where clusters are registered"),
        "{err}"
    );
}

#[tokio::test]
async fn a_timeout_ends_the_wait_for_a_rollout() {
    let dirs = Dirs::new();
    std::fs::write(dirs.src().join("app.yaml"), "kind: Deployment\n").unwrap();
    let deployer = Arc::new(Recording::default());
    let yaml = "name: app\nstages:\n  - name: Deploy\n    tasks:\n      - {name: apply, type: deploy-yaml, file: app.yaml, cluster: prod, namespace: forever, timeout: 1s}\n";
    let (record, _) = run(&engine(&deployer), request_with(&dirs, yaml)).await;
    assert_eq!(record.progress.status, Status::TimedOut, "{:?}", record.reason);
    let reason = task_record(&record, "apply").reason.clone().unwrap_or_default();
    assert!(reason.contains("the task timeout of 1s ran out"), "{reason}");
}
