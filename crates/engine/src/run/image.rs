//! `image` tasks: render their fields, keep the Dockerfile and the context inside the
//! checkout (after following symlinks), resolve the registry the caller handed in,
//! build and push on the [`ImageBuilder`](wharf_executor::build::ImageBuilder), and
//! record `image` and `digest` as the task's outputs, like a script's.

use super::{Part, RunState};
use crate::outputs::OutputFile;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use wharf_core::model::{ImageTask, Task};
use wharf_core::vars::Template;
use wharf_executor::build::{BuildExit, BuildSpec};
use wharf_executor::{Exit, LogSink, StopSignal};

impl RunState {
    pub(super) fn build_spec(&self, s: usize, task: &Task, image: &ImageTask) -> Result<BuildSpec, String> {
        let scope = self.scope.lock().unwrap().clone();
        let render = |field: &str, text: &str| -> Result<String, String> {
            let template = Template::parse(text).map_err(|e| format!("{field}: {}", e.message))?;
            scope.render(&template).map_err(|e| format!("{field}: {e}"))
        };
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
            .collect::<Result<Vec<_>, String>>()?;

        // Rendered names must still fit the OCI reference grammar.
        use wharf_core::reference::{check_component, check_tag};
        check_component(&name).map_err(|e| format!("image: {e}"))?;
        check_tag(&tag).map_err(|e| format!("tag: {e}"))?;
        check_component(&workspace).map_err(|e| format!("workspace: {e}"))?;

        let root = std::fs::canonicalize(&self.src)
            .map_err(|e| format!("the checkout {} is not there: {e}", self.src.display()))?;
        let context = inside(&root, &context, "context")?;
        if !context.is_dir() {
            return Err(format!("context: `{}` is not a directory", image.context));
        }
        let dockerfile = inside(&root, &dockerfile, "dockerfile")?;
        if !dockerfile.is_file() {
            return Err(format!("dockerfile: `{}` is not a file", image.dockerfile));
        }

        let registries = &self.request.registries;
        let registry = match registry.or_else(|| registries.default.clone()) {
            Some(registry) => registry,
            None => {
                return Err("registry: the task names no `registry:` and the server has no default registry \
                            (register one with `wharf registries add` and name it, or start the server with \
                            --default-registry)"
                    .to_owned());
            }
        };
        let target = registries.by_name.get(&registry).ok_or_else(|| {
            let known: Vec<&str> = registries.by_name.keys().map(String::as_str).collect();
            if known.is_empty() {
                format!("registry: `{registry}` is not a registered registry (none is registered)")
            } else {
                format!("registry: `{registry}` is not a registered registry (registered: {})", known.join(", "))
            }
        })?;
        if let Some(workspaces) = &target.workspaces
            && !workspaces.contains(&workspace)
        {
            let known = if workspaces.is_empty() { "none".to_owned() } else { workspaces.join(", ") };
            return Err(format!(
                "workspace: `{workspace}` is not a workspace of registry `{registry}` (registered: {known}); \
                 add it with `wharf registries add-workspace {registry} {workspace}`"
            ));
        }
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
        })
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
    ) -> Result<Exit, String> {
        let Some(builder) = self.builder.clone() else {
            return Err("`image` tasks need the Docker Engine, and none is configured here".to_owned());
        };
        match builder.build(spec, sink, stop).await {
            Ok(BuildExit::Built(built)) => {
                let outputs = format!("image={}\ndigest={}\n", built.image, built.digest);
                output.write(outputs.as_bytes()).map_err(|e| format!("cannot write the outputs: {e}"))?;
                Ok(Exit { code: Some(0), signal: None, stopped: None })
            }
            Ok(BuildExit::Stopped(reason)) => Ok(Exit { code: None, signal: None, stopped: Some(reason) }),
            Err(e) => {
                self.system(part, e.to_string());
                Err(e.to_string())
            }
        }
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

/// `path` (relative to the checkout `root`, already canonical) as an absolute path
/// that stays inside `root` after `..` and symlinks are resolved.
fn inside(root: &Path, path: &str, field: &str) -> Result<PathBuf, String> {
    let given = Path::new(path);
    if given.is_absolute() {
        return Err(format!("{field}: `{path}` is absolute; give a path inside the checkout"));
    }
    let mut depth = 0usize;
    for c in given.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::ParentDir if depth == 0 => {
                return Err(format!("{field}: `{path}` leaves the checkout"));
            }
            Component::ParentDir => depth -= 1,
            _ => {}
        }
    }
    let joined = root.join(given);
    let real = match std::fs::canonicalize(&joined) {
        Ok(real) => real,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found(root, given, path, field)),
        Err(e) => return Err(format!("{field}: `{path}`: {e}")),
    };
    if !real.starts_with(root) {
        return Err(format!("{field}: `{path}` leads outside the checkout (through a symbolic link)"));
    }
    Ok(real)
}

/// "does not exist", with the file that differs only in case when there is one (paths
/// are case-sensitive: `dockerfile` is not `Dockerfile`).
fn not_found(root: &Path, given: &Path, path: &str, field: &str) -> String {
    let parent = root.join(given.parent().unwrap_or(Path::new("")));
    let wanted = given.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let similar = std::fs::read_dir(&parent).ok().and_then(|entries| {
        entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.eq_ignore_ascii_case(&wanted))
    });
    match similar {
        Some(other) => {
            format!("{field}: `{path}` does not exist in the checkout (names are case-sensitive; there is `{other}`)")
        }
        None => format!("{field}: `{path}` does not exist in the checkout"),
    }
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
}
