//! Runs: start (with parameters), list (newest first, paginated), detail, stop,
//! re-run (the record's own version, parameters and commit) and retry from the failed
//! stage (a new record that skips what succeeded and reuses its outputs and workspace).

use super::pipelines::find_for;
use super::{AppStateRef, Page, created, json_body, rows};
use crate::AppState;
use crate::authz::{self, Action, Caller};
use crate::error::{ApiResult, AppError};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use wharf_api::runs::{
    Accepted, IDEMPOTENCY_KEY_HEADER, RunDetail, RunFacts, RunListed, StartRun, Stopping, StoppingStatus, Times,
};
use wharf_core::run::Cause;
use wharf_core::status::Status;
use wharf_store::RunRow;
use wharf_store::idempotency::Claim;
use wharf_store::logs::LogKey;

/// A run, with its pipeline checked for `action` (runs follow their pipeline). A run
/// of a pipeline the caller may not see is "not found", naming only the run.
/// The run `id` names, as its id (`12`) or as `PIPELINE#N` (`hello#3`, URL-encoded
/// `hello%233`; the pipeline by name or id, `?project=` is not needed unless the name is
/// ambiguous), when `caller` may do `action` to its pipeline (404 when it may not see it).
pub async fn run_for(state: &AppState, caller: &Caller, id: &str, action: Action) -> ApiResult<RunRow> {
    let row = match id.rsplit_once('#') {
        Some((pipeline, number)) => {
            let number = number
                .parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| AppError::NotFound(format!("run `{id}` (a run is `PIPELINE#N` or its id)")))?;
            let pipeline =
                super::pipelines::find_for(state, caller, pipeline, &HashMap::new(), Action::ViewPipeline).await?;
            state.store.run_by_number(pipeline.id, number).await.map_err(|e| match e {
                wharf_store::StoreError::NotFound(_) => AppError::NotFound(format!("run `{id}`")),
                e => e.into(),
            })?
        }
        None => state.store.run(parse_id(id)?).await?,
    };
    let pipeline = state.store.pipeline(row.summary.pipeline_id).await?;
    authz::check(caller, action, &authz::Object::pipeline(&pipeline))
        .map_err(|denied| if denied.hidden { AppError::NotFound(format!("run `{id}`")) } else { denied.into() })?;
    Ok(row)
}

/// The `Idempotency-Key` header, when given: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else { return Ok(None) };
    match value.to_str() {
        Ok(key) if (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(key.to_owned()))
        }
        _ => Err(AppError::invalid(
            "bad Idempotency-Key",
            "Idempotency-Key",
            "expected 1 to 255 visible ASCII characters (a UUID, say)",
        )),
    }
}

/// `POST /pipelines/{key}/runs {"parameters"}` → `201 {"id", "number"}`. With an
/// `Idempotency-Key` header, the same key from the same caller on the same pipeline
/// within 24 hours answers the run it started (with `Idempotent-Replayed: true`)
/// instead of starting another; the key with other parameters is a 422, and while the
/// first request is still being served a 409.
pub async fn start(
    State(state): AppStateRef,
    caller: Caller,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let row = find_for(&state, &caller, &key, &query, Action::RunPipeline).await?;
    let request: StartRun = json_body(&body)?;
    let cause = Cause::Manual { user: caller.name.clone() };
    let Some(idempotency) = idempotency_key(&headers)? else {
        let accepted = state.runs.enqueue(&row, row.version, cause, request.parameters, None, None).await?;
        return Ok(created(rows::accepted(accepted)));
    };
    let parameters = serde_json::to_string(&request.parameters)
        .map_err(|e| AppError::internal("cannot serialise the parameters", e))?;
    let fingerprint = crate::auth::sha256_hex(parameters.as_bytes());
    match state.store.claim_run_request(row.id, &caller.name, &idempotency, &fingerprint).await? {
        Claim::Used { body_sha256, run } if body_sha256 != fingerprint => Err(AppError::invalid(
            "Idempotency-Key reused with another request",
            "Idempotency-Key",
            format!(
                "`{idempotency}` already started {} of this pipeline with other parameters (keys are kept 24 \
                 hours); use a new key for a new run",
                run.map_or("a run".to_owned(), |(_, number)| format!("run #{number}"))
            ),
        )),
        Claim::Used { run: None, .. } => Err(AppError::Conflict(format!(
            "a request with Idempotency-Key `{idempotency}` is still being served; send it again in a moment"
        ))),
        Claim::Used { run: Some((id, number)), .. } => {
            let mut response = created(Accepted { id, number });
            response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(response)
        }
        Claim::New => match state.runs.enqueue(&row, row.version, cause, request.parameters, None, None).await {
            Ok(accepted) => {
                state
                    .store
                    .finish_run_request(row.id, &caller.name, &idempotency, (accepted.id, accepted.number))
                    .await?;
                Ok(created(rows::accepted(accepted)))
            }
            Err(e) => {
                state.store.release_run_request(row.id, &caller.name, &idempotency).await?;
                Err(e.into())
            }
        },
    }
}

pub async fn list(
    State(state): AppStateRef,
    caller: Caller,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let row = find_for(&state, &caller, &key, &query, Action::ViewPipeline).await?;
    let page = Page::from_query(&query)?;
    let (items, total) = state.store.runs(row.id, page.limit, page.offset()).await?;
    if query.get("full").map(String::as_str) != Some("true") {
        let items = items.into_iter().map(rows::run_summary).collect();
        return Ok(axum::Json(page.of(items, total)).into_response());
    }
    // `?full=true` (the run records of the details page): each row with its cause,
    // branch and times from the record.
    let now = jiff::Timestamp::now();
    let mut full = Vec::with_capacity(items.len());
    for summary in items {
        let mut listed = RunListed { summary: rows::run_summary(summary), record: None };
        if let Ok(run) = state.store.run(listed.summary.id).await {
            let checkout = run.record.checkout.as_ref();
            if let Some(commit) = checkout.and_then(|c| c.commit.clone()) {
                listed.summary.commit = Some(commit);
            }
            listed.record = Some(RunFacts {
                times: Times::of(&run.record.progress, now),
                branch: checkout.and_then(|c| c.branch.clone()),
                tag: checkout.and_then(|c| c.tag.clone()),
                cause: run.record.cause,
            });
        }
        full.push(listed);
    }
    Ok(axum::Json(page.of(full, total)).into_response())
}

fn parse_id(id: &str) -> ApiResult<i64> {
    id.parse::<i64>().map_err(|_| AppError::NotFound(format!("run `{id}`")))
}

/// The run as the API shows it: the stored record, with ids and per-part times.
pub fn view(row: &RunRow, log_size: impl Fn(usize, usize) -> u64) -> RunDetail {
    RunDetail::new(row.record.clone(), rows::run_ids(row), jiff::Timestamp::now(), log_size)
}

pub async fn show(State(state): AppStateRef, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let row = run_for(&state, &caller, &id, Action::ViewPipeline).await?;
    let logs = &state.logs;
    let run_id = row.summary.id;
    let keys: Vec<LogKey> = (row.record.stages.iter().enumerate())
        .flat_map(|(s, stage)| (0..stage.tasks.len()).map(move |t| LogKey::Task(s, t)))
        .collect();
    let sizes = logs.sizes(run_id, &keys).await.unwrap_or_default();
    let mut detail = view(&row, |s, t| sizes.get(&LogKey::Task(s, t)).copied().unwrap_or(0));
    // A waiting approval's decisions so far are in the store (the record gets them
    // when it ends).
    for task in detail.stages.iter_mut().flat_map(|s| s.tasks.iter_mut()) {
        if let (Status::Waiting, Some(approval)) = (task.status, task.approval.as_mut()) {
            approval.decisions = state.store.decisions(run_id, &task.name).await?;
        }
    }
    detail.notifications = state
        .store
        .notification_attempts(run_id)
        .await?
        .into_iter()
        .map(|a| wharf_api::gates::NotificationAttempt {
            event: a.event,
            channel: a.channel,
            target: a.target,
            attempt: a.attempt,
            outcome: a.outcome,
            detail: a.detail,
            at: a.at,
        })
        .collect();
    Ok(axum::Json(detail).into_response())
}

pub async fn stop(State(state): AppStateRef, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let id = run_for(&state, &caller, &id, Action::RunPipeline).await?.summary.id;
    state.runs.stop(id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(Stopping { id, status: StoppingStatus::Stopping })).into_response())
}

/// `POST /runs/{id}/rerun`: the record's version, parameters and commit, again.
pub async fn rerun(State(state): AppStateRef, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let previous = run_for(&state, &caller, &id, Action::RunPipeline).await?;
    let pipeline = state.store.pipeline(previous.summary.pipeline_id).await?;
    let commit = previous.record.checkout.as_ref().and_then(|c| c.commit.clone()).or(previous.summary.commit.clone());
    let cause = Cause::Rerun { of: previous.summary.number as u64 };
    // The branch or tag it cloned, too (an event's, which the pipeline may not name).
    let git_ref = wharf_lifecycle::dispatch::pinned_ref(&previous.record);
    let accepted = state
        .runs
        .enqueue_at(
            &pipeline,
            previous.summary.version,
            cause,
            previous.record.parameters.clone(),
            commit,
            git_ref,
            None,
        )
        .await?;
    Ok(created(rows::accepted(accepted)))
}

/// `POST /runs/{id}/retry`: a new record linked to this one, from its failed stage.
pub async fn retry(State(state): AppStateRef, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let previous = run_for(&state, &caller, &id, Action::RunPipeline).await?;
    if !previous.summary.status.is_terminal() {
        return Err(AppError::Conflict(format!(
            "run #{} is still {}; wait for it to end or stop it",
            previous.summary.number, previous.summary.status
        )));
    }
    let pipeline = state.store.pipeline(previous.summary.pipeline_id).await?;
    let cause = Cause::Retry { of: previous.summary.number as u64 };
    let accepted = state
        .runs
        .enqueue(
            &pipeline,
            previous.summary.version,
            cause,
            previous.record.parameters.clone(),
            previous.summary.commit.clone(),
            Some(&previous),
        )
        .await?;
    Ok(created(rows::accepted(accepted)))
}
