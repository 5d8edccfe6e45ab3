//! GitHub, as documented at docs.github.com: "Validating webhook deliveries"
//! (`X-Hub-Signature-256: sha256=` + hex HMAC-SHA256 of the raw body, keyed with the
//! webhook secret) and "Webhook events and payloads" (`X-GitHub-Event`,
//! `X-GitHub-Delivery`, the `ping`, `push` and `pull_request` payloads). A redelivery
//! keeps its `X-GitHub-Delivery`.

use serde::Deserialize;

use super::crypto::{decode_hex, hmac_matches};
use super::fields::{self, RawPush};
use super::{Event, Headers, MergeAction, ParseError, Repeated, VerifyError};

pub(crate) const SIGNATURE_HEADER: &str = "x-hub-signature-256";
pub(crate) const EVENT_HEADERS: &[&str] = &["x-github-event"];
pub(crate) const ID_HEADERS: &[&str] = &["x-github-delivery"];

const SIGNATURE_SHAPE: &str = "expected `sha256=` followed by 64 hexadecimal digits";

pub(crate) fn verify(headers: &Headers<'_>, body: &[u8], secret: &str) -> Result<(), VerifyError> {
    let header = SIGNATURE_HEADER;
    let value = headers
        .one(header)
        .map_err(|Repeated| VerifyError::Malformed { header, reason: "sent more than once" })?
        .ok_or(VerifyError::MissingHeader { header })?;
    let tag = value
        .strip_prefix("sha256=")
        .and_then(decode_hex)
        .filter(|tag| tag.len() == 32)
        .ok_or(VerifyError::Malformed { header, reason: SIGNATURE_SHAPE })?;
    if hmac_matches(secret.as_bytes(), body, &tag) { Ok(()) } else { Err(VerifyError::Mismatch { header }) }
}

pub(crate) fn parse(event: &str, body: &[u8]) -> Result<Event, ParseError> {
    match event {
        "ping" => Ok(Event::Ping),
        "push" => push(fields::json(event, body)?),
        "pull_request" => pull_request(fields::json(event, body)?),
        other => Ok(Event::Unsupported(other.to_string())),
    }
}

#[derive(Deserialize)]
struct Repository {
    clone_url: Option<String>,
    ssh_url: Option<String>,
}

#[derive(Deserialize)]
struct Account {
    login: Option<String>,
}

#[derive(Deserialize)]
struct Pusher {
    name: Option<String>,
}

#[derive(Deserialize)]
struct CommitId {
    id: String,
}

#[derive(Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    /// The pushed tip (for an annotated tag, the tagged commit); `null` on deletion.
    head_commit: Option<CommitId>,
    repository: Repository,
    sender: Option<Account>,
    pusher: Option<Pusher>,
}

fn push(p: PushPayload) -> Result<Event, ParseError> {
    RawPush {
        git_ref: &p.git_ref,
        before: &p.before,
        after: &p.after,
        peeled: ("head_commit.id", p.head_commit.as_ref().map(|c| c.id.as_str())),
        deleted: p.deleted,
        repo_urls: repo_urls(&p.repository, REPOSITORY)?,
        sender: fields::first_name([
            p.sender.as_ref().and_then(|s| s.login.as_deref()),
            p.pusher.as_ref().and_then(|s| s.name.as_deref()),
        ]),
    }
    .into_event()
}

#[derive(Deserialize)]
struct PullRequestPayload {
    action: String,
    number: u64,
    pull_request: PullRequest,
    /// The base repository, the one the webhook belongs to.
    repository: Repository,
    sender: Option<Account>,
}

#[derive(Deserialize)]
struct PullRequest {
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
    /// `null` when the fork the request comes from was deleted.
    repo: Option<Repository>,
}

fn pull_request(p: PullRequestPayload) -> Result<Event, ParseError> {
    let action = match p.action.as_str() {
        "opened" => MergeAction::Opened,
        "reopened" => MergeAction::Reopened,
        "synchronize" => MergeAction::Updated,
        "edited" => MergeAction::Edited,
        "closed" if p.pull_request.merged => MergeAction::Merged,
        "closed" => MergeAction::Closed,
        other => MergeAction::Other(fields::action("action", other)?),
    };
    // GitHub fills `merge_commit_sha` with a test merge while the request is open.
    let merge_commit = match action {
        MergeAction::Merged => {
            fields::optional_commit("pull_request.merge_commit_sha", p.pull_request.merge_commit_sha.as_deref())?
        }
        _ => None,
    };
    let head = &p.pull_request.head;
    Ok(Event::Merge {
        action,
        repo_urls: repo_urls(&p.repository, REPOSITORY)?,
        source_repo_urls: match &head.repo {
            Some(repo) => repo_urls(repo, ["pull_request.head.repo.clone_url", "pull_request.head.repo.ssh_url"])?,
            None => Vec::new(),
        },
        source_branch: fields::branch("pull_request.head.ref", &head.git_ref)?,
        target_branch: fields::branch("pull_request.base.ref", &p.pull_request.base.git_ref)?,
        commit: fields::commit("pull_request.head.sha", &head.sha)?,
        merge_commit,
        number: p.number,
        sender: fields::first_name([p.sender.as_ref().and_then(|s| s.login.as_deref())]),
    })
}

/// `repo`'s clone addresses; the names are the payload paths of `clone_url` and `ssh_url`.
fn repo_urls(repo: &Repository, [https, ssh]: [&'static str; 2]) -> Result<Vec<String>, ParseError> {
    fields::repo_urls(&[(https, repo.clone_url.as_deref()), (ssh, repo.ssh_url.as_deref())])
}

const REPOSITORY: [&str; 2] = ["repository.clone_url", "repository.ssh_url"];
