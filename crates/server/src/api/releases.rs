//! `/api/v1/clusters/{cluster}/releases`: Helm releases ("template instances", seed 002
//! §3.4) in a registered cluster, read from and written to the Secrets Helm keeps them in
//! ([`wharf_kube::release`]), so these routes see what `helm install` made as well as
//! what `chart-deploy` made, and `helm` sees what they do.
//!
//! - `GET /clusters/{cluster}/releases[?namespace=NS]`: every release at its latest
//!   revision (`ViewCluster`).
//! - `GET /clusters/{cluster}/namespaces/{ns}/releases/{release}`: one release with its
//!   history, values, notes and where its chart came from (`ViewCluster`).
//! - `POST …/{release}/rollback {"revision": N}`: a new revision from revision N's chart,
//!   values and manifest, as `helm rollback` (`ManageReleases`).
//! - `POST …/{release}/upgrade {"version", "values"?, "registry"?, "workspace"?}`: the
//!   chart pulled at `version` from where the release remembers it came from (the
//!   annotation `wharf.dev/chart-source` on the revisions `chart-deploy` writes:
//!   `registry/workspace/chart`), or from the registry and workspace given (needed for a
//!   release only Helm made); without `values`, the release's current values are kept
//!   (`ManageReleases`).
//! - `DELETE …/{release}`: uninstall — `pre-delete` hooks, objects deleted, `post-delete`
//!   hooks, every revision's Secret deleted (`ManageReleases`).
//!
//! Writes wait for the operation (hooks, rollouts) at most [`OPERATION_TIMEOUT`]; past it
//! the operation is stopped and its revision marked `failed`, as Helm marks one that timed
//! out. Errors: an unknown release `404`; another operation in progress `409`; the
//! cluster refusing or a chart that does not render `502`/`422` with the cluster's words.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::{AppStateRef, json_body};
use crate::AppState;
use crate::authz::{self, Action, Caller, Object};
use crate::error::{ApiResult, AppError};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use wharf_api::releases::{Operation, Release as ReleaseView, ReleaseDetail, Releases, Revision, Rollback, Upgrade};
use wharf_executor::deploy::{ClusterLogin, Deployer, ReleaseExit, ReleaseSpec};
use wharf_executor::{LogLine, LogSink, StopReason, StopRequest};
use wharf_kube::deploy::Ctx;
use wharf_kube::release::{self, Release, Status};
use wharf_kube::{Connection, FileAccess};

/// The largest request body (values included).
pub const MAX_BODY: usize = 1024 * 1024;
/// How long a rollback, upgrade or uninstall may take (hooks and rollouts included).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(600);
/// How long reading releases may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Discards progress lines: the answer says how it ended.
struct Quiet;

impl LogSink for Quiet {
    fn line(&self, _line: LogLine) {}
}

fn view(r: &Release) -> ReleaseView {
    ReleaseView {
        name: r.name.clone(),
        namespace: r.namespace.clone(),
        chart: r.chart.name().to_owned(),
        version: r.chart.version().to_owned(),
        app_version: r.chart.app_version().to_owned(),
        revision: r.version,
        status: r.info.status.to_string(),
        updated: r.info.last_deployed.clone(),
        description: r.info.description.clone(),
    }
}

fn revision(r: &Release) -> Revision {
    Revision {
        revision: r.version,
        status: r.info.status.to_string(),
        chart: r.chart.name().to_owned(),
        version: r.chart.version().to_owned(),
        app_version: r.chart.app_version().to_owned(),
        updated: r.info.last_deployed.clone(),
        description: r.info.description.clone(),
    }
}

/// The cluster after [`authz`] allowed `action` on it, and a connection to it.
async fn open(state: &AppState, caller: &Caller, action: Action, name: &str) -> ApiResult<(ClusterLogin, Connection)> {
    let cluster = state.store.cluster(name).await?;
    authz::check(caller, action, &Object::Cluster { name: &cluster.name, project: &cluster.project })?;
    let access = state.store.cluster_access(name).await?;
    let login = ClusterLogin {
        name: access.name.clone(),
        kubeconfig: access.kubeconfig,
        context: Some(access.context).filter(|c| !c.is_empty()),
    };
    let conn = Connection::from_kubeconfig(
        &login.kubeconfig,
        login.context.as_deref(),
        &FileAccess::Refuse,
        &state.forges.policy,
    )
    .map_err(|e| match e {
        wharf_kube::KubeconfigError::Refused { .. } => AppError::Forbidden(format!("cluster `{name}`: {e}")),
        other => AppError::BadGateway(format!("cluster `{name}`: its kubeconfig: {other}")),
    })?;
    Ok((login, conn))
}

fn cluster_failed(e: impl std::fmt::Display) -> AppError {
    AppError::BadGateway(e.to_string())
}

async fn bounded<T>(limit: Duration, what: &str, f: impl Future<Output = ApiResult<T>>) -> ApiResult<T> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| Err(AppError::BadGateway(format!("{what}: no answer within {} s", limit.as_secs()))))
}

fn check_namespace(ns: &str) -> ApiResult<()> {
    let ok = !ns.is_empty()
        && ns.len() <= 63
        && ns.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    if ok { Ok(()) } else { Err(AppError::NotFound(format!("namespace `{ns}`"))) }
}

/// `GET /clusters/{cluster}/releases[?namespace=NS]`
pub async fn list(
    State(state): AppStateRef,
    caller: Caller,
    Path(cluster): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let (_, conn) = open(&state, &caller, Action::ViewCluster, &cluster).await?;
    let namespace = query.get("namespace").filter(|n| !n.is_empty()).cloned();
    if let Some(ns) = &namespace {
        check_namespace(ns)?;
    }
    let ctx = Ctx { cluster: &cluster, conn: &conn, namespace: namespace.as_deref().unwrap_or("(all)") };
    let (releases, unreadable) = bounded(READ_TIMEOUT, &format!("cluster `{cluster}`"), async {
        release::latest_releases(&conn, &ctx, namespace.as_deref()).await.map_err(cluster_failed)
    })
    .await?;
    let items: Vec<ReleaseView> = releases.iter().map(view).collect();
    Ok(axum::Json(Releases { total: items.len(), items, unreadable }).into_response())
}

async fn history(conn: &Connection, ctx: &Ctx<'_>, name: &str) -> ApiResult<Vec<Release>> {
    let what = format!("cluster `{}`", ctx.cluster);
    let revisions =
        bounded(READ_TIMEOUT, &what, async { release::history(conn, ctx, name).await.map_err(cluster_failed) }).await?;
    if revisions.is_empty() {
        return Err(AppError::NotFound(format!("release `{name}` in namespace `{}`", ctx.namespace)));
    }
    Ok(revisions)
}

/// `GET /clusters/{cluster}/namespaces/{ns}/releases/{release}`
pub async fn show(
    State(state): AppStateRef,
    caller: Caller,
    Path((cluster, ns, name)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let (_, conn) = open(&state, &caller, Action::ViewCluster, &cluster).await?;
    check_namespace(&ns)?;
    let ctx = Ctx { cluster: &cluster, conn: &conn, namespace: &ns };
    let revisions = history(&conn, &ctx, &name).await?;
    let source = release::source(&conn, &ctx, &name).await.map_err(cluster_failed)?;
    let latest = revisions.last().expect("history is not empty");
    let detail = ReleaseDetail {
        release: view(latest),
        values: latest.config.clone(),
        notes: latest.info.notes.clone(),
        source,
        history: revisions.iter().map(revision).collect(),
    };
    Ok(axum::Json(detail).into_response())
}

/// A stop signal that fires [`OPERATION_TIMEOUT`] from now.
fn deadline() -> (tokio::task::JoinHandle<()>, wharf_executor::StopSignal) {
    let (tx, rx) = tokio::sync::watch::channel::<Option<StopRequest>>(None);
    let timer = tokio::spawn(async move {
        tokio::time::sleep(OPERATION_TIMEOUT).await;
        let _ = tx.send(Some(StopRequest { reason: StopReason::TimedOut, grace: Duration::ZERO }));
        // Kept open until the operation ends (the handle is aborted then).
        std::future::pending::<()>().await;
    });
    (timer, rx)
}

fn refuse_pending(name: &str, revisions: &[Release]) -> ApiResult<()> {
    match revisions.last() {
        Some(r) if r.info.status.is_pending() => Err(AppError::Conflict(format!(
            "release `{name}`: another operation is in progress (revision {} is {})",
            r.version, r.info.status
        ))),
        _ => Ok(()),
    }
}

fn operation(out: release::ReleaseOutcome) -> ApiResult<Response> {
    if let Some(reason) = out.stopped {
        return Err(AppError::BadGateway(format!(
            "release `{}` revision {}: {reason} after {} s; marked failed",
            out.release.name,
            out.release.version,
            OPERATION_TIMEOUT.as_secs()
        )));
    }
    Ok(axum::Json(Operation {
        release: out.release.name.clone(),
        namespace: out.release.namespace.clone(),
        revision: out.release.version,
        status: out.release.info.status.to_string(),
        objects: out.applied.iter().map(|a| a.to_string()).collect(),
        notes: out.release.info.notes,
    })
    .into_response())
}

/// `POST /clusters/{cluster}/namespaces/{ns}/releases/{release}/rollback`
pub async fn rollback(
    State(state): AppStateRef,
    caller: Caller,
    Path((cluster, ns, name)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let request: Rollback = json_body(&body)?;
    let (_, conn) = open(&state, &caller, Action::ManageReleases, &cluster).await?;
    check_namespace(&ns)?;
    let ctx = Ctx { cluster: &cluster, conn: &conn, namespace: &ns };
    let revisions = history(&conn, &ctx, &name).await?;
    refuse_pending(&name, &revisions)?;
    if !revisions.iter().any(|r| r.version == request.revision) {
        let have: Vec<String> = revisions.iter().map(|r| r.version.to_string()).collect();
        return Err(AppError::invalid(
            "no such revision",
            "revision",
            format!("release `{name}` has no revision {} (it has {})", request.revision, have.join(", ")),
        ));
    }
    let (timer, mut stop) = deadline();
    let out = release::rollback(&conn, &ctx, &name, request.revision, &Quiet, &mut stop).await;
    timer.abort();
    let out = out.map_err(cluster_failed)?;
    tracing::info!(cluster = %cluster, namespace = %ns, release = %name, to = request.revision,
        revision = out.release.version, by = %caller.name, "release rolled back");
    operation(out)
}

/// `DELETE /clusters/{cluster}/namespaces/{ns}/releases/{release}`
pub async fn uninstall(
    State(state): AppStateRef,
    caller: Caller,
    Path((cluster, ns, name)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let (_, conn) = open(&state, &caller, Action::ManageReleases, &cluster).await?;
    check_namespace(&ns)?;
    let ctx = Ctx { cluster: &cluster, conn: &conn, namespace: &ns };
    let revisions = history(&conn, &ctx, &name).await?;
    refuse_pending(&name, &revisions)?;
    let (timer, mut stop) = deadline();
    let out = release::uninstall(&conn, &ctx, &name, &Quiet, &mut stop).await;
    timer.abort();
    let out = out.map_err(cluster_failed)?;
    tracing::info!(cluster = %cluster, namespace = %ns, release = %name, by = %caller.name, "release uninstalled");
    operation(out)
}

/// `registry/workspace/chart` → its three parts.
fn split_source(source: &str) -> Option<(String, String, String)> {
    let mut parts = source.splitn(3, '/');
    let (r, w, c) = (parts.next()?, parts.next()?, parts.next()?);
    (!r.is_empty() && !w.is_empty() && !c.is_empty()).then(|| (r.to_owned(), w.to_owned(), c.to_owned()))
}

/// `POST /clusters/{cluster}/namespaces/{ns}/releases/{release}/upgrade`
pub async fn upgrade(
    State(state): AppStateRef,
    caller: Caller,
    Path((cluster, ns, name)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let request: Upgrade = json_body(&body)?;
    if request.version.trim().is_empty() {
        return Err(AppError::invalid("the upgrade is not valid", "version", "give the chart version to upgrade to"));
    }
    let (login, conn) = open(&state, &caller, Action::ManageReleases, &cluster).await?;
    check_namespace(&ns)?;
    let ctx = Ctx { cluster: &cluster, conn: &conn, namespace: &ns };
    let revisions = history(&conn, &ctx, &name).await?;
    refuse_pending(&name, &revisions)?;
    let latest = revisions.last().expect("history is not empty");
    let remembered = release::source(&conn, &ctx, &name).await.map_err(cluster_failed)?;
    let remembered = remembered.as_deref().and_then(split_source);
    let chart = remembered.as_ref().map_or_else(|| latest.chart.name().to_owned(), |(_, _, c)| c.clone());
    let registry = request
        .registry
        .clone()
        .or_else(|| remembered.as_ref().map(|(r, _, _)| r.clone()))
        .or_else(|| state.config.default_registry.clone());
    let workspace = request.workspace.clone().or_else(|| remembered.as_ref().map(|(_, w, _)| w.clone()));
    let (Some(registry), Some(workspace)) = (registry, workspace) else {
        return Err(AppError::invalid(
            "where to pull the chart from is not known",
            "workspace",
            format!(
                "release `{name}` was not deployed by Wharf, so it does not say which registry and workspace its \
                 chart `{chart}` comes from: give `registry` and `workspace`"
            ),
        ));
    };
    let stored = state.store.registry(&registry).await.map_err(|e| match e {
        wharf_store::StoreError::NotFound(_) => {
            AppError::invalid("unknown registry", "registry", format!("`{registry}` is not a registered registry"))
        }
        other => other.into(),
    })?;
    if !stored.workspaces.contains(&workspace) {
        return Err(AppError::invalid(
            "unknown workspace",
            "workspace",
            format!("`{workspace}` is not a workspace of registry `{registry}`"),
        ));
    }
    let registry_login = wharf_executor::build::RegistryLogin {
        name: stored.name.clone(),
        host: stored.host.clone(),
        username: stored.username.clone(),
        password: stored.password.clone(),
        insecure: stored.insecure,
    };
    let charts = wharf_image::OciCharts::new(state.forges.policy.clone());
    let pulled = wharf_executor::chart::ChartRegistry::pull(
        &charts,
        registry_login,
        format!("{workspace}/{chart}"),
        request.version.clone(),
    )
    .await
    .map_err(|e| match e {
        wharf_executor::chart::ChartRegistryError::NotFound(m) => {
            AppError::invalid("the chart version is not in the registry", "version", m)
        }
        other => AppError::BadGateway(format!("registry `{registry}`: {other}")),
    })?;
    let spec = ReleaseSpec {
        run: String::new(),
        stage: String::new(),
        task: String::new(),
        cluster: login,
        namespace: ns.clone(),
        release: name.clone(),
        chart: pulled.archive,
        source: format!("{registry}/{workspace}/{chart}"),
        values: request.values.clone().unwrap_or_else(|| latest.config.clone()),
    };
    let deployer = wharf_kube::deploy::KubeDeployer::new(state.forges.policy.clone());
    let (timer, stop) = deadline();
    let exit = deployer.release(spec, Arc::new(Quiet), stop).await;
    timer.abort();
    let exit = exit.map_err(|e| {
        if e.0.contains("does not render") {
            AppError::invalid("the chart does not render", "values", e.0)
        } else {
            cluster_failed(e)
        }
    })?;
    let done = match exit {
        ReleaseExit::Released(done) => done,
        ReleaseExit::Stopped(reason) => {
            return Err(AppError::BadGateway(format!(
                "release `{name}`: {reason} after {} s; marked failed",
                OPERATION_TIMEOUT.as_secs()
            )));
        }
    };
    tracing::info!(cluster = %cluster, namespace = %ns, release = %name, version = %request.version,
        revision = done.revision, by = %caller.name, "release upgraded");
    let status = if done.status.is_empty() { Status::Unknown.to_string() } else { done.status };
    Ok(axum::Json(Operation {
        release: name,
        namespace: ns,
        revision: done.revision,
        status,
        objects: done.applied.iter().map(|a| a.to_string()).collect(),
        notes: done.notes,
    })
    .into_response())
}
