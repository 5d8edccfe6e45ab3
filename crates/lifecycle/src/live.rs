//! Live log fan-out. The log files are the truth; this only tells waiting readers
//! that a log grew or ended, so any number of SSE clients can follow a task without
//! the writer knowing about them, and a slow client never holds anyone up.

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::watch;
use wharf_store::logs::LogKey;

/// What a reader waits on: the log's size, and whether it will grow any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogState {
    pub size: u64,
    pub closed: bool,
}

#[derive(Default)]
pub struct LiveLogs {
    logs: Mutex<HashMap<(i64, LogKey), watch::Sender<LogState>>>,
}

impl LiveLogs {
    fn sender(&self, run: i64, key: LogKey) -> watch::Sender<LogState> {
        let mut logs = self.logs.lock().unwrap();
        logs.entry((run, key)).or_insert_with(|| watch::Sender::new(LogState { size: 0, closed: false })).clone()
    }

    /// A reader's subscription; `None` when nobody is writing this log any more (it
    /// is complete on disk, or it belongs to a run of a previous server process).
    pub fn subscribe(&self, run: i64, key: LogKey) -> Option<watch::Receiver<LogState>> {
        self.logs.lock().unwrap().get(&(run, key)).map(|s| s.subscribe())
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

    /// Forgets a finished run's logs (readers still holding a receiver see `closed`).
    pub fn forget_run(&self, run: i64) {
        let mut logs = self.logs.lock().unwrap();
        logs.retain(|(r, _), sender| {
            if *r == run {
                sender.send_modify(|s| s.closed = true);
            }
            *r != run
        });
    }
}
