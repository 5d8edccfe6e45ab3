//! Notifications end to end: webhooks to a receiver in this test (signature checked
//! with an HMAC-SHA256 computed here, a 500 retried, a dead address given up on) and
//! e-mail to a real SMTP server (Python's aiosmtpd, with a login) read back from its
//! mail directory; the attempts on the run; a failing notification never fails a run;
//! an approval that waits is announced.

mod common;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use common::{TestServer, id_of};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wharf_notify::email::{Security, SmtpSettings};

const SMTP_PASSWORD: &str = "smtp-password-value";
const HOOK_SECRET: &str = "hook-secret-value";

/// What the receiver saw: method, path and query, headers, body.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    uri: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// A webhook receiver on 127.0.0.1: `/flaky` answers 500 once, then 200; others 200.
async fn receiver() -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    let app =
        axum::Router::new().fallback(move |method: axum::http::Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let log = log.clone();
            async move {
                let mut log = log.lock().unwrap();
                let earlier = log.iter().filter(|s| s.uri.starts_with("/flaky")).count();
                log.push(Seen { method: method.to_string(), uri: uri.to_string(), headers, body: body.to_vec() });
                if uri.path() == "/flaky" && earlier == 0 { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, seen)
}

/// HMAC-SHA256 (RFC 2104) over `message`, as a receiver computes it.
fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    let outer = Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

async fn start(smtp_port: u16) -> TestServer {
    common::start_with(tempfile::tempdir().unwrap(), |c| {
        c.smtp = Some(SmtpSettings {
            host: "127.0.0.1".into(),
            port: smtp_port,
            security: Security::None,
            username: Some("wharf".into()),
            password: Some(SMTP_PASSWORD.into()),
            from: "Wharf CI <ci@example.com>".into(),
        });
        c.public_url = Some("https://ci.example.com".into());
        c.notify_retry = wharf_notify::Retry {
            attempts: 3,
            first_delay: Duration::from_millis(50),
            timeout: Duration::from_secs(5),
        };
    })
    .await
}

/// Waits until the run shows `n` notification attempts.
async fn attempts(s: &TestServer, run: i64, n: usize) -> Vec<Value> {
    let until = Instant::now() + common::DEADLINE;
    loop {
        let shown = s.run(run).await;
        let list = shown["notifications"].as_array().cloned().unwrap_or_default();
        if list.len() >= n {
            return list;
        }
        assert!(Instant::now() < until, "run {run} has {} of {n} notification attempts: {shown:#}", list.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_and_mail_tell_how_runs_ended_and_never_change_it() {
    let mail_dir = tempfile::tempdir().unwrap();
    let Some(smtp) = wharf_testenv::smtp_server_or_fail_in_ci(mail_dir.path(), Some(("wharf", SMTP_PASSWORD))) else {
        return;
    };
    let s = start(smtp.port).await;
    let (port, seen) = receiver().await;
    s.call(Method::PUT, "/secrets/HOOK_SECRET", Some(json!({ "value": HOOK_SECRET }))).await.expect(201);
    let yaml = format!(
        "name: notified
parameters: [{{name: CODE, default: '3'}}]
stages:
  - name: Build
    tasks:
      - {{name: compile, type: script, script: 'echo VERSION=1.2.$BUILD_ID >> $WHARF_OUTPUT', outputs: [VERSION]}}
  - name: Test
    tasks:
      - {{name: unit, type: script, script: 'exit ${{CODE}}'}}
    notify:
      - on: [failure]
        webhook: {{url: 'http://127.0.0.1:{port}/stage'}}
notify:
  - on: [failure]
    webhook:
      url: 'http://127.0.0.1:{port}/flaky?token=t0ken'
      headers: {{X-Team: 'web-${{BUILD_ID}}'}}
      secret: HOOK_SECRET
  - on: [success, failure]
    email: [dev@example.com, ops@example.com]
  - on: [success]
    webhook: {{url: 'http://127.0.0.1:{port}/ok', method: GET, params: {{version: '${{VERSION}}'}}}}
  - on: [success]
    webhook: {{url: 'http://127.0.0.1:1/down'}}
"
    );
    let p = id_of(&s.create(&yaml).await);

    // A failed run: the flaky webhook is retried after its 500, the mail goes out.
    let failed = id_of(&s.start_run(p, json!({})).await);
    assert_eq!(s.wait_run(failed).await["status"], "failed");
    let list = attempts(&s, failed, 4).await;
    let hook: Vec<&Value> = list.iter().filter(|a| a["target"].as_str().unwrap().ends_with("/flaky")).collect();
    assert_eq!(hook.len(), 2, "{list:#?}");
    assert_eq!((hook[0]["outcome"].as_str(), hook[0]["detail"].as_str()), (Some("failed"), Some("HTTP 500")));
    assert_eq!((hook[1]["attempt"].as_u64(), hook[1]["outcome"].as_str()), (Some(2), Some("delivered")));
    assert_eq!(hook[1]["target"], format!("http://127.0.0.1:{port}/flaky"), "the query (a token) is not shown");
    let mail = list.iter().find(|a| a["channel"] == "email").unwrap();
    assert_eq!(mail["outcome"], "delivered", "{mail}");
    assert_eq!(mail["target"], "dev@example.com, ops@example.com");

    // The stage's own notification: the stage and its status.
    let stage = seen.lock().unwrap().iter().find(|s| s.uri == "/stage").cloned().expect("the stage's webhook");
    let body: Value = serde_json::from_slice(&stage.body).unwrap();
    assert_eq!((body["stage"].as_str(), body["status"].as_str()), (Some("Test"), Some("failed")), "{body}");
    let posts: Vec<Seen> = seen.lock().unwrap().iter().filter(|s| s.uri.starts_with("/flaky")).cloned().collect();
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[0].headers["x-wharf-delivery"], posts[1].headers["x-wharf-delivery"]);
    let post = &posts[1];
    assert_eq!(post.method, "POST");
    assert_eq!(post.uri, "/flaky?token=t0ken");
    assert_eq!(post.headers["x-team"], "web-1");
    assert_eq!(post.headers["x-wharf-event"], "failure");
    assert_eq!(post.headers["content-type"], "application/json");
    let signature = post.headers["x-wharf-signature-256"].to_str().unwrap();
    assert_eq!(signature, format!("sha256={}", hmac_sha256_hex(HOOK_SECRET.as_bytes(), &post.body)));
    let body: Value = serde_json::from_slice(&post.body).unwrap();
    assert_eq!((body["pipeline"].as_str(), body["run"].as_u64()), (Some("notified"), Some(1)));
    assert_eq!((body["status"].as_str(), body["failed_task"].as_str()), (Some("failed"), Some("Test/unit")));
    assert_eq!(body["url"], format!("https://ci.example.com/runs/{failed}"));
    assert_eq!(body["cause"], "started by admin");
    assert!(body["duration_ms"].as_u64().is_some(), "{body}");
    assert!(body["reason"].as_str().unwrap().contains("exit code 3"), "{body}");

    let messages = smtp.messages();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let text = &messages[0];
    assert!(text.starts_with("X-Envelope-To: dev@example.com, ops@example.com"), "{text}");
    assert!(text.contains("Subject: [Wharf] notified #1 failed"), "{text}");
    assert!(
        text.contains("From: \"Wharf CI\" <ci@example.com>") || text.contains("From: Wharf CI <ci@example.com>"),
        "{text}"
    );
    for (label, value) in [
        ("Status:", "failed".to_owned()),
        ("Failed task:", "Test/unit".to_owned()),
        ("Run page:", format!("https://ci.example.com/runs/{failed}")),
        ("Cause:", "started by admin".to_owned()),
    ] {
        let found = text.lines().any(|l| l.strip_prefix(label).is_some_and(|rest| rest.trim() == value));
        assert!(found, "`{label} {value}` in {text}");
    }

    // A run that succeeds stays succeeded though one of its webhooks cannot be reached.
    let ok = id_of(&s.start_run(p, json!({ "CODE": "0" })).await);
    assert_eq!(s.wait_run(ok).await["status"], "succeeded");
    let list = attempts(&s, ok, 5).await;
    let down: Vec<&Value> = list.iter().filter(|a| a["target"] == "http://127.0.0.1:1/down").collect();
    assert_eq!(down.len(), 3, "three attempts, then given up: {list:#?}");
    assert!(down.iter().all(|a| a["outcome"] == "failed"), "{down:#?}");
    assert_eq!(s.run(ok).await["status"], "succeeded");
    let get = seen.lock().unwrap().iter().find(|s| s.uri.starts_with("/ok")).cloned().expect("the GET webhook");
    assert_eq!(get.method, "GET");
    assert!(
        get.uri.contains("version=1.2.2") && get.uri.contains("event=success") && get.uri.contains("run=2"),
        "{}",
        get.uri
    );
    assert!(get.headers.get("x-wharf-signature-256").is_none(), "no secret, no signature");
    let until = Instant::now() + common::DEADLINE;
    while smtp.messages().len() < 2 {
        assert!(Instant::now() < until, "the success mail never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(smtp.messages()[1].contains("Subject: [Wharf] notified #2 succeeded"));
    let all = serde_json::to_string(&s.run(ok).await).unwrap() + &serde_json::to_string(&s.run(failed).await).unwrap();
    assert!(!all.contains(SMTP_PASSWORD) && !all.contains(HOOK_SECRET), "no secret in the run's answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_that_waits_is_announced_and_a_wrong_smtp_login_is_an_attempt_not_a_failure() {
    let mail_dir = tempfile::tempdir().unwrap();
    let Some(smtp) = wharf_testenv::smtp_server_or_fail_in_ci(mail_dir.path(), Some(("wharf", "another-password")))
    else {
        return;
    };
    let s = start(smtp.port).await;
    let (port, seen) = receiver().await;
    let yaml = format!(
        "name: gated
stages:
  - name: Review
    tasks:
      - {{name: sign, type: approval, approvers: [admin], message: 'Ship it?'}}
notify:
  - on: [waiting]
    webhook: {{url: 'http://127.0.0.1:{port}/ok'}}
  - on: [waiting, success]
    email: [dev@example.com]
"
    );
    let p = id_of(&s.create(&yaml).await);
    let run = id_of(&s.start_run(p, json!({})).await);
    // The receiver decides the moment the announcement arrives: the waiting state is
    // stored before it is sent, so the decision is taken (never a 409).
    let until = Instant::now() + common::DEADLINE;
    while seen.lock().unwrap().is_empty() {
        assert!(Instant::now() < until, "the waiting approval was never announced");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    s.post(&format!("/runs/{run}/tasks/sign/approve"), json!({})).await.expect(200);
    let list = attempts(&s, run, 2).await;
    let hook = list.iter().find(|a| a["channel"] == "webhook").unwrap();
    assert_eq!((hook["event"].as_str(), hook["outcome"].as_str()), (Some("waiting"), Some("delivered")));
    let body: Value = serde_json::from_slice(&seen.lock().unwrap()[0].body).unwrap();
    assert_eq!(body["waiting"]["task"], "sign");
    assert_eq!(body["waiting"]["message"], "Ship it?");
    assert_eq!(body["status"], "running");
    // The SMTP server refuses the login: a permanent error, tried once, shown, harmless.
    let mail = list.iter().find(|a| a["channel"] == "email").unwrap();
    assert_eq!(mail["outcome"], "failed", "{mail}");
    assert!(!mail["detail"].as_str().unwrap().contains(SMTP_PASSWORD), "{mail}");
    assert_eq!(s.wait_run(run).await["status"], "succeeded");
    assert!(smtp.messages().is_empty());
    let _ = Method::GET;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_checkout_fails_before_any_task_is_notified_with_the_cause() {
    let s = common::start_in(tempfile::tempdir().unwrap()).await;
    let (port, seen) = receiver().await;
    let yaml = format!(
        "name: unreachable
source:
  repo: http://127.0.0.1:1/nothing.git
  branch: main
stages:
  - name: Build
    tasks:
      - {{name: compile, type: script, script: 'echo never'}}
notify:
  - on: [failure]
    webhook: {{url: 'http://127.0.0.1:{port}/failed'}}
"
    );
    let p = id_of(&s.create(&yaml).await);
    let run = id_of(&s.start_run(p, json!({})).await);
    assert_eq!(s.wait_run(run).await["status"], "failed");
    let list = attempts(&s, run, 1).await;
    assert_eq!((list[0]["event"].as_str(), list[0]["outcome"].as_str()), (Some("failure"), Some("delivered")));
    let body: Value = serde_json::from_slice(&seen.lock().unwrap()[0].body).unwrap();
    assert_eq!(body["status"], "failed", "{body}");
    assert!(body["reason"].as_str().is_some_and(|r| !r.is_empty()), "the cause is told: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_target_starts_the_pipeline_it_triggers_and_wakes_a_waiting_stage() {
    let s = common::start_in(tempfile::tempdir().unwrap()).await;
    s.create(
        "name: listener
parameters:
  - {name: NOTIFY_STATUS, default: none}
  - {name: VERSION, default: none}
triggers:
  - channel: released
stages:
  - name: Tell
    tasks:
      - {name: tell, type: script, script: 'echo \"heard ${VERSION} ${NOTIFY_STATUS}\"'}
",
    )
    .await;
    let waiter = s
        .create(
            "name: waiter
stages:
  - name: After
    wait: {channels: [released], params: [NOTIFY_RUN, VERSION]}
    tasks:
      - {name: after, type: script, script: 'echo \"after run ${NOTIFY_RUN} of ${VERSION}\"'}
",
        )
        .await;
    let sender = s
        .create(
            "name: sender
stages:
  - name: Build
    tasks:
      - {name: build, type: script, script: 'echo VERSION=2.0.$BUILD_ID >> $WHARF_OUTPUT'}
notify:
  - on: [success]
    channel: released
",
        )
        .await;
    let waiting = id_of(&s.start_run(id_of(&waiter), json!({})).await);
    s.wait_run_until(waiting, "waiting at After", |r| {
        r["stages"].as_array().into_iter().flatten().any(|st| st["name"] == "After" && st["status"] == "waiting")
    })
    .await;
    let sent = id_of(&s.start_run(id_of(&sender), json!({})).await);
    assert_eq!(s.wait_run(sent).await["status"], "succeeded");
    // The delivery is an attempt like the others: where the message went.
    let list = attempts(&s, sent, 1).await;
    let attempt = &list[0];
    assert_eq!((attempt["channel"].as_str(), attempt["target"].as_str()), (Some("channel"), Some("released")));
    assert_eq!((attempt["event"].as_str(), attempt["outcome"].as_str()), (Some("success"), Some("delivered")));
    let detail = attempt["detail"].as_str().unwrap();
    assert!(
        detail.contains("to channel `released`: waiting stages told: waiter#1 After; runs started: listener#1"),
        "{detail}"
    );

    let woken = s.wait_run(waiting).await;
    assert_eq!(woken["status"], "succeeded", "{woken:#}");
    let after = s.get(&format!("/runs/{waiting}/tasks/after/log")).await.text;
    assert!(after.contains("after run 1 of 2.0.1"), "{after}");
    let runs = s.get("/pipelines/listener/runs").await.expect(200).json;
    let heard = s.wait_run(id_of(&runs["items"][0])).await;
    assert_eq!(heard["status"], "succeeded", "{heard:#}");
    assert_eq!(heard["cause"], json!({"kind": "channel", "channel": "released", "pipeline": "sender", "number": 1}));
    assert_eq!(heard["parameters"], json!({"NOTIFY_STATUS": "succeeded", "VERSION": "2.0.1"}));
    let tell = s.get(&format!("/runs/{}/tasks/tell/log", id_of(&runs["items"][0]))).await.text;
    assert!(tell.contains("heard 2.0.1 succeeded"), "{tell}");

    // A notification's channel takes part in the loop check at save.
    let looped = s
        .send_yaml(
            Method::POST,
            "/pipelines",
            "name: echo
triggers:
  - channel: released
stages:
  - name: S
    tasks:
      - {name: t, type: script, script: 'true'}
notify:
  - on: [failure]
    channel: released
",
        )
        .await;
    assert_eq!(looped.status, 422, "{}", looped.text);
    assert!(looped.text.contains("echo → echo"), "{}", looped.text);
}
