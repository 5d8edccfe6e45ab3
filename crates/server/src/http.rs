//! Serving HTTP/1.1 connections: the accept loop and what bounds a client's hold on
//! the server.
//!
//! - **Connections**: at most [`Limits::max_connections`] are served at once; the loop
//!   accepts the next only when one has closed, so more wait in the kernel's listen
//!   backlog instead of taking file descriptors.
//! - **Header and idle timeout**: a client has [`Limits::header_timeout`] to send a
//!   request's headers, counted from the moment the server waits for them: from the
//!   connection's start, and from the end of the previous answer on a keep-alive
//!   connection (so an idle connection closes after the same time). A streaming answer
//!   (a live log over Server-Sent Events) is not waiting for headers and is never cut.
//! - **Request bodies**: once a handler starts reading a body, the whole body has
//!   [`Limits::header_timeout`] to arrive ([`TimedBody`]); a route that streams a long
//!   upload takes [`streamed_body`] as a layer, and then only the pause between two
//!   chunks is bounded by it. A body that runs out of time is answered 408 in the
//!   documented error shape and the connection is closed, so a client trickling a body
//!   (or announcing one it never sends) cannot keep a connection slot.
//! - **Headers** are at most [`MAX_HEADER_BYTES`] (431 beyond, hyper's answer).
//! - **File descriptors**: [`raise_nofile_limit`] lifts the soft limit to the hard one
//!   at start. When `accept` still fails for want of them (EMFILE, ENFILE), the loop
//!   logs it at most once per [`EMFILE_LOG_INTERVAL`] and waits [`EMFILE_BACKOFF`]
//!   instead of spinning.
//!
//! Every connection gets `TCP_NODELAY` (without it, a streamed answer's second small
//! write waits for the client's delayed ACK: 40 ms each) and its peer address as
//! axum's `ConnectInfo<SocketAddr>`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// How long [`serve`] holds back after `accept` ran out of file descriptors.
pub const EMFILE_BACKOFF: Duration = Duration::from_millis(100);
/// How often running out of file descriptors is logged at most.
pub const EMFILE_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// A request's start line and headers, at most.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    /// For a request's headers, an idle keep-alive connection, and a request's body.
    pub header_timeout: Duration,
}

/// A request body's error when it did not arrive in time (see [`TimedBody`]).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} s", patience.as_secs_f32())]
pub struct BodyTimedOut {
    pub patience: Duration,
}

impl BodyTimedOut {
    /// Whether `error` (or one of its sources) is a body that ran out of time.
    pub fn caused(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(error);
        while let Some(e) = next {
            if e.is::<BodyTimedOut>() {
                return true;
            }
            next = e.source();
        }
        false
    }
}

/// A request's hold on its body's deadline, in its extensions: a layer may relax it
/// ([`streamed_body`]), and [`serve`] learns from it that the body ran out of time.
#[derive(Clone, Debug, Default)]
pub struct BodyPatience(Arc<PatienceState>);

#[derive(Debug, Default)]
struct PatienceState {
    per_chunk: AtomicBool,
    timed_out: AtomicBool,
}

impl BodyPatience {
    /// Bounds only the pause before each chunk, not the whole body.
    pub fn per_chunk(&self) {
        self.0.per_chunk.store(true, Ordering::Relaxed);
    }

    pub fn timed_out(&self) -> bool {
        self.0.timed_out.load(Ordering::Relaxed)
    }
}

/// Layer for a route that streams a long body (an image upload): the body may take
/// as long as it needs while its chunks keep coming.
pub async fn streamed_body(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    if let Some(patience) = request.extensions().get::<BodyPatience>() {
        patience.per_chunk();
    }
    next.run(request).await
}

/// A request body with a deadline: `patience` from the first time it is read (or,
/// per chunk, from the previous chunk), then an error [`BodyTimedOut`].
pub struct TimedBody<B> {
    inner: B,
    patience: Duration,
    shared: BodyPatience,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> TimedBody<B> {
    pub fn new(inner: B, patience: Duration, shared: BodyPatience) -> Self {
        TimedBody { inner, patience, shared, deadline: None }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let patience = this.patience;
        let deadline = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(patience)));
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if this.shared.0.per_chunk.load(Ordering::Relaxed) {
                this.deadline = None;
            }
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.shared.0.timed_out.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(Box::new(BodyTimedOut { patience }))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The answer to a request whose body ran out of time (unless the handler already
/// answered 408 itself); the connection closes after it.
fn body_timed_out(mut response: axum::response::Response, patience: Duration) -> axum::response::Response {
    use axum::response::IntoResponse;
    if response.status() != axum::http::StatusCode::REQUEST_TIMEOUT {
        response = crate::error::AppError::Timeout(format!(
            "the request body did not arrive within {} s; send it whole and at once",
            patience.as_secs_f32()
        ))
        .into_response();
    }
    response.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    response
}

/// Raises the soft limit of open files to the hard limit; returns the limit in force
/// (`None` when it cannot be read).
pub fn raise_nofile_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => return Some(hard),
            Err(why) => tracing::warn!(%why, soft, hard, "cannot raise the open files limit"),
        }
    }
    Some(soft)
}

/// Connections served at once: the configured number, but never so many that
/// connections alone would use up the open files limit (a quarter is left for the
/// database, logs, workspaces and tasks' pipes).
pub fn connection_limit(configured: usize, nofile: Option<u64>) -> usize {
    let Some(nofile) = nofile else { return configured.max(1) };
    let room = (nofile - nofile / 4) as usize;
    if configured > room {
        tracing::warn!(
            configured,
            open_files_limit = nofile,
            using = room.max(1),
            "max_connections is over what the open files limit allows; raise `ulimit -n` (the hard limit)"
        );
    }
    configured.min(room).max(1)
}

/// Whether an accept error means the process or system is out of file descriptors
/// (or memory for sockets): worth a pause, not a spin.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == nix::libc::EMFILE || code == nix::libc::ENFILE
        || code == nix::libc::ENOBUFS || code == nix::libc::ENOMEM)
}

/// Serves `app` on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits) -> std::io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut last_logged: Option<Instant> = None;
    let mut missed = 0u64;
    loop {
        let slot = slots.clone().acquire_owned().await.expect("the connection semaphore is never closed");
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) if out_of_descriptors(&e) => {
                missed += 1;
                if last_logged.is_none_or(|at| at.elapsed() >= EMFILE_LOG_INTERVAL) {
                    tracing::error!(
                        error = %e, refused_since_last_log = missed,
                        "cannot accept connections: out of file descriptors (raise `ulimit -n`, or lower \
                         max_connections)"
                    );
                    last_logged = Some(Instant::now());
                    missed = 0;
                }
                tokio::time::sleep(EMFILE_BACKOFF).await;
                continue;
            }
            // A connection that failed between the handshake and accept (reset, aborted).
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let patience = limits.header_timeout;
            let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let shared = BodyPatience::default();
                let mut request =
                    request.map(|body| axum::body::Body::new(TimedBody::new(body, patience, shared.clone())));
                request.extensions_mut().insert(ConnectInfo(peer));
                request.extensions_mut().insert(shared.clone());
                let answer = app.clone().oneshot(request);
                async move {
                    let response = answer.await?;
                    Ok::<_, std::convert::Infallible>(if shared.timed_out() {
                        body_timed_out(response, patience)
                    } else {
                        response
                    })
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_header_size(MAX_HEADER_BYTES)
                .keep_alive(true);
            if let Err(e) = builder.serve_connection(TokioIo::new(tcp), service).await {
                tracing::debug!(error = %e, %peer, "connection ended");
            }
            drop(slot);
        });
    }
}

/// The client's address as the connection shows it (no proxy headers are trusted).
pub fn client_ip(request_extensions: &axum::http::Extensions) -> Option<String> {
    request_extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip().to_string())
}

/// What per-address limits count a client by: its address, or for IPv6 its /64 (one
/// site gets a whole /64, so its single addresses cost an attacker nothing).
pub fn client_key(client_ip: Option<&str>) -> String {
    client_ip.map_or_else(|| "-".to_owned(), crate::auth::address_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_leaves_a_quarter_of_the_open_files_limit() {
        assert_eq!(connection_limit(1024, Some(1_048_576)), 1024);
        assert_eq!(connection_limit(1024, Some(1024)), 768);
        assert_eq!(connection_limit(1024, None), 1024);
        assert_eq!(connection_limit(0, Some(1024)), 1);
    }

    /// A body of 8 chunks, 250 ms apart, read with a patience of 1 s.
    async fn read_trickle(per_chunk: bool) -> Result<usize, axum::Error> {
        let chunks = futures_util::stream::unfold(0, |i| async move {
            if i == 8 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), i + 1))
        });
        let shared = BodyPatience::default();
        if per_chunk {
            shared.per_chunk();
        }
        let body = TimedBody::new(axum::body::Body::from_stream(chunks), Duration::from_secs(1), shared.clone());
        let read = axum::body::to_bytes(axum::body::Body::new(body), usize::MAX).await.map(|b| b.len());
        assert_eq!(shared.timed_out(), read.is_err());
        read
    }

    #[tokio::test]
    async fn a_body_has_the_patience_in_all_or_per_chunk_when_streamed() {
        let cut = read_trickle(false).await.expect_err("2 s of body is over a patience of 1 s");
        assert!(BodyTimedOut::caused(&cut), "{cut}");
        assert_eq!(read_trickle(true).await.expect("a chunk every 250 ms keeps a streamed body going"), 8);
    }

    #[test]
    fn running_out_of_descriptors_is_told_apart() {
        assert!(out_of_descriptors(&std::io::Error::from_raw_os_error(nix::libc::EMFILE)));
        assert!(!out_of_descriptors(&std::io::Error::from_raw_os_error(nix::libc::ECONNABORTED)));
    }
}
