//! Names and outputs: rendering templates in the run's scope, the environment and
//! script a task gets, and the outputs a task writes for later ones.

use super::RunState;
use crate::Part;
use crate::outputs::{self, OutputFile};
use std::path::Path;
use wharf_core::model::{Task, TaskKind};
use wharf_core::vars::{Template, VarRef};
use wharf_executor::TaskSpec;

impl RunState {
    pub(super) fn render(&self, text: &str) -> Result<String, String> {
        let template = Template::parse(text).map_err(|e| e.message)?;
        let scope = self.scope.lock().unwrap();
        scope.render(&template).map_err(|e| e.to_string())
    }

    pub(super) fn task_spec(
        &self,
        s: usize,
        task: &Task,
        attempt: u32,
        output_file: &Path,
    ) -> Result<TaskSpec, String> {
        let TaskKind::Script(script) = &task.kind else {
            return Err(format!("`{}` tasks cannot run yet", task.kind.type_name()));
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
        let render = |field: &str, text: &str| -> Result<String, String> {
            let template = Template::parse(text).map_err(|e| format!("{field}: {}", e.message))?;
            scope.render(&template).map_err(|e| format!("{field}: {e}"))
        };
        let mut env: Vec<(String, String)> = scope.names.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let template = Template::parse(&script.script).map_err(|e| format!("script: {}", e.message))?;
        for r in template.refs() {
            // The shell would expand a missing output to an empty string; say so instead.
            if let VarRef::Name(name) = r
                && !scope.names.contains_key(name)
                && !task.env.contains_key(name)
                && !task.secrets.iter().any(|s| s.as_str() == name)
            {
                return Err(format!(
                    "script: `${{{name}}}` has no value (the task that writes it did not run or did not write it)"
                ));
            }
        }
        let task_index = &self.task_index;
        for r in template.refs() {
            if let VarRef::TaskOutput { task: producer, key } = r {
                let value = scope
                    .outputs
                    .get(producer)
                    .and_then(|o| o.get(key))
                    .ok_or_else(|| format!("script: task `{producer}` did not write the output `{key}`"))?;
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
                self.request.secrets.get(secret.as_str()).ok_or_else(|| format!("the secret `{secret}` is not set"))?;
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
            wharf_core::reference::Reference::parse(image).map_err(|e| format!("image: {e}"))?;
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
        })
    }

    pub(super) fn collect_outputs(&self, s: usize, t: usize, task: &Task, file: &OutputFile) -> Result<(), String> {
        let part = Part::Task(s, t);
        // A task that removed the file wrote no outputs.
        let bytes = file.read(outputs::MAX_OUTPUT_FILE_BYTES)?.unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let parsed = outputs::parse(&text);
        for warning in &parsed.warnings {
            self.system(part, warning);
        }
        let missing: Vec<&str> =
            task.outputs.iter().map(|o| o.as_str()).filter(|o| !parsed.values.contains_key(*o)).collect();
        if !missing.is_empty() {
            let (noun, verb) = if missing.len() == 1 { ("output", "was") } else { ("outputs", "were") };
            return Err(format!("declared {noun} {} {verb} not written to $WHARF_OUTPUT", missing.join(", ")));
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
