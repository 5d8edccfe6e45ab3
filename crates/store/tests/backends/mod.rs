//! One store test suite, both databases: `on_both!(name, …)` makes every listed
//! `async fn name(store: Store)` two tests, `name::sqlite` on a fresh SQLite file and
//! `name::postgres` on a fresh database of the test PostgreSQL (which
//! `wharf_testenv::postgres_or_fail_in_ci` starts; without one the test says why it
//! skips, and fails under `CI=true`). `on_both!(url: name, …)` hands the test the
//! database URL instead, for tests that open (and reopen) the store themselves.
//!
//! Shared by the integration tests (`tests/store.rs`) and the unit tests (`lib.rs`
//! includes this file), so the mechanism is written once. Either place has `Store` in
//! scope where it invokes the macro.

#![allow(dead_code)]

/// What keeps a test's database alive: the SQLite file's directory, or the
/// PostgreSQL database (dropped with it).
pub enum Keep {
    Sqlite(tempfile::TempDir),
    Postgres(wharf_testenv::PgDatabase),
}

pub fn sqlite_url() -> (Keep, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("wharf.db").display());
    (Keep::Sqlite(dir), url)
}

/// `None` when there is no test PostgreSQL (the reason is printed).
pub fn postgres_url() -> Option<(Keep, String)> {
    let db = wharf_testenv::postgres_or_fail_in_ci()?;
    let url = db.url.clone();
    Some((Keep::Postgres(db), url))
}

macro_rules! on_both {
    (url: $($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let (_keep, url) = $crate::backends::sqlite_url();
                super::$name(url).await
            }

            #[tokio::test]
            async fn postgres() {
                let Some((_keep, url)) = $crate::backends::postgres_url() else { return };
                super::$name(url).await
            }
        }
    )*};
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let (_keep, url) = $crate::backends::sqlite_url();
                super::$name(super::Store::open(&url).await.expect("the SQLite store opens")).await
            }

            #[tokio::test]
            async fn postgres() {
                let Some((_keep, url)) = $crate::backends::postgres_url() else { return };
                super::$name(super::Store::open(&url).await.expect("the PostgreSQL store opens")).await
            }
        }
    )*};
}
