//! `/clusters/{cluster}/releases`: Helm releases ("template instances", seed 002 §3.4)
//! in a registered cluster — every release `chart-deploy` or Helm itself installed, read
//! from the Secrets Helm stores them in. Times here are RFC 3339 strings, as Helm
//! records them.

use serde::{Deserialize, Serialize};

/// A release at its latest revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Release {
    pub name: String,
    pub namespace: String,
    /// The chart's name.
    pub chart: String,
    /// The chart's version.
    pub version: String,
    /// The chart's `appVersion` (empty when it has none).
    pub app_version: String,
    pub revision: u32,
    /// Helm's word: `deployed`, `failed`, `superseded`, `uninstalled`, `pending-install`,
    /// `pending-upgrade`, `pending-rollback`, `uninstalling`, `unknown`.
    pub status: String,
    /// When the revision was deployed (RFC 3339).
    pub updated: String,
    /// `Install complete`, `Upgrade complete`, `Rollback to 2`, or why it failed.
    pub description: String,
}

/// `GET /clusters/{cluster}/releases`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Releases {
    pub items: Vec<Release>,
    pub total: usize,
    /// Release Secrets that could not be read (not Helm's format, too large), each
    /// naming the Secret and why; the other releases are listed anyway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
}

/// One revision of a release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Revision {
    pub revision: u32,
    pub status: String,
    pub chart: String,
    pub version: String,
    pub app_version: String,
    pub updated: String,
    pub description: String,
}

/// `GET /clusters/{cluster}/namespaces/{namespace}/releases/{release}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseDetail {
    pub release: Release,
    /// The user's values of the latest revision (Helm's `config`).
    pub values: serde_json::Map<String, serde_json::Value>,
    /// The rendered NOTES.txt of the latest revision.
    pub notes: String,
    /// Where the chart came from, `registry/workspace/chart`, when Wharf deployed it
    /// (an upgrade pulls other versions from there); `None` for a release only Helm made.
    pub source: Option<String>,
    /// Every revision, oldest first.
    pub history: Vec<Revision>,
}

/// `POST …/releases/{release}/rollback`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The revision whose chart, values and manifest the new revision takes.
    pub revision: u32,
}

/// `POST …/releases/{release}/upgrade`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Upgrade {
    /// The chart version to pull and upgrade to.
    pub version: String,
    /// The user's values; the release's current values when absent (Helm's
    /// `--reuse-values`), none when `{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<serde_json::Map<String, serde_json::Value>>,
    /// The registry to pull from; the one the release remembers when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// The workspace to pull from; the one the release remembers when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
}

/// What a rollback or upgrade wrote, or what an uninstall removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Operation {
    pub release: String,
    pub namespace: String,
    /// The revision written (for an uninstall, the last one, now gone).
    pub revision: u32,
    pub status: String,
    /// `Kind/namespace/name@resourceVersion` of every object applied (deleted, for an
    /// uninstall).
    pub objects: Vec<String>,
    pub notes: String,
}
