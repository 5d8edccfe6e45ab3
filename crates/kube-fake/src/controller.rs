//! The scripted controller: workload status that settles after a delay, and per-object
//! faults chosen by the annotation `kube-fake.wharf.dev/fault`.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::api::{Shared, now};
use crate::resources::Resource;
use crate::ssa::deep_merge;

/// The annotation that picks a fault for one object.
pub const FAULT_ANNOTATION: &str = "kube-fake.wharf.dev/fault";
/// A pod template annotation: the text its pods' logs show.
pub const LOGS_ANNOTATION: &str = "kube-fake.wharf.dev/logs";

/// What the controller does to an object's rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Healthy: every replica updated, ready and available.
    None,
    /// Deployment: `Progressing` false with `ProgressDeadlineExceeded` (kubectl rollout status fails).
    ProgressDeadline,
    /// Replicas are updated but never ready (image-pull-backoff and crash-loop look the same here).
    NeverReady,
    /// Deployment: no pods can be made (a ResourceQuota refuses them): `ReplicaFailure`
    /// `FailedCreate` with the quota's words, no pods, `Progressing` still true.
    QuotaExceeded,
}

impl Fault {
    pub fn of(obj: &Value) -> Fault {
        match obj.pointer("/metadata/annotations").and_then(|a| a.get(FAULT_ANNOTATION)).and_then(Value::as_str) {
            Some("progress-deadline") => Fault::ProgressDeadline,
            Some("never-ready" | "image-pull-backoff" | "crash-loop") => Fault::NeverReady,
            Some("quota-exceeded") => Fault::QuotaExceeded,
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
        if current["metadata"]["uid"] != uid.as_str() || current["metadata"]["generation"].as_i64() != Some(generation)
        {
            return; // replaced or changed meanwhile: the write that changed it scheduled its own settling
        }
        let status = settled_status(r, &current);
        let pods = pods(r, &current);
        shared.settle(r, &current, status, pods);
    });
}

/// After the configured delay, a new Job finishes: `Complete` with one pod succeeded, or
/// with the fault `job-failed` `Failed` (`BackoffLimitExceeded`), as the Job controller
/// writes them (Kubernetes 1.31+ sets `SuccessCriteriaMet`/`FailureTarget` first). No pods
/// are made for it.
pub fn schedule_job(shared: Arc<Shared>, r: &'static Resource, obj: &Value) {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("").to_owned();
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
    let started = now();
    tokio::spawn(async move {
        tokio::time::sleep(shared.rollout_delay).await;
        let Some(current) = shared.get(r, &ns, &name) else { return };
        let failed =
            current.pointer("/metadata/annotations").and_then(|a| a.get(FAULT_ANNOTATION)).and_then(Value::as_str)
                == Some("job-failed");
        let t = now();
        let cond = |kind: &str, reason: &str, message: &str| {
            json!({"type": kind, "status": "True", "reason": reason, "message": message,
                   "lastProbeTime": t, "lastTransitionTime": t})
        };
        let status = if failed {
            let why = "Job has reached the specified backoff limit";
            json!({"startTime": started, "failed": 1, "active": 0, "ready": 0, "terminating": 0,
                   "uncountedTerminatedPods": {},
                   "conditions": [cond("FailureTarget", "BackoffLimitExceeded", why), cond("Failed", "BackoffLimitExceeded", why)]})
        } else {
            let why = "Reached expected number of succeeded pods";
            json!({"startTime": started, "completionTime": t, "succeeded": 1, "active": 0, "ready": 0, "terminating": 0,
                   "uncountedTerminatedPods": {},
                   "conditions": [cond("SuccessCriteriaMet", "CompletionsReached", why), cond("Complete", "CompletionsReached", why)]})
        };
        shared.settle(r, &current, status, Vec::new());
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
                Fault::NeverReady | Fault::QuotaExceeded => {
                    condition("Progressing", true, "ReplicaSetUpdated", format!("{rs} is progressing."))
                }
            };
            let mut conditions = vec![available, progressing];
            let made = if fault == Fault::QuotaExceeded {
                let hash = format!("{name}-{generation:x}");
                conditions.push(condition(
                    "ReplicaFailure",
                    true,
                    "FailedCreate",
                    format!(
                        "pods \"{hash}-\" is forbidden: exceeded quota: compute-resources, requested: pods=1, used: \
                         pods=0, limited: pods=0"
                    ),
                ));
                0
            } else {
                replicas
            };
            let mut s = json!({"observedGeneration": generation, "replicas": made, "updatedReplicas": made,
                               "readyReplicas": ready, "availableReplicas": ready, "conditions": conditions});
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

/// A short stable hash (FNV-1a) for pod-template-hash style names.
fn short_hash(text: &str) -> String {
    let h = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("{:x}", h & 0xff_ffff_ffff)
}

/// The pods a workload runs once settled: made from its template, owned by it, Running and
/// ready (or, for a fault, stuck as that fault looks on a real cluster).
pub fn pods(r: &Resource, obj: &Value) -> Vec<Value> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let uid = obj["metadata"]["uid"].as_str().unwrap_or("");
    let generation = obj["metadata"]["generation"].as_i64().unwrap_or(0);
    let count = match r.kind {
        _ if Fault::of(obj) == Fault::QuotaExceeded => 0,
        "DaemonSet" => 1,
        _ => obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1).clamp(0, 100),
    };
    let hash = short_hash(&format!("{uid}/{generation}"));
    let template = obj.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let fault = Fault::of(obj);
    let containers: Vec<Value> =
        template.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
    let t = now();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            let (state, ready, restarts) = match obj.pointer("/metadata/annotations").and_then(|a| a.get(FAULT_ANNOTATION)).and_then(Value::as_str) {
                Some("image-pull-backoff") => (json!({"waiting": {"reason": "ImagePullBackOff", "message": format!("Back-off pulling image \"{}\"", c["image"].as_str().unwrap_or(""))}}), false, 0),
                Some("crash-loop") => (json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting failed container"}}), false, 5),
                _ if fault == Fault::None => (json!({"running": {"startedAt": t}}), true, 0),
                _ => (json!({"running": {"startedAt": t}}), false, 0),
            };
            json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": ready, "started": ready,
                   "restartCount": restarts, "state": state})
        })
        .collect();
    let ready = fault == Fault::None;
    let phase = if obj.pointer("/metadata/annotations").and_then(|a| a.get(FAULT_ANNOTATION)).and_then(Value::as_str)
        == Some("image-pull-backoff")
    {
        "Pending"
    } else {
        "Running"
    };
    let ready_text = if ready { "True" } else { "False" };
    (0..count)
        .map(|i| {
            let pod_name = match r.kind {
                "StatefulSet" => format!("{name}-{i}"),
                _ => format!("{name}-{hash}-{}", {
                    let h = short_hash(&format!("{hash}/{i}"));
                    h[h.len().saturating_sub(5)..].to_owned()
                }),
            };
            let mut metadata = json!({"name": pod_name, "namespace": obj["metadata"]["namespace"],
                "labels": {"pod-template-hash": hash},
                "ownerReferences": [{"apiVersion": r.api_version(), "kind": r.kind, "name": name, "uid": uid,
                                     "controller": true, "blockOwnerDeletion": true}]});
            if let Some(m) = template.get("metadata") {
                let mut from_template = m.clone();
                if let Some(map) = from_template.as_object_mut() {
                    map.retain(|k, _| k == "labels" || k == "annotations");
                }
                deep_merge(&mut metadata, &from_template);
            }
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
                "spec": template.get("spec").cloned().unwrap_or(json!({})),
                "status": {"phase": phase, "podIP": format!("10.0.0.{}", i + 10), "hostIP": "10.0.0.1", "startTime": t,
                    "conditions": [{"type": "Ready", "status": ready_text}, {"type": "ContainersReady", "status": ready_text},
                                   {"type": "PodScheduled", "status": "True"}],
                    "containerStatuses": statuses}})
        })
        .collect()
}

/// The Events a kubelet and the scheduler record for a new pod of `owner`, in the shape
/// `kubectl get events` lists (v1 Event: `involvedObject`, `reason`, `message`, `type`,
/// `count`, `source`), with the reasons Kubernetes uses: `Scheduled`, then per container
/// `Pulled`/`Created`/`Started` when healthy, `Pulling`/`Failed` (`ErrImagePull`)/`BackOff`
/// (`ImagePullBackOff`) for `image-pull-backoff`, `BackOff` "Back-off restarting failed
/// container" for `crash-loop`, and a `Unhealthy` readiness probe for `never-ready`.
pub fn pod_events(owner: &Value, pod: &Value) -> Vec<Value> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
    let node = "kube-fake-node-0";
    let t = now();
    let fault = owner.pointer("/metadata/annotations").and_then(|a| a.get(FAULT_ANNOTATION)).and_then(Value::as_str);
    let event = |kind: &str, reason: &str, message: String, field_path: Option<String>, component: &str| {
        let mut involved = json!({"apiVersion": "v1", "kind": "Pod", "name": name, "namespace": ns, "uid": uid});
        if let Some(path) = field_path {
            involved["fieldPath"] = json!(path);
        }
        json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{name}.{}", short_hash(&format!("{uid}/{reason}/{message}"))), "namespace": ns},
            "involvedObject": involved, "reason": reason, "message": message, "type": kind,
            "source": {"component": component, "host": node}, "reportingComponent": component,
            "reportingInstance": node, "firstTimestamp": t, "lastTimestamp": t, "count": 1})
    };
    let mut out = vec![event(
        "Normal",
        "Scheduled",
        format!("Successfully assigned {ns}/{name} to {node}"),
        None,
        "default-scheduler",
    )];
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
    for c in containers {
        let cname = c["name"].as_str().unwrap_or("");
        let image = c["image"].as_str().unwrap_or("");
        let path = Some(format!("spec.containers{{{cname}}}"));
        let kubelet = |kind: &str, reason: &str, message: String| event(kind, reason, message, path.clone(), "kubelet");
        match fault {
            Some("image-pull-backoff") => {
                out.push(kubelet("Normal", "Pulling", format!("Pulling image \"{image}\"")));
                out.push(kubelet(
                    "Warning",
                    "Failed",
                    format!("Failed to pull image \"{image}\": rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": not found"),
                ));
                out.push(kubelet("Warning", "Failed", "Error: ErrImagePull".into()));
                out.push(kubelet("Normal", "BackOff", format!("Back-off pulling image \"{image}\"")));
                out.push(kubelet("Warning", "Failed", "Error: ImagePullBackOff".into()));
            }
            _ => {
                out.push(kubelet(
                    "Normal",
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine"),
                ));
                out.push(kubelet("Normal", "Created", format!("Created container: {cname}")));
                out.push(kubelet("Normal", "Started", format!("Started container {cname}")));
                match fault {
                    Some("crash-loop") => out.push(kubelet(
                        "Warning",
                        "BackOff",
                        format!("Back-off restarting failed container {cname} in pod {name}_{ns}({uid})"),
                    )),
                    Some("never-ready") => out.push(kubelet(
                        "Warning",
                        "Unhealthy",
                        "Readiness probe failed: HTTP probe failed with statuscode: 503".into(),
                    )),
                    _ => {}
                }
            }
        }
    }
    out
}

/// A pod's log: its `kube-fake.wharf.dev/logs` annotation, else one line saying what started.
pub fn pod_log(pod: &Value, container: Option<&str>) -> String {
    if let Some(text) =
        pod.pointer("/metadata/annotations").and_then(|a| a.get(LOGS_ANNOTATION)).and_then(Value::as_str)
    {
        return if text.ends_with('\n') { text.to_owned() } else { format!("{text}\n") };
    }
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
    let c = containers.iter().find(|c| container.is_none_or(|n| c["name"] == n)).cloned().unwrap_or(json!({}));
    format!(
        "kube-fake: container {} started from image {}\n",
        c["name"].as_str().unwrap_or("?"),
        c["image"].as_str().unwrap_or("?")
    )
}
