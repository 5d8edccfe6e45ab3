//! The HTTP side: routing, the object store, watches and `Status` errors.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::discovery::{group_list, openapi_group, openapi_index, resource_list, version};
use crate::resources::{self, RESOURCES, Resource};
use crate::select::{FieldSelector, LabelSelector};
use crate::{controller, ssa};

pub type Body = BoxBody<Bytes, Infallible>;

/// Request bodies larger than this are refused (a real server's limit is 3 MiB per object).
const MAX_BODY: usize = 8 << 20;
/// Watch events kept for `?watch=true&resourceVersion=N`; older versions get 410 Gone.
const EVENT_LOG: usize = 10_000;
/// A watch ends after this long unless `timeoutSeconds` asks for less.
const MAX_WATCH: Duration = Duration::from_secs(1800);

type Key = (&'static str, &'static str, String, String);

/// One change, as watches see it.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub resource: &'static Resource,
    pub namespace: String,
    pub kind: &'static str,
    pub object: Value,
}

#[derive(Debug, Default)]
pub struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    log: VecDeque<Arc<Event>>,
}

#[derive(Debug)]
pub struct Shared {
    store: Mutex<Store>,
    events: broadcast::Sender<Arc<Event>>,
    token: String,
    /// A second token that may only read (get, list, watch), as a user bound to the `view`
    /// ClusterRole; its writes are answered 403 as RBAC words them.
    restricted_token: Option<String>,
    pub rollout_delay: Duration,
    /// Runs client-made Pods on the local Docker Engine (`Options::kubelet`).
    kubelet: std::sync::OnceLock<Arc<crate::kubelet::Kubelet>>,
}

/// The validating webhook the `admission-denied` fault speaks for.
pub const ADMISSION_WEBHOOK: &str = "deny.kube-fake.wharf.dev";

/// The user the restricted token authenticates as, in RBAC's 403 messages.
pub const RESTRICTED_USER: &str = "system:serviceaccount:default:kube-fake-viewer";

fn key(r: &'static Resource, ns: &str, name: &str) -> Key {
    (r.group, r.plural, ns.to_owned(), name.to_owned())
}

pub fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn uid() -> String {
    let h = random_hex(16);
    format!("{}-{}-4{}-a{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

impl Shared {
    pub fn new(token: String, restricted_token: Option<String>, rollout_delay: Duration) -> Arc<Self> {
        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            events,
            token,
            restricted_token,
            rollout_delay,
            kubelet: std::sync::OnceLock::new(),
        });
        {
            let mut store = shared.lock();
            let ns = resources::find("", "v1", "namespaces").expect("namespaces are listed");
            for name in ["default", "kube-system", "kube-public"] {
                let obj = json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": name, "uid": uid(), "creationTimestamp": now(),
                                 "labels": {"kubernetes.io/metadata.name": name}},
                    "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
                shared.commit(&mut store, ns, "", name, obj, "ADDED");
            }
        }
        shared
    }

    /// Stores `ready` nodes with a `Ready` condition `True`, then `unready` ones with `False`
    /// (reason `KubeletNotReady`), as a kubelet would report them; each with `taints`.
    pub fn add_nodes(&self, ready: usize, unready: usize, taints: &[crate::scheduler::Taint]) {
        let mut store = self.lock();
        let node = resources::find("", "v1", "nodes").expect("nodes are listed");
        for i in 0..ready + unready {
            let name = format!("kube-fake-node-{i}");
            let condition = if i < ready {
                json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
                       "message": "kubelet is posting ready status"})
            } else {
                json!({"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                       "message": "container runtime network not ready"})
            };
            let obj = json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "uid": uid(), "creationTimestamp": now(),
                             "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                        "kubernetes.io/arch": "amd64"}},
                "spec": if taints.is_empty() { json!({}) } else {
                    json!({"taints": taints.iter().map(crate::scheduler::Taint::to_json).collect::<Vec<_>>()})
                },
                "status": {"conditions": [condition],
                           "capacity": {"cpu": crate::scheduler::NODE_CPU, "memory": crate::scheduler::NODE_MEMORY, "pods": "110"},
                           "allocatable": {"cpu": crate::scheduler::NODE_CPU, "memory": crate::scheduler::NODE_MEMORY, "pods": "110"},
                           "nodeInfo": {"kubeletVersion": "v1.32.0-kube-fake", "kernelVersion": "",
                                        "osImage": "kube-fake", "containerRuntimeVersion": "",
                                        "operatingSystem": "linux", "architecture": "amd64"}}});
            self.commit(&mut store, node, "", &name, obj, "ADDED");
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores (or, for `DELETED`, removes) an object under a new resource version and tells
    /// the watches. Returns the object as stored.
    fn commit(
        &self,
        store: &mut Store,
        r: &'static Resource,
        ns: &str,
        name: &str,
        mut obj: Value,
        kind: &'static str,
    ) -> Value {
        store.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(store.rv.to_string());
        if kind == "DELETED" {
            store.objects.remove(&key(r, ns, name));
        } else {
            store.objects.insert(key(r, ns, name), obj.clone());
        }
        let event = Arc::new(Event { rv: store.rv, resource: r, namespace: ns.to_owned(), kind, object: obj.clone() });
        if store.log.len() >= EVENT_LOG {
            store.log.pop_front();
        }
        store.log.push_back(event.clone());
        let _ = self.events.send(event);
        obj
    }

    pub fn get(&self, r: &'static Resource, ns: &str, name: &str) -> Option<Value> {
        self.lock().objects.get(&key(r, ns, name)).cloned()
    }

    /// Writes the pods and then the status the controller computed from `seen`, if the
    /// object is still the one it saw (same uid and generation). Pods it owns that are not
    /// in `pods` are deleted.
    pub fn settle(&self, r: &'static Resource, seen: &Value, status: Value, pods: Vec<Value>) {
        let field = |k: &str| seen["metadata"][k].as_str().unwrap_or("").to_owned();
        let (ns, name, uid) = (field("namespace"), field("name"), field("uid"));
        let (ns, uid) = (ns.as_str(), uid.as_str());
        let mut store = self.lock();
        let Some(mut obj) = store.objects.get(&key(r, ns, &name)).cloned() else { return };
        if obj["metadata"]["uid"] != uid || obj["metadata"]["generation"] != seen["metadata"]["generation"] {
            return;
        }
        let pod_res = resources::find("", "v1", "pods").expect("pods are listed");
        for (pod_name, old) in owned_pods(&store, ns, uid) {
            if !pods.iter().any(|p| p["metadata"]["name"] == pod_name) {
                self.forget_events(&mut store, ns, old["metadata"]["uid"].as_str().unwrap_or(""));
                self.commit(&mut store, pod_res, ns, &pod_name, old, "DELETED");
            }
        }
        for mut pod in pods {
            let pod_name = pod["metadata"]["name"].as_str().unwrap_or("").to_owned();
            match store.objects.get(&key(pod_res, ns, &pod_name)).cloned() {
                Some(old) if old["spec"] == pod["spec"] && old["status"] == pod["status"] => {}
                Some(old) => {
                    pod["metadata"]["uid"] = old["metadata"]["uid"].clone();
                    pod["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
                    self.commit(&mut store, pod_res, ns, &pod_name, pod, "MODIFIED");
                }
                None => {
                    pod["metadata"]["uid"] = json!(uid_v4());
                    pod["metadata"]["creationTimestamp"] = json!(now());
                    let event_res = resources::find("", "v1", "events").expect("events are listed");
                    for mut event in controller::pod_events(&obj, &pod) {
                        let event_name = event["metadata"]["name"].as_str().unwrap_or("").to_owned();
                        event["metadata"]["uid"] = json!(uid_v4());
                        event["metadata"]["creationTimestamp"] = json!(now());
                        self.commit(&mut store, event_res, ns, &event_name, event, "ADDED");
                    }
                    self.commit(&mut store, pod_res, ns, &pod_name, pod, "ADDED");
                }
            }
        }
        if obj["status"] != status {
            obj["status"] = status;
            self.commit(&mut store, r, ns, &name, obj, "MODIFIED");
        }
    }
}

impl Shared {
    pub fn set_kubelet(&self, kubelet: Arc<crate::kubelet::Kubelet>) {
        let _ = self.kubelet.set(kubelet);
    }

    pub fn kubelet(&self) -> Option<Arc<crate::kubelet::Kubelet>> {
        self.kubelet.get().cloned()
    }

    pub fn namespace(&self, name: &str) -> Option<Value> {
        self.get(resources::find("", "v1", "namespaces").expect("namespaces are listed"), "", name)
    }

    /// The nodes whose `Ready` condition is `True`.
    pub fn ready_nodes(&self) -> Vec<Value> {
        self.lock()
            .objects
            .iter()
            .filter(|((g, p, _, _), _)| g.is_empty() && *p == "nodes")
            .map(|(_, node)| node.clone())
            .filter(|node| {
                node.pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            })
            .collect()
    }

    pub fn node_count(&self) -> usize {
        self.lock().objects.keys().filter(|(g, p, _, _)| g.is_empty() && *p == "nodes").count()
    }

    /// The decoded data of Secret `name` in `ns`.
    pub fn secret_data(&self, ns: &str, name: &str) -> Option<std::collections::HashMap<String, String>> {
        let r = resources::find("", "v1", "secrets").expect("secrets are listed");
        self.get(r, ns, name).map(|s| crate::kubelet::decode_secret(&s))
    }

    /// The Secret's keys and their bytes (for secret volumes, which may hold binary data).
    pub fn secret_bytes(&self, ns: &str, name: &str) -> Option<std::collections::HashMap<String, Vec<u8>>> {
        let r = resources::find("", "v1", "secrets").expect("secrets are listed");
        self.get(r, ns, name).map(|s| crate::kubelet::decode_secret_bytes(&s))
    }

    /// Records an Event about `pod`, as a scheduler or kubelet does.
    pub fn event(
        &self,
        pod: &Value,
        kind: &str,
        reason: &str,
        message: &str,
        field_path: Option<&str>,
        component: &str,
    ) {
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
        let name = pod["metadata"]["name"].as_str().unwrap_or("");
        let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
        let mut involved = json!({"apiVersion": "v1", "kind": "Pod", "name": name, "namespace": ns, "uid": uid});
        if let Some(path) = field_path {
            involved["fieldPath"] = json!(path);
        }
        let t = now();
        let event_name = format!("{name}.{}", random_hex(8));
        let event = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": event_name, "namespace": ns, "uid": uid_v4(), "creationTimestamp": t},
            "involvedObject": involved, "reason": reason, "message": message, "type": kind,
            "source": {"component": component, "host": "kube-fake-node-0"}, "reportingComponent": component,
            "reportingInstance": "kube-fake-node-0", "firstTimestamp": t, "lastTimestamp": t, "count": 1});
        let r = resources::find("", "v1", "events").expect("events are listed");
        let mut store = self.lock();
        let pods = resources::find("", "v1", "pods").expect("pods are listed");
        if store.objects.get(&key(pods, ns, name)).is_some_and(|p| p["metadata"]["uid"] == uid) {
            self.commit(&mut store, r, ns, &event_name, event, "ADDED");
        }
    }

    /// Sets the status of `pod` if it is still stored (same uid).
    pub fn pod_status(&self, pod: &Value, status: Value) {
        let (ns, name) =
            (pod["metadata"]["namespace"].as_str().unwrap_or(""), pod["metadata"]["name"].as_str().unwrap_or(""));
        let r = resources::find("", "v1", "pods").expect("pods are listed");
        let mut store = self.lock();
        let Some(mut obj) = store.objects.get(&key(r, ns, name)).cloned() else { return };
        if obj["metadata"]["uid"] != pod["metadata"]["uid"] {
            return;
        }
        obj["status"] = status;
        self.commit(&mut store, r, ns, name, obj, "MODIFIED");
    }

    /// The kubelet is done with `pod`: a pod being deleted gracefully goes now, with its Events.
    pub fn pod_gone(&self, pod: &Value) {
        let (ns, name) =
            (pod["metadata"]["namespace"].as_str().unwrap_or(""), pod["metadata"]["name"].as_str().unwrap_or(""));
        let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
        let r = resources::find("", "v1", "pods").expect("pods are listed");
        let mut store = self.lock();
        let Some(obj) = store.objects.get(&key(r, ns, name)).cloned() else { return };
        if obj["metadata"]["uid"] != uid {
            return;
        }
        self.forget_events(&mut store, ns, uid);
        self.commit(&mut store, r, ns, name, obj, "DELETED");
    }

    /// Deletes the Events about the object `uid` (a real cluster lets them expire after an hour).
    fn forget_events(&self, store: &mut Store, ns: &str, uid: &str) {
        let event_res = resources::find("", "v1", "events").expect("events are listed");
        let about: Vec<(String, Value)> = store
            .objects
            .iter()
            .filter(|((g, p, n, _), e)| {
                g.is_empty()
                    && *p == "events"
                    && n == ns
                    && e.pointer("/involvedObject/uid").and_then(Value::as_str) == Some(uid)
            })
            .map(|((_, _, _, name), e)| (name.clone(), e.clone()))
            .collect();
        for (name, event) in about {
            self.commit(store, event_res, ns, &name, event, "DELETED");
        }
    }
}

/// The pods in `ns` whose first owner reference is `owner_uid`.
fn owned_pods(store: &Store, ns: &str, owner_uid: &str) -> Vec<(String, Value)> {
    store
        .objects
        .iter()
        .filter(|((g, p, n, _), obj)| {
            g.is_empty()
                && *p == "pods"
                && n == ns
                && obj.pointer("/metadata/ownerReferences/0/uid").and_then(Value::as_str) == Some(owner_uid)
        })
        .map(|((_, _, _, name), obj)| (name.clone(), obj.clone()))
        .collect()
}

/// A random version 4 UUID.
pub fn uid_v4() -> String {
    uid()
}

// ---- responses -------------------------------------------------------------------------

fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed())
        .expect("a valid response")
}

/// A Kubernetes `Status` failure.
#[derive(Debug)]
pub struct Failure {
    code: StatusCode,
    reason: &'static str,
    message: String,
    details: Value,
}

impl Failure {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Failure { code, reason, message: message.into(), details: Value::Null }
    }

    fn about(mut self, r: &Resource, name: &str) -> Self {
        self.details = json!({"name": name, "group": r.group, "kind": r.plural});
        self
    }

    fn not_found(r: &Resource, name: &str) -> Self {
        Failure::new(StatusCode::NOT_FOUND, "NotFound", format!("{} \"{name}\" not found", r.qualified()))
            .about(r, name)
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Failure::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    fn invalid(r: &Resource, name: &str, message: impl Into<String>) -> Self {
        let message = format!("{} \"{name}\" is invalid: {}", r.kind, message.into());
        Failure::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message).about(r, name)
    }

    fn status(&self) -> Value {
        let mut s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "message": self.message, "reason": self.reason, "code": self.code.as_u16()});
        if !self.details.is_null() {
            s["details"] = self.details.clone();
        }
        s
    }

    fn response(&self) -> Response<Body> {
        json_response(self.code, &self.status())
    }
}

type Answer = Result<Response<Body>, Failure>;

fn ok(body: &Value) -> Answer {
    Ok(json_response(StatusCode::OK, body))
}

// ---- requests --------------------------------------------------------------------------

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, Default)]
struct Query(BTreeMap<String, String>);

impl Query {
    fn parse(q: Option<&str>) -> Self {
        let mut map = BTreeMap::new();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(percent_decode(k), percent_decode(v));
        }
        Query(map)
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

/// What a request asks for, once the path is read.
struct Target {
    resource: &'static Resource,
    namespace: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn route_resource(group: &str, version: &str, rest: &[&str]) -> Result<Target, Failure> {
    let lookup = |plural: &str| {
        resources::find(group, version, plural).ok_or_else(|| {
            Failure::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("the server could not find the requested resource ({group}/{version} {plural})"),
            )
        })
    };
    let target = |r: &'static Resource, ns: &str, name: Option<&&str>, sub: Option<&&str>| Target {
        resource: r,
        namespace: ns.to_owned(),
        name: name.map(|n| n.to_string()),
        subresource: sub.map(|s| s.to_string()),
    };
    match rest {
        ["namespaces", ns, plural, tail @ ..] if tail.len() <= 2 && !matches!(*plural, "status" | "finalize") => {
            let r = lookup(plural)?;
            if !r.namespaced {
                return Err(Failure::new(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{} is not namespaced", r.qualified()),
                ));
            }
            Ok(target(r, ns, tail.first(), tail.get(1)))
        }
        [plural, tail @ ..] if tail.len() <= 2 => {
            let r = lookup(plural)?;
            if r.namespaced && !tail.is_empty() {
                return Err(Failure::new(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "the server could not find the requested resource",
                ));
            }
            Ok(target(r, "", tail.first(), tail.get(1)))
        }
        _ => Err(Failure::new(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource")),
    }
}

pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let token =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let read_only = match token {
        Some(t) if t == shared.token => false,
        Some(t) if shared.restricted_token.as_deref() == Some(t) => true,
        _ => return Ok(Failure::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized").response()),
    };
    Ok(route(shared, req, read_only).await.unwrap_or_else(|f| f.response()))
}

/// RBAC's 403 for a write by the read-only user, worded as the API server words it.
fn rbac_forbidden(method: &Method, t: &Target) -> Failure {
    let verb = match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::DELETE => "delete",
        _ => "patch",
    };
    let r = t.resource;
    let resource = match &t.subresource {
        Some(sub) => format!("{}/{sub}", r.plural),
        None => r.plural.to_owned(),
    };
    let scope =
        if r.namespaced { format!("in the namespace \"{}\"", t.namespace) } else { "at the cluster scope".to_owned() };
    let why = format!(
        "User \"{RESTRICTED_USER}\" cannot {verb} resource \"{resource}\" in API group \"{}\" {scope}",
        r.group
    );
    let message = match &t.name {
        Some(name) => format!("{} \"{name}\" is forbidden: {why}", r.qualified()),
        None => format!("{} is forbidden: {why}", r.qualified()),
    };
    let failure = Failure::new(StatusCode::FORBIDDEN, "Forbidden", message);
    failure.about(r, t.name.as_deref().unwrap_or(""))
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>, read_only: bool) -> Answer {
    let path = req.uri().path().to_owned();
    let query = Query::parse(req.uri().query());
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    if req.method() == Method::GET {
        match segments.as_slice() {
            ["version"] => return ok(&version()),
            ["api"] => {
                return ok(&json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}));
            }
            ["apis"] => return ok(&group_list()),
            ["api", "v1"] => return ok(&resource_list("", "v1")),
            ["apis", g] => {
                let list = group_list();
                let found = list["groups"].as_array().and_then(|gs| gs.iter().find(|x| x["name"] == *g).cloned());
                return found.map_or_else(|| Err(Failure::new(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource")), |g| ok(&json!({"kind": "APIGroup", "apiVersion": "v1", "name": g["name"], "versions": g["versions"], "preferredVersion": g["preferredVersion"]})));
            }
            ["openapi", "v3"] => return ok(&openapi_index()),
            ["openapi", "v3", "api", "v1"] => return ok(&openapi_group("", "v1")),
            ["openapi", "v3", "apis", g, v] if resources::groups().iter().any(|(gg, vv)| gg == g && vv == v) => {
                return ok(&openapi_group(g, v));
            }
            ["apis", g, v] if resources::groups().iter().any(|(gg, vv)| gg == g && vv == v) => {
                return ok(&resource_list(g, v));
            }
            _ => {}
        }
    }
    let target = match segments.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => route_resource("", "v1", rest)?,
        ["apis", g, v, rest @ ..] if !rest.is_empty() => route_resource(g, v, rest)?,
        _ => {
            return Err(Failure::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
    };
    let method = req.method().clone();
    if read_only && method != Method::GET {
        return Err(rbac_forbidden(&method, &target));
    }
    if target.resource.namespaced && target.namespace.is_empty() && method != Method::GET {
        return Err(Failure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} {path}: {} live in a namespace (/namespaces/{{ns}}/…)", target.resource.qualified()),
        ));
    }
    let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let agent = req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("unknown").to_owned();
    let manager = query
        .get("fieldManager")
        .map(str::to_owned)
        .unwrap_or_else(|| agent.split('/').next().unwrap_or("unknown").to_owned());
    let body = if matches!(method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
        let bytes = Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                Failure::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "RequestEntityTooLarge",
                    format!("reading the request body: {e}"),
                )
            })?
            .to_bytes();
        if content_type.starts_with("application/vnd.kubernetes.protobuf") {
            let obj = crate::proto::decode(&bytes)
                .map_err(|e| Failure::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType", e))?;
            Some(Bytes::from(obj.to_string()))
        } else {
            Some(bytes)
        }
    } else {
        None
    };
    let w = Write { shared: &shared, t: &target, query: &query, manager };
    match (&method, target.name.as_deref(), target.subresource.as_deref()) {
        (&Method::GET, None, None) if query.flag("watch") => watch(shared.clone(), &target, &query),
        (&Method::GET, None, None) => list(&shared, &target, &query, &accept),
        (&Method::POST, None, None) => w.create(parse_json(body.as_ref())?),
        (&Method::GET, Some(name), None | Some("status")) => {
            let obj = shared
                .get(target.resource, &target.namespace, name)
                .ok_or_else(|| Failure::not_found(target.resource, name))?;
            if accept.contains("as=Table") { ok(&table(target.resource, &[obj], "")) } else { ok(&obj) }
        }
        (&Method::GET, Some(name), Some("log")) if target.resource.kind == "Pod" => {
            let pod = shared
                .get(target.resource, &target.namespace, name)
                .ok_or_else(|| Failure::not_found(target.resource, name))?;
            if let Some(kubelet) = shared.kubelet()
                && kubelet.runs(pod["metadata"]["uid"].as_str().unwrap_or(""))
            {
                let since = match query.get("sinceTime") {
                    Some(time) => Some(crate::kubelet::since_time(time).map_err(Failure::bad_request)?),
                    None => query.get("sinceSeconds").and_then(crate::kubelet::since_seconds),
                };
                let rx = crate::kubelet::log(
                    &kubelet,
                    &pod,
                    query.flag("follow"),
                    query.flag("timestamps"),
                    since,
                    query.get("tailLines").map(str::to_owned),
                )
                .map_err(Failure::bad_request)?;
                let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed();
                return Ok(Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "text/plain")
                    .header(header::TRANSFER_ENCODING, "chunked")
                    .body(body)
                    .expect("a valid response"));
            }
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Full::new(Bytes::from(controller::pod_log(&pod, query.get("container")))).boxed())
                .expect("a valid response"))
        }
        (&Method::PUT, Some(name), sub) => w.replace(name, sub, parse_json(body.as_ref())?),
        (&Method::PATCH, Some(name), sub) => w.patch(name, sub, &content_type, body.unwrap_or_default()),
        (&Method::DELETE, Some(name), None) => w.delete(name, body.as_ref()),
        _ => Err(Failure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not supported on {path} by kube-fake"),
        )),
    }
}

fn parse_json(body: Option<&Bytes>) -> Result<Value, Failure> {
    let bytes = body.map(|b| b.as_ref()).unwrap_or(b"");
    serde_json::from_slice(bytes)
        .map_err(|e| Failure::bad_request(format!("the request body is not JSON (kube-fake reads JSON only): {e}")))
}

// ---- reads -----------------------------------------------------------------------------

struct Filter {
    resource: &'static Resource,
    namespace: String,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn new(t: &Target, q: &Query) -> Result<Self, Failure> {
        let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or("")).map_err(Failure::bad_request)?;
        let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or("")).map_err(Failure::bad_request)?;
        Ok(Filter { resource: t.resource, namespace: t.namespace.clone(), labels, fields })
    }

    fn matches(&self, r: &Resource, ns: &str, obj: &Value) -> bool {
        std::ptr::eq(r, self.resource)
            && (self.namespace.is_empty() || self.namespace == ns)
            && self.labels.matches(obj)
            && self.fields.matches(obj)
    }
}

fn list(shared: &Shared, t: &Target, q: &Query, accept: &str) -> Answer {
    let filter = Filter::new(t, q)?;
    let store = shared.lock();
    let items: Vec<Value> = store
        .objects
        .iter()
        .filter(|((g, p, ns, _), obj)| {
            *g == t.resource.group && *p == t.resource.plural && filter.matches(t.resource, ns, obj)
        })
        .map(|(_, obj)| obj.clone())
        .collect();
    let rv = store.rv.to_string();
    drop(store);
    if accept.contains("as=Table") {
        return ok(&table(t.resource, &items, &rv));
    }
    // Metadata only, as a real server answers a client that asks for it (kube-rs's
    // `list_metadata`, `kubectl get -o name`).
    if accept.contains("as=PartialObjectMetadataList") {
        let items: Vec<Value> = items
            .into_iter()
            .map(
                |o| json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}),
            )
            .collect();
        return ok(&json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                          "metadata": {"resourceVersion": rv}, "items": items}));
    }
    ok(&json!({"kind": format!("{}List", t.resource.kind), "apiVersion": t.resource.api_version(),
               "metadata": {"resourceVersion": rv}, "items": items}))
}

/// `kubectl get`'s table: Name and Age for every kind; a PersistentVolumeClaim's status,
/// volume, capacity, access modes and storage class between them, as the API server prints.
fn table(r: &Resource, items: &[Value], rv: &str) -> Value {
    let now = jiff::Timestamp::now();
    let claim = r.kind == "PersistentVolumeClaim";
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            let age = obj["metadata"]["creationTimestamp"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| human_age(now.as_second() - t.as_second()))
                .unwrap_or_else(|| "<unknown>".into());
            let mut cells = vec![obj["metadata"]["name"].clone()];
            if claim {
                let modes: Vec<&str> = obj
                    .pointer("/status/accessModes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(|m| match m {
                        "ReadWriteOnce" => "RWO",
                        "ReadOnlyMany" => "ROX",
                        "ReadWriteMany" => "RWX",
                        "ReadWriteOncePod" => "RWOP",
                        other => other,
                    })
                    .collect();
                let text = |p: &str| json!(obj.pointer(p).and_then(Value::as_str).unwrap_or(""));
                cells.extend([
                    text("/status/phase"),
                    text("/spec/volumeName"),
                    text("/status/capacity/storage"),
                    json!(modes.join(",")),
                    json!(obj.pointer("/spec/storageClassName").and_then(Value::as_str).unwrap_or("<unset>")),
                    json!("<unset>"),
                ]);
            }
            cells.push(json!(age));
            json!({"cells": cells, "object": obj})
        })
        .collect();
    let column = |name: &str, format: &str| json!({"name": name, "type": "string", "format": format, "description": "", "priority": 0});
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": format!("Name of the {}", r.singular), "priority": 0}),
    ];
    if claim {
        for name in ["Status", "Volume", "Capacity", "Access Modes", "StorageClass", "VolumeAttributesClass"] {
            columns.push(column(name, ""));
        }
    }
    columns.push(
        json!({"name": "Age", "type": "string", "format": "", "description": "Time since creation", "priority": 0}),
    );
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
        "columnDefinitions": columns, "rows": rows})
}

fn human_age(secs: i64) -> String {
    match secs.max(0) {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn watch(shared: Arc<Shared>, t: &Target, q: &Query) -> Answer {
    let filter = Filter::new(t, q)?;
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(MAX_WATCH)
        .min(MAX_WATCH);
    let since: Option<u64> = match q.get("resourceVersion") {
        None | Some("" | "0") => None,
        Some(v) => Some(v.parse().map_err(|_| Failure::bad_request(format!("resourceVersion {v:?} is not a number")))?),
    };
    let initial_end = q.flag("sendInitialEvents");
    let (mut backlog, mut live, cut) = {
        let store = shared.lock();
        let live = shared.events.subscribe();
        let backlog: Vec<Bytes> = match since {
            None => store
                .objects
                .iter()
                .filter(|((g, p, ns, _), obj)| {
                    *g == t.resource.group && *p == t.resource.plural && filter.matches(t.resource, ns, obj)
                })
                .map(|(_, obj)| watch_line("ADDED", obj))
                .collect(),
            Some(rv) => {
                let oldest = store.log.front().map_or(store.rv + 1, |e| e.rv);
                if rv + 1 < oldest {
                    let gone = Failure::new(
                        StatusCode::GONE,
                        "Expired",
                        format!("too old resource version: {rv} ({})", oldest - 1),
                    );
                    vec![watch_line("ERROR", &gone.status())]
                } else {
                    store
                        .log
                        .iter()
                        .filter(|e| e.rv > rv && filter.matches(e.resource, &e.namespace, &e.object))
                        .map(|e| watch_line(e.kind, &e.object))
                        .collect()
                }
            }
        };
        (backlog, live, store.rv)
    };
    if initial_end {
        let mark = json!({"kind": t.resource.kind, "apiVersion": t.resource.api_version(),
            "metadata": {"resourceVersion": cut.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
        backlog.push(watch_line("BOOKMARK", &mark));
    }
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    tokio::spawn(async move {
        for line in backlog.drain(..) {
            if tx.send(Ok(Frame::data(line))).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let event = match tokio::time::timeout_at(deadline, live.recv()).await {
                Ok(Ok(e)) => e,
                // Lagged or closed or timed out: the stream ends and the client watches again.
                _ => return,
            };
            if event.rv <= cut || !filter.matches(event.resource, &event.namespace, &event.object) {
                continue;
            }
            if tx.send(Ok(Frame::data(watch_line(event.kind, &event.object)))).await.is_err() {
                return;
            }
        }
    });
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed();
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(body)
        .expect("a valid response"))
}

// ---- writes ----------------------------------------------------------------------------

struct Write<'a> {
    shared: &'a Arc<Shared>,
    t: &'a Target,
    query: &'a Query,
    manager: String,
}

fn has_spec_change(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            for k in ["metadata", "status", "apiVersion", "kind"] {
                m.remove(k);
            }
        }
        v
    };
    strip(old) != strip(new)
}

impl Write<'_> {
    fn r(&self) -> &'static Resource {
        self.t.resource
    }

    fn dry_run(&self) -> bool {
        self.query.get("dryRun") == Some("All")
    }

    /// Checks kind, apiVersion, name and namespace of a request body.
    fn check_body(&self, obj: &mut Value, name: Option<&str>) -> Result<String, Failure> {
        let r = self.r();
        if !obj.is_object() {
            return Err(Failure::bad_request("the request body is not a JSON object"));
        }
        for (field, want) in [("kind", r.kind.to_owned()), ("apiVersion", r.api_version())] {
            match obj.get(field).and_then(Value::as_str) {
                None => obj[field] = json!(want),
                Some(got) if got == want => {}
                Some(got) => {
                    return Err(Failure::bad_request(format!(
                        "the body's {field} {got:?} does not match the request's {want:?}"
                    )));
                }
            }
        }
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        let meta = &mut obj["metadata"];
        if meta.get("name").and_then(Value::as_str).unwrap_or("").is_empty() {
            if let Some(prefix) = meta.get("generateName").and_then(Value::as_str).filter(|_| name.is_none()) {
                meta["name"] = json!(format!("{prefix}{}", &random_hex(3)[..5]));
            } else if let Some(n) = name {
                meta["name"] = json!(n);
            }
        }
        let body_name = meta.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
        if meta.pointer("/annotations").and_then(|a| a.get(controller::FAULT_ANNOTATION)).and_then(Value::as_str)
            == Some("admission-denied")
        {
            return Err(Failure::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "admission webhook \"{ADMISSION_WEBHOOK}\" denied the request: {} \"{body_name}\" carries the annotation {}: admission-denied",
                    r.kind,
                    controller::FAULT_ANNOTATION
                ),
            ));
        }
        if body_name.is_empty() {
            return Err(Failure::invalid(r, "", "metadata.name: Required value: name or generateName is required"));
        }
        if let Some(n) = name.filter(|n| *n != body_name) {
            return Err(Failure::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({n})"
            )));
        }
        if r.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                None | Some("") => meta["namespace"] = json!(self.t.namespace),
                Some(ns) if ns == self.t.namespace => {}
                Some(_) => {
                    return Err(Failure::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
        } else if let Some(m) = meta.as_object_mut() {
            m.remove("namespace");
        }
        Ok(body_name)
    }

    fn namespace_exists(&self, store: &Store) -> Result<(), Failure> {
        if !self.r().namespaced {
            return Ok(());
        }
        let ns_res = resources::find("", "v1", "namespaces").expect("namespaces are listed");
        if store.objects.contains_key(&key(ns_res, "", &self.t.namespace)) {
            Ok(())
        } else {
            Err(Failure::not_found(ns_res, &self.t.namespace))
        }
    }

    fn create(&self, mut obj: Value) -> Answer {
        let name = self.check_body(&mut obj, None)?;
        let r = self.r();
        if r.kind == "Pod"
            && let Err(why) = crate::scheduler::validate_pod(&obj)
        {
            return Err(Failure::invalid(r, &name, why));
        }
        let mut store = self.shared.lock();
        self.namespace_exists(&store)?;
        if store.objects.contains_key(&key(r, &self.t.namespace, &name)) {
            return Err(Failure::new(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", r.qualified()),
            )
            .about(r, &name));
        }
        let obj = self.new_object(obj, "Update");
        let stored = self.store(&mut store, &name, obj, "ADDED");
        Ok(json_response(StatusCode::CREATED, &stored))
    }

    /// Fills in what the server owns on a new object.
    fn new_object(&self, mut obj: Value, operation: &str) -> Value {
        let r = self.r();
        {
            let meta = &mut obj["metadata"];
            meta["uid"] = json!(uid());
            meta["creationTimestamp"] = json!(now());
            for k in ["resourceVersion", "generation", "managedFields", "deletionTimestamp"] {
                if let Some(m) = meta.as_object_mut() {
                    m.remove(k);
                }
            }
        }
        if obj.get("spec").is_some() {
            obj["metadata"]["generation"] = json!(1);
        }
        controller::defaults(r, &mut obj);
        ssa::record_update(None, &mut obj, &self.manager, operation, &r.api_version(), &now());
        obj
    }

    fn store(&self, store: &mut Store, name: &str, obj: Value, kind: &'static str) -> Value {
        if self.dry_run() {
            return obj;
        }
        // As on a real API server, a write that changes nothing (managedFields times aside)
        // is not stored: the object keeps its resourceVersion and no watch hears of it.
        if kind == "MODIFIED"
            && let Some(old) = store.objects.get(&key(self.r(), &self.t.namespace, name))
            && without_times(old) == without_times(&obj)
        {
            return old.clone();
        }
        let mut obj = obj;
        if self.r().kind == "PersistentVolumeClaim" && kind == "ADDED" {
            // Bound at once, as by a local-path provisioner with `Immediate` binding: the
            // volume is a directory of this machine (see `Kubelet::claim_dir`).
            let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_owned();
            obj["spec"]["volumeName"] = json!(format!("pvc-{uid}"));
            let size = obj.pointer("/spec/resources/requests/storage").cloned().unwrap_or(json!("1Gi"));
            obj["status"] = json!({"phase": "Bound", "accessModes": obj["spec"]["accessModes"].clone(),
                "capacity": {"storage": size}});
        }
        let stored = self.shared.commit(store, self.r(), &self.t.namespace, name, obj, kind);
        if self.r().is_workload() && kind != "DELETED" {
            controller::schedule(self.shared.clone(), self.r(), &stored);
        }
        if self.r().is_job() && kind == "ADDED" {
            controller::schedule_job(self.shared.clone(), self.r(), &stored);
        }
        if self.r().kind == "Pod" && kind == "ADDED" {
            crate::kubelet::admit(self.shared.clone(), &stored);
        }
        stored
    }

    /// The end of every update: server-owned fields kept, generation bumped on spec changes,
    /// status kept (or only status taken, for `/status`).
    fn finish_update(&self, old: &Value, mut new: Value, sub: Option<&str>, managed: bool) -> Result<Value, Failure> {
        let r = self.r();
        if sub == Some("status") {
            let status = new.get("status").cloned().unwrap_or(Value::Null);
            new = old.clone();
            new["status"] = status;
        } else if r.has_status {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        for k in ["uid", "creationTimestamp", "generation"] {
            match old["metadata"].get(k) {
                Some(v) => new["metadata"][k] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(k);
                    }
                }
            }
        }
        controller::defaults(r, &mut new);
        if old["metadata"].get("generation").is_some() && has_spec_change(old, &new) {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            new["metadata"]["generation"] = json!(g);
        }
        if !managed {
            new["metadata"]["managedFields"] = old["metadata"].get("managedFields").cloned().unwrap_or(json!([]));
            ssa::record_update(Some(old), &mut new, &self.manager, "Update", &r.api_version(), &now());
        }
        Ok(new)
    }

    fn existing(&self, store: &Store, name: &str) -> Result<Value, Failure> {
        store
            .objects
            .get(&key(self.r(), &self.t.namespace, name))
            .cloned()
            .ok_or_else(|| Failure::not_found(self.r(), name))
    }

    fn conflict(&self, name: &str) -> Failure {
        let r = self.r();
        Failure::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", r.qualified()),
        )
        .about(r, name)
    }

    fn replace(&self, name: &str, sub: Option<&str>, mut obj: Value) -> Answer {
        self.check_body(&mut obj, Some(name))?;
        let mut store = self.shared.lock();
        let old = self.existing(&store, name)?;
        if let Some(rv) = obj["metadata"].get("resourceVersion").and_then(Value::as_str)
            && old["metadata"]["resourceVersion"] != rv
        {
            return Err(self.conflict(name));
        }
        let new = self.finish_update(&old, obj, sub, false)?;
        ok(&self.store(&mut store, name, new, "MODIFIED"))
    }

    fn patch(&self, name: &str, sub: Option<&str>, content_type: &str, body: Bytes) -> Answer {
        let r = self.r();
        let media = content_type.split(';').next().unwrap_or("").trim();
        let patch = parse_json(Some(&body)).map_err(|f| match media {
            "application/apply-patch+yaml" => Failure::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                "kube-fake reads apply patches written as JSON only (kubectl and kube-rs send JSON)",
            ),
            _ => f,
        })?;
        let mut store = self.shared.lock();
        match media {
            "application/apply-patch+yaml" => {
                let mut obj = patch;
                let name = self.check_body(&mut obj, Some(name))?;
                let force = self.query.flag("force");
                if self.query.get("fieldManager").is_none() {
                    return Err(Failure::invalid(
                        r,
                        &name,
                        "metadata.managedFields.fieldManager: Required value: is required for apply patch",
                    ));
                }
                let Some(old) = store.objects.get(&key(r, &self.t.namespace, &name)).cloned() else {
                    self.namespace_exists(&store)?;
                    let obj = self.new_object(obj, "Apply");
                    let stored = self.store(&mut store, &name, obj, "ADDED");
                    return Ok(json_response(StatusCode::CREATED, &stored));
                };
                let merged = ssa::apply(&old, &obj, &self.manager, force, &r.api_version(), &now()).map_err(|conflicts| {
                    let causes: Vec<Value> = conflicts
                        .iter()
                        .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", c.manager), "field": c.field}))
                        .collect();
                    let mut f = Failure::new(StatusCode::CONFLICT, "Conflict", ssa::conflict_message(&conflicts)).about(r, &name);
                    f.details["causes"] = json!(causes);
                    f
                })?;
                let new = self.finish_update(&old, merged, sub, true)?;
                ok(&self.store(&mut store, &name, new, "MODIFIED"))
            }
            "application/merge-patch+json"
            | "application/strategic-merge-patch+json"
            | "application/json-patch+json" => {
                let old = self.existing(&store, name)?;
                let mut new = old.clone();
                if media == "application/json-patch+json" {
                    ssa::json_patch(&mut new, &patch)
                        .map_err(|e| Failure::invalid(r, name, format!("the JSON patch does not apply: {e}")))?;
                } else {
                    ssa::merge_patch(&mut new, &patch);
                }
                if new["metadata"]["name"] != old["metadata"]["name"]
                    || new["metadata"].get("namespace") != old["metadata"].get("namespace")
                {
                    return Err(Failure::bad_request("a patch may not change the name or namespace"));
                }
                if let Some(rv) = patch.pointer("/metadata/resourceVersion").and_then(Value::as_str)
                    && old["metadata"]["resourceVersion"] != rv
                {
                    return Err(self.conflict(name));
                }
                let new = self.finish_update(&old, new, sub, false)?;
                ok(&self.store(&mut store, name, new, "MODIFIED"))
            }
            other => Err(Failure::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!(
                    "the patch type {other:?} is not supported by kube-fake (merge, strategic merge as merge, and apply are)"
                ),
            )),
        }
    }

    fn delete(&self, name: &str, body: Option<&Bytes>) -> Answer {
        let r = self.r();
        let mut store = self.shared.lock();
        let old = self.existing(&store, name)?;
        if self.dry_run() {
            return ok(&old);
        }
        let uid = old["metadata"]["uid"].as_str().unwrap_or("").to_owned();
        if r.kind == "Pod"
            && let Some(kubelet) = self.shared.kubelet()
            && kubelet.runs(&uid)
        {
            // Graceful deletion: the pod stays (with `deletionTimestamp`) until the kubelet has
            // stopped its container; the kubelet then deletes it.
            let options = body.filter(|b| !b.is_empty()).and_then(|b| serde_json::from_slice::<Value>(b).ok());
            let grace = self
                .query
                .get("gracePeriodSeconds")
                .and_then(|g| g.parse::<u64>().ok())
                .or_else(|| options.as_ref().and_then(|o| o["gracePeriodSeconds"].as_u64()))
                .or_else(|| old.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_u64))
                .unwrap_or(30);
            let running = old.pointer("/status/phase").and_then(Value::as_str) == Some("Running");
            if !running || grace == 0 {
                // Not running (or forced): gone from the API at once; the kubelet kills and
                // removes its container in the background.
                self.shared.forget_events(&mut store, &self.t.namespace, &uid);
                let gone = self.shared.commit(&mut store, r, &self.t.namespace, name, old, "DELETED");
                drop(store);
                kubelet.stop(&uid, 0);
                return ok(&gone);
            }
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                drop(store);
                kubelet.stop(&uid, grace);
                return ok(&old);
            }
            let mut marked = old.clone();
            marked["metadata"]["deletionTimestamp"] = json!(now());
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            let marked = self.shared.commit(&mut store, r, &self.t.namespace, name, marked, "MODIFIED");
            drop(store);
            kubelet.stop(&uid, grace);
            return ok(&marked);
        }
        if r.kind == "Namespace" && matches!(name, "default" | "kube-system" | "kube-public") {
            return Err(Failure::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
            )
            .about(r, name));
        }
        if r.kind == "Namespace" {
            let inside: Vec<Key> = store.objects.keys().filter(|(_, _, ns, _)| ns == name).cloned().collect();
            for (g, p, ns, n) in inside {
                let res = RESOURCES.iter().find(|x| x.group == g && x.plural == p).expect("stored kinds are listed");
                let obj = store.objects.get(&(g, p, ns.clone(), n.clone())).cloned().unwrap_or_default();
                self.shared.commit(&mut store, res, &ns, &n, obj, "DELETED");
            }
        }
        if r.is_workload() {
            let pod_res = resources::find("", "v1", "pods").expect("pods are listed");
            let owner = old["metadata"]["uid"].as_str().unwrap_or("").to_owned();
            for (pod_name, pod) in owned_pods(&store, &self.t.namespace, &owner) {
                self.shared.forget_events(&mut store, &self.t.namespace, pod["metadata"]["uid"].as_str().unwrap_or(""));
                self.shared.commit(&mut store, pod_res, &self.t.namespace, &pod_name, pod, "DELETED");
            }
        }
        let gone = self.shared.commit(&mut store, r, &self.t.namespace, name, old, "DELETED");
        drop(store);
        if r.kind == "PersistentVolumeClaim"
            && let Some(kubelet) = self.shared.kubelet()
        {
            kubelet.release_claim(&self.t.namespace, name);
        }
        ok(&json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                   "details": {"name": name, "group": r.group, "kind": r.plural, "uid": gone["metadata"]["uid"]}}))
    }
}

/// The object without `resourceVersion` and the `time` of its managedFields entries.
fn without_times(obj: &Value) -> Value {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        if let Some(Value::Array(entries)) = meta.get_mut("managedFields") {
            for e in entries.iter_mut().filter_map(Value::as_object_mut) {
                e.remove("time");
            }
        }
    }
    obj
}
