//! The engine drives one run of a pipeline from `queued` to a terminal status: source
//! checkout, stages in order, tasks on an [`Executor`], timeouts that count only
//! running time, stop, retries, task outputs, secret masking. It owns the
//! [`RunRecord`] while the run lasts and tells an [`Observer`] about every change and
//! every log line; it knows nothing about terminals, HTTP or databases.
//!
//! Start with [`Engine::run`], then `run.rs` (the run, stage and task loops; its opening
//! comment gives the reading order of the phase files in `run/`).

pub mod approval;
mod clock;
pub mod mask;
pub mod outputs;
mod run;
pub mod signal;

pub use run::initial_record;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use wharf_core::model::Pipeline;
use wharf_core::run::{Cause, RunRecord};
use wharf_executor::build::ImageBuilder;
use wharf_executor::chart::ChartRegistry;
use wharf_executor::deploy::Deployer;
use wharf_executor::{Executor, LogLine, StopRequest};

pub use wharf_executor::StopReason;
pub use wharf_executor::build::RegistryLogin;

/// Engine-wide settings.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Executor slots: tasks running at once across all runs of this engine.
    pub max_parallel_tasks: usize,
    /// Time between the polite stop (SIGTERM) and the forced one (SIGKILL) when a
    /// timeout ends a task. A person's stop brings its own grace.
    pub timeout_grace: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { max_parallel_tasks: 8, timeout_grace: Duration::from_secs(10) }
    }
}

/// Where tasks run.
#[derive(Clone, Debug)]
pub enum Workspace {
    /// Clone the pipeline's `source` into `<dir>/src` (an empty `src` without a source).
    Checkout { dir: PathBuf },
    /// Use this directory as it is (`wharf run` on a working copy); outputs and
    /// other run files go to `run_dir`.
    Existing { src: PathBuf, run_dir: PathBuf },
}

/// One run to execute. Parameters must have been checked by [`Engine::prepare`].
/// `Debug` names the secrets without their values (and registry logins hide their
/// passwords), so a request can be logged.
#[derive(Clone)]
pub struct RunRequest {
    pub pipeline: Arc<Pipeline>,
    /// `BUILD_ID`.
    pub number: u64,
    /// `SYS_INCREMENT`.
    pub increment: u64,
    pub cause: Cause,
    pub parameters: BTreeMap<String, String>,
    /// Secret values by name, for the tasks that list them; all are masked in logs.
    pub secrets: BTreeMap<String, String>,
    pub workspace: Workspace,
    /// Check out exactly this commit (re-runs, webhook events).
    pub commit: Option<String>,
    /// Clone this branch or tag instead of the pipeline's `source.branch` (webhook
    /// events: the pushed branch or tag, a merge request's branch). `None`: the
    /// pipeline's own branch.
    pub git_ref: Option<GitRef>,
    /// Retry from the failed stage of an earlier run (its workspace is `workspace`).
    pub resume: Option<Resume>,
    /// When the run was accepted (its `queued` time); now when `None`.
    pub created_at: Option<jiff::Timestamp>,
    /// Given to every task's executor (see `TaskSpec::labels`).
    pub labels: Vec<(String, String)>,
    /// Where `image` tasks may push, with credentials (the engine never sees the store).
    pub registries: Registries,
    /// Where `deploy-yaml` tasks may deploy, with credentials: the clusters of the
    /// pipeline's project.
    pub clusters: Clusters,
    /// Whether `source.repo` may name a repository on this machine (a path or `file://`,
    /// see [`wharf_core::git::is_local_repo`]): cloning it reads this machine's disk with
    /// the engine's rights. `wharf run` allows it; the server only where it allows host
    /// execution. Checked on the rendered address, so a `${REPO}` parameter counts.
    pub local_sources: bool,
    /// Where `approval` tasks get their decisions (the server's lifecycle); `None`
    /// fails them (and [`Engine::prepare`] refuses them unless
    /// [`Engine::with_approvals`] said the caller gives every run one).
    pub approvals: Option<Arc<dyn approval::ApprovalGate>>,
    /// Where stages with `wait:` get their signals (the server's lifecycle); `None`
    /// fails them (and [`Engine::prepare`] refuses them unless
    /// [`Engine::with_approvals`] said the caller gives every run one).
    pub signals: Option<Arc<dyn signal::SignalGate>>,
}

impl std::fmt::Debug for RunRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        /// Secret names, each with `<redacted>` for its value.
        struct Redacted<'a>(&'a BTreeMap<String, String>);
        impl std::fmt::Debug for Redacted<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_map().entries(self.0.keys().map(|name| (name, format_args!("<redacted>")))).finish()
            }
        }
        // Exhaustive, so that a new field is a decision about what it may show.
        let RunRequest {
            pipeline,
            number,
            increment,
            cause,
            parameters,
            secrets,
            workspace,
            commit,
            git_ref,
            resume,
            created_at,
            labels,
            registries,
            clusters,
            local_sources,
            approvals,
            signals,
        } = self;
        f.debug_struct("RunRequest")
            .field("pipeline", &pipeline.name)
            .field("number", number)
            .field("increment", increment)
            .field("cause", cause)
            .field("parameters", parameters)
            .field("secrets", &Redacted(secrets))
            .field("workspace", workspace)
            .field("commit", commit)
            .field("git_ref", git_ref)
            .field("resume", resume)
            .field("created_at", created_at)
            .field("labels", labels)
            .field("registries", registries)
            .field("clusters", clusters)
            .field("local_sources", local_sources)
            .field("approvals", &approvals.is_some())
            .field("signals", &signals.is_some())
            .finish()
    }
}

/// The registries a run's `image` tasks may push to, by registered name.
#[derive(Clone, Debug, Default)]
pub struct Registries {
    pub by_name: BTreeMap<String, RegistryTarget>,
    /// The registry of `image` tasks that name none.
    pub default: Option<String>,
}

/// The clusters a run's `deploy-yaml` tasks may deploy to, by registered name.
#[derive(Clone, Debug, Default)]
pub struct Clusters {
    pub by_name: BTreeMap<String, wharf_executor::deploy::ClusterLogin>,
    /// Each cluster's pipeline namespace (`ecp-devops-<id>`), where the kubernetes
    /// executor runs tasks.
    pub namespaces: BTreeMap<String, String>,
    /// Each cluster's defaults for task pods (resources, node selector, tolerations,
    /// service account), under the pipeline's and the task's own.
    pub pod_defaults: BTreeMap<String, wharf_core::pod::PodSettings>,
    /// How long a task's pod may stay `Pending` on each cluster (absent: the executor's
    /// default).
    pub pending_limits: BTreeMap<String, std::time::Duration>,
    /// How each cluster's runs get their workspace into task pods (absent: `hostPath`).
    pub workspaces: BTreeMap<String, wharf_core::pod::WorkspaceSettings>,
    /// The server's `default_cluster`: the cluster of a pipeline on the kubernetes
    /// executor that names none.
    pub default: Option<String>,
}

/// One registry: how to log in and which workspaces are registered in it.
#[derive(Clone, Debug)]
pub struct RegistryTarget {
    pub login: RegistryLogin,
    /// `None`: any workspace; `Some`: only these (the server's registered ones).
    pub workspaces: Option<Vec<String>>,
}

/// A branch or a tag to check out in place of the pipeline's `source.branch`. The name
/// is used as it is (no `${…}`); the checkout checks it like any branch name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GitRef {
    /// Sets `GIT_BRANCH`.
    Branch(String),
    /// Cloned with `git clone --branch <tag>` (a detached HEAD); sets `GIT_TAG` and
    /// leaves `GIT_BRANCH` empty.
    Tag(String),
}

impl GitRef {
    /// The name given to `git clone --branch`.
    pub fn name(&self) -> &str {
        match self {
            GitRef::Branch(name) | GitRef::Tag(name) => name,
        }
    }

    /// The ref a checkout record says was asked for: its tag when it has one, else
    /// its branch (what a recovered or re-run event run must clone again).
    pub fn from_checkout(checkout: &wharf_core::run::CheckoutRecord) -> Option<GitRef> {
        match (&checkout.tag, &checkout.branch) {
            (Some(tag), _) => Some(GitRef::Tag(tag.clone())),
            (None, Some(branch)) => Some(GitRef::Branch(branch.clone())),
            (None, None) => None,
        }
    }
}

/// What a run takes over from an earlier one.
///
/// A **retry** (`reattach: None`) is a new run of a failed one: the stages before
/// `from_stage` are not run again; they are recorded as skipped ("succeeded in run
/// #N") and their outputs are available as if they had just run. The checkout is not
/// repeated.
///
/// A **re-attach** (`reattach: Some`) is the same run, continued by a restarted
/// server: `previous` is its stored record and stays its record. Finished stages and
/// tasks keep their status and outputs; tasks that were running are taken over from
/// the executor ([`Executor::adopt`](wharf_executor::Executor::adopt)) with their log
/// resumed where the stored one ends, or fail as interrupted when there is nothing to
/// take over; tasks that had not started run as usual. The checkout is not repeated.
#[derive(Clone, Debug)]
pub struct Resume {
    pub previous: RunRecord,
    pub from_stage: usize,
    pub reattach: Option<Reattach>,
}

/// The running tasks of a re-attached run and where their stored logs end, by
/// (stage index, task index) in the record.
#[derive(Clone, Debug, Default)]
pub struct Reattach {
    pub logs: BTreeMap<(usize, usize), wharf_executor::LogResume>,
}

/// The reason an attempt gets when a restart lost it (nothing to take over).
pub const INTERRUPTED: &str = "interrupted by server restart";

impl Resume {
    /// Where to retry `previous` from: its first main stage that did not succeed.
    /// `None` when every stage succeeded (nothing to retry).
    pub fn from_failed_stage(previous: RunRecord) -> Option<Resume> {
        let from_stage = previous.stages.iter().filter(|s| !s.rollback).position(|s| !Self::done(s))?;
        Some(Resume { previous, from_stage, reattach: None })
    }

    /// Continues `record` (a run a server process left `running`) after a restart.
    /// `None` when the engine cannot continue it: it is not running, or it was in its
    /// rollback stages.
    pub fn reattach(record: RunRecord, logs: BTreeMap<(usize, usize), wharf_executor::LogResume>) -> Option<Resume> {
        use wharf_core::status::Status;
        if record.progress.status != Status::Running || record.stages.iter().any(|s| s.rollback) {
            return None;
        }
        if record
            .checkout
            .as_ref()
            .is_some_and(|c| c.progress.status != Status::Succeeded && c.progress.status != Status::Skipped)
        {
            return None;
        }
        let from_stage =
            record.stages.iter().position(|s| !s.progress.status.is_terminal()).unwrap_or(record.stages.len());
        Some(Resume { previous: record, from_stage, reattach: Some(Reattach { logs }) })
    }

    /// A stage that succeeded, or that a retry took over from a run where it did.
    fn done(stage: &wharf_core::run::StageRecord) -> bool {
        use wharf_core::status::Status;
        match stage.progress.status {
            Status::Succeeded => true,
            Status::Skipped => stage.reused_from.is_some(),
            _ => false,
        }
    }
}

/// Which part of the record an [`Observer`] call is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Part {
    Run,
    Checkout,
    Stage(usize),
    /// (stage index, task index) in the record.
    Task(usize, usize),
}

/// Receives the run as it happens. Calls come from several tasks at once; keep them
/// short (hand heavy work to a channel).
pub trait Observer: Send + Sync {
    /// `part` changed; `record` is the whole record after the change.
    fn changed(&self, record: &RunRecord, part: Part);
    /// Several parts changed in one step (a stop ending every task of a stage that
    /// waited for a slot, the skipped rest of a run), listed in the order they changed.
    /// An observer that stores the record can take them as one update; by default
    /// each is told to [`changed`](Self::changed).
    fn changed_parts(&self, record: &RunRecord, parts: &[Part]) {
        for part in parts {
            self.changed(record, *part);
        }
    }
    /// A log line of the checkout (`Part::Checkout`) or of a task (`Part::Task`),
    /// already masked.
    fn log(&self, part: Part, line: &LogLine);
    /// Resolves once every change told so far is stored. The engine waits for it
    /// before an attempt starts what cannot be undone (a process, a build), so that a
    /// server killed right after finds the attempt begun, not a run that "executed
    /// nothing" and may be started again elsewhere. By default at once: an observer
    /// whose changes reach nobody else need not wait.
    fn durable(&self) -> wharf_executor::BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// A run that cannot start; nothing was recorded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrepareError {
    #[error("{}", .0.iter().map(|r| r.message.as_str()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Refusal>),
}

/// One reason a run cannot start, with the part of the pipeline or request it is
/// about: `parameters`, or `stages.<stage>.tasks.<task>.type` / `.secrets`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub path: String,
    /// Names the stage and task when it is about one (`Build/push: …`).
    pub message: String,
}

impl Refusal {
    fn parameters(message: String) -> Refusal {
        Refusal { path: "parameters".to_owned(), message }
    }

    fn task(stage: &str, task: &str, field: &str, why: impl std::fmt::Display) -> Refusal {
        Refusal { path: format!("stages.{stage}.tasks.{task}.{field}"), message: format!("{stage}/{task}: {why}") }
    }
}

pub struct Engine {
    config: EngineConfig,
    executor: Arc<dyn Executor>,
    slots: Arc<Semaphore>,
    builder: Option<Arc<dyn ImageBuilder>>,
    deployer: Option<Arc<dyn Deployer>>,
    charts: Option<Arc<dyn ChartRegistry>>,
    /// The caller hands every run an [`approval::ApprovalGate`].
    approvals: bool,
}

impl Engine {
    pub fn new(config: EngineConfig, executor: Arc<dyn Executor>) -> Self {
        let slots = Arc::new(Semaphore::new(config.max_parallel_tasks.max(1)));
        Engine { config, executor, slots, builder: None, deployer: None, charts: None, approvals: false }
    }

    /// Lets `image` tasks run: they are built and pushed by `builder`.
    pub fn with_builder(mut self, builder: Arc<dyn ImageBuilder>) -> Self {
        self.builder = Some(builder);
        self
    }

    /// Lets `deploy-yaml` tasks run: they are applied by `deployer`.
    pub fn with_deployer(mut self, deployer: Arc<dyn Deployer>) -> Self {
        self.deployer = Some(deployer);
        self
    }

    /// Lets `chart-publish` tasks run: their charts are pushed to `charts` (and, with a
    /// deployer, `chart-deploy` tasks: their charts are pulled from it).
    pub fn with_charts(mut self, charts: Arc<dyn ChartRegistry>) -> Self {
        self.charts = Some(charts);
        self
    }

    /// Lets `approval` tasks run: the caller promises to give every run an
    /// [`approval::ApprovalGate`] in [`RunRequest::approvals`].
    pub fn with_approvals(mut self) -> Self {
        self.approvals = true;
        self
    }

    /// An engine on another executor that shares this one's slots, settings, image
    /// builder and deployer: a server whose pipelines choose their executor still runs
    /// at most `max_parallel_tasks` tasks in all.
    pub fn sharing_slots(&self, executor: Arc<dyn Executor>) -> Engine {
        Engine {
            config: self.config.clone(),
            executor,
            slots: self.slots.clone(),
            builder: self.builder.clone(),
            deployer: self.deployer.clone(),
            charts: self.charts.clone(),
            approvals: self.approvals,
        }
    }

    pub fn executor(&self) -> &dyn Executor {
        self.executor.as_ref()
    }

    /// Whether tasks of `type_name` (one of [`wharf_core::model::TASK_TYPES`]) can run
    /// here; `Err` says what they need.
    pub fn can_run(&self, type_name: &str) -> Result<(), String> {
        match type_name {
            "script" => self.executor.supports(type_name).map_err(|e| e.to_string()),
            "image" if self.builder.is_some() => Ok(()),
            "image" => Err("`image` tasks need the Docker Engine to build and push, and none is configured here (the server uses it when a Docker socket answers at start)".to_owned()),
            "approval" if self.approvals => Ok(()),
            "approval" => Err("`approval` tasks need the Wharf server: people approve or reject them in its UI, API or CLI (`wharf runs approve`), and `wharf run` has nobody to ask".to_owned()),
            "deploy-yaml" if self.deployer.is_some() => Ok(()),
            "deploy-yaml" => Err("`deploy-yaml` tasks need the Wharf server, where clusters are registered (`wharf clusters add`)".to_owned()),
            "chart-publish" if self.charts.is_some() => Ok(()),
            "chart-publish" => Err("`chart-publish` tasks need the Wharf server, where registries are registered (`wharf registries add`)".to_owned()),
            "chart-deploy" if self.charts.is_some() && self.deployer.is_some() => Ok(()),
            "chart-deploy" => Err("`chart-deploy` tasks need the Wharf server, where registries and clusters are registered (`wharf registries add`, `wharf clusters add`)".to_owned()),
            "canary" if self.deployer.is_some() => Ok(()),
            "canary" => Err("`canary` tasks need the Wharf server, where clusters are registered (`wharf clusters add`)".to_owned()),
            other => Err(format!("`{other}` is not a task type")),
        }
    }

    /// Checks that a run can start: every task type can run here, every secret a task
    /// names is set, parameters are known and complete. Returns the full parameter set (defaults filled in, still
    /// unresolved templates in defaults are left for the run).
    pub fn prepare(
        &self,
        pipeline: &Pipeline,
        given: &BTreeMap<String, String>,
        secrets: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, PrepareError> {
        let mut problems = Vec::new();
        for stage in pipeline.all_stages() {
            for task in &stage.tasks {
                for secret in &task.secrets {
                    if !secrets.contains_key(secret.as_str()) {
                        let why = format!("the secret `{secret}` is not set");
                        problems.push(Refusal::task(stage.name.as_str(), task.name.as_str(), "secrets", why));
                    }
                }
            }
        }
        for stage in pipeline.all_stages() {
            for task in &stage.tasks {
                if let Err(why) = self.can_run(task.kind.type_name()) {
                    problems.push(Refusal::task(stage.name.as_str(), task.name.as_str(), "type", why));
                }
                if let wharf_core::model::TaskKind::Canary(c) = &task.kind
                    && c.approval
                    && !self.approvals
                {
                    let why = "`approval: true` between canary steps needs the Wharf server: people approve or reject \
                               each step in its UI, API or CLI (`wharf runs approve`), and `wharf run` has nobody to ask";
                    problems.push(Refusal::task(stage.name.as_str(), task.name.as_str(), "approval", why.to_owned()));
                }
            }
        }
        for stage in pipeline.stages.iter().filter(|s| s.wait.is_some() && !self.approvals) {
            problems.push(Refusal {
                path: format!("stages.{}.wait", stage.name),
                message: format!(
                    "{}: a stage that waits for signals needs the Wharf server (its hook URL and channels), and `wharf run` has none",
                    stage.name
                ),
            });
        }
        let mut params = BTreeMap::new();
        for name in given.keys() {
            if !pipeline.parameters.iter().any(|p| p.name.as_str() == name) {
                let known: Vec<&str> = pipeline.parameters.iter().map(|p| p.name.as_str()).collect();
                problems.push(Refusal::parameters(if known.is_empty() {
                    format!("unknown parameter `{name}`: this pipeline takes no parameters")
                } else {
                    format!("unknown parameter `{name}`; the pipeline's parameters are: {}", known.join(", "))
                }));
            }
        }
        for (name, value) in given {
            if let Some(problem) = wharf_pipeline::limits::value_problem(value) {
                problems.push(Refusal::parameters(format!("parameter `{name}` {problem}")));
            }
        }
        for p in &pipeline.parameters {
            match (given.get(p.name.as_str()), p.default_value()) {
                (Some(value), _) => {
                    if !p.choices.is_empty() && !p.choices.contains(value) {
                        problems.push(Refusal::parameters(format!(
                            "parameter `{}` is `{value}`; it must be one of: {}",
                            p.name,
                            p.choices.join(", ")
                        )));
                    }
                    params.insert(p.name.to_string(), value.clone());
                }
                (None, Some(default)) => {
                    params.insert(p.name.to_string(), default.to_owned());
                }
                (None, None) => problems.push(Refusal::parameters(format!(
                    "parameter `{}` has no default and was not given (-p {}=VALUE)",
                    p.name, p.name
                ))),
            }
        }
        if problems.is_empty() { Ok(params) } else { Err(PrepareError::Invalid(problems)) }
    }

    /// Runs `request` to its end and returns the final record. Send a
    /// [`StopRequest`] on `stop` to stop it (again with a shorter grace to hurry).
    pub async fn run(
        &self,
        request: RunRequest,
        observer: Arc<dyn Observer>,
        stop: watch::Receiver<Option<StopRequest>>,
    ) -> RunRecord {
        run::execute(self, request, observer, stop).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_request_names_its_secrets_and_shows_no_secret_value() {
        let pipeline = wharf_pipeline::parse(
            "name: p\nstages:\n  - name: S\n    tasks:\n      - {name: t, type: script, script: x, secrets: [TOKEN]}\n",
        )
        .unwrap();
        let login = RegistryLogin {
            name: "local".into(),
            host: "127.0.0.1:5000".into(),
            username: Some("ci".into()),
            password: Some("registry-password-value".into()),
            insecure: true,
        };
        let request = RunRequest {
            pipeline: Arc::new(pipeline),
            number: 1,
            increment: 1,
            cause: Cause::Local { user: "tester".into() },
            parameters: BTreeMap::from([("MODE".into(), "fast".into())]),
            secrets: BTreeMap::from([("TOKEN".into(), "secret-token-value".into())]),
            workspace: Workspace::Checkout { dir: "/tmp/ws".into() },
            commit: None,
            git_ref: None,
            resume: None,
            created_at: None,
            labels: vec![],
            registries: Registries {
                by_name: BTreeMap::from([("local".into(), RegistryTarget { login, workspaces: None })]),
                default: None,
            },
            clusters: Clusters {
                by_name: BTreeMap::from([(
                    "prod".into(),
                    wharf_executor::deploy::ClusterLogin {
                        name: "prod".into(),
                        kubeconfig: "users: [{user: {token: kube-token-value}}]".into(),
                        context: None,
                    },
                )]),
                namespaces: BTreeMap::new(),
                ..Clusters::default()
            },
            local_sources: false,
            approvals: None,
            signals: None,
        };
        let debug = format!("{request:?}");
        for value in ["secret-token-value", "registry-password-value", "kube-token-value"] {
            assert!(!debug.contains(value), "`{value}` shows in {debug}");
        }
        assert!(debug.contains("prod"), "{debug}");
        assert!(debug.contains(r#""TOKEN": <redacted>"#), "{debug}");
        assert!(debug.contains("MODE") && debug.contains("127.0.0.1:5000"), "{debug}");
        let pretty = format!("{request:#?}");
        assert!(!pretty.contains("secret-token-value") && !pretty.contains("registry-password-value"), "{pretty}");
    }
}
