//! GitHub (and GitHub Enterprise Server): the REST API as documented at
//! docs.github.com/rest, the OAuth web application flow (`/login/oauth/authorize`,
//! `/login/oauth/access_token` with `Accept: application/json`).

use super::{HookEvent, Next, ProviderError, Repo, join, owner_and_name, set_query};
use crate::webhook::Provider;
use reqwest::Url;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

/// Sent as `X-GitHub-Api-Version`.
pub(super) const API_VERSION: &str = "2022-11-28";

/// `repo` covers private repositories and their webhooks.
const SCOPE: &str = "repo";

pub(super) fn authorize_url(web: &Url, client_id: &str, redirect_uri: &str, state: &str) -> Url {
    let mut url = join(web, &["login", "oauth", "authorize"]);
    url.query_pairs_mut()
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", SCOPE)
        .append_pair("state", state);
    url
}

/// `POST /login/oauth/access_token`, form-encoded; `Accept: application/json` makes
/// the answer JSON (`{"access_token", "scope", "token_type"}`, or `{"error", …}` with 200).
pub(super) fn token_request<'a>(
    web: &Url,
    client_id: &'a str,
    client_secret: &'a str,
    code: &'a str,
    redirect_uri: &'a str,
) -> (Url, Vec<(&'a str, &'a str)>) {
    let url = join(web, &["login", "oauth", "access_token"]);
    let form = vec![
        ("client_id", client_id),
        ("client_secret", client_secret),
        ("code", code),
        ("redirect_uri", redirect_uri),
    ];
    (url, form)
}

/// The same endpoint with `grant_type=refresh_token` (GitHub apps with expiring user
/// tokens: 8 hours, refresh tokens 6 months).
pub(super) fn refresh_request<'a>(
    web: &Url,
    client_id: &'a str,
    client_secret: &'a str,
    refresh_token: &'a str,
) -> (Url, Vec<(&'a str, &'a str)>) {
    let url = join(web, &["login", "oauth", "access_token"]);
    let form = vec![
        ("client_id", client_id),
        ("client_secret", client_secret),
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    (url, form)
}

/// `GET /user/repos`: repositories the user owns, collaborates on or sees through an
/// organization.
pub(super) fn repos_url(api: &Url) -> Url {
    let mut url = join(api, &["user", "repos"]);
    set_query(&mut url, &[("sort", "full_name")]);
    url
}

#[derive(Deserialize)]
struct GitHubRepo {
    full_name: String,
    clone_url: String,
    ssh_url: String,
    default_branch: Option<String>,
    private: bool,
}

pub(super) fn repo(item: Value) -> Result<Repo, serde_json::Error> {
    let r: GitHubRepo = serde_json::from_value(item)?;
    Ok(Repo {
        full_name: r.full_name,
        clone_url: r.clone_url,
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

/// A repository webhook delivering JSON, signed with the secret (`X-Hub-Signature-256`).
/// Pushes of branches and tags are both `push` events on GitHub.
pub(super) fn hook_body(url: &str, secret: &str, events: &[HookEvent]) -> Value {
    let mut names = Vec::new();
    if events.contains(&HookEvent::Push) || events.contains(&HookEvent::TagPush) {
        names.push("push");
    }
    if events.contains(&HookEvent::MergeRequest) {
        names.push("pull_request");
    }
    json!({
        "name": "web",
        "active": true,
        "events": names,
        "config": { "url": url, "content_type": "json", "secret": secret, "insecure_ssl": "0" }
    })
}

/// The `rel="next"` address of the `Link` header; none when there is no header (a
/// single page) or no next link (the last page). It must be on the API's own origin:
/// the token is not sent anywhere else.
pub(super) fn next_page(api: &Url, headers: &HeaderMap) -> Result<Option<Next>, ProviderError> {
    let Some(link) = headers.get("link").and_then(|v| v.to_str().ok()) else { return Ok(None) };
    for part in link.split(',') {
        let mut pieces = part.split(';');
        let Some(target) = pieces.next().map(str::trim) else { continue };
        let is_next = pieces.any(|p| {
            let p = p.trim();
            p.strip_prefix("rel=")
                .map(|rel| rel.trim_matches('"').split_whitespace().any(|r| r.eq_ignore_ascii_case("next")))
                .unwrap_or(false)
        });
        if !is_next {
            continue;
        }
        let unexpected = |why: &str| ProviderError::Unexpected {
            provider: Provider::GitHub,
            message: format!("the `Link` header's next page {why}"),
        };
        let target =
            target.strip_prefix('<').and_then(|t| t.strip_suffix('>')).ok_or_else(|| unexpected("is not `<URL>`"))?;
        let url = api.join(target).map_err(|_| unexpected("is not a URL"))?;
        if url.origin() != api.origin() {
            return Err(unexpected("points to another host"));
        }
        return Ok(Some(Next::Url(url)));
    }
    Ok(None)
}
