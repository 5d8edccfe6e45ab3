//! Task logs: one per task of a run (plus the checkout's and the run's own), appended
//! line by line. Byte offsets into a log are its addresses: the plain tail
//! (`?offset=N`) and the SSE event ids both use them, and so does [`LogFiles::read_from`].
//! A log holds at most the cap's bytes, then a visible marker; later lines are dropped.
//!
//! Where a log lives depends on the database, chosen by [`LogFiles::for_store`]:
//!
//! - **SQLite** (one server): append-only files under `<root>/<run id>/`. A line is
//!   written with one `write` call as it arrives, so a line acknowledged to a reader is
//!   in the file even if the server is killed right after. Nothing is faster, and one
//!   server needs nothing shared.
//! - **PostgreSQL** (replicas): chunks in the `log_chunks` table, because a reader on
//!   any replica must follow a task running on another, and replicas share nothing but
//!   the database: no shared filesystem to set up, a database backup holds the logs
//!   consistent with the runs they belong to, and retention deletes a run's chunks with
//!   the run (a foreign key). The cost: lines reach the database in batches, one
//!   insert per log per [`FLUSH_EVERY`] (not one per line), at most
//!   [`CHUNK_MAX`] bytes each, so a reader sees a line up to one period (plus a round
//!   trip) after the task printed it; and log bytes count in the database's size. A
//!   chunk is whole lines at a byte offset (`start`); a log's chunks are contiguous, and
//!   the primary key (run, log, start) refuses a chunk where another writer already
//!   wrote, so two writers of one log (a replica taking a run over) never interleave
//!   inside a line or leave a gap. Each insert tells every replica's readers through
//!   the `log` topic ([`crate::events`]) in the same statement.
//!
//! Lines handed to a PostgreSQL writer wait in memory until the next flush: at most the
//! cap per log (more would be cut anyway), and at most [`PENDING_MAX`] in all; what
//! does not fit while the database does not answer is dropped and said so in the log.
//! [`LogFiles::flush`] writes what waits before a run's record is saved, so a reader
//! who sees a task ended finds every line it printed.

use crate::events::Event;
use crate::{Store, db};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// How often waiting lines are written to the database (PostgreSQL): lines that arrive
/// meanwhile share one insert per log.
pub const FLUSH_EVERY: Duration = Duration::from_millis(25);
/// The largest chunk inserted (whole lines; a longer single line is one chunk).
pub const CHUNK_MAX: usize = 256 * 1024;
/// Bytes waiting for the database, all logs together, beyond which lines are dropped.
pub const PENDING_MAX: usize = 64 * 1024 * 1024;
/// Chunks read per query when reading a log from the database.
const READ_ROWS: i64 = 8;

/// Which log of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogKey {
    /// Lines about the run itself (policies, crashes).
    Run,
    Checkout,
    /// (stage index, task index) in the run record.
    Task(usize, usize),
}

/// `run`, `checkout` or `<stage>-<task>`: the key in notices and in the database.
impl std::fmt::Display for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogKey::Run => f.write_str("run"),
            LogKey::Checkout => f.write_str("checkout"),
            LogKey::Task(s, t) => write!(f, "{s}-{t}"),
        }
    }
}

impl std::str::FromStr for LogKey {
    type Err = String;

    fn from_str(s: &str) -> Result<LogKey, String> {
        let bad = || format!("{s:?} is not a log key (run, checkout or <stage>-<task>)");
        match s {
            "run" => Ok(LogKey::Run),
            "checkout" => Ok(LogKey::Checkout),
            _ => {
                let (stage, task) = s.split_once('-').ok_or_else(bad)?;
                Ok(LogKey::Task(stage.parse().map_err(|_| bad())?, task.parse().map_err(|_| bad())?))
            }
        }
    }
}

impl LogKey {
    fn file_name(self) -> String {
        format!("{self}.log")
    }
}

/// The logs of every run, in files or in the database (see the module docs).
#[derive(Clone, Debug)]
pub struct LogFiles {
    backend: Backend,
    /// Bytes a single log may hold before it is cut with a visible marker.
    cap: u64,
}

#[derive(Clone, Debug)]
enum Backend {
    Files { root: PathBuf },
    Database(Arc<DbLogs>),
}

/// Appends lines to one log.
#[derive(Debug)]
pub struct LogWriter {
    inner: WriterInner,
    size: u64,
    cap: u64,
    truncated: bool,
}

#[derive(Debug)]
enum WriterInner {
    File(File),
    Database { logs: Arc<DbLogs>, run: i64, key: LogKey },
}

/// The line that ends a log at its cap.
fn cap_marker(cap: u64) -> String {
    format!(
        "[wharf] log truncated: this task's log reached the {} MB cap; later lines are not kept (the task goes on)\n",
        cap / 1_000_000
    )
}

impl LogFiles {
    /// Logs as files under `root` (the SQLite server's).
    pub fn new(root: PathBuf, cap: u64) -> Self {
        LogFiles { backend: Backend::Files { root }, cap }
    }

    /// Logs in `store`'s database (`log_chunks`).
    pub fn in_database(store: Store, cap: u64) -> Self {
        let logs = Arc::new(DbLogs {
            store,
            cap,
            pending: Mutex::default(),
            known: tokio::sync::Mutex::default(),
            wake: Arc::new(Notify::new()),
            flusher: std::sync::Once::new(),
        });
        LogFiles { backend: Backend::Database(logs), cap }
    }

    /// In the database on PostgreSQL, in files under `root` on SQLite (see the module docs).
    pub fn for_store(store: &Store, root: PathBuf, cap: u64) -> Self {
        if store.is_postgres() { LogFiles::in_database(store.clone(), cap) } else { LogFiles::new(root, cap) }
    }

    /// Whether logs live in the database (readers on any server see them).
    pub fn is_database(&self) -> bool {
        matches!(self.backend, Backend::Database(_))
    }

    /// The file of a log (meaningful for file logs only).
    pub fn path(&self, run: i64, key: LogKey) -> PathBuf {
        match &self.backend {
            Backend::Files { root } => root.join(run.to_string()).join(key.file_name()),
            Backend::Database(_) => PathBuf::new(),
        }
    }

    pub fn writer(&self, run: i64, key: LogKey) -> io::Result<LogWriter> {
        match &self.backend {
            Backend::Files { .. } => {
                let path = self.path(run, key);
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir)?;
                }
                let file = OpenOptions::new().create(true).append(true).open(&path)?;
                let size = file.metadata()?.len();
                // A log cut by an earlier writer (before a restart) stays cut.
                let marker = cap_marker(self.cap);
                let truncated = size >= marker.len() as u64 && {
                    let mut tail = vec![0; marker.len()];
                    let mut reader = File::open(&path)?;
                    reader.seek(SeekFrom::End(-(marker.len() as i64)))?;
                    reader.read_exact(&mut tail)?;
                    tail == marker.as_bytes()
                };
                Ok(LogWriter { inner: WriterInner::File(file), size, cap: self.cap, truncated })
            }
            Backend::Database(logs) => {
                logs.start_flusher();
                let inner = WriterInner::Database { logs: logs.clone(), run, key };
                Ok(LogWriter { inner, size: 0, cap: self.cap, truncated: false })
            }
        }
    }

    /// The log's size in bytes (0 when it does not exist yet).
    pub async fn size(&self, run: i64, key: LogKey) -> io::Result<u64> {
        match &self.backend {
            Backend::Files { .. } => Ok(fs::metadata(self.path(run, key)).map_or(0, |m| m.len())),
            Backend::Database(logs) => Ok(logs.stored(run, key).await.map_err(io::Error::other)?.size),
        }
    }

    /// The sizes of `keys` of one run (one query in the database).
    pub async fn sizes(&self, run: i64, keys: &[LogKey]) -> io::Result<HashMap<LogKey, u64>> {
        match &self.backend {
            Backend::Files { .. } => {
                Ok(keys.iter().map(|k| (*k, fs::metadata(self.path(run, *k)).map_or(0, |m| m.len()))).collect())
            }
            Backend::Database(logs) => {
                let rows = db::query(
                    "SELECT log_key, MAX(start + length(data)) FROM log_chunks WHERE run_id = ? GROUP BY log_key",
                )
                .bind(run)
                .fetch_all(logs.store.pool())
                .await
                .map_err(io::Error::other)?;
                let stored: HashMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
                Ok(keys.iter().map(|k| (*k, stored.get(&k.to_string()).map_or(0, |s| *s as u64))).collect())
            }
        }
    }

    /// Up to `max` bytes from `offset`, cut after the last complete line.
    pub async fn read_from(&self, run: i64, key: LogKey, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        let mut buf = match &self.backend {
            Backend::Files { .. } => {
                let mut file = match File::open(self.path(run, key)) {
                    Ok(file) => file,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(e),
                };
                file.seek(SeekFrom::Start(offset))?;
                let mut buf = Vec::new();
                file.take(max as u64).read_to_end(&mut buf)?;
                buf
            }
            Backend::Database(logs) => logs.read(run, key, offset, max).await.map_err(io::Error::other)?,
        };
        // A writer may be mid-line: hand out whole lines only.
        match buf.iter().rposition(|&b| b == b'\n') {
            Some(end) => buf.truncate(end + 1),
            None => buf.clear(),
        }
        Ok(buf)
    }

    /// Writes every line handed to a writer so far (database logs; files have them
    /// already). Call before storing a record that says a task ended.
    pub async fn flush(&self) -> io::Result<()> {
        match &self.backend {
            Backend::Files { .. } => Ok(()),
            Backend::Database(logs) => logs.flush_all().await,
        }
    }

    pub async fn remove_run(&self, run: i64) -> io::Result<()> {
        match &self.backend {
            Backend::Files { root } => match fs::remove_dir_all(root.join(run.to_string())) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            // Deleting the run deleted its chunks; this is for a run kept without logs.
            Backend::Database(logs) => {
                logs.pending.lock().unwrap_or_else(|e| e.into_inner()).retain(|(r, _), _| *r != run);
                db::query("DELETE FROM log_chunks WHERE run_id = ?")
                    .bind(run)
                    .execute(logs.store.pool())
                    .await
                    .map_err(io::Error::other)?;
                logs.known.lock().await.retain(|(r, _), _| *r != run);
                Ok(())
            }
        }
    }
}

/// What became of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Written (a file), or taken for the next flush (the database).
    Written,
    /// The cap was reached: the marker was written (once) and the line dropped.
    Truncated,
}

impl LogWriter {
    /// Appends `line` and a newline: to a file in one write, to the database at the
    /// next flush.
    pub fn append(&mut self, line: &str) -> io::Result<Appended> {
        if self.truncated {
            return Ok(Appended::Truncated);
        }
        let bytes = line.len() as u64 + 1;
        let file = match &mut self.inner {
            WriterInner::File(file) => file,
            WriterInner::Database { logs, run, key } => {
                // The cap is applied at the flush, against what is stored; the first
                // line past it goes along so that the flush writes the marker.
                logs.take(*run, *key, line);
                if self.size + bytes > self.cap {
                    self.truncated = true;
                    return Ok(Appended::Truncated);
                }
                self.size += bytes;
                return Ok(Appended::Written);
            }
        };
        if self.size + bytes > self.cap {
            self.truncated = true;
            let marker = cap_marker(self.cap);
            file.write_all(marker.as_bytes())?;
            self.size += marker.len() as u64;
            return Ok(Appended::Truncated);
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        file.write_all(&buf)?;
        self.size += bytes;
        Ok(Appended::Written)
    }

    /// A file log's size; for a database log, the bytes this writer handed over.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// The database side (PostgreSQL): lines waiting for the next flush, and what is
/// known of each stored log.
#[derive(Debug)]
struct DbLogs {
    store: Store,
    cap: u64,
    pending: Mutex<HashMap<(i64, LogKey), Pending>>,
    /// Stored size and cap state of logs written lately; held across a flush, so one
    /// flush at a time writes and a log's chunks go in order.
    known: tokio::sync::Mutex<HashMap<(i64, LogKey), Stored>>,
    wake: Arc<Notify>,
    flusher: std::sync::Once,
}

#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    /// Lines dropped because too much was waiting.
    lost: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Stored {
    size: u64,
    truncated: bool,
}

/// Logs whose state is remembered between flushes at most (then it is read again).
const KNOWN_MAX: usize = 4096;

impl Drop for DbLogs {
    fn drop(&mut self) {
        // Lets the flusher see it is alone and end.
        self.wake.notify_one();
    }
}

impl DbLogs {
    fn start_flusher(self: &Arc<Self>) {
        self.flusher.call_once(|| {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
            let (weak, wake): (Weak<DbLogs>, _) = (Arc::downgrade(self), self.wake.clone());
            runtime.spawn(async move {
                loop {
                    wake.notified().await;
                    let Some(logs) = weak.upgrade() else { return };
                    if let Err(e) = logs.flush_all().await {
                        tracing::error!(error = %e, "cannot write log lines to the database; retrying");
                        wake.notify_one();
                    }
                    drop(logs);
                    tokio::time::sleep(FLUSH_EVERY).await;
                }
            });
        });
    }

    /// Takes a line for the next flush (or counts it lost when too much waits).
    fn take(&self, run: i64, key: LogKey, line: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let waiting: usize = pending.values().map(|p| p.buf.len()).sum();
        let entry = pending.entry((run, key)).or_default();
        if waiting + line.len() + 1 > PENDING_MAX || entry.buf.len() as u64 > self.cap {
            entry.lost += 1;
        } else {
            entry.buf.extend_from_slice(line.as_bytes());
            entry.buf.push(b'\n');
        }
        drop(pending);
        self.wake.notify_one();
    }

    /// What is stored of a log: its size and whether it reached the cap.
    async fn stored(&self, run: i64, key: LogKey) -> Result<Stored, sqlx::Error> {
        let row = db::query(
            "SELECT start + length(data), truncated FROM log_chunks WHERE run_id = ? AND log_key = ? \
             ORDER BY start DESC LIMIT 1",
        )
        .bind(run)
        .bind(key.to_string())
        .fetch_optional(self.store.pool())
        .await?;
        Ok(row.map_or(Stored::default(), |r| Stored { size: r.get::<i64>(0) as u64, truncated: r.get(1) }))
    }

    async fn flush_all(&self) -> io::Result<()> {
        let mut known = self.known.lock().await;
        let batch: Vec<((i64, LogKey), Pending)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain().filter(|(_, p)| !p.buf.is_empty() || p.lost > 0).collect()
        };
        if known.len() > KNOWN_MAX {
            known.clear();
        }
        let mut failed = None;
        let mut left = Vec::new();
        for ((run, key), mut waiting) in batch {
            if failed.is_some() {
                left.push(((run, key), waiting));
                continue;
            }
            if waiting.lost > 0 {
                let note =
                    format!("[wharf] {} line(s) lost here: the database did not take them in time\n", waiting.lost);
                waiting.buf.extend_from_slice(note.as_bytes());
                waiting.lost = 0;
            }
            match self.write(&mut known, run, key, &waiting.buf).await {
                Ok(()) => {}
                // The run is gone (deleted meanwhile): its lines go with it.
                Err(e) if e.as_database_error().is_some_and(|d| d.is_foreign_key_violation()) => {}
                Err(e) => {
                    known.remove(&(run, key));
                    failed = Some(e);
                    left.push(((run, key), waiting));
                }
            }
        }
        let Some(error) = failed else { return Ok(()) };
        // Put back in front of what arrived meanwhile, for the next attempt.
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for (id, mut waiting) in left {
            let newer = pending.remove(&id).unwrap_or_default();
            waiting.buf.extend_from_slice(&newer.buf);
            waiting.lost += newer.lost;
            pending.insert(id, waiting);
        }
        Err(io::Error::other(error))
    }

    /// Appends `lines` (whole lines) to a stored log, applying the cap, in chunks of at
    /// most [`CHUNK_MAX`].
    async fn write(
        &self,
        known: &mut HashMap<(i64, LogKey), Stored>,
        run: i64,
        key: LogKey,
        mut lines: &[u8],
    ) -> Result<(), sqlx::Error> {
        let mut attempts = 0;
        while !lines.is_empty() {
            let stored = match known.get(&(run, key)) {
                Some(s) => *s,
                None => self.stored(run, key).await?,
            };
            if stored.truncated {
                return Ok(());
            }
            let room = self.cap.saturating_sub(stored.size) as usize;
            let mut take = whole_lines(lines, CHUNK_MAX.min(room));
            let mut truncated = false;
            if take == 0 {
                let first = lines.iter().position(|&b| b == b'\n').map_or(lines.len(), |i| i + 1);
                if first > room {
                    // The next line does not fit under the cap: the marker ends the log.
                    truncated = true;
                } else {
                    // One line longer than a chunk: it goes alone.
                    take = first;
                }
            }
            let mut data = lines[..take].to_vec();
            if truncated {
                data.extend_from_slice(cap_marker(self.cap).as_bytes());
            }
            let end = stored.size + data.len() as u64;
            let payload = Event::Log { run, key, size: end }.payload();
            let inserted = db::query(
                "WITH ins AS (INSERT INTO log_chunks (run_id, log_key, start, data, truncated) \
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING start) \
                 SELECT pg_notify(?, ?) FROM ins",
            )
            .bind(run)
            .bind(key.to_string())
            .bind(stored.size as i64)
            .bind(data)
            .bind(truncated)
            .bind(crate::events::Topic::Log.channel())
            .bind(payload)
            .fetch_all(self.store.pool())
            .await?;
            if inserted.is_empty() {
                // Another writer filled this offset: read where the log ends, again.
                known.remove(&(run, key));
                attempts += 1;
                if attempts > 5 {
                    return Err(sqlx::Error::Protocol(format!(
                        "log {key} of run {run}: another writer keeps taking the next offset"
                    )));
                }
                continue;
            }
            known.insert((run, key), Stored { size: end, truncated });
            if truncated {
                return Ok(());
            }
            lines = &lines[take..];
        }
        Ok(())
    }

    /// Up to `max` bytes of a stored log from `offset` (whole chunks, cut at `max`).
    async fn read(&self, run: i64, key: LogKey, offset: u64, max: usize) -> Result<Vec<u8>, sqlx::Error> {
        let mut out = Vec::new();
        let mut at = offset;
        while out.len() < max {
            // The chunk holding `at`, and those after it.
            let rows = db::query(
                "SELECT start, data FROM log_chunks WHERE run_id = ? AND log_key = ? AND start >= \
                 COALESCE((SELECT MAX(start) FROM log_chunks WHERE run_id = ? AND log_key = ? AND start <= ?), 0) \
                 ORDER BY start LIMIT ?",
            )
            .bind(run)
            .bind(key.to_string())
            .bind(run)
            .bind(key.to_string())
            .bind(at as i64)
            .bind(READ_ROWS)
            .fetch_all(self.store.pool())
            .await?;
            let count = rows.len();
            let before = at;
            for row in rows {
                let start = row.get::<i64>(0) as u64;
                let data: Vec<u8> = row.get(1);
                let end = start + data.len() as u64;
                if end <= at || start > at {
                    continue;
                }
                let from = (at - start) as usize;
                let want = (max - out.len()).min(data.len() - from);
                out.extend_from_slice(&data[from..from + want]);
                at += want as u64;
                if out.len() >= max {
                    break;
                }
            }
            if (count as i64) < READ_ROWS || at == before {
                break;
            }
        }
        Ok(out)
    }
}

/// Copies file logs (`<root>/<run id>/<key>.log`, as a SQLite server keeps them) into
/// `to`'s database, each at the same byte offsets: what `wharf migrate` does after the
/// tables, since a PostgreSQL server reads logs from there. Logs of runs `to` does not
/// have, and logs it has already, are left out; the files stay. Returns how many logs
/// and bytes were copied.
pub async fn import_files(root: &std::path::Path, to: &Store) -> io::Result<(u64, u64)> {
    let marker_start = cap_marker(0);
    let marker_start = &marker_start.as_bytes()[..marker_start.find(':').unwrap_or(0)];
    let (mut logs, mut bytes) = (0, 0);
    let dirs = match fs::read_dir(root) {
        Ok(dirs) => dirs,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    for dir in dirs {
        let dir = dir?;
        let Some(run) = dir.file_name().to_str().and_then(|n| n.parse::<i64>().ok()) else { continue };
        let known = db::query("SELECT id FROM runs WHERE id = ?").bind(run).fetch_optional(to.pool()).await;
        if known.map_err(io::Error::other)?.is_none() {
            continue;
        }
        for file in fs::read_dir(dir.path())? {
            let file = file?;
            let name = file.file_name();
            let Some(key) = name.to_str().and_then(|n| n.strip_suffix(".log")).and_then(|k| k.parse::<LogKey>().ok())
            else {
                continue;
            };
            let present = db::query("SELECT 1 FROM log_chunks WHERE run_id = ? AND log_key = ? LIMIT 1")
                .bind(run)
                .bind(key.to_string())
                .fetch_optional(to.pool())
                .await
                .map_err(io::Error::other)?;
            if present.is_some() {
                continue;
            }
            let mut reader = File::open(file.path())?;
            let mut tx = to.pool().begin().await.map_err(io::Error::other)?;
            let (mut start, mut pending, mut buf) = (0u64, Vec::new(), vec![0; 64 * 1024]);
            loop {
                let n = reader.read(&mut buf)?;
                pending.extend_from_slice(&buf[..n]);
                while pending.len() >= CHUNK_MAX || (n == 0 && !pending.is_empty()) {
                    // Whole lines per chunk where there are any.
                    let cut = match whole_lines(&pending, CHUNK_MAX) {
                        0 => pending.len().min(CHUNK_MAX),
                        cut => cut,
                    };
                    let chunk: Vec<u8> = pending.drain(..cut).collect();
                    let body = chunk.strip_suffix(b"\n").unwrap_or(&chunk);
                    let last_line = body.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                    let truncated = n == 0 && pending.is_empty() && body[last_line..].starts_with(marker_start);
                    db::query(
                        "INSERT INTO log_chunks (run_id, log_key, start, data, truncated) VALUES (?, ?, ?, ?, ?)",
                    )
                    .bind(run)
                    .bind(key.to_string())
                    .bind(start as i64)
                    .bind(chunk.as_slice())
                    .bind(truncated)
                    .execute(&mut tx)
                    .await
                    .map_err(io::Error::other)?;
                    start += chunk.len() as u64;
                }
                if n == 0 {
                    break;
                }
            }
            tx.commit().await.map_err(io::Error::other)?;
            logs += 1;
            bytes += start;
        }
    }
    Ok((logs, bytes))
}

/// How many bytes of `lines` make whole lines within `limit`.
fn whole_lines(lines: &[u8], limit: usize) -> usize {
    if lines.len() <= limit {
        return lines.len();
    }
    lines[..limit].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;

    /// A store with one run (chunks belong to a run), and its logs as the server
    /// picks them: files on SQLite, the database on PostgreSQL.
    async fn setup(url: &str, cap: u64) -> (Store, LogFiles, i64, tempfile::TempDir) {
        let store = Store::open(url).await.unwrap();
        let p = store.create_pipeline("admin", "app", "name: app\n").await.unwrap();
        let (new, _) = store
            .create_run(p.id, 1, None, None, |new| wharf_core::run::RunRecord {
                pipeline: "app".into(),
                number: new.number as u64,
                cause: wharf_core::run::Cause::Manual { user: "admin".into() },
                parameters: Default::default(),
                progress: wharf_core::run::Progress::new(jiff::Timestamp::now()),
                reason: None,
                checkout: None,
                stages: vec![],
            })
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let logs = LogFiles::for_store(&store, dir.path().to_path_buf(), cap);
        assert_eq!(logs.is_database(), store.is_postgres());
        (store, logs, new.id, dir)
    }

    on_both!(url: append_read_whole_lines_and_cap, two_writers_of_one_log_never_interleave_or_lose_a_line);

    async fn append_read_whole_lines_and_cap(url: String) {
        let (store, logs, run, _dir) = setup(&url, 40).await;
        let key = LogKey::Task(0, 1);
        let mut events = store.subscribe().await;
        let mut w = logs.writer(run, key).unwrap();
        assert_eq!(w.append("first line").unwrap(), Appended::Written);
        assert_eq!(w.append("second line").unwrap(), Appended::Written);
        assert_eq!(w.append("this one does not fit any more").unwrap(), Appended::Truncated);
        assert_eq!(w.append("nor this").unwrap(), Appended::Truncated);
        logs.flush().await.unwrap();
        let all = String::from_utf8(logs.read_from(run, key, 0, 1 << 20).await.unwrap()).unwrap();
        assert!(all.starts_with("first line\nsecond line\n[wharf] log truncated"), "{all}");
        assert_eq!(all.matches("truncated").count(), 1);
        let tail = logs.read_from(run, key, 11, 1 << 20).await.unwrap();
        assert!(tail.starts_with(b"second line\n"));
        // A cut mid-line yields only whole lines.
        assert_eq!(logs.read_from(run, key, 0, 15).await.unwrap(), b"first line\n");
        assert_eq!(logs.size(run, key).await.unwrap(), all.len() as u64);
        assert!(logs.read_from(run, key, all.len() as u64, 10).await.unwrap().is_empty());
        // Another writer later (a restart) adds nothing past the marker.
        logs.writer(run, key).unwrap().append("after a restart").unwrap();
        logs.flush().await.unwrap();
        assert_eq!(logs.size(run, key).await.unwrap(), all.len() as u64);
        let sizes = logs.sizes(run, &[key, LogKey::Run]).await.unwrap();
        assert_eq!((sizes[&key], sizes[&LogKey::Run]), (all.len() as u64, 0));
        if logs.is_database() {
            // Readers on every server hear that the log grew, to its stored size.
            let mut last = 0;
            while last < all.len() as u64 {
                match tokio::time::timeout(Duration::from_secs(10), events.recv()).await.unwrap() {
                    Some(Event::Log { run: r, key: k, size }) if r == run && k == key => last = size,
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(last, all.len() as u64);
        }
        assert!(logs.read_from(run + 1, LogKey::Run, 0, 10).await.unwrap().is_empty());
        logs.remove_run(run).await.unwrap();
        assert_eq!(logs.size(run, key).await.unwrap(), 0);
    }

    /// Two servers (two stores) write one log at once — a run's own log, say, from the
    /// replica running it and one receiving a webhook — and a reader reads every line
    /// exactly once, whole, at contiguous offsets; deleting the run deletes its chunks.
    async fn two_writers_of_one_log_never_interleave_or_lose_a_line(url: String) {
        let (store, a, run, dir) = setup(&url, 100_000_000).await;
        let b = if store.is_postgres() {
            LogFiles::in_database(Store::open(&url).await.unwrap(), 100_000_000)
        } else {
            LogFiles::new(dir.path().to_path_buf(), 100_000_000)
        };
        let write = |logs: LogFiles, who: &'static str| {
            tokio::spawn(async move {
                let mut w = logs.writer(run, LogKey::Run).unwrap();
                for i in 0..2000 {
                    w.append(&format!("{who} line {i:04} {}", "x".repeat(i % 300))).unwrap();
                    if i % 100 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                logs.flush().await.unwrap();
            })
        };
        let (ha, hb) = (write(a.clone(), "a"), write(b.clone(), "b"));
        ha.await.unwrap();
        hb.await.unwrap();
        // Read back in small pieces, as a tail would.
        let mut offset = 0;
        let mut lines = Vec::new();
        loop {
            let piece = b.read_from(run, LogKey::Run, offset, 10_000).await.unwrap();
            if piece.is_empty() {
                break;
            }
            offset += piece.len() as u64;
            lines.extend(String::from_utf8(piece).unwrap().lines().map(str::to_owned));
        }
        assert_eq!(offset, a.size(run, LogKey::Run).await.unwrap());
        for who in ["a", "b"] {
            let mine: Vec<&String> = lines.iter().filter(|l| l.starts_with(&format!("{who} "))).collect();
            assert_eq!(mine.len(), 2000, "every line of {who} once");
            for (i, line) in mine.iter().enumerate() {
                assert_eq!(**line, format!("{who} line {i:04} {}", "x".repeat(i % 300)), "in order, whole");
            }
        }
        assert_eq!(lines.len(), 4000);
        if store.is_postgres() {
            store.delete_runs(&[run]).await.unwrap();
            let left: i64 = db::query("SELECT COUNT(*) FROM log_chunks").fetch_one(store.pool()).await.unwrap().get(0);
            assert_eq!(left, 0, "retention deletes a run's chunks with the run");
        }
    }

    /// `wharf migrate` copies a SQLite server's log files into PostgreSQL: the same
    /// bytes at the same offsets, the cap's state kept, runs the target lacks left out.
    #[tokio::test]
    async fn file_logs_are_imported_into_the_database_at_the_same_offsets() {
        let Some((_keep, url)) = crate::backends::postgres_url() else { return };
        let (store, in_db, run, dir) = setup(&url, 100).await;
        let files = LogFiles::new(dir.path().to_path_buf(), 100);
        let mut w = files.writer(run, LogKey::Task(1, 2)).unwrap();
        for i in 0..20 {
            w.append(&format!("line {i}")).unwrap();
        }
        let big = "y".repeat(CHUNK_MAX + 10);
        let files_big = LogFiles::new(dir.path().to_path_buf(), 10 * CHUNK_MAX as u64);
        let mut w = files_big.writer(run, LogKey::Run).unwrap();
        for line in ["short", &big, "after"] {
            w.append(line).unwrap();
        }
        files.writer(run + 100, LogKey::Run).unwrap().append("a run the target lacks").unwrap();
        let (logs, bytes) = import_files(dir.path(), &store).await.unwrap();
        let on_disk = files.size(run, LogKey::Task(1, 2)).await.unwrap() + files.size(run, LogKey::Run).await.unwrap();
        assert_eq!((logs, bytes), (2, on_disk));
        for key in [LogKey::Task(1, 2), LogKey::Run] {
            let want = files.read_from(run, key, 0, 1 << 22).await.unwrap();
            assert_eq!(in_db.read_from(run, key, 0, 1 << 22).await.unwrap(), want, "{key}");
            assert_eq!(
                in_db.read_from(run, key, 7, 1 << 22).await.unwrap(),
                files.read_from(run, key, 7, 1 << 22).await.unwrap()
            );
        }
        // The cut log stays cut.
        in_db.writer(run, LogKey::Task(1, 2)).unwrap().append("more").unwrap();
        in_db.flush().await.unwrap();
        assert_eq!(
            in_db.size(run, LogKey::Task(1, 2)).await.unwrap(),
            files.size(run, LogKey::Task(1, 2)).await.unwrap()
        );
        // A second import copies nothing again.
        assert_eq!(import_files(dir.path(), &store).await.unwrap(), (0, 0));
    }

    #[test]
    fn whole_lines_within_a_limit() {
        assert_eq!(whole_lines(b"ab\ncd\n", 10), 6);
        assert_eq!(whole_lines(b"ab\ncd\n", 5), 3);
        assert_eq!(whole_lines(b"abcdef\n", 5), 0);
    }
}
