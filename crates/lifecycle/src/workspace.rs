//! Where runs work: `<data dir>/workspaces/<run id>`, holding the checkout (`src`), the
//! task outputs and, for host tasks run as another user, their home. The server makes
//! `workspaces/` itself with the data directory's modes; a run's directory is made
//! here when the run starts.

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The directory every run's workspace lives in (`<data dir>/workspaces/<run id>`).
pub const WORKSPACES: &str = "workspaces";

/// The workspace of run `run_id` under `data_dir`.
pub fn run_dir(data_dir: &Path, run_id: i64) -> PathBuf {
    data_dir.join(WORKSPACES).join(run_id.to_string())
}

/// Makes a run's directory: the server's, 0700; with a task user, 0710 with that
/// user's group, so host tasks (and no other local account) pass through to the
/// checkout and home handed to them. Containers do not need it: their workspace is
/// bind-mounted by the daemon.
pub fn make_run_dir(dir: &Path, task_gid: Option<u32>) -> std::io::Result<()> {
    let with = |context: String| move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{context}: {e}"));
    std::fs::create_dir_all(dir).map_err(with(format!("cannot create {}", dir.display())))?;
    let mode = if task_gid.is_some() { 0o710 } else { 0o700 };
    std::fs::set_permissions(dir, Permissions::from_mode(mode))
        .map_err(with(format!("cannot set the mode of {} to {mode:o}", dir.display())))?;
    if let Some(gid) = task_gid {
        std::os::unix::fs::chown(dir, None, Some(gid))
            .map_err(with(format!("cannot give {} to the task user's group", dir.display())))?;
    }
    Ok(())
}
