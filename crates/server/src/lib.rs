//! The Wharf server: the REST API under `/api/v1`, live logs over Server-Sent Events,
//! health and metrics, and the dispatcher that queues runs, starts them on the engine
//! and recovers them after a restart.
//!
//! Reading order: [`ServerConfig`], [`Server::start`] (opening the store, recovery,
//! binding), [`dispatch`] (the run queue and what happens to a run's events),
//! [`api`] (the routes) and [`error`] (how failures become HTTP answers).

pub mod api;
pub mod auth;
pub mod dispatch;
pub mod error;
pub mod hooks;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod timers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wharf_store::Store;
use wharf_store::logs::LogFiles;

/// Everything the server is told; the binary layers defaults, the config file,
/// `WHARF_*` variables and flags into it.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://…`; default `<data_dir>/wharf.db`.
    pub database_url: Option<String>,
    /// Tasks running at once across all runs.
    pub max_parallel_tasks: usize,
    /// SIGTERM → SIGKILL grace when a person stops a run or a timeout ends a task.
    pub stop_grace: Duration,
    /// Per-task log cap in bytes.
    pub log_cap_bytes: u64,
    /// Global retention: finished runs kept per pipeline, and their maximum age.
    pub keep_runs: Option<u32>,
    pub keep_days: Option<u32>,
    /// Workspaces (checkouts) kept per pipeline, for retries.
    pub keep_workspaces: u32,
    /// The admin's API token; when `None` and none is stored yet, one is generated and
    /// printed once at first start.
    pub admin_token: Option<String>,
    /// The environment tasks start from on the host executor.
    pub host_env: Vec<(String, String)>,
    /// The executor of pipelines that name none: `Host` or `Docker` (the binary picks
    /// docker when a Docker socket answers, DESIGN.md §3).
    pub executor: wharf_core::model::ExecutorKind,
    /// How the docker executor reaches the daemon and sets up containers.
    pub docker: wharf_docker::DockerConfig,
    /// Whether `script` tasks without an image may run on the host when the docker
    /// executor is the default (a single-node install); when not, they are refused.
    pub allow_host: bool,
    /// How old a due time missed while the server was down may be and still get its
    /// one catch-up run (timers with `missed: once`).
    pub timer_grace: Duration,
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir,
            database_url: None,
            max_parallel_tasks: 8,
            stop_grace: Duration::from_secs(10),
            log_cap_bytes: 100_000_000,
            keep_runs: None,
            keep_days: None,
            keep_workspaces: 5,
            admin_token: None,
            host_env: Vec::new(),
            executor: wharf_core::model::ExecutorKind::Host,
            docker: wharf_docker::DockerConfig::default(),
            allow_host: true,
            timer_grace: Duration::from_secs(3600),
        }
    }

    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("wharf.db").display()))
    }
}

/// Shared by every handler and the dispatcher.
pub struct AppState {
    pub config: ServerConfig,
    pub store: Store,
    pub logs: LogFiles,
    pub live: live::LiveLogs,
    pub dispatcher: dispatch::Dispatcher,
    pub metrics: metrics::Metrics,
    pub auth: auth::Auth,
    /// OAuth `state` values of authorizations in progress (repository bindings).
    pub(crate) oauth: api::providers::OAuthStates,
    pub timers: timers::Timers,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open the database: {0}")]
    Store(#[from] wharf_store::StoreError),
    #[error(transparent)]
    Docker(wharf_docker::ConnectError),
    #[error("{0}")]
    Unsupported(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// A started server: its address and a way to wait for it.
pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    /// A newly generated admin token, to show once.
    pub generated_token: Option<String>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Opens the store, recovers runs interrupted by a previous stop, binds the listen
    /// address and starts serving and dispatching.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        let io = |context: String| move |source| ServerError::Io { context, source };
        std::fs::create_dir_all(&config.data_dir)
            .map_err(io(format!("cannot create {}", config.data_dir.display())))?;
        let store = Store::open(&config.database_url()).await?;
        let (auth, generated_token) = auth::Auth::init(&store, config.admin_token.as_deref()).await?;
        let logs = LogFiles::new(config.data_dir.join("logs"), config.log_cap_bytes);
        let live = live::LiveLogs::default();
        let metrics = metrics::Metrics::default();
        let store_for_timers = store.clone();
        let docker: Option<Arc<dyn wharf_executor::Executor>> = match config.executor {
            wharf_core::model::ExecutorKind::Host => None,
            wharf_core::model::ExecutorKind::Docker => {
                Some(Arc::new(wharf_docker::DockerExecutor::new(config.docker.clone()).map_err(ServerError::Docker)?))
            }
            wharf_core::model::ExecutorKind::Kubernetes => {
                return Err(ServerError::Unsupported(
                    "the kubernetes executor is not built yet; run with --executor host or docker".to_owned(),
                ));
            }
        };
        let state = Arc::new_cyclic(|weak| AppState {
            dispatcher: dispatch::Dispatcher::new(weak.clone(), &config, docker),
            config: config.clone(),
            store,
            logs,
            live,
            metrics,
            auth,
            oauth: Default::default(),
            timers: timers::Timers::new(store_for_timers, jiff::tz::TimeZone::system(), config.timer_grace),
        });
        dispatch::Dispatcher::recover(&state).await?;
        hooks::resume(&state).await;
        timers::start(&state).await;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(io(format!("cannot listen on {}", config.listen)))?;
        let addr = listener.local_addr().map_err(io("cannot read the bound address".into()))?;
        let app = api::router(state.clone());
        let task = tokio::spawn(async move { axum::serve(listener, app).await });
        tracing::info!(%addr, data_dir = %config.data_dir.display(), "wharf server listening");
        Ok(Server { addr, state, generated_token, task })
    }

    /// Stops serving and stops the timer loop (runs in progress go on until they end
    /// or the process exits); a second server may then start on the same data directory.
    pub async fn shutdown(self) {
        self.state.timers.stop();
        self.task.abort();
        let _ = self.task.await;
    }

    /// Serves until the process ends.
    pub async fn wait(self) -> std::io::Result<()> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}
