//! `image` tasks in the engine, on a recording builder: rendered fields, paths kept
//! inside the checkout, registry resolution, outputs, stop.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use wharf_core::status::Status;
use wharf_engine::{Clusters, Engine, EngineConfig, Registries, RegistryLogin, RegistryTarget, RunRequest};
use wharf_executor::build::{BuildError, BuildExit, BuildSpec, Built, ImageBuilder};
use wharf_executor::{BoxFuture, LogLine, LogSink, StopSignal, Stream};

/// Records what it was asked to build; "builds" by answering a digest, or waits for a
/// stop when the image's tag is `forever`, or fails when it is `broken`.
#[derive(Default)]
struct Recording {
    specs: Mutex<Vec<BuildSpec>>,
}

impl ImageBuilder for Recording {
    fn build<'a>(
        &'a self,
        spec: BuildSpec,
        logs: Arc<dyn LogSink>,
        mut stop: StopSignal,
    ) -> BoxFuture<'a, Result<BuildExit, BuildError>> {
        Box::pin(async move {
            self.specs.lock().unwrap().push(spec.clone());
            logs.line(LogLine {
                at: jiff::Timestamp::now(),
                stream: Stream::Stdout,
                text: format!("Step 1/1 : login with {}", spec.registry.password.clone().unwrap_or_default()),
                continued: false,
            });
            if spec.image.ends_with(":forever") {
                loop {
                    if let Some(request) = *stop.borrow_and_update() {
                        return Ok(BuildExit::Stopped(request.reason));
                    }
                    if stop.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
            if spec.image.ends_with(":broken") {
                return Err(BuildError("the Docker build failed: RUN returned a non-zero code: 3".into()));
            }
            Ok(BuildExit::Built(Built { image: spec.image.clone(), digest: format!("sha256:{}", "ab".repeat(32)) }))
        })
    }
}

fn engine(builder: &Arc<Recording>) -> Engine {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let host = wharf_executor::host::HostExecutor::new(wharf_executor::host::HostConfig {
        base_env: vec![("PATH".into(), path)],
        ..Default::default()
    });
    Engine::new(EngineConfig::default(), Arc::new(host)).with_builder(builder.clone())
}

fn registries(default: Option<&str>) -> Registries {
    let login = RegistryLogin {
        name: "local".into(),
        host: "127.0.0.1:5055".into(),
        username: Some("wharf".into()),
        password: Some("registry-pass".into()),
        insecure: true,
    };
    Registries {
        by_name: BTreeMap::from([(
            "local".to_owned(),
            RegistryTarget { login, workspaces: Some(vec!["devops".into()]) },
        )]),
        default: default.map(str::to_owned),
    }
}

fn request_with(dirs: &Dirs, yaml: &str, registries: Registries) -> RunRequest {
    let mut request = request(pipeline(yaml), dirs.existing());
    request.registries = registries;
    request
}

const BUILD_AND_USE: &str = "name: app
variables: {name: jack-2048}
stages:
  - name: Build
    tasks:
      - name: build
        type: image
        dockerfile: docker/Dockerfile
        context: web
        image: ${name}
        tag: alpha-${BUILD_ID}
        workspace: devops
        registry: local
        build_args: {VERSION: '1.${BUILD_ID}'}
  - name: Test
    tasks:
      - name: use
        type: script
        script: echo \"built ${tasks.build.image} at ${tasks.build.digest}\"
";

fn checkout(dirs: &Dirs) {
    std::fs::create_dir_all(dirs.src().join("docker")).unwrap();
    std::fs::create_dir_all(dirs.src().join("web")).unwrap();
    std::fs::write(dirs.src().join("docker/Dockerfile"), "FROM scratch\n").unwrap();
}

#[tokio::test]
async fn an_image_task_builds_rendered_fields_and_its_outputs_feed_later_tasks() {
    let dirs = Dirs::new();
    checkout(&dirs);
    let builder = Arc::new(Recording::default());
    let engine = engine(&builder);
    let p = pipeline(BUILD_AND_USE);
    engine.prepare(&p, &BTreeMap::new(), &BTreeMap::new()).unwrap();
    let (record, recorder) = run(&engine, request_with(&dirs, BUILD_AND_USE, registries(None))).await;
    assert_eq!(record.progress.status, Status::Succeeded, "{:?}", record.reason);

    let specs = builder.specs.lock().unwrap().clone();
    assert_eq!(specs.len(), 1);
    let spec = &specs[0];
    assert_eq!(spec.image, "127.0.0.1:5055/devops/jack-2048:alpha-7");
    assert_eq!(spec.build_args, vec![("VERSION".to_owned(), "1.7".to_owned())]);
    let root = std::fs::canonicalize(dirs.src()).unwrap();
    assert_eq!(spec.context, root.join("web"));
    assert_eq!(spec.dockerfile, root.join("docker/Dockerfile"));
    assert_eq!(spec.registry.password.as_deref(), Some("registry-pass"));

    let outputs = &task_record(&record, "build").outputs;
    assert_eq!(outputs["image"], "127.0.0.1:5055/devops/jack-2048:alpha-7");
    assert_eq!(outputs["digest"], format!("sha256:{}", "ab".repeat(32)));
    let used = recorder.output(task(&record, "use"));
    assert_eq!(used, vec![format!("built 127.0.0.1:5055/devops/jack-2048:alpha-7 at sha256:{}", "ab".repeat(32))]);
    // The registry password is masked in the build log.
    let build_log = recorder.lines(task(&record, "build")).join("\n");
    assert!(build_log.contains("login with ***") && !build_log.contains("registry-pass"), "{build_log}");
}

/// A pipeline on the kubernetes executor hands the builder its cluster (where a builder pod
/// runs), with the checkout and the run's labels; elsewhere the spec names no cluster, even
/// when the pipeline names one (for its deploy tasks), so the build never moves there.
#[tokio::test]
async fn a_kubernetes_pipelines_build_names_its_cluster_and_others_none() {
    for (executor, on_kubernetes) in [("executor: kubernetes\ndefault_image: busybox\n", true), ("", false)] {
        let dirs = Dirs::new();
        checkout(&dirs);
        let builder = Arc::new(Recording::default());
        let engine = engine(&builder);
        let yaml = BUILD_AND_USE.replace("name: app\n", &format!("name: app\n{executor}cluster: prod\n"));
        let mut request = request_with(&dirs, &yaml, registries(None));
        let login = wharf_executor::deploy::ClusterLogin { name: "prod".into(), kubeconfig: "k".into(), context: None };
        request.clusters = Clusters {
            by_name: BTreeMap::from([("prod".to_owned(), login)]),
            namespaces: BTreeMap::from([("prod".to_owned(), "ecp-devops-abc".to_owned())]),
            ..Default::default()
        };
        request.labels = vec![("WHARF_SERVER_RUN".into(), "data/1".into())];
        let (record, _) = run(&engine, request).await;
        assert_eq!(record.progress.status, Status::Succeeded, "{executor}: {:?}", record.reason);
        let spec = builder.specs.lock().unwrap()[0].clone();
        assert_eq!(spec.checkout, std::fs::canonicalize(dirs.src()).unwrap());
        assert_eq!(spec.owner_labels, vec![("WHARF_SERVER_RUN".to_owned(), "data/1".to_owned())]);
        match spec.cluster {
            Some(cluster) if on_kubernetes => {
                assert_eq!((cluster.login.name.as_str(), cluster.namespace.as_str()), ("prod", "ecp-devops-abc"))
            }
            None if !on_kubernetes => {}
            other => panic!("{executor}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn paths_that_leave_the_checkout_fail_before_anything_is_built() {
    let dirs = Dirs::new();
    checkout(&dirs);
    std::os::unix::fs::symlink("/etc", dirs.src().join("etc-link")).unwrap();
    std::fs::write(dirs.src().join("Dockerfile"), "FROM scratch\n").unwrap();
    let builder = Arc::new(Recording::default());
    let engine = engine(&builder);
    let cases = [
        ("dockerfile: '${DF}'", "DF", "../../etc/passwd", "dockerfile: `../../etc/passwd` leaves the checkout"),
        ("dockerfile: '${DF}'", "DF", "/etc/passwd", "dockerfile: `/etc/passwd` is absolute"),
        ("dockerfile: etc-link/passwd", "X", "", "dockerfile: `etc-link/passwd` leads outside the checkout"),
        ("context: etc-link", "X", "", "context: `etc-link` leads outside the checkout"),
        (
            "dockerfile: dockerfile",
            "X",
            "",
            "`dockerfile` does not exist in the checkout (names are case-sensitive; there is `Dockerfile`)",
        ),
        ("context: nowhere", "X", "", "context: `nowhere` does not exist"),
        ("dockerfile: web", "X", "", "dockerfile: `web` is not a file"),
        ("tag: '${T}'", "T", "alpha 1", "tag: `alpha 1` is not a valid tag: ' ' is not allowed"),
        ("workspace: '${T}'", "T", "../etc", "workspace: `../etc` is not a valid path component"),
    ];
    for (field, param, value, expected) in cases {
        let key = field.split(':').next().unwrap();
        let defaults: Vec<&str> = ["image: app", "tag: '1'", "workspace: devops"]
            .into_iter()
            .filter(|d| !d.starts_with(&format!("{key}:")))
            .collect();
        let defaults = defaults.join(", ");
        let yaml = format!(
            "name: app
parameters: [{{name: {param}, default: '{value}'}}]
stages:
  - name: Build
    tasks:
      - {{name: build, type: image, {field}, {defaults}, registry: local}}
"
        );
        let mut request = request_with(&dirs, &yaml, registries(None));
        request.parameters = engine.prepare(&request.pipeline, &BTreeMap::new(), &BTreeMap::new()).unwrap();
        let (record, _) = run(&engine, request).await;
        assert_eq!(record.progress.status, Status::Failed, "{field}");
        let reason = task_record(&record, "build").reason.clone().unwrap_or_default();
        assert!(reason.contains(expected), "{field}: {reason}\n  expected: {expected}");
    }
    assert!(builder.specs.lock().unwrap().is_empty(), "nothing was built");
}

#[tokio::test]
async fn registries_resolve_by_name_or_default_and_workspaces_must_be_registered() {
    let dirs = Dirs::new();
    std::fs::write(dirs.src().join("Dockerfile"), "FROM scratch\n").unwrap();
    let builder = Arc::new(Recording::default());
    let engine = engine(&builder);
    let yaml = |extra: &str| {
        format!(
            "name: app
stages:
  - name: Build
    tasks:
      - {{name: build, type: image, image: app, tag: '1', workspace: devops{extra}}}
"
        )
    };
    let reason = |record: &wharf_core::run::RunRecord| task_record(record, "build").reason.clone().unwrap_or_default();

    let (record, _) = run(&engine, request_with(&dirs, &yaml(""), registries(Some("local")))).await;
    assert_eq!(record.progress.status, Status::Succeeded, "the default registry: {:?}", record.reason);

    let (record, _) = run(&engine, request_with(&dirs, &yaml(""), registries(None))).await;
    assert!(
        reason(&record).contains("names no `registry:` and the server has no default registry"),
        "{}",
        reason(&record)
    );

    let (record, _) = run(&engine, request_with(&dirs, &yaml(", registry: hub"), registries(None))).await;
    assert!(reason(&record).contains("`hub` is not a registered registry (registered: local)"), "{}", reason(&record));

    let other = yaml(", registry: local").replace("workspace: devops", "workspace: qa");
    let (record, _) = run(&engine, request_with(&dirs, &other, registries(None))).await;
    assert!(
        reason(&record).contains("`qa` is not a workspace of registry `local` (registered: devops)"),
        "{}",
        reason(&record)
    );
    assert_eq!(builder.specs.lock().unwrap().len(), 1);

    let broken = yaml(", registry: local").replace("tag: '1'", "tag: broken");
    let (record, recorder) = run(&engine, request_with(&dirs, &broken, registries(None))).await;
    assert_eq!(record.progress.status, Status::Failed);
    assert!(reason(&record).contains("RUN returned a non-zero code: 3"), "{}", reason(&record));
    assert!(recorder.lines(task(&record, "build")).iter().any(|l| l.contains("non-zero code: 3")));
}

#[tokio::test]
async fn without_a_builder_image_tasks_are_refused_before_the_run() {
    let p = pipeline(BUILD_AND_USE);
    let engine = host_engine();
    let err = engine.prepare(&p, &BTreeMap::new(), &BTreeMap::new()).unwrap_err().to_string();
    assert!(err.contains("Build/build: `image` tasks need the Docker Engine"), "{err}");
}

#[tokio::test]
async fn a_stop_ends_a_build_and_a_timeout_too() {
    let dirs = Dirs::new();
    std::fs::write(dirs.src().join("Dockerfile"), "FROM scratch\n").unwrap();
    let builder = Arc::new(Recording::default());
    let engine = engine(&builder);
    let yaml = "name: app
stages:
  - name: Build
    tasks:
      - {name: build, type: image, image: app, tag: forever, workspace: devops, registry: local, timeout: 1s}
";
    let (record, _) = run(&engine, request_with(&dirs, yaml, registries(None))).await;
    assert_eq!(record.progress.status, Status::TimedOut);
    assert!(task_record(&record, "build").reason.as_deref().unwrap_or_default().contains("task timeout of 1s"));

    let untimed = yaml.replace(", timeout: 1s", "");
    let recorder = Recorder::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(None);
    let request = request_with(&dirs, &untimed, registries(None));
    let running = engine.run(request, recorder.clone(), stop_rx);
    tokio::pin!(running);
    tokio::select! {
        _ = &mut running => panic!("the build cannot end by itself"),
        _ = recorder.wait_for_line(wharf_engine::Part::Task(0, 0), "Step 1/1") => {}
    }
    stop_tx.send_replace(stop_request(secs(1)));
    let record = running.await;
    assert_eq!(record.progress.status, Status::Stopped);
    assert_eq!(task_record(&record, "build").progress.status, Status::Stopped);
}
