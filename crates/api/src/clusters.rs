//! `/clusters`: Kubernetes clusters a project deploys to (and, later, runs pods on).
//! The kubeconfig goes in, never out: answers carry what was learnt from it and from
//! the cluster (server URL, version, nodes, the pipeline namespace, health).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A cluster as answered, without its kubeconfig.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = ClusterInfo))]
pub struct Cluster {
    pub id: i64,
    pub name: String,
    /// The project whose pipelines may deploy to it.
    pub project: String,
    /// The API server's URL, from the kubeconfig's chosen context.
    pub server: String,
    /// The kubeconfig context in use (the file's `current-context` unless one was named).
    pub context: String,
    /// `v1.33.2` as the API server reports it; `None` until a check succeeded.
    pub version: Option<String>,
    pub nodes: Option<Nodes>,
    /// The namespace of pipeline pods, `ecp-devops-<short id>`.
    pub namespace: String,
    pub health: Health,
    /// How the kubernetes executor runs task pods on it.
    pub settings: ClusterSettings,
    pub created_by: String,
    pub created_at: i64,
}

/// A cluster's settings for the kubernetes executor: the defaults of its task pods (a
/// pipeline's and a task's own `resources`, `node_selector`, `tolerations` and
/// `service_account` win over them), how long a pod may stay `Pending`, and how the run's
/// workspace reaches the pods. `PATCH /clusters/{name}` takes the same shape as a JSON
/// merge patch (RFC 7386): the fields given replace, `null` clears, the rest stay.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    #[serde(default)]
    pub resources: PodResources,
    /// Labels a node must carry to run the task pods.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub tolerations: Vec<PodToleration>,
    /// The task pods' service account in the pipeline namespace (its token is mounted
    /// only when one is named).
    #[serde(default)]
    pub service_account: Option<String>,
    /// How long a task's pod may stay `Pending` (`90s`, `10m`) before the attempt fails
    /// with the scheduler's reason; `null`: 10 minutes.
    #[serde(default)]
    pub pending_limit: Option<String>,
    #[serde(default)]
    pub workspace: ClusterWorkspace,
}

/// Requests (what the scheduler reserves) and limits (what the container may use).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PodResources {
    #[serde(default)]
    pub requests: PodQuantities,
    #[serde(default)]
    pub limits: PodQuantities,
}

/// Kubernetes quantities: `cpu` as `500m` or `2`, `memory` as `512Mi` or `1G`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PodQuantities {
    #[serde(default)]
    pub cpu: Option<String>,
    #[serde(default)]
    pub memory: Option<String>,
}

/// A toleration of a node taint, as Kubernetes writes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PodToleration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Equal` (the default) or `Exists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`; none: every effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
}

/// How the run's checkout reaches its task pods.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClusterWorkspace {
    /// `host-path` (the default: the server's run directory as a `hostPath` volume, for a
    /// one-node cluster the server shares; the fastest) or `claim` (one
    /// PersistentVolumeClaim per run that every task pod of the run mounts: any cluster).
    #[serde(default = "host_path")]
    pub mode: String,
    /// The claim's StorageClass; `null`: the cluster's default class.
    #[serde(default)]
    pub storage_class: Option<String>,
    /// The claim's size (a quantity); `null`: `1Gi`.
    #[serde(default)]
    pub size: Option<String>,
}

fn host_path() -> String {
    "host-path".to_owned()
}

impl Default for ClusterWorkspace {
    fn default() -> Self {
        ClusterWorkspace { mode: host_path(), storage_class: None, size: None }
    }
}

/// Nodes whose `Ready` condition is `True`, of all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Nodes {
    pub ready: u32,
    pub total: u32,
}

/// The last check of a cluster (shared/DESIGN.md §10).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `healthy`, `unreachable`, `unauthorized`, `forbidden`, `refused` (the server's
    /// outbound policy does not allow the API server's address: an admin's
    /// `outbound_allow`), `error` (TLS, an unexpected answer), or `unchecked` (registered
    /// with `?verify=false` and not checked since).
    pub status: String,
    /// What went wrong, in the API server's words; `None` when healthy or unchecked.
    pub error: Option<String>,
    /// When it was checked (epoch ms); `None` when never.
    pub checked_at: Option<i64>,
}

/// `GET /clusters`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Clusters {
    pub items: Vec<Cluster>,
    pub total: usize,
}

/// `POST /clusters` (`?verify=false` registers without contacting the cluster).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = NewCluster))]
#[serde(deny_unknown_fields)]
pub struct NewCluster {
    #[serde(default)]
    pub name: String,
    /// The kubeconfig file's text (YAML). Sealed at rest, never answered.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(write_only))]
    pub kubeconfig: String,
    /// The context to use; the file's `current-context` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// The owning project; `admin` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The kubernetes executor's settings; every default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<ClusterSettings>,
}

/// `DELETE /clusters/{name}` refused (`409`): the usual error body, plus the pipelines
/// whose latest version still names the cluster, by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterInUse {
    pub error: crate::ErrorInfo,
    pub pipelines: Vec<String>,
}
