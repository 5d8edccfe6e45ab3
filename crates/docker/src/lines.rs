//! Docker log frames → [`LogLine`]s. With `timestamps=true` the daemon sends one frame
//! per stored log message: `<RFC 3339 nano time> <text>`, where the text ends with a
//! newline unless the message is part of a longer line (the json-file driver cuts at
//! 16 KiB). Lines are put together per stream, cut at [`MAX_LINE_BYTES`] like the
//! host executor's, and stamped with the daemon's time of the message that began them.

use jiff::Timestamp;
use wharf_executor::{LogLine, LogSink, MAX_LINE_BYTES, Stream};

/// Assembles the lines of one stream.
#[derive(Default)]
pub(crate) struct LineBuffer {
    pending: Vec<u8>,
    /// The time of the message that began `pending`.
    started: Option<Timestamp>,
}

/// Splits a frame into the daemon's timestamp and the message. A frame without a
/// parsable timestamp (it should not happen) is stamped now.
pub(crate) fn split_timestamp(frame: &[u8]) -> (Timestamp, &[u8]) {
    if let Some(space) = frame.iter().take(40).position(|&b| b == b' ')
        && let Ok(text) = std::str::from_utf8(&frame[..space])
        && let Ok(at) = text.parse::<Timestamp>()
    {
        return (at, &frame[space + 1..]);
    }
    (Timestamp::now(), frame)
}

impl LineBuffer {
    /// Adds one message; sends every line it completes.
    pub(crate) fn push(&mut self, at: Timestamp, bytes: &[u8], stream: Stream, out: &mut dyn FnMut(LogLine)) {
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.pending.is_empty() {
                self.started = Some(at);
            }
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.pending.extend_from_slice(&rest[..i]);
                    rest = &rest[i + 1..];
                    self.emit(stream, false, out);
                }
                None => {
                    self.pending.extend_from_slice(rest);
                    rest = &[];
                }
            }
            while self.pending.len() > MAX_LINE_BYTES + 1 {
                let cut = wharf_executor::lines::utf8_cut(&self.pending, MAX_LINE_BYTES);
                let tail = self.pending.split_off(cut);
                self.emit(stream, true, out);
                self.pending = tail;
                self.started = Some(at);
            }
        }
    }

    /// Sends what is left (a last line without a newline).
    pub(crate) fn finish(&mut self, stream: Stream, out: &mut dyn FnMut(LogLine)) {
        if !self.pending.is_empty() {
            self.emit(stream, false, out);
        }
    }

    fn emit(&mut self, stream: Stream, continued: bool, out: &mut dyn FnMut(LogLine)) {
        let bytes = std::mem::take(&mut self.pending);
        let bytes = if continued { &bytes[..] } else { bytes.strip_suffix(b"\r").unwrap_or(&bytes) };
        let at = self.started.take().unwrap_or_else(Timestamp::now);
        wharf_executor::lines::emit(out, stream, at, bytes, continued);
    }
}

/// Forwards lines to the sink, dropping the first `skip` output lines: those a
/// restarted server already has in its stored log.
pub(crate) struct Skipping<'a> {
    pub(crate) sink: &'a dyn LogSink,
    pub(crate) skip: u64,
}

impl Skipping<'_> {
    pub(crate) fn line(&mut self, line: LogLine) {
        if self.skip > 0 && line.stream != Stream::System {
            self.skip -= 1;
            return;
        }
        self.sink.line(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(frames: &[(&str, &[u8])]) -> Vec<LogLine> {
        let mut lines = Vec::new();
        let mut buffer = LineBuffer::default();
        for (at, bytes) in frames {
            buffer.push(at.parse().unwrap(), bytes, Stream::Stdout, &mut |l| lines.push(l));
        }
        buffer.finish(Stream::Stdout, &mut |l| lines.push(l));
        lines
    }

    #[test]
    fn frames_become_lines_stamped_when_they_began() {
        let lines = collect(&[
            ("2026-01-01T00:00:01.5Z", b"one\r\n"),
            ("2026-01-01T00:00:02Z", b"two, in "),
            ("2026-01-01T00:00:03Z", b"two messages\nlast"),
        ]);
        let texts: Vec<_> = lines.iter().map(|l| (l.text.as_str(), l.at.as_second())).collect();
        assert_eq!(texts, [("one", 1767225601), ("two, in two messages", 1767225602), ("last", 1767225603)]);
    }

    #[test]
    fn long_lines_are_cut_and_marked_continued() {
        let long = vec![b'x'; MAX_LINE_BYTES * 2 + 10];
        let mut frame = long.clone();
        frame.push(b'\n');
        let lines = collect(&[("2026-01-01T00:00:00Z", &frame)]);
        assert_eq!(lines.len(), 3);
        assert!(lines[0].continued && lines[1].continued && !lines[2].continued);
        assert_eq!(lines.iter().map(|l| l.text.len()).sum::<usize>(), long.len());
    }

    #[test]
    fn timestamps_are_split_off() {
        let (at, rest) = split_timestamp(b"2026-11-22T02:00:00.123456789Z hello world\n");
        assert_eq!(at.as_second(), 1795312800);
        assert_eq!(rest, b"hello world\n");
        let (_, rest) = split_timestamp(b"no timestamp here");
        assert_eq!(rest, b"no timestamp here");
    }
}
