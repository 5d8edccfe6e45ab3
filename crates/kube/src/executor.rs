//! The Kubernetes executor: a `script` task runs as `sh -e -c <script>` in a Pod of its
//! image, one Pod per attempt, in the pipeline's namespace (`ecp-devops-<id>`).
//!
//! One attempt is `run_task`: a Secret with the task's environment (so values, secrets
//! among them, never stand in the Pod spec), the Pod (`restartPolicy: Never`, the Secret as
//! `envFrom`, the workspace and the directory of `$WHARF_OUTPUT` mounted at the same paths
//! as outside), then `supervise`: while the Pod is `Pending` the scheduler's and kubelet's
//! reasons go to the task's log (an image that cannot be pulled, or a spec the kubelet
//! refuses, ends the attempt with that reason instead of waiting); once it runs, its log is
//! streamed (`follow`, `timestamps`) line by line into the task's log; a stop deletes the
//! Pod with the stop's grace period; the exit code is the container's. The Pod and the
//! Secret are deleted in every outcome (the Secret is also owned by the Pod, so the
//! cluster's garbage collector takes it if Wharf could not).
//!
//! Workspace travel, the cluster's setting ([`Workspace`]):
//!
//! - [`Workspace::HostPath`]: the run's directory on the server is a `hostPath` volume (and
//!   so is the directory of `$WHARF_OUTPUT`), right only where the server's filesystem is
//!   the node's (a one-node cluster the server shares, or the test double's kubelet on this
//!   machine). Nothing is copied: the fastest.
//! - [`Workspace::Claim`]: one PersistentVolumeClaim per run (`wharf-ws-<hash of the run's
//!   labels>`, `ReadWriteOnce`, the cluster's StorageClass and size, labelled like the
//!   run's pods), made by the run's first task, which also fills it: the checkout packed
//!   as a gzipped tar (`tar` on the server, at most [`MAX_SEED_BYTES`]) goes into Secrets
//!   of at most 700 KiB, and a seed pod of the task's image mounts them beside the claim
//!   and unpacks them into it (`cat … | tar -xzf -`); the claim is then annotated
//!   [`ANNOTATION_SEEDED`] and the Secrets and seed pod deleted. Every task pod mounts the
//!   claim at the checkout's path, so files pass between tasks and stages as on the host.
//!   `$WHARF_OUTPUT` is the container's termination message (`/dev/termination-log`),
//!   which the kubelet hands back in the pod's status (at most 4096 bytes) and Wharf writes
//!   to the engine's outputs file. The claim is deleted when the run ends, in any outcome
//!   ([`wharf_executor::Executor::run_ended`]), and a restart lists it with the run's
//!   leftovers (no attempt: a continued run makes and fills a new one from the server's
//!   checkout).
//!
//! Why this transport: everything goes through the Kubernetes API's plain requests
//! (Secrets, Pods, their status), which every cluster serves and every credential that may
//! run pods may use; no exec or attach stream (kube's `ws` feature, a WebSocket server in
//! the test double) and no git in the cluster. **Tekton** gives a PipelineRun a
//! PVC-backed workspace (often a `volumeClaimTemplate`, one claim per run) that every
//! TaskRun pod mounts, and fills it with its `git-clone` task (a pod running git in the
//! cluster): Wharf follows the per-run claim, but the checkout is the server's (it already
//! made it, with the repository binding's credentials, at the exact commit; tasks must not
//! need the code host's credentials in the cluster, nor a git image), so it is copied in
//! rather than cloned again. **Jenkins' kubernetes plugin** runs one agent pod per build
//! whose containers share an `emptyDir` and execs each step into the container a
//! `container('…')` block names: no storage class, but every image fixed when the pod
//! starts, no per-task resources, a stop that is not a pod delete, and exec streams that
//! die with the controller; Wharf keeps one pod per task attempt. The price of the copy
//! is the size limit (etcd keeps each Secret under 1.5 MiB, so the checkout travels in
//! pieces, 64 MiB compressed at most).
//!
//! Labels: `wharf.run`, `wharf.stage`, `wharf.task`, `wharf.attempt` and the spec's own
//! labels, with values made label-safe; the exact values are annotations of the same keys.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::{AsyncBufReadExt, AsyncReadExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use tokio::time::Instant;
use wharf_executor::lines::{emit, utf8_cut};
use wharf_executor::{
    AttemptId, BoxFuture, Executor, ExecutorError, Exit, Leftover, LogLine, LogResume, LogSink, MAX_LINE_BYTES, Phase,
    StopReason, StopRequest, StopSignal, Stream, TaskSpec,
};

use crate::Connection;
use wharf_executor::deploy::ClusterLogin;

pub const LABEL_RUN: &str = "wharf.run";
pub const LABEL_STAGE: &str = "wharf.stage";
pub const LABEL_TASK: &str = "wharf.task";
pub const LABEL_ATTEMPT: &str = "wharf.attempt";

/// The container's name in every task Pod.
pub const CONTAINER: &str = "task";

/// How often a Pending pod, and a pod whose log ended, is looked at at most. Between looks
/// a watch of the pod makes the next look come as soon as the pod changes (as kubectl
/// waits); without one (it could not be opened, or it ended) the looks back off from
/// [`FIRST_POLL`].
const POLL: Duration = Duration::from_millis(200);
/// The first look after one that found the pod still waiting, when there is no watch.
const FIRST_POLL: Duration = Duration::from_millis(10);
/// How long one watch of a task's pod lasts at most (the API server's `timeoutSeconds`).
const WATCH_SECONDS: u32 = 290;

/// The changes of one pod, from a watch by name.
type PodChanges = BoxStream<'static, Result<WatchEvent<Pod>, kube::Error>>;

/// Waits until the pod changed (an event on `changes`) or `pause` passed without a watch
/// (`POLL` with one), whichever comes first. A watch that ended or broke is dropped.
async fn until_changed(changes: &mut Option<PodChanges>, pause: Duration) {
    let Some(events) = changes else { return tokio::time::sleep(pause).await };
    match tokio::time::timeout(POLL, events.next()).await {
        Ok(Some(Ok(WatchEvent::Added(_) | WatchEvent::Modified(_) | WatchEvent::Deleted(_)))) | Err(_) => {}
        Ok(Some(Ok(WatchEvent::Bookmark(_)))) => {}
        Ok(Some(Ok(WatchEvent::Error(_)) | Err(_)) | None) => *changes = None,
    }
}

/// The pause before the next look: twice the last, at most [`POLL`].
fn back_off(last: Duration) -> Duration {
    (last * 2).min(POLL)
}
/// How long the final state is waited for after the log stream ended.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a pod may take to start before its task shows `pending` (a pod the
/// scheduler cannot place shows it at once).
const PENDING_AFTER: Duration = Duration::from_secs(2);
/// How long a pod may stay `Pending` by default ([`KubeExecutorConfig::pending_limit`]).
pub const DEFAULT_PENDING_LIMIT: Duration = Duration::from_secs(600);

/// How the run's checkout reaches the task's Pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workspace {
    /// The server's directories as `hostPath` volumes at the same paths: only where the
    /// server's filesystem is the node's.
    HostPath,
    /// One PersistentVolumeClaim per run (see the module docs), of this StorageClass
    /// (`None`: the cluster's default) and size.
    Claim { storage_class: Option<String>, size: String },
}

impl Workspace {
    /// The cluster's setting.
    pub fn of(settings: &wharf_core::pod::WorkspaceSettings) -> Workspace {
        match settings.mode {
            wharf_core::pod::WorkspaceMode::HostPath => Workspace::HostPath,
            wharf_core::pod::WorkspaceMode::Claim => {
                Workspace::Claim { storage_class: settings.storage_class.clone(), size: settings.size().to_owned() }
            }
        }
    }
}

/// The annotation a run's claim gets once the checkout is in it.
pub const ANNOTATION_SEEDED: &str = "wharf.workspace/seeded";

/// Where a task writes its outputs in claim mode: the container's termination message,
/// which the kubelet hands back in the pod's status (at most [`MAX_CLAIM_OUTPUTS`]).
pub const CLAIM_OUTPUT_FILE: &str = "/dev/termination-log";

/// The most a kubelet reads of a termination message.
pub const MAX_CLAIM_OUTPUTS: usize = 4096;

/// The largest compressed checkout carried into a run's claim.
pub const MAX_SEED_BYTES: usize = 64 * 1024 * 1024;

/// The checkout travels in Secrets of at most this many bytes each (an object must stay
/// under etcd's 1.5 MiB, and Secret data is base64).
const SEED_CHUNK: usize = 700 * 1024;

/// Each run's claim is made and filled once: the parallel first tasks of a run wait for
/// the one that does it (other runs do not). An entry lives while a task holds it.
static SEEDING: std::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>> =
    std::sync::Mutex::new(BTreeMap::new());

/// The lock of one claim's making, dropped from [`SEEDING`] with its last holder.
struct SeedLock {
    name: String,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl SeedLock {
    fn of(name: &str) -> SeedLock {
        let mut all = SEEDING.lock().unwrap_or_else(|e| e.into_inner());
        let lock = all.entry(name.to_owned()).or_default().clone();
        SeedLock { name: name.to_owned(), lock }
    }
}

impl Drop for SeedLock {
    fn drop(&mut self) {
        let mut all = SEEDING.lock().unwrap_or_else(|e| e.into_inner());
        // Ours and the map's: nobody else waits for it.
        if Arc::strong_count(&self.lock) == 2 {
            all.remove(&self.name);
        }
    }
}

/// Where and how the executor runs Pods.
#[derive(Clone, Debug)]
pub struct KubeExecutorConfig {
    /// The pipeline's namespace (`ecp-devops-<id>`); it must exist.
    pub namespace: String,
    /// The image of tasks that name none.
    pub default_image: Option<String>,
    pub workspace: Workspace,
    /// How long a pod may stay `Pending` (not placed by the scheduler, its image not yet
    /// pulled) before the attempt fails with the scheduler's reason. Pending time counts
    /// against no timeout; this limit bounds it.
    pub pending_limit: Duration,
}

/// Runs `script` tasks as Pods. Cheap to share.
pub struct KubeExecutor {
    client: kube::Client,
    config: KubeExecutorConfig,
}

impl fmt::Debug for KubeExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeExecutor").field("config", &self.config).finish()
    }
}

impl KubeExecutor {
    pub fn new(conn: &Connection, config: KubeExecutorConfig) -> Self {
        KubeExecutor { client: conn.client().clone(), config }
    }

    pub(crate) fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    pub(crate) fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    async fn run_task(
        &self,
        spec: TaskSpec,
        logs: Arc<dyn LogSink>,
        mut stop: StopSignal,
    ) -> Result<Exit, ExecutorError> {
        let logs = &*logs;
        if let Some(request) = *stop.borrow_and_update() {
            system(logs, format!("not started: {} before it began", request.reason));
            return Ok(Exit { code: None, signal: None, stopped: Some(request.reason) });
        }
        let Some(image) = spec.image.clone().or_else(|| self.config.default_image.clone()) else {
            return Err(start_error(format!(
                "task `{}` names no image: give it `image:` (or the pipeline `default_image:`) to run it on the \
                 kubernetes executor",
                spec.task
            )));
        };
        let mut env = environment(&spec)?;
        let claim = match &self.config.workspace {
            Workspace::HostPath => None,
            Workspace::Claim { .. } => {
                env.insert("WHARF_OUTPUT".to_owned(), CLAIM_OUTPUT_FILE.to_owned());
                Some(self.ensure_claim(&spec, &image, logs, &mut stop).await?)
            }
        };
        let name = format!("wharf-{}", random_hex(6));
        let ns = self.config.namespace.clone();
        let (labels, annotations) = labels_of(&spec);
        let mut guard = Cleanup { pods: self.pods(), secrets: self.secrets(), name: name.clone(), done: false };
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
            "type": "Opaque", "stringData": env});
        let secret: Secret = serde_json::from_value(secret).map_err(|e| start_error(format!("the env Secret: {e}")))?;
        self.secrets().create(&PostParams::default(), &secret).await.map_err(|e| {
            start_error(format!("cannot create Secret {ns}/{name} for the task's environment: {}", kube_reason(&e)))
        })?;
        let pod: Pod =
            serde_json::from_value(self.pod_spec(&spec, &name, &image, &labels, &annotations, claim.as_deref()))
                .map_err(|e| start_error(format!("the pod spec: {e}")))?;
        let created = match self.pods().create(&PostParams::default(), &pod).await {
            Ok(p) => p,
            Err(e) => {
                guard.remove().await;
                return Err(start_error(format!("cannot create pod {ns}/{name} of {image}: {}", kube_reason(&e))));
            }
        };
        // The Secret goes with the Pod on the cluster's side too.
        if let Some(uid) = created.metadata.uid.as_deref() {
            let owner = json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": name,
                "uid": uid, "blockOwnerDeletion": true}]}});
            let _ = self.secrets().patch(&name, &PatchParams::default(), &Patch::Merge(owner)).await;
        }
        system(logs, format!("pod {ns}/{name} created"));
        let limit = spec.cluster.as_ref().and_then(|c| c.pending_limit);
        let mut message = None;
        let exit = self.supervise(&name, &image, limit, logs, &mut stop, LogResume::default(), &mut message).await;
        guard.remove().await;
        self.outputs_back(&spec, claim.is_some(), message, exit)
    }

    /// In claim mode, the outputs the task wrote to its termination message go to the
    /// engine's `$WHARF_OUTPUT` file.
    fn outputs_back(
        &self,
        spec: &TaskSpec,
        claim: bool,
        message: Option<String>,
        exit: Result<Exit, ExecutorError>,
    ) -> Result<Exit, ExecutorError> {
        let exit = exit?;
        if !claim {
            return Ok(exit);
        }
        let text = message.unwrap_or_default();
        if text.len() >= MAX_CLAIM_OUTPUTS {
            return Err(start_error(format!(
                "task `{}` wrote {MAX_CLAIM_OUTPUTS} bytes or more to $WHARF_OUTPUT: with the `claim` workspace, \
                 outputs come back in the pod's termination message, which holds at most {MAX_CLAIM_OUTPUTS} bytes",
                spec.task
            )));
        }
        std::fs::write(&spec.output_file, text.as_bytes())
            .map_err(|e| start_error(format!("cannot write the task's outputs to the run's directory: {e}")))?;
        Ok(exit)
    }

    /// The run's claim and the exact values of its labels (the run and the spec's own).
    fn claim_of(spec: &TaskSpec) -> (String, BTreeMap<String, String>, BTreeMap<String, String>) {
        let mut exact: BTreeMap<String, String> = spec.labels.iter().cloned().collect();
        exact.insert(LABEL_RUN.to_owned(), spec.run.clone());
        let labels = exact.iter().map(|(k, v)| (k.clone(), label_value(v))).collect();
        // One name per run (and server): found again by the next task and after a restart.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in exact.iter().flat_map(|(k, v)| k.bytes().chain([0]).chain(v.bytes()).chain([0])) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        (format!("wharf-ws-{hash:016x}"), labels, exact)
    }

    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &self.config.namespace)
    }

    /// The run's claim, made and filled with the checkout by the run's first task.
    async fn ensure_claim(
        &self,
        spec: &TaskSpec,
        image: &str,
        logs: &dyn LogSink,
        stop: &mut StopSignal,
    ) -> Result<String, ExecutorError> {
        let Workspace::Claim { storage_class, size } = &self.config.workspace else {
            return Err(start_error("no claim in hostPath mode".into()));
        };
        let (name, labels, exact) = Self::claim_of(spec);
        let ns = &self.config.namespace;
        let seeding = SeedLock::of(&name);
        let _one = seeding.lock.lock().await;
        let mut found = self
            .claims()
            .get_opt(&name)
            .await
            .map_err(|e| start_error(format!("cannot read claim {ns}/{name}: {}", kube_reason(&e))))?;
        // A claim being deleted (a restart discarded it while a pod still used it, which
        // its protection finalizer waits for) is waited out, then made again.
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while found.as_ref().is_some_and(|c| c.metadata.deletion_timestamp.is_some()) {
            if Instant::now() > deadline {
                return Err(start_error(format!(
                    "the run's volume claim {ns}/{name} is being deleted and still is after {SETTLE_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(POLL).await;
            found = self
                .claims()
                .get_opt(&name)
                .await
                .map_err(|e| start_error(format!("cannot read claim {ns}/{name}: {}", kube_reason(&e))))?;
        }
        if let Some(claim) = &found {
            let seeded = claim.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_SEEDED));
            if seeded.map(String::as_str) == Some("true") {
                return Ok(name);
            }
        } else {
            let mut claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "labels": labels, "annotations": exact},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}});
            if let Some(class) = storage_class {
                claim["spec"]["storageClassName"] = json!(class);
            }
            let claim: PersistentVolumeClaim =
                serde_json::from_value(claim).map_err(|e| start_error(format!("the claim: {e}")))?;
            self.claims().create(&PostParams::default(), &claim).await.map_err(|e| {
                start_error(format!("cannot create the run's volume claim {ns}/{name}: {}", kube_reason(&e)))
            })?;
            system(logs, format!("volume claim {ns}/{name} ({size}) created for the run's workspace"));
        }
        self.seed(spec, &name, image, &labels, &exact, logs, stop).await?;
        let seeded = json!({"metadata": {"annotations": {ANNOTATION_SEEDED: "true"}}});
        self.claims().patch(&name, &PatchParams::default(), &Patch::Merge(seeded)).await.map_err(|e| {
            start_error(format!("cannot mark the run's volume claim {ns}/{name} filled: {}", kube_reason(&e)))
        })?;
        Ok(name)
    }

    /// Copies the run's checkout into the claim: the checkout as a gzipped tar in Secrets
    /// of at most [`SEED_CHUNK`] bytes, which a pod of the task's image (it needs `sh`,
    /// `cat` and `tar` with gzip) mounts beside the claim and unpacks into it.
    #[allow(clippy::too_many_arguments)]
    async fn seed(
        &self,
        spec: &TaskSpec,
        claim: &str,
        image: &str,
        labels: &BTreeMap<String, String>,
        exact: &BTreeMap<String, String>,
        logs: &dyn LogSink,
        stop: &mut StopSignal,
    ) -> Result<(), ExecutorError> {
        use base64::Engine as _;
        let ns = self.config.namespace.clone();
        let archive = checkout_archive(&spec.workdir).await?;
        let pod_name = format!("{claim}-seed");
        let chunks: Vec<&[u8]> = archive.chunks(SEED_CHUNK).collect();
        let mut cleanup = SeedCleanup { pods: self.pods(), secrets: self.secrets(), names: Vec::new() };
        let workdir = spec.workdir.display().to_string();
        let mut volumes = vec![json!({"name": "workspace", "persistentVolumeClaim": {"claimName": claim}})];
        let mut mounts = vec![json!({"name": "workspace", "mountPath": workdir})];
        for (i, chunk) in chunks.iter().enumerate() {
            let part = format!("{claim}-{i:04}");
            let secret = json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": part, "labels": labels, "annotations": exact},
                "type": "Opaque", "data": {"part": base64::engine::general_purpose::STANDARD.encode(chunk)}});
            let secret: Secret =
                serde_json::from_value(secret).map_err(|e| start_error(format!("the checkout Secret: {e}")))?;
            cleanup.names.push(part.clone());
            self.secrets().create(&PostParams::default(), &secret).await.map_err(|e| {
                start_error(format!("cannot create Secret {ns}/{part} with the checkout: {}", kube_reason(&e)))
            })?;
            volumes.push(json!({"name": format!("part-{i}"), "secret": {"secretName": part}}));
            mounts.push(
                json!({"name": format!("part-{i}"), "mountPath": format!("/wharf/seed/{i:04}"), "readOnly": true}),
            );
        }
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "labels": labels, "annotations": exact},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "volumes": volumes,
            "containers": [{
                "name": CONTAINER,
                "image": image,
                "command": ["/bin/sh", "-e", "-c", "cat /wharf/seed/*/part | tar -xzf - -C \"$1\"", "sh", workdir],
                "volumeMounts": mounts,
            }],
        }});
        let pod: Pod = serde_json::from_value(pod).map_err(|e| start_error(format!("the seed pod: {e}")))?;
        cleanup.names.push(pod_name.clone());
        self.pods().create(&PostParams::default(), &pod).await.map_err(|e| {
            start_error(format!("cannot create pod {ns}/{pod_name} to fill the run's workspace: {}", kube_reason(&e)))
        })?;
        system(
            logs,
            format!(
                "pod {ns}/{pod_name} copies the checkout ({} KiB compressed) into the run's claim",
                archive.len() / 1024
            ),
        );
        let limit = spec.cluster.as_ref().and_then(|c| c.pending_limit);
        let exit = self.supervise(&pod_name, image, limit, logs, stop, LogResume::default(), &mut None).await;
        cleanup.remove().await;
        let exit = exit?;
        if let Some(reason) = exit.stopped {
            return Err(start_error(format!("the run's workspace was not filled: {reason}")));
        }
        if exit.code != Some(0) {
            return Err(start_error(format!(
                "pod {pod_name} could not unpack the checkout into the run's claim (exit {:?}): the image {image} \
                 needs `sh`, `cat` and `tar` with gzip",
                exit.code
            )));
        }
        Ok(())
    }

    /// The run's claim goes when the run ends.
    async fn release_claim(&self, run: &wharf_executor::RunEnd) {
        if !matches!(self.config.workspace, Workspace::Claim { .. }) {
            return;
        }
        let spec = TaskSpec {
            run: run.run.clone(),
            labels: run.labels.clone(),
            stage: String::new(),
            task: String::new(),
            attempt: 0,
            workdir: Default::default(),
            script: String::new(),
            image: None,
            env: Vec::new(),
            output_file: Default::default(),
            cluster: None,
        };
        let (name, _, _) = Self::claim_of(&spec);
        if let Err(e) = self.discard_pod(&name).await {
            tracing::warn!(claim = %name, error = %e, "cannot delete the run's volume claim; the next start will");
        }
    }

    fn pod_spec(
        &self,
        spec: &TaskSpec,
        name: &str,
        image: &str,
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
        claim: Option<&str>,
    ) -> serde_json::Value {
        let workdir = spec.workdir.display().to_string();
        let workspace = match claim {
            Some(claim) => json!({"name": "workspace", "persistentVolumeClaim": {"claimName": claim}}),
            None => json!({"name": "workspace", "hostPath": {"path": workdir, "type": "Directory"}}),
        };
        let mut volumes = vec![workspace];
        let mut mounts = vec![json!({"name": "workspace", "mountPath": workdir})];
        if claim.is_none()
            && let Some(outputs) = spec.output_file.parent()
            && !outputs.starts_with(&spec.workdir)
        {
            let dir = outputs.display().to_string();
            volumes.push(json!({"name": "outputs", "hostPath": {"path": dir, "type": "Directory"}}));
            mounts.push(json!({"name": "outputs", "mountPath": dir}));
        }
        let settings = spec.cluster.as_ref().map(|c| c.pod.clone()).unwrap_or_default();
        let mut container = json!({
            "name": CONTAINER,
            "image": image,
            // The script is one argument of `sh`: never pasted into another command line.
            "command": ["/bin/sh", "-e", "-c", spec.script],
            "workingDir": workdir,
            "envFrom": [{"secretRef": {"name": name}}],
            "volumeMounts": mounts,
            "terminationMessagePolicy": "File",
        });
        if !settings.resources.is_empty() {
            container["resources"] = serde_json::to_value(&settings.resources).unwrap_or_default();
        }
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "restartPolicy": "Never",
            // The account's token only when the task names an account to act as.
            "automountServiceAccountToken": settings.service_account.is_some(),
            "enableServiceLinks": false,
            "volumes": volumes,
            "containers": [container],
        }});
        let pod_spec = &mut pod["spec"];
        if let Some(account) = &settings.service_account {
            pod_spec["serviceAccountName"] = json!(account);
        }
        if !settings.node_selector.is_empty() {
            pod_spec["nodeSelector"] = json!(settings.node_selector);
        }
        if !settings.tolerations.is_empty() {
            pod_spec["tolerations"] = serde_json::to_value(&settings.tolerations).unwrap_or_default();
        }
        pod
    }

    /// Waits for the Pod to start (reporting why it waits), streams its log, acts on stop
    /// requests, and reads how its container ended (its termination message into
    /// `message`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn supervise(
        &self,
        name: &str,
        image: &str,
        spec_limit: Option<Duration>,
        logs: &dyn LogSink,
        stop: &mut StopSignal,
        resume: LogResume,
        message: &mut Option<String>,
    ) -> Result<Exit, ExecutorError> {
        let pods = self.pods();
        let mut stopped: Option<StopReason> = None;
        // A stop that came before we got here (an adopted task of a stopped run).
        if let Some(request) = requested(stop) {
            stopped = Some(request.reason);
            self.delete_with_grace(name, request.grace, request.reason, logs).await;
        }
        let mut told = String::new();
        // The reason last reported as the attempt's `pending` phase.
        let mut reported: Option<String> = None;
        let pending_since = Instant::now();
        let mut pause = FIRST_POLL;
        // The pod's changes from the first look on; opened once.
        let mut changes: Option<PodChanges> = None;
        let mut watched = false;
        let pending_limit = spec_limit.unwrap_or(self.config.pending_limit);
        // Pending: the scheduler's and the kubelet's reasons, as the task's `pending`.
        loop {
            let pod = match pods.get_opt(name).await {
                Ok(Some(p)) => p,
                Ok(None) if stopped.is_some() => return Ok(Exit { code: None, signal: None, stopped }),
                Ok(None) => return Err(start_error(format!("pod {name} disappeared before it started"))),
                Err(e) => return Err(start_error(format!("cannot read pod {name}: {}", kube_reason(&e)))),
            };
            let status = pod.status.unwrap_or_default();
            let phase = status.phase.unwrap_or_default();
            if phase != "Pending" && !phase.is_empty() {
                if reported.is_some() {
                    logs.phase(Phase::Running);
                }
                break;
            }
            let unscheduled =
                status.conditions.iter().flatten().find(|c| c.type_ == "PodScheduled" && c.status == "False");
            let waiting = status.container_statuses.iter().flatten().find_map(|c| c.state.as_ref()?.waiting.clone());
            let reason = match (unscheduled, &waiting) {
                (Some(c), _) => format!(
                    "pending: the scheduler cannot place the pod: {}",
                    c.message.as_deref().unwrap_or(c.reason.as_deref().unwrap_or(""))
                ),
                (None, Some(w)) => {
                    let why = w.reason.clone().unwrap_or_default();
                    let message = w.message.clone().unwrap_or_default();
                    if matches!(
                        why.as_str(),
                        "ErrImagePull"
                            | "ImagePullBackOff"
                            | "InvalidImageName"
                            | "CreateContainerConfigError"
                            | "CreateContainerError"
                            | "RunContainerError"
                    ) {
                        let what = if why.contains("Image") {
                            format!("cannot pull image {image}")
                        } else {
                            "the pod cannot start".to_owned()
                        };
                        return Err(start_error(format!("{what}: {why}: {message}")));
                    }
                    format!("pending: {why}")
                }
                (None, None) => "pending".to_owned(),
            };
            if reason != told {
                if reason != "pending: ContainerCreating" {
                    system(logs, reason.clone());
                }
                told = reason;
            }
            // The task is `pending` once the pod really waits: the scheduler cannot place
            // it, or it has not started within PENDING_AFTER (an image pull); a pod that
            // starts at once is `running` throughout, as on the other executors.
            let waits = unscheduled.is_some() || pending_since.elapsed() >= PENDING_AFTER;
            if waits && reported.as_deref() != Some(told.as_str()) {
                let why = told.strip_prefix("pending: ").unwrap_or("waiting for the scheduler").to_owned();
                logs.phase(Phase::Pending { reason: why });
                reported = Some(told.clone());
            }
            let limit = pending_limit;
            if pending_since.elapsed() >= limit {
                let waited = humantime(limit);
                let why = told.trim_start_matches("pending: the scheduler cannot place the pod: ");
                // Only a shortage is 资源不足; a taint or selector no node passes is the task's
                // placement, which more capacity does not help.
                let message = match unscheduled {
                    Some(_) if why.contains("Insufficient") => format!(
                        "pod {name} stayed pending for {waited}: the cluster has no node with room for it \
                         (资源不足, not enough resources): {why}; add nodes or capacity to the cluster, or lower the \
                         task's `resources` requests, `node_selector` or `tolerations`"
                    ),
                    Some(_) => format!(
                        "pod {name} stayed pending for {waited}: no node of the cluster takes it: {why}; check the \
                         task's `node_selector` and `tolerations` against the nodes' labels and taints"
                    ),
                    None => format!("pod {name} stayed pending for {waited}: {}", told.trim_start_matches("pending: ")),
                };
                return Err(start_error(message));
            }
            if !watched {
                watched = true;
                changes = self.pod_changes(name, pod.metadata.resource_version.as_deref()).await;
            }
            tokio::select! {
                () = until_changed(&mut changes, pause) => pause = back_off(pause),
                changed = stop.changed() => if changed.is_ok() && let Some(request) = requested(stop) {
                    system(logs, format!("stopping: deleted the pending pod (reason: {})", request.reason));
                    return Ok(Exit { code: None, signal: None, stopped: Some(request.reason) });
                }
            }
        }
        // Running (or already ended): the log, then the container's exit.
        // After a restart: from the second the stored log reaches, skipping the lines of
        // that second already stored (pods/log's `sinceTime` is whole seconds).
        let since_time = (resume.since_second > 0).then(|| Timestamp::from_second(resume.since_second).ok()).flatten();
        let params = LogParams {
            follow: true,
            timestamps: true,
            container: Some(CONTAINER.to_owned()),
            since_time,
            ..LogParams::default()
        };
        let mut skip = Skip { since_second: resume.since_second, left: resume.skip_lines };
        let mut watching = true;
        match pods.log_stream(name, &params).await {
            Err(e) => system(logs, format!("cannot read the pod's log: {}", kube_reason(&e))),
            Ok(stream) => {
                let mut stream = Box::pin(stream);
                let mut line = Vec::new();
                // A line longer than one read: its timestamp and the text not sent yet.
                let mut current = None;
                loop {
                    let mut limited = (&mut stream).take(MAX_LINE_BYTES as u64 * 2);
                    tokio::select! {
                        // A cancelled read keeps what it read in `line`; the next one goes on.
                        read = limited.read_until(b'\n', &mut line) => match read {
                            Ok(0) if line.is_empty() => break,
                            Ok(_) => {
                                // Ended by a newline or by the end of the log, not by the limit.
                                let whole = line.ends_with(b"\n") || limited.limit() > 0;
                                current = pod_piece(logs, current.take(), &line, whole, &mut skip);
                                line.clear();
                            }
                            Err(e) => {
                                system(logs, format!("reading the pod's log failed: {e}"));
                                break;
                            }
                        },
                        changed = stop.changed(), if watching => match changed {
                            Ok(()) => if let Some(request) = requested(stop) {
                                stopped = Some(request.reason);
                                self.delete_with_grace(name, request.grace, request.reason, logs).await;
                            },
                            Err(_) => watching = false,
                        }
                    }
                }
                if current.is_some() {
                    pod_piece(logs, current, b"", true, &mut skip);
                }
            }
        }
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut pause = FIRST_POLL;
        let (mut changes, mut watched) = (None, false);
        loop {
            let pod = pods
                .get_opt(name)
                .await
                .map_err(|e| start_error(format!("cannot read pod {name}: {}", kube_reason(&e))))?;
            let version = pod.as_ref().and_then(|p| p.metadata.resource_version.clone());
            let terminated = pod
                .as_ref()
                .and_then(|p| p.status.as_ref())
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs.first())
                .and_then(|c| c.state.as_ref()?.terminated.clone());
            if let Some(t) = terminated {
                *message = t.message.clone();
                return Ok(match (stopped, t.exit_code) {
                    (Some(reason), code @ 129..=159) => {
                        Exit { code: None, signal: Some(code - 128), stopped: Some(reason) }
                    }
                    (stopped, code) => Exit { code: Some(code), signal: None, stopped },
                });
            }
            if pod.is_none() {
                return match stopped {
                    Some(reason) => Ok(Exit { code: None, signal: None, stopped: Some(reason) }),
                    None => Err(start_error(format!("pod {name} was deleted by someone else before it ended"))),
                };
            }
            if Instant::now() > deadline {
                return Err(start_error(format!(
                    "pod {name}: its log ended but its container did not within {SETTLE_TIMEOUT:?}"
                )));
            }
            if !watched {
                watched = true;
                changes = self.pod_changes(name, version.as_deref()).await;
            }
            tokio::select! {
                () = until_changed(&mut changes, pause) => pause = back_off(pause),
                changed = stop.changed(), if watching => match changed {
                    Ok(()) => if let Some(request) = requested(stop) {
                        stopped = Some(request.reason);
                        self.delete_with_grace(name, request.grace, request.reason, logs).await;
                    },
                    Err(_) => watching = false,
                }
            }
        }
    }

    /// A watch of the pod `name` from `version` on; `None` when it cannot be opened.
    async fn pod_changes(&self, name: &str, version: Option<&str>) -> Option<PodChanges> {
        let params = WatchParams::default().fields(&format!("metadata.name={name}")).timeout(WATCH_SECONDS);
        let events = self.pods().watch(&params, version.unwrap_or("0")).await.ok()?;
        Some(events.boxed())
    }

    async fn delete_with_grace(&self, name: &str, grace: Duration, reason: StopReason, logs: &dyn LogSink) {
        // Whole seconds, rounded up: a grace below a second still gets SIGTERM first; zero
        // (a second Ctrl-C) kills at once.
        let seconds = u32::try_from(grace.as_secs() + u64::from(grace.subsec_nanos() > 0)).unwrap_or(u32::MAX);
        let params = DeleteParams { grace_period_seconds: Some(seconds), ..DeleteParams::default() };
        match self.pods().delete(name, &params).await {
            Ok(_) => {
                system(logs, format!("stopping: deleted the pod with a grace period of {seconds}s (reason: {reason})"))
            }
            Err(e) => {
                system(logs, format!("stopping (reason: {reason}): could not delete the pod: {}", kube_reason(&e)))
            }
        }
    }

    /// Takes over the pod an earlier server process started for this attempt (found by its
    /// labels, checked against the exact values in its annotations): waits for it if still
    /// pending, resumes its log after `resume`, and ends it as `run` does.
    async fn adopt_pod(
        &self,
        spec: TaskSpec,
        logs: Arc<dyn LogSink>,
        mut stop: StopSignal,
        resume: LogResume,
    ) -> Result<Option<Exit>, ExecutorError> {
        let logs = &*logs;
        let (labels, annotations) = labels_of(&spec);
        let selector: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let listed =
            self.pods().list(&ListParams::default().labels(&selector.join(","))).await.map_err(|e| {
                start_error(format!("cannot list pods in {}: {}", self.config.namespace, kube_reason(&e)))
            })?;
        let mut found: Vec<String> = listed
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                let notes = p.metadata.annotations.as_ref();
                annotations.iter().all(|(k, v)| notes.and_then(|n| n.get(k)) == Some(v))
            })
            .filter_map(|p| p.metadata.name)
            .collect();
        found.sort();
        let Some(name) = found.first().cloned() else { return Ok(None) };
        // Two pods for one attempt cannot come from Wharf; keep the first.
        for extra in &found[1..] {
            let _ = self.discard_pod(extra).await;
        }
        let image = spec.image.clone().or_else(|| self.config.default_image.clone()).unwrap_or_default();
        let mut guard = Cleanup { pods: self.pods(), secrets: self.secrets(), name: name.clone(), done: false };
        system(
            logs,
            format!("the server restarted; took over pod {}/{name} and resumed its log", self.config.namespace),
        );
        let limit = spec.cluster.as_ref().and_then(|c| c.pending_limit);
        let mut message = None;
        let exit = self.supervise(&name, &image, limit, logs, &mut stop, resume, &mut message).await;
        guard.remove().await;
        let claim = matches!(self.config.workspace, Workspace::Claim { .. });
        self.outputs_back(&spec, claim, message, exit).map(Some)
    }

    /// Pods (and env Secrets whose pod is gone) carrying the label `label`, owned by its
    /// exact value (the annotation of the same key), with the attempt their annotations
    /// name.
    async fn leftover_pods(&self, label: &str) -> Result<Vec<Leftover>, ExecutorError> {
        let ns = &self.config.namespace;
        let params = ListParams::default().labels(label);
        let pods = self
            .pods()
            .list(&params)
            .await
            .map_err(|e| start_error(format!("cannot list pods in {ns}: {}", kube_reason(&e))))?;
        let secrets = self
            .secrets()
            .list(&params)
            .await
            .map_err(|e| start_error(format!("cannot list Secrets in {ns}: {}", kube_reason(&e))))?;
        let mut left: Vec<Leftover> = pods
            .items
            .into_iter()
            .filter_map(|p| {
                let notes = p.metadata.annotations.unwrap_or_default();
                let owner = notes.get(label)?.clone();
                let attempt = (|| {
                    Some(AttemptId {
                        stage: notes.get(LABEL_STAGE)?.clone(),
                        task: notes.get(LABEL_TASK)?.clone(),
                        attempt: notes.get(LABEL_ATTEMPT)?.parse().ok()?,
                    })
                })();
                Some(Leftover { id: p.metadata.name?, owner, attempt })
            })
            .collect();
        // The claims of runs (no attempt: deleted unless a continued run makes it again).
        let claims = self
            .claims()
            .list(&params)
            .await
            .map_err(|e| start_error(format!("cannot list PersistentVolumeClaims in {ns}: {}", kube_reason(&e))))?;
        for claim in claims.items {
            if let (Some(name), Some(owner)) =
                (claim.metadata.name, claim.metadata.annotations.and_then(|mut a| a.remove(label)))
            {
                left.push(Leftover { id: name, owner, attempt: None });
            }
        }
        // A Secret whose pod was never made (the server died in between) or is gone.
        for secret in secrets.items {
            let (Some(name), Some(owner)) =
                (secret.metadata.name, secret.metadata.annotations.and_then(|mut a| a.remove(label)))
            else {
                continue;
            };
            if !left.iter().any(|l| l.id == name) {
                left.push(Leftover { id: name, owner, attempt: None });
            }
        }
        Ok(left)
    }

    async fn discard_pod(&self, name: &str) -> Result<(), ExecutorError> {
        let params = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
        for result in [
            self.pods().delete(name, &params).await.map(|_| ()),
            self.secrets().delete(name, &params).await.map(|_| ()),
            self.claims().delete(name, &params).await.map(|_| ()),
        ] {
            match result {
                Ok(()) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(start_error(format!("cannot delete {name}: {}", kube_reason(&e)))),
            }
        }
        Ok(())
    }
}

impl Executor for KubeExecutor {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn placement(&self, spec: &TaskSpec) -> String {
        let image = spec.image.as_deref().or(self.config.default_image.as_deref()).unwrap_or("(no image)");
        format!("in a pod of {image} in namespace {}", self.config.namespace)
    }

    fn supports(&self, task_type: &str) -> Result<(), ExecutorError> {
        match task_type {
            "script" => Ok(()),
            other => Err(ExecutorError::Unsupported(format!(
                "task type `{other}` does not run on the kubernetes executor yet, which runs `script` tasks"
            ))),
        }
    }

    fn run<'a>(
        &'a self,
        spec: TaskSpec,
        logs: Arc<dyn LogSink>,
        stop: StopSignal,
    ) -> BoxFuture<'a, Result<Exit, ExecutorError>> {
        Box::pin(self.run_task(spec, logs, stop))
    }

    fn adopt<'a>(
        &'a self,
        spec: TaskSpec,
        logs: Arc<dyn LogSink>,
        stop: StopSignal,
        resume: LogResume,
    ) -> BoxFuture<'a, Result<Option<Exit>, ExecutorError>> {
        Box::pin(self.adopt_pod(spec, logs, stop, resume))
    }

    fn leftovers<'a>(&'a self, label: &'a str) -> BoxFuture<'a, Result<Vec<Leftover>, ExecutorError>> {
        Box::pin(self.leftover_pods(label))
    }

    fn discard<'a>(&'a self, leftover: &'a Leftover) -> BoxFuture<'a, Result<(), ExecutorError>> {
        Box::pin(self.discard_pod(&leftover.id))
    }

    fn run_ended<'a>(&'a self, run: &'a wharf_executor::RunEnd) -> BoxFuture<'a, ()> {
        Box::pin(self.release_claim(run))
    }
}

/// Where a [`ClusterExecutor`] looks for what an earlier server process left: every
/// registered cluster with its pipeline namespace (the server's store).
pub trait ClusterSource: Send + Sync {
    fn clusters(&self) -> BoxFuture<'_, Result<Vec<(ClusterLogin, String)>, String>>;
}

/// The server's kubernetes executor: each task's pod goes to the cluster and namespace
/// its spec names (the pipeline's `cluster:`, resolved by the engine), connected under the
/// server's outbound policy.
pub struct ClusterExecutor {
    policy: wharf_outbound::Policy,
    default_image: Option<String>,
    pending_limit: Duration,
    clusters: Option<Arc<dyn ClusterSource>>,
}

impl ClusterExecutor {
    pub fn new(policy: wharf_outbound::Policy, default_image: Option<String>) -> Self {
        ClusterExecutor { policy, default_image, pending_limit: DEFAULT_PENDING_LIMIT, clusters: None }
    }

    /// Where leftovers are looked for after a restart; without one, none are found.
    pub fn with_clusters(mut self, clusters: Arc<dyn ClusterSource>) -> Self {
        self.clusters = Some(clusters);
        self
    }

    /// How long a task's pod may stay `Pending` on clusters that set no limit of their own.
    pub fn with_pending_limit(mut self, limit: Duration) -> Self {
        self.pending_limit = limit;
        self
    }

    /// The executor on one cluster's namespace.
    pub(crate) fn connect(
        &self,
        login: &ClusterLogin,
        namespace: &str,
        workspace: Workspace,
    ) -> Result<KubeExecutor, ExecutorError> {
        let conn = Connection::from_kubeconfig(
            &login.kubeconfig,
            login.context.as_deref(),
            &crate::FileAccess::Refuse,
            &self.policy,
        )
        .map_err(|e| start_error(format!("cluster `{}`: {e}", login.name)))?;
        Ok(KubeExecutor::new(
            &conn,
            KubeExecutorConfig {
                namespace: namespace.to_owned(),
                default_image: self.default_image.clone(),
                workspace,
                pending_limit: self.pending_limit,
            },
        ))
    }

    /// What every registered cluster's namespace holds with the label `label`; ids are
    /// `<cluster>/<namespace>/<pod>`.
    async fn all_leftovers(&self, label: &str) -> Result<Vec<Leftover>, ExecutorError> {
        let Some(source) = &self.clusters else { return Ok(Vec::new()) };
        let clusters = source.clusters().await.map_err(|e| start_error(format!("cannot list the clusters: {e}")))?;
        let mut all = Vec::new();
        let mut failed = Vec::new();
        for (login, namespace) in clusters {
            let found = match self.connect(&login, &namespace, Workspace::HostPath) {
                Ok(executor) => executor.leftover_pods(label).await,
                Err(e) => Err(e),
            };
            match found {
                Ok(left) => all.extend(
                    left.into_iter().map(|l| Leftover { id: format!("{}/{namespace}/{}", login.name, l.id), ..l }),
                ),
                // One unreachable cluster does not hide the others' leftovers.
                Err(e) => failed.push(format!("cluster `{}`: {e}", login.name)),
            }
        }
        if all.is_empty() && !failed.is_empty() {
            return Err(start_error(failed.join("; ")));
        }
        Ok(all)
    }

    async fn discard_leftover(&self, id: &str) -> Result<(), ExecutorError> {
        let mut parts = id.rsplitn(3, '/');
        let (Some(pod), Some(namespace), Some(cluster)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(start_error(format!("`{id}` is not a leftover of the kubernetes executor")));
        };
        let Some(source) = &self.clusters else { return Ok(()) };
        let clusters = source.clusters().await.map_err(|e| start_error(format!("cannot list the clusters: {e}")))?;
        let Some((login, _)) = clusters.iter().find(|(l, ns)| l.name == cluster && ns == namespace) else {
            // The cluster is no longer registered: nothing Wharf can reach.
            return Ok(());
        };
        self.connect(login, namespace, Workspace::HostPath)?.discard_pod(pod).await
    }

    fn on(&self, spec: &TaskSpec) -> Result<KubeExecutor, ExecutorError> {
        let Some(cluster) = &spec.cluster else {
            return Err(ExecutorError::Unsupported(format!(
                "task `{}` runs on the kubernetes executor, which needs a cluster: the pipeline's `cluster:` (a \
                 registered cluster) or the server's `--default-cluster`",
                spec.task
            )));
        };
        self.connect(&cluster.login, &cluster.namespace, Workspace::of(&cluster.workspace))
    }
}

impl fmt::Debug for ClusterExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterExecutor").field("default_image", &self.default_image).finish()
    }
}

impl Executor for ClusterExecutor {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn placement(&self, spec: &TaskSpec) -> String {
        let image = spec.image.as_deref().or(self.default_image.as_deref()).unwrap_or("(no image)");
        match &spec.cluster {
            Some(c) => format!("in a pod of {image} in namespace {} of cluster {}", c.namespace, c.login.name),
            None => format!("in a pod of {image} (no cluster named)"),
        }
    }

    fn supports(&self, task_type: &str) -> Result<(), ExecutorError> {
        match task_type {
            "script" => Ok(()),
            other => Err(ExecutorError::Unsupported(format!(
                "task type `{other}` does not run on the kubernetes executor yet, which runs `script` tasks"
            ))),
        }
    }

    fn run<'a>(
        &'a self,
        spec: TaskSpec,
        logs: Arc<dyn LogSink>,
        stop: StopSignal,
    ) -> BoxFuture<'a, Result<Exit, ExecutorError>> {
        Box::pin(async move { self.on(&spec)?.run_task(spec, logs, stop).await })
    }

    fn adopt<'a>(
        &'a self,
        spec: TaskSpec,
        logs: Arc<dyn LogSink>,
        stop: StopSignal,
        resume: LogResume,
    ) -> BoxFuture<'a, Result<Option<Exit>, ExecutorError>> {
        Box::pin(async move { self.on(&spec)?.adopt_pod(spec, logs, stop, resume).await })
    }

    fn leftovers<'a>(&'a self, label: &'a str) -> BoxFuture<'a, Result<Vec<Leftover>, ExecutorError>> {
        Box::pin(self.all_leftovers(label))
    }

    fn discard<'a>(&'a self, leftover: &'a Leftover) -> BoxFuture<'a, Result<(), ExecutorError>> {
        Box::pin(self.discard_leftover(&leftover.id))
    }

    fn run_ended<'a>(&'a self, run: &'a wharf_executor::RunEnd) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(cluster) = &run.cluster else { return };
            match self.connect(&cluster.login, &cluster.namespace, Workspace::of(&cluster.workspace)) {
                Ok(executor) => executor.release_claim(run).await,
                Err(e) => tracing::warn!(error = %e, "cannot reach the cluster to delete the run's volume claim"),
            }
        })
    }
}

/// The Pod and Secret of one attempt; dropped before [`Cleanup::remove`] ran (the `run`
/// future was cancelled), they are deleted in the background.
pub(crate) struct Cleanup {
    pub(crate) pods: Api<Pod>,
    pub(crate) secrets: Api<Secret>,
    pub(crate) name: String,
    pub(crate) done: bool,
}

impl Cleanup {
    pub(crate) async fn remove(&mut self) {
        self.done = true;
        let params = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
        // A failure leaves labelled objects, which the next start discards.
        let _ = self.pods.delete(&self.name, &params).await;
        let _ = self.secrets.delete(&self.name, &params).await;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (pods, secrets, name) = (self.pods.clone(), self.secrets.clone(), std::mem::take(&mut self.name));
            handle.spawn(async move {
                let params = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
                let _ = pods.delete(&name, &params).await;
                let _ = secrets.delete(&name, &params).await;
            });
        }
    }
}

/// Pods (and Secrets) of a run's seeding, deleted in every outcome.
struct SeedCleanup {
    pods: Api<Pod>,
    secrets: Api<Secret>,
    names: Vec<String>,
}

impl SeedCleanup {
    async fn remove(&mut self) {
        let params = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
        for name in std::mem::take(&mut self.names) {
            let _ = self.pods.delete(&name, &params).await;
            let _ = self.secrets.delete(&name, &params).await;
        }
    }
}

impl Drop for SeedCleanup {
    fn drop(&mut self) {
        if self.names.is_empty() {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (pods, secrets, names) = (self.pods.clone(), self.secrets.clone(), std::mem::take(&mut self.names));
            handle.spawn(async move {
                let params = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
                for name in names {
                    let _ = pods.delete(&name, &params).await;
                    let _ = secrets.delete(&name, &params).await;
                }
            });
        }
    }
}

/// The checkout at `dir` as a gzipped tar (`tar -czf - -C dir .`, the `tar` on the server's
/// `PATH`, never a shell), at most [`MAX_SEED_BYTES`].
async fn checkout_archive(dir: &std::path::Path) -> Result<Vec<u8>, ExecutorError> {
    use tokio::io::AsyncReadExt as _;
    let mut child = tokio::process::Command::new("tar")
        .arg("-czf")
        .arg("-")
        .arg("-C")
        .arg(dir)
        .arg(".")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| start_error(format!("cannot run `tar` to pack the checkout for the run's claim: {e}")))?;
    let mut out = Vec::new();
    let mut stdout = child.stdout.take().expect("piped");
    let read = (&mut stdout).take(MAX_SEED_BYTES as u64 + 1).read_to_end(&mut out).await;
    if out.len() > MAX_SEED_BYTES {
        return Err(start_error(format!(
            "the checkout is over {} MiB compressed, more than the `claim` workspace carries through the API server; \
             use a smaller checkout (shallow, fewer files) or the `host-path` workspace",
            MAX_SEED_BYTES / (1024 * 1024)
        )));
    }
    read.map_err(|e| start_error(format!("reading the packed checkout: {e}")))?;
    let done = child.wait_with_output().await.map_err(|e| start_error(format!("`tar` of the checkout: {e}")))?;
    if !done.status.success() {
        let said = String::from_utf8_lossy(&done.stderr);
        return Err(start_error(format!("`tar` could not pack the checkout: {}", said.trim())));
    }
    Ok(out)
}

/// The task's environment, later entries overriding earlier ones, every name one the
/// kubelet accepts.
fn environment(spec: &TaskSpec) -> Result<BTreeMap<String, String>, ExecutorError> {
    let mut env = BTreeMap::new();
    for (k, v) in &spec.env {
        let valid = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
        if !valid {
            return Err(start_error(format!(
                "task `{}`: the environment variable name {k:?} cannot be set in a pod (letters, digits, `_`, `-`, `.`; not starting with a digit)",
                spec.task
            )));
        }
        env.insert(k.clone(), v.clone());
    }
    Ok(env)
}

/// Labels (values made label-safe) and annotations (exact values) of one attempt.
fn labels_of(spec: &TaskSpec) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut exact: BTreeMap<String, String> = spec.labels.iter().cloned().collect();
    exact.insert(LABEL_RUN.to_owned(), spec.run.clone());
    exact.insert(LABEL_STAGE.to_owned(), spec.stage.clone());
    exact.insert(LABEL_TASK.to_owned(), spec.task.clone());
    exact.insert(LABEL_ATTEMPT.to_owned(), spec.attempt.to_string());
    let labels = exact.iter().map(|(k, v)| (k.clone(), label_value(v))).collect();
    (labels, exact)
}

/// A label value: at most 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends; other
/// characters become `_`.
pub fn label_value(value: &str) -> String {
    let mut v: String =
        value.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    v.truncate(63);
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned()
}

/// The lines of a resumed log already stored: those stamped before `since_second`, and
/// the first `left` stamped in or after it.
struct Skip {
    since_second: i64,
    left: u64,
}

/// One read of `pods/log?timestamps=true`: a whole line (`RFC3339 text\n`, or the log's
/// last line without a newline) when `whole`, else a piece of a line longer than a read,
/// `current` holding the line's timestamp and the text not sent yet. A line longer than
/// [`MAX_LINE_BYTES`] goes out in pieces marked `continued`, cut where the host executor
/// cuts its lines (so masking sees the cuts, and every executor's pieces are the same).
/// Returns what is held for the next read.
fn pod_piece(
    logs: &dyn LogSink,
    current: Option<(Timestamp, Vec<u8>)>,
    raw: &[u8],
    whole: bool,
    skip: &mut Skip,
) -> Option<(Timestamp, Vec<u8>)> {
    let (at, mut text) = match current {
        Some((at, mut text)) => {
            text.extend_from_slice(raw);
            (at, text)
        }
        None => {
            let (at, rest) = stamped(raw);
            (at, rest.to_vec())
        }
    };
    if whole {
        for end in [&b"\n"[..], b"\r"] {
            if text.ends_with(end) {
                text.pop();
            }
        }
    }
    // Kubernetes merges the container's stdout and stderr into one log. After a restart
    // the lines (pieces) already stored are left out.
    let mut out = |line: LogLine| {
        if line.at.as_second() < skip.since_second {
            return;
        }
        if skip.left > 0 {
            skip.left -= 1;
            return;
        }
        logs.line(line)
    };
    let mut start = 0;
    // One byte of slack past the limit, as on the host: a line of exactly
    // MAX_LINE_BYTES whose newline comes in the next read stays one line.
    while text.len() - start > MAX_LINE_BYTES + 1 {
        let cut = start + utf8_cut(&text[start..], MAX_LINE_BYTES);
        emit(&mut out, Stream::Stdout, at, &text[start..cut], true);
        start = cut;
    }
    if whole {
        emit(&mut out, Stream::Stdout, at, &text[start..], false);
        return None;
    }
    text.drain(..start);
    Some((at, text))
}

/// A log line's timestamp and the text after it (now and the whole line, if it has none).
fn stamped(raw: &[u8]) -> (Timestamp, &[u8]) {
    if let Some(i) = raw.iter().position(|b| *b == b' ')
        && let Some(at) = std::str::from_utf8(&raw[..i]).ok().and_then(|t| t.parse::<Timestamp>().ok())
    {
        return (at, &raw[i + 1..]);
    }
    (Timestamp::now(), raw)
}

/// The stop request now (the watch's guard is not held across an await).
fn requested(stop: &mut StopSignal) -> Option<StopRequest> {
    *stop.borrow_and_update()
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// `10m`, `90s`, `1h5m`: a duration as pipeline YAML writes it.
fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}

pub(crate) fn kube_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

fn start_error(message: String) -> ExecutorError {
    ExecutorError::Start { message, source: None }
}

pub(crate) fn system(logs: &dyn LogSink, text: String) {
    logs.line(LogLine::system(text));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_at_a_pod_soon_then_backs_off_to_the_poll() {
        let mut pause = FIRST_POLL;
        let mut looks = vec![pause];
        for _ in 0..6 {
            pause = back_off(pause);
            looks.push(pause);
        }
        let ms: Vec<u128> = looks.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [10, 20, 40, 80, 160, 200, 200]);
    }

    #[test]
    fn label_values_are_safe() {
        assert_eq!(label_value("web#12"), "web_12");
        assert_eq!(label_value("ab12/7"), "ab12_7");
        assert_eq!(label_value("-x-"), "x");
        assert_eq!(label_value(&"a".repeat(80)).len(), 63);
    }
}
