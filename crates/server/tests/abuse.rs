//! What an unauthenticated client can make the server do, bounded (issue 11): login
//! floods (attempts counted before the hash, per-address throttle, invalid names
//! refused first), refused webhook floods (throttled, capped headers), the audit log
//! (refusals on record, a flood not in full, fields cut), slow and idle connections
//! (header timeout, connection limit), slow request bodies (408 after the same
//! timeout), and error answers in the documented JSON shape.

mod common;

use common::{Answer, TestServer};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wharf_server::auth::LoginLimiter;

async fn login(s: &TestServer, name: &str, password: &str) -> Answer {
    let request =
        reqwest::Client::new().post(format!("{}/login", s.base)).json(&json!({ "name": name, "password": password }));
    Answer::read(request.send().await.unwrap()).await
}

async fn audit(s: &TestServer) -> Vec<Value> {
    s.get("/audit?limit=200").await.expect(200).json["items"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_logins_check_no_more_passwords_than_the_lock_allows() {
    let s = common::start().await;
    s.user("lou", "user", &[]).await;
    let attempts = (0..15).map(|_| login(&s, "lou", "wrong-password"));
    let answers = futures_util::future::join_all(attempts).await;
    let status = |code: u16| answers.iter().filter(|a| a.status.as_u16() == code).count();
    assert_eq!(status(401), LoginLimiter::MAX_FAILURES as usize, "only the allowed attempts were checked");
    assert_eq!(status(429), 15 - LoginLimiter::MAX_FAILURES as usize);
    // Locked, even with the right password.
    let locked = login(&s, "lou", "lou-password").await.expect_error(429);
    assert!(locked.error_text().contains("too many failed logins"), "{}", locked.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_from_one_address_are_throttled_whatever_the_names() {
    let s = common::start().await;
    let mut throttled = None;
    for i in 0..30 {
        let answer = login(&s, &format!("nobody{i}"), "whatever").await;
        if answer.status == 429 {
            throttled = Some((i, answer));
            break;
        }
        answer.expect_error(401);
    }
    let (i, answer) = throttled.expect("a flood of logins from one address is throttled");
    assert!(i >= 10, "a few logins go through first ({i})");
    assert!(answer.header("retry-after").is_some_and(|v| v.parse::<u64>().is_ok_and(|v| v > 0)));
    answer.expect_error(429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_user_name_is_refused_and_audited_cut_short() {
    let s = common::start().await;
    let name = "x".repeat(10_000);
    let refused = login(&s, &name, "whatever").await.expect_error(401);
    // The answer of a wrong password: it tells nothing about who exists (a wrong
    // password also says how many tries are left before the lockout).
    let wrong = login(&s, "admin", "wrong-password").await.expect_error(401);
    assert_eq!(refused.json["error"]["message"], "wrong user name or password");
    assert!(wrong.error_text().starts_with("wrong user name or password ("), "{}", wrong.text);
    let log = audit(&s).await;
    let line = log.iter().find(|e| e["actor"].as_str().is_some_and(|a| a.starts_with("xxx"))).expect("on record");
    let actor = line["actor"].as_str().unwrap();
    assert!(actor.chars().count() <= wharf_store::tenancy::AUDIT_FIELD_MAX, "{} chars", actor.len());
    assert!(actor.ends_with(wharf_store::tenancy::CUT_MARK), "{actor}");
    assert_eq!(line["outcome"], 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_audited_and_a_flood_only_at_its_start() {
    let s = common::start().await;
    let ro = s.post("/users/admin/tokens", json!({ "name": "ro", "scope": "read" })).await.expect(201).json["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let anonymous = reqwest::Client::new();
    let answer = anonymous.get(s.url("/pipelines")).send().await.unwrap();
    Answer::read(answer).await.expect_error(401);
    let answer = anonymous.post(s.url("/pipelines/scratch")).bearer_auth(&ro).json(&json!({ "name": "p" }));
    Answer::read(answer.send().await.unwrap()).await.expect_error(403);
    // A session's change without its CSRF token.
    let logged = login(&s, "admin", common::ADMIN_PASSWORD).await.expect(200);
    let cookie = logged.header("set-cookie").unwrap().split(';').next().unwrap().to_owned();
    let forged = anonymous.post(s.url("/pipelines/scratch")).header("cookie", cookie).json(&json!({ "name": "p" }));
    Answer::read(forged.send().await.unwrap()).await.expect_error(403);
    // A long path is on record cut short.
    let long = format!("/pipelines/{}", "y".repeat(3000));
    Answer::read(anonymous.get(s.url(&long)).send().await.unwrap()).await.expect_error(401);

    let log = audit(&s).await;
    let find = |action: &str, actor: &str| {
        log.iter()
            .find(|e| e["action"] == action && e["actor"] == actor)
            .unwrap_or_else(|| panic!("{action} by {actor}: {log:#?}"))
    };
    let unauthenticated = find("refused: GET /pipelines", "-");
    assert_eq!(
        (unauthenticated["outcome"].as_i64(), unauthenticated["client_ip"].as_str()),
        (Some(401), Some("127.0.0.1"))
    );
    let read_only = log
        .iter()
        .filter(|e| e["action"] == "refused: POST /pipelines/scratch" && e["actor"] == "admin")
        .collect::<Vec<_>>();
    assert_eq!(read_only.len(), 2, "the read token and the missing CSRF token: {log:#?}");
    assert!(read_only.iter().all(|e| e["outcome"] == 403));
    let cut = find("refused: GET /pipelines/{key}", "-");
    assert!(cut["object"].as_str().unwrap().ends_with(wharf_store::tenancy::CUT_MARK), "{cut}");

    // A flood of refused requests from one address is written down at its start only.
    let before = audit(&s).await.len();
    for _ in 0..60 {
        Answer::read(anonymous.get(s.url("/pipelines")).bearer_auth("wrong").send().await.unwrap())
            .await
            .expect_error(401);
    }
    let written = audit(&s).await.len() - before;
    assert!(written < 30, "{written} audit lines for 60 refused requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_webhooks_is_throttled_and_stores_capped_headers() {
    let s = common::start().await;
    let big = "h".repeat(1500);
    let headers: Vec<(String, String)> = (0..40).map(|i| (format!("x-filler-{i}"), big.clone())).collect();
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let mut statuses = Vec::new();
    for _ in 0..60 {
        statuses.push(common::deliver(&s, "github", "no-such-binding", &headers, b"{}").await.status.as_u16());
    }
    let refused = statuses.iter().filter(|s| **s == 404).count();
    assert!(statuses.iter().all(|s| *s == 404 || *s == 429), "{statuses:?}");
    assert!((10..60).contains(&refused), "throttled after a burst: {statuses:?}");
    let listed = s.get("/deliveries?limit=200").await.expect(200).json;
    assert_eq!(listed["total"], refused, "throttled requests are not stored");
    let id = listed["items"][0]["id"].as_i64().unwrap();
    let stored = s.get(&format!("/deliveries/{id}")).await.expect(200).json;
    let stored_headers = stored["headers"].as_object().unwrap();
    let bytes: usize = stored_headers.iter().map(|(k, v)| k.len() + v.as_str().map_or(0, str::len)).sum();
    assert!(bytes <= wharf_server::hooks::MAX_STORED_HEADER_BYTES + 200, "{bytes} bytes of headers stored");
    assert!(
        stored_headers
            .values()
            .all(|v| v.as_str().is_some_and(|v| v.len() <= wharf_server::hooks::MAX_HEADER_VALUE + 10))
    );
    assert!(stored_headers.contains_key(wharf_server::hooks::MORE_HEADERS), "{stored_headers:?}");
}

/// Reads until the server closes the connection; `Err` when it is still open after `limit`.
async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> Result<(), ()> {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .map_err(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_and_idle_connections_are_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let s = common::start_with(dir, |c| c.header_timeout = Duration::from_millis(500)).await;
    let mut half = TcpStream::connect(s.server.addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    assert!(closed_within(&mut half, Duration::from_secs(5)).await.is_ok(), "a half-sent request is closed");

    let mut idle = TcpStream::connect(s.server.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await.is_ok(), "an idle keep-alive connection is closed");
}

/// Reads the whole answer until the server closes the connection; `None` when it is
/// still open after `limit`.
async fn answer_until_closed(tcp: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut answer = Vec::new();
    tokio::time::timeout(limit, tcp.read_to_end(&mut answer)).await.ok()?.ok()?;
    Some(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_bodies_are_answered_408_and_free_their_connections() {
    let dir = tempfile::tempdir().unwrap();
    let s = common::start_with(dir, |c| {
        c.max_connections = 4;
        c.header_timeout = Duration::from_secs(1);
    })
    .await;
    // Every connection slot taken by a request announcing 10000 bytes of body and
    // sending one: the logins, a webhook, and an API route's JSON body.
    let heads = [
        "POST /login HTTP/1.1".to_owned(),
        "POST /api/v1/login HTTP/1.1".to_owned(),
        "POST /hooks/github/some-binding HTTP/1.1".to_owned(),
        format!("POST /api/v1/pipelines/scratch HTTP/1.1\r\nAuthorization: Bearer {}", common::TOKEN),
    ];
    let mut slow = Vec::new();
    for head in &heads {
        let mut tcp = TcpStream::connect(s.server.addr).await.unwrap();
        let request = format!("{head}\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n{{");
        tcp.write_all(request.as_bytes()).await.unwrap();
        slow.push(tcp);
    }
    let started = std::time::Instant::now();
    let health = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
    let answer = health.get(format!("{}/healthz", s.base)).send().await.expect("/healthz is served once slots free");
    assert_eq!(answer.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(8), "served after {:?}", started.elapsed());
    for (head, tcp) in heads.iter().zip(&mut slow) {
        let answer = answer_until_closed(tcp, Duration::from_secs(10)).await;
        let answer = answer.unwrap_or_else(|| panic!("{head}: the connection is still open"));
        assert!(answer.starts_with("HTTP/1.1 408"), "{head}: {answer}");
        assert!(answer.contains(r#""status":408"#), "{head}: the documented error shape: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_wait_and_healthz_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let s = common::start_with(dir, |c| {
        c.max_connections = 8;
        c.header_timeout = Duration::from_millis(500);
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(s.server.addr).await.unwrap());
    }
    let health = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let answer = health.get(format!("{}/healthz", s.base)).send().await.expect("/healthz answers in time");
    assert_eq!(answer.status(), 200);
    for tcp in &mut idle {
        assert!(closed_within(tcp, Duration::from_secs(10)).await.is_ok(), "idle connections are closed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_made_by_the_framework_have_the_documented_error_shape() {
    let s = common::start().await;
    // A body over the 2 MB default limit (on a connection of its own: the server closes
    // it without reading the rest).
    let big = "x".repeat(3 * 1024 * 1024);
    let answer = reqwest::Client::new()
        .post(s.url("/pipelines"))
        .bearer_auth(common::TOKEN)
        .header("content-type", "application/yaml")
        .body(big)
        .send();
    Answer::read(answer.await.unwrap()).await.expect_error(413);
    // A path that is not UTF-8 once decoded.
    Answer::read(s.client.get(s.url("/pipelines/%FF%FE")).send().await.unwrap()).await.expect_error(400);
    // A method the route does not have.
    s.call(Method::PATCH, "/pipelines", None).await.expect_error(405);
    // A login body over its limit.
    let answer = reqwest::Client::new()
        .post(format!("{}/login", s.base))
        .json(&json!({ "name": "admin", "password": "p".repeat(64 * 1024) }))
        .send();
    Answer::read(answer.await.unwrap()).await.expect_error(413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_log_stream_quieter_than_the_header_timeout_is_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let s = common::start_with(dir, |c| c.header_timeout = Duration::from_millis(300)).await;
    let yaml = "name: quiet\nstages:\n  - name: Main\n    tasks:\n      - name: main\n        type: script\n        \
                script: echo first; sleep 2; echo second\n";
    s.create(yaml).await;
    let run = common::id_of(&s.start_run("quiet", json!({})).await);
    s.wait_task_running(run, "main").await;
    let response = s.client.get(s.url(&format!("/runs/{run}/tasks/main/log/stream"))).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut reader = common::SseReader::new(response);
    let mut data = Vec::new();
    loop {
        let events = reader.next_events().await;
        assert!(!events.is_empty(), "the stream was cut before its end: {data:?}");
        data.extend(events.iter().map(|e| e.data.clone()));
        if events.iter().any(|e| e.event.as_deref() == Some("end")) {
            break;
        }
    }
    let text = data.join("\n");
    assert!(text.contains("first") && text.contains("second"), "{text}");
}
