//! Record bookkeeping: the record a run starts from, and the one place that changes
//! a part of it and tells the observer (alone, or several parts in one step).

use super::RunState;
use crate::{GitRef, Part, RunRequest, Workspace};
use jiff::Timestamp;
use std::collections::BTreeMap;
use wharf_core::model::Stage;
use wharf_core::run::{CheckoutRecord, Progress, RunRecord, StageRecord, TaskRecord};
use wharf_core::status::Status;

/// The record of a run that has not started: `queued` at `request.created_at`, every
/// stage and task `queued`. The server stores it when a run is accepted; the engine
/// starts from it.
pub fn initial_record(request: &RunRequest) -> RunRecord {
    if let Some(resume) = &request.resume
        && resume.reattach.is_some()
    {
        return resume.previous.clone();
    }
    let now = request.created_at.unwrap_or_else(Timestamp::now);
    RunRecord {
        pipeline: request.pipeline.name.to_string(),
        number: request.number,
        cause: request.cause.clone(),
        parameters: request.parameters.clone(),
        progress: Progress::new(now),
        reason: None,
        checkout: match (&request.workspace, &request.pipeline.source, &request.resume) {
            (_, Some(_), Some(resume)) => resume.previous.checkout.clone().map(|c| CheckoutRecord {
                progress: Progress::new(now),
                reason: None,
                ..c
            }),
            (Workspace::Checkout { .. }, Some(source), None) => Some(CheckoutRecord {
                repo: source.repo.clone(),
                branch: match &request.git_ref {
                    Some(GitRef::Branch(branch)) => Some(branch.clone()),
                    Some(GitRef::Tag(_)) => None,
                    None => source.branch.clone(),
                },
                tag: match &request.git_ref {
                    Some(GitRef::Tag(tag)) => Some(tag.clone()),
                    _ => None,
                },
                commit: None,
                progress: Progress::new(now),
                reason: None,
            }),
            _ => None,
        },
        stages: request.pipeline.stages.iter().map(|s| stage_record(s, false, now)).collect(),
    }
}

pub(super) fn stage_record(stage: &Stage, rollback: bool, now: Timestamp) -> StageRecord {
    StageRecord {
        name: stage.name.to_string(),
        rollback,
        progress: Progress::new(now),
        reason: None,
        reused_from: None,
        tasks: stage
            .tasks
            .iter()
            .map(|t| TaskRecord {
                name: t.name.to_string(),
                task_type: t.kind.type_name().to_owned(),
                progress: Progress::new(now),
                attempts: 0,
                attempt_started: None,
                exit_code: None,
                outputs: BTreeMap::new(),
                reason: None,
                approval: None,
            })
            .collect(),
    }
}

pub(super) fn status_in(record: &RunRecord, part: Part) -> Status {
    match part {
        Part::Run => record.progress.status,
        Part::Checkout => record.checkout.as_ref().map_or(Status::Skipped, |c| c.progress.status),
        Part::Stage(s) => record.stages[s].progress.status,
        Part::Task(s, t) => record.stages[s].tasks[t].progress.status,
    }
}

impl RunState {
    pub(super) fn notify(&self, part: Part) {
        let record = self.record.lock().unwrap();
        self.observer.changed(&record, part);
    }

    /// Applies a status change to one part of the record and tells the observer.
    pub(super) fn set(&self, part: Part, status: Status, reason: Option<String>) {
        let mut guard = self.record.lock().unwrap();
        if self.apply(&mut guard, part, status, reason) {
            self.observer.changed(&guard, part);
        }
    }

    /// A running attempt's phase as its executor reports it: `pending` with what it
    /// waits for as the task's reason, or `running` again (the reason cleared). A task a
    /// stop has ended already keeps its end.
    pub(super) fn set_phase(&self, part: Part, status: Status, reason: Option<String>) {
        let Part::Task(s, t) = part else { return };
        let mut guard = self.record.lock().unwrap();
        let task = &guard.stages[s].tasks[t];
        let reason = reason.map(|r| self.masker.mask(&r));
        if task.progress.status.is_terminal() || (task.progress.status == status && task.reason == reason) {
            return;
        }
        self.apply(&mut guard, part, status, None);
        guard.stages[s].tasks[t].reason = reason;
        self.observer.changed(&guard, part);
    }

    /// Applies a status change to one part of `record`; false when nothing changed.
    pub(super) fn apply(&self, record: &mut RunRecord, part: Part, status: Status, reason: Option<String>) -> bool {
        let now = Timestamp::now();
        let (progress, slot) = match part {
            Part::Run => (&mut record.progress, &mut record.reason),
            Part::Checkout => {
                let Some(c) = record.checkout.as_mut() else { return false };
                (&mut c.progress, &mut c.reason)
            }
            Part::Stage(s) => {
                let stage = &mut record.stages[s];
                (&mut stage.progress, &mut stage.reason)
            }
            Part::Task(s, t) => {
                let task = &mut record.stages[s].tasks[t];
                (&mut task.progress, &mut task.reason)
            }
        };
        if progress.status == status {
            return false;
        }
        if let Err(err) = progress.advance(status, now) {
            // A bug, not a user error: keep the run going and leave a trace.
            debug_assert!(false, "{err}");
            return false;
        }
        if let Some(reason) = reason {
            *slot = Some(self.masker.mask(&reason));
        }
        true
    }

    /// Ends every task of stage `s` still waiting for a slot, in one change: a stop
    /// of a stage of many tasks is one update, not one per task. Each waiting task
    /// then finds its status already set.
    pub(super) fn end_waiting(&self, s: usize, status: Status, reason: &str) {
        let mut guard = self.record.lock().unwrap();
        let waiting: Vec<Part> = (0..guard.stages[s].tasks.len())
            .filter(|t| guard.stages[s].tasks[*t].progress.status == Status::Pending)
            .map(|t| Part::Task(s, t))
            .collect();
        let changed: Vec<Part> =
            waiting.into_iter().filter(|part| self.apply(&mut guard, *part, status, Some(reason.to_owned()))).collect();
        if !changed.is_empty() {
            self.observer.changed_parts(&guard, &changed);
        }
    }

    pub(super) fn status_of(&self, part: Part) -> Status {
        status_in(&self.record.lock().unwrap(), part)
    }

    /// Skips what has not ended in the stages from `first` on, as one change.
    pub(super) fn skip_stages_from(&self, first: usize) {
        let mut guard = self.record.lock().unwrap();
        let mut changed = Vec::new();
        for s in first..guard.stages.len() {
            let parts = (0..guard.stages[s].tasks.len()).map(|t| Part::Task(s, t)).chain([Part::Stage(s)]);
            for part in parts {
                if !status_in(&guard, part).is_terminal() && self.apply(&mut guard, part, Status::Skipped, None) {
                    changed.push(part);
                }
            }
        }
        if !changed.is_empty() {
            self.observer.changed_parts(&guard, &changed);
        }
    }
}
