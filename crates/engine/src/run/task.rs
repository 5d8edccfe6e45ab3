//! One task: its attempts and retries, the wait for an executor slot, and how each
//! attempt's end is recorded.

use super::resume::TaskResume;
use super::stop::{ended_status, stop_requested};
use super::{RunState, StopRx};
use crate::Part;
use crate::clock::RunningClock;
use std::sync::{Arc, Mutex};
use wharf_core::model::{Task, TaskKind};
use wharf_core::status::Status;

impl RunState {
    /// One task, with its retries; returns its final status.
    pub(super) async fn task(
        self: Arc<Self>,
        s: usize,
        t: usize,
        task: Task,
        mut stop: StopRx,
        stage_clock: RunningClock,
        stage_note: Arc<Mutex<Option<String>>>,
    ) -> Status {
        let part = Part::Task(s, t);
        let (mut attempt, mut adopt) = match self.resumed_task(s, t, &task) {
            TaskResume::Ended(status) => return status,
            TaskResume::From { attempts, adopt } => (attempts, adopt),
        };
        // People decide approvals; they take no slot, no retry and no running time.
        if let TaskKind::Approval(rule) = &task.kind {
            return self.approval(s, t, &task, rule, stop, &stage_note).await;
        }
        loop {
            attempt += 1;
            if let Some(resume) = adopt.take() {
                // The attempt runs already and holds a slot of its own; take one when
                // free, never wait (it would show `pending` while it runs).
                let permit = self.slots.clone().try_acquire_owned().ok();
                let outcome =
                    self.attempt(s, t, &task, attempt, &mut stop, &stage_note, &stage_clock, Some(resume)).await;
                drop(permit);
                match self.after_attempt(s, t, &task, attempt, &stop, outcome) {
                    Some(status) => return status,
                    None => continue,
                }
            }
            if let Some(request) = *stop.borrow_and_update() {
                let status = if attempt == 1 { Status::Skipped } else { ended_status(request.reason) };
                let note = self.stop_note(request.reason, &stage_note);
                self.set(part, status, Some(note));
                return status;
            }
            let permit = match self.slots.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    self.set(part, Status::Pending, None);
                    tokio::select! {
                        // A stop frees the slot a stopped sibling held at the same
                        // moment; the stop must win, or a task starts after it.
                        biased;
                        request = stop_requested(&mut stop) => {
                            let status = ended_status(request.reason);
                            let note = self.stop_note(request.reason, &stage_note);
                            self.end_waiting(s, status, &note);
                            self.set(part, status, Some(note));
                            return status;
                        }
                        permit = self.slots.clone().acquire_owned() => permit.expect("the engine never closes its slots"),
                    }
                }
            };
            {
                let mut record = self.record.lock().unwrap();
                let status = record.stages[s].tasks[t].progress.status;
                if status.is_terminal() {
                    // A stop ended the waiting tasks while this one took its slot.
                    return status;
                }
                record.stages[s].tasks[t].attempts = attempt;
                record.stages[s].tasks[t].attempt_started = Some(jiff::Timestamp::now());
                if self.apply(&mut record, part, Status::Running, None) {
                    self.observer.changed(&record, part);
                }
            }
            let outcome = self.attempt(s, t, &task, attempt, &mut stop, &stage_note, &stage_clock, None).await;
            drop(permit);
            if let Some(status) = self.after_attempt(s, t, &task, attempt, &stop, outcome) {
                return status;
            }
        }
    }

    /// Records how an attempt ended; `None` when the task goes on with a retry.
    pub(super) fn after_attempt(
        &self,
        s: usize,
        t: usize,
        task: &Task,
        attempt: u32,
        stop: &StopRx,
        outcome: (Status, Option<String>, Option<i32>),
    ) -> Option<Status> {
        let part = Part::Task(s, t);
        let (status, reason, exit_code) = outcome;
        {
            let mut record = self.record.lock().unwrap();
            record.stages[s].tasks[t].exit_code = exit_code;
            let now = record.stages[s].tasks[t].progress.status;
            if now.is_terminal() {
                // A stop ended the task while its executor reported it pending.
                return Some(now);
            }
        }
        let retry = status == Status::Failed && attempt <= task.retries && stop.borrow().is_none();
        if retry {
            self.system(
                part,
                format!(
                    "attempt {attempt} failed ({}); retrying ({} of {})",
                    reason.as_deref().unwrap_or("failed"),
                    attempt + 1,
                    task.retries + 1
                ),
            );
            self.set(part, Status::Pending, None);
            return None;
        }
        self.set(part, status, reason);
        Some(status)
    }
}
