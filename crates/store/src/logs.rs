//! Task logs as append-only files, one per task of a run (plus the checkout's and the
//! run's own), under `<root>/<run id>/`. A line is written with one `write` call as it
//! arrives, so a line acknowledged to a reader is in the file even if the server is
//! killed right after. Byte offsets into these files are the log's addresses: the
//! plain tail (`?offset=N`) and the SSE event ids both use them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

/// Which log of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogKey {
    /// Lines about the run itself (policies, crashes).
    Run,
    Checkout,
    /// (stage index, task index) in the run record.
    Task(usize, usize),
}

/// `run`, `checkout` or `<stage>-<task>`: the key in notices and in the database.
impl std::fmt::Display for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogKey::Run => f.write_str("run"),
            LogKey::Checkout => f.write_str("checkout"),
            LogKey::Task(s, t) => write!(f, "{s}-{t}"),
        }
    }
}

impl std::str::FromStr for LogKey {
    type Err = String;

    fn from_str(s: &str) -> Result<LogKey, String> {
        let bad = || format!("{s:?} is not a log key (run, checkout or <stage>-<task>)");
        match s {
            "run" => Ok(LogKey::Run),
            "checkout" => Ok(LogKey::Checkout),
            _ => {
                let (stage, task) = s.split_once('-').ok_or_else(bad)?;
                Ok(LogKey::Task(stage.parse().map_err(|_| bad())?, task.parse().map_err(|_| bad())?))
            }
        }
    }
}

impl LogKey {
    fn file_name(self) -> String {
        format!("{self}.log")
    }
}

#[derive(Clone, Debug)]
pub struct LogFiles {
    root: PathBuf,
    /// Bytes a single log may hold before it is cut with a visible marker.
    cap: u64,
}

/// Appends lines to one log, keeping its size and the cap.
#[derive(Debug)]
pub struct LogWriter {
    file: File,
    size: u64,
    cap: u64,
    truncated: bool,
}

impl LogFiles {
    pub fn new(root: PathBuf, cap: u64) -> Self {
        LogFiles { root, cap }
    }

    pub fn path(&self, run: i64, key: LogKey) -> PathBuf {
        self.root.join(run.to_string()).join(key.file_name())
    }

    pub fn writer(&self, run: i64, key: LogKey) -> io::Result<LogWriter> {
        let path = self.path(run, key);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter { file, size, cap: self.cap, truncated: false })
    }

    /// The log's size in bytes (0 when it does not exist yet).
    pub fn size(&self, run: i64, key: LogKey) -> u64 {
        fs::metadata(self.path(run, key)).map_or(0, |m| m.len())
    }

    /// Up to `max` bytes from `offset`, cut after the last complete line.
    pub fn read_from(&self, run: i64, key: LogKey, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        let mut file = match File::open(self.path(run, key)) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(offset))?;
        let mut buf = Vec::new();
        file.take(max as u64).read_to_end(&mut buf)?;
        // A writer may be mid-line: hand out whole lines only.
        match buf.iter().rposition(|&b| b == b'\n') {
            Some(end) => buf.truncate(end + 1),
            None => buf.clear(),
        }
        Ok(buf)
    }

    pub fn remove_run(&self, run: i64) -> io::Result<()> {
        match fs::remove_dir_all(self.root.join(run.to_string())) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// What became of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    Written,
    /// The cap was reached: the marker was written (once) and the line dropped.
    Truncated,
}

impl LogWriter {
    /// Appends `line` and a newline in one write.
    pub fn append(&mut self, line: &str) -> io::Result<Appended> {
        if self.truncated {
            return Ok(Appended::Truncated);
        }
        let bytes = line.len() as u64 + 1;
        if self.size + bytes > self.cap {
            self.truncated = true;
            let marker = format!(
                "[wharf] log truncated: this task's log reached the {} MB cap; later lines are not kept (the task goes on)\n",
                self.cap / 1_000_000
            );
            self.file.write_all(marker.as_bytes())?;
            self.size += marker.len() as u64;
            return Ok(Appended::Truncated);
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        self.file.write_all(&buf)?;
        self.size += bytes;
        Ok(Appended::Written)
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_whole_lines_and_cap() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogFiles::new(dir.path().to_path_buf(), 40);
        let mut w = logs.writer(7, LogKey::Task(0, 1)).unwrap();
        assert_eq!(w.append("first line").unwrap(), Appended::Written);
        assert_eq!(w.append("second line").unwrap(), Appended::Written);
        assert_eq!(w.append("this one does not fit any more").unwrap(), Appended::Truncated);
        assert_eq!(w.append("nor this").unwrap(), Appended::Truncated);
        let all = String::from_utf8(logs.read_from(7, LogKey::Task(0, 1), 0, 1 << 20).unwrap()).unwrap();
        assert!(all.starts_with("first line\nsecond line\n[wharf] log truncated"), "{all}");
        assert_eq!(all.matches("truncated").count(), 1);
        let tail = logs.read_from(7, LogKey::Task(0, 1), 11, 1 << 20).unwrap();
        assert!(tail.starts_with(b"second line\n"));
        // A cut mid-line yields only whole lines.
        assert_eq!(logs.read_from(7, LogKey::Task(0, 1), 0, 15).unwrap(), b"first line\n");
        assert_eq!(logs.size(7, LogKey::Task(0, 1)), w.size());
        assert!(logs.read_from(8, LogKey::Run, 0, 10).unwrap().is_empty());
        logs.remove_run(7).unwrap();
        assert_eq!(logs.size(7, LogKey::Task(0, 1)), 0);
    }
}
