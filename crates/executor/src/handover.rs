//! Handing a run's workspace to the unprivileged user host tasks run as (a server
//! running as root): the server checks the source out as root, the task must be able
//! to write it.
//!
//! Everything here runs as root on a tree the task user may already be changing (a
//! parallel task of the same run, a process that escaped its group), so no path is
//! followed twice: directories are opened relative to their parent's descriptor with
//! `O_NOFOLLOW`, and every other entry is opened `O_PATH | O_NOFOLLOW` and changed
//! through that descriptor. A symbolic link is never followed and never changed; a
//! file with more than one hard link is left alone (it may be linked from outside the
//! workspace, as `git clone` of a local path does with its objects).

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat};
use nix::unistd::{Gid, Uid, fchown, fchownat};
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// Who host tasks run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskUser {
    /// The account's name (`wharf-task`), for messages and `$USER`.
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Directories deeper than this are not walked (each level holds a descriptor open).
const MAX_DEPTH: usize = 256;

/// Makes `dir` and everything in it owned by `user`; `dir` itself is changed last, so
/// a tree whose top the user owns was handed over whole. `dir` itself is opened without following a link; its parent must not be writable
/// by the task user, or it could swap `dir` for a link between two runs.
pub fn give_tree(dir: &Path, user: &TaskUser) -> Result<(), String> {
    let root = open_dir(None, dir).map_err(|e| format!("cannot open {}: {e}", dir.display()))?;
    walk(root, user, 0).map_err(|(at, e)| format!("cannot give {}{at} to user {}: {e}", dir.display(), user.name))
}

/// Creates `dir` (its parent must exist) unless it is there, and gives it (only it, not
/// what is in it) to `user`.
pub fn give_dir(dir: &Path, user: &TaskUser) -> Result<(), String> {
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let fd = open_dir(None, dir).map_err(|e| format!("cannot open {}: {e}", dir.display()))?;
    chown_fd(fd.as_fd(), &fstat(&fd).map_err(|e| e.to_string())?, user)
        .map_err(|e| format!("cannot give {} to user {}: {e}", dir.display(), user.name))
}

/// Gives one existing regular file (the task's `$WHARF_OUTPUT`) to `user`.
pub fn give_file(file: &Path, user: &TaskUser) -> Result<(), String> {
    let fd = openat(nix::fcntl::AT_FDCWD, file, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| format!("cannot open {}: {e}", file.display()))?;
    let stat = fstat(&fd).map_err(|e| e.to_string())?;
    if kind(&stat) != SFlag::S_IFREG || stat.st_nlink != 1 {
        return Err(format!("{} is not a plain file", file.display()));
    }
    chown_fd(fd.as_fd(), &stat, user).map_err(|e| format!("cannot give {} to user {}: {e}", file.display(), user.name))
}

fn open_dir<P: ?Sized + nix::NixPath>(parent: Option<BorrowedFd<'_>>, path: &P) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    match parent {
        Some(parent) => openat(parent, path, flags, Mode::empty()),
        None => openat(nix::fcntl::AT_FDCWD, path, flags, Mode::empty()),
    }
}

fn kind(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT
}

fn owned_by(stat: &FileStat, user: &TaskUser) -> bool {
    stat.st_uid == user.uid && stat.st_gid == user.gid
}

/// `fchown` through a descriptor, which works for `O_PATH` ones via `AT_EMPTY_PATH`.
fn chown_fd(fd: BorrowedFd<'_>, stat: &FileStat, user: &TaskUser) -> nix::Result<()> {
    if owned_by(stat, user) {
        return Ok(());
    }
    let (uid, gid) = (Some(Uid::from_raw(user.uid)), Some(Gid::from_raw(user.gid)));
    if kind(stat) == SFlag::S_IFDIR { fchown(fd, uid, gid) } else { fchownat(fd, "", uid, gid, AtFlags::AT_EMPTY_PATH) }
}

/// Gives what is inside `dir` first and `dir` last, so a tree whose top is owned by
/// the user was handed over whole.
fn walk(dir: OwnedFd, user: &TaskUser, depth: usize) -> Result<(), (String, Errno)> {
    let stat = fstat(&dir).map_err(|e| (String::new(), e))?;
    if depth > MAX_DEPTH {
        return Err((String::new(), Errno::ELOOP));
    }
    let listing =
        Dir::from_fd(nix::unistd::dup(&dir).map_err(|e| (String::new(), e))?).map_err(|e| (String::new(), e))?;
    for entry in listing {
        let entry = entry.map_err(|e| (String::new(), e))?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        // The entry's type as listed saves a system call per file; it is only a hint
        // (the entry may change meanwhile): what is opened is checked again.
        if entry.file_type() == Some(Type::Symlink) {
            continue;
        }
        let maybe_dir = entry.file_type().is_none_or(|t| t == Type::Directory);
        give_entry(dir.as_fd(), name, maybe_dir, user, depth)
            .map_err(|(at, e)| (format!("/{}{at}", name.to_string_lossy()), e))?;
    }
    chown_fd(dir.as_fd(), &stat, user).map_err(|e| (String::new(), e))
}

fn give_entry(
    parent: BorrowedFd<'_>,
    name: &CStr,
    maybe_dir: bool,
    user: &TaskUser,
    depth: usize,
) -> Result<(), (String, Errno)> {
    if maybe_dir {
        match open_dir(Some(parent), name) {
            Ok(sub) => return walk(sub, user, depth + 1),
            // Not a directory (ELOOP: a symbolic link), or gone meanwhile.
            Err(Errno::ENOTDIR | Errno::ELOOP) => {}
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err((String::new(), e)),
        }
    }
    let fd = match openat(parent, name, OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err((String::new(), e)),
    };
    let stat = fstat(&fd).map_err(|e| (String::new(), e))?;
    match kind(&stat) {
        SFlag::S_IFLNK | SFlag::S_IFDIR => Ok(()),
        _ if stat.st_nlink > 1 => Ok(()),
        _ => chown_fd(fd.as_fd(), &stat, user).map_err(|e| (String::new(), e)),
    }
}
