//! The pipeline namespace: created by server-side apply, so applying it again changes
//! nothing and labels another manager added stay.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{Patch, PatchParams};

use crate::{ClusterError, Connection, FIELD_MANAGER};

/// The label every object Wharf makes carries, with the value `wharf`.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// `ecp-devops-<short id>`, the seed's pipeline namespace name.
pub fn pipeline_namespace(short_id: &str) -> String {
    format!("ecp-devops-{short_id}")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum NamespaceError {
    #[error(
        "namespace name {name:?} is not a DNS label (at most 63 of a-z, 0-9 and '-', starting and ending alphanumeric)"
    )]
    BadName { name: String },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

fn dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Applies the namespace `name` with `labels` plus `app.kubernetes.io/managed-by: wharf`
/// (field manager `wharf`, not forced: a conflict with another manager is an error, in the
/// API server's words). Idempotent. Returns the namespace as the server stored it.
pub async fn ensure_namespace(
    conn: &Connection,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Result<Namespace, NamespaceError> {
    if !dns_label(name) {
        return Err(NamespaceError::BadName { name: name.to_owned() });
    }
    let mut all = labels.clone();
    all.insert(MANAGED_BY.to_owned(), FIELD_MANAGER.to_owned());
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": all},
    });
    let api = Api::<Namespace>::all(conn.client.clone());
    let ns = api
        .patch(name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&body))
        .await
        .map_err(|e| ClusterError::classify(conn, "patch", &format!("namespaces/{name}"), e))?;
    tracing::info!(server = conn.server(), namespace = name, "pipeline namespace applied");
    Ok(ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(pipeline_namespace("a1b2c3"), "ecp-devops-a1b2c3");
        assert!(dns_label("ecp-devops-a1b2c3"));
        for bad in ["", "-a", "a-", "Ab", "a_b", &"a".repeat(64)] {
            assert!(!dns_label(bad), "{bad}");
        }
    }
}
