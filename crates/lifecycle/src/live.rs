//! Live log fan-out. The logs are the truth; this only tells waiting readers that a
//! log grew or ended, so any number of SSE clients can follow a task without the
//! writer knowing about them, and a slow client never holds anyone up.
//!
//! With file logs (SQLite, one server) the writer says so itself ([`LiveLogs::grew`]).
//! With logs in the database (PostgreSQL, replicas) the task may run on another
//! replica: every replica hears the `log` topic of the store's notices and wakes its
//! readers of that log ([`feed`]); a reader also looks again on a bounded timer, in case
//! a notice was lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::watch;
use wharf_store::events::Event;
use wharf_store::logs::LogKey;

/// What a reader waits on: the log's size, and whether it will grow any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogState {
    pub size: u64,
    pub closed: bool,
}

struct Entry {
    tx: watch::Sender<LogState>,
    /// Written by this process (else only watched, for a writer elsewhere).
    local: bool,
}

#[derive(Default)]
pub struct LiveLogs {
    logs: Mutex<HashMap<(i64, LogKey), Entry>>,
}

impl LiveLogs {
    fn sender(&self, run: i64, key: LogKey) -> watch::Sender<LogState> {
        let mut logs = self.logs.lock().unwrap();
        let entry = logs
            .entry((run, key))
            .or_insert_with(|| Entry { tx: watch::Sender::new(LogState { size: 0, closed: false }), local: true });
        entry.local = true;
        entry.tx.clone()
    }

    /// A reader's subscription; `None` when nobody in this process is writing this log
    /// (it is complete, belongs to a run of a previous server process, or is written
    /// by another replica: see [`LiveLogs::watch`]).
    pub fn subscribe(&self, run: i64, key: LogKey) -> Option<watch::Receiver<LogState>> {
        self.logs.lock().unwrap().get(&(run, key)).filter(|e| e.local).map(|e| e.tx.subscribe())
    }

    /// A reader's subscription to a log whoever writes it: woken by this process's
    /// writer or by the store's notices from another replica. Entries nobody watches
    /// any more are dropped here, so watching costs nothing once readers leave.
    pub fn watch(&self, run: i64, key: LogKey) -> watch::Receiver<LogState> {
        let mut logs = self.logs.lock().unwrap();
        logs.retain(|_, e| e.local || e.tx.receiver_count() > 0);
        logs.entry((run, key))
            .or_insert_with(|| Entry { tx: watch::Sender::new(LogState { size: 0, closed: false }), local: false })
            .tx
            .subscribe()
    }

    /// Registers a log that will be written (before the first line, so a reader that
    /// arrives early waits instead of seeing an end).
    pub fn open(&self, run: i64, key: LogKey) {
        self.sender(run, key);
    }

    pub fn grew(&self, run: i64, key: LogKey, size: u64) {
        self.sender(run, key).send_modify(|s| s.size = size);
    }

    pub fn close(&self, run: i64, key: LogKey) {
        self.sender(run, key).send_modify(|s| s.closed = true);
    }

    /// A notice from the store: the log is now `size` bytes (wherever it is written).
    /// Only logs someone watches or writes here are touched.
    pub fn grew_somewhere(&self, run: i64, key: LogKey, size: u64) {
        if let Some(entry) = self.logs.lock().unwrap().get(&(run, key)) {
            entry.tx.send_modify(|s| s.size = s.size.max(size));
        }
    }

    /// Notices may have been lost: every reader looks again.
    pub fn wake_all(&self) {
        for entry in self.logs.lock().unwrap().values() {
            entry.tx.send_modify(|_| {});
        }
    }

    /// Forgets a finished run's logs (readers still holding a receiver see `closed`).
    pub fn forget_run(&self, run: i64) {
        let mut logs = self.logs.lock().unwrap();
        logs.retain(|(r, _), entry| {
            if *r == run {
                entry.tx.send_modify(|s| s.closed = true);
            }
            *r != run
        });
    }
}

/// Feeds the store's `log` notices into the live logs of `shared` until it is dropped
/// (logs in the database only: file logs are told by their writer).
pub(crate) fn spawn_feed(shared: &Arc<crate::Shared>) {
    if !shared.logs.is_database() {
        return;
    }
    let (store, weak): (_, Weak<crate::Shared>) = (shared.store.clone(), Arc::downgrade(shared));
    tokio::spawn(async move {
        let mut notices = store.subscribe().await;
        while let Some(event) = notices.recv().await {
            let Some(shared) = weak.upgrade() else { return };
            match event {
                Event::Log { run, key, size } => shared.live.grew_somewhere(run, key, size),
                Event::Missed => shared.live.wake_all(),
                Event::Work { .. } => {}
            }
        }
    });
}
