//! The server's own calls (code hosts' APIs, the OAuth code exchange) and the outbound
//! policy: loopback, link-local and private addresses are refused before anything is
//! sent unless the admin's `outbound_allow` names them; only admins point a binding at
//! an instance; what a provider answers with an error is never repeated to the caller.
//! The provider is `common::provider_mock` on 127.0.0.1, which these servers (unlike
//! the other tests') are not allowed to call.

mod common;

use common::provider_mock::{self, CLIENT_SECRET, CODE, MockProvider, PAT};
use common::{Answer, TestServer};
use serde_json::json;

/// A server whose `outbound_allow` is `allow` (the test default allows loopback).
async fn server(allow: &[&str]) -> TestServer {
    let allow: Vec<String> = allow.iter().map(|a| a.to_string()).collect();
    common::start_with(tempfile::tempdir().unwrap(), move |config| config.outbound_allow = allow).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_cannot_point_a_binding_at_loopback_and_the_server_calls_it_only_when_allowed() {
    let s = server(&[]).await;
    let mock = MockProvider::start().await;
    let user = s.user("ulla", "user", &["web"]).await;

    // The lowest role may create bindings, but not choose where the server calls.
    let body = json!({ "name": "mine", "provider": "gitlab", "url": mock.base, "token": PAT });
    let refused = user.post("/bindings", body).await.expect_error(403);
    assert!(refused.error_text().contains("only an admin may give a binding an instance URL"), "{}", refused.text);
    s.get("/bindings/mine").await.expect_error(404);
    // Without `url` the binding is for the public service.
    let public = user.post("/bindings", json!({ "name": "mine", "provider": "gitlab", "token": PAT })).await;
    assert_eq!(public.expect(201).json["url"], serde_json::Value::Null);

    // An admin's binding to loopback, not allowed: refused before connecting.
    let body = json!({ "name": "local", "provider": "gitlab", "url": mock.base, "token": PAT });
    s.post("/bindings", body).await.expect(201);
    let answer = s.get("/bindings/local/repos").await.expect_error(403);
    let text = answer.error_text();
    assert!(text.contains("127.0.0.1 is a loopback address") && text.contains("outbound_allow"), "{text}");
    assert!(mock.seen().is_empty(), "nothing reached the address: {:?}", mock.seen());
    // The same through a name that resolves to loopback.
    let port = mock.base.rsplit(':').next().unwrap();
    let body =
        json!({ "name": "by-name", "provider": "github", "url": format!("http://localhost:{port}"), "token": PAT });
    s.post("/bindings", body).await.expect(201);
    let answer = s.get("/bindings/by-name/repos").await.expect_error(403);
    assert!(answer.error_text().contains("`localhost` resolves to"), "{}", answer.text);
    assert!(mock.seen().is_empty());

    // Once the admin names it, the same binding works.
    let allowed = server(&["127.0.0.1"]).await;
    provider_mock::bind(&allowed, "local", "gitlab", Some(&mock.base), Some(PAT)).await;
    allowed.get("/bindings/local/repos").await.expect(200);
    assert!(!mock.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_service_and_private_networks_are_refused_without_a_connection_attempt() {
    let s = server(&["10.1.0.0/16"]).await;
    for (name, url, kind) in [
        ("metadata", "http://169.254.169.254", "169.254.169.254 is a link-local address"),
        ("mapped", "http://[::ffff:169.254.169.254]", "link-local address"),
        ("private", "https://10.2.3.4", "10.2.3.4 is a private address"),
        ("cgnat", "https://100.64.0.1", "shared (CGNAT) address"),
    ] {
        let binding = json!({ "name": name, "provider": "github", "url": url, "token": PAT });
        s.post("/bindings", binding).await.expect(201);
        // A connection attempt to these would wait for the connect timeout (10 s);
        // the refusal comes at once.
        let started = std::time::Instant::now();
        let answer = s.get(&format!("/bindings/{name}/repos")).await.expect_error(403);
        assert!(answer.error_text().contains(kind), "{name}: {}", answer.text);
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{name}: {:?}", started.elapsed());
    }
}

/// Answers every request with a redirect to `target` (a stand-in for a public host
/// that sends the server inward).
async fn redirector(target: String) -> u16 {
    use axum::response::Redirect;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(move || {
        let target = target.clone();
        async move { Redirect::temporary(&target) }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_loopback_is_refused() {
    // `localhost` is allowed by name (the admin's decision for that host); the
    // address 127.0.0.1 as such is not, so a redirect there is refused.
    let s = server(&["localhost"]).await;
    let mock = MockProvider::start().await;
    let port = redirector(format!("{}/api/v4/projects", mock.base)).await;
    let body = json!({ "name": "hop", "provider": "gitlab", "url": format!("http://localhost:{port}"), "token": PAT });
    s.post("/bindings", body).await.expect(201);
    let answer = s.get("/bindings/hop/repos").await.expect_error(403);
    assert!(answer.error_text().contains("127.0.0.1 is a loopback address"), "{}", answer.text);
    assert!(mock.seen().is_empty(), "the redirect was not followed: {:?}", mock.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_provider_answers_with_an_error_is_not_repeated() {
    let s = server(&["127.0.0.1"]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let banner = "redis_version:6.2.14 role:master connected_slaves:0";
    let app = axum::Router::new()
        .route(
            "/api/v4/projects",
            axum::routing::get(move || async move { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, banner) }),
        )
        .route(
            "/api/v3/user/repos",
            axum::routing::get(|| async {
                (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({ "message": "token ghp_x belongs to ann" })))
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    provider_mock::bind(&s, "gl", "gitlab", Some(&base), Some(PAT)).await;
    provider_mock::bind(&s, "gh", "github", Some(&base), Some(PAT)).await;

    let answer = s.get("/bindings/gl/repos").await.expect_error(502);
    assert!(!answer.text.contains("redis"), "{}", answer.text);
    assert!(answer.error_text().contains("GitLab answered 500 Internal Server Error"), "{}", answer.text);
    let answer = s.get("/bindings/gh/repos").await.expect_error(502);
    assert!(!answer.text.contains("ann"), "{}", answer.text);
    assert!(
        answer.error_text().contains("the binding's token was refused by GitHub (401 Unauthorized)"),
        "{}",
        answer.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oauth_callback_does_not_send_the_client_secret_to_a_refused_address() {
    let s = server(&[]).await;
    let mock = MockProvider::start().await;
    provider_mock::bind(&s, "gh", "github", Some(&mock.base), None).await;
    let auth = s.get("/bindings/gh/authorize").await.expect(200).json;
    let url = reqwest::Url::parse(auth["url"].as_str().unwrap()).unwrap();
    let state = url.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();

    // The callback needs no token: anyone who holds a state can make the server call.
    let callback = format!("{}/devops/repository/github/redirect?code={CODE}&state={state}", s.base);
    let page = Answer::read(reqwest::get(&callback).await.unwrap()).await.expect(403);
    assert!(page.text.contains("Not connected") && page.text.contains("loopback"), "{}", page.text);
    assert!(!page.text.contains(CLIENT_SECRET));
    assert!(mock.seen().is_empty(), "the secret went nowhere: {:?}", mock.seen());
    assert_eq!(s.server.state.store.binding("gh").await.unwrap().token, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_allow_list_entry_stops_the_start_with_the_entry_named() {
    let mut config = common::test_config(tempfile::tempdir().unwrap().path());
    config.outbound_allow = vec!["10.0.0.0/40".into()];
    let e = wharf_server::Server::start(config).await.err().expect("the start is refused");
    assert!(e.to_string().contains("outbound_allow entry `10.0.0.0/40`"), "{e}");
}
