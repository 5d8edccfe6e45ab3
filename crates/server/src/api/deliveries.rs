//! `/api/v1/deliveries`: the stored webhook deliveries (newest first) with what each
//! started, one delivery with its (redacted) headers and body, and replay. Receiving
//! deliveries is `crate::hooks`.
//!
//! A delivery follows its binding and its pipelines: the caller sees it when the
//! binding is theirs or any run it started is of a pipeline they see (admins also see
//! deliveries to bindings that do not exist); replaying it is for the binding's owner
//! (it acts as the binding).

use super::{AppStateRef, Page, rows};
use crate::AppState;
use crate::authz::{self, Action, Caller, Role};
use crate::error::{ApiResult, AppError};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use wharf_store::deliveries::DeliverySummary;

fn parse_id(id: &str) -> ApiResult<i64> {
    id.parse::<i64>().map_err(|_| AppError::NotFound(format!("delivery `{id}`")))
}

/// `GET /deliveries?limit=50&page=1`: `id`, `binding`, `provider`, `delivery_id`,
/// `event`, `verdict`, `reason`, `runs` (ids), `body_sha256`, `received_at`.
/// Whether `caller` may see a delivery.
/// Deliveries to bindings that do not exist (any more) have no owner: admins see them.
async fn visible(state: &AppState, caller: &Caller, delivery: &DeliverySummary) -> ApiResult<bool> {
    match state.store.binding(&delivery.binding).await {
        Ok(binding) if authz::check(caller, Action::ViewRepository, &authz::Object::binding(&binding)).is_ok() => {
            return Ok(true);
        }
        Err(wharf_store::StoreError::NotFound(_)) if caller.role == Role::Admin => return Ok(true),
        _ => {}
    }
    for run in &delivery.runs {
        if super::runs::run_for(state, caller, &run.to_string(), Action::ViewPipeline).await.is_ok() {
            return Ok(true);
        }
    }
    Ok(false)
}

pub async fn list(
    State(state): AppStateRef,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let page = Page::from_query(&query)?;
    // Filtered here, not in SQL: what a caller sees depends on bindings and runs.
    let (all, _) = state.store.deliveries(i64::MAX, 0).await?;
    let mut seen = Vec::new();
    for delivery in all {
        if visible(&state, &caller, &delivery).await? {
            seen.push(delivery);
        }
    }
    let total = seen.len() as i64;
    let items = seen.into_iter().skip(page.offset() as usize).take(page.limit as usize).map(rows::delivery).collect();
    Ok(axum::Json(page.of(items, total)).into_response())
}

/// `GET /deliveries/{delivery}`: the row with its headers (secret-bearing ones
/// redacted when stored) and its body as text (`null` when it is not UTF-8).
pub async fn show(State(state): AppStateRef, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let row = state.store.delivery(parse_id(&id)?).await?;
    if !visible(&state, &caller, &row.summary).await? {
        return Err(AppError::NotFound(format!("delivery `{id}`")));
    }
    let body = row.body.as_deref();
    let shown = wharf_api::deliveries::DeliveryShown {
        body_size: body.map(<[u8]>::len),
        body: body.and_then(|b| std::str::from_utf8(b).ok()).map(str::to_owned),
        headers: row.headers,
        delivery: rows::delivery(row.summary),
    };
    Ok(axum::Json(shown).into_response())
}

/// `POST /deliveries/{delivery}/replay`: handles the stored delivery again, without
/// checking its signature again; `201` with the new delivery.
pub async fn replay(State(state): AppStateRef, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let original = state.store.delivery(parse_id(&id)?).await?;
    let binding = state.store.binding(&original.summary.binding).await.ok();
    let owner = binding
        .as_ref()
        .is_some_and(|b| authz::check(&caller, Action::SetRepository, &authz::Object::binding(b)).is_ok());
    if !owner {
        return Err(if visible(&state, &caller, &original.summary).await? {
            AppError::Forbidden(format!(
                "user `{}` may not replay delivery {id}: only the owner of binding `{}` may",
                caller.name, original.summary.binding
            ))
        } else {
            AppError::NotFound(format!("delivery `{id}`"))
        });
    }
    let original_id = original.summary.id;
    let (new, handled) = crate::hooks::replay(&state, original).await?;
    Ok(crate::hooks::replay_answer(original_id, new, &handled))
}
