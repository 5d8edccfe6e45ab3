//! `/api/v1/bindings`: repository bindings (an account at GitHub, GitLab, Gitee or a
//! plain git host, with its credentials). Create, list, show, and delete ("log out"),
//! refused while a pipeline's latest version names the binding. Secrets (client
//! secret, token, webhook secret) are stored and never answered; `has_*` says which
//! are set. Listing repositories and branches and the OAuth routes are in
//! `providers.rs`.
//!
//! Seed 002 §2.5: every role sees, sets and logs out of only the bindings it created;
//! another user's binding is "not found".
//!
//! Only an admin gives a binding an instance `url` (a self-hosted GitLab, Gitee or
//! GitHub Enterprise): the server sends the binding's token and OAuth client secret
//! there, so where that is stays the admin's decision (`403` for anyone else, whose
//! bindings use the provider's public service).

use super::{AppStateRef, created, json_body, rows};
use crate::AppState;
use crate::authz::{self, Action, Caller, Object};
use crate::error::{ApiResult, AppError, Detail};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use wharf_api::Listed;
use wharf_api::bindings::{NewBinding as CreateBinding, WebhookPath};
use wharf_core::names::PipelineName;
use wharf_store::bindings::{Binding, NewBinding};

pub const PROVIDERS: [&str; 4] = ["github", "gitlab", "gitee", "git"];

/// A binding as answered: its stored fields without the secrets, and where its
/// provider sends webhooks.
pub fn view(binding: Binding) -> wharf_api::bindings::Binding {
    let hook = (binding.provider != "git").then(|| format!("/hooks/{}/{}", binding.provider, binding.name));
    rows::binding(binding, WebhookPath::Some(hook))
}

/// An optional text field: blank is absent.
fn given(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// `POST /bindings`: `201` with the binding; `409` when the name is taken; `422` for
/// a bad name, provider or instance URL.
/// A binding by name, checked for `action` (hidden: "not found").
pub async fn find_for(state: &AppState, caller: &Caller, name: &str, action: Action) -> ApiResult<Binding> {
    let binding = state.store.binding(name).await?;
    authz::check(caller, action, &Object::binding(&binding))?;
    Ok(binding)
}

pub async fn create(State(state): AppStateRef, caller: Caller, body: Bytes) -> ApiResult<Response> {
    let request: CreateBinding = json_body(&body)?;
    let new = Object::Repository { name: &request.name, created_by: &caller.name };
    authz::check(&caller, Action::SetRepository, &new)?;
    let mut problems = Vec::new();
    if let Err(e) = PipelineName::new(request.name.clone()) {
        problems.push(Detail::at("name", format!("`{}` is not a valid binding name: {}", e.value, PipelineName::RULE)));
    }
    if !PROVIDERS.contains(&request.provider.as_str()) {
        problems.push(Detail::at(
            "provider",
            format!("`{}` is not a provider Wharf knows; use one of {}", request.provider, PROVIDERS.join(", ")),
        ));
    }
    let url = given(request.url);
    if url.is_some() && authz::check(&caller, Action::SetInstanceUrl, &Object::System).is_err() {
        return Err(AppError::Forbidden(format!(
            "only an admin may give a binding an instance URL (`url`): the server sends the binding's token and \
             OAuth client secret there; leave `url` out to use the public {} service, or ask an admin to create \
             the binding for a self-hosted instance",
            if PROVIDERS.contains(&request.provider.as_str()) { request.provider.as_str() } else { "provider's" }
        )));
    }
    if let Some(url) = &url
        && let Err(why) = check_instance_url(url)
    {
        problems.push(Detail::at("url", why));
    }
    for (path, value) in [
        ("client_id", &request.client_id),
        ("client_secret", &request.client_secret),
        ("token", &request.token),
        ("webhook_secret", &request.webhook_secret),
    ] {
        if value.as_deref().is_some_and(|v| v.len() > 4096 || v.chars().any(char::is_control)) {
            problems.push(Detail::at(path, "at most 4096 characters, without control characters"));
        }
    }
    if !problems.is_empty() {
        return Err(AppError::Invalid { message: "the binding is not valid".into(), details: problems });
    }
    let binding = state
        .store
        .create_binding(&NewBinding {
            name: request.name,
            provider: request.provider,
            url,
            client_id: given(request.client_id),
            client_secret: given(request.client_secret),
            token: given(request.token),
            webhook_secret: given(request.webhook_secret),
            created_by: caller.name.clone(),
        })
        .await?;
    Ok(created(view(binding)))
}

/// A private instance's address: `http(s)://host[:port][/path]`.
fn check_instance_url(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(rest)
            if !rest.is_empty()
                && !rest.starts_with('/')
                && !url.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Ok(())
        }
        _ => {
            Err(format!("`{url}` is not an instance address; expected http(s)://host, like https://gitlab.example.com"))
        }
    }
}

/// `GET /bindings`: the caller's bindings, by name.
pub async fn list(State(state): AppStateRef, caller: Caller) -> ApiResult<Response> {
    let items = state
        .store
        .bindings()
        .await?
        .into_iter()
        .filter(|b| authz::check(&caller, Action::ViewRepository, &Object::binding(b)).is_ok())
        .map(view)
        .collect();
    Ok(axum::Json(Listed::new(items)).into_response())
}

/// `GET /bindings/{name}`.
pub async fn show(State(state): AppStateRef, caller: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    let binding = find_for(&state, &caller, &name, Action::ViewRepository).await?;
    Ok(axum::Json(view(binding)).into_response())
}

/// The names of the pipelines whose latest version's `source.binding` is `name`.
pub async fn users(state: &AppState, name: &str) -> ApiResult<Vec<String>> {
    let (rows, _) = state.store.pipelines(i64::MAX, 0).await?;
    let mut users = Vec::new();
    for (row, _) in rows {
        let model = state.runs.pipeline_version(row.id, row.version).await?;
        if model.source.as_ref().and_then(|s| s.binding.as_deref()) == Some(name) {
            users.push(row.name);
        }
    }
    Ok(users)
}

/// `DELETE /bindings/{name}` ("log out"): `204`; `409` naming the pipelines that
/// still use it.
pub async fn delete(State(state): AppStateRef, caller: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    let binding = find_for(&state, &caller, &name, Action::LogOutRepository).await?;
    let users = users(&state, &binding.name).await?;
    if !users.is_empty() {
        // Name only the pipelines the caller may see; count the others.
        let mut seen = Vec::new();
        for name in &users {
            let visible = state
                .store
                .pipeline_by_name(name, None)
                .await
                .ok()
                .is_some_and(|row| authz::check(&caller, Action::ViewPipeline, &Object::pipeline(&row)).is_ok());
            if visible {
                seen.push(format!("`{name}`"));
            }
        }
        let hidden = users.len() - seen.len();
        let mut list = seen.join(", ");
        if hidden > 0 {
            list.push_str(&format!(
                "{}{hidden} pipeline(s) you cannot see",
                if list.is_empty() { "" } else { " and " }
            ));
        }
        return Err(AppError::Conflict(format!(
            "binding `{name}` is used by pipeline(s) {list}; change their source.binding (or delete them) first"
        )));
    }
    state.store.delete_binding(&binding.name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
