//! `/api/v1/clusters`: Kubernetes clusters a project's pipelines deploy to (seed 002 §2.4
//! "集群配置"). The kubeconfig goes in and never out: it is sealed at rest
//! ([`wharf_store::clusters`]), answers carry what was learnt from it and from the
//! cluster, and no log line holds it.
//!
//! - `POST /clusters[?verify=false]` `{name, kubeconfig, context?, project?}` (project
//!   `admin` by default; `AddCluster` there): the kubeconfig is read by
//!   [`wharf_kube::Connection::from_kubeconfig`] (files refused: they would be the
//!   server's own; exec and auth-provider plugins refused: the server runs no program a
//!   user names) — a bad one is `422` saying what and where. Unless `?verify=false`, the
//!   cluster is checked (version, namespaces listable, nodes) and the pipeline namespace
//!   `ecp-devops-<short id>` is applied with Wharf's labels; unreachable is `502`,
//!   credentials refused or forbidden `422`, each in the API server's words.
//! - Every connection goes through the server's outbound policy: an API server at an
//!   internal address is `403` unless an admin's `outbound_allow` names it.
//! - `GET /clusters` (the clusters the caller may view, `?project=` to narrow) answers
//!   the stored health. `GET /clusters/{name}` checks again when the last check is older
//!   than [`RECHECK_AFTER`] (or there was none), waiting at most [`SHOW_CHECK_TIMEOUT`];
//!   `POST /clusters/{name}/check` checks now and applies the pipeline namespace again
//!   (what a cluster registered with `?verify=false` needs once it is reachable). Showing
//!   starts one check per cluster at a time: a caller arriving during one gets the
//!   stored state.
//! - Settings ([`ClusterSettingsView`]): the kubernetes executor's pod defaults
//!   (`resources`, `node_selector`, `tolerations`, `service_account`), `pending_limit` and
//!   `workspace` (`mode` `host-path` or `claim`, `storage_class`, `size`), given as
//!   `settings` at registration and changed with `PATCH /clusters/{name}` (a JSON merge
//!   patch of them: the fields given replace, `null` clears); checked with the rules the
//!   pipeline's own pod settings follow, every problem a `422` detail at its field.
//!   Changing them is for whoever may add clusters to the project.
//! - `DELETE /clusters/{name}`: `204`, or `409` ([`ClusterInUse`]) naming the pipelines
//!   of its project whose latest version has a task (`deploy-yaml`, `chart-deploy`,
//!   `canary`) naming it. Nothing in the cluster is deleted.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::{AppStateRef, created, json_body};
use crate::AppState;
use crate::authz::{self, Action, Caller, Object};
use crate::error::{ApiResult, AppError, Detail};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use wharf_api::clusters::{
    Cluster as ClusterView, ClusterInUse, ClusterSettings as ClusterSettingsView, ClusterWorkspace, Clusters,
    Health as HealthView, NewCluster, Nodes, PodQuantities, PodResources, PodToleration,
};
use wharf_core::model::TaskKind;
use wharf_core::names::PipelineName;
use wharf_core::pod::{
    ClusterSettings, PodSettings, Quantities, Resources, Toleration, WorkspaceMode, WorkspaceSettings,
};
use wharf_kube::{ClusterError, Connection, FileAccess, KubeconfigError, NamespaceError, Permission};
use wharf_store::clusters::{Check, Cluster, Health, NewCluster as StoreCluster};

/// The largest `POST /clusters` body (a kubeconfig with a few certificates is a few KiB).
pub const MAX_BODY: usize = 1024 * 1024;

/// `GET /clusters/{name}` checks again when the stored check is older than this.
pub const RECHECK_AFTER: Duration = Duration::from_secs(30);

/// How long `GET /clusters/{name}` waits for that check; no answer by then is recorded
/// as unreachable.
pub const SHOW_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest `PATCH /clusters/{name}` body.
pub const MAX_SETTINGS_BODY: usize = 64 * 1024;

/// The label Wharf puts on a cluster's pipeline namespace (with the short id), beside
/// `app.kubernetes.io/managed-by: wharf`.
pub const CLUSTER_LABEL: &str = "wharf.cluster";

fn view(c: Cluster) -> ClusterView {
    ClusterView {
        id: c.id,
        namespace: wharf_kube::pipeline_namespace(&c.short_id),
        name: c.name,
        project: c.project,
        server: c.server,
        context: c.context,
        version: c.check.version,
        nodes: c.check.nodes.map(|(ready, total)| Nodes { ready, total }),
        health: HealthView {
            status: c.check.health.as_str().to_owned(),
            error: c.check.error,
            checked_at: c.check.checked_at,
        },
        settings: settings_view(&c.settings),
        created_by: c.created_by,
        created_at: c.created_at,
    }
}

/// The stored settings as answered.
fn settings_view(s: &ClusterSettings) -> ClusterSettingsView {
    let quantities = |q: &Quantities| PodQuantities { cpu: q.cpu.clone(), memory: q.memory.clone() };
    ClusterSettingsView {
        resources: PodResources {
            requests: quantities(&s.pod.resources.requests),
            limits: quantities(&s.pod.resources.limits),
        },
        node_selector: s.pod.node_selector.clone(),
        tolerations: s
            .pod
            .tolerations
            .iter()
            .map(|t| PodToleration {
                key: t.key.clone(),
                operator: t.operator.clone(),
                value: t.value.clone(),
                effect: t.effect.clone(),
            })
            .collect(),
        service_account: s.pod.service_account.clone(),
        pending_limit: s.pending_limit.map(|d| d.to_string()),
        workspace: ClusterWorkspace {
            mode: s.workspace.mode.as_str().to_owned(),
            storage_class: s.workspace.storage_class.clone(),
            size: s.workspace.size.clone(),
        },
    }
}

/// The settings as given, checked: every problem as a detail at `prefix` + its field.
fn settings_of(v: ClusterSettingsView, prefix: &str) -> Result<ClusterSettings, Vec<Detail>> {
    let mut problems = Vec::new();
    let quantities = |q: PodQuantities| Quantities { cpu: q.cpu, memory: q.memory };
    let mode = WorkspaceMode::parse(&v.workspace.mode).unwrap_or_else(|| {
        problems.push(Detail::at(
            format!("{prefix}workspace.mode"),
            format!("`{}` is not a workspace mode: `host-path` or `claim`", v.workspace.mode.escape_debug()),
        ));
        WorkspaceMode::HostPath
    });
    let pending_limit = match v.pending_limit.as_deref().map(wharf_core::duration::Duration::parse) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            problems.push(Detail::at(format!("{prefix}pending_limit"), e.to_string()));
            None
        }
    };
    let settings = ClusterSettings {
        pod: PodSettings {
            resources: Resources { requests: quantities(v.resources.requests), limits: quantities(v.resources.limits) },
            node_selector: v.node_selector,
            tolerations: v
                .tolerations
                .into_iter()
                .map(|t| Toleration { key: t.key, operator: t.operator, value: t.value, effect: t.effect })
                .collect(),
            service_account: v.service_account,
        },
        pending_limit,
        workspace: WorkspaceSettings { mode, storage_class: v.workspace.storage_class, size: v.workspace.size },
    };
    problems.extend(settings.problems().into_iter().map(|(path, why)| Detail::at(format!("{prefix}{path}"), why)));
    if problems.is_empty() { Ok(settings) } else { Err(problems) }
}

/// RFC 7386: `patch` merged into `target` (objects field by field, `null` removes, any
/// other value replaces).
fn merge_patch(target: &mut serde_json::Value, patch: serde_json::Value) {
    let serde_json::Value::Object(fields) = patch else {
        *target = patch;
        return;
    };
    if !target.is_object() {
        *target = serde_json::Value::Object(Default::default());
    }
    let object = target.as_object_mut().expect("made an object above");
    for (key, value) in fields {
        if value.is_null() {
            object.remove(&key);
        } else {
            merge_patch(object.entry(key).or_insert(serde_json::Value::Null), value);
        }
    }
}

fn object(c: &Cluster) -> Object<'_> {
    Object::Cluster { name: &c.name, project: &c.project }
}

/// A kubeconfig the server cannot use: `422` on `kubeconfig` (or `context`); an internal
/// server address the outbound policy refuses: `403`.
fn kubeconfig_error(e: KubeconfigError) -> AppError {
    match e {
        KubeconfigError::Refused { .. } => AppError::Forbidden(e.to_string()),
        KubeconfigError::NoContext | KubeconfigError::UnknownContext { .. } => {
            AppError::invalid("the kubeconfig cannot be used", "context", e.to_string())
        }
        other => AppError::invalid("the kubeconfig cannot be used", "kubeconfig", other.to_string()),
    }
}

/// A failed check at registration: unreachable or an unexpected answer `502`; the
/// credentials refused, forbidden or a certificate that does not match `422`; the
/// outbound policy `403`. Always with the API server's (or TLS stack's) words.
fn registration_error(name: &str, e: ClusterError) -> AppError {
    let message = format!("cluster `{name}`: {e}");
    match e {
        ClusterError::Unauthorized { .. } => {
            AppError::invalid("the cluster refused the kubeconfig's credentials", "kubeconfig", message)
        }
        ClusterError::Forbidden { .. } => {
            AppError::invalid("the kubeconfig's credentials may not do what Wharf needs", "kubeconfig", message)
        }
        ClusterError::Tls { .. } => {
            AppError::invalid("the cluster's certificate does not match the kubeconfig", "kubeconfig", message)
        }
        ClusterError::Refused { .. } => AppError::Forbidden(message),
        _ => {
            tracing::warn!(cluster = %name, error = %e, "cluster check failed");
            AppError::BadGateway(message)
        }
    }
}

/// What a failed check is stored as.
fn failed_check(e: &ClusterError) -> Check {
    let health = match e {
        ClusterError::Unreachable { .. } => Health::Unreachable,
        ClusterError::Unauthorized { .. } => Health::Unauthorized,
        ClusterError::Forbidden { .. } => Health::Forbidden,
        ClusterError::Refused { .. } => Health::Refused,
        _ => Health::Error,
    };
    Check { health, error: Some(e.to_string()), checked_at: Some(wharf_store::now_ms()), version: None, nodes: None }
}

/// Checks the cluster: healthy only when the version answers and namespaces may be
/// listed (nodes are shown when they may be listed too).
async fn check(conn: &Connection) -> Result<Check, ClusterError> {
    let info = wharf_kube::check(conn).await?;
    let nodes = match info.nodes {
        Permission::Allowed(n) => Some((n.ready as u32, n.total as u32)),
        Permission::Forbidden(_) => None,
    };
    let now = Some(wharf_store::now_ms());
    Ok(match info.namespaces {
        Permission::Allowed(()) => {
            Check { health: Health::Healthy, error: None, checked_at: now, version: Some(info.version), nodes }
        }
        Permission::Forbidden(message) => Check {
            health: Health::Forbidden,
            error: Some(message),
            checked_at: now,
            version: Some(info.version),
            nodes,
        },
    })
}

/// Applies the cluster's pipeline namespace with Wharf's labels.
async fn ensure_namespace(conn: &Connection, short_id: &str) -> Result<(), ClusterError> {
    let labels = BTreeMap::from([(CLUSTER_LABEL.to_owned(), short_id.to_owned())]);
    match wharf_kube::ensure_namespace(conn, &wharf_kube::pipeline_namespace(short_id), &labels).await {
        Ok(_) => Ok(()),
        Err(NamespaceError::Cluster(e)) => Err(e),
        // The short id is 8 hex digits, always a DNS label.
        Err(e) => Err(ClusterError::Other {
            server: conn.server().to_owned(),
            verb: "patch",
            resource: "namespaces".into(),
            reason: e.to_string(),
        }),
    }
}

fn connect(state: &AppState, kubeconfig: &str, context: Option<&str>) -> Result<Connection, KubeconfigError> {
    Connection::from_kubeconfig(kubeconfig, context, &FileAccess::Refuse, &state.forges.policy)
}

/// `POST /clusters[?verify=false]`: `201` with the cluster (see the module docs).
pub async fn create(
    State(state): AppStateRef,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Response> {
    let request: NewCluster = json_body(&body)?;
    let project = request.project.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| authz::ADMIN_PROJECT.into());
    authz::check(&caller, Action::AddCluster, &Object::Cluster { name: &request.name, project: &project })?;
    let mut problems = Vec::new();
    if let Err(e) = PipelineName::new(request.name.clone()) {
        problems.push(Detail::at("name", format!("`{}` is not a valid cluster name: {}", e.value, PipelineName::RULE)));
    }
    if request.kubeconfig.trim().is_empty() {
        problems.push(Detail::at("kubeconfig", "give the kubeconfig file's text (YAML) as `kubeconfig`"));
    }
    let context = request.context.as_deref().filter(|c| !c.is_empty());
    if context.is_some_and(|c| c.len() > 253 || c.chars().any(char::is_control)) {
        problems.push(Detail::at("context", "at most 253 characters, without control characters"));
    }
    let settings = match request.settings.map(|s| settings_of(s, "settings.")).transpose() {
        Ok(settings) => settings.unwrap_or_default(),
        Err(details) => {
            problems.extend(details);
            ClusterSettings::default()
        }
    };
    if !problems.is_empty() {
        return Err(AppError::Invalid { message: "the cluster is not valid".into(), details: problems });
    }
    if !state.store.project_exists(&project).await? {
        return Err(AppError::NotFound(format!("project `{project}`")));
    }
    if state.store.cluster(&request.name).await.is_ok() {
        return Err(AppError::Conflict(format!("a cluster named `{}` already exists", request.name)));
    }
    let conn = connect(&state, &request.kubeconfig, context).map_err(kubeconfig_error)?;
    let short_id = state.store.unused_cluster_short_id().await?;
    let outcome = if query.get("verify").map(String::as_str) == Some("false") {
        Check::unchecked()
    } else {
        let outcome = check(&conn).await.map_err(|e| registration_error(&request.name, e))?;
        if let (Health::Forbidden, Some(why)) = (outcome.health, &outcome.error) {
            return Err(AppError::invalid(
                "the kubeconfig's credentials may not list namespaces",
                "kubeconfig",
                format!("cluster `{}`: {why}", request.name),
            ));
        }
        ensure_namespace(&conn, &short_id).await.map_err(|e| registration_error(&request.name, e))?;
        outcome
    };
    let new = StoreCluster {
        name: request.name,
        project,
        server: conn.server().to_owned(),
        context: conn.context().to_owned(),
        kubeconfig: request.kubeconfig,
        short_id,
        check: outcome,
        settings,
        created_by: caller.name.clone(),
    };
    let cluster = state.store.create_cluster(&new).await?;
    tracing::info!(cluster = %cluster.name, project = %cluster.project, server = %cluster.server,
        health = cluster.check.health.as_str(), "cluster registered");
    Ok(created(view(cluster)))
}

/// `GET /clusters[?project=P]`: the clusters the caller may view, by name, with their
/// stored health.
pub async fn list(
    State(state): AppStateRef,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let project = query.get("project");
    let items: Vec<ClusterView> = state
        .store
        .clusters()
        .await?
        .into_iter()
        .filter(|c| project.is_none_or(|p| *p == c.project))
        .filter(|c| authz::check(&caller, Action::ViewCluster, &object(c)).is_ok())
        .map(view)
        .collect();
    Ok(axum::Json(Clusters { total: items.len(), items }).into_response())
}

/// The cluster `name`, after [`authz`] allowed `action` on it.
async fn find(state: &AppState, caller: &Caller, action: Action, name: &str) -> ApiResult<Cluster> {
    let cluster = state.store.cluster(name).await?;
    authz::check(caller, action, &object(&cluster))?;
    Ok(cluster)
}

/// Marks a cluster as being checked until dropped.
struct Checking<'a> {
    state: &'a AppState,
    id: i64,
}

impl<'a> Checking<'a> {
    /// `None` when the cluster is being checked already.
    fn start(state: &'a AppState, id: i64) -> Option<Self> {
        let inserted = state.cluster_checks.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
        // Made only when inserted: dropping one removes the id.
        inserted.then(|| Checking { state, id })
    }
}

impl Drop for Checking<'_> {
    fn drop(&mut self) {
        self.state.cluster_checks.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

/// Checks `cluster` with its stored kubeconfig and stores the outcome; with
/// `namespace`, applies the pipeline namespace too once the check passed.
async fn recheck(state: &AppState, cluster: &Cluster, limit: Duration, namespace: bool) -> ApiResult<Cluster> {
    let access = state.store.cluster_access(&cluster.name).await?;
    let outcome = match connect(state, &access.kubeconfig, Some(&access.context)) {
        Err(e) => {
            let health = if matches!(e, KubeconfigError::Refused { .. }) { Health::Refused } else { Health::Error };
            Check {
                health,
                error: Some(e.to_string()),
                checked_at: Some(wharf_store::now_ms()),
                version: None,
                nodes: None,
            }
        }
        Ok(conn) => {
            let checked = async {
                let outcome = check(&conn).await?;
                if namespace && outcome.health == Health::Healthy {
                    ensure_namespace(&conn, &access.short_id).await?;
                }
                Ok::<_, ClusterError>(outcome)
            };
            match tokio::time::timeout(limit, checked).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(e)) => failed_check(&e),
                Err(_) => failed_check(&ClusterError::Unreachable {
                    server: conn.server().to_owned(),
                    reason: format!("no answer within {} s", limit.as_secs()),
                }),
            }
        }
    };
    Ok(state.store.record_cluster_check(&cluster.name, &outcome).await?)
}

/// `GET /clusters/{name}`: checked again first when the last check is older than
/// [`RECHECK_AFTER`] or there was none.
pub async fn show(State(state): AppStateRef, caller: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    let mut cluster = find(&state, &caller, Action::ViewCluster, &name).await?;
    let stale = cluster
        .check
        .checked_at
        .is_none_or(|at| wharf_store::now_ms().saturating_sub(at) > RECHECK_AFTER.as_millis() as i64);
    if stale {
        // Being checked by another caller already: answered as stored.
        if let Some(_checking) = Checking::start(&state, cluster.id) {
            cluster = recheck(&state, &cluster, SHOW_CHECK_TIMEOUT, false).await?;
        }
    }
    Ok(axum::Json(view(cluster)).into_response())
}

/// `POST /clusters/{name}/check`: checks now (waiting at most
/// [`wharf_kube::CHECK_TIMEOUT`]) and, when healthy, applies the pipeline namespace;
/// `200` with the cluster and the outcome in its `health`.
pub async fn check_now(State(state): AppStateRef, caller: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    // Checking changes only what is stored about the cluster: a viewer may ask for it.
    let cluster = find(&state, &caller, Action::ViewCluster, &name).await?;
    let cluster = recheck(&state, &cluster, wharf_kube::CHECK_TIMEOUT, true).await?;
    Ok(axum::Json(view(cluster)).into_response())
}

/// `PATCH /clusters/{name}`: a JSON merge patch of the cluster's settings (see the module
/// docs); `200` with the cluster, `422` with every problem at its field.
pub async fn update(
    State(state): AppStateRef,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let cluster = find(&state, &caller, Action::ViewCluster, &name).await?;
    // Who may add a cluster to the project may change how pods run on it.
    authz::check(&caller, Action::AddCluster, &object(&cluster))?;
    let patch: serde_json::Value = serde_json::from_slice(&body).map_err(|e| AppError::Invalid {
        message: "the request body is not valid".into(),
        details: vec![Detail::of_json(&e)],
    })?;
    if !patch.is_object() {
        return Err(AppError::invalid(
            "the request body is not valid",
            "",
            "give a JSON object of the settings to change (`{\"pending_limit\": \"5m\"}`)",
        ));
    }
    let mut merged = serde_json::to_value(settings_view(&cluster.settings)).expect("settings serialize");
    merge_patch(&mut merged, patch);
    let given: ClusterSettingsView = serde_json::from_value(merged)
        .map_err(|e| AppError::invalid("the cluster settings are not valid", "", e.to_string()))?;
    let settings = settings_of(given, "")
        .map_err(|details| AppError::Invalid { message: "the cluster settings are not valid".into(), details })?;
    let cluster = state.store.set_cluster_settings(&cluster.name, &settings).await?;
    tracing::info!(cluster = %cluster.name, by = %caller.name, "cluster settings changed");
    Ok(axum::Json(view(cluster)).into_response())
}

/// The names of the pipelines of `cluster`'s project whose latest version has a task
/// naming it (`deploy-yaml`, `chart-deploy`, `canary`).
pub async fn users(state: &AppState, cluster: &Cluster) -> ApiResult<Vec<String>> {
    let (rows, _) = state.store.pipelines(i64::MAX, 0).await?;
    let mut users = Vec::new();
    for (row, _) in rows.into_iter().filter(|(row, _)| row.project == cluster.project) {
        let model = state.runs.pipeline_version(row.id, row.version).await?;
        let uses = model.all_stages().flat_map(|s| &s.tasks).any(|t| match &t.kind {
            TaskKind::DeployYaml(task) => task.cluster == cluster.name,
            TaskKind::ChartDeploy(task) => task.cluster == cluster.name,
            TaskKind::Canary(task) => task.cluster == cluster.name,
            _ => false,
        });
        if uses {
            users.push(row.name);
        }
    }
    Ok(users)
}

/// `DELETE /clusters/{name}`: `204`; `409` ([`ClusterInUse`]) naming the pipelines that
/// deploy to it. Nothing in the cluster is deleted (the pipeline namespace stays).
pub async fn delete(State(state): AppStateRef, caller: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    let cluster = find(&state, &caller, Action::RemoveCluster, &name).await?;
    let users = users(&state, &cluster).await?;
    if !users.is_empty() {
        let list: Vec<String> = users.iter().map(|n| format!("`{n}`")).collect();
        let message = format!(
            "cluster `{name}` is used by pipeline(s) {} of project `{}`; change their tasks' `cluster:` (or delete \
             them) first",
            list.join(", "),
            cluster.project
        );
        let body =
            ClusterInUse { error: wharf_api::ErrorInfo { status: 409, message, details: vec![] }, pipelines: users };
        return Ok((StatusCode::CONFLICT, axum::Json(body)).into_response());
    }
    state.store.delete_cluster(&cluster.name).await?;
    tracing::info!(cluster = %cluster.name, project = %cluster.project, "cluster removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}
