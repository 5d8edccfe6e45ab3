//! `/api/v1/pipelines`: create (YAML or JSON, or from scratch), list, show with
//! versions, update (a new version), copy, activate/deactivate, delete, and the
//! stored YAML. `?run=true` on create and update is "save and run".
//!
//! Every handler takes the [`Caller`] and asks [`authz::check`] before it changes
//! anything; a pipeline the caller may not see answers 404 (see [`crate::authz`]).

use super::{AppStateRef, Page, created, json_body, rows, text_body};
use crate::AppState;
use crate::authz::{self, Action, Caller, Object, Role};
use crate::error::{ApiResult, AppError};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use wharf_api::pipelines::{
    CopyPipeline, PipelineListed, PipelineShown, Saved, ScratchPipeline, ValidateRequest, Validated, Version,
    VersionListing,
};
use wharf_core::model::Pipeline;
use wharf_core::run::Cause;
use wharf_store::{Listed, NewVersion, PipelineFilter, PipelineRow, StoreError};

pub const DEFAULT_PROJECT: &str = "admin";

/// Finds a pipeline (as [`find`]) and checks that `caller` may do `action` to it.
pub async fn find_for(
    state: &AppState,
    caller: &Caller,
    key: &str,
    query: &HashMap<String, String>,
    action: Action,
) -> ApiResult<PipelineRow> {
    let row = find(state, key, query).await?;
    authz::check(caller, action, &Object::pipeline(&row))?;
    Ok(row)
}

/// Creates a pipeline for `caller` within the licence's limit.
async fn create_row(
    state: &AppState,
    caller: &Caller,
    project: &str,
    model: &Pipeline,
    text: &str,
) -> ApiResult<PipelineRow> {
    let limit = i64::try_from(state.quota.max_pipelines).unwrap_or(i64::MAX);
    let listing = VersionListing::of(model).to_json();
    let events_repo = crate::hooks::events_repo(model);
    let version = NewVersion { source: text, listing: Some(&listing), events_repo: Some(&events_repo) };
    match state.store.create_pipeline_by(project, model.name.as_str(), version, &caller.name, Some(limit)).await {
        Ok(row) => Ok(row),
        Err(StoreError::Limit(_)) => Err(AppError::Quota(state.quota.exceeded())),
        Err(e) => Err(e.into()),
    }
}

/// A pipeline's `source.binding` must be one the caller may use (sees).
async fn check_binding(state: &AppState, caller: &Caller, pipeline: &wharf_core::model::Pipeline) -> ApiResult<()> {
    let Some(name) = pipeline.source.as_ref().and_then(|s| s.binding.as_deref()) else { return Ok(()) };
    let binding = match state.store.binding(name).await {
        Ok(b) => b,
        // An unknown binding is the run's problem to report, as before.
        Err(StoreError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let repository = Object::Repository { name: &binding.name, created_by: &binding.created_by };
    authz::check(caller, Action::ViewRepository, &repository).map_err(|_| {
        AppError::invalid(
            "the pipeline is not valid",
            "source.binding",
            format!("binding `{name}` is not one of yours; use a binding you set up"),
        )
    })
}

/// Which matrix rows a new version touches: triggers, advanced settings, and
/// everything else (the definition).
fn edit_actions(old: &wharf_core::model::Pipeline, new: &wharf_core::model::Pipeline) -> Vec<Action> {
    let value = |p: &wharf_core::model::Pipeline| serde_json::to_value(p).unwrap_or_default();
    let (mut old, mut new) = (value(old), value(new));
    let mut actions = Vec::new();
    let mut take = |keys: &[&str], action: Action| {
        let mut differs = false;
        for key in keys {
            let (a, b) =
                (old.as_object_mut().and_then(|o| o.remove(*key)), new.as_object_mut().and_then(|o| o.remove(*key)));
            differs |= a != b;
        }
        if differs {
            actions.push(action);
        }
    };
    take(&["triggers"], Action::EditTriggers);
    take(
        &["timeout", "concurrency", "executor", "default_image", "notify", "retry_on_restart", "retention"],
        Action::AdvancedSettings,
    );
    if old != new || actions.is_empty() {
        actions.insert(0, Action::EditPipeline);
    }
    actions
}

/// Finds a pipeline by id (digits) or by name (`?project=` when names repeat).
pub async fn find(state: &AppState, key: &str, query: &HashMap<String, String>) -> ApiResult<PipelineRow> {
    match key.parse::<i64>() {
        Ok(id) => Ok(state.store.pipeline(id).await?),
        Err(_) => Ok(state.store.pipeline_by_name(key, query.get("project").map(String::as_str)).await?),
    }
}

fn wants_run(query: &HashMap<String, String>) -> ApiResult<bool> {
    match query.get("run").map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(AppError::invalid("bad query", "run", format!("`{other}`: expected true or false"))),
    }
}

/// Before saving with `?run=true`: the run must be able to start, or nothing is saved.
async fn check_run(
    state: &AppState,
    pipeline: &wharf_core::model::Pipeline,
    project: &str,
    active: bool,
    run: bool,
) -> ApiResult<()> {
    if run {
        let secrets = state.store.secret_values(project).await?;
        state.runs.check_startable(pipeline, project, active, &secrets).await?;
    }
    Ok(())
}

async fn save_and_maybe_run(state: &AppState, caller: &Caller, row: PipelineRow, run: bool) -> ApiResult<Saved> {
    let run = if run {
        let cause = Cause::Manual { user: caller.name.clone() };
        Some(rows::accepted(state.runs.enqueue(&row, row.version, cause, BTreeMap::new(), None, None).await?))
    } else {
        None
    };
    Ok(Saved { id: row.id, name: row.name, project: row.project, version: row.version, run, webhook: None })
}

/// The webhook of a saved pipeline's repository (installed now, found, or what a
/// person must do), for the save's answer.
async fn install_webhook(
    state: &AppState,
    pipeline: &wharf_core::model::Pipeline,
    creator: &str,
    headers: &HeaderMap,
) -> Option<wharf_api::pipelines::WebhookInstall> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)));
    state.forges.install_webhook(state, pipeline, creator, host).await.map(rows::webhook)
}

fn project_of(pipeline: &wharf_core::model::Pipeline, query: &HashMap<String, String>) -> ApiResult<String> {
    match (pipeline.project.as_deref(), query.get("project")) {
        (Some(a), Some(b)) if a != b => Err(AppError::invalid(
            "conflicting projects",
            "project",
            format!("the pipeline says project `{a}` but the request says `{b}`"),
        )),
        (Some(p), _) => Ok(p.to_owned()),
        (None, Some(p)) => Ok(p.clone()),
        (None, None) => Ok(DEFAULT_PROJECT.to_owned()),
    }
}

/// `POST /pipelines`: the body is pipeline YAML, or the same fields as JSON (JSON is
/// YAML, so one parser reports positions for both).
pub async fn create(
    State(state): AppStateRef,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let run = wants_run(&query)?;
    let text = text_body(&body)?;
    let pipeline = wharf_pipeline::parse(text).map_err(AppError::pipeline)?;
    let project = project_of(&pipeline, &query)?;
    authz::check(&caller, Action::CreatePipeline, &Object::Project(&project))?;
    check_binding(&state, &caller, &pipeline).await?;
    super::signals::check_loops(&state, &pipeline, &project).await?;
    check_run(&state, &pipeline, &project, true, run).await?;
    let row = create_row(&state, &caller, &project, &pipeline, text).await?;
    state.runs.timers().changed(row.id).await;
    let creator = row.created_by.clone();
    let mut saved = save_and_maybe_run(&state, &caller, row, run).await?;
    saved.webhook = install_webhook(&state, &pipeline, &creator, &headers).await;
    Ok(created(saved))
}

/// `GET /task-types`: which task types this server runs (on its default executor).
pub async fn task_types(State(state): AppStateRef, _caller: Caller) -> ApiResult<Response> {
    let items = state
        .runs
        .task_types()
        .into_iter()
        .map(|(name, verdict)| wharf_api::pipelines::TaskType {
            name: name.to_owned(),
            runs: verdict.is_ok(),
            needs: verdict.err(),
        })
        .collect();
    Ok(axum::Json(wharf_api::pipelines::TaskTypes { items }).into_response())
}

/// The starter YAML, with seed 000's auto-deploy stages approved by `approver` when given.
fn starter_yaml(name: &str, auto_deploy: Option<&str>) -> ApiResult<String> {
    match auto_deploy {
        None => wharf_pipeline::starter::starter_yaml(name),
        Some(approver) => wharf_pipeline::starter::auto_deploy_yaml(name, approver),
    }
    .map_err(|e| AppError::invalid("bad name", "name", e.to_string()))
}

/// `GET /pipelines/scratch?name=N[&auto_deploy=true]`: the starter (see `wharf_pipeline::starter`), not stored.
pub async fn starter(caller: Caller, Query(query): Query<HashMap<String, String>>) -> ApiResult<Response> {
    let name = query.get("name").map(String::as_str).unwrap_or("my-pipeline");
    let auto_deploy = match query.get("auto_deploy").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(AppError::invalid("bad query", "auto_deploy", format!("`{other}`: expected true or false")));
        }
    };
    let yaml = starter_yaml(name, auto_deploy.then_some(caller.name.as_str()))?;
    let model = wharf_pipeline::parse(&yaml).map_err(AppError::pipeline)?;
    let definition = serde_json::to_value(&model).map_err(|e| AppError::internal("cannot serialise the starter", e))?;
    Ok(axum::Json(Validated { valid: true, definition: Some(definition), yaml, diagnostics: Vec::new() })
        .into_response())
}

/// `POST /pipelines/scratch {"name"}`: a new pipeline from the starter.
pub async fn create_from_scratch(State(state): AppStateRef, caller: Caller, body: Bytes) -> ApiResult<Response> {
    let request: ScratchPipeline = json_body(&body)?;
    let project = request.project.unwrap_or_else(|| DEFAULT_PROJECT.to_owned());
    authz::check(&caller, Action::CreatePipeline, &Object::Project(&project))?;
    let yaml = starter_yaml(&request.name, request.auto_deploy.then_some(caller.name.as_str()))?;
    let model = wharf_pipeline::parse(&yaml).map_err(AppError::pipeline)?;
    let row = create_row(&state, &caller, &project, &model, &yaml).await?;
    state.runs.timers().changed(row.id).await;
    Ok(created(save_and_maybe_run(&state, &caller, row, false).await?))
}

/// `GET /pipelines`: the ones the caller may see (admins: all; managers: of the
/// projects they joined; normal users: the ones they created).
pub async fn list(
    State(state): AppStateRef,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let page = Page::from_query(&query)?;
    let filter = match caller.role {
        Role::Admin => PipelineFilter::All,
        Role::Manager => PipelineFilter::Projects(caller.projects.iter().cloned().collect()),
        Role::User => PipelineFilter::CreatedBy(caller.name.clone()),
    };
    // The page, its count and its versions' listings in one query (not one per row).
    // A version saved before listings were kept is parsed, unless the dispatcher has it
    // cached; one that no longer parses shows no source rather than failing the list.
    let (rows, total) = state.store.pipelines_listed(&filter, page.limit, page.offset()).await?;
    let mut items = Vec::with_capacity(rows.len());
    for (pipeline, last_run, version) in rows {
        let source = match version {
            Some(Listed::Listing(json)) => match VersionListing::from_json(&json) {
                Some(listing) => listing.source,
                None => state.store.version(pipeline.id, pipeline.version).await.ok().and_then(|v| {
                    state.runs.parsed_version(pipeline.id, pipeline.version, &v.source).and_then(|p| p.source.clone())
                }),
            },
            Some(Listed::Source(text)) => {
                state.runs.parsed_version(pipeline.id, pipeline.version, &text).and_then(|p| p.source.clone())
            }
            None => None,
        };
        let last_run = last_run.map(rows::run_summary);
        items.push(PipelineListed { pipeline: rows::pipeline(pipeline), source, last_run });
    }
    Ok(axum::Json(page.of(items, total)).into_response())
}

pub async fn show(
    State(state): AppStateRef,
    caller: Caller,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let row = find_for(&state, &caller, &key, &query, Action::ViewPipeline).await?;
    let model = state.runs.pipeline_version(row.id, row.version).await?;
    let versions = state.store.versions(row.id).await?;
    let (last, _) = state.store.runs(row.id, 1, 0).await?;
    let shown = PipelineShown {
        description: model.description.clone(),
        definition: serde_json::to_value(&*model)
            .map_err(|e| AppError::internal("cannot serialise the pipeline", e))?,
        versions: versions.into_iter().map(|v| Version { version: v.version, created_at: v.created_at }).collect(),
        active_runs: state.runs.active_numbers(row.id),
        last_run: last.into_iter().next().map(rows::run_summary),
        pipeline: rows::pipeline(row),
    };
    Ok(axum::Json(shown).into_response())
}

/// `PUT /pipelines/{key}`: a new version (the old ones stay, and runs keep theirs).
pub async fn update(
    State(state): AppStateRef,
    caller: Caller,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let run = wants_run(&query)?;
    let row = find_for(&state, &caller, &key, &query, Action::ViewPipeline).await?;
    let text = text_body(&body)?;
    let pipeline = wharf_pipeline::parse(text).map_err(AppError::pipeline)?;
    let current = state.runs.pipeline_version(row.id, row.version).await?;
    for action in edit_actions(&current, &pipeline) {
        authz::check(&caller, action, &Object::pipeline(&row))?;
    }
    if run {
        authz::check(&caller, Action::RunPipeline, &Object::pipeline(&row))?;
    }
    check_binding(&state, &caller, &pipeline).await?;
    super::signals::check_loops(&state, &pipeline, &row.project).await?;
    check_run(&state, &pipeline, &row.project, row.active, run).await?;
    if let Some(project) = &pipeline.project
        && project != &row.project
    {
        return Err(AppError::invalid(
            "a pipeline cannot move between projects",
            "project",
            format!("the pipeline is in project `{}`; copy it to create one in `{project}`", row.project),
        ));
    }
    let listing = VersionListing::of(&pipeline).to_json();
    let events_repo = crate::hooks::events_repo(&pipeline);
    let version = NewVersion { source: text, listing: Some(&listing), events_repo: Some(&events_repo) };
    let row = state.store.add_version(row.id, pipeline.name.as_str(), version).await?;
    state.runs.timers().changed(row.id).await;
    let creator = row.created_by.clone();
    let mut saved = save_and_maybe_run(&state, &caller, row, run).await?;
    saved.webhook = install_webhook(&state, &pipeline, &creator, &headers).await;
    Ok(axum::Json(saved).into_response())
}

pub async fn delete(
    State(state): AppStateRef,
    caller: Caller,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let row = find_for(&state, &caller, &key, &query, Action::DeletePipeline).await?;
    if !state.runs.active_numbers(row.id).is_empty() {
        return Err(AppError::Conflict(format!(
            "pipeline `{}` has runs in progress; stop them before deleting it",
            row.name
        )));
    }
    let runs = state.store.delete_pipeline(row.id).await?;
    state.runs.timers().changed(row.id).await;
    for run in runs {
        let _ = state.logs.remove_run(run).await;
        let _ = std::fs::remove_dir_all(state.config.data_dir.join("workspaces").join(run.to_string()));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /pipelines/{key}/copy {"name"}`: the same definition (stages, timeout, all of
/// it) under a new name, in the same project.
pub async fn copy(
    State(state): AppStateRef,
    caller: Caller,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Response> {
    let row = find_for(&state, &caller, &key, &query, Action::CopyPipeline).await?;
    let request: CopyPipeline = json_body(&body)?;
    if request.name.is_empty() {
        return Err(AppError::invalid("the copy needs a name", "name", "give the new pipeline's name"));
    }
    let source = state.store.version(row.id, row.version).await?.source;
    let (text, model) = wharf_pipeline::rename(&source, &request.name).map_err(AppError::pipeline)?;
    let copy = create_row(&state, &caller, &row.project, &model, &text).await?;
    // A copy takes the stages, tasks and timeout (seed 002) and starts inactive: its
    // triggers (timers, webhooks) stay in its YAML but fire nothing until someone
    // activates it, so a copy never starts running by itself.
    let copy = state.store.set_active(copy.id, false).await?;
    state.runs.timers().changed(copy.id).await;
    Ok(created(save_and_maybe_run(&state, &caller, copy, false).await?))
}

async fn set_active(
    state: Arc<AppState>,
    caller: Caller,
    key: String,
    query: HashMap<String, String>,
    active: bool,
) -> ApiResult<Response> {
    let row = find_for(&state, &caller, &key, &query, Action::ActivatePipeline).await?;
    let row = state.store.set_active(row.id, active).await?;
    state.runs.timers().changed(row.id).await;
    Ok(axum::Json(rows::pipeline(row)).into_response())
}

pub async fn activate(
    State(state): AppStateRef,
    caller: Caller,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    set_active(state, caller, key, query, true).await
}

pub async fn deactivate(
    State(state): AppStateRef,
    caller: Caller,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    set_active(state, caller, key, query, false).await
}

/// `GET /pipelines/{key}/yaml[?version=N]`: the definition as it was saved.
pub async fn yaml(
    State(state): AppStateRef,
    caller: Caller,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let row = find_for(&state, &caller, &key, &query, Action::ViewPipeline).await?;
    let version = match query.get("version") {
        None => row.version,
        Some(v) => v
            .parse::<i64>()
            .map_err(|_| AppError::invalid("bad query", "version", format!("`{v}` is not a version number")))?,
    };
    let source = state.store.version(row.id, version).await?.source;
    Ok(([(header::CONTENT_TYPE, "application/yaml; charset=utf-8")], source).into_response())
}

/// `POST /pipelines/validate`: the card editor's two views in one place. The body is
/// pipeline YAML (or `{"yaml": "…"}`), or `{"definition": <model JSON>}`, which is
/// written as YAML first. Either way the text goes through the same parser as a save,
/// and the answer is `200 {valid, definition, yaml, diagnostics}`: the parsed model,
/// or every problem with its line and column in `yaml`. Nothing is stored.
pub async fn validate(headers: axum::http::HeaderMap, body: Bytes) -> ApiResult<Response> {
    let text = text_body(&body)?;
    let request = if super::content_type(&headers).starts_with("application/json") {
        serde_json::from_str::<ValidateRequest>(text).ok()
    } else {
        None
    };
    let yaml = match request {
        None => text.to_owned(),
        Some(ValidateRequest::Yaml(yaml)) => yaml,
        Some(ValidateRequest::Definition(value)) => {
            match serde_json::from_value::<wharf_core::model::Pipeline>(value) {
                Ok(model) => wharf_pipeline::to_yaml(&model),
                Err(e) => {
                    let detail = wharf_api::Detail::at("", e.to_string());
                    let answer =
                        Validated { valid: false, definition: None, yaml: String::new(), diagnostics: vec![detail] };
                    return Ok(axum::Json(answer).into_response());
                }
            }
        }
    };
    let answer = match wharf_pipeline::parse(&yaml) {
        Ok(model) => Validated {
            valid: true,
            definition: Some(
                serde_json::to_value(&model).map_err(|e| AppError::internal("cannot serialise the pipeline", e))?,
            ),
            yaml,
            diagnostics: Vec::new(),
        },
        Err(diags) => {
            let details = diags
                .0
                .into_iter()
                .map(|d| wharf_api::Detail {
                    path: d.path,
                    line: Some(d.pos.line),
                    column: Some(d.pos.col),
                    message: d.message,
                })
                .collect();
            Validated { valid: false, definition: None, yaml, diagnostics: details }
        }
    };
    Ok(axum::Json(answer).into_response())
}
