//! Helm releases (wharf_kube::release) against the Kubernetes API test double, with the
//! real helm 4 as the oracle: what Wharf installs, upgrades and rolls back, `helm list`,
//! `helm history`, `helm get` and `helm rollback` read and act on, and the other way round.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Map, Value, json};
use wharf_executor::{LogLine, LogSink, StopRequest};
use wharf_kube::deploy::Ctx;
use wharf_kube::release::{
    self, ChartRecord, FileRecord, HookRecord, Operation, ReleaseRequest, Status, history, latest_releases,
};
use wharf_kube::{Connection, FileAccess};
use wharf_kube_fake::{KubeFake, Options};

#[derive(Default)]
struct Lines(Mutex<Vec<String>>);

impl LogSink for Lines {
    fn line(&self, line: LogLine) {
        self.0.lock().unwrap().push(line.text);
    }
}

struct Helm {
    bin: PathBuf,
    kubectl: PathBuf,
    dir: tempfile::TempDir,
}

impl Helm {
    fn cmd(&self, bin: &Path, args: &[&str]) -> std::process::Output {
        let d = self.dir.path();
        std::process::Command::new(bin)
            .args(args)
            .env("KUBECONFIG", d.join("kubeconfig"))
            .env("HELM_CACHE_HOME", d.join("cache"))
            .env("HELM_CONFIG_HOME", d.join("config"))
            .env("HELM_DATA_HOME", d.join("data"))
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(&self.bin, args);
        assert!(out.status.success(), "helm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let out = self.cmd(&self.kubectl, args);
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    }
}

fn chart(name: &str, version: &str) -> ChartRecord {
    serde_json::from_value(json!({
        "metadata": {"name": name, "version": version, "apiVersion": "v2", "appVersion": "1.0"},
        "lock": null,
        "templates": [FileRecord::new("templates/all.yaml", b"# hand-written")],
        "values": {"greeting": "hello"},
        "schema": null, "files": null,
    }))
    .unwrap()
}

fn cm(name: &str, value: &str) -> String {
    format!(
        "---\n# Source: demo/templates/{name}.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  v: {value:?}\n"
    )
}

fn deployment(image: &str) -> String {
    format!(
        "---\n# Source: demo/templates/deployment.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  \
         replicas: 1\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    \
         spec:\n      containers:\n      - name: web\n        image: {image}\n"
    )
}

fn hooks() -> Vec<HookRecord> {
    serde_json::from_value(json!([
        {"name": "web-pre", "kind": "ConfigMap", "path": "demo/templates/pre.yaml",
         "manifest": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-pre\n  annotations:\n    \"helm.sh/hook\": pre-install,pre-upgrade\n    \"helm.sh/hook-weight\": \"-5\"\ndata:\n  a: b",
         "events": ["pre-install", "pre-upgrade"], "last_run": {"phase": ""}, "weight": -5},
        {"name": "web-migrate", "kind": "Job", "path": "demo/templates/job.yaml",
         "manifest": "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: web-migrate\n  annotations:\n    \"helm.sh/hook\": post-install,post-upgrade\n    \"helm.sh/hook-delete-policy\": hook-succeeded\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: m\n        image: busybox",
         "events": ["post-install", "post-upgrade"], "last_run": {"phase": ""}, "delete_policies": ["hook-succeeded"]}
    ]))
    .unwrap()
}

fn request(version: &str, manifest: String, config: Value) -> ReleaseRequest {
    ReleaseRequest {
        release: "web".into(),
        chart: chart("demo", version),
        config: config.as_object().cloned().unwrap_or_default(),
        manifest,
        hooks: hooks(),
        notes: "Thanks for installing demo.".into(),
        crds: String::new(),
        source: Some("local/team/demo".into()),
    }
}

/// helm and kubectl are run blocking; the fake serves them from the other worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_sees_wharfs_releases_and_wharf_sees_helms() {
    let Some(tools) = wharf_testenv::k8s_tools_or_fail_in_ci() else { return };
    let fake = KubeFake::start(Options::default()).await.unwrap();
    let helm = Helm { bin: tools.helm.clone(), kubectl: tools.kubectl.clone(), dir: tempfile::tempdir().unwrap() };
    fake.write_kubeconfig(&helm.dir.path().join("kubeconfig")).unwrap();
    let policy = wharf_kube::Policy::new(&["127.0.0.1"]).unwrap();
    let conn = Connection::from_kubeconfig(&fake.kubeconfig(), None, &FileAccess::Refuse, &policy).unwrap();
    let ctx = Ctx { cluster: "test", conn: &conn, namespace: "default" };
    let logs = Lines::default();
    let (_stop_tx, mut stop) = tokio::sync::watch::channel::<Option<StopRequest>>(None);

    // Install by Wharf: hooks ran (the Job hook waited for and deleted), objects applied.
    let manifest = format!("{}{}", cm("web-config", "one"), deployment("nginx:1.27"));
    let out = release::install_or_upgrade(
        &conn,
        &ctx,
        request("1.0.0", manifest, json!({"greeting": "hi"})),
        &logs,
        &mut stop,
    )
    .await
    .unwrap();
    assert_eq!(out.operation, Operation::Install);
    assert_eq!((out.release.version, out.release.info.status), (1, Status::Deployed));
    assert_eq!(out.applied.len(), 2);
    assert_eq!(out.release.hooks[0].last_run.phase, "Succeeded");
    let job = helm.kubectl(&["get", "job", "web-migrate"]).1;
    assert!(job.contains("NotFound"), "hook-succeeded deleted the Job: {job}");
    assert!(helm.kubectl(&["get", "configmap", "web-pre"]).0, "a hook without a delete policy stays");

    let list = helm.json(&["list", "-A", "-o", "json"]);
    assert_eq!(list[0]["name"], "web");
    assert_eq!(list[0]["namespace"], "default");
    assert_eq!(list[0]["revision"], "1");
    assert_eq!(list[0]["status"], "deployed");
    assert_eq!(list[0]["chart"], "demo-1.0.0");
    assert_eq!(list[0]["app_version"], "1.0");
    assert_eq!(helm.json(&["get", "values", "web", "-o", "json"]), json!({"greeting": "hi"}));
    let got = helm.ok(&["get", "manifest", "web"]);
    assert!(got.contains("# Source: demo/templates/web-config.yaml") && got.contains("image: nginx:1.27"), "{got}");
    assert!(helm.ok(&["get", "notes", "web"]).contains("Thanks for installing demo."));
    let (_, labels) =
        helm.kubectl(&["get", "configmap", "web-config", "-o", "jsonpath={.metadata.labels}{.metadata.annotations}"]);
    assert!(
        labels.contains(r#""app.kubernetes.io/managed-by":"Helm""#)
            && labels.contains(r#""meta.helm.sh/release-name":"web""#),
        "{labels}"
    );

    // Upgrade by Wharf: the ConfigMap the new revision lacks is pruned.
    let out = release::install_or_upgrade(
        &conn,
        &ctx,
        request("1.1.0", deployment("nginx:1.28"), json!({})),
        &logs,
        &mut stop,
    )
    .await
    .unwrap();
    assert_eq!((out.operation, out.release.version), (Operation::Upgrade, 2));
    assert!(helm.kubectl(&["get", "configmap", "web-config"]).1.contains("NotFound"), "pruned");
    let hist = helm.json(&["history", "web", "-o", "json"]);
    let statuses: Vec<&str> = hist.as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["superseded", "deployed"]);
    assert_eq!(hist[1]["description"], "Upgrade complete");
    assert_eq!(hist[1]["chart"], "demo-1.1.0");

    // `helm rollback` of Wharf's release: a new revision Wharf reads.
    helm.ok(&["rollback", "web", "1"]);
    let revs = history(&conn, &ctx, "web").await.unwrap();
    assert_eq!(revs.len(), 3);
    assert_eq!((revs[2].info.status, revs[2].info.description.as_str()), (Status::Deployed, "Rollback to 1"));
    assert_eq!(revs[1].info.status, Status::Superseded);
    assert!(helm.kubectl(&["get", "configmap", "web-config"]).0, "helm's rollback restored it");

    // Wharf's rollback to 2: revision 4, from revision 2's manifest; helm agrees.
    let out = release::rollback(&conn, &ctx, "web", 2, &logs, &mut stop).await.unwrap();
    assert_eq!((out.operation, out.release.version), (Operation::Rollback { to: 2 }, 4));
    assert!(helm.kubectl(&["get", "configmap", "web-config"]).1.contains("NotFound"), "pruned again");
    let hist = helm.json(&["history", "web", "-o", "json"]);
    assert_eq!(hist[3]["description"], "Rollback to 2");
    assert_eq!(hist[3]["status"], "deployed");
    assert_eq!(hist[3]["chart"], "demo-1.1.0");
    let err = release::rollback(&conn, &ctx, "web", 9, &logs, &mut stop).await.unwrap_err();
    assert!(err.to_string().contains("has no revision 9 (it has 1, 2, 3, 4)"), "{err}");

    // A release helm installed: Wharf lists it and upgrades it.
    let chart_dir = helm.dir.path().join("hk");
    std::fs::create_dir_all(chart_dir.join("templates")).unwrap();
    std::fs::write(chart_dir.join("Chart.yaml"), "apiVersion: v2\nname: hk\nversion: 0.1.0\nappVersion: \"2.0\"\n")
        .unwrap();
    std::fs::write(chart_dir.join("values.yaml"), "msg: hello\n").unwrap();
    std::fs::write(
        chart_dir.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  msg: {{ .Values.msg | quote }}\n",
    )
    .unwrap();
    helm.ok(&["install", "other", chart_dir.to_str().unwrap(), "--set", "msg=from-helm"]);
    let (all, unreadable) = latest_releases(&conn, &ctx, None).await.unwrap();
    assert!(unreadable.is_empty(), "{unreadable:?}");
    let names: Vec<(&str, u32, Status)> = all.iter().map(|r| (r.name.as_str(), r.version, r.info.status)).collect();
    assert_eq!(names, [("other", 1, Status::Deployed), ("web", 4, Status::Deployed)]);
    let theirs = &all[0];
    assert_eq!((theirs.chart.name(), theirs.chart.app_version()), ("hk", "2.0"));
    assert_eq!(theirs.config, Map::from_iter([("msg".to_owned(), json!("from-helm"))]));
    let mut req = request("0.2.0", cm("other-cm", "from-wharf"), json!({"msg": "from-wharf"}));
    req.release = "other".into();
    req.chart = theirs.chart.clone();
    req.chart.metadata.insert("version".into(), json!("0.2.0"));
    req.hooks = Vec::new();
    release::install_or_upgrade(&conn, &ctx, req, &logs, &mut stop).await.unwrap();
    let hist = helm.json(&["history", "other", "-o", "json"]);
    assert_eq!(hist[1]["chart"], "hk-0.2.0");
    assert_eq!(hist[1]["status"], "deployed");
    assert_eq!(helm.json(&["get", "values", "other", "-o", "json"]), json!({"msg": "from-wharf"}));
    // …and helm upgrades it again after Wharf.
    helm.ok(&["upgrade", "other", chart_dir.to_str().unwrap()]);
    assert_eq!(history(&conn, &ctx, "other").await.unwrap().len(), 3);

    // Uninstall by Wharf: objects and every revision gone; helm lists only `other`.
    let out = release::uninstall(&conn, &ctx, "web", &logs, &mut stop).await.unwrap();
    assert_eq!(out.release.info.status, Status::Uninstalled);
    assert!(helm.kubectl(&["get", "deployment", "web"]).1.contains("NotFound"));
    let list = helm.json(&["list", "-A", "-o", "json"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["name"], "other");
    assert!(history(&conn, &ctx, "web").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_failing_hook_fails_the_revision_as_helm_marks_it() {
    let fake = KubeFake::start(Options::default()).await.unwrap();
    let policy = wharf_kube::Policy::new(&["127.0.0.1"]).unwrap();
    let conn = Connection::from_kubeconfig(&fake.kubeconfig(), None, &FileAccess::Refuse, &policy).unwrap();
    let ctx = Ctx { cluster: "test", conn: &conn, namespace: "default" };
    let logs = Lines::default();
    let (_stop_tx, mut stop) = tokio::sync::watch::channel::<Option<StopRequest>>(None);
    let mut req = request("1.0.0", cm("web-config", "one"), json!({}));
    req.hooks[1].manifest = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: web-migrate\n  annotations:\n    \
                             kube-fake.wharf.dev/fault: job-failed\nspec:\n  template:\n    spec:\n      containers: []"
        .into();
    req.hooks[1].delete_policies = vec!["hook-failed".into()];
    let err = release::install_or_upgrade(&conn, &ctx, req, &logs, &mut stop).await.unwrap_err();
    assert!(err.to_string().contains("the post-install hook Job web-migrate"), "{err}");
    assert!(err.to_string().contains("backoff limit"), "{err}");
    let revs = history(&conn, &ctx, "web").await.unwrap();
    assert_eq!(revs[0].info.status, Status::Failed);
    assert!(revs[0].info.description.starts_with("Release \"web\" failed:"), "{}", revs[0].info.description);
    assert_eq!(revs[0].hooks[1].last_run.phase, "Failed");
    // Another release's object is not taken.
    let mut other = request("1.0.0", cm("web-config", "two"), json!({}));
    other.release = "other".into();
    other.hooks = Vec::new();
    let err = release::install_or_upgrade(&conn, &ctx, other, &logs, &mut stop).await.unwrap_err();
    assert!(err.to_string().contains("ConfigMap default/web-config belongs to release `web`"), "{err}");
    assert!(history(&conn, &ctx, "other").await.unwrap().is_empty(), "nothing written");
    let err = release::install_or_upgrade(&conn, &ctx, request("1.0.0", "kind: [".into(), json!({})), &logs, &mut stop)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("the rendered manifest"), "{err}");
    assert_eq!(
        history(&conn, &ctx, "web").await.unwrap().len(),
        1,
        "a manifest that does not parse writes no revision"
    );
}

/// The whole `chart-deploy` path on the Deployer seam: `helm create`'s starter chart,
/// packaged by helm, rendered by Wharf and installed; helm upgrading it with the same
/// chart and values stores the same manifest and hooks, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_archive_installs_as_helm_would_install_it() {
    use wharf_executor::deploy::{ClusterLogin, Deployer, ReleaseExit, ReleaseSpec};
    let Some(tools) = wharf_testenv::k8s_tools_or_fail_in_ci() else { return };
    let fake = KubeFake::start(Options::default()).await.unwrap();
    let helm = Helm { bin: tools.helm.clone(), kubectl: tools.kubectl.clone(), dir: tempfile::tempdir().unwrap() };
    fake.write_kubeconfig(&helm.dir.path().join("kubeconfig")).unwrap();
    let d = helm.dir.path().to_str().unwrap().to_owned();
    helm.ok(&["create", &format!("{d}/starter")]);
    helm.ok(&["package", &format!("{d}/starter"), "-d", &d]);
    let archive = std::fs::read(helm.dir.path().join("starter-0.1.0.tgz")).unwrap();
    let values = json!({"replicaCount": 2, "podLabels": {"team": "web"}});
    std::fs::write(helm.dir.path().join("values.json"), values.to_string()).unwrap();

    let deployer = wharf_kube::deploy::KubeDeployer::new(wharf_kube::Policy::new(&["127.0.0.1"]).unwrap());
    let spec = ReleaseSpec {
        run: "p#1".into(),
        stage: "Deploy".into(),
        task: "install".into(),
        cluster: ClusterLogin { name: "test".into(), kubeconfig: fake.kubeconfig(), context: None },
        namespace: "default".into(),
        release: "web".into(),
        chart: archive.clone(),
        source: "local/charts/starter".into(),
        values: values.as_object().cloned().unwrap(),
    };
    let logs = std::sync::Arc::new(Lines::default());
    let (_stop_tx, stop) = tokio::sync::watch::channel::<Option<StopRequest>>(None);
    let exit = deployer.release(spec.clone(), logs.clone(), stop.clone()).await.unwrap();
    let ReleaseExit::Released(done) = exit else { panic!("{exit:?}") };
    assert_eq!((done.revision, done.status.as_str()), (1, "deployed"));
    let kinds: Vec<&str> = done.applied.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(kinds, ["ServiceAccount", "Service", "Deployment"], "Helm's install order");
    assert!(done.notes.contains("kubectl --namespace default port-forward"), "{}", done.notes);
    let (_, replicas) = helm.kubectl(&["get", "deployment", "web-starter", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(replicas, "2");

    helm.ok(&["upgrade", "web", &format!("{d}/starter-0.1.0.tgz"), "-f", &format!("{d}/values.json")]);
    let ours = helm.ok(&["get", "manifest", "web", "--revision", "1"]);
    let theirs = helm.ok(&["get", "manifest", "web", "--revision", "2"]);
    assert_eq!(ours, theirs);
    let ours = helm.ok(&["get", "hooks", "web", "--revision", "1"]);
    assert_eq!(ours, helm.ok(&["get", "hooks", "web", "--revision", "2"]));
    assert!(ours.contains("web-starter-test-connection"), "{ours}");
    assert_eq!(helm.json(&["get", "values", "web", "--revision", "1", "-o", "json"]), values);
    // The chart as each stored it: the same metadata, templates, values and files.
    let policy = wharf_kube::Policy::new(&["127.0.0.1"]).unwrap();
    let conn = Connection::from_kubeconfig(&fake.kubeconfig(), None, &FileAccess::Refuse, &policy).unwrap();
    let ctx = Ctx { cluster: "test", conn: &conn, namespace: "default" };
    let revs = history(&conn, &ctx, "web").await.unwrap();
    let (ours, theirs) = (&revs[0].chart, &revs[1].chart);
    // (Helm 4 adds each file's `modtime` from the archive; Wharf leaves it out.)
    let files = |files: &[FileRecord]| -> Vec<(String, String)> {
        files.iter().map(|f| (f.name.clone(), f.data.clone())).collect()
    };
    assert_eq!(ours.metadata, theirs.metadata);
    assert_eq!(files(&ours.templates), files(&theirs.templates));
    assert_eq!(ours.values, theirs.values);
    let as_files = |v: &Value| files(&serde_json::from_value::<Vec<FileRecord>>(v.clone()).unwrap());
    assert_eq!(as_files(&ours.files), as_files(&theirs.files));
    assert_eq!(revs[0].config, revs[1].config);

    // Wharf upgrades after helm: revision 3, and the source is remembered.
    let ReleaseExit::Released(done) = deployer.release(spec, logs, stop).await.unwrap() else { panic!() };
    assert_eq!(done.revision, 3);
    assert_eq!(release::source(&conn, &ctx, "web").await.unwrap().as_deref(), Some("local/charts/starter"));
    let statuses: Vec<String> = helm
        .json(&["history", "web", "-o", "json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].to_string())
        .collect();
    assert_eq!(statuses, ["\"superseded\"", "\"superseded\"", "\"deployed\""]);
}

/// A stop during the rollout wait marks the revision `failed` (as Helm marks an
/// interrupted one) and the next upgrade goes on from there; upgrades past ten revisions
/// keep ten, as Helm's `--history-max 10`; names that are no release names are not found.
#[tokio::test]
async fn a_stop_marks_the_revision_failed_and_history_keeps_ten() {
    let fake = KubeFake::start(Options { rollout_delay: std::time::Duration::from_secs(30), ..Options::default() })
        .await
        .unwrap();
    let policy = wharf_kube::Policy::new(&["127.0.0.1"]).unwrap();
    let conn = Connection::from_kubeconfig(&fake.kubeconfig(), None, &FileAccess::Refuse, &policy).unwrap();
    let ctx = Ctx { cluster: "test", conn: &conn, namespace: "default" };
    let logs = Lines::default();
    let (stop_tx, mut stop) = tokio::sync::watch::channel::<Option<StopRequest>>(None);
    let mut req = request("1.0.0", deployment("nginx:1"), json!({}));
    req.hooks = Vec::new();
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let request = StopRequest { reason: wharf_executor::StopReason::Stopped, grace: std::time::Duration::ZERO };
        stop_tx.send(Some(request)).unwrap();
        stop_tx
    });
    let out = release::install_or_upgrade(&conn, &ctx, req, &logs, &mut stop).await.unwrap();
    assert_eq!(out.stopped, Some(wharf_executor::StopReason::Stopped));
    assert_eq!(out.release.info.status, Status::Failed);
    let revs = history(&conn, &ctx, "web").await.unwrap();
    assert_eq!(revs[0].info.status, Status::Failed);
    assert!(revs[0].info.description.contains("stopped"), "{}", revs[0].info.description);
    drop(stopper.await.unwrap());

    let (_tx, mut stop) = tokio::sync::watch::channel::<Option<StopRequest>>(None);
    for i in 2..=12 {
        let mut req = request(&format!("1.0.{i}"), cm("web-config", &i.to_string()), json!({}));
        req.hooks = Vec::new();
        let out = release::install_or_upgrade(&conn, &ctx, req, &logs, &mut stop).await.unwrap();
        assert_eq!((out.release.version, out.operation), (i, Operation::Upgrade));
    }
    let revs = history(&conn, &ctx, "web").await.unwrap();
    let versions: Vec<u32> = revs.iter().map(|r| r.version).collect();
    assert_eq!(versions, (3..=12).collect::<Vec<_>>());
    assert_eq!(revs.last().unwrap().info.status, Status::Deployed);
    assert!(history(&conn, &ctx, "web,owner!=helm").await.unwrap().is_empty());
    assert!(
        release::uninstall(&conn, &ctx, "Bad_Name", &logs, &mut stop)
            .await
            .unwrap_err()
            .to_string()
            .contains("not found")
    );
}
