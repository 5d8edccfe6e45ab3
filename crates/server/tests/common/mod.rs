//! Shared helpers for the API tests: a real server on loopback with its own data
//! directory, a client that sends the bearer token, and small helpers for pipelines,
//! runs, logs and Server-Sent Events.

#![allow(dead_code)]

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use wharf_server::{Server, ServerConfig};

/// A stand-in for GitHub, GitLab and Gitee's APIs on loopback (repository bindings).
pub mod provider_mock;

pub const TOKEN: &str = "test-token";

/// The built-in admin's password in test servers (`WHARF_ADMIN_PASSWORD`).
pub const ADMIN_PASSWORD: &str = "test-admin-password";

/// A licence for test servers: signed with a key pair made for this test process, whose
/// public half the test config names (`licence_public_key`, honoured in debug builds
/// only). Tests create many pipelines; the trial's 10 would not do.
pub fn test_licence(dir: &std::path::Path, max_pipelines: u64) -> (std::path::PathBuf, String) {
    use base64::Engine;
    let key = test_signing_key();
    let licence = wharf_server::licence::sign(&key, "Wharf tests", max_pipelines, None);
    let path = dir.join("licence.json");
    std::fs::write(&path, serde_json::to_string(&licence).unwrap()).unwrap();
    let public = base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes());
    (path, public)
}

/// The licence-signing key of this test process.
pub fn test_signing_key() -> ed25519_dalek::SigningKey {
    static SEED: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let seed = SEED.get_or_init(|| {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).unwrap();
        seed
    });
    ed25519_dalek::SigningKey::from_bytes(seed)
}

/// How long a test waits for a run to reach a status before failing.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub const TERMINAL: [&str; 5] = ["succeeded", "failed", "stopped", "timed_out", "skipped"];

pub struct TestServer {
    pub server: Server,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// Sends `Authorization: Bearer test-token` on every request.
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
}

/// Starts a server on `127.0.0.1:0` with a fresh data directory.
pub async fn start() -> TestServer {
    start_in(tempfile::tempdir().expect("a temporary directory")).await
}

/// A response read whole: status, headers, body text and the body as JSON (Null when
/// it is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Answer {
    pub async fn read(response: reqwest::Response) -> Answer {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a readable body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, headers, text, json }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(self, status: u16) -> Answer {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text);
        self
    }

    /// Asserts an error answer: the status and the `{"error": {...}}` body.
    #[track_caller]
    pub fn expect_error(self, status: u16) -> Answer {
        let answer = self.expect(status);
        assert_eq!(answer.json["error"]["status"], status, "error body: {}", answer.text);
        assert!(answer.json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", answer.text);
        assert!(answer.json["error"]["details"].is_array(), "{}", answer.text);
        answer
    }

    /// The error's message and every detail's message, for "names X" checks.
    pub fn error_text(&self) -> String {
        let mut out = self.json["error"]["message"].as_str().unwrap_or("").to_owned();
        for d in self.json["error"]["details"].as_array().into_iter().flatten() {
            out.push('\n');
            out.push_str(d["path"].as_str().unwrap_or(""));
            out.push_str(": ");
            out.push_str(d["message"].as_str().unwrap_or(""));
        }
        out
    }
}

impl TestServer {
    /// `/api/v1` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut request = self.client.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        Answer::read(request.send().await.expect("the server answers")).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(body)).await
    }

    /// POST without a body.
    pub async fn post_empty(&self, path: &str) -> Answer {
        self.call(Method::POST, path, None).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, None).await
    }

    /// Sends pipeline YAML (`Content-Type: application/yaml`).
    pub async fn send_yaml(&self, method: Method, path: &str, yaml: &str) -> Answer {
        let response = self
            .client
            .request(method, self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/yaml")
            .body(yaml.to_owned())
            .send()
            .await
            .expect("the server answers");
        Answer::read(response).await
    }

    /// Creates a pipeline from YAML; returns `{id, name, project, version}`.
    pub async fn create(&self, yaml: &str) -> Value {
        self.send_yaml(Method::POST, "/pipelines", yaml).await.expect(201).json
    }

    /// Starts a run of pipeline `key` (id or name); returns `{id, number}`.
    pub async fn start_run(&self, key: impl std::fmt::Display, parameters: Value) -> Value {
        self.post(&format!("/pipelines/{key}/runs"), json!({ "parameters": parameters })).await.expect(201).json
    }

    pub async fn run(&self, id: impl std::fmt::Display) -> Value {
        self.get(&format!("/runs/{id}")).await.expect(200).json
    }

    /// Polls `GET /runs/{id}` until `done` says so, or fails after [`DEADLINE`].
    pub async fn wait_run_until(&self, id: i64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + DEADLINE;
        loop {
            let run = self.run(id).await;
            if done(&run) {
                return run;
            }
            assert!(Instant::now() < until, "run {id} did not become {what} in {DEADLINE:?}: {run:#}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits for a terminal status and returns the run.
    pub async fn wait_run(&self, id: i64) -> Value {
        self.wait_run_until(id, "terminal", |r| TERMINAL.contains(&r["status"].as_str().unwrap_or(""))).await
    }

    /// Waits until the task named `task` is running.
    pub async fn wait_task_running(&self, id: i64, task: &str) -> Value {
        self.wait_run_until(id, &format!("running task {task}"), |r| {
            task_of(r, task).is_some_and(|t| t["status"] == "running")
        })
        .await
    }

    /// `GET /runs/{id}/tasks/{task}/log?offset=N`
    pub async fn tail(&self, id: i64, task: &str, offset: Option<&str>) -> Answer {
        let query = offset.map(|o| format!("?offset={o}")).unwrap_or_default();
        self.get(&format!("/runs/{id}/tasks/{task}/log{query}")).await
    }

    /// The Prometheus text at `/metrics` (no token needed).
    pub async fn metrics(&self) -> String {
        let response = reqwest::get(format!("{}/metrics", self.base)).await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }
}

/// A client acting as another user (with their bearer token).
pub struct As<'a> {
    pub s: &'a TestServer,
    pub name: String,
    pub token: String,
}

impl As<'_> {
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut request = reqwest::Client::new().request(method, self.s.url(path)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        Answer::read(request.send().await.expect("the server answers")).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn send_yaml(&self, method: Method, path: &str, yaml: &str) -> Answer {
        let response = reqwest::Client::new()
            .request(method, self.s.url(path))
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/yaml")
            .body(yaml.to_owned())
            .send()
            .await
            .expect("the server answers");
        Answer::read(response).await
    }
}

impl TestServer {
    /// Makes sure project `name` exists (department `Default`), as the admin; trusted:
    /// the tests that use it are about permissions, and their pipelines' tasks run on
    /// the host (the trust rule has tests of its own, `host_tasks.rs`).
    pub async fn project(&self, name: &str) {
        let answer = self.post("/projects", json!({ "name": name, "trusted": true })).await;
        assert!(answer.status == 201 || answer.status == 409, "{}", answer.text);
    }

    /// Creates a user with `role` in `projects` (made first when missing) and a write
    /// token for them; answers a client acting as them.
    pub async fn user(&self, name: &str, role: &str, projects: &[&str]) -> As<'_> {
        for p in projects {
            self.project(p).await;
        }
        let user = json!({ "name": name, "role": role, "password": format!("{name}-password"), "projects": projects });
        self.post("/users", user).await.expect(201);
        let token = self.post(&format!("/users/{name}/tokens"), json!({ "name": "t" })).await.expect(201).json["token"]
            .as_str()
            .unwrap()
            .to_owned();
        As { s: self, name: name.to_owned(), token }
    }
}

/// The task called `name` in a run's stages.
pub fn task_of<'a>(run: &'a Value, name: &str) -> Option<&'a Value> {
    run["stages"]
        .as_array()?
        .iter()
        .flat_map(|s| s["tasks"].as_array().into_iter().flatten())
        .find(|t| t["name"] == name)
}

pub fn id_of(value: &Value) -> i64 {
    value["id"].as_i64().unwrap_or_else(|| panic!("no id in {value}"))
}

/// The text of stored log lines (`<time> <out|err|sys> <text>`), without the prefix.
pub fn log_texts(log: &str) -> Vec<String> {
    log.lines().map(|l| l.splitn(3, ' ').nth(2).unwrap_or("").to_owned()).collect()
}

/// Parses an RFC 3339 timestamp from a run record.
pub fn ts(value: &Value) -> rfc3339::Time {
    rfc3339::Time::parse(value.as_str().unwrap_or_else(|| panic!("not a timestamp: {value}")))
}

/// RFC 3339 UTC timestamps as the server writes them (`2025-01-02T03:04:05.123456789Z`),
/// as comparable numbers (nanoseconds since the epoch).
pub mod rfc3339 {
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    pub struct Time(i128);

    impl Time {
        pub fn parse(text: &str) -> Time {
            fn bad(text: &str) -> ! {
                panic!("cannot read the timestamp `{text}`")
            }
            let number = |p: &str| p.parse::<i64>().unwrap_or_else(|_| bad(text));
            let plain = text.strip_suffix('Z').unwrap_or_else(|| bad(text));
            let (date, time) = plain.split_once('T').unwrap_or_else(|| bad(text));
            let d: Vec<i64> = date.split('-').map(number).collect();
            let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
            let t: Vec<i64> = hms.split(':').map(number).collect();
            if d.len() != 3 || t.len() != 3 || frac.len() > 9 {
                bad(text);
            }
            let nanos = i128::from(number(&format!("{frac:0<9}")));
            // Days from civil (Howard Hinnant's algorithm).
            let (y, m, day) = (if d[1] <= 2 { d[0] - 1 } else { d[0] }, d[1], d[2]);
            let era = y.div_euclid(400);
            let yoe = y - era * 400;
            let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
            let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
            let days = era * 146_097 + doe - 719_468;
            let secs = days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2];
            Time(i128::from(secs) * 1_000_000_000 + nanos)
        }

        pub fn plus_secs(self, secs: i64) -> Time {
            Time(self.0 + i128::from(secs) * 1_000_000_000)
        }
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// A tiny SSE reader over a streaming response body.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
    pub finished: bool,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        SseReader { response, buffer: String::new(), finished: false }
    }

    /// Takes every complete event out of the buffer.
    fn drain(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        loop {
            let normalized = self.buffer.replace("\r\n", "\n");
            self.buffer = normalized;
            let Some(end) = self.buffer.find("\n\n") else { break };
            let block: String = self.buffer.drain(..end + 2).collect();
            let mut event = SseEvent::default();
            let mut has_field = false;
            let mut data: Vec<String> = Vec::new();
            for line in block.lines() {
                if line.is_empty() || line.starts_with(':') {
                    continue; // comments are keep-alives
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                has_field = true;
                match field {
                    "id" => event.id = Some(value.to_owned()),
                    "event" => event.event = Some(value.to_owned()),
                    "data" => data.push(value.to_owned()),
                    _ => {}
                }
            }
            if has_field {
                event.data = data.join("\n");
                out.push(event);
            }
        }
        out
    }

    /// The next complete events (at least one), or an empty list when the body ended.
    pub async fn next_events(&mut self) -> Vec<SseEvent> {
        loop {
            let events = self.drain();
            if !events.is_empty() || self.finished {
                return events;
            }
            let chunk = tokio::time::timeout(DEADLINE, self.response.chunk())
                .await
                .expect("the SSE stream sends something in time")
                .expect("the SSE stream reads");
            match chunk {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                None => self.finished = true,
            }
        }
    }
}

/// Posts a webhook delivery to `/hooks/{provider}/{binding}` as a code host would:
/// no bearer token, the given headers and raw body.
pub async fn deliver(s: &TestServer, provider: &str, binding: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut request = reqwest::Client::new()
        .post(format!("{}/hooks/{provider}/{binding}", s.base))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Answer::read(request.send().await.expect("the server answers")).await
}

/// Starts a server like [`start`], on the data directory `<dir>/data` (which may hold
/// what an earlier server left, as after a restart).
pub async fn start_in(dir: tempfile::TempDir) -> TestServer {
    start_with(dir, |_| {}).await
}

/// The configuration [`start_in`] uses: loopback, the test token and password, a test
/// licence for 1000 pipelines, and loopback allowed for the server's own calls (the
/// mock provider and registries listen there: the admin's `outbound_allow` decision;
/// tests of the refusal clear it).
pub fn test_config(dir: &std::path::Path) -> ServerConfig {
    wharf_testenv::server_root(dir);
    let mut config = ServerConfig::new(dir.join("data"));
    config.outbound_allow = vec!["127.0.0.1".to_owned()];
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.admin_token = Some(TOKEN.to_owned());
    config.admin_password = Some(ADMIN_PASSWORD.to_owned());
    let (licence, public) = test_licence(dir, 1000);
    config.licence_file = Some(licence);
    config.licence_public_key = Some(public);
    config
}

/// [`start_in`] with a change to the configuration first.
pub async fn start_with(dir: tempfile::TempDir, change: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let mut config = test_config(dir.path());
    config.host_env = vec![("PATH".to_owned(), std::env::var("PATH").unwrap_or_default())];
    config.stop_grace = Duration::from_secs(2);
    change(&mut config);
    let server = Server::start(config).await.expect("the server starts");
    let base = format!("http://{}", server.addr);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {TOKEN}").parse().unwrap());
    let client = reqwest::Client::builder().default_headers(headers).build().unwrap();
    TestServer { server, base, client, dir }
}

/// `docker save` of `source` re-tagged as `tag` (the tag is removed again afterwards).
pub fn saved_image(source: &str, tag: &str) -> Vec<u8> {
    let docker = |args: &[&str]| {
        let out = std::process::Command::new("docker").args(args).output().expect("docker runs");
        assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    docker(&["tag", source, tag]);
    let bytes = docker(&["save", tag]);
    docker(&["rmi", tag]);
    bytes
}

/// What the Kubernetes test double `fake` answers to `GET path` (JSON), or `None` for a
/// 404: how a test looks at what Wharf applied, with Wharf's own client.
#[allow(dead_code)]
pub async fn kube_get(fake: &wharf_kube_fake::KubeFake, path: &str) -> Option<Value> {
    let policy = wharf_kube::Policy::new(&["127.0.0.1"]).unwrap();
    let conn =
        wharf_kube::Connection::from_kubeconfig(&fake.kubeconfig(), None, &wharf_kube::FileAccess::Refuse, &policy)
            .unwrap();
    let request = axum::http::Request::get(path).body(Vec::new()).unwrap();
    match conn.client().request_text(request).await {
        Ok(text) => Some(serde_json::from_str(&text).unwrap()),
        Err(e) if e.to_string().contains("not found") => None,
        Err(e) => panic!("GET {path} from the fake: {e}"),
    }
}

/// A log sink that drops every line (for calls made around the server, not through it).
pub struct NoLogs;

impl wharf_executor::LogSink for NoLogs {
    fn line(&self, _line: wharf_executor::LogLine) {}
}
