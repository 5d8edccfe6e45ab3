//! The scheduler's part of the kubelet: where a Pod the kubelet runs may go. A Pod fits
//! when its `nodeSelector` matches the labels of a ready node and its containers' cpu and
//! memory requests fit in that node's allocatable ([`NODE_CPU`], [`NODE_MEMORY`]) less the
//! requests of the Pods the kubelet already runs; otherwise it stays `Pending` with the
//! scheduler's `FailedScheduling` words ("0/1 nodes are available: 1 Insufficient cpu.").
//! A node's `NoSchedule` and `NoExecute` taints ([`Taint`], `spec.taints`, also set with
//! `kubectl taint`) take only Pods with a toleration for each ("1 node(s) had untolerated
//! taint {key: value}"); the API server side
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

/// A node taint (`spec.taints` of every node made at start, `Options::taints`), written as
/// `kubectl taint` takes it: `KEY[=VALUE]:EFFECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

impl std::str::FromStr for Taint {
    type Err = String;

    fn from_str(text: &str) -> Result<Taint, String> {
        let bad = |why: &str| format!("taint {text:?}: {why} (expected KEY[=VALUE]:EFFECT)");
        let (kv, effect) = text.rsplit_once(':').ok_or_else(|| bad("no effect"))?;
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        if key.is_empty() {
            return Err(bad("no key"));
        }
        if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
            return Err(bad("the effect must be NoSchedule, PreferNoSchedule or NoExecute"));
        }
        Ok(Taint { key: key.to_owned(), value: value.to_owned(), effect: effect.to_owned() })
    }
}

impl Taint {
    /// As a Node's `spec.taints` holds it.
    pub fn to_json(&self) -> Value {
        let mut taint = json!({"key": self.key, "effect": self.effect});
        if !self.value.is_empty() {
            taint["value"] = json!(self.value);
        }
        taint
    }
}

/// Whether `toleration` tolerates `taint`, as the scheduler decides: an effect and a key, when
/// given, must be the taint's; `Exists` then tolerates any value, `Equal` (the default) only
/// the taint's.
fn tolerates(toleration: &Value, taint: &Value) -> bool {
    let text = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_owned();
    let (effect, key) = (text(toleration, "effect"), text(toleration, "key"));
    if (!effect.is_empty() && effect != text(taint, "effect")) || (!key.is_empty() && key != text(taint, "key")) {
        return false;
    }
    match toleration["operator"].as_str().unwrap_or("") {
        "Exists" => true,
        "Equal" | "" => text(toleration, "value") == text(taint, "value"),
        _ => false,
    }
}

/// The first of the node's taints that keep the Pod off it (`NoSchedule` and `NoExecute`;
/// `PreferNoSchedule` only steers) and that none of its tolerations tolerates.
fn untolerated<'a>(node: &'a Value, pod: &Value) -> Option<&'a Value> {
    let tolerations = pod.pointer("/spec/tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| matches!(t["effect"].as_str(), Some("NoSchedule" | "NoExecute")))
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
}

/// `Ok`: the Pod may run now, given the requests `others` of the Pods already running.
/// `Err`: the scheduler's message why it cannot. Each ready node is refused by the first of
/// the real scheduler's filters that refuses it (taints, then the node selector, then
/// resources); the message counts the nodes per reason, sorted as the scheduler sorts them.
pub fn fit(shared: &Shared, pod: &Value, others: (f64, f64)) -> Result<(), String> {
    let nodes = shared.ready_nodes();
    let n = nodes.len();
    if n == 0 {
        return Err("0/0 nodes are available: no nodes available to schedule pods.".to_owned());
    }
    let selector = pod.pointer("/spec/nodeSelector").and_then(Value::as_object).cloned().unwrap_or_default();
    let (cpu, memory) = requests(pod);
    let free_cpu = quantity(NODE_CPU).unwrap_or(0.0) - others.0;
    let free_memory = quantity(NODE_MEMORY).unwrap_or(0.0) - others.1;
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    // Nodes where evicting pods could make room, and where it could not.
    let (mut resolvable, mut unresolvable) = (0, 0);
    for node in &nodes {
        let mut why = Vec::new();
        if let Some(taint) = untolerated(node, pod) {
            why.push(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint["key"].as_str().unwrap_or(""),
                taint["value"].as_str().unwrap_or("")
            ));
        } else if !selector.iter().all(|(k, v)| node.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(v)) {
            why.push("node(s) didn't match Pod's node affinity/selector".to_owned());
        } else {
            if cpu > free_cpu + 1e-9 {
                why.push("Insufficient cpu".to_owned());
            }
            if memory > free_memory + 0.5 {
                why.push("Insufficient memory".to_owned());
            }
            if why.is_empty() {
                return Ok(());
            }
            resolvable += 1;
            for w in why {
                *reasons.entry(w).or_default() += 1;
            }
            continue;
        }
        unresolvable += 1;
        for w in why {
            *reasons.entry(w).or_default() += 1;
        }
    }
    let sorted = |counts: Vec<(usize, String)>| {
        let mut lines: Vec<String> =
            counts.into_iter().filter(|(c, _)| *c > 0).map(|(c, r)| format!("{c} {r}")).collect();
        lines.sort();
        lines.join(", ")
    };
    let why = sorted(reasons.into_iter().map(|(r, c)| (c, r)).collect());
    let preemption = sorted(vec![
        (resolvable, "No preemption victims found for incoming pod".to_owned()),
        (unresolvable, "Preemption is not helpful for scheduling".to_owned()),
    ]);
    Err(format!("0/{n} nodes are available: {why}. preemption: 0/{n} nodes are available: {preemption}."))
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

    #[test]
    fn taints_parse_as_kubectl_writes_them_and_tolerations_match_as_the_scheduler_matches() {
        let t: Taint = "dedicated=ci:NoSchedule".parse().unwrap();
        assert_eq!(t.to_json(), json!({"key": "dedicated", "value": "ci", "effect": "NoSchedule"}));
        assert_eq!("gpu:NoExecute".parse::<Taint>().unwrap().to_json(), json!({"key": "gpu", "effect": "NoExecute"}));
        assert!("gpu=a".parse::<Taint>().unwrap_err().contains("no effect"));
        assert!("gpu=a:Never".parse::<Taint>().unwrap_err().contains("the effect must be"));
        assert!("=a:NoSchedule".parse::<Taint>().unwrap_err().contains("no key"));
        let taint = t.to_json();
        for (toleration, ok) in [
            (json!({"key": "dedicated", "operator": "Equal", "value": "ci", "effect": "NoSchedule"}), true),
            (json!({"key": "dedicated", "value": "ci"}), true),
            (json!({"key": "dedicated", "operator": "Exists"}), true),
            (json!({"operator": "Exists"}), true),
            (json!({"key": "dedicated", "value": "batch"}), false),
            (json!({"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}), false),
            (json!({"key": "other", "operator": "Exists"}), false),
        ] {
            assert_eq!(tolerates(&toleration, &taint), ok, "{toleration}");
        }
        let node = json!({"spec": {"taints": [{"key": "spot", "effect": "PreferNoSchedule"}, taint]}});
        assert_eq!(untolerated(&node, &json!({"spec": {}})).map(|t| t["key"].clone()), Some(json!("dedicated")));
        let tolerant = json!({"spec": {"tolerations": [{"key": "dedicated", "operator": "Exists"}]}});
        assert_eq!(untolerated(&node, &tolerant), None);
    }
}
