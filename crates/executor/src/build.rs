//! The seam for `image` tasks: build a Dockerfile and push the image. The engine
//! checks paths and resolves the registry; an [`ImageBuilder`] (the Docker Engine one
//! lives in `wharf-image`) only builds and pushes.

use crate::{BoxFuture, LogSink, StopReason, StopSignal};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Where to push and how to log in. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryLogin {
    /// The registered registry's name (for messages).
    pub name: String,
    /// `host[:port]` as image references name it.
    pub host: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Plain HTTP (a local registry).
    pub insecure: bool,
}

impl fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// One `image` task, every field final (variables rendered, paths checked).
#[derive(Clone, Debug)]
pub struct BuildSpec {
    /// `<pipeline>#<number>`, stage and task, for labels and log lines.
    pub run: String,
    pub stage: String,
    pub task: String,
    /// The build context: an existing directory inside the checkout, absolute.
    pub context: PathBuf,
    /// The Dockerfile: an existing file inside the checkout, absolute.
    pub dockerfile: PathBuf,
    pub build_args: Vec<(String, String)>,
    /// The reference to build and push: `host/workspace/name:tag`.
    pub image: String,
    pub registry: RegistryLogin,
    /// Put on the image as labels (its source and revision).
    pub labels: Vec<(String, String)>,
    /// The run's checkout, canonical: it holds `context` and `dockerfile`. A builder
    /// that runs elsewhere (a builder pod) mounts this directory, never a path inside it
    /// that a task of the run could swap for a link.
    pub checkout: PathBuf,
    /// Identify what runs the build, as [`crate::TaskSpec::labels`] do (the builder
    /// pod's labels), so that what a server killed mid-build left is found and removed.
    pub owner_labels: Vec<(String, String)>,
    /// The pipeline's cluster when it runs on the kubernetes executor: where a builder
    /// pod runs (its namespace, scheduling settings and pending limit). `None` elsewhere.
    pub cluster: Option<crate::TaskCluster>,
}

/// What a successful build pushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    /// The full reference pushed (`host/workspace/name:tag`).
    pub image: String,
    /// The manifest digest the registry stored (`sha256:…`).
    pub digest: String,
}

/// How a build ended when it did not fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildExit {
    Built(Built),
    /// A [`crate::StopRequest`] ended it; nothing was pushed after the stop.
    Stopped(StopReason),
}

/// The build or the push failed; the message says where and why (the daemon's or
/// the registry's own words).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

/// Builds and pushes images.
///
/// Contract: `build` runs one attempt to its end; every line of the build and push
/// output reaches `logs` before it returns; a stop request ends it promptly with
/// `Ok(BuildExit::Stopped)`; the push is the last step, so a failed or stopped build
/// leaves nothing new under the tag. Calls may run concurrently.
pub trait ImageBuilder: Send + Sync {
    fn build<'a>(
        &'a self,
        spec: BuildSpec,
        logs: Arc<dyn LogSink>,
        stop: StopSignal,
    ) -> BoxFuture<'a, Result<BuildExit, BuildError>>;
}
