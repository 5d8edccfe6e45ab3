//! `/pipelines`: a pipeline as listed and shown, what a save answers, and the bodies
//! of scratch, copy and validate. Create and update take pipeline YAML (or the same
//! as JSON), which is `wharf-pipeline`'s business, not a type here.

use crate::Detail;
use crate::runs::{Accepted, RunSummary};
use serde::{Deserialize, Serialize};

/// A pipeline: its identity and latest version number (`POST
/// /pipelines/{key}/activate` and `/deactivate` answer this).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pipeline {
    pub id: i64,
    pub project: String,
    pub name: String,
    /// An inactive pipeline starts no runs; its history is kept.
    pub active: bool,
    /// The latest version.
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// The user who created it.
    pub created_by: String,
}

/// One item of `GET /pipelines`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PipelineListed {
    #[serde(flatten)]
    pub pipeline: Pipeline,
    /// The latest version's `source` (`repo`, `branch`, `binding`), when it has one.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub source: Option<wharf_core::model::Source>,
    pub last_run: Option<RunSummary>,
}

/// What [`PipelineListed`] shows of a version, kept with the version when it is saved
/// (as JSON, opaque to the store), so a page of the list reads 50 of these instead of
/// parsing 50 pipelines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionListing {
    pub source: Option<wharf_core::model::Source>,
}

impl VersionListing {
    pub fn of(model: &wharf_core::model::Pipeline) -> VersionListing {
        VersionListing { source: model.source.clone() }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }

    /// `None` for a listing this build cannot read (the caller parses the version).
    pub fn from_json(json: &str) -> Option<VersionListing> {
        serde_json::from_str(json).ok()
    }
}

/// `GET /pipelines/{key}`: the pipeline with its latest definition and its versions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PipelineShown {
    #[serde(flatten)]
    pub pipeline: Pipeline,
    pub description: Option<String>,
    /// The latest version's model as JSON (the same fields as the YAML).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub definition: serde_json::Value,
    pub versions: Vec<Version>,
    /// Numbers of the runs in progress.
    pub active_runs: Vec<i64>,
    pub last_run: Option<RunSummary>,
}

/// A saved version of a pipeline (its YAML: `GET /pipelines/{key}/yaml?version=N`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Version {
    pub version: i64,
    pub created_at: i64,
}

/// What a save (create, update, scratch, copy) answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Saved {
    pub id: i64,
    pub name: String,
    pub project: String,
    pub version: i64,
    /// The run started by `?run=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Accepted>,
    /// For a pipeline with an `events` trigger: what became of its repository's
    /// webhook. The pipeline is saved whatever it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookInstall>,
}

/// The webhook of a saved pipeline's repository: installed now, found, or what a
/// person must do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookInstall {
    pub binding: String,
    pub repository: String,
    pub status: WebhookStatus,
    /// The address the hook delivers to (or should).
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_id: Option<String>,
    pub message: String,
}

/// What became of a pipeline's webhook when it was saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum WebhookStatus {
    /// Wharf created the hook now.
    Installed,
    /// A hook delivering to this server's address was already there.
    Present,
    /// Wharf cannot install it; a person must, as the message says.
    Manual,
    /// The provider refused or failed; the message says why.
    Failed,
}

/// `POST /pipelines/scratch`: a new pipeline with the four default stages.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = Scratch))]
#[serde(deny_unknown_fields)]
pub struct ScratchPipeline {
    pub name: String,
    /// Default `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Seed 000's "auto-deploy": the stages "Manual review" (an approval by the caller)
    /// and "Release" (`deploy-yaml` to the cluster given as the `CLUSTER` parameter) in
    /// place of Deploy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_deploy: bool,
}

/// `POST /pipelines/{key}/copy`: the new pipeline's name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = Copy))]
#[serde(deny_unknown_fields)]
pub struct CopyPipeline {
    pub name: String,
}

/// `POST /pipelines/validate` as JSON: YAML text, or a model to write as YAML first.
/// (Any other body is taken as YAML.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub enum ValidateRequest {
    #[serde(rename = "yaml")]
    Yaml(String),
    #[serde(rename = "definition")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    Definition(serde_json::Value),
}

/// What `POST /pipelines/validate` answers (always 200).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Validated {
    pub valid: bool,
    /// The model as JSON (as in `GET /pipelines/{key}`), when valid.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub definition: Option<serde_json::Value>,
    /// The text: as given, or written from the definition.
    pub yaml: String,
    /// Every problem, with its line and column in `yaml`.
    pub diagnostics: Vec<Detail>,
}

/// `GET /task-types`: every task type and whether this server can run it for a pipeline
/// on its default executor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskTypes {
    pub items: Vec<TaskType>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskType {
    /// `script`, `image`, `deploy-yaml`, …
    pub name: String,
    pub runs: bool,
    /// What it needs when it cannot run here (the words a refused run gives).
    pub needs: Option<String>,
}
