//! One attempt: its spec, its `$WHARF_OUTPUT` file, the executor (or the image
//! builder, or an adopted attempt after a restart), the task timeout and the stop
//! forwarded to it, and the status it ends with.

use super::chart::{ChartPublishError, PublishSpec};
use super::deploy::DeployYamlError;
use super::image::ImageError;
use super::log::TaskSink;
use super::release::{ChartDeployError, ReleaseJob};
use super::stop::ended_status;
use super::variables::SpecError;
use super::{RunState, StopRx};
use crate::Part;
use crate::clock::{AttemptClocks, RunningClock};
use crate::outputs::OutputFile;
use jiff::Timestamp;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use wharf_core::model::{Task, TaskKind};
use wharf_core::status::Status;
use wharf_executor::{BoxFuture, ExecutorError, Exit, LogSink, StopReason, StopRequest, TaskSpec};

/// Why an attempt failed on the engine's side rather than by its task's exit.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Deploy(#[from] DeployYamlError),
    #[error(transparent)]
    Publish(#[from] ChartPublishError),
    #[error(transparent)]
    Release(#[from] ChartDeployError),
    #[error("cannot create $WHARF_OUTPUT: {0}")]
    CreateOutput(#[source] std::io::Error),
    /// The executor could not run (or take over) the attempt at all.
    #[error(transparent)]
    Executor(#[from] ExecutorError),
}

impl RunState {
    /// Runs one attempt on the executor, or takes it over (`adopt`: a re-attached
    /// run's attempt that was running); returns (status, reason, exit code). The run's,
    /// the stage's (`stage_clock`) and the task's timeouts count the attempt's running
    /// time: not the time its executor reports it pending.
    #[expect(clippy::too_many_arguments, reason = "one attempt's coordinates, its stop channels and its mode")]
    pub(super) async fn attempt(
        self: &Arc<Self>,
        s: usize,
        t: usize,
        task: &Task,
        attempt: u32,
        stop: &mut StopRx,
        stage_note: &Mutex<Option<String>>,
        stage_clock: &RunningClock,
        adopt: Option<wharf_executor::LogResume>,
    ) -> (Status, Option<String>, Option<i32>) {
        let task_clock = RunningClock::default();
        let clocks =
            Arc::new(AttemptClocks::start(vec![self.run_clock.clone(), stage_clock.clone()], task_clock.clone()));
        let part = Part::Task(s, t);
        let output = OutputFile::new(self.run_dir.join("outputs"), format!("{s}-{t}-{attempt}.env"));
        // `image` tasks go to the builder, `deploy-yaml` to the deployer, `chart-publish`
        // to the chart registry, everything else to the executor.
        let job = match &task.kind {
            TaskKind::Image(image) => {
                self.build_spec(s, task, image).map(|spec| Job::Build(Box::new(spec))).map_err(AttemptError::from)
            }
            TaskKind::DeployYaml(deploy) => {
                self.deploy_spec(s, task, deploy).map(|spec| Job::Deploy(Box::new(spec))).map_err(AttemptError::from)
            }
            TaskKind::ChartPublish(publish) => {
                self.publish_spec(publish).map(|spec| Job::Publish(Box::new(spec))).map_err(AttemptError::from)
            }
            TaskKind::Canary(canary) => self
                .canary_job(s, task.name.as_str(), canary)
                .map(|job| Job::Canary(Box::new(job)))
                .map_err(AttemptError::from),
            TaskKind::ChartDeploy(deploy) => {
                self.release_job(s, task, deploy).map(|job| Job::Release(Box::new(job))).map_err(AttemptError::from)
            }
            _ => self
                .task_spec(s, task, attempt, &output.path())
                .map(|spec| Job::Exec(Box::new(spec)))
                .map_err(AttemptError::from),
        };
        let job = match job {
            Ok(job) => job,
            Err(err) => {
                let why = err.to_string();
                self.system(part, &why);
                return (Status::Failed, Some(why), None);
            }
        };
        // An adopted attempt has been writing its outputs already.
        if adopt.is_none()
            && let Err(e) = output.create()
        {
            return (Status::Failed, Some(AttemptError::CreateOutput(e).to_string()), None);
        }
        // The attempt's own `return`s end this block, so the file is removed after
        // every outcome; the file may hold secrets in clear.
        let output = &output;
        let result = async {
            let (task_tx, task_rx) = watch::channel(*stop.borrow_and_update());
            let sink: Arc<dyn LogSink> = Arc::new(TaskSink::new(self.clone(), part, clocks.clone()));
            // The time an adopted attempt already ran counts against its timeout: its last
            // running spell, up to now or to the pending that followed it. So does the
            // time of a canary's attempt that waited for people when the server stopped
            // (people's time counts against the task's own timeout): since the attempt
            // began, its first `running` not after a wait.
            let ran_before = {
                let record = self.record.lock().unwrap();
                let progress = &record.stages[s].tasks[t].progress;
                let history = &progress.history;
                let spell = match adopt {
                    Some(_) => history
                        .iter()
                        .rposition(|tr| tr.status == Status::Running)
                        .map(|i| (history[i].at, history.get(i + 1).map_or(Timestamp::now(), |n| n.at))),
                    None if progress.status == Status::Waiting => history
                        .windows(2)
                        .rev()
                        .find(|w| w[1].status == Status::Running && w[0].status != Status::Waiting)
                        .map(|w| (w[1].at, Timestamp::now())),
                    None => None,
                };
                spell.and_then(|(from, to)| to.duration_since(from).try_into().ok()).unwrap_or_default()
            };
            let run: BoxFuture<'_, Result<Option<Exit>, AttemptError>> = match (job, adopt) {
                (Job::Exec(spec), Some(resume)) => {
                    let adopted = self.executor.adopt(*spec, sink, task_rx, resume);
                    Box::pin(async move { Ok(adopted.await?) })
                }
                (Job::Exec(spec), None) => {
                    self.system(part, format!("runs {}", self.executor.placement(&spec)));
                    let durable = self.observer.durable();
                    Box::pin(async move {
                        durable.await;
                        Ok(self.executor.run(*spec, sink, task_rx).await.map(Some)?)
                    })
                }
                // A build cut off by a restart is not taken over: it counts as interrupted
                // (and is retried when the task allows it).
                (Job::Build(_), Some(_)) => Box::pin(async { Ok(None) }),
                (Job::Build(spec), None) => {
                    let output = output.clone();
                    let durable = self.observer.durable();
                    Box::pin(async move {
                        durable.await;
                        Ok(self.build(part, *spec, sink, task_rx, output).await.map(Some)?)
                    })
                }
                // Neither is a deploy: applying again is the retry's business.
                (Job::Deploy(_), Some(_)) => Box::pin(async { Ok(None) }),
                (Job::Deploy(spec), None) => {
                    let output = output.clone();
                    Box::pin(async move { Ok(self.deploy(part, *spec, sink, task_rx, output).await.map(Some)?) })
                }
                // A publish cut off by a restart is published again by a retry.
                (Job::Publish(_), Some(_)) => Box::pin(async { Ok(None) }),
                (Job::Publish(spec), None) => {
                    let output = output.clone();
                    Box::pin(async move { Ok(self.publish(part, *spec, sink, task_rx, output).await.map(Some)?) })
                }
                // A release cut off by a restart is not taken over (its revision stays
                // pending; Helm's way out is a rollback); a retry installs or upgrades again.
                (Job::Release(_), Some(_)) => Box::pin(async { Ok(None) }),
                // A canary cut off by a restart is rolled back: the stable replicas
                // restored, the canary deleted; the attempt counts as interrupted.
                (Job::Canary(job), Some(_)) => Box::pin(async move {
                    self.canary_interrupted(*job, sink).await;
                    Ok(None)
                }),
                (Job::Canary(job), None) => {
                    let (output, clocks) = (output.clone(), clocks.clone());
                    Box::pin(async move { Ok(self.canary(part, *job, sink, task_rx, output, &clocks).await.map(Some)?) })
                }
                (Job::Release(job), None) => {
                    let output = output.clone();
                    Box::pin(async move { Ok(self.release(part, *job, sink, task_rx, output).await.map(Some)?) })
                }
            };
            tokio::pin!(run);
            let limit = task.timeout.map_or(Duration::MAX / 4, |d| d.as_std().saturating_sub(ran_before));
            let deadline = task_clock.expired(limit);
            tokio::pin!(deadline);
            let mut own_timeout = false;
            let mut stop_open = true;
            let result = loop {
                tokio::select! {
                    result = &mut run => break result,
                    _ = &mut deadline, if task.timeout.is_some() && !own_timeout => {
                        own_timeout = true;
                        task_tx.send_if_modified(|current| {
                            let idle = current.is_none();
                            if idle {
                                *current = Some(StopRequest { reason: StopReason::TimedOut, grace: self.config.timeout_grace });
                            }
                            idle
                        });
                    }
                    changed = stop.changed(), if stop_open => {
                        match changed {
                            Ok(()) => {
                                if let Some(request) = *stop.borrow_and_update() {
                                    task_tx.send_replace(Some(request));
                                }
                            }
                            Err(_) => stop_open = false,
                        }
                    }
                }
            };
            match result {
                Err(err) => (Status::Failed, Some(err.to_string()), None),
                Ok(None) => {
                    self.system(part, format!("attempt {attempt}: {}; nothing left to take over", crate::INTERRUPTED));
                    (Status::Failed, Some(crate::INTERRUPTED.to_owned()), None)
                }
                Ok(Some(exit)) => {
                    if let Some(reason) = exit.stopped {
                        let note = if own_timeout && reason == StopReason::TimedOut {
                            format!("timed out: the task timeout of {} ran out", task.timeout.unwrap_or_default_display())
                        } else {
                            self.stop_note(reason, stage_note)
                        };
                        return (ended_status(reason), Some(note), exit.code);
                    }
                    if !exit.succeeded() {
                        let why = match (exit.code, exit.signal) {
                            (Some(code), _) => format!("exit code {code}"),
                            (None, Some(signal)) => format!("killed by signal {signal}"),
                            _ => "ended without an exit code".to_owned(),
                        };
                        return (Status::Failed, Some(why), exit.code);
                    }
                    match self.collect_outputs(s, t, task, output) {
                        Ok(()) => (Status::Succeeded, None, exit.code),
                        Err(err) => {
                            let why = err.to_string();
                            self.system(part, &why);
                            (Status::Failed, Some(why), exit.code)
                        }
                    }
                }
            }
        }
        .await;
        drop(clocks);
        output.remove();
        result
    }
}

trait DisplayOr {
    fn unwrap_or_default_display(self) -> String;
}

impl DisplayOr for Option<wharf_core::Duration> {
    fn unwrap_or_default_display(self) -> String {
        self.map(|d| d.to_string()).unwrap_or_default()
    }
}

/// How a job the engine runs itself (an image build, a deploy) ended when it did not fail.
pub(super) enum JobEnd {
    /// Done: these `KEY=value` lines are its outputs.
    Done(String),
    Stopped(StopReason),
}

impl RunState {
    /// The attempt's exit for a job the engine ran itself: its outputs written where
    /// the usual output collection finds them, or the stop; a failure is logged in the
    /// task's log (`Err` of `result`) and returned.
    pub(super) fn job_exit<E: std::fmt::Display>(
        &self,
        part: Part,
        output: &OutputFile,
        result: Result<JobEnd, E>,
        write_failed: impl FnOnce(std::io::Error) -> E,
    ) -> Result<Exit, E> {
        match result {
            Ok(JobEnd::Done(outputs)) => {
                output.write(outputs.as_bytes()).map_err(write_failed)?;
                Ok(Exit { code: Some(0), signal: None, stopped: None })
            }
            Ok(JobEnd::Stopped(reason)) => Ok(Exit { code: None, signal: None, stopped: Some(reason) }),
            Err(e) => {
                self.system(part, e.to_string());
                Err(e)
            }
        }
    }
}

/// What one attempt runs.
pub(super) enum Job {
    Exec(Box<TaskSpec>),
    Build(Box<wharf_executor::build::BuildSpec>),
    Deploy(Box<wharf_executor::deploy::DeploySpec>),
    Publish(Box<PublishSpec>),
    Release(Box<ReleaseJob>),
    Canary(Box<super::canary::CanaryJob>),
}
