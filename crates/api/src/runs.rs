//! Runs: start, the listing, the run detail (the record with ids, per-part times and
//! log sizes), stop, and the log endpoints' headers.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use wharf_core::run::{Cause, CheckoutRecord, Progress, RunRecord, StageRecord, TaskRecord, Transition};
use wharf_core::status::Status;

/// `GET /runs/{id}/tasks/{task}/log`: bytes of the log so far.
pub const LOG_SIZE_HEADER: &str = "x-log-size";
/// `GET /runs/{id}/tasks/{task}/log`: the offset to ask from next.
pub const NEXT_OFFSET_HEADER: &str = "x-next-offset";
/// `GET /runs/{id}/tasks/{task}/log`: `true` while the task may still write, or more
/// is stored than the answer holds.
pub const MORE_DATA_HEADER: &str = "x-more-data";
/// `POST /pipelines/{key}/runs`: the same key again answers the run it started.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// `POST /pipelines/{key}/runs`: the run's parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

/// A run accepted (start, re-run, retry, save and run): its id and number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Accepted {
    pub id: i64,
    /// `BUILD_ID`: 1, 2, 3… per pipeline.
    pub number: i64,
}

/// `POST /runs/{id}/stop` (202): the stop is under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Stopping {
    pub id: i64,
    pub status: StoppingStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum StoppingStatus {
    Stopping,
}

/// A run as listed: what a table row needs, without the record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunSummary {
    pub id: i64,
    pub pipeline_id: i64,
    pub number: i64,
    pub version: i64,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::status))]
    pub status: Status,
    /// The run this one retries from its failed stage.
    pub retry_of: Option<i64>,
    pub commit: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// `SYS_INCREMENT` of this run.
    pub increment: i64,
}

/// One item of `GET /pipelines/{key}/runs?full=true` (the details page): the summary
/// with the record's cause, branch and times (`commit` from the checkout when it has
/// one). A run whose record cannot be read is listed as its summary alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunListed {
    #[serde(flatten)]
    pub summary: RunSummary,
    #[serde(flatten)]
    pub record: Option<RunFacts>,
}

/// What `?full=true` adds from the record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunFacts {
    #[serde(flatten)]
    pub times: Times,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::cause))]
    pub cause: Cause,
    pub branch: Option<String>,
    pub tag: Option<String>,
}

/// Times a person reads: start, end and running time so far (wall time), beside the
/// full status history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Times {
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub started_at: Option<Timestamp>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub finished_at: Option<Timestamp>,
    pub duration_ms: Option<u64>,
}

impl Times {
    /// The times of `progress` as of `now`.
    pub fn of(progress: &Progress, now: Timestamp) -> Times {
        Times {
            started_at: progress.started_at(),
            finished_at: progress.finished_at(),
            duration_ms: progress.wall_time(now).map(|d| d.as_millis() as u64),
        }
    }
}

/// `GET /runs/{id}`: the run's record (as `wharf run` keeps it) with its ids, the
/// times of each part, and each task's log size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunDetail {
    /// The pipeline's name.
    pub pipeline: String,
    pub number: u64,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::cause))]
    pub cause: Cause,
    pub parameters: BTreeMap<String, String>,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::status))]
    pub status: Status,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::history))]
    pub history: Vec<Transition>,
    /// Why the run ended as it did, when it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout: Option<CheckoutDetail>,
    pub stages: Vec<StageDetail>,
    #[serde(flatten)]
    pub times: Times,
    pub id: i64,
    pub pipeline_id: i64,
    /// The pipeline version it ran.
    pub version: i64,
    pub retry_of: Option<i64>,
    /// The commit checked out (or asked for).
    pub commit: Option<String>,
    /// `SYS_INCREMENT` of this run.
    pub increment: i64,
    /// Every delivery attempt of the run's notifications, oldest first.
    #[serde(default)]
    pub notifications: Vec<crate::gates::NotificationAttempt>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckoutDetail {
    pub repo: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::status))]
    pub status: Status,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::history))]
    pub history: Vec<Transition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(flatten)]
    pub times: Times,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StageDetail {
    pub name: String,
    /// A stage of the pipeline's `on_failure` list.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::status))]
    pub status: Status,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::history))]
    pub history: Vec<Transition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The earlier run (its number) where this stage succeeded, when a retry took it
    /// over from there instead of running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<u64>,
    pub tasks: Vec<TaskDetail>,
    #[serde(flatten)]
    pub times: Times,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskDetail {
    pub name: String,
    /// The task type (`script`, `image`, …).
    #[serde(rename = "type")]
    pub task_type: String,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::status))]
    pub status: Status,
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::history))]
    pub history: Vec<Transition>,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The task's outputs (`$WHARF_OUTPUT`), always present.
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// An `approval` task's question (`message`, `approvers`, `required`) and the
    /// decisions given so far (`user`, `verdict` approve|reject, `comment`, `at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub approval: Option<wharf_core::run::ApprovalRecord>,
    #[serde(flatten)]
    pub times: Times,
    /// Bytes of its log so far.
    pub log_size: u64,
}

/// The ids and counters the store keeps beside a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunIds {
    pub id: i64,
    pub pipeline_id: i64,
    pub version: i64,
    pub retry_of: Option<i64>,
    /// The commit the store has for the run, when the checkout names none.
    pub commit: Option<String>,
    pub increment: i64,
}

impl RunDetail {
    /// The detail of `record` as of `now`; `log_size(stage, task)` gives each task's
    /// log size.
    pub fn new(record: RunRecord, ids: RunIds, now: Timestamp, log_size: impl Fn(usize, usize) -> u64) -> RunDetail {
        let commit = record.checkout.as_ref().and_then(|c| c.commit.clone()).or(ids.commit);
        let stages = record
            .stages
            .into_iter()
            .enumerate()
            .map(|(s, stage)| StageDetail {
                times: Times::of(&stage.progress, now),
                tasks: stage
                    .tasks
                    .into_iter()
                    .enumerate()
                    .map(|(t, task)| TaskDetail {
                        times: Times::of(&task.progress, now),
                        log_size: log_size(s, t),
                        name: task.name,
                        task_type: task.task_type,
                        status: task.progress.status,
                        history: task.progress.history,
                        attempts: task.attempts,
                        exit_code: task.exit_code,
                        outputs: task.outputs,
                        reason: task.reason,
                        approval: task.approval,
                    })
                    .collect(),
                name: stage.name,
                rollback: stage.rollback,
                status: stage.progress.status,
                history: stage.progress.history,
                reason: stage.reason,
                reused_from: stage.reused_from,
            })
            .collect();
        RunDetail {
            times: Times::of(&record.progress, now),
            checkout: record.checkout.map(|c| CheckoutDetail {
                times: Times::of(&c.progress, now),
                repo: c.repo,
                branch: c.branch,
                tag: c.tag,
                commit: c.commit,
                status: c.progress.status,
                history: c.progress.history,
                reason: c.reason,
            }),
            pipeline: record.pipeline,
            number: record.number,
            cause: record.cause,
            parameters: record.parameters,
            status: record.progress.status,
            history: record.progress.history,
            reason: record.reason,
            stages,
            id: ids.id,
            pipeline_id: ids.pipeline_id,
            version: ids.version,
            retry_of: ids.retry_of,
            commit,
            increment: ids.increment,
            notifications: Vec::new(),
        }
    }
}

/// The record inside a detail (what `wharf run` and the CLI's tables show).
impl From<RunDetail> for RunRecord {
    fn from(d: RunDetail) -> RunRecord {
        RunRecord {
            pipeline: d.pipeline,
            number: d.number,
            cause: d.cause,
            parameters: d.parameters,
            progress: Progress { status: d.status, history: d.history },
            reason: d.reason,
            checkout: d.checkout.map(|c| CheckoutRecord {
                repo: c.repo,
                branch: c.branch,
                tag: c.tag,
                commit: c.commit,
                progress: Progress { status: c.status, history: c.history },
                reason: c.reason,
            }),
            stages: d
                .stages
                .into_iter()
                .map(|s| StageRecord {
                    name: s.name,
                    rollback: s.rollback,
                    progress: Progress { status: s.status, history: s.history },
                    reason: s.reason,
                    reused_from: s.reused_from,
                    tasks: s
                        .tasks
                        .into_iter()
                        .map(|t| TaskRecord {
                            name: t.name,
                            task_type: t.task_type,
                            progress: Progress { status: t.status, history: t.history },
                            attempts: t.attempts,
                            // The server's own note for a restart; not on the wire.
                            attempt_started: None,
                            exit_code: t.exit_code,
                            outputs: t.outputs,
                            reason: t.reason,
                            approval: t.approval,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}
