//! The executors a server has, by kind, and the engines that drive them. The server
//! registers what it built (the host executor, Docker when its Engine answers, later
//! Kubernetes); a pipeline runs on the one its `executor:` names, else the default.
//! Every engine shares one set of task slots (`max_parallel_tasks` in all), the
//! image builder (unless one kind has its own: the builder pod of the kubernetes
//! executor), the deployer and the chart registry.

use std::sync::Arc;
use wharf_core::model::{ExecutorKind, Pipeline};
use wharf_engine::{Engine, EngineConfig};
use wharf_executor::Executor;
use wharf_executor::build::ImageBuilder;
use wharf_executor::chart::ChartRegistry;
use wharf_executor::deploy::Deployer;

/// What the lifecycle runs tasks with; see the module documentation.
pub struct Executors {
    default: ExecutorKind,
    registered: Vec<(ExecutorKind, Arc<dyn Executor>)>,
    builder: Option<Arc<dyn ImageBuilder>>,
    /// Builders of one kind's pipelines, over the shared one.
    kind_builders: Vec<(ExecutorKind, Arc<dyn ImageBuilder>)>,
    deployer: Option<Arc<dyn Deployer>>,
    charts: Option<Arc<dyn ChartRegistry>>,
}

impl Executors {
    /// `default`: the executor of pipelines that name none (it must be registered).
    pub fn new(default: ExecutorKind) -> Executors {
        Executors {
            default,
            registered: Vec::new(),
            builder: None,
            kind_builders: Vec::new(),
            deployer: None,
            charts: None,
        }
    }

    /// Runs the pipelines that ask for `kind` (a later registration of the same kind
    /// replaces the earlier).
    pub fn register(mut self, kind: ExecutorKind, executor: Arc<dyn Executor>) -> Executors {
        self.registered.retain(|(k, _)| *k != kind);
        self.registered.push((kind, executor));
        self
    }

    /// Builds `image` tasks; without one they are refused.
    pub fn with_builder(mut self, builder: Option<Arc<dyn ImageBuilder>>) -> Executors {
        self.builder = builder;
        self
    }

    /// Builds the `image` tasks of pipelines on `kind` instead of the shared builder.
    pub fn with_builder_for(mut self, kind: ExecutorKind, builder: Arc<dyn ImageBuilder>) -> Executors {
        self.kind_builders.retain(|(k, _)| *k != kind);
        self.kind_builders.push((kind, builder));
        self
    }

    /// Applies `deploy-yaml` tasks; without one they are refused.
    pub fn with_deployer(mut self, deployer: Option<Arc<dyn Deployer>>) -> Executors {
        self.deployer = deployer;
        self
    }

    /// Pushes (and pulls) charts for `chart-publish` tasks; without one they are refused.
    pub fn with_charts(mut self, charts: Option<Arc<dyn ChartRegistry>>) -> Executors {
        self.charts = charts;
        self
    }

    pub(crate) fn into_engines(self, config: EngineConfig) -> Engines {
        let mut engines: Vec<(ExecutorKind, Engine)> = Vec::new();
        for (kind, executor) in self.registered {
            let engine = match engines.first() {
                Some((_, first)) => first.sharing_slots(executor),
                None => {
                    // Every run the lifecycle starts gets its approval gate.
                    let mut engine = Engine::new(config.clone(), executor).with_approvals();
                    if let Some(builder) = &self.builder {
                        engine = engine.with_builder(builder.clone());
                    }
                    if let Some(deployer) = &self.deployer {
                        engine = engine.with_deployer(deployer.clone());
                    }
                    if let Some(charts) = &self.charts {
                        engine = engine.with_charts(charts.clone());
                    }
                    engine
                }
            };
            engines.push((kind, engine));
        }
        // After every engine shares the first one's slots (and its builder): a kind's own
        // builder goes to its engine only.
        let engines = engines
            .into_iter()
            .map(|(kind, engine)| match self.kind_builders.iter().find(|(k, _)| *k == kind) {
                Some((_, builder)) => (kind, engine.with_builder(builder.clone())),
                None => (kind, engine),
            })
            .collect();
        Engines { default: self.default, engines }
    }
}

pub(crate) struct Engines {
    default: ExecutorKind,
    engines: Vec<(ExecutorKind, Engine)>,
}

impl Engines {
    /// The engine that runs `model`: its `executor:` when it names one, else the
    /// server's default.
    pub(crate) fn for_model(&self, model: &Pipeline) -> Result<&Engine, MissingExecutor> {
        let kind = self.kind_for(model);
        match self.engines.iter().find(|(k, _)| *k == kind) {
            Some((_, engine)) => Ok(engine),
            None => Err(MissingExecutor { asked: kind, default: self.default }),
        }
    }

    /// The executor `model` runs on: its `executor:`, else the server's default.
    pub(crate) fn kind_for(&self, model: &Pipeline) -> ExecutorKind {
        model.executor.unwrap_or(self.default)
    }

    /// The engine of pipelines that name no executor.
    pub(crate) fn default_engine(&self) -> Option<&Engine> {
        self.engines.iter().find(|(k, _)| *k == self.default).map(|(_, e)| e)
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &(ExecutorKind, Engine)> {
        self.engines.iter()
    }
}

/// A pipeline asks for an executor this server did not register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct MissingExecutor {
    pub asked: ExecutorKind,
    /// The server's default executor.
    pub default: ExecutorKind,
}

impl MissingExecutor {
    fn describe(&self) -> String {
        match (self.asked, self.default) {
            (ExecutorKind::Docker, ExecutorKind::Host) => "the pipeline asks for the docker executor; this server \
                 runs the host executor (start it with --executor docker where a Docker Engine answers)"
                .to_owned(),
            (kind, _) => {
                format!("the pipeline asks for the {} executor, which this server does not have", kind.as_str())
            }
        }
    }
}
