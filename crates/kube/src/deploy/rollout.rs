//! Waiting for a rollout: one watch on the workload and one on its pods, each event judged
//! by `status.rs`. A progress line is logged whenever kubectl's message changes; a pod of
//! the rollout stuck in `ImagePullBackOff`, `ErrImagePull` or `CrashLoopBackOff` (Argo CD's
//! degraded pod) fails the wait at once; a stop ends it.

use std::fmt::Debug;

use futures_util::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use serde::de::DeserializeOwned;
use wharf_executor::deploy::DeployError;
use wharf_executor::{LogLine, LogSink, StopReason, StopSignal};

use super::fail::Ctx;
use super::status::{self, Rollout};
use crate::Connection;

/// Seconds a watch asks the server to keep it open (kube-rs allows less than 295); then
/// the wait lists and watches again.
const WATCH_SECONDS: u32 = 290;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// A workload whose rollout the deploy waits for.
#[derive(Clone, Debug)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

/// Waits for `w` to roll out. `Ok(Some(reason))`: a stop ended the wait.
pub async fn wait(
    conn: &Connection,
    ctx: &Ctx<'_>,
    w: &Workload,
    logs: &dyn LogSink,
    stop: &mut StopSignal,
) -> Result<Option<StopReason>, DeployError> {
    match w.kind {
        WorkloadKind::Deployment => watch_rollout::<Deployment>(conn, ctx, w, logs, stop, Judge::DEPLOYMENT).await,
        WorkloadKind::StatefulSet => watch_rollout::<StatefulSet>(conn, ctx, w, logs, stop, Judge::STATEFUL_SET).await,
        WorkloadKind::DaemonSet => watch_rollout::<DaemonSet>(conn, ctx, w, logs, stop, Judge::DAEMON_SET).await,
    }
}

/// How one kind is judged: its rollout status, its pod selector, and which of its pods
/// belong to the rollout in progress.
struct Judge<K> {
    status: fn(&K) -> Rollout,
    selector: fn(&K) -> Option<LabelSelector>,
    /// The revision label value new pods carry, when the kind says (StatefulSet).
    revision: fn(&K) -> Option<String>,
    kind: &'static str,
}

impl Judge<Deployment> {
    const DEPLOYMENT: Self = Judge {
        status: status::deployment,
        selector: |d| d.spec.as_ref().map(|s| s.selector.clone()),
        revision: |_| None,
        kind: "Deployment",
    };
}

impl Judge<StatefulSet> {
    const STATEFUL_SET: Self = Judge {
        status: status::stateful_set,
        selector: |s| s.spec.as_ref().map(|s| s.selector.clone()),
        revision: |s| s.status.as_ref().and_then(|st| st.update_revision.clone()),
        kind: "StatefulSet",
    };
}

impl Judge<DaemonSet> {
    const DAEMON_SET: Self = Judge {
        status: status::daemon_set,
        selector: |d| d.spec.as_ref().map(|s| s.selector.clone()),
        revision: |_| None,
        kind: "DaemonSet",
    };
}

/// `matchLabels` and `matchExpressions` as a label selector string.
fn selector_string(s: &LabelSelector) -> String {
    let mut parts: Vec<String> = s.match_labels.iter().flatten().map(|(k, v)| format!("{k}={v}")).collect();
    for e in s.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

async fn watch_rollout<K>(
    conn: &Connection,
    ctx: &Ctx<'_>,
    w: &Workload,
    logs: &dyn LogSink,
    stop: &mut StopSignal,
    judge: Judge<K>,
) -> Result<Option<StopReason>, DeployError>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + 'static,
{
    let object = format!("{} {}/{}", judge.kind, w.namespace, w.name);
    let api: Api<K> = Api::namespaced(conn.client().clone(), &w.namespace);
    let pods: Api<Pod> = Api::namespaced(conn.client().clone(), &w.namespace);
    let mut last_line = String::new();
    loop {
        if let Some(r) = *stop.borrow_and_update() {
            return Ok(Some(r.reason));
        }
        // A fresh look, then watches from there (again whenever a watch ends).
        let current = api.get(&w.name).await.map_err(|e| ctx.api("get", &object, e))?;
        let workload_rv = current.meta().resource_version.clone().unwrap_or_default();
        if judged(ctx, &object, (judge.status)(&current), &mut last_line, logs)? {
            return Ok(None);
        }
        let selector = (judge.selector)(&current).map(|s| selector_string(&s)).unwrap_or_default();
        let mut revision = (judge.revision)(&current);
        let pod_params = ListParams::default().labels(&selector);
        let listed = pods.list(&pod_params).await.map_err(|e| ctx.api("list", &format!("the pods of {object}"), e))?;
        for pod in &listed.items {
            stuck(conn, ctx, logs, &object, &current, revision.as_deref(), pod).await?;
        }
        let pods_rv = listed.metadata.resource_version.clone().unwrap_or_default();
        let by_name = WatchParams::default().fields(&format!("metadata.name={}", w.name)).timeout(WATCH_SECONDS);
        let mut workload_events =
            api.watch(&by_name, &workload_rv).await.map_err(|e| ctx.api("watch", &object, e))?.boxed();
        let mut pod_events = pods
            .watch(&WatchParams::default().labels(&selector).timeout(WATCH_SECONDS), &pods_rv)
            .await
            .map_err(|e| ctx.api("watch", &format!("the pods of {object}"), e))?
            .boxed();
        let mut latest = current;
        // False once the engine dropped its side: nobody can ask to stop any more.
        let mut stoppable = true;
        loop {
            tokio::select! {
                biased;
                changed = stop.changed(), if stoppable => {
                    if changed.is_err() {
                        stoppable = false;
                    } else if let Some(r) = *stop.borrow_and_update() {
                        return Ok(Some(r.reason));
                    }
                }
                event = workload_events.next() => match event {
                    Some(Ok(WatchEvent::Added(obj) | WatchEvent::Modified(obj))) => {
                        revision = (judge.revision)(&obj);
                        let done = judged(ctx, &object, (judge.status)(&obj), &mut last_line, logs)?;
                        latest = obj;
                        if done {
                            return Ok(None);
                        }
                    }
                    Some(Ok(WatchEvent::Deleted(_))) => {
                        return Err(ctx.error(format!("{object} was deleted while its rollout was awaited")));
                    }
                    Some(Ok(WatchEvent::Bookmark(_))) => {}
                    // Expired, ended or broken: look again and watch from there.
                    Some(Ok(WatchEvent::Error(_)) | Err(_)) | None => break,
                },
                event = pod_events.next() => match event {
                    Some(Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod))) => {
                        stuck(conn, ctx, logs, &object, &latest, revision.as_deref(), &pod).await?;
                    }
                    Some(Ok(WatchEvent::Deleted(_) | WatchEvent::Bookmark(_))) => {}
                    Some(Ok(WatchEvent::Error(_)) | Err(_)) | None => break,
                },
            }
        }
    }
}

/// Logs kubectl's line when it changed. `Ok(true)`: the rollout is over.
fn judged(
    ctx: &Ctx<'_>,
    object: &str,
    rollout: Rollout,
    last_line: &mut String,
    logs: &dyn LogSink,
) -> Result<bool, DeployError> {
    let mut say = |line: &str| {
        if line != last_line {
            logs.line(LogLine::system(line.to_owned()));
            line.clone_into(last_line);
        }
    };
    match rollout {
        Rollout::Waiting(line) => {
            say(&line);
            Ok(false)
        }
        Rollout::Done(line) => {
            say(&line);
            Ok(true)
        }
        Rollout::NotWatchable(why) => {
            say(&format!("{object}: {why}; not waiting for it"));
            Ok(true)
        }
        Rollout::Failed(why) => Err(ctx.error(format!("{object}: {why}"))),
    }
}

/// Fails when `pod` belongs to the rollout in progress and waits for a reason that
/// waiting will not cure.
async fn stuck<K: kube::Resource>(
    conn: &Connection,
    ctx: &Ctx<'_>,
    logs: &dyn LogSink,
    object: &str,
    workload: &K,
    revision: Option<&str>,
    pod: &Pod,
) -> Result<(), DeployError> {
    let Some((container, reason, message)) = status::pod_failure(pod) else { return Ok(()) };
    if !of_this_rollout(conn, workload, revision, pod).await {
        return Ok(());
    }
    let pod_name = pod.metadata.name.as_deref().unwrap_or("?");
    // The kubelet's Events say why (the registry's answer to a pull, say), which the
    // container's waiting message ("Back-off pulling image …") does not.
    let warnings = warnings(conn, pod).await;
    for w in &warnings {
        logs.line(LogLine::system(format!("pod {pod_name}: {w}")));
    }
    // `Error: ImagePullBackOff` only repeats the reason; the one before it says why.
    let telling = warnings.iter().rev().find(|w| !w.split_once(": ").is_some_and(|(_, m)| m.starts_with("Error: ")));
    let why = telling.map(|w| format!("; the kubelet says: {w}")).unwrap_or_default();
    Err(ctx.error(format!(
        "{object}: pod {pod_name}: container {container} is waiting: {reason}: {message} (the rollout cannot \
         finish){why}"
    )))
}

/// The pod's Warning events, oldest first, as `Reason: message` (at most the last 5).
/// Best effort: a cluster that will not list them gives none.
async fn warnings(conn: &Connection, pod: &Pod) -> Vec<String> {
    let (Some(name), Some(ns)) = (pod.metadata.name.as_deref(), pod.metadata.namespace.as_deref()) else {
        return Vec::new();
    };
    let api: Api<Event> = Api::namespaced(conn.client().clone(), ns);
    let params = ListParams::default().fields(&format!("involvedObject.name={name},involvedObject.namespace={ns}"));
    let Ok(list) = api.list(&params).await else { return Vec::new() };
    let mut events: Vec<Event> = list.items.into_iter().filter(|e| e.type_.as_deref() == Some("Warning")).collect();
    events.sort_by(|a, b| a.last_timestamp.cmp(&b.last_timestamp));
    let skip = events.len().saturating_sub(5);
    events
        .into_iter()
        .skip(skip)
        .map(|e| format!("{}: {}", e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// Whether a failing pod is one of the new revision's, not an old one on its way out:
/// a StatefulSet's pods carry the update revision; a Deployment's pods belong to the
/// ReplicaSet whose revision is the Deployment's. When that cannot be told, it counts.
async fn of_this_rollout<K: kube::Resource>(
    conn: &Connection,
    workload: &K,
    revision: Option<&str>,
    pod: &Pod,
) -> bool {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    if let (Some(want), Some(got)) = (revision, labels.get("controller-revision-hash")) {
        return want == got;
    }
    const REVISION: &str = "deployment.kubernetes.io/revision";
    let Some(want) = workload.meta().annotations.as_ref().and_then(|a| a.get(REVISION)).cloned() else {
        return true;
    };
    let owner = pod.metadata.owner_references.iter().flatten().find(|o| o.kind == "ReplicaSet");
    let (Some(owner), Some(ns)) = (owner, pod.metadata.namespace.as_deref()) else { return true };
    let sets: Api<ReplicaSet> = Api::namespaced(conn.client().clone(), ns);
    match sets.get(&owner.name).await {
        Ok(rs) => rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).is_none_or(|r| *r == want),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_written_as_the_api_reads_them() {
        let s: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "web", "tier": "front"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["a", "b"]},
                                 {"key": "canary", "operator": "DoesNotExist"}]}))
        .unwrap();
        assert_eq!(selector_string(&s), "app=web,tier=front,env in (a,b),!canary");
    }
}
