//! `chart-publish` tasks: render their fields, keep `chart_dir` inside the checkout,
//! load the chart (its `.helmignore` honoured), set `name` and `version` in its
//! Chart.yaml, substitute `${…}` in its values.yaml line by line, lint it by
//! rendering it as `helm template` would (a chart that does not render fails here,
//! naming the template and line), package it as `helm package` does, and push it to
//! the registry's workspace on the [`ChartRegistry`](wharf_executor::chart::ChartRegistry).
//! Outputs: `chart`, `version`, `digest` (and `reference`, `oci://host/workspace/chart`).

use super::attempt::JobEnd;
use super::deploy::substitute;
use super::image::ImageError;
use super::paths::{PathError, inside};
use super::variables::{FieldError, RenderError, render_field};
use super::{Part, RunState};
use crate::outputs::OutputFile;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use wharf_core::model::ChartPublishTask;
use wharf_executor::build::RegistryLogin;
use wharf_executor::chart::{ChartRegistryError, ChartUpload};
use wharf_executor::{Exit, LogSink, StopSignal};

/// One `chart-publish` task, every field final.
pub(super) struct PublishSpec {
    /// `chart_dir:` as the pipeline gives it (rendered), for messages.
    dir_field: String,
    /// The chart directory, inside the checkout, absolute.
    dir: PathBuf,
    name: String,
    version: String,
    workspace: String,
    login: RegistryLogin,
}

/// Why a `chart-publish` task cannot publish; the attempt fails with it.
#[derive(Debug, thiserror::Error)]
pub(super) enum ChartPublishError {
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error("the checkout {} is not there: {source}", .path.display())]
    NoCheckout { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("chart_dir: `{0}` is not a directory")]
    NotADirectory(String),
    /// The registry or workspace does not resolve (the same words as `image` tasks).
    #[error(transparent)]
    Registry(ImageError),
    /// The chart does not load (no Chart.yaml, bad YAML, too large).
    #[error("chart_dir: `{dir}`: {source}")]
    Load {
        dir: String,
        #[source]
        source: wharf_chart::LoadError,
    },
    /// values.yaml is no YAML as written; it holds `${…}`, which must be valid YAML
    /// before it is substituted (quoted inside `{…}` and `[…]`).
    #[error(
        "chart_dir: `{dir}`: {source} (values.yaml is read before ${{…}} is substituted: inside `{{…}}` or `[…]` \
         write it quoted, \"${{…}}\")"
    )]
    ValuesBeforeSubstitution {
        dir: String,
        #[source]
        source: wharf_chart::LoadError,
    },
    /// `${…}` in values.yaml that does not render; `line` counts from 1.
    #[error("chart_dir: `{dir}`: values.yaml line {line}: {source}")]
    Substitute { dir: String, line: usize, source: RenderError },
    /// values.yaml after substitution is not valid YAML.
    #[error("chart_dir: `{dir}`: values.yaml after substituting ${{…}}: {message}")]
    Values { dir: String, message: String },
    /// The chart does not render: the lint failed (the message names the template and line).
    #[error("chart_dir: `{dir}` does not render: {source}")]
    Lint {
        dir: String,
        #[source]
        source: wharf_chart::RenderError,
    },
    #[error("chart_dir: `{dir}`: {source}")]
    Package {
        dir: String,
        #[source]
        source: wharf_chart::package::PackageError,
    },
    #[error("pushing the chart {name} {version} to registry `{registry}`: {source}")]
    Push {
        name: String,
        version: String,
        registry: String,
        #[source]
        source: ChartRegistryError,
    },
    #[error("`chart-publish` tasks need the Wharf server's registry support, and this engine has none")]
    NoRegistry,
    #[error("cannot write the outputs: {0}")]
    WriteOutputs(#[source] io::Error),
}

impl RunState {
    pub(super) fn publish_spec(&self, task: &ChartPublishTask) -> Result<PublishSpec, ChartPublishError> {
        let scope = self.scope.lock().unwrap().clone();
        let render = |field: &str, text: &str| render_field(&scope, field, text);
        let dir_field = render("chart_dir", &task.chart_dir)?;
        let name = render("chart", &task.chart)?;
        let version = render("version", &task.version)?;
        let workspace = render("workspace", &task.workspace)?;
        let registry = task.registry.as_deref().map(|r| render("registry", r)).transpose()?;

        use wharf_core::reference::check_component;
        let reference = |field, source| FieldError::Reference { field, source };
        check_component(&name).map_err(|e| reference("chart", e))?;
        check_component(&workspace).map_err(|e| reference("workspace", e))?;

        let root = std::fs::canonicalize(&self.src)
            .map_err(|source| ChartPublishError::NoCheckout { path: self.src.clone(), source })?;
        let dir = inside(&root, &dir_field, "chart_dir")?;
        if !dir.is_dir() {
            return Err(ChartPublishError::NotADirectory(dir_field));
        }
        let target = self.registry_target(registry, &workspace).map_err(ChartPublishError::Registry)?;
        Ok(PublishSpec { dir_field, dir, name, version, workspace, login: target.login.clone() })
    }

    /// Loads, lints, packages and pushes; on success writes the outputs.
    pub(super) async fn publish(
        self: &Arc<Self>,
        part: Part,
        spec: PublishSpec,
        _sink: Arc<dyn LogSink>,
        mut stop: StopSignal,
        output: OutputFile,
    ) -> Result<Exit, ChartPublishError> {
        let end = async {
            let Some(charts) = self.charts.clone() else {
                return Err(ChartPublishError::NoRegistry);
            };
            let package = self.package_chart(part, &spec)?;
            let repository = format!("{}/{}", spec.workspace, package.name);
            self.system(
                part,
                format!(
                    "pushing {} ({} bytes) to registry `{}` as {}/{repository}:{}",
                    package.file_name(),
                    package.archive.len(),
                    spec.login.name,
                    spec.login.host,
                    wharf_executor::chart::version_tag(&package.version)
                ),
            );
            if let Some(request) = *stop.borrow_and_update() {
                return Ok(JobEnd::Stopped(request.reason));
            }
            let upload = ChartUpload {
                repository: repository.clone(),
                version: package.version.clone(),
                archive: package.archive,
                config: package.config,
            };
            let push_failed = |source| ChartPublishError::Push {
                name: package.name.clone(),
                version: package.version.clone(),
                registry: spec.login.name.clone(),
                source,
            };
            let push = charts.push(spec.login.clone(), upload);
            tokio::pin!(push);
            let pushed = loop {
                tokio::select! {
                    pushed = &mut push => break pushed.map_err(push_failed)?,
                    changed = stop.changed() => {
                        if changed.is_err() {
                            break push.await.map_err(push_failed)?;
                        }
                        if let Some(request) = *stop.borrow_and_update() {
                            // The manifest goes up last: a push cut off here leaves no tag.
                            return Ok(JobEnd::Stopped(request.reason));
                        }
                    }
                }
            };
            self.system(part, format!("pushed {} ({})", pushed.reference, pushed.digest));
            Ok(JobEnd::Done(format!(
                "chart={}\nversion={}\ndigest={}\nreference=oci://{}/{repository}\n",
                package.name, package.version, pushed.digest, spec.login.host
            )))
        }
        .await;
        self.job_exit(part, &output, end, ChartPublishError::WriteOutputs)
    }

    /// The chart of `spec` loaded, renamed and versioned, its values substituted,
    /// rendered once (the lint) and packaged.
    fn package_chart(
        &self,
        part: Part,
        spec: &PublishSpec,
    ) -> Result<wharf_chart::package::Package, ChartPublishError> {
        let dir = spec.dir_field.clone();
        let mut chart = wharf_chart::load_dir(&spec.dir).map_err(|source| {
            // values.yaml is parsed as it is written, before `${…}` is substituted.
            let quoted = matches!(source, wharf_chart::LoadError::Values { .. })
                && std::fs::read_to_string(spec.dir.join("values.yaml")).is_ok_and(|t| t.contains("${"));
            if quoted {
                ChartPublishError::ValuesBeforeSubstitution { dir: dir.clone(), source }
            } else {
                ChartPublishError::Load { dir: dir.clone(), source }
            }
        })?;
        chart.metadata.name = spec.name.clone();
        chart.metadata.version = spec.version.clone();
        if let Some(values) = &mut chart.values_yaml {
            let text = String::from_utf8_lossy(&values.data).into_owned();
            let scope = self.scope.lock().unwrap().clone();
            let substituted = substitute(&scope, &text).map_err(|(line, source)| ChartPublishError::Substitute {
                dir: dir.clone(),
                line,
                source,
            })?;
            chart.values = wharf_chart::Values::from_yaml(&substituted)
                .map_err(|e| ChartPublishError::Values { dir: dir.clone(), message: e.to_string() })?;
            values.data = substituted.into_bytes();
        }
        let options = wharf_chart::package::PackageOptions {
            version: None,
            app_version: None,
            mtime: jiff::Timestamp::now().as_second().max(0) as u64,
        };
        wharf_chart::package::check_metadata(&chart.metadata)
            .map_err(|source| ChartPublishError::Package { dir: dir.clone(), source })?;
        let render_options = wharf_chart::RenderOptions::default();
        let rendered = wharf_chart::render(&chart, &wharf_chart::Values::default(), &render_options)
            .map_err(|source| ChartPublishError::Lint { dir: dir.clone(), source })?;
        self.system(
            part,
            format!(
                "chart {} {} renders: {} manifests, {} hooks",
                chart.metadata.name,
                chart.metadata.version,
                rendered.manifests.len(),
                rendered.hooks.len()
            ),
        );
        wharf_chart::package::package(&chart, &options).map_err(|source| ChartPublishError::Package { dir, source })
    }
}
