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
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
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
    pub header_timeout: Duration,
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
            let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let mut request = request.map(axum::body::Body::new);
                request.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(request)
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

    #[test]
    fn running_out_of_descriptors_is_told_apart() {
        assert!(out_of_descriptors(&std::io::Error::from_raw_os_error(nix::libc::EMFILE)));
        assert!(!out_of_descriptors(&std::io::Error::from_raw_os_error(nix::libc::ECONNABORTED)));
    }
}
