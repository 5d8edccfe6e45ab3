//! The two databases behind one [`Store`](crate::Store): SQLite (embedded, the default)
//! and PostgreSQL (`postgres://…`).
//!
//! **How a query runs on both.** Every statement is written once, in SQL both engines
//! accept, with SQLite's `?` placeholders; [`query`] collects the values bound to it as
//! [`Arg`]s and, on PostgreSQL, numbers the placeholders (`?` → `$1`, `?2` → `$2`) just
//! before sending. Rows come back as [`DbRow`], whose `get` decodes from either engine.
//! The few statements that really differ (JSON functions) ask [`Pool::is_postgres`]
//! and say so where they are written.
//!
//! Why not sqlx's `Any` driver: it re-boxes every value of every row (SQLite's fast
//! path would pay for PostgreSQL's existence), it cannot take SQLite's connection
//! options (WAL, `synchronous`, busy timeout), and its type set is the same small one
//! used here anyway. Why not a generic `Store<DB>`: the bounds sqlx needs for a query
//! generic over the database (higher-ranked `Executor`, `Encode`, `Decode` per type)
//! would spread into every caller of the store.
//!
//! The portable subset this relies on (SQLite 3.39+ and PostgreSQL 13+): `RETURNING`,
//! `ON CONFLICT … DO NOTHING / DO UPDATE SET x = excluded.x`, `IS [NOT] DISTINCT FROM`,
//! `TRUE`/`FALSE`, integers that are all 64-bit (`BIGINT` on PostgreSQL, so they decode
//! as `i64` on both), booleans as `BOOLEAN` (SQLite stores 0/1), bytes as `BLOB`/`BYTEA`.

use sqlx::postgres::{PgArguments, PgPool, PgRow};
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Arguments, Decode, Postgres, Row, Sqlite, Transaction, Type};

use crate::lite::{LitePool, LiteTx};

/// A connection pool to one of the two databases: SQLite's is [`LitePool`] (why not
/// sqlx's: see there).
#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(LitePool),
    Postgres(PgPool),
}

impl Pool {
    pub fn is_postgres(&self) -> bool {
        matches!(self, Pool::Postgres(_))
    }

    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Pool::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Pool::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    pub async fn close(&self) {
        match self {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }
}

/// A transaction on either database; rolled back when dropped uncommitted.
pub enum Tx {
    Sqlite(LiteTx),
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Tx::Postgres(_))
    }
}

/// Where a query runs: on the pool, or inside a transaction.
pub enum On<'c> {
    Pool(&'c Pool),
    Tx(&'c mut Tx),
}

impl<'c> From<&'c Pool> for On<'c> {
    fn from(pool: &'c Pool) -> Self {
        On::Pool(pool)
    }
}

impl<'c> From<&'c mut Tx> for On<'c> {
    fn from(tx: &'c mut Tx) -> Self {
        On::Tx(tx)
    }
}

/// A value bound to a placeholder. The type rides along with `NULL` too: PostgreSQL
/// wants to know what `? IS NULL` compares.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
    Bool(Option<bool>),
    Bytes(Option<Vec<u8>>),
}

macro_rules! arg_from {
    ($variant:ident: $($t:ty => $conv:expr),* $(,)?) => {$(
        impl From<$t> for Arg {
            fn from(v: $t) -> Arg {
                #[allow(clippy::redundant_closure_call)]
                Arg::$variant(($conv)(v))
            }
        }
    )*};
}

arg_from!(Int:
    i64 => Some,
    &i64 => |v: &i64| Some(*v),
    Option<i64> => |v| v,
    &Option<i64> => |v: &Option<i64>| *v,
    i32 => |v: i32| Some(i64::from(v)),
    u32 => |v: u32| Some(i64::from(v)),
);
arg_from!(Text:
    &str => |v: &str| Some(v.to_owned()),
    String => Some,
    &String => |v: &String| Some(v.clone()),
    Option<&str> => |v: Option<&str>| v.map(str::to_owned),
    Option<String> => |v| v,
    &Option<String> => |v: &Option<String>| v.clone(),
    Option<&String> => |v: Option<&String>| v.cloned(),
);
arg_from!(Bool:
    bool => Some,
    Option<bool> => |v| v,
);
arg_from!(Bytes:
    Vec<u8> => Some,
    &[u8] => |v: &[u8]| Some(v.to_vec()),
    Option<Vec<u8>> => |v| v,
    &Option<Vec<u8>> => |v: &Option<Vec<u8>>| v.clone(),
);

/// What a statement that returns no rows did.
#[derive(Clone, Copy, Debug)]
pub struct Done {
    rows: u64,
}

impl Done {
    pub fn rows_affected(&self) -> u64 {
        self.rows
    }
}

/// Text that may be sent as SQL: our own constants, or text built from them
/// (`sqlx::AssertSqlSafe`, as with sqlx's own `query`).
pub trait IntoSql {
    fn into_sql(self) -> String;
}

impl IntoSql for &'static str {
    fn into_sql(self) -> String {
        self.to_owned()
    }
}

impl IntoSql for sqlx::AssertSqlSafe<String> {
    fn into_sql(self) -> String {
        self.0
    }
}

impl IntoSql for sqlx::AssertSqlSafe<&str> {
    fn into_sql(self) -> String {
        self.0.to_owned()
    }
}

/// A statement with its bound values, for either database.
#[derive(Clone, Debug)]
#[must_use = "a query does nothing until it is executed or fetched"]
pub struct Query {
    sql: String,
    args: Vec<Arg>,
}

/// A statement to run on either database (see the module docs).
pub fn query(sql: impl IntoSql) -> Query {
    Query { sql: sql.into_sql(), args: Vec::new() }
}

impl Query {
    pub fn bind(mut self, value: impl Into<Arg>) -> Query {
        self.args.push(value.into());
        self
    }

    pub fn bind_arg(mut self, value: Arg) -> Query {
        self.args.push(value);
        self
    }

    fn sqlite(self) -> Result<sqlx::query::Query<'static, Sqlite, SqliteArguments>, sqlx::Error> {
        let mut args = SqliteArguments::default();
        for arg in self.args {
            match arg {
                Arg::Int(v) => args.add(v),
                Arg::Text(v) => args.add(v),
                Arg::Bool(v) => args.add(v),
                Arg::Bytes(v) => args.add(v),
            }
            .map_err(sqlx::Error::Encode)?;
        }
        Ok(sqlx::query_with(sqlx::AssertSqlSafe(self.sql), args))
    }

    fn postgres(self) -> Result<sqlx::query::Query<'static, Postgres, PgArguments>, sqlx::Error> {
        let mut args = PgArguments::default();
        for arg in self.args {
            match arg {
                Arg::Int(v) => args.add(v),
                Arg::Text(v) => args.add(v),
                Arg::Bool(v) => args.add(v),
                Arg::Bytes(v) => args.add(v),
            }
            .map_err(sqlx::Error::Encode)?;
        }
        Ok(sqlx::query_with(sqlx::AssertSqlSafe(numbered(&self.sql)), args))
    }

    pub async fn execute<'c>(self, on: impl Into<On<'c>>) -> Result<Done, sqlx::Error> {
        let rows = match on.into() {
            On::Pool(Pool::Sqlite(pool)) => {
                let mut conn = pool.acquire().await?;
                let done = self.sqlite()?.execute(&mut *conn).await;
                conn.check(done)?.rows_affected()
            }
            On::Pool(Pool::Postgres(pool)) => self.postgres()?.execute(pool).await?.rows_affected(),
            On::Tx(Tx::Sqlite(tx)) => {
                let done = self.sqlite()?.execute(&mut **tx).await;
                tx.check(done)?.rows_affected()
            }
            On::Tx(Tx::Postgres(tx)) => self.postgres()?.execute(&mut **tx).await?.rows_affected(),
        };
        Ok(Done { rows })
    }

    pub async fn fetch_all<'c>(self, on: impl Into<On<'c>>) -> Result<Vec<DbRow>, sqlx::Error> {
        Ok(match on.into() {
            On::Pool(Pool::Sqlite(pool)) => {
                let mut conn = pool.acquire().await?;
                let rows = self.sqlite()?.fetch_all(&mut *conn).await;
                conn.check(rows)?.into_iter().map(DbRow::Sqlite).collect()
            }
            On::Pool(Pool::Postgres(pool)) => {
                self.postgres()?.fetch_all(pool).await?.into_iter().map(DbRow::Postgres).collect()
            }
            On::Tx(Tx::Sqlite(tx)) => {
                let rows = self.sqlite()?.fetch_all(&mut **tx).await;
                tx.check(rows)?.into_iter().map(DbRow::Sqlite).collect()
            }
            On::Tx(Tx::Postgres(tx)) => {
                self.postgres()?.fetch_all(&mut **tx).await?.into_iter().map(DbRow::Postgres).collect()
            }
        })
    }

    pub async fn fetch_optional<'c>(self, on: impl Into<On<'c>>) -> Result<Option<DbRow>, sqlx::Error> {
        Ok(match on.into() {
            On::Pool(Pool::Sqlite(pool)) => {
                let mut conn = pool.acquire().await?;
                let row = self.sqlite()?.fetch_optional(&mut *conn).await;
                conn.check(row)?.map(DbRow::Sqlite)
            }
            On::Pool(Pool::Postgres(pool)) => self.postgres()?.fetch_optional(pool).await?.map(DbRow::Postgres),
            On::Tx(Tx::Sqlite(tx)) => {
                let row = self.sqlite()?.fetch_optional(&mut **tx).await;
                tx.check(row)?.map(DbRow::Sqlite)
            }
            On::Tx(Tx::Postgres(tx)) => self.postgres()?.fetch_optional(&mut **tx).await?.map(DbRow::Postgres),
        })
    }

    pub async fn fetch_one<'c>(self, on: impl Into<On<'c>>) -> Result<DbRow, sqlx::Error> {
        self.fetch_optional(on).await?.ok_or(sqlx::Error::RowNotFound)
    }
}

/// A row from either database.
pub enum DbRow {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

/// A Rust type both databases decode (`i64`, `String`, `bool`, `Vec<u8>`, options of them).
pub trait Column: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres> {}
impl<T> Column for T where T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres> {}

impl DbRow {
    /// The value of column `index`. Panics when the column is missing or of another
    /// type: a mismatch between a query and its reader, a bug (as `sqlx::Row::get`).
    pub fn get<T: Column>(&self, index: usize) -> T {
        match self {
            DbRow::Sqlite(row) => row.get(index),
            DbRow::Postgres(row) => row.get(index),
        }
    }

    pub fn try_get<T: Column>(&self, index: usize) -> Result<T, sqlx::Error> {
        match self {
            DbRow::Sqlite(row) => row.try_get(index),
            DbRow::Postgres(row) => row.try_get(index),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            DbRow::Sqlite(row) => row.len(),
            DbRow::Postgres(row) => row.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `sql` with SQLite's placeholders numbered as PostgreSQL wants them: `?NNN` becomes
/// `$NNN`, a bare `?` the next number after the largest so far (SQLite's own rule).
/// Quoted text, quoted names and `--` comments are left alone.
pub fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut largest = 0u32;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for inner in chars.by_ref() {
                    out.push(inner);
                    if inner == c {
                        break; // a doubled quote closes and reopens: same result
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for inner in chars.by_ref() {
                    out.push(inner);
                    if inner == '\n' {
                        break;
                    }
                }
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let n = if digits.is_empty() { largest + 1 } else { digits.parse().unwrap_or(u32::MAX) };
                largest = largest.max(n);
                out.push('$');
                out.push_str(&n.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::numbered;

    #[test]
    fn placeholders_are_numbered_outside_quotes_and_comments() {
        assert_eq!(numbered("SELECT a FROM t WHERE a = ? AND b = ?"), "SELECT a FROM t WHERE a = $1 AND b = $2");
        assert_eq!(numbered("?1 = 'all' OR ?2 = x OR ?1 IS NULL"), "$1 = 'all' OR $2 = x OR $1 IS NULL");
        assert_eq!(numbered("SELECT '?', \"a?\" -- why?\n, ?"), "SELECT '?', \"a?\" -- why?\n, $1");
        assert_eq!(numbered("x = 'it''s ?' AND y = ?"), "x = 'it''s ?' AND y = $1");
        assert_eq!(numbered("?3 AND ?"), "$3 AND $4");
    }
}
