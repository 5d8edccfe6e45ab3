//! Approvals on the lifecycle's side: each run gets an
//! [`ApprovalGate`](wharf_engine::approval::ApprovalGate) that reads the stored
//! decisions of its task and waits for the next one; [`Lifecycle::decide`] checks a
//! person's decision against the task's rule (`wharf_core::approval`), stores it and
//! wakes the task. The decisions live in the store, so a restarted server's task finds
//! those given before.

use crate::Lifecycle;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use wharf_core::approval::{Decider, Decision, Refused, Verdict, may_decide, outcome};
use wharf_core::model::ApprovalTask;
use wharf_core::run::{Cause, RunRecord};
use wharf_core::status::Status;
use wharf_engine::approval::{ApprovalAsk, ApprovalGate};
use wharf_executor::BoxFuture;
use wharf_store::{Store, StoreError};

/// Wakes the waiting approval tasks, by (run id, decision key: the task's name, or
/// `<task>@<percent>%` for a canary's step).
#[derive(Default)]
pub(crate) struct Desk {
    waiting: Mutex<HashMap<(i64, String), Arc<Notify>>>,
}

impl Desk {
    pub(crate) fn bell(&self, run_id: i64, task: &str) -> Arc<Notify> {
        self.waiting.lock().unwrap().entry((run_id, task.to_owned())).or_default().clone()
    }

    pub(crate) fn ring(&self, run_id: i64, task: &str) {
        if let Some(bell) = self.waiting.lock().unwrap().get(&(run_id, task.to_owned())) {
            bell.notify_waiters();
        }
    }

    /// Rings every bell of run `run_id` (a decision or signal stored by another
    /// replica: each woken wait reads the store again).
    pub(crate) fn ring_run(&self, run_id: i64) {
        for ((run, _), bell) in self.waiting.lock().unwrap().iter() {
            if *run == run_id {
                bell.notify_waiters();
            }
        }
    }

    pub(crate) fn done(&self, run_id: i64, task: &str) {
        self.waiting.lock().unwrap().remove(&(run_id, task.to_owned()));
    }
}

/// Removes a task's bell when its wait ends.
pub(crate) struct Leave {
    pub(crate) desk: Arc<Desk>,
    pub(crate) run_id: i64,
    pub(crate) task: String,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.desk.done(self.run_id, &self.task);
    }
}

/// The gate of one run.
pub(crate) struct RunGate {
    pub(crate) run_id: i64,
    pub(crate) store: Store,
    pub(crate) desk: Arc<Desk>,
}

impl ApprovalGate for RunGate {
    fn decided(&self, ask: ApprovalAsk) -> BoxFuture<'static, Result<Vec<Decision>, String>> {
        let (run_id, store, desk) = (self.run_id, self.store.clone(), self.desk.clone());
        Box::pin(async move {
            let bell = desk.bell(run_id, &ask.task);
            // The bell goes however the wait ends: decided, or dropped by the engine
            // (a stop, the task's timeout).
            let _leave = Leave { desk: desk.clone(), run_id, task: ask.task.clone() };
            loop {
                let rung = bell.notified();
                tokio::pin!(rung);
                // Registered before the store is read, so a decision stored in between
                // still wakes this loop.
                rung.as_mut().enable();
                let decisions = match store.decisions(run_id, &ask.task).await {
                    Ok(decisions) => decisions,
                    Err(e) => return Err(format!("cannot read the approval's decisions: {e}")),
                };
                if outcome(&ask.rule, &decisions).is_some() {
                    return Ok(decisions);
                }
                rung.await;
            }
        })
    }
}

/// The person deciding, as the caller (the server) knows them.
#[derive(Clone, Debug)]
pub struct Person {
    pub user: String,
    /// `admin`, `manager` or `user`.
    pub role: String,
    pub admin: bool,
}

/// Why a decision was not taken.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// The run has no task of that name, or it is neither an approval nor a canary.
    #[error("{0}")]
    NotFound(String),
    /// The task is not waiting for a decision (not started, or decided), or this
    /// person decided already.
    #[error("{0}")]
    NotWaiting(String),
    /// This person may not decide (not an approver, or the starter rule).
    #[error(transparent)]
    Refused(Refused),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A task of a run that waits for a decision, as listed for the people who may give it.
#[derive(Clone, Debug)]
pub struct WaitingApproval {
    pub run_id: i64,
    pub pipeline_id: i64,
    pub record: RunRecord,
    pub stage: String,
    pub task: String,
    pub rule: ApprovalTask,
    pub decisions: Vec<Decision>,
    /// When it started waiting.
    pub since: Option<jiff::Timestamp>,
}

/// Who started the run, when a person did whose name is a user here.
pub fn starter(cause: &Cause) -> Option<&str> {
    match cause {
        Cause::Manual { user } | Cause::Local { user } => Some(user),
        _ => None,
    }
}

impl Lifecycle {
    pub(crate) fn gate(&self, run_id: i64) -> Arc<dyn ApprovalGate> {
        Arc::new(RunGate { run_id, store: self.store().clone(), desk: self.0.approvals.clone() })
    }

    /// Takes `who`'s `verdict` on approval task `task` of run `run_id` (or on the step
    /// a `canary` task with `approval: true` waits at); returns every decision on it so
    /// far. The caller has checked that `who` may see the run.
    pub async fn decide(
        &self,
        run_id: i64,
        task: &str,
        who: &Person,
        verdict: Verdict,
        comment: &str,
    ) -> Result<Vec<Decision>, DecideError> {
        let row = self.store().run(run_id).await?;
        let number = row.summary.number;
        let found = row.record.stages.iter().flat_map(|s| &s.tasks).find(|t| t.name == task);
        // An `approval` task, or a `canary` that asks between its steps.
        let Some(found) = found.filter(|t| t.task_type == "approval" || t.task_type == "canary") else {
            return Err(DecideError::NotFound(format!("run #{number} has no approval or canary task `{task}`")));
        };
        let (Status::Waiting, Some(asked)) = (found.progress.status, found.approval.as_ref()) else {
            return Err(DecideError::NotWaiting(format!(
                "task `{task}` of run #{number} is not waiting for a decision (it is {})",
                found.progress.status
            )));
        };
        let rule = ApprovalTask {
            approvers: asked.approvers.clone(),
            message: asked.message.clone(),
            required: asked.required,
        };
        // A canary's steps are decided one by one, each under its own key.
        let key = asked.decision_key(task);
        let so_far = self.store().decisions(run_id, &key).await?;
        let decider = Decider { user: &who.user, role: &who.role, admin: who.admin };
        may_decide(&rule, &decider, starter(&row.record.cause), verdict, &so_far).map_err(|refused| match refused {
            Refused::AlreadyDecided { .. } => DecideError::NotWaiting(refused.to_string()),
            refused => DecideError::Refused(refused),
        })?;
        let decision =
            Decision { user: who.user.clone(), verdict, comment: comment.to_owned(), at: jiff::Timestamp::now() };
        if !self.store().add_decision(run_id, &key, &decision).await? {
            return Err(DecideError::NotWaiting(format!("`{}` already decided on this task", who.user)));
        }
        tracing::info!(run = run_id, task = key, user = %who.user, verdict = verdict.as_str(), "approval decision");
        self.0.approvals.ring(run_id, &key);
        self.announce_run(run_id).await;
        Ok(self.store().decisions(run_id, &key).await?)
    }

    /// Every approval task that waits now, with its run (the runs in progress only).
    pub async fn waiting_approvals(&self) -> Result<Vec<WaitingApproval>, StoreError> {
        let mut out = Vec::new();
        for row in self.store().runs_with_status(&[Status::Running]).await? {
            for stage in &row.record.stages {
                for task in &stage.tasks {
                    let (Status::Waiting, Some(asked)) = (task.progress.status, &task.approval) else { continue };
                    out.push(WaitingApproval {
                        run_id: row.summary.id,
                        pipeline_id: row.summary.pipeline_id,
                        record: row.record.clone(),
                        stage: stage.name.clone(),
                        task: task.name.clone(),
                        rule: ApprovalTask {
                            approvers: asked.approvers.clone(),
                            message: asked.message.clone(),
                            required: asked.required,
                        },
                        decisions: self.store().decisions(row.summary.id, &asked.decision_key(&task.name)).await?,
                        since: task.progress.history.iter().rev().find(|h| h.status == Status::Waiting).map(|h| h.at),
                    });
                }
            }
        }
        Ok(out)
    }
}
