//! `POST /hooks/{github|gitlab|gitee}/{binding}`: webhook deliveries from the code
//! hosts. Outside `/api/v1` and its bearer token: a delivery proves itself with the
//! binding's webhook secret (see [`wharf_scm::webhook::verify`]).
//!
//! Every request is stored in `deliveries` before it is answered, whatever becomes of
//! it, with its headers capped ([`MAX_STORED_HEADERS`], [`MAX_HEADER_VALUE`],
//! [`MAX_STORED_HEADER_BYTES`]). Refused ones are kept in a ring of the newest
//! [`REJECTED_KEPT`], their bodies cut to [`REJECTED_BODY_KEPT`]; all deliveries are
//! kept up to the configured count (the store prunes as new ones arrive). An address
//! whose deliveries were refused too often lately is answered 429 at once, its request
//! neither read nor stored ([`AppState::hook_refusals`]). In order:
//!
//! | step | refused with |
//! | --- | --- |
//! | the address's recent refusals | 429 (not stored) |
//! | read the body, at most [`MAX_BODY_BYTES`] | 413 |
//! | the provider in the path | 404 |
//! | the binding, of that provider | 404 |
//! | its webhook secret | 401 (none set) |
//! | [`verify`] | 401 |
//! | [`parse`] | 400 (not a delivery: headers, UTF-8, JSON) or 422 (a refused value: a ref with `$(…)` or `..`) |
//!
//! Refused deliveries are stored `rejected` and start nothing. An authentic one is
//! then `ignored` (200: a ping, an event Wharf does not act on, a deletion, a merge
//! request edited or closed, no matching pipeline), a `duplicate` (200: its provider
//! delivery id was seen before) or `started` (202, with the runs). Which pipelines an
//! event starts: [`Target`] and [`matching`].
//!
//! A delivery is stored `received` once verified and read, and takes its final
//! verdict after its runs are queued; one still `received` when the server starts
//! again was cut short and is handled then ([`resume`]), skipping the pipelines it
//! had already started.

use crate::AppState;
use crate::error::AppError;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use wharf_core::model::{GitEvent, Pipeline, TriggerKind};
use wharf_core::run::Cause;
use wharf_engine::GitRef;
use wharf_scm::webhook::{
    Delivery, Event, GITEE_MAX_SKEW, MAX_BODY_BYTES, MergeAction, ParseError, Provider, branch_matches, event_kind,
    parse, verify,
};
use wharf_store::PipelineRow;
use wharf_store::deliveries::{DeliveryRow, NewDelivery, Verdict};

/// How much of a rejected delivery's body is kept: enough to see what was sent, not
/// enough for anyone without the secret to fill the disk.
pub const REJECTED_BODY_KEPT: usize = 16 * 1024;

/// Refused deliveries kept (the newest); older ones are deleted as new ones arrive.
pub const REJECTED_KEPT: u32 = 1_000;

/// Headers stored per delivery, at most (the rest are counted in one [`MORE_HEADERS`] entry).
pub const MAX_STORED_HEADERS: usize = 64;
/// A stored header value, at most, in bytes (longer ones are cut and end in `…[cut]`).
pub const MAX_HEADER_VALUE: usize = 1024;
/// All stored header values together, at most, in bytes.
pub const MAX_STORED_HEADER_BYTES: usize = 16 * 1024;
/// The stored header entry that counts the headers not stored.
pub const MORE_HEADERS: &str = "…";

/// What a too-large body is read to before the connection is given up on: the rest
/// is read and dropped up to here, so a client still sending gets the 413.
const DRAIN_LIMIT: usize = 4 * MAX_BODY_BYTES;

/// Stored in place of a secret-bearing header's value.
const REDACTED: &str = "[redacted]";

/// Headers whose values are never stored, whatever the provider.
const ALWAYS_REDACTED: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];

/// The event and delivery id headers, per provider, for storing what a refused
/// delivery claimed to be (the parser reads them itself).
fn event_headers(provider: Option<Provider>) -> &'static [&'static str] {
    match provider {
        Some(Provider::GitHub) => &["x-github-event"],
        Some(Provider::GitLab) => &["x-gitlab-event"],
        Some(Provider::Gitee) => &["x-gitee-event", "x-git-oschina-event"],
        None => &["x-github-event", "x-gitlab-event", "x-gitee-event"],
    }
}

fn id_headers(provider: Option<Provider>) -> &'static [&'static str] {
    match provider {
        Some(Provider::GitHub) => &["x-github-delivery"],
        Some(Provider::GitLab) => &["idempotency-key", "x-gitlab-event-uuid"],
        Some(Provider::Gitee) => &["x-gitee-delivery"],
        None => &["x-github-delivery", "idempotency-key", "x-gitlab-event-uuid", "x-gitee-delivery"],
    }
}

/// One run a delivery started, as answered and listed.
#[derive(Clone, Debug, Serialize)]
pub struct StartedRun {
    pub id: i64,
    pub number: i64,
    pub pipeline: String,
}

/// What handling an authentic delivery came to.
#[derive(Clone, Debug)]
pub struct Handled {
    pub verdict: Verdict,
    pub reason: Option<String>,
    pub runs: Vec<StartedRun>,
}

impl Handled {
    fn ignored(reason: impl Into<String>) -> Self {
        Handled { verdict: Verdict::Ignored, reason: Some(reason.into()), runs: Vec::new() }
    }

    /// 202 when runs started, else 200.
    fn status(&self) -> StatusCode {
        if self.verdict == Verdict::Started { StatusCode::ACCEPTED } else { StatusCode::OK }
    }

    fn body(&self, delivery: i64) -> Value {
        json!({ "delivery": delivery, "verdict": self.verdict, "reason": self.reason, "runs": self.runs })
    }
}

/// A refused delivery: its status, and the message for the answer and the row.
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Refusal { status, message: message.into() }
    }
}

/// The request as received, before anything is decided.
struct Received {
    provider_text: String,
    provider: Option<Provider>,
    binding: String,
    /// For verify and parse, in the order sent.
    pairs: Vec<(String, String)>,
    /// For storage, redacted.
    stored_headers: Value,
}

impl Received {
    /// The first of `names` that was sent, cut to 200 characters (for a refused row).
    fn claimed(&self, names: &[&str]) -> String {
        names
            .iter()
            .find_map(|name| self.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.trim()))
            .map(|v| v.chars().take(200).collect())
            .unwrap_or_default()
    }

    fn row(&self, verdict: Verdict, reason: Option<String>, body: Option<Vec<u8>>, sha: String) -> NewDelivery {
        NewDelivery {
            binding: self.binding.chars().take(200).collect(),
            provider: self.provider_text.chars().take(40).collect(),
            delivery_id: self.claimed(id_headers(self.provider)),
            event: self.claimed(event_headers(self.provider)),
            headers: self.stored_headers.clone(),
            body,
            body_sha256: sha,
            verdict,
            reason,
            signature_sha256: None,
        }
    }
}

/// `POST /hooks/{provider}/{binding}`.
pub async fn receive(
    State(state): State<Arc<AppState>>,
    Path((provider_text, binding)): Path<(String, String)>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let address = crate::api::client_key(crate::api::client_ip(&extensions).as_deref());
    if let Err(wait) = state.hook_refusals.peek(&address) {
        return throttled(wait);
    }
    let provider = provider_text.parse::<Provider>().ok();
    let received = Received {
        pairs: header_pairs(&headers),
        stored_headers: stored_headers(&headers, provider),
        provider_text,
        provider,
        binding,
    };
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(refusal) => return reject(&state, &address, &received, refusal, None, String::new()).await,
    };
    let sha = crate::auth::sha256_hex(&body);
    let checked = match check(&state, &received, &body).await {
        Ok(checked) => checked,
        Err(refusal) => {
            let mut kept = stored_body(provider, &body);
            kept.truncate(REJECTED_BODY_KEPT);
            return reject(&state, &address, &received, refusal, Some(kept), sha).await;
        }
    };
    let Checked { provider, delivery, signature_sha256 } = checked;
    let mut row = received.row(Verdict::Received, None, Some(stored_body(Some(provider), &body)), sha);
    row.delivery_id = delivery.id.clone();
    row.signature_sha256 = signature_sha256;
    let target = match Target::of(&delivery.event) {
        Ok(target) => target,
        // Nothing to start: stored with its verdict at once.
        Err(why) => {
            row.verdict = Verdict::Ignored;
            row.reason = Some(why.clone());
            return match state.store.insert_delivery(&row).await {
                Ok(id) => {
                    state.metrics.webhook(Verdict::Ignored);
                    answer(id, &Handled::ignored(why))
                }
                Err(e) => AppError::from(e).into_response(),
            };
        }
    };
    let id = match state.store.insert_delivery(&row).await {
        Ok(id) => id,
        Err(e) => return AppError::from(e).into_response(),
    };
    let handled = match state.store.earlier_delivery(provider.as_str(), &received.binding, &delivery.id, id).await {
        Ok(Some(earlier)) => Handled {
            verdict: Verdict::Duplicate,
            reason: Some(format!("a repeat of delivery {earlier} (same delivery id `{}`)", delivery.id)),
            runs: Vec::new(),
        },
        Ok(None) => start_runs(&state, id, provider, &received.binding, &delivery, &target, &[], Fresh::Only).await,
        Err(e) => return AppError::from(e).into_response(),
    };
    if handled.verdict == Verdict::Received {
        // The pipelines could not be read: the delivery stays `received`, to be
        // finished at the next start; the provider sees a failure.
        return AppError::Internal(handled.reason.unwrap_or_default()).into_response();
    }
    finish(&state, id, handled).await
}

/// Stores the final verdict and answers with it.
async fn finish(state: &AppState, id: i64, handled: Handled) -> Response {
    let runs: Vec<i64> = handled.runs.iter().map(|r| r.id).collect();
    if let Err(e) = state.store.update_delivery(id, handled.verdict, handled.reason.as_deref(), &runs).await {
        return AppError::from(e).into_response();
    }
    state.metrics.webhook(handled.verdict);
    answer(id, &handled)
}

fn answer(id: i64, handled: &Handled) -> Response {
    (handled.status(), axum::Json(handled.body(id))).into_response()
}

/// 429 for an address past its share of refused deliveries: nothing read or stored.
fn throttled(wait: u64) -> Response {
    AppError::TooManyRequests {
        message: format!(
            "too many refused webhook deliveries from this address: try again in {wait} s (check the binding's \
             address and webhook secret)"
        ),
        retry_after_secs: wait,
    }
    .into_response()
}

/// Stores a refused delivery (counted against `address`) and answers its status. When
/// even storing fails, the refusal is still answered (and the failure logged).
async fn reject(
    state: &AppState,
    address: &str,
    received: &Received,
    refusal: Refusal,
    body: Option<Vec<u8>>,
    sha: String,
) -> Response {
    if let Err(wait) = state.hook_refusals.take(address) {
        return throttled(wait);
    }
    let row = received.row(Verdict::Rejected, Some(refusal.message.clone()), body, sha);
    let id = match state.store.insert_delivery(&row).await {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::error!(error = %e, "cannot store a rejected webhook delivery");
            None
        }
    };
    state.metrics.webhook(Verdict::Rejected);
    tracing::info!(
        provider = %received.provider_text, binding = %received.binding, delivery = ?id,
        status = refusal.status.as_u16(), reason = %refusal.message, "webhook delivery rejected"
    );
    let body = json!({
        "error": { "status": refusal.status.as_u16(), "message": refusal.message, "details": [] },
        "delivery": id,
        "verdict": Verdict::Rejected,
    });
    (refusal.status, axum::Json(body)).into_response()
}

/// The body, whole, or 413 past [`MAX_BODY_BYTES`] (a declared `Content-Length` over
/// it is refused before reading), or 408 when it is slower than the server allows.
async fn read_body(body: Body) -> Result<Vec<u8>, Refusal> {
    let too_large = |size: &str| {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body has {size} bytes; at most {MAX_BODY_BYTES} are accepted"),
        )
    };
    let mut stream = body.into_data_stream();
    let mut kept: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            // A body slower than the server's patience (see `http`): 408.
            let status = if crate::http::BodyTimedOut::caused(&e) {
                StatusCode::REQUEST_TIMEOUT
            } else {
                StatusCode::BAD_REQUEST
            };
            Refusal::new(status, format!("cannot read the body: {e}"))
        })?;
        seen += chunk.len();
        if seen <= MAX_BODY_BYTES {
            kept.extend_from_slice(&chunk);
        } else if seen > DRAIN_LIMIT {
            return Err(too_large(&format!("more than {DRAIN_LIMIT}")));
        }
    }
    if seen > MAX_BODY_BYTES { Err(too_large(&seen.to_string())) } else { Ok(kept) }
}

/// What [`check`] established.
struct Checked {
    provider: Provider,
    delivery: Delivery,
    /// Gitee's signature mode: SHA-256 of the signature, good for one body only.
    signature_sha256: Option<String>,
}

/// Provider, binding, secret, signature and payload, in that order.
async fn check(state: &AppState, received: &Received, body: &[u8]) -> Result<Checked, Refusal> {
    let provider =
        received.provider_text.parse::<Provider>().map_err(|e| Refusal::new(StatusCode::NOT_FOUND, e.to_string()))?;
    let binding = match state.store.binding(&received.binding).await {
        Ok(binding) => binding,
        Err(wharf_store::StoreError::NotFound(_)) => {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                format!("no repository binding is named `{}`", received.binding.chars().take(200).collect::<String>()),
            ));
        }
        Err(e) => return Err(Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the binding: {e}"))),
    };
    if binding.provider != provider.as_str() {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            format!(
                "binding `{}` is a {} binding, not a {provider} one; its webhook address is /hooks/{}/{}",
                binding.name, binding.provider, binding.provider, binding.name
            ),
        ));
    }
    let Some(secret) = binding.webhook_secret.as_deref().filter(|s| !s.is_empty()) else {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "the binding has no webhook secret: set `webhook_secret` on binding `{}` and the same secret at {provider}",
                binding.name
            ),
        ));
    };
    verify(provider, &received.pairs, body, secret, wharf_store::now_ms(), GITEE_MAX_SKEW)
        .map_err(|e| Refusal::new(StatusCode::UNAUTHORIZED, e.to_string()))?;
    let signature_sha256 = match provider {
        Provider::Gitee => gitee_signature(state, received, body, secret).await?,
        _ => None,
    };
    let delivery = parse(provider, &received.pairs, body, MAX_BODY_BYTES).map_err(parse_refusal)?;
    Ok(Checked { provider, delivery, signature_sha256 })
}

/// Gitee signs a timestamp, not the body: a signature seen on the way could carry
/// another body for an hour. So a signature is accepted with the body it first came
/// with only (a retry of the same delivery is a duplicate, not a forgery). Password
/// mode sends the secret itself in every delivery: accepted, with a warning in the log.
async fn gitee_signature(
    state: &AppState,
    received: &Received,
    body: &[u8],
    secret: &str,
) -> Result<Option<String>, Refusal> {
    let token = received.pairs.iter().find(|(n, _)| n == "x-gitee-token").map(|(_, v)| v.trim()).unwrap_or("");
    if token == secret {
        tracing::warn!(
            binding = %received.binding,
            "Gitee webhook in password mode: the secret travels in clear in every delivery; switch the hook to \
             signature mode"
        );
        return Ok(None);
    }
    let signature = crate::auth::sha256_hex(token.as_bytes());
    let body_sha = crate::auth::sha256_hex(body);
    match state.store.signature_reused(&signature, &body_sha).await {
        Ok(None) => Ok(Some(signature)),
        Ok(Some(earlier)) => Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "this X-Gitee-Token signature came before with another body (delivery {earlier}); Gitee's \
                 signature does not cover the body, so Wharf accepts each signature with one body only"
            ),
        )),
        Err(e) => Err(Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot check the signature: {e}"))),
    }
}

/// 422 for a payload value Wharf refuses, 400 for a request that is no delivery.
fn parse_refusal(e: ParseError) -> Refusal {
    let status = match e {
        ParseError::InvalidField { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        ParseError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    Refusal::new(status, e.to_string())
}

/// The headers as `(name, value)` pairs, names lower-case; values that are not UTF-8
/// are read lossily (the parser then refuses them where it reads them).
fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect()
}

/// The headers as a JSON object for storage: a name sent once maps to its value, a
/// repeated one to the list of its values; secret-bearing headers are redacted. At most
/// [`MAX_STORED_HEADERS`] names and [`MAX_STORED_HEADER_BYTES`] of values are kept, each
/// value cut to [`MAX_HEADER_VALUE`] bytes; what is left out is counted under
/// [`MORE_HEADERS`].
fn stored_headers(headers: &HeaderMap, provider: Option<Provider>) -> Value {
    let secret: Vec<&str> = match provider {
        Some(p) => p.secret_headers().to_vec(),
        None => Provider::ALL.iter().flat_map(|p| p.secret_headers().iter().copied()).collect(),
    };
    let mut out = Map::new();
    let mut bytes = 0usize;
    let mut left_out = 0usize;
    for name in headers.keys() {
        let name = name.as_str();
        let redact = secret.iter().chain(ALWAYS_REDACTED.iter()).any(|s| s.eq_ignore_ascii_case(name));
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| if redact { REDACTED.to_owned() } else { cut_value(&String::from_utf8_lossy(v.as_bytes())) })
            .collect();
        let size = name.len() + values.iter().map(String::len).sum::<usize>();
        if out.len() >= MAX_STORED_HEADERS || bytes + size > MAX_STORED_HEADER_BYTES {
            left_out += values.len();
            continue;
        }
        bytes += size;
        let mut values: Vec<Value> = values.into_iter().map(Value::from).collect();
        let value = if values.len() == 1 { values.remove(0) } else { Value::Array(values) };
        out.insert(name.to_owned(), value);
    }
    if left_out > 0 {
        out.insert(MORE_HEADERS.into(), format!("{left_out} more header value(s) not stored").into());
    }
    Value::Object(out)
}

/// A header value cut to [`MAX_HEADER_VALUE`] bytes (on a character boundary).
fn cut_value(value: &str) -> String {
    if value.len() <= MAX_HEADER_VALUE {
        return value.to_owned();
    }
    let mut end = MAX_HEADER_VALUE;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[cut]", &value[..end])
}

/// The body as stored: Gitee repeats the webhook secret in the payload's `password`
/// field (password mode), so for Gitee (or an unknown provider) a JSON body with a
/// non-empty `password` is stored with it redacted (and its keys in sorted order).
/// Everything else is stored as received; `body_sha256` is always of the original.
fn stored_body(provider: Option<Provider>, body: &[u8]) -> Vec<u8> {
    if matches!(provider, Some(Provider::Gitee) | None)
        && let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(body)
        && fields.get("password").and_then(Value::as_str).is_some_and(|p| !p.is_empty())
    {
        fields.insert("password".into(), REDACTED.into());
        return serde_json::to_vec(&Value::Object(fields)).unwrap_or_default();
    }
    body.to_vec()
}

/// Stored headers back as pairs, for parsing a stored delivery again.
fn pairs_of(stored: &Value) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for (name, value) in stored.as_object().into_iter().flatten() {
        match value {
            Value::String(v) => pairs.push((name.clone(), v.clone())),
            Value::Array(values) => {
                pairs.extend(values.iter().filter_map(Value::as_str).map(|v| (name.clone(), v.to_owned())))
            }
            _ => {}
        }
    }
    pairs
}

// ---------------------------------------------------------------------------------
// What an event starts

/// What an event asks of pipelines: its trigger event type, the branch its filters
/// see, the repository, and what to check out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub kind: GitEvent,
    /// The branch matched against `branches`: the pushed branch, a merge request's
    /// target branch; `None` for a tag (tags ignore `branches`).
    pub filter_branch: Option<String>,
    /// The repository's clone addresses (for a merge request, the target's).
    pub repo_urls: Vec<String>,
    /// What the run clones: the pushed branch or tag; a merge request's source branch
    /// (same repository) or target branch (a fork's request, or once merged).
    pub git_ref: GitRef,
    /// The exact commit the run checks out: the pushed one; the request's head; the
    /// merge commit once merged (the head when the provider gives none).
    pub commit: String,
    pub sender: String,
    /// A pull/merge request from a fork, not merged yet: its runs get no secrets, and
    /// a pipeline whose tasks need secrets is not started (see [`start_runs`]).
    pub from_fork: bool,
}

impl Target {
    /// The target of an event that may start runs, or why it starts none.
    pub fn of(event: &Event) -> Result<Target, String> {
        let Some(kind) = event_kind(event) else { return Err(why_nothing(event)) };
        match event {
            Event::Push { repo_urls, branch, tag, commit, sender, .. } => {
                let git_ref = match (branch, tag) {
                    (_, Some(tag)) => GitRef::Tag(tag.clone()),
                    (Some(branch), None) => GitRef::Branch(branch.clone()),
                    (None, None) => return Err(why_nothing(event)),
                };
                Ok(Target {
                    kind,
                    filter_branch: branch.clone(),
                    repo_urls: repo_urls.clone(),
                    git_ref,
                    commit: commit.clone(),
                    sender: sender.clone(),
                    from_fork: false,
                })
            }
            Event::Merge {
                action,
                repo_urls,
                source_repo_urls,
                source_branch,
                target_branch,
                commit,
                merge_commit,
                sender,
                ..
            } => {
                // Merged code was vetted by whoever merged it; an open request from
                // another repository (or from a fork since deleted) was not.
                let from_fork = *action != MergeAction::Merged && !same_repository(repo_urls, source_repo_urls);
                let (git_ref, commit) = if *action == MergeAction::Merged {
                    (GitRef::Branch(target_branch.clone()), merge_commit.clone().unwrap_or_else(|| commit.clone()))
                } else if same_repository(repo_urls, source_repo_urls) {
                    (GitRef::Branch(source_branch.clone()), commit.clone())
                } else {
                    // A fork's branch is not in the target repository: clone the target
                    // branch and fetch the head commit by its sha (GitHub and GitLab
                    // serve a merge request's commits from the target repository).
                    (GitRef::Branch(target_branch.clone()), commit.clone())
                };
                Ok(Target {
                    kind,
                    filter_branch: Some(target_branch.clone()),
                    repo_urls: repo_urls.clone(),
                    git_ref,
                    commit,
                    sender: sender.clone(),
                    from_fork,
                })
            }
            Event::Ping | Event::Unsupported(_) => Err(why_nothing(event)),
        }
    }

    /// Whether `pipeline` (its latest version) is started by this target arriving
    /// through `binding`: its `source.repo` is the event's repository, its
    /// `source.binding` is this binding or unset, and one of its `events` triggers
    /// names the event type with a branch filter that matches (any branch when empty;
    /// tags ignore the filter).
    pub fn starts(&self, pipeline: &Pipeline, binding: &str) -> bool {
        let Some(source) = &pipeline.source else { return false };
        if source.binding.as_deref().is_some_and(|b| b != binding) {
            return false;
        }
        if !self.repo_urls.iter().any(|url| same_repo(&source.repo, url)) {
            return false;
        }
        pipeline.triggers.iter().any(|trigger| match &trigger.kind {
            TriggerKind::Events { events, branches } => {
                events.contains(&self.kind)
                    && match &self.filter_branch {
                        _ if self.kind == GitEvent::Tag || branches.is_empty() => true,
                        Some(branch) => branches.iter().any(|glob| branch_matches(glob, branch)),
                        None => false,
                    }
            }
            _ => false,
        })
    }

    /// `branch `main`` or `tag `v1``: what a run of this target checks out.
    fn ref_name(&self) -> String {
        match &self.git_ref {
            GitRef::Branch(branch) => format!("branch `{branch}`"),
            GitRef::Tag(tag) => format!("tag `{tag}`"),
        }
    }

    fn describe(&self) -> String {
        let what = match self.kind {
            GitEvent::Push => "push",
            GitEvent::Merge => "merge request",
            GitEvent::Tag => "tag",
        };
        let on = match (&self.git_ref, &self.filter_branch) {
            (GitRef::Tag(tag), _) => format!("tag `{tag}`"),
            (_, Some(branch)) => format!("branch `{branch}`"),
            (GitRef::Branch(branch), None) => format!("branch `{branch}`"),
        };
        let repo = self.repo_urls.first().map(String::as_str).unwrap_or("?");
        format!("{what} on {on} of {repo}")
    }
}

/// Why an event starts nothing, in words for the delivery's reason.
fn why_nothing(event: &Event) -> String {
    match event {
        Event::Ping => "a ping: the provider checks that the endpoint answers".into(),
        Event::Unsupported(name) => format!("the `{name}` event starts nothing"),
        Event::Push { deleted: true, branch: Some(b), .. } => format!("branch `{b}` was deleted: nothing starts"),
        Event::Push { deleted: true, tag: Some(t), .. } => format!("tag `{t}` was deleted: nothing starts"),
        Event::Push { deleted: true, .. } => "a ref was deleted: nothing starts".into(),
        Event::Push { .. } => "the pushed ref is neither a branch nor a tag".into(),
        Event::Merge { action, number, .. } => {
            format!("merge request #{number} was {}: no new code, nothing starts", action.as_str())
        }
    }
}

/// Whether two lists of clone addresses name a common repository.
fn same_repository(a: &[String], b: &[String]) -> bool {
    a.iter().any(|x| b.iter().any(|y| same_repo(x, y)))
}

/// Whether two clone addresses name the same repository: compared by host (any case,
/// without user or port) and path (without a trailing `/` or `.git`), whatever the
/// scheme, so `https://GitHub.com/acme/app.git`, `git@github.com:acme/app` and
/// `ssh://git@github.com:22/acme/app/` are one repository. `file://` URLs and
/// absolute paths compare as paths. Addresses still holding `${…}` match nothing.
pub fn same_repo(a: &str, b: &str) -> bool {
    match (repo_key(a), repo_key(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// `(host, path)` of a clone address, normalised as [`same_repo`] says.
pub fn repo_key(url: &str) -> Option<(String, String)> {
    let url = url.trim();
    if url.is_empty() || url.contains("${") {
        return None;
    }
    let (host, path) = if let Some((scheme, rest)) = url.split_once("://") {
        if scheme.eq_ignore_ascii_case("file") {
            (String::new(), rest.to_owned())
        } else {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            (host_of(authority), path.to_owned())
        }
    } else if url.starts_with('/') {
        (String::new(), url.to_owned())
    } else if let Some((authority, path)) = url.split_once(':')
        && !authority.contains('/')
    {
        // scp-like `[user@]host:path`
        (host_of(authority), path.to_owned())
    } else {
        return None;
    };
    let mut path = path.as_str();
    loop {
        let trimmed = path.trim_end_matches('/');
        let trimmed = trimmed.strip_suffix(".git").unwrap_or(trimmed);
        if trimmed == path {
            break;
        }
        path = trimmed;
    }
    // A host's paths are relative to it (`ssh://h/a/b` is `h:a/b`); a local path is not.
    let path = if host.is_empty() { path.to_owned() } else { path.trim_start_matches('/').to_owned() };
    if path.is_empty() {
        return None;
    }
    Some((host, path))
}

/// `[user[:password]@]host[:port]` → `host`, lower-case (IPv6 brackets kept).
pub(crate) fn host_of(authority: &str) -> String {
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = if host.starts_with('[') {
        host.split_once(']').map_or(host.to_owned(), |(h, _)| format!("{h}]"))
    } else {
        host.split(':').next().unwrap_or(host).to_owned()
    };
    host.to_ascii_lowercase()
}

/// How long a run an event started at a commit keeps another event for the same
/// pipeline, ref and commit from starting it again (a merged request's merge event and
/// its push arrive within seconds of each other, in either order).
pub const SAME_COMMIT_WINDOW_MS: i64 = 3_600_000;

/// Whether a pipeline that already ran for this ref and commit because of an event
/// (within [`SAME_COMMIT_WINDOW_MS`]) is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fresh {
    /// No: deliveries as they arrive (and finished after a restart).
    Only,
    /// Yes: an admin's replay asks for the runs again.
    Any,
}

/// Queues a run of every pipeline `target` starts, skipping the pipelines of
/// `already` (runs the delivery started before a restart cut it short). The runs are
/// written to the delivery as they are queued, so a restart does not start them twice.
///
/// Two policies, each noted in the delivery's reason when it keeps a pipeline from
/// starting:
/// - **one run per commit**: with [`Fresh::Only`], a pipeline that an event already
///   started at the same ref and commit (a merged request's merge event and its push;
///   a request opened on a branch just pushed) is not started again;
/// - **forks get no secrets**: a fork's open request starts its runs with
///   `fork: true` in the cause (no secrets, said in the run's log); a pipeline whose
///   tasks name secrets is not started at all.
#[allow(clippy::too_many_arguments)]
async fn start_runs(
    state: &Arc<AppState>,
    id: i64,
    provider: Provider,
    binding: &str,
    delivery: &Delivery,
    target: &Target,
    already: &[i64],
    fresh: Fresh,
) -> Handled {
    let mut runs: Vec<StartedRun> = Vec::new();
    let mut skip: HashSet<i64> = HashSet::new();
    for run in already {
        if let Ok(row) = state.store.run(*run).await {
            skip.insert(row.summary.pipeline_id);
            runs.push(StartedRun { id: *run, number: row.summary.number, pipeline: row.pipeline });
        }
    }
    let matched = match matching(state, target, binding).await {
        Ok(matched) => matched,
        Err(e) => {
            return Handled { verdict: Verdict::Received, reason: Some(e.to_string()), runs };
        }
    };
    let mut notes: Vec<String> = Vec::new();
    let cause = Cause::Event {
        provider: provider.as_str().to_owned(),
        delivery: delivery.id.clone(),
        sender: target.sender.clone(),
        commit: target.commit.clone(),
        fork: target.from_fork,
    };
    let startable: Vec<&PipelineRow> = matched.iter().filter(|row| !skip.contains(&row.id)).collect();
    // Checking for an earlier run and starting one happen under one lock, so that
    // two events for one commit arriving together start one run.
    let _gate = state.forges.event_gate.lock().await;
    for (i, row) in startable.iter().enumerate() {
        if !row.active {
            notes.push(format!("pipeline `{}` matches but is inactive", row.name));
            continue;
        }
        if target.from_fork {
            let needs = match state.runs.pipeline_version(row.id, row.version).await {
                Ok(model) => secrets_named(&model),
                Err(e) => {
                    notes.push(format!("pipeline `{}` could not start: {}", row.name, AppError::from(e)));
                    continue;
                }
            };
            if !needs.is_empty() {
                notes.push(format!(
                    "pipeline `{}` not started: the request comes from a fork, whose runs get no secrets, and its \
                     tasks need {}",
                    row.name,
                    needs.join(", ")
                ));
                continue;
            }
        }
        if fresh == Fresh::Only {
            match earlier_run(state, row.id, target).await {
                Ok(Some(number)) => {
                    notes.push(format!(
                        "pipeline `{}` already ran for commit {} on {} (run #{number}): not started again",
                        row.name,
                        short(&target.commit),
                        target.ref_name()
                    ));
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    notes.push(format!("pipeline `{}` could not start: {}", row.name, e));
                    continue;
                }
            }
        }
        let queued = state
            .runs
            .enqueue_at(
                row,
                row.version,
                cause.clone(),
                BTreeMap::new(),
                Some(target.commit.clone()),
                Some(target.git_ref.clone()),
                None,
            )
            .await;
        match queued {
            Ok(accepted) => {
                if target.from_fork {
                    note_in_run_log(
                        state,
                        accepted.id,
                        "started by a pull/merge request from a fork: this run gets no secrets",
                    );
                }
                runs.push(StartedRun { id: accepted.id, number: accepted.number, pipeline: row.name.clone() });
                if i + 1 < startable.len() {
                    let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
                    if let Err(e) = state.store.update_delivery(id, Verdict::Received, None, &ids).await {
                        tracing::error!(delivery = id, error = %e, "cannot record a run on its delivery");
                    }
                }
            }
            Err(e) => notes.push(format!("pipeline `{}` could not start: {}", row.name, AppError::from(e))),
        }
    }
    tracing::info!(delivery = id, runs = runs.len(), "{}", target.describe());
    let reason = if notes.is_empty() { None } else { Some(notes.join("; ")) };
    if !runs.is_empty() {
        Handled { verdict: Verdict::Started, reason, runs }
    } else if matched.is_empty() {
        Handled::ignored(format!("no pipeline has an events trigger for this {}", target.describe()))
    } else {
        Handled::ignored(reason.unwrap_or_else(|| "no pipeline started".into()))
    }
}

/// The number of a run of `pipeline_id` that an event started at `target`'s ref and
/// commit within [`SAME_COMMIT_WINDOW_MS`], if any.
async fn earlier_run(state: &AppState, pipeline_id: i64, target: &Target) -> Result<Option<i64>, AppError> {
    let since = wharf_store::now_ms() - SAME_COMMIT_WINDOW_MS;
    let (branch, tag) = match &target.git_ref {
        GitRef::Branch(branch) => (Some(branch.as_str()), None),
        GitRef::Tag(tag) => (None, Some(tag.as_str())),
    };
    Ok(state.store.event_run_at(pipeline_id, &target.commit, branch, tag, since).await?)
}

/// `stage/task: SECRET` for every secret a task of `pipeline` names.
fn secrets_named(pipeline: &Pipeline) -> Vec<String> {
    let mut named = Vec::new();
    for stage in pipeline.all_stages() {
        for task in &stage.tasks {
            for secret in &task.secrets {
                named.push(format!("`{secret}` ({}/{})", stage.name, task.name));
            }
        }
    }
    named
}

/// Appends a line to a run's own log (what the run page shows above its stages).
fn note_in_run_log(state: &AppState, run: i64, text: &str) {
    match state.logs.writer(run, wharf_store::logs::LogKey::Run) {
        Ok(mut writer) => {
            let line = wharf_executor::stored::line(jiff::Timestamp::now(), wharf_executor::Stream::System, text);
            if let Err(e) = writer.append(&line) {
                tracing::error!(run, error = %e, "cannot write to a run's log");
            }
        }
        Err(e) => tracing::error!(run, error = %e, "cannot open a run's log"),
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Every pipeline whose latest version `target` starts (see [`Target::starts`]),
/// active or not, by project and name. A pipeline is started only when its creator
/// may view `binding` (see [`crate::forges::creator_sees`]), whether or not it names
/// it: pushes to another user's repository binding never start, nor show, a pipeline
/// that points at the same repository, or names a binding of that name it could not
/// see when it was saved (one created later, or deleted and made again by another).
async fn matching(state: &AppState, target: &Target, binding: &str) -> Result<Vec<PipelineRow>, AppError> {
    let (rows, _) = state.store.pipelines(i64::MAX, 0).await?;
    let received = state.store.binding(binding).await?;
    let mut creators: HashMap<String, bool> = HashMap::new();
    let mut matched = Vec::new();
    for (row, _) in rows {
        match state.runs.pipeline_version(row.id, row.version).await {
            Ok(model) if target.starts(&model, binding) => {}
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(pipeline = row.id, error = ?e, "cannot read a pipeline while matching a webhook");
                continue;
            }
        }
        let sees = match creators.get(&row.created_by) {
            Some(sees) => *sees,
            None => {
                let sees = crate::forges::creator_sees(state, &row.created_by, &received).await?;
                creators.insert(row.created_by.clone(), sees);
                sees
            }
        };
        if sees {
            matched.push(row);
        }
    }
    Ok(matched)
}

// ---------------------------------------------------------------------------------
// Replay and restart

/// Handles a stored delivery again, as a new delivery row (reason "replay of delivery
/// N"). The signature is not checked again (it was checked when the delivery
/// arrived), so a `rejected` delivery cannot be replayed (409). Returns the new row's
/// id and what came of it.
pub async fn replay(state: &Arc<AppState>, original: DeliveryRow) -> Result<(i64, Handled), AppError> {
    let summary = &original.summary;
    if summary.verdict == Verdict::Rejected {
        return Err(AppError::Conflict(format!(
            "delivery {} was rejected ({}); only deliveries that were verified can be replayed",
            summary.id,
            summary.reason.as_deref().unwrap_or("no reason recorded")
        )));
    }
    let provider = summary.provider.parse::<Provider>().map_err(|e| AppError::Conflict(e.to_string()))?;
    let body = original.body.clone().unwrap_or_default();
    let delivery = parse(provider, &pairs_of(&original.headers), &body, MAX_BODY_BYTES)
        .map_err(|e| AppError::Conflict(format!("delivery {} cannot be read again: {e}", summary.id)))?;
    let replay_of = format!("replay of delivery {}", summary.id);
    let row = NewDelivery {
        binding: summary.binding.clone(),
        provider: summary.provider.clone(),
        delivery_id: summary.delivery_id.clone(),
        event: summary.event.clone(),
        headers: original.headers.clone(),
        body: original.body.clone(),
        body_sha256: summary.body_sha256.clone(),
        verdict: Verdict::Received,
        reason: Some(replay_of.clone()),
        signature_sha256: None,
    };
    let id = state.store.insert_delivery(&row).await?;
    let mut handled = match Target::of(&delivery.event) {
        Ok(target) => start_runs(state, id, provider, &summary.binding, &delivery, &target, &[], Fresh::Any).await,
        Err(why) => Handled::ignored(why),
    };
    if handled.verdict == Verdict::Received {
        return Err(AppError::Internal(handled.reason.unwrap_or_default()));
    }
    handled.reason = Some(match handled.reason.take() {
        Some(reason) => format!("{replay_of}: {reason}"),
        None => replay_of,
    });
    let runs: Vec<i64> = handled.runs.iter().map(|r| r.id).collect();
    state.store.update_delivery(id, handled.verdict, handled.reason.as_deref(), &runs).await?;
    state.metrics.webhook(handled.verdict);
    Ok((id, handled))
}

/// The answer to a replay: 201 with the new delivery.
pub fn replay_answer(original: i64, id: i64, handled: &Handled) -> Response {
    let mut body = handled.body(id);
    body["replay_of"] = json!(original);
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

/// At start: finishes the deliveries a previous process stored `received` (verified
/// and read) and did not finish, starting what they had not started yet.
pub async fn resume(state: &Arc<AppState>) {
    let rows = match state.store.deliveries_with_verdict(Verdict::Received).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "cannot read unfinished webhook deliveries");
            return;
        }
    };
    for row in rows {
        let summary = &row.summary;
        let body = row.body.clone().unwrap_or_default();
        let parsed = summary
            .provider
            .parse::<Provider>()
            .ok()
            .and_then(|p| parse(p, &pairs_of(&row.headers), &body, MAX_BODY_BYTES).ok().map(|d| (p, d)));
        let handled = match parsed {
            Some((provider, delivery)) => match Target::of(&delivery.event) {
                Ok(target) => {
                    start_runs(
                        state,
                        summary.id,
                        provider,
                        &summary.binding,
                        &delivery,
                        &target,
                        &summary.runs,
                        Fresh::Only,
                    )
                    .await
                }
                Err(why) => Handled::ignored(why),
            },
            None => Handled::ignored("cut short by a server restart and no longer readable"),
        };
        let mut handled = handled;
        if handled.verdict == Verdict::Received {
            // Matching failed again (a database error): leave it for the next start.
            continue;
        }
        let note = "finished after a server restart";
        handled.reason = Some(match handled.reason.take() {
            Some(reason) => format!("{note}: {reason}"),
            None => note.to_owned(),
        });
        let runs: Vec<i64> = handled.runs.iter().map(|r| r.id).collect();
        match state.store.update_delivery(summary.id, handled.verdict, handled.reason.as_deref(), &runs).await {
            Ok(()) => tracing::warn!(delivery = summary.id, verdict = %handled.verdict, "webhook delivery {note}"),
            Err(e) => tracing::error!(delivery = summary.id, error = %e, "cannot finish a webhook delivery"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_addresses_compare_by_host_and_path() {
        let same = [
            ("https://github.com/acme/app.git", "https://github.com/acme/app"),
            ("https://github.com/acme/app.git", "git@github.com:acme/app.git"),
            ("https://GitHub.COM/acme/app/", "ssh://git@github.com/acme/app.git"),
            ("ssh://git@gitlab.example.com:2222/qa/jack-2048.git", "https://gitlab.example.com/qa/jack-2048"),
            ("https://user:pw@gitee.com/a/b.git", "git@gitee.com:a/b"),
            ("file:///srv/git/app.git", "/srv/git/app"),
            ("file:///srv/git/app/", "file:///srv/git/app.git"),
            ("http://[::1]:8080/a/b.git", "ssh://git@[::1]/a/b"),
        ];
        for (a, b) in same {
            assert!(same_repo(a, b), "{a} vs {b}");
            assert!(same_repo(b, a), "{b} vs {a}");
        }
        let different = [
            ("https://github.com/acme/app", "https://github.com/acme/app2"),
            ("https://github.com/acme/app", "https://github.com/Acme/app"),
            ("https://github.com/acme/app", "https://gitlab.com/acme/app"),
            ("https://github.com/acme/app", "https://github.com/other/acme/app"),
            ("file:///srv/git/app", "https://srv/git/app"),
            ("https://example.com/${repo}.git", "https://example.com/${repo}.git"),
            ("https://github.com/", "https://github.com"),
            ("relative/path", "relative/path"),
        ];
        for (a, b) in different {
            assert!(!same_repo(a, b), "{a} vs {b}");
        }
        assert_eq!(repo_key("git@github.com:acme/app.git.git"), Some(("github.com".into(), "acme/app".into())));
    }

    #[test]
    fn stored_headers_redact_secrets_and_keep_repeats() {
        let mut headers = HeaderMap::new();
        headers.insert("x-gitlab-token", "s3cret".parse().unwrap());
        headers.insert("x-gitlab-event", "Push Hook".parse().unwrap());
        headers.append("x-extra", "1".parse().unwrap());
        headers.append("x-extra", "2".parse().unwrap());
        headers.insert("authorization", "Bearer t".parse().unwrap());
        let stored = stored_headers(&headers, Some(Provider::GitLab));
        assert_eq!(stored["x-gitlab-token"], REDACTED);
        assert_eq!(stored["authorization"], REDACTED);
        assert_eq!(stored["x-gitlab-event"], "Push Hook");
        assert_eq!(stored["x-extra"], json!(["1", "2"]));
        assert!(!stored.to_string().contains("s3cret"));
        let pairs = pairs_of(&stored);
        assert!(pairs.contains(&("x-extra".into(), "2".into())));
        // An unknown provider redacts every provider's secret headers.
        let mut headers = HeaderMap::new();
        headers.insert("x-gitee-token", "s3cret".parse().unwrap());
        assert_eq!(stored_headers(&headers, None)["x-gitee-token"], REDACTED);
    }

    #[test]
    fn gitee_bodies_lose_their_password() {
        let body = br#"{"password": "s3cret", "ref": "refs/heads/main"}"#;
        let stored = stored_body(Some(Provider::Gitee), body);
        let value: Value = serde_json::from_slice(&stored).unwrap();
        assert_eq!(value["password"], REDACTED);
        assert_eq!(value["ref"], "refs/heads/main");
        assert_eq!(stored_body(Some(Provider::GitHub), body), body);
        let empty = br#"{"password": "", "ref": "x"}"#;
        assert_eq!(stored_body(Some(Provider::Gitee), empty), empty);
        assert_eq!(stored_body(Some(Provider::Gitee), b"{trunc"), b"{trunc");
    }
}
