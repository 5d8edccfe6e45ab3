//! The kubelet (when `Options::kubelet` is set): Pods that clients create (not the ones the
//! scripted workload controller makes) really run, one container each, on the local Docker
//! Engine through the `docker` CLI. Their phases, container states and Events are written as a
//! kubelet writes them; `pods/log` reads the container's log from the daemon; deleting a Pod
//! stops its container (SIGTERM, SIGKILL after the grace period) and removes it.
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
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

use crate::api::{Shared, now};
use crate::controller::FAULT_ANNOTATION;
use crate::scheduler;

/// The label on every container the kubelet starts: which fake started it.
pub const INSTANCE_LABEL: &str = "kube-fake.wharf.dev/instance";

/// How long `docker create`, `start`, `stop` or `rm` may take (a pull included).
const DOCKER_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub struct Kubelet {
    docker: String,
    instance: String,
    /// Stop requests by pod uid: the grace period in seconds.
    pods: Mutex<HashMap<String, watch::Sender<Option<u64>>>>,
    /// The cpu and memory requests of the pods placed on the node and not yet ended.
    bound: Mutex<HashMap<String, (f64, f64)>>,
    /// `docker create` calls under way: dropping the fake waits for them (on threads of
    /// their own, so a blocked runtime cannot hold them up) before removing containers.
    creating: Arc<AtomicUsize>,
}

impl Kubelet {
    pub fn new(docker: String, instance: String) -> Self {
        Kubelet {
            docker,
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
    /// `docker create` calls under way have ended (at most 30 s).
    pub fn remove_all(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.creating.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let filter = format!("label={INSTANCE_LABEL}={}", self.instance);
        let Ok(out) = std::process::Command::new(&self.docker).args(["ps", "-aq", "--filter", &filter]).output() else {
            return;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new(&self.docker).args(["rm", "-f"]).args(&ids).output();
        }
    }

    /// `docker create …` on a blocking thread that counts itself in `creating`.
    async fn create(&self, args: Vec<String>) -> Result<String, String> {
        let (docker, creating) = (self.docker.clone(), self.creating.clone());
        creating.fetch_add(1, Ordering::SeqCst);
        let done = tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(&docker).args(&args).stdin(Stdio::null()).output();
            creating.fetch_sub(1, Ordering::SeqCst);
            match out {
                Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
                Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
                Err(e) => Err(format!("cannot run {docker}: {e}")),
            }
        });
        done.await.unwrap_or_else(|e| Err(format!("docker create: {e}")))
    }

    async fn docker(&self, args: &[String]) -> Result<String, String> {
        let run = Command::new(&self.docker).args(args).stdin(Stdio::null()).kill_on_drop(true).output();
        match tokio::time::timeout(DOCKER_TIMEOUT, run).await {
            Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
            Ok(Ok(out)) => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
            Ok(Err(e)) => Err(format!("cannot run {}: {e}", self.docker)),
            Err(_) => Err(format!("docker {} took longer than {DOCKER_TIMEOUT:?}", args.first().map_or("", |a| a))),
        }
    }
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
        let _ = kubelet.docker(&["rm".into(), "-f".into(), Kubelet::container(&uid)]).await;
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
        (None, _) => match create_args(shared, kubelet, pod, &c) {
            Err(why) => Err(("CreateContainerConfigError", why)),
            Ok(args) => {
                shared.pod_status(pod, waiting("ContainerCreating", ""));
                kubelet.create(args).await.map_err(|e| {
                    if e.contains("pull") || e.contains("manifest") || e.contains("Unable to find image") {
                        ("ErrImagePull", e)
                    } else {
                        ("CreateContainerError", e)
                    }
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
    if let Err(e) = kubelet.docker(&["start".into(), container.clone()]).await {
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
    let wait_args = ["wait".to_owned(), container.clone()];
    let waited = kubelet.docker(&wait_args);
    tokio::pin!(waited);
    let code = loop {
        tokio::select! {
            code = &mut waited => break code,
            changed = stop.changed() => {
                if changed.is_err() { continue; }
                let grace = stop.borrow_and_update().unwrap_or(0);
                shared.event(pod, "Normal", "Killing", &format!("Stopping container {cname}"), Some(&path), "kubelet");
                let _ = kubelet.docker(&["stop".into(), "-t".into(), grace.to_string(), container.clone()]).await;
            }
        }
    };
    let code: i64 = code.ok().and_then(|c| c.parse().ok()).unwrap_or(-1);
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

/// `docker create` for the pod's one container: its environment (values, Secrets' keys),
/// working directory, hostPath volumes and command.
fn create_args(shared: &Shared, kubelet: &Kubelet, pod: &Value, c: &Value) -> Result<Vec<String>, String> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
    let mut args: Vec<String> = vec!["create".into(), "--name".into(), Kubelet::container(uid), "--init".into()];
    args.extend(["--label".into(), format!("{INSTANCE_LABEL}={}", kubelet.instance)]);
    // As a kubelet does: the pod's name is its hostname.
    let mut hostname = pod["metadata"]["name"].as_str().unwrap_or("").to_owned();
    hostname.truncate(63);
    if !hostname.is_empty() {
        args.extend(["--hostname".into(), hostname]);
    }
    let secret = |name: &str| shared.secret_data(ns, name).ok_or_else(|| format!("secret \"{name}\" not found"));
    for from in c["envFrom"].as_array().into_iter().flatten() {
        let Some(name) = from.pointer("/secretRef/name").and_then(Value::as_str) else {
            return Err("kube-fake's kubelet reads envFrom only from a secretRef".into());
        };
        for (k, v) in secret(name)? {
            args.extend(["-e".into(), format!("{k}={v}")]);
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
        args.extend(["-e".into(), format!("{name}={value}")]);
    }
    if let Some(dir) = c["workingDir"].as_str() {
        args.extend(["-w".into(), dir.to_owned()]);
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
        args.extend(["-v".into(), format!("{host}:{}{ro}", m["mountPath"].as_str().unwrap_or(""))]);
    }
    // The termination message: a file the container may write whatever user it runs as.
    let log = pod_dir.join(TERMINATION_LOG);
    std::fs::write(&log, b"").map_err(|e| io("the termination log", e))?;
    std::fs::set_permissions(&log, std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .map_err(|e| io("the termination log", e))?;
    let path = c["terminationMessagePath"].as_str().unwrap_or("/dev/termination-log");
    args.extend(["-v".into(), format!("{}:{path}", log.display())]);
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().into_iter().flatten().map(|s| s.as_str().unwrap_or("").to_owned()).collect()
    };
    let command = strings(&c["command"]);
    if let Some(first) = command.first() {
        args.extend(["--entrypoint".into(), first.clone()]);
    }
    args.push(c["image"].as_str().unwrap_or("").to_owned());
    args.extend(command.into_iter().skip(1));
    args.extend(strings(&c["args"]));
    Ok(args)
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
    let mut args = vec!["logs".to_owned()];
    if follow {
        args.push("--follow".into());
    }
    if timestamps {
        args.push("--timestamps".into());
    }
    if let Some(since) = since {
        args.extend(["--since".into(), since]);
    }
    let tailed = tail.is_some();
    if let Some(tail) = tail {
        args.extend(["--tail".into(), tail]);
    }
    args.push(Kubelet::container(pod["metadata"]["uid"].as_str().unwrap_or("")));
    let mut child = docker_logs(&kubelet.docker, &args).map_err(|e| format!("cannot run {}: {e}", kubelet.docker))?;
    // `docker logs --follow` can end before the daemon stored the container's last
    // message (a last line without a newline): a kubelet serves the whole log once the
    // container ended, so what came after is read once more without following, past
    // the lines each stream already sent.
    let again = (follow && !tailed).then(|| args.iter().filter(|a| *a != "--follow").cloned().collect::<Vec<_>>());
    let docker = kubelet.docker.clone();
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let join = |line: &[u8]| if timestamps { join_partials(line) } else { line.to_vec() };
        // Forwards a pipe's lines after the first `skip`; how many lines it read in all.
        let forward = |pipe: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>, tx: mpsc::Sender<_>, skip: u64| async move {
            let Some(pipe) = pipe else { return 0 };
            let mut lines = BufReader::new(pipe);
            let mut line = Vec::new();
            let mut read = 0u64;
            loop {
                line.clear();
                match lines.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => return read,
                    Ok(_) => {
                        read += 1;
                        if read > skip && tx.send(Ok(Frame::data(Bytes::from(join(&line))))).await.is_err() {
                            return read;
                        }
                    }
                }
            }
        };
        let pipes = |child: &mut tokio::process::Child| {
            let out: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>> =
                child.stdout.take().map(|o| Box::new(o) as _);
            let err: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>> =
                child.stderr.take().map(|o| Box::new(o) as _);
            (out, err)
        };
        let (out, err) = pipes(&mut child);
        let (sent_out, sent_err) = tokio::join!(forward(out, tx.clone(), 0), forward(err, tx.clone(), 0));
        let _ = child.wait().await;
        let Some(args) = again else { return };
        let Ok(mut child) = docker_logs(&docker, &args) else { return };
        let (out, err) = pipes(&mut child);
        tokio::join!(forward(out, tx.clone(), sent_out), forward(err, tx, sent_err));
        let _ = child.wait().await;
    });
    Ok(rx)
}

/// `docker <args>` (a `logs` command) with its output piped.
fn docker_logs(docker: &str, args: &[String]) -> std::io::Result<tokio::process::Child> {
    Command::new(docker)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
}

/// The json-file log driver keeps a line longer than 16 KiB as pieces ("partial
/// messages"), and `docker logs --timestamps` stamps each piece: `T1 <16 KiB>T2 <16 KiB>T3
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

/// `sinceSeconds` as docker's `--since` takes it.
pub fn since_seconds(seconds: &str) -> Option<String> {
    seconds.parse::<u64>().ok().map(|s| format!("{s}s"))
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
