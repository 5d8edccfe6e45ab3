//! Durable storage for the server: pipelines and their immutable versions, runs with
//! their full records (every transition with its time), the per-pipeline counters
//! (`BUILD_ID`, `SYS_INCREMENT`), and task logs as append-only files ([`logs`]).
//!
//! One [`Store`] type with the database behind it: SQLite (WAL, embedded, the default)
//! or PostgreSQL (`postgres://…`). Every query is written once, in SQL both accept;
//! [`db`] says how it runs on either and why it is done that way. The times are epoch
//! milliseconds on both. Schemas: `migrations/sqlite` and `migrations/postgres`, the
//! same numbers with the same meaning ([`migrate`](crate::migrate)).
//!
//! On both, writes of one process queue on one mutex (SQLite takes one writer at a
//! time; on PostgreSQL it keeps the read-then-write steps of one server, such as the
//! pipeline limit, as atomic as they are on SQLite). Several servers on one PostgreSQL
//! share runs through [`claims`]: a run is started by the one server that claims it,
//! under a lease, and every write of its record is fenced.
//!
//! Start with [`Store::open`], then the pipeline methods, then the run methods.

#[cfg(test)]
#[macro_use]
#[path = "../tests/backends/mod.rs"]
mod backends;

pub mod bindings;
pub mod claims;
pub mod clusters;
pub mod copy;
pub mod db;
pub mod deliveries;
pub mod events;
pub mod gates;
pub mod idempotency;
pub mod lite;
pub mod logs;
pub mod migrate;
pub mod registries;
pub mod secretbox;
pub mod signals;
pub mod tenancy;
pub mod timers;

use db::DbRow;
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use std::str::FromStr;
use std::time::Duration;
use wharf_core::run::RunRecord;
use wharf_core::status::Status;

/// What went wrong in storage. `NotFound` and `Conflict` are for callers to turn into
/// 404 and 409; `Database` and `Corrupt` are server faults.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored record does not parse any more (a bug or a hand edit).
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    /// Creating one more would pass the pipeline limit (the licence's).
    #[error("the limit of {0} pipelines is reached")]
    Limit(i64),
    /// A write of a claimed run refused: another server has claimed it since (its
    /// lease had lapsed). The writer must stop writing for that run ([`claims`]).
    #[error("run {0} is now another server's (its lease lapsed); this server's write was refused")]
    Fenced(i64),
    /// A sealed secret cannot be opened (unknown key, damaged).
    #[error(transparent)]
    Secret(#[from] secretbox::SecretError),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Clone, Debug)]
pub struct Store {
    pool: db::Pool,
    /// SQLite takes one writer at a time; queueing writers here instead of in SQLite's
    /// busy handler (which sleeps and retries) keeps bursts of small writes fast. On
    /// PostgreSQL it keeps one server's read-then-write steps atomic (see the crate docs).
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Seals every secret before it is written (see [`secretbox`]).
    secret_box: std::sync::Arc<secretbox::SecretBox>,
    /// How many webhook deliveries [`Store::insert_delivery`] keeps.
    delivery_retention: deliveries::Retention,
    /// Notices to and from the other processes on this database ([`events`]).
    events: std::sync::Arc<events::Events>,
}

/// A version as it is saved: its text, what lists show of it (JSON the caller
/// derives from the parsed text; the store keeps it opaque), so a page of a list does
/// not parse every row's text again, and the repository whose events may start it
/// (see [`Store::pipelines_for_events`]).
#[derive(Clone, Copy, Debug)]
pub struct NewVersion<'a> {
    pub source: &'a str,
    pub listing: Option<&'a str>,
    /// The key of the repository an events trigger of this version listens to, `""`
    /// when it has none; `None` when the caller did not say (events parse it).
    pub events_repo: Option<&'a str>,
}

impl<'a> From<&'a str> for NewVersion<'a> {
    /// A version without a listing or events repository: lists and events parse its text.
    fn from(source: &'a str) -> Self {
        NewVersion { source, listing: None, events_repo: None }
    }
}

impl<'a> From<&'a String> for NewVersion<'a> {
    fn from(source: &'a String) -> Self {
        NewVersion::from(source.as_str())
    }
}

/// What a page of a list has of a pipeline's latest version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listed {
    /// The listing saved with it.
    Listing(String),
    /// Its text, for a version saved without a listing.
    Source(String),
}

/// A pipeline's row, with its latest version number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PipelineRow {
    pub id: i64,
    pub project: String,
    pub name: String,
    pub active: bool,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// The user who created it (by hand or as a copy); rows from before users existed
    /// say `admin`.
    pub created_by: String,
}

/// Which pipelines a listing includes: the caller's view (seed 002 §2.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PipelineFilter {
    All,
    /// Pipelines in these projects.
    Projects(Vec<String>),
    /// Pipelines this user created.
    CreatedBy(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VersionRow {
    pub version: i64,
    pub source: String,
    pub created_at: i64,
}

/// A run as listed: what a table row needs, without the record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    pub id: i64,
    pub pipeline_id: i64,
    pub number: i64,
    pub version: i64,
    pub status: Status,
    pub retry_of: Option<i64>,
    pub commit: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// `SYS_INCREMENT` of this run.
    pub increment: i64,
}

/// A run with its full record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRow {
    pub summary: RunSummary,
    pub pipeline: String,
    pub record: RunRecord,
}

/// A new run's identity, allocated atomically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewRun {
    pub id: i64,
    pub number: i64,
    pub increment: i64,
}

/// A new run's numbers, allocated before its row is written: what its first record
/// is made from ([`Store::create_run`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Numbering {
    pub number: i64,
    pub increment: i64,
}

pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl Store {
    /// Opens the database at `url` and brings its schema up to date: `postgres://…` (or
    /// `postgresql://…`) is a PostgreSQL database that must exist; `sqlite://path` or a
    /// plain path is a SQLite file, created if missing.
    pub async fn open(url: &str) -> Result<Store> {
        let pool = if is_postgres_url(url) { open_postgres(url).await? } else { open_sqlite(url).await? };
        migrate::run(&pool).await?;
        let secret_box = std::sync::Arc::new(secretbox::SecretBox::ephemeral());
        Ok(Store {
            pool,
            writer: Default::default(),
            secret_box,
            delivery_retention: Default::default(),
            events: Default::default(),
        })
    }
}

/// The SQLite pool: WAL, foreign keys on, a writer waits up to 10 s for the lock.
async fn open_sqlite(url: &str) -> Result<db::Pool> {
    let path = url.strip_prefix("sqlite://").unwrap_or(url);
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // With WAL, NORMAL loses nothing when the process dies (only on power loss).
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10));
    Ok(db::Pool::Sqlite(lite::LitePool::open(options, 8).await?))
}

/// A PostgreSQL pool. Plain TCP (or a Unix socket): this build has no TLS for the
/// database, so the server belongs on the same machine or a trusted network (`sslmode`
/// other than `disable`/`prefer` in the URL fails to connect).
async fn open_postgres(url: &str) -> Result<db::Pool> {
    let options = PgConnectOptions::from_str(url)?.application_name("wharf");
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(|e| StoreError::Database(connect_error(url, e)))?;
    Ok(db::Pool::Postgres(pool))
}

/// A connection failure that names the server it tried (never the password).
fn connect_error(url: &str, error: sqlx::Error) -> sqlx::Error {
    let target = url.rsplit_once('@').map_or(url, |(_, host)| host);
    sqlx::Error::Configuration(format!("cannot connect to PostgreSQL at {target}: {error}").into())
}

/// Whether `url` names a PostgreSQL database (else it is SQLite).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl Store {
    /// The same store, sealing and opening secrets with `secret_box` (the server's
    /// configured keys). Call before cloning the store around.
    pub fn with_secret_box(mut self, secret_box: secretbox::SecretBox) -> Store {
        self.secret_box = std::sync::Arc::new(secret_box);
        self
    }

    /// The same store, keeping the newest `keep` webhook deliveries, of which at most
    /// `keep_rejected` refused ones (see [`Store::insert_delivery`]).
    pub fn with_delivery_retention(mut self, keep: u32, keep_rejected: u32) -> Store {
        self.delivery_retention = deliveries::Retention { keep, keep_rejected };
        self
    }

    pub fn secret_box(&self) -> &secretbox::SecretBox {
        &self.secret_box
    }

    /// A secret on its way into a column: sealed (`None` stays `None`).
    pub fn seal_secret(&self, plain: Option<&str>) -> Option<String> {
        plain.map(|p| self.secret_box.seal(p))
    }

    /// A secret column's value on its way out: opened (`None` stays `None`).
    pub fn open_secret(&self, stored: Option<String>) -> Result<Option<String>> {
        Ok(stored.map(|s| self.secret_box.open(&s)).transpose()?)
    }

    /// Seals again, with the current key, every stored secret that is plain (from
    /// before encryption) or sealed with an older key: every column of
    /// [`secretbox::SEALED_COLUMNS`]. Returns how many values changed.
    pub async fn reseal_all(&self) -> Result<usize> {
        let _write = self.writer.lock().await;
        let mut changed = 0;
        let mut tx = self.pool.begin().await?;
        for (table, keys, columns) in secretbox::SEALED_COLUMNS {
            let key_list = keys.join(", ");
            let key_match: Vec<String> = keys.iter().map(|k| format!("{k} = ?")).collect();
            let key_match = key_match.join(" AND ");
            for column in *columns {
                // Table and column names are our own constants, never input.
                let rows = db::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {column}, {key_list} FROM {table} WHERE {column} IS NOT NULL"
                )))
                .fetch_all(&mut tx)
                .await?;
                for row in rows {
                    let stored: String = row.get(0);
                    if !self.secret_box.needs_reseal(&stored) {
                        continue;
                    }
                    let plain = self.secret_box.open(&stored)?;
                    let sealed = self.secret_box.seal(&plain);
                    let update = format!("UPDATE {table} SET {column} = ? WHERE {key_match}");
                    let mut query = db::query(sqlx::AssertSqlSafe(update)).bind(sealed);
                    for at in 1..=keys.len() {
                        query = query.bind(row.get::<String>(at));
                    }
                    query.execute(&mut tx).await?;
                    changed += 1;
                }
            }
        }
        tx.commit().await?;
        Ok(changed)
    }

    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        let row = db::query("SELECT value FROM settings WHERE key = ?").bind(key).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        let _write = self.writer.lock().await;
        db::query(
            "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- pipelines ----

    /// Creates a pipeline with its first version. A name already used in the project is
    /// a `Conflict`.
    pub async fn create_pipeline(&self, project: &str, name: &str, source: &str) -> Result<PipelineRow> {
        self.create_pipeline_by(project, name, source, "admin", None).await
    }

    /// [`create_pipeline`](Self::create_pipeline), recording who created it and the
    /// version's listing, and refusing with `Limit` when `limit` pipelines exist already
    /// (checked in the same transaction, so concurrent creates cannot pass it).
    pub async fn create_pipeline_by(
        &self,
        project: &str,
        name: &str,
        version: impl Into<NewVersion<'_>>,
        created_by: &str,
        limit: Option<i64>,
    ) -> Result<PipelineRow> {
        let version = version.into();
        let _write = self.writer.lock().await;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        if let Some(limit) = limit {
            let count: i64 = db::query("SELECT COUNT(*) FROM pipelines").fetch_one(&mut tx).await?.get(0);
            if count >= limit {
                return Err(StoreError::Limit(limit));
            }
        }
        let inserted = db::query(
            "INSERT INTO pipelines (project, name, active, version, created_at, updated_at, created_by, events_repo) \
             VALUES (?, ?, TRUE, 1, ?, ?, ?, ?) RETURNING id",
        )
        .bind(project)
        .bind(name)
        .bind(now)
        .bind(now)
        .bind(created_by)
        .bind(version.events_repo)
        .fetch_one(&mut tx)
        .await;
        let id: i64 = match inserted {
            Ok(row) => row.get(0),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!(
                    "a pipeline named `{name}` already exists in project `{project}`"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        db::query(
            "INSERT INTO pipeline_versions (pipeline_id, version, source, listing, created_at) VALUES (?, 1, ?, ?, ?)",
        )
        .bind(id)
        .bind(version.source)
        .bind(version.listing)
        .bind(now)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        self.pipeline(id).await
    }

    /// Saves a new version; renaming to a name in use is a `Conflict`.
    pub async fn add_version(&self, id: i64, name: &str, version: impl Into<NewVersion<'_>>) -> Result<PipelineRow> {
        let version = version.into();
        let _write = self.writer.lock().await;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let renamed = db::query(
            "UPDATE pipelines SET version = version + 1, name = ?, updated_at = ?, events_repo = ? WHERE id = ?",
        )
        .bind(name)
        .bind(now)
        .bind(version.events_repo)
        .bind(id)
        .execute(&mut tx)
        .await;
        match renamed {
            Ok(done) if done.rows_affected() == 0 => return Err(StoreError::NotFound(format!("pipeline {id}"))),
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(format!("a pipeline named `{name}` already exists")));
            }
            Err(e) => return Err(e.into()),
        }
        db::query(
            "INSERT INTO pipeline_versions (pipeline_id, version, source, listing, created_at) \
             SELECT id, version, ?, ?, ? FROM pipelines WHERE id = ?",
        )
        .bind(version.source)
        .bind(version.listing)
        .bind(now)
        .bind(id)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        self.pipeline(id).await
    }

    pub async fn pipeline(&self, id: i64) -> Result<PipelineRow> {
        let row = db::query(
            "SELECT id, project, name, active, version, created_at, updated_at, created_by FROM pipelines WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("pipeline {id}")))?;
        Ok(pipeline_row(&row))
    }

    /// Finds a pipeline by name; `project` narrows it down when names repeat.
    pub async fn pipeline_by_name(&self, name: &str, project: Option<&str>) -> Result<PipelineRow> {
        let rows = db::query(
            "SELECT id, project, name, active, version, created_at, updated_at, created_by FROM pipelines \
             WHERE name = ? AND (? IS NULL OR project = ?) ORDER BY id LIMIT 2",
        )
        .bind(name)
        .bind(project)
        .bind(project)
        .fetch_all(&self.pool)
        .await?;
        match rows.as_slice() {
            [one] => Ok(pipeline_row(one)),
            [] => Err(StoreError::NotFound(format!("pipeline `{name}`"))),
            _ => Err(StoreError::Conflict(format!(
                "several projects have a pipeline named `{name}`; use its id or name the project"
            ))),
        }
    }

    /// The pipelines an event of a repository may start, by project and name: those
    /// whose latest version was saved listening to one of `repos` (keys as
    /// [`NewVersion::events_repo`]), and those saved without saying (the caller parses
    /// them). The rest — other repositories, no events trigger — are not read at all.
    pub async fn pipelines_for_events(&self, repos: &[String]) -> Result<Vec<PipelineRow>> {
        let each = if self.pool.is_postgres() {
            "SELECT jsonb_array_elements_text(?1::jsonb)"
        } else {
            "SELECT value FROM json_each(?1)"
        };
        let sql = format!(
            "SELECT id, project, name, active, version, created_at, updated_at, created_by FROM pipelines \
             WHERE events_repo IS NULL OR events_repo IN ({each}) ORDER BY project, name"
        );
        let rows = db::query(sqlx::AssertSqlSafe(sql))
            .bind(serde_json::json!(repos).to_string())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(pipeline_row).collect())
    }

    /// Up to `limit` pipelines, by id past `after`, whose latest version has no events
    /// repository yet: (id, version, text), for the caller to parse and
    /// [`set_events_repo`](Self::set_events_repo).
    pub async fn pipelines_without_events_repo(&self, after: i64, limit: i64) -> Result<Vec<(i64, i64, String)>> {
        let rows = db::query(
            "SELECT p.id, p.version, v.source FROM pipelines p \
             JOIN pipeline_versions v ON v.pipeline_id = p.id AND v.version = p.version \
             WHERE p.events_repo IS NULL AND p.id > ? ORDER BY p.id LIMIT ?",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    /// Sets the events repository of pipeline `id` while `version` is its latest and
    /// it has none (a version saved meanwhile brought its own).
    pub async fn set_events_repo(&self, id: i64, version: i64, key: &str) -> Result<()> {
        let _write = self.writer.lock().await;
        db::query("UPDATE pipelines SET events_repo = ? WHERE id = ? AND version = ? AND events_repo IS NULL")
            .bind(key)
            .bind(id)
            .bind(version)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A page of pipelines, by name, with the total count.
    pub async fn pipelines(&self, limit: i64, offset: i64) -> Result<(Vec<(PipelineRow, Option<RunSummary>)>, i64)> {
        self.pipelines_filtered(&PipelineFilter::All, limit, offset).await
    }

    /// A page of the pipelines `filter` lets through, by project and name, with their
    /// total count.
    pub async fn pipelines_filtered(
        &self,
        filter: &PipelineFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<(PipelineRow, Option<RunSummary>)>, i64)> {
        let (rows, total) = self.pipeline_page(filter, limit, offset, false).await?;
        Ok((rows.into_iter().map(|(p, last, _)| (p, last)).collect(), total))
    }

    /// [`Store::pipelines_filtered`] with what lists show of each pipeline's latest
    /// version (its listing, or its text where none was saved; `None` if it is
    /// missing), in one query with the count: a page of a list costs one round trip to
    /// the database, not one per row.
    pub async fn pipelines_listed(
        &self,
        filter: &PipelineFilter,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<(PipelineRow, Option<RunSummary>, Option<Listed>)>, i64)> {
        self.pipeline_page(filter, limit, offset, true).await
    }

    async fn pipeline_page(
        &self,
        filter: &PipelineFilter,
        limit: i64,
        offset: i64,
        listed: bool,
    ) -> Result<(Vec<(PipelineRow, Option<RunSummary>, Option<Listed>)>, i64)> {
        // `?1` is the JSON list of projects or the creator; an admin's page has no filter.
        let each_project = if self.pool.is_postgres() {
            "SELECT jsonb_array_elements_text(?1::jsonb)"
        } else {
            "SELECT value FROM json_each(?1)"
        };
        let (filter_arg, matches) = match filter {
            PipelineFilter::All => (None, String::new()),
            PipelineFilter::Projects(list) => {
                (Some(serde_json::json!(list).to_string()), format!("WHERE project IN ({each_project})"))
            }
            PipelineFilter::CreatedBy(user) => (Some(user.clone()), "WHERE created_by = ?1".to_owned()),
        };
        let count = format!("(SELECT COUNT(*) FROM pipelines {matches})");
        let (columns, join) = if listed {
            (
                "v.listing, CASE WHEN v.listing IS NULL THEN v.source END",
                "LEFT JOIN pipeline_versions v ON v.pipeline_id = p.id AND v.version = p.version",
            )
        } else {
            ("NULL, NULL", "")
        };
        // The page is chosen on the `(project, name)` index alone (ids only), so an
        // `OFFSET` deep into the list skips index entries, not whole rows; the count
        // rides along on every row, and an empty page (past the end) counts apart.
        let (limit_at, offset_at) = if filter_arg.is_some() { ("?2", "?3") } else { ("?1", "?2") };
        let query = db::query(sqlx::AssertSqlSafe(format!(
            "SELECT p.id, p.project, p.name, p.active, p.version, p.created_at, p.updated_at, p.created_by, \
                    r.id, r.pipeline_id, r.number, r.version, r.status, r.retry_of, r.commit_sha, r.created_at, r.updated_at, \
                    r.increment, {columns}, {count} \
             FROM (SELECT id FROM pipelines {matches} ORDER BY project, name LIMIT {limit_at} OFFSET {offset_at}) page \
             JOIN pipelines p ON p.id = page.id \
             LEFT JOIN runs r ON r.pipeline_id = p.id AND r.number = p.last_number \
             {join} \
             ORDER BY p.project, p.name"
        )));
        let query = match &filter_arg {
            Some(arg) => query.bind(arg.as_str()),
            None => query,
        };
        let rows = query.bind(limit).bind(offset).fetch_all(&self.pool).await?;
        let total: i64 = match rows.first() {
            Some(row) => row.get(20),
            None => {
                let query = db::query(sqlx::AssertSqlSafe(format!("SELECT {count}")));
                // PostgreSQL refuses values for placeholders the statement does not have.
                let query = match &filter_arg {
                    Some(arg) => query.bind(arg.as_str()),
                    None => query,
                };
                query.fetch_one(&self.pool).await?.get(0)
            }
        };
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let last = match row.get::<Option<i64>>(8) {
                Some(_) => Some(summary_at(row, 8)?),
                None => None,
            };
            let version = match (row.get::<Option<String>>(18), row.get::<Option<String>>(19)) {
                (Some(listing), _) => Some(Listed::Listing(listing)),
                (None, Some(source)) => Some(Listed::Source(source)),
                (None, None) => None,
            };
            out.push((pipeline_row(row), last, version));
        }
        Ok((out, total))
    }

    /// How many pipelines exist (the licence counts them all).
    pub async fn pipeline_count(&self) -> Result<i64> {
        Ok(db::query("SELECT COUNT(*) FROM pipelines").fetch_one(&self.pool).await?.get(0))
    }

    pub async fn versions(&self, id: i64) -> Result<Vec<VersionRow>> {
        let rows = db::query(
            "SELECT version, source, created_at FROM pipeline_versions WHERE pipeline_id = ? ORDER BY version DESC",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| VersionRow { version: r.get(0), source: r.get(1), created_at: r.get(2) }).collect())
    }

    pub async fn version(&self, id: i64, version: i64) -> Result<VersionRow> {
        let row = db::query(
            "SELECT version, source, created_at FROM pipeline_versions WHERE pipeline_id = ? AND version = ?",
        )
        .bind(id)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("version {version} of pipeline {id}")))?;
        Ok(VersionRow { version: row.get(0), source: row.get(1), created_at: row.get(2) })
    }

    pub async fn set_active(&self, id: i64, active: bool) -> Result<PipelineRow> {
        let _write = self.writer.lock().await;
        let done = db::query("UPDATE pipelines SET active = ?, updated_at = ? WHERE id = ?")
            .bind(active)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("pipeline {id}")));
        }
        self.pipeline(id).await
    }

    /// Deletes a pipeline with its versions and runs; refuses while a run is not over.
    pub async fn delete_pipeline(&self, id: i64) -> Result<Vec<i64>> {
        let _write = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        let active: i64 = db::query(
            "SELECT COUNT(*) FROM runs WHERE pipeline_id = ? AND status IN ('queued', 'pending', 'running', 'waiting')",
        )
        .bind(id)
        .fetch_one(&mut tx)
        .await?
        .get(0);
        if active > 0 {
            return Err(StoreError::Conflict(format!(
                "the pipeline has {active} run(s) in progress; stop them before deleting it"
            )));
        }
        let runs: Vec<i64> = db::query("SELECT id FROM runs WHERE pipeline_id = ?")
            .bind(id)
            .fetch_all(&mut tx)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let done = db::query("DELETE FROM pipelines WHERE id = ?").bind(id).execute(&mut tx).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("pipeline {id}")));
        }
        tx.commit().await?;
        Ok(runs)
    }

    // ---- runs ----

    /// Allocates the next `BUILD_ID` and `SYS_INCREMENT` of a pipeline and stores the
    /// run's first record, in one transaction. `make_record` builds the record from the
    /// allocated numbers.
    pub async fn create_run(
        &self,
        pipeline_id: i64,
        version: i64,
        retry_of: Option<i64>,
        commit: Option<&str>,
        make_record: impl FnOnce(Numbering) -> RunRecord,
    ) -> Result<(NewRun, RunRecord)> {
        let _write = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        let created = insert_run(&mut tx, pipeline_id, version, retry_of, commit, None, make_record).await?;
        tx.commit().await?;
        Ok(created)
    }

    /// Writes a run's record (and the columns derived from it).
    /// Stores a run's record (and its status and commit); returns the bytes of the
    /// record written.
    pub async fn save_record(&self, run_id: i64, record: &RunRecord) -> Result<usize> {
        self.write_record(run_id, record, None).await
    }

    /// [`save_record`](Self::save_record), only while the run's fence is `fence` when
    /// one is given ([`claims`]).
    async fn write_record(&self, run_id: i64, record: &RunRecord, fence: Option<i64>) -> Result<usize> {
        let json = serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let bytes = json.len();
        let commit = record.checkout.as_ref().and_then(|c| c.commit.clone());
        let sql = match fence {
            None => {
                "UPDATE runs SET record = ?, status = ?, commit_sha = COALESCE(?, commit_sha), updated_at = ? WHERE id = ?"
            }
            Some(_) => {
                "UPDATE runs SET record = ?, status = ?, commit_sha = COALESCE(?, commit_sha), updated_at = ? \
                 WHERE id = ? AND fence = ?"
            }
        };
        let mut query =
            db::query(sql).bind(json).bind(record.progress.status.as_str()).bind(commit).bind(now_ms()).bind(run_id);
        if let Some(fence) = fence {
            query = query.bind(fence);
        }
        let _write = self.writer.lock().await;
        let done = query.execute(&self.pool).await?;
        if fence.is_some() && done.rows_affected() == 0 {
            return Err(StoreError::Fenced(run_id));
        }
        Ok(bytes)
    }

    pub async fn run(&self, id: i64) -> Result<RunRow> {
        let row = db::query(sqlx::AssertSqlSafe(format!("{RUN_SELECT} WHERE r.id = ?")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("run {id}")))?;
        run_row(&row)
    }

    /// The run numbered `number` (`#N`, `BUILD_ID`) of a pipeline.
    pub async fn run_by_number(&self, pipeline_id: i64, number: i64) -> Result<RunRow> {
        let row = db::query(sqlx::AssertSqlSafe(format!("{RUN_SELECT} WHERE r.pipeline_id = ? AND r.number = ?")))
            .bind(pipeline_id)
            .bind(number)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("run #{number}")))?;
        run_row(&row)
    }

    /// The number of the first run of `pipeline_id` that an event started at `commit` on
    /// `branch` (or `tag`) at or after `since_ms`, if any: how a second event for the
    /// same commit finds that the pipeline already ran for it. One indexed lookup by
    /// pipeline and commit; the cause and ref are read from the stored record.
    pub async fn event_run_at(
        &self,
        pipeline_id: i64,
        commit: &str,
        branch: Option<&str>,
        tag: Option<&str>,
        since_ms: i64,
    ) -> Result<Option<i64>> {
        // The record is JSON text on both; each has its own way to read a path in it.
        let (kind, tag_at, branch_at) = if self.pool.is_postgres() {
            (
                "record::jsonb #>> '{cause,kind}'",
                "record::jsonb #>> '{checkout,tag}'",
                "record::jsonb #>> '{checkout,branch}'",
            )
        } else {
            (
                "json_extract(record, '$.cause.kind')",
                "json_extract(record, '$.checkout.tag')",
                "json_extract(record, '$.checkout.branch')",
            )
        };
        let row = db::query(sqlx::AssertSqlSafe(format!(
            "SELECT number FROM runs WHERE pipeline_id = ? AND commit_sha = ? AND created_at >= ? \
             AND {kind} = 'event' \
             AND {tag_at} IS NOT DISTINCT FROM ? \
             AND (? IS NOT NULL OR {branch_at} = ?) \
             ORDER BY id LIMIT 1"
        )))
        .bind(pipeline_id)
        .bind(commit)
        .bind(since_ms)
        .bind(tag)
        .bind(tag)
        .bind(branch)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// A page of a pipeline's runs, newest first, with the number of runs kept.
    pub async fn runs(&self, pipeline_id: i64, limit: i64, offset: i64) -> Result<(Vec<RunSummary>, i64)> {
        let runs = self.runs_newest_first(pipeline_id, limit, offset).await?;
        // Numbers may have gaps after retention; the total is of the runs kept.
        let total: i64 = db::query("SELECT COUNT(*) FROM runs WHERE pipeline_id = ?")
            .bind(pipeline_id)
            .fetch_one(&self.pool)
            .await?
            .get(0);
        Ok((runs, total))
    }

    /// `limit` of a pipeline's runs after skipping the newest `offset`, newest first.
    pub async fn runs_newest_first(&self, pipeline_id: i64, limit: i64, offset: i64) -> Result<Vec<RunSummary>> {
        let rows = db::query(
            "SELECT id, pipeline_id, number, version, status, retry_of, commit_sha, created_at, updated_at, increment \
             FROM runs WHERE pipeline_id = ? ORDER BY number DESC LIMIT ? OFFSET ?",
        )
        .bind(pipeline_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| summary_at(r, 0)).collect()
    }

    /// Runs in any of `statuses`, oldest first (recovery, the queue).
    pub async fn runs_with_status(&self, statuses: &[Status]) -> Result<Vec<RunRow>> {
        let list: Vec<String> = statuses.iter().map(|s| format!("'{}'", s.as_str())).collect();
        // The status strings are our own constants, never user input.
        let sql = format!("{RUN_SELECT} WHERE r.status IN ({}) ORDER BY r.id", list.join(", "));
        let rows = db::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
        rows.iter().map(run_row).collect()
    }

    /// Counts runs by status (for metrics).
    pub async fn count_by_status(&self) -> Result<Vec<(String, i64)>> {
        let rows = db::query("SELECT status, COUNT(*) FROM runs GROUP BY status").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Finished runs beyond the newest `keep` of a pipeline, or older than
    /// `before_ms`: what a retention policy would delete.
    pub async fn expired_runs(&self, pipeline_id: i64, keep: Option<i64>, before_ms: Option<i64>) -> Result<Vec<i64>> {
        let rows = db::query(
            "SELECT id FROM runs WHERE pipeline_id = ? \
               AND status NOT IN ('queued', 'pending', 'running', 'waiting') \
               AND ((? IS NOT NULL AND number <= (SELECT MAX(number) FROM runs WHERE pipeline_id = ?) - ?) \
                 OR (? IS NOT NULL AND updated_at < ?)) \
             ORDER BY id",
        )
        .bind(pipeline_id)
        .bind(keep)
        .bind(pipeline_id)
        .bind(keep)
        .bind(before_ms)
        .bind(before_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub async fn delete_runs(&self, ids: &[i64]) -> Result<()> {
        let _write = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        for id in ids {
            db::query("DELETE FROM runs WHERE id = ?").bind(id).execute(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every pipeline id (for retention sweeps).
    pub async fn pipeline_ids(&self) -> Result<Vec<i64>> {
        let rows = db::query("SELECT id FROM pipelines ORDER BY id").fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The database behind the store, for tests and `wharf migrate`.
    pub fn pool(&self) -> &db::Pool {
        &self.pool
    }

    /// The SQLite pool, for bulk loading in benchmarks and tests; `None` on PostgreSQL.
    pub fn sqlite_pool(&self) -> Option<&lite::LitePool> {
        match &self.pool {
            db::Pool::Sqlite(pool) => Some(pool),
            db::Pool::Postgres(_) => None,
        }
    }

    /// The PostgreSQL pool; `None` on SQLite.
    pub fn postgres_pool(&self) -> Option<&PgPool> {
        match &self.pool {
            db::Pool::Postgres(pool) => Some(pool),
            db::Pool::Sqlite(_) => None,
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.pool.is_postgres()
    }
}

/// Allocates the next `BUILD_ID` and `SYS_INCREMENT` of a pipeline and stores the
/// run's first record, inside `tx`. `timer_due`: the due time of a timer's run, under
/// the unique key of a pipeline and due time (a second run for it is a conflict).
pub(crate) async fn insert_run(
    tx: &mut db::Tx,
    pipeline_id: i64,
    version: i64,
    retry_of: Option<i64>,
    commit: Option<&str>,
    timer_due: Option<i64>,
    make_record: impl FnOnce(Numbering) -> RunRecord,
) -> Result<(NewRun, RunRecord)> {
    let now = now_ms();
    let row = db::query(
        "UPDATE pipelines SET last_number = last_number + 1, increment = increment + 1 WHERE id = ? \
         RETURNING last_number, increment",
    )
    .bind(pipeline_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("pipeline {pipeline_id}")))?;
    let (number, increment): (i64, i64) = (row.get(0), row.get(1));
    // The record is made from the numbers, so the row is written whole in one statement.
    let record = make_record(Numbering { number, increment });
    let json = serde_json::to_string(&record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let inserted = db::query(
        "INSERT INTO runs (pipeline_id, number, increment, version, status, retry_of, commit_sha, record, created_at, \
         updated_at, timer_due) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(pipeline_id)
    .bind(number)
    .bind(increment)
    .bind(version)
    .bind(record.progress.status.as_str())
    .bind(retry_of)
    .bind(commit)
    .bind(json)
    .bind(now)
    .bind(now)
    .bind(timer_due)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| {
        StoreError::Conflict(format!("pipeline {pipeline_id} already has a run for the timer due at {timer_due:?}"))
    })?;
    Ok((NewRun { id: inserted.get(0), number, increment }, record))
}

const RUN_SELECT: &str = "SELECT r.id, r.pipeline_id, r.number, r.version, r.status, r.retry_of, r.commit_sha, \
     r.created_at, r.updated_at, r.increment, p.name, r.record FROM runs r JOIN pipelines p ON p.id = r.pipeline_id";

fn pipeline_row(row: &DbRow) -> PipelineRow {
    PipelineRow {
        id: row.get(0),
        project: row.get(1),
        name: row.get(2),
        active: row.get(3),
        version: row.get(4),
        created_at: row.get(5),
        updated_at: row.get(6),
        created_by: row.get(7),
    }
}

fn summary_at(row: &DbRow, at: usize) -> Result<RunSummary> {
    let status: String = row.get(at + 4);
    Ok(RunSummary {
        id: row.get(at),
        pipeline_id: row.get(at + 1),
        number: row.get(at + 2),
        version: row.get(at + 3),
        status: status.parse().map_err(|e: wharf_core::status::UnknownStatus| StoreError::Corrupt(e.to_string()))?,
        retry_of: row.get(at + 5),
        commit: row.get(at + 6),
        created_at: row.get(at + 7),
        updated_at: row.get(at + 8),
        increment: row.get(at + 9),
    })
}

fn run_row(row: &DbRow) -> Result<RunRow> {
    let summary = summary_at(row, 0)?;
    let json: String = row.get(11);
    let record = serde_json::from_str(&json)
        .map_err(|e| StoreError::Corrupt(format!("the record of run {}: {e}", summary.id)))?;
    Ok(RunRow { summary, pipeline: row.get(10), record })
}
