//! Before the first stage: the built-in names, the parameters and variables, the
//! workspace directories and the source checkout (which takes an executor slot).

use super::stop::{ended_status, stop_requested};
use super::{RunState, StopRx};
use crate::{GitRef, Part, Workspace};
use jiff::Timestamp;
use std::sync::Arc;
use tokio::sync::watch;
use wharf_core::status::Status;
use wharf_executor::{LogLine, Stream};

impl RunState {
    /// The built-in names, the checkout and the pipeline's variables.
    pub(super) async fn prepare_workspace(self: Arc<Self>, run_rx: StopRx) -> Result<(), (Status, String)> {
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
                let value = rendered.map_err(|why| (Status::Failed, format!("parameter `{}`: {why}", p.name)))?;
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
            std::fs::create_dir_all(&dir)
                .map_err(|e| (Status::Failed, format!("cannot create the workspace {}: {e}", dir.display())))?;
        }
        if let (Some(source), Some(_), None) = (&pipeline.source, fresh_dir, &self.request.resume) {
            self.checkout(source, run_rx).await?;
        }
        for v in &pipeline.variables {
            let value =
                self.render(&v.value).map_err(|why| (Status::Failed, format!("variable `{}`: {why}", v.name)))?;
            self.scope.lock().unwrap().names.insert(v.name.to_string(), value);
        }
        Ok(())
    }

    pub(super) async fn checkout(
        self: &Arc<Self>,
        source: &wharf_core::model::Source,
        mut run_rx: StopRx,
    ) -> Result<(), (Status, String)> {
        let part = Part::Checkout;
        let repo = self.render(&source.repo).map_err(|why| (Status::Failed, format!("source.repo: {why}")))?;
        // An event's branch or tag replaces the pipeline's branch, as it is.
        let (branch, tag) = match &self.request.git_ref {
            Some(GitRef::Branch(branch)) => (Some(branch.clone()), None),
            Some(GitRef::Tag(tag)) => (None, Some(tag.clone())),
            None => match &source.branch {
                Some(b) => {
                    (Some(self.render(b).map_err(|why| (Status::Failed, format!("source.branch: {why}")))?), None)
                }
                None => (None, None),
            },
        };
        if let Some(request) = *run_rx.borrow() {
            self.set(part, Status::Skipped, None);
            return Err((ended_status(request.reason), "ended before the checkout".into()));
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
            let why = format!(
                "checkout failed: source.repo `{repo}` names a repository on the server's own disk, and only runs \
                 that may run tasks on the host may clone one; use a remote address (https://, ssh://, git://)"
            );
            self.system(part, &why);
            self.set(part, Status::Failed, Some(why.clone()));
            return Err((Status::Failed, why));
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
                        return Err((ended_status(request.reason), "ended before the checkout".into()));
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
                let (status, why) = self.run_end.lock().unwrap().clone().unwrap_or((Status::Stopped, "stopped".into()));
                self.set(part, status, Some(why.clone()));
                Err((status, why))
            }
            Err(err) => {
                let why = format!("checkout failed: {err}");
                self.system(part, &why);
                self.set(part, Status::Failed, Some(why.clone()));
                Err((Status::Failed, why))
            }
        }
    }
}
