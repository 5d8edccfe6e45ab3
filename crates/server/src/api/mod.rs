//! The HTTP surface: `/api/v1` (bearer token), `/healthz`, `/metrics`, and the
//! webhook endpoint `/hooks/{provider}/{binding}` (signed, see [`crate::hooks`]). Every route
//! is listed once in [`crate::openapi::ROUTES`], which also builds the OpenAPI
//! document, so the two cannot drift (a test checks that each documented route exists).

mod bindings;
mod deliveries;
mod logs;
mod pipelines;
pub(crate) mod providers;
pub mod registries;
mod runs;
mod schedule;

use crate::AppState;
use crate::error::{ApiResult, AppError, Detail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Arc;

pub type AppStateRef = State<Arc<AppState>>;

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/pipelines", get(pipelines::list).post(pipelines::create))
        .route("/pipelines/scratch", post(pipelines::create_from_scratch))
        .route("/pipelines/validate", post(pipelines::validate))
        .route("/pipelines/{key}", get(pipelines::show).put(pipelines::update).delete(pipelines::delete))
        .route("/pipelines/{key}/copy", post(pipelines::copy))
        .route("/pipelines/{key}/activate", post(pipelines::activate))
        .route("/pipelines/{key}/deactivate", post(pipelines::deactivate))
        .route("/pipelines/{key}/yaml", get(pipelines::yaml))
        .route("/pipelines/{key}/schedule", get(schedule::show))
        .route("/pipelines/{key}/runs", get(runs::list).post(runs::start))
        .route("/runs/{id}", get(runs::show))
        .route("/runs/{id}/stop", post(runs::stop))
        .route("/runs/{id}/rerun", post(runs::rerun))
        .route("/runs/{id}/retry", post(runs::retry))
        .route("/runs/{id}/log", get(logs::whole_run))
        .route("/runs/{id}/tasks/{task}/log", get(logs::tail))
        .route("/runs/{id}/tasks/{task}/log/stream", get(logs::stream))
        .route("/bindings", get(bindings::list).post(bindings::create))
        .route("/bindings/{name}", get(bindings::show).delete(bindings::delete))
        .route("/bindings/{name}/repos", get(providers::repos))
        // `{repo}/branches`, where the repository's full name may hold slashes.
        .route("/bindings/{name}/repos/{*rest}", get(providers::branches))
        .route("/bindings/{name}/authorize", get(providers::authorize))
        .route("/bindings/{name}/token", put(providers::set_token))
        .route("/registries", get(registries::list).post(registries::create))
        .route("/registries/{name}", get(registries::show).delete(registries::delete))
        .route("/registries/{name}/workspaces", post(registries::add_workspace))
        .route("/registries/{name}/workspaces/{workspace}", axum::routing::delete(registries::delete_workspace))
        .route("/registries/{name}/repositories", get(registries::repositories))
        .route("/registries/{name}/repositories/{workspace}/{image}/tags", get(registries::tags))
        .route(
            "/registries/{name}/repositories/{workspace}/{image}/tags/{tag}",
            axum::routing::delete(registries::delete_tag),
        )
        // The body is streamed to disk; the limit is the seed's 2 GB (checked there too).
        .route(
            "/registries/{name}/upload",
            post(registries::upload)
                .layer(axum::extract::DefaultBodyLimit::max(wharf_image::upload::MAX_TARBALL_BYTES as usize + 1)),
        )
        .route("/deliveries", get(deliveries::list))
        .route("/deliveries/{delivery}", get(deliveries::show))
        .route("/deliveries/{delivery}/replay", post(deliveries::replay))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .route("/openapi.json", get(openapi));
    Router::new()
        .nest("/api/v1", api)
        // The web UI: its pages and assets (no token; the pages call the API with one).
        .merge(wharf_web::router())
        .route("/healthz", get(healthz))
        // Webhooks prove themselves with the binding's secret, not a bearer token.
        .route("/hooks/{provider}/{binding}", post(crate::hooks::receive))
        .route("/metrics", get(metrics))
        // The OAuth callback: a browser coming back from the provider, proven by `state`.
        .route("/devops/repository/{provider}/redirect", get(providers::callback))
        .fallback(|| async {
            AppError::NotFound("no such route; the API is under /api/v1 (see /api/v1/openapi.json)".into())
        })
        .with_state(state)
}

async fn require_token(State(state): AppStateRef, request: Request, next: Next) -> Response {
    let header = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if state.auth.check(header) { next.run(request).await } else { AppError::Unauthorized.into_response() }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(state): AppStateRef) -> ApiResult<Response> {
    let by_status = state.store.count_by_status().await?;
    let text = state.metrics.render(&by_status, state.dispatcher.queued(), state.dispatcher.active());
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn openapi() -> Response {
    axum::Json(crate::openapi::document()).into_response()
}

/// Reads a JSON body; an empty body is `T::default()`. Problems are 422 with the
/// line and column serde saw.
pub fn json_body<T: DeserializeOwned + Default>(body: &Bytes) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| AppError::Invalid {
        message: "the request body is not valid".into(),
        details: vec![Detail {
            path: String::new(),
            line: Some(e.line()),
            column: Some(e.column()),
            message: e.to_string(),
        }],
    })
}

/// `?limit=50&page=1`: limit 1 to 200 (default 50), page from 1.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Page {
    pub limit: i64,
    pub page: i64,
}

impl Page {
    pub fn from_query(query: &HashMap<String, String>) -> ApiResult<Page> {
        let number = |key: &str, default: i64, range: std::ops::RangeInclusive<i64>| -> ApiResult<i64> {
            match query.get(key) {
                None => Ok(default),
                Some(text) => match text.parse::<i64>() {
                    Ok(n) if range.contains(&n) => Ok(n),
                    _ => Err(AppError::invalid(
                        "bad pagination",
                        key,
                        format!(
                            "`{text}` is not allowed: expected a whole number from {} to {}",
                            range.start(),
                            range.end()
                        ),
                    )),
                },
            }
        };
        Ok(Page { limit: number("limit", 50, 1..=200)?, page: number("page", 1, 1..=i64::MAX / 200)? })
    }

    pub fn offset(self) -> i64 {
        (self.page - 1) * self.limit
    }
}

/// A page of items with what a client needs to ask for the next one.
#[derive(Serialize)]
pub struct Paged<T: Serialize> {
    pub items: Vec<T>,
    pub page: i64,
    pub limit: i64,
    pub total: i64,
}

/// `201 Created` with a JSON body.
pub fn created<T: Serialize>(body: T) -> Response {
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

/// The body as UTF-8 text, or a 400.
pub fn text_body(body: &Bytes) -> ApiResult<&str> {
    std::str::from_utf8(body).map_err(|e| AppError::BadRequest(format!("the body is not UTF-8 text: {e}")))
}

pub fn content_type(headers: &HeaderMap) -> &str {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("")
}
