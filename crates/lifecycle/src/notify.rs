//! The seam through which the lifecycle says what notifications are about: a run
//! ended (its final record stored), or an approval task started waiting. The server
//! plugs in its [`Notifier`] (webhooks, e-mail, the stored attempts); the lifecycle
//! never sends anything itself and never waits for it.

use wharf_core::run::RunRecord;

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunEventKind {
    /// The run ended; the record is final and stored. Also sent for a run that could
    /// not start (its `reason` says why) and for one a server restart interrupted.
    Ended,
    /// Approval task `task` of stage `stage` started waiting for people.
    Waiting { stage: String, task: String },
    /// Stage `stage` ended (for the stage's own `notify`); the record is as of then.
    StageEnded { stage: String },
}

#[derive(Clone, Debug)]
pub struct RunEvent {
    pub run_id: i64,
    /// The run's pipeline and the version it runs: where its notifications are
    /// written, so a notifier need not read the run back.
    pub pipeline_id: i64,
    pub version: i64,
    pub record: RunRecord,
    pub kind: RunEventKind,
}

/// Receives the events. Contract: `notify` returns at once (it hands the work to a
/// task of its own); what it sends, and whether that fails, never changes the run.
pub trait Notifier: Send + Sync {
    fn notify(&self, event: RunEvent);
}
