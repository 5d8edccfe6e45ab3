//! When a rollout is over, in `kubectl rollout status`'s own terms (its status viewers for
//! Deployments, StatefulSets and DaemonSets, same conditions, same messages), and when a
//! pod is beyond hope (Argo CD's pod health: a container waiting with `ErrImagePull`,
//! `ImagePullBackOff`, `CrashLoopBackOff` or another `Err…`/`…Error`/`…BackOff` reason).
//! Pure: the watching is in `rollout.rs`.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;

/// What one look at a workload says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// Not done; the line kubectl would print.
    Waiting(String),
    /// Done; kubectl's closing line.
    Done(String),
    /// Done, but there is nothing to wait for (kubectl: an error) — e.g. an `OnDelete`
    /// update strategy. Wharf logs the reason and goes on.
    NotWatchable(String),
    /// Failed for good; kubectl's error.
    Failed(String),
}

pub fn deployment(d: &Deployment) -> Rollout {
    let name = d.metadata.name.as_deref().unwrap_or("");
    let generation = d.metadata.generation.unwrap_or(0);
    let status = d.status.clone().unwrap_or_default();
    if generation > status.observed_generation.unwrap_or(0) {
        return Rollout::Waiting("Waiting for deployment spec update to be observed...".into());
    }
    let progressing = status.conditions.iter().flatten().find(|c| c.type_ == "Progressing");
    if let Some(c) = progressing.filter(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded")) {
        // kubectl's words, then the condition's (they name the stuck ReplicaSet).
        return Rollout::Failed(format!(
            "deployment {name:?} exceeded its progress deadline (ProgressDeadlineExceeded: {})",
            c.message.as_deref().unwrap_or("")
        ));
    }
    // Not in kubectl (it waits for the progress deadline): pods that cannot even be
    // created (a quota, an admission webhook on pods) fail at once, in the API server's words.
    if let Some(c) = status.conditions.iter().flatten().find(|c| c.type_ == "ReplicaFailure" && c.status == "True") {
        return Rollout::Failed(format!(
            "deployment {name:?} cannot create its pods ({}: {})",
            c.reason.as_deref().unwrap_or("ReplicaFailure"),
            c.message.as_deref().unwrap_or("")
        ));
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if let Some(want) = d.spec.as_ref().and_then(|s| s.replicas)
        && updated < want
    {
        return Rollout::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {updated} out of {want} new replicas have been updated..."
        ));
    }
    if replicas > updated {
        return Rollout::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
            replicas - updated
        ));
    }
    if available < updated {
        return Rollout::Waiting(format!(
            "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."
        ));
    }
    Rollout::Done(format!("deployment {name:?} successfully rolled out"))
}

pub fn stateful_set(s: &StatefulSet) -> Rollout {
    let spec = s.spec.clone().unwrap_or_default();
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    if strategy.type_.as_deref().unwrap_or("RollingUpdate") != "RollingUpdate" {
        return Rollout::NotWatchable("rollout status is only available for RollingUpdate strategy type".into());
    }
    let status = s.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0);
    if observed == 0 || s.metadata.generation.unwrap_or(0) > observed {
        return Rollout::Waiting("Waiting for statefulset spec update to be observed...".into());
    }
    let ready = status.ready_replicas.unwrap_or(0);
    if let Some(want) = spec.replicas
        && ready < want
    {
        return Rollout::Waiting(format!("Waiting for {} pods to be ready...", want - ready));
    }
    let updated = status.updated_replicas.unwrap_or(0);
    if let Some(rolling) = &strategy.rolling_update {
        if let (Some(want), Some(partition)) = (spec.replicas, rolling.partition)
            && updated < want - partition
        {
            return Rollout::Waiting(format!(
                "Waiting for partitioned roll out to finish: {updated} out of {} new pods have been updated...",
                want - partition
            ));
        }
        return Rollout::Done(format!("partitioned roll out complete: {updated} new pods have been updated..."));
    }
    let update_revision = status.update_revision.unwrap_or_default();
    let current_revision = status.current_revision.unwrap_or_default();
    if update_revision != current_revision {
        return Rollout::Waiting(format!(
            "waiting for statefulset rolling update to complete {updated} pods at revision {update_revision}..."
        ));
    }
    Rollout::Done(format!(
        "statefulset rolling update complete {} pods at revision {current_revision}...",
        status.current_replicas.unwrap_or(0)
    ))
}

pub fn daemon_set(d: &DaemonSet) -> Rollout {
    let name = d.metadata.name.as_deref().unwrap_or("");
    let strategy = d.spec.as_ref().and_then(|s| s.update_strategy.as_ref()).and_then(|u| u.type_.clone());
    if strategy.as_deref().unwrap_or("RollingUpdate") != "RollingUpdate" {
        return Rollout::NotWatchable("rollout status is only available for RollingUpdate strategy type".into());
    }
    let status = d.status.clone().unwrap_or_default();
    if d.metadata.generation.unwrap_or(0) > status.observed_generation.unwrap_or(0) {
        return Rollout::Waiting("Waiting for daemon set spec update to be observed...".into());
    }
    let desired = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    if updated < desired {
        return Rollout::Waiting(format!(
            "Waiting for daemon set {name:?} rollout to finish: {updated} out of {desired} new pods have been updated..."
        ));
    }
    let available = status.number_available.unwrap_or(0);
    if available < desired {
        return Rollout::Waiting(format!(
            "Waiting for daemon set {name:?} rollout to finish: {available} of {desired} updated pods are available..."
        ));
    }
    Rollout::Done(format!("daemon set {name:?} successfully rolled out"))
}

/// Why a pod will not become ready by waiting: `(container, reason, message)` of the
/// first container (init containers first) waiting for a reason Argo CD calls degraded.
pub fn pod_failure(pod: &Pod) -> Option<(String, String, String)> {
    let status = pod.status.as_ref()?;
    let all = status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
    for c in all {
        let Some(waiting) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else { continue };
        let reason = waiting.reason.clone().unwrap_or_default();
        if reason.starts_with("Err") || reason.ends_with("Error") || reason.ends_with("BackOff") {
            return Some((c.name.clone(), reason, waiting.message.clone().unwrap_or_default()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(v: serde_json::Value) -> Deployment {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn deployment_messages_are_kubectls() {
        let base = |status: serde_json::Value| {
            deploy(json!({"metadata": {"name": "web", "generation": 2}, "spec": {"replicas": 3,
                "selector": {}, "template": {}}, "status": status}))
        };
        assert_eq!(
            deployment(&base(json!({"observedGeneration": 1}))),
            Rollout::Waiting("Waiting for deployment spec update to be observed...".into())
        );
        assert_eq!(
            deployment(&base(json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1}))),
            Rollout::Waiting(
                "Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated...".into()
            )
        );
        assert_eq!(
            deployment(&base(json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3}))),
            Rollout::Waiting(
                "Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination...".into()
            )
        );
        assert_eq!(
            deployment(&base(
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2})
            )),
            Rollout::Waiting(
                "Waiting for deployment \"web\" rollout to finish: 2 of 3 updated replicas are available...".into()
            )
        );
        assert_eq!(
            deployment(&base(
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3})
            )),
            Rollout::Done("deployment \"web\" successfully rolled out".into())
        );
        let stuck = base(json!({"observedGeneration": 2, "conditions": [{"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"web-5d\" has timed out progressing."}]}));
        let quota = base(json!({"observedGeneration": 2, "conditions": [{"type": "ReplicaFailure", "status": "True",
            "reason": "FailedCreate", "message": "pods \"web-5d-\" is forbidden: exceeded quota: q"}]}));
        assert_eq!(
            deployment(&quota),
            Rollout::Failed(
                "deployment \"web\" cannot create its pods (FailedCreate: pods \"web-5d-\" is forbidden: exceeded \
                 quota: q)"
                    .into()
            )
        );
        assert_eq!(
            deployment(&stuck),
            Rollout::Failed(
                "deployment \"web\" exceeded its progress deadline (ProgressDeadlineExceeded: ReplicaSet \"web-5d\" has \
                 timed out progressing.)"
                    .into()
            )
        );
    }

    #[test]
    fn stateful_set_partitions_and_revisions() {
        let sts = |spec: serde_json::Value, status: serde_json::Value| -> StatefulSet {
            serde_json::from_value(json!({"metadata": {"name": "db", "generation": 1}, "spec": spec, "status": status}))
                .unwrap()
        };
        let spec = json!({"replicas": 3, "selector": {}, "serviceName": "db", "template": {}});
        assert_eq!(
            stateful_set(&sts(spec.clone(), json!({"replicas": 0}))),
            Rollout::Waiting("Waiting for statefulset spec update to be observed...".into())
        );
        assert_eq!(
            stateful_set(&sts(spec.clone(), json!({"observedGeneration": 1, "replicas": 3, "readyReplicas": 1}))),
            Rollout::Waiting("Waiting for 2 pods to be ready...".into())
        );
        let rev = json!({"observedGeneration": 1, "replicas": 3, "readyReplicas": 3, "updatedReplicas": 1,
                         "currentReplicas": 2, "currentRevision": "db-1", "updateRevision": "db-2"});
        assert_eq!(
            stateful_set(&sts(spec.clone(), rev.clone())),
            Rollout::Waiting("waiting for statefulset rolling update to complete 1 pods at revision db-2...".into())
        );
        let mut partitioned = spec.clone();
        partitioned["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 1}});
        assert_eq!(
            stateful_set(&sts(partitioned.clone(), rev)),
            Rollout::Waiting(
                "Waiting for partitioned roll out to finish: 1 out of 2 new pods have been updated...".into()
            )
        );
        let on_delete = json!({"replicas": 1, "selector": {}, "serviceName": "db", "template": {},
                               "updateStrategy": {"type": "OnDelete"}});
        assert!(matches!(stateful_set(&sts(on_delete, json!({}))), Rollout::NotWatchable(_)));
    }

    #[test]
    fn daemon_set_messages() {
        let ds: DaemonSet = serde_json::from_value(json!({"metadata": {"name": "agent", "generation": 1},
            "spec": {"selector": {}, "template": {}},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": 2, "currentNumberScheduled": 2,
                       "numberMisscheduled": 0, "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 1}}))
        .unwrap();
        assert_eq!(
            daemon_set(&ds),
            Rollout::Waiting(
                "Waiting for daemon set \"agent\" rollout to finish: 1 of 2 updated pods are available...".into()
            )
        );
    }

    #[test]
    fn pods_beyond_hope() {
        let pod = |reason: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"}, "status": {"containerStatuses": [
                {"name": "web", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"waiting": {"reason": reason, "message": "why"}}}]}}))
            .unwrap()
        };
        for bad in ["ImagePullBackOff", "ErrImagePull", "CrashLoopBackOff", "CreateContainerConfigError"] {
            assert_eq!(pod_failure(&pod(bad)), Some(("web".into(), bad.into(), "why".into())));
        }
        assert_eq!(pod_failure(&pod("ContainerCreating")), None);
    }
}
