//! The Wharf server: the REST API under `/api/v1`, live logs over Server-Sent Events,
//! health and metrics, webhooks, and the composition of the whole: it builds the
//! executors and hands them to the run lifecycle ([`wharf_lifecycle`]: the queue,
//! starting runs on the engine, restart recovery, timers).
//!
//! Reading order: [`ServerConfig`], [`Server::start`] (opening the store, building the
//! executors, recovery, binding), [`api`] (the routes), [`auth`] (who is calling:
//! tokens, sessions, bootstrap),
//! [`authz`] (what they may do: the permission matrix, one check for every route),
//! [`keys`] and [`licence`] (secrets at rest, the pipeline quota) and [`error`] (how
//! failures become HTTP answers).

pub mod api;
pub mod auth;
pub mod authz;
mod config;
pub mod datadir;
pub mod error;
pub mod forges;
pub mod hooks;
pub mod hostexec;
pub mod http;
pub mod keys;
pub mod licence;
pub mod metrics;
pub mod notify;
pub mod openapi;
pub mod throttle;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wharf_store::Store;
use wharf_store::logs::LogFiles;

/// Everything the server is told; the binary layers defaults, the config file,
/// `WHARF_*` variables and flags into it. Its `Debug` hides the secrets (see `config.rs`).
#[derive(Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://…`; default `<data_dir>/wharf.db`.
    pub database_url: Option<String>,
    /// Tasks running at once across all runs.
    pub max_parallel_tasks: usize,
    /// SIGTERM → SIGKILL grace when a person stops a run or a timeout ends a task.
    pub stop_grace: Duration,
    /// On PostgreSQL (replicas): how long a claim on a run holds without renewal, so
    /// how soon another replica takes over the runs of one that died.
    pub replica_lease: Duration,
    /// On PostgreSQL: how long a graceful stop (SIGTERM) waits for this server's runs
    /// to end before handing the rest over to another replica.
    pub drain_grace: Duration,
    /// Per-task log cap in bytes.
    pub log_cap_bytes: u64,
    /// Global retention: finished runs kept per pipeline, and their maximum age.
    pub keep_runs: Option<u32>,
    pub keep_days: Option<u32>,
    /// Workspaces (checkouts) kept per pipeline, for retries.
    pub keep_workspaces: u32,
    /// The built-in admin's API token (`WHARF_ADMIN_TOKEN`); when `None` at first
    /// start, one is generated and printed once.
    pub admin_token: Option<String>,
    /// The built-in admin's password for the UI login (`WHARF_ADMIN_PASSWORD`); when
    /// `None` at first start, a one-time password is generated and printed once.
    pub admin_password: Option<String>,
    /// The key sealing secrets at rest (base64, 32 bytes); `None`: the key file
    /// `<data_dir>/secret.key`, made at first start (see [`keys`]).
    pub secret_key: Option<String>,
    /// Older keys, to open what they sealed until the start re-seals it.
    pub old_secret_keys: Vec<String>,
    /// Put a new key first in the key file at start (`--rotate-secret-key`).
    pub rotate_secret_key: bool,
    /// A signed licence file raising the pipeline limit (see [`licence`]).
    pub licence_file: Option<PathBuf>,
    /// Replaces the compiled-in licence public key: debug builds only (tests, development).
    pub licence_public_key: Option<String>,
    /// How long a UI session lasts.
    pub session_ttl: Duration,
    /// Mark the session cookie `Secure` (browsers then send it over HTTPS and to
    /// http://localhost only). Turn off only behind a plain-HTTP development setup.
    pub cookie_secure: bool,
    /// The environment tasks start from on the host executor (the binary passes its
    /// own through [`hostexec::task_env`]'s allow-list on a server).
    pub host_env: Vec<(String, String)>,
    /// The unprivileged user host tasks run as when the server runs as root (see
    /// [`hostexec`]). Default `wharf-task`.
    pub host_user: String,
    /// The executor of pipelines that name none: `Host` or `Docker` (the binary picks
    /// docker when a Docker socket answers, DESIGN.md §3).
    pub executor: wharf_core::model::ExecutorKind,
    /// How the docker executor reaches the daemon and sets up containers.
    pub docker: wharf_docker::DockerConfig,
    /// Whether tasks may run on the host at all: `executor: host` pipelines, every
    /// script of a host server, image-less scripts of a docker server. When not, runs
    /// that would put a task there are refused (422) saying which tasks.
    pub allow_host: bool,
    /// Whether runs that a pull request from a fork started may put tasks on the host
    /// (default: never; an outsider's code then runs only in containers).
    pub host_forks: bool,
    /// How old a due time missed while the server was down may be and still get its
    /// one catch-up run (timers with `missed: once`).
    pub timer_grace: Duration,
    /// The default zone of timer triggers that name none.
    pub timezone: jiff::tz::TimeZone,
    /// Where code hosts reach this server (`https://ci.example.com`): the base of the
    /// webhook addresses Wharf installs. Without it, webhooks are installed by hand.
    pub public_url: Option<String>,
    /// A PEM bundle of extra CA certificates trusted for HTTPS to code hosts (private
    /// GitLab/Gitee/GitHub Enterprise instances with their own CA).
    pub ca_file: Option<PathBuf>,
    /// Internal hosts and networks the server may call on its own (code hosts' APIs,
    /// OAuth token exchanges): names, IP addresses, CIDRs (see [`wharf_outbound`]).
    /// Loopback, link-local and private addresses not named here are refused.
    pub outbound_allow: Vec<String>,
    /// The registry (by registered name) of `image` tasks that name none.
    pub default_registry: Option<String>,
    /// The cluster (by registered name) of pipelines on the kubernetes executor that name
    /// no `cluster:`.
    pub default_cluster: Option<String>,
    /// The Docker Engine that builds `image` tasks (`unix:///var/run/docker.sock`);
    /// `None`, or a socket that does not answer at start, leaves them to the builder pod
    /// for pipelines on the kubernetes executor and refused for the others.
    pub docker_host: Option<String>,
    /// The image of builder pods (rootless BuildKit, [`wharf_kube::builder::DEFAULT_BUILDER_IMAGE`]
    /// when `None`).
    pub kube_builder_image: Option<String>,
    /// Client connections served at once; more wait in the listen backlog until one
    /// closes (see [`http`]).
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, how long an idle
    /// keep-alive connection stays open (a streaming answer is not idle), and how long
    /// a request body may take to arrive (an image upload: between two chunks); see
    /// [`http`].
    pub header_timeout: Duration,
    /// Webhook deliveries kept (the newest; refused ones have their own smaller ring,
    /// [`hooks::REJECTED_KEPT`]).
    pub keep_deliveries: u32,
    /// Where `email` notifications go out; `None`: they fail saying so.
    pub smtp: Option<wharf_notify::email::SmtpSettings>,
    /// Signs webhook notifications that name no `secret` of their own (HMAC-SHA256).
    pub notify_secret: Option<String>,
    /// How notifications are retried.
    pub notify_retry: wharf_notify::Retry,
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir,
            database_url: None,
            max_parallel_tasks: 8,
            stop_grace: Duration::from_secs(10),
            replica_lease: wharf_lifecycle::replicas::DEFAULT_LEASE,
            drain_grace: Duration::from_secs(60),
            log_cap_bytes: 100_000_000,
            keep_runs: None,
            keep_days: None,
            keep_workspaces: 5,
            admin_token: None,
            admin_password: None,
            secret_key: None,
            old_secret_keys: Vec::new(),
            rotate_secret_key: false,
            licence_file: None,
            licence_public_key: None,
            session_ttl: Duration::from_secs(12 * 3600),
            cookie_secure: true,
            host_env: Vec::new(),
            host_user: "wharf-task".to_owned(),
            executor: wharf_core::model::ExecutorKind::Host,
            docker: wharf_docker::DockerConfig::default(),
            allow_host: true,
            host_forks: false,
            timer_grace: Duration::from_secs(3600),
            timezone: jiff::tz::TimeZone::system(),
            public_url: None,
            ca_file: None,
            outbound_allow: Vec::new(),
            default_registry: None,
            default_cluster: None,
            docker_host: Some("unix:///var/run/docker.sock".to_owned()),
            kube_builder_image: None,
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            keep_deliveries: 10_000,
            smtp: None,
            notify_secret: None,
            notify_retry: wharf_notify::Retry::default(),
        }
    }

    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("wharf.db").display()))
    }
}

/// Shared by every handler.
pub struct AppState {
    pub config: ServerConfig,
    pub store: Store,
    pub logs: LogFiles,
    /// Runs: accepting, queueing, stopping; live logs; timers.
    pub runs: wharf_lifecycle::Lifecycle,
    pub metrics: metrics::Metrics,
    /// The code hosts' APIs: the shared HTTP client, token refresh, webhook installs.
    pub forges: forges::Forges,
    /// Login attempts per user and address.
    pub logins: auth::LoginLimiter,
    /// Password hashes running at once (one per core).
    pub hash_slots: auth::HashSlots,
    /// Logins per client address: a burst of 20, then one every 3 s.
    pub login_rate: throttle::Throttle,
    /// Refused webhook deliveries per client address: a burst of 30, then one every
    /// 2 s; past that, the address's deliveries are answered 429 unread and unstored.
    pub hook_refusals: throttle::Throttle,
    /// Audit lines for refused requests (401, 403, invalid login names, lockouts) per
    /// client address: a burst of 20, then one every 6 s.
    pub refusal_audits: throttle::Throttle,
    /// The pipeline limit in force.
    pub quota: licence::Quota,
    /// Clusters being checked now (by id): one check per cluster at a time, however
    /// many callers show it (`api::clusters`).
    pub cluster_checks: std::sync::Mutex<std::collections::HashSet<i64>>,
    /// `true` once the admin's configured password is stored (see `auth::AdminPassword`);
    /// a login waits for it.
    pub passwords_ready: tokio::sync::watch::Receiver<bool>,
}

/// Errors with a source say only their own part: `{err:#}` (as `wharf serve` prints
/// them) adds the source's words once, after a colon.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open the database")]
    Store(#[from] wharf_store::StoreError),
    /// A configuration value is wrong (keys, licence, time zone, CA file).
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Docker(wharf_docker::ConnectError),
    #[error("{0}")]
    Unsupported(String),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// The Docker Engine builder for `image` tasks, when the configured socket answers.
/// Pull credentials from the registered registries: the first one (by name) whose host
/// is the image's and that has a username.
struct RegisteredCredentials(Store);

impl wharf_docker::Credentials for RegisteredCredentials {
    fn for_host<'a>(&'a self, host: &'a str) -> wharf_executor::BoxFuture<'a, Option<(String, String)>> {
        Box::pin(async move {
            let registries = match self.0.registries().await {
                Ok(registries) => registries,
                Err(why) => {
                    tracing::warn!(%why, %host, "cannot read the registries for pull credentials");
                    return None;
                }
            };
            registries
                .into_iter()
                .filter(|r| r.host == host)
                .find_map(|r| Some((r.username?, r.password.unwrap_or_default())))
        })
    }
}

/// Every registered cluster with its pipeline namespace, for the kubernetes executor's
/// search for pods a previous server process left.
struct RegisteredClusters(Store);

impl wharf_kube::ClusterSource for RegisteredClusters {
    fn clusters(
        &self,
    ) -> wharf_executor::BoxFuture<'_, Result<Vec<(wharf_executor::deploy::ClusterLogin, String)>, String>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for cluster in self.0.clusters().await.map_err(|e| e.to_string())? {
                let access = self.0.cluster_access(&cluster.name).await.map_err(|e| e.to_string())?;
                let login = wharf_executor::deploy::ClusterLogin {
                    name: access.name,
                    kubeconfig: access.kubeconfig,
                    context: Some(access.context).filter(|c| !c.is_empty()),
                };
                out.push((login, wharf_kube::pipeline_namespace(&access.short_id)));
            }
            Ok(out)
        })
    }
}

async fn image_builder(config: &ServerConfig) -> Option<Arc<dyn wharf_executor::build::ImageBuilder>> {
    let socket = config.docker_host.as_deref()?;
    let builder = match wharf_image::DockerBuilder::connect(socket) {
        Ok(builder) => builder,
        Err(why) => {
            tracing::warn!(%why, "`image` tasks are off");
            return None;
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), builder.ping()).await {
        Ok(Ok(())) => {
            tracing::info!(%socket, "`image` tasks build on the Docker Engine");
            Some(Arc::new(builder))
        }
        Ok(Err(why)) => {
            tracing::info!(%why, "`image` tasks are off");
            None
        }
        Err(_) => {
            tracing::warn!(%socket, "the Docker Engine did not answer within 5s; `image` tasks are off");
            None
        }
    }
}

/// What the lifecycle is told of the configuration.
fn settings(config: &ServerConfig) -> wharf_lifecycle::Settings {
    wharf_lifecycle::Settings {
        data_dir: config.data_dir.clone(),
        max_parallel_tasks: config.max_parallel_tasks,
        stop_grace: config.stop_grace,
        keep_runs: config.keep_runs,
        keep_days: config.keep_days,
        keep_workspaces: config.keep_workspaces,
        default_registry: config.default_registry.clone(),
        default_cluster: config.default_cluster.clone(),
        timezone: config.timezone.clone(),
        timer_grace: config.timer_grace,
        lease: config.replica_lease,
    }
}

/// The executors this server runs tasks with: the host executor always (as `run_as`
/// decided), Docker when it is the default (image-less scripts then go to the host
/// where allowed), and the image builder when the Docker Engine answers.
async fn executors(
    config: &ServerConfig,
    store: &Store,
    run_as: &hostexec::RunAs,
) -> Result<wharf_lifecycle::Executors, ServerError> {
    use wharf_core::model::ExecutorKind;
    let host: Arc<dyn wharf_executor::Executor> =
        Arc::new(wharf_executor::host::HostExecutor::new(wharf_executor::host::HostConfig {
            base_env: config.host_env.clone(),
            user: run_as.user().cloned(),
            ..wharf_executor::host::HostConfig::default()
        }));
    // `image` tasks: the Docker Engine builds them all when it answers at start; without
    // it, pipelines on the kubernetes executor build in a builder pod on their cluster
    // (and the others are refused at start, saying they need the Docker Engine).
    let docker_builder = image_builder(config).await;
    let kube_builds = docker_builder.is_none();
    let mut executors = wharf_lifecycle::Executors::new(config.executor)
        .register(ExecutorKind::Host, host.clone())
        .with_builder(docker_builder);
    match config.executor {
        ExecutorKind::Host => {}
        ExecutorKind::Docker => {
            // Images are pulled with the credentials of the registered registry
            // serving their host, unless the configuration brings its own lookup.
            let mut docker = config.docker.clone();
            if docker.credentials.is_none() {
                docker.credentials = Some(Arc::new(RegisteredCredentials(store.clone())));
            }
            let default_image = docker.default_image.clone();
            let docker = Arc::new(wharf_docker::DockerExecutor::new(docker).map_err(ServerError::Docker)?);
            let fallback = config.allow_host.then_some(host);
            let routed = wharf_executor::routed::ByImage::new(docker, fallback).with_default_image(default_image);
            executors = executors.register(ExecutorKind::Docker, Arc::new(routed));
        }
        ExecutorKind::Kubernetes => {}
    }
    // Pipelines with `executor: kubernetes` (or every pipeline, when it is the server's
    // default) run their tasks as pods on the pipeline's `cluster:`, under the outbound
    // policy of every other call the server makes.
    let policy = wharf_outbound::Policy::new(&config.outbound_allow).map_err(|e| ServerError::Config(e.to_string()))?;
    // After a restart it looks for its pods in every registered cluster's namespace.
    let kube = wharf_kube::ClusterExecutor::new(policy, config.docker.default_image.clone())
        .with_clusters(Arc::new(RegisteredClusters(store.clone())));
    executors = executors.register(ExecutorKind::Kubernetes, Arc::new(kube));
    if kube_builds {
        let policy =
            wharf_outbound::Policy::new(&config.outbound_allow).map_err(|e| ServerError::Config(e.to_string()))?;
        let builder = wharf_kube::builder::KubeBuilder::new(policy, config.kube_builder_image.clone());
        tracing::info!(?builder, "`image` tasks of pipelines on the kubernetes executor build in builder pods");
        executors = executors.with_builder_for(ExecutorKind::Kubernetes, Arc::new(builder));
    }
    Ok(executors)
}

/// A started server: its address and a way to wait for it.
pub struct Server {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    /// A newly generated admin token, to show once.
    pub generated_token: Option<String>,
    /// A newly generated admin password, to show once.
    pub generated_password: Option<String>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// A graceful stop on PostgreSQL (replicas), see [`Drainer::drain`].
pub struct Drainer {
    runs: wharf_lifecycle::Lifecycle,
    grace: Duration,
}

impl Drainer {
    /// Claims no more runs, waits up to the drain grace for this server's runs to end,
    /// then hands those still going over to another replica (see
    /// `wharf_lifecycle::replicas`). Returns how many runs were handed over; the caller
    /// then ends the process.
    pub async fn drain(self) -> usize {
        self.runs.drain(self.grace).await
    }
}

impl Server {
    /// Opens the store, recovers runs interrupted by a previous stop, binds the listen
    /// address and starts serving and dispatching.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        let io = |context: String| move |source| ServerError::Io { context, source };
        let run_as = hostexec::RunAs::resolve(&config);
        match &run_as {
            _ if !config.allow_host => tracing::info!("host tasks are refused (allow_host = false)"),
            hostexec::RunAs::User(user) => {
                tracing::info!(user = %user.name, uid = user.uid, "host tasks run as an unprivileged user")
            }
            hostexec::RunAs::Refused(why) => tracing::warn!("host tasks are refused: {why}"),
            hostexec::RunAs::Server => {}
        }
        let database = datadir::database_path(&config.database_url());
        datadir::secure(&config.data_dir, database.as_deref(), run_as.user().is_some())?;
        let forges = forges::Forges::new(&config)?;
        let (secret_box, key_source) = keys::load(&config)?;
        let quota = licence::load(&config)?;
        let store = Store::open(&config.database_url())
            .await?
            .with_secret_box(secret_box)
            .with_delivery_retention(config.keep_deliveries.max(1), hooks::REJECTED_KEPT);
        let resealed = store.reseal_all().await?;
        if resealed > 0 {
            tracing::info!(count = resealed, key = store.secret_box().current_key_id(), "secrets re-sealed");
        }
        keys::forget_older(&key_source, store.secret_box())?;
        let mut generated =
            auth::bootstrap(&store, config.admin_token.as_deref(), config.admin_password.as_deref()).await?;
        let pending_password = generated.pending.take();
        let (passwords_ready, passwords_ready_rx) = tokio::sync::watch::channel(pending_password.is_none());
        // Files on SQLite; in the database on PostgreSQL, where replicas share it.
        let logs = LogFiles::for_store(&store, config.data_dir.join("logs"), config.log_cap_bytes);
        // `deploy-yaml` reaches clusters under the same outbound policy as every other
        // call the server makes.
        let deployer: Arc<dyn wharf_executor::deploy::Deployer> =
            Arc::new(wharf_kube::deploy::KubeDeployer::new(forges.policy.clone()));
        // `chart-publish` pushes to registered registries under the same policy too.
        let charts: Arc<dyn wharf_executor::chart::ChartRegistry> =
            Arc::new(wharf_image::OciCharts::new(forges.policy.clone()));
        let executors =
            executors(&config, &store, &run_as).await?.with_deployer(Some(deployer)).with_charts(Some(charts));
        let host = wharf_lifecycle::HostPolicy {
            allowed: config.allow_host,
            forks: config.host_forks,
            unavailable: match &run_as {
                hostexec::RunAs::Refused(why) => Some(why.clone()),
                _ => None,
            },
            task_gid: run_as.user().map(|user| user.gid),
        };
        let runs = wharf_lifecycle::Lifecycle::new(store.clone(), logs.clone(), settings(&config), executors, host);
        let notifier = notify::ServerNotifier::new(&config, store.clone(), runs.clone(), forges.policy.clone())?;
        runs.set_notifier(Arc::new(notifier));
        let state = Arc::new(AppState {
            config: config.clone(),
            store,
            logs,
            runs,
            metrics: metrics::Metrics::default(),
            forges,
            logins: Default::default(),
            hash_slots: Default::default(),
            login_rate: throttle::Throttle::new(20, Duration::from_secs(3)),
            hook_refusals: throttle::Throttle::new(30, Duration::from_secs(2)),
            refusal_audits: throttle::Throttle::new(20, Duration::from_secs(6)),
            quota,
            cluster_checks: Default::default(),
            passwords_ready: passwords_ready_rx,
        });
        state.runs.start().await?;
        hooks::resume(&state).await;
        state.runs.start_timers().await;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(io(format!("cannot listen on {}", config.listen)))?;
        let addr = listener.local_addr().map_err(io("cannot read the bound address".into()))?;
        let app = api::router(state.clone());
        let max_connections = http::connection_limit(config.max_connections, http::raise_nofile_limit());
        let limits = http::Limits { max_connections, header_timeout: config.header_timeout };
        let task = tokio::spawn(http::serve(listener, app, limits));
        tokio::spawn(hooks::key_old_versions(state.clone()));
        // The admin's password is hashed (or checked) now that the server listens: it
        // takes an Argon2 computation, and only logins need it (they wait for it).
        if let Some(pending) = pending_password {
            let store = state.store.clone();
            tokio::spawn(async move {
                if let Err(e) = pending.settle(&store).await {
                    tracing::error!("cannot store the admin's password: {e}");
                }
                passwords_ready.send_replace(true);
            });
        }
        tracing::info!(%addr, data_dir = %config.data_dir.display(), "wharf server listening");
        Ok(Server { addr, state, generated_token: generated.token, generated_password: generated.password, task })
    }

    /// Stops serving and stops the timer loop (runs in progress go on until they end
    /// or the process exits); a second server may then start on the same data directory.
    pub async fn shutdown(self) {
        self.state.runs.shutdown();
        self.task.abort();
        let _ = self.task.await;
        // Log lines still waiting for the database (PostgreSQL) are written now.
        if let Err(e) = self.state.logs.flush().await {
            tracing::warn!(error = %e, "cannot write the last log lines");
        }
    }

    /// What a graceful stop runs, taken before [`Server::wait`] consumes the server.
    pub fn drainer(&self) -> Drainer {
        Drainer { runs: self.state.runs.clone(), grace: self.state.config.drain_grace }
    }

    /// Whether the store is PostgreSQL (several replicas may share it).
    pub fn is_replica(&self) -> bool {
        self.state.store.is_postgres()
    }

    /// Serves until the process ends.
    pub async fn wait(self) -> std::io::Result<()> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}
