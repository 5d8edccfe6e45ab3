//! The run, stage and task loops, one phase per file. Read them in the order a run
//! goes through them:
//!
//! 1. this file: [`execute`] sets up the run's state and races the run's body against
//!    its watchdog;
//! 2. `stop.rs`: how stops flow (below) and how the first reason to end wins;
//! 3. `checkout.rs`: the built-in names, the workspace and the source checkout;
//! 4. `stages.rs`: stages in order with their error policies, the rollback stages, the
//!    stage timeout, sequential and parallel tasks;
//! 5. `task.rs`: one task with its retries and its wait for an executor slot;
//!    `attempt.rs`: one attempt on the executor or the image builder, with the task
//!    timeout and the stop forwarded to it; `image.rs`: what an `image` task builds;
//! 6. `variables.rs`: rendering templates, the environment a script gets, the outputs
//!    a task writes and later tasks read;
//! 7. `resume.rs`: what a retry takes over from an earlier run and what a re-attached
//!    run continues after a restart;
//! 8. `record.rs` and `log.rs`: the one place that changes the record and tells the
//!    observer, and the masked log lines.
//!
//! Each phase's error type lives in its file and says in its `Display` what the
//! record and the log show; the record keeps the words.
//!
//! Stops flow down a tree of `watch` channels: the run's watchdog (a person's stop, a
//! newer run superseding this one, the pipeline timeout) feeds each stage's channel,
//! the stage's watchdog (its own timeout) feeds it too, and every task's supervisor
//! forwards the stage's request (or its own timeout) to the executor. The first reason
//! to end wins and is written into the record; executors only ever see "stop, with
//! this grace" and the reason to say in their log.

mod approval;
mod attempt;
mod canary;
mod chart;
mod checkout;
mod deploy;
mod image;
mod log;
mod paths;
mod record;
mod release;
mod resume;
mod signal;
mod stages;
mod stop;
mod task;
mod variables;

pub use record::initial_record;

use crate::clock::RunningClock;
use crate::mask::Masker;
use crate::{Engine, EngineConfig, Observer, Part, RunRequest, Workspace};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, watch};
use wharf_core::run::RunRecord;
use wharf_core::status::Status;
use wharf_core::vars::Scope;
use wharf_executor::{Executor, StopRequest};

type StopRx = watch::Receiver<Option<StopRequest>>;
type StopTx = watch::Sender<Option<StopRequest>>;

struct RunState {
    request: RunRequest,
    config: EngineConfig,
    executor: Arc<dyn Executor>,
    builder: Option<Arc<dyn wharf_executor::build::ImageBuilder>>,
    deployer: Option<Arc<dyn wharf_executor::deploy::Deployer>>,
    charts: Option<Arc<dyn wharf_executor::chart::ChartRegistry>>,
    slots: Arc<Semaphore>,
    observer: Arc<dyn Observer>,
    masker: Masker,
    record: Mutex<RunRecord>,
    scope: Mutex<Scope>,
    /// Why the run as a whole is ending early (a stop, the pipeline timeout).
    run_end: Mutex<Option<(Status, String)>>,
    run_clock: RunningClock,
    src: PathBuf,
    run_dir: PathBuf,
    /// Task name → (stage, task) indices, rollback stages after the main ones.
    task_index: BTreeMap<String, (usize, usize)>,
}

pub(crate) async fn execute(
    engine: &Engine,
    request: RunRequest,
    observer: Arc<dyn Observer>,
    external: StopRx,
) -> RunRecord {
    // Tasks run in `src`, so every path handed to them must be absolute.
    let absolute = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
    let (src, run_dir) = match &request.workspace {
        Workspace::Checkout { dir } => (absolute(dir).join("src"), absolute(dir)),
        Workspace::Existing { src, run_dir } => (absolute(src), absolute(run_dir)),
    };
    let record = initial_record(&request);
    let state = Arc::new(RunState {
        // Registry passwords are secrets too: a build log must not show them.
        masker: Masker::new(
            request
                .secrets
                .values()
                .chain(request.registries.by_name.values().filter_map(|r| r.login.password.as_ref()))
                .map(String::as_str),
        ),
        config: engine.config.clone(),
        executor: engine.executor.clone(),
        builder: engine.builder.clone(),
        deployer: engine.deployer.clone(),
        charts: engine.charts.clone(),
        slots: engine.slots.clone(),
        observer,
        record: Mutex::new(record),
        scope: Mutex::new(Scope::default()),
        run_end: Mutex::new(None),
        run_clock: RunningClock::default(),
        src,
        run_dir,
        task_index: request
            .pipeline
            .all_stages()
            .enumerate()
            .flat_map(|(s, stage)| stage.tasks.iter().enumerate().map(move |(t, task)| (task.name.to_string(), (s, t))))
            .collect(),
        request,
    });
    state.notify(Part::Run);
    let (run_tx, run_rx) = watch::channel(None);
    tokio::select! {
        // The watchdog first: a stop sent before the run began must reach `run_rx`
        // before the body starts work, not after a coin toss.
        biased;
        _ = state.clone().watchdog(external, run_tx) => {}
        _ = state.clone().body(run_rx) => {}
    }
    // What the executor kept for the whole run (the kubernetes executor's volume claim)
    // goes in every outcome.
    let end = wharf_executor::RunEnd {
        run: format!("{}#{}", state.pipeline().name, state.request.number),
        labels: state.request.labels.clone(),
        cluster: state.build_cluster().ok().flatten(),
    };
    state.executor.run_ended(&end).await;
    // Every attempt removed its own file; this takes what attempts cut off by a crash
    // left (they may hold secrets in clear). Never follows a link a task planted.
    let _ = std::fs::remove_dir_all(state.run_dir.join("outputs"));
    state.record.lock().unwrap().clone()
}

impl RunState {
    fn pipeline(&self) -> &wharf_core::model::Pipeline {
        &self.request.pipeline
    }

    async fn body(self: Arc<Self>, run_rx: StopRx) {
        self.set(Part::Run, Status::Running, None);
        let outcome = self.clone().prepare_workspace(run_rx.clone()).await;
        let (status, reason) = match outcome {
            Err(err) => {
                self.skip_stages_from(0);
                (err.status(), Some(err.to_string()))
            }
            Ok(()) => self.clone().stages(run_rx).await,
        };
        if let (Status::Succeeded, Some(channel)) = (status, &self.pipeline().send) {
            let channel = channel.clone();
            let pipeline = self.request.pipeline.clone();
            self.send_outputs(&channel, pipeline.stages.iter().flat_map(|s| &s.tasks).map(|t| t.name.as_str())).await;
        }
        let (status, reason) = match self.run_end.lock().unwrap().clone() {
            Some((ended, why)) if status != Status::Succeeded || ended == Status::Stopped => (ended, Some(why)),
            _ => (status, reason),
        };
        self.set(Part::Run, status, reason);
    }
}
