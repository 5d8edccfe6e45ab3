//! SQLite connections handed out without sqlx's pool.
//!
//! Each `SqliteConnection` lives on a thread of its own, and every command to it — a
//! statement, `BEGIN`, `COMMIT`, a ping — is a message to that thread and a reply back:
//! two context switches. sqlx's pool adds two such round trips to every statement run
//! on it, whatever the database: a ping when a connection is handed out ("is it still
//! there?") and another when it comes back ("flush what a cancelled caller left"),
//! the latter on a task spawned for it. For a database in the same process neither
//! question needs asking: the connection cannot be lost, and its thread runs commands
//! in the order they were sent, so a rollback queued by a dropped transaction runs
//! before the next user's first statement. A profile of 1,000 concurrent trivial runs
//! had the context switches to and from these threads as the largest cost left; this
//! pool makes a statement one round trip instead of three.
//!
//! What it keeps of sqlx's pool: at most `max` connections, opened when first needed;
//! a caller waits for a free one (up to 30 s, then `PoolTimedOut`, as sqlx); a
//! connection whose thread died (`WorkerCrashed`) is not handed out again; and a
//! connection left idle for 10 minutes is closed (but the last), which gives back its
//! page cache (up to 2 MiB each) after a busy spell.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Database, Sqlite};
use sqlx_core::transaction::TransactionManager;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

type Manager = <Sqlite as Database>::TransactionManager;

/// How long a caller waits for a free connection (sqlx's default too).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection may sit idle before it is closed (sqlx's default too).
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Up to `max` connections to one SQLite database; cheap to clone.
#[derive(Clone)]
pub struct LitePool(Arc<Inner>);

struct Inner {
    options: SqliteConnectOptions,
    /// Free connections with the time each came back, the most recent last (handed out
    /// first, so the oldest are the ones left idle).
    idle: Mutex<Vec<(SqliteConnection, Instant)>>,
    slots: Arc<Semaphore>,
    closed: AtomicBool,
}

impl std::fmt::Debug for LitePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LitePool").field("free", &self.0.slots.available_permits()).finish_non_exhaustive()
    }
}

impl LitePool {
    /// Opens one connection now, so a database that cannot be opened fails here.
    pub async fn open(options: SqliteConnectOptions, max: usize) -> Result<LitePool, sqlx::Error> {
        LitePool::open_with(options, max, IDLE_TIMEOUT).await
    }

    async fn open_with(options: SqliteConnectOptions, max: usize, idle: Duration) -> Result<LitePool, sqlx::Error> {
        let first = SqliteConnection::connect_with(&options).await?;
        let inner = Arc::new(Inner {
            options,
            idle: Mutex::new(vec![(first, Instant::now())]),
            slots: Arc::new(Semaphore::new(max)),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(reap(Arc::downgrade(&inner), idle));
        Ok(LitePool(inner))
    }

    /// A connection of its own until the guard is dropped.
    pub async fn acquire(&self) -> Result<LiteConn, sqlx::Error> {
        let permit = match tokio::time::timeout(ACQUIRE_TIMEOUT, self.0.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(sqlx::Error::PoolClosed),
            Err(_) => return Err(sqlx::Error::PoolTimedOut),
        };
        let idle = self.0.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some((conn, _)) => conn,
            None => SqliteConnection::connect_with(&self.0.options).await?,
        };
        Ok(LiteConn { conn: Some(conn), pool: self.0.clone(), broken: false, _permit: permit })
    }

    /// A transaction on a connection of its own; rolled back when dropped uncommitted.
    pub async fn begin(&self) -> Result<LiteTx, sqlx::Error> {
        let mut conn = self.acquire().await?;
        let begun = Manager::begin(&mut conn, None).await;
        conn.check(begun)?;
        Ok(LiteTx { conn, open: true })
    }

    /// Closes the idle connections and refuses new callers; a connection in use is
    /// closed when its guard is dropped.
    pub async fn close(&self) {
        self.0.closed.store(true, Ordering::SeqCst);
        self.0.slots.close();
        let idle = std::mem::take(&mut *self.0.idle.lock().unwrap_or_else(|p| p.into_inner()));
        for (conn, _) in idle {
            let _ = conn.close().await;
        }
    }
}

/// Closes connections idle for longer than `after`, keeping one, until the pool is gone.
async fn reap(pool: Weak<Inner>, after: Duration) {
    loop {
        tokio::time::sleep(after / 4).await;
        let Some(inner) = pool.upgrade() else { return };
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        let stale: Vec<SqliteConnection> = {
            let mut idle = inner.idle.lock().unwrap_or_else(|p| p.into_inner());
            let keep_from = idle.iter().position(|(_, since)| since.elapsed() < after).unwrap_or(idle.len());
            let cut = keep_from.min(idle.len().saturating_sub(1));
            idle.drain(..cut).map(|(conn, _)| conn).collect()
        };
        drop(inner);
        for conn in stale {
            let _ = conn.close().await;
        }
    }
}

/// A connection taken from a [`LitePool`]; goes back when dropped.
pub struct LiteConn {
    conn: Option<SqliteConnection>,
    pool: Arc<Inner>,
    broken: bool,
    _permit: OwnedSemaphorePermit,
}

impl LiteConn {
    /// `result`, noting a dead connection thread so the connection is not reused.
    pub fn check<T>(&mut self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        if matches!(result, Err(sqlx::Error::WorkerCrashed)) {
            self.broken = true;
        }
        result
    }
}

impl Deref for LiteConn {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl DerefMut for LiteConn {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl Drop for LiteConn {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.broken || self.pool.closed.load(Ordering::SeqCst) {
            return; // dropping it ends its thread
        }
        self.pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push((conn, Instant::now()));
    }
}

/// A transaction on a [`LiteConn`].
pub struct LiteTx {
    conn: LiteConn,
    open: bool,
}

impl LiteTx {
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        let done = Manager::commit(&mut self.conn).await;
        self.conn.check(done)?;
        self.open = false;
        Ok(())
    }

    /// `result`, noting a dead connection thread (see [`LiteConn::check`]).
    pub fn check<T>(&mut self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        self.conn.check(result)
    }
}

impl Deref for LiteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl DerefMut for LiteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

impl Drop for LiteTx {
    fn drop(&mut self) {
        if self.open {
            // Queued on the connection's thread, so it runs before anything the next
            // user of the connection sends.
            Manager::start_rollback(&mut self.conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    async fn pool(dir: &tempfile::TempDir, max: usize) -> LitePool {
        pool_idle(dir, max, IDLE_TIMEOUT).await
    }

    async fn pool_idle(dir: &tempfile::TempDir, max: usize, idle: Duration) -> LitePool {
        let path = dir.path().join("t.db");
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .unwrap()
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        let pool = LitePool::open_with(options, max, idle).await.unwrap();
        let mut c = pool.acquire().await.unwrap();
        sqlx::query("CREATE TABLE t (v INTEGER)").execute(&mut *c).await.unwrap();
        pool
    }

    async fn count(pool: &LitePool) -> i64 {
        let mut c = pool.acquire().await.unwrap();
        sqlx::query_scalar("SELECT COUNT(*) FROM t").fetch_one(&mut *c).await.unwrap()
    }

    /// A transaction dropped without commit leaves nothing, and the connection it ran
    /// on (the only one) serves the next caller with no transaction left open.
    #[tokio::test]
    async fn a_dropped_transaction_rolls_back_before_the_connection_is_used_again() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir, 1).await;
        {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("INSERT INTO t VALUES (1)").execute(&mut *tx).await.unwrap();
        }
        assert_eq!(count(&pool).await, 0);
        let mut tx = pool.begin().await.unwrap(); // would fail inside an open transaction
        sqlx::query("INSERT INTO t VALUES (2)").execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(count(&pool).await, 1);
    }

    /// No more than `max` connections are out at once: the next caller waits for one
    /// to come back, and gets it.
    #[tokio::test]
    async fn callers_past_the_limit_wait_for_a_connection() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir, 2).await;
        let a = pool.acquire().await.unwrap();
        let _b = pool.acquire().await.unwrap();
        let waiting = tokio::spawn({
            let pool = pool.clone();
            async move { count(&pool).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a third connection was handed out");
        drop(a);
        assert_eq!(waiting.await.unwrap(), 0);
        assert_eq!(pool.0.idle.lock().unwrap().len(), 1, "the connection went back");
    }

    /// Connections left idle past the timeout are closed, all but one.
    #[tokio::test]
    async fn idle_connections_are_closed_but_one() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool_idle(&dir, 4, Duration::from_millis(200)).await;
        let held: Vec<LiteConn> =
            vec![pool.acquire().await.unwrap(), pool.acquire().await.unwrap(), pool.acquire().await.unwrap()];
        drop(held);
        assert_eq!(pool.0.idle.lock().unwrap().len(), 3);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(pool.0.idle.lock().unwrap().len(), 1, "the idle ones were kept");
        assert_eq!(count(&pool).await, 0, "the one kept still works");
    }

    /// A closed pool refuses callers and keeps no connection.
    #[tokio::test]
    async fn a_closed_pool_refuses_callers() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(&dir, 2).await;
        let held = pool.acquire().await.unwrap();
        pool.close().await;
        assert!(matches!(pool.acquire().await, Err(sqlx::Error::PoolClosed)));
        drop(held);
        assert!(pool.0.idle.lock().unwrap().is_empty());
    }
}
