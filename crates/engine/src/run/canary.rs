//! `canary` tasks: render their fields, resolve the cluster, then drive the
//! [`Deployer`](wharf_executor::deploy::Deployer)'s canary moves: `Begin`, a `Step` per
//! percentage below 100 with the `pause` after each, `Promote` — and `Abort` after any
//! failure or stop (a task timeout arrives as a stop), so the stable Deployment is back
//! as it was. A canary cut off by a server restart is aborted by the restarted server.
//! The step reached is in the task log and on the canary Deployment (its annotations
//! hold what an abort needs); the output `canary` is `promoted` on success.

use super::attempt::JobEnd;
use super::deploy::{DeployYamlError, is_namespace_name};
use super::variables::render_field;
use super::{Part, RunState};
use crate::outputs::OutputFile;
use std::sync::Arc;
use std::time::Duration;
use wharf_core::model::CanaryTask;
use wharf_executor::deploy::{CanaryAction, CanaryExit, CanarySpec, DeployError, Deployer};
use wharf_executor::{Exit, LogLine, LogSink, StopReason, StopSignal};

/// One `canary` task, ready to run.
pub(super) struct CanaryJob {
    pub spec: CanarySpec,
    /// The percentages below 100, rising.
    pub steps: Vec<u8>,
    pub pause: Option<Duration>,
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
    ) -> Result<Exit, DeployYamlError> {
        let Some(deployer) = self.deployer.clone() else {
            return Err(DeployYamlError::NoDeployer);
        };
        let end = drive(deployer.as_ref(), &job, &sink, &mut stop).await;
        let end = match end {
            Ok(JobEnd::Done(outputs)) => Ok(JobEnd::Done(outputs)),
            other => {
                // Failed or stopped: the stable replicas back, the canary deleted.
                let undo = deployer.canary(&job.spec, CanaryAction::Abort, sink.clone(), never()).await;
                if let Err(e) = undo {
                    sink.line(LogLine::system(format!("canary: the rollback failed too: {e}")));
                }
                other
            }
        };
        self.job_exit(part, &output, end.map_err(DeployYamlError::from), DeployYamlError::WriteOutputs)
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
}

async fn drive(
    deployer: &dyn Deployer,
    job: &CanaryJob,
    sink: &Arc<dyn LogSink>,
    stop: &mut StopSignal,
) -> Result<JobEnd, DeployError> {
    let total = match deployer.canary(&job.spec, CanaryAction::Begin, sink.clone(), stop.clone()).await? {
        CanaryExit::Done { total } => total,
        CanaryExit::Stopped(reason) => return Ok(JobEnd::Stopped(reason)),
    };
    for &percent in &job.steps {
        let step = CanaryAction::Step { percent, total };
        if let CanaryExit::Stopped(reason) = deployer.canary(&job.spec, step, sink.clone(), stop.clone()).await? {
            return Ok(JobEnd::Stopped(reason));
        }
        if let Some(pause) = job.pause {
            sink.line(LogLine::system(format!("canary: at {percent}%, pausing {}s", pause.as_secs())));
            if let Some(reason) = sleep_or_stop(pause, stop).await {
                return Ok(JobEnd::Stopped(reason));
            }
        }
    }
    match deployer.canary(&job.spec, CanaryAction::Promote { total }, sink.clone(), stop.clone()).await? {
        CanaryExit::Done { .. } => Ok(JobEnd::Done("canary=promoted\n".to_owned())),
        CanaryExit::Stopped(reason) => Ok(JobEnd::Stopped(reason)),
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
