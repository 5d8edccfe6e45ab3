//! Stage triggers and channels, the HTTP side: a stage's hook URL (made, and its token
//! shown once, by `POST /api/v1/pipelines/{key}/stages/{stage}/hook`; called as
//! `POST /hooks/stages/{token}`, outside `/api/v1`, the token being its proof), and
//! the loop check every save of a pipeline goes through (a pipeline that sends to a
//! channel starts the pipelines triggered by it; a chain that comes back is refused).
//! The waiting, the messages and the runs they start are the lifecycle's
//! (`wharf_lifecycle::signals`).

use super::pipelines::find_for;
use super::{AppStateRef, created};
use crate::AppState;
use crate::auth::{new_token, sha256_hex};
use crate::authz::{Action, Caller};
use crate::error::{ApiResult, AppError};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use wharf_api::signals::{Signalled, SignalledRun, StageHook};
use wharf_core::model::Pipeline;
use wharf_lifecycle::signals::MAX_SIGNAL_VALUES;
use wharf_store::PipelineFilter;

/// Largest body of a stage hook call.
pub const MAX_HOOK_BODY: usize = 64 * 1024;

/// Most pipelines of a project read for the loop check.
const MAX_PIPELINES: i64 = 10_000;

/// `POST /pipelines/{key}/stages/{stage}/hook`: a new token for the stage's hook URL.
pub async fn make_hook(
    State(state): AppStateRef,
    caller: Caller,
    Path((key, stage)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let row = find_for(&state, &caller, &key, &query, Action::EditPipeline).await?;
    let model = state.runs.pipeline_version(row.id, row.version).await?;
    let Some(found) = model.stages.iter().find(|s| s.name.as_str() == stage) else {
        return Err(AppError::NotFound(format!("stage `{stage}` of pipeline `{}`", row.name)));
    };
    if !found.wait.as_ref().is_some_and(|w| w.hook) {
        return Err(AppError::Conflict(format!(
            "stage `{stage}` of pipeline `{}` does not wait for its hook; give it `wait: {{hook: true}}` first",
            row.name
        )));
    }
    let token = new_token();
    state.store.set_stage_hook(row.id, &stage, &sha256_hex(token.as_bytes())).await?;
    tracing::info!(pipeline = %row.name, stage, user = %caller.name, "stage hook token made");
    Ok(created(StageHook { pipeline: row.name, stage, url: format!("/hooks/stages/{token}"), token }))
}

/// The values of a hook call: a JSON object whose strings, numbers and booleans are
/// kept as text (an empty body is no values).
fn hook_values(body: &Bytes) -> Result<BTreeMap<String, String>, AppError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(BTreeMap::new());
    }
    let bad = |why: String| AppError::invalid("bad signal", "body", why);
    let value: Value = serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(bad("expected a JSON object of names and values, `{\"VERSION\": \"1.2\"}`".into()));
    };
    if fields.len() > MAX_SIGNAL_VALUES {
        return Err(bad(format!("at most {MAX_SIGNAL_VALUES} values")));
    }
    let mut values = BTreeMap::new();
    for (name, value) in fields {
        let text = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => String::new(),
            _ => return Err(bad(format!("`{name}`: a value is a string, number or boolean"))),
        };
        values.insert(name, text);
    }
    Ok(values)
}

/// `POST /hooks/stages/{token}`: signals the waiting runs of the token's stage. 202
/// with them; 404 for an unknown token; 409 when no run of it waits there now.
pub async fn receive(State(state): AppStateRef, Path(token): Path<String>, body: Bytes) -> Response {
    match receive_inner(&state, &token, &body).await {
        Ok(answer) => (StatusCode::ACCEPTED, axum::Json(answer)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn receive_inner(state: &AppState, token: &str, body: &Bytes) -> ApiResult<Signalled> {
    if body.len() > MAX_HOOK_BODY {
        return Err(AppError::invalid("bad signal", "body", format!("at most {MAX_HOOK_BODY} bytes")));
    }
    let Some(hook) = state.store.stage_hook(&sha256_hex(token.as_bytes())).await? else {
        return Err(AppError::NotFound("the stage hook of this token (made again, so replaced, or never made)".into()));
    };
    let values = hook_values(body)?;
    let runs = state.runs.hook_signal(hook.pipeline_id, &hook.stage, &values).await?;
    if runs.is_empty() {
        let pipeline = state.store.pipeline(hook.pipeline_id).await?;
        return Err(AppError::Conflict(format!(
            "no run of pipeline `{}` is waiting at stage `{}` now",
            pipeline.name, hook.stage
        )));
    }
    Ok(Signalled {
        runs: runs.into_iter().map(|(pipeline, number, stage)| SignalledRun { pipeline, number, stage }).collect(),
    })
}

/// Refuses `pipeline` (about to be saved in `project`) when its channels would close
/// a loop with the project's other pipelines.
pub async fn check_loops(state: &AppState, pipeline: &Pipeline, project: &str) -> ApiResult<()> {
    if pipeline.sends().is_empty() && pipeline.channel_triggers().is_empty() {
        return Ok(());
    }
    let (rows, _) =
        state.store.pipelines_filtered(&PipelineFilter::Projects(vec![project.to_owned()]), MAX_PIPELINES, 0).await?;
    let mut others = Vec::new();
    for (row, _) in rows {
        if row.name != pipeline.name.as_str()
            && let Ok(model) = state.runs.pipeline_version(row.id, row.version).await
        {
            others.push(model);
        }
    }
    match wharf_lifecycle::signals::channel_loop(pipeline, &others) {
        None => Ok(()),
        Some(chain) => Err(AppError::invalid(
            "the pipeline is not valid",
            "send",
            format!("its channels would make a loop, each run starting the next for ever: {chain}"),
        )),
    }
}
