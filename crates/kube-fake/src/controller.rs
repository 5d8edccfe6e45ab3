//! The scripted controller: workload status that settles after a delay, and per-object
//! faults chosen by the annotation `kube-fake.wharf.dev/fault`.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::api::{Shared, now};
use crate::resources::Resource;

/// The annotation that picks a fault for one object.
pub const FAULT_ANNOTATION: &str = "kube-fake.wharf.dev/fault";

/// What the controller does to an object's rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Healthy: every replica updated, ready and available.
    None,
    /// Deployment: `Progressing` false with `ProgressDeadlineExceeded` (kubectl rollout status fails).
    ProgressDeadline,
    /// Replicas are updated but never ready (image-pull-backoff and crash-loop look the same here).
    NeverReady,
}

impl Fault {
    pub fn of(obj: &Value) -> Fault {
        match obj.pointer("/metadata/annotations").and_then(|a| a.get(FAULT_ANNOTATION)).and_then(Value::as_str) {
            Some("progress-deadline") => Fault::ProgressDeadline,
            Some("never-ready" | "image-pull-backoff" | "crash-loop") => Fault::NeverReady,
            _ => Fault::None,
        }
    }
}

/// The defaults a real API server fills in that `kubectl rollout status` depends on.
pub fn defaults(r: &Resource, obj: &mut Value) {
    if !r.is_workload() || !obj.get("spec").is_some_and(Value::is_object) {
        return;
    }
    let spec = &mut obj["spec"];
    match r.kind {
        "Deployment" => {
            if spec.get("replicas").is_none() {
                spec["replicas"] = json!(1);
            }
            if spec.get("progressDeadlineSeconds").is_none() {
                spec["progressDeadlineSeconds"] = json!(600);
            }
        }
        "StatefulSet" => {
            if spec.get("replicas").is_none() {
                spec["replicas"] = json!(1);
            }
            if spec.get("updateStrategy").is_none() {
                spec["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}});
            }
        }
        _ => {
            if spec.get("updateStrategy").is_none() {
                spec["updateStrategy"] =
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}});
            }
        }
    }
}

/// After the configured delay, writes the status this object's generation settles to.
pub fn schedule(shared: Arc<Shared>, r: &'static Resource, obj: &Value) {
    let generation = obj["metadata"]["generation"].as_i64().unwrap_or(0);
    if obj.pointer("/status/observedGeneration").and_then(Value::as_i64) == Some(generation) {
        return;
    }
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("").to_owned();
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_owned();
    tokio::spawn(async move {
        tokio::time::sleep(shared.rollout_delay).await;
        let Some(current) = shared.get(r, &ns, &name) else { return };
        let status = settled_status(r, &current);
        shared.set_status(r, &ns, &name, &uid, generation, status);
    });
}

fn condition(kind: &str, status: bool, reason: &str, message: String) -> Value {
    let t = now();
    json!({"type": kind, "status": if status { "True" } else { "False" }, "reason": reason, "message": message,
           "lastUpdateTime": t, "lastTransitionTime": t})
}

/// The status a workload reaches once its rollout is over (or stuck, for a fault).
pub fn settled_status(r: &Resource, obj: &Value) -> Value {
    let generation = obj["metadata"]["generation"].as_i64().unwrap_or(0);
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let replicas = obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
    let fault = Fault::of(obj);
    let ready = if fault == Fault::None { replicas } else { 0 };
    let revision = format!("{name}-{generation:x}");
    match r.kind {
        "Deployment" => {
            let rs = format!("ReplicaSet \"{name}-{generation:x}\"");
            let available = condition(
                "Available",
                ready >= replicas,
                if ready >= replicas { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                if ready >= replicas {
                    "Deployment has minimum availability.".into()
                } else {
                    "Deployment does not have minimum availability.".into()
                },
            );
            let progressing = match fault {
                Fault::None => condition(
                    "Progressing",
                    true,
                    "NewReplicaSetAvailable",
                    format!("{rs} has successfully progressed."),
                ),
                Fault::ProgressDeadline => condition(
                    "Progressing",
                    false,
                    "ProgressDeadlineExceeded",
                    format!("{rs} has timed out progressing."),
                ),
                Fault::NeverReady => {
                    condition("Progressing", true, "ReplicaSetUpdated", format!("{rs} is progressing."))
                }
            };
            let mut s = json!({"observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
                               "readyReplicas": ready, "availableReplicas": ready, "conditions": [available, progressing]});
            if ready < replicas {
                s["unavailableReplicas"] = json!(replicas - ready);
            }
            s
        }
        "StatefulSet" => json!({"observedGeneration": generation, "replicas": replicas, "readyReplicas": ready,
            "currentReplicas": replicas, "updatedReplicas": replicas, "availableReplicas": ready,
            "currentRevision": revision, "updateRevision": revision, "collisionCount": 0}),
        _ => json!({"observedGeneration": generation, "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
            "updatedNumberScheduled": 1, "numberReady": ready.min(1), "numberAvailable": ready.min(1),
            "numberMisscheduled": 0, "numberUnavailable": 1 - ready.min(1)}),
    }
}
