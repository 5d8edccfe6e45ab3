//! Approvals: deciding an `approval` task (`POST /runs/{id}/tasks/{task}/approve` and
//! `…/reject`, audited like every change by the API's middleware) and the approvals
//! waiting for the caller (`GET /approvals`). The rules (who may decide, the starter
//! rule, when it is decided) are `wharf_core::approval`'s; the lifecycle applies them.

use super::runs::run_for;
use super::{AppStateRef, json_body};
use crate::authz::{self, Action, Caller, Role};
use crate::error::{ApiResult, AppError};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use wharf_api::Listed;
use wharf_api::gates::{Decide, Decided, DecisionInfo, WaitingApproval};
use wharf_core::approval::{Decider, Outcome, Verdict, may_decide, outcome};
use wharf_lifecycle::approvals::{Person, starter};
use wharf_store::gates::MAX_COMMENT_CHARS;

pub async fn approve(
    state: AppStateRef,
    caller: Caller,
    path: Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    decide(state, caller, path, body, Verdict::Approve).await
}

pub async fn reject(
    state: AppStateRef,
    caller: Caller,
    path: Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    decide(state, caller, path, body, Verdict::Reject).await
}

fn person(caller: &Caller) -> Person {
    Person { user: caller.name.clone(), role: caller.role.as_str().to_owned(), admin: caller.role == Role::Admin }
}

async fn decide(
    State(state): AppStateRef,
    caller: Caller,
    Path((id, task)): Path<(String, String)>,
    body: Bytes,
    verdict: Verdict,
) -> ApiResult<Response> {
    let row = run_for_decider(&state, &caller, &id).await?;
    let request: Decide = json_body(&body)?;
    if request.comment.chars().count() > MAX_COMMENT_CHARS {
        return Err(AppError::invalid(
            "comment too long",
            "comment",
            format!("a comment has at most {MAX_COMMENT_CHARS} characters"),
        ));
    }
    let comment = request.comment.trim();
    let decisions = state.runs.decide(row.summary.id, &task, &person(&caller), verdict, comment).await?;
    let rule = row
        .record
        .stages
        .iter()
        .flat_map(|s| &s.tasks)
        .find(|t| t.name == task)
        .and_then(|t| t.approval.as_ref())
        .map(|a| wharf_core::model::ApprovalTask {
            approvers: a.approvers.clone(),
            message: a.message.clone(),
            required: a.required,
        })
        .ok_or_else(|| AppError::NotFound(format!("approval task `{task}`")))?;
    let state_word = match outcome(&rule, &decisions) {
        None => "waiting",
        Some(Outcome::Approved(_)) => "approved",
        Some(Outcome::Rejected { .. }) => "rejected",
    };
    Ok(axum::Json(Decided {
        run: row.summary.id,
        task,
        state: state_word.to_owned(),
        required: rule.required,
        decisions: decisions.iter().map(DecisionInfo::from).collect(),
    })
    .into_response())
}

/// The run `id` names, for a person who may take part in its approvals: whoever may
/// see its pipeline, and the members of its project (a normal user sees only the
/// pipelines they created, and is still the approver a task names). Others: 404.
async fn run_for_decider(state: &crate::AppState, caller: &Caller, id: &str) -> ApiResult<wharf_store::RunRow> {
    match run_for(state, caller, id, Action::ViewPipeline).await {
        Err(AppError::NotFound(why)) => {
            let member = async {
                let row = state.store.run(id.parse::<i64>().ok()?).await.ok()?;
                let pipeline = state.store.pipeline(row.summary.pipeline_id).await.ok()?;
                caller.projects.contains(&pipeline.project).then_some(row)
            };
            member.await.ok_or(AppError::NotFound(why))
        }
        other => other,
    }
}

/// `GET /approvals`: the approval tasks waiting now that the caller may decide, on
/// pipelines the caller may see or of projects the caller joined; oldest first.
pub async fn waiting(State(state): AppStateRef, caller: Caller) -> ApiResult<Response> {
    let person = person(&caller);
    let decider = Decider { user: &person.user, role: &person.role, admin: person.admin };
    let mut out = Vec::new();
    for w in state.runs.waiting_approvals().await? {
        let Ok(pipeline) = state.store.pipeline(w.pipeline_id).await else { continue };
        let sees = authz::check(&caller, Action::ViewPipeline, &authz::Object::pipeline(&pipeline)).is_ok();
        if !sees && !caller.projects.contains(&pipeline.project) {
            continue;
        }
        // A rejection is what anyone allowed may give (the starter too).
        let started_by = starter(&w.record.cause).map(str::to_owned);
        if may_decide(&w.rule, &decider, started_by.as_deref(), Verdict::Reject, &w.decisions).is_err() {
            continue;
        }
        out.push(WaitingApproval {
            run_id: w.run_id,
            pipeline_id: w.pipeline_id,
            pipeline: w.record.pipeline.clone(),
            number: w.record.number,
            stage: w.stage,
            task: w.task,
            message: w.rule.message,
            approvers: w.rule.approvers,
            required: w.rule.required,
            decisions: w.decisions.iter().map(DecisionInfo::from).collect(),
            started_by,
            since: w.since.map(|t| t.as_millisecond()),
        });
    }
    out.sort_by_key(|w| w.since);
    Ok(axum::Json(Listed::new(out)).into_response())
}
