//! Ending records the engine did not end itself: a run stopped or refused before it
//! started, and a run whose server died under it. Like the engine, these move every
//! status through [`Progress::advance`](crate::run::Progress::advance) only.

use crate::run::{Progress, RunRecord};
use crate::status::Status;
use jiff::Timestamp;

/// The reason given to what a restart cut short.
pub const INTERRUPTED: &str = "interrupted by server restart";

impl RunRecord {
    /// Ends a run that never started: the run `status` with `why`, every part skipped.
    pub fn end_unstarted(&mut self, status: Status, why: &str, now: Timestamp) {
        for stage in &mut self.stages {
            for task in &mut stage.tasks {
                let _ = task.progress.advance(Status::Skipped, now);
            }
            let _ = stage.progress.advance(Status::Skipped, now);
        }
        if let Some(c) = self.checkout.as_mut() {
            let _ = c.progress.advance(Status::Skipped, now);
        }
        if self.progress.advance(status, now).is_ok() {
            self.reason = Some(why.to_owned());
        }
    }

    /// Ends a run whose server died under it: what was running or waiting failed
    /// ([`INTERRUPTED`]), what had not started is skipped.
    pub fn end_interrupted(&mut self, now: Timestamp) {
        let settle = |progress: &mut Progress, reason: &mut Option<String>| match progress.status {
            Status::Running | Status::Pending | Status::Waiting => {
                let _ = progress.advance(Status::Failed, now);
                *reason = Some(INTERRUPTED.to_owned());
            }
            Status::Queued => {
                let _ = progress.advance(Status::Skipped, now);
            }
            _ => {}
        };
        if let Some(c) = self.checkout.as_mut() {
            settle(&mut c.progress, &mut c.reason);
        }
        for stage in &mut self.stages {
            for task in &mut stage.tasks {
                settle(&mut task.progress, &mut task.reason);
            }
            settle(&mut stage.progress, &mut stage.reason);
        }
        settle(&mut self.progress, &mut self.reason);
    }

    /// Whether the run had executed nothing: no checkout and no task past waiting for
    /// a slot (`pending`), no attempt made, nothing waiting for a person. Such a run can
    /// be queued again after a restart as if it had never been taken from the queue.
    pub fn executed_nothing(&self) -> bool {
        let waiting_only = |status: Status| matches!(status, Status::Queued | Status::Pending);
        matches!(self.progress.status, Status::Queued | Status::Pending | Status::Running)
            && self.checkout.as_ref().is_none_or(|c| waiting_only(c.progress.status))
            && self.stages.iter().all(|stage| {
                matches!(stage.progress.status, Status::Queued | Status::Pending | Status::Running)
                    && stage.tasks.iter().all(|t| waiting_only(t.progress.status) && t.attempts == 0)
            })
    }
}
