//! Runs: start (with parameters), list (newest first, paginated), detail, stop,
//! re-run (the record's own version, parameters and commit) and retry from the failed
//! stage (a new record that skips what succeeded and reuses its outputs and workspace).

use super::pipelines::find_for;
use super::{AppStateRef, Page, Paged, created, json_body};
use crate::AppState;
use crate::authz::{self, Action, Caller};
use crate::error::{ApiResult, AppError};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use wharf_core::run::{Cause, Progress};
use wharf_store::RunRow;
use wharf_store::idempotency::Claim;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    #[serde(default)]
    parameters: BTreeMap<String, String>,
}

/// A run, with its pipeline checked for `action` (runs follow their pipeline). A run
/// of a pipeline the caller may not see is "not found", naming only the run.
pub async fn run_for(state: &AppState, caller: &Caller, id: &str, action: Action) -> ApiResult<RunRow> {
    let row = state.store.run(parse_id(id)?).await?;
    let pipeline = state.store.pipeline(row.summary.pipeline_id).await?;
    authz::check(caller, action, &super::pipelines::object(&pipeline))
        .map_err(|denied| if denied.hidden { AppError::NotFound(format!("run `{id}`")) } else { denied.into() })?;
    Ok(row)
}

/// The header that makes `POST /pipelines/{key}/runs` safe to send again.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The `Idempotency-Key` header, when given: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else { return Ok(None) };
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
/// The answer to a run started: its id and number.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Accepted {
    pub id: i64,
    pub number: i64,
}

impl From<wharf_lifecycle::Accepted> for Accepted {
    fn from(a: wharf_lifecycle::Accepted) -> Self {
        Accepted { id: a.id, number: a.number }
    }
}

pub async fn start(
    State(state): AppStateRef,
    caller: Caller,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let row = find_for(&state, &caller, &key, &query, Action::RunPipeline).await?;
    let request: StartRequest = json_body(&body)?;
    let cause = Cause::Manual { user: caller.name.clone() };
    let Some(idempotency) = idempotency_key(&headers)? else {
        let accepted = state.runs.enqueue(&row, row.version, cause, request.parameters, None, None).await?;
        return Ok(created(Accepted::from(accepted)));
    };
    let parameters = serde_json::to_string(&request.parameters).map_err(|e| AppError::Internal(e.to_string()))?;
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
                Ok(created(Accepted::from(accepted)))
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
        return Ok(axum::Json(Paged { items, page: page.page, limit: page.limit, total }).into_response());
    }
    // `?full=true` (the run records of the details page): each row with its cause,
    // branch and times from the record.
    let mut full = Vec::with_capacity(items.len());
    for summary in items {
        let mut value = serde_json::to_value(&summary).map_err(|e| AppError::Internal(e.to_string()))?;
        if let Ok(run) = state.store.run(summary.id).await {
            let checkout = run.record.checkout.as_ref();
            merge(&mut value, times(&run.record.progress));
            merge(
                &mut value,
                json!({
                    "cause": run.record.cause,
                    "branch": checkout.and_then(|c| c.branch.clone()),
                    "tag": checkout.and_then(|c| c.tag.clone()),
                    "commit": checkout.and_then(|c| c.commit.clone()).or(summary.commit.clone()),
                }),
            );
        }
        full.push(value);
    }
    Ok(axum::Json(Paged { items: full, page: page.page, limit: page.limit, total }).into_response())
}

fn parse_id(id: &str) -> ApiResult<i64> {
    id.parse::<i64>().map_err(|_| AppError::NotFound(format!("run `{id}`")))
}

/// Timestamps a person reads: start, end and duration beside the full history.
fn times(progress: &Progress) -> Value {
    let now = jiff::Timestamp::now();
    json!({
        "started_at": progress.started_at(),
        "finished_at": progress.finished_at(),
        "duration_ms": progress.wall_time(now).map(|d| d.as_millis() as u64),
    })
}

fn merge(target: &mut Value, extra: Value) {
    if let (Value::Object(t), Value::Object(e)) = (target, extra) {
        t.extend(e);
    }
}

/// The run as the API shows it: the stored record, with ids and per-part times.
pub fn view(row: &RunRow, log_size: impl Fn(usize, usize) -> u64) -> ApiResult<Value> {
    let mut value = serde_json::to_value(&row.record).map_err(|e| AppError::Internal(e.to_string()))?;
    merge(&mut value, times(&row.record.progress));
    merge(
        &mut value,
        json!({
            "id": row.summary.id,
            "pipeline_id": row.summary.pipeline_id,
            "version": row.summary.version,
            "retry_of": row.summary.retry_of,
            "commit": row.record.checkout.as_ref().and_then(|c| c.commit.clone()).or(row.summary.commit.clone()),
            "increment": row.summary.increment,
        }),
    );
    if let (Some(checkout), Some(v)) = (&row.record.checkout, value.get_mut("checkout")) {
        merge(v, times(&checkout.progress));
    }
    if let Some(Value::Array(stages)) = value.get_mut("stages") {
        for (s, (stage_value, stage)) in stages.iter_mut().zip(&row.record.stages).enumerate() {
            merge(stage_value, times(&stage.progress));
            if let Some(Value::Array(tasks)) = stage_value.get_mut("tasks") {
                for (t, (task_value, task)) in tasks.iter_mut().zip(&stage.tasks).enumerate() {
                    merge(task_value, times(&task.progress));
                    merge(task_value, json!({ "log_size": log_size(s, t), "outputs": task.outputs }));
                }
            }
        }
    }
    Ok(value)
}

pub async fn show(State(state): AppStateRef, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let row = run_for(&state, &caller, &id, Action::ViewPipeline).await?;
    let logs = &state.logs;
    let run_id = row.summary.id;
    let value = view(&row, |s, t| logs.size(run_id, wharf_store::logs::LogKey::Task(s, t)))?;
    Ok(axum::Json(value).into_response())
}

pub async fn stop(State(state): AppStateRef, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let id = run_for(&state, &caller, &id, Action::RunPipeline).await?.summary.id;
    state.runs.stop(id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(json!({ "id": id, "status": "stopping" }))).into_response())
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
    Ok(created(Accepted::from(accepted)))
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
    Ok(created(Accepted::from(accepted)))
}
