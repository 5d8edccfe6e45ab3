//! How a task's pod is scheduled on the kubernetes executor: `resources`,
//! `node_selector`, `tolerations` and `service_account`, written on the pipeline and on a
//! `script` task and stored as a cluster's defaults. The task's own settings win over the
//! pipeline's, which win over the cluster's ([`PodSettings::over`]). Other executors
//! ignore them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSettings {
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// Labels a node must carry to run the pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// The pod's service account in the pipeline's namespace; its token is mounted only
    /// when one is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// Requests (what the scheduler reserves) and limits (what the container may use).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Quantities::is_empty")]
    pub requests: Quantities,
    #[serde(default, skip_serializing_if = "Quantities::is_empty")]
    pub limits: Quantities,
}

/// Kubernetes quantities: `cpu` as `500m`, `2`, `0.5`; `memory` as `512Mi`, `1G`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quantities {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// One toleration of a node taint, as Kubernetes writes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toleration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Equal` (the default) or `Exists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`; none: every effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
}

pub const TOLERATION_OPERATORS: [&str; 2] = ["Equal", "Exists"];
pub const TAINT_EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

impl Quantities {
    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none()
    }

    fn over(&self, base: &Quantities) -> Quantities {
        Quantities {
            cpu: self.cpu.clone().or_else(|| base.cpu.clone()),
            memory: self.memory.clone().or_else(|| base.memory.clone()),
        }
    }
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.limits.is_empty()
    }
}

impl PodSettings {
    pub fn is_empty(&self) -> bool {
        self == &PodSettings::default()
    }

    /// These settings over `base`: each quantity and the service account from here when
    /// set, else from `base`; node selector labels merged (these win on the same key);
    /// tolerations of both, `base`'s first, without repeats.
    pub fn over(&self, base: &PodSettings) -> PodSettings {
        let mut node_selector = base.node_selector.clone();
        node_selector.extend(self.node_selector.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut tolerations = base.tolerations.clone();
        for t in &self.tolerations {
            if !tolerations.contains(t) {
                tolerations.push(t.clone());
            }
        }
        PodSettings {
            resources: Resources {
                requests: self.resources.requests.over(&base.resources.requests),
                limits: self.resources.limits.over(&base.resources.limits),
            },
            node_selector,
            tolerations,
            service_account: self.service_account.clone().or_else(|| base.service_account.clone()),
        }
    }
}

/// A registered cluster's settings for the kubernetes executor, stored with the cluster:
/// the defaults of its task pods (under the pipeline's and the task's own), how long a pod
/// may stay `Pending`, and how the run's workspace reaches the pods.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettings {
    #[serde(default, skip_serializing_if = "PodSettings::is_empty")]
    pub pod: PodSettings,
    /// `None`: the executor's default (10 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_limit: Option<crate::duration::Duration>,
    #[serde(default)]
    pub workspace: WorkspaceSettings,
}

/// How the run's checkout reaches its task pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkspaceMode {
    /// The server's run directory as a `hostPath` volume: only where the server's
    /// filesystem is the node's (a one-node cluster the server shares). The fastest.
    #[default]
    HostPath,
    /// One PersistentVolumeClaim per run, which every task pod of the run mounts: any
    /// cluster, any number of nodes.
    Claim,
}

impl WorkspaceMode {
    pub const ALL: [WorkspaceMode; 2] = [WorkspaceMode::HostPath, WorkspaceMode::Claim];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkspaceMode::HostPath => "host-path",
            WorkspaceMode::Claim => "claim",
        }
    }

    pub fn parse(text: &str) -> Option<WorkspaceMode> {
        WorkspaceMode::ALL.into_iter().find(|m| m.as_str() == text)
    }
}

/// The size of a run's volume claim when the cluster names none.
pub const DEFAULT_CLAIM_SIZE: &str = "1Gi";

/// The workspace of a cluster's runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceSettings {
    #[serde(default)]
    pub mode: WorkspaceMode,
    /// The claim's StorageClass; `None`: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// The claim's requested size (a quantity, `1Gi` when `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
}

impl WorkspaceSettings {
    /// The claim's size.
    pub fn size(&self) -> &str {
        self.size.as_deref().unwrap_or(DEFAULT_CLAIM_SIZE)
    }
}

impl ClusterSettings {
    /// Every problem of these settings as `(field path, what is wrong)`, the paths as the
    /// API writes the fields (`resources.requests.cpu`, `tolerations[0].effect`,
    /// `workspace.size`). Empty: valid.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = self.pod.problems();
        if self.pending_limit.is_some_and(|d| d.is_zero()) {
            out.push(("pending_limit".into(), "a pending limit must be more than 0s (e.g. `10m`)".into()));
        }
        let w = &self.workspace;
        if let Some(class) = &w.storage_class
            && !is_dns_subdomain(class)
        {
            out.push((
                "workspace.storage_class".into(),
                format!(
                    "`{}` is not a StorageClass name: lowercase letters, digits, `-` and `.`, starting and ending \
                     with a letter or digit",
                    shown(class)
                ),
            ));
        }
        if let Some(size) = &w.size {
            match quantity(size) {
                Ok(v) if v >= 1.0 => {}
                Ok(_) => {
                    out.push(("workspace.size".into(), format!("`{size}` is too small for a volume (e.g. `1Gi`)")))
                }
                Err(why) => out.push(("workspace.size".into(), why)),
            }
        }
        out
    }
}

impl PodSettings {
    /// Every problem of these settings as `(field path, what is wrong)`; the same rules
    /// the pipeline's `resources`, `node_selector`, `tolerations` and `service_account`
    /// are checked with.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let r = &self.resources;
        for (kind, q) in [("requests", &r.requests), ("limits", &r.limits)] {
            for (name, value) in [("cpu", &q.cpu), ("memory", &q.memory)] {
                if let Some(v) = value
                    && let Err(why) = quantity(v)
                {
                    out.push((format!("resources.{kind}.{name}"), why));
                }
            }
        }
        for (name, req, lim) in
            [("cpu", &r.requests.cpu, &r.limits.cpu), ("memory", &r.requests.memory, &r.limits.memory)]
        {
            if let (Some(req), Some(lim)) = (req, lim)
                && let (Ok(a), Ok(b)) = (quantity(req), quantity(lim))
                && a > b
            {
                out.push((
                    format!("resources.requests.{name}"),
                    format!("the {name} request `{req}` is more than its limit `{lim}`"),
                ));
            }
        }
        for (key, value) in &self.node_selector {
            if let Err(why) = check_label_key(key).and_then(|()| check_label_value(value)) {
                out.push((format!("node_selector.{}", shown(key)), why));
            }
        }
        for (i, t) in self.tolerations.iter().enumerate() {
            let at = |field: &str| format!("tolerations[{i}]{field}");
            if let Some(k) = &t.key
                && let Err(why) = check_label_key(k)
            {
                out.push((at(".key"), why));
            }
            if let Some(op) = &t.operator
                && !TOLERATION_OPERATORS.contains(&op.as_str())
            {
                out.push((at(".operator"), format!("`{}` is not one of: Equal, Exists", shown(op))));
            }
            if let Some(effect) = &t.effect
                && !TAINT_EFFECTS.contains(&effect.as_str())
            {
                out.push((
                    at(".effect"),
                    format!("`{}` is not one of: NoSchedule, PreferNoSchedule, NoExecute", shown(effect)),
                ));
            }
            let exists = t.operator.as_deref() == Some("Exists");
            if exists && t.value.is_some() {
                out.push((at(""), "a toleration with `operator: Exists` takes no `value`".into()));
            }
            if t.key.is_none() && !exists {
                out.push((at(""), "a toleration without `key` needs `operator: Exists`".into()));
            }
            if let Some(v) = &t.value
                && let Err(why) = check_label_value(v)
            {
                out.push((at(".value"), why));
            }
        }
        if let Some(account) = &self.service_account
            && !is_dns_subdomain(account)
        {
            out.push((
                "service_account".into(),
                format!(
                    "`{}` is not a service account name: lowercase letters, digits, `-` and `.`, starting and \
                     ending with a letter or digit",
                    shown(account)
                ),
            ));
        }
        out
    }
}

/// A text for a message: at most 64 characters of it.
fn shown(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// A quantity's value (cores for cpu, bytes for memory), or why it is not one: a number
/// with an optional suffix `m` (milli), `k M G T P E`, `Ki Mi Gi Ti Pi Ei` or an
/// exponent (`1e3`), as Kubernetes reads it.
pub fn quantity(text: &str) -> Result<f64, String> {
    if text.len() > MAX_QUANTITY_CHARS {
        return Err(format!(
            "a quantity of {} characters is not one Kubernetes takes (at most {MAX_QUANTITY_CHARS}, e.g. `500m` or `512Mi`)",
            text.len()
        ));
    }
    let bad =
        || format!("`{text}` is not a Kubernetes quantity (e.g. `500m` or `2` for cpu, `512Mi` or `1G` for memory)");
    let digits_end = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..].parse().map_err(|_| bad())?;
            if !(-18..=18).contains(&e) {
                return Err(bad());
            }
            10f64.powi(e)
        }
        _ => return Err(bad()),
    };
    let value = value * factor;
    // Kubernetes keeps a quantity's value in a 64-bit integer.
    if !value.is_finite() || value > i64::MAX as f64 {
        return Err(format!("`{text}` is larger than any quantity Kubernetes takes"));
    }
    Ok(value)
}

/// The longest quantity read: Kubernetes' own are a few characters; a longer text is a
/// mistake, and is not copied whole into the message.
const MAX_QUANTITY_CHARS: usize = 40;

/// Why `key` cannot be a label key (an optional DNS prefix and `/`, then a name of at
/// most 63 characters).
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || !is_dns_subdomain(p))
    {
        return Err(format!("`{key}` is not a label key: its prefix before `/` must be a DNS subdomain"));
    }
    if name.is_empty() || check_label_value(name).is_err() {
        return Err(format!(
            "`{key}` is not a label key: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a \
             letter or digit (optionally after a `prefix/`)"
        ));
    }
    Ok(())
}

/// Why `value` cannot be a label value (empty, or at most 63 of `[A-Za-z0-9_.-]` starting
/// and ending alphanumeric).
pub fn check_label_value(value: &str) -> Result<(), String> {
    let ok = value.is_empty()
        || (value.len() <= 63
            && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{value}` is not a label value: at most 63 letters, digits, `-`, `_` or `.`, starting and ending with \
             a letter or digit"
        ))
    }
}

/// A DNS-1123 subdomain (a service account's name): lowercase letters, digits, `-` and
/// `.`, at most 253, alphanumeric at both ends.
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_too_long_or_too_large_are_refused_without_echoing_them() {
        let long = "9".repeat(200_000);
        let why = quantity(&long).unwrap_err();
        assert!(why.contains("200000 characters") && why.len() < 200, "{why}");
        assert!(quantity("99999999999999999999").unwrap_err().contains("larger than any quantity"));
        assert!(quantity("9Ei").unwrap_err().contains("larger"));
        assert_eq!(quantity("7Ei").map(|v| v > 8e18), Ok(true));
    }

    #[test]
    fn quantities_read_as_kubernetes_reads_them() {
        assert_eq!(quantity("500m").unwrap(), 0.5);
        assert_eq!(quantity("2").unwrap(), 2.0);
        assert_eq!(quantity("0.25").unwrap(), 0.25);
        assert_eq!(quantity("512Mi").unwrap(), 512.0 * 1024.0 * 1024.0);
        assert_eq!(quantity("1G").unwrap(), 1e9);
        assert_eq!(quantity("1e3").unwrap(), 1000.0);
        for bad in ["", "m", "1.2.3", "12x", "-1", "1 Gi", "Gi"] {
            assert!(quantity(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_more_specific_settings_win() {
        let base = PodSettings {
            resources: Resources {
                requests: Quantities { cpu: Some("1".into()), memory: Some("1Gi".into()) },
                limits: Quantities::default(),
            },
            node_selector: [("pool".into(), "ci".into()), ("zone".into(), "a".into())].into(),
            tolerations: vec![Toleration {
                key: Some("ci".into()),
                operator: Some("Exists".into()),
                ..Default::default()
            }],
            service_account: Some("builder".into()),
        };
        let task = PodSettings {
            resources: Resources {
                requests: Quantities { cpu: Some("250m".into()), memory: None },
                limits: Quantities { cpu: None, memory: Some("2Gi".into()) },
            },
            node_selector: [("zone".into(), "b".into())].into(),
            tolerations: base.tolerations.clone(),
            service_account: None,
        };
        let merged = task.over(&base);
        assert_eq!(merged.resources.requests, Quantities { cpu: Some("250m".into()), memory: Some("1Gi".into()) });
        assert_eq!(merged.resources.limits.memory.as_deref(), Some("2Gi"));
        assert_eq!(merged.node_selector, [("pool".into(), "ci".into()), ("zone".into(), "b".into())].into());
        assert_eq!(merged.tolerations.len(), 1);
        assert_eq!(merged.service_account.as_deref(), Some("builder"));
        assert!(PodSettings::default().is_empty() && !merged.is_empty());
    }

    #[test]
    fn cluster_settings_problems_name_their_field() {
        let mut s = ClusterSettings::default();
        assert!(s.problems().is_empty());
        s.pod.resources.requests.cpu = Some("2".into());
        s.pod.resources.limits.cpu = Some("1".into());
        s.pod.resources.limits.memory = Some("lots".into());
        s.pod.node_selector.insert("-bad".into(), "x".into());
        s.pod.tolerations.push(Toleration { effect: Some("Never".into()), ..Default::default() });
        s.pod.service_account = Some("Builder".into());
        s.pending_limit = Some(crate::duration::Duration::ZERO);
        s.workspace = WorkspaceSettings {
            mode: WorkspaceMode::Claim,
            storage_class: Some("Fast SSD".into()),
            size: Some("1m".into()),
        };
        let paths: Vec<String> = s.problems().into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            [
                "resources.limits.memory",
                "resources.requests.cpu",
                "node_selector.-bad",
                "tolerations[0].effect",
                "tolerations[0]",
                "service_account",
                "pending_limit",
                "workspace.storage_class",
                "workspace.size",
            ]
        );
        let json = serde_json::to_string(&ClusterSettings::default()).unwrap();
        assert_eq!(json, r#"{"workspace":{"mode":"host-path"}}"#);
        assert_eq!(WorkspaceMode::parse("claim"), Some(WorkspaceMode::Claim));
    }

    #[test]
    fn label_keys_and_values() {
        assert!(check_label_key("disktype").is_ok());
        assert!(check_label_key("kubernetes.io/arch").is_ok());
        assert!(check_label_key("node-role.kubernetes.io/ci").is_ok());
        assert!(check_label_key("-bad").is_err());
        assert!(check_label_key("Bad_Prefix/x").is_err());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("ssd").is_ok());
        assert!(check_label_value("a b").is_err());
        assert!(is_dns_subdomain("wharf-builder"));
        assert!(!is_dns_subdomain("Builder"));
    }
}
