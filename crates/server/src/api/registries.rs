//! `/api/v1/registries`: OCI registries and their workspaces (the seed's "container
//! image service"). Register one (the credentials are checked against it unless
//! `?verify=false`), list and show them (never the password), register workspaces,
//! list its repositories and a repository's tags with size and creation time, delete
//! a tag, and upload a `docker save` tarball (tar or tar.gz, up to 2 GB, streamed to
//! disk) into a workspace — an existing tag is overwritten.
//!
//! A registry that is down, refuses the stored credentials or refuses the operation
//! is `502 Bad Gateway` with what it answered; a tarball that is not an image is `422`.

use super::{AppStateRef, created, json_body, rows};
use crate::AppState;
use crate::authz::{self, Action, Caller, Object};
use crate::error::{ApiResult, AppError, Detail};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use std::collections::HashMap;
use tokio::io::AsyncWriteExt;
use wharf_api::Listed;
use wharf_api::registries::{
    Artifact, ImageRepository, NewRegistry as CreateRegistry, NewWorkspace as CreateWorkspace, Registries, Tag,
    TagDeleted, Tags,
};
use wharf_core::model::TaskKind;
use wharf_core::names::PipelineName;
use wharf_image::reference::{check_component, check_tag};
use wharf_image::upload::MAX_TARBALL_BYTES;
use wharf_image::{RegistryAccess, RegistryClient, RegistryError, UploadError};
use wharf_store::registries::{NewRegistry, Registry};

type Answer = Result<Response, AppError>;

/// A registry as answered: its stored fields without the password, and its URL.
fn view(registry: Registry) -> wharf_api::registries::Registry {
    let url = access(&registry).base_url();
    rows::registry(registry, url)
}

pub fn access(registry: &Registry) -> RegistryAccess {
    RegistryAccess {
        host: registry.host.clone(),
        username: registry.username.clone(),
        password: registry.password.clone(),
        insecure: registry.insecure,
    }
}

/// A client for `registry`: the registry itself wherever it is (an admin registered
/// it); its realms, redirects and upload addresses under the outbound policy.
fn client(state: &crate::AppState, registry: &Registry) -> Result<RegistryClient, AppError> {
    RegistryClient::new(access(registry), &state.forges.policy)
        .map_err(|e| AppError::internal("cannot make a registry client", e))
}

/// How a registry failure is answered: our input 422, a missing repository or tag
/// 404, anything the registry did (down, refused, deletes disabled) 502.
fn registry_error(registry: &Registry, e: RegistryError) -> AppError {
    let name = &registry.name;
    match e {
        RegistryError::NotFound { what, .. } => AppError::NotFound(format!("{what} in registry `{name}`")),
        RegistryError::Invalid(message) => AppError::invalid("the request is not valid", "", message),
        RegistryError::Io { .. } => AppError::internal(format!("registry `{name}`"), e),
        other => {
            tracing::warn!(registry = %name, error = %other, "registry call failed");
            AppError::BadGateway(format!("registry `{name}`: {other}"))
        }
    }
}

/// An optional text field: blank is absent.
fn given(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

/// `POST /registries` `{name, url, username, password, insecure, workspaces}`: `201`;
/// `409` when the name is taken; `422` for a bad name, URL or workspace, or
/// credentials the registry refuses; `502` when it cannot be reached (`?verify=false`
/// registers without asking it).
pub async fn create(
    State(state): AppStateRef,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Answer {
    authz::check(&caller, Action::ManageRegistry, &Object::Registry { name: "*" })?;
    let request: CreateRegistry = json_body(&body)?;
    let mut problems = Vec::new();
    if let Err(e) = PipelineName::new(request.name.clone()) {
        problems
            .push(Detail::at("name", format!("`{}` is not a valid registry name: {}", e.value, PipelineName::RULE)));
    }
    let host = match RegistryAccess::from_url(&request.url, request.insecure) {
        Ok(host) => host,
        Err(why) => {
            problems.push(Detail::at("url", why));
            String::new()
        }
    };
    for (i, workspace) in request.workspaces.iter().enumerate() {
        if let Err(e) = check_component(workspace) {
            problems.push(Detail::at(format!("workspaces[{i}]"), format!("not a workspace name: {e}")));
        }
    }
    for (path, value) in [("username", &request.username), ("password", &request.password)] {
        if value.as_deref().is_some_and(|v| v.len() > 4096 || v.chars().any(char::is_control)) {
            problems.push(Detail::at(path, "at most 4096 characters, without control characters"));
        }
    }
    let username = given(request.username);
    let password = given(request.password);
    if password.is_some() && username.is_none() {
        problems.push(Detail::at("username", "a password needs a username"));
    }
    if !problems.is_empty() {
        return Err(AppError::Invalid { message: "the registry is not valid".into(), details: problems });
    }
    let new = NewRegistry {
        name: request.name,
        host,
        username,
        password,
        insecure: request.insecure,
        workspaces: request.workspaces,
    };
    if query.get("verify").map(String::as_str) != Some("false") {
        let probe = Registry {
            id: 0,
            name: new.name.clone(),
            host: new.host.clone(),
            username: new.username.clone(),
            password: new.password.clone(),
            has_password: new.password.is_some(),
            insecure: new.insecure,
            workspaces: vec![],
            created_at: 0,
            updated_at: 0,
        };
        match client(&state, &probe)?.ping().await {
            Ok(()) => {}
            Err(e @ RegistryError::Unauthorized { .. }) => {
                return Err(AppError::invalid("the registry refused the credentials", "password", e.to_string()));
            }
            Err(e) => return Err(registry_error(&probe, e)),
        }
    }
    let registry = state.store.create_registry(&new).await?;
    Ok(created(view(registry)))
}

/// `GET /registries`: every registry, by name.
pub async fn list(State(state): AppStateRef, caller: Caller) -> ApiResult<Response> {
    authz::check(&caller, Action::ViewRegistry, &Object::Registry { name: "*" })?;
    let items: Vec<_> = state.store.registries().await?.into_iter().map(view).collect();
    let answer = Registries { total: items.len(), items, default: state.config.default_registry.clone() };
    Ok(axum::Json(answer).into_response())
}

/// `GET /registries/{name}`.
pub async fn show(State(state): AppStateRef, caller: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    authz::check(&caller, Action::ViewRegistry, &Object::Registry { name: &name })?;
    let registry = state.store.registry(&name).await?;
    Ok(axum::Json(view(registry)).into_response())
}

/// The names of the pipelines whose latest version has an `image` task pushing to
/// `name` (by name, or by having none while `name` is the server's default).
pub async fn users(state: &AppState, name: &str) -> ApiResult<Vec<String>> {
    let (rows, _) = state.store.pipelines(i64::MAX, 0).await?;
    let default = state.config.default_registry.as_deref();
    let mut users = Vec::new();
    for (row, _) in rows {
        let model = state.runs.pipeline_version(row.id, row.version).await?;
        let uses = model.all_stages().flat_map(|s| &s.tasks).any(|t| match &t.kind {
            TaskKind::Image(image) => image.registry.as_deref().or(default) == Some(name),
            _ => false,
        });
        if uses {
            users.push(row.name);
        }
    }
    Ok(users)
}

/// `DELETE /registries/{name}`: `204`; `409` naming the pipelines that push to it.
/// The images in the registry stay.
pub async fn delete(State(state): AppStateRef, caller: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    authz::check(&caller, Action::ManageRegistry, &Object::Registry { name: &name })?;
    let registry = state.store.registry(&name).await?;
    let users = users(&state, &registry.name).await?;
    if !users.is_empty() {
        let list: Vec<String> = users.iter().map(|n| format!("`{n}`")).collect();
        return Err(AppError::Conflict(format!(
            "registry `{name}` is used by pipeline(s) {}; change their `image` tasks' registry (or delete them) first",
            list.join(", ")
        )));
    }
    state.store.delete_registry(&registry.name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /registries/{name}/workspaces` `{name}`: `201` with the registry.
pub async fn add_workspace(
    State(state): AppStateRef,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    authz::check(&caller, Action::ManageRegistry, &Object::Registry { name: &name })?;
    let request: CreateWorkspace = json_body(&body)?;
    check_component(&request.name)
        .map_err(|e| AppError::invalid("the workspace is not valid", "name", format!("not a workspace name: {e}")))?;
    let registry = state.store.add_workspace(&name, &request.name).await?;
    Ok(created(view(registry)))
}

/// `DELETE /registries/{name}/workspaces/{workspace}`: `204`; the images stay.
pub async fn delete_workspace(
    State(state): AppStateRef,
    caller: Caller,
    Path((name, workspace)): Path<(String, String)>,
) -> ApiResult<Response> {
    authz::check(&caller, Action::ManageRegistry, &Object::Registry { name: &name })?;
    state.store.delete_workspace(&name, &workspace).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /registries/{name}/repositories[?workspace=W]` → `{"items": [{"name":
/// "devops/jack-2048", "workspace", "image"}], "total"}`.
pub async fn repositories(
    State(state): AppStateRef,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    authz::check(&caller, Action::ViewRegistry, &Object::Registry { name: &name })?;
    let registry = state.store.registry(&name).await?;
    let client = client(&state, &registry)?;
    let all = client.catalog().await.map_err(|e| registry_error(&registry, e))?;
    let wanted: Vec<String> = all
        .into_iter()
        .filter(|repo| {
            let workspace = repo.split_once('/').map_or("", |(w, _)| w);
            query.get("workspace").is_none_or(|w| w == workspace)
        })
        .collect();
    // What each holds, from one manifest of each (the newest tag by name), a few at a
    // time; only the first MAX_CLASSIFIED are asked about.
    let client = &client;
    let items: Vec<ImageRepository> = futures_util::stream::iter(wanted.into_iter().enumerate())
        .map(|(i, repo)| async move {
            let artifact = if i < MAX_CLASSIFIED { repository_artifact(client, &repo).await } else { Artifact::Image };
            let (workspace, image) = repo.split_once('/').unwrap_or(("", &repo));
            ImageRepository { workspace: workspace.to_owned(), image: image.to_owned(), name: repo.clone(), artifact }
        })
        .buffered(8)
        .collect()
        .await;
    Ok(axum::Json(Listed::new(items)).into_response())
}

/// `GET /registries/{name}/repositories/{workspace}/{image}/tags` → `{"repository",
/// "items": [{"tag", "image", "digest", "media_type", "size", "created"}], "total"}`,
/// newest first.
pub async fn tags(
    State(state): AppStateRef,
    caller: Caller,
    Path((name, workspace, image)): Path<(String, String, String)>,
) -> Answer {
    authz::check(&caller, Action::ViewRegistry, &Object::Registry { name: &name })?;
    let registry = state.store.registry(&name).await?;
    let repository = repository(&workspace, &image)?;
    let client = client(&state, &registry)?;
    let tags = client.tags(&repository).await.map_err(|e| registry_error(&registry, e))?;
    let (client, repository_ref) = (&client, &repository);
    let infos: Vec<Result<wharf_image::TagInfo, RegistryError>> = futures_util::stream::iter(tags)
        .map(|tag| async move { client.tag_info(repository_ref, &tag).await })
        .buffered(8)
        .collect()
        .await;
    let mut items = Vec::with_capacity(infos.len());
    for info in infos {
        match info {
            Ok(info) => items.push(Tag {
                image: format!("{}/{repository}:{}", registry.host, info.tag),
                tag: info.tag,
                digest: info.digest,
                media_type: info.media_type,
                size: info.size,
                artifact: artifact(info.config_media_type.as_deref()),
                created: info.created,
            }),
            // Deleted between the listing and now.
            Err(RegistryError::NotFound { .. }) => {}
            Err(e) => return Err(registry_error(&registry, e)),
        }
    }
    items.sort_by(|a, b| b.created.cmp(&a.created).then(a.tag.cmp(&b.tag)));
    Ok(axum::Json(Tags { repository, total: items.len(), items }).into_response())
}

/// How many repositories of one listing are looked into to tell charts from images.
const MAX_CLASSIFIED: usize = 500;

/// What a manifest with this config media type holds (`None`: an index, an image).
fn artifact(config_media_type: Option<&str>) -> Artifact {
    match config_media_type {
        Some(t) if wharf_image::chart::is_chart_config(t) => Artifact::Chart,
        None => Artifact::Image,
        Some(t) if t.contains(".image.config.") || t.contains("container.image") => Artifact::Image,
        Some(_) => Artifact::Other,
    }
}

/// What a repository holds, by one of its tags (the last by name); an image when it
/// has none or the registry does not answer.
async fn repository_artifact(client: &wharf_image::RegistryClient, repository: &str) -> Artifact {
    let Ok(tags) = client.tags(repository).await else { return Artifact::Image };
    let Some(tag) = tags.last() else { return Artifact::Image };
    match client.config_media_type(repository, tag).await {
        Ok(t) => artifact(t.as_deref()),
        Err(_) => Artifact::Image,
    }
}

fn repository(workspace: &str, image: &str) -> ApiResult<String> {
    check_component(workspace).map_err(|e| AppError::invalid("the path is not valid", "workspace", e.to_string()))?;
    check_component(image).map_err(|e| AppError::invalid("the path is not valid", "image", e.to_string()))?;
    Ok(format!("{workspace}/{image}"))
}

/// `DELETE /registries/{name}/repositories/{workspace}/{image}/tags/{tag}` → `200`
/// `{"deleted", "digest", "also_removed": [...]}`: the registry deletes the manifest,
/// so other tags of the same digest go with it, and are named.
pub async fn delete_tag(
    State(state): AppStateRef,
    caller: Caller,
    Path((name, workspace, image, tag)): Path<(String, String, String, String)>,
) -> Answer {
    authz::check(&caller, Action::ManageRegistry, &Object::Registry { name: &name })?;
    let registry = state.store.registry(&name).await?;
    let repository = repository(&workspace, &image)?;
    check_tag(&tag).map_err(|e| AppError::invalid("the path is not valid", "tag", e.to_string()))?;
    let client = client(&state, &registry)?;
    let digest = client.resolve(&repository, &tag).await.map_err(|e| registry_error(&registry, e))?;
    let also = client.delete_tag(&repository, &tag).await.map_err(|e| registry_error(&registry, e))?;
    let answer = TagDeleted { deleted: format!("{}/{repository}:{tag}", registry.host), digest, also_removed: also };
    Ok(axum::Json(answer).into_response())
}

/// `POST /registries/{name}/upload?workspace=W` (body: a `docker save` tarball, tar or
/// tar.gz) → `201` `{"items": [{"image", "digest", "size"}]}`. The body goes to a
/// temp file in the data directory as it arrives; more than 2 GB is `413`.
pub async fn upload(
    State(state): AppStateRef,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: Body,
) -> Answer {
    authz::check(&caller, Action::ManageRegistry, &Object::Registry { name: &name })?;
    let checked = upload_target(&state, &name, query.get("workspace")).await;
    let (registry, workspace) = match checked {
        Ok(target) => target,
        Err(e) => {
            // Read the body to its end before answering: a client still sending would
            // otherwise see a broken connection instead of the reason.
            let mut stream = body.into_data_stream();
            let mut drained: u64 = 0;
            while let Some(Ok(chunk)) = stream.next().await {
                drained += chunk.len() as u64;
                if drained > MAX_TARBALL_BYTES {
                    break;
                }
            }
            return Err(e);
        }
    };
    let dir = state.config.data_dir.join("uploads");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| AppError::internal(format!("cannot create {}", dir.display()), e))?;
    let spool = tempfile::NamedTempFile::new_in(&dir)
        .map_err(|e| AppError::internal(format!("cannot create a file in {}", dir.display()), e))?
        .into_temp_path();
    let mut file = tokio::fs::File::create(&spool)
        .await
        .map_err(|e| AppError::internal("cannot create the upload's spool file", e))?;
    let mut stream = body.into_data_stream();
    let mut size: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| AppError::BadRequest(format!("the upload broke off: {e}")))?;
        size += chunk.len() as u64;
        if size > MAX_TARBALL_BYTES {
            let message = format!("the tarball is larger than {MAX_TARBALL_BYTES} bytes (2 GB)");
            let body = wharf_api::Error { error: wharf_api::ErrorInfo { status: 413, message, details: vec![] } };
            return Ok((StatusCode::PAYLOAD_TOO_LARGE, axum::Json(body)).into_response());
        }
        file.write_all(&chunk).await.map_err(|e| AppError::internal("writing the upload", e))?;
    }
    file.flush().await.map_err(|e| AppError::internal("writing the upload", e))?;
    drop(file);
    if size == 0 {
        return Err(AppError::invalid("the upload is empty", "body", "send a `docker save` tarball as the body"));
    }
    let client = client(&state, &registry)?;
    match wharf_image::upload_tarball(&client, &spool, &workspace).await {
        Ok(pushed) => {
            tracing::info!(registry = %name, %workspace, images = pushed.len(), "tarball uploaded");
            Ok(created(Listed::new(pushed.into_iter().map(rows::pushed).collect())))
        }
        Err(UploadError::NotAnImage(why)) => {
            Err(AppError::invalid("the upload is not an image tarball", "body", format!("not an image tarball: {why}")))
        }
        Err(UploadError::Registry(e)) => Err(registry_error(&registry, e)),
        Err(e) => Err(AppError::internal("uploading the image", e)),
    }
}

/// The registry and registered workspace an upload goes to.
async fn upload_target(state: &AppState, name: &str, workspace: Option<&String>) -> ApiResult<(Registry, String)> {
    let registry = state.store.registry(name).await?;
    let workspace = workspace.cloned().unwrap_or_default();
    if workspace.is_empty() {
        return Err(AppError::invalid("the upload needs a workspace", "workspace", "give ?workspace=NAME"));
    }
    if !registry.workspaces.contains(&workspace) {
        let known = if registry.workspaces.is_empty() { "none".to_owned() } else { registry.workspaces.join(", ") };
        return Err(AppError::invalid(
            "the workspace is not registered",
            "workspace",
            format!("`{workspace}` is not a workspace of registry `{name}` (registered: {known})"),
        ));
    }
    Ok((registry, workspace))
}
