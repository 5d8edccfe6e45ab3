//! Run records of `wharf run` on a workstation, kept in a data directory (`.wharf/`):
//!
//! ```text
//! .wharf/pipelines/<name>/lock                 held while numbering a run
//! .wharf/pipelines/<name>/counters.json        {"last_number": 3, "increment": 7}
//! .wharf/pipelines/<name>/runs/<N>/run.json    the record, rewritten on every change
//! .wharf/pipelines/<name>/runs/<N>/logs/...    checkout.log, run.log, <stage>-<task>.log
//! .wharf/pipelines/<name>/runs/<N>/src/        the checkout (kept for the latest runs)
//! ```
//!
//! The server keeps the same facts in its database; this is the zero-setup version.

use anyhow::{Context, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use wharf_core::names::PipelineName;
use wharf_core::run::RunRecord;

/// Workspaces (checkouts) kept for this many latest runs; records and logs stay.
pub const KEEP_WORKSPACES: u64 = 5;

pub struct LocalStore {
    root: PathBuf,
}

/// A run's number, `SYS_INCREMENT` and directory.
pub struct NewRun {
    pub number: u64,
    pub increment: u64,
    pub dir: PathBuf,
}

impl LocalStore {
    pub fn open(root: &Path) -> Result<Self> {
        fs::create_dir_all(root.join("pipelines"))
            .with_context(|| format!("cannot create the data directory {}", root.display()))?;
        Ok(LocalStore { root: root.to_path_buf() })
    }

    fn pipeline_dir(&self, name: &PipelineName) -> PathBuf {
        // PipelineName's grammar keeps this inside `pipelines/`.
        self.root.join("pipelines").join(name.as_str())
    }

    pub fn run_dir(&self, name: &PipelineName, number: u64) -> PathBuf {
        self.pipeline_dir(name).join("runs").join(number.to_string())
    }

    /// Numbers a new run (1, 2, 3…) and bumps `SYS_INCREMENT`, under a file lock so
    /// that two `wharf run` at once never share a number.
    pub fn new_run(&self, name: &PipelineName) -> Result<NewRun> {
        let dir = self.pipeline_dir(name);
        fs::create_dir_all(dir.join("runs"))?;
        let lock = File::create(dir.join("lock"))?;
        lock.lock().context("cannot lock the pipeline's run counter")?;
        let counters_path = dir.join("counters.json");
        let (mut last, mut increment) = match fs::read(&counters_path) {
            Ok(bytes) => {
                let v: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| {
                    format!("{} is damaged; delete it to restart numbering", counters_path.display())
                })?;
                (v["last_number"].as_u64().unwrap_or(0), v["increment"].as_u64().unwrap_or(0))
            }
            Err(_) => (0, 0),
        };
        // Never reuse a number whose directory exists, even if the counters were lost.
        loop {
            last += 1;
            increment += 1;
            match fs::create_dir(dir.join("runs").join(last.to_string())) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).context("cannot create the run directory"),
            }
        }
        let body = serde_json::json!({ "last_number": last, "increment": increment });
        write_atomically(&counters_path, body.to_string().as_bytes())?;
        drop(lock);
        let run_dir = self.run_dir(name, last);
        fs::create_dir_all(run_dir.join("logs"))?;
        Ok(NewRun { number: last, increment, dir: run_dir })
    }

    /// Removes the checkouts of runs older than the latest [`KEEP_WORKSPACES`].
    pub fn prune_workspaces(&self, name: &PipelineName, latest: u64) {
        let Some(oldest_kept) = latest.checked_sub(KEEP_WORKSPACES) else { return };
        let Ok(entries) = fs::read_dir(self.pipeline_dir(name).join("runs")) else { return };
        for entry in entries.flatten() {
            let number = entry.file_name().to_str().and_then(|n| n.parse::<u64>().ok());
            if number.is_some_and(|n| n <= oldest_kept) {
                let _ = fs::remove_dir_all(entry.path().join("src"));
            }
        }
    }

    /// The records of a pipeline's runs, newest first.
    pub fn list(&self, name: &PipelineName) -> Vec<RunRecord> {
        let mut out: Vec<RunRecord> = Vec::new();
        let Ok(entries) = fs::read_dir(self.pipeline_dir(name).join("runs")) else { return out };
        for entry in entries.flatten() {
            if let Ok(bytes) = fs::read(entry.path().join("run.json"))
                && let Ok(record) = serde_json::from_slice::<RunRecord>(&bytes)
            {
                out.push(record);
            }
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.number));
        out
    }
}

/// Writes via a temporary file and a rename, so a reader (or a crash) never sees half.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_data().ok();
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_increments_go_up_and_survive_lost_counters() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LocalStore::open(tmp.path()).unwrap();
        let name = PipelineName::new("p").unwrap();
        let a = store.new_run(&name).unwrap();
        let b = store.new_run(&name).unwrap();
        assert_eq!((a.number, a.increment, b.number, b.increment), (1, 1, 2, 2));
        fs::remove_file(tmp.path().join("pipelines/p/counters.json")).unwrap();
        let c = store.new_run(&name).unwrap();
        assert_eq!(c.number, 3, "existing run directories are never reused");
    }

    #[test]
    fn concurrent_runs_get_distinct_numbers() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let root = root.clone();
                std::thread::spawn(move || {
                    let store = LocalStore::open(&root).unwrap();
                    store.new_run(&PipelineName::new("p").unwrap()).unwrap().number
                })
            })
            .collect();
        let mut numbers: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        numbers.sort();
        assert_eq!(numbers, (1..=8).collect::<Vec<_>>());
    }
}
