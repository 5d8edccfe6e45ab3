//! `approval` tasks: the task goes `running` → `waiting` with its question in the
//! record, and waits for the run's [`ApprovalGate`](crate::approval::ApprovalGate),
//! its own `timeout` or a stop. It holds no executor slot and no running clock: the
//! wait counts against neither the pipeline's nor the stage's timeout. A re-attached
//! run's task that was waiting goes on waiting, the time already waited counted.

use super::stop::{ended_status, stop_requested};
use super::variables::render_field;
use super::{RunState, StopRx};
use crate::Part;
use crate::approval::ApprovalAsk;
use jiff::Timestamp;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wharf_core::approval::{Outcome, outcome};
use wharf_core::model::{ApprovalTask, Task};
use wharf_core::run::ApprovalRecord;
use wharf_core::status::Status;

impl RunState {
    /// Waits for the decision on approval task `t` of stage `s`; returns its final status.
    pub(super) async fn approval(
        self: &Arc<Self>,
        s: usize,
        t: usize,
        task: &Task,
        rule: &ApprovalTask,
        mut stop: StopRx,
        stage_note: &Mutex<Option<String>>,
    ) -> Status {
        let part = Part::Task(s, t);
        let fail = |why: String| {
            self.system(part, &why);
            self.set(part, Status::Failed, Some(why));
            Status::Failed
        };
        let resumed = self.status_of(part) == Status::Waiting;
        if !resumed && let Some(request) = *stop.borrow_and_update() {
            self.set(part, Status::Skipped, Some(self.stop_note(request.reason, stage_note)));
            return Status::Skipped;
        }
        let Some(gate) = self.request.approvals.clone() else {
            return fail("`approval` tasks need the Wharf server (approvals are given in the UI, API or CLI)".into());
        };
        let asked = if resumed {
            let record = self.record.lock().unwrap();
            let asked = record.stages[s].tasks[t].approval.clone();
            asked.map(|a| ApprovalTask { approvers: a.approvers, message: a.message, required: a.required })
        } else {
            None
        };
        let asked = match asked {
            Some(asked) => asked,
            None => {
                let message = match &rule.message {
                    Some(text) => match render_field(&self.scope.lock().unwrap(), "message", text) {
                        Ok(message) => Some(message),
                        Err(e) => return fail(e.to_string()),
                    },
                    None => None,
                };
                let asked = ApprovalTask { message, ..rule.clone() };
                let mut record = self.record.lock().unwrap();
                record.stages[s].tasks[t].attempts = 1;
                record.stages[s].tasks[t].approval = Some(ApprovalRecord {
                    message: asked.message.clone(),
                    approvers: asked.approvers.clone(),
                    required: asked.required,
                    decisions: vec![],
                    canary: None,
                });
                for status in [Status::Running, Status::Waiting] {
                    if self.apply(&mut record, part, status, None) {
                        self.observer.changed(&record, part);
                    }
                }
                asked
            }
        };
        let needed = match asked.required {
            1 => "one approval".to_owned(),
            n => format!("{n} approvals"),
        };
        self.system(
            part,
            format!(
                "{} for {needed} (approvers: {}; administrators may always decide){}",
                if resumed { "still waiting, after a server restart," } else { "waiting" },
                asked.approvers.join(", "),
                asked.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
            ),
        );
        // The time waited before a restart counts against the task's own timeout.
        let waited = if resumed {
            let record = self.record.lock().unwrap();
            let since = record.stages[s].tasks[t].progress.history.iter().rev().find(|h| h.status == Status::Waiting);
            since.and_then(|h| Timestamp::now().duration_since(h.at).try_into().ok()).unwrap_or_default()
        } else {
            Duration::ZERO
        };
        let limit = task.timeout.map_or(Duration::MAX / 4, |d| d.as_std().saturating_sub(waited));
        let stage = self.record.lock().unwrap().stages[s].name.clone();
        let decided = gate.decided(ApprovalAsk { stage, task: task.name.to_string(), rule: asked.clone() });
        let (status, reason) = tokio::select! {
            biased;
            request = stop_requested(&mut stop) => {
                (ended_status(request.reason), Some(self.stop_note(request.reason, stage_note)))
            }
            _ = tokio::time::sleep(limit), if task.timeout.is_some() => {
                let limit = task.timeout.map(|d| d.to_string()).unwrap_or_default();
                (Status::TimedOut, Some(format!("timed out: nobody decided within the task timeout of {limit}")))
            }
            result = decided => match result {
                Err(why) => (Status::Failed, Some(why)),
                Ok(decisions) => {
                    let ended = match outcome(&asked, &decisions) {
                        Some(Outcome::Approved(by)) => {
                            self.system(part, format!("approved by {}", by.join(", ")));
                            (Status::Succeeded, None)
                        }
                        Some(Outcome::Rejected { by, comment }) => {
                            let why = if comment.is_empty() {
                                format!("rejected by {by}")
                            } else {
                                format!("rejected by {by}: {comment}")
                            };
                            self.system(part, &why);
                            (Status::Failed, Some(why))
                        }
                        None => (Status::Failed, Some("the approval ended without a decision".to_owned())),
                    };
                    if let Some(approval) = self.record.lock().unwrap().stages[s].tasks[t].approval.as_mut() {
                        approval.decisions = decisions;
                    }
                    ended
                }
            },
        };
        if status != Status::Succeeded && status != Status::Failed {
            self.system(part, reason.clone().unwrap_or_default());
        }
        self.set(part, status, reason);
        status
    }
}
