//! Turning a task's output bytes into [`LogLine`]s, shared by every executor: decode
//! lossily and keep each line within [`MAX_LINE_BYTES`] without splitting a character.

use crate::{LogLine, MAX_LINE_BYTES, Stream};
use jiff::Timestamp;

/// Sends one line (without its line ending), decoded lossily and split on char
/// boundaries into pieces of at most [`MAX_LINE_BYTES`] (invalid bytes become U+FFFD,
/// which is longer). `continued` says the line goes on in the next call; every piece
/// but the last of this call is marked continued too.
pub fn emit(out: &mut dyn FnMut(LogLine), stream: Stream, at: Timestamp, bytes: &[u8], continued: bool) {
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= MAX_LINE_BYTES {
        out(LogLine { continued, at, stream, text: text.into_owned() });
        return;
    }
    let mut rest = &*text;
    while !rest.is_empty() {
        let cut = match rest.floor_char_boundary(MAX_LINE_BYTES) {
            0 => rest.len().min(MAX_LINE_BYTES),
            cut => cut,
        };
        let (piece, tail) = rest.split_at(cut);
        out(LogLine { continued: continued || !tail.is_empty(), at, stream, text: piece.to_owned() });
        rest = tail;
    }
}

/// Where to cut `bytes` (longer than `max`) at or below `max` without splitting a
/// UTF-8 sequence: back off over at most three continuation bytes; if there are more,
/// the bytes are not UTF-8 there anyway and `max` will do.
pub fn utf8_cut(bytes: &[u8], max: usize) -> usize {
    let is_continuation = |b: u8| b & 0xC0 == 0x80;
    let mut cut = max;
    while cut > 0 && max - cut < 3 && is_continuation(bytes[cut]) {
        cut -= 1;
    }
    if cut == 0 || is_continuation(bytes[cut]) { max } else { cut }
}
