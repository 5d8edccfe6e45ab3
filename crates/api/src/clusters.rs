//! `/clusters`: Kubernetes clusters a project deploys to (and, later, runs pods on).
//! The kubeconfig goes in, never out: answers carry what was learnt from it and from
//! the cluster (server URL, version, nodes, the pipeline namespace, health).

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
    pub created_by: String,
    pub created_at: i64,
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
}

/// `DELETE /clusters/{name}` refused (`409`): the usual error body, plus the pipelines
/// whose latest version still names the cluster, by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterInUse {
    pub error: crate::ErrorInfo,
    pub pipelines: Vec<String>,
}
