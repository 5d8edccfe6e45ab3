//! What an authentic event starts: its [`Target`], the pipelines it matches
//! ([`Target::starts`], then [`matched_pipelines`] for who may see the binding), and
//! [`start_runs`], which applies the one-run-per-commit and fork policies and queues
//! the runs.

use super::{Handled, StartedRun};
use crate::AppState;
use crate::error::AppError;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use wharf_core::git::GitUrl;
use wharf_core::model::{GitEvent, Pipeline, TriggerKind};
use wharf_core::run::Cause;
use wharf_engine::GitRef;
use wharf_scm::webhook::{Delivery, Event, MergeAction, Provider, branch_matches, event_kind};
use wharf_store::PipelineRow;
use wharf_store::deliveries::Verdict;

/// What an event asks of pipelines: its trigger event type, the branch its filters
/// see, the repository, and what to check out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub kind: GitEvent,
    /// The branch matched against `branches`: the pushed branch, a merge request's
    /// target branch; `None` for a tag (tags ignore `branches`).
    pub filter_branch: Option<String>,
    /// The repository's clone addresses (for a merge request, the target's).
    pub repo_urls: Vec<String>,
    /// What the run clones: the pushed branch or tag; a merge request's source branch
    /// (same repository) or target branch (a fork's request, or once merged).
    pub git_ref: GitRef,
    /// The exact commit the run checks out: the pushed one; the request's head; the
    /// merge commit once merged (the head when the provider gives none).
    pub commit: String,
    pub sender: String,
    /// A pull/merge request from a fork, not merged yet: its runs get no secrets, and
    /// a pipeline whose tasks need secrets is not started (see [`start_runs`]).
    pub from_fork: bool,
}

impl Target {
    /// The target of an event that may start runs, or why it starts none.
    pub fn of(event: &Event) -> Result<Target, String> {
        let Some(kind) = event_kind(event) else { return Err(why_nothing(event)) };
        match event {
            Event::Push { repo_urls, branch, tag, commit, sender, .. } => {
                let git_ref = match (branch, tag) {
                    (_, Some(tag)) => GitRef::Tag(tag.clone()),
                    (Some(branch), None) => GitRef::Branch(branch.clone()),
                    (None, None) => return Err(why_nothing(event)),
                };
                Ok(Target {
                    kind,
                    filter_branch: branch.clone(),
                    repo_urls: repo_urls.clone(),
                    git_ref,
                    commit: commit.clone(),
                    sender: sender.clone(),
                    from_fork: false,
                })
            }
            Event::Merge {
                action,
                repo_urls,
                source_repo_urls,
                source_branch,
                target_branch,
                commit,
                merge_commit,
                sender,
                ..
            } => {
                // Merged code was vetted by whoever merged it; an open request from
                // another repository (or from a fork since deleted) was not.
                let from_fork = *action != MergeAction::Merged && !same_repository(repo_urls, source_repo_urls);
                let (git_ref, commit) = if *action == MergeAction::Merged {
                    (GitRef::Branch(target_branch.clone()), merge_commit.clone().unwrap_or_else(|| commit.clone()))
                } else if same_repository(repo_urls, source_repo_urls) {
                    (GitRef::Branch(source_branch.clone()), commit.clone())
                } else {
                    // A fork's branch is not in the target repository: clone the target
                    // branch and fetch the head commit by its sha (GitHub and GitLab
                    // serve a merge request's commits from the target repository).
                    (GitRef::Branch(target_branch.clone()), commit.clone())
                };
                Ok(Target {
                    kind,
                    filter_branch: Some(target_branch.clone()),
                    repo_urls: repo_urls.clone(),
                    git_ref,
                    commit,
                    sender: sender.clone(),
                    from_fork,
                })
            }
            Event::Ping | Event::Unsupported(_) => Err(why_nothing(event)),
        }
    }

    /// Whether `pipeline` (its latest version) is started by this target arriving
    /// through `binding`: its `source.repo` is the event's repository, its
    /// `source.binding` is this binding or unset, and one of its `events` triggers
    /// names the event type with a branch filter that matches (any branch when empty;
    /// tags ignore the filter).
    pub fn starts(&self, pipeline: &Pipeline, binding: &str) -> bool {
        let Some(source) = &pipeline.source else { return false };
        if source.binding.as_deref().is_some_and(|b| b != binding) {
            return false;
        }
        if !self.repo_urls.iter().any(|url| GitUrl::same_repo(&source.repo, url)) {
            return false;
        }
        pipeline.triggers.iter().any(|trigger| match &trigger.kind {
            TriggerKind::Events { events, branches } => {
                events.contains(&self.kind)
                    && match &self.filter_branch {
                        _ if self.kind == GitEvent::Tag || branches.is_empty() => true,
                        Some(branch) => branches.iter().any(|glob| branch_matches(glob, branch)),
                        None => false,
                    }
            }
            _ => false,
        })
    }

    /// The keys of the event's repository (one per address it came with), as
    /// [`events_repo`] writes them.
    fn repo_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> =
            self.repo_urls.iter().filter_map(|url| GitUrl::parse(url)).map(|u| u.key()).collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// `branch `main`` or `tag `v1``: what a run of this target checks out.
    fn ref_name(&self) -> String {
        match &self.git_ref {
            GitRef::Branch(branch) => format!("branch `{branch}`"),
            GitRef::Tag(tag) => format!("tag `{tag}`"),
        }
    }

    fn describe(&self) -> String {
        let what = match self.kind {
            GitEvent::Push => "push",
            GitEvent::Merge => "merge request",
            GitEvent::Tag => "tag",
        };
        let on = match (&self.git_ref, &self.filter_branch) {
            (GitRef::Tag(tag), _) => format!("tag `{tag}`"),
            (_, Some(branch)) => format!("branch `{branch}`"),
            (GitRef::Branch(branch), None) => format!("branch `{branch}`"),
        };
        let repo = self.repo_urls.first().map(String::as_str).unwrap_or("?");
        format!("{what} on {on} of {repo}")
    }
}

/// Why an event starts nothing, in words for the delivery's reason.
fn why_nothing(event: &Event) -> String {
    match event {
        Event::Ping => "a ping: the provider checks that the endpoint answers".into(),
        Event::Unsupported(name) => format!("the `{name}` event starts nothing"),
        Event::Push { deleted: true, branch: Some(b), .. } => format!("branch `{b}` was deleted: nothing starts"),
        Event::Push { deleted: true, tag: Some(t), .. } => format!("tag `{t}` was deleted: nothing starts"),
        Event::Push { deleted: true, .. } => "a ref was deleted: nothing starts".into(),
        Event::Push { .. } => "the pushed ref is neither a branch nor a tag".into(),
        Event::Merge { action, number, .. } => {
            format!("merge request #{number} was {}: no new code, nothing starts", action.as_str())
        }
    }
}

/// Whether two lists of clone addresses name a common repository.
fn same_repository(a: &[String], b: &[String]) -> bool {
    a.iter().any(|x| b.iter().any(|y| GitUrl::same_repo(x, y)))
}

/// How long a run an event started at a commit keeps another event for the same
/// pipeline, ref and commit from starting it again (a merged request's merge event and
/// its push arrive within seconds of each other, in either order).
pub const SAME_COMMIT_WINDOW_MS: i64 = 3_600_000;

/// Whether a pipeline that already ran for this ref and commit because of an event
/// (within [`SAME_COMMIT_WINDOW_MS`]) is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fresh {
    /// No: deliveries as they arrive (and finished after a restart).
    Only,
    /// Yes: an admin's replay asks for the runs again.
    Any,
}

/// Queues a run of every pipeline `target` starts, skipping the pipelines of
/// `already` (runs the delivery started before a restart cut it short). The runs are
/// written to the delivery as they are queued, so a restart does not start them twice.
///
/// Two policies, each noted in the delivery's reason when it keeps a pipeline from
/// starting:
/// - **one run per commit**: with [`Fresh::Only`], a pipeline that an event already
///   started at the same ref and commit (a merged request's merge event and its push;
///   a request opened on a branch just pushed) is not started again;
/// - **forks get no secrets**: a fork's open request starts its runs with
///   `fork: true` in the cause (no secrets, said in the run's log); a pipeline whose
///   tasks name secrets is not started at all.
#[allow(clippy::too_many_arguments)]
pub(super) async fn start_runs(
    state: &Arc<AppState>,
    id: i64,
    provider: Provider,
    binding: &str,
    delivery: &Delivery,
    target: &Target,
    already: &[i64],
    fresh: Fresh,
) -> Handled {
    let mut runs: Vec<StartedRun> = Vec::new();
    let mut skip: HashSet<i64> = HashSet::new();
    for run in already {
        if let Ok(row) = state.store.run(*run).await {
            skip.insert(row.summary.pipeline_id);
            runs.push(StartedRun { id: *run, number: row.summary.number, pipeline: row.pipeline });
        }
    }
    let matched = match matched_pipelines(state, target, binding).await {
        Ok(matched) => matched,
        Err(e) => {
            return Handled { verdict: Verdict::Received, reason: Some(e.to_string()), runs };
        }
    };
    let mut notes: Vec<String> = Vec::new();
    let cause = Cause::Event {
        provider: provider.as_str().to_owned(),
        delivery: delivery.id.clone(),
        sender: target.sender.clone(),
        commit: target.commit.clone(),
        fork: target.from_fork,
    };
    let startable: Vec<&PipelineRow> = matched.iter().filter(|row| !skip.contains(&row.id)).collect();
    // Checking for an earlier run and starting one happen under one lock, so that
    // two events for one commit arriving together start one run.
    let _gate = state.forges.event_gate.lock().await;
    for (i, row) in startable.iter().enumerate() {
        if !row.active {
            notes.push(format!("pipeline `{}` matches but is inactive", row.name));
            continue;
        }
        if target.from_fork {
            let needs = match state.runs.pipeline_version(row.id, row.version).await {
                Ok(model) => secrets_named(&model),
                Err(e) => {
                    notes.push(format!("pipeline `{}` could not start: {}", row.name, AppError::from(e)));
                    continue;
                }
            };
            if !needs.is_empty() {
                notes.push(format!(
                    "pipeline `{}` not started: the request comes from a fork, whose runs get no secrets, and its \
                     tasks need {}",
                    row.name,
                    needs.join(", ")
                ));
                continue;
            }
        }
        if fresh == Fresh::Only {
            match earlier_run(state, row.id, target).await {
                Ok(Some(number)) => {
                    notes.push(format!(
                        "pipeline `{}` already ran for commit {} on {} (run #{number}): not started again",
                        row.name,
                        short(&target.commit),
                        target.ref_name()
                    ));
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    notes.push(format!("pipeline `{}` could not start: {}", row.name, e));
                    continue;
                }
            }
        }
        let queued = state
            .runs
            .enqueue_at(
                row,
                row.version,
                cause.clone(),
                BTreeMap::new(),
                Some(target.commit.clone()),
                Some(target.git_ref.clone()),
                None,
            )
            .await;
        match queued {
            Ok(accepted) => {
                if target.from_fork {
                    note_in_run_log(
                        state,
                        accepted.id,
                        "started by a pull/merge request from a fork: this run gets no secrets",
                    );
                }
                runs.push(StartedRun { id: accepted.id, number: accepted.number, pipeline: row.name.clone() });
                if i + 1 < startable.len() {
                    let ids: Vec<i64> = runs.iter().map(|r| r.id).collect();
                    if let Err(e) = state.store.update_delivery(id, Verdict::Received, None, &ids).await {
                        tracing::error!(delivery = id, error = %e, "cannot record a run on its delivery");
                    }
                }
            }
            Err(e) => notes.push(format!("pipeline `{}` could not start: {}", row.name, AppError::from(e))),
        }
    }
    tracing::info!(delivery = id, runs = runs.len(), "{}", target.describe());
    let reason = if notes.is_empty() { None } else { Some(notes.join("; ")) };
    if !runs.is_empty() {
        Handled { verdict: Verdict::Started, reason, runs }
    } else if matched.is_empty() {
        Handled::ignored(format!("no pipeline has an events trigger for this {}", target.describe()))
    } else {
        Handled::ignored(reason.unwrap_or_else(|| "no pipeline started".into()))
    }
}

/// The number of a run of `pipeline_id` that an event started at `target`'s ref and
/// commit within [`SAME_COMMIT_WINDOW_MS`], if any.
async fn earlier_run(state: &AppState, pipeline_id: i64, target: &Target) -> Result<Option<i64>, AppError> {
    let since = wharf_store::now_ms() - SAME_COMMIT_WINDOW_MS;
    let (branch, tag) = match &target.git_ref {
        GitRef::Branch(branch) => (Some(branch.as_str()), None),
        GitRef::Tag(tag) => (None, Some(tag.as_str())),
    };
    Ok(state.store.event_run_at(pipeline_id, &target.commit, branch, tag, since).await?)
}

/// What a version of `pipeline` is saved with for [`matched_pipelines`]: the key of its
/// `source.repo` when one of its triggers is an events trigger, else `""` (no event
/// starts it: [`Target::starts`] needs both).
pub fn events_repo(pipeline: &Pipeline) -> String {
    let listens = pipeline.triggers.iter().any(|t| matches!(t.kind, TriggerKind::Events { .. }));
    match &pipeline.source {
        Some(source) if listens => GitUrl::parse(&source.repo).map(|u| u.key()).unwrap_or_default(),
        _ => String::new(),
    }
}

/// `stage/task: SECRET` for every secret a task of `pipeline` names.
fn secrets_named(pipeline: &Pipeline) -> Vec<String> {
    let mut named = Vec::new();
    for stage in pipeline.all_stages() {
        for task in &stage.tasks {
            for secret in &task.secrets {
                named.push(format!("`{secret}` ({}/{})", stage.name, task.name));
            }
        }
    }
    named
}

/// Appends a line to a run's own log (what the run page shows above its stages).
fn note_in_run_log(state: &AppState, run: i64, text: &str) {
    match state.logs.writer(run, wharf_store::logs::LogKey::Run) {
        Ok(mut writer) => {
            let line = wharf_executor::stored::line(jiff::Timestamp::now(), wharf_executor::Stream::System, text);
            if let Err(e) = writer.append(&line) {
                tracing::error!(run, error = %e, "cannot write to a run's log");
            }
        }
        Err(e) => tracing::error!(run, error = %e, "cannot open a run's log"),
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Every pipeline whose latest version `target` starts (see [`Target::starts`]),
/// active or not, by project and name. A pipeline is started only when its creator
/// may view `binding` (see [`crate::authz::creator_sees`]), whether or not it names
/// it: pushes to another user's repository binding never start, nor show, a pipeline
/// that points at the same repository, or names a binding of that name it could not
/// see when it was saved (one created later, or deleted and made again by another).
async fn matched_pipelines(state: &AppState, target: &Target, binding: &str) -> Result<Vec<PipelineRow>, AppError> {
    // Only the pipelines saved listening to this repository (and any saved before the
    // store knew): a delivery costs the same with ten thousand other pipelines.
    let rows = state.store.pipelines_for_events(&target.repo_keys()).await?;
    let received = state.store.binding(binding).await?;
    let mut creators: HashMap<String, bool> = HashMap::new();
    let mut matched = Vec::new();
    for row in rows {
        match state.runs.pipeline_version(row.id, row.version).await {
            Ok(model) if target.starts(&model, binding) => {}
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(pipeline = row.id, error = ?e, "cannot read a pipeline while matching a webhook");
                continue;
            }
        }
        let sees = match creators.get(&row.created_by) {
            Some(sees) => *sees,
            None => {
                let sees = crate::authz::creator_sees(&state.store, &row.created_by, &received).await?;
                creators.insert(row.created_by.clone(), sees);
                sees
            }
        };
        if sees {
            matched.push(row);
        }
    }
    Ok(matched)
}
