//! Helm releases (template instances) over loopback HTTP: a `chart-deploy` task pulls a
//! chart `helm push` stored in the real registry and installs it into the Kubernetes test
//! double; the releases API lists it beside a release `helm install` made, shows its
//! history, upgrades it to another version pulled from where it came from, rolls it back
//! and uninstalls it — with the real helm checking what Wharf wrote. Who may see and
//! act is the clusters' rule.

mod common;

use common::task_of;
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}{}x{nanos}", std::process::id())
}

/// `helm` with its own home and the fake's kubeconfig; fails the test when it fails.
fn helm(tools: &wharf_testenv::K8sTools, home: &Path, args: &[&str], stdin: &str) -> String {
    let mut child = std::process::Command::new(&tools.helm)
        .args(args)
        .env("HOME", home)
        .env("KUBECONFIG", home.join("kubeconfig"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .current_dir(home)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "helm {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const DEPLOY: &str = "name: deploy-chart
stages:
  - name: Deploy
    tasks:
      - name: install
        type: chart-deploy
        release: web
        chart: starter
        version: 0.1.0
        registry: local
        workspace: WORKSPACE
        cluster: prod
        namespace: default
        values:
          replicaCount: 2
          podLabels: { build: \"b${BUILD_ID}\" }
";

fn names(list: &Value) -> Vec<(String, u64, String)> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["revision"].as_u64().unwrap(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_deploy_installs_and_the_releases_api_upgrades_rolls_back_and_uninstalls() {
    let Some(env) = wharf_testenv::containers_or_fail_in_ci() else { return };
    let Some(tools) = wharf_testenv::k8s_tools_or_fail_in_ci() else { return };
    let fake = wharf_kube_fake::KubeFake::start(wharf_kube_fake::Options::default()).await.unwrap();
    let s = common::start().await;
    let workspace = unique("charts");
    s.post("/clusters", json!({ "name": "prod", "kubeconfig": fake.kubeconfig() })).await.expect(201);
    let registry = json!({ "name": "local", "url": env.registry_url, "insecure": true, "username": env.registry_user,
                           "password": env.registry_password, "workspaces": [workspace] });
    s.post("/registries", registry).await.expect(201);

    // The starter chart, versions 0.1.0 and 0.2.0, pushed by helm.
    let home = s.dir.path().join("helm");
    std::fs::create_dir_all(&home).unwrap();
    fake.write_kubeconfig(&home.join("kubeconfig")).unwrap();
    let dir = home.join("starter");
    helm(&tools, &home, &["create", dir.to_str().unwrap()], "");
    helm(
        &tools,
        &home,
        &["registry", "login", &env.registry, "--plain-http", "-u", &env.registry_user, "--password-stdin"],
        &env.registry_password,
    );
    for version in ["0.1.0", "0.2.0"] {
        helm(
            &tools,
            &home,
            &["package", dir.to_str().unwrap(), "--version", version, "--app-version", &format!("v{version}")],
            "",
        );
        let archive = format!("starter-{version}.tgz");
        helm(&tools, &home, &["push", &archive, &format!("oci://{}/{workspace}", env.registry), "--plain-http"], "");
    }

    // The task installs revision 1, values substituted.
    s.create(&DEPLOY.replace("WORKSPACE", &workspace)).await;
    let run = common::id_of(&s.start_run("deploy-chart", json!({})).await);
    let done = s.wait_run(run).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let outputs = &task_of(&done, "install").unwrap()["outputs"];
    assert_eq!((outputs["release"].as_str(), outputs["revision"].as_str()), (Some("web"), Some("1")), "{outputs}");
    assert_eq!(outputs["status"], "deployed");
    assert!(outputs["applied"].as_str().unwrap().contains("Deployment/default/web-starter@"), "{outputs}");
    let deployment = common::kube_get(&fake, "/apis/apps/v1/namespaces/default/deployments/web-starter").await.unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["spec"]["template"]["metadata"]["labels"]["build"], "b1");
    let listed = helm(&tools, &home, &["list", "-A", "-o", "json"], "");
    assert!(listed.contains(r#""name":"web""#) && listed.contains(r#""chart":"starter-0.1.0""#), "{listed}");

    // A release helm installed, listed beside it.
    helm(&tools, &home, &["install", "other", dir.to_str().unwrap(), "--set", "replicaCount=1"], "");
    let list = s.get("/clusters/prod/releases").await.expect(200);
    assert_eq!(names(&list.json), [("other".into(), 1, "deployed".into()), ("web".into(), 1, "deployed".into())]);
    let web = &list.json["items"][1];
    assert_eq!(
        (web["chart"].as_str(), web["version"].as_str(), web["app_version"].as_str()),
        (Some("starter"), Some("0.1.0"), Some("v0.1.0"))
    );
    assert_eq!(web["namespace"], "default");
    assert_eq!(web["description"], "Install complete");
    assert!(web["updated"].as_str().unwrap().starts_with("20"), "{web}");
    assert_eq!(s.get("/clusters/prod/releases?namespace=kube-system").await.expect(200).json["total"], 0);

    let shown = s.get("/clusters/prod/namespaces/default/releases/web").await.expect(200);
    assert_eq!(shown.json["source"], format!("local/{workspace}/starter"));
    assert_eq!(shown.json["values"], json!({"replicaCount": 2, "podLabels": {"build": "b1"}}));
    assert_eq!(shown.json["history"].as_array().unwrap().len(), 1);
    assert!(shown.json["notes"].as_str().unwrap().contains("port-forward"));
    s.get("/clusters/prod/namespaces/default/releases/nope").await.expect_error(404);

    // Upgrade: 0.2.0 pulled from where it came from, the values kept.
    let up =
        s.post("/clusters/prod/namespaces/default/releases/web/upgrade", json!({"version": "0.2.0"})).await.expect(200);
    assert_eq!((up.json["revision"].as_u64(), up.json["status"].as_str()), (Some(2), Some("deployed")), "{}", up.text);
    let history = helm(&tools, &home, &["history", "web", "-o", "json"], "");
    let history: Value = serde_json::from_str(&history).unwrap();
    assert_eq!(history[1]["chart"], "starter-0.2.0");
    assert_eq!(history[1]["app_version"], "v0.2.0");
    assert_eq!(history[0]["status"], "superseded");
    let answer = s
        .post("/clusters/prod/namespaces/default/releases/web/upgrade", json!({"version": "9.9.9"}))
        .await
        .expect_error(422);
    assert!(answer.error_text().contains("9.9.9"), "{}", answer.text);
    // A release only helm made does not say where its chart is: the caller must.
    let answer = s
        .post("/clusters/prod/namespaces/default/releases/other/upgrade", json!({"version": "0.2.0"}))
        .await
        .expect_error(422);
    assert!(answer.error_text().contains("give `registry` and `workspace`"), "{}", answer.text);
    let up = s
        .post(
            "/clusters/prod/namespaces/default/releases/other/upgrade",
            json!({"version": "0.2.0", "registry": "local", "workspace": workspace, "values": {}}),
        )
        .await
        .expect(200);
    assert_eq!(up.json["revision"], 2);

    // Rollback: revision 3 from revision 1; helm agrees.
    let back =
        s.post("/clusters/prod/namespaces/default/releases/web/rollback", json!({"revision": 1})).await.expect(200);
    assert_eq!(back.json["revision"], 3);
    let history: Value = serde_json::from_str(&helm(&tools, &home, &["history", "web", "-o", "json"], "")).unwrap();
    assert_eq!(
        (history[2]["description"].as_str(), history[2]["chart"].as_str()),
        (Some("Rollback to 1"), Some("starter-0.1.0"))
    );
    let answer = s
        .post("/clusters/prod/namespaces/default/releases/web/rollback", json!({"revision": 7}))
        .await
        .expect_error(422);
    assert!(answer.error_text().contains("has no revision 7 (it has 1, 2, 3)"), "{}", answer.text);
    let shown = s.get("/clusters/prod/namespaces/default/releases/web").await.expect(200);
    let statuses: Vec<&str> =
        shown.json["history"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["superseded", "superseded", "deployed"]);

    // Who may: the clusters' rule (a user of another project sees no cluster).
    let user = s.user("ulf", "user", &["web"]).await;
    user.get("/clusters/prod/releases").await.expect_error(404);
    user.call(reqwest::Method::DELETE, "/clusters/prod/namespaces/default/releases/web", None).await.expect_error(404);

    // Uninstall: objects and revisions gone; helm lists only `other`.
    let gone = s.delete("/clusters/prod/namespaces/default/releases/web").await.expect(200);
    assert!(
        gone.json["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o.as_str().unwrap().starts_with("Deployment/default/web-starter")),
        "{}",
        gone.text
    );
    assert!(common::kube_get(&fake, "/apis/apps/v1/namespaces/default/deployments/web-starter").await.is_none());
    let listed = helm(&tools, &home, &["list", "-A", "-o", "json"], "");
    assert!(!listed.contains(r#""name":"web""#) && listed.contains(r#""name":"other""#), "{listed}");
    s.delete("/clusters/prod/namespaces/default/releases/web").await.expect_error(404);
}
