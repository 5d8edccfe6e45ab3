//! `canary` tasks: render their fields, resolve the cluster, then drive the
//! [`Deployer`](wharf_executor::deploy::Deployer)'s canary moves: `Begin`, a `Step` per
//! percentage below 100 with the `pause` after each, `Promote` — and `Abort` after any
//! failure, rejection or stop (a task timeout arrives as a stop), so the stable
//! Deployment is back as it was. The step reached is in the task log and on the canary
//! Deployment (its annotations hold what an abort needs); the output `canary` is
//! `promoted` on success.
//!
//! With `approval: true` the canary asks people after each step (after its `pause`)
//! whether it goes on: the task is `waiting`, its question in the record
//! ([`ApprovalRecord`] with the [`CanaryStep`]), the decisions stored per step under
//! [`ApprovalRecord::decision_key`]; the wait holds no running time on the run's or
//! stage's clock. A server that restarts while the canary waits goes on waiting at
//! that step; a canary cut off by a restart anywhere else is aborted.

use super::attempt::JobEnd;
use super::deploy::{DeployYamlError, is_namespace_name};
use super::variables::render_field;
use super::{Part, RunState};
use crate::approval::ApprovalAsk;
use crate::clock::AttemptClocks;
use crate::outputs::OutputFile;
use std::sync::Arc;
use std::time::Duration;
use wharf_core::approval::{Outcome, outcome};
use wharf_core::model::{ApprovalTask, CanaryTask};
use wharf_core::run::{ApprovalRecord, CanaryStep};
use wharf_core::status::Status;
use wharf_executor::deploy::{CanaryAction, CanaryExit, CanarySpec, Deployer};
use wharf_executor::{Exit, LogLine, LogSink, StopReason, StopSignal};

/// One `canary` task, ready to run.
pub(super) struct CanaryJob {
    pub spec: CanarySpec,
    /// The percentages below 100, rising.
    pub steps: Vec<u8>,
    pub pause: Option<Duration>,
    /// People decide between steps.
    pub approval: bool,
}

/// What one canary attempt needs besides its job.
struct Drive<'a> {
    part: Part,
    deployer: &'a dyn Deployer,
    job: &'a CanaryJob,
    sink: &'a Arc<dyn LogSink>,
    clocks: &'a AttemptClocks,
}

impl RunState {
    pub(super) fn canary_job(&self, s: usize, name: &str, canary: &CanaryTask) -> Result<CanaryJob, DeployYamlError> {
        let scope = self.scope.lock().unwrap().clone();
        let render = |field: &str, text: &str| render_field(&scope, field, text);
        let deployment = render("deployment", &canary.deployment)?;
        let cluster = render("cluster", &canary.cluster)?;
        let namespace = render("namespace", &canary.namespace)?;
        let image = render("image", &canary.image)?;
        if !is_namespace_name(&namespace) {
            return Err(DeployYamlError::BadNamespace(namespace));
        }
        let clusters = &self.request.clusters;
        let login = clusters.by_name.get(&cluster).cloned().ok_or_else(|| DeployYamlError::UnknownCluster {
            name: cluster.clone(),
            registered: clusters.by_name.keys().cloned().collect(),
        })?;
        let stage = self.record.lock().unwrap().stages[s].name.clone();
        Ok(CanaryJob {
            spec: CanarySpec {
                run: format!("{}#{}", self.pipeline().name, self.request.number),
                stage,
                task: name.to_owned(),
                cluster: login,
                namespace,
                deployment,
                image,
            },
            steps: canary.steps.iter().copied().filter(|p| *p < 100).collect(),
            pause: canary.pause.map(|d| d.as_std()),
            approval: canary.approval,
        })
    }

    /// Runs the canary to its promotion, or rolls it back.
    pub(super) async fn canary(
        self: &Arc<Self>,
        part: Part,
        job: CanaryJob,
        sink: Arc<dyn LogSink>,
        mut stop: StopSignal,
        output: OutputFile,
        clocks: &AttemptClocks,
    ) -> Result<Exit, DeployYamlError> {
        let Some(deployer) = self.deployer.clone() else {
            return Err(DeployYamlError::NoDeployer);
        };
        let drive = Drive { part, deployer: deployer.as_ref(), job: &job, sink: &sink, clocks };
        let end = self.drive(&drive, &mut stop).await;
        let end = match end {
            Ok(JobEnd::Done(outputs)) => Ok(JobEnd::Done(outputs)),
            other => {
                // Failed, rejected or stopped: the stable replicas back, the canary deleted.
                let undo = deployer.canary(&job.spec, CanaryAction::Abort, sink.clone(), never()).await;
                if let Err(e) = undo {
                    sink.line(LogLine::system(format!("canary: the rollback failed too: {e}")));
                }
                other
            }
        };
        self.job_exit(part, &output, end, DeployYamlError::WriteOutputs)
    }

    /// A canary whose server stopped under it: rolled back, as nothing can tell whether
    /// its pause or its step was still meant to go on.
    pub(super) async fn canary_interrupted(&self, job: CanaryJob, sink: Arc<dyn LogSink>) {
        sink.line(LogLine::system("canary: the server restarted during the canary; rolling it back".to_owned()));
        let Some(deployer) = self.deployer.clone() else { return };
        if let Err(e) = deployer.canary(&job.spec, CanaryAction::Abort, sink.clone(), never()).await {
            sink.line(LogLine::system(format!("canary: the rollback failed: {e}")));
        }
    }

    /// The step a re-attached run's canary was waiting at for a decision, if it was.
    fn canary_waiting_at(&self, part: Part) -> Option<CanaryStep> {
        let Part::Task(s, t) = part else { return None };
        let record = self.record.lock().unwrap();
        let task = &record.stages[s].tasks[t];
        if task.progress.status != Status::Waiting {
            return None;
        }
        task.approval.as_ref().and_then(|a| a.canary)
    }

    async fn drive(self: &Arc<Self>, d: &Drive<'_>, stop: &mut StopSignal) -> Result<JobEnd, DeployYamlError> {
        let (job, sink) = (d.job, d.sink);
        let (total, from) = match self.canary_waiting_at(d.part) {
            Some(at) => {
                let Some(i) = job.steps.iter().position(|p| *p == at.percent) else {
                    return Err(DeployYamlError::Decision(format!(
                        "the canary waited at {}%, which is not one of its steps",
                        at.percent
                    )));
                };
                if let Some(reason) = self.canary_decision(d, at, true, stop).await? {
                    return Ok(JobEnd::Stopped(reason));
                }
                (at.total, i + 1)
            }
            None => match d.deployer.canary(&job.spec, CanaryAction::Begin, sink.clone(), stop.clone()).await? {
                CanaryExit::Done { total } => (total, 0),
                CanaryExit::Stopped(reason) => return Ok(JobEnd::Stopped(reason)),
            },
        };
        for &percent in &job.steps[from..] {
            let step = CanaryAction::Step { percent, total };
            if let CanaryExit::Stopped(reason) = d.deployer.canary(&job.spec, step, sink.clone(), stop.clone()).await? {
                return Ok(JobEnd::Stopped(reason));
            }
            if let Some(pause) = job.pause {
                sink.line(LogLine::system(format!("canary: at {percent}%, pausing {}s", pause.as_secs())));
                if let Some(reason) = sleep_or_stop(pause, stop).await {
                    return Ok(JobEnd::Stopped(reason));
                }
            }
            if job.approval
                && let Some(reason) = self.canary_decision(d, CanaryStep { percent, total }, false, stop).await?
            {
                return Ok(JobEnd::Stopped(reason));
            }
        }
        match d.deployer.canary(&job.spec, CanaryAction::Promote { total }, sink.clone(), stop.clone()).await? {
            CanaryExit::Done { .. } => Ok(JobEnd::Done("canary=promoted\n".to_owned())),
            CanaryExit::Stopped(reason) => Ok(JobEnd::Stopped(reason)),
        }
    }

    /// Asks people whether the canary goes on from step `at` (`resumed`: asked before a
    /// restart already): the task waits, off the clocks, until a decision, a stop or
    /// the task's timeout (a stop). `Ok(None)`: approved; `Ok(Some(_))`: stopped;
    /// `Err`: rejected (or the decisions could not be read).
    async fn canary_decision(
        self: &Arc<Self>,
        d: &Drive<'_>,
        at: CanaryStep,
        resumed: bool,
        stop: &mut StopSignal,
    ) -> Result<Option<StopReason>, DeployYamlError> {
        let Some(gate) = self.request.approvals.clone() else {
            return Err(DeployYamlError::NoApprovals);
        };
        let Part::Task(s, t) = d.part else { return Err(DeployYamlError::NoApprovals) };
        let next = d.job.steps.iter().copied().find(|p| *p > at.percent).unwrap_or(100);
        let message = format!("canary `{}` is at {}%: go on to {next}%?", d.job.spec.task, at.percent);
        // Administrators decide (the canary names no approvers); one is enough.
        let rule = ApprovalTask { approvers: vec![], message: Some(message.clone()), required: 1 };
        let (stage, key) = {
            let mut record = self.record.lock().unwrap();
            if !resumed {
                record.stages[s].tasks[t].approval = Some(ApprovalRecord {
                    message: Some(message.clone()),
                    approvers: vec![],
                    required: 1,
                    decisions: vec![],
                    canary: Some(at),
                });
                if self.apply(&mut record, d.part, Status::Waiting, None) {
                    self.observer.changed(&record, d.part);
                }
            }
            let task = &record.stages[s].tasks[t];
            let key = task.approval.as_ref().map_or_else(|| task.name.clone(), |a| a.decision_key(&task.name));
            (record.stages[s].name.clone(), key)
        };
        let say = |text: String| d.sink.line(LogLine::system(format!("canary: {text}")));
        say(format!(
            "{} at {}% for a decision to go on to {next}% (administrators decide)",
            if resumed { "still waiting, after a server restart," } else { "waiting" },
            at.percent
        ));
        // People's time is not the run's: the run's and the stage's clocks stand still
        // while it waits (the task's own timeout bounds the wait).
        d.clocks.pause_shared();
        let decided = gate.decided(ApprovalAsk { stage, task: key, rule: rule.clone() });
        tokio::pin!(decided);
        let mut stop_open = true;
        let result = loop {
            if let Some(request) = *stop.borrow_and_update() {
                break Ok(Some(request.reason));
            }
            tokio::select! {
                result = &mut decided => break match result {
                    Err(why) => Err(DeployYamlError::Decision(why)),
                    Ok(decisions) => {
                        let ended = match outcome(&rule, &decisions) {
                            Some(Outcome::Approved(by)) => {
                                say(format!("approved by {}; going on to {next}%", by.join(", ")));
                                Ok(None)
                            }
                            Some(Outcome::Rejected { by, comment }) => {
                                let why = if comment.is_empty() {
                                    format!("rejected at {}% by {by}", at.percent)
                                } else {
                                    format!("rejected at {}% by {by}: {comment}", at.percent)
                                };
                                say(format!("{why}; rolling back"));
                                Err(DeployYamlError::Decision(why))
                            }
                            None => Err(DeployYamlError::Decision("the approval ended without a decision".into())),
                        };
                        if let Some(approval) = self.record.lock().unwrap().stages[s].tasks[t].approval.as_mut() {
                            approval.decisions = decisions;
                        }
                        ended
                    }
                },
                // Nobody can stop it any more once the sender is gone; the decision
                // still ends the wait.
                changed = stop.changed(), if stop_open => stop_open = changed.is_ok(),
            }
        };
        d.clocks.resume();
        // Working again: going on, or rolling back.
        self.set(d.part, Status::Running, None);
        result
    }
}

async fn sleep_or_stop(pause: Duration, stop: &mut StopSignal) -> Option<StopReason> {
    let sleep = tokio::time::sleep(pause);
    tokio::pin!(sleep);
    loop {
        if let Some(request) = *stop.borrow_and_update() {
            return Some(request.reason);
        }
        tokio::select! {
            _ = &mut sleep => return None,
            changed = stop.changed() => if changed.is_err() { sleep.as_mut().await; return None; },
        }
    }
}

/// A stop signal that never fires: the rollback is what a stop asks for (the deployer
/// bounds its wait).
fn never() -> StopSignal {
    tokio::sync::watch::channel(None).1
}
