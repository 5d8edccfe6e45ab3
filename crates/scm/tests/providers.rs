//! `wharf_scm::provider` against a local HTTP server that answers as GitHub, GitLab and
//! Gitee document their APIs: the OAuth token exchange, repository and branch listing
//! across pages, webhook creation, and their error answers. Each mock records every
//! request so the tests can check paths, methods, auth headers, query strings and
//! bodies; the answers are written from the providers' documented response shapes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use wharf_scm::provider::{HookEvent, HttpClient, Provider, ProviderClient, ProviderError, Repo};

const TOKEN: &str = "tok-3f9a1c77e0b24d6d";
const CLIENT_ID: &str = "Iv1.8a61f9b3a7aba766";
const CLIENT_SECRET: &str = "cs-1d2e3f4a5b6c7d8e9f";
const CODE: &str = "code-c9a4f0e1";
const REDIRECT: &str = "http://127.0.0.1:8080/devops/repository/github/redirect";
const NEW_TOKEN: &str = "gho_16C7e42F292c6912E7710c838347Ae178B4a";

// ---------------------------------------------------------------------------------
// The mock

/// One request as the mock received it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    /// The path as sent (still percent-encoded).
    path: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn form(&self) -> HashMap<String, String> {
        decode_form(&self.body)
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

struct Mock {
    /// `http://127.0.0.1:PORT`
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Mock {
    /// Binds 127.0.0.1:0 and serves the router `build` makes (given the base URL).
    async fn start(build: impl FnOnce(String) -> Router) -> Mock {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let app = build(base.clone()).layer(middleware::from_fn(move |request: Request, next: Next| {
            let record = record.clone();
            async move {
                let (parts, body) = request.into_parts();
                let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                record.lock().unwrap().push(Seen {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    query: decode_form(parts.uri.query().unwrap_or("")),
                    headers: parts.headers.clone(),
                    body: String::from_utf8_lossy(&bytes).into_owned(),
                });
                next.run(Request::from_parts(parts, Body::from(bytes))).await
            }
        }));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Mock { base, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn client(&self, provider: Provider, token: Option<&str>) -> ProviderClient {
        ProviderClient::new(provider, Some(&self.base), token).unwrap().with_http(&loopback_allowed())
    }
}

/// A client allowed to call loopback, where the mocks listen (an admin's
/// `outbound_allow = ["127.0.0.1"]`).
fn loopback_allowed() -> HttpClient {
    HttpClient::new(None, &wharf_outbound::Policy::new(&["127.0.0.1"]).unwrap()).unwrap()
}

/// `application/x-www-form-urlencoded` (and query strings) into a map.
fn decode_form(text: &str) -> HashMap<String, String> {
    fn unescape(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (unescape(k), unescape(v))
        })
        .collect()
}

fn answer(status: u16, headers: &[(&str, String)], body: Value) -> Response {
    let mut response = (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
    for (name, value) in headers {
        response
            .headers_mut()
            .insert(axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    response
}

fn page_of(query: &HashMap<String, String>) -> usize {
    query.get("page").map(|p| p.parse().unwrap()).unwrap_or(1)
}

fn bearer_ok(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

// ---------------------------------------------------------------------------------
// GitHub, as docs.github.com documents it (Enterprise Server layout: /api/v3, /login/oauth)

fn github_repo(full_name: &str, private: bool) -> Value {
    let (owner, name) = full_name.split_once('/').unwrap();
    json!({
        "id": 1296269, "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5", "name": name, "full_name": full_name,
        "owner": { "login": owner, "id": 1, "type": "User", "site_admin": false },
        "private": private, "html_url": format!("https://github.com/{full_name}"),
        "description": "This your first repo!", "fork": false,
        "url": format!("https://api.github.com/repos/{full_name}"),
        "git_url": format!("git://github.com/{full_name}.git"),
        "ssh_url": format!("git@github.com:{full_name}.git"),
        "clone_url": format!("https://github.com/{full_name}.git"),
        "default_branch": "master", "visibility": if private { "private" } else { "public" },
        "permissions": { "admin": true, "push": true, "pull": true },
        "pushed_at": "2011-01-26T19:06:43Z", "created_at": "2011-01-26T19:01:12Z", "updated_at": "2011-01-26T19:14:43Z"
    })
}

fn github_unauthorized() -> Response {
    answer(
        401,
        &[],
        json!({ "message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401" }),
    )
}

fn github_router(base: String) -> Router {
    let pages: Vec<Vec<Value>> = vec![
        vec![github_repo("octocat/Hello-World", false), github_repo("octocat/Spoon-Knife", true)],
        vec![github_repo("octocat/linguist", false), github_repo("octo-org/octo-repo", true)],
        vec![github_repo("octo-org/wharf", false)],
    ];
    Router::new()
        .route(
            "/login/oauth/access_token",
            post(|request: Request| async move {
                let body = axum::body::to_bytes(request.into_body(), 1 << 20).await.unwrap();
                let form = decode_form(std::str::from_utf8(&body).unwrap());
                if form.get("code").map(String::as_str) == Some(CODE)
                    && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
                {
                    answer(200, &[], json!({ "access_token": NEW_TOKEN, "scope": "repo", "token_type": "bearer" }))
                } else {
                    // GitHub answers OAuth errors with 200.
                    answer(200, &[], json!({
                        "error": "bad_verification_code",
                        "error_description": "The code passed is incorrect or expired.",
                        "error_uri": "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#bad-verification-code"
                    }))
                }
            }),
        )
        .route(
            "/api/v3/user/repos",
            get(move |headers: HeaderMap, Query(query): Query<HashMap<String, String>>| async move {
                if !bearer_ok(&headers) {
                    return github_unauthorized();
                }
                let page = page_of(&query);
                let link = |n: usize| format!("<{base}/api/v3/user/repos?sort=full_name&per_page=2&page={n}>");
                let links = match page {
                    1 => format!("{}; rel=\"next\", {}; rel=\"last\"", link(2), link(3)),
                    2 => format!("{}; rel=\"prev\", {}; rel=\"next\", {}; rel=\"last\", {}; rel=\"first\"", link(1), link(3), link(3), link(1)),
                    _ => format!("{}; rel=\"prev\", {}; rel=\"first\"", link(2), link(1)),
                };
                let items = pages.get(page - 1).cloned().unwrap_or_default();
                answer(200, &[("link", links)], Value::Array(items))
            }),
        )
        .route(
            "/api/v3/repos/{owner}/{repo}/branches",
            get(|headers: HeaderMap, Path((owner, repo)): Path<(String, String)>| async move {
                if !bearer_ok(&headers) {
                    return github_unauthorized();
                }
                if (owner.as_str(), repo.as_str()) != ("octocat", "Hello-World") {
                    return answer(404, &[], json!({ "message": "Not Found", "documentation_url": "https://docs.github.com/rest/branches/branches#list-branches", "status": "404" }));
                }
                let branch = |name: &str, sha: &str| json!({ "name": name, "commit": { "sha": sha, "url": format!("https://api.github.com/repos/octocat/Hello-World/commits/{sha}") }, "protected": name == "master" });
                answer(200, &[], json!([branch("master", "c5b97d5ae6c19d5c5df71a34c7fbeeda2479ccbc"), branch("feature/login", "553c2077f0edc3d5dc5d17262f6aa498e69d6f8e")]))
            }),
        )
        .route(
            "/api/v3/repos/{owner}/{repo}/hooks",
            post(|headers: HeaderMap, request: Request| async move {
                if !bearer_ok(&headers) {
                    return github_unauthorized();
                }
                let body = axum::body::to_bytes(request.into_body(), 1 << 20).await.unwrap();
                let sent: Value = serde_json::from_slice(&body).unwrap();
                answer(201, &[], json!({
                    "type": "Repository", "id": 12345678, "name": "web", "active": true,
                    "events": sent["events"], "config": { "content_type": "json", "insecure_ssl": "0", "url": sent["config"]["url"] },
                    "updated_at": "2019-06-03T00:57:16Z", "created_at": "2019-06-03T00:57:16Z",
                    "url": "https://api.github.com/repos/octocat/Hello-World/hooks/12345678",
                    "ping_url": "https://api.github.com/repos/octocat/Hello-World/hooks/12345678/pings",
                    "last_response": { "code": null, "status": "unused", "message": null }
                }))
            }),
        )
}

#[tokio::test]
async fn github_authorize_url_asks_for_the_code_with_state() {
    let client = ProviderClient::new(Provider::GitHub, None, None).unwrap();
    let url = reqwest::Url::parse(&client.authorize_url(CLIENT_ID, REDIRECT, "st-1")).unwrap();
    assert_eq!((url.host_str(), url.path()), (Some("github.com"), "/login/oauth/authorize"));
    let query: HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query["client_id"], CLIENT_ID);
    assert_eq!(query["redirect_uri"], REDIRECT);
    assert_eq!(query["state"], "st-1");
    assert_eq!(query["scope"], "repo");
}

#[tokio::test]
async fn github_token_exchange_posts_the_form_and_reads_the_json() {
    let mock = Mock::start(github_router).await;
    let client = mock.client(Provider::GitHub, None);
    let token = client.exchange_code(CLIENT_ID, CLIENT_SECRET, CODE, REDIRECT).await.unwrap();
    assert_eq!(token.access_token, NEW_TOKEN);
    assert_eq!((token.refresh_token, token.expires_in), (None, None), "an OAuth app's token does not expire");
    let seen = mock.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/login/oauth/access_token"));
    assert_eq!(request.header("accept"), Some("application/json"));
    assert_eq!(request.header("content-type"), Some("application/x-www-form-urlencoded"));
    assert!(request.header("user-agent").is_some_and(|ua| ua.starts_with("wharf/")), "GitHub requires a User-Agent");
    let form = request.form();
    assert_eq!(form["client_id"], CLIENT_ID);
    assert_eq!(form["client_secret"], CLIENT_SECRET);
    assert_eq!(form["code"], CODE);
    assert_eq!(form["redirect_uri"], REDIRECT);
    assert!(request.query.is_empty(), "the secret travels in the body only");

    // GitHub's error answer comes with status 200 and names the problem: its code
    // (one Wharf knows) in Wharf's words, not GitHub's description.
    let err = client.exchange_code(CLIENT_ID, CLIENT_SECRET, "expired-code", REDIRECT).await.unwrap_err();
    assert!(matches!(err, ProviderError::OAuth { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("bad_verification_code: the authorization code or refresh token is invalid"), "{text}");
    assert!(!text.contains("incorrect or expired"), "the provider's text is not repeated: {text}");
    assert!(!text.contains(CLIENT_SECRET), "{text}");
}

#[tokio::test]
async fn github_repositories_follow_the_link_header_across_pages() {
    let mock = Mock::start(github_router).await;
    let client = mock.client(Provider::GitHub, Some(TOKEN)).with_paging(2, 20);
    let repos = client.repositories().await.unwrap();
    let names: Vec<&str> = repos.iter().map(|r| r.full_name.as_str()).collect();
    assert_eq!(
        names,
        ["octocat/Hello-World", "octocat/Spoon-Knife", "octocat/linguist", "octo-org/octo-repo", "octo-org/wharf"]
    );
    assert_eq!(
        repos[1],
        Repo {
            full_name: "octocat/Spoon-Knife".into(),
            clone_url: "https://github.com/octocat/Spoon-Knife.git".into(),
            ssh_url: "git@github.com:octocat/Spoon-Knife.git".into(),
            default_branch: Some("master".into()),
            private: true,
        }
    );
    let seen = mock.seen();
    assert_eq!(seen.len(), 3, "three pages, and no request after the page without rel=next");
    for (i, request) in seen.iter().enumerate() {
        assert_eq!((request.method.as_str(), request.path.as_str()), ("GET", "/api/v3/user/repos"));
        assert_eq!(request.query["page"], (i + 1).to_string());
        assert_eq!(request.query["per_page"], "2");
        assert_eq!(request.header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
        assert_eq!(request.header("accept"), Some("application/vnd.github+json"));
        assert_eq!(request.header("x-github-api-version"), Some("2022-11-28"));
    }
}

#[tokio::test]
async fn github_listing_stops_at_the_page_cap() {
    let mock = Mock::start(github_router).await;
    let client = mock.client(Provider::GitHub, Some(TOKEN)).with_paging(2, 2);
    assert_eq!(client.repositories().await.unwrap().len(), 4);
    assert_eq!(mock.seen().len(), 2);
}

#[tokio::test]
async fn github_next_links_to_another_host_are_not_followed() {
    let mock = Mock::start(|_| {
        Router::new().route(
            "/api/v3/user/repos",
            get(|| async {
                answer(
                    200,
                    &[("link", "<http://127.0.0.2:9/steal?page=2>; rel=\"next\"".into())],
                    json!([github_repo("a/b", false)]),
                )
            }),
        )
    })
    .await;
    let err = mock.client(Provider::GitHub, Some(TOKEN)).repositories().await.unwrap_err();
    assert!(matches!(err, ProviderError::Unexpected { .. }) && err.to_string().contains("another host"), "{err}");
    assert_eq!(mock.seen().len(), 1);
}

#[tokio::test]
async fn github_branches_and_a_missing_repository() {
    let mock = Mock::start(github_router).await;
    let client = mock.client(Provider::GitHub, Some(TOKEN));
    assert_eq!(client.branches("octocat/Hello-World").await.unwrap(), ["master", "feature/login"]);
    let seen = mock.seen();
    assert_eq!(seen[0].path, "/api/v3/repos/octocat/Hello-World/branches");
    assert_eq!(seen[0].query["per_page"], "100");

    let err = client.branches("octocat/nothing").await.unwrap_err();
    assert_eq!(
        err,
        ProviderError::NotFound { provider: Provider::GitHub, what: "repository `octocat/nothing`".into() }
    );
    assert_eq!(err.status(), Some(404));
}

#[tokio::test]
async fn github_webhook_is_a_json_hook_with_the_secret() {
    let mock = Mock::start(github_router).await;
    let client = mock.client(Provider::GitHub, Some(TOKEN));
    client
        .create_webhook("octocat/Hello-World", "https://ci.example.com/hooks/github/gh", "whsec-42", &HookEvent::ALL)
        .await
        .unwrap();
    let seen = mock.seen();
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("POST", "/api/v3/repos/octocat/Hello-World/hooks"));
    assert_eq!(seen[0].header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    assert_eq!(
        seen[0].json(),
        json!({
            "name": "web", "active": true, "events": ["push", "pull_request"],
            "config": { "url": "https://ci.example.com/hooks/github/gh", "content_type": "json", "secret": "whsec-42", "insecure_ssl": "0" }
        })
    );
    // Only pushes: GitHub has no separate tag event, so push it is.
    client.create_webhook("octocat/Hello-World", "https://ci.example.com/h", "s", &[HookEvent::TagPush]).await.unwrap();
    assert_eq!(mock.seen()[1].json()["events"], json!(["push"]));
}

#[tokio::test]
async fn a_refused_token_is_named_and_never_shown() {
    let mock = Mock::start(github_router).await;
    let err = mock.client(Provider::GitHub, Some("ghp_wrongwrongwrong")).repositories().await.unwrap_err();
    assert!(matches!(err, ProviderError::Unauthorized { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("the binding's token was refused by GitHub (401 Unauthorized)"), "{text}");
    assert!(!text.contains("Bad credentials"), "the provider's text is not repeated: {text}");
    assert!(!text.contains("ghp_wrongwrongwrong") && !format!("{err:?}").contains("ghp_wrongwrongwrong"));
    assert_eq!(err.status(), Some(401));
}

#[tokio::test]
async fn no_token_means_no_request() {
    let mock = Mock::start(github_router).await;
    for provider in Provider::ALL {
        let client = mock.client(provider, None);
        assert_eq!(client.repositories().await.unwrap_err(), ProviderError::NoToken { provider });
        assert_eq!(client.branches("a/b").await.unwrap_err(), ProviderError::NoToken { provider });
    }
    assert!(mock.seen().is_empty());
}

#[tokio::test]
async fn bad_repository_names_are_refused_before_any_request() {
    let mock = Mock::start(github_router).await;
    for provider in Provider::ALL {
        let client = mock.client(provider, Some(TOKEN));
        for bad in ["no-slash-here", "../etc/passwd", "a/b?x=1", "a/b c", "a//b", ""] {
            let err = client.branches(bad).await.unwrap_err();
            assert!(matches!(err, ProviderError::Invalid(_)), "{provider} {bad}: {err:?}");
            let err = client.create_webhook(bad, "https://ci.example.com/h", "s", &HookEvent::ALL).await.unwrap_err();
            assert!(matches!(err, ProviderError::Invalid(_)), "{provider} {bad}: {err:?}");
        }
    }
    assert!(mock.seen().is_empty());
}

#[tokio::test]
async fn rate_limits_say_when_to_try_again() {
    let mock = Mock::start(|_| {
        Router::new()
            .route(
                "/api/v3/user/repos",
                get(|| async {
                    answer(
                        403,
                        &[("x-ratelimit-limit", "5000".into()), ("x-ratelimit-remaining", "0".into()), ("retry-after", "60".into())],
                        json!({ "message": "API rate limit exceeded for user ID 1.", "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api" }),
                    )
                }),
            )
            .route(
                "/api/v4/projects",
                get(|| async { answer(429, &[("retry-after", "7".into())], json!({ "message": "Retry later" })) }),
            )
    })
    .await;
    let err = mock.client(Provider::GitHub, Some(TOKEN)).repositories().await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::RateLimited { retry_after_secs: Some(60), message, .. } if message == "403 Forbidden"),
        "{err:?}"
    );
    assert!(err.to_string().contains("try again in 60 s"), "{err}");
    let err = mock.client(Provider::GitLab, Some(TOKEN)).repositories().await.unwrap_err();
    assert!(matches!(err, ProviderError::RateLimited { retry_after_secs: Some(7), .. }), "{err:?}");
}

#[tokio::test]
async fn error_bodies_are_never_repeated_only_the_status() {
    let mock = Mock::start(|_| {
        Router::new()
            .route(
                "/api/v4/projects",
                get(|| async {
                    (
                        StatusCode::BAD_GATEWAY,
                        [("content-type", "text/html")],
                        "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
                    )
                }),
            )
            .route("/api/v5/user/repos", get(|| async { (StatusCode::OK, "<html>maintenance</html>") }))
            .route("/api/v3/user/repos", get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "") }))
    })
    .await;
    let err = mock.client(Provider::GitLab, Some(TOKEN)).repositories().await.unwrap_err();
    assert_eq!(err, ProviderError::Status { provider: Provider::GitLab, status: 502, message: "Bad Gateway".into() });
    assert_eq!(err.to_string(), "GitLab answered 502 Bad Gateway (the server log has its answer)");
    assert!(!format!("{err:?}").contains("nginx"));
    // A success that is not the documented JSON: said so, without the body.
    let err = mock.client(Provider::Gitee, Some(TOKEN)).repositories().await.unwrap_err();
    assert!(matches!(&err, ProviderError::Unexpected { .. }), "{err:?}");
    assert!(!format!("{err:?}").contains("maintenance") && !err.to_string().contains(TOKEN), "{err:?}");
    // No body at all: the status's reason.
    let err = mock.client(Provider::GitHub, Some(TOKEN)).repositories().await.unwrap_err();
    assert_eq!(err.to_string(), "GitHub answered 500 Internal Server Error (the server log has its answer)");
}

#[tokio::test]
async fn an_unreachable_provider_is_a_network_error_without_the_token() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = ProviderClient::new(Provider::Gitee, Some(&format!("http://127.0.0.1:{port}")), Some(TOKEN)).unwrap();
    let allowed = client.clone().with_http(&loopback_allowed());
    let err = allowed.repositories().await.unwrap_err();
    assert!(matches!(&err, ProviderError::Network { host, .. } if host == "127.0.0.1"), "{err:?}");
    // Without an admin's allow-list, loopback is refused before any connection is tried.
    let err = client.repositories().await.unwrap_err();
    assert!(matches!(&err, ProviderError::Refused { .. }), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1 is a loopback address") && err.to_string().contains("outbound_allow"));
    assert!(!err.to_string().contains(TOKEN) && !format!("{err:?}").contains(TOKEN), "{err}");
}

// ---------------------------------------------------------------------------------
// GitLab, as docs.gitlab.com documents it

fn gitlab_project(id: u64, path: &str, visibility: &str, default_branch: Option<&str>) -> Value {
    let name = path.rsplit('/').next().unwrap();
    json!({
        "id": id, "description": null, "name": name, "name_with_namespace": path.replace('/', " / "),
        "path": name, "path_with_namespace": path, "created_at": "2013-09-30T13:46:02Z",
        "default_branch": default_branch, "tag_list": [], "topics": [],
        "ssh_url_to_repo": format!("git@gitlab.example.com:{path}.git"),
        "http_url_to_repo": format!("https://gitlab.example.com/{path}.git"),
        "web_url": format!("https://gitlab.example.com/{path}"),
        "visibility": visibility, "archived": false, "empty_repo": default_branch.is_none(),
        "namespace": { "id": 3, "name": "Diaspora", "path": "diaspora", "kind": "group", "full_path": "diaspora" },
        "last_activity_at": "2013-09-30T13:46:02Z"
    })
}

fn gitlab_router(_base: String) -> Router {
    let pages = [
        vec![
            gitlab_project(4, "diaspora/diaspora-client", "private", Some("main")),
            gitlab_project(5, "diaspora/infra/deploy", "internal", Some("main")),
        ],
        vec![gitlab_project(6, "diaspora/puppet", "public", None)],
    ];
    Router::new()
        .route(
            "/oauth/token",
            post(|request: Request| async move {
                let body = axum::body::to_bytes(request.into_body(), 1 << 20).await.unwrap();
                let form = decode_form(std::str::from_utf8(&body).unwrap());
                let field = |k: &str| form.get(k).map(String::as_str);
                if field("grant_type") == Some("refresh_token") {
                    // GitLab: a refresh token works once and comes back renewed.
                    return if field("refresh_token") == Some("8257e65c97202ed1726cf9571600918f3bffb2544b26e00a61df9897668c33a1")
                        && field("client_id") == Some(CLIENT_ID)
                        && field("client_secret") == Some(CLIENT_SECRET)
                        && field("redirect_uri") == Some(REDIRECT)
                    {
                        answer(200, &[], json!({
                            "access_token": "c97d1fe52119f38c7f67f0a14db68d60caa35ddc86fd12401718b649dcfa9c68",
                            "token_type": "bearer", "expires_in": 7200,
                            "refresh_token": "803c1fd487fec35562c205dac93e9d8e08f9d3652a24079d704df3039df1158f",
                            "created_at": 1628711391
                        }))
                    } else {
                        answer(400, &[], json!({ "error": "invalid_grant", "error_description": "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client." }))
                    };
                }
                if form.get("code").map(String::as_str) == Some(CODE) {
                    answer(200, &[], json!({
                        "access_token": "de6780bc506a0446309bd9362820ba8aed28aa506c71eedbe1c5c4f9dd350e54",
                        "token_type": "bearer", "expires_in": 7200,
                        "refresh_token": "8257e65c97202ed1726cf9571600918f3bffb2544b26e00a61df9897668c33a1",
                        "scope": "api", "created_at": 1607635748
                    }))
                } else {
                    answer(400, &[], json!({
                        "error": "invalid_grant",
                        "error_description": "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client."
                    }))
                }
            }),
        )
        .route(
            "/api/v4/projects",
            get(move |headers: HeaderMap, Query(query): Query<HashMap<String, String>>| async move {
                if !bearer_ok(&headers) {
                    return answer(401, &[], json!({ "message": "401 Unauthorized" }));
                }
                let page = page_of(&query);
                let next = if page < pages.len() { (page + 1).to_string() } else { String::new() };
                let items = pages.get(page - 1).cloned().unwrap_or_default();
                let headers = [
                    ("x-page", page.to_string()),
                    ("x-per-page", query["per_page"].clone()),
                    ("x-next-page", next),
                    ("x-prev-page", if page > 1 { (page - 1).to_string() } else { String::new() }),
                    ("x-total", "3".into()),
                    ("x-total-pages", pages.len().to_string()),
                ];
                answer(200, &headers, Value::Array(items))
            }),
        )
        .route(
            "/api/v4/projects/{id}/repository/branches",
            get(|headers: HeaderMap, Path(id): Path<String>| async move {
                if !bearer_ok(&headers) {
                    return answer(401, &[], json!({ "message": "401 Unauthorized" }));
                }
                if id != "diaspora/infra/deploy" && id != "5" {
                    return answer(404, &[], json!({ "message": "404 Project Not Found" }));
                }
                let branch = |name: &str, default: bool| json!({
                    "name": name, "merged": false, "protected": default, "default": default,
                    "developers_can_push": false, "developers_can_merge": false, "can_push": true,
                    "web_url": format!("https://gitlab.example.com/diaspora/infra/deploy/-/tree/{name}"),
                    "commit": { "id": "7b5c3cc8be40ee161ae89a06bba6229da1032a0c", "short_id": "7b5c3cc",
                                "title": "add projects API", "author_name": "John Smith",
                                "committed_date": "2012-06-27T05:51:39-07:00" }
                });
                answer(200, &[("x-next-page", String::new())], json!([branch("main", true), branch("release/1.0", false)]))
            }),
        )
        .route(
            "/api/v4/projects/{id}/hooks",
            post(|headers: HeaderMap, Path(id): Path<String>, request: Request| async move {
                if !bearer_ok(&headers) {
                    return answer(401, &[], json!({ "message": "401 Unauthorized" }));
                }
                let body = axum::body::to_bytes(request.into_body(), 1 << 20).await.unwrap();
                let sent: Value = serde_json::from_slice(&body).unwrap();
                answer(201, &[], json!({
                    "id": 1, "url": sent["url"], "project_id": 5, "name": null, "push_events": sent["push_events"],
                    "tag_push_events": sent["tag_push_events"], "merge_requests_events": sent["merge_requests_events"],
                    "enable_ssl_verification": true, "created_at": "2012-10-12T17:04:47Z", "path": id
                }))
            }),
        )
}

#[tokio::test]
async fn gitlab_authorize_and_token_exchange() {
    let mock = Mock::start(gitlab_router).await;
    let client = mock.client(Provider::GitLab, None);
    let url = reqwest::Url::parse(&client.authorize_url(CLIENT_ID, REDIRECT, "st-2")).unwrap();
    assert_eq!(url.as_str().split('?').next().unwrap(), format!("{}/oauth/authorize", mock.base));
    let query: HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(
        query,
        HashMap::from([
            ("client_id".to_owned(), CLIENT_ID.to_owned()),
            ("redirect_uri".to_owned(), REDIRECT.to_owned()),
            ("response_type".to_owned(), "code".to_owned()),
            ("state".to_owned(), "st-2".to_owned()),
            ("scope".to_owned(), "api".to_owned()),
        ])
    );

    let token = client.exchange_code(CLIENT_ID, CLIENT_SECRET, CODE, REDIRECT).await.unwrap();
    assert_eq!(token.access_token, "de6780bc506a0446309bd9362820ba8aed28aa506c71eedbe1c5c4f9dd350e54");
    let seen = mock.seen();
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("POST", "/oauth/token"));
    let form = seen[0].form();
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["client_id"], CLIENT_ID);
    assert_eq!(form["client_secret"], CLIENT_SECRET);
    assert_eq!(form["code"], CODE);
    assert_eq!(form["redirect_uri"], REDIRECT);

    let err = client.exchange_code(CLIENT_ID, CLIENT_SECRET, "used-code", REDIRECT).await.unwrap_err();
    assert!(matches!(err, ProviderError::OAuth { .. }), "{err:?}");
    assert!(err.to_string().contains("invalid_grant"), "{err}");
    assert!(!err.to_string().contains(CLIENT_SECRET) && !err.to_string().contains("used-code"), "{err}");
}

#[tokio::test]
async fn gitlab_projects_follow_x_next_page() {
    let mock = Mock::start(gitlab_router).await;
    let client = mock.client(Provider::GitLab, Some(TOKEN)).with_paging(2, 20);
    let repos = client.repositories().await.unwrap();
    assert_eq!(
        repos,
        [
            Repo {
                full_name: "diaspora/diaspora-client".into(),
                clone_url: "https://gitlab.example.com/diaspora/diaspora-client.git".into(),
                ssh_url: "git@gitlab.example.com:diaspora/diaspora-client.git".into(),
                default_branch: Some("main".into()),
                private: true,
            },
            Repo {
                full_name: "diaspora/infra/deploy".into(),
                clone_url: "https://gitlab.example.com/diaspora/infra/deploy.git".into(),
                ssh_url: "git@gitlab.example.com:diaspora/infra/deploy.git".into(),
                default_branch: Some("main".into()),
                private: true,
            },
            Repo {
                full_name: "diaspora/puppet".into(),
                clone_url: "https://gitlab.example.com/diaspora/puppet.git".into(),
                ssh_url: "git@gitlab.example.com:diaspora/puppet.git".into(),
                default_branch: None,
                private: false,
            },
        ]
    );
    let seen = mock.seen();
    assert_eq!(seen.len(), 2, "the empty X-Next-Page of page 2 ends the list");
    for (i, request) in seen.iter().enumerate() {
        assert_eq!(request.path, "/api/v4/projects");
        assert_eq!(request.query["page"], (i + 1).to_string());
        assert_eq!(request.query["membership"], "true");
        assert_eq!(request.header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
        assert!(request.header("private-token").is_none());
    }
}

#[tokio::test]
async fn gitlab_branches_encode_the_project_path_as_one_segment() {
    let mock = Mock::start(gitlab_router).await;
    let client = mock.client(Provider::GitLab, Some(TOKEN));
    assert_eq!(client.branches("diaspora/infra/deploy").await.unwrap(), ["main", "release/1.0"]);
    assert_eq!(client.branches("5").await.unwrap(), ["main", "release/1.0"]);
    let seen = mock.seen();
    assert_eq!(seen[0].path, "/api/v4/projects/diaspora%2Finfra%2Fdeploy/repository/branches");
    assert_eq!(seen[1].path, "/api/v4/projects/5/repository/branches");
    let err = client.branches("diaspora/gone").await.unwrap_err();
    assert!(matches!(err, ProviderError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn gitlab_webhook_sets_the_token_and_event_flags() {
    let mock = Mock::start(gitlab_router).await;
    let client = mock.client(Provider::GitLab, Some(TOKEN));
    client
        .create_webhook(
            "diaspora/infra/deploy",
            "https://ci.example.com/hooks/gitlab/gl",
            "glsec",
            &[HookEvent::Push, HookEvent::MergeRequest],
        )
        .await
        .unwrap();
    let seen = mock.seen();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", "/api/v4/projects/diaspora%2Finfra%2Fdeploy/hooks")
    );
    assert_eq!(
        seen[0].json(),
        json!({
            "url": "https://ci.example.com/hooks/gitlab/gl", "token": "glsec", "push_events": true,
            "tag_push_events": false, "merge_requests_events": true, "enable_ssl_verification": true
        })
    );
}

#[tokio::test]
async fn gitlab_refused_token() {
    let mock = Mock::start(gitlab_router).await;
    let err = mock.client(Provider::GitLab, Some("glpat-wrong-token-xyz")).branches("5").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the binding's token was refused by GitLab (401 Unauthorized); connect the binding again or set a new token"
    );
}

// ---------------------------------------------------------------------------------
// Gitee, as gitee.com/api/v5/swagger and its OAuth page document it

fn gitee_repo(full_name: &str, private: bool) -> Value {
    let (owner, name) = full_name.split_once('/').unwrap();
    json!({
        "id": 1234567, "full_name": full_name, "human_name": format!("{owner}/{name}"),
        "url": format!("https://gitee.com/api/v5/repos/{full_name}"),
        "namespace": { "id": 1, "type": "personal", "name": owner, "path": owner, "html_url": format!("https://gitee.com/{owner}") },
        "path": name, "name": name, "owner": { "id": 1, "login": owner, "name": owner },
        "description": "", "private": private, "public": !private, "internal": false, "fork": false,
        "html_url": format!("https://gitee.com/{full_name}.git"),
        "ssh_url": format!("git@gitee.com:{full_name}.git"),
        "default_branch": "master", "created_at": "2020-01-01T10:00:00+08:00", "updated_at": "2020-01-01T10:00:00+08:00"
    })
}

fn gitee_token_ok(query: &HashMap<String, String>) -> bool {
    query.get("access_token").map(String::as_str) == Some(TOKEN)
}

fn gitee_router(_base: String) -> Router {
    let pages = [
        vec![gitee_repo("oschina/git-osc", false), gitee_repo("oschina/gitee-go", true)],
        vec![gitee_repo("wharf/pipeline-demo", true)],
    ];
    Router::new()
        .route(
            "/oauth/token",
            post(|Query(query): Query<HashMap<String, String>>, request: Request| async move {
                let body = axum::body::to_bytes(request.into_body(), 1 << 20).await.unwrap();
                let form = decode_form(std::str::from_utf8(&body).unwrap());
                if query.get("grant_type").map(String::as_str) == Some("refresh_token") {
                    return if query.get("refresh_token").map(String::as_str) == Some("f6e5d4c3b2a1f6e5d4c3b2a1f6e5d4c3b2a1") {
                        answer(200, &[], json!({
                            "access_token": "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "token_type": "bearer", "expires_in": 86400,
                            "refresh_token": "9a8b7c6d5e4f9a8b7c6d5e4f9a8b7c6d5e4f", "scope": "user_info projects hook",
                            "created_at": 1700086400
                        }))
                    } else {
                        answer(401, &[], json!({ "error": "invalid_grant", "error_description": "授权方式无效，或者登录回调地址无效、过期或已被撤销" }))
                    };
                }
                if query.get("code").map(String::as_str) == Some(CODE)
                    && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
                {
                    answer(200, &[], json!({
                        "access_token": "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6", "token_type": "bearer", "expires_in": 86400,
                        "refresh_token": "f6e5d4c3b2a1f6e5d4c3b2a1f6e5d4c3b2a1", "scope": "user_info projects hook",
                        "created_at": 1700000000
                    }))
                } else {
                    answer(401, &[], json!({ "error": "invalid_grant", "error_description": "授权方式无效，或者登录回调地址无效、过期或已被撤销" }))
                }
            }),
        )
        .route(
            "/api/v5/user/repos",
            get(move |Query(query): Query<HashMap<String, String>>| async move {
                if !gitee_token_ok(&query) {
                    return answer(401, &[], json!({ "message": "401 Unauthorized: Access token does not exist" }));
                }
                let page = page_of(&query);
                let items = pages.get(page - 1).cloned().unwrap_or_default();
                answer(200, &[("total_count", "3".into()), ("total_page", pages.len().to_string())], Value::Array(items))
            }),
        )
        .route(
            "/api/v5/repos/{owner}/{repo}/branches",
            get(|Query(query): Query<HashMap<String, String>>| async move {
                if !gitee_token_ok(&query) {
                    return answer(401, &[], json!({ "message": "401 Unauthorized: Access token does not exist" }));
                }
                let branch = |name: &str| json!({ "name": name, "commit": { "sha": "a3f1b2c", "url": "https://gitee.com/api/v5/repos/oschina/git-osc/commits/a3f1b2c" }, "protected": false, "protection_url": "https://gitee.com/api/v5/repos/oschina/git-osc/branches/master/protection" });
                // A short page: the last one.
                answer(200, &[], json!([branch("master"), branch("develop")]))
            }),
        )
        .route(
            "/api/v5/repos/{owner}/{repo}/hooks",
            post(|Query(query): Query<HashMap<String, String>>, request: Request| async move {
                if !gitee_token_ok(&query) {
                    return answer(401, &[], json!({ "message": "401 Unauthorized: Access token does not exist" }));
                }
                let body = axum::body::to_bytes(request.into_body(), 1 << 20).await.unwrap();
                let sent: Value = serde_json::from_slice(&body).unwrap();
                answer(201, &[], json!({
                    "id": 1, "url": sent["url"], "created_at": "2024-01-01T00:00:00+08:00", "password": sent["password"],
                    "project_id": 1234567, "result": "", "result_code": null, "push_events": sent["push_events"],
                    "tag_push_events": sent["tag_push_events"], "issues_events": false, "note_events": false,
                    "merge_requests_events": sent["merge_requests_events"]
                }))
            }),
        )
}

#[tokio::test]
async fn gitee_token_exchange_keeps_the_secret_in_the_body() {
    let mock = Mock::start(gitee_router).await;
    let client = mock.client(Provider::Gitee, None);
    let url = reqwest::Url::parse(&client.authorize_url(CLIENT_ID, REDIRECT, "st-3")).unwrap();
    assert_eq!(url.path(), "/oauth/authorize");
    let query: HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!((query["response_type"].as_str(), query["state"].as_str()), ("code", "st-3"));

    let token = client.exchange_code(CLIENT_ID, CLIENT_SECRET, CODE, REDIRECT).await.unwrap();
    assert_eq!(token.access_token, "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6");
    let seen = mock.seen();
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("POST", "/oauth/token"));
    assert_eq!(seen[0].query["grant_type"], "authorization_code");
    assert_eq!(seen[0].query["code"], CODE);
    assert_eq!(seen[0].query["client_id"], CLIENT_ID);
    assert_eq!(seen[0].query["redirect_uri"], REDIRECT);
    assert!(!seen[0].query.contains_key("client_secret"));
    assert_eq!(seen[0].form()["client_secret"], CLIENT_SECRET);

    let err = client.exchange_code(CLIENT_ID, "wrong-secret", CODE, REDIRECT).await.unwrap_err();
    assert!(matches!(err, ProviderError::OAuth { .. }) && err.to_string().contains("invalid_grant"), "{err}");
}

#[tokio::test]
async fn gitee_repositories_use_total_page_and_the_access_token_parameter() {
    let mock = Mock::start(gitee_router).await;
    let client = mock.client(Provider::Gitee, Some(TOKEN)).with_paging(2, 20);
    let repos = client.repositories().await.unwrap();
    let names: Vec<&str> = repos.iter().map(|r| r.full_name.as_str()).collect();
    assert_eq!(names, ["oschina/git-osc", "oschina/gitee-go", "wharf/pipeline-demo"]);
    assert_eq!(repos[2].clone_url, "https://gitee.com/wharf/pipeline-demo.git");
    assert_eq!(repos[2].ssh_url, "git@gitee.com:wharf/pipeline-demo.git");
    assert!(repos[2].private && !repos[0].private);
    let seen = mock.seen();
    assert_eq!(seen.len(), 2, "total_page: 2");
    for (i, request) in seen.iter().enumerate() {
        assert_eq!(request.path, "/api/v5/user/repos");
        assert_eq!(request.query["page"], (i + 1).to_string());
        assert_eq!(request.query["access_token"], TOKEN);
        assert!(request.header("authorization").is_none());
    }
}

#[tokio::test]
async fn gitee_branches_and_signed_webhook() {
    let mock = Mock::start(gitee_router).await;
    let client = mock.client(Provider::Gitee, Some(TOKEN));
    assert_eq!(client.branches("oschina/git-osc").await.unwrap(), ["master", "develop"]);
    client
        .create_webhook("oschina/git-osc", "https://ci.example.com/hooks/gitee/ge", "geesec", &HookEvent::ALL)
        .await
        .unwrap();
    let seen = mock.seen();
    assert_eq!(seen.len(), 2, "a short branch page is the last");
    assert_eq!(seen[0].path, "/api/v5/repos/oschina/git-osc/branches");
    assert_eq!((seen[1].method.as_str(), seen[1].path.as_str()), ("POST", "/api/v5/repos/oschina/git-osc/hooks"));
    assert_eq!(seen[1].query["access_token"], TOKEN);
    assert_eq!(
        seen[1].json(),
        json!({
            "url": "https://ci.example.com/hooks/gitee/ge", "encryption_type": 1, "password": "geesec",
            "push_events": true, "tag_push_events": true, "merge_requests_events": true,
            "issues_events": false, "note_events": false
        })
    );
}

#[tokio::test]
async fn gitee_refused_token_is_not_echoed_from_the_address() {
    let mock = Mock::start(gitee_router).await;
    let err = mock.client(Provider::Gitee, Some("gitee-wrong-token")).repositories().await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("the binding's token was refused by Gitee (401 Unauthorized); connect the binding again"),
        "{text}"
    );
    assert!(!text.contains("gitee-wrong-token"), "{text}");
}

#[tokio::test]
async fn https_without_tls_support_says_so() {
    // Without a TLS feature in reqwest, the connector refuses https before connecting;
    // with one, nothing listens on port 1. Either way a network error, without the token.
    let client = ProviderClient::new(Provider::GitLab, Some("https://127.0.0.1:1"), Some(TOKEN))
        .unwrap()
        .with_http(&loopback_allowed());
    let err = client.repositories().await.unwrap_err();
    assert!(matches!(err, ProviderError::Network { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("no TLS support") || text.contains("refused"), "{text}");
    assert!(!text.contains(TOKEN));
}

#[tokio::test]
async fn gitlab_grants_expire_and_refresh_with_the_redirect_uri() {
    let mock = Mock::start(gitlab_router).await;
    let client = mock.client(Provider::GitLab, None);
    let grant = client.exchange_code(CLIENT_ID, CLIENT_SECRET, CODE, REDIRECT).await.unwrap();
    assert_eq!(grant.expires_in, Some(7200));
    let refresh = grant.refresh_token.clone().expect("GitLab issues a refresh token");
    assert!(!format!("{grant:?}").contains(&refresh), "Debug hides the tokens");
    let renewed = client.refresh(CLIENT_ID, CLIENT_SECRET, &refresh, REDIRECT).await.unwrap();
    assert_eq!(renewed.access_token, "c97d1fe52119f38c7f67f0a14db68d60caa35ddc86fd12401718b649dcfa9c68");
    assert_eq!(
        renewed.refresh_token.as_deref(),
        Some("803c1fd487fec35562c205dac93e9d8e08f9d3652a24079d704df3039df1158f")
    );
    let form = mock.seen()[1].form();
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["refresh_token"], refresh);
    assert_eq!(form["redirect_uri"], REDIRECT);
    // A used (or revoked) refresh token is an OAuth error that shows neither token.
    let err = client.refresh(CLIENT_ID, CLIENT_SECRET, "revoked-refresh-token", REDIRECT).await.unwrap_err();
    assert!(matches!(err, ProviderError::OAuth { .. }), "{err:?}");
    assert!(err.to_string().contains("invalid_grant") && !err.to_string().contains("revoked-refresh-token"));
}

#[tokio::test]
async fn gitee_refresh_sends_only_the_refresh_token() {
    let mock = Mock::start(gitee_router).await;
    let client = mock.client(Provider::Gitee, None);
    let grant = client.exchange_code(CLIENT_ID, CLIENT_SECRET, CODE, REDIRECT).await.unwrap();
    assert_eq!(grant.expires_in, Some(86400));
    let renewed =
        client.refresh(CLIENT_ID, CLIENT_SECRET, grant.refresh_token.as_deref().unwrap(), REDIRECT).await.unwrap();
    assert_eq!(renewed.access_token, "0f1e2d3c4b5a69788796a5b4c3d2e1f0");
    let seen = &mock.seen()[1];
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("POST", "/oauth/token"));
    assert_eq!(seen.query["grant_type"], "refresh_token");
    assert_eq!(seen.query["refresh_token"], "f6e5d4c3b2a1f6e5d4c3b2a1f6e5d4c3b2a1");
    assert!(!seen.body.contains(CLIENT_SECRET) && !seen.query.contains_key("client_secret"));
}
