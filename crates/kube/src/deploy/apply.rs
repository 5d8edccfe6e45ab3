//! From checked objects to applied ones: discovery, the namespace rule, the order, and
//! server-side apply (a dry run that reports what other managers own, then `force`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::Value;
use wharf_executor::deploy::{Applied, DeployError};
use wharf_executor::{LogLine, LogSink, StopSignal};

use super::fail::Ctx;
use super::manifests::Manifest;
use super::rollout::{Workload, WorkloadKind};
use crate::{Connection, FIELD_MANAGER};

/// How long a CRD applied by this file may take to be served before its objects are applied.
const CRD_ESTABLISH: Duration = Duration::from_secs(60);

/// Where an object goes on the cluster.
#[derive(Clone, Debug)]
struct Target {
    resource: ApiResource,
    namespaced: bool,
    /// Defined by a CRD in this same file and not yet served by the cluster.
    pending: bool,
}

#[derive(Debug)]
struct Item {
    manifest: Manifest,
    target: Target,
    /// The object as applied: `metadata.namespace` set for namespaced kinds, removed for
    /// cluster-scoped ones.
    body: Value,
    namespace: Option<String>,
}

impl Item {
    /// `Deployment games/web`, `Namespace games`
    fn object(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.manifest.kind, self.manifest.name),
            None => format!("{} {}", self.manifest.kind, self.manifest.name),
        }
    }

    fn is_namespace(&self) -> bool {
        self.manifest.kind == "Namespace" && self.manifest.api_version == "v1"
    }

    fn is_crd(&self) -> bool {
        self.manifest.kind == "CustomResourceDefinition" && self.manifest.group_version().0 == "apiextensions.k8s.io"
    }
}

/// Every object resolved and checked, in apply order.
#[derive(Debug)]
pub struct Plan {
    items: Vec<Item>,
}

/// What discovery found for one group version: kind → (plural, namespaced).
type Kinds = BTreeMap<String, (String, bool)>;

async fn discover(conn: &Connection, ctx: &Ctx<'_>, group: &str, version: &str) -> Result<Kinds, DeployError> {
    let client = conn.client();
    let list = if group.is_empty() {
        client.list_core_api_resources(version).await
    } else {
        client.list_api_group_resources(&format!("{group}/{version}")).await
    };
    let gv = if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
    let list = match list {
        Ok(list) => list,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Kinds::new()),
        Err(e) => return Err(ctx.api("discover", &format!("the API group version {gv}"), e)),
    };
    Ok(list.resources.into_iter().filter(|r| !r.name.contains('/')).map(|r| (r.kind, (r.name, r.namespaced))).collect())
}

/// Another version of `group` that serves `kind` (`networking.k8s.io/v1` for an Ingress
/// written as `v1beta1`), asked only when a kind is not found.
async fn served_elsewhere(
    conn: &Connection,
    ctx: &Ctx<'_>,
    group: &str,
    version: &str,
    kind: &str,
) -> Result<Option<String>, DeployError> {
    if group.is_empty() {
        return Ok(None);
    }
    let groups = conn.client().list_api_groups().await.map_err(|e| ctx.api("discover", "the API groups", e))?;
    let Some(g) = groups.groups.into_iter().find(|g| g.name == group) else { return Ok(None) };
    for v in g.versions.iter().filter(|v| v.version != version) {
        if discover(conn, ctx, group, &v.version).await?.contains_key(kind) {
            return Ok(Some(v.group_version.clone()));
        }
    }
    Ok(None)
}

/// A CRD document's `(group, versions, kind, plural, namespaced)`.
fn crd_defines(m: &Manifest) -> Option<(String, Vec<String>, String, String, bool)> {
    let spec = m.object.get("spec")?;
    let group = spec.get("group")?.as_str()?.to_owned();
    let names = spec.get("names")?;
    let kind = names.get("kind")?.as_str()?.to_owned();
    let plural = names.get("plural")?.as_str()?.to_owned();
    let versions = spec.get("versions")?.as_array()?.iter().filter_map(|v| v.get("name")?.as_str().map(str::to_owned));
    let namespaced = spec.get("scope").and_then(Value::as_str) != Some("Cluster");
    Some((group, versions.collect(), kind, plural, namespaced))
}

fn api_resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.to_owned(),
        version: version.to_owned(),
        api_version: if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") },
        kind: kind.to_owned(),
        plural: plural.to_owned(),
    }
}

/// Resolves every object against the cluster and checks the namespace rule; nothing is
/// written. One discovery request per API group version the file uses.
pub async fn plan(conn: &Connection, ctx: &Ctx<'_>, file: &str, objects: Vec<Manifest>) -> Result<Plan, DeployError> {
    let mut seen = BTreeMap::new();
    for m in &objects {
        let key = (m.group_version().0.to_owned(), m.kind.clone(), m.namespace.clone(), m.name.clone());
        if let Some(first) = seen.insert(key, m.describe()) {
            return Err(DeployError(format!("{file}: {} is the same object as {first}", m.describe())));
        }
    }
    let gvs: BTreeSet<(String, String)> =
        objects.iter().map(|m| (m.group_version().0.to_owned(), m.group_version().1.to_owned())).collect();
    let mut found: BTreeMap<(String, String), Kinds> = BTreeMap::new();
    for (g, v) in gvs {
        let kinds = discover(conn, ctx, &g, &v).await?;
        found.insert((g, v), kinds);
    }
    let crds: Vec<_> =
        objects.iter().filter(|m| m.kind == "CustomResourceDefinition").filter_map(crd_defines).collect();
    let mut items = Vec::with_capacity(objects.len());
    for m in objects {
        let (group, version) = (m.group_version().0.to_owned(), m.group_version().1.to_owned());
        let served = found.get(&(group.clone(), version.clone())).and_then(|k| k.get(&m.kind));
        let target = match served {
            Some((plural, namespaced)) => Target {
                resource: api_resource(&group, &version, &m.kind, plural),
                namespaced: *namespaced,
                pending: false,
            },
            None => match crds.iter().find(|(g, vs, k, _, _)| *g == group && *k == m.kind && vs.contains(&version)) {
                Some((_, _, _, plural, namespaced)) => Target {
                    resource: api_resource(&group, &version, &m.kind, plural),
                    namespaced: *namespaced,
                    pending: true,
                },
                None => {
                    if let Some(other) = served_elsewhere(conn, ctx, &group, &version, &m.kind).await? {
                        return Err(DeployError(format!(
                            "{file}: {}: cluster `{}` serves `{}` in `{other}`, not in `{}` (an API version newer \
                             Kubernetes removed?): change the document's apiVersion",
                            m.describe(),
                            ctx.cluster,
                            m.kind,
                            m.api_version
                        )));
                    }
                    return Err(DeployError(format!(
                        "{file}: {}: cluster `{}` does not know the kind `{}` in `{}`: install its CRD first",
                        m.describe(),
                        ctx.cluster,
                        m.kind,
                        m.api_version
                    )));
                }
            },
        };
        let mut body = m.object.clone();
        let namespace = if target.namespaced {
            match &m.namespace {
                Some(ns) if ns != ctx.namespace => {
                    return Err(DeployError(format!(
                        "{file}: {} names namespace `{ns}`; this task deploys to `{}`: set the task's namespace or \
                         split the file",
                        m.describe(),
                        ctx.namespace
                    )));
                }
                _ => {
                    body["metadata"]["namespace"] = Value::String(ctx.namespace.to_owned());
                    Some(ctx.namespace.to_owned())
                }
            }
        } else {
            if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("namespace");
            }
            None
        };
        items.push(Item { manifest: m, target, body, namespace });
    }
    let namespaced = items.iter().any(|i| i.namespace.is_some());
    let in_file = items.iter().any(|i| i.is_namespace() && i.manifest.name == ctx.namespace);
    if namespaced && !in_file {
        check_namespace(conn, ctx).await?;
    }
    // Namespaces, then CRDs, then the file's order (a stable sort keeps it).
    items.sort_by_key(|i| match () {
        _ if i.is_namespace() => 0,
        _ if i.is_crd() => 1,
        _ => 2,
    });
    Ok(Plan { items })
}

/// The task's namespace must exist: Wharf does not create it implicitly.
async fn check_namespace(conn: &Connection, ctx: &Ctx<'_>) -> Result<(), DeployError> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(conn.client().clone());
    match api.get(ctx.namespace).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(ctx.error(format!(
            "the namespace does not exist on the cluster; create it (or add its Namespace to the file): the API \
             server says: {}",
            s.message
        ))),
        // Namespace-scoped credentials often may not read Namespaces: the applies will tell.
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(()),
        Err(e) => Err(ctx.api("get", &format!("Namespace {}", ctx.namespace), e)),
    }
}

/// `"kubectl-client-side-apply"` out of `conflict with "kubectl-client-side-apply" using apps/v1`.
fn manager_of(message: &str) -> &str {
    let rest = message.strip_prefix("conflict with ").unwrap_or(message);
    match rest.strip_prefix('"').and_then(|r| r.split_once('"')) {
        Some((name, _)) => name,
        None => rest.split_whitespace().next().unwrap_or(rest),
    }
}

impl Plan {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Some object's kind comes from a CRD in this file, so it must be served before it is applied.
    pub fn needs_rediscovery(&self) -> bool {
        self.items.iter().any(|i| i.target.pending)
    }

    pub fn is_crd_or_namespace(&self, i: usize) -> bool {
        self.items[i].is_crd() || self.items[i].is_namespace()
    }

    /// After the file's CRDs are applied: waits (bounded, and ended by a stop) until the
    /// cluster serves every kind they define.
    pub async fn rediscover(&self, conn: &Connection, ctx: &Ctx<'_>, stop: &mut StopSignal) -> Result<(), DeployError> {
        let deadline = tokio::time::Instant::now() + CRD_ESTABLISH;
        let mut stoppable = true;
        for item in self.items.iter().filter(|i| i.target.pending) {
            let r = &item.target.resource;
            loop {
                if discover(conn, ctx, &r.group, &r.version).await?.contains_key(&r.kind) {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(ctx.error(format!(
                        "{}: the file's CRD defines `{}` in `{}`, but the cluster does not serve it {} s after the \
                         CRD was applied",
                        item.manifest.describe(),
                        r.kind,
                        r.api_version,
                        CRD_ESTABLISH.as_secs()
                    )));
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    // A stop: the caller sees it before the next write.
                    changed = stop.changed(), if stoppable => match changed {
                        Ok(()) => return Ok(()),
                        Err(_) => stoppable = false,
                    },
                }
            }
        }
        Ok(())
    }

    /// The API of object `i`'s kind, in its namespace.
    fn api(&self, conn: &Connection, i: usize) -> Api<DynamicObject> {
        let item = &self.items[i];
        let client = conn.client().clone();
        match &item.namespace {
            Some(ns) => Api::namespaced_with(client, ns, &item.target.resource),
            None => Api::all_with(client, &item.target.resource),
        }
    }

    /// `Deployment games/web`
    pub fn object(&self, i: usize) -> String {
        self.items[i].object()
    }

    /// `(group, kind, namespace, name)`: who object `i` is on the cluster.
    pub fn identity(&self, i: usize) -> (String, String, Option<String>, String) {
        let item = &self.items[i];
        (
            item.target.resource.group.clone(),
            item.manifest.kind.clone(),
            item.namespace.clone(),
            item.manifest.name.clone(),
        )
    }

    /// Object `i` as the cluster has it; `None` when it does not exist.
    pub async fn get(&self, conn: &Connection, ctx: &Ctx<'_>, i: usize) -> Result<Option<DynamicObject>, DeployError> {
        match self.api(conn, i).get(&self.items[i].manifest.name).await {
            Ok(o) => Ok(Some(o)),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(ctx.api("get", &self.items[i].object(), e)),
        }
    }

    /// Deletes object `i` (its dependents in the background, as `kubectl delete` does);
    /// `false` when it was already gone.
    pub async fn delete(&self, conn: &Connection, ctx: &Ctx<'_>, i: usize) -> Result<bool, DeployError> {
        let params = kube::api::DeleteParams::background();
        match self.api(conn, i).delete(&self.items[i].manifest.name, &params).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
            Err(e) => Err(ctx.api("delete", &self.items[i].object(), e)),
        }
    }

    /// Applies object `i` as field manager `wharf`; see [`Plan::apply_as`].
    pub async fn apply(
        &self,
        conn: &Connection,
        ctx: &Ctx<'_>,
        i: usize,
        logs: &dyn LogSink,
    ) -> Result<(Applied, Option<Workload>), DeployError> {
        self.apply_as(conn, ctx, i, logs, FIELD_MANAGER).await
    }

    /// Applies object `i` as field manager `manager`: a dry run first (its conflicts say
    /// which fields other managers own; they are logged and taken), then the apply with
    /// `force`.
    pub async fn apply_as(
        &self,
        conn: &Connection,
        ctx: &Ctx<'_>,
        i: usize,
        logs: &dyn LogSink,
        manager: &str,
    ) -> Result<(Applied, Option<Workload>), DeployError> {
        let item = &self.items[i];
        let object = item.object();
        let api = self.api(conn, i);
        let name = &item.manifest.name;
        let dry = PatchParams::apply(manager).dry_run();
        match api.patch(name, &dry, &Patch::Apply(&item.body)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "Conflict" => {
                let causes = s.details.as_ref().map(|d| d.causes.clone()).unwrap_or_default();
                for c in causes {
                    logs.line(LogLine::system(format!(
                        "{object}: field {} is managed by {:?} ({}); {manager} takes it over (force)",
                        c.field,
                        manager_of(&c.message),
                        c.message
                    )));
                }
            }
            Err(e) => return Err(ctx.api("apply", &format!("{object} ({})", item.manifest.describe()), e)),
        }
        let stored = api
            .patch(name, &PatchParams::apply(manager).force(), &Patch::Apply(&item.body))
            .await
            .map_err(|e| ctx.api("apply", &format!("{object} ({})", item.manifest.describe()), e))?;
        let applied = Applied {
            kind: item.manifest.kind.clone(),
            namespace: item.namespace.clone(),
            name: name.clone(),
            resource_version: stored.metadata.resource_version.clone().unwrap_or_default(),
        };
        logs.line(LogLine::system(format!("applied {applied}")));
        let workload = match (item.target.resource.group.as_str(), item.manifest.kind.as_str(), &item.namespace) {
            ("apps", "Deployment", Some(_)) => Some(WorkloadKind::Deployment),
            ("apps", "StatefulSet", Some(_)) => Some(WorkloadKind::StatefulSet),
            ("apps", "DaemonSet", Some(_)) => Some(WorkloadKind::DaemonSet),
            _ => None,
        }
        .map(|kind| Workload {
            kind,
            namespace: item.namespace.clone().unwrap_or_default(),
            name: name.clone(),
        });
        Ok((applied, workload))
    }
}
