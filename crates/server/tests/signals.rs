//! Stage triggers and channels over the API: a stage waits (`waiting`) for its hook URL
//! (token shown once, stored hashed), the call's values become variables; a stage's
//! outputs sent to a channel reach a stage waiting for it and start the pipeline whose
//! trigger is the channel, with them as parameters; a restarted server keeps the stage
//! waiting; a wait times out on its own clock; loops of channels are refused at save.

mod common;

use common::{TestServer, id_of, task_of};
use reqwest::Method;
use serde_json::{Value, json};

const HOOKED: &str = "name: hooked
stages:
  - name: Build
    tasks:
      - {name: build, type: script, script: 'echo built'}
  - name: Release
    wait: {hook: true, params: [VERSION], timeout: 1h}
    tasks:
      - {name: release, type: script, script: 'echo \"releasing ${VERSION}\"'}
";

fn stage_of<'a>(run: &'a Value, name: &str) -> Option<&'a Value> {
    run["stages"].as_array()?.iter().find(|s| s["name"] == name)
}

async fn wait_stage_waiting(s: &TestServer, run: i64, stage: &str) -> Value {
    s.wait_run_until(run, &format!("waiting at {stage}"), |r| {
        stage_of(r, stage).is_some_and(|st| st["status"] == "waiting")
    })
    .await
}

/// `POST /hooks/stages/{token}` with a JSON body, as a caller outside Wharf does.
async fn call_hook(s: &TestServer, url: &str, body: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(s.url(url).replace("/api/v1", ""))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_waits_for_its_hook_url_and_takes_its_values() {
    let s = common::start().await;
    let p = s.create(HOOKED).await;
    let (status, _) = call_hook(&s, "/hooks/stages/wharf_nothing", "{}").await;
    assert_eq!(status, 404);
    let err = s.post_empty("/pipelines/hooked/stages/Build/hook").await.expect_error(409).error_text();
    assert!(err.contains("does not wait for its hook"), "{err}");
    assert_eq!(s.post_empty("/pipelines/hooked/stages/Nope/hook").await.status, 404);
    let hook = s.post_empty("/pipelines/hooked/stages/Release/hook").await.expect(201).json;
    let url = hook["url"].as_str().unwrap().to_owned();
    let token = hook["token"].as_str().unwrap().to_owned();
    assert_eq!(url, format!("/hooks/stages/{token}"));
    // Stored hashed: the token itself finds nothing in the store.
    assert!(s.server.state.store.stage_hook(&token).await.unwrap().is_none());
    let (status, answer) = call_hook(&s, &url, "{}").await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer.to_string().contains("no run of pipeline `hooked` is waiting at stage `Release`"), "{answer}");

    let run = id_of(&s.start_run(id_of(&p), json!({})).await);
    let waiting = wait_stage_waiting(&s, run, "Release").await;
    assert_eq!(waiting["status"], "running");
    assert_eq!(task_of(&waiting, "build").unwrap()["status"], "succeeded");
    assert_eq!(task_of(&waiting, "release").unwrap()["status"], "queued");
    let (status, _) = call_hook(&s, &url, "[1, 2]").await;
    assert_eq!(status, 422);
    let (status, answer) = call_hook(&s, &url, r#"{"VERSION": "1.2.3", "other": 7}"#).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer, json!({"runs": [{"pipeline": "hooked", "number": 1, "stage": "Release"}]}));
    let done = s.wait_run(run).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let log = s.get(&format!("/runs/{run}/tasks/release/log")).await.text;
    assert!(log.contains("releasing 1.2.3"), "{log}");
    let whole = s.get(&format!("/runs/{run}/log")).await.text;
    assert!(whole.contains("stage `Release` started by hook"), "{whole}");

    // A new token replaces the old one.
    let again = s.post_empty("/pipelines/hooked/stages/Release/hook").await.expect(201).json;
    assert_ne!(again["token"], hook["token"]);
    let (status, _) = call_hook(&s, &url, "{}").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_times_out_on_its_own_clock() {
    let s = common::start().await;
    let yaml = HOOKED.replace("timeout: 1h", "timeout: 1s");
    let p = s.create(&yaml).await;
    let run = id_of(&s.start_run(id_of(&p), json!({})).await);
    let done = s.wait_run(run).await;
    assert_eq!(done["status"], "timed_out", "{done:#}");
    let release = stage_of(&done, "Release").unwrap();
    assert_eq!(release["status"], "timed_out");
    assert!(release["reason"].as_str().unwrap().contains("within its wait timeout of 1s"), "{release}");
    assert_eq!(task_of(&done, "release").unwrap()["status"], "skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_sends_its_outputs_to_a_channel_that_starts_a_pipeline_and_wakes_a_stage() {
    let s = common::start().await;
    s.create(
        "name: consumer
parameters:
  - {name: IMAGE, default: none}
triggers:
  - channel: images
stages:
  - name: Deploy
    tasks:
      - {name: deploy, type: script, script: 'echo \"deploying ${IMAGE}\"'}
",
    )
    .await;
    let waiter = s
        .create(
            "name: waiter
stages:
  - name: Deploy
    wait: {channels: [images, tests], for: all, params: [IMAGE, PASSED]}
    tasks:
      - {name: roll, type: script, script: 'echo \"rolling ${IMAGE} after ${PASSED}\"'}
",
        )
        .await;
    let producer = s
        .create(
            "name: producer
stages:
  - name: Build
    send: images
    tasks:
      - name: build
        type: script
        script: 'echo IMAGE=app:7 >> \"$WHARF_OUTPUT\"'
  - name: Test
    send: tests
    tasks:
      - {name: test, type: script, script: 'echo PASSED=yes >> \"$WHARF_OUTPUT\"'}
",
        )
        .await;
    let waiting = id_of(&s.start_run(id_of(&waiter), json!({})).await);
    wait_stage_waiting(&s, waiting, "Deploy").await;
    let produced = id_of(&s.start_run(id_of(&producer), json!({})).await);
    let done = s.wait_run(produced).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let log = s.get(&format!("/runs/{produced}/log")).await.text;
    assert!(
        log.contains(
            "sent 1 value(s) to channel `images`: waiting stages told: waiter#1 Deploy; runs started: consumer#1"
        ),
        "{log}"
    );

    // `for: all`: the waiter went on only after both channels spoke.
    let waited = s.wait_run(waiting).await;
    assert_eq!(waited["status"], "succeeded", "{waited:#}");
    let roll = s.get(&format!("/runs/{waiting}/tasks/roll/log")).await.text;
    assert!(roll.contains("rolling app:7 after yes"), "{roll}");

    // The consumer's run: started by the message, its values as parameters.
    let runs = s.get("/pipelines/consumer/runs").await.expect(200).json;
    let first = &runs["items"][0];
    let consumed = s.wait_run(id_of(first)).await;
    assert_eq!(consumed["status"], "succeeded", "{consumed:#}");
    assert_eq!(consumed["cause"], json!({"kind": "channel", "channel": "images", "pipeline": "producer", "number": 1}));
    assert_eq!(consumed["parameters"], json!({"IMAGE": "app:7"}));
    let deploy = s.get(&format!("/runs/{}/tasks/deploy/log", id_of(first))).await.text;
    assert!(deploy.contains("deploying app:7"), "{deploy}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_keeps_the_stage_waiting_and_takes_the_signal() {
    let dir = tempfile::tempdir().unwrap();
    let s = common::start_in(dir).await;
    let p = s.create(HOOKED).await;
    let url = s.post_empty("/pipelines/hooked/stages/Release/hook").await.expect(201).json["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = id_of(&s.start_run(id_of(&p), json!({})).await);
    wait_stage_waiting(&s, run, "Release").await;
    let TestServer { server, dir, .. } = s;
    server.shutdown().await;

    let s = common::start_in(dir).await;
    let again = wait_stage_waiting(&s, run, "Release").await;
    assert_eq!(again["status"], "running", "{again:#}");
    let (status, answer) = call_hook(&s, &url, r#"{"VERSION": "after-restart"}"#).await;
    assert_eq!(status, 202, "{answer}");
    let done = s.wait_run(run).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let log = s.get(&format!("/runs/{run}/tasks/release/log")).await.text;
    assert!(log.contains("releasing after-restart"), "{log}");
    let whole = s.get(&format!("/runs/{run}/log")).await.text;
    assert!(whole.contains("still waiting, after a server restart"), "{whole}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loops_of_channels_are_refused_at_save() {
    let s = common::start().await;
    let one = "name: one
triggers:
  - channel: ping
stages:
  - name: S
    send: pong
    tasks:
      - {name: a, type: script, script: 'true'}
";
    s.create(one).await;
    let two = "name: two
triggers:
  - channel: pong
send: ping
stages:
  - name: S
    tasks:
      - {name: b, type: script, script: 'true'}
";
    let err = s.send_yaml(Method::POST, "/pipelines", two).await.expect_error(422).error_text();
    assert!(
        err.contains("its channels would make a loop, each run starting the next for ever: two → one → two"),
        "{err}"
    );
    let err = s
        .send_yaml(Method::POST, "/pipelines", &two.replace("send: ping", "send: pong"))
        .await
        .expect_error(422)
        .error_text();
    assert!(err.contains("two → two"), "{err}");
    // Without the loop it saves; making one by a new version is refused as well.
    s.send_yaml(Method::POST, "/pipelines", &two.replace("send: ping", "send: other")).await.expect(201);
    let err = s.send_yaml(Method::PUT, "/pipelines/two", two).await.expect_error(422).error_text();
    assert!(err.contains("two → one → two"), "{err}");
    // Another project's pipelines are not in the loop: channels belong to a project.
    let bob = s.user("bob", "manager", &["elsewhere"]).await;
    // `three` would close a loop with `one` of project admin, were channels shared.
    bob.send_yaml(Method::POST, "/pipelines?project=elsewhere", &two.replace("name: two", "name: three"))
        .await
        .expect(201);
    let err = bob
        .send_yaml(Method::POST, "/pipelines?project=elsewhere", &one.replace("name: one", "name: four"))
        .await
        .expect_error(422)
        .error_text();
    assert!(err.contains("four → three → four"), "{err}");
    s.send_yaml(Method::POST, "/pipelines?project=admin", &one.replace("name: one", "name: five")).await.expect(201);
}

/// Seed 000: the "auto-deploy" option of a new pipeline adds "Manual review" and
/// "Release" after the build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_deploy_adds_manual_review_and_release_stages() {
    let s = common::start().await;
    let shown = s.get("/pipelines/scratch?name=app&auto_deploy=true").await.expect(200).json;
    let names: Vec<&str> =
        shown["definition"]["stages"].as_array().unwrap().iter().filter_map(|st| st["name"].as_str()).collect();
    assert_eq!(names, ["Build", "Test", "Manual review", "Release"]);
    assert_eq!(s.get("/pipelines/scratch?auto_deploy=maybe").await.status, 422);
    let plain = s.get("/pipelines/scratch?name=app").await.expect(200).json;
    assert_eq!(plain["definition"]["stages"][2]["name"], "Deploy");

    let ann = s.user("ann", "manager", &["shop"]).await;
    ann.post("/pipelines/scratch", json!({"name": "shop-app", "project": "shop", "auto_deploy": true}))
        .await
        .expect(201);
    let yaml = ann.get("/pipelines/shop-app/yaml").await.expect(200).text;
    assert!(yaml.contains("name: Manual review") && yaml.contains(r#"approvers: ["ann"]"#), "{yaml}");
    assert!(yaml.contains("type: deploy-yaml") && yaml.contains("cluster: ${CLUSTER}"), "{yaml}");
}
