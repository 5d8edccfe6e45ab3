//! `/api/v1/secrets`: project secrets, given to the runs of the project's pipelines
//! (tasks name them under `secrets:`) and masked in their logs. Sealed at rest
//! ([`wharf_store::secretbox`]); no answer ever holds a value: `GET` lists names only.
//! Values have at least [`MIN_SECRET_CHARS`](wharf_engine::mask::MIN_SECRET_CHARS)
//! characters. The project is `?project=` (default `admin`). Beyond the seed's matrix: admins for
//! every project, managers for the projects they joined, normal users not at all.

use super::{AppStateRef, json_body, rows};
use crate::authz::{self, Action, Caller, Object, Role};
use crate::error::{ApiResult, AppError};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use wharf_api::Listed;
use wharf_api::secrets::{SecretCreated, SetSecret};
use wharf_core::names::VarName;

fn project(query: &HashMap<String, String>) -> String {
    query.get("project").cloned().unwrap_or_else(|| authz::ADMIN_PROJECT.to_owned())
}

/// `PUT /secrets/{name}?project=P {"value"}`: `201` when new, `204` when replaced.
pub async fn set(
    State(state): AppStateRef,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Response> {
    let project = project(&query);
    authz::check(&caller, Action::ManageSecrets, &Object::Project(&project))?;
    if let Err(e) = VarName::new(name.clone()) {
        return Err(AppError::invalid("the secret is not valid", "name", e.to_string()));
    }
    let request: SetSecret = json_body(&body)?;
    let Some(value) = request.value.filter(|v| !v.is_empty()) else {
        return Err(AppError::invalid("the secret is not valid", "value", "give the secret's value as `value`"));
    };
    if let Some(why) = wharf_engine::mask::refuse_short_secret(&value) {
        return Err(AppError::invalid(format!("the secret `{name}` is not valid"), "value", why));
    }
    if value.len() > 64 * 1024 {
        return Err(AppError::invalid("the secret is not valid", "value", "at most 64 KiB"));
    }
    if value.contains('\0') {
        return Err(AppError::invalid(
            "the secret is not valid",
            "value",
            "contains a NUL byte, which no environment variable can carry",
        ));
    }
    if !state.store.project_exists(&project).await? {
        return Err(AppError::NotFound(format!("project `{project}`")));
    }
    let new = state.store.put_secret(&project, &name, &value, &caller.name).await?;
    if new {
        Ok((StatusCode::CREATED, axum::Json(SecretCreated { project, name }).into_response()).into_response())
    } else {
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

/// `GET /secrets[?project=P]`: names, never values. Without `?project`, every project
/// the caller may see.
pub async fn list(
    State(state): AppStateRef,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let items = match query.get("project") {
        Some(project) => {
            authz::check(&caller, Action::ViewSecrets, &Object::Project(project))?;
            state.store.secret_names(Some(project)).await?
        }
        None => {
            let all = state.store.secret_names(None).await?;
            all.into_iter()
                .filter(|s| {
                    caller.role == Role::Admin
                        || authz::check(&caller, Action::ViewSecrets, &Object::Project(&s.project)).is_ok()
                })
                .collect()
        }
    };
    Ok(axum::Json(Listed::new(items.into_iter().map(rows::secret).collect())).into_response())
}

/// `DELETE /secrets/{name}?project=P`.
pub async fn delete(
    State(state): AppStateRef,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let project = project(&query);
    authz::check(&caller, Action::ManageSecrets, &Object::Project(&project))?;
    state.store.delete_secret(&project, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
