//! Who may read the data directory. It holds the database (token hashes, sealed
//! secrets), `secret.key` (which opens them) and every run's logs, so it is the
//! server's alone: the directory 0700, its files 0600. Existing installs are tightened
//! at every start.
//!
//! One exception: when host tasks run as an unprivileged user (a server running as
//! root, see [`crate::hostexec`]), that user must reach its run's workspace under
//! `workspaces/` (each run's directory, made by [`wharf_lifecycle::workspace`], is
//! 0710 with its group). The data directory and `workspaces/` are then 0711: it may
//! pass through them to a path it knows, never list them, and the database, the key
//! file and `logs/` stay closed to it.

use crate::ServerError;
use std::fs::{OpenOptions, Permissions};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use wharf_lifecycle::workspace::WORKSPACES;

/// Creates the data directory, `logs/` and `workspaces/` with the modes above and
/// tightens what an earlier version left readable. `task_user`: host tasks run as
/// another user, who needs to pass through to `workspaces/<run>`.
pub fn secure(data_dir: &Path, database: Option<&Path>, task_user: bool) -> Result<(), ServerError> {
    let pass_through = if task_user { 0o711 } else { 0o700 };
    make_dir(data_dir, pass_through)?;
    make_dir(&data_dir.join("logs"), 0o700)?;
    make_dir(&data_dir.join(WORKSPACES), pass_through)?;
    let key = data_dir.join(crate::keys::KEY_FILE);
    if key.exists() {
        set_mode(&key, 0o600)?;
    }
    if let Some(db) = database {
        // Created 0600 before SQLite opens it: SQLite gives its -wal and -shm files the
        // database's mode, so nothing of it is ever world-readable.
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(db)
            .map_err(|source| ServerError::Io { context: format!("cannot create {}", db.display()), source })?;
        for file in database_files(db) {
            if file.exists() {
                set_mode(&file, 0o600)?;
            }
        }
    }
    Ok(())
}

/// The SQLite database file a `sqlite://` URL names, if it is a file.
pub fn database_path(url: &str) -> Option<PathBuf> {
    let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or(path);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// The database and the files SQLite keeps beside it.
fn database_files(db: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [db.to_path_buf(), with("-wal"), with("-shm")]
}

fn make_dir(dir: &Path, mode: u32) -> Result<(), ServerError> {
    std::fs::create_dir_all(dir)
        .map_err(|source| ServerError::Io { context: format!("cannot create {}", dir.display()), source })?;
    set_mode(dir, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ServerError> {
    std::fs::set_permissions(path, Permissions::from_mode(mode)).map_err(|source| ServerError::Io {
        context: format!("cannot set the mode of {} to {mode:o}", path.display()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn an_existing_install_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("logs")).unwrap();
        std::fs::set_permissions(&data, Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(data.join("logs"), Permissions::from_mode(0o755)).unwrap();
        let db = data.join("wharf.db");
        for file in database_files(&db).iter().chain([&data.join("secret.key")]) {
            std::fs::write(file, "x").unwrap();
            std::fs::set_permissions(file, Permissions::from_mode(0o644)).unwrap();
        }
        secure(&data, Some(&db), false).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("logs")), 0o700);
        assert_eq!(mode(&data.join(WORKSPACES)), 0o700);
        for file in database_files(&db).iter().chain([&data.join("secret.key")]) {
            assert_eq!(mode(file), 0o600, "{}", file.display());
            assert_eq!(std::fs::read_to_string(file).unwrap(), "x", "the content is kept");
        }
        secure(&data, Some(&db), true).unwrap();
        assert_eq!((mode(&data), mode(&data.join(WORKSPACES)), mode(&data.join("logs"))), (0o711, 0o711, 0o700));
    }

    #[test]
    fn database_urls_name_their_file() {
        assert_eq!(database_path("sqlite:///var/lib/wharf/wharf.db"), Some(PathBuf::from("/var/lib/wharf/wharf.db")));
        assert_eq!(database_path("sqlite://w.db?mode=rwc"), Some(PathBuf::from("w.db")));
        assert_eq!(database_path("sqlite::memory:"), None);
        assert_eq!(database_path("postgres://x"), None);
    }
}
