//! GitLab, as documented at docs.gitlab.com, "Webhooks" (delivery headers: the secret
//! token is sent as is in `X-Gitlab-Token`; `X-Gitlab-Event`; `Idempotency-Key`, the
//! same across retries, since 17.4; `X-Gitlab-Event-UUID` before) and "Webhook
//! events" (`Push Hook`, `Tag Push Hook`, `Merge Request Hook` payloads). GitLab has no
//! ping: its "Test" button sends a sample of the chosen event.

use serde::Deserialize;

use super::crypto::secret_equals;
use super::fields::{self, RawPush};
use super::{Event, Headers, MergeAction, ParseError, Repeated, VerifyError};

pub(crate) const TOKEN_HEADER: &str = "x-gitlab-token";
pub(crate) const EVENT_HEADERS: &[&str] = &["x-gitlab-event"];
pub(crate) const ID_HEADERS: &[&str] = &["idempotency-key", "x-gitlab-event-uuid"];

pub(crate) fn verify(headers: &Headers<'_>, secret: &str) -> Result<(), VerifyError> {
    let header = TOKEN_HEADER;
    let token = headers
        .one(header)
        .map_err(|Repeated| VerifyError::Malformed { header, reason: "sent more than once" })?
        .ok_or(VerifyError::MissingHeader { header })?;
    if secret_equals(token, secret) { Ok(()) } else { Err(VerifyError::Mismatch { header }) }
}

pub(crate) fn parse(event: &str, body: &[u8]) -> Result<Event, ParseError> {
    match event {
        // The ref tells a tag from a branch; both hooks share one payload shape.
        "Push Hook" | "Tag Push Hook" => push(fields::json(event, body)?),
        "Merge Request Hook" => merge_request(fields::json(event, body)?),
        other => Ok(Event::Unsupported(other.to_string())),
    }
}

#[derive(Deserialize)]
struct Project {
    git_http_url: Option<String>,
    git_ssh_url: Option<String>,
}

#[derive(Deserialize)]
struct PushHook {
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    /// The commit the ref points at, peeled (for an annotated tag `after` is the tag
    /// object); `null` when the ref was deleted.
    checkout_sha: Option<String>,
    user_username: Option<String>,
    user_name: Option<String>,
    project: Option<Project>,
    /// Deprecated duplicate of `project`, still sent.
    repository: Option<Project>,
}

fn push(p: PushHook) -> Result<Event, ParseError> {
    let (project, repository) = (p.project.as_ref(), p.repository.as_ref());
    RawPush {
        git_ref: &p.git_ref,
        before: &p.before,
        after: &p.after,
        peeled: ("checkout_sha", p.checkout_sha.as_deref()),
        deleted: false,
        repo_urls: fields::repo_urls(&[
            ("project.git_http_url", project.and_then(|p| p.git_http_url.as_deref())),
            ("project.git_ssh_url", project.and_then(|p| p.git_ssh_url.as_deref())),
            ("repository.git_http_url", repository.and_then(|p| p.git_http_url.as_deref())),
            ("repository.git_ssh_url", repository.and_then(|p| p.git_ssh_url.as_deref())),
        ])?,
        sender: fields::first_name([p.user_username.as_deref(), p.user_name.as_deref()]),
    }
    .into_event()
}

#[derive(Deserialize)]
struct MergeRequestHook {
    user: Option<User>,
    /// The target project, the one the webhook belongs to.
    project: Option<Project>,
    object_attributes: Attributes,
}

#[derive(Deserialize)]
struct User {
    username: Option<String>,
}

#[derive(Deserialize)]
struct Attributes {
    iid: u64,
    /// Absent in some older and system-hook payloads.
    #[serde(default)]
    action: String,
    source_branch: String,
    target_branch: String,
    last_commit: LastCommit,
    source: Option<Project>,
    target: Option<Project>,
    merge_commit_sha: Option<String>,
    /// Sent with `update` only when the update pushed new commits.
    oldrev: Option<String>,
}

#[derive(Deserialize)]
struct LastCommit {
    id: String,
}

fn merge_request(p: MergeRequestHook) -> Result<Event, ParseError> {
    let a = &p.object_attributes;
    let action = match a.action.as_str() {
        "open" => MergeAction::Opened,
        "reopen" => MergeAction::Reopened,
        "update" if a.oldrev.as_deref().is_some_and(|rev| !rev.is_empty()) => MergeAction::Updated,
        "update" => MergeAction::Edited,
        "merge" => MergeAction::Merged,
        "close" => MergeAction::Closed,
        other => MergeAction::Other(fields::action("object_attributes.action", other)?),
    };
    let merge_commit = match action {
        MergeAction::Merged => {
            fields::optional_commit("object_attributes.merge_commit_sha", a.merge_commit_sha.as_deref())?
        }
        _ => None,
    };
    let (target, project, source) = (a.target.as_ref(), p.project.as_ref(), a.source.as_ref());
    Ok(Event::Merge {
        action,
        repo_urls: fields::repo_urls(&[
            ("object_attributes.target.git_http_url", target.and_then(|p| p.git_http_url.as_deref())),
            ("object_attributes.target.git_ssh_url", target.and_then(|p| p.git_ssh_url.as_deref())),
            ("project.git_http_url", project.and_then(|p| p.git_http_url.as_deref())),
            ("project.git_ssh_url", project.and_then(|p| p.git_ssh_url.as_deref())),
        ])?,
        source_repo_urls: match source {
            Some(source) => fields::repo_urls(&[
                ("object_attributes.source.git_http_url", source.git_http_url.as_deref()),
                ("object_attributes.source.git_ssh_url", source.git_ssh_url.as_deref()),
            ])?,
            None => Vec::new(),
        },
        source_branch: fields::branch("object_attributes.source_branch", &a.source_branch)?,
        target_branch: fields::branch("object_attributes.target_branch", &a.target_branch)?,
        commit: fields::commit("object_attributes.last_commit.id", &a.last_commit.id)?,
        merge_commit,
        number: a.iid,
        sender: fields::first_name([p.user.as_ref().and_then(|u| u.username.as_deref())]),
    })
}
