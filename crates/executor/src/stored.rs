//! The one stored form of a log line, written to the log files and read back from
//! them: `<UTC time with milliseconds> <out|err|sys> <text>`, for example
//! `2026-12-07T04:09:17.123Z out hello`. The server's log files, `wharf run`'s local
//! logs, the restart's log resume and the CLI's log display all go through here.

use crate::Stream;
use jiff::Timestamp;

/// The tag a stream has in a stored line.
pub fn tag(stream: Stream) -> &'static str {
    match stream {
        Stream::Stdout => "out",
        Stream::Stderr => "err",
        Stream::System => "sys",
    }
}

/// The stored form of one line (without its line ending).
pub fn line(at: Timestamp, stream: Stream, text: &str) -> String {
    format!("{} {} {text}", at.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"), tag(stream))
}

/// A stored line read back: when, from which stream, and the text as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    pub at: Timestamp,
    pub stream: Stream,
    pub text: &'a [u8],
}

/// Reads a stored line (without its line ending); `None` for a line not in the stored
/// form (a log cut by its size cap ends with a line of Wharf's own, which is).
pub fn parse(line: &[u8]) -> Option<Parsed<'_>> {
    let mut fields = line.splitn(3, |b| *b == b' ');
    let (at, tag, text) = (fields.next()?, fields.next()?, fields.next().unwrap_or_default());
    let stream = match tag {
        b"out" => Stream::Stdout,
        b"err" => Stream::Stderr,
        b"sys" => Stream::System,
        _ => return None,
    };
    let at = std::str::from_utf8(at).ok()?.parse::<Timestamp>().ok()?;
    Some(Parsed { at, stream, text })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_line_reads_back_as_written() {
        let at: Timestamp = "2026-12-07T04:09:17.123Z".parse().unwrap();
        for stream in [Stream::Stdout, Stream::Stderr, Stream::System] {
            let stored = line(at, stream, "a b  c");
            assert_eq!(parse(stored.as_bytes()), Some(Parsed { at, stream, text: b"a b  c" }));
        }
        assert_eq!(line(at, Stream::Stdout, "x"), "2026-12-07T04:09:17.123Z out x");
        assert_eq!(parse(b"2026-12-07T04:09:17.123Z sys").map(|p| p.text), Some(&b""[..]));
    }

    #[test]
    fn other_lines_are_not_stored_lines() {
        for other in [&b"hello world"[..], b"2026-12-07T04:09:17.123Z foo x", b"yesterday out x", b""] {
            assert_eq!(parse(other), None, "{:?}", String::from_utf8_lossy(other));
        }
    }
}
