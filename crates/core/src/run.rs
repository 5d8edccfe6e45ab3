//! The record of one run: its status and every transition with its time, for the run,
//! the source checkout, each stage and each task. The stored record is the truth; the
//! engine changes it only through [`Progress::advance`].

use crate::status::{InvalidTransition, Status};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One status change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub status: Status,
    pub at: Timestamp,
}

/// A status with its history. Starts `queued` at creation time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub status: Status,
    pub history: Vec<Transition>,
}

impl Progress {
    pub fn new(at: Timestamp) -> Self {
        Progress { status: Status::Queued, history: vec![Transition { status: Status::Queued, at }] }
    }

    /// Moves to `to` at `at`; refuses a change the state machine does not allow.
    pub fn advance(&mut self, to: Status, at: Timestamp) -> Result<(), InvalidTransition> {
        self.status = self.status.transition(to)?;
        self.history.push(Transition { status: to, at });
        Ok(())
    }

    /// When it first started running.
    pub fn started_at(&self) -> Option<Timestamp> {
        self.history.iter().find(|t| t.status == Status::Running).map(|t| t.at)
    }

    /// When it reached its terminal status.
    pub fn finished_at(&self) -> Option<Timestamp> {
        self.history.last().filter(|t| t.status.is_terminal()).map(|t| t.at)
    }

    /// Time spent `running` (what timeouts count), up to `now` if still running.
    pub fn running_time(&self, now: Timestamp) -> std::time::Duration {
        let mut total = std::time::Duration::ZERO;
        for (i, t) in self.history.iter().enumerate() {
            if t.status != Status::Running {
                continue;
            }
            let end = self.history.get(i + 1).map_or(now, |next| next.at);
            total += end.duration_since(t.at).unsigned_abs();
        }
        total
    }

    /// Wall time from first start to finish (or `now`).
    pub fn wall_time(&self, now: Timestamp) -> Option<std::time::Duration> {
        let start = self.started_at()?;
        let end = self.finished_at().unwrap_or(now);
        Some(end.duration_since(start).unsigned_abs())
    }
}

/// What started a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cause {
    /// `wharf run` on a workstation.
    Local { user: String },
    /// A person through the UI, API or CLI.
    Manual { user: String },
    /// A timer trigger, with the due time it fired for.
    Timer { due: Timestamp },
    /// A git event. `fork`: a pull/merge request from a fork, whose code nobody with
    /// rights on the repository has vetted: such a run gets no secrets.
    Event {
        provider: String,
        delivery: String,
        sender: String,
        commit: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        fork: bool,
    },
    /// A re-run of record #`of` with its version, parameters and commit.
    Rerun { of: u64 },
    /// A retry of record #`of` from its failed stage.
    Retry { of: u64 },
    /// A message on `channel`, sent by run #`number` of pipeline `pipeline` (its
    /// values are the run's parameters).
    Channel { channel: String, pipeline: String, number: u64 },
}

impl Cause {
    /// Whether the run may be given secrets: not when a fork's pull request started
    /// it (its code could print them). Whoever supplies secrets to runs asks this.
    pub fn gets_secrets(&self) -> bool {
        !matches!(self, Cause::Event { fork: true, .. })
    }

    /// The `RUN_CAUSE` variable's value.
    pub fn describe(&self) -> String {
        match self {
            Cause::Local { user } => format!("local run by {user}"),
            Cause::Manual { user } => format!("started by {user}"),
            Cause::Timer { due } => format!("timer due {due}"),
            Cause::Event { provider, sender, commit, fork: false, .. } => {
                format!("{provider} event by {sender} at {commit}")
            }
            Cause::Event { provider, sender, commit, fork: true, .. } => {
                format!("{provider} event by {sender} at {commit}, from a fork (no secrets)")
            }
            Cause::Rerun { of } => format!("re-run of #{of}"),
            Cause::Retry { of } => format!("retry of #{of}"),
            Cause::Channel { channel, pipeline, number } => {
                format!("message on channel {channel} from {pipeline}#{number}")
            }
        }
    }
}

/// One run of a pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub pipeline: String,
    /// `BUILD_ID`: 1, 2, 3… per pipeline.
    pub number: u64,
    pub cause: Cause,
    pub parameters: BTreeMap<String, String>,
    #[serde(flatten)]
    pub progress: Progress,
    /// Why the run ended as it did, in words, when it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout: Option<CheckoutRecord>,
    pub stages: Vec<StageRecord>,
}

/// The source checkout before the first stage (the seed's `Scm_Clone_<branch>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutRecord {
    pub repo: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The tag checked out instead of a branch (a tag event); `GIT_TAG`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(flatten)]
    pub progress: Progress,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredStage")]
pub struct StageRecord {
    pub name: String,
    /// True for the pipeline's `on_failure` stages.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
    #[serde(flatten)]
    pub progress: Progress,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The earlier run where this stage succeeded, when a retry took it over from there
    /// instead of running it (the stage is `skipped`, its reason is [`reused_reason`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<u64>,
    pub tasks: Vec<TaskRecord>,
}

/// The reason of a stage, and of its tasks, that a retry took over from run `number`
/// where it succeeded: "succeeded in run #3".
pub fn reused_reason(number: u64) -> String {
    format!("{REUSED}{number}")
}

const REUSED: &str = "succeeded in run #";

/// A stage as stored. Records written before `reused_from` existed say that a stage
/// was taken over only in its reason text; reading them fills `reused_from` from it,
/// so that nothing after the load reads reason text.
#[derive(Deserialize)]
struct StoredStage {
    name: String,
    #[serde(default)]
    rollback: bool,
    #[serde(flatten)]
    progress: Progress,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    reused_from: Option<u64>,
    tasks: Vec<TaskRecord>,
}

impl From<StoredStage> for StageRecord {
    fn from(stored: StoredStage) -> Self {
        let StoredStage { name, rollback, progress, reason, reused_from, tasks } = stored;
        let reused_from = reused_from.or_else(|| {
            let number = reason.as_deref()?.strip_prefix(REUSED)?;
            (progress.status == Status::Skipped).then(|| number.parse().ok()).flatten()
        });
        StageRecord { name, rollback, progress, reason, reused_from, tasks }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub task_type: String,
    #[serde(flatten)]
    pub progress: Progress,
    /// Attempts started so far (1 + retries used).
    pub attempts: u32,
    /// When the current attempt began (its executor slot taken): its output lines are
    /// the ones stamped from then on, whatever `pending` spells it had since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_started: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// An `approval` task's question and the decisions given, from the time it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRecord>,
}

/// What an `approval` task asks and what was decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// The task's `message`, rendered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub approvers: Vec<String>,
    pub required: u32,
    /// In the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<crate::approval::Decision>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    #[test]
    fn only_running_time_counts() {
        let mut p = Progress::new(at(0));
        p.advance(Status::Pending, at(10)).unwrap();
        p.advance(Status::Running, at(30)).unwrap();
        p.advance(Status::Pending, at(35)).unwrap(); // retry waits for a slot
        p.advance(Status::Running, at(100)).unwrap();
        assert_eq!(p.running_time(at(102)).as_secs(), 7);
        p.advance(Status::Succeeded, at(103)).unwrap();
        assert_eq!(p.running_time(at(999)).as_secs(), 8);
        assert_eq!(p.started_at(), Some(at(30)));
        assert_eq!(p.finished_at(), Some(at(103)));
        assert_eq!(p.wall_time(at(999)).unwrap().as_secs(), 73);
    }

    #[test]
    fn advance_refuses_what_the_machine_refuses_and_keeps_history_intact() {
        let mut p = Progress::new(at(0));
        p.advance(Status::Running, at(1)).unwrap();
        p.advance(Status::Failed, at(2)).unwrap();
        let err = p.advance(Status::Running, at(3)).unwrap_err();
        assert_eq!(err.from, Status::Failed);
        assert_eq!(p.status, Status::Failed);
        assert_eq!(p.history.len(), 3);
    }

    #[test]
    fn records_serialise_with_flat_status() {
        let mut task = TaskRecord {
            name: "unit".into(),
            task_type: "script".into(),
            progress: Progress::new(at(0)),
            attempts: 1,
            attempt_started: None,
            exit_code: Some(0),
            outputs: BTreeMap::from([("V".into(), "1".into())]),
            reason: None,
            approval: None,
        };
        task.progress.advance(Status::Running, at(1)).unwrap();
        let json = serde_json::to_value(&task).unwrap();
        assert_eq!(json["status"], "running");
        assert_eq!(json["type"], "script");
        assert_eq!(json["history"][1]["status"], "running");
        let back: TaskRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, task);
    }

    fn reused_stage(reused_from: Option<u64>) -> StageRecord {
        let mut progress = Progress::new(at(0));
        progress.advance(Status::Skipped, at(1)).unwrap();
        StageRecord {
            name: "build".into(),
            rollback: false,
            progress,
            reason: Some(reused_reason(3)),
            reused_from,
            tasks: Vec::new(),
        }
    }

    #[test]
    fn a_reused_stage_says_where_it_ran_in_a_field_and_in_words() {
        let stage = reused_stage(Some(3));
        let json = serde_json::to_value(&stage).unwrap();
        assert_eq!(json["reused_from"], 3);
        assert_eq!(json["reason"], "succeeded in run #3");
        assert_eq!(serde_json::from_value::<StageRecord>(json).unwrap(), stage);

        let mut ran = stage.clone();
        ran.reused_from = None;
        ran.reason = None;
        let json = serde_json::to_value(&ran).unwrap();
        assert!(json.get("reused_from").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<StageRecord>(json).unwrap(), ran);
    }

    #[test]
    fn records_stored_before_reused_from_are_read_from_their_reason() {
        let mut old = serde_json::to_value(reused_stage(None)).unwrap();
        assert!(old.get("reused_from").is_none());
        assert_eq!(serde_json::from_value::<StageRecord>(old.clone()).unwrap().reused_from, Some(3));
        // Only a skipped stage whose reason is exactly the words was taken over.
        old["reason"] = "succeeded in run #3 or so".into();
        assert_eq!(serde_json::from_value::<StageRecord>(old.clone()).unwrap().reused_from, None);
        old["reason"] = "succeeded in run #3".into();
        old["status"] = "failed".into();
        assert_eq!(serde_json::from_value::<StageRecord>(old).unwrap().reused_from, None);
    }
}
