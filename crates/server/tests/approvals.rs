//! Approvals over the API: a run waits at an `approval` task (`waiting`), the people
//! allowed see it in `GET /approvals`, the rules hold (not an approver 403, the
//! starter may not approve when more than one approval is needed, twice 409, not
//! waiting 409), a rejection fails the run with the comment, every decision is stored
//! and audited, and a restarted server keeps the run waiting.

mod common;

use common::{TestServer, id_of, task_of};
use reqwest::Method;
use serde_json::{Value, json};

const PIPELINE: &str = "name: gated
stages:
  - name: Build
    tasks:
      - {name: build, type: script, script: 'echo built'}
  - name: Review
    tasks:
      - name: sign
        type: approval
        approvers: [ann, 'role:manager']
        required: 2
        message: 'Ship build ${BUILD_ID}?'
        timeout: 1h
  - name: Release
    tasks:
      - {name: release, type: script, script: 'echo released'}
";

async fn wait_waiting(s: &TestServer, run: i64) -> Value {
    s.wait_run_until(run, "waiting at sign", |r| task_of(r, "sign").is_some_and(|t| t["status"] == "waiting")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_approvals_from_allowed_people_let_the_run_go_on() {
    let s = common::start().await;
    let ann = s.user("ann", "user", &["shop"]).await;
    let bob = s.user("bob", "manager", &["shop"]).await;
    let cid = s.user("cid", "manager", &["shop"]).await;
    let eve = s.user("eve", "user", &["shop"]).await;
    // bob creates and starts it; ann (named) and cid (`role:manager`) approve.
    let p = bob.send_yaml(Method::POST, "/pipelines?project=shop", PIPELINE).await.expect(201).json;
    let run = id_of(&bob.post(&format!("/pipelines/{}/runs", id_of(&p)), json!({})).await.expect(201).json);
    let waiting = wait_waiting(&s, run).await;
    assert_eq!(waiting["status"], "running");
    let sign = task_of(&waiting, "sign").unwrap();
    assert_eq!(sign["approval"]["message"], "Ship build 1?");
    assert_eq!(sign["approval"]["required"], 2);

    // The waiting lists: ann, bob, cid see it (ann cannot see bob's pipeline, but she is
    // a member of its project and a named approver); eve does not.
    for (who, sees) in [(&ann, true), (&bob, true), (&cid, true), (&eve, false)] {
        let list = who.get("/approvals").await.expect(200).json;
        assert_eq!(list["total"].as_u64() == Some(1), sees, "{}: {list}", who.name);
    }
    let listed = &ann.get("/approvals").await.json["items"][0];
    assert_eq!((listed["run_id"].as_i64(), listed["task"].as_str()), (Some(run), Some("sign")));
    assert_eq!((listed["message"].as_str(), listed["started_by"].as_str()), (Some("Ship build 1?"), Some("bob")));

    let approve = format!("/runs/{run}/tasks/sign/approve");
    let err = eve.post(&approve, json!({})).await.expect_error(403).error_text();
    assert!(err.contains("`eve` is not an approver"), "{err}");
    let err = bob.post(&approve, json!({ "comment": "mine" })).await.expect_error(403).error_text();
    assert!(err.contains("`bob` started this run and may not approve it"), "{err}");
    let answer = ann.post(&approve, json!({ "comment": "looks fine" })).await.expect(200).json;
    assert_eq!((answer["state"].as_str(), answer["decisions"].as_array().unwrap().len()), (Some("waiting"), 1));
    let err = ann.post(&approve, json!({})).await.expect_error(409).error_text();
    assert!(err.contains("`ann` already decided"), "{err}");
    // The decision so far shows on the run while it waits.
    let shown = s.run(run).await;
    assert_eq!(task_of(&shown, "sign").unwrap()["approval"]["decisions"][0]["user"], "ann");
    assert_eq!(task_of(&shown, "sign").unwrap()["status"], "waiting");
    // Administrators may always decide.
    let answer = s.post(&approve, json!({})).await.expect(200).json;
    assert_eq!(answer["state"], "approved");

    let done = s.wait_run(run).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let decisions = &task_of(&done, "sign").unwrap()["approval"]["decisions"];
    assert_eq!(decisions[0]["comment"], "looks fine");
    assert_eq!(decisions[1]["user"], "admin");
    let err = s.post(&approve, json!({})).await.expect_error(409).error_text();
    assert!(err.contains("is not waiting for a decision (it is succeeded)"), "{err}");
    assert_eq!(s.post(&format!("/runs/{run}/tasks/build/approve"), json!({})).await.status, 404);
    assert_eq!(s.get("/approvals").await.json["total"], 0);

    // Stored and audited.
    let stored = s.server.state.store.decisions(run, "sign").await.unwrap();
    assert_eq!(stored.iter().map(|d| d.user.as_str()).collect::<Vec<_>>(), ["ann", "admin"]);
    let audit = s.get("/audit?actor=ann").await.json;
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"POST /runs/{id}/tasks/{task}/approve"), "{actions:?}");
    let audit = s.get("/audit?actor=eve").await.json;
    assert!(audit["items"].as_array().unwrap().iter().any(|e| e["outcome"] == 403), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_fails_the_run_with_the_comment() {
    let s = common::start().await;
    let ann = s.user("ann", "user", &["shop"]).await;
    let bob = s.user("bob", "manager", &["shop"]).await;
    let p = bob.send_yaml(Method::POST, "/pipelines?project=shop", PIPELINE).await.expect(201).json;
    let run = id_of(&bob.post(&format!("/pipelines/{}/runs", id_of(&p)), json!({})).await.expect(201).json);
    wait_waiting(&s, run).await;
    let answer =
        ann.post(&format!("/runs/{run}/tasks/sign/reject"), json!({ "comment": "not on a Friday" })).await.expect(200);
    assert_eq!(answer.json["state"], "rejected");
    let done = s.wait_run(run).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(task_of(&done, "sign").unwrap()["reason"], "rejected by ann: not on a Friday");
    assert_eq!(task_of(&done, "release").unwrap()["status"], "skipped");
    let long = "x".repeat(2001);
    let answer = s.post(&format!("/runs/{run}/tasks/sign/reject"), json!({ "comment": long })).await;
    assert_eq!(answer.status, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_keeps_the_run_waiting_and_takes_the_decision() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let s = common::start_in(dir).await;
    let yaml = PIPELINE.replace("required: 2", "required: 1");
    let p = s.send_yaml(Method::POST, "/pipelines", &yaml).await.expect(201);
    let run = id_of(&s.start_run(id_of(&p.json), json!({})).await);
    wait_waiting(&s, run).await;
    let TestServer { server, dir, .. } = s;
    server.shutdown().await;

    let s = common::start_in(dir).await;
    let again = wait_waiting(&s, run).await;
    assert_eq!(again["status"], "running", "{again:#}");
    assert_eq!(task_of(&again, "build").unwrap()["status"], "succeeded");
    assert_eq!(s.get("/approvals").await.json["total"], 1);
    s.post(&format!("/runs/{run}/tasks/sign/approve"), json!({ "comment": "after the restart" })).await.expect(200);
    let done = s.wait_run(run).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let log = s.get(&format!("/runs/{run}/tasks/sign/log")).await.text;
    assert!(log.contains("still waiting, after a server restart"), "{log}");
    drop(data);
}

/// The canary's step it waits at, when its task waits.
fn canary_waiting_at(run: &Value) -> Option<u64> {
    let task = task_of(run, "canary")?;
    (task["status"] == "waiting").then(|| task["approval"]["canary"]["percent"].as_u64()).flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_asks_between_steps_keeps_asking_after_a_restart_and_a_rejection_rolls_it_back() {
    let fake = wharf_kube_fake::KubeFake::start(wharf_kube_fake::Options::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = common::start_in(dir).await;
    s.post("/clusters", json!({ "name": "prod", "kubeconfig": fake.kubeconfig() })).await.expect(201);
    // The stable version, deployed around the server.
    let policy = wharf_kube::Policy::new(&["127.0.0.1"]).unwrap();
    let stable = wharf_executor::deploy::DeploySpec {
        run: "setup#1".into(),
        stage: "Setup".into(),
        task: "setup".into(),
        file: "web.yaml".into(),
        manifests: "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 4
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: 'reg.example/web:1'}]
"
        .into(),
        cluster: wharf_executor::deploy::ClusterLogin {
            name: "prod".into(),
            kubeconfig: fake.kubeconfig(),
            context: None,
        },
        namespace: "default".into(),
    };
    let (_tx, rx) = tokio::sync::watch::channel(None);
    let deployer = wharf_kube::deploy::KubeDeployer::new(policy);
    use wharf_executor::deploy::Deployer;
    deployer.deploy(stable, std::sync::Arc::new(common::NoLogs), rx).await.unwrap();
    let yaml = "name: rollout
stages:
  - name: Release
    tasks:
      - {name: canary, type: canary, deployment: web, cluster: prod, namespace: default, image: 'reg.example/web:2', \
         steps: [25, 50, 100], approval: true}
notify:
  - on: [waiting]
    channel: canary-steps
";
    let p = s.send_yaml(Method::POST, "/pipelines", yaml).await.expect(201);
    let run = id_of(&s.start_run(id_of(&p.json), json!({})).await);
    let at = s.wait_run_until(run, "waiting at 25%", |r| canary_waiting_at(r) == Some(25)).await;
    assert_eq!(task_of(&at, "canary").unwrap()["approval"]["message"], "canary `canary` is at 25%: go on to 50%?");
    let listed = s.get("/approvals").await.json;
    assert_eq!((listed["total"].as_u64(), listed["items"][0]["task"].as_str()), (Some(1), Some("canary")), "{listed}");
    // Each step's wait is announced (here: a message on a channel nobody listens to).
    let announced =
        |r: &Value| r["notifications"].as_array().map_or(0, |a| a.iter().filter(|n| n["event"] == "waiting").count());
    s.wait_run_until(run, "the wait at 25% announced", |r| announced(r) == 1).await;

    // A restart: the canary goes on waiting at the same step.
    let TestServer { server, dir, .. } = s;
    server.shutdown().await;
    let s = common::start_in(dir).await;
    s.wait_run_until(run, "still waiting at 25%", |r| canary_waiting_at(r) == Some(25)).await;
    let deployment = |name: &'static str| {
        let fake = &fake;
        async move { common::kube_get(fake, &format!("/apis/apps/v1/namespaces/default/deployments/{name}")).await }
    };
    assert_eq!(deployment("web-canary").await.unwrap()["spec"]["replicas"], 1);
    // A project manager is no approver of a canary step; an administrator decides.
    let ann = s.user("ann", "manager", &["admin"]).await;
    ann.post(&format!("/runs/{run}/tasks/canary/approve"), json!({})).await.expect_error(403);
    s.post(&format!("/runs/{run}/tasks/canary/approve"), json!({ "comment": "25 looks fine" })).await.expect(200);
    s.wait_run_until(run, "waiting at 50%", |r| canary_waiting_at(r) == Some(50)).await;
    assert_eq!(deployment("web-canary").await.unwrap()["spec"]["replicas"], 2);
    s.wait_run_until(run, "the wait at 50% announced", |r| announced(r) == 2).await;
    s.post(&format!("/runs/{run}/tasks/canary/reject"), json!({ "comment": "error rate up" })).await.expect(200);
    let done = s.wait_run(run).await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let canary = task_of(&done, "canary").unwrap();
    assert_eq!(canary["reason"], "rejected at 50% by admin: error rate up", "{canary:#}");
    // Rolled back: the stable Deployment as it was, the canary gone.
    let web = deployment("web").await.unwrap();
    assert_eq!(web["spec"]["replicas"], 4);
    assert_eq!(web["spec"]["template"]["spec"]["containers"][0]["image"], "reg.example/web:1");
    assert!(deployment("web-canary").await.is_none());
    s.post(&format!("/runs/{run}/tasks/canary/approve"), json!({})).await.expect_error(409);
}
