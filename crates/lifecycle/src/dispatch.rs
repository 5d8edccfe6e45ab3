//! Accepting, queueing, starting and stopping runs. A run is stored `queued` before
//! [`Lifecycle::enqueue`] answers, so an accepted run survives a crash; the scheduler
//! starts queued runs as each pipeline's `concurrency` allows; a started run's record
//! and log lines are persisted as they happen ([`crate::persist`]); when it ends, the
//! retention policy runs.
//!
//! Executor slots are the engine's: a started run whose tasks wait for a slot shows
//! them `pending`, which no timeout counts.

use crate::error::{Problem, Result};
use crate::host::HostAccess;
use crate::persist::Persist;
use crate::{Lifecycle, RUN_LABEL, RunError};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use wharf_core::model::{Concurrency, Pipeline};
use wharf_core::run::{Cause, RunRecord};
use wharf_core::status::Status;
use wharf_engine::{Engine, GitRef, Resume, RunRequest, StopReason, Workspace};
use wharf_executor::StopRequest;
use wharf_store::{PipelineRow, RunRow};

/// Parsed pipeline versions kept in memory at most.
const PARSED_CACHE: usize = 1024;

/// A run accepted and not started yet.
#[derive(Clone, Debug)]
pub(crate) struct Queued {
    pub(crate) run_id: i64,
    pub(crate) pipeline_id: i64,
    pub(crate) version: i64,
    pub(crate) number: i64,
    pub(crate) increment: i64,
    pub(crate) cause: Cause,
    pub(crate) parameters: BTreeMap<String, String>,
    pub(crate) commit: Option<String>,
    /// The event's branch or tag, cloned instead of the pipeline's branch.
    pub(crate) git_ref: Option<GitRef>,
    pub(crate) retry_of: Option<i64>,
    pub(crate) created_at: jiff::Timestamp,
}

impl Queued {
    /// A stored run taken back into the queue (after a restart).
    pub(crate) fn from_row(row: &RunRow) -> Queued {
        Queued {
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
        }
    }
}

pub(crate) struct Active {
    pub(crate) pipeline_id: i64,
    pub(crate) number: i64,
    pub(crate) stop: watch::Sender<Option<StopRequest>>,
    /// Set when another run superseded this one (`cancel-previous`).
    pub(crate) superseded_by: Option<i64>,
    /// On PostgreSQL: this replica's claim on the run (its fence).
    pub(crate) hold: Option<Arc<crate::replicas::Hold>>,
}

/// What [`Lifecycle::enqueue`] answers: the new run's id and number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub id: i64,
    pub number: i64,
}

/// A request for a run of `model` with what every request has; the caller adds the
/// rest (workspace, secrets, resume, labels, registries) with `..`.
pub(crate) fn request(model: Arc<Pipeline>, row: RequestBasics) -> RunRequest {
    RunRequest {
        pipeline: model,
        number: row.number as u64,
        increment: row.increment as u64,
        cause: row.cause,
        parameters: row.parameters,
        secrets: BTreeMap::new(),
        workspace: Workspace::Checkout { dir: PathBuf::new() },
        commit: row.commit,
        git_ref: row.git_ref,
        resume: None,
        created_at: row.created_at,
        labels: vec![],
        registries: Default::default(),
        clusters: Default::default(),
        local_sources: false,
        approvals: None,
        signals: None,
    }
}

/// The part of a run request a queued or stored run knows.
pub(crate) struct RequestBasics {
    pub(crate) number: i64,
    pub(crate) increment: i64,
    pub(crate) cause: Cause,
    pub(crate) parameters: BTreeMap<String, String>,
    pub(crate) commit: Option<String>,
    pub(crate) git_ref: Option<GitRef>,
    pub(crate) created_at: Option<jiff::Timestamp>,
}

impl RequestBasics {
    pub(crate) fn of_row(row: &RunRow) -> RequestBasics {
        RequestBasics {
            number: row.summary.number,
            increment: row.summary.increment,
            cause: row.record.cause.clone(),
            parameters: row.record.parameters.clone(),
            commit: row.summary.commit.clone(),
            git_ref: pinned_ref(&row.record),
            created_at: row.record.progress.history.first().map(|t| t.at),
        }
    }
}

impl Lifecycle {
    /// Whether a run of `model` in `project` could start now with no parameters given
    /// (the check behind "save and run", made before saving).
    /// `secrets`: the project's (a task naming one that is not set cannot start).
    pub async fn check_startable(
        &self,
        model: &Pipeline,
        project: &str,
        active: bool,
        secrets: &BTreeMap<String, String>,
    ) -> Result<()> {
        let host = self.host_access(project, None).await?;
        self.prepare(model, active, &BTreeMap::new(), secrets, &host).map(|_| ())
    }

    fn prepare(
        &self,
        model: &Pipeline,
        active: bool,
        given: &BTreeMap<String, String>,
        secrets: &BTreeMap<String, String>,
        host: &HostAccess,
    ) -> Result<BTreeMap<String, String>> {
        if !active {
            return Err(RunError::Conflict(format!(
                "pipeline `{}` is inactive; activate it to start runs (its history is kept)",
                model.name
            )));
        }
        let engine =
            self.0.engines.for_model(model).map_err(|why| RunError::cannot_start("executor", why.to_string()))?;
        if self.0.engines.kind_for(model) == wharf_core::model::ExecutorKind::Kubernetes
            && model.cluster.is_none()
            && self.0.settings.default_cluster.is_none()
        {
            return Err(RunError::Invalid {
                message: "the run cannot start".into(),
                problems: vec![Problem {
                    path: "cluster".into(),
                    message: "the pipeline runs on the kubernetes executor and names no `cluster:`, and the server has no default \
                              cluster: name a registered cluster with `cluster: NAME`, or start the server with \
                              `--default-cluster NAME`"
                        .into(),
                }],
            });
        }
        self.host_refusal(model, host)?;
        engine.prepare(model, given, secrets).map_err(|e| {
            let problems = match e {
                wharf_engine::PrepareError::Invalid(refusals) => {
                    refusals.into_iter().map(|r| Problem { path: r.path, message: r.message }).collect()
                }
                other => vec![Problem { path: String::new(), message: other.to_string() }],
            };
            RunError::Invalid { message: "the run cannot start".into(), problems }
        })
    }

    /// Runs waiting to start in this server's queue (on PostgreSQL the queue is the
    /// database's, shared by the replicas: always 0 here; count `queued` runs there).
    pub fn queued(&self) -> usize {
        self.0.queue.lock().unwrap().len()
    }

    /// Runs started and not finished.
    pub fn active(&self) -> usize {
        self.0.active.lock().unwrap().len()
    }

    pub fn is_active(&self, run_id: i64) -> bool {
        self.0.active.lock().unwrap().contains_key(&run_id)
    }

    /// Numbers of the active runs of a pipeline.
    pub fn active_numbers(&self, pipeline_id: i64) -> Vec<i64> {
        self.0.active.lock().unwrap().values().filter(|a| a.pipeline_id == pipeline_id).map(|a| a.number).collect()
    }

    /// A saved version of a pipeline, parsed (and cached: versions are immutable).
    pub async fn pipeline_version(&self, pipeline_id: i64, version: i64) -> Result<Arc<Pipeline>> {
        if let Some(p) = self.0.pipelines.lock().unwrap().get(&(pipeline_id, version)) {
            return Ok(p.clone());
        }
        let row = self.store().version(pipeline_id, version).await?;
        let parsed = wharf_pipeline::parse(&row.source).map_err(|d| RunError::Unreadable {
            pipeline: pipeline_id,
            version,
            why: d.to_string(),
        })?;
        let parsed = Arc::new(parsed);
        let mut cache = self.0.pipelines.lock().unwrap();
        if cache.len() >= PARSED_CACHE {
            // Crude but bounded: versions are cheap to parse again.
            cache.clear();
        }
        cache.insert((pipeline_id, version), parsed.clone());
        Ok(parsed)
    }

    /// `<hash of the data directory>/<run id>`: the value of [`RUN_LABEL`] on what the
    /// run's tasks run.
    pub fn run_label(&self, run_id: i64) -> String {
        format!("{}{run_id}", self.label_prefix())
    }

    pub(crate) fn workspace_dir(&self, run_id: i64) -> PathBuf {
        crate::workspace::run_dir(&self.0.settings.data_dir, run_id)
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
    ) -> Result<Accepted> {
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
    ) -> Result<Accepted> {
        self.enqueue_claiming(pipeline, version, cause, given, commit, git_ref, retry_of, None).await
    }

    /// [`enqueue_at`](Self::enqueue_at), and with `timer` the run is stored in one
    /// transaction with the claim of its due time ([`wharf_store::Store::create_timer_run`]);
    /// a claim lost to another scheduler is a `Conflict` and stores nothing.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn enqueue_claiming(
        &self,
        pipeline: &PipelineRow,
        version: i64,
        cause: Cause,
        given: BTreeMap<String, String>,
        commit: Option<String>,
        git_ref: Option<GitRef>,
        retry_of: Option<&RunRow>,
        timer: Option<&wharf_store::timers::TimerClaim>,
    ) -> Result<Accepted> {
        let model = self.pipeline_version(pipeline.id, version).await?;
        let secrets = self.store().secret_values(&pipeline.project).await?;
        let host = self.host_access(&pipeline.project, Some(&cause)).await?;
        let parameters = self.prepare(&model, pipeline.active, &given, &secrets, &host)?;
        if let Some(previous) = retry_of {
            if Resume::from_failed_stage(previous.record.clone()).is_none() {
                return Err(RunError::Conflict(format!(
                    "run #{} has no failed stage to retry from",
                    previous.summary.number
                )));
            }
            if !self.workspace_dir(previous.summary.id).join("src").exists() {
                return Err(RunError::Conflict(format!(
                    "the workspace of run #{} is no longer kept; re-run it instead",
                    previous.summary.number
                )));
            }
        }
        let created_at = jiff::Timestamp::now();
        let make_record = |new: wharf_store::Numbering| {
            wharf_engine::initial_record(&request(
                model.clone(),
                RequestBasics {
                    number: new.number,
                    increment: new.increment,
                    cause: cause.clone(),
                    parameters: parameters.clone(),
                    commit: commit.clone(),
                    git_ref: git_ref.clone(),
                    created_at: Some(created_at),
                },
            ))
        };
        let (new, _) = match timer {
            None => {
                self.store()
                    .create_run(pipeline.id, version, retry_of.map(|r| r.summary.id), commit.as_deref(), make_record)
                    .await?
            }
            Some(claim) => self
                .store()
                .create_timer_run(claim, version, make_record)
                .await?
                .ok_or_else(|| RunError::Conflict("the timer's due time was claimed elsewhere".into()))?,
        };
        tracing::info!(run = new.id, pipeline = %pipeline.name, number = new.number, "run queued");
        if self.0.claims.is_some() {
            // The queue is the database's: whichever replica claims it first starts it.
            self.announce_work(Some(new.id)).await;
            return Ok(Accepted { id: new.id, number: new.number });
        }
        self.0.queue.lock().unwrap().push_back(Queued {
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
        self.0.wake.notify_one();
        Ok(Accepted { id: new.id, number: new.number })
    }

    /// Stops a run: a started one gets SIGTERM then SIGKILL after the grace; a queued
    /// one never starts. A finished run is a conflict.
    pub async fn stop(&self, run_id: i64) -> Result<()> {
        // Both locks at once (queue first, as `schedule` takes them), so a run moving
        // from the queue to `active` is always found in one or the other.
        let was_queued = {
            let mut queue = self.0.queue.lock().unwrap();
            let active = self.0.active.lock().unwrap();
            if let Some(active) = active.get(&run_id) {
                active
                    .stop
                    .send_replace(Some(StopRequest { reason: StopReason::Stopped, grace: self.0.settings.stop_grace }));
                return Ok(());
            }
            let before = queue.len();
            queue.retain(|q| q.run_id != run_id);
            queue.len() != before
        };
        if self.0.claims.is_some() {
            return self.stop_elsewhere(run_id).await;
        }
        let row = self.store().run(run_id).await?;
        if !was_queued {
            return Err(RunError::Conflict(format!(
                "run #{} of `{}` is already {}",
                row.summary.number, row.pipeline, row.summary.status
            )));
        }
        let mut record = row.record;
        record.end_unstarted(Status::Stopped, "stopped by user before it started", jiff::Timestamp::now());
        self.store().save_record(run_id, &record).await?;
        Ok(())
    }

    /// Starts the loop that starts queued runs whenever something changed.
    pub(crate) fn spawn_scheduler(&self) {
        let weak = self.downgrade();
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let this = Lifecycle(inner);
                let claims = this.0.claims.is_some();
                if claims {
                    this.schedule_claims().await;
                } else {
                    this.schedule().await;
                }
                let wake = this.0.wake.clone();
                // Hold no strong reference while idle, so the lifecycle can be dropped.
                drop(this);
                if claims {
                    // Other replicas' work arrives as store events (`spawn_work_listener`);
                    // the bounded poll is the safety net for a lost one and for leases
                    // that lapse, which nobody announces.
                    let _ = tokio::time::timeout(crate::replicas::POLL, wake.notified()).await;
                } else {
                    wake.notified().await;
                }
            }
        });
    }

    /// Starts every queued run its pipeline's concurrency allows.
    async fn schedule(&self) {
        let waiting: Vec<Queued> = self.0.queue.lock().unwrap().iter().cloned().collect();
        let mut starting_pipelines: Vec<i64> = Vec::new();
        for entry in waiting {
            let model = match self.pipeline_version(entry.pipeline_id, entry.version).await {
                Ok(model) => model,
                Err(e) => {
                    self.0.queue.lock().unwrap().retain(|q| q.run_id != entry.run_id);
                    self.fail_unstarted(entry.run_id, &format!("cannot load the pipeline: {e}")).await;
                    continue;
                }
            };
            let busy = starting_pipelines.contains(&entry.pipeline_id)
                || self
                    .0
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
                        .0
                        .queue
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|q| q.pipeline_id == entry.pipeline_id && q.run_id > entry.run_id);
                    if newer_queued {
                        self.0.queue.lock().unwrap().retain(|q| q.run_id != entry.run_id);
                        if let Ok(row) = self.store().run(entry.run_id).await {
                            let mut record = row.record;
                            let why = "superseded by a newer run before it started";
                            record.end_unstarted(Status::Stopped, why, jiff::Timestamp::now());
                            let _ = self.store().save_record(entry.run_id, &record).await;
                        }
                        continue;
                    }
                    for active in self.0.active.lock().unwrap().values_mut() {
                        if active.pipeline_id == entry.pipeline_id && active.superseded_by.is_none() {
                            active.superseded_by = Some(entry.number);
                            active.stop.send_replace(Some(StopRequest {
                                reason: StopReason::Superseded { by: entry.number as u64 },
                                grace: self.0.settings.stop_grace,
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
                let mut queue = self.0.queue.lock().unwrap();
                let mut active = self.0.active.lock().unwrap();
                let before = queue.len();
                queue.retain(|q| q.run_id != entry.run_id);
                if queue.len() == before {
                    continue; // stopped while we looked at it
                }
                active.insert(
                    entry.run_id,
                    Active {
                        pipeline_id: entry.pipeline_id,
                        number: entry.number,
                        stop: stop_tx,
                        superseded_by: None,
                        hold: None,
                    },
                );
            }
            starting_pipelines.push(entry.pipeline_id);
            self.start_run_soon(entry, model, stop_rx, None);
        }
    }

    /// Ends a run that could not start `failed` with `why`, stored, and tells the
    /// notifier (a run that never started fails like any other).
    pub(crate) async fn fail_unstarted(&self, run_id: i64, why: &str) {
        let hold = self.0.active.lock().unwrap().remove(&run_id).and_then(|a| a.hold);
        if let Ok(row) = self.store().run(run_id).await {
            let mut record = row.record;
            record.end_unstarted(Status::Failed, why, jiff::Timestamp::now());
            if let Err(e) = self.save_held(run_id, &record, hold.as_deref()).await {
                tracing::error!(run = run_id, error = %e, "cannot save the record of a run that could not start");
            }
            tracing::warn!(run = run_id, "the run could not start: {why}");
            self.0.shared.notify(crate::notify::RunEvent {
                run_id,
                pipeline_id: row.summary.pipeline_id,
                version: row.summary.version,
                record,
                kind: crate::notify::RunEventKind::Ended,
            });
        }
    }

    /// [`start_run`](Self::start_run) on a task of its own: the scheduler goes on to
    /// the next queued run at once instead of waiting for this one's reads (its
    /// pipeline, host access, registries, clusters, secrets), so a burst of runs starts
    /// as fast as the store answers them side by side, not one after another.
    pub(crate) fn start_run_soon(
        &self,
        entry: Queued,
        model: Arc<Pipeline>,
        stop_rx: watch::Receiver<Option<StopRequest>>,
        hold: Option<Arc<crate::replicas::Hold>>,
    ) {
        let this = self.clone();
        tokio::spawn(async move { this.start_run(entry, model, stop_rx, hold).await });
    }

    /// Starts a run already moved into `active` (so a stop reaches it from the first
    /// moment); failures before the engine starts end it `failed`.
    pub(crate) async fn start_run(
        &self,
        entry: Queued,
        model: Arc<Pipeline>,
        stop_rx: watch::Receiver<Option<StopRequest>>,
        hold: Option<Arc<crate::replicas::Hold>>,
    ) {
        let dir = self.workspace_dir(entry.run_id);
        if let Err(e) = crate::workspace::make_run_dir(&dir, self.0.host.task_gid) {
            return self.fail_unstarted(entry.run_id, &e.to_string()).await;
        }
        let (workspace, resume) = match entry.retry_of {
            Some(previous_id) => {
                let previous = match self.store().run(previous_id).await {
                    Ok(row) => row,
                    Err(e) => {
                        return self.fail_unstarted(entry.run_id, &format!("the retried run is gone: {e}")).await;
                    }
                };
                let Some(resume) = Resume::from_failed_stage(previous.record) else {
                    return self.fail_unstarted(entry.run_id, "the retried run has no failed stage").await;
                };
                // The retry works in the earlier run's checkout; a link keeps it
                // reachable from this run's directory, for a retry of the retry.
                let src = std::fs::canonicalize(self.workspace_dir(previous_id).join("src"));
                let Ok(src) = src else {
                    return self.fail_unstarted(entry.run_id, "the retried run's workspace is no longer kept").await;
                };
                let _ = std::fs::create_dir_all(&dir);
                let _ = std::os::unix::fs::symlink(&src, dir.join("src"));
                (Workspace::Existing { src, run_dir: dir }, Some(resume))
            }
            None => (Workspace::Checkout { dir }, None),
        };
        let registries = match self.registries().await {
            Ok(registries) => registries,
            Err(e) => {
                return self.fail_unstarted(entry.run_id, &format!("cannot read the registries: {e}")).await;
            }
        };
        // Checked when the run was accepted; a user added or trust withdrawn since counts.
        let pipeline = self.store().pipeline(entry.pipeline_id).await;
        let signals_gate = pipeline.as_ref().ok().map(|p| self.signal_gate(entry.run_id, p, entry.number));
        let project = pipeline.map(|p| p.project);
        let mut local_sources = false;
        if let Ok(project) = &project {
            let host = self
                .host_access(project, Some(&entry.cause))
                .await
                .unwrap_or_else(|e| HostAccess::Refused(format!("cannot check host access: {e}")));
            if let Err(RunError::Invalid { problems, .. }) = self.host_refusal(&model, &host) {
                let why = problems.into_iter().map(|p| p.message).collect::<Vec<_>>().join("; ");
                return self.fail_unstarted(entry.run_id, &why).await;
            }
            local_sources = matches!(host, HostAccess::Allowed);
        }
        // The project's secrets and clusters, opened now (tasks get those they name; logs
        // mask all). A run a fork's pull request started gets neither (its code is not
        // trusted with credentials, nor to deploy).
        let clusters = match &project {
            Ok(project) if entry.cause.gets_secrets() => {
                clusters(self.store(), project, self.0.settings.default_cluster.clone()).await
            }
            _ => Ok(Default::default()),
        };
        let clusters = match clusters {
            Ok(clusters) => clusters,
            Err(e) => {
                return self.fail_unstarted(entry.run_id, &format!("cannot read the project's clusters: {e}")).await;
            }
        };
        let secrets = match project {
            Ok(_) if !entry.cause.gets_secrets() => Ok(BTreeMap::new()),
            Ok(project) => self.store().secret_values(&project).await,
            Err(e) => Err(e),
        };
        let secrets = match secrets {
            Ok(secrets) => secrets,
            Err(e) => {
                let why = format!("cannot read the project's secrets: {e}");
                return self.fail_unstarted(entry.run_id, &why).await;
            }
        };
        let basics = RequestBasics {
            number: entry.number,
            increment: entry.increment,
            cause: entry.cause,
            parameters: entry.parameters,
            commit: entry.commit,
            git_ref: entry.git_ref,
            created_at: Some(entry.created_at),
        };
        let request = RunRequest {
            secrets,
            workspace,
            resume,
            labels: vec![(RUN_LABEL.to_owned(), self.run_label(entry.run_id))],
            registries,
            clusters,
            local_sources,
            approvals: Some(self.gate(entry.run_id)),
            signals: signals_gate,
            ..request(model, basics)
        };
        tracing::info!(run = entry.run_id, number = entry.number, "run started");
        self.launch((entry.run_id, entry.pipeline_id, entry.version), request, stop_rx, hold);
    }

    /// Runs `request` on its engine in the background; stores the final record, then
    /// lets the run go from `active`.
    pub(crate) fn launch(
        &self,
        (run_id, pipeline_id, version): (i64, i64, i64),
        request: RunRequest,
        stop_rx: watch::Receiver<Option<StopRequest>>,
        hold: Option<Arc<crate::replicas::Hold>>,
    ) {
        let observer = Arc::new(Persist::new(self.0.shared.clone(), (run_id, pipeline_id, version), hold.clone()));
        let this = self.clone();
        tokio::spawn(async move {
            let engine = match this.0.engines.for_model(&request.pipeline) {
                Ok(engine) => engine,
                // Checked when the run was accepted; the server's executors changed since.
                Err(why) => {
                    drop(observer);
                    this.fail_unstarted(run_id, &why.to_string()).await;
                    this.0.wake.notify_one();
                    return;
                }
            };
            let record = match &hold {
                None => engine.run(request, observer.clone(), stop_rx).await,
                Some(hold) => {
                    // A lost claim abandons the run where it is: no stop (the new owner
                    // may have re-attached what its tasks run), no write.
                    tokio::select! {
                        record = engine.run(request, observer.clone(), stop_rx) => record,
                        () = hold.lost() => {
                            drop(observer);
                            this.0.active.lock().unwrap().remove(&run_id);
                            tracing::warn!(run = run_id, "the run is now another server's (its lease lapsed); left to it");
                            this.0.wake.notify_one();
                            return;
                        }
                    }
                }
            };
            if !observer.finish(&record).await {
                this.0.active.lock().unwrap().remove(&run_id);
                tracing::warn!(run = run_id, "the run ended here but is now another server's; its end is left to it");
                this.0.wake.notify_one();
                return;
            }
            this.0.shared.notify(crate::notify::RunEvent {
                run_id,
                pipeline_id,
                version,
                record: record.clone(),
                kind: crate::notify::RunEventKind::Ended,
            });
            // Only now, with the final record stored, does the run stop being active.
            this.0.active.lock().unwrap().remove(&run_id);
            tracing::info!(run = run_id, status = %record.progress.status, "run finished");
            this.0.wake.notify_one();
            if this.0.claims.is_some() {
                // A pipeline's next queued run may wait for this one on another replica.
                this.announce_work(None).await;
            }
            this.apply_retention(pipeline_id).await;
        });
    }

    /// The registries a run's `image` tasks may push to, from the store.
    pub(crate) async fn registries(&self) -> wharf_store::Result<wharf_engine::Registries> {
        registries(self.store(), self.0.settings.default_registry.clone()).await
    }

    pub(crate) fn engine_for(&self, model: &Pipeline) -> Option<&Engine> {
        self.0.engines.for_model(model).ok()
    }

    /// Every task type and whether a pipeline on the server's default executor can run
    /// it (`Err`: what it needs), for the editor to say before a run is refused.
    pub fn task_types(&self) -> Vec<(&'static str, Result<(), String>)> {
        let engine = self.0.engines.default_engine();
        wharf_core::model::TASK_TYPES
            .iter()
            .map(|t| (*t, engine.map_or_else(|| Err("no executor is registered".to_owned()), |e| e.can_run(t))))
            .collect()
    }
}

/// The registries a run's `image` tasks may push to: every registered one, with its
/// credentials and workspaces; `default`: the one of tasks that name none.
pub async fn registries(
    store: &wharf_store::Store,
    default: Option<String>,
) -> wharf_store::Result<wharf_engine::Registries> {
    let by_name = store
        .registries()
        .await?
        .into_iter()
        .map(|r| {
            let target = wharf_engine::RegistryTarget {
                login: wharf_engine::RegistryLogin {
                    name: r.name.clone(),
                    host: r.host.clone(),
                    username: r.username.clone(),
                    password: r.password.clone(),
                    insecure: r.insecure,
                },
                workspaces: Some(r.workspaces.clone()),
            };
            (r.name, target)
        })
        .collect();
    Ok(wharf_engine::Registries { by_name, default })
}

/// The clusters of `project`, the only ones its pipelines' `deploy-yaml` tasks may name,
/// with their kubeconfigs opened.
pub async fn clusters(
    store: &wharf_store::Store,
    project: &str,
    default: Option<String>,
) -> wharf_store::Result<wharf_engine::Clusters> {
    let rows = store.clusters_of_project(project).await?;
    // The namespace registration applied (wharf-kube's `pipeline_namespace`).
    let namespaces = rows.iter().map(|c| (c.name.clone(), format!("ecp-devops-{}", c.short_id))).collect();
    // The cluster's stored settings: pod defaults, pending limit, workspace.
    let pod_defaults = rows.iter().map(|c| (c.name.clone(), c.settings.pod.clone())).collect();
    let pending_limits =
        rows.iter().filter_map(|c| Some((c.name.clone(), c.settings.pending_limit?.as_std()))).collect();
    let workspaces = rows.iter().map(|c| (c.name.clone(), c.settings.workspace.clone())).collect();
    let by_name = rows
        .into_iter()
        .map(|c| {
            let login = wharf_executor::deploy::ClusterLogin {
                name: c.name.clone(),
                kubeconfig: c.kubeconfig,
                context: Some(c.context).filter(|c| !c.is_empty()),
            };
            (c.name, login)
        })
        .collect();
    Ok(wharf_engine::Clusters { by_name, namespaces, pod_defaults, pending_limits, workspaces, default })
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
