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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{Cause, StageRecord, TaskRecord};
    use std::collections::BTreeMap;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn task(name: &str, status: Status, attempts: u32) -> TaskRecord {
        let mut progress = Progress::new(at(0));
        for step in [Status::Pending, Status::Running] {
            if progress.status != status {
                progress.advance(step, at(1)).unwrap();
            }
        }
        TaskRecord {
            name: name.into(),
            task_type: "script".into(),
            progress,
            attempts,
            attempt_started: None,
            exit_code: None,
            outputs: BTreeMap::new(),
            reason: None,
            approval: None,
        }
    }

    fn record(tasks: Vec<TaskRecord>) -> RunRecord {
        let mut progress = Progress::new(at(0));
        progress.advance(Status::Running, at(1)).unwrap();
        let mut stage_progress = Progress::new(at(0));
        stage_progress.advance(Status::Running, at(1)).unwrap();
        RunRecord {
            pipeline: "p".into(),
            number: 1,
            cause: Cause::Manual { user: "admin".into() },
            parameters: BTreeMap::new(),
            progress,
            reason: None,
            checkout: None,
            stages: vec![StageRecord {
                name: "Main".into(),
                rollback: false,
                progress: stage_progress,
                reason: None,
                tasks,
                reused_from: None,
            }],
        }
    }

    #[test]
    fn an_interrupted_run_fails_what_ran_and_skips_what_had_not_started() {
        let mut run = record(vec![task("ran", Status::Running, 1), task("later", Status::Queued, 0)]);
        run.end_interrupted(at(5));
        let tasks = &run.stages[0].tasks;
        assert_eq!((tasks[0].progress.status, tasks[0].reason.as_deref()), (Status::Failed, Some(INTERRUPTED)));
        assert_eq!((tasks[1].progress.status, tasks[1].reason.as_deref()), (Status::Skipped, None));
        assert_eq!((run.progress.status, run.reason.as_deref()), (Status::Failed, Some(INTERRUPTED)));
    }

    #[test]
    fn only_a_run_waiting_for_a_slot_executed_nothing() {
        assert!(record(vec![task("a", Status::Pending, 0), task("b", Status::Queued, 0)]).executed_nothing());
        assert!(!record(vec![task("a", Status::Running, 1)]).executed_nothing());
        assert!(!record(vec![task("a", Status::Pending, 1)]).executed_nothing(), "a retry waiting for a slot ran");
    }

    #[test]
    fn an_unstarted_run_ends_with_every_part_skipped() {
        let mut run = record(vec![task("a", Status::Queued, 0)]);
        // Never taken from the queue: nothing of it started.
        run.progress = Progress::new(at(0));
        run.stages[0].progress = Progress::new(at(0));
        run.end_unstarted(Status::Stopped, "stopped by user before it started", at(5));
        assert_eq!(run.progress.status, Status::Stopped);
        assert_eq!(run.reason.as_deref(), Some("stopped by user before it started"));
        assert_eq!(run.stages[0].tasks[0].progress.status, Status::Skipped);
        assert_eq!(run.stages[0].progress.status, Status::Skipped);
    }
}
