//! Moving an installation from SQLite to PostgreSQL (`wharf migrate`): every table,
//! parents before children, into an empty PostgreSQL database in one transaction (all
//! or nothing), ids kept, and each identity sequence set past the largest id copied.
//!
//! The schemas of both are this build's (both stores are opened, so both are migrated
//! first); the columns copied are the target's, read from its catalogue, and each
//! value is read from SQLite as the target's type (SQLite's 0/1 becomes a boolean).
//! Rows are read in pages by `rowid`, so memory stays bounded however big `runs` is.
//! Task log files are not in the database: they stay in the data directory.

use crate::db::{self, Arg, DbRow, Tx};
use crate::{Result, Store, StoreError};

/// Every table, parents before children (the order foreign keys need). A migration that
/// adds a table adds it here; [`copy_sqlite_to_postgres`] refuses a source with a table
/// this list lacks, so a forgotten one cannot be left behind silently.
pub const TABLES: &[&str] = &[
    "settings",
    "pipelines",
    "pipeline_versions",
    "runs",
    "log_chunks",
    "bindings",
    "deliveries",
    "delivery_claims",
    "timers",
    "oauth_states",
    "registries",
    "registry_workspaces",
    "departments",
    "projects",
    "users",
    "memberships",
    "api_tokens",
    "sessions",
    "audit_log",
    "secrets",
    "run_requests",
    "clusters",
    "approval_decisions",
    "notification_attempts",
    "stage_hooks",
    "stage_signals",
];

/// Tables of the schema's own bookkeeping, never copied.
const NOT_COPIED: &[&str] = &["schema_migrations", "sqlite_sequence"];

/// Rows the migrations themselves insert (parents first); a target holding only these
/// counts as empty.
const SEEDS: &[(&str, &str, &str)] = &[("departments", "name", "Default"), ("projects", "name", "admin")];

/// Rows read from SQLite per page.
const PAGE: i64 = 500;

/// Placeholders per statement on PostgreSQL stay well under its limit of 65,535.
const MAX_VALUES: usize = 30_000;

/// How many rows each table had: what `wharf migrate` reports.
pub type Copied = Vec<(&'static str, u64)>;

/// Copies every row of `from` (SQLite) into `to` (PostgreSQL, empty but for the rows
/// its migrations made). Nothing is written to `to` unless everything is.
pub async fn copy_sqlite_to_postgres(from: &Store, to: &Store) -> Result<Copied> {
    if from.pool.is_postgres() || !to.pool.is_postgres() {
        return Err(StoreError::Conflict("the copy goes from a SQLite store to a PostgreSQL one".into()));
    }
    let source_tables: Vec<String> =
        db::query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .fetch_all(&from.pool)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
    if let Some(unknown) =
        source_tables.iter().find(|t| !TABLES.contains(&t.as_str()) && !NOT_COPIED.contains(&t.as_str()))
    {
        return Err(StoreError::Conflict(format!(
            "the SQLite database has a table `{unknown}` that the copy does not know; use the Wharf that made it"
        )));
    }
    let _write = to.writer.lock().await;
    let mut tx = to.pool.begin().await?;
    refuse_unless_empty(&mut tx).await?;
    for (table, column, value) in SEEDS.iter().rev() {
        db::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE {column} = ?")))
            .bind(*value)
            .execute(&mut tx)
            .await?;
    }
    let mut copied = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let columns = target_columns(&mut tx, table).await?;
        let rows = copy_table(from, &mut tx, table, &columns).await?;
        if let Some(identity) = columns.iter().find(|c| c.identity) {
            // The next id a new row gets is past every id copied (1 for an empty table).
            db::query(sqlx::AssertSqlSafe(format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{name}'), COALESCE(MAX(\"{name}\"), 0) + 1, false) \
                 FROM {table}",
                name = identity.name
            )))
            .execute(&mut tx)
            .await?;
        }
        copied.push((*table, rows));
    }
    tx.commit().await?;
    Ok(copied)
}

/// A column of the target table.
struct Column {
    name: String,
    kind: Kind,
    identity: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
    Bool,
    Bytes,
}

async fn target_columns(tx: &mut Tx, table: &str) -> Result<Vec<Column>> {
    let rows = db::query(
        "SELECT column_name::text, data_type::text, is_identity::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Err(StoreError::Corrupt(format!("the PostgreSQL database has no table `{table}`")));
    }
    rows.iter()
        .map(|r| {
            let name: String = r.get(0);
            let data_type: String = r.get(1);
            let kind = match data_type.as_str() {
                "bigint" | "integer" | "smallint" => Kind::Int,
                "text" | "character varying" => Kind::Text,
                "boolean" => Kind::Bool,
                "bytea" => Kind::Bytes,
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "column {table}.{name} has a type the copy does not know: {other}"
                    )));
                }
            };
            Ok(Column { name, kind, identity: r.get::<String>(2) == "YES" })
        })
        .collect()
}

async fn refuse_unless_empty(tx: &mut Tx) -> Result<()> {
    for table in TABLES {
        // The migrations' own rows (one per seeded table) do not count.
        let (filter, seed) = match SEEDS.iter().find(|(t, _, _)| t == table) {
            Some((_, column, value)) => (format!(" WHERE {column} <> ?"), Some(*value)),
            None => (String::new(), None),
        };
        let mut query = db::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}{filter}")));
        if let Some(seed) = seed {
            query = query.bind(seed);
        }
        let count: i64 = query.fetch_one(&mut *tx).await?.get(0);
        if count > 0 {
            return Err(StoreError::Conflict(format!(
                "the PostgreSQL database is not empty (table `{table}` has {count} row(s)); migrate into a new database"
            )));
        }
    }
    Ok(())
}

/// Copies one table page by page; returns the number of rows.
async fn copy_table(from: &Store, tx: &mut Tx, table: &str, columns: &[Column]) -> Result<u64> {
    let names: Vec<String> = columns.iter().map(|c| format!("\"{}\"", c.name)).collect();
    let names = names.join(", ");
    let select = format!("SELECT rowid, {names} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?");
    let per_statement = (MAX_VALUES / columns.len()).max(1);
    let mut last_rowid = i64::MIN;
    let mut total = 0u64;
    loop {
        let rows =
            db::query(sqlx::AssertSqlSafe(select.clone())).bind(last_rowid).bind(PAGE).fetch_all(&from.pool).await?;
        let Some(last) = rows.last() else { break };
        last_rowid = last.get(0);
        for chunk in rows.chunks(per_statement) {
            let one = format!("({})", vec!["?"; columns.len()].join(", "));
            let mut insert = db::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {table} ({names}) VALUES {}",
                vec![one.as_str(); chunk.len()].join(", ")
            )));
            for row in chunk {
                for (at, column) in columns.iter().enumerate() {
                    insert = insert.bind_arg(value(row, at + 1, column).map_err(|e| {
                        StoreError::Corrupt(format!(
                            "{table}.{} of the row with rowid {}: {e}",
                            column.name,
                            row.get::<i64>(0)
                        ))
                    })?);
                }
            }
            insert.execute(&mut *tx).await?;
        }
        total += rows.len() as u64;
        if (rows.len() as i64) < PAGE {
            break;
        }
    }
    Ok(total)
}

/// The value at `at` of a SQLite row, as the target column's type.
fn value(row: &DbRow, at: usize, column: &Column) -> Result<Arg, sqlx::Error> {
    Ok(match column.kind {
        Kind::Int => Arg::Int(row.try_get(at)?),
        Kind::Text => Arg::Text(row.try_get(at)?),
        Kind::Bool => Arg::Bool(row.try_get(at)?),
        Kind::Bytes => Arg::Bytes(row.try_get(at)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migration that adds a table must add it to [`TABLES`] too.
    async fn every_table_is_copied_or_bookkeeping(store: Store) {
        let list = if store.is_postgres() {
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()"
        } else {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        };
        let mut tables: Vec<String> =
            db::query(list).fetch_all(store.pool()).await.unwrap().iter().map(|r| r.get(0)).collect();
        tables.sort();
        let mut expected: Vec<String> = TABLES.iter().chain(&["schema_migrations"]).map(|t| t.to_string()).collect();
        expected.sort();
        assert_eq!(tables, expected);
    }

    on_both!(every_table_is_copied_or_bookkeeping);
}
