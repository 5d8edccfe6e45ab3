//! `image` tasks in a builder pod: for pipelines on the kubernetes executor where the
//! server has no Docker Engine, the Dockerfile is built and pushed by rootless BuildKit
//! (`moby/buildkit:rootless` unless the server names another builder image) in a pod in
//! the pipeline's namespace, on the pipeline's cluster.
//!
//! One build is `build`: a Secret of type `kubernetes.io/dockerconfigjson` with the
//! registry's login (owned by the pod, mounted as the container's docker config, so the
//! password never stands in the pod spec), then the pod: the run's checkout mounted
//! read-only at its own path (a `hostPath`, as the executor mounts the workspace, see
//! [`crate::executor`]), and one container running
//! `buildctl-daemonless.sh build --frontend dockerfile.v0 --local context=… --local
//! dockerfile=… --opt filename=… --opt build-arg:K=V --opt label:K=V --output
//! type=image,name=REF,push=true[,registry.insecure=true] --metadata-file …` with the
//! seccomp and AppArmor profiles `Unconfined`, user 1000 and
//! `BUILDKITD_FLAGS=--oci-worker-no-process-sandbox`, as rootless BuildKit needs. A small
//! shell wrapper around it refuses a context reached through a symbolic link and writes the
//! pushed digest, read from the metadata file, to the container's termination message,
//! where Wharf reads it.
//!
//! The pod is supervised as the executor supervises a task's pod (the same function:
//! pending reasons, the log streamed line by line, a stop deleting the pod with its grace
//! period); the pod and its Secret are deleted in every outcome.
//!
//! Labels: `wharf.run`, `wharf.stage`, `wharf.task`, [`LABEL_BUILD`] and the spec's owner
//! labels; no `wharf.attempt`, so that after a restart the executor's leftovers report it
//! without an attempt and the server deletes it (a build is never taken over).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use wharf_executor::build::{BuildError, BuildExit, BuildSpec, Built, ImageBuilder};
use wharf_executor::{BoxFuture, LogLine, LogResume, LogSink, Phase, StopSignal, Stream};

use crate::executor::{
    CONTAINER, Cleanup, ClusterExecutor, KubeExecutor, LABEL_RUN, LABEL_STAGE, LABEL_TASK, kube_reason, label_value,
    random_hex, system,
};

/// The builder image unless the server names another (`--kube-builder-image`).
pub const DEFAULT_BUILDER_IMAGE: &str = "moby/buildkit:rootless";

/// The label that tells builder pods from task pods.
pub const LABEL_BUILD: &str = "wharf.build";

/// Where the registry's docker config is mounted in the builder pod.
pub const DOCKER_CONFIG_DIR: &str = "/wharf/docker-config";

/// Where `buildctl` writes what it pushed.
pub const METADATA_FILE: &str = "/tmp/wharf-build-metadata.json";

/// The container's command: `$1` the context, `$2` the Dockerfile's directory, the rest
/// `buildctl-daemonless.sh`'s arguments. The paths must be what they say (no link on the
/// way: a task of the run could swap a directory of the checkout for one); the digest
/// goes to the termination message.
const WRAPPER: &str = r#"set -e
for dir in "$1" "$2"; do
  if [ "$(cd "$dir" && pwd -P)" != "$dir" ]; then
    echo "wharf: $dir leads through a symbolic link; refusing to build it" >&2
    exit 2
  fi
done
shift 2
buildctl-daemonless.sh "$@"
digest=$(sed -n 's/.*"containerimage.digest": *"\(sha256:[0-9a-f]*\)".*/\1/p' "$WHARF_METADATA" | head -n 1)
if [ -z "$digest" ]; then
  echo "wharf: buildctl wrote no containerimage.digest to $WHARF_METADATA" >&2
  exit 3
fi
printf '%s' "$digest" > /dev/termination-log
"#;

/// Builds `image` tasks in builder pods on the cluster of the spec. Cheap to share.
pub struct KubeBuilder {
    clusters: ClusterExecutor,
    image: String,
}

impl fmt::Debug for KubeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeBuilder").field("image", &self.image).finish()
    }
}

impl KubeBuilder {
    /// Builder pods of `image` (default [`DEFAULT_BUILDER_IMAGE`]), on clusters reached
    /// under `policy`.
    pub fn new(policy: wharf_outbound::Policy, image: Option<String>) -> Self {
        KubeBuilder {
            clusters: ClusterExecutor::new(policy, None),
            image: image.unwrap_or_else(|| DEFAULT_BUILDER_IMAGE.to_owned()),
        }
    }

    /// How long a builder pod may stay `Pending` on clusters that set no limit of their own.
    pub fn with_pending_limit(mut self, limit: Duration) -> Self {
        self.clusters = self.clusters.with_pending_limit(limit);
        self
    }

    async fn run(
        &self,
        spec: BuildSpec,
        logs: Arc<dyn LogSink>,
        mut stop: StopSignal,
    ) -> Result<BuildExit, BuildError> {
        let Some(cluster) = spec.cluster.clone() else {
            return Err(BuildError(format!(
                "task `{}`: this server has no Docker Engine to build `image` tasks with, and builder pods run only \
                 for pipelines on the kubernetes executor (with a `cluster:`); give the server a Docker Engine \
                 (--docker-host) or run the pipeline with `executor: kubernetes`",
                spec.task
            )));
        };
        if let Some(request) = *stop.borrow_and_update() {
            system(&*logs, format!("not started: {} before it began", request.reason));
            return Ok(BuildExit::Stopped(request.reason));
        }
        if cluster.workspace.mode == wharf_core::pod::WorkspaceMode::Claim {
            return Err(BuildError(format!(
                "task `{}`: builder pods mount the checkout as a `hostPath`, and cluster `{}` uses the `claim` \
                 workspace; give the server a Docker Engine (--docker-host) to build `image` tasks, or set the \
                 cluster's workspace to `host-path` (`wharf clusters set {} --workspace host-path`)",
                spec.task, cluster.login.name, cluster.login.name
            )));
        }
        let executor = self
            .clusters
            .connect(&cluster.login, &cluster.namespace, crate::Workspace::HostPath)
            .map_err(|e| BuildError(e.to_string()))?;
        let ns = cluster.namespace.clone();
        let name = format!("wharf-build-{}", random_hex(6));
        let (labels, annotations) = labels_of(&spec);
        let mut guard = Cleanup { pods: executor.pods(), secrets: executor.secrets(), name: name.clone(), done: false };
        let login = docker_config(&spec);
        if let Some(config) = &login {
            let secret = json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "labels": labels, "annotations": annotations},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(config)}});
            let secret: Secret =
                serde_json::from_value(secret).map_err(|e| BuildError(format!("the registry Secret: {e}")))?;
            executor.secrets().create(&PostParams::default(), &secret).await.map_err(|e| {
                BuildError(format!(
                    "cannot create Secret {ns}/{name} for the login to registry `{}`: {}",
                    spec.registry.name,
                    kube_reason(&e)
                ))
            })?;
        }
        let pod = pod_spec(&spec, &name, &self.image, login.is_some(), &labels, &annotations)?;
        let pod: Pod = serde_json::from_value(pod).map_err(|e| BuildError(format!("the builder pod's spec: {e}")))?;
        let created = match executor.pods().create(&PostParams::default(), &pod).await {
            Ok(p) => p,
            Err(e) => {
                guard.remove().await;
                return Err(BuildError(format!(
                    "cannot create the builder pod {ns}/{name} of {}: {}",
                    self.image,
                    kube_reason(&e)
                )));
            }
        };
        // The Secret goes with the pod on the cluster's side too.
        if login.is_some()
            && let Some(uid) = created.metadata.uid.as_deref()
        {
            let owner = json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": name,
                "uid": uid, "blockOwnerDeletion": true}]}});
            let _ = executor.secrets().patch(&name, &PatchParams::default(), &Patch::Merge(owner)).await;
        }
        system(
            &*logs,
            format!(
                "building {} from {} (context {}) in builder pod {ns}/{name} of {} on cluster `{}`",
                spec.image,
                spec.dockerfile.display(),
                spec.context.display(),
                self.image,
                cluster.login.name
            ),
        );
        let tail = Arc::new(LastError { logs: logs.clone(), error: Mutex::new(None) });
        let sink: Arc<dyn LogSink> = tail.clone();
        let exit = executor
            .supervise(&name, &self.image, cluster.pending_limit, &*sink, &mut stop, LogResume::default(), &mut None)
            .await;
        let result = self.outcome(&executor, &spec, &name, exit, &tail).await;
        guard.remove().await;
        if let Ok(BuildExit::Built(built)) = &result {
            system(&*logs, format!("pushed {} ({})", built.image, built.digest));
        }
        result
    }

    /// What the ended pod says: the digest of a build that pushed, why one failed.
    async fn outcome(
        &self,
        executor: &KubeExecutor,
        spec: &BuildSpec,
        name: &str,
        exit: Result<wharf_executor::Exit, wharf_executor::ExecutorError>,
        tail: &LastError,
    ) -> Result<BuildExit, BuildError> {
        let exit = exit.map_err(|e| BuildError(format!("the builder pod: {e}")))?;
        if let Some(reason) = exit.stopped {
            return Ok(BuildExit::Stopped(reason));
        }
        let said = tail.error.lock().unwrap().clone();
        let failed = |how: String| {
            let why = said.clone().map_or_else(|| " (see the task's log)".to_owned(), |e| format!(": {e}"));
            BuildError(format!(
                "building and pushing {} to registry `{}` ({}) failed in builder pod {name} ({how}){why}",
                spec.image, spec.registry.name, spec.registry.host
            ))
        };
        match (exit.code, exit.signal) {
            (Some(0), _) => {}
            (Some(code), _) => return Err(failed(format!("exit code {code}"))),
            (None, Some(signal)) => return Err(failed(format!("killed by signal {signal}"))),
            (None, None) => return Err(failed("no exit code".to_owned())),
        }
        let pod = executor
            .pods()
            .get_opt(name)
            .await
            .map_err(|e| BuildError(format!("cannot read builder pod {name}: {}", kube_reason(&e))))?;
        let message = pod
            .and_then(|p| p.status)
            .and_then(|s| s.container_statuses)
            .and_then(|cs| cs.into_iter().find(|c| c.name == CONTAINER))
            .and_then(|c| c.state?.terminated?.message)
            .unwrap_or_default();
        let digest = message.trim();
        if !is_digest(digest) {
            return Err(BuildError(format!(
                "builder pod {name} ended well but its termination message holds no image digest (it says {:?})",
                digest.chars().take(200).collect::<String>()
            )));
        }
        Ok(BuildExit::Built(Built { image: spec.image.clone(), digest: digest.to_owned() }))
    }
}

impl ImageBuilder for KubeBuilder {
    fn build<'a>(
        &'a self,
        spec: BuildSpec,
        logs: Arc<dyn LogSink>,
        stop: StopSignal,
    ) -> BoxFuture<'a, Result<BuildExit, BuildError>> {
        Box::pin(self.run(spec, logs, stop))
    }
}

/// Passes lines on, keeping the last one that reports an error (`buildctl` ends a failed
/// build with `error: …`; the wrapper's own lines start with `wharf:`).
struct LastError {
    logs: Arc<dyn LogSink>,
    error: Mutex<Option<String>>,
}

impl LogSink for LastError {
    fn line(&self, line: LogLine) {
        if line.stream != Stream::System {
            let text = line.text.trim();
            if text.starts_with("error:") || text.starts_with("ERROR:") || text.starts_with("wharf:") {
                *self.error.lock().unwrap() = Some(text.to_owned());
            }
        }
        self.logs.line(line);
    }

    fn phase(&self, phase: Phase) {
        self.logs.phase(phase);
    }
}

/// `sha256:` and 64 lowercase hex digits.
fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The registry's login as a docker config (`{"auths": {host: {"auth": …}}}`); `None`
/// when the registry takes no login.
fn docker_config(spec: &BuildSpec) -> Option<String> {
    let user = spec.registry.username.as_ref()?;
    let password = spec.registry.password.clone().unwrap_or_default();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    Some(json!({"auths": {spec.registry.host.clone(): {"auth": auth}}}).to_string())
}

/// Labels (values made label-safe) and annotations (exact values) of one build.
fn labels_of(spec: &BuildSpec) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut exact: BTreeMap<String, String> = spec.owner_labels.iter().cloned().collect();
    exact.insert(LABEL_RUN.to_owned(), spec.run.clone());
    exact.insert(LABEL_STAGE.to_owned(), spec.stage.clone());
    exact.insert(LABEL_TASK.to_owned(), spec.task.clone());
    exact.insert(LABEL_BUILD.to_owned(), "true".to_owned());
    let labels = exact.iter().map(|(k, v)| (k.clone(), label_value(v))).collect();
    (labels, exact)
}

/// `buildctl-daemonless.sh`'s arguments for this build.
fn buildctl_args(spec: &BuildSpec) -> Result<Vec<String>, BuildError> {
    let (Some(dockerfile_dir), Some(filename)) = (spec.dockerfile.parent(), spec.dockerfile.file_name()) else {
        return Err(BuildError(format!("the Dockerfile path {} names no file", spec.dockerfile.display())));
    };
    let mut args = vec![
        "build".to_owned(),
        "--frontend".to_owned(),
        "dockerfile.v0".to_owned(),
        "--local".to_owned(),
        format!("context={}", spec.context.display()),
        "--local".to_owned(),
        format!("dockerfile={}", dockerfile_dir.display()),
        "--opt".to_owned(),
        format!("filename={}", filename.to_string_lossy()),
    ];
    for (k, v) in &spec.build_args {
        args.extend(["--opt".to_owned(), format!("build-arg:{k}={v}")]);
    }
    for (k, v) in &spec.labels {
        args.extend(["--opt".to_owned(), format!("label:{k}={v}")]);
    }
    let insecure = if spec.registry.insecure { ",registry.insecure=true" } else { "" };
    args.extend([
        "--output".to_owned(),
        format!("type=image,name={},push=true{insecure}", spec.image),
        "--metadata-file".to_owned(),
        METADATA_FILE.to_owned(),
    ]);
    Ok(args)
}

/// The builder pod: one container `task` (the name the executor's supervision reads the
/// log of) running the wrapper around `buildctl-daemonless.sh`.
fn pod_spec(
    spec: &BuildSpec,
    name: &str,
    image: &str,
    with_login: bool,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Result<serde_json::Value, BuildError> {
    for (what, path) in [("checkout", &spec.checkout), ("context", &spec.context), ("dockerfile", &spec.dockerfile)] {
        if !path.is_absolute() || path.to_str().is_none() {
            return Err(BuildError(format!("the {what} path {} is not an absolute UTF-8 path", path.display())));
        }
    }
    let (context, dockerfile_dir) = (
        spec.context.display().to_string(),
        spec.dockerfile.parent().map(|p| p.display().to_string()).unwrap_or_default(),
    );
    let checkout = spec.checkout.display().to_string();
    let mut command = vec!["/bin/sh".to_owned(), "-c".to_owned(), WRAPPER.to_owned(), "wharf-build".to_owned()];
    command.extend([context, dockerfile_dir]);
    command.extend(buildctl_args(spec)?);
    let mut volumes = vec![json!({"name": "checkout", "hostPath": {"path": checkout, "type": "Directory"}})];
    let mut mounts = vec![json!({"name": "checkout", "mountPath": checkout, "readOnly": true})];
    let mut env = vec![
        json!({"name": "BUILDKITD_FLAGS", "value": "--oci-worker-no-process-sandbox"}),
        json!({"name": "WHARF_METADATA", "value": METADATA_FILE}),
    ];
    if with_login {
        volumes.push(json!({"name": "docker-config", "secret": {"secretName": name,
            "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}}));
        mounts.push(json!({"name": "docker-config", "mountPath": DOCKER_CONFIG_DIR, "readOnly": true}));
        env.push(json!({"name": "DOCKER_CONFIG", "value": DOCKER_CONFIG_DIR}));
    }
    let settings = spec.cluster.as_ref().map(|c| c.pod.clone()).unwrap_or_default();
    let mut container = json!({
        "name": CONTAINER,
        "image": image,
        "command": command,
        "env": env,
        "volumeMounts": mounts,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        // What rootless BuildKit needs: its own user namespaces (no seccomp or AppArmor
        // filter in the way), as the unprivileged user of the image.
        "securityContext": {
            "seccompProfile": {"type": "Unconfined"},
            "appArmorProfile": {"type": "Unconfined"},
            "runAsUser": 1000,
            "runAsGroup": 1000,
        },
    });
    if !settings.resources.is_empty() {
        container["resources"] = serde_json::to_value(&settings.resources).unwrap_or_default();
    }
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": name, "labels": labels, "annotations": annotations},
    "spec": {
        "restartPolicy": "Never",
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "volumes": volumes,
        "containers": [container],
    }});
    if !settings.node_selector.is_empty() {
        pod["spec"]["nodeSelector"] = json!(settings.node_selector);
    }
    if !settings.tolerations.is_empty() {
        pod["spec"]["tolerations"] = serde_json::to_value(&settings.tolerations).unwrap_or_default();
    }
    Ok(pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked() {
        assert!(is_digest(&format!("sha256:{}", "ab".repeat(32))));
        assert!(!is_digest("sha256:abc"));
        assert!(!is_digest(&format!("sha512:{}", "ab".repeat(32))));
        assert!(!is_digest(&format!("sha256:{}", "zz".repeat(32))));
    }
}
