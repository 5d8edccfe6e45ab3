//! `image` tasks: render their fields, keep the Dockerfile and the context inside the
//! checkout (after following symlinks), resolve the registry the caller handed in,
//! build and push on the [`ImageBuilder`](wharf_executor::build::ImageBuilder), and
//! record `image` and `digest` as the task's outputs, like a script's.

use super::attempt::JobEnd;
use super::paths::{PathError, inside};
use super::variables::{FieldError, render_field};
use super::{Part, RunState};
use crate::outputs::OutputFile;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use wharf_core::model::{ImageTask, Task};
use wharf_executor::build::{BuildError, BuildExit, BuildSpec};
use wharf_executor::{Exit, LogSink, StopSignal};

/// Why an `image` task cannot build, or its build failed; the attempt fails with it.
#[derive(Debug, thiserror::Error)]
pub(super) enum ImageError {
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error("the checkout {} is not there: {source}", .path.display())]
    NoCheckout { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Path(#[from] PathError),
    /// `context:` (as the pipeline gives it) is not a directory.
    #[error("context: `{0}` is not a directory")]
    ContextNotADirectory(String),
    /// `dockerfile:` (as the pipeline gives it) is not a file.
    #[error("dockerfile: `{0}` is not a file")]
    DockerfileNotAFile(String),
    #[error(
        "registry: the task names no `registry:` and the server has no default registry (register one with \
         `wharf registries add` and name it, or start the server with --default-registry)"
    )]
    NoRegistry,
    #[error(
        "registry: `{name}` is not a registered registry ({})",
        if .registered.is_empty() { "none is registered".to_owned() } else { format!("registered: {}", .registered.join(", ")) }
    )]
    UnknownRegistry { name: String, registered: Vec<String> },
    #[error(
        "workspace: `{workspace}` is not a workspace of registry `{registry}` (registered: {}); add it with \
         `wharf registries add-workspace {registry} {workspace}`",
        if .registered.is_empty() { "none".to_owned() } else { .registered.join(", ") }
    )]
    UnknownWorkspace { workspace: String, registry: String, registered: Vec<String> },
    #[error(
        "`image` tasks build on the Docker Engine, or in a builder pod for pipelines on the kubernetes executor, and \
         neither is configured here"
    )]
    NoBuilder,
    /// The pipeline's cluster (where a builder pod runs) does not resolve.
    #[error(transparent)]
    Cluster(#[from] super::variables::SpecError),
    #[error("cannot write the outputs: {0}")]
    WriteOutputs(#[source] io::Error),
    #[error(transparent)]
    Build(#[from] BuildError),
}

impl RunState {
    pub(super) fn build_spec(&self, s: usize, task: &Task, image: &ImageTask) -> Result<BuildSpec, ImageError> {
        let scope = self.scope.lock().unwrap().clone();
        let render = |field: &str, text: &str| render_field(&scope, field, text);
        let dockerfile = render("dockerfile", &image.dockerfile)?;
        let context = render("context", &image.context)?;
        let name = render("image", &image.image)?;
        let tag = render("tag", &image.tag)?;
        let workspace = render("workspace", &image.workspace)?;
        let registry = image.registry.as_deref().map(|r| render("registry", r)).transpose()?;
        let build_args = image
            .build_args
            .iter()
            .map(|(k, v)| Ok((k.clone(), render(&format!("build_args.{k}"), v)?)))
            .collect::<Result<Vec<_>, FieldError>>()?;

        // Rendered names must still fit the OCI reference grammar.
        use wharf_core::reference::{check_component, check_tag};
        let reference = |field, source| FieldError::Reference { field, source };
        check_component(&name).map_err(|e| reference("image", e))?;
        check_tag(&tag).map_err(|e| reference("tag", e))?;
        check_component(&workspace).map_err(|e| reference("workspace", e))?;

        let root = std::fs::canonicalize(&self.src)
            .map_err(|source| ImageError::NoCheckout { path: self.src.clone(), source })?;
        let context = inside(&root, &context, "context")?;
        if !context.is_dir() {
            return Err(ImageError::ContextNotADirectory(image.context.clone()));
        }
        let dockerfile = inside(&root, &dockerfile, "dockerfile")?;
        if !dockerfile.is_file() {
            return Err(ImageError::DockerfileNotAFile(image.dockerfile.clone()));
        }

        let target = self.registry_target(registry, &workspace)?;
        let cluster = self.build_cluster()?;
        let stage = self.record.lock().unwrap().stages[s].name.clone();
        Ok(BuildSpec {
            run: format!("{}#{}", self.pipeline().name, self.request.number),
            stage,
            task: task.name.to_string(),
            context,
            dockerfile,
            build_args,
            image: format!("{}/{workspace}/{name}:{tag}", target.login.host),
            registry: target.login.clone(),
            // Where the image came from; nothing run-specific, so that building the same
            // commit again gives the same image.
            labels: [
                ("org.opencontainers.image.source", "GIT_URL"),
                ("org.opencontainers.image.revision", "GIT_COMMIT"),
            ]
            .into_iter()
            .filter_map(|(label, name)| {
                let value = scope.names.get(name).filter(|v| !v.is_empty())?;
                Some((label.to_owned(), without_userinfo(value)))
            })
            .collect(),
            checkout: root,
            owner_labels: self.request.labels.clone(),
            cluster,
        })
    }

    /// The registry a task pushes to: the one it names, else the server's default; the
    /// workspace must be one of the registry's when the server lists them.
    pub(super) fn registry_target(
        &self,
        registry: Option<String>,
        workspace: &str,
    ) -> Result<&crate::RegistryTarget, ImageError> {
        let registries = &self.request.registries;
        let registry = match registry.or_else(|| registries.default.clone()) {
            Some(registry) => registry,
            None => return Err(ImageError::NoRegistry),
        };
        let target = registries.by_name.get(&registry).ok_or_else(|| ImageError::UnknownRegistry {
            name: registry.clone(),
            registered: registries.by_name.keys().cloned().collect(),
        })?;
        if let Some(workspaces) = &target.workspaces
            && !workspaces.iter().any(|w| w == workspace)
        {
            return Err(ImageError::UnknownWorkspace {
                workspace: workspace.to_owned(),
                registry,
                registered: workspaces.clone(),
            });
        }
        Ok(target)
    }

    /// Builds and pushes; on success writes `image` and `digest` to the task's output
    /// file, where the usual output collection finds them.
    pub(super) async fn build(
        self: &Arc<Self>,
        part: Part,
        spec: BuildSpec,
        sink: Arc<dyn LogSink>,
        stop: StopSignal,
        output: OutputFile,
    ) -> Result<Exit, ImageError> {
        let Some(builder) = self.builder.clone() else {
            return Err(ImageError::NoBuilder);
        };
        let end = builder.build(spec, sink, stop).await.map_err(ImageError::from).map(|exit| match exit {
            BuildExit::Built(built) => JobEnd::Done(format!("image={}\ndigest={}\n", built.image, built.digest)),
            BuildExit::Stopped(reason) => JobEnd::Stopped(reason),
        });
        self.job_exit(part, &output, end, ImageError::WriteOutputs)
    }
}

/// A URL without the `user:token@` part a clone URL may carry (labels are public).
fn without_userinfo(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let host_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..host_end].rfind('@') {
            return format!("{scheme}://{}", &rest[at + 1..]);
        }
    }
    url.to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels_never_carry_credentials() {
        use super::without_userinfo;
        assert_eq!(
            without_userinfo("https://oauth2:tok@gitlab.example.com/a/b.git"),
            "https://gitlab.example.com/a/b.git"
        );
        assert_eq!(without_userinfo("https://gitlab.example.com/a@b"), "https://gitlab.example.com/a@b");
        assert_eq!(without_userinfo("file:///srv/git/app.git"), "file:///srv/git/app.git");
    }

    /// The words are the ones the record and log showed before these were types.
    #[test]
    fn image_errors_say_what_they_said_as_strings() {
        use super::ImageError;
        use crate::run::paths::PathError;
        let field = "context";
        let cases: Vec<(Box<dyn std::error::Error>, &str)> = vec![
            (
                Box::new(PathError::Absolute { field, path: "/etc".into() }),
                "context: `/etc` is absolute; give a path inside the checkout",
            ),
            (Box::new(PathError::LeavesCheckout { field, path: "../x".into() }), "context: `../x` leaves the checkout"),
            (
                Box::new(PathError::NotFound { field: "dockerfile", path: "dockerfile".into(), similar: None }),
                "dockerfile: `dockerfile` does not exist in the checkout",
            ),
            (
                Box::new(PathError::NotFound {
                    field: "dockerfile",
                    path: "dockerfile".into(),
                    similar: Some("Dockerfile".into()),
                }),
                "dockerfile: `dockerfile` does not exist in the checkout (names are case-sensitive; there is \
                 `Dockerfile`)",
            ),
            (
                Box::new(PathError::Unreadable { field, path: "a".into(), source: std::io::Error::other("denied") }),
                "context: `a`: denied",
            ),
            (
                Box::new(PathError::ThroughLink { field, path: "a".into() }),
                "context: `a` leads outside the checkout (through a symbolic link)",
            ),
            (
                Box::new(ImageError::NoCheckout { path: "/w/src".into(), source: std::io::Error::other("gone") }),
                "the checkout /w/src is not there: gone",
            ),
            (Box::new(ImageError::ContextNotADirectory("ctx".into())), "context: `ctx` is not a directory"),
            (Box::new(ImageError::DockerfileNotAFile("df".into())), "dockerfile: `df` is not a file"),
            (
                Box::new(ImageError::NoRegistry),
                "registry: the task names no `registry:` and the server has no default registry (register one \
                 with `wharf registries add` and name it, or start the server with --default-registry)",
            ),
            (
                Box::new(ImageError::UnknownRegistry { name: "r".into(), registered: vec![] }),
                "registry: `r` is not a registered registry (none is registered)",
            ),
            (
                Box::new(ImageError::UnknownRegistry { name: "r".into(), registered: vec!["a".into(), "b".into()] }),
                "registry: `r` is not a registered registry (registered: a, b)",
            ),
            (
                Box::new(ImageError::UnknownWorkspace {
                    workspace: "w".into(),
                    registry: "r".into(),
                    registered: vec![],
                }),
                "workspace: `w` is not a workspace of registry `r` (registered: none); add it with `wharf registries \
                 add-workspace r w`",
            ),
            (
                Box::new(ImageError::UnknownWorkspace {
                    workspace: "w".into(),
                    registry: "r".into(),
                    registered: vec!["a".into(), "b".into()],
                }),
                "workspace: `w` is not a workspace of registry `r` (registered: a, b); add it with `wharf registries \
                 add-workspace r w`",
            ),
            (
                Box::new(ImageError::NoBuilder),
                "`image` tasks build on the Docker Engine, or in a builder pod for pipelines on the kubernetes \
                 executor, and neither is configured here",
            ),
            (Box::new(ImageError::WriteOutputs(std::io::Error::other("full"))), "cannot write the outputs: full"),
        ];
        for (err, words) in cases {
            assert_eq!(err.to_string(), words);
        }
    }
}
