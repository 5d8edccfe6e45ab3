//! A real `wharf serve` process for the crash tests: started on a data directory,
//! killed with SIGKILL, started again, and talked to over its HTTP API.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `wharf serve`; dropped, it is killed.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub client: reqwest::Client,
    log: PathBuf,
    token: &'static str,
}

impl Server {
    /// `wharf serve [extra…] --listen 127.0.0.1:<port> --data-dir <root>/data` with only
    /// `WHARF_ADMIN_TOKEN` = `token` of the WHARF_* variables; its output goes to
    /// `<root>/server-<life>.log`. Waits up to `ready_within` for `/healthz`.
    pub async fn start(
        root: &Path,
        port: u16,
        life: u32,
        token: &'static str,
        extra: &[&str],
        ready_within: Duration,
    ) -> Server {
        Server::start_with_env(root, port, life, token, extra, &[], None, ready_within).await
    }

    /// [`Server::start`] with more variables in the server's environment and, when this
    /// process is root, as the user `uid` (who then owns `root`).
    #[expect(clippy::too_many_arguments, reason = "the start's settings, each used by some test")]
    pub async fn start_with_env(
        root: &Path,
        port: u16,
        life: u32,
        token: &'static str,
        extra: &[&str],
        env: &[(&str, &str)],
        uid: Option<u32>,
        ready_within: Duration,
    ) -> Server {
        wharf_testenv::server_root(root);
        let log = root.join(format!("server-{life}.log"));
        let out = File::create(&log).unwrap();
        let mut cmd = Command::new(WHARF);
        cmd.arg("serve")
            .args(extra)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(root.join("data"));
        for (key, _) in std::env::vars() {
            if key.starts_with("WHARF_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(env.iter().copied());
        cmd.env("WHARF_ADMIN_TOKEN", token)
            .env("WHARF_LOG", "info")
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        if let Some(uid) = uid {
            std::os::unix::fs::chown(root, Some(uid), Some(uid)).unwrap();
            std::os::unix::process::CommandExt::uid(&mut cmd, uid);
            std::os::unix::process::CommandExt::gid(&mut cmd, uid);
        }
        let child = cmd.spawn().expect("start wharf serve");
        let mut server = Server {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
            log,
            token,
        };
        let until = Instant::now() + ready_within;
        loop {
            if let Ok(r) = server.client.get(format!("{}/healthz", server.base)).send().await
                && r.status().is_success()
            {
                return server;
            }
            if let Some(status) = server.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("wharf serve ended ({status}) before answering /healthz:\n{}", server.log_text());
            }
            assert!(
                Instant::now() < until,
                "wharf serve did not answer /healthz within {ready_within:?}:\n{}",
                server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and reap it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).expect("SIGKILL the server");
        child.wait().unwrap();
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<String>) -> (u16, String) {
        let url = format!("{}/api/v1{path}", self.base);
        let mut request = self.client.request(method.clone(), url).bearer_auth(self.token);
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    pub async fn get(&self, path: &str) -> Value {
        serde_json::from_str(&self.get_text(path).await).unwrap()
    }

    pub async fn get_text(&self, path: &str) -> String {
        let (status, text) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {text}");
        text
    }

    pub async fn post(&self, path: &str, body: impl Into<String>, expect: u16) -> Value {
        let (status, text) = self.send(reqwest::Method::POST, path, Some(body.into())).await;
        assert_eq!(status, expect, "POST {path}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    pub async fn run(&self, id: i64) -> Value {
        self.get(&format!("/runs/{id}")).await
    }

    /// The whole stored log of a task (from byte 0), as the plain tail returns it.
    pub async fn task_log(&self, run: i64, task: &str) -> String {
        let mut out = String::new();
        loop {
            let text = self.get_text(&format!("/runs/{run}/tasks/{task}/log?offset={}", out.len())).await;
            if text.is_empty() {
                return out;
            }
            out.push_str(&text);
        }
    }

    /// Polls the run until `check` is satisfied, or panics after `within` (with the
    /// run and the server's log).
    pub async fn wait_run(&self, id: i64, within: Duration, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + within;
        loop {
            let run = self.run(id).await;
            if check(&run) {
                return run;
            }
            assert!(
                Instant::now() < until,
                "run {id}: {what} did not happen within {within:?}; run:\n{run:#}\nserver log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
