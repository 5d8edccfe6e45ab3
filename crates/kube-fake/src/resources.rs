//! The fixed list of resources the fake serves: what discovery lists and what the API accepts.

/// One resource type: where it lives in the API and what it is called.
#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    /// `""` for the core group (`/api/v1`), else e.g. `apps`.
    pub group: &'static str,
    pub version: &'static str,
    /// The path segment, e.g. `deployments`.
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Writes to the object leave `status` alone; `/status` writes only `status`.
    pub has_status: bool,
    /// Listed by `kubectl get all`.
    pub in_all: bool,
}

impl Resource {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_owned() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `deployments.apps` or `configmaps`, as Kubernetes names a resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.to_owned() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// Whether the scripted controller settles this kind's status.
    pub fn is_workload(&self) -> bool {
        self.group == "apps" && matches!(self.kind, "Deployment" | "StatefulSet" | "DaemonSet")
    }

    /// A batch/v1 Job: the scripted controller completes it (or fails it, for a fault).
    pub fn is_job(&self) -> bool {
        self.group == "batch" && self.kind == "Job"
    }
}

const fn core(
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    short: &'static [&'static str],
    status: bool,
    in_all: bool,
) -> Resource {
    Resource {
        group: "",
        version: "v1",
        plural,
        singular,
        kind,
        namespaced: true,
        short_names: short,
        has_status: status,
        in_all,
    }
}

const fn apps(
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    short: &'static [&'static str],
) -> Resource {
    Resource {
        group: "apps",
        version: "v1",
        plural,
        singular,
        kind,
        namespaced: true,
        short_names: short,
        has_status: true,
        in_all: true,
    }
}

/// A namespaced resource of another group, stored as written (no controller).
const fn grouped(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    short: &'static [&'static str],
    status: bool,
) -> Resource {
    Resource {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced: true,
        short_names: short,
        has_status: status,
        in_all: false,
    }
}

pub static RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        has_status: true,
        in_all: false,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        has_status: true,
        in_all: false,
    },
    core("configmaps", "configmap", "ConfigMap", &["cm"], false, false),
    core("secrets", "secret", "Secret", &[], false, false),
    core("services", "service", "Service", &["svc"], true, true),
    core("pods", "pod", "Pod", &["po"], true, true),
    core("serviceaccounts", "serviceaccount", "ServiceAccount", &["sa"], false, false),
    core("events", "event", "Event", &["ev"], false, false),
    core("persistentvolumeclaims", "persistentvolumeclaim", "PersistentVolumeClaim", &["pvc"], true, false),
    apps("deployments", "deployment", "Deployment", &["deploy"]),
    apps("statefulsets", "statefulset", "StatefulSet", &["sts"]),
    apps("daemonsets", "daemonset", "DaemonSet", &["ds"]),
    apps("replicasets", "replicaset", "ReplicaSet", &["rs"]),
    // Kinds real manifests carry beside their workloads (the seed's 2048 example has an
    // Ingress); stored as written, no controller acts on them.
    grouped("networking.k8s.io", "v1", "ingresses", "ingress", "Ingress", &["ing"], true),
    grouped("networking.k8s.io", "v1", "networkpolicies", "networkpolicy", "NetworkPolicy", &["netpol"], false),
    grouped("batch", "v1", "jobs", "job", "Job", &[], true),
    grouped("batch", "v1", "cronjobs", "cronjob", "CronJob", &["cj"], true),
    grouped(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        "HorizontalPodAutoscaler",
        &["hpa"],
        true,
    ),
    grouped("policy", "v1", "poddisruptionbudgets", "poddisruptionbudget", "PodDisruptionBudget", &["pdb"], true),
    grouped("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", &[], false),
    grouped("rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding", "RoleBinding", &[], false),
];

/// The groups besides the core group, with their one version each.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !out.iter().any(|(g, _)| *g == r.group) {
            out.push((r.group, r.version));
        }
    }
    out
}

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}
