//! Before the first stage: the built-in names, the parameters and variables, the
//! workspace directories and the source checkout (which takes an executor slot).

use super::stop::{ended_status, stop_requested};
use super::variables::RenderError;
use super::{RunState, StopRx};
use crate::{GitRef, Part, Workspace};
use jiff::Timestamp;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use wharf_core::status::Status;
use wharf_executor::{LogLine, StopReason, Stream};

/// Why a run ends before its first stage, as its reason says it; the run ends
/// [`status`](WorkspaceError::status).
#[derive(Debug, thiserror::Error)]
pub(super) enum WorkspaceError {
    #[error("parameter `{name}`: {source}")]
    Parameter { name: String, source: RenderError },
    #[error("variable `{name}`: {source}")]
    Variable { name: String, source: RenderError },
    #[error("cannot create the workspace {}: {source}", .path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("source.repo: {0}")]
    Repo(#[source] RenderError),
    #[error("source.branch: {0}")]
    Branch(#[source] RenderError),
    /// `source.repo` is a path or `file://` address, and the run may not read this
    /// machine's disk.
    #[error(
        "checkout failed: source.repo `{0}` names a repository on the server's own disk, and only runs that may \
         run tasks on the host may clone one; use a remote address (https://, ssh://, git://)"
    )]
    LocalRepo(String),
    #[error("checkout failed: {0}")]
    Checkout(#[source] wharf_scm::CheckoutError),
    /// A stop or the pipeline timeout came before the checkout began.
    #[error("ended before the checkout")]
    EndedBefore(StopReason),
    /// A stop or the pipeline timeout ended the checkout: the run's own reason.
    #[error("{reason}")]
    Ended { status: Status, reason: String },
}

impl WorkspaceError {
    pub(super) fn status(&self) -> Status {
        match self {
            WorkspaceError::EndedBefore(reason) => ended_status(*reason),
            WorkspaceError::Ended { status, .. } => *status,
            _ => Status::Failed,
        }
    }
}

impl RunState {
    /// The built-in names, the checkout and the pipeline's variables.
    pub(super) async fn prepare_workspace(self: Arc<Self>, run_rx: StopRx) -> Result<(), WorkspaceError> {
        let pipeline = self.request.pipeline.clone();
        {
            let started = self.record.lock().unwrap().progress.history[0].at;
            let stamp = started.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y%m%d%H%M%S").to_string();
            let mut scope = self.scope.lock().unwrap();
            let names = &mut scope.names;
            names.insert("BUILD_ID".into(), self.request.number.to_string());
            names.insert("SYS_TIMESTAMP".into(), stamp);
            names.insert("SYS_INCREMENT".into(), self.request.increment.to_string());
            names.insert("PIPELINE_NAME".into(), pipeline.name.to_string());
            names.insert("RUN_CAUSE".into(), self.request.cause.describe());
            for (k, v) in &self.request.parameters {
                names.insert(k.clone(), v.clone());
            }
            for k in ["GIT_URL", "GIT_BRANCH", "GIT_TAG", "GIT_COMMIT"] {
                names.insert(k.into(), String::new());
            }
        }
        // Parameter defaults may use built-ins known at start.
        for p in &pipeline.parameters {
            if self.request.parameters.get(p.name.as_str()) == p.default.as_ref() {
                let rendered = self.render(p.default.as_deref().unwrap_or(""));
                let value =
                    rendered.map_err(|source| WorkspaceError::Parameter { name: p.name.to_string(), source })?;
                self.scope.lock().unwrap().names.insert(p.name.to_string(), value);
            }
        }
        if let Some(resume) = &self.request.resume
            && let Some(previous) = &resume.previous.checkout
        {
            let mut scope = self.scope.lock().unwrap();
            scope.names.insert("GIT_URL".into(), previous.repo.clone());
            scope.names.insert("GIT_BRANCH".into(), previous.branch.clone().unwrap_or_default());
            scope.names.insert("GIT_TAG".into(), previous.tag.clone().unwrap_or_default());
            scope.names.insert("GIT_COMMIT".into(), previous.commit.clone().unwrap_or_default());
            drop(scope);
            if resume.reattach.is_none() && self.record.lock().unwrap().checkout.is_some() {
                let why = format!("reused the workspace of run #{}", resume.previous.number);
                self.set(Part::Checkout, Status::Skipped, Some(why));
            }
        }
        let fresh_dir = match &self.request.workspace {
            Workspace::Checkout { dir } => Some(dir.clone()),
            Workspace::Existing { .. } => None,
        };
        for dir in
            [Some(self.run_dir.join("outputs")), fresh_dir.as_ref().map(|_| self.src.clone())].into_iter().flatten()
        {
            if pipeline.source.is_some() && dir == self.src {
                continue; // git creates it
            }
            std::fs::create_dir_all(&dir).map_err(|source| WorkspaceError::CreateDir { path: dir.clone(), source })?;
        }
        if let (Some(source), Some(_), None) = (&pipeline.source, fresh_dir, &self.request.resume) {
            self.checkout(source, run_rx).await?;
        }
        for v in &pipeline.variables {
            let value = self
                .render(&v.value)
                .map_err(|source| WorkspaceError::Variable { name: v.name.to_string(), source })?;
            self.scope.lock().unwrap().names.insert(v.name.to_string(), value);
        }
        Ok(())
    }

    pub(super) async fn checkout(
        self: &Arc<Self>,
        source: &wharf_core::model::Source,
        mut run_rx: StopRx,
    ) -> Result<(), WorkspaceError> {
        let part = Part::Checkout;
        let repo = self.render(&source.repo).map_err(WorkspaceError::Repo)?;
        // An event's branch or tag replaces the pipeline's branch, as it is.
        let (branch, tag) = match &self.request.git_ref {
            Some(GitRef::Branch(branch)) => (Some(branch.clone()), None),
            Some(GitRef::Tag(tag)) => (None, Some(tag.clone())),
            None => match &source.branch {
                Some(b) => (Some(self.render(b).map_err(WorkspaceError::Branch)?), None),
                None => (None, None),
            },
        };
        if let Some(request) = *run_rx.borrow() {
            self.set(part, Status::Skipped, None);
            return Err(WorkspaceError::EndedBefore(request.reason));
        }
        {
            // The record names what is actually cloned, not the templates.
            let mut record = self.record.lock().unwrap();
            if let Some(c) = record.checkout.as_mut() {
                c.repo = repo.clone();
                c.branch = branch.clone();
                c.tag = tag.clone();
            }
        }
        // A repository on this machine's disk would be read with the engine's rights.
        if !self.request.local_sources && wharf_core::git::is_local_repo(&repo) {
            let err = WorkspaceError::LocalRepo(repo);
            self.system(part, err.to_string());
            self.set(part, Status::Failed, Some(err.to_string()));
            return Err(err);
        }
        // A checkout is work on this machine like a task: it takes an executor slot, so
        // a burst of runs clones `max_parallel_tasks` repositories at a time, not all at
        // once (measured: 2,000 webhook runs cloning together starved the server).
        let _slot = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.set(part, Status::Pending, None);
                tokio::select! {
                    biased;
                    request = stop_requested(&mut run_rx) => {
                        self.set(part, Status::Skipped, None);
                        return Err(WorkspaceError::EndedBefore(request.reason));
                    }
                    permit = self.slots.clone().acquire_owned() => permit.expect("the engine never closes its slots"),
                }
            }
        };
        self.set(part, Status::Running, None);
        let _ticking = self.run_clock.start();
        // `git clone --branch` takes a tag as well as a branch.
        let req = wharf_scm::CheckoutRequest {
            repo,
            branch: branch.or_else(|| tag.clone()),
            commit: self.request.commit.clone(),
            dest: self.src.clone(),
        };
        let (abort_tx, abort_rx) = watch::channel(false);
        let log = |text: String| {
            let line = LogLine {
                continued: false,
                at: Timestamp::now(),
                stream: Stream::System,
                text: self.masker.mask(&text),
            };
            self.observer.log(part, &line);
        };
        let checkout = wharf_scm::checkout(&req, &log, abort_rx);
        tokio::pin!(checkout);
        let result = tokio::select! {
            result = &mut checkout => result,
            _ = stop_requested(&mut run_rx) => {
                abort_tx.send_replace(true);
                (&mut checkout).await
            }
        };
        match result {
            Ok(done) => {
                // A tag is checked out on a detached HEAD: no branch.
                let branch = if tag.is_some() { None } else { done.branch };
                {
                    let mut record = self.record.lock().unwrap();
                    if let Some(c) = record.checkout.as_mut() {
                        c.commit = Some(done.commit.clone());
                        c.branch = branch.clone();
                    }
                }
                let mut scope = self.scope.lock().unwrap();
                scope.names.insert("GIT_URL".into(), req.repo.clone());
                scope.names.insert("GIT_BRANCH".into(), branch.unwrap_or_default());
                scope.names.insert("GIT_TAG".into(), tag.unwrap_or_default());
                scope.names.insert("GIT_COMMIT".into(), done.commit);
                drop(scope);
                self.set(part, Status::Succeeded, None);
                Ok(())
            }
            Err(wharf_scm::CheckoutError::Stopped) => {
                let (status, reason) =
                    self.run_end.lock().unwrap().clone().unwrap_or((Status::Stopped, "stopped".into()));
                self.set(part, status, Some(reason.clone()));
                Err(WorkspaceError::Ended { status, reason })
            }
            Err(err) => {
                let err = WorkspaceError::Checkout(err);
                self.system(part, err.to_string());
                self.set(part, Status::Failed, Some(err.to_string()));
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The words are the ones the record showed before these were types.
    #[test]
    fn workspace_errors_say_what_they_said_as_strings_and_end_the_run_as_before() {
        let render = || super::super::variables::render_in(&Default::default(), "${X}").unwrap_err();
        let cases = [
            (WorkspaceError::Parameter { name: "P".into(), source: render() }, "parameter `P`: ${X} has no value"),
            (WorkspaceError::Variable { name: "V".into(), source: render() }, "variable `V`: ${X} has no value"),
            (
                WorkspaceError::CreateDir { path: "/w".into(), source: std::io::Error::other("denied") },
                "cannot create the workspace /w: denied",
            ),
            (WorkspaceError::Repo(render()), "source.repo: ${X} has no value"),
            (WorkspaceError::Branch(render()), "source.branch: ${X} has no value"),
            (
                WorkspaceError::LocalRepo("/srv/git/app".into()),
                "checkout failed: source.repo `/srv/git/app` names a repository on the server's own disk, and only \
                 runs that may run tasks on the host may clone one; use a remote address (https://, ssh://, git://)",
            ),
            (WorkspaceError::EndedBefore(StopReason::Stopped), "ended before the checkout"),
            (WorkspaceError::Ended { status: Status::TimedOut, reason: "timed out: …".into() }, "timed out: …"),
        ];
        for (err, words) in &cases {
            assert_eq!(err.to_string(), *words);
        }
        let statuses: Vec<Status> = cases.iter().map(|(err, _)| err.status()).collect();
        use Status::{Failed, Stopped, TimedOut};
        assert_eq!(statuses, [Failed, Failed, Failed, Failed, Failed, Failed, Stopped, TimedOut]);
        assert_eq!(WorkspaceError::EndedBefore(StopReason::TimedOut).status(), TimedOut);
    }
}
