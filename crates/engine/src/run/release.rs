//! `chart-deploy` tasks: render their fields (and `${…}` in every string of `values`),
//! resolve the registry and the cluster among the ones the caller handed in, pull the
//! chart by version through the [`ChartRegistry`](wharf_executor::chart::ChartRegistry),
//! and install or upgrade the release on the
//! [`Deployer`](wharf_executor::deploy::Deployer). Outputs: `release`, `revision`,
//! `status` and `applied`.

use super::attempt::JobEnd;
use super::deploy::{DeployYamlError, is_namespace_name};
use super::image::ImageError;
use super::variables::{FieldError, render_field};
use super::{Part, RunState};
use crate::outputs::OutputFile;
use serde_json::Value;
use std::io;
use std::sync::Arc;
use wharf_core::model::{ChartDeployTask, Task};
use wharf_core::vars::Scope;
use wharf_executor::build::RegistryLogin;
use wharf_executor::chart::ChartRegistryError;
use wharf_executor::deploy::{DeployError, ReleaseExit, ReleaseSpec};
use wharf_executor::{Exit, LogSink, StopSignal};

/// One `chart-deploy` task, every field final; the chart is pulled when it runs.
pub(super) struct ReleaseJob {
    /// The release to make, its `chart` still empty.
    spec: ReleaseSpec,
    login: RegistryLogin,
    /// `workspace/chart`
    repository: String,
    version: String,
}

/// Why a `chart-deploy` task cannot deploy, or its deploy failed; the attempt fails with it.
#[derive(Debug, thiserror::Error)]
pub(super) enum ChartDeployError {
    #[error(transparent)]
    Field(#[from] FieldError),
    /// The namespace or cluster does not resolve (the same words as `deploy-yaml`).
    #[error(transparent)]
    Target(DeployYamlError),
    /// The registry or workspace does not resolve (the same words as `image` tasks).
    #[error(transparent)]
    Registry(ImageError),
    #[error(
        "release: `{0}` is not a Helm release name (lower-case letters, digits, `-` and `.`, at most 53, starting \
         and ending with a letter or digit)"
    )]
    BadRelease(String),
    #[error("pulling chart {repository} {version} from registry `{registry}`: {source}")]
    Pull {
        repository: String,
        version: String,
        registry: String,
        #[source]
        source: ChartRegistryError,
    },
    #[error("`chart-deploy` tasks need the Wharf server's Kubernetes and registry support, and this engine has none")]
    NoSupport,
    #[error("cannot write the outputs: {0}")]
    WriteOutputs(#[source] io::Error),
    #[error(transparent)]
    Deploy(#[from] DeployError),
}

/// Helm's rule for release names: a DNS subdomain of at most 53 characters.
fn is_release_name(name: &str) -> bool {
    name.len() <= 53 && !name.is_empty() && name.split('.').all(is_namespace_name)
}

/// `${…}` rendered in every string of `value` (keys stay as written); an error names the
/// field path (`values.image.tag`).
fn render_values(scope: &Scope, path: &str, value: &Value) -> Result<Value, FieldError> {
    Ok(match value {
        Value::String(s) => Value::String(render_field(scope, path, s)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| render_values(scope, &format!("{path}[{i}]"), v))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_values(scope, &format!("{path}.{k}"), v)?)))
                .collect::<Result<_, FieldError>>()?,
        ),
        other => other.clone(),
    })
}

impl RunState {
    pub(super) fn release_job(
        &self,
        s: usize,
        task: &Task,
        deploy: &ChartDeployTask,
    ) -> Result<ReleaseJob, ChartDeployError> {
        let mut scope = self.scope.lock().unwrap().clone();
        for name in &task.secrets {
            if let Some(value) = self.request.secrets.get(name.as_str()) {
                scope.names.insert(name.to_string(), value.clone());
            }
        }
        let render = |field: &str, text: &str| render_field(&scope, field, text);
        let release = render("release", &deploy.release)?;
        let chart = render("chart", &deploy.chart)?;
        let version = render("version", &deploy.version)?;
        let workspace = render("workspace", &deploy.workspace)?;
        let registry = deploy.registry.as_deref().map(|r| render("registry", r)).transpose()?;
        let cluster = render("cluster", &deploy.cluster)?;
        let namespace = render("namespace", &deploy.namespace)?;
        let values = match render_values(&scope, "values", &Value::Object(deploy.values.clone()))? {
            Value::Object(map) => map,
            _ => unreachable!("an object renders to an object"),
        };
        use wharf_core::reference::check_component;
        let reference = |field, source| FieldError::Reference { field, source };
        check_component(&chart).map_err(|e| reference("chart", e))?;
        check_component(&workspace).map_err(|e| reference("workspace", e))?;
        if !is_release_name(&release) {
            return Err(ChartDeployError::BadRelease(release));
        }
        if !is_namespace_name(&namespace) {
            return Err(ChartDeployError::Target(DeployYamlError::BadNamespace(namespace)));
        }
        let clusters = &self.request.clusters;
        let login = clusters.by_name.get(&cluster).cloned().ok_or_else(|| {
            ChartDeployError::Target(DeployYamlError::UnknownCluster {
                name: cluster.clone(),
                registered: clusters.by_name.keys().cloned().collect(),
            })
        })?;
        let target = self.registry_target(registry, &workspace).map_err(ChartDeployError::Registry)?;
        let stage = self.record.lock().unwrap().stages[s].name.clone();
        Ok(ReleaseJob {
            spec: ReleaseSpec {
                run: format!("{}#{}", self.pipeline().name, self.request.number),
                stage,
                task: task.name.to_string(),
                cluster: login,
                namespace,
                release,
                chart: Vec::new(),
                source: format!("{}/{workspace}/{chart}", target.login.name),
                values,
            },
            login: target.login.clone(),
            repository: format!("{workspace}/{chart}"),
            version,
        })
    }

    /// Pulls the chart, installs or upgrades; on success writes the outputs.
    pub(super) async fn release(
        self: &Arc<Self>,
        part: Part,
        job: ReleaseJob,
        sink: Arc<dyn LogSink>,
        mut stop: StopSignal,
        output: OutputFile,
    ) -> Result<Exit, ChartDeployError> {
        let end = async {
            let (Some(charts), Some(deployer)) = (self.charts.clone(), self.deployer.clone()) else {
                return Err(ChartDeployError::NoSupport);
            };
            let ReleaseJob { mut spec, login, repository, version } = job;
            self.system(
                part,
                format!("pulling chart {}/{repository}:{} from registry `{}`", login.host, version, login.name),
            );
            let registry = login.name.clone();
            let pulled = tokio::select! {
                pulled = charts.pull(login, repository.clone(), version.clone()) => pulled,
                request = super::stop::stop_requested(&mut stop) => return Ok(JobEnd::Stopped(request.reason)),
            }
            .map_err(|source| ChartDeployError::Pull { repository, version, registry, source })?;
            self.system(part, format!("pulled {} bytes, {}", pulled.archive.len(), pulled.digest));
            spec.chart = pulled.archive;
            let release = spec.release.clone();
            match deployer.release(spec, sink, stop).await? {
                ReleaseExit::Released(done) => {
                    let applied: Vec<String> = done.applied.iter().map(|a| a.to_string()).collect();
                    Ok(JobEnd::Done(format!(
                        "release={release}\nrevision={}\nstatus={}\napplied={}\n",
                        done.revision,
                        done.status,
                        applied.join(" ")
                    )))
                }
                ReleaseExit::Stopped(reason) => Ok(JobEnd::Stopped(reason)),
            }
        }
        .await;
        self.job_exit(part, &output, end, ChartDeployError::WriteOutputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_substituted_everywhere_and_errors_name_the_path() {
        let mut scope = Scope::default();
        scope.names.insert("BUILD_ID".into(), "7".into());
        let values = serde_json::json!({"image": {"tag": "alpha-${BUILD_ID}"}, "args": ["a", "${BUILD_ID}"], "n": 2});
        let out = render_values(&scope, "values", &values).unwrap();
        assert_eq!(out, serde_json::json!({"image": {"tag": "alpha-7"}, "args": ["a", "7"], "n": 2}));
        let bad = serde_json::json!({"image": {"tag": "${NOPE}"}});
        let err = render_values(&scope, "values", &bad).unwrap_err();
        assert!(err.to_string().contains("values.image.tag"), "{err}");
    }

    #[test]
    fn release_names_follow_helm() {
        assert!(is_release_name("nginx") && is_release_name("web.v2"));
        for bad in ["", "Nginx", "-a", "a..b", &"a".repeat(54)] {
            assert!(!is_release_name(bad), "{bad}");
        }
    }
}
