//! `deploy-yaml` on a cluster: [`KubeDeployer`] implements wharf-executor's [`Deployer`].
//!
//! Read in this order:
//! 1. [`manifests`]: the file → checked objects (every document, before any write);
//! 2. `apply.rs`: discovery (kind → resource and scope, only for the file's API group
//!    versions), the namespace rule, order (Namespaces, CRDs, then file order), and
//!    server-side apply per object: a dry run that reports which fields other managers
//!    own, then the apply with `force`;
//! 3. `rollout.rs` with `status.rs`: waiting, by watches, for every Deployment, StatefulSet
//!    and DaemonSet as `kubectl rollout status` does, failing fast on pods in
//!    `ImagePullBackOff`, `ErrImagePull` or `CrashLoopBackOff`;
//! 4. `fail.rs`: every failure in words naming the cluster, namespace and object.
//!
//! The namespace rule: a namespaced object without `metadata.namespace` goes to the task's
//! namespace; one naming another namespace is refused before any write. Cluster-scoped
//! objects are applied as they are (the kubeconfig's RBAC decides). The task's namespace is
//! never created implicitly: it must exist, or the file must hold its `Namespace`.

pub(crate) mod apply;
mod fail;
pub mod manifests;
pub(crate) mod rollout;
mod status;

pub use fail::Ctx;

use std::sync::Arc;

use wharf_executor::deploy::{
    Applied, CanaryAction, CanaryExit, CanarySpec, ClusterLogin, DeployError, DeployExit, DeploySpec, Deployer,
    ReleaseExit, ReleaseSpec,
};
use wharf_executor::{BoxFuture, LogLine, LogSink, StopReason, StopSignal};

use crate::{Connection, FileAccess, Policy};

pub use status::Rollout;

/// Applies `deploy-yaml` files to clusters over kube-rs. Holds no connection: every deploy
/// builds its own from the task's kubeconfig (through the server's outbound policy, as
/// every cluster connection), so calls run concurrently.
#[derive(Clone)]
pub struct KubeDeployer {
    policy: Policy,
}

impl std::fmt::Debug for KubeDeployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeDeployer").finish_non_exhaustive()
    }
}

impl KubeDeployer {
    /// `policy`: the server's outbound policy (internal addresses refused unless allowed).
    pub fn new(policy: Policy) -> Self {
        KubeDeployer { policy }
    }

    /// The connection to a task's cluster. Files named in a stored kubeconfig are
    /// refused: the server's disk is not the user's (clusters are registered with their
    /// data inline).
    fn connect(&self, cluster: &ClusterLogin) -> Result<Connection, DeployError> {
        Connection::from_kubeconfig(&cluster.kubeconfig, cluster.context.as_deref(), &FileAccess::Refuse, &self.policy)
            .map_err(|e| DeployError(format!("cluster `{}`: its kubeconfig: {e}", cluster.name)))
    }
}

impl Deployer for KubeDeployer {
    fn deploy<'a>(
        &'a self,
        spec: DeploySpec,
        logs: Arc<dyn LogSink>,
        stop: StopSignal,
    ) -> BoxFuture<'a, Result<DeployExit, DeployError>> {
        Box::pin(async move {
            let conn = self.connect(&spec.cluster)?;
            // A stop ends the deploy wherever it is, even inside a request the cluster is
            // slow to answer (the request is dropped, as kubectl's Ctrl-C would drop it).
            tokio::select! {
                result = deploy(&conn, &spec, logs.as_ref(), stop.clone()) => result,
                reason = requested(stop) => {
                    logs.line(LogLine::system(format!("deploy-yaml: {reason}; what was applied stays applied")));
                    Ok(DeployExit::Stopped(reason))
                }
            }
        })
    }

    /// A release operation sees stops between its steps (and while it waits), so that
    /// the revision it wrote is marked `failed` rather than left pending.
    fn release<'a>(
        &'a self,
        spec: ReleaseSpec,
        logs: Arc<dyn LogSink>,
        stop: StopSignal,
    ) -> BoxFuture<'a, Result<ReleaseExit, DeployError>> {
        Box::pin(async move {
            let conn = self.connect(&spec.cluster)?;
            crate::release::deploy_chart(&conn, &spec, logs.as_ref(), stop).await
        })
    }

    fn canary<'a>(
        &'a self,
        spec: &'a CanarySpec,
        action: CanaryAction,
        logs: Arc<dyn LogSink>,
        stop: StopSignal,
    ) -> BoxFuture<'a, Result<CanaryExit, DeployError>> {
        Box::pin(async move {
            let conn = self.connect(&spec.cluster)?;
            crate::canary::run(&conn, spec, action, logs.as_ref(), stop).await
        })
    }
}

/// The whole deploy on an open connection: check, apply, wait.
pub async fn deploy(
    conn: &Connection,
    spec: &DeploySpec,
    logs: &dyn LogSink,
    mut stop: StopSignal,
) -> Result<DeployExit, DeployError> {
    let ctx = fail::Ctx { cluster: &spec.cluster.name, conn, namespace: &spec.namespace };
    let objects = manifests::parse(&spec.manifests).map_err(|e| DeployError(format!("{}: {e}", spec.file)))?;
    if objects.is_empty() {
        return Err(DeployError(format!("{}: the file holds no Kubernetes objects", spec.file)));
    }
    logs.line(LogLine::system(format!(
        "deploy-yaml: {} object(s) from {} to cluster `{}` ({}), namespace `{}`",
        objects.len(),
        spec.file,
        spec.cluster.name,
        conn.server(),
        spec.namespace
    )));
    let plan = apply::plan(conn, &ctx, &spec.file, objects).await?;
    if let Some(reason) = stopped(&mut stop) {
        return Ok(DeployExit::Stopped(reason));
    }
    let mut applied: Vec<Applied> = Vec::with_capacity(plan.len());
    let mut workloads = Vec::new();
    let mut discovery_after_crds = plan.needs_rediscovery();
    for i in 0..plan.len() {
        if let Some(reason) = stopped(&mut stop) {
            return Ok(DeployExit::Stopped(reason));
        }
        if discovery_after_crds && !plan.is_crd_or_namespace(i) {
            plan.rediscover(conn, &ctx, &mut stop).await?;
            discovery_after_crds = false;
        }
        let (done, workload) = plan.apply(conn, &ctx, i, logs).await?;
        applied.push(done);
        workloads.extend(workload);
    }
    for w in &workloads {
        if let Some(reason) = rollout::wait(conn, &ctx, w, logs, &mut stop).await? {
            logs.line(LogLine::system(format!("deploy-yaml: {reason}; what was applied stays applied")));
            return Ok(DeployExit::Stopped(reason));
        }
    }
    logs.line(LogLine::system(format!("deploy-yaml: {} object(s) applied", applied.len())));
    Ok(DeployExit::Deployed(applied))
}

/// Resolves when a stop is requested; never, if the engine dropped its side.
async fn requested(mut stop: StopSignal) -> StopReason {
    loop {
        if let Some(request) = *stop.borrow_and_update() {
            return request.reason;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn stopped(stop: &mut StopSignal) -> Option<StopReason> {
    stop.borrow_and_update().map(|r| r.reason)
}
