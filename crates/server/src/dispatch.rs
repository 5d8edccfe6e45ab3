//! The run dispatcher: accepts runs (stored `queued` before the API answers), starts
//! them on the engine as each pipeline's `concurrency` allows, persists changes and
//! log lines as they happen ([`crate::persist`]), applies retention when runs end, and after a restart
//! settles the runs the previous process left behind.
//!
//! Executor slots are the engine's: a started run whose tasks wait for a slot shows
//! them `pending`, which no timeout counts.

use crate::error::{ApiResult, AppError, Detail};
use crate::hostexec::{HostAccess, RunAs};
use crate::persist::Persist;
use crate::{AppState, ServerConfig, ServerError};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{Notify, watch};
use wharf_core::model::ExecutorKind;
use wharf_core::model::{Concurrency, Pipeline};
use wharf_core::run::{Cause, RunRecord};
use wharf_core::status::Status;
use wharf_engine::{Engine, EngineConfig, GitRef, Resume, RunRequest, StopReason, Workspace};
use wharf_executor::host::{HostConfig, HostExecutor};
use wharf_executor::{Executor, Leftover, LogResume, StopRequest, Stream};
use wharf_store::logs::LogKey;
use wharf_store::{PipelineRow, RunRow};

/// The reason given to runs a restart cut short.
pub const INTERRUPTED: &str = "interrupted by server restart";

/// The label (an environment variable on the host executor) that ties a task's
/// processes to this server's data directory and run, so that a restarted server can
/// find and kill what its previous life left running.
pub const RUN_LABEL: &str = "WHARF_SERVER_RUN";

/// Parsed pipeline versions kept in memory at most.
const PARSED_CACHE: usize = 1024;

/// A run accepted and not started yet.
#[derive(Clone, Debug)]
struct Queued {
    run_id: i64,
    pipeline_id: i64,
    version: i64,
    number: i64,
    increment: i64,
    cause: Cause,
    parameters: BTreeMap<String, String>,
    commit: Option<String>,
    /// The event's branch or tag, cloned instead of the pipeline's branch.
    git_ref: Option<GitRef>,
    retry_of: Option<i64>,
    created_at: jiff::Timestamp,
}

struct Active {
    pipeline_id: i64,
    number: i64,
    stop: watch::Sender<Option<StopRequest>>,
    /// Set when another run superseded this one (`cancel-previous`).
    superseded_by: Option<i64>,
}

pub struct Dispatcher {
    state: Weak<AppState>,
    /// Runs pipelines that say `executor: host` (and every pipeline on a host server).
    host: Engine,
    /// Runs the pipelines of a docker server (images in containers, imageless tasks
    /// on the host where allowed); shares the host engine's slots.
    docker: Option<Engine>,
    queue: Mutex<VecDeque<Queued>>,
    active: Mutex<HashMap<i64, Active>>,
    /// Parsed pipeline versions, which never change once saved.
    pipelines: Mutex<HashMap<(i64, i64), Arc<Pipeline>>>,
    wake: Arc<Notify>,
    stop_grace: std::time::Duration,
    /// Whether tasks may run on the host at all (`executor: host`, a host server's
    /// scripts, a docker server's image-less ones).
    allow_host: bool,
    /// Whether runs of forks' pull requests may use the host (`host_forks`).
    host_forks: bool,
    /// As whom host tasks run (decided at start).
    run_as: RunAs,
}

/// What `enqueue` answers: the new run's id and number.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Accepted {
    pub id: i64,
    pub number: i64,
}

impl Dispatcher {
    /// `docker`: the docker executor when the server's default executor is docker;
    /// `builder`: what builds `image` tasks, when the Docker Engine answers;
    /// `run_as`: who host tasks run as ([`RunAs::resolve`]).
    pub fn new(
        state: Weak<AppState>,
        config: &ServerConfig,
        docker: Option<Arc<dyn Executor>>,
        builder: Option<Arc<dyn wharf_executor::build::ImageBuilder>>,
        run_as: RunAs,
    ) -> Self {
        let host_executor: Arc<dyn Executor> = Arc::new(HostExecutor::new(HostConfig {
            base_env: config.host_env.clone(),
            user: run_as.user().cloned(),
            ..HostConfig::default()
        }));
        let mut host = Engine::new(
            EngineConfig { max_parallel_tasks: config.max_parallel_tasks.max(1), timeout_grace: config.stop_grace },
            host_executor.clone(),
        );
        if let Some(builder) = &builder {
            host = host.with_builder(builder.clone());
        }
        let docker = docker.map(|docker| {
            let fallback = config.allow_host.then_some(host_executor);
            host.sharing_slots(Arc::new(wharf_executor::routed::ByImage::new(docker, fallback)))
        });
        Dispatcher {
            state,
            host,
            docker,
            queue: Mutex::default(),
            active: Mutex::default(),
            pipelines: Mutex::default(),
            wake: Arc::new(Notify::new()),
            stop_grace: config.stop_grace,
            allow_host: config.allow_host,
            host_forks: config.host_forks,
            run_as,
        }
    }

    /// Whether a run of `model` in `project` could start now with no parameters given
    /// (the check behind "save and run", made before saving).
    /// `secrets`: the project's (a task naming one that is not set cannot start).
    pub async fn check_startable(
        &self,
        model: &Pipeline,
        project: &str,
        active: bool,
        secrets: &BTreeMap<String, String>,
    ) -> ApiResult<()> {
        let host = self.host_access(project, None).await?;
        self.prepare(model, active, &BTreeMap::new(), secrets, &host).map(|_| ())
    }

    /// Whether tasks of `project` may run on the host executor now (see
    /// [`crate::hostexec`] for the rules).
    /// `cause`: what starts the run (`None`: a person, now); a fork's pull request gets
    /// the host only with `host_forks`, even in a trusted project (its code is an
    /// outsider's, which is also why it gets no secrets).
    pub async fn host_access(&self, project: &str, cause: Option<&Cause>) -> ApiResult<HostAccess> {
        if !self.allow_host {
            return Ok(HostAccess::Refused("this server does not run tasks on the host (allow_host = false)".into()));
        }
        if !self.host_forks && cause.is_some_and(|cause| !cause.gets_secrets()) {
            return Ok(HostAccess::Refused(
                "a pull request from a fork started this run, and code from forks runs on the host only where \
                 an administrator allows it (host_forks = true)"
                    .into(),
            ));
        }
        if let RunAs::Refused(why) = &self.run_as {
            return Ok(HostAccess::Refused(why.clone()));
        }
        let store = &self.state().store;
        if store.has_users_besides(crate::auth::ADMIN_USER).await? {
            let trusted = match store.project(project).await {
                Ok(project) => project.trusted,
                Err(wharf_store::StoreError::NotFound(_)) => false,
                Err(e) => return Err(e.into()),
            };
            if !trusted {
                return Ok(HostAccess::Refused(format!(
                    "project `{project}` is not trusted, and on a server with several users only projects an \
                     administrator marked trusted run tasks on the host (PATCH /api/v1/projects/{project} \
                     {{\"trusted\": true}})"
                )));
            }
        }
        Ok(HostAccess::Allowed)
    }

    /// The tasks of `model` that would run on the host executor (`stage/task`).
    fn host_tasks(&self, model: &Pipeline, engine: &Engine) -> Vec<String> {
        let on_docker = self.docker.as_ref().is_some_and(|docker| std::ptr::eq(engine, docker));
        model
            .all_stages()
            .flat_map(|stage| stage.tasks.iter().map(move |task| (stage, task)))
            .filter(|(_, task)| match &task.kind {
                wharf_core::model::TaskKind::Script(s) => {
                    !on_docker || (s.image.is_none() && model.default_image.is_none())
                }
                _ => false,
            })
            .map(|(stage, task)| format!("{}/{}", stage.name, task.name))
            .collect()
    }

    /// Why a run of `model` cannot start with `host` as the project's host access, and
    /// the field at fault: tasks that would run on the host, or a `source.repo` on the
    /// server's own disk (cloning it reads the disk with the server's rights, the same
    /// trust as a host task), where host access is refused. A templated `source.repo`
    /// is checked again once rendered, by the engine ([`RunRequest::local_sources`]).
    fn host_refusal(&self, model: &Pipeline, host: &HostAccess) -> Result<(), (&'static str, String)> {
        let HostAccess::Refused(why) = host else { return Ok(()) };
        if let Some(source) = &model.source
            && surely_local(&source.repo)
        {
            return Err((
                "source.repo",
                format!(
                    "`{}` names a repository on the server's own disk, which only runs that may run tasks on \
                     the host may clone, but {why}; use a remote address (https://, ssh://, git://)",
                    source.repo
                ),
            ));
        }
        let Ok(engine) = self.engine_for(model) else { return Ok(()) };
        let tasks = self.host_tasks(model, engine);
        if tasks.is_empty() {
            return Ok(());
        }
        if self.docker.as_ref().is_some_and(|docker| std::ptr::eq(engine, docker)) {
            Err((
                "executor",
                format!(
                    "{} name no image and would run on the host, but {why}; give them `image:` or the pipeline \
                     `default_image:` to run them in containers",
                    tasks.join(", ")
                ),
            ))
        } else {
            Err(("executor", format!("{} would run on the host executor, but {why}", tasks.join(", "))))
        }
    }

    fn prepare(
        &self,
        model: &Pipeline,
        active: bool,
        given: &BTreeMap<String, String>,
        secrets: &BTreeMap<String, String>,
        host: &HostAccess,
    ) -> ApiResult<BTreeMap<String, String>> {
        if !active {
            return Err(AppError::Conflict(format!(
                "pipeline `{}` is inactive; activate it to start runs (its history is kept)",
                model.name
            )));
        }
        let engine =
            self.engine_for(model).map_err(|why| AppError::invalid("the run cannot start", "executor", why))?;
        self.host_refusal(model, host).map_err(|(path, why)| AppError::invalid("the run cannot start", path, why))?;
        engine.prepare(model, given, secrets).map_err(|e| {
            let problems = match e {
                wharf_engine::PrepareError::Invalid(problems) => problems,
                other => vec![other.to_string()],
            };
            AppError::Invalid {
                message: "the run cannot start".into(),
                details: problems
                    .into_iter()
                    .map(|p| Detail { path: "parameters".into(), line: None, column: None, message: p })
                    .collect(),
            }
        })
    }

    /// The engine that runs `model`: its `executor:` when it names one, else the
    /// server's default. Whether its tasks may run on the host is [`Self::host_refusal`]'s.
    fn engine_for(&self, model: &Pipeline) -> Result<&Engine, String> {
        match (model.executor, &self.docker) {
            (Some(ExecutorKind::Host), _) | (None, None) => Ok(&self.host),
            (Some(ExecutorKind::Docker) | None, Some(docker)) => Ok(docker),
            (Some(ExecutorKind::Docker), None) => {
                Err("the pipeline asks for the docker executor; this server runs the host executor \
                 (start it with --executor docker where a Docker Engine answers)"
                    .to_owned())
            }
            (Some(kind @ ExecutorKind::Kubernetes), _) => {
                Err(format!("the pipeline asks for the {} executor, which this server does not have", kind.as_str()))
            }
        }
    }

    /// The name of the server's default executor (`host` or `docker`).
    pub fn default_executor(&self) -> &'static str {
        if self.docker.is_some() { "docker" } else { "host" }
    }

    fn state(&self) -> Arc<AppState> {
        self.state.upgrade().expect("the dispatcher lives inside the app state")
    }

    pub fn queued(&self) -> usize {
        self.queue.lock().unwrap().len()
    }

    pub fn active(&self) -> usize {
        self.active.lock().unwrap().len()
    }

    pub fn is_active(&self, run_id: i64) -> bool {
        self.active.lock().unwrap().contains_key(&run_id)
    }

    /// A saved version of a pipeline, parsed (and cached: versions are immutable).
    pub async fn pipeline_version(&self, pipeline_id: i64, version: i64) -> ApiResult<Arc<Pipeline>> {
        if let Some(p) = self.pipelines.lock().unwrap().get(&(pipeline_id, version)) {
            return Ok(p.clone());
        }
        let row = self.state().store.version(pipeline_id, version).await?;
        let parsed = wharf_pipeline::parse(&row.source).map_err(|d| {
            AppError::Internal(format!("stored version {version} of pipeline {pipeline_id} no longer validates: {d}"))
        })?;
        let parsed = Arc::new(parsed);
        let mut cache = self.pipelines.lock().unwrap();
        if cache.len() >= PARSED_CACHE {
            // Crude but bounded: versions are cheap to parse again.
            cache.clear();
        }
        cache.insert((pipeline_id, version), parsed.clone());
        Ok(parsed)
    }

    /// `<hash of the data directory>/<run id>`.
    fn run_label(&self, run_id: i64) -> String {
        format!("{}{run_id}", self.label_prefix())
    }

    /// `<hash of the data directory>/`: what every task label of this server starts with.
    fn label_prefix(&self) -> String {
        let dir = self.state().config.data_dir.clone();
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        format!("{}/", &crate::auth::sha256_hex(dir.as_os_str().as_encoded_bytes())[..16])
    }

    fn workspace_dir(&self, run_id: i64) -> PathBuf {
        self.state().config.data_dir.join(crate::datadir::WORKSPACES).join(run_id.to_string())
    }

    /// Accepts a run: checks it can start, stores it `queued`, and queues it. The
    /// answer comes after the run is stored, so an accepted run survives a crash.
    pub async fn enqueue(
        &self,
        pipeline: &PipelineRow,
        version: i64,
        cause: Cause,
        given: BTreeMap<String, String>,
        commit: Option<String>,
        retry_of: Option<&RunRow>,
    ) -> ApiResult<Accepted> {
        self.enqueue_at(pipeline, version, cause, given, commit, None, retry_of).await
    }

    /// [`enqueue`](Self::enqueue) with the branch or tag to clone instead of the
    /// pipeline's `source.branch` (a webhook event's, or a re-run's). The ref goes into
    /// the stored record's checkout (`branch` or `tag`), whence a restart takes it.
    #[allow(clippy::too_many_arguments)]
    pub async fn enqueue_at(
        &self,
        pipeline: &PipelineRow,
        version: i64,
        cause: Cause,
        given: BTreeMap<String, String>,
        commit: Option<String>,
        git_ref: Option<GitRef>,
        retry_of: Option<&RunRow>,
    ) -> ApiResult<Accepted> {
        let model = self.pipeline_version(pipeline.id, version).await?;
        let secrets = self.state().store.secret_values(&pipeline.project).await?;
        let host = self.host_access(&pipeline.project, Some(&cause)).await?;
        let parameters = self.prepare(&model, pipeline.active, &given, &secrets, &host)?;
        if let Some(previous) = retry_of {
            if Resume::from_failed_stage(previous.record.clone()).is_none() {
                return Err(AppError::Conflict(format!(
                    "run #{} has no failed stage to retry from",
                    previous.summary.number
                )));
            }
            if !self.workspace_dir(previous.summary.id).join("src").exists() {
                return Err(AppError::Conflict(format!(
                    "the workspace of run #{} is no longer kept; re-run it instead",
                    previous.summary.number
                )));
            }
        }
        let state = self.state();
        let created_at = jiff::Timestamp::now();
        let (new, _) = state
            .store
            .create_run(pipeline.id, version, retry_of.map(|r| r.summary.id), commit.as_deref(), |new| {
                wharf_engine::initial_record(&RunRequest {
                    pipeline: model.clone(),
                    number: new.number as u64,
                    increment: new.increment as u64,
                    cause: cause.clone(),
                    parameters: parameters.clone(),
                    secrets: BTreeMap::new(),
                    workspace: Workspace::Checkout { dir: PathBuf::new() },
                    commit: commit.clone(),
                    git_ref: git_ref.clone(),
                    resume: None,
                    created_at: Some(created_at),
                    labels: vec![],
                    registries: Default::default(),
                    local_sources: false,
                })
            })
            .await?;
        tracing::info!(run = new.id, pipeline = %pipeline.name, number = new.number, "run queued");
        self.queue.lock().unwrap().push_back(Queued {
            run_id: new.id,
            pipeline_id: pipeline.id,
            version,
            number: new.number,
            increment: new.increment,
            cause,
            parameters,
            commit,
            git_ref,
            retry_of: retry_of.map(|r| r.summary.id),
            created_at,
        });
        self.wake.notify_one();
        Ok(Accepted { id: new.id, number: new.number })
    }

    /// Stops a run: a started one gets SIGTERM then SIGKILL after the grace; a queued
    /// one never starts. A finished run is a conflict.
    pub async fn stop(&self, run_id: i64) -> ApiResult<()> {
        // Both locks at once (queue first, as `schedule` takes them), so a run moving
        // from the queue to `active` is always found in one or the other.
        let was_queued = {
            let mut queue = self.queue.lock().unwrap();
            let active = self.active.lock().unwrap();
            if let Some(active) = active.get(&run_id) {
                active.stop.send_replace(Some(StopRequest { reason: StopReason::Stopped, grace: self.stop_grace }));
                return Ok(());
            }
            let before = queue.len();
            queue.retain(|q| q.run_id != run_id);
            queue.len() != before
        };
        let state = self.state();
        let row = state.store.run(run_id).await?;
        if !was_queued {
            return Err(AppError::Conflict(format!(
                "run #{} of `{}` is already {}",
                row.summary.number, row.pipeline, row.summary.status
            )));
        }
        let mut record = row.record;
        end_unstarted(&mut record, Status::Stopped, "stopped by user before it started");
        state.store.save_record(run_id, &record).await?;
        Ok(())
    }

    /// Settles what a previous server process left: runs it had started are failed
    /// ("interrupted by server restart") or started again when their pipeline says
    /// `retry_on_restart: true`; runs that had executed nothing yet (waiting for a slot)
    /// and queued runs go back in the queue, keeping their numbers. Then starts the
    /// scheduler.
    pub async fn recover(state: &Arc<AppState>) -> Result<(), ServerError> {
        let this = &state.dispatcher;
        let interrupted = state.store.runs_with_status(&[Status::Pending, Status::Running, Status::Waiting]).await?;
        // At start nothing of ours runs yet, so every process labelled with this data
        // directory is a leftover of the previous process (whatever its run's stored
        // status says: a run cut before its start was saved still looks queued).
        let killed = kill_leftovers(&this.label_prefix());
        if killed > 0 {
            tracing::warn!(processes = killed, "killed task processes left by the previous server");
        }
        // Containers are different: they may still run, or have ended with their exit
        // code and log kept; the runs they belong to are continued where they were.
        let prefix = this.label_prefix();
        let mut containers: Vec<Leftover> = match &this.docker {
            Some(engine) => match engine.executor().leftovers(RUN_LABEL).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::error!(error = %e, "cannot list the containers the previous server left");
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        // Other servers may share the daemon: only this data directory's are ours.
        containers.retain(|c| c.label(RUN_LABEL).is_some_and(|v| v.starts_with(&prefix)));
        let mut adopted: std::collections::HashSet<String> = std::collections::HashSet::new();
        for row in interrupted {
            if let Some(ids) = this.reattach(state, &row, &containers).await {
                adopted.extend(ids);
                continue;
            }
            if this.requeue_unstarted(state, &row).await {
                continue;
            }
            let mut record = row.record.clone();
            end_interrupted(&mut record);
            let pipeline = state.store.pipeline(row.summary.pipeline_id).await;
            let again = match &pipeline {
                Ok(p) => match this.pipeline_version(p.id, row.summary.version).await {
                    Ok(model) if model.retry_on_restart => Some(p.clone()),
                    _ => None,
                },
                Err(_) => None,
            };
            if let Some(p) = again {
                let cause = Cause::Rerun { of: row.summary.number as u64 };
                match this
                    .enqueue_at(
                        &p,
                        row.summary.version,
                        cause,
                        row.record.parameters.clone(),
                        row.summary.commit.clone(),
                        pinned_ref(&row.record),
                        None,
                    )
                    .await
                {
                    Ok(new) => record.reason = Some(format!("{INTERRUPTED}; started again as run #{}", new.number)),
                    Err(e) => record.reason = Some(format!("{INTERRUPTED}; could not start it again: {e:?}")),
                }
            }
            if let Ok(mut w) = state.logs.writer(row.summary.id, LogKey::Run) {
                let _ = w.append(&log_line(
                    jiff::Timestamp::now(),
                    Stream::System,
                    record.reason.as_deref().unwrap_or(INTERRUPTED),
                ));
            }
            state.store.save_record(row.summary.id, &record).await?;
            tracing::warn!(run = row.summary.id, "{}", record.reason.as_deref().unwrap_or(INTERRUPTED));
        }
        if let Some(engine) = &this.docker {
            for container in containers.iter().filter(|c| !adopted.contains(&c.id)) {
                match engine.executor().discard(container).await {
                    Ok(()) => tracing::warn!(
                        container = %container.id,
                        run = container.label(RUN_LABEL).unwrap_or_default(),
                        "removed a container the previous server left (its run is not continued)"
                    ),
                    Err(e) => {
                        tracing::error!(container = %container.id, error = %e, "cannot remove a leftover container")
                    }
                }
            }
        }
        let queued = state.store.runs_with_status(&[Status::Queued]).await?;
        {
            let mut queue = this.queue.lock().unwrap();
            for row in queued {
                if queue.iter().any(|q| q.run_id == row.summary.id) {
                    continue;
                }
                queue.push_back(Queued {
                    run_id: row.summary.id,
                    pipeline_id: row.summary.pipeline_id,
                    version: row.summary.version,
                    number: row.summary.number,
                    increment: row.summary.increment,
                    cause: row.record.cause.clone(),
                    parameters: row.record.parameters.clone(),
                    commit: row.summary.commit.clone(),
                    git_ref: pinned_ref(&row.record),
                    retry_of: row.summary.retry_of,
                    created_at: row.record.progress.history.first().map_or_else(jiff::Timestamp::now, |t| t.at),
                });
            }
        }
        let weak = Arc::downgrade(state);
        tokio::spawn(async move {
            loop {
                let Some(state) = weak.upgrade() else { return };
                state.dispatcher.schedule(&state).await;
                let wake = state.dispatcher.wake.clone();
                // Hold no strong reference while idle, so the state can be dropped.
                drop(state);
                wake.notified().await;
            }
        });
        let weak = Arc::downgrade(state);
        tokio::spawn(async move {
            // Age-based retention needs a sweep now and then; runs ending apply the
            // count-based part themselves. Not at start: a restart should be quick.
            let period = std::time::Duration::from_secs(600);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            loop {
                tick.tick().await;
                let Some(state) = weak.upgrade() else { return };
                if let Ok(ids) = state.store.pipeline_ids().await {
                    for id in ids {
                        state.dispatcher.apply_retention(&state, id).await;
                    }
                }
            }
        });
        Ok(())
    }

    /// Puts back in the queue, under its own number, a run the previous process had
    /// taken from the queue but that had executed nothing yet (it waited for a slot):
    /// its record is made afresh, `queued`, and the queue sweep of [`recover`](Self::recover)
    /// picks it up. Retries of a failed stage, and runs that got further, are left to
    /// the interrupted-run rules (`false`).
    async fn requeue_unstarted(&self, state: &Arc<AppState>, row: &RunRow) -> bool {
        if row.summary.retry_of.is_some() || !executed_nothing(&row.record) {
            return false;
        }
        let Ok(model) = self.pipeline_version(row.summary.pipeline_id, row.summary.version).await else {
            return false;
        };
        let record = wharf_engine::initial_record(&RunRequest {
            pipeline: model,
            number: row.summary.number as u64,
            increment: row.summary.increment as u64,
            cause: row.record.cause.clone(),
            parameters: row.record.parameters.clone(),
            secrets: BTreeMap::new(),
            workspace: Workspace::Checkout { dir: PathBuf::new() },
            commit: row.summary.commit.clone(),
            git_ref: pinned_ref(&row.record),
            resume: None,
            created_at: row.record.progress.history.first().map(|t| t.at),
            labels: vec![],
            registries: Default::default(),
            local_sources: false,
        });
        if let Err(e) = state.store.save_record(row.summary.id, &record).await {
            tracing::error!(run = row.summary.id, error = %e, "cannot queue an unstarted run again");
            return false;
        }
        let why = "the server restarted before this run had started any task; it is queued again";
        if let Ok(mut w) = state.logs.writer(row.summary.id, LogKey::Run) {
            let _ = w.append(&log_line(jiff::Timestamp::now(), Stream::System, why));
        }
        tracing::warn!(run = row.summary.id, "{why}");
        true
    }

    /// Starts every queued run its pipeline's concurrency allows.
    async fn schedule(&self, state: &Arc<AppState>) {
        let waiting: Vec<Queued> = self.queue.lock().unwrap().iter().cloned().collect();
        let mut starting_pipelines: Vec<i64> = Vec::new();
        for entry in waiting {
            let model = match self.pipeline_version(entry.pipeline_id, entry.version).await {
                Ok(model) => model,
                Err(e) => {
                    self.queue.lock().unwrap().retain(|q| q.run_id != entry.run_id);
                    self.fail_unstarted(state, entry.run_id, &format!("cannot load the pipeline: {e:?}")).await;
                    continue;
                }
            };
            let busy = starting_pipelines.contains(&entry.pipeline_id)
                || self
                    .active
                    .lock()
                    .unwrap()
                    .values()
                    .any(|a| a.pipeline_id == entry.pipeline_id && a.superseded_by.is_none());
            let start = match model.concurrency {
                Concurrency::Allow => true,
                Concurrency::Queue => !busy,
                Concurrency::CancelPrevious => {
                    // The newest queued run wins; older queued ones are superseded too.
                    let newer_queued = self
                        .queue
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|q| q.pipeline_id == entry.pipeline_id && q.run_id > entry.run_id);
                    if newer_queued {
                        self.queue.lock().unwrap().retain(|q| q.run_id != entry.run_id);
                        let row = state.store.run(entry.run_id).await;
                        if let Ok(row) = row {
                            let mut record = row.record;
                            end_unstarted(&mut record, Status::Stopped, "superseded by a newer run before it started");
                            let _ = state.store.save_record(entry.run_id, &record).await;
                        }
                        continue;
                    }
                    for active in self.active.lock().unwrap().values_mut() {
                        if active.pipeline_id == entry.pipeline_id && active.superseded_by.is_none() {
                            active.superseded_by = Some(entry.number);
                            active.stop.send_replace(Some(StopRequest {
                                reason: StopReason::Superseded { by: entry.number as u64 },
                                grace: self.stop_grace,
                            }));
                        }
                    }
                    true
                }
            };
            if !start {
                continue;
            }
            let (stop_tx, stop_rx) = watch::channel(None);
            {
                let mut queue = self.queue.lock().unwrap();
                let mut active = self.active.lock().unwrap();
                let before = queue.len();
                queue.retain(|q| q.run_id != entry.run_id);
                if queue.len() == before {
                    continue; // stopped while we looked at it
                }
                active.insert(
                    entry.run_id,
                    Active { pipeline_id: entry.pipeline_id, number: entry.number, stop: stop_tx, superseded_by: None },
                );
            }
            starting_pipelines.push(entry.pipeline_id);
            self.start(state, entry, model, stop_rx).await;
        }
    }

    async fn fail_unstarted(&self, state: &Arc<AppState>, run_id: i64, why: &str) {
        self.active.lock().unwrap().remove(&run_id);
        if let Ok(row) = state.store.run(run_id).await {
            let mut record = row.record;
            end_unstarted(&mut record, Status::Failed, why);
            let _ = state.store.save_record(run_id, &record).await;
        }
    }

    /// Starts a run already moved into `active` (so a stop reaches it from the first
    /// moment); failures before the engine starts end it `failed`.
    async fn start(
        &self,
        state: &Arc<AppState>,
        entry: Queued,
        model: Arc<Pipeline>,
        stop_rx: watch::Receiver<Option<StopRequest>>,
    ) {
        let dir = self.workspace_dir(entry.run_id);
        if let Err(e) = crate::datadir::make_run_dir(&dir, self.run_as.user().map(|user| user.gid)) {
            return self.fail_unstarted(state, entry.run_id, &e.to_string()).await;
        }
        let (workspace, resume) = match entry.retry_of {
            Some(previous_id) => {
                let previous = match state.store.run(previous_id).await {
                    Ok(row) => row,
                    Err(e) => {
                        return self
                            .fail_unstarted(state, entry.run_id, &format!("the retried run is gone: {e}"))
                            .await;
                    }
                };
                let Some(resume) = Resume::from_failed_stage(previous.record) else {
                    return self.fail_unstarted(state, entry.run_id, "the retried run has no failed stage").await;
                };
                // The retry works in the earlier run's checkout; a link keeps it
                // reachable from this run's directory, for a retry of the retry.
                let src = std::fs::canonicalize(self.workspace_dir(previous_id).join("src"));
                let Ok(src) = src else {
                    return self
                        .fail_unstarted(state, entry.run_id, "the retried run's workspace is no longer kept")
                        .await;
                };
                let _ = std::fs::create_dir_all(&dir);
                let _ = std::os::unix::fs::symlink(&src, dir.join("src"));
                (Workspace::Existing { src, run_dir: dir }, Some(resume))
            }
            None => (Workspace::Checkout { dir }, None),
        };
        let registries = match crate::api::registries::for_runs(state).await {
            Ok(registries) => registries,
            Err(e) => {
                return self.fail_unstarted(state, entry.run_id, &format!("cannot read the registries: {e}")).await;
            }
        };
        // Checked when the run was accepted; a user added or trust withdrawn since counts.
        let project = state.store.pipeline(entry.pipeline_id).await.map(|p| p.project);
        let mut local_sources = false;
        if let Ok(project) = &project {
            let host = self
                .host_access(project, Some(&entry.cause))
                .await
                .unwrap_or_else(|e| HostAccess::Refused(format!("cannot check host access: {e:?}")));
            if let Err((_, why)) = self.host_refusal(&model, &host) {
                return self.fail_unstarted(state, entry.run_id, &why).await;
            }
            local_sources = matches!(host, HostAccess::Allowed);
        }
        // The project's secrets, opened now (tasks get those they name; logs mask all).
        // A run a fork's pull request started gets none (its code is not trusted).
        let secrets = match project {
            Ok(_) if !entry.cause.gets_secrets() => Ok(BTreeMap::new()),
            Ok(project) => state.store.secret_values(&project).await,
            Err(e) => Err(e),
        };
        let secrets = match secrets {
            Ok(secrets) => secrets,
            Err(e) => {
                let why = format!("cannot read the project's secrets: {e}");
                return self.fail_unstarted(state, entry.run_id, &why).await;
            }
        };
        let request = RunRequest {
            pipeline: model,
            number: entry.number as u64,
            increment: entry.increment as u64,
            cause: entry.cause,
            parameters: entry.parameters,
            secrets,
            workspace,
            commit: entry.commit,
            git_ref: entry.git_ref,
            resume,
            created_at: Some(entry.created_at),
            labels: vec![(RUN_LABEL.to_owned(), self.run_label(entry.run_id))],
            registries,
            local_sources,
        };
        tracing::info!(run = entry.run_id, number = entry.number, "run started");
        self.launch(state, entry.run_id, entry.pipeline_id, request, stop_rx);
    }

    /// Runs `request` on its engine in the background; stores the final record, then
    /// lets the run go from `active`.
    fn launch(
        &self,
        state: &Arc<AppState>,
        run_id: i64,
        pipeline_id: i64,
        request: RunRequest,
        stop_rx: watch::Receiver<Option<StopRequest>>,
    ) {
        let observer = Arc::new(Persist::new(state.clone(), run_id));
        let state = state.clone();
        tokio::spawn(async move {
            let engine = match state.dispatcher.engine_for(&request.pipeline) {
                Ok(engine) => engine,
                // Checked when the run was accepted; the server's executor changed since.
                Err(why) => {
                    drop(observer);
                    state.dispatcher.fail_unstarted(&state, run_id, &why).await;
                    state.dispatcher.wake.notify_one();
                    return;
                }
            };
            let record = engine.run(request, observer.clone(), stop_rx).await;
            observer.finish(&record).await;
            // Only now, with the final record stored, does the run stop being active.
            state.dispatcher.active.lock().unwrap().remove(&run_id);
            tracing::info!(run = run_id, status = %record.progress.status, "run finished");
            state.dispatcher.wake.notify_one();
            state.dispatcher.apply_retention(&state, pipeline_id).await;
        });
    }

    /// Continues a run the previous server process left running when containers of
    /// its running tasks are still there (DESIGN.md §3, Durability): the engine adopts
    /// them, resuming their logs where the stored ones end. Returns the ids of the
    /// containers it takes over; `None` leaves the run to the interrupted-run rules.
    async fn reattach(&self, state: &Arc<AppState>, row: &RunRow, containers: &[Leftover]) -> Option<Vec<String>> {
        let label = self.run_label(row.summary.id);
        let theirs: Vec<&Leftover> = containers.iter().filter(|c| c.label(RUN_LABEL) == Some(label.as_str())).collect();
        if theirs.is_empty() {
            return None;
        }
        let pipeline = state.store.pipeline(row.summary.pipeline_id).await.ok()?;
        let model = self.pipeline_version(pipeline.id, row.summary.version).await.ok()?;
        let engine = self.engine_for(&model).ok()?;
        if !std::ptr::eq(engine, self.docker.as_ref()?) {
            return None;
        }
        let record = &row.record;
        let mut ids = Vec::new();
        let mut logs = BTreeMap::new();
        for (s, stage) in record.stages.iter().enumerate() {
            for (t, task) in stage.tasks.iter().enumerate() {
                if task.progress.status != Status::Running {
                    continue;
                }
                let attempt = task.attempts.to_string();
                let found = theirs.iter().find(|c| {
                    c.label(wharf_docker::LABEL_STAGE) == Some(stage.name.as_str())
                        && c.label(wharf_docker::LABEL_TASK) == Some(task.name.as_str())
                        && c.label(wharf_docker::LABEL_ATTEMPT) == Some(attempt.as_str())
                });
                if let Some(container) = found {
                    ids.push(container.id.clone());
                    let started = task.progress.history.iter().rev().find(|h| h.status == Status::Running);
                    let path = state.logs.path(row.summary.id, LogKey::Task(s, t));
                    logs.insert((s, t), log_resume(&path, started.map(|h| h.at)));
                }
            }
        }
        if ids.is_empty() {
            return None;
        }
        let resume = Resume::reattach(record.clone(), logs.clone())?;
        let dir = self.workspace_dir(row.summary.id);
        let workspace = match std::fs::canonicalize(dir.join("src")) {
            // A retry works in the checkout of the run it retries, linked from its own.
            Ok(src) if dir.join("src").is_symlink() => Workspace::Existing { src, run_dir: dir },
            _ => Workspace::Checkout { dir },
        };
        let request = RunRequest {
            pipeline: model,
            number: row.summary.number as u64,
            increment: row.summary.increment as u64,
            cause: record.cause.clone(),
            parameters: record.parameters.clone(),
            secrets: if record.cause.gets_secrets() {
                state.store.secret_values(&pipeline.project).await.ok()?
            } else {
                BTreeMap::new()
            },
            workspace,
            commit: row.summary.commit.clone(),
            git_ref: pinned_ref(record),
            resume: Some(resume),
            created_at: record.progress.history.first().map(|h| h.at),
            labels: vec![(RUN_LABEL.to_owned(), label)],
            registries: crate::api::registries::for_runs(state).await.ok()?,
            // A reattached run is past its checkout; it clones nothing.
            local_sources: false,
        };
        let (stop_tx, stop_rx) = watch::channel(None);
        self.active.lock().unwrap().insert(
            row.summary.id,
            Active {
                pipeline_id: row.summary.pipeline_id,
                number: row.summary.number,
                stop: stop_tx,
                superseded_by: None,
            },
        );
        for (s, t) in logs.keys() {
            state.live.open(row.summary.id, LogKey::Task(*s, *t));
        }
        if let Ok(mut w) = state.logs.writer(row.summary.id, LogKey::Run) {
            let _ = w.append(&log_line(
                jiff::Timestamp::now(),
                Stream::System,
                &format!("the server restarted; continuing the run with {} running container(s)", ids.len()),
            ));
        }
        tracing::warn!(
            run = row.summary.id,
            containers = ids.len(),
            "re-attached to a run the previous server left running"
        );
        self.launch(state, row.summary.id, row.summary.pipeline_id, request, stop_rx);
        Some(ids)
    }

    /// Deletes what the retention policy no longer keeps: finished runs beyond the
    /// count or the age (pipeline's policy, else the server's), with their logs and
    /// workspaces; and workspaces beyond the newest `keep_workspaces` runs.
    pub async fn apply_retention(&self, state: &Arc<AppState>, pipeline_id: i64) {
        let Ok(pipeline) = state.store.pipeline(pipeline_id).await else { return };
        let policy = self.retention_policy(pipeline.id, pipeline.version).await;
        let keep = policy.and_then(|p| p.runs).or(state.config.keep_runs).map(i64::from);
        let days = policy.and_then(|p| p.days).or(state.config.keep_days).map(i64::from);
        let before = days.map(|d| wharf_store::now_ms() - d * 86_400_000);
        if (keep.is_some() || before.is_some())
            && let Ok(ids) = state.store.expired_runs(pipeline_id, keep, before).await
            && !ids.is_empty()
        {
            for id in &ids {
                let _ = state.logs.remove_run(*id);
                let _ = std::fs::remove_dir_all(self.workspace_dir(*id));
            }
            let _ = state.store.delete_runs(&ids).await;
        }
        // Only the runs just past the newest `keep_workspaces` (each run's end looks,
        // so older ones were handled already; the window covers a few ending at once).
        let keep_ws = i64::from(state.config.keep_workspaces);
        if let Ok((old, _)) = state.store.runs(pipeline_id, 16, keep_ws).await {
            for run in old.iter().filter(|r| r.status.is_terminal()) {
                let src = self.workspace_dir(run.id).join("src");
                if src.is_symlink() {
                    let _ = std::fs::remove_file(&src);
                } else if src.exists() {
                    let _ = std::fs::remove_dir_all(&src);
                }
            }
        }
    }

    /// A version's retention policy, from the parse cache when it is there, without
    /// filling the cache (a sweep over every pipeline would keep them all in memory).
    async fn retention_policy(&self, pipeline_id: i64, version: i64) -> Option<wharf_core::model::Retention> {
        if let Some(model) = self.pipelines.lock().unwrap().get(&(pipeline_id, version)) {
            return model.retention;
        }
        let source = self.state().store.version(pipeline_id, version).await.ok()?.source;
        wharf_pipeline::parse(&source).ok()?.retention
    }

    /// The number of the run that superseded `run_id`, if any (for tests and the API).
    pub fn superseded_by(&self, run_id: i64) -> Option<i64> {
        self.active.lock().unwrap().get(&run_id).and_then(|a| a.superseded_by)
    }

    /// Numbers of the active runs of a pipeline.
    pub fn active_numbers(&self, pipeline_id: i64) -> Vec<i64> {
        self.active.lock().unwrap().values().filter(|a| a.pipeline_id == pipeline_id).map(|a| a.number).collect()
    }
}

/// The branch or tag a record's checkout names, to clone again when the run is
/// rebuilt (a queued run after a restart, a re-run): its tag, or its branch when that
/// is literal text. A branch still holding `${…}` is the pipeline's own template,
/// which the engine renders itself (`None`).
pub fn pinned_ref(record: &RunRecord) -> Option<GitRef> {
    let checkout = record.checkout.as_ref()?;
    match GitRef::from_checkout(checkout)? {
        GitRef::Branch(branch) if branch.contains('$') => None,
        pinned => Some(pinned),
    }
}

/// Where the stored log of a task's attempt (which started running at `started`)
/// ends, in the executor's terms: the last second its stored output lines reach and
/// how many of them are stamped in or after it. Lines of earlier attempts (before
/// `started`) and Wharf's own (`sys`) lines do not count.
fn log_resume(path: &std::path::Path, started: Option<jiff::Timestamp>) -> LogResume {
    use std::io::BufRead;
    let Ok(file) = std::fs::File::open(path) else { return LogResume::default() };
    let from_ms = started.map_or(i64::MIN, |t| t.as_millisecond());
    let mut seconds: Vec<i64> = Vec::new();
    for line in std::io::BufReader::new(file).split(b'\n').map_while(Result::ok) {
        let mut fields = line.splitn(3, |b| *b == b' ');
        let (Some(at), Some(tag)) = (fields.next(), fields.next()) else { continue };
        if tag != b"out" && tag != b"err" {
            continue;
        }
        let Some(at) = std::str::from_utf8(at).ok().and_then(|t| t.parse::<jiff::Timestamp>().ok()) else { continue };
        if at.as_millisecond() >= from_ms {
            seconds.push(at.as_second());
        }
    }
    match seconds.last() {
        None => LogResume::default(),
        Some(&last) => LogResume {
            since_second: last,
            skip_lines: seconds.iter().rev().take_while(|s| **s >= last).count() as u64,
        },
    }
}

/// Ends a run that never started: the run and every part `status` (tasks `skipped`).
fn end_unstarted(record: &mut RunRecord, status: Status, why: &str) {
    let now = jiff::Timestamp::now();
    for stage in &mut record.stages {
        for task in &mut stage.tasks {
            let _ = task.progress.advance(Status::Skipped, now);
        }
        let _ = stage.progress.advance(Status::Skipped, now);
    }
    if let Some(c) = record.checkout.as_mut() {
        let _ = c.progress.advance(Status::Skipped, now);
    }
    if record.progress.advance(status, now).is_ok() {
        record.reason = Some(why.to_owned());
    }
}

/// Whether a run had executed nothing: no checkout and no task past waiting for a
/// slot (`pending`), no attempt made, nothing waiting for a person.
/// Whether `repo`, as written in the pipeline, names a repository on the server's disk
/// whatever its `${…}` render to: untemplated and local, or a template starting with a
/// path or `file:`. Others (`${REPO}`) are checked by the engine once rendered.
fn surely_local(repo: &str) -> bool {
    match repo.split_once("${") {
        None => wharf_core::git::is_local_repo(repo),
        Some((fixed, _)) => fixed.starts_with('/') || fixed.get(..5).is_some_and(|s| s.eq_ignore_ascii_case("file:")),
    }
}

fn executed_nothing(record: &RunRecord) -> bool {
    let waiting_only = |status: Status| matches!(status, Status::Queued | Status::Pending);
    matches!(record.progress.status, Status::Queued | Status::Pending | Status::Running)
        && record.checkout.as_ref().is_none_or(|c| waiting_only(c.progress.status))
        && record.stages.iter().all(|stage| {
            matches!(stage.progress.status, Status::Queued | Status::Pending | Status::Running)
                && stage.tasks.iter().all(|t| waiting_only(t.progress.status) && t.attempts == 0)
        })
}

/// Ends a run whose server died under it: what was running or waiting failed, what
/// had not started is skipped.
fn end_interrupted(record: &mut RunRecord) {
    let now = jiff::Timestamp::now();
    let settle = |progress: &mut wharf_core::run::Progress, reason: &mut Option<String>| match progress.status {
        Status::Running | Status::Pending | Status::Waiting => {
            let _ = progress.advance(Status::Failed, now);
            *reason = Some(INTERRUPTED.to_owned());
        }
        Status::Queued => {
            let _ = progress.advance(Status::Skipped, now);
        }
        _ => {}
    };
    if let Some(c) = record.checkout.as_mut() {
        settle(&mut c.progress, &mut c.reason);
    }
    for stage in &mut record.stages {
        for task in &mut stage.tasks {
            settle(&mut task.progress, &mut task.reason);
        }
        settle(&mut stage.progress, &mut stage.reason);
    }
    settle(&mut record.progress, &mut record.reason);
}

/// The stored form of a log line: `<RFC 3339 time> <out|err|sys> <text>`.
pub fn log_line(at: jiff::Timestamp, stream: Stream, text: &str) -> String {
    let tag = match stream {
        Stream::Stdout => "out",
        Stream::Stderr => "err",
        Stream::System => "sys",
    };
    format!("{} {tag} {text}", at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
}

/// Kills (SIGKILL, whole process groups) the processes whose environment carries
/// `WHARF_SERVER_RUN=<prefix>…`: what a killed server's host tasks left running.
/// Returns how many processes matched. Linux only (reads /proc); elsewhere a no-op.
fn kill_leftovers(prefix: &str) -> usize {
    let needle = format!("{RUN_LABEL}={prefix}");
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    let mut found = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        if environ.split(|b| *b == 0).any(|var| var.starts_with(needle.as_bytes())) {
            found += 1;
            let pid = nix::unistd::Pid::from_raw(pid);
            match nix::unistd::getpgid(Some(pid)) {
                Ok(group) if group.as_raw() > 1 => {
                    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                }
                _ => {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
    }
    found
}
