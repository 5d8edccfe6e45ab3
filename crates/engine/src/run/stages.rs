//! Stages in order with their error policies, the rollback stages, one stage with its
//! timeout, and its tasks one after the other or all at once.

use super::record::stage_record;
use super::stop::{ended_status, forward};
use super::{RunState, StopRx};
use crate::Part;
use crate::clock::RunningClock;
use jiff::Timestamp;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use tokio::sync::watch;
use wharf_core::model::{ErrorPolicy, Mode, Stage};
use wharf_core::status::Status;
use wharf_executor::{StopReason, StopRequest};

impl RunState {
    /// Runs the stages in order with their error policies; returns the run's outcome.
    pub(super) async fn stages(self: Arc<Self>, run_rx: StopRx) -> (Status, Option<String>) {
        let pipeline = self.request.pipeline.clone();
        let mut outcome: (Status, Option<String>) = (Status::Succeeded, None);
        let mut ignored = Vec::new();
        for (s, stage) in pipeline.stages.iter().enumerate() {
            let status = match self.resumed_stage(s, stage) {
                Some(status) => {
                    if let (Some(wait), Some(_)) =
                        (&stage.wait, self.request.resume.as_ref().and_then(|r| r.reattach.as_ref()))
                    {
                        self.restore_signals(stage, wait).await;
                    }
                    status
                }
                None => {
                    if run_rx.borrow().is_some() {
                        self.skip_stages_from(s);
                        return (Status::Stopped, None);
                    }
                    self.clone().stage(s, stage, run_rx.clone()).await
                }
            };
            if status == Status::Succeeded {
                if let Some(channel) = &stage.send
                    && self.request.resume.as_ref().is_none_or(|r| s >= r.from_stage)
                {
                    self.send_outputs(channel, stage.tasks.iter().map(|t| t.name.as_str())).await;
                }
                continue;
            }
            if matches!(status, Status::Stopped) || self.run_end.lock().unwrap().is_some() {
                self.skip_stages_from(s + 1);
                return (status, None);
            }
            let why = self.record.lock().unwrap().stages[s].reason.clone().unwrap_or_default();
            match stage.on_error {
                ErrorPolicy::Ignore => {
                    self.system_run(format!(
                        "stage `{}` {status} and its error policy is `ignore`; carrying on",
                        stage.name
                    ));
                    ignored.push(stage.name.to_string());
                }
                ErrorPolicy::Stop => {
                    self.skip_stages_from(s + 1);
                    return (status, Some(format!("stage `{}` {status}: {why}", stage.name)));
                }
                ErrorPolicy::Rollback => {
                    self.skip_stages_from(s + 1);
                    outcome = (status, Some(format!("stage `{}` {status}: {why}; rolled back", stage.name)));
                    let rollback = self.clone().rollback(run_rx.clone()).await;
                    if let Some(problem) = rollback {
                        outcome.1 = Some(format!("stage `{}` {status}: {why}; the rollback {problem}", stage.name));
                    }
                    return outcome;
                }
            }
        }
        if !ignored.is_empty() {
            outcome.1 = Some(format!("succeeded with failed stages ignored: {}", ignored.join(", ")));
        }
        outcome
    }

    /// Runs the `on_failure` stages; returns a description when they did not succeed.
    pub(super) async fn rollback(self: Arc<Self>, run_rx: StopRx) -> Option<String> {
        let pipeline = self.request.pipeline.clone();
        if pipeline.on_failure.is_empty() {
            return None;
        }
        let first = {
            let now = Timestamp::now();
            let mut record = self.record.lock().unwrap();
            let first = record.stages.len();
            record.stages.extend(pipeline.on_failure.iter().map(|s| stage_record(s, true, now)));
            first
        };
        self.notify(Part::Run);
        for (i, stage) in pipeline.on_failure.iter().enumerate() {
            let s = first + i;
            if run_rx.borrow().is_some() {
                self.skip_stages_from(s);
                return Some("was stopped".into());
            }
            let status = self.clone().stage(s, stage, run_rx.clone()).await;
            if status != Status::Succeeded && stage.on_error != ErrorPolicy::Ignore {
                self.skip_stages_from(s + 1);
                return Some(format!("stage `{}` {status}", stage.name));
            }
        }
        None
    }

    pub(super) async fn stage(self: Arc<Self>, s: usize, stage: &Stage, mut run_rx: StopRx) -> Status {
        if let Some(wait) = &stage.wait
            && let Err(status) = self.wait_for_signals(s, stage, wait, run_rx.clone()).await
        {
            let skipped: Vec<Part> = (0..stage.tasks.len()).map(|t| Part::Task(s, t)).collect();
            for part in skipped {
                self.set(part, Status::Skipped, None);
            }
            return status;
        }
        self.set(Part::Stage(s), Status::Running, None);
        let (stage_tx, stage_rx) = watch::channel(*run_rx.borrow_and_update());
        // A stage's running time is what it would take with enough executor slots. In a
        // sequential stage that is the running time of its tasks together (one shared
        // clock); in a parallel stage it is the longest running time of any one task (a
        // clock per task), so a task that waits `pending` for the slot a sibling holds
        // is not charged for the sibling's running time (DESIGN.md §3).
        let clocks: Vec<RunningClock> = match stage.mode {
            Mode::Sequential => vec![RunningClock::default(); stage.tasks.len()],
            Mode::Parallel => stage.tasks.iter().map(|_| RunningClock::default()).collect(),
        };
        let note: Arc<Mutex<Option<String>>> = Arc::default();
        let watch_stage = {
            let note = note.clone();
            let clocks = clocks.clone();
            let grace = self.config.timeout_grace;
            let limit = stage.timeout;
            let stage_tx = &stage_tx;
            async move {
                let timeout = async {
                    if let Some(limit) = limit {
                        let mut expiries: Vec<_> =
                            clocks.iter().map(|clock| Box::pin(clock.expired(limit.as_std()))).collect();
                        std::future::poll_fn(|cx| {
                            if expiries.iter_mut().any(|e| e.as_mut().poll(cx).is_ready()) {
                                Poll::Ready(())
                            } else {
                                Poll::Pending
                            }
                        })
                        .await;
                        *note.lock().unwrap() = Some(format!("timed out: the stage timeout of {limit} ran out"));
                        stage_tx.send_if_modified(|current| {
                            let idle = current.is_none();
                            if idle {
                                *current = Some(StopRequest { reason: StopReason::TimedOut, grace });
                            }
                            idle
                        });
                    }
                    std::future::pending::<()>().await
                };
                tokio::join!(forward(run_rx, stage_tx), timeout);
            }
        };
        let seen = stage_rx.clone();
        let tasks = self.clone().stage_tasks(s, stage, stage_rx, clocks, note.clone());
        let statuses = tokio::select! {
            statuses = tasks => statuses,
            _ = watch_stage => unreachable!("the stage watchdog never ends"),
        };
        let ended_early = statuses.iter().all(|st| *st == Status::Skipped) && !statuses.is_empty();
        let worst = [Status::Stopped, Status::TimedOut, Status::Failed]
            .into_iter()
            .find(|bad| statuses.contains(bad))
            .unwrap_or(match (*seen.borrow(), ended_early) {
                // Every task was skipped because the run ended as the stage began.
                (Some(request), true) => ended_status(request.reason),
                _ => Status::Succeeded,
            });
        let reason = match worst {
            Status::Succeeded => None,
            _ => note.lock().unwrap().clone().or_else(|| {
                let record = self.record.lock().unwrap();
                record.stages[s].tasks.iter().find(|t| t.progress.status == worst).map(|t| {
                    format!(
                        "task `{}` {}{}",
                        t.name,
                        worst,
                        t.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
                    )
                })
            }),
        };
        self.set(Part::Stage(s), worst, reason);
        worst
    }

    pub(super) async fn stage_tasks(
        self: Arc<Self>,
        s: usize,
        stage: &Stage,
        stage_rx: StopRx,
        clocks: Vec<RunningClock>,
        note: Arc<Mutex<Option<String>>>,
    ) -> Vec<Status> {
        match stage.mode {
            Mode::Sequential => {
                let mut statuses = Vec::new();
                for (t, task) in stage.tasks.iter().enumerate() {
                    let give_up =
                        statuses.iter().any(|st: &Status| *st != Status::Succeeded) || stage_rx.borrow().is_some();
                    if give_up {
                        self.set(Part::Task(s, t), Status::Skipped, None);
                        statuses.push(Status::Skipped);
                        continue;
                    }
                    let status =
                        self.clone().task(s, t, task.clone(), stage_rx.clone(), clocks[t].clone(), note.clone()).await;
                    statuses.push(status);
                }
                statuses
            }
            Mode::Parallel => {
                let mut set = tokio::task::JoinSet::new();
                for (t, task) in stage.tasks.iter().enumerate() {
                    let future =
                        self.clone().task(s, t, task.clone(), stage_rx.clone(), clocks[t].clone(), note.clone());
                    set.spawn(async move { (t, future.await) });
                }
                let mut statuses = vec![Status::Skipped; stage.tasks.len()];
                while let Some(joined) = set.join_next().await {
                    match joined {
                        Ok((t, status)) => statuses[t] = status,
                        Err(err) => {
                            self.system_run(format!("a task of stage `{}` crashed: {err}", stage.name));
                            statuses.push(Status::Failed);
                        }
                    }
                }
                statuses
            }
        }
    }
}
