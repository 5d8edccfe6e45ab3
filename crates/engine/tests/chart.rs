//! `chart-publish` tasks in the engine, on a recording chart registry: the chart loaded
//! from inside the checkout, renamed and versioned, `${…}` substituted in values.yaml,
//! linted by rendering, packaged; outputs; and every failure before a push. (The push
//! itself against the real registry and helm: crates/image/tests/chart_oci.rs and the
//! server's registries test.)

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use wharf_core::status::Status;
use wharf_engine::{Engine, EngineConfig, Registries, RegistryLogin, RegistryTarget, RunRequest};
use wharf_executor::BoxFuture;
use wharf_executor::build::RegistryLogin as Login;
use wharf_executor::chart::{ChartPushed, ChartRegistry, ChartRegistryError, ChartUpload, PulledChart};

#[derive(Default)]
struct Recording {
    pushed: Mutex<Vec<(Login, ChartUpload)>>,
}

impl ChartRegistry for Recording {
    fn push<'a>(&'a self, login: Login, chart: ChartUpload) -> BoxFuture<'a, Result<ChartPushed, ChartRegistryError>> {
        Box::pin(async move {
            // A registry that never answers, for stops and timeouts.
            if chart.version.ends_with("-hang") {
                std::future::pending::<()>().await;
            }
            let reference = format!("{}/{}:{}", login.host, chart.repository, chart.version.replace('+', "_"));
            self.pushed.lock().unwrap().push((login, chart));
            Ok(ChartPushed { reference, digest: format!("sha256:{}", "cd".repeat(32)) })
        })
    }

    fn pull<'a>(
        &'a self,
        _login: Login,
        repository: String,
        _version: String,
    ) -> BoxFuture<'a, Result<PulledChart, ChartRegistryError>> {
        Box::pin(async move { Err(ChartRegistryError::NotFound(repository)) })
    }
}

fn engine(charts: &Arc<Recording>) -> Engine {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let host = wharf_executor::host::HostExecutor::new(wharf_executor::host::HostConfig {
        base_env: vec![("PATH".into(), path)],
        ..Default::default()
    });
    Engine::new(EngineConfig::default(), Arc::new(host)).with_charts(charts.clone())
}

fn registries() -> Registries {
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
            RegistryTarget { login, workspaces: Some(vec!["charts".into()]) },
        )]),
        default: Some("local".into()),
    }
}

fn request_with(dirs: &Dirs, yaml: &str) -> RunRequest {
    let mut request = request(pipeline(yaml), dirs.existing());
    request.registries = registries();
    request
}

/// A small chart at `charts/<dir>` in the checkout.
fn chart(dirs: &Dirs, dir: &str, values: &str, template: &str) {
    let root = dirs.src().join("charts").join(dir);
    std::fs::create_dir_all(root.join("templates")).unwrap();
    std::fs::write(root.join("Chart.yaml"), "apiVersion: v2\nname: original\nversion: 0.0.1\n").unwrap();
    std::fs::write(root.join("values.yaml"), values).unwrap();
    std::fs::write(root.join("templates/cm.yaml"), template).unwrap();
    std::fs::write(root.join(".helmignore"), "*.bak\n").unwrap();
    std::fs::write(root.join("notes.bak"), "left out\n").unwrap();
}

const TEMPLATE: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Chart.Name }}\ndata:\n  tag: {{ .Values.image.tag | quote }}\n";

const PUBLISH: &str = "name: app
parameters: [{name: DIR, default: charts/app}]
stages:
  - name: Build
    tasks:
      - name: publish
        type: chart-publish
        chart_dir: ${DIR}
        chart: jack-2048
        version: 1.0.${BUILD_ID}
        workspace: charts
  - name: Test
    tasks:
      - name: use
        type: script
        script: echo \"${tasks.publish.chart} ${tasks.publish.version} ${tasks.publish.digest}\"
";

#[tokio::test]
async fn a_chart_is_renamed_versioned_substituted_linted_packaged_and_pushed() {
    let dirs = Dirs::new();
    chart(&dirs, "app", "image:\n  tag: \"alpha-${BUILD_ID}\"\n", TEMPLATE);
    let charts = Arc::new(Recording::default());
    let engine = engine(&charts);
    let mut request = request_with(&dirs, PUBLISH);
    request.parameters = engine.prepare(&request.pipeline, &BTreeMap::new(), &BTreeMap::new()).unwrap();
    let (record, recorder) = run(&engine, request).await;
    assert_eq!(record.progress.status, Status::Succeeded, "{:?}", record.reason);

    let pushed = charts.pushed.lock().unwrap();
    assert_eq!(pushed.len(), 1);
    let (login, upload) = &pushed[0];
    assert_eq!(login.name, "local", "the server's default registry");
    assert_eq!(upload.repository, "charts/jack-2048");
    assert_eq!(upload.version, "1.0.7");
    let loaded = wharf_chart::load_archive(&upload.archive).unwrap();
    assert_eq!(loaded.metadata.name, "jack-2048");
    assert_eq!(loaded.metadata.version, "1.0.7");
    let values = String::from_utf8(loaded.values_yaml.unwrap().data).unwrap();
    assert_eq!(values, "image:\n  tag: \"alpha-7\"\n");
    assert!(!loaded.files.iter().any(|f| f.path.ends_with(".bak")), ".helmignore honoured");
    let config: serde_json::Value = serde_json::from_slice(&upload.config).unwrap();
    assert_eq!((config["name"].as_str(), config["version"].as_str()), (Some("jack-2048"), Some("1.0.7")));

    let outputs = &task_record(&record, "publish").outputs;
    assert_eq!(outputs["chart"], "jack-2048");
    assert_eq!(outputs["version"], "1.0.7");
    assert_eq!(outputs["reference"], "oci://127.0.0.1:5055/charts/jack-2048");
    let used = recorder.output(task(&record, "use"));
    assert_eq!(used, vec![format!("jack-2048 1.0.7 sha256:{}", "cd".repeat(32))]);
    let log = recorder.lines(task(&record, "publish")).join("\n");
    assert!(log.contains("renders: 1 manifests"), "{log}");
    assert!(log.contains("pushed 127.0.0.1:5055/charts/jack-2048:1.0.7"), "{log}");
}

#[tokio::test]
async fn a_chart_that_cannot_be_published_fails_before_the_push_and_says_where() {
    let dirs = Dirs::new();
    chart(&dirs, "app", "image:\n  tag: x\n", TEMPLATE);
    chart(&dirs, "unknown-var", "image:\n  tag: x\nother: ${NOPE}\n", TEMPLATE);
    chart(&dirs, "broken", "image:\n  tag: x\n", "kind: ConfigMap\nname: {{ .Values.image.tag | nosuchfunc }}\n");
    chart(&dirs, "bad-yaml", "image: [unclosed\n", TEMPLATE);
    chart(&dirs, "flow", "image: {tag: ${BUILD_ID}}\n", TEMPLATE);
    std::os::unix::fs::symlink("/etc", dirs.src().join("etc-link")).unwrap();
    let charts = Arc::new(Recording::default());
    let engine = engine(&charts);
    let cases = [
        ("../../etc", "chart_dir: `../../etc` leaves the checkout"),
        ("etc-link", "chart_dir: `etc-link` leads outside the checkout"),
        ("charts/nowhere", "chart_dir: `charts/nowhere` does not exist in the checkout"),
        ("charts/app/values.yaml", "chart_dir: `charts/app/values.yaml` is not a directory"),
        ("charts/unknown-var", "chart_dir: `charts/unknown-var`: values.yaml line 3:"),
        ("charts/broken", "chart_dir: `charts/broken` does not render:"),
        ("charts/bad-yaml", "chart_dir: `charts/bad-yaml`"),
        ("charts/flow", "values.yaml is read before ${…} is substituted"),
    ];
    for (dir, expected) in cases {
        let mut request = request_with(&dirs, PUBLISH);
        let given = BTreeMap::from([("DIR".to_owned(), dir.to_owned())]);
        request.parameters = engine.prepare(&request.pipeline, &given, &BTreeMap::new()).unwrap();
        let (record, _) = run(&engine, request).await;
        assert_eq!(record.progress.status, Status::Failed, "{dir}");
        let reason = task_record(&record, "publish").reason.clone().unwrap_or_default();
        assert!(reason.contains(expected), "{dir}: {reason}\n  expected: {expected}");
    }
    // The broken template is named.
    let mut request = request_with(&dirs, PUBLISH);
    let given = BTreeMap::from([("DIR".to_owned(), "charts/broken".to_owned())]);
    request.parameters = engine.prepare(&request.pipeline, &given, &BTreeMap::new()).unwrap();
    let (record, _) = run(&engine, request).await;
    let reason = task_record(&record, "publish").reason.clone().unwrap_or_default();
    assert!(reason.contains("templates/cm.yaml"), "{reason}");

    // A version that is no SemVer, a workspace the registry does not list.
    for (field, expected) in [
        ("version: '1.${BUILD_ID}'", "version `1.7` is not a semantic version"),
        ("workspace: elsewhere", "workspace: `elsewhere` is not a workspace of registry `local`"),
    ] {
        let key = field.split(':').next().unwrap();
        let yaml =
            PUBLISH
                .lines()
                .map(|l| {
                    if l.trim_start().starts_with(&format!("{key}:")) {
                        format!("        {field}")
                    } else {
                        l.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
        let mut request = request_with(&dirs, &yaml);
        request.parameters = engine.prepare(&request.pipeline, &BTreeMap::new(), &BTreeMap::new()).unwrap();
        let (record, _) = run(&engine, request).await;
        let reason = task_record(&record, "publish").reason.clone().unwrap_or_default();
        assert!(reason.contains(expected), "{field}: {reason}");
    }
    assert!(charts.pushed.lock().unwrap().is_empty(), "nothing was pushed");
}

#[tokio::test]
async fn without_a_chart_registry_chart_publish_is_refused_at_run_start() {
    let host = wharf_executor::host::HostExecutor::new(Default::default());
    let engine = Engine::new(EngineConfig::default(), Arc::new(host));
    let err = engine.prepare(&pipeline(PUBLISH), &BTreeMap::new(), &BTreeMap::new()).unwrap_err().to_string();
    assert!(
        err.contains(
            "Build/publish: `chart-publish` tasks need the Wharf server, where registries are registered (`wharf \
             registries add`)"
        ),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_push_that_hangs_ends_at_the_task_timeout_or_a_stop() {
    let dirs = Dirs::new();
    chart(&dirs, "app", "image:\n  tag: x\n", TEMPLATE);
    let charts = Arc::new(Recording::default());
    let engine = engine(&charts);
    let yaml = PUBLISH.replace("version: 1.0.${BUILD_ID}", "version: 1.0.${BUILD_ID}-hang\n        timeout: 1s");
    let prepared = |yaml: &str| {
        let mut request = request_with(&dirs, yaml);
        request.parameters = engine.prepare(&request.pipeline, &BTreeMap::new(), &BTreeMap::new()).unwrap();
        request
    };
    let (record, _) = run(&engine, prepared(&yaml)).await;
    assert_eq!(record.progress.status, Status::TimedOut, "{:?}", record.reason);
    assert!(task_record(&record, "publish").reason.as_deref().unwrap_or_default().contains("task timeout of 1s"));

    let untimed = PUBLISH.replace("version: 1.0.${BUILD_ID}", "version: 1.0.${BUILD_ID}-hang");
    let recorder = Recorder::new();
    let pushing = recorder.wait_for_line(wharf_engine::Part::Task(0, 0), "pushing jack-2048-1.0.7-hang.tgz");
    let record = run_stopped_when(&engine, prepared(&untimed), recorder.clone(), pushing, stop_request(secs(1))).await;
    assert_eq!(record.progress.status, Status::Stopped);
    assert_eq!(task_record(&record, "publish").progress.status, Status::Stopped);
    assert!(task_record(&record, "publish").outputs.is_empty(), "no outputs from a stopped push");
}
