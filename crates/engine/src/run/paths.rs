//! Paths a task names inside the checkout (`dockerfile:`, `context:`, `file:`): kept
//! inside it after `..` and symbolic links are resolved, and named as the pipeline
//! gives them when they are not.

use std::io;
use std::path::{Component, Path, PathBuf};

/// A path field (`dockerfile:`, `context:`, `file:`) that does not stay inside the checkout or is
/// not there, named by its field and given as the pipeline gives it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PathError {
    #[error("{field}: `{path}` is absolute; give a path inside the checkout")]
    Absolute { field: &'static str, path: String },
    #[error("{field}: `{path}` leaves the checkout")]
    LeavesCheckout { field: &'static str, path: String },
    /// `similar`: a name in the same directory that differs only in case.
    #[error(
        "{field}: `{path}` does not exist in the checkout{}",
        .similar.as_ref().map(|other| format!(" (names are case-sensitive; there is `{other}`)")).unwrap_or_default()
    )]
    NotFound { field: &'static str, path: String, similar: Option<String> },
    #[error("{field}: `{path}`: {source}")]
    Unreadable { field: &'static str, path: String, source: io::Error },
    #[error("{field}: `{path}` leads outside the checkout (through a symbolic link)")]
    ThroughLink { field: &'static str, path: String },
}

/// `path` (relative to the checkout `root`, already canonical) as an absolute path
/// that stays inside `root` after `..` and symlinks are resolved.
pub(super) fn inside(root: &Path, path: &str, field: &'static str) -> Result<PathBuf, PathError> {
    let given = Path::new(path);
    if given.is_absolute() {
        return Err(PathError::Absolute { field, path: path.to_owned() });
    }
    let mut depth = 0usize;
    for c in given.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::ParentDir if depth == 0 => {
                return Err(PathError::LeavesCheckout { field, path: path.to_owned() });
            }
            Component::ParentDir => depth -= 1,
            _ => {}
        }
    }
    let joined = root.join(given);
    let real = match std::fs::canonicalize(&joined) {
        Ok(real) => real,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let similar = same_but_case(root, given);
            return Err(PathError::NotFound { field, path: path.to_owned(), similar });
        }
        Err(source) => return Err(PathError::Unreadable { field, path: path.to_owned(), source }),
    };
    if !real.starts_with(root) {
        return Err(PathError::ThroughLink { field, path: path.to_owned() });
    }
    Ok(real)
}

/// The name beside a missing `given` that differs from it only in case, when there is
/// one (paths are case-sensitive: `dockerfile` is not `Dockerfile`).
fn same_but_case(root: &Path, given: &Path) -> Option<String> {
    let parent = root.join(given.parent().unwrap_or(Path::new("")));
    let wanted = given.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    std::fs::read_dir(&parent).ok().and_then(|entries| {
        entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.eq_ignore_ascii_case(&wanted))
    })
}
