//! PostgreSQL for the store tests: the cluster `scripts/pg-test-env.sh` keeps on
//! 127.0.0.1, and a fresh database per test.

use crate::run_script;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// A database of its own for one test, on the test cluster; dropped (with whatever
/// connections are still open to it) when this is dropped.
#[derive(Debug)]
pub struct PgDatabase {
    /// `postgres://wharf:…@127.0.0.1:5433/wharf_test_…`: what `Store::open` takes.
    pub url: String,
    pub name: String,
    cluster: &'static PgCluster,
}

#[derive(Debug)]
struct PgCluster {
    /// The server's URL without a database.
    url: String,
    /// The directory with `psql`.
    bin: String,
}

impl PgCluster {
    /// Runs one SQL statement on the `postgres` database with `psql`.
    fn psql(&self, sql: &str) -> Result<(), String> {
        let out = Command::new(format!("{}/psql", self.bin))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &format!("{}/postgres", self.url), "-c", sql])
            .output()
            .map_err(|e| format!("running {}/psql: {e}", self.bin))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("psql `{sql}`: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if let Err(e) = self.cluster.psql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)) {
            eprintln!("dropping the test database {}: {e}", self.name);
        }
    }
}

fn cluster() -> Result<&'static PgCluster, String> {
    static CLUSTER: OnceLock<Result<PgCluster, String>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            let get = run_script("scripts/pg-test-env.sh")?;
            Ok(PgCluster { url: get("WHARF_TEST_PG_URL")?, bin: get("WHARF_TEST_PG_BIN")? })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A fresh, empty database on the test PostgreSQL (`scripts/pg-test-env.sh` starts it,
/// installing Debian's `postgresql` as root when missing), or `None` after printing why
/// there is none; under `CI=true` a missing PostgreSQL fails the test.
pub fn postgres_or_fail_in_ci() -> Option<PgDatabase> {
    let made = cluster().and_then(|cluster| {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let name = format!("wharf_test_{}_{}_{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        cluster.psql(&format!("CREATE DATABASE {name}"))?;
        Ok(PgDatabase { url: format!("{}/{name}", cluster.url), name, cluster })
    });
    match made {
        Ok(db) => Some(db),
        Err(why) => {
            if std::env::var_os("CI").is_some_and(|v| v == "true") {
                panic!("the test PostgreSQL is required when CI=true: {why}");
            }
            eprintln!("SKIPPED: no test PostgreSQL: {why}");
            None
        }
    }
}
