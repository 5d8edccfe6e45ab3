//! `/api/v1/deliveries`: the stored webhook deliveries (newest first) with what each
//! started, one delivery with its (redacted) headers and body, and replay. Receiving
//! deliveries is `crate::hooks`.

use super::{AppStateRef, Page, Paged};
use crate::error::{ApiResult, AppError};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::collections::HashMap;

fn parse_id(id: &str) -> ApiResult<i64> {
    id.parse::<i64>().map_err(|_| AppError::NotFound(format!("delivery `{id}`")))
}

/// `GET /deliveries?limit=50&page=1`: `id`, `binding`, `provider`, `delivery_id`,
/// `event`, `verdict`, `reason`, `runs` (ids), `body_sha256`, `received_at`.
pub async fn list(State(state): AppStateRef, Query(query): Query<HashMap<String, String>>) -> ApiResult<Response> {
    let page = Page::from_query(&query)?;
    let (items, total) = state.store.deliveries(page.limit, page.offset()).await?;
    Ok(axum::Json(Paged { items, page: page.page, limit: page.limit, total }).into_response())
}

/// `GET /deliveries/{delivery}`: the row with its headers (secret-bearing ones
/// redacted when stored) and its body as text (`null` when it is not UTF-8).
pub async fn show(State(state): AppStateRef, Path(id): Path<String>) -> ApiResult<Response> {
    let row = state.store.delivery(parse_id(&id)?).await?;
    let mut value = serde_json::to_value(&row.summary).map_err(|e| AppError::Internal(e.to_string()))?;
    let body = row.body.as_deref();
    value["headers"] = row.headers;
    value["body_size"] = json!(body.map(<[u8]>::len));
    value["body"] = json!(body.and_then(|b| std::str::from_utf8(b).ok()));
    Ok(axum::Json(value).into_response())
}

/// `POST /deliveries/{delivery}/replay`: handles the stored delivery again, without
/// checking its signature again; `201` with the new delivery.
pub async fn replay(State(state): AppStateRef, Path(id): Path<String>) -> ApiResult<Response> {
    let original = state.store.delivery(parse_id(&id)?).await?;
    let original_id = original.summary.id;
    let (new, handled) = crate::hooks::replay(&state, original).await?;
    Ok(crate::hooks::replay_answer(original_id, new, &handled))
}
