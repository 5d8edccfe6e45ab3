//! `deploy-yaml` tasks: render their fields, read the file from inside the checkout,
//! substitute `${…}` in it line by line (an error names the line), resolve the cluster
//! among the ones the caller handed in, apply on the
//! [`Deployer`](wharf_executor::deploy::Deployer), and record the applied objects as
//! the task's output `applied`.

use super::attempt::JobEnd;
use super::paths::{PathError, inside};
use super::variables::{FieldError, RenderError, render_field};
use super::{Part, RunState};
use crate::outputs::OutputFile;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use wharf_core::model::{DeployYamlTask, Task};
use wharf_core::vars::{Scope, Template};
use wharf_executor::deploy::{DeployError, DeployExit, DeploySpec};
use wharf_executor::{Exit, LogSink, StopSignal};

/// Largest manifest file read (Kubernetes keeps each object under 1.5 MiB; a file of
/// many is still far below this).
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// Why a `deploy-yaml` task cannot deploy, or its deploy failed; the attempt fails with it.
#[derive(Debug, thiserror::Error)]
pub(super) enum DeployYamlError {
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error("the checkout {} is not there: {source}", .path.display())]
    NoCheckout { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("file: `{file}` is not a file")]
    NotAFile { file: String },
    #[error("file: `{file}` is larger than {} MiB", MAX_MANIFEST_BYTES / (1024 * 1024))]
    TooLarge { file: String },
    #[error("file: `{file}` is not UTF-8 text")]
    NotText { file: String },
    #[error("file: `{file}` cannot be read: {source}")]
    Unreadable { file: String, source: io::Error },
    /// `${…}` in the file that does not render; `line` counts from 1.
    #[error("file: `{file}` line {line}: {source}")]
    Substitute { file: String, line: usize, source: RenderError },
    #[error(
        "namespace: `{0}` is not a Kubernetes namespace name (lower-case letters, digits and `-`, at most 63, \
         starting and ending with a letter or digit)"
    )]
    BadNamespace(String),
    #[error(
        "cluster: `{name}` is not a cluster of this pipeline's project ({})",
        if .registered.is_empty() {
            "none is registered: add one with `wharf clusters add` or on the Clusters page".to_owned()
        } else {
            format!("registered: {}", .registered.join(", "))
        }
    )]
    UnknownCluster { name: String, registered: Vec<String> },
    #[error("`deploy-yaml` tasks need the Kubernetes support of the Wharf server, and this engine has none")]
    NoDeployer,
    #[error("cannot write the outputs: {0}")]
    WriteOutputs(#[source] io::Error),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    /// A canary step that people rejected (the rejecter and comment), or whose
    /// decision could not be read.
    #[error("{0}")]
    Decision(String),
    #[error(
        "`approval: true` on a canary needs the Wharf server: people approve or reject its steps in its UI, API or \
         CLI, and `wharf run` has nobody to ask"
    )]
    NoApprovals,
}

impl RunState {
    pub(super) fn deploy_spec(
        &self,
        s: usize,
        task: &Task,
        deploy: &DeployYamlTask,
    ) -> Result<DeploySpec, DeployYamlError> {
        let mut scope = self.scope.lock().unwrap().clone();
        // The secrets the task lists may be substituted too (a Secret object's data);
        // the masker hides them in every log line.
        for name in &task.secrets {
            if let Some(value) = self.request.secrets.get(name.as_str()) {
                scope.names.insert(name.to_string(), value.clone());
            }
        }
        let render = |field: &str, text: &str| render_field(&scope, field, text);
        let file = render("file", &deploy.file)?;
        let cluster = render("cluster", &deploy.cluster)?;
        let namespace = render("namespace", &deploy.namespace)?;
        if !is_namespace_name(&namespace) {
            return Err(DeployYamlError::BadNamespace(namespace));
        }
        let clusters = &self.request.clusters;
        let login = clusters.by_name.get(&cluster).cloned().ok_or_else(|| DeployYamlError::UnknownCluster {
            name: cluster.clone(),
            registered: clusters.by_name.keys().cloned().collect(),
        })?;

        let root = std::fs::canonicalize(&self.src)
            .map_err(|source| DeployYamlError::NoCheckout { path: self.src.clone(), source })?;
        let path = inside(&root, &file, "file")?;
        let text = read_manifests(&path, &file)?;
        let manifests = substitute(&scope, &text).map_err(|(line, source)| DeployYamlError::Substitute {
            file: file.clone(),
            line,
            source,
        })?;
        let stage = self.record.lock().unwrap().stages[s].name.clone();
        Ok(DeploySpec {
            run: format!("{}#{}", self.pipeline().name, self.request.number),
            stage,
            task: task.name.to_string(),
            file,
            manifests,
            cluster: login,
            namespace,
        })
    }

    /// Deploys; on success writes `applied` (space-separated `Kind/namespace/name@version`,
    /// in apply order) to the task's output file, where the usual output collection
    /// finds it.
    pub(super) async fn deploy(
        self: &Arc<Self>,
        part: Part,
        spec: DeploySpec,
        sink: Arc<dyn LogSink>,
        stop: StopSignal,
        output: OutputFile,
    ) -> Result<Exit, DeployYamlError> {
        let Some(deployer) = self.deployer.clone() else {
            return Err(DeployYamlError::NoDeployer);
        };
        let end = deployer.deploy(spec, sink, stop).await.map_err(DeployYamlError::from).map(|exit| match exit {
            DeployExit::Deployed(applied) => {
                let list: Vec<String> = applied.iter().map(|a| a.to_string()).collect();
                JobEnd::Done(format!("applied={}\n", list.join(" ")))
            }
            DeployExit::Stopped(reason) => JobEnd::Stopped(reason),
        });
        self.job_exit(part, &output, end, DeployYamlError::WriteOutputs)
    }
}

/// The file's text, bounded in size and required to be UTF-8.
fn read_manifests(path: &std::path::Path, file: &str) -> Result<String, DeployYamlError> {
    let unreadable = |source| DeployYamlError::Unreadable { file: file.to_owned(), source };
    if !path.is_file() {
        return Err(DeployYamlError::NotAFile { file: file.to_owned() });
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(unreadable)?
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(DeployYamlError::TooLarge { file: file.to_owned() });
    }
    String::from_utf8(bytes).map_err(|_| DeployYamlError::NotText { file: file.to_owned() })
}

/// `text` with every `${…}` rendered in `scope`, line by line so that an error names
/// its line (counted from 1). A reference never spans lines.
pub(super) fn substitute(scope: &Scope, text: &str) -> Result<String, (usize, RenderError)> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if !line.contains('$') {
            out.push_str(line);
            continue;
        }
        let rendered = Template::parse(line)
            .map_err(RenderError::from)
            .and_then(|t| scope.render(&t).map_err(RenderError::from))
            .map_err(|e| (i + 1, e))?;
        out.push_str(&rendered);
    }
    Ok(out)
}

/// A DNS-1123 label, as Kubernetes requires of namespace names.
pub(super) fn is_namespace_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_names_the_line_and_keeps_the_rest() {
        let mut scope = Scope::default();
        scope.names.insert("BUILD_ID".into(), "7".into());
        let text = "kind: Deployment\nimage: reg/devops/jack-2048:alpha-${BUILD_ID}\nargs: [\"$HOME\", \"$${X}\"]\n";
        assert_eq!(
            substitute(&scope, text).unwrap(),
            "kind: Deployment\nimage: reg/devops/jack-2048:alpha-7\nargs: [\"$HOME\", \"${X}\"]\n"
        );
        let (line, err) = substitute(&scope, "a: 1\nb: 2\nc: ${NOPE}\n").unwrap_err();
        assert_eq!((line, err.to_string().as_str()), (3, "${NOPE} has no value"));
        let (line, _) = substitute(&scope, "a: ${BUILD_ID\n").unwrap_err();
        assert_eq!(line, 1);
    }

    #[test]
    fn namespace_names_follow_kubernetes() {
        for good in ["games", "ecp-devops-1a2b", "a", &"x".repeat(63)] {
            assert!(is_namespace_name(good), "{good}");
        }
        for bad in ["", "Games", "-a", "a-", "a_b", "a.b", &"x".repeat(64)] {
            assert!(!is_namespace_name(bad), "{bad}");
        }
    }
}
