//! The HTTP surface: `/api/v1` (a bearer token or a login session, see
//! [`crate::auth`]; every handler asks [`crate::authz::check`]), `/healthz`, `/metrics`,
//! and the webhook endpoint `/hooks/{provider}/{binding}` (signed, see [`crate::hooks`]).
//! Every state-changing API call is written to the audit log (who, what, which object,
//! the status answered, when, from which address). Every route
//! is listed once in [`crate::openapi::ROUTES`], which also builds the OpenAPI
//! document, so the two cannot drift (a test checks that each documented route exists).

pub(crate) mod bindings;
pub mod clusters;
mod deliveries;
mod gates;
mod logs;
mod pipelines;
pub(crate) mod providers;
pub mod registries;
pub mod releases;
mod rows;
mod runs;
mod schedule;
pub(crate) mod secrets;
mod signals;
pub(crate) mod tenancy;

use crate::AppState;
use crate::auth;
use crate::authz::{Caller, TokenScope, Via};
use crate::error::{ApiResult, AppError, Detail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Arc;

pub type AppStateRef = State<Arc<AppState>>;

pub fn router(state: Arc<AppState>) -> Router {
    // Every route of `api` needs a caller (the layer below authenticates, audits, and
    // puts the `Caller` into the request); only `public` goes without.
    let public = Router::new().route("/login", post(tenancy::login)).route("/openapi.json", get(openapi));
    let api = Router::new()
        .route("/pipelines", get(pipelines::list).post(pipelines::create))
        .route("/pipelines/scratch", get(pipelines::starter).post(pipelines::create_from_scratch))
        .route("/pipelines/validate", post(pipelines::validate))
        .route("/task-types", get(pipelines::task_types))
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
        .route("/runs/{id}/tasks/{task}/approve", post(gates::approve))
        .route("/runs/{id}/tasks/{task}/reject", post(gates::reject))
        .route("/approvals", get(gates::waiting))
        .route("/pipelines/{key}/stages/{stage}/hook", post(signals::make_hook))
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
        // The body is streamed to disk; the limit is the seed's 2 GB (checked there too),
        // and it may take long as long as its chunks keep coming.
        .route(
            "/registries/{name}/upload",
            post(registries::upload)
                .layer(axum::extract::DefaultBodyLimit::max(wharf_image::upload::MAX_TARBALL_BYTES as usize + 1))
                .layer(middleware::from_fn(crate::http::streamed_body)),
        )
        // A kubeconfig is a few KiB; the limit keeps a client from making the server hold more.
        .route(
            "/clusters",
            get(clusters::list).post(clusters::create).layer(axum::extract::DefaultBodyLimit::max(clusters::MAX_BODY)),
        )
        .route(
            "/clusters/{name}",
            get(clusters::show)
                .delete(clusters::delete)
                .patch(clusters::update)
                .layer(axum::extract::DefaultBodyLimit::max(clusters::MAX_SETTINGS_BODY)),
        )
        .route("/clusters/{name}/check", post(clusters::check_now))
        .route("/clusters/{name}/releases", get(releases::list))
        .route("/clusters/{name}/namespaces/{ns}/releases/{release}", get(releases::show).delete(releases::uninstall))
        .route(
            "/clusters/{name}/namespaces/{ns}/releases/{release}/rollback",
            post(releases::rollback).layer(axum::extract::DefaultBodyLimit::max(releases::MAX_BODY)),
        )
        .route(
            "/clusters/{name}/namespaces/{ns}/releases/{release}/upgrade",
            post(releases::upgrade).layer(axum::extract::DefaultBodyLimit::max(releases::MAX_BODY)),
        )
        .route("/deliveries", get(deliveries::list))
        .route("/deliveries/{delivery}", get(deliveries::show))
        .route("/deliveries/{delivery}/replay", post(deliveries::replay))
        .route("/departments", get(tenancy::departments).post(tenancy::create_department))
        .route("/projects", get(tenancy::projects).post(tenancy::create_project))
        .route("/projects/{name}", patch(tenancy::update_project))
        .route("/users", get(tenancy::users).post(tenancy::create_user))
        .route("/users/{name}", put(tenancy::update_user).delete(tenancy::delete_user))
        .route("/users/{name}/tokens", get(tenancy::tokens).post(tenancy::create_token))
        .route("/users/{name}/tokens/{token}", delete(tenancy::revoke_token))
        .route("/me", get(tenancy::me))
        .route("/logout", post(tenancy::logout))
        .route("/audit", get(tenancy::audit))
        .route("/secrets", get(secrets::list))
        .route("/secrets/{name}", put(secrets::set).delete(secrets::delete));
    let api = api.route_layer(middleware::from_fn_with_state(state.clone(), authenticate)).merge(public);
    Router::new()
        .nest("/api/v1", api)
        // The web UI: its pages and assets (no token; the pages call the API with one).
        .merge(wharf_web::router())
        .route("/healthz", get(healthz))
        // The UI's login form posts here too.
        .route("/login", post(tenancy::login))
        // Webhooks prove themselves with the binding's secret, not a bearer token.
        .route("/hooks/{provider}/{binding}", post(crate::hooks::receive))
        // A stage's hook URL: the token is its proof.
        .route(
            "/hooks/stages/{token}",
            post(signals::receive).layer(axum::extract::DefaultBodyLimit::max(signals::MAX_HOOK_BODY)),
        )
        .route("/metrics", get(metrics))
        // The OAuth callback: a browser coming back from the provider, proven by `state`.
        .route("/devops/repository/{provider}/redirect", get(providers::callback))
        .fallback(|| async {
            AppError::NotFound("no such route; the API is under /api/v1 (see /api/v1/openapi.json)".into())
        })
        .layer(middleware::from_fn(crate::error::json_errors))
        .with_state(state)
}

/// Whether a request changes state (and so needs CSRF proof on a session, a `write`
/// token, and an audit line).
pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A refused caller: the answer to give, and who they proved to be when they got that
/// far (a `read` token on a change, a session without its CSRF token).
struct Refused {
    error: AppError,
    actor: Option<String>,
}

impl From<AppError> for Refused {
    fn from(error: AppError) -> Self {
        Refused { error, actor: None }
    }
}

impl From<wharf_store::StoreError> for Refused {
    fn from(error: wharf_store::StoreError) -> Self {
        AppError::from(error).into()
    }
}

/// Who is calling: a bearer token, else a session cookie (with its CSRF token on
/// changes).
async fn resolve(state: &AppState, headers: &HeaderMap, ip: Option<String>, changes: bool) -> Result<Caller, Refused> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(authorization) = header(header::AUTHORIZATION.as_str()) {
        let token = auth::bearer(authorization).ok_or(AppError::Unauthorized)?;
        let caller = auth::caller_from_token(&state.store, token, ip).await?.ok_or(AppError::Unauthorized)?;
        if changes && caller.via == (Via::Token { scope: TokenScope::Read }) {
            return Err(Refused {
                error: AppError::Forbidden(
                    "this token has the `read` scope: it may only read (GET); use a `write` token to change things"
                        .into(),
                ),
                actor: Some(caller.name),
            });
        }
        return Ok(caller);
    }
    let session =
        header(header::COOKIE.as_str()).and_then(|c| auth::cookie(c, auth::SESSION_COOKIE)).filter(|s| !s.is_empty());
    let Some(session) = session else { return Err(AppError::Unauthorized.into()) };
    let (caller, csrf) = auth::caller_from_session(&state.store, session, ip).await?.ok_or(AppError::Unauthorized)?;
    if changes {
        let given = header(auth::CSRF_HEADER).unwrap_or("");
        let checked = if auth::same(given, &csrf) {
            cross_site_check(headers)
        } else {
            Err(AppError::Forbidden(
                "missing or wrong CSRF token: a change made with a login session must send the session's \
                 csrf_token (from POST /login or GET /me) in the X-CSRF-Token header"
                    .into(),
            ))
        };
        if let Err(error) = checked {
            return Err(Refused { error, actor: Some(caller.name) });
        }
    }
    Ok(caller)
}

/// A browser's `Origin` (when it sends one) must be this server's own address.
pub fn cross_site_check(headers: &HeaderMap) -> ApiResult<()> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (Some(origin), Some(host)) if origin != "null" => {
            let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            if origin_host.eq_ignore_ascii_case(host) {
                Ok(())
            } else {
                Err(AppError::Forbidden(format!("cross-site request refused: Origin `{origin}` is not `{host}`")))
            }
        }
        (Some(_), _) => Err(AppError::Forbidden("cross-site request refused (Origin: null)".into())),
        _ => Ok(()),
    }
}

/// Authenticates every `/api/v1` route (but login and the OpenAPI document), puts the
/// [`Caller`] into the request, and writes state changes and refusals (401, 403) to
/// the audit log.
async fn authenticate(State(state): AppStateRef, mut request: Request, next: Next) -> Response {
    let ip = crate::http::client_ip(request.extensions());
    let method = request.method().clone();
    let changes = changes_state(&method);
    let route = request.extensions().get::<MatchedPath>().map(|m| m.as_str().to_owned());
    let object = request.uri().path().to_owned();
    let route = route.as_deref().unwrap_or(&object);
    let action = format!("{method} {}", route.strip_prefix("/api/v1").unwrap_or(route));
    let object = object.strip_prefix("/api/v1").unwrap_or(&object).to_owned();
    let caller = match resolve(&state, request.headers(), ip.clone(), changes).await {
        Ok(caller) => caller,
        Err(Refused { error, actor }) => {
            let status = error.status();
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                let actor = actor.as_deref().unwrap_or(UNAUTHENTICATED);
                audit_refusal(&state, actor, &format!("refused: {action}"), &object, status.as_u16(), ip).await;
            }
            return error.into_response();
        }
    };
    request.extensions_mut().insert(caller.clone());
    let response = next.run(request).await;
    if changes {
        audit(&state, &caller.name, &action, &object, response.status().as_u16(), ip).await;
    }
    response
}

/// The audit log's actor for a caller who proved nobody.
pub const UNAUTHENTICATED: &str = "-";

/// Writes one audit line for a refused request, unless this address has had its share
/// of such lines lately ([`AppState::refusal_audits`]): a flood of refused requests is
/// written down at its start, not in full.
pub async fn audit_refusal(
    state: &AppState,
    actor: &str,
    action: &str,
    object: &str,
    outcome: u16,
    ip: Option<String>,
) {
    if state.refusal_audits.take(&crate::http::client_key(ip.as_deref())).is_ok() {
        audit(state, actor, action, object, outcome, ip).await;
    }
}

/// Writes one audit line; a failure to write is logged, not answered. The store cuts
/// long fields.
pub async fn audit(state: &AppState, actor: &str, action: &str, object: &str, outcome: u16, ip: Option<String>) {
    let entry = wharf_store::tenancy::AuditEntry {
        id: None,
        at: wharf_store::now_ms(),
        actor: actor.to_owned(),
        action: action.to_owned(),
        object: object.to_owned(),
        outcome: i64::from(outcome),
        client_ip: ip,
    };
    if let Err(e) = state.store.audit(&entry).await {
        tracing::error!(error = %e, "cannot write the audit log");
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(state): AppStateRef) -> ApiResult<Response> {
    let by_status = state.store.count_by_status().await?;
    let text = state.metrics.render(&by_status, &state.runs);
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
        details: vec![Detail::of_json(&e)],
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

impl Page {
    /// One page of `items` (of `total` on all pages), as answered.
    pub fn of<T>(self, items: Vec<T>, total: i64) -> wharf_api::Paged<T> {
        wharf_api::Paged { items, page: self.page, limit: self.limit, total }
    }
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
