//! What `wharf-bench` shares with the test suite: the reliability suite of issue 18
//! ([`replicas`]), which `crates/cli/tests/replicas.rs` runs small and
//! `wharf-bench replicas` runs at size.

pub mod replicas;

use std::path::{Path, PathBuf};

/// Stops a mode that measures a built `wharf` when there is none, saying how to build it.
pub fn require_binary(wharf: &Path) {
    assert!(wharf.exists(), "{} not found; build it: cargo build --release -p wharf -p wharf-bench", wharf.display());
}

/// Where a mode keeps its data directories: `--dir` (which must not exist yet; it is
/// made) or the temporary directory `tmp`.
pub fn work_dir(dir: Option<&Path>, tmp: &Path) -> PathBuf {
    match dir {
        Some(dir) => {
            assert!(!dir.exists(), "--dir {}: choose a directory that does not exist yet", dir.display());
            std::fs::create_dir_all(dir).unwrap();
            dir.to_path_buf()
        }
        None => tmp.to_path_buf(),
    }
}
