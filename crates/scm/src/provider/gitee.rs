//! Gitee (gitee.com or a private deployment): API v5 as documented at
//! gitee.com/api/v5/swagger, OAuth 2 authorization code flow (`/oauth/authorize`,
//! `/oauth/token`). The token goes in the `access_token` query parameter, as Gitee's
//! documentation shows for every call.

use super::{HookEvent, Next, ProviderError, Repo, event_flags, join, owner_and_name, set_query};
use reqwest::Url;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

/// Must be a subset of the scopes set on the Gitee OAuth application.
const SCOPE: &str = "user_info projects hook";

pub(super) fn authorize_url(web: &Url, client_id: &str, redirect_uri: &str, state: &str) -> Url {
    super::standard_authorize_url(web, client_id, redirect_uri, state, SCOPE)
}

/// `POST /oauth/token?grant_type=authorization_code&code=…&client_id=…&redirect_uri=…`
/// with `client_secret` in the form body, as Gitee documents it.
pub(super) fn token_request<'a>(
    web: &Url,
    client_id: &'a str,
    client_secret: &'a str,
    code: &'a str,
    redirect_uri: &'a str,
) -> (Url, Vec<(&'a str, &'a str)>) {
    let mut url = join(web, &["oauth", "token"]);
    url.query_pairs_mut()
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri);
    (url, vec![("client_secret", client_secret)])
}

/// `POST /oauth/token?grant_type=refresh_token&refresh_token=…`, as Gitee documents it
/// (no client credentials). Access tokens live one day.
pub(super) fn refresh_request<'a>(web: &Url, refresh_token: &'a str) -> (Url, Vec<(&'a str, &'a str)>) {
    let mut url = join(web, &["oauth", "token"]);
    url.query_pairs_mut().append_pair("grant_type", "refresh_token").append_pair("refresh_token", refresh_token);
    (url, Vec::new())
}

/// `GET /user/repos`: the user's repositories.
pub(super) fn repos_url(api: &Url) -> Url {
    let mut url = join(api, &["user", "repos"]);
    set_query(&mut url, &[("sort", "full_name")]);
    url
}

#[derive(Deserialize)]
struct GiteeRepo {
    full_name: String,
    /// Gitee's web address doubles as the https clone address (`…/owner/name.git`).
    html_url: String,
    ssh_url: String,
    default_branch: Option<String>,
    private: bool,
}

pub(super) fn repo(item: Value) -> Result<Repo, serde_json::Error> {
    let r: GiteeRepo = serde_json::from_value(item)?;
    Ok(Repo {
        full_name: r.full_name,
        clone_url: r.html_url,
        ssh_url: r.ssh_url,
        default_branch: r.default_branch,
        private: r.private,
    })
}

/// `GET /repos/{owner}/{repo}/branches`
pub(super) fn branches_url(api: &Url, repo: &str) -> Result<Url, ProviderError> {
    let (owner, name) = owner_and_name(repo)?;
    Ok(join(api, &["repos", owner, name, "branches"]))
}

/// `POST /repos/{owner}/{repo}/hooks`
pub(super) fn hooks_url(api: &Url, repo: &str) -> Result<Url, ProviderError> {
    let (owner, name) = owner_and_name(repo)?;
    Ok(join(api, &["repos", owner, name, "hooks"]))
}

/// A hook in signature mode (`encryption_type: 1`): Gitee sends a timestamp and its
/// HMAC keyed with `password` instead of the password itself.
pub(super) fn hook_body(url: &str, secret: &str, events: &[HookEvent]) -> Value {
    let mut body = event_flags(events);
    body.insert("url".into(), url.into());
    body.insert("encryption_type".into(), 1.into());
    body.insert("password".into(), secret.into());
    body.insert("issues_events".into(), false.into());
    body.insert("note_events".into(), false.into());
    Value::Object(body)
}

/// `total_page` tells how many pages there are; without it, a full page means there
/// may be another.
pub(super) fn next_page(headers: &HeaderMap, number: u32, count: usize, per_page: u32) -> Option<Next> {
    match headers.get("total_page").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u32>().ok()) {
        Some(total) => (number < total).then_some(Next::Page(number + 1)),
        None => (count >= per_page as usize).then_some(Next::Page(number + 1)),
    }
}
