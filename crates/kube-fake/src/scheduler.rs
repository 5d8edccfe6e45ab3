//! The scheduler's part of the kubelet: where a Pod the kubelet runs may go. A Pod fits
//! when its `nodeSelector` matches the labels of a ready node and its containers' cpu and
//! memory requests fit in that node's allocatable ([`NODE_CPU`], [`NODE_MEMORY`]) less the
//! requests of the Pods the kubelet already runs; otherwise it stays `Pending` with the
//! scheduler's `FailedScheduling` words ("0/1 nodes are available: 1 Insufficient cpu.").
//! Taints are none, so every toleration is accepted; the API server side
//! ([`validate_pod`]) refuses what a real one refuses: an unknown toleration operator or
//! effect, a quantity that does not parse, a request above its limit.

use serde_json::{Value, json};

use crate::api::Shared;

/// Each node's allocatable cpu, in cores.
pub const NODE_CPU: &str = "4";
/// Each node's allocatable memory.
pub const NODE_MEMORY: &str = "8Gi";

/// A quantity's value (cores, bytes), as the API server reads `500m`, `2`, `512Mi`, `1G`.
pub fn quantity(text: &str) -> Option<f64> {
    let end = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(end);
    let value: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        exp if exp.starts_with(['e', 'E']) => 10f64.powi(exp[1..].parse().ok()?),
        _ => return None,
    };
    Some(value * factor)
}

/// The API server's validation of a Pod's scheduling fields, in its words.
pub fn validate_pod(pod: &Value) -> Result<(), String> {
    let mut problems = Vec::new();
    for (i, t) in pod.pointer("/spec/tolerations").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let operator = t["operator"].as_str().unwrap_or("Equal");
        if !["Equal", "Exists"].contains(&operator) {
            problems.push(format!(
                "spec.tolerations[{i}].operator: Unsupported value: \"{operator}\": supported values: \"Equal\", \"Exists\""
            ));
        }
        if operator == "Exists" && t["value"].as_str().is_some_and(|v| !v.is_empty()) {
            problems.push(format!(
                "spec.tolerations[{i}].operator: Invalid value: \"{}\": value must be empty when `operator` is 'Exists'",
                t["value"].as_str().unwrap_or("")
            ));
        }
        if let Some(effect) = t["effect"].as_str()
            && !effect.is_empty()
            && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect)
        {
            problems.push(format!(
                "spec.tolerations[{i}].effect: Unsupported value: \"{effect}\": supported values: \"NoSchedule\", \
                 \"PreferNoSchedule\", \"NoExecute\""
            ));
        }
    }
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
    for (i, c) in containers.iter().enumerate() {
        for kind in ["requests", "limits"] {
            for (name, v) in c.pointer(&format!("/resources/{kind}")).and_then(Value::as_object).into_iter().flatten() {
                let text = v.as_str().unwrap_or("");
                if quantity(text).is_none() {
                    problems.push(format!(
                        "spec.containers[{i}].resources.{kind}[{name}]: Invalid value: \"{text}\": quantities must match \
                         the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
                    ));
                }
            }
        }
        for name in ["cpu", "memory"] {
            let get = |kind: &str| c.pointer(&format!("/resources/{kind}/{name}")).and_then(Value::as_str);
            if let (Some(req), Some(lim)) = (get("requests"), get("limits"))
                && let (Some(r), Some(l)) = (quantity(req), quantity(lim))
                && r > l
            {
                problems.push(format!(
                    "spec.containers[{i}].resources.requests: Invalid value: \"{req}\": must be less than or equal to \
                     {name} limit of {lim}"
                ));
            }
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join(", ")) }
}

/// The cpu (cores) and memory (bytes) a Pod's containers request.
pub fn requests(pod: &Value) -> (f64, f64) {
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
    let sum = |name: &str| {
        containers
            .iter()
            .filter_map(|c| c.pointer(&format!("/resources/requests/{name}")).and_then(Value::as_str))
            .filter_map(quantity)
            .sum::<f64>()
    };
    (sum("cpu"), sum("memory"))
}

/// `Ok`: the Pod may run now, given the requests `others` of the Pods already running.
/// `Err`: the scheduler's message why it cannot.
pub fn fit(shared: &Shared, pod: &Value, others: (f64, f64)) -> Result<(), String> {
    let nodes = shared.ready_nodes();
    let n = nodes.len();
    if n == 0 {
        return Err("0/0 nodes are available: no nodes available to schedule pods.".to_owned());
    }
    let selector = pod.pointer("/spec/nodeSelector").and_then(Value::as_object).cloned().unwrap_or_default();
    let selected = nodes
        .iter()
        .filter(|node| selector.iter().all(|(k, v)| node.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(v)))
        .count();
    let (cpu, memory) = requests(pod);
    let free_cpu = quantity(NODE_CPU).unwrap_or(0.0) - others.0;
    let free_memory = quantity(NODE_MEMORY).unwrap_or(0.0) - others.1;
    let mut reasons = Vec::new();
    if selected < n {
        reasons.push(format!("{} node(s) didn't match Pod's node affinity/selector", n - selected));
    }
    if selected > 0 && cpu > free_cpu + 1e-9 {
        reasons.push(format!("{selected} Insufficient cpu"));
    }
    if selected > 0 && memory > free_memory + 0.5 {
        reasons.push(format!("{selected} Insufficient memory"));
    }
    if reasons.is_empty() {
        return Ok(());
    }
    let preemption = if selected == 0 {
        format!("0/{n} nodes are available: {n} Preemption is not helpful for scheduling.")
    } else {
        format!("0/{n} nodes are available: {n} No preemption victims found for incoming pod.")
    };
    Err(format!("0/{n} nodes are available: {}. preemption: {preemption}", reasons.join(", ")))
}

/// The Pending status of a Pod the scheduler cannot place.
pub fn unschedulable_status(message: &str) -> Value {
    json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
        "reason": "Unschedulable", "message": message, "lastTransitionTime": crate::api::now()}]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity("500m"), Some(0.5));
        assert_eq!(quantity("2Gi"), Some(2.0 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(quantity("lots"), None);
    }

    #[test]
    fn validation_speaks_as_the_api_server() {
        let pod = json!({"spec": {"tolerations": [{"key": "a", "operator": "Maybe"}],
            "containers": [{"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}]}});
        let err = validate_pod(&pod).unwrap_err();
        assert!(err.contains("spec.tolerations[0].operator: Unsupported value: \"Maybe\""), "{err}");
        assert!(err.contains("must be less than or equal to cpu limit of 1"), "{err}");
        assert!(validate_pod(&json!({"spec": {"containers": [{}]}})).is_ok());
    }
}
