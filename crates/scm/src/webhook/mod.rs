//! Webhook deliveries from GitHub, GitLab and Gitee: is this delivery authentic
//! ([`verify`]), what happened ([`parse`] → [`Delivery`]), does it concern a pipeline
//! ([`event_kind`], [`branch_matches`]). Pure functions over the raw headers and body
//! the server received; no IO, no HTTP types, no clock (time comes in as `now_ms`).
//!
//! The server calls, in this order: [`verify`] (any error → 401, nothing started),
//! [`parse`] (any error → 400, nothing started), then matches the [`Event`] against
//! pipelines. `github.rs`, `gitlab.rs` and `gitee.rs` hold each provider's scheme and
//! payload shapes, `fields.rs` the checks every payload value passes (ref names,
//! commits, repository addresses), `glob.rs` the branch filter.
//!
//! | | GitHub | GitLab | Gitee |
//! | --- | --- | --- | --- |
//! | authenticity | `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(body)>` | `X-Gitlab-Token: <secret>` | `X-Gitee-Token: <secret>`, or base64 HMAC-SHA256 of `<X-Gitee-Timestamp>\n<secret>` |
//! | event | `X-GitHub-Event` | `X-Gitlab-Event` | `X-Gitee-Event` (`X-Gitee-Ping: true` for a test) |
//! | delivery id | `X-GitHub-Delivery` | `Idempotency-Key`, else `X-Gitlab-Event-UUID` | `X-Gitee-Delivery` if sent, else the body's SHA-256 |
//!
//! Header names are given lower-case, as HTTP/2 and the `http` crate carry them.

mod crypto;
mod error;
mod fields;
mod gitee;
mod github;
mod gitlab;
mod glob;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wharf_core::model::GitEvent;

pub use error::{ParseError, VerifyError};
pub use glob::branch_matches;

/// The body limit to give [`parse`]: 10 MiB. GitHub caps payloads at 25 MB but cuts
/// the commit list long before; push and merge request events stay far below.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// How far a Gitee signed timestamp may be from the server's clock, either way:
/// Gitee documents a tolerance of one hour.
pub const GITEE_MAX_SKEW: Duration = Duration::from_secs(3600);

/// A code-hosting service that sends webhooks, named in the route
/// `POST /hooks/{github|gitlab|gitee}/{binding}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    GitHub,
    GitLab,
    Gitee,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::GitHub, Provider::GitLab, Provider::Gitee];

    /// The name used in routes and stored with a delivery: `github`, `gitlab`, `gitee`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
            Provider::Gitee => "gitee",
        }
    }

    /// Headers that may carry the webhook secret in clear (GitLab's token; Gitee's
    /// token in password mode). Redact them before a delivery's headers are stored or
    /// logged.
    pub fn secret_headers(self) -> &'static [&'static str] {
        match self {
            Provider::GitHub => &[],
            Provider::GitLab => &[gitlab::TOKEN_HEADER],
            Provider::Gitee => &[gitee::TOKEN_HEADER],
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A route segment that names no provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown webhook provider `{0}`; use github, gitlab or gitee")]
pub struct UnknownProvider(pub String);

impl FromStr for Provider {
    type Err = UnknownProvider;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Provider::ALL.into_iter().find(|p| p.as_str() == name).ok_or_else(|| UnknownProvider(name.to_string()))
    }
}

/// One parsed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The provider's id for this delivery, the same when the provider retries or an
    /// admin redelivers it, so a repeat can be ignored. When the provider sends no id
    /// header (Gitee documents none) it is `sha256:<hex>` of the body, which is also
    /// stable across retries of the same body.
    pub id: String,
    pub event: Event,
}

/// What happened at the provider, reduced to what triggers need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The provider checks that the endpoint answers (GitHub `ping`, Gitee's test
    /// button). Starts nothing.
    Ping,
    /// Commits pushed to a branch, or a tag pushed; or either deleted.
    Push {
        /// The repository's clone addresses as the payload gives them (https, ssh),
        /// for matching pipelines. Checkout uses the pipeline's own address.
        repo_urls: Vec<String>,
        /// Set for `refs/heads/<branch>`.
        branch: Option<String>,
        /// Set for `refs/tags/<tag>`. Both are `None` for other refs (notes…), which
        /// trigger nothing.
        tag: Option<String>,
        /// The commit the ref now points at, lower-case 40 hex; for an annotated tag
        /// the tagged commit, not the tag object. The all-zero sha when `deleted`.
        commit: String,
        /// Where the ref pointed before; the all-zero sha when it was created.
        before: String,
        /// Login of whoever pushed (empty if the provider sent none).
        sender: String,
        /// The branch or tag was deleted: the server starts nothing.
        deleted: bool,
    },
    /// Something happened to a pull request (GitHub) / merge request (GitLab, Gitee).
    Merge {
        action: MergeAction,
        /// Clone addresses of the target repository, the one the webhook belongs to.
        repo_urls: Vec<String>,
        /// Clone addresses of the repository the changes come from: the same as
        /// `repo_urls`, or a fork's. Empty when the provider no longer knows it (a
        /// deleted fork).
        source_repo_urls: Vec<String>,
        source_branch: String,
        target_branch: String,
        /// The head commit of the source branch, lower-case 40 hex.
        commit: String,
        /// The commit the merge created on the target branch, when `action` is
        /// [`MergeAction::Merged`] and the provider tells it.
        merge_commit: Option<String>,
        /// The request's number as shown to people (`#12`, `!12`).
        number: u64,
        /// Login of whoever acted.
        sender: String,
    },
    /// An event Wharf does not act on (issues, comments, releases…), named by the
    /// provider's event header. Not an error: it is stored and answered 2xx.
    Unsupported(String),
}

/// What happened to a merge request, in Wharf's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeAction {
    /// GitHub `opened`, GitLab `open`, Gitee `open`.
    Opened,
    /// GitHub `reopened`, GitLab `reopen`, Gitee `reopen`.
    Reopened,
    /// New commits on the source branch: GitHub `synchronize`, GitLab `update` with
    /// `oldrev`, Gitee `update` with `action_desc` `source_branch_changed`.
    Updated,
    /// Title, description, labels or target changed, but no new commits: GitHub
    /// `edited`, GitLab `update` without `oldrev`, Gitee's other `update`s.
    Edited,
    /// GitHub `closed` with `merged: true`, GitLab `merge`, Gitee `merge`.
    Merged,
    /// Closed without merging.
    Closed,
    /// Anything else (approvals, labels, review requests…), with the provider's name.
    Other(String),
}

impl MergeAction {
    /// Lower-case name for storage and logs: `opened`, `updated`…, or the provider's.
    pub fn as_str(&self) -> &str {
        match self {
            MergeAction::Opened => "opened",
            MergeAction::Reopened => "reopened",
            MergeAction::Updated => "updated",
            MergeAction::Edited => "edited",
            MergeAction::Merged => "merged",
            MergeAction::Closed => "closed",
            MergeAction::Other(name) => name,
        }
    }
}

/// Checks that a delivery comes from the provider holding `secret` (the binding's
/// webhook secret). `now_ms` (Unix milliseconds) and `max_skew` bound Gitee's signed
/// timestamp (use [`GITEE_MAX_SKEW`]); the other schemes sign no time.
///
/// - GitHub: `x-hub-signature-256` must be `sha256=` and the hex HMAC-SHA256 of the
///   raw body under the secret.
/// - GitLab: `x-gitlab-token` must equal the secret.
/// - Gitee: `x-gitee-token` must equal the secret (password mode), or, with
///   `x-gitee-timestamp`, be base64 HMAC-SHA256 of `<timestamp>\n<secret>` under the
///   secret (signature mode; URL-encoded or not) with the timestamp within `max_skew`
///   of `now_ms`. Neither mode covers the body: it authenticates the sender only.
///
/// All comparisons run in constant time. A repeated signature header is refused.
pub fn verify(
    provider: Provider,
    headers: &[(String, String)],
    body: &[u8],
    secret: &str,
    now_ms: i64,
    max_skew: Duration,
) -> Result<(), VerifyError> {
    if secret.is_empty() {
        return Err(VerifyError::NoSecret);
    }
    let headers = Headers(headers);
    match provider {
        Provider::GitHub => github::verify(&headers, body, secret),
        Provider::GitLab => gitlab::verify(&headers, secret),
        Provider::Gitee => gitee::verify(&headers, secret, now_ms, max_skew),
    }
}

/// Reads a delivery whose authenticity [`verify`] has established. Bodies over
/// `max_body_bytes` ([`MAX_BODY_BYTES`]) are refused before anything is read; a
/// missing event header is an error, an unknown event is [`Event::Unsupported`]; the
/// body of a supported event must be UTF-8 JSON of the provider's documented shape;
/// every ref, branch, commit and repository address in it is checked (see
/// [`ParseError::InvalidField`]).
pub fn parse(
    provider: Provider,
    headers: &[(String, String)],
    body: &[u8],
    max_body_bytes: usize,
) -> Result<Delivery, ParseError> {
    if body.len() > max_body_bytes {
        return Err(ParseError::TooLarge { size: body.len(), limit: max_body_bytes });
    }
    let headers = Headers(headers);
    let (event_headers, id_headers) = match provider {
        Provider::GitHub => (github::EVENT_HEADERS, github::ID_HEADERS),
        Provider::GitLab => (gitlab::EVENT_HEADERS, gitlab::ID_HEADERS),
        Provider::Gitee => (gitee::EVENT_HEADERS, gitee::ID_HEADERS),
    };
    let event_name = event_name(&headers, event_headers)?;
    let id = delivery_id(&headers, id_headers, body)?;
    let event = match provider {
        Provider::GitHub => github::parse(event_name, body)?,
        Provider::GitLab => gitlab::parse(event_name, body)?,
        Provider::Gitee => gitee::parse(&headers, event_name, body)?,
    };
    Ok(Delivery { id, event })
}

/// The trigger event type a delivery counts as, or `None` if it triggers nothing:
///
/// - a push to a branch → [`GitEvent::Push`]; a pushed tag → [`GitEvent::Tag`];
///   deletions and other refs → `None`;
/// - a merge request [`Opened`](MergeAction::Opened),
///   [`Reopened`](MergeAction::Reopened), [`Updated`](MergeAction::Updated) (new
///   commits) or [`Merged`](MergeAction::Merged) → [`GitEvent::Merge`]; `Edited`,
///   `Closed` and other actions → `None`, since the code did not change;
/// - ping and unsupported events → `None`.
pub fn event_kind(event: &Event) -> Option<GitEvent> {
    match event {
        Event::Push { deleted: true, .. } => None,
        Event::Push { tag: Some(_), .. } => Some(GitEvent::Tag),
        Event::Push { branch: Some(_), .. } => Some(GitEvent::Push),
        Event::Push { .. } => None,
        Event::Merge { action, .. } => match action {
            MergeAction::Opened | MergeAction::Reopened | MergeAction::Updated | MergeAction::Merged => {
                Some(GitEvent::Merge)
            }
            MergeAction::Edited | MergeAction::Closed | MergeAction::Other(_) => None,
        },
        Event::Ping | Event::Unsupported(_) => None,
    }
}

/// The longest event name or delivery id accepted; real ones are under 40 bytes.
const MAX_HEADER_VALUE: usize = 200;

/// The received headers, looked up case-insensitively.
pub(crate) struct Headers<'a>(&'a [(String, String)]);

/// A header sent more than once: ambiguous, so never guessed at.
pub(crate) struct Repeated;

impl<'a> Headers<'a> {
    /// The value of `name`, trimmed; `Err` if it was sent more than once.
    pub(crate) fn one(&self, name: &str) -> Result<Option<&'a str>, Repeated> {
        let mut values = self.0.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim());
        let first = values.next();
        if values.next().is_some() { Err(Repeated) } else { Ok(first) }
    }
}

/// The event name from the first of `names` present, checked to be a short line of
/// printable ASCII.
fn event_name<'a>(headers: &Headers<'a>, names: &[&'static str]) -> Result<&'a str, ParseError> {
    for &header in names {
        if let Some(value) = printable(headers, header)? {
            return Ok(value);
        }
    }
    Err(ParseError::MissingEventHeader { header: names[0] })
}

/// The delivery id from the first of `names` present, else the body's SHA-256.
fn delivery_id(headers: &Headers<'_>, names: &[&'static str], body: &[u8]) -> Result<String, ParseError> {
    for &header in names {
        if let Some(value) = printable(headers, header)? {
            return Ok(value.to_string());
        }
    }
    Ok(format!("sha256:{}", crypto::encode_hex(&Sha256::digest(body))))
}

/// `header`'s value if present, refused unless a single non-empty short line of
/// printable ASCII (it ends up in the store, logs and the UI).
fn printable<'a>(headers: &Headers<'a>, header: &'static str) -> Result<Option<&'a str>, ParseError> {
    let value =
        headers.one(header).map_err(|Repeated| ParseError::InvalidHeader { header, reason: "sent more than once" })?;
    let Some(value) = value else { return Ok(None) };
    let reason = if value.is_empty() {
        "it is empty"
    } else if value.len() > MAX_HEADER_VALUE {
        "it is longer than 200 bytes"
    } else if !value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        "it contains characters other than printable ASCII"
    } else {
        return Ok(Some(value));
    };
    Err(ParseError::InvalidHeader { header, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|&(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn providers_round_trip_their_route_names() {
        for provider in Provider::ALL {
            assert_eq!(provider.as_str().parse::<Provider>(), Ok(provider));
            assert_eq!(provider.to_string(), provider.as_str());
        }
        assert_eq!("GitHub".parse::<Provider>(), Err(UnknownProvider("GitHub".into())));
        assert!("bitbucket".parse::<Provider>().unwrap_err().to_string().contains("github, gitlab or gitee"));
    }

    #[test]
    fn headers_are_found_case_insensitively_and_repeats_refused() {
        let list = owned(&[("X-GitHub-Event", " push "), ("a", "1"), ("A", "2")]);
        let headers = Headers(&list);
        assert_eq!(headers.one("x-github-event").ok().flatten(), Some("push"));
        assert_eq!(headers.one("missing").ok().flatten(), None);
        assert!(headers.one("a").is_err());
    }

    #[test]
    fn odd_header_values_are_refused() {
        let long = "x".repeat(201);
        for (value, reason) in
            [("", "empty"), (long.as_str(), "200 bytes"), ("a\u{1}b", "printable"), ("é", "printable")]
        {
            let list = owned(&[("x-github-event", value)]);
            match event_name(&Headers(&list), &["x-github-event"]) {
                Err(ParseError::InvalidHeader { reason: got, .. }) => assert!(got.contains(reason), "{got}"),
                other => panic!("{value:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn without_an_id_header_the_body_digest_is_the_id() {
        let id = delivery_id(&Headers(&[]), &["x-gitee-delivery"], b"abc").ok().unwrap();
        assert_eq!(id, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn merge_actions_have_stable_names() {
        assert_eq!(MergeAction::Updated.as_str(), "updated");
        assert_eq!(MergeAction::Other("approved".into()).as_str(), "approved");
    }
}
