//! The run, stage and task loops.
//!
//! Stops flow down a tree of `watch` channels: the run's watchdog (a person's stop,
//! the pipeline timeout) feeds each stage's channel, the stage's watchdog (its own
//! timeout) feeds it too, and every task's supervisor forwards the stage's request (or
//! its own timeout) to the executor. The first reason to end wins and is written into
//! the record; executors only ever see "stop, with this grace".

mod image;

use crate::clock::RunningClock;
use crate::mask::Masker;
use crate::outputs::{self, OutputFile};
use crate::{Engine, EngineConfig, GitRef, Observer, Part, RunRequest, Workspace};
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use wharf_core::model::{ErrorPolicy, Mode, Stage, Task, TaskKind};
use wharf_core::run::{CheckoutRecord, Progress, RunRecord, StageRecord, TaskRecord};
use wharf_core::status::Status;
use wharf_core::vars::{Scope, Template, VarRef};
use wharf_executor::{Executor, LogLine, LogSink, StopReason, StopRequest, Stream, TaskSpec};

type StopRx = watch::Receiver<Option<StopRequest>>;
type StopTx = watch::Sender<Option<StopRequest>>;

struct RunState {
    request: RunRequest,
    config: EngineConfig,
    executor: Arc<dyn Executor>,
    builder: Option<Arc<dyn wharf_executor::build::ImageBuilder>>,
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
    // Every attempt removed its own file; this takes what attempts cut off by a crash
    // left (they may hold secrets in clear). Never follows a link a task planted.
    let _ = std::fs::remove_dir_all(state.run_dir.join("outputs"));
    state.record.lock().unwrap().clone()
}

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

fn stage_record(stage: &Stage, rollback: bool, now: Timestamp) -> StageRecord {
    StageRecord {
        name: stage.name.to_string(),
        rollback,
        progress: Progress::new(now),
        reason: None,
        tasks: stage
            .tasks
            .iter()
            .map(|t| TaskRecord {
                name: t.name.to_string(),
                task_type: t.kind.type_name().to_owned(),
                progress: Progress::new(now),
                attempts: 0,
                exit_code: None,
                outputs: BTreeMap::new(),
                reason: None,
            })
            .collect(),
    }
}

/// Waits until the channel carries a stop request; never returns if its sender is gone.
async fn stop_requested(rx: &mut StopRx) -> StopRequest {
    loop {
        if let Some(request) = *rx.borrow_and_update() {
            return request;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Forwards every request from `from` to `to` (a later one may shorten the grace).
async fn forward(mut from: StopRx, to: &StopTx) {
    loop {
        let request = stop_requested(&mut from).await;
        to.send_if_modified(|current| {
            let changed = *current != Some(request);
            *current = Some(request);
            changed
        });
        if from.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

fn status_in(record: &RunRecord, part: Part) -> Status {
    match part {
        Part::Run => record.progress.status,
        Part::Checkout => record.checkout.as_ref().map_or(Status::Skipped, |c| c.progress.status),
        Part::Stage(s) => record.stages[s].progress.status,
        Part::Task(s, t) => record.stages[s].tasks[t].progress.status,
    }
}

fn ended_status(reason: StopReason) -> Status {
    match reason {
        StopReason::Stopped => Status::Stopped,
        StopReason::TimedOut => Status::TimedOut,
    }
}

impl RunState {
    fn pipeline(&self) -> &wharf_core::model::Pipeline {
        &self.request.pipeline
    }

    fn notify(&self, part: Part) {
        let record = self.record.lock().unwrap();
        self.observer.changed(&record, part);
    }

    /// Applies a status change to one part of the record and tells the observer.
    fn set(&self, part: Part, status: Status, reason: Option<String>) {
        let mut guard = self.record.lock().unwrap();
        if self.apply(&mut guard, part, status, reason) {
            self.observer.changed(&guard, part);
        }
    }

    /// Applies a status change to one part of `record`; false when nothing changed.
    fn apply(&self, record: &mut RunRecord, part: Part, status: Status, reason: Option<String>) -> bool {
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
    fn end_waiting(&self, s: usize, status: Status, reason: &str) {
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

    fn status_of(&self, part: Part) -> Status {
        status_in(&self.record.lock().unwrap(), part)
    }

    fn system(&self, part: Part, text: impl Into<String>) {
        let line = LogLine {
            continued: false,
            at: Timestamp::now(),
            stream: Stream::System,
            text: self.masker.mask(&text.into()),
        };
        self.observer.log(part, &line);
    }

    /// Records why the whole run ends early; the first reason wins.
    fn end_run(&self, status: Status, reason: String) -> bool {
        let mut end = self.run_end.lock().unwrap();
        if end.is_some() {
            return false;
        }
        *end = Some((status, reason));
        true
    }

    /// Turns a person's stop and the pipeline timeout into requests on `run_tx`.
    async fn watchdog(self: Arc<Self>, mut external: StopRx, run_tx: StopTx) {
        let limit = self.pipeline().effective_timeout().as_std();
        let clock = self.run_clock.clone();
        let timeout = clock.expired(limit);
        tokio::pin!(timeout);
        let mut timed_out = false;
        loop {
            tokio::select! {
                request = stop_requested(&mut external) => {
                    self.end_run(Status::Stopped, "stopped by user".to_owned());
                    run_tx.send_replace(Some(request));
                    if external.changed().await.is_err() {
                        // No more requests can come; keep serving the timeout only.
                        external = watch::channel(None).1;
                    }
                }
                _ = &mut timeout, if !timed_out => {
                    timed_out = true;
                    let limit = wharf_core::Duration::from(limit);
                    if self.end_run(Status::TimedOut, format!("timed out: the pipeline timeout of {limit} ran out")) {
                        run_tx.send_replace(Some(StopRequest { reason: StopReason::TimedOut, grace: self.config.timeout_grace }));
                    }
                }
            }
        }
    }

    async fn body(self: Arc<Self>, run_rx: StopRx) {
        self.set(Part::Run, Status::Running, None);
        let outcome = self.clone().prepare_workspace(run_rx.clone()).await;
        let (status, reason) = match outcome {
            Err((status, reason)) => {
                self.skip_stages_from(0);
                (status, Some(reason))
            }
            Ok(()) => self.clone().stages(run_rx).await,
        };
        let (status, reason) = match self.run_end.lock().unwrap().clone() {
            Some((ended, why)) if status != Status::Succeeded || ended == Status::Stopped => (ended, Some(why)),
            _ => (status, reason),
        };
        self.set(Part::Run, status, reason);
    }

    /// Skips what has not ended in the stages from `first` on, as one change.
    fn skip_stages_from(&self, first: usize) {
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

    /// The built-in names, the checkout and the pipeline's variables.
    async fn prepare_workspace(self: Arc<Self>, run_rx: StopRx) -> Result<(), (Status, String)> {
        let pipeline = self.request.pipeline.clone();
        {
            let started = self.record.lock().unwrap().progress.history[0].at;
            let stamp = started.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y%m%d%H%M%S").to_string();
            let mut scope = self.scope.lock().unwrap();
            let names = &mut scope.names;
            names.insert("BUILD_ID".into(), self.request.number.to_string());
            names.insert("SYS_TIMESTAMP".into(), stamp);
            names.insert("SYS_INCREMENT".into(), self.request.increment.to_string());
            names.insert("PIPELINE_NAME".into(), pipeline.name.to_string());
            names.insert("RUN_CAUSE".into(), self.request.cause.describe());
            for (k, v) in &self.request.parameters {
                names.insert(k.clone(), v.clone());
            }
            for k in ["GIT_URL", "GIT_BRANCH", "GIT_TAG", "GIT_COMMIT"] {
                names.insert(k.into(), String::new());
            }
        }
        // Parameter defaults may use built-ins known at start.
        for p in &pipeline.parameters {
            if self.request.parameters.get(p.name.as_str()) == p.default.as_ref() {
                let rendered = self.render(p.default.as_deref().unwrap_or(""));
                let value = rendered.map_err(|why| (Status::Failed, format!("parameter `{}`: {why}", p.name)))?;
                self.scope.lock().unwrap().names.insert(p.name.to_string(), value);
            }
        }
        if let Some(resume) = &self.request.resume
            && let Some(previous) = &resume.previous.checkout
        {
            let mut scope = self.scope.lock().unwrap();
            scope.names.insert("GIT_URL".into(), previous.repo.clone());
            scope.names.insert("GIT_BRANCH".into(), previous.branch.clone().unwrap_or_default());
            scope.names.insert("GIT_TAG".into(), previous.tag.clone().unwrap_or_default());
            scope.names.insert("GIT_COMMIT".into(), previous.commit.clone().unwrap_or_default());
            drop(scope);
            if resume.reattach.is_none() && self.record.lock().unwrap().checkout.is_some() {
                let why = format!("reused the workspace of run #{}", resume.previous.number);
                self.set(Part::Checkout, Status::Skipped, Some(why));
            }
        }
        let fresh_dir = match &self.request.workspace {
            Workspace::Checkout { dir } => Some(dir.clone()),
            Workspace::Existing { .. } => None,
        };
        for dir in
            [Some(self.run_dir.join("outputs")), fresh_dir.as_ref().map(|_| self.src.clone())].into_iter().flatten()
        {
            if pipeline.source.is_some() && dir == self.src {
                continue; // git creates it
            }
            std::fs::create_dir_all(&dir)
                .map_err(|e| (Status::Failed, format!("cannot create the workspace {}: {e}", dir.display())))?;
        }
        if let (Some(source), Some(_), None) = (&pipeline.source, fresh_dir, &self.request.resume) {
            self.checkout(source, run_rx).await?;
        }
        for v in &pipeline.variables {
            let value =
                self.render(&v.value).map_err(|why| (Status::Failed, format!("variable `{}`: {why}", v.name)))?;
            self.scope.lock().unwrap().names.insert(v.name.to_string(), value);
        }
        Ok(())
    }

    fn render(&self, text: &str) -> Result<String, String> {
        let template = Template::parse(text).map_err(|e| e.message)?;
        let scope = self.scope.lock().unwrap();
        scope.render(&template).map_err(|e| e.to_string())
    }

    async fn checkout(
        self: &Arc<Self>,
        source: &wharf_core::model::Source,
        mut run_rx: StopRx,
    ) -> Result<(), (Status, String)> {
        let part = Part::Checkout;
        let repo = self.render(&source.repo).map_err(|why| (Status::Failed, format!("source.repo: {why}")))?;
        // An event's branch or tag replaces the pipeline's branch, as it is.
        let (branch, tag) = match &self.request.git_ref {
            Some(GitRef::Branch(branch)) => (Some(branch.clone()), None),
            Some(GitRef::Tag(tag)) => (None, Some(tag.clone())),
            None => match &source.branch {
                Some(b) => {
                    (Some(self.render(b).map_err(|why| (Status::Failed, format!("source.branch: {why}")))?), None)
                }
                None => (None, None),
            },
        };
        if let Some(request) = *run_rx.borrow() {
            self.set(part, Status::Skipped, None);
            return Err((ended_status(request.reason), "ended before the checkout".into()));
        }
        {
            // The record names what is actually cloned, not the templates.
            let mut record = self.record.lock().unwrap();
            if let Some(c) = record.checkout.as_mut() {
                c.repo = repo.clone();
                c.branch = branch.clone();
                c.tag = tag.clone();
            }
        }
        // A repository on this machine's disk would be read with the engine's rights.
        if !self.request.local_sources && wharf_core::git::is_local_repo(&repo) {
            let why = format!(
                "checkout failed: source.repo `{repo}` names a repository on the server's own disk, and only runs \
                 that may run tasks on the host may clone one; use a remote address (https://, ssh://, git://)"
            );
            self.system(part, &why);
            self.set(part, Status::Failed, Some(why.clone()));
            return Err((Status::Failed, why));
        }
        // A checkout is work on this machine like a task: it takes an executor slot, so
        // a burst of runs clones `max_parallel_tasks` repositories at a time, not all at
        // once (measured: 2,000 webhook runs cloning together starved the server).
        let _slot = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.set(part, Status::Pending, None);
                tokio::select! {
                    biased;
                    request = stop_requested(&mut run_rx) => {
                        self.set(part, Status::Skipped, None);
                        return Err((ended_status(request.reason), "ended before the checkout".into()));
                    }
                    permit = self.slots.clone().acquire_owned() => permit.expect("the engine never closes its slots"),
                }
            }
        };
        self.set(part, Status::Running, None);
        let _ticking = self.run_clock.start();
        // `git clone --branch` takes a tag as well as a branch.
        let req = wharf_scm::CheckoutRequest {
            repo,
            branch: branch.or_else(|| tag.clone()),
            commit: self.request.commit.clone(),
            dest: self.src.clone(),
        };
        let (abort_tx, abort_rx) = watch::channel(false);
        let log = |text: String| {
            let line = LogLine {
                continued: false,
                at: Timestamp::now(),
                stream: Stream::System,
                text: self.masker.mask(&text),
            };
            self.observer.log(part, &line);
        };
        let checkout = wharf_scm::checkout(&req, &log, abort_rx);
        tokio::pin!(checkout);
        let result = tokio::select! {
            result = &mut checkout => result,
            _ = stop_requested(&mut run_rx) => {
                abort_tx.send_replace(true);
                (&mut checkout).await
            }
        };
        match result {
            Ok(done) => {
                // A tag is checked out on a detached HEAD: no branch.
                let branch = if tag.is_some() { None } else { done.branch };
                {
                    let mut record = self.record.lock().unwrap();
                    if let Some(c) = record.checkout.as_mut() {
                        c.commit = Some(done.commit.clone());
                        c.branch = branch.clone();
                    }
                }
                let mut scope = self.scope.lock().unwrap();
                scope.names.insert("GIT_URL".into(), req.repo.clone());
                scope.names.insert("GIT_BRANCH".into(), branch.unwrap_or_default());
                scope.names.insert("GIT_TAG".into(), tag.unwrap_or_default());
                scope.names.insert("GIT_COMMIT".into(), done.commit);
                drop(scope);
                self.set(part, Status::Succeeded, None);
                Ok(())
            }
            Err(wharf_scm::CheckoutError::Stopped) => {
                let (status, why) = self.run_end.lock().unwrap().clone().unwrap_or((Status::Stopped, "stopped".into()));
                self.set(part, status, Some(why.clone()));
                Err((status, why))
            }
            Err(err) => {
                let why = format!("checkout failed: {err}");
                self.system(part, &why);
                self.set(part, Status::Failed, Some(why.clone()));
                Err((Status::Failed, why))
            }
        }
    }

    /// Runs the stages in order with their error policies; returns the run's outcome.
    async fn stages(self: Arc<Self>, run_rx: StopRx) -> (Status, Option<String>) {
        let pipeline = self.request.pipeline.clone();
        let mut outcome: (Status, Option<String>) = (Status::Succeeded, None);
        let mut ignored = Vec::new();
        for (s, stage) in pipeline.stages.iter().enumerate() {
            let finished_before = match &self.request.resume {
                Some(resume) if s < resume.from_stage => {
                    if resume.reattach.is_none() {
                        self.reuse_stage(s, &resume.previous);
                        continue;
                    }
                    true
                }
                _ => false,
            };
            let status = if finished_before {
                // A re-attached run: this stage ended before the restart.
                for t in 0..stage.tasks.len() {
                    self.restore_outputs(s, t, &stage.tasks[t]);
                }
                match self.status_of(Part::Stage(s)) {
                    Status::Skipped => Status::Succeeded,
                    status => status,
                }
            } else {
                if run_rx.borrow().is_some() {
                    self.skip_stages_from(s);
                    return (Status::Stopped, None);
                }
                self.clone().stage(s, stage, run_rx.clone()).await
            };
            if status == Status::Succeeded {
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

    /// Takes over a stage that succeeded in the run being retried: recorded as skipped,
    /// its outputs restored into the record and the scope.
    fn reuse_stage(&self, s: usize, previous: &RunRecord) {
        // A stage the earlier run itself took over names the run where it ran.
        let why = previous
            .stages
            .get(s)
            .and_then(|st| st.reason.clone())
            .filter(|r| r.starts_with(crate::REUSED))
            .unwrap_or_else(|| format!("{}{}", crate::REUSED, previous.number));
        let tasks = self.request.pipeline.stages[s].tasks.clone();
        for (t, task) in tasks.iter().enumerate() {
            let outputs = previous
                .stages
                .get(s)
                .and_then(|st| st.tasks.iter().find(|pt| pt.name == task.name.as_str()))
                .map(|pt| pt.outputs.clone())
                .unwrap_or_default();
            {
                let mut scope = self.scope.lock().unwrap();
                for declared in &task.outputs {
                    if let Some(value) = outputs.get(declared.as_str()) {
                        scope.names.insert(declared.to_string(), value.clone());
                    }
                }
                scope.outputs.insert(task.name.to_string(), outputs.clone());
            }
            self.record.lock().unwrap().stages[s].tasks[t].outputs = outputs;
            self.set(Part::Task(s, t), Status::Skipped, Some(why.clone()));
        }
        self.set(Part::Stage(s), Status::Skipped, Some(why));
    }

    /// Puts the outputs a task recorded before a restart back into the scope.
    fn restore_outputs(&self, s: usize, t: usize, task: &Task) {
        let outputs = self.record.lock().unwrap().stages[s].tasks[t].outputs.clone();
        let mut scope = self.scope.lock().unwrap();
        for declared in &task.outputs {
            if let Some(value) = outputs.get(declared.as_str()) {
                scope.names.insert(declared.to_string(), value.clone());
            }
        }
        scope.outputs.insert(task.name.to_string(), outputs);
    }

    /// Log lines about the run itself go to the first task's log of no one; the
    /// observer gets them as run-level system lines.
    fn system_run(&self, text: String) {
        let line =
            LogLine { continued: false, at: Timestamp::now(), stream: Stream::System, text: self.masker.mask(&text) };
        self.observer.log(Part::Run, &line);
    }

    /// Runs the `on_failure` stages; returns a description when they did not succeed.
    async fn rollback(self: Arc<Self>, run_rx: StopRx) -> Option<String> {
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

    async fn stage(self: Arc<Self>, s: usize, stage: &Stage, mut run_rx: StopRx) -> Status {
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

    async fn stage_tasks(
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

    fn stop_note(&self, reason: StopReason, stage_note: &Mutex<Option<String>>) -> String {
        if let Some(note) = stage_note.lock().unwrap().clone() {
            return note;
        }
        match self.run_end.lock().unwrap().clone() {
            Some((_, why)) => why,
            None => reason.as_text().to_owned(),
        }
    }

    /// One task, with its retries; returns its final status.
    async fn task(
        self: Arc<Self>,
        s: usize,
        t: usize,
        task: Task,
        mut stop: StopRx,
        stage_clock: RunningClock,
        stage_note: Arc<Mutex<Option<String>>>,
    ) -> Status {
        let part = Part::Task(s, t);
        let mut attempt = 0;
        // A re-attached run: what this task was doing when the server stopped.
        let mut adopt = None;
        if let Some(reattach) = self.request.resume.as_ref().and_then(|r| r.reattach.as_ref()) {
            let (status, attempts) = {
                let record = self.record.lock().unwrap();
                let task = &record.stages[s].tasks[t];
                (task.progress.status, task.attempts)
            };
            if status.is_terminal() {
                self.restore_outputs(s, t, &task);
                return status;
            }
            attempt = attempts;
            if status == Status::Running && attempts > 0 {
                attempt -= 1;
                adopt = Some(reattach.logs.get(&(s, t)).copied().unwrap_or_default());
            }
        }
        loop {
            attempt += 1;
            if let Some(resume) = adopt.take() {
                // The attempt runs already and holds a slot of its own; take one when
                // free, never wait (it would show `pending` while it runs).
                let permit = self.slots.clone().try_acquire_owned().ok();
                let ticking = (self.run_clock.start(), stage_clock.start());
                let outcome = self.attempt(s, t, &task, attempt, &mut stop, &stage_note, Some(resume)).await;
                drop(ticking);
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
                if self.apply(&mut record, part, Status::Running, None) {
                    self.observer.changed(&record, part);
                }
            }
            let ticking = (self.run_clock.start(), stage_clock.start());
            let outcome = self.attempt(s, t, &task, attempt, &mut stop, &stage_note, None).await;
            drop(ticking);
            drop(permit);
            if let Some(status) = self.after_attempt(s, t, &task, attempt, &stop, outcome) {
                return status;
            }
        }
    }

    /// Records how an attempt ended; `None` when the task goes on with a retry.
    fn after_attempt(
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

    /// Runs one attempt on the executor, or takes it over (`adopt`: a re-attached
    /// run's attempt that was running); returns (status, reason, exit code).
    #[expect(clippy::too_many_arguments, reason = "one attempt's coordinates, its stop channels and its mode")]
    async fn attempt(
        self: &Arc<Self>,
        s: usize,
        t: usize,
        task: &Task,
        attempt: u32,
        stop: &mut StopRx,
        stage_note: &Mutex<Option<String>>,
        adopt: Option<wharf_executor::LogResume>,
    ) -> (Status, Option<String>, Option<i32>) {
        let part = Part::Task(s, t);
        let output = OutputFile::new(self.run_dir.join("outputs"), format!("{s}-{t}-{attempt}.env"));
        // `image` tasks go to the builder, everything else to the executor.
        let job = match &task.kind {
            TaskKind::Image(image) => self.build_spec(s, task, image).map(Job::Build),
            _ => self.task_spec(s, task, attempt, &output.path()).map(Job::Exec),
        };
        let job = match job {
            Ok(job) => job,
            Err(why) => {
                self.system(part, &why);
                return (Status::Failed, Some(why), None);
            }
        };
        // An adopted attempt has been writing its outputs already.
        if adopt.is_none()
            && let Err(e) = output.create()
        {
            let why = format!("cannot create $WHARF_OUTPUT: {e}");
            return (Status::Failed, Some(why), None);
        }
        // The attempt's own `return`s end this block, so the file is removed after
        // every outcome; the file may hold secrets in clear.
        let output = &output;
        let result = async {
            let (task_tx, task_rx) = watch::channel(*stop.borrow_and_update());
            let sink: Arc<dyn LogSink> = Arc::new(TaskSink { state: self.clone(), part, carry: Mutex::default() });
            // The time an adopted attempt already ran counts against its timeout.
            let ran_before = match adopt {
                Some(_) => {
                    let since = self.record.lock().unwrap().stages[s].tasks[t]
                        .progress
                        .history
                        .iter()
                        .rev()
                        .find(|tr| tr.status == Status::Running)
                        .map(|tr| tr.at);
                    since.and_then(|at| Timestamp::now().duration_since(at).try_into().ok()).unwrap_or_default()
                }
                None => Duration::ZERO,
            };
            let run: wharf_executor::BoxFuture<'_, Result<Option<wharf_executor::Exit>, String>> = match (job, adopt) {
                (Job::Exec(spec), Some(resume)) => {
                    let adopted = self.executor.adopt(spec, sink, task_rx, resume);
                    Box::pin(async move { adopted.await.map_err(|e| e.to_string()) })
                }
                (Job::Exec(spec), None) => {
                    let run = self.executor.run(spec, sink, task_rx);
                    Box::pin(async move { run.await.map(Some).map_err(|e| e.to_string()) })
                }
                // A build cut off by a restart is not taken over: it counts as interrupted
                // (and is retried when the task allows it).
                (Job::Build(_), Some(_)) => Box::pin(async { Ok(None) }),
                (Job::Build(spec), None) => {
                    let output = output.clone();
                    Box::pin(async move { self.build(part, spec, sink, task_rx, output).await.map(Some) })
                }
            };
            tokio::pin!(run);
            let limit = task.timeout.map_or(Duration::MAX / 4, |d| d.as_std().saturating_sub(ran_before));
            let deadline = tokio::time::sleep(limit);
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
                Err(err) => (Status::Failed, Some(err), None),
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
                        Err(why) => {
                            self.system(part, &why);
                            (Status::Failed, Some(why), exit.code)
                        }
                    }
                }
            }
        }
        .await;
        output.remove();
        result
    }

    fn task_spec(&self, s: usize, task: &Task, attempt: u32, output_file: &Path) -> Result<TaskSpec, String> {
        let TaskKind::Script(script) = &task.kind else {
            return Err(format!("`{}` tasks cannot run yet", task.kind.type_name()));
        };
        let mut scope = self.scope.lock().unwrap().clone();
        let stage_name = self.record.lock().unwrap().stages[s].name.clone();
        let per_task = [
            ("CI", "true".to_owned()),
            ("WHARF", "true".to_owned()),
            ("WHARF_OUTPUT", output_file.display().to_string()),
            ("WHARF_WORKSPACE", self.src.display().to_string()),
            ("WHARF_RUN", format!("{}#{}", self.pipeline().name, self.request.number)),
            ("WHARF_STAGE", stage_name.clone()),
            ("WHARF_TASK", task.name.to_string()),
        ];
        for (k, v) in per_task {
            scope.names.insert(k.to_owned(), v);
        }
        let render = |field: &str, text: &str| -> Result<String, String> {
            let template = Template::parse(text).map_err(|e| format!("{field}: {}", e.message))?;
            scope.render(&template).map_err(|e| format!("{field}: {e}"))
        };
        let mut env: Vec<(String, String)> = scope.names.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let template = Template::parse(&script.script).map_err(|e| format!("script: {}", e.message))?;
        for r in template.refs() {
            // The shell would expand a missing output to an empty string; say so instead.
            if let VarRef::Name(name) = r
                && !scope.names.contains_key(name)
                && !task.env.contains_key(name)
                && !task.secrets.iter().any(|s| s.as_str() == name)
            {
                return Err(format!(
                    "script: `${{{name}}}` has no value (the task that writes it did not run or did not write it)"
                ));
            }
        }
        let task_index = &self.task_index;
        for r in template.refs() {
            if let VarRef::TaskOutput { task: producer, key } = r {
                let value = scope
                    .outputs
                    .get(producer)
                    .and_then(|o| o.get(key))
                    .ok_or_else(|| format!("script: task `{producer}` did not write the output `{key}`"))?;
                let (ps, pt) = task_index.get(producer.as_str()).copied().unwrap_or((usize::MAX, usize::MAX));
                env.push((output_env_name(ps, pt, key), value.clone()));
            }
        }
        let script_text = template.render_for_shell(|producer, key| {
            let (ps, pt) = task_index.get(producer).copied().unwrap_or((usize::MAX, usize::MAX));
            output_env_name(ps, pt, key)
        });
        for (k, v) in &task.env {
            env.push((k.clone(), render(&format!("env.{k}"), v)?));
        }
        for secret in &task.secrets {
            let value =
                self.request.secrets.get(secret.as_str()).ok_or_else(|| format!("the secret `{secret}` is not set"))?;
            env.push((secret.to_string(), value.clone()));
        }
        let image = match (&script.image, &script.tag) {
            (Some(image), Some(tag)) => Some(format!("{}:{}", render("image", image)?, render("tag", tag)?)),
            (Some(image), None) => Some(render("image", image)?),
            _ => self.pipeline().default_image.clone(),
        };
        // Literal references were checked at save; a rendered one is checked here,
        // before any executor sees it (no shell syntax, no `--option`).
        if let Some(image) = &image {
            wharf_core::reference::Reference::parse(image).map_err(|e| format!("image: {e}"))?;
        }
        Ok(TaskSpec {
            run: format!("{}#{}", self.pipeline().name, self.request.number),
            stage: stage_name,
            task: task.name.to_string(),
            attempt,
            workdir: self.src.clone(),
            script: script_text,
            image,
            env,
            output_file: output_file.to_path_buf(),
            labels: self.request.labels.clone(),
        })
    }

    fn collect_outputs(&self, s: usize, t: usize, task: &Task, file: &OutputFile) -> Result<(), String> {
        let part = Part::Task(s, t);
        // A task that removed the file wrote no outputs.
        let bytes = file.read(outputs::MAX_OUTPUT_FILE_BYTES)?.unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let parsed = outputs::parse(&text);
        for warning in &parsed.warnings {
            self.system(part, warning);
        }
        let missing: Vec<&str> =
            task.outputs.iter().map(|o| o.as_str()).filter(|o| !parsed.values.contains_key(*o)).collect();
        if !missing.is_empty() {
            let (noun, verb) = if missing.len() == 1 { ("output", "was") } else { ("outputs", "were") };
            return Err(format!("declared {noun} {} {verb} not written to $WHARF_OUTPUT", missing.join(", ")));
        }
        {
            let mut scope = self.scope.lock().unwrap();
            for declared in &task.outputs {
                let value = parsed.values[declared.as_str()].clone();
                scope.names.insert(declared.to_string(), value);
            }
            scope.outputs.insert(task.name.to_string(), parsed.values.clone());
        }
        let mut record = self.record.lock().unwrap();
        record.stages[s].tasks[t].outputs =
            parsed.values.iter().map(|(k, v)| (k.clone(), self.masker.mask(v))).collect();
        Ok(())
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

/// What one attempt runs.
enum Job {
    Exec(TaskSpec),
    Build(wharf_executor::build::BuildSpec),
}

/// The environment name a task output reference becomes in a later script.
fn output_env_name(stage: usize, task: usize, key: &str) -> String {
    format!("WHARF_OUT_{stage}_{task}_{key}")
}

struct TaskSink {
    state: Arc<RunState>,
    part: Part,
    /// Per stream (stdout, stderr): the end of a cut line, held back until the rest
    /// arrives, so that a secret cut in two is still masked whole.
    carry: Mutex<[String; 2]>,
}

impl LogSink for TaskSink {
    fn line(&self, mut line: LogLine) {
        let masker = &self.state.masker;
        let slot = match line.stream {
            wharf_executor::Stream::Stdout => Some(0),
            wharf_executor::Stream::Stderr => Some(1),
            wharf_executor::Stream::System => None,
        };
        if let Some(slot) = slot
            && !masker.is_empty()
        {
            let mut carry = self.carry.lock().unwrap();
            let mut text = std::mem::take(&mut carry[slot]);
            text.push_str(&line.text);
            if line.continued {
                // A secret that crosses the cut starts within its length - 1 bytes of it.
                let keep = masker.longest().saturating_sub(1);
                let at = text.floor_char_boundary(text.len().saturating_sub(keep));
                carry[slot] = text.split_off(at);
            }
            line.text = text;
        }
        line.text = masker.mask(&line.text);
        self.state.observer.log(self.part, &line);
    }
}
