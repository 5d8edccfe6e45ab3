//! Gitee, as documented in its help center: "WebHook 推送数据格式说明" (headers
//! `X-Gitee-Token`, `X-Gitee-Timestamp`, `X-Gitee-Event`; the `Push Hook`,
//! `Tag Push Hook` and `Merge Request Hook` payloads) and "WebHook 密钥验证和验证算法"
//! (signature mode: `X-Gitee-Token` = base64 of HMAC-SHA256 of
//! `<timestamp>\n<secret>` keyed with the secret, then URL-encoded; the timestamp in
//! milliseconds may be at most one hour off).
//!
//! Deliveries seen in the wild also send `X-Gitee-Ping: true` from the test button,
//! `X-Git-Oschina-Event` beside `X-Gitee-Event`, event names in the payload's
//! `hook_name` spelling (`push_hooks`), and the signature not URL-encoded; all are
//! accepted. Gitee documents no delivery id header: `X-Gitee-Delivery` is used if it
//! is ever sent, otherwise the body's digest (see [`Delivery::id`](super::Delivery)).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use std::time::Duration;

use super::crypto::{hmac_matches, percent_decode, secret_equals};
use super::fields::{self, RawPush};
use super::{Event, Headers, MergeAction, ParseError, Repeated, VerifyError};

pub(crate) const TOKEN_HEADER: &str = "x-gitee-token";
const TIMESTAMP_HEADER: &str = "x-gitee-timestamp";
const PING_HEADER: &str = "x-gitee-ping";
pub(crate) const EVENT_HEADERS: &[&str] = &["x-gitee-event", "x-git-oschina-event"];
pub(crate) const ID_HEADERS: &[&str] = &["x-gitee-delivery"];

pub(crate) fn verify(headers: &Headers<'_>, secret: &str, now_ms: i64, max_skew: Duration) -> Result<(), VerifyError> {
    let token = headers
        .one(TOKEN_HEADER)
        .map_err(|Repeated| VerifyError::Malformed { header: TOKEN_HEADER, reason: "sent more than once" })?
        .ok_or(VerifyError::MissingHeader { header: TOKEN_HEADER })?;
    // Password mode. Gitee sends a timestamp in this mode too, so its presence does
    // not tell the modes apart; the secret itself is never a valid signature.
    if secret_equals(token, secret) {
        return Ok(());
    }
    let mismatch = VerifyError::Mismatch { header: TOKEN_HEADER };
    let timestamp = headers
        .one(TIMESTAMP_HEADER)
        .map_err(|Repeated| VerifyError::Malformed { header: TIMESTAMP_HEADER, reason: "sent more than once" })?
        .ok_or(mismatch.clone())?;
    let timestamp_ms = parse_timestamp(timestamp).ok_or(VerifyError::Malformed {
        header: TIMESTAMP_HEADER,
        reason: "expected Unix time in milliseconds (digits only)",
    })?;
    let token = if token.contains('%') { percent_decode(token).ok_or(mismatch.clone())? } else { token.to_string() };
    let signature = STANDARD.decode(token).map_err(|_| mismatch.clone())?;
    let signed = format!("{timestamp}\n{secret}");
    if !hmac_matches(secret.as_bytes(), signed.as_bytes(), &signature) {
        return Err(mismatch);
    }
    // Checked after the signature, so a forger learns nothing about the server's clock.
    let skew = now_ms.saturating_sub(timestamp_ms);
    if u128::from(skew.unsigned_abs()) > max_skew.as_millis() {
        return Err(VerifyError::Stale { header: TIMESTAMP_HEADER, skew, window: max_skew });
    }
    Ok(())
}

/// Unix milliseconds, as digits only (no sign, no spaces) that fit an `i64`.
fn parse_timestamp(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

pub(crate) fn parse(headers: &Headers<'_>, event: &str, body: &[u8]) -> Result<Event, ParseError> {
    let ping = headers
        .one(PING_HEADER)
        .map_err(|Repeated| ParseError::InvalidHeader { header: PING_HEADER, reason: "sent more than once" })?;
    if ping.is_some_and(|value| value.eq_ignore_ascii_case("true")) {
        return Ok(Event::Ping);
    }
    match event {
        // The ref tells a tag from a branch; both hooks share one payload shape.
        "Push Hook" | "push_hooks" | "Tag Push Hook" | "tag_push_hooks" => push(fields::json(event, body)?),
        "Merge Request Hook" | "merge_request_hooks" => merge_request(fields::json(event, body)?),
        other => Ok(Event::Unsupported(other.to_string())),
    }
}

#[derive(Deserialize)]
struct Repository {
    clone_url: Option<String>,
    git_http_url: Option<String>,
    ssh_url: Option<String>,
    git_ssh_url: Option<String>,
}

#[derive(Deserialize)]
struct User {
    login: Option<String>,
    username: Option<String>,
    user_name: Option<String>,
    name: Option<String>,
}

impl User {
    fn login(user: Option<&User>) -> String {
        let Some(u) = user else { return String::new() };
        fields::first_name([u.login.as_deref(), u.username.as_deref(), u.user_name.as_deref(), u.name.as_deref()])
    }
}

/// `repo`'s clone addresses; `names` are the payload paths of its four address fields.
fn repo_urls(repo: &Repository, names: [&'static str; 4]) -> Result<Vec<String>, ParseError> {
    fields::repo_urls(&[
        (names[0], repo.clone_url.as_deref()),
        (names[1], repo.git_http_url.as_deref()),
        (names[2], repo.ssh_url.as_deref()),
        (names[3], repo.git_ssh_url.as_deref()),
    ])
}

const REPOSITORY: [&str; 4] =
    ["repository.clone_url", "repository.git_http_url", "repository.ssh_url", "repository.git_ssh_url"];

#[derive(Deserialize)]
struct CommitId {
    id: String,
}

#[derive(Deserialize)]
struct PushHook {
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    /// The pushed tip (for a tag, the tagged commit); absent or `null` on deletion.
    head_commit: Option<CommitId>,
    repository: Repository,
    sender: Option<User>,
    user_name: Option<String>,
}

fn push(p: PushHook) -> Result<Event, ParseError> {
    let sender = match User::login(p.sender.as_ref()) {
        login if login.is_empty() => fields::first_name([p.user_name.as_deref()]),
        login => login,
    };
    RawPush {
        git_ref: &p.git_ref,
        before: &p.before,
        after: &p.after,
        peeled: ("head_commit.id", p.head_commit.as_ref().map(|c| c.id.as_str())),
        deleted: p.deleted,
        repo_urls: repo_urls(&p.repository, REPOSITORY)?,
        sender,
    }
    .into_event()
}

#[derive(Deserialize)]
struct MergeRequestHook {
    action: String,
    /// Says what an `update` changed: `source_branch_changed` means new commits.
    #[serde(default)]
    action_desc: String,
    pull_request: PullRequest,
    merge_commit_sha: Option<String>,
    /// The target repository; `pull_request.base.repo` says the same.
    repository: Option<Repository>,
    sender: Option<User>,
}

#[derive(Deserialize)]
struct PullRequest {
    number: u64,
    head: Side,
    base: Side,
    #[serde(default)]
    merged: bool,
    merge_commit_sha: Option<String>,
}

#[derive(Deserialize)]
struct Side {
    #[serde(rename = "ref")]
    git_ref: String,
    sha: String,
    repo: Option<Repository>,
}

fn merge_request(p: MergeRequestHook) -> Result<Event, ParseError> {
    let pr = &p.pull_request;
    let action = match p.action.as_str() {
        "open" => MergeAction::Opened,
        "reopen" => MergeAction::Reopened,
        "update" if p.action_desc == "source_branch_changed" => MergeAction::Updated,
        "update" => MergeAction::Edited,
        "merge" => MergeAction::Merged,
        "close" if pr.merged => MergeAction::Merged,
        "close" => MergeAction::Closed,
        other => MergeAction::Other(fields::action("action", other)?),
    };
    let merge_commit = match action {
        MergeAction::Merged => match p.merge_commit_sha.as_deref().filter(|sha| !sha.is_empty()) {
            Some(sha) => Some(fields::commit("merge_commit_sha", sha)?),
            None => fields::optional_commit("pull_request.merge_commit_sha", pr.merge_commit_sha.as_deref())?,
        },
        _ => None,
    };
    let target_urls = match (&pr.base.repo, &p.repository) {
        (Some(base), _) => repo_urls(
            base,
            [
                "pull_request.base.repo.clone_url",
                "pull_request.base.repo.git_http_url",
                "pull_request.base.repo.ssh_url",
                "pull_request.base.repo.git_ssh_url",
            ],
        )?,
        (None, Some(repository)) => repo_urls(repository, REPOSITORY)?,
        (None, None) => fields::repo_urls(&[("pull_request.base.repo", None)])?,
    };
    let source_repo_urls = match &pr.head.repo {
        Some(head) => repo_urls(
            head,
            [
                "pull_request.head.repo.clone_url",
                "pull_request.head.repo.git_http_url",
                "pull_request.head.repo.ssh_url",
                "pull_request.head.repo.git_ssh_url",
            ],
        )?,
        None => Vec::new(),
    };
    Ok(Event::Merge {
        action,
        repo_urls: target_urls,
        source_repo_urls,
        source_branch: fields::branch("pull_request.head.ref", &pr.head.git_ref)?,
        target_branch: fields::branch("pull_request.base.ref", &pr.base.git_ref)?,
        commit: fields::commit("pull_request.head.sha", &pr.head.sha)?,
        merge_commit,
        number: pr.number,
        sender: User::login(p.sender.as_ref()),
    })
}
