//! A local stand-in for the code-hosting providers' APIs, answering as GitHub
//! (Enterprise Server layout: `/api/v3`, `/login/oauth/…`), GitLab (`/api/v4`,
//! `/oauth/…`) and Gitee (`/api/v5`, `/oauth/…`) document them, all on one loopback
//! port. A binding whose `url` is [`MockProvider::base`] talks to it. Every request is
//! recorded for the tests to check.
//!
//! The authorize pages act as a person who approves at once: they redirect the
//! browser to `redirect_uri?code=CODE&state=…`.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wharf_store::bindings::{Binding, NewBinding};

/// A personal access token the mock accepts.
pub const PAT: &str = "pat-0a1b2c3d4e5f60718293";
/// The token the mock issues for [`CODE`].
pub const OAUTH_TOKEN: &str = "oauth-9f8e7d6c5b4a39281706";
/// What GitLab and Gitee's token endpoints issue on a refresh (accepted like the others).
pub const REFRESHED_TOKEN: &str = "oauth-refreshed-4a5b6c7d8e9f";
/// The refresh token issued with [`OAUTH_TOKEN`].
pub const REFRESH_TOKEN: &str = "refresh-1";
/// The one authorization code the mock's token endpoints accept.
pub const CODE: &str = "code-5e6f7a8b9c0d";
pub const CLIENT_ID: &str = "client-id-1234";
pub const CLIENT_SECRET: &str = "client-secret-5678-abcd";
pub const WEBHOOK_SECRET: &str = "webhook-secret-9999";

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    /// As sent, still percent-encoded.
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Seen {
    pub fn form(&self) -> HashMap<String, String> {
        decode_form(&self.body)
    }

    /// The token the request carried: `Authorization: Bearer …` or `?access_token=`.
    pub fn token(&self) -> Option<String> {
        self.headers
            .get("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::to_owned)
            .or_else(|| self.query.get("access_token").cloned())
    }
}

pub struct MockProvider {
    /// `http://127.0.0.1:PORT`: the instance URL to give a binding.
    pub base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl MockProvider {
    pub async fn start() -> MockProvider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let app = router(base.clone()).layer(middleware::from_fn(move |request: Request, next: Next| {
            let record = record.clone();
            async move {
                let (parts, body) = request.into_parts();
                let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                record.lock().unwrap().push(Seen {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    query: decode_form(parts.uri.query().unwrap_or("")),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                        .collect(),
                    body: String::from_utf8_lossy(&bytes).into_owned(),
                });
                next.run(Request::from_parts(parts, Body::from(bytes))).await
            }
        }));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        MockProvider { base, seen }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

/// Creates a binding straight in the store, pointed at `url`, with an OAuth app
/// ([`CLIENT_ID`], [`CLIENT_SECRET`]) and a webhook secret.
pub async fn bind(
    s: &super::TestServer,
    name: &str,
    provider: &str,
    url: Option<&str>,
    token: Option<&str>,
) -> Binding {
    s.server
        .state
        .store
        .create_binding(&NewBinding {
            name: name.to_owned(),
            provider: provider.to_owned(),
            url: url.map(str::to_owned),
            client_id: Some(CLIENT_ID.to_owned()),
            client_secret: Some(CLIENT_SECRET.to_owned()),
            token: token.map(str::to_owned),
            webhook_secret: Some(WEBHOOK_SECRET.to_owned()),
            created_by: "admin".to_owned(),
        })
        .await
        .expect("the binding is stored")
}

/// `application/x-www-form-urlencoded` (and query strings) into a map.
pub fn decode_form(text: &str) -> HashMap<String, String> {
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
        response.headers_mut().insert(header::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
    }
    response
}

fn token_of(headers: &HeaderMap, query: &HashMap<String, String>) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or_else(|| query.get("access_token").cloned())
}

fn accepted(headers: &HeaderMap, query: &HashMap<String, String>) -> bool {
    matches!(token_of(headers, query).as_deref(), Some(PAT) | Some(OAUTH_TOKEN) | Some(REFRESHED_TOKEN))
}

/// The repositories whose hooks the mock keeps, as each provider names them in paths.
const HOOKED: [&str; 3] = ["octocat/Hello-World", "diaspora/infra/deploy", "oschina/git-osc"];

type Hooks = Arc<Mutex<Vec<(String, Value)>>>;

/// `GET` lists the repository's hooks, `POST` adds one (checking the fields each
/// provider requires) and answers it as the provider documents.
async fn hooks(hooks: Hooks, provider: &'static str, repo: String, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let query = decode_form(parts.uri.query().unwrap_or(""));
    if !accepted(&parts.headers, &query) {
        return answer(401, &[], json!({ "message": "401 Unauthorized" }));
    }
    if !HOOKED.contains(&repo.as_str()) {
        return answer(404, &[], json!({ "message": "404 Project Not Found" }));
    }
    if parts.method == axum::http::Method::GET {
        let list: Vec<Value> =
            hooks.lock().unwrap().iter().filter(|(r, _)| *r == repo).map(|(_, h)| h.clone()).collect();
        return answer(200, &[], Value::Array(list));
    }
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let Ok(sent) = serde_json::from_slice::<Value>(&bytes) else {
        return answer(400, &[], json!({ "message": "Problems parsing JSON" }));
    };
    let id = 1000 + hooks.lock().unwrap().len() as u64;
    let hook = match provider {
        "github" => {
            if sent["config"]["url"].as_str().is_none() || sent["name"] != "web" {
                return answer(
                    422,
                    &[],
                    json!({ "message": "Validation Failed", "errors": [{ "resource": "Hook", "code": "custom", "message": "Config must have a url" }] }),
                );
            }
            json!({
                "type": "Repository", "id": id, "name": "web", "active": true, "events": sent["events"],
                "config": { "content_type": "json", "insecure_ssl": "0", "url": sent["config"]["url"] },
                "url": format!("https://api.github.com/repos/{repo}/hooks/{id}"),
                "created_at": "2026-11-22T02:00:00Z", "updated_at": "2026-11-22T02:00:00Z",
                "last_response": { "code": null, "status": "unused", "message": null }
            })
        }
        "gitlab" => {
            if sent["url"].as_str().is_none() {
                return answer(400, &[], json!({ "error": "url is missing" }));
            }
            json!({
                "id": id, "url": sent["url"], "project_id": 5, "push_events": sent["push_events"],
                "tag_push_events": sent["tag_push_events"], "merge_requests_events": sent["merge_requests_events"],
                "enable_ssl_verification": sent["enable_ssl_verification"], "created_at": "2026-11-22T02:00:00Z"
            })
        }
        _ => {
            if sent["url"].as_str().is_none() || sent["password"].as_str().is_none() {
                return answer(400, &[], json!({ "message": "url is missing" }));
            }
            json!({
                "id": id, "url": sent["url"], "password": "", "project_id": 1234567, "result": null,
                "result_code": null, "push_events": sent["push_events"], "tag_push_events": sent["tag_push_events"],
                "issues_events": false, "note_events": false, "merge_requests_events": sent["merge_requests_events"],
                "created_at": "2026-11-22T10:00:00+08:00"
            })
        }
    };
    hooks.lock().unwrap().push((repo, hook.clone()));
    answer(201, &[], hook)
}

fn page_of(query: &HashMap<String, String>) -> usize {
    query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1)
}

/// The approving person: back to `redirect_uri` with the code and the state.
async fn approve(Query(query): Query<HashMap<String, String>>) -> Response {
    let redirect = &query["redirect_uri"];
    let separator = if redirect.contains('?') { '&' } else { '?' };
    let state: String = query["state"].bytes().map(|b| format!("%{b:02X}")).collect();
    let location = format!("{redirect}{separator}code={CODE}&state={state}");
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

fn oauth_ok(params: &HashMap<String, String>) -> bool {
    params.get("code").map(String::as_str) == Some(CODE)
        && params.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && params.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
}

fn router(base: String) -> Router {
    let github_repo = |full_name: &str, private: bool| {
        json!({
            "id": 1296269, "name": full_name.split('/').nth(1), "full_name": full_name, "private": private,
            "owner": { "login": full_name.split('/').next(), "id": 1, "type": "User" },
            "html_url": format!("https://github.com/{full_name}"),
            "clone_url": format!("https://github.com/{full_name}.git"),
            "ssh_url": format!("git@github.com:{full_name}.git"),
            "default_branch": "main", "visibility": if private { "private" } else { "public" }
        })
    };
    let github_pages = [
        vec![github_repo("octocat/Hello-World", false), github_repo("octocat/Spoon-Knife", true)],
        vec![github_repo("octo-org/wharf", false)],
    ];
    let gitlab_project = |path: &str, visibility: &str| {
        json!({
            "id": 5, "name": path.rsplit('/').next(), "path_with_namespace": path,
            "http_url_to_repo": format!("https://gitlab.example.com/{path}.git"),
            "ssh_url_to_repo": format!("git@gitlab.example.com:{path}.git"),
            "web_url": format!("https://gitlab.example.com/{path}"),
            "default_branch": "main", "visibility": visibility
        })
    };
    let gitlab_pages = [
        vec![
            gitlab_project("diaspora/diaspora-client", "private"),
            gitlab_project("diaspora/infra/deploy", "internal"),
        ],
        vec![gitlab_project("diaspora/puppet", "public")],
    ];
    let gitee_repo = |full_name: &str, private: bool| {
        json!({
            "id": 1234567, "full_name": full_name, "path": full_name.split('/').nth(1), "private": private,
            "public": !private, "html_url": format!("https://gitee.com/{full_name}.git"),
            "ssh_url": format!("git@gitee.com:{full_name}.git"), "default_branch": "master"
        })
    };
    let gitee_pages = [
        vec![gitee_repo("oschina/git-osc", false), gitee_repo("oschina/gitee-go", true)],
        vec![gitee_repo("wharf/pipeline-demo", true)],
    ];
    let branch = |name: &str| json!({ "name": name, "commit": { "sha": "c5b97d5ae6c19d5c5df71a34c7fbeeda2479ccbc" }, "protected": false });
    let branches = json!([branch("main"), branch("feature/login")]);
    let (b1, b2, b3) = (branches.clone(), branches.clone(), branches);
    let hooked: Hooks = Arc::default();
    let (h1, h2, h3) = (hooked.clone(), hooked.clone(), hooked);

    Router::new()
        .route(
            "/api/v3/repos/{owner}/{repo}/hooks",
            axum::routing::any(move |Path((owner, repo)): Path<(String, String)>, request: Request| {
                hooks(h1.clone(), "github", format!("{owner}/{repo}"), request)
            }),
        )
        .route(
            "/api/v4/projects/{id}/hooks",
            axum::routing::any(move |Path(id): Path<String>, request: Request| hooks(h2.clone(), "gitlab", id, request)),
        )
        .route(
            "/api/v5/repos/{owner}/{repo}/hooks",
            axum::routing::any(move |Path((owner, repo)): Path<(String, String)>, request: Request| {
                hooks(h3.clone(), "gitee", format!("{owner}/{repo}"), request)
            }),
        )
        // OAuth
        .route("/login/oauth/authorize", get(approve))
        .route("/oauth/authorize", get(approve))
        .route(
            "/login/oauth/access_token",
            post(|body: String| async move {
                if oauth_ok(&decode_form(&body)) {
                    answer(200, &[], json!({ "access_token": OAUTH_TOKEN, "scope": "repo", "token_type": "bearer" }))
                } else {
                    answer(200, &[], json!({ "error": "bad_verification_code", "error_description": "The code passed is incorrect or expired." }))
                }
            }),
        )
        .route(
            "/oauth/token",
            post(|Query(query): Query<HashMap<String, String>>, body: String| async move {
                let mut params = decode_form(&body);
                params.extend(query);
                if params.get("grant_type").map(String::as_str) == Some("refresh_token") {
                    // GitLab sends the client credentials with it, Gitee only the token.
                    return if params.get("refresh_token").map(String::as_str) == Some(REFRESH_TOKEN) {
                        answer(200, &[], json!({ "access_token": REFRESHED_TOKEN, "token_type": "bearer", "expires_in": 7200, "refresh_token": "refresh-2", "created_at": 1607635748 }))
                    } else {
                        answer(400, &[], json!({ "error": "invalid_grant", "error_description": "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client." }))
                    };
                }
                if params.get("grant_type").map(String::as_str) == Some("authorization_code") && oauth_ok(&params) {
                    answer(200, &[], json!({ "access_token": OAUTH_TOKEN, "token_type": "bearer", "expires_in": 7200, "refresh_token": "refresh-1", "created_at": 1607635748 }))
                } else {
                    answer(400, &[], json!({ "error": "invalid_grant", "error_description": "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client." }))
                }
            }),
        )
        // GitHub
        .route(
            "/api/v3/user/repos",
            get(move |headers: HeaderMap, Query(query): Query<HashMap<String, String>>| async move {
                if !accepted(&headers, &query) {
                    return answer(401, &[], json!({ "message": "Bad credentials", "documentation_url": "https://docs.github.com/rest" }));
                }
                let page = page_of(&query);
                let link = |n: usize| format!("<{base}/api/v3/user/repos?page={n}>");
                let links = if page == 1 { format!("{}; rel=\"next\", {}; rel=\"last\"", link(2), link(2)) } else { format!("{}; rel=\"prev\", {}; rel=\"first\"", link(1), link(1)) };
                answer(200, &[("link", links)], Value::Array(github_pages.get(page - 1).cloned().unwrap_or_default()))
            }),
        )
        .route(
            "/api/v3/repos/{owner}/{repo}/branches",
            get(move |headers: HeaderMap, Query(query): Query<HashMap<String, String>>, Path((owner, repo)): Path<(String, String)>| async move {
                if !accepted(&headers, &query) {
                    return answer(401, &[], json!({ "message": "Bad credentials", "documentation_url": "https://docs.github.com/rest" }));
                }
                if format!("{owner}/{repo}") != "octocat/Hello-World" {
                    return answer(404, &[], json!({ "message": "Not Found", "documentation_url": "https://docs.github.com/rest" }));
                }
                answer(200, &[], b1)
            }),
        )
        // GitLab
        .route(
            "/api/v4/projects",
            get(move |headers: HeaderMap, Query(query): Query<HashMap<String, String>>| async move {
                if !accepted(&headers, &query) {
                    return answer(401, &[], json!({ "message": "401 Unauthorized" }));
                }
                let page = page_of(&query);
                let next = if page < gitlab_pages.len() { (page + 1).to_string() } else { String::new() };
                answer(200, &[("x-next-page", next), ("x-page", page.to_string())], Value::Array(gitlab_pages.get(page - 1).cloned().unwrap_or_default()))
            }),
        )
        .route(
            "/api/v4/projects/{id}/repository/branches",
            get(move |headers: HeaderMap, Query(query): Query<HashMap<String, String>>, Path(id): Path<String>| async move {
                if !accepted(&headers, &query) {
                    return answer(401, &[], json!({ "message": "401 Unauthorized" }));
                }
                if id != "diaspora/infra/deploy" {
                    return answer(404, &[], json!({ "message": "404 Project Not Found" }));
                }
                answer(200, &[("x-next-page", String::new())], b2)
            }),
        )
        // Gitee
        .route(
            "/api/v5/user/repos",
            get(move |headers: HeaderMap, Query(query): Query<HashMap<String, String>>| async move {
                if !accepted(&headers, &query) {
                    return answer(401, &[], json!({ "message": "401 Unauthorized: Access token does not exist" }));
                }
                let page = page_of(&query);
                answer(200, &[("total_count", "3".into()), ("total_page", gitee_pages.len().to_string())], Value::Array(gitee_pages.get(page - 1).cloned().unwrap_or_default()))
            }),
        )
        .route(
            "/api/v5/repos/{owner}/{repo}/branches",
            get(move |headers: HeaderMap, Query(query): Query<HashMap<String, String>>, Path((owner, repo)): Path<(String, String)>| async move {
                if !accepted(&headers, &query) {
                    return answer(401, &[], json!({ "message": "401 Unauthorized: Access token does not exist" }));
                }
                if format!("{owner}/{repo}") != "oschina/git-osc" {
                    return answer(404, &[], json!({ "message": "Not Found Project" }));
                }
                answer(200, &[], b3)
            }),
        )
}
