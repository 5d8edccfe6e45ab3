//! Every failure of a deploy in words a user can act on: which cluster, which namespace,
//! which object, and why — the API server's own message where it gave one.

use wharf_executor::deploy::DeployError;

use crate::{ClusterError, Connection};

/// What every message names.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    /// The registered cluster's name.
    pub cluster: &'a str,
    /// The connection to it (its API server's URL).
    pub conn: &'a Connection,
    /// The task's namespace.
    pub namespace: &'a str,
}

impl Ctx<'_> {
    /// `cluster `prod`, namespace `games``
    pub fn place(&self) -> String {
        format!("cluster `{}`, namespace `{}`", self.cluster, self.namespace)
    }

    pub fn error(&self, message: impl std::fmt::Display) -> DeployError {
        DeployError(format!("{}: {message}", self.place()))
    }

    /// A kube-rs error from `verb` (`apply`, `get`, `watch`…) on `object` (`Deployment
    /// games/web`, or a description of a document), sorted into what a user can act on.
    pub fn api(&self, verb: &'static str, object: &str, err: kube::Error) -> DeployError {
        let status_kind = match &err {
            kube::Error::Api(s) => s.details.as_ref().map(|d| d.kind.clone()),
            _ => None,
        };
        let classified = ClusterError::classify(self.conn, verb, object, err);
        let message = match classified {
            ClusterError::Unreachable { server, reason } => {
                format!("cluster `{}` is unreachable at {server} ({verb} {object}): {reason}", self.cluster)
            }
            ClusterError::Refused { server, refused } => {
                format!("cluster `{}` at {server} ({verb} {object}): {refused}", self.cluster)
            }
            ClusterError::Tls { server, reason } => format!(
                "TLS with cluster `{}` at {server} failed ({verb} {object}; check certificate-authority-data): {reason}",
                self.cluster
            ),
            ClusterError::Unauthorized { server, message } => format!(
                "cluster `{}` at {server} refused the credentials ({verb} {object}): 401 Unauthorized: {message} \
                 (expired or wrong token or certificate? register the cluster again with a fresh kubeconfig)",
                self.cluster
            ),
            ClusterError::Forbidden { message, .. } if is_rbac(&message) => {
                format!("{}: RBAC forbids {verb} {object}: {message}", self.place())
            }
            ClusterError::Forbidden { message, .. } => {
                format!("{}: the API server refused to {verb} {object}: {message}", self.place())
            }
            ClusterError::Api { code: 404, message, .. } if status_kind.as_deref() == Some("namespaces") => format!(
                "{}: {verb} {object}: the namespace does not exist on the cluster ({message}); create it, or add its \
                 Namespace to the file",
                self.place()
            ),
            ClusterError::Api { code, reason, message, .. } => {
                format!("{}: the API server refused to {verb} {object}: {code} {reason}: {message}", self.place())
            }
            ClusterError::Other { reason, .. } => format!("{}: {verb} {object}: {reason}", self.place()),
        };
        DeployError(message)
    }
}

/// Whether a 403's message is an authorization (RBAC) denial, as the API server words
/// them (`User "x" cannot patch resource "deployments" in API group "apps" in the
/// namespace "games"`), rather than an admission webhook's or a quota's.
fn is_rbac(message: &str) -> bool {
    message.contains(" cannot ") && message.contains(" resource ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rbac_is_told_apart_from_admission() {
        assert!(is_rbac(
            "deployments.apps \"web\" is forbidden: User \"system:serviceaccount:ci:deployer\" cannot patch resource \
             \"deployments\" in API group \"apps\" in the namespace \"games\""
        ));
        assert!(!is_rbac("admission webhook \"validate.example.com\" denied the request: no latest tags"));
        assert!(!is_rbac(
            "pods \"x\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
        ));
    }
}
