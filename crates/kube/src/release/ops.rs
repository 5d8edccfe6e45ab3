//! Install or upgrade, rollback and uninstall: the release's Secrets written as Helm writes
//! them around the same steps Helm takes (module doc in `mod.rs`).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};
use wharf_executor::deploy::{Applied, DeployError};
use wharf_executor::{LogLine, LogSink, StopReason, StopSignal};

use super::hooks::{self, HELM_MANAGER};
use super::record::{ChartRecord, HookRecord, Info, Release, Status, now};
use super::store;
use crate::Connection;
use crate::deploy::Ctx;
use crate::deploy::apply;
use crate::deploy::manifests::{self, Manifest};
use crate::deploy::rollout;

/// Revisions kept per release, as Helm's default `--history-max 10`: after an upgrade or
/// rollback the oldest beyond it are deleted.
pub const HISTORY_MAX: usize = 10;

/// A rendered chart to install as a release (or to upgrade it to).
#[derive(Clone, Debug)]
pub struct ReleaseRequest {
    pub release: String,
    /// The chart as the release record keeps it.
    pub chart: ChartRecord,
    /// The user's values (Helm's `config`).
    pub config: Map<String, Value>,
    /// Every non-hook document, as Helm stores them (`---\n# Source: …\n…`).
    pub manifest: String,
    pub hooks: Vec<HookRecord>,
    pub notes: String,
    /// The chart's `crds/` documents (`---`-separated): applied before anything else on an
    /// install, never on an upgrade, and not part of the release (as Helm).
    pub crds: String,
    /// `registry/workspace/chart` the chart was pulled from (see [`store::source`]).
    pub source: Option<String>,
}

/// What an operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Install,
    Upgrade,
    Rollback { to: u32 },
    Uninstall,
}

/// The end of an operation that did not fail.
#[derive(Debug)]
pub struct ReleaseOutcome {
    pub operation: Operation,
    /// The revision written (for an uninstall: the last one, now gone).
    pub release: Release,
    /// Objects applied (or, for an uninstall, deleted), in that order.
    pub applied: Vec<Applied>,
    /// A stop ended it; the revision is marked `failed`.
    pub stopped: Option<StopReason>,
}

/// Helm's rule for release names: a DNS subdomain of at most 53 characters.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !p.starts_with('-')
            && !p.ends_with('-')
    };
    if name.is_empty() || name.len() > 53 || !name.split('.').all(ok_part) {
        return Err(format!(
            "release name {name:?} is invalid: lower-case letters, digits, '-' and '.', starting and ending with a \
             letter or digit, at most 53 characters (Helm's rule)"
        ));
    }
    Ok(())
}

/// Marks every object as Helm does, so Helm accepts it as this release's.
fn own(object: &mut Value, release: &str, namespace: &str) {
    let meta = &mut object["metadata"];
    if !meta.get("labels").is_some_and(Value::is_object) {
        meta["labels"] = json!({});
    }
    meta["labels"]["app.kubernetes.io/managed-by"] = json!("Helm");
    if !meta.get("annotations").is_some_and(Value::is_object) {
        meta["annotations"] = json!({});
    }
    meta["annotations"]["meta.helm.sh/release-name"] = json!(release);
    meta["annotations"]["meta.helm.sh/release-namespace"] = json!(namespace);
}

fn keep(m: &Manifest) -> bool {
    m.object.pointer("/metadata/annotations/helm.sh~1resource-policy").and_then(Value::as_str) == Some("keep")
}

fn parse(ctx: &Ctx<'_>, what: &str, text: &str) -> Result<Vec<Manifest>, DeployError> {
    manifests::parse(text).map_err(|e| ctx.error(format!("{what}: {e}")))
}

/// Deletes the objects of `objects` not in `except` (by group, kind, namespace, name), in
/// reverse order, sparing those annotated `helm.sh/resource-policy: keep`.
async fn delete_objects(
    conn: &Connection,
    ctx: &Ctx<'_>,
    what: &str,
    objects: Vec<Manifest>,
    except: &BTreeSet<(String, String, Option<String>, String)>,
    logs: &dyn LogSink,
) -> Result<Vec<Applied>, DeployError> {
    let objects: Vec<Manifest> = objects.into_iter().filter(|m| !keep(m)).collect();
    if objects.is_empty() {
        return Ok(Vec::new());
    }
    let plan = apply::plan(conn, ctx, what, objects).await?;
    let mut gone = Vec::new();
    for i in (0..plan.len()).rev() {
        let id = plan.identity(i);
        if except.contains(&id) {
            continue;
        }
        if plan.delete(conn, ctx, i).await? {
            logs.line(LogLine::system(format!("deleted {}", plan.object(i))));
            gone.push(Applied { kind: id.1, namespace: id.2, name: id.3, resource_version: String::new() });
        }
    }
    Ok(gone)
}

/// Installs the release, or upgrades it when it has a revision that is not uninstalled.
pub async fn install_or_upgrade(
    conn: &Connection,
    ctx: &Ctx<'_>,
    req: ReleaseRequest,
    logs: &dyn LogSink,
    stop: &mut StopSignal,
) -> Result<ReleaseOutcome, DeployError> {
    check_name(&req.release).map_err(|e| ctx.error(e))?;
    let history = store::history(conn, ctx, &req.release).await?;
    refuse_pending(ctx, &req.release, &history)?;
    let last = history.last();
    let live = history.iter().any(|r| r.info.status != Status::Uninstalled);
    let previous = history.iter().rev().find(|r| r.info.status == Status::Deployed).or(last).filter(|_| live);
    let (operation, status, description) = if previous.is_some() {
        (Operation::Upgrade, Status::PendingUpgrade, "Preparing upgrade")
    } else {
        (Operation::Install, Status::PendingInstall, "Initial install underway")
    };
    let t = now();
    let first = history.first().filter(|_| live).map_or(t.clone(), |r| r.info.first_deployed.clone());
    let release = Release {
        name: req.release.clone(),
        info: Info {
            first_deployed: first,
            last_deployed: t,
            deleted: None,
            description: description.into(),
            status,
            notes: req.notes,
            extra: Map::new(),
        },
        chart: req.chart,
        config: req.config,
        manifest: req.manifest,
        hooks: req.hooks,
        version: last.map_or(1, |r| r.version + 1),
        namespace: ctx.namespace.to_owned(),
        extra: Map::from_iter([("apply_method".to_owned(), json!("ssa"))]),
    };
    if operation == Operation::Install && !req.crds.trim().is_empty() {
        let crds = parse(ctx, "the chart's crds/", &req.crds)?;
        let plan = apply::plan(conn, ctx, "the chart's crds/", crds).await?;
        for i in 0..plan.len() {
            plan.apply_as(conn, ctx, i, logs, HELM_MANAGER).await?;
        }
    }
    let previous_manifest = previous.map(|r| r.manifest.clone());
    perform(conn, ctx, release, operation, previous_manifest, &history, req.source.as_deref(), logs, stop).await
}

/// A new revision made from revision `to`'s chart, values, manifest and hooks.
pub async fn rollback(
    conn: &Connection,
    ctx: &Ctx<'_>,
    name: &str,
    to: u32,
    logs: &dyn LogSink,
    stop: &mut StopSignal,
) -> Result<ReleaseOutcome, DeployError> {
    let history = store::history(conn, ctx, name).await?;
    let Some(last) = history.last() else {
        return Err(ctx.error(format!("release `{name}` not found")));
    };
    refuse_pending(ctx, name, &history)?;
    let Some(target) = history.iter().find(|r| r.version == to) else {
        let have: Vec<String> = history.iter().map(|r| r.version.to_string()).collect();
        return Err(ctx.error(format!("release `{name}` has no revision {to} (it has {})", have.join(", "))));
    };
    let previous = history.iter().rev().find(|r| r.info.status == Status::Deployed).unwrap_or(last);
    let mut release = target.clone();
    release.version = last.version + 1;
    release.info = Info {
        first_deployed: history[0].info.first_deployed.clone(),
        last_deployed: now(),
        deleted: None,
        description: format!("Rollback to {to}"),
        status: Status::PendingRollback,
        notes: target.info.notes.clone(),
        extra: Map::new(),
    };
    for h in &mut release.hooks {
        h.last_run = Default::default();
    }
    let source = store::source(conn, ctx, name).await?;
    let previous_manifest = Some(previous.manifest.clone());
    perform(conn, ctx, release, Operation::Rollback { to }, previous_manifest, &history, source.as_deref(), logs, stop)
        .await
}

fn refuse_pending(ctx: &Ctx<'_>, name: &str, history: &[Release]) -> Result<(), DeployError> {
    match history.last() {
        Some(r) if r.info.status.is_pending() => Err(ctx.error(format!(
            "release `{name}`: another operation is in progress (revision {} is {}); wait for it, or roll back",
            r.version, r.info.status
        ))),
        _ => Ok(()),
    }
}

/// The steps shared by install, upgrade and rollback, the revision already made.
#[allow(clippy::too_many_arguments)]
async fn perform(
    conn: &Connection,
    ctx: &Ctx<'_>,
    mut release: Release,
    operation: Operation,
    previous_manifest: Option<String>,
    history: &[Release],
    source: Option<&str>,
    logs: &dyn LogSink,
    stop: &mut StopSignal,
) -> Result<ReleaseOutcome, DeployError> {
    let (pre, post, done) = match operation {
        Operation::Install => ("pre-install", "post-install", "Install complete".to_owned()),
        Operation::Upgrade => ("pre-upgrade", "post-upgrade", "Upgrade complete".to_owned()),
        Operation::Rollback { to } => ("pre-rollback", "post-rollback", format!("Rollback to {to}")),
        Operation::Uninstall => unreachable!("perform is not used for uninstalls"),
    };
    // Checked before the revision is written: a chart whose objects are wrong leaves no trace.
    let mut objects = parse(ctx, "the rendered manifest", &release.manifest)?;
    for m in &mut objects {
        own(&mut m.object, &release.name, ctx.namespace);
    }
    let what = format!("release `{}` revision {}", release.name, release.version);
    let plan = apply::plan(conn, ctx, &what, objects).await?;
    logs.line(LogLine::system(format!(
        "{}: {what} of chart {}-{}, {} object(s), {} hook(s)",
        match operation {
            Operation::Install => "install",
            Operation::Upgrade => "upgrade",
            _ => "rollback",
        },
        release.chart.name(),
        release.chart.version(),
        plan.len(),
        release.hooks.len()
    )));
    // Helm refuses to take another release's objects; so does Wharf (objects of no
    // release are adopted, as `helm install --take-ownership` would).
    for i in 0..plan.len() {
        let Some(existing) = plan.get(conn, ctx, i).await? else { continue };
        let annotations = existing.metadata.annotations.unwrap_or_default();
        let owner = (annotations.get("meta.helm.sh/release-name"), annotations.get("meta.helm.sh/release-namespace"));
        if let (Some(name), ns) = owner
            && (*name != release.name || ns.is_some_and(|ns| ns != ctx.namespace))
        {
            return Err(ctx.error(format!(
                "{} belongs to release `{name}` (namespace `{}`), not to `{}`: Helm's annotations \
                 meta.helm.sh/release-name and …/release-namespace say so; uninstall that release or rename the object",
                plan.object(i),
                ns.map_or("?", String::as_str),
                release.name
            )));
        }
    }
    store::create(conn, ctx, &release, source).await?;
    let steps = async {
        if let Some(r) = hooks::run(conn, ctx, &mut release.hooks, pre, logs, stop).await? {
            return Ok((Vec::new(), Some(r)));
        }
        let mut applied = Vec::with_capacity(plan.len());
        let mut workloads = Vec::new();
        let mut now_there = BTreeSet::new();
        for i in 0..plan.len() {
            if let Some(r) = *stop.borrow_and_update() {
                return Ok((applied, Some(r.reason)));
            }
            let (a, w) = plan.apply_as(conn, ctx, i, logs, HELM_MANAGER).await?;
            applied.push(a);
            workloads.extend(w);
            now_there.insert(plan.identity(i));
        }
        if let Some(old) = &previous_manifest {
            let old = parse(ctx, "the previous revision's manifest", old)?;
            delete_objects(conn, ctx, "the previous revision", old, &now_there, logs).await?;
        }
        for w in &workloads {
            if let Some(r) = rollout::wait(conn, ctx, w, logs, stop).await? {
                return Ok((applied, Some(r)));
            }
        }
        if let Some(r) = hooks::run(conn, ctx, &mut release.hooks, post, logs, stop).await? {
            return Ok((applied, Some(r)));
        }
        Ok::<_, DeployError>((applied, None))
    }
    .await;
    match steps {
        Ok((applied, None)) => {
            for old in history.iter().filter(|r| r.info.status == Status::Deployed) {
                let mut old = old.clone();
                old.info.status = Status::Superseded;
                store::update(conn, ctx, &old).await?;
            }
            release.info.status = Status::Deployed;
            release.info.description = done;
            store::update(conn, ctx, &release).await?;
            // Helm's default `--history-max 10`: the oldest revisions go.
            let excess = (history.len() + 1).saturating_sub(HISTORY_MAX);
            store::delete_all(conn, ctx, &history[..excess.min(history.len())]).await?;
            logs.line(LogLine::system(format!("{what} deployed")));
            Ok(ReleaseOutcome { operation, release, applied, stopped: None })
        }
        Ok((applied, Some(reason))) => {
            release.info.status = Status::Failed;
            release.info.description = format!("{} \"{}\" failed: {reason}", verb(operation), release.name);
            store::update(conn, ctx, &release).await?;
            logs.line(LogLine::system(format!("{what}: {reason}; marked failed, what was applied stays applied")));
            Ok(ReleaseOutcome { operation, release, applied, stopped: Some(reason) })
        }
        Err(e) => {
            release.info.status = Status::Failed;
            release.info.description = format!("{} \"{}\" failed: {e}", verb(operation), release.name);
            if let Err(also) = store::update(conn, ctx, &release).await {
                return Err(DeployError(format!("{e} (and marking the revision failed: {also})")));
            }
            Err(e)
        }
    }
}

fn verb(operation: Operation) -> &'static str {
    match operation {
        Operation::Install => "Release",
        Operation::Upgrade => "Upgrade",
        Operation::Rollback { .. } => "Rollback",
        Operation::Uninstall => "Uninstallation",
    }
}

/// Runs `pre-delete` hooks, deletes the release's objects, runs `post-delete` hooks and
/// deletes every revision (Helm's default, without `--keep-history`).
pub async fn uninstall(
    conn: &Connection,
    ctx: &Ctx<'_>,
    name: &str,
    logs: &dyn LogSink,
    stop: &mut StopSignal,
) -> Result<ReleaseOutcome, DeployError> {
    let history = store::history(conn, ctx, name).await?;
    let Some(last) = history.last() else {
        return Err(ctx.error(format!("release `{name}` not found")));
    };
    let mut release = last.clone();
    release.info.status = Status::Uninstalling;
    release.info.description = "Deletion in progress (or silently failed)".into();
    store::update(conn, ctx, &release).await?;
    if let Some(r) = hooks::run(conn, ctx, &mut release.hooks, "pre-delete", logs, stop).await? {
        return Ok(ReleaseOutcome { operation: Operation::Uninstall, release, applied: Vec::new(), stopped: Some(r) });
    }
    let objects = parse(ctx, "the release's manifest", &release.manifest)?;
    let deleted = delete_objects(conn, ctx, &format!("release `{name}`"), objects, &BTreeSet::new(), logs).await?;
    if let Some(r) = hooks::run(conn, ctx, &mut release.hooks, "post-delete", logs, stop).await? {
        return Ok(ReleaseOutcome { operation: Operation::Uninstall, release, applied: deleted, stopped: Some(r) });
    }
    store::delete_all(conn, ctx, &history).await?;
    release.info.status = Status::Uninstalled;
    release.info.description = "Uninstallation complete".into();
    release.info.deleted = Some(now());
    logs.line(LogLine::system(format!("release `{name}` uninstalled: {} object(s) deleted", deleted.len())));
    Ok(ReleaseOutcome { operation: Operation::Uninstall, release, applied: deleted, stopped: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_names_follow_helms_rule() {
        assert!(check_name("web").is_ok());
        assert!(check_name("my-app.v2").is_ok());
        for bad in ["", "Web", "-web", "web-", "a_b", &"a".repeat(54)] {
            assert!(check_name(bad).unwrap_err().contains("Helm's rule"), "{bad}");
        }
    }

    #[test]
    fn objects_are_marked_as_helm_marks_them() {
        let mut obj = json!({"metadata": {"name": "x", "labels": {"app": "a"}}});
        own(&mut obj, "web", "shop");
        assert_eq!(obj["metadata"]["labels"], json!({"app": "a", "app.kubernetes.io/managed-by": "Helm"}));
        assert_eq!(
            obj["metadata"]["annotations"],
            json!({"meta.helm.sh/release-name": "web", "meta.helm.sh/release-namespace": "shop"})
        );
    }
}
