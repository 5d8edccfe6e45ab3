//! A small Docker Engine API client for the kubelet: HTTP/1.1 over the daemon's unix
//! socket, one connection per request, only the calls a kubelet needs (create with a pull
//! when the image is missing, start, wait, stop, remove, list by label, logs). It stands in
//! for the `docker` CLI, whose process start per call was most of a pod's time here.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::UnixStream;

/// The daemon's socket when neither the kubelet option nor `DOCKER_HOST` names one.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// How long a call may take (a pull included); `wait` and `logs` are not bounded.
const TIMEOUT: Duration = Duration::from_secs(300);

/// The most of a reply read into memory (lists and error messages are far smaller).
const MAX_REPLY: usize = 16 * 1024 * 1024;

/// Where the Docker Engine listens: a unix socket.
#[derive(Debug, Clone)]
pub struct Engine {
    /// `Err`: why there is no socket to talk to (said on every call).
    socket: Result<PathBuf, String>,
}

/// Why a container could not be created.
#[derive(Debug)]
pub enum CreateError {
    /// The image is not on the machine and pulling it failed: the daemon's message.
    Pull(String),
    /// Any other refusal: the daemon's message.
    Other(String),
}

impl Engine {
    /// The engine the kubelet option names: `unix:///path/to/docker.sock` is that socket;
    /// any other value (`docker`, the CLI this option used to name) is the local engine,
    /// `DOCKER_HOST` when it is a `unix://` address, else `/var/run/docker.sock`.
    pub fn new(option: &str) -> Engine {
        let socket = match option.strip_prefix("unix://") {
            Some(path) => Ok(PathBuf::from(path)),
            None => match std::env::var("DOCKER_HOST") {
                Ok(host) if !host.is_empty() => match host.strip_prefix("unix://") {
                    Some(path) => Ok(PathBuf::from(path)),
                    None => Err(format!(
                        "kube-fake's kubelet talks to the Docker Engine over a unix socket only; DOCKER_HOST is {host}"
                    )),
                },
                _ => Ok(PathBuf::from(DEFAULT_SOCKET)),
            },
        };
        Engine { socket }
    }

    /// Sends one request on a connection of its own; the reply's status and body.
    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<http::Response<Incoming>, String> {
        let socket = self.socket.as_ref().map_err(Clone::clone)?;
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| format!("cannot reach the Docker Engine at {}: {e}", socket.display()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("Docker Engine at {}: {e}", socket.display()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder().method(method).uri(path).header(http::header::HOST, "docker");
        let body = match body {
            Some(v) => {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(v.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).map_err(|e| format!("Docker Engine request {path}: {e}"))?;
        sender.send_request(req).await.map_err(|e| format!("Docker Engine {path}: {e}"))
    }

    /// A call whose reply is read whole, within [`TIMEOUT`]: its status and body.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(StatusCode, Bytes), String> {
        let call = async { whole(path, self.send(method, path, body).await?).await };
        tokio::time::timeout(TIMEOUT, call)
            .await
            .unwrap_or_else(|_| Err(format!("Docker Engine {path} took longer than {TIMEOUT:?}")))
    }

    /// A call that must answer a 2xx (or 304, "already so"); else the daemon's message.
    async fn expect(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Bytes, String> {
        let (status, body) = self.call(method, path, body).await?;
        if status.is_success() || status == StatusCode::NOT_MODIFIED { Ok(body) } else { Err(message(status, &body)) }
    }

    /// Creates the container `name` from `config` (the Engine API's create body); when its
    /// image is not on the machine, pulls it first, as `docker create` does. Its id.
    pub async fn create(&self, name: &str, config: &Value) -> Result<String, CreateError> {
        let path = format!("/containers/create?name={}", encode(name));
        let (status, body) = self.call(Method::POST, &path, Some(config)).await.map_err(CreateError::Other)?;
        let (status, body) = if status == StatusCode::NOT_FOUND {
            self.pull(config["Image"].as_str().unwrap_or("")).await.map_err(CreateError::Pull)?;
            self.call(Method::POST, &path, Some(config)).await.map_err(CreateError::Other)?
        } else {
            (status, body)
        };
        if !status.is_success() {
            return Err(CreateError::Other(message(status, &body)));
        }
        let created: Value = serde_json::from_slice(&body).unwrap_or_default();
        Ok(created["Id"].as_str().unwrap_or(name).to_owned())
    }

    /// Pulls `image` (`latest` when it names no tag or digest); `Err`: the daemon's message.
    async fn pull(&self, image: &str) -> Result<(), String> {
        let (name, tag) = split_reference(image);
        let mut path = format!("/images/create?fromImage={}", encode(name));
        if let Some(tag) = tag {
            path.push_str(&format!("&tag={}", encode(tag)));
        }
        let pull = async {
            let reply = self.send(Method::POST, &path, None).await?;
            let status = reply.status();
            let mut body = reply.into_body();
            if !status.is_success() {
                let body = Limited::new(body, MAX_REPLY).collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                return Err(message(status, &body));
            }
            // A stream of JSON progress messages; a failure is one with `error`.
            let mut line = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("pulling {image}: {e}"))?;
                let Some(data) = frame.data_ref() else { continue };
                for &b in data.iter() {
                    if b != b'\n' {
                        if line.len() < MAX_REPLY {
                            line.push(b);
                        }
                        continue;
                    }
                    let msg: Value = serde_json::from_slice(&line).unwrap_or_default();
                    line.clear();
                    if let Some(error) = msg["error"].as_str() {
                        return Err(error.to_owned());
                    }
                }
            }
            Ok(())
        };
        tokio::time::timeout(TIMEOUT, pull)
            .await
            .unwrap_or_else(|_| Err(format!("pulling {image} took longer than {TIMEOUT:?}")))
    }

    pub async fn start(&self, id: &str) -> Result<(), String> {
        self.expect(Method::POST, &format!("/containers/{}/start", encode(id)), None).await.map(drop)
    }

    /// Waits for the container to stop (however long it runs): its exit code.
    pub async fn wait(&self, id: &str) -> Result<i64, String> {
        let path = format!("/containers/{}/wait", encode(id));
        let (status, body) = whole(&path, self.send(Method::POST, &path, None).await?).await?;
        if !status.is_success() {
            return Err(message(status, &body));
        }
        let waited: Value = serde_json::from_slice(&body).unwrap_or_default();
        waited["StatusCode"].as_i64().ok_or_else(|| format!("Docker Engine {path}: no StatusCode in {waited}"))
    }

    /// Stops the container: its stop signal (SIGTERM), SIGKILL after `grace` seconds.
    pub async fn stop(&self, id: &str, grace: u64) -> Result<(), String> {
        self.expect(Method::POST, &format!("/containers/{}/stop?t={grace}", encode(id)), None).await.map(drop)
    }

    /// Removes the container, killing it if it runs; one that is gone already is fine.
    pub async fn remove(&self, id: &str) -> Result<(), String> {
        match self.call(Method::DELETE, &format!("/containers/{}?force=1", encode(id)), None).await? {
            (status, _) if status.is_success() || status == StatusCode::NOT_FOUND => Ok(()),
            (status, body) => Err(message(status, &body)),
        }
    }

    /// The ids of every container (running or not) labelled `key=value`.
    pub async fn labelled(&self, key: &str, value: &str) -> Result<Vec<String>, String> {
        let filters = json!({"label": [format!("{key}={value}")]}).to_string();
        let body =
            self.expect(Method::GET, &format!("/containers/json?all=1&filters={}", encode(&filters)), None).await?;
        let list: Value = serde_json::from_slice(&body).map_err(|e| format!("Docker Engine container list: {e}"))?;
        Ok(list.as_array().into_iter().flatten().filter_map(|c| c["Id"].as_str().map(str::to_owned)).collect())
    }

    /// The container's log as the daemon streams it (stdout and stderr multiplexed, see
    /// [`Demux`]): `query` is the logs endpoint's (`stdout=1&stderr=1&follow=1…`).
    pub async fn logs(&self, id: &str, query: &str) -> Result<Incoming, String> {
        let path = format!("/containers/{}/logs?{query}", encode(id));
        let reply = self.send(Method::GET, &path, None).await?;
        if !reply.status().is_success() {
            let status = reply.status();
            let body =
                Limited::new(reply.into_body(), MAX_REPLY).collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            return Err(message(status, &body));
        }
        Ok(reply.into_body())
    }
}

/// The daemon's `{"message": …}`, else the status and body as they came.
/// A reply read whole (at most [`MAX_REPLY`]): its status and body.
async fn whole(path: &str, reply: http::Response<Incoming>) -> Result<(StatusCode, Bytes), String> {
    let status = reply.status();
    let body = Limited::new(reply.into_body(), MAX_REPLY)
        .collect()
        .await
        .map_err(|e| format!("Docker Engine {path}: reading the reply: {e}"))?
        .to_bytes();
    Ok((status, body))
}

fn message(status: StatusCode, body: &[u8]) -> String {
    let parsed: Value = serde_json::from_slice(body).unwrap_or_default();
    match parsed["message"].as_str() {
        Some(m) => m.to_owned(),
        None => format!("Docker Engine answered {status}: {}", String::from_utf8_lossy(body).trim()),
    }
}

/// An image reference's name and tag for a pull: the tag after the last `:` of the last
/// path part, `latest` when there is none; no tag when it names a digest (`@sha256:…`).
fn split_reference(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let last = image.rfind('/').map_or(0, |i| i + 1);
    match image[last..].rfind(':') {
        Some(i) => (&image[..last + i], Some(&image[last + i + 1..])),
        None => (image, Some("latest")),
    }
}

/// Percent-encodes everything but unreserved characters, for a path part or query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Splits the logs endpoint's multiplexed stream (a container without a TTY): frames of an
/// 8-byte header — the stream (1 stdout, 2 stderr), three zero bytes, the payload's length
/// as a big-endian `u32` — and the payload. Payloads are handed on as they arrive, in
/// pieces when a frame spans reads, so no frame is held whole.
#[derive(Debug, Default)]
pub struct Demux {
    header: [u8; 8],
    filled: usize,
    stream: u8,
    remaining: usize,
}

impl Demux {
    /// Feeds bytes as read; `payload(stream, bytes)` for each piece of a frame's payload.
    pub fn feed(&mut self, mut data: &[u8], mut payload: impl FnMut(u8, &[u8])) {
        while !data.is_empty() {
            if self.remaining == 0 {
                let n = (8 - self.filled).min(data.len());
                self.header[self.filled..self.filled + n].copy_from_slice(&data[..n]);
                self.filled += n;
                data = &data[n..];
                if self.filled == 8 {
                    self.filled = 0;
                    self.stream = self.header[0];
                    self.remaining =
                        u32::from_be_bytes([self.header[4], self.header[5], self.header[6], self.header[7]]) as usize;
                }
            } else {
                let n = self.remaining.min(data.len());
                payload(self.stream, &data[..n]);
                self.remaining -= n;
                data = &data[n..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![stream, 0, 0, 0];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn demux_splits_frames_whatever_the_reads() {
        let mut bytes = frame(1, b"out one\n");
        bytes.extend(frame(2, b"err\n"));
        bytes.extend(frame(1, b""));
        bytes.extend(frame(1, b"out two"));
        for chunk in [1, 3, 7, 8, 9, bytes.len()] {
            let mut demux = Demux::default();
            let (mut out, mut err) = (Vec::new(), Vec::new());
            for piece in bytes.chunks(chunk) {
                demux.feed(piece, |s, p| if s == 1 { out.extend_from_slice(p) } else { err.extend_from_slice(p) });
            }
            assert_eq!(out, b"out one\nout two", "reads of {chunk}");
            assert_eq!(err, b"err\n", "reads of {chunk}");
        }
    }

    #[test]
    fn references_split_into_name_and_tag() {
        assert_eq!(split_reference("busybox"), ("busybox", Some("latest")));
        assert_eq!(split_reference("127.0.0.1:5055/a/b:1.35"), ("127.0.0.1:5055/a/b", Some("1.35")));
        assert_eq!(split_reference("127.0.0.1:5055/a/b"), ("127.0.0.1:5055/a/b", Some("latest")));
        assert_eq!(split_reference("a/b@sha256:00"), ("a/b@sha256:00", None));
    }

    #[test]
    fn the_socket_comes_from_the_option_else_the_default() {
        let engine = Engine::new("unix:///tmp/x.sock");
        assert_eq!(engine.socket.unwrap(), PathBuf::from("/tmp/x.sock"));
        assert_eq!(encode("a=b c/d"), "a%3Db%20c%2Fd");
    }
}
