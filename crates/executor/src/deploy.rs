//! The seam for `deploy-yaml` tasks: apply Kubernetes manifests to a registered cluster
//! and wait for their rollouts. The engine renders the file (variables substituted,
//! the path kept inside the checkout) and resolves the cluster; a [`Deployer`] (the
//! Kubernetes one lives in `wharf-kube`) only talks to the cluster.

use crate::{BoxFuture, LogSink, StopReason, StopSignal};
use std::fmt;
use std::sync::Arc;

/// A registered cluster as a task uses it. `Debug` hides the kubeconfig.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterLogin {
    /// The registered cluster's name (for messages).
    pub name: String,
    /// The kubeconfig's text, unsealed (credentials inside).
    pub kubeconfig: String,
    /// The context to use; the file's `current-context` when `None`.
    pub context: Option<String>,
}

impl fmt::Debug for ClusterLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterLogin")
            .field("name", &self.name)
            .field("kubeconfig", &"***")
            .field("context", &self.context)
            .finish()
    }
}

/// One `deploy-yaml` task, every field final.
#[derive(Clone, Debug)]
pub struct DeploySpec {
    /// `<pipeline>#<number>`, stage and task, for labels and log lines.
    pub run: String,
    pub stage: String,
    pub task: String,
    /// `file:` as the pipeline gives it (rendered), for messages.
    pub file: String,
    /// The file's text with every `${…}` substituted: one or more YAML documents.
    pub manifests: String,
    pub cluster: ClusterLogin,
    /// The task's `namespace:`: where documents without one go.
    pub namespace: String,
}

/// One object the cluster accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub kind: String,
    /// `None` for cluster-scoped objects (Namespace, CustomResourceDefinition…).
    pub namespace: Option<String>,
    pub name: String,
    /// The object's `metadata.resourceVersion` after the apply.
    pub resource_version: String,
}

impl fmt::Display for Applied {
    /// `Deployment/games/jack-2048@1234`, or `Namespace/games@17` when cluster-scoped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{ns}/{}@{}", self.kind, self.name, self.resource_version),
            None => write!(f, "{}/{}@{}", self.kind, self.name, self.resource_version),
        }
    }
}

/// How a deploy ended when it did not fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeployExit {
    /// Everything applied and every rollout finished, in apply order.
    Deployed(Vec<Applied>),
    /// A [`crate::StopRequest`] ended it (what was applied stays applied).
    Stopped(StopReason),
}

/// The deploy failed; the message names the cluster, the namespace and the object and
/// says why (the API server's own words where it gave some).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DeployError(pub String);

/// One `chart-deploy` task (or an upgrade asked through the API): install the chart as
/// release `release` in `namespace`, or upgrade the release when it exists.
#[derive(Clone)]
pub struct ReleaseSpec {
    /// `<pipeline>#<number>`, stage and task, for log lines (empty outside a run).
    pub run: String,
    pub stage: String,
    pub task: String,
    pub cluster: ClusterLogin,
    pub namespace: String,
    /// The release's name (a DNS label, at most 53 characters, as Helm requires).
    pub release: String,
    /// The packaged chart (`.tgz`), as pulled from the registry.
    pub chart: Vec<u8>,
    /// Where the chart came from: `registry/workspace/chart` (a registered registry's
    /// name, the workspace, the chart), remembered with the release so that an upgrade
    /// asked later (API, CLI, UI) pulls another version from the same place.
    pub source: String,
    /// The user's values (Helm's `config`): merged over the chart's `values.yaml`.
    pub values: serde_json::Map<String, serde_json::Value>,
}

impl fmt::Debug for ReleaseSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReleaseSpec")
            .field("run", &self.run)
            .field("task", &self.task)
            .field("cluster", &self.cluster)
            .field("namespace", &self.namespace)
            .field("release", &self.release)
            .field("chart", &format_args!("{} bytes", self.chart.len()))
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// A release operation that finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Released {
    /// The revision written (1 for an install).
    pub revision: u32,
    /// Helm's status word of that revision: `deployed` on success.
    pub status: String,
    /// The release's objects as applied, in apply order (hooks not included).
    pub applied: Vec<Applied>,
    /// The rendered `NOTES.txt` (empty when the chart has none).
    pub notes: String,
}

/// How a release operation ended when it did not fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReleaseExit {
    Released(Released),
    /// A stop ended it; the revision is marked `failed` (as Helm marks an interrupted one).
    Stopped(StopReason),
}

/// Applies manifests to clusters.
///
/// Contract: `deploy` checks every document before its first write; every line of
/// progress reaches `logs` before it returns; a stop request ends the wait promptly
/// with `Ok(DeployExit::Stopped)`. Calls may run concurrently.
pub trait Deployer: Send + Sync {
    fn deploy<'a>(
        &'a self,
        spec: DeploySpec,
        logs: Arc<dyn LogSink>,
        stop: StopSignal,
    ) -> BoxFuture<'a, Result<DeployExit, DeployError>>;

    /// Installs or upgrades a Helm release from a chart archive (the chart rendered as
    /// `helm template` renders it), stored as Helm stores releases; same contract as
    /// `deploy`. A deployer that cannot refuses with a message saying so.
    fn release<'a>(
        &'a self,
        spec: ReleaseSpec,
        logs: Arc<dyn LogSink>,
        stop: StopSignal,
    ) -> BoxFuture<'a, Result<ReleaseExit, DeployError>> {
        let _ = (logs, stop);
        Box::pin(async move {
            Err(DeployError(format!("release `{}`: this deployer does not install Helm charts", spec.release)))
        })
    }

    /// One move of a `canary` task ([`CanaryAction`]); same contract as `deploy`. A
    /// deployer that cannot refuses with a message saying so.
    fn canary<'a>(
        &'a self,
        spec: &'a CanarySpec,
        action: CanaryAction,
        logs: Arc<dyn LogSink>,
        stop: StopSignal,
    ) -> BoxFuture<'a, Result<CanaryExit, DeployError>> {
        let _ = (action, logs, stop);
        Box::pin(async move {
            Err(DeployError(format!("canary of `{}`: this deployer does not run canaries", spec.deployment)))
        })
    }
}

/// One `canary` task, every field final: Deployment `deployment` in `namespace` moves
/// to `image` through a `<deployment>-canary` Deployment beside it.
#[derive(Clone, Debug)]
pub struct CanarySpec {
    /// `<pipeline>#<number>`, stage and task, for labels and log lines.
    pub run: String,
    pub stage: String,
    pub task: String,
    pub cluster: ClusterLogin,
    pub namespace: String,
    /// The stable Deployment's name.
    pub deployment: String,
    /// The new image.
    pub image: String,
}

/// One move of a canary; the engine calls them in order: `Begin`, a `Step` per
/// percentage below 100, then `Promote` — or `Abort` at any point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CanaryAction {
    /// Creates the canary Deployment (a copy of the stable one, the new image, no
    /// replicas) and answers the stable Deployment's replica count (the total).
    Begin,
    /// Gives the canary `percent` of `total` replicas, the stable one the rest.
    Step { percent: u8, total: u32 },
    /// Puts the new image into the stable Deployment with `total` replicas, then
    /// deletes the canary.
    Promote { total: u32 },
    /// Restores the stable replicas (the total the canary recorded) and deletes the
    /// canary; nothing to do when there is none.
    Abort,
}

/// How a canary move ended when it did not fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CanaryExit {
    /// Done; the total replicas of the rollout.
    Done { total: u32 },
    /// A stop ended the wait; the engine aborts next.
    Stopped(StopReason),
}
