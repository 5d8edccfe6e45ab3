//! `wharf migrate --from sqlite://PATH --to postgres://URL`: moves a server's database
//! from SQLite to PostgreSQL (the work is `wharf_store::copy`). Stop the server first:
//! what it writes during the copy would not be copied.

use anyhow::{Context, Result, bail};
use std::process::ExitCode;
use wharf_store::Store;

#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// The SQLite database to copy: `sqlite://PATH` (the server's `<data-dir>/wharf.db`).
    #[arg(long, value_name = "sqlite://PATH")]
    from: String,
    /// An empty PostgreSQL database: `postgres://USER:PASSWORD@HOST:PORT/DATABASE`.
    #[arg(long, value_name = "postgres://URL")]
    to: String,
}

pub async fn migrate(args: MigrateArgs) -> Result<ExitCode> {
    let Some(path) = args.from.strip_prefix("sqlite://") else {
        bail!("--from: expected sqlite://PATH (the SQLite database of the server to move)");
    };
    if !wharf_store::is_postgres_url(&args.to) {
        bail!("--to: expected postgres://USER:PASSWORD@HOST:PORT/DATABASE");
    }
    // Opening would create a missing file: a typo must not copy an empty database.
    if !std::path::Path::new(path).is_file() {
        bail!("--from: there is no SQLite database at {path}");
    }
    let from = Store::open(&args.from).await.with_context(|| format!("opening the SQLite database {path}"))?;
    let to = Store::open(&args.to).await.context("opening the PostgreSQL database")?;
    let copied = wharf_store::copy::copy_sqlite_to_postgres(&from, &to)
        .await
        .context("copying into PostgreSQL (nothing was written to it)")?;
    let total: u64 = copied.iter().map(|(_, rows)| rows).sum();
    for (table, rows) in copied.iter().filter(|(_, rows)| *rows > 0) {
        println!("{table:<24} {rows:>10}");
    }
    println!("copied {total} rows into PostgreSQL in one transaction.");
    // A PostgreSQL server reads task logs from the database: the files beside the
    // SQLite database (`<data-dir>/logs`) go there too.
    let logs_dir = std::path::Path::new(path).parent().unwrap_or(std::path::Path::new(".")).join("logs");
    let (logs, bytes) = wharf_store::logs::import_files(&logs_dir, &to)
        .await
        .with_context(|| format!("copying the task logs of {} into PostgreSQL", logs_dir.display()))?;
    println!("copied {logs} task logs ({bytes} bytes) from {} into PostgreSQL.", logs_dir.display());
    println!(
        "The secret key stays in the data directory: start the server with the same --data-dir and \
         --database-url set to the PostgreSQL URL."
    );
    Ok(ExitCode::SUCCESS)
}
