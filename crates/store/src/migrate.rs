//! Schema migrations, embedded in the binary and applied in order at start, each in
//! its own transaction. A database newer than this binary is refused rather than
//! guessed at.

use crate::{Result, StoreError};
use sqlx::{Row, SqlitePool};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_initial.sql")),
    (2, include_str!("../migrations/sqlite/0002_triggers.sql")),
    (3, include_str!("../migrations/sqlite/0003_oauth_and_hooks.sql")),
    (4, include_str!("../migrations/sqlite/0004_registries.sql")),
    (6, include_str!("../migrations/sqlite/0006_tenancy.sql")),
    (7, include_str!("../migrations/sqlite/0007_trusted_projects.sql")),
    (9, include_str!("../migrations/sqlite/0009_delivery_retention.sql")),
    (11, include_str!("../migrations/sqlite/0011_users_and_idempotency.sql")),
    (12, include_str!("../migrations/sqlite/0012_clusters.sql")),
    (13, include_str!("../migrations/sqlite/0013_timers_version.sql")),
    (14, include_str!("../migrations/sqlite/0014_gates.sql")),
    (15, include_str!("../migrations/sqlite/0015_signals.sql")),
];

pub async fn run(pool: &SqlitePool) -> Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .execute(pool)
    .await?;
    let applied: Vec<i64> =
        sqlx::query("SELECT version FROM schema_migrations").fetch_all(pool).await?.iter().map(|r| r.get(0)).collect();
    let current = applied.iter().copied().max().unwrap_or(0);
    let newest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if current > newest {
        return Err(StoreError::Corrupt(format!(
            "the database has schema version {current}, newer than this Wharf knows ({newest}); use a newer Wharf"
        )));
    }
    // Every migration not applied yet, in order: numbers are handed out per feature,
    // so a database may have 4 before 3 arrives.
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| !applied.contains(v)) {
        let mut tx = pool.begin().await?;
        for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty() && !is_comment_only(s)) {
            sqlx::query(sqlx::AssertSqlSafe(statement.to_owned())).execute(&mut *tx).await?;
        }
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")
            .bind(version)
            .bind(crate::now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

fn is_comment_only(statement: &str) -> bool {
    statement.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with("--"))
}
