//! How stops flow: waiting on and forwarding the `watch` channels, the run's watchdog
//! (a person's stop, the pipeline timeout), and the words a stopped part gets.

use super::{RunState, StopRx, StopTx};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use wharf_core::status::Status;
use wharf_executor::{StopReason, StopRequest};

/// Waits until the channel carries a stop request; never returns if its sender is gone.
pub(super) async fn stop_requested(rx: &mut StopRx) -> StopRequest {
    loop {
        if let Some(request) = *rx.borrow_and_update() {
            return request;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Forwards every request from `from` to `to` (a later one may shorten the grace).
pub(super) async fn forward(mut from: StopRx, to: &StopTx) {
    loop {
        let request = stop_requested(&mut from).await;
        to.send_if_modified(|current| {
            let changed = *current != Some(request);
            *current = Some(request);
            changed
        });
        if from.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

pub(super) fn ended_status(reason: StopReason) -> Status {
    match reason {
        StopReason::Stopped | StopReason::Superseded { .. } => Status::Stopped,
        StopReason::TimedOut => Status::TimedOut,
    }
}

impl RunState {
    /// Records why the whole run ends early; the first reason wins.
    pub(super) fn end_run(&self, status: Status, reason: String) -> bool {
        let mut end = self.run_end.lock().unwrap();
        if end.is_some() {
            return false;
        }
        *end = Some((status, reason));
        true
    }

    /// Turns a stop from outside (a person's, or a newer run's) and the pipeline
    /// timeout into requests on `run_tx`.
    pub(super) async fn watchdog(self: Arc<Self>, mut external: StopRx, run_tx: StopTx) {
        let limit = self.pipeline().effective_timeout().as_std();
        let clock = self.run_clock.clone();
        let timeout = clock.expired(limit);
        tokio::pin!(timeout);
        let mut timed_out = false;
        loop {
            tokio::select! {
                request = stop_requested(&mut external) => {
                    // A person's stop or a newer run's: its words are the run's reason,
                    // and every part it ends says the same.
                    self.end_run(Status::Stopped, request.reason.to_string());
                    run_tx.send_replace(Some(request));
                    if external.changed().await.is_err() {
                        // No more requests can come; keep serving the timeout only.
                        external = watch::channel(None).1;
                    }
                }
                _ = &mut timeout, if !timed_out => {
                    timed_out = true;
                    let limit = wharf_core::Duration::from(limit);
                    if self.end_run(Status::TimedOut, format!("timed out: the pipeline timeout of {limit} ran out")) {
                        run_tx.send_replace(Some(StopRequest { reason: StopReason::TimedOut, grace: self.config.timeout_grace }));
                    }
                }
            }
        }
    }

    pub(super) fn stop_note(&self, reason: StopReason, stage_note: &Mutex<Option<String>>) -> String {
        if let Some(note) = stage_note.lock().unwrap().clone() {
            return note;
        }
        match self.run_end.lock().unwrap().clone() {
            Some((_, why)) => why,
            None => reason.to_string(),
        }
    }
}
