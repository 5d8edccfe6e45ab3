//! Names and outputs: rendering templates in the run's scope, the environment and
//! script a task gets, and the outputs a task writes for later ones.

use super::RunState;
use crate::Part;
use crate::outputs::{self, OutputFile};
use std::path::Path;
use wharf_core::model::{Task, TaskKind};
use wharf_core::reference::ReferenceError;
use wharf_core::vars::{Scope, Template, TemplateError, Unresolved, VarRef};
use wharf_executor::TaskSpec;

/// A template that does not render: bad syntax, or a name without a value.
#[derive(Debug, thiserror::Error)]
pub(super) enum RenderError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Unresolved(#[from] Unresolved),
}

/// A task's field whose value does not work, named as the pipeline names it
/// (`env.HOME`, `image`, `build_args.V`).
#[derive(Debug, thiserror::Error)]
pub(super) enum FieldError {
    #[error("{field}: {source}")]
    Render { field: String, source: RenderError },
    /// The rendered value is not a valid image reference, name or tag.
    #[error("{field}: {source}")]
    Reference { field: &'static str, source: ReferenceError },
}

/// Why a script task's spec cannot be made; the attempt fails with it.
#[derive(Debug, thiserror::Error)]
pub(super) enum SpecError {
    #[error("`{0}` tasks cannot run yet")]
    CannotRunYet(&'static str),
    #[error(transparent)]
    Field(#[from] FieldError),
    /// The shell would expand it to an empty string.
    #[error("script: `${{{0}}}` has no value (the task that writes it did not run or did not write it)")]
    NoValue(String),
    #[error("script: task `{task}` did not write the output `{key}`")]
    NoOutput { task: String, key: String },
    #[error("the secret `{0}` is not set")]
    NoSecret(String),
    /// The pipeline's `cluster:` is not one of its project's clusters.
    #[error("cluster: `{name}` is not a cluster of this pipeline's project ({registered})")]
    UnknownCluster { name: String, registered: String },
    #[error(
        "executor: kubernetes needs a cluster: name one with the pipeline's `cluster:` (a registered cluster), or start the server with `--default-cluster NAME`"
    )]
    NoCluster,
}

/// Why a task that exited well fails over its outputs.
#[derive(Debug, thiserror::Error)]
pub(super) enum OutputsError {
    #[error(transparent)]
    File(#[from] outputs::ReadError),
    #[error(
        "declared {} {} {} not written to $WHARF_OUTPUT",
        if .0.len() == 1 { "output" } else { "outputs" },
        .0.join(", "),
        if .0.len() == 1 { "was" } else { "were" }
    )]
    Missing(Vec<String>),
}

/// Renders `text` in `scope`.
pub(super) fn render_in(scope: &Scope, text: &str) -> Result<String, RenderError> {
    let template = Template::parse(text)?;
    Ok(scope.render(&template)?)
}

/// Renders the value of the task field `field` in `scope`.
pub(super) fn render_field(scope: &Scope, field: &str, text: &str) -> Result<String, FieldError> {
    render_in(scope, text).map_err(|source| FieldError::Render { field: field.to_owned(), source })
}

impl RunState {
    /// Renders `text` in the run's scope.
    pub(super) fn render(&self, text: &str) -> Result<String, RenderError> {
        render_in(&self.scope.lock().unwrap(), text)
    }

    pub(super) fn task_spec(
        &self,
        s: usize,
        task: &Task,
        attempt: u32,
        output_file: &Path,
    ) -> Result<TaskSpec, SpecError> {
        let TaskKind::Script(script) = &task.kind else {
            return Err(SpecError::CannotRunYet(task.kind.type_name()));
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
        let render = |field: &str, text: &str| render_field(&scope, field, text);
        let mut env: Vec<(String, String)> = scope.names.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let template = Template::parse(&script.script)
            .map_err(|e| FieldError::Render { field: "script".to_owned(), source: e.into() })?;
        for r in template.refs() {
            // The shell would expand a missing output to an empty string; say so instead.
            if let VarRef::Name(name) = r
                && !scope.names.contains_key(name)
                && !task.env.contains_key(name)
                && !task.secrets.iter().any(|s| s.as_str() == name)
            {
                return Err(SpecError::NoValue(name.clone()));
            }
        }
        let task_index = &self.task_index;
        for r in template.refs() {
            if let VarRef::TaskOutput { task: producer, key } = r {
                let value = scope
                    .outputs
                    .get(producer)
                    .and_then(|o| o.get(key))
                    .ok_or_else(|| SpecError::NoOutput { task: producer.clone(), key: key.clone() })?;
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
                self.request.secrets.get(secret.as_str()).ok_or_else(|| SpecError::NoSecret(secret.to_string()))?;
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
            wharf_core::reference::Reference::parse(image)
                .map_err(|source| FieldError::Reference { field: "image", source })?;
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
            cluster: self.task_cluster(&script.pod)?,
        })
    }

    /// Whether the pipeline runs on the kubernetes executor: its `executor:`, or the
    /// server's default executor it runs on.
    fn on_kubernetes(&self) -> bool {
        let pipeline = self.pipeline();
        pipeline.executor == Some(wharf_core::model::ExecutorKind::Kubernetes)
            || (pipeline.executor.is_none() && self.executor.name() == "kubernetes")
    }

    /// Where an `image` task's builder pod would run: the pipeline's cluster (with the
    /// pipeline's pod settings over the cluster's defaults) when the pipeline runs on the
    /// kubernetes executor; `None` elsewhere, so that naming a cluster for `deploy-yaml`
    /// never moves a build off the Docker Engine.
    pub(super) fn build_cluster(&self) -> Result<Option<wharf_executor::TaskCluster>, SpecError> {
        if !self.on_kubernetes() {
            return Ok(None);
        }
        self.task_cluster(&wharf_core::pod::PodSettings::default())
    }

    /// The pipeline's `cluster:` (or the server's default cluster, on the kubernetes
    /// executor) with its login, namespace and pod settings (the task's `pod` over the
    /// pipeline's over the cluster's defaults); required on the kubernetes executor.
    fn task_cluster(
        &self,
        pod: &wharf_core::pod::PodSettings,
    ) -> Result<Option<wharf_executor::TaskCluster>, SpecError> {
        let pipeline = self.pipeline();
        let clusters = &self.request.clusters;
        // The pipeline's `executor:`, or the server's default executor it runs on (an
        // executor bound to one namespace, as in tests and benchmarks, needs no cluster).
        let named = pipeline.executor == Some(wharf_core::model::ExecutorKind::Kubernetes);
        let on_kubernetes = self.on_kubernetes();
        let name = match (&pipeline.cluster, &clusters.default) {
            (Some(name), _) => name,
            (None, Some(default)) if on_kubernetes => default,
            (None, _) => return if named { Err(SpecError::NoCluster) } else { Ok(None) },
        };
        let unknown = || SpecError::UnknownCluster {
            name: name.clone(),
            registered: if clusters.by_name.is_empty() {
                "none is registered: add one with `wharf clusters add` or on the Clusters page".to_owned()
            } else {
                format!("registered: {}", clusters.by_name.keys().cloned().collect::<Vec<_>>().join(", "))
            },
        };
        let login = clusters.by_name.get(name).cloned().ok_or_else(unknown)?;
        let namespace = clusters.namespaces.get(name).cloned().ok_or_else(unknown)?;
        let defaults = clusters.pod_defaults.get(name).cloned().unwrap_or_default();
        Ok(Some(wharf_executor::TaskCluster {
            login,
            namespace,
            pod: pod.over(&pipeline.pod.over(&defaults)),
            pending_limit: clusters.pending_limits.get(name).copied(),
            workspace: clusters.workspaces.get(name).cloned().unwrap_or_default(),
        }))
    }

    pub(super) fn collect_outputs(
        &self,
        s: usize,
        t: usize,
        task: &Task,
        file: &OutputFile,
    ) -> Result<(), OutputsError> {
        let part = Part::Task(s, t);
        // A task that removed the file wrote no outputs.
        let bytes = file.read(outputs::MAX_OUTPUT_FILE_BYTES)?.unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let parsed = outputs::parse(&text);
        for warning in &parsed.warnings {
            self.system(part, warning);
        }
        let missing: Vec<String> =
            task.outputs.iter().map(|o| o.to_string()).filter(|o| !parsed.values.contains_key(o)).collect();
        if !missing.is_empty() {
            return Err(OutputsError::Missing(missing));
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

/// The environment name a task output reference becomes in a later script.
pub(super) fn output_env_name(stage: usize, task: usize, key: &str) -> String {
    format!("WHARF_OUT_{stage}_{task}_{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words are the ones the record and log showed before these were types.
    #[test]
    fn spec_and_output_errors_say_what_they_said_as_strings() {
        let unresolved = render_in(&Scope::default(), "${NOPE}").unwrap_err();
        let field = FieldError::Render { field: "env.A".into(), source: unresolved };
        let reference = wharf_core::reference::Reference::parse("a b").unwrap_err();
        let cases: Vec<(Box<dyn std::error::Error>, String)> = vec![
            (Box::new(SpecError::CannotRunYet("approval")), "`approval` tasks cannot run yet".into()),
            (Box::new(SpecError::from(field)), "env.A: ${NOPE} has no value".into()),
            (
                Box::new(FieldError::Reference { field: "image", source: reference.clone() }),
                format!("image: {reference}"),
            ),
            (
                Box::new(SpecError::NoValue("V".into())),
                "script: `${V}` has no value (the task that writes it did not run or did not write it)".into(),
            ),
            (
                Box::new(SpecError::NoOutput { task: "build".into(), key: "V".into() }),
                "script: task `build` did not write the output `V`".into(),
            ),
            (Box::new(SpecError::NoSecret("TOKEN".into())), "the secret `TOKEN` is not set".into()),
            (
                Box::new(OutputsError::Missing(vec!["A".into()])),
                "declared output A was not written to $WHARF_OUTPUT".into(),
            ),
            (
                Box::new(OutputsError::Missing(vec!["A".into(), "B".into()])),
                "declared outputs A, B were not written to $WHARF_OUTPUT".into(),
            ),
        ];
        for (err, words) in cases {
            assert_eq!(err.to_string(), words);
        }
        let syntax = render_in(&Scope::default(), "${").unwrap_err();
        let RenderError::Template(template) = &syntax else { panic!("{syntax:?}") };
        assert_eq!(syntax.to_string(), template.message);
    }
}
