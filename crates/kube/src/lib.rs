//! The cluster side of Wharf, over the real Kubernetes API (kube-rs):
//!
//! - [`Connection::from_kubeconfig`]: kubeconfig text and an optional context → a checked,
//!   typed connection (token, client certificate, CA, `insecure-skip-tls-verify`; exec and
//!   auth-provider plugins refused: a server must not run binaries named by a user's file);
//!   Every connection goes through the server's outbound policy ([`Policy`], `outbound.rs`):
//!   an API server at an internal address is called only when an admin allowed it;
//! - [`check`]: the server's version, whether namespaces can be listed, nodes ready/total,
//!   with failures classified in the API server's words ([`ClusterError`]);
//! - [`ensure_namespace`]: the pipeline namespace, server-side applied by field manager
//!   `wharf`;
//! - [`deploy`]: `deploy-yaml` tasks ([`deploy::KubeDeployer`], wharf-executor's `Deployer`):
//!   every document checked, server-side applied, rollouts awaited as `kubectl rollout
//!   status` does;
//! - [`builder`]: `image` tasks in a rootless BuildKit builder pod ([`builder::KubeBuilder`],
//!   wharf-executor's `ImageBuilder`) for servers without a Docker Engine.
//!
//! No credential is ever logged or shown: `Debug` and `Display` of everything here leave
//! them out.

pub mod builder;
pub mod canary;
mod check;
pub mod deploy;
pub mod executor;
mod kubeconfig;
mod namespace;
mod outbound;
pub mod release;

pub use check::{CHECK_TIMEOUT, ClusterError, ClusterInfo, Nodes, Permission, check};
pub use executor::{ClusterExecutor, ClusterSource, KubeExecutor, KubeExecutorConfig, Workspace};
pub use kubeconfig::{Auth, Connection, FileAccess, KubeconfigError};
pub use namespace::{MANAGED_BY, NamespaceError, ensure_namespace, pipeline_namespace};
pub use wharf_outbound::{Policy, Refused};

/// The field manager of every write Wharf makes to a cluster.
pub const FIELD_MANAGER: &str = "wharf";
