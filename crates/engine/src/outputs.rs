//! Task outputs: the `KEY=VALUE` lines a task appends to `$WHARF_OUTPUT`, and the
//! one safe way for the server to touch that file ([`OutputFile`]).

use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, unlinkat};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// The most a task may write to `$WHARF_OUTPUT`; outputs are small values, not files.
pub const MAX_OUTPUT_FILE_BYTES: u64 = 1024 * 1024;

/// What was read, and the lines that were not `KEY=VALUE` (reported as warnings).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub values: BTreeMap<String, String>,
    pub warnings: Vec<String>,
}

/// Parses the output file's text. A later line for the same key wins, as in shell
/// assignments; blank lines and `#` comments are skipped.
pub fn parse(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((key, value)) if wharf_core::names::VarName::new(key).is_ok() => {
                parsed.values.insert(key.to_owned(), value.to_owned());
            }
            _ => parsed
                .warnings
                .push(format!("$WHARF_OUTPUT line {}: expected KEY=VALUE with KEY a variable name; ignored", i + 1)),
        }
    }
    parsed
}

/// Why [`OutputFile::read`] refused or failed to read the file, in the task's terms.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The outputs directory cannot be opened (without following links).
    #[error("{0}")]
    Dir(#[source] io::Error),
    /// The task replaced the file by a symbolic link, which is never followed.
    #[error("$WHARF_OUTPUT was replaced by a symbolic link; write outputs to the file itself")]
    Link,
    #[error("$WHARF_OUTPUT cannot be opened: {0}")]
    Open(#[source] Errno),
    #[error("$WHARF_OUTPUT cannot be examined: {0}")]
    Examine(#[source] io::Error),
    /// A directory, a FIFO, a device…: never opened for reading.
    #[error("$WHARF_OUTPUT was replaced by something that is not a regular file")]
    NotAFile,
    #[error("$WHARF_OUTPUT holds {size} bytes; outputs may be at most {max} bytes")]
    TooBig { size: u64, max: u64 },
    #[error("$WHARF_OUTPUT cannot be read: {0}")]
    Read(#[source] io::Error),
    /// The file grew past `max` after its size was checked.
    #[error("$WHARF_OUTPUT holds more than {max} bytes; outputs may be at most {max} bytes")]
    Grew { max: u64 },
}

/// One attempt's `$WHARF_OUTPUT` inside the run's outputs directory.
///
/// A task can write that directory (a container has it bind-mounted, a host task owns
/// it), so it may have planted a symbolic link, a FIFO or a directory under the name
/// of this or the next attempt's file, hoping the server (which may run as root) opens,
/// truncates or reads whatever the link points to. Every operation here therefore goes
/// through a handle on the directory opened without following links, opens the file
/// with `O_NOFOLLOW | O_NONBLOCK` and reads only a regular file.
#[derive(Clone, Debug)]
pub struct OutputFile {
    dir: PathBuf,
    name: String,
}

impl OutputFile {
    /// `dir` is the run's outputs directory (a path only the server chooses); `name`
    /// one plain file name in it.
    pub fn new(dir: PathBuf, name: String) -> Self {
        debug_assert!(!name.contains('/') && name != ".." && name != ".");
        Self { dir, name }
    }

    /// The path handed to the task as `$WHARF_OUTPUT`.
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    /// Makes the file exist, empty and new: whatever a task left under its name (a
    /// link, a FIFO, an earlier file) is removed, never followed.
    pub fn create(&self) -> io::Result<File> {
        let dir = self.open_dir()?;
        match unlinkat(&dir, self.name.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            // A directory planted under the name: remove it if it is empty, else say so.
            Err(Errno::EISDIR | Errno::EPERM) => unlinkat(&dir, self.name.as_str(), UnlinkatFlags::RemoveDir)
                .map_err(|e| self.error(format!("a directory a task created stands in its way ({e})")))?,
            Err(e) => return Err(self.error(format!("cannot remove what stands under its name ({e})"))),
        }
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(&dir, self.name.as_str(), flags, Mode::from_bits_truncate(0o600))
            .map_err(|e| self.error(format!("cannot create it ({e})")))?;
        Ok(File::from(fd))
    }

    /// Creates the file (as [`OutputFile::create`]) holding `contents`.
    pub fn write(&self, contents: &[u8]) -> io::Result<()> {
        self.create()?.write_all(contents)
    }

    /// The file's bytes: `Ok(None)` when the task removed it, an error (saying what is
    /// wrong, in the task's terms) when it is not a regular file or holds more than
    /// `max` bytes. A link is never followed, a FIFO never waited on.
    pub fn read(&self, max: u64) -> Result<Option<Vec<u8>>, ReadError> {
        let dir = self.open_dir().map_err(ReadError::Dir)?;
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
        let file = match openat(&dir, self.name.as_str(), flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => return Err(ReadError::Link),
            Err(e) => return Err(ReadError::Open(e)),
        };
        let meta = file.metadata().map_err(ReadError::Examine)?;
        if !meta.is_file() {
            return Err(ReadError::NotAFile);
        }
        if meta.len() > max {
            return Err(ReadError::TooBig { size: meta.len(), max });
        }
        // The size can still grow between the check and the read (a process the task
        // left behind); never read more than the limit.
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.take(max + 1).read_to_end(&mut bytes).map_err(ReadError::Read)?;
        if bytes.len() as u64 > max {
            return Err(ReadError::Grew { max });
        }
        Ok(Some(bytes))
    }

    /// Removes the file (or whatever stands under its name) without following it. The
    /// file may hold secrets in clear, so this runs after every attempt, whatever its
    /// outcome; a file that is already gone is fine.
    pub fn remove(&self) {
        if let Ok(dir) = self.open_dir() {
            let _ = unlinkat(&dir, self.name.as_str(), UnlinkatFlags::NoRemoveDir);
        }
    }

    fn open_dir(&self) -> io::Result<OwnedFd> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        open(self.dir.as_path(), flags, Mode::empty())
            .map_err(|e| self.error(format!("its directory cannot be opened without following links ({e})")))
    }

    fn error(&self, what: String) -> io::Error {
        io::Error::other(format!("{}: {what}", self.path().display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_values_comments_and_junk() {
        let p = parse("VERSION=1.2.3\n# note\n\nURL=http://x/?a=b\nbad line\n1X=2\nVERSION=1.2.4\r\n");
        assert_eq!(p.values["VERSION"], "1.2.4");
        assert_eq!(p.values["URL"], "http://x/?a=b");
        assert_eq!(p.values.len(), 2);
        assert_eq!(p.warnings.len(), 2);
        assert!(p.warnings[0].starts_with("$WHARF_OUTPUT line 5"));
    }

    /// The words are the ones a task's record showed before these were types.
    #[test]
    fn read_errors_say_what_they_said_as_strings() {
        let cases = [
            (ReadError::Link, "$WHARF_OUTPUT was replaced by a symbolic link; write outputs to the file itself"),
            (ReadError::Open(Errno::EACCES), "$WHARF_OUTPUT cannot be opened: EACCES: Permission denied"),
            (ReadError::Examine(io::Error::other("x")), "$WHARF_OUTPUT cannot be examined: x"),
            (ReadError::NotAFile, "$WHARF_OUTPUT was replaced by something that is not a regular file"),
            (ReadError::TooBig { size: 9, max: 8 }, "$WHARF_OUTPUT holds 9 bytes; outputs may be at most 8 bytes"),
            (ReadError::Read(io::Error::other("x")), "$WHARF_OUTPUT cannot be read: x"),
            (ReadError::Grew { max: 8 }, "$WHARF_OUTPUT holds more than 8 bytes; outputs may be at most 8 bytes"),
            (ReadError::Dir(io::Error::other("/run/outputs: gone")), "/run/outputs: gone"),
        ];
        for (err, words) in cases {
            assert_eq!(err.to_string(), words);
        }
    }
}
