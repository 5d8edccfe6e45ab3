//! Approvals and notifications: deciding an `approval` task
//! (`POST /runs/{id}/tasks/{task}/approve|reject`), the approvals waiting for the
//! caller (`GET /approvals`), and the notification delivery attempts a run detail
//! carries (`notifications`).

use serde::{Deserialize, Serialize};

/// `POST /runs/{id}/tasks/{task}/approve` and `…/reject`: an optional comment (at most
/// 2,000 characters are kept; a rejection's comment becomes the task's reason).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Decide {
    #[serde(default)]
    pub comment: String,
}

/// One decision on an approval task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DecisionInfo {
    pub user: String,
    /// `approve` or `reject`.
    pub verdict: String,
    #[serde(default)]
    pub comment: String,
    /// Epoch milliseconds.
    pub at: i64,
}

impl From<&wharf_core::approval::Decision> for DecisionInfo {
    fn from(d: &wharf_core::approval::Decision) -> Self {
        DecisionInfo {
            user: d.user.clone(),
            verdict: d.verdict.as_str().to_owned(),
            comment: d.comment.clone(),
            at: d.at.as_millisecond(),
        }
    }
}

/// The answer to a decision: where the approval stands now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Decided {
    pub run: i64,
    pub task: String,
    /// `waiting` (more approvals needed), `approved` or `rejected`.
    pub state: String,
    pub required: u32,
    pub decisions: Vec<DecisionInfo>,
}

/// `GET /approvals`: an approval task waiting for a decision the caller may give.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaitingApproval {
    pub run_id: i64,
    pub pipeline_id: i64,
    pub pipeline: String,
    pub number: u64,
    pub stage: String,
    pub task: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub approvers: Vec<String>,
    pub required: u32,
    pub decisions: Vec<DecisionInfo>,
    /// Who started the run, when a person did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    /// When it started waiting, epoch milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
}

/// One delivery attempt of a run's notification (`notifications` of a run detail).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotificationAttempt {
    /// What it told: `success`, `failure` or `waiting`.
    pub event: String,
    /// `webhook` or `email`.
    pub channel: String,
    /// The URL without its query, or the addresses.
    pub target: String,
    /// 1, 2, … for the same notification.
    pub attempt: u32,
    /// `delivered` or `failed`.
    pub outcome: String,
    /// The receiver's answer (`HTTP 200`, `250 OK`) or what went wrong.
    pub detail: String,
    /// Epoch milliseconds.
    pub at: i64,
}
