//! The task spawn against real processes: the child is reaped, killed when dropped, and
//! a step that fails in the child comes back as that step with its errno.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use wharf_executor::spawn::{Child, Spawn, SpawnError, Step};

fn spawn(workdir: &Path, program: &str, args: &[&str]) -> Result<Child, SpawnError> {
    Spawn { program: Path::new(program), args, env: vec![("PATH", "/usr/bin:/bin")], workdir, ids: None }.spawn()
}

/// The state letter of `pid` (`Z` for a zombie), or `None` when there is no such process.
fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// This process's children that are zombies (exited, not reaped).
fn zombie_children() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut zombies = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&me.as_str()) {
            zombies.push(pid);
        }
    }
    zombies
}

/// Polls `check` for at most 10 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "{what} did not happen within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_child_runs_in_its_workdir_with_its_env_and_is_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Spawn {
        program: Path::new("/bin/sh"),
        args: &["-c", "pwd; echo \"$A\"; echo err >&2; read x || echo eof; exit 3"],
        env: vec![("A", "first"), ("PATH", "/usr/bin:/bin"), ("A", "last")],
        workdir: dir.path(),
        ids: None,
    }
    .spawn()
    .unwrap();
    let pid = child.id();
    assert_eq!(nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))).unwrap().as_raw(), pid, "own group");
    let (mut out, mut err) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut out).await.unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).await.unwrap();
    let status = child.wait().await.unwrap();
    assert_eq!(status.code(), Some(3));
    assert_eq!(child.wait().await.unwrap().code(), Some(3), "waiting again returns the same status");
    let canonical = dir.path().canonicalize().unwrap();
    assert_eq!(out, format!("{}\nlast\neof\n", canonical.display()));
    assert_eq!(err, "err\n");
    assert_eq!(state(pid), None, "reaped: no zombie left");
}

#[tokio::test]
async fn a_dropped_child_is_killed_and_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let child = spawn(dir.path(), "/bin/sleep", &["100"]).unwrap();
    let pid = child.id();
    assert!(matches!(state(pid), Some(s) if s != 'Z'), "running");
    drop(child);
    // Killed and reaped in the background: the process disappears, not a zombie left.
    eventually("the dropped child's end", || state(pid).is_none()).await;
}

#[tokio::test]
async fn a_failing_step_is_named_with_its_errno_and_the_child_is_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("gone");
    let err = spawn(&missing, "/bin/sh", &["-c", "true"]).unwrap_err();
    assert!(
        matches!(&err, SpawnError::Child { step: Step::Chdir, source } if source.kind() == io::ErrorKind::NotFound),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "changing to the working directory (chdir) failed: No such file or directory (os error 2)"
    );

    let err = spawn(dir.path(), "/no/such/program", &[]).unwrap_err();
    assert!(
        matches!(&err, SpawnError::Child { step: Step::Exec, source } if source.kind() == io::ErrorKind::NotFound),
        "{err:?}"
    );

    // A directory is not executable: EACCES from execve itself.
    let err = spawn(dir.path(), "/", &[]).unwrap_err();
    assert!(
        matches!(&err, SpawnError::Child { step: Step::Exec, source } if source.raw_os_error() == Some(13)),
        "{err:?}"
    );

    let err = spawn(dir.path(), "/bin/sh", &["-c", "a\0b"]).unwrap_err();
    assert!(matches!(&err, SpawnError::Nul(wharf_executor::spawn::Nul::Arg(1))), "{err:?}");

    // The children that failed exited with 127 and were reaped in `spawn`.
    eventually("no zombie children", || zombie_children().is_empty()).await;
}

#[tokio::test]
async fn the_server_s_ignored_sigpipe_is_not_inherited() {
    // Rust ignores SIGPIPE in its programs; a shell pipeline must still end on it.
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn(dir.path(), "/bin/sh", &["-c", "grep SigIgn /proc/self/status"]).unwrap();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).await.unwrap();
    assert!(child.wait().await.unwrap().success());
    let mask = u64::from_str_radix(out.trim().trim_start_matches("SigIgn:").trim(), 16).unwrap();
    assert_eq!(mask & (1 << (libc_sigpipe() - 1)), 0, "SIGPIPE ignored in the child: {out}");
}

fn libc_sigpipe() -> u32 {
    nix::sys::signal::Signal::SIGPIPE as u32
}
