//! Webhook deliveries from the code hosts, `POST /hooks/{github|gitlab|gitee}/{binding}`:
//! outside `/api/v1` and its bearer token, a delivery proves itself with the binding's
//! webhook secret (see [`wharf_scm::webhook::verify`]).
//!
//! Two halves. [`receive`](receive()) takes a request in: throttling, reading,
//! verification and parsing, and the storage of every delivery, refused or not (its
//! module doc has the order of the checks and what each refusal answers).
//! [`matching`] decides what an authentic event starts: its [`Target`] (event type,
//! filter branch, repository, ref and commit), the pipelines whose `source` and
//! `events` triggers it matches, the one-run-per-commit and fork policies, and queues
//! the runs. This file holds what both share ([`Handled`], [`StartedRun`]) and what
//! handles a stored delivery again: [`replay`] and, after a restart, [`resume`].
//!
//! Refused deliveries are stored `rejected` and start nothing. An authentic one is
//! then `ignored` (200: a ping, an event Wharf does not act on, a deletion, a merge
//! request edited or closed, no matching pipeline), a `duplicate` (200: its provider
//! delivery id was seen before) or `started` (202, with the runs).
//!
//! A delivery is stored `received` once verified and read, and takes its final
//! verdict after its runs are queued; one still `received` when the server starts
//! again was cut short and is handled then ([`resume`]), skipping the pipelines it
//! had already started.

mod matching;
mod receive;

pub use matching::{SAME_COMMIT_WINDOW_MS, Target, events_repo};
pub use receive::{
    MAX_HEADER_VALUE, MAX_STORED_HEADER_BYTES, MAX_STORED_HEADERS, MORE_HEADERS, REJECTED_BODY_KEPT, REJECTED_KEPT,
    receive,
};

use crate::AppState;
use crate::error::AppError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use matching::{Fresh, start_runs};
use receive::pairs_of;
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::Arc;
use wharf_scm::webhook::{MAX_BODY_BYTES, Provider, parse};
use wharf_store::deliveries::{DeliveryRow, NewDelivery, Verdict};

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
        return Err(AppError::bug(handled.reason.unwrap_or_default()));
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

/// After start, in the background: gives the pipelines saved before versions kept their
/// events repository (migration 0020) theirs, once, so deliveries stop parsing them.
pub async fn key_old_versions(state: Arc<AppState>) {
    let mut after = 0;
    loop {
        let batch = match state.store.pipelines_without_events_repo(after, 100).await {
            Ok(batch) if batch.is_empty() => return,
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the pipelines to key for webhook events");
                return;
            }
        };
        for (id, version, source) in batch {
            after = id;
            // A version that no longer parses starts nothing (matching skips it too).
            let key = wharf_pipeline::parse(&source).map(|model| events_repo(&model)).unwrap_or_default();
            if let Err(e) = state.store.set_events_repo(id, version, &key).await {
                tracing::warn!(pipeline = id, error = %e, "cannot key a pipeline for webhook events");
            }
        }
        tokio::task::yield_now().await;
    }
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
