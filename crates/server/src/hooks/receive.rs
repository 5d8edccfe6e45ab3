//! Taking a delivery in: every request is stored in `deliveries` before it is
//! answered, whatever becomes of it, with its headers capped ([`MAX_STORED_HEADERS`],
//! [`MAX_HEADER_VALUE`], [`MAX_STORED_HEADER_BYTES`]). Refused ones are kept in a ring
//! of the newest [`REJECTED_KEPT`], their bodies cut to [`REJECTED_BODY_KEPT`]; all
//! deliveries are kept up to the configured count (the store prunes as new ones
//! arrive). An address whose deliveries were refused too often lately is answered 429
//! at once, its request neither read nor stored ([`AppState::hook_refusals`]). In order:
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
//! What an authentic delivery starts is [`super::matching`]'s.

use super::Handled;
use super::matching::{Fresh, Target, start_runs};
use crate::AppState;
use crate::error::AppError;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use wharf_scm::webhook::{Delivery, GITEE_MAX_SKEW, MAX_BODY_BYTES, ParseError, Provider, parse, verify};
use wharf_store::deliveries::{NewDelivery, Verdict};

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
    let address = crate::http::client_key(crate::http::client_ip(&extensions).as_deref());
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
        return AppError::bug(handled.reason.unwrap_or_default()).into_response();
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
pub(super) fn pairs_of(stored: &Value) -> Vec<(String, String)> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
