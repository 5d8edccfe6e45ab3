//! The kubelet (when `Options::kubelet` is set): Pods that clients create (not the ones the
//! scripted workload controller makes) really run, one container each, on the local Docker
//! Engine through its API on the unix socket (`engine.rs`). Their phases, container states and
//! Events are written as a kubelet writes them; `pods/log` reads the container's log from the
//! daemon; deleting a Pod stops its container (SIGTERM, SIGKILL after the grace period) and
//! removes it.
//!
//! Before it runs, a pod is placed by the scheduler of `scheduler.rs` (nodeSelector, cpu and
//! memory requests against the node's allocatable); one that does not fit stays `Pending`
//! with `FailedScheduling` until it fits or is deleted.
//!
//! Volumes are `hostPath` (bind mounts), `persistentVolumeClaim` (the claim's directory
//! on this machine, [`Kubelet::claim_dir`]: claims are bound at once, as by a
//! local-path provisioner, and their data removed with them) and `secret` (the Secret's keys, or its
//! `items`, written to a directory of the pod's and bind-mounted); the container's
//! `terminationMessagePath` (default `/dev/termination-log`) is a file of the pod's too, and
//! what the container wrote there (at most 4096 bytes, as a kubelet reads) is its
//! terminated state's `message`.
//!
//! Faults (annotation `kube-fake.wharf.dev/fault` on the Pod or its Namespace): `unschedulable` keeps it
//! `Pending` with the scheduler's `Unschedulable` condition and a `FailedScheduling` Event;
//! `image-pull-backoff` keeps it `Pending` with the container waiting in `ErrImagePull`
//! (a real pull that fails does the same with the daemon's message).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::api::{Shared, now};
use crate::controller::FAULT_ANNOTATION;
use crate::engine::{CreateError, Demux, Engine};
use crate::scheduler;

/// The label on every container the kubelet starts: which fake started it.
pub const INSTANCE_LABEL: &str = "kube-fake.wharf.dev/instance";

#[derive(Debug)]
pub struct Kubelet {
    engine: Engine,
    instance: String,
    /// Stop requests by pod uid: the grace period in seconds.
    pods: Mutex<HashMap<String, watch::Sender<Option<u64>>>>,
    /// The cpu and memory requests of the pods placed on the node and not yet ended.
    bound: Mutex<HashMap<String, (f64, f64)>>,
    /// Container creations under way: dropping the fake waits for them (on threads of
    /// their own, so a runtime that ends cannot cut them off) before removing containers.
    creating: Arc<AtomicUsize>,
}

impl Kubelet {
    /// `engine`: the `--kubelet` value (see [`Engine::new`]).
    pub fn new(engine: &str, instance: String) -> Self {
        Kubelet {
            engine: Engine::new(engine),
            instance,
            pods: Mutex::new(HashMap::new()),
            bound: Mutex::new(HashMap::new()),
            creating: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn container(uid: &str) -> String {
        format!("kube-fake-{uid}")
    }

    /// Where the pod's secret volumes and termination message live on this machine;
    /// removed when the pod ends.
    fn pod_dir(&self, uid: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("kube-fake-{}-{uid}", self.instance))
    }

    /// Whether the kubelet runs this pod.
    pub fn runs(&self, uid: &str) -> bool {
        self.pods.lock().unwrap_or_else(|e| e.into_inner()).contains_key(uid)
    }

    /// Places the pod when it fits beside the pods placed already (one decision at a
    /// time); `Err`: the scheduler's reason why not.
    fn try_bind(&self, shared: &Shared, pod: &Value, uid: &str) -> Result<(), String> {
        let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        let others = bound.iter().filter(|(u, _)| *u != uid).fold((0.0, 0.0), |a, (_, r)| (a.0 + r.0, a.1 + r.1));
        scheduler::fit(shared, pod, others)?;
        bound.insert(uid.to_owned(), scheduler::requests(pod));
        Ok(())
    }

    /// The pod ended: its requests are free again.
    fn unbind(&self, uid: &str) {
        self.bound.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }

    /// Asks the pod's container to stop within `grace` seconds.
    pub fn stop(&self, uid: &str, grace: u64) {
        if let Some(tx) = self.pods.lock().unwrap_or_else(|e| e.into_inner()).get(uid) {
            tx.send_if_modified(|g| {
                let sooner = g.is_none_or(|old| grace < old);
                if sooner {
                    *g = Some(grace);
                }
                sooner
            });
        }
    }

    /// Removes every container this fake started (on drop of the fake), after the
    /// creations under way have ended (at most 30 s), and the directories of its pods and
    /// claims. Blocks; runs on a thread and runtime of its own, since the fake may be
    /// dropped inside or outside a runtime.
    pub fn remove_all(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.creating.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let (engine, instance) = (self.engine.clone(), self.instance.clone());
        let _ = std::thread::spawn(move || {
            on_own_runtime(async move {
                for id in engine.labelled(INSTANCE_LABEL, &instance).await.unwrap_or_default() {
                    let _ = engine.remove(&id).await;
                }
            })
        })
        .join();
        // Pods still running when the fake goes never reach their own cleanup.
        let mine = format!("kube-fake-{}-", self.instance);
        for entry in std::fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&mine) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// Creates the pod's container (pulling its image if need be) on a thread that
    /// counts itself in `creating`, so that it finishes even if this runtime ends.
    async fn create(&self, name: String, config: Value) -> Result<String, CreateError> {
        let (engine, creating) = (self.engine.clone(), self.creating.clone());
        creating.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let created = on_own_runtime(async move { engine.create(&name, &config).await });
            creating.fetch_sub(1, Ordering::SeqCst);
            let _ = tx.send(created.unwrap_or_else(|e| Err(CreateError::Other(e))));
        });
        rx.await.unwrap_or_else(|_| Err(CreateError::Other("the container creation ended without an answer".into())))
    }
}

/// Runs `f` to its end on a current-thread runtime of its own (on a thread that has none).
fn on_own_runtime<F: std::future::Future>(f: F) -> Result<F::Output, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("kube-fake's kubelet cannot start a runtime: {e}"))?;
    Ok(runtime.block_on(f))
}

/// Starts running a pod a client created.
pub fn admit(shared: Arc<Shared>, pod: &Value) {
    let Some(kubelet) = shared.kubelet() else { return };
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_owned();
    let (tx, rx) = watch::channel(None);
    kubelet.pods.lock().unwrap_or_else(|e| e.into_inner()).insert(uid.clone(), tx);
    let pod = pod.clone();
    tokio::spawn(async move {
        run_pod(&shared, &kubelet, &pod, rx).await;
        kubelet.unbind(&uid);
        kubelet.pods.lock().unwrap_or_else(|e| e.into_inner()).remove(&uid);
        let _ = kubelet.engine.remove(&Kubelet::container(&uid)).await;
        let _ = std::fs::remove_dir_all(kubelet.pod_dir(&uid));
    });
}

async fn run_pod(shared: &Shared, kubelet: &Kubelet, pod: &Value, mut stop: watch::Receiver<Option<u64>>) {
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
    // The pod's own fault, else its namespace's (a test cannot always annotate the pods a
    // client makes).
    let ns_obj = shared.namespace(pod["metadata"]["namespace"].as_str().unwrap_or(""));
    let fault_of = |o: &Value| {
        o.pointer("/metadata/annotations")
            .and_then(|a| a.get(FAULT_ANNOTATION))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let fault = fault_of(pod).or_else(|| ns_obj.as_ref().and_then(fault_of));
    let fault = fault.as_deref();
    let containers = pod.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
    let c = containers.first().cloned().unwrap_or(json!({}));
    let cname = c["name"].as_str().unwrap_or("").to_owned();
    let image = c["image"].as_str().unwrap_or("").to_owned();
    let waiting = |reason: &str, message: &str| {
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
               "containerStatuses": [{"name": cname, "image": image, "ready": false, "restartCount": 0,
                                      "state": {"waiting": {"reason": reason, "message": message}}}]})
    };
    if fault == Some("unschedulable") {
        let nodes = shared.node_count();
        let message = format!(
            "0/{nodes} nodes are available: {nodes} Insufficient cpu. preemption: 0/{nodes} nodes are available: {nodes} No preemption victims found for incoming pod."
        );
        shared.event(pod, "Warning", "FailedScheduling", &message, None, "default-scheduler");
        shared.pod_status(
            pod,
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": message, "lastTransitionTime": now()}]}),
        );
        let _ = stop.wait_for(Option::is_some).await;
        shared.pod_gone(pod);
        return;
    }
    // The scheduler: nodeSelector and requests against the node, tried again while the
    // pod waits (a pod that ends frees its requests), until it fits or is deleted.
    let mut told = String::new();
    while let Err(message) = kubelet.try_bind(shared, pod, uid) {
        if message != told {
            shared.event(pod, "Warning", "FailedScheduling", &message, None, "default-scheduler");
            shared.pod_status(pod, scheduler::unschedulable_status(&message));
            told = message;
        }
        tokio::select! {
            _ = stop.wait_for(Option::is_some) => {
                shared.pod_gone(pod);
                return;
            }
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    shared.event(
        pod,
        "Normal",
        "Scheduled",
        &format!("Successfully assigned {} to kube-fake-node-0", ns_name(pod)),
        None,
        "default-scheduler",
    );
    let path = format!("spec.containers{{{cname}}}");
    let refused = if containers.len() != 1 || pod.pointer("/spec/initContainers").is_some_and(|i| i != &json!([])) {
        Some("kube-fake's kubelet runs pods of exactly one container and no init containers".to_owned())
    } else {
        None
    };
    let created = match (refused, fault) {
        (Some(why), _) => Err(("CreateContainerConfigError", why)),
        (None, Some("image-pull-backoff")) => Err((
            "ErrImagePull",
            format!("failed to pull and unpack image \"{image}\": not found (fault image-pull-backoff)"),
        )),
        (None, _) => match create_config(shared, kubelet, pod, &c) {
            Err(why) => Err(("CreateContainerConfigError", why)),
            Ok(config) => {
                shared.pod_status(pod, waiting("ContainerCreating", ""));
                kubelet.create(Kubelet::container(uid), config).await.map_err(|e| match e {
                    CreateError::Pull(e) => ("ErrImagePull", e),
                    CreateError::Other(e) => ("CreateContainerError", e),
                })
            }
        },
    };
    if let Err((reason, message)) = created {
        if reason == "ErrImagePull" {
            shared.event(pod, "Normal", "Pulling", &format!("Pulling image \"{image}\""), Some(&path), "kubelet");
            shared.event(
                pod,
                "Warning",
                "Failed",
                &format!("Failed to pull image \"{image}\": {message}"),
                Some(&path),
                "kubelet",
            );
            shared.event(pod, "Warning", "Failed", "Error: ErrImagePull", Some(&path), "kubelet");
        } else {
            shared.event(pod, "Warning", "Failed", &format!("Error: {message}"), Some(&path), "kubelet");
        }
        shared.pod_status(pod, waiting(reason, &message));
        let _ = stop.wait_for(Option::is_some).await;
        shared.pod_gone(pod);
        return;
    }
    let container = Kubelet::container(uid);
    if stop.borrow().is_some() {
        shared.pod_gone(pod);
        return;
    }
    if let Err(e) = kubelet.engine.start(&container).await {
        shared.event(pod, "Warning", "Failed", &format!("Error: {e}"), Some(&path), "kubelet");
        shared.pod_status(pod, waiting("RunContainerError", &e));
        let _ = stop.wait_for(Option::is_some).await;
        shared.pod_gone(pod);
        return;
    }
    let started = now();
    shared.event(
        pod,
        "Normal",
        "Pulled",
        &format!("Container image \"{image}\" already present on machine"),
        Some(&path),
        "kubelet",
    );
    shared.event(pod, "Normal", "Created", &format!("Created container: {cname}"), Some(&path), "kubelet");
    shared.event(pod, "Normal", "Started", &format!("Started container {cname}"), Some(&path), "kubelet");
    shared.pod_status(
        pod,
        json!({"phase": "Running", "startTime": started, "podIP": "10.0.0.10",
               "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
               "containerStatuses": [{"name": cname, "image": image, "ready": true, "restartCount": 0, "started": true,
                                      "state": {"running": {"startedAt": started}}}]}),
    );
    let waited = kubelet.engine.wait(&container);
    tokio::pin!(waited);
    let code = loop {
        tokio::select! {
            code = &mut waited => break code,
            changed = stop.changed() => {
                if changed.is_err() { continue; }
                let grace = stop.borrow_and_update().unwrap_or(0);
                shared.event(pod, "Normal", "Killing", &format!("Stopping container {cname}"), Some(&path), "kubelet");
                let _ = kubelet.engine.stop(&container, grace).await;
            }
        }
    };
    let code: i64 = code.unwrap_or(-1);
    let (phase, reason) = if code == 0 { ("Succeeded", "Completed") } else { ("Failed", "Error") };
    let mut terminated = json!({"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": now()});
    if let Some(message) = termination_message(&kubelet.pod_dir(uid)) {
        terminated["message"] = json!(message);
    }
    shared.pod_status(
        pod,
        json!({"phase": phase, "startTime": started,
               "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
               "containerStatuses": [{"name": cname, "image": image, "ready": false, "restartCount": 0, "started": false,
                                      "state": {"terminated": terminated}}]}),
    );
    kubelet.unbind(uid);
    // The container (and its log) stays until the pod is deleted.
    let _ = stop.wait_for(Option::is_some).await;
    shared.pod_gone(pod);
}

fn ns_name(pod: &Value) -> String {
    format!(
        "{}/{}",
        pod["metadata"]["namespace"].as_str().unwrap_or(""),
        pod["metadata"]["name"].as_str().unwrap_or("")
    )
}

/// The Engine API's create body for the pod's one container: its environment (values,
/// Secrets' keys), working directory, volumes, command, the fake's label and `Init`.
fn create_config(shared: &Shared, kubelet: &Kubelet, pod: &Value, c: &Value) -> Result<Value, String> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
    let mut config = json!({
        "Image": c["image"].as_str().unwrap_or(""),
        "Labels": {INSTANCE_LABEL: kubelet.instance},
    });
    // As a kubelet does: the pod's name is its hostname.
    let mut hostname = pod["metadata"]["name"].as_str().unwrap_or("").to_owned();
    hostname.truncate(63);
    if !hostname.is_empty() {
        config["Hostname"] = json!(hostname);
    }
    let mut env: Vec<String> = Vec::new();
    let mut binds: Vec<String> = Vec::new();
    let secret = |name: &str| shared.secret_data(ns, name).ok_or_else(|| format!("secret \"{name}\" not found"));
    for from in c["envFrom"].as_array().into_iter().flatten() {
        let Some(name) = from.pointer("/secretRef/name").and_then(Value::as_str) else {
            return Err("kube-fake's kubelet reads envFrom only from a secretRef".into());
        };
        for (k, v) in secret(name)? {
            env.push(format!("{k}={v}"));
        }
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or("");
        let value = if let Some(v) = e.get("value") {
            v.as_str().unwrap_or("").to_owned()
        } else if let Some(r) = e.pointer("/valueFrom/secretKeyRef") {
            let (s, k) = (r["name"].as_str().unwrap_or(""), r["key"].as_str().unwrap_or(""));
            secret(s)?.remove(k).ok_or_else(|| format!("couldn't find key {k} in Secret {ns}/{s}"))?
        } else {
            String::new()
        };
        env.push(format!("{name}={value}"));
    }
    config["Env"] = json!(env);
    if let Some(dir) = c["workingDir"].as_str() {
        config["WorkingDir"] = json!(dir);
    }
    let volumes = pod.pointer("/spec/volumes").and_then(Value::as_array).cloned().unwrap_or_default();
    let pod_dir = kubelet.pod_dir(uid);
    let io = |what: &str, e: std::io::Error| format!("kube-fake's kubelet cannot write {what}: {e}");
    std::fs::create_dir_all(&pod_dir).map_err(|e| io("the pod's directory", e))?;
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or("");
        let Some(v) = volumes.iter().find(|v| v["name"] == name) else {
            return Err(format!("volume \"{name}\" is mounted but not defined"));
        };
        let host = if let Some(host) = v.pointer("/hostPath/path").and_then(Value::as_str) {
            host.to_owned()
        } else if let Some(claim) = v.pointer("/persistentVolumeClaim/claimName").and_then(Value::as_str) {
            let claims = crate::resources::find("", "v1", "persistentvolumeclaims").expect("a listed kind");
            if shared.get(claims, ns, claim).is_none() {
                return Err(format!("persistentvolumeclaim \"{claim}\" not found"));
            }
            let dir = kubelet.claim_dir(ns, claim);
            std::fs::create_dir_all(&dir).map_err(|e| io(&format!("the volume of claim \"{claim}\""), e))?;
            // Any user of the container may write it, as a fresh local-path volume.
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                .map_err(|e| io(&format!("the volume of claim \"{claim}\""), e))?;
            dir.display().to_string()
        } else if let Some(from) = v.get("secret") {
            let secret_name = from["secretName"].as_str().unwrap_or("");
            let data =
                shared.secret_bytes(ns, secret_name).ok_or_else(|| format!("secret \"{secret_name}\" not found"))?;
            let dir =
                secret_volume(&pod_dir, name, from, &data).map_err(|e| io(&format!("secret volume \"{name}\""), e))?;
            dir.display().to_string()
        } else {
            return Err(format!(
                "kube-fake's kubelet mounts only hostPath, persistentVolumeClaim and secret volumes; volume \"{name}\" \
                 is another kind"
            ));
        };
        let ro = if m["readOnly"] == json!(true) { ":ro" } else { "" };
        binds.push(format!("{host}:{}{ro}", m["mountPath"].as_str().unwrap_or("")));
    }
    // The termination message: a file the container may write whatever user it runs as.
    let log = pod_dir.join(TERMINATION_LOG);
    std::fs::write(&log, b"").map_err(|e| io("the termination log", e))?;
    std::fs::set_permissions(&log, std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .map_err(|e| io("the termination log", e))?;
    let path = c["terminationMessagePath"].as_str().unwrap_or("/dev/termination-log");
    binds.push(format!("{}:{path}", log.display()));
    config["HostConfig"] = json!({"Init": true, "Binds": binds});
    // `command` replaces the image's entrypoint (and drops its cmd), `args` its cmd; the
    // command's first word is the entrypoint, the rest go before the args, as
    // `docker create --entrypoint` does.
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().into_iter().flatten().map(|s| s.as_str().unwrap_or("").to_owned()).collect()
    };
    let command = strings(&c["command"]);
    let mut cmd: Vec<String> = command.iter().skip(1).cloned().collect();
    cmd.extend(strings(&c["args"]));
    if let Some(first) = command.first() {
        config["Entrypoint"] = json!([first]);
    }
    if !cmd.is_empty() {
        config["Cmd"] = json!(cmd);
    }
    Ok(config)
}

impl Kubelet {
    /// Where the volume of the claim `name` in `ns` lives on this machine: a directory of
    /// this fake's made when a pod first mounts it and removed with the claim (a local-path
    /// provisioner's `Delete` reclaim policy). The fake's claims are bound at once and its
    /// kubelet runs every pod here.
    pub fn claim_dir(&self, ns: &str, name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("kube-fake-{}-pvc-{ns}-{name}", self.instance))
    }

    /// The claim was deleted: its volume's data go.
    pub fn release_claim(&self, ns: &str, name: &str) {
        let _ = std::fs::remove_dir_all(self.claim_dir(ns, name));
    }
}

/// The file in the pod's directory behind the container's `terminationMessagePath`.
const TERMINATION_LOG: &str = "termination-log";

/// What the container wrote to its termination message, as a kubelet reads it: at most
/// 4096 bytes; `None` when it wrote nothing.
fn termination_message(pod_dir: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(pod_dir.join(TERMINATION_LOG)).ok()?.take(4096).read_to_end(&mut bytes).ok()?;
    (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned())
}

/// Writes a `secret` volume's files (every key of the Secret, or its `items` at their
/// `path`s) into a directory of the pod's; returns it.
fn secret_volume(
    pod_dir: &std::path::Path,
    volume: &str,
    source: &Value,
    data: &HashMap<String, Vec<u8>>,
) -> std::io::Result<std::path::PathBuf> {
    let dir = pod_dir.join(format!("secret-{volume}"));
    std::fs::create_dir_all(&dir)?;
    let other = |m: String| std::io::Error::other(m);
    let files: Vec<(String, Vec<u8>)> = match source["items"].as_array() {
        Some(items) => items
            .iter()
            .map(|i| {
                let (key, path) = (i["key"].as_str().unwrap_or(""), i["path"].as_str().unwrap_or(""));
                let value = data.get(key).ok_or_else(|| other(format!("the Secret has no key {key}")))?;
                Ok((path.to_owned(), value.clone()))
            })
            .collect::<std::io::Result<_>>()?,
        None => data.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    for (path, value) in files {
        if path.is_empty() || path.starts_with('/') || path.split('/').any(|p| p == "..") {
            return Err(other(format!("item path {path:?} must be relative and must not contain '..'")));
        }
        let file = dir.join(&path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(file, value)?;
    }
    Ok(dir)
}

/// The log of a pod the kubelet runs, as `pods/log` serves it (`follow`, `timestamps`,
/// `sinceTime`, `sinceSeconds`, `tailLines`), stdout and stderr merged line by line.
/// `Err`: the container has not started (the API server's 400 message).
pub fn log(
    kubelet: &Kubelet,
    pod: &Value,
    follow: bool,
    timestamps: bool,
    since: Option<String>,
    tail: Option<String>,
) -> Result<mpsc::Receiver<Result<Frame<Bytes>, Infallible>>, String> {
    if let Some(waiting) = pod
        .pointer("/status/containerStatuses/0/state/waiting")
        .or_else(|| (pod.pointer("/status/containerStatuses").is_none()).then_some(&Value::Null))
    {
        let reason = waiting["reason"].as_str().unwrap_or("ContainerCreating");
        let cname = pod.pointer("/spec/containers/0/name").and_then(Value::as_str).unwrap_or("");
        let name = pod["metadata"]["name"].as_str().unwrap_or("");
        return Err(format!("container \"{cname}\" in pod \"{name}\" is waiting to start: {reason}"));
    }
    let tailed = tail.is_some();
    let mut query = String::from("stdout=1&stderr=1");
    if timestamps {
        query.push_str("&timestamps=1");
    }
    if let Some(since) = since {
        query.push_str(&format!("&since={since}"));
    }
    if let Some(tail) = tail {
        let lines: u64 = tail.parse().map_err(|_| format!("tailLines: Invalid value: \"{tail}\": must be a number"))?;
        query.push_str(&format!("&tail={lines}"));
    }
    // The follow can end before the daemon stored the container's last message (a last
    // line without a newline): a kubelet serves the whole log once the container ended,
    // so what came after is read once more without following, past the lines each
    // stream already sent.
    let again = (follow && !tailed).then(|| query.clone());
    if follow {
        query.push_str("&follow=1");
    }
    let engine = kubelet.engine.clone();
    let container = Kubelet::container(pod["metadata"]["uid"].as_str().unwrap_or(""));
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let sent = forward_log(&engine, &container, &query, timestamps, &tx, [0, 0]).await;
        if let Some(query) = again {
            forward_log(&engine, &container, &query, timestamps, &tx, sent).await;
        }
    });
    Ok(rx)
}

/// The most of one log line held before it is sent as it is (a container may write
/// without newlines). Past it, with `timestamps`, the json-file driver's stamps inside
/// the rest of that line are not taken out (clients keep far less of a line: Wharf 64 KiB).
const MAX_LINE: usize = 1024 * 1024;

/// Forwards the container's log as the daemon sends it for `query`, line by line, after
/// the first `skip` lines of each stream (stdout, stderr); how many lines of each stream
/// it read in all.
async fn forward_log(
    engine: &Engine,
    container: &str,
    query: &str,
    timestamps: bool,
    tx: &mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
    skip: [u64; 2],
) -> [u64; 2] {
    let mut read = [0u64; 2];
    let Ok(mut body) = engine.logs(container, query).await else { return read };
    let mut demux = Demux::default();
    let mut partial: [Vec<u8>; 2] = Default::default();
    let mut lines: Vec<(usize, Vec<u8>)> = Vec::new();
    let send = async |i: usize, line: Vec<u8>, read: &mut [u64; 2]| {
        read[i] += 1;
        if read[i] <= skip[i] {
            return true;
        }
        let line = if timestamps { join_partials(&line) } else { line };
        tx.send(Ok(Frame::data(Bytes::from(line)))).await.is_ok()
    };
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else { continue };
        demux.feed(&data, |stream, payload| {
            // 1 stdout, 2 stderr; the daemon's own errors (3) are not the container's.
            let i = match stream {
                1 => 0,
                2 => 1,
                _ => return,
            };
            for piece in payload.split_inclusive(|b| *b == b'\n') {
                partial[i].extend_from_slice(piece);
                if piece.ends_with(b"\n") || partial[i].len() >= MAX_LINE {
                    lines.push((i, std::mem::take(&mut partial[i])));
                }
            }
        });
        for (i, line) in lines.drain(..) {
            if !send(i, line, &mut read).await {
                return read;
            }
        }
    }
    for (i, line) in partial.into_iter().enumerate() {
        if !line.is_empty() && !send(i, line, &mut read).await {
            break;
        }
    }
    read
}

/// The json-file log driver keeps a line longer than 16 KiB as pieces ("partial
/// messages"), and the logs endpoint with `timestamps` stamps each piece: `T1 <16 KiB>T2 <16 KiB>T3
/// rest`. A kubelet serves such a line whole, stamped once: the stamps after the first
/// are dropped.
fn join_partials(line: &[u8]) -> Vec<u8> {
    const PIECE: usize = 16 * 1024;
    let Some(first) = stamp_len(line) else { return line.to_vec() };
    let mut out = line[..first].to_vec();
    let mut rest = &line[first..];
    while rest.len() > PIECE {
        let (piece, after) = rest.split_at(PIECE);
        out.extend_from_slice(piece);
        rest = stamp_len(after).map_or(after, |n| &after[n..]);
    }
    out.extend_from_slice(rest);
    out
}

/// The length of the `2026-12-07T13:10:41.836452890Z ` that `bytes` starts with, if it does.
fn stamp_len(bytes: &[u8]) -> Option<usize> {
    let space = bytes.iter().take(40).position(|b| *b == b' ')?;
    let stamp = &bytes[..space];
    let looks = stamp.len() >= 20 && stamp[4] == b'-' && stamp[10] == b'T' && stamp.ends_with(b"Z");
    looks.then_some(space + 1)
}

/// `sinceTime` (RFC 3339) as the Engine API's `since` (Unix seconds and nanoseconds);
/// `Err`: the API server's 400 message.
pub fn since_time(time: &str) -> Result<String, String> {
    let t: jiff::Timestamp =
        time.parse().map_err(|e| format!("sinceTime: Invalid value: \"{time}\": not an RFC 3339 time: {e}"))?;
    Ok(format!("{}.{:09}", t.as_second(), t.subsec_nanosecond().max(0)))
}

/// `sinceSeconds` as the Engine API's `since`: that many seconds before now.
pub fn since_seconds(seconds: &str) -> Option<String> {
    let seconds = seconds.parse::<i64>().ok()?;
    Some((jiff::Timestamp::now().as_second() - seconds).to_string())
}

/// A Secret's `data` (base64) and `stringData`, decoded.
pub fn decode_secret(secret: &Value) -> HashMap<String, String> {
    decode_secret_bytes(secret).into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned())).collect()
}

/// A Secret's keys and their bytes as a kubelet writes them into a volume (`data`
/// decoded, `stringData` as given).
pub fn decode_secret_bytes(secret: &Value) -> HashMap<String, Vec<u8>> {
    let mut out = HashMap::new();
    for (k, v) in secret["data"].as_object().into_iter().flatten() {
        if let Some(bytes) = v.as_str().and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok()) {
            out.insert(k.clone(), bytes);
        }
    }
    for (k, v) in secret["stringData"].as_object().into_iter().flatten() {
        out.insert(k.clone(), v.as_str().unwrap_or("").as_bytes().to_vec());
    }
    out
}
