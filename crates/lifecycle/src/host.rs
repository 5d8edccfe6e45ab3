//! Who may put tasks on the server's own machine. A host task runs with the rights of
//! the user host tasks run as, so:
//!
//! - where the server does not allow host tasks at all, every run that would put one
//!   there is refused, naming the tasks;
//! - a run a fork's pull request started gets the host only where the administrator
//!   allows it (`host_forks`), even in a trusted project;
//! - on a multi-user server (any user besides the built-in `admin`) only projects an
//!   administrator marked `trusted` run host tasks;
//! - a `source.repo` on the server's disk needs the same trust (cloning it reads the
//!   disk with the server's rights).
//!
//! The checks run when a run is accepted and again when it starts (a user added or a
//! project distrusted in between counts). Which tasks would run on the host is each
//! executor's knowledge ([`wharf_executor::Executor::runs_on_host`]).

use crate::error::Result;
use crate::{Lifecycle, RunError};
use wharf_core::model::{Pipeline, TaskKind};
use wharf_core::run::Cause;
use wharf_engine::Engine;

/// What the server decided about host tasks at start.
#[derive(Clone, Debug, Default)]
pub struct HostPolicy {
    /// Whether tasks may run on the host at all (`allow_host`).
    pub allowed: bool,
    /// Whether runs of forks' pull requests may use the host (`host_forks`).
    pub forks: bool,
    /// Host tasks cannot run on this machine: the reason, with what to do (the task
    /// user is missing, or is root).
    pub unavailable: Option<String>,
    /// The group of the unprivileged user host tasks run as (a server running as root);
    /// run directories are given to it so those tasks can pass through.
    pub task_gid: Option<u32>,
}

/// Whether the project's tasks may run on the host, and if not why.
#[derive(Clone, Debug)]
pub enum HostAccess {
    Allowed,
    Refused(String),
}

impl Lifecycle {
    /// Whether tasks of `project` may run on the host executor now (see the module).
    /// `cause`: what starts the run (`None`: a person, now); a fork's pull request gets
    /// the host only with `forks`, even in a trusted project (its code is an outsider's,
    /// which is also why it gets no secrets).
    pub async fn host_access(&self, project: &str, cause: Option<&Cause>) -> Result<HostAccess> {
        let policy = &self.0.host;
        if !policy.allowed {
            return Ok(HostAccess::Refused("this server does not run tasks on the host (allow_host = false)".into()));
        }
        if !policy.forks && cause.is_some_and(|cause| !cause.gets_secrets()) {
            return Ok(HostAccess::Refused(
                "a pull request from a fork started this run, and code from forks runs on the host only where \
                 an administrator allows it (host_forks = true)"
                    .into(),
            ));
        }
        if let Some(why) = &policy.unavailable {
            return Ok(HostAccess::Refused(why.clone()));
        }
        let store = self.store();
        if store.is_multi_user().await? {
            let trusted = match store.project(project).await {
                Ok(project) => project.trusted,
                Err(wharf_store::StoreError::NotFound(_)) => false,
                Err(e) => return Err(e.into()),
            };
            if !trusted {
                return Ok(HostAccess::Refused(format!(
                    "project `{project}` is not trusted, and on a server with several users only projects an \
                     administrator marked trusted run tasks on the host (PATCH /api/v1/projects/{project} \
                     {{\"trusted\": true}})"
                )));
            }
        }
        Ok(HostAccess::Allowed)
    }

    /// Why a run of `model` cannot start with `host` as the project's host access:
    /// tasks that would run on the host, or a `source.repo` on the server's own disk,
    /// where host access is refused. A templated `source.repo` is checked again once
    /// rendered, by the engine ([`wharf_engine::RunRequest::local_sources`]).
    pub(crate) fn host_refusal(&self, model: &Pipeline, host: &HostAccess) -> Result<()> {
        let HostAccess::Refused(why) = host else { return Ok(()) };
        if let Some(source) = &model.source
            && surely_local(&source.repo)
        {
            return Err(RunError::cannot_start(
                "source.repo",
                format!(
                    "`{}` names a repository on the server's own disk, which only runs that may run tasks on \
                     the host may clone, but {why}; use a remote address (https://, ssh://, git://)",
                    source.repo
                ),
            ));
        }
        let Ok(engine) = self.0.engines.for_model(model) else { return Ok(()) };
        let tasks = host_tasks(model, engine);
        if tasks.is_empty() {
            return Ok(());
        }
        // An executor that runs images elsewhere sends only image-less scripts here.
        let ignores_images = engine.executor().runs_on_host(Some("any/image"));
        let message = if ignores_images {
            format!("{} would run on the host executor, but {why}", tasks.join(", "))
        } else {
            format!(
                "{} name no image and would run on the host, but {why}; give them `image:` or the pipeline \
                 `default_image:` to run them in containers",
                tasks.join(", ")
            )
        };
        Err(RunError::cannot_start("executor", message))
    }
}

/// The tasks of `model` that would run on the host on `engine` (`stage/task`).
fn host_tasks(model: &Pipeline, engine: &Engine) -> Vec<String> {
    let executor = engine.executor();
    model
        .all_stages()
        .flat_map(|stage| stage.tasks.iter().map(move |task| (stage, task)))
        .filter(|(_, task)| match &task.kind {
            TaskKind::Script(s) => executor.runs_on_host(s.image.as_deref().or(model.default_image.as_deref())),
            _ => false,
        })
        .map(|(stage, task)| format!("{}/{}", stage.name, task.name))
        .collect()
}

/// Whether `repo`, as written in the pipeline, names a repository on the server's disk
/// whatever its `${…}` render to: untemplated and local, or a template starting with a
/// path or `file:`. Others (`${REPO}`) are checked by the engine once rendered.
fn surely_local(repo: &str) -> bool {
    match repo.split_once("${") {
        None => wharf_core::git::is_local_repo(repo),
        Some((fixed, _)) => fixed.starts_with('/') || fixed.get(..5).is_some_and(|s| s.eq_ignore_ascii_case("file:")),
    }
}
