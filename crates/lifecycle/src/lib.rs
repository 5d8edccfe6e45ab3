//! The run lifecycle: everything that happens to a run between "start it" and its
//! final record, with no HTTP in sight. The server (or a test) builds a [`Lifecycle`]
//! from the store, the log files, its [`Settings`], the [`Executors`] it registered and
//! the [`HostPolicy`], calls [`Lifecycle::start`] once, then asks it for runs.
//!
//! Reading order:
//! - [`dispatch`]: accepting a run (stored `queued` before anyone is told), the queue
//!   and each pipeline's `concurrency`, starting runs on the engine, stopping them;
//! - [`host`]: who may put tasks on the server's own machine;
//! - [`persist`]: the engine's observer, writing records and log lines as they happen,
//!   and [`live`], which wakes the readers of a growing log;
//! - `recover` (restart recovery: re-attach, queue again or settle what the previous
//!   process left) and `retention` (what is deleted when);
//! - [`replicas`]: several servers on one PostgreSQL database — runs claimed under
//!   leases with fenced writes, taken over when their owner dies, a graceful drain;
//! - [`timers`]: runs that timer triggers start.
//!
//! Errors are [`RunError`]s; how they are shown is the caller's business.

pub mod approvals;
pub mod dispatch;
pub mod error;
pub mod executors;
pub mod host;
pub mod live;
pub mod metrics;
pub mod notify;
pub mod persist;
mod recover;
pub mod replicas;
mod retention;
pub mod signals;
pub mod timers;
pub mod workspace;

pub use dispatch::Accepted;
pub use error::{Problem, RunError};
pub use executors::Executors;
pub use host::{HostAccess, HostPolicy};

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use wharf_core::model::Pipeline;
use wharf_store::Store;
use wharf_store::logs::LogFiles;

/// The label (an environment variable on the host executor, a container label on
/// Docker) that ties what a task runs to this server's data directory and run, so that
/// a restarted server finds what its previous life left.
pub const RUN_LABEL: &str = "WHARF_SERVER_RUN";

/// What the lifecycle is told by the server's configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Runs' workspaces live in `<data_dir>/workspaces/<run id>`; the directory also
    /// names this server in the labels of what its tasks run.
    pub data_dir: PathBuf,
    /// Tasks running at once across all runs and executors.
    pub max_parallel_tasks: usize,
    /// SIGTERM → SIGKILL grace when a person stops a run or a timeout ends a task.
    pub stop_grace: Duration,
    /// Finished runs kept per pipeline, and their maximum age (pipelines may say less).
    pub keep_runs: Option<u32>,
    pub keep_days: Option<u32>,
    /// Workspaces (checkouts) kept per pipeline, for retries.
    pub keep_workspaces: u32,
    /// The registry (by registered name) of `image` tasks that name none.
    pub default_registry: Option<String>,
    /// The cluster (by registered name) of pipelines on the kubernetes executor that
    /// name no `cluster:`.
    pub default_cluster: Option<String>,
    /// The default zone of timer triggers that name none.
    pub timezone: jiff::tz::TimeZone,
    /// How old a due time missed while the server was down may be and still get its
    /// catch-up run.
    pub timer_grace: Duration,
    /// On PostgreSQL (replicas): how long a claim on a run holds without renewal, so how
    /// soon another replica takes over the runs of one that died (see [`replicas`]).
    pub lease: Duration,
}

impl Settings {
    /// The defaults of a server whose data lives in `data_dir`.
    pub fn new(data_dir: PathBuf) -> Settings {
        Settings {
            data_dir,
            max_parallel_tasks: 8,
            stop_grace: Duration::from_secs(10),
            keep_runs: None,
            keep_days: None,
            keep_workspaces: 5,
            default_registry: None,
            default_cluster: None,
            timezone: jiff::tz::TimeZone::system(),
            timer_grace: Duration::from_secs(3600),
            lease: replicas::DEFAULT_LEASE,
        }
    }
}

/// What a run's persistence and the log readers share.
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) logs: LogFiles,
    pub(crate) live: live::LiveLogs,
    pub(crate) metrics: metrics::RunMetrics,
    /// Told when runs end and approvals start waiting (set once by the server).
    pub(crate) notifier: std::sync::OnceLock<Arc<dyn notify::Notifier>>,
}

impl Shared {
    pub(crate) fn notify(&self, event: notify::RunEvent) {
        if let Some(notifier) = self.notifier.get() {
            notifier.notify(event);
        }
    }
}

/// The lifecycle of every run of one server; cheap to clone (one shared state).
#[derive(Clone)]
pub struct Lifecycle(Arc<Inner>);

pub(crate) struct Inner {
    shared: Arc<Shared>,
    settings: Settings,
    engines: executors::Engines,
    host: HostPolicy,
    /// What every run label starts with: `<hash of the data directory>/` on SQLite,
    /// `<hash of the installation id>/` on PostgreSQL (set by `start`), the same for
    /// every replica so that one re-attaches what another's tasks run.
    label_prefix: std::sync::OnceLock<String>,
    /// The data directory's prefix, until `label_prefix` is set.
    dir_prefix: String,
    /// On PostgreSQL: this replica's claims on runs (see [`replicas`]).
    claims: Option<replicas::Claims>,
    queue: Mutex<VecDeque<dispatch::Queued>>,
    active: Mutex<HashMap<i64, dispatch::Active>>,
    /// Parsed pipeline versions, which never change once saved.
    pipelines: Mutex<HashMap<(i64, i64), Arc<Pipeline>>>,
    wake: Arc<Notify>,
    timers: timers::Timers,
    approvals: Arc<approvals::Desk>,
    /// Wakes stages waiting for signals, by (run id, stage name).
    signals: Arc<approvals::Desk>,
}

impl Lifecycle {
    pub fn new(store: Store, logs: LogFiles, settings: Settings, executors: Executors, host: HostPolicy) -> Lifecycle {
        let engines = executors.into_engines(wharf_engine::EngineConfig {
            max_parallel_tasks: settings.max_parallel_tasks.max(1),
            timeout_grace: settings.stop_grace,
        });
        let dir = std::fs::canonicalize(&settings.data_dir).unwrap_or_else(|_| settings.data_dir.clone());
        let dir_prefix = format!("{}/", &hex_sha256(dir.as_os_str().as_encoded_bytes())[..16]);
        let label_prefix = std::sync::OnceLock::new();
        let claims = replicas::Claims::for_store(&store, &settings);
        if claims.is_none() {
            let _ = label_prefix.set(dir_prefix.clone());
        }
        let timers = timers::Timers::new(store.clone(), settings.timezone.clone(), settings.timer_grace);
        Lifecycle(Arc::new(Inner {
            shared: Arc::new(Shared {
                store,
                logs,
                live: live::LiveLogs::default(),
                metrics: metrics::RunMetrics::default(),
                notifier: std::sync::OnceLock::new(),
            }),
            settings,
            engines,
            host,
            label_prefix,
            dir_prefix,
            claims,
            queue: Mutex::default(),
            active: Mutex::default(),
            pipelines: Mutex::default(),
            wake: Arc::new(Notify::new()),
            timers,
            approvals: Arc::default(),
            signals: Arc::default(),
        }))
    }

    /// Settles what a previous server process left (see `recover`), then starts the
    /// scheduler and the retention sweep. Called once, before [`Self::start_timers`].
    pub async fn start(&self) -> Result<(), wharf_store::StoreError> {
        live::spawn_feed(&self.0.shared);
        if self.0.claims.is_some() {
            let id = self.store().installation_id().await?;
            let _ = self.0.label_prefix.set(format!("{}/", &hex_sha256(id.as_bytes())[..16]));
            self.recover_replica().await?;
            self.spawn_lease_renewal();
            self.spawn_work_listener().await;
        } else {
            self.recover().await?;
        }
        self.spawn_scheduler();
        self.spawn_retention_sweep();
        Ok(())
    }

    /// Runs the timers' restart catch-up, then their loop. Called once.
    pub async fn start_timers(&self) {
        timers::start(self).await;
    }

    /// Stops the timer loop (runs in progress go on until they end or the process exits).
    pub fn shutdown(&self) {
        self.0.timers.stop();
    }

    pub fn store(&self) -> &Store {
        &self.0.shared.store
    }

    pub fn logs(&self) -> &LogFiles {
        &self.0.shared.logs
    }

    /// Who is waiting for which log to grow.
    pub fn live(&self) -> &live::LiveLogs {
        &self.0.shared.live
    }

    pub fn metrics(&self) -> &metrics::RunMetrics {
        &self.0.shared.metrics
    }

    /// Hands the lifecycle the notifier it tells about ended runs and waiting
    /// approvals; the first call wins.
    pub fn set_notifier(&self, notifier: Arc<dyn notify::Notifier>) {
        let _ = self.0.shared.notifier.set(notifier);
    }

    pub fn timers(&self) -> &timers::Timers {
        &self.0.timers
    }

    /// A saved version from its `source` (read by the caller, e.g. a page of a list at
    /// once): from the parse cache when it is there, else parsed without filling the
    /// cache, so a walk through many pipelines does not push out the ones runs use.
    /// `None` when it no longer validates.
    pub fn parsed_version(&self, pipeline_id: i64, version: i64, source: &str) -> Option<Arc<Pipeline>> {
        if let Some(model) = self.0.pipelines.lock().unwrap().get(&(pipeline_id, version)) {
            return Some(model.clone());
        }
        wharf_pipeline::parse(source).ok().map(Arc::new)
    }

    /// What every run label of this server (or installation, on PostgreSQL) starts with.
    pub(crate) fn label_prefix(&self) -> &str {
        self.0.label_prefix.get().unwrap_or(&self.0.dir_prefix)
    }

    fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.0)
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
