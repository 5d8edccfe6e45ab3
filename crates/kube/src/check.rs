//! What a cluster says about itself, and why a request to it failed, classified.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::Api;
use kube::api::ListParams;

use crate::Connection;

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    pub server: String,
    /// `gitVersion` of `/version`, e.g. `v1.33.2`.
    pub version: String,
    pub namespaces: Permission<()>,
    pub nodes: Permission<Nodes>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nodes {
    pub ready: usize,
    pub total: usize,
}

/// Something the credentials may or may not be allowed to see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permission<T> {
    Allowed(T),
    /// The API server's words, e.g. `nodes is forbidden: User "x" cannot list resource …`.
    Forbidden(String),
}

/// Why a request to the cluster failed, in the API server's (or the TLS stack's) words.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterError {
    #[error("cluster {server} is unreachable: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("TLS with {server} failed (check certificate-authority-data): {reason}")]
    Tls { server: String, reason: String },
    #[error("{server} refused the credentials (unauthorized; expired or wrong token or certificate?): {message}")]
    Unauthorized { server: String, message: String },
    #[error("{server}: forbidden to {verb} {resource}: {message}")]
    Forbidden { server: String, verb: &'static str, resource: String, message: String },
    #[error("{server}: {verb} {resource}: {code} {reason}: {message}")]
    Api { server: String, verb: &'static str, resource: String, code: u16, reason: String, message: String },
    /// The server's name resolved only to internal addresses the outbound policy refuses.
    #[error("cluster {server}: {refused}")]
    Refused { server: String, refused: wharf_outbound::Refused },
    #[error("{server}: {verb} {resource}: {reason}")]
    Other { server: String, verb: &'static str, resource: String, reason: String },
}

impl ClusterError {
    /// Sorts a kube-rs error from `verb` on `resource` into what a user can act on.
    pub(crate) fn classify(conn: &Connection, verb: &'static str, resource: &str, err: kube::Error) -> Self {
        let server = conn.server().to_owned();
        let resource = resource.to_owned();
        match err {
            kube::Error::Api(status) => match status.code {
                401 => ClusterError::Unauthorized { server, message: status.message },
                403 => ClusterError::Forbidden { server, verb, resource, message: status.message },
                code => {
                    ClusterError::Api { server, verb, resource, code, reason: status.reason, message: status.message }
                }
            },
            other => {
                if let Some(refused) = wharf_outbound::refusal(&other) {
                    return ClusterError::Refused { server, refused: refused.clone() };
                }
                if let Some(tls) = find_tls(&other) {
                    return ClusterError::Tls { server, reason: tls };
                }
                if matches!(other, kube::Error::HyperError(_) | kube::Error::Service(_)) {
                    return ClusterError::Unreachable { server, reason: deepest(&other) };
                }
                ClusterError::Other { server, verb, resource, reason: chain(&other) }
            }
        }
    }
}

/// A rustls error anywhere in the source chain (io errors wrap it without exposing it as a source).
fn find_tls(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        // hyper-rustls wraps tokio-rustls's io::Error (itself wrapping rustls's) in another.
        let mut io = e.downcast_ref::<std::io::Error>();
        while let Some(inner) = io.and_then(std::io::Error::get_ref) {
            if let Some(t) = inner.downcast_ref::<rustls::Error>() {
                return Some(t.to_string());
            }
            io = inner.downcast_ref::<std::io::Error>();
        }
        cur = e.source();
    }
    None
}

fn deepest(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

/// How long [`check`] waits for the cluster altogether.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Asks the cluster for its version, whether namespaces can be listed and how many nodes
/// are ready. Unreachable (also: no answer within [`CHECK_TIMEOUT`]), TLS and unauthorized
/// fail the check; a forbidden namespace or node list is reported in [`ClusterInfo`] (the
/// credentials may be namespace-scoped).
pub async fn check(conn: &Connection) -> Result<ClusterInfo, ClusterError> {
    tokio::time::timeout(CHECK_TIMEOUT, ask(conn)).await.unwrap_or_else(|_| {
        Err(ClusterError::Unreachable {
            server: conn.server().to_owned(),
            reason: format!("no answer within {} s", CHECK_TIMEOUT.as_secs()),
        })
    })
}

async fn ask(conn: &Connection) -> Result<ClusterInfo, ClusterError> {
    let version =
        conn.client.apiserver_version().await.map_err(|e| ClusterError::classify(conn, "get", "/version", e))?;
    let one = ListParams::default().limit(1);
    let namespaces = match Api::<Namespace>::all(conn.client.clone()).list_metadata(&one).await {
        Ok(_) => Permission::Allowed(()),
        Err(e) => forbidden(ClusterError::classify(conn, "list", "namespaces", e))?,
    };
    let nodes = match Api::<Node>::all(conn.client.clone()).list(&ListParams::default()).await {
        Ok(list) => Permission::Allowed(Nodes {
            total: list.items.len(),
            ready: list.items.iter().filter(|n| ready(n)).count(),
        }),
        Err(e) => forbidden(ClusterError::classify(conn, "list", "nodes", e))?,
    };
    Ok(ClusterInfo { server: conn.server().to_owned(), version: version.git_version, namespaces, nodes })
}

fn forbidden<T>(err: ClusterError) -> Result<Permission<T>, ClusterError> {
    match err {
        ClusterError::Forbidden { message, .. } => Ok(Permission::Forbidden(message)),
        other => Err(other),
    }
}

/// A node is ready when its `Ready` condition is `True` (what `kubectl get nodes` shows).
fn ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileAccess;

    fn status(code: u16, reason: &str, message: &str) -> kube::Error {
        let s: kube::core::Status = serde_json::from_value(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "code": code, "reason": reason, "message": message,
        }))
        .unwrap();
        kube::Error::Api(Box::new(s))
    }

    #[tokio::test]
    async fn api_statuses_are_classified() {
        let text = "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster:\n    server: https://k8s.example:6443\n\
                    users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n  context:\n    cluster: k\n    user: u\n";
        let conn =
            Connection::from_kubeconfig(text, None, &FileAccess::Refuse, &wharf_outbound::Policy::default()).unwrap();
        let msg = "nodes is forbidden: User \"system:serviceaccount:ci:wharf\" cannot list resource \"nodes\" in API group \"\" at the cluster scope";
        let err = ClusterError::classify(&conn, "list", "nodes", status(403, "Forbidden", msg));
        assert_eq!(
            err,
            ClusterError::Forbidden {
                server: "https://k8s.example:6443".into(),
                verb: "list",
                resource: "nodes".into(),
                message: msg.into()
            }
        );
        assert_eq!(forbidden::<Nodes>(err), Ok(Permission::Forbidden(msg.into())));
        let err = ClusterError::classify(&conn, "get", "/version", status(401, "Unauthorized", "Unauthorized"));
        assert!(matches!(err, ClusterError::Unauthorized { .. }));
        assert!(forbidden::<()>(err).is_err(), "unauthorized fails the check");
        let err = ClusterError::classify(&conn, "patch", "namespaces/x", status(422, "Invalid", "bad label"));
        assert_eq!(err.to_string(), "https://k8s.example:6443: patch namespaces/x: 422 Invalid: bad label");
    }
}
