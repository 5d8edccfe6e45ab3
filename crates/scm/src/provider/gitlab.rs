//! GitLab (gitlab.com or a self-managed instance): REST API v4 as documented at
//! docs.gitlab.com/api, OAuth 2 authorization code flow (`/oauth/authorize`,
//! `/oauth/token`). The token goes in `Authorization: Bearer`, which GitLab accepts
//! for OAuth tokens and personal/project/group access tokens alike.

use super::{HookEvent, Next, ProviderError, Repo, event_flags, join, path_segment_ok, set_query};
use reqwest::Url;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

/// `api` is needed to create webhooks (`read_api` would do for listing).
const SCOPE: &str = "api";

pub(super) fn authorize_url(web: &Url, client_id: &str, redirect_uri: &str, state: &str) -> Url {
    super::standard_authorize_url(web, client_id, redirect_uri, state, SCOPE)
}

/// `POST /oauth/token` with `grant_type=authorization_code`, form-encoded.
pub(super) fn token_request<'a>(
    web: &Url,
    client_id: &'a str,
    client_secret: &'a str,
    code: &'a str,
    redirect_uri: &'a str,
) -> (Url, Vec<(&'a str, &'a str)>) {
    let url = join(web, &["oauth", "token"]);
    let form = vec![
        ("client_id", client_id),
        ("client_secret", client_secret),
        ("code", code),
        ("grant_type", "authorization_code"),
        ("redirect_uri", redirect_uri),
    ];
    (url, form)
}

/// `POST /oauth/token` with `grant_type=refresh_token`; GitLab asks for the
/// authorization's `redirect_uri` again. Access tokens live two hours.
pub(super) fn refresh_request<'a>(
    web: &Url,
    client_id: &'a str,
    client_secret: &'a str,
    refresh_token: &'a str,
    redirect_uri: &'a str,
) -> (Url, Vec<(&'a str, &'a str)>) {
    let url = join(web, &["oauth", "token"]);
    let form = vec![
        ("client_id", client_id),
        ("client_secret", client_secret),
        ("refresh_token", refresh_token),
        ("grant_type", "refresh_token"),
        ("redirect_uri", redirect_uri),
    ];
    (url, form)
}

/// `GET /projects?membership=true`: projects the user is a member of.
pub(super) fn repos_url(api: &Url) -> Url {
    let mut url = join(api, &["projects"]);
    set_query(&mut url, &[("membership", "true"), ("order_by", "path"), ("sort", "asc")]);
    url
}

#[derive(Deserialize)]
struct Project {
    path_with_namespace: String,
    http_url_to_repo: String,
    ssh_url_to_repo: String,
    default_branch: Option<String>,
    /// `public`, `internal` or `private`.
    visibility: Option<String>,
}

pub(super) fn repo(item: Value) -> Result<Repo, serde_json::Error> {
    let p: Project = serde_json::from_value(item)?;
    Ok(Repo {
        full_name: p.path_with_namespace,
        clone_url: p.http_url_to_repo,
        ssh_url: p.ssh_url_to_repo,
        default_branch: p.default_branch,
        private: p.visibility.as_deref() != Some("public"),
    })
}

/// A project's id as the API takes it: the numeric id, or the full path
/// (`group/sub/project`), which becomes one URL-encoded segment (`group%2Fsub%2Fproject`).
fn project(repo: &str) -> Result<&str, ProviderError> {
    let numeric = !repo.is_empty() && repo.len() <= 20 && repo.bytes().all(|b| b.is_ascii_digit());
    let segments: Vec<&str> = repo.split('/').collect();
    let path = segments.len() >= 2 && segments.len() <= 20 && segments.iter().all(|s| path_segment_ok(s));
    if numeric || path {
        Ok(repo)
    } else {
        Err(ProviderError::Invalid(format!(
            "`{repo}` is not a GitLab project: expected its full path `group/project` (subgroups allowed) \
             or its numeric id"
        )))
    }
}

/// `GET /projects/{id}/repository/branches`
pub(super) fn branches_url(api: &Url, repo: &str) -> Result<Url, ProviderError> {
    Ok(join(api, &["projects", project(repo)?, "repository", "branches"]))
}

/// `POST /projects/{id}/hooks`
pub(super) fn hooks_url(api: &Url, repo: &str) -> Result<Url, ProviderError> {
    Ok(join(api, &["projects", project(repo)?, "hooks"]))
}

/// A project hook that sends the secret back as `X-Gitlab-Token`.
pub(super) fn hook_body(url: &str, secret: &str, events: &[HookEvent]) -> Value {
    let mut body = event_flags(events);
    body.insert("url".into(), url.into());
    body.insert("token".into(), secret.into());
    body.insert("enable_ssl_verification".into(), true.into());
    Value::Object(body)
}

/// `X-Next-Page`: the next page's number, empty on the last page. Without the header
/// (a proxy that drops it), a full page means there may be another.
pub(super) fn next_page(headers: &HeaderMap, number: u32, count: usize, per_page: u32) -> Option<Next> {
    match headers.get("x-next-page").and_then(|v| v.to_str().ok()).map(str::trim) {
        Some(next) => next.parse::<u32>().ok().filter(|&n| n > number).map(Next::Page),
        None => (count >= per_page as usize).then_some(Next::Page(number + 1)),
    }
}
