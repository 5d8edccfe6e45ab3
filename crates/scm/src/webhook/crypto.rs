//! The few primitives the signature schemes share. Every comparison with a secret
//! goes through `Mac::verify_slice`, which compares in constant time.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of `msg` under `key`, ready to be finalised or verified.
pub(crate) fn hmac_sha256(key: &[u8], msg: &[u8]) -> HmacSha256 {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(msg);
    mac
}

/// Whether `tag` is the HMAC-SHA256 of `msg` under `key`, compared in constant time.
pub(crate) fn hmac_matches(key: &[u8], msg: &[u8], tag: &[u8]) -> bool {
    hmac_sha256(key, msg).verify_slice(tag).is_ok()
}

/// Whether `received` equals `secret`, in time that depends on neither's content nor
/// on where they differ: both are HMACed under the secret (so the lengths no longer
/// matter) and the tags compared with `verify_slice`.
pub(crate) fn secret_equals(received: &str, secret: &str) -> bool {
    let expected = hmac_sha256(secret.as_bytes(), secret.as_bytes()).finalize().into_bytes();
    hmac_matches(secret.as_bytes(), received.as_bytes(), &expected)
}

/// Lower- or upper-case hex to bytes; `None` for an odd length or a non-hex digit.
pub(crate) fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = hex.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes.chunks_exact(2).map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?)).collect()
}

/// Lower-case hex of `bytes`.
pub(crate) fn encode_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Decodes `%XX` escapes (as `URLEncoder.encode` writes `+`, `/` and `=` of base64);
/// `None` for a broken escape or a result that is not UTF-8.
pub(crate) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let pair = text.get(i + 1..i + 3)?;
            out.extend(decode_hex(pair)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_the_rfc_4231_vector() {
        // RFC 4231, test case 2.
        let tag = hmac_sha256(b"Jefe", b"what do ya want for nothing?").finalize().into_bytes();
        assert_eq!(encode_hex(&tag), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert!(hmac_matches(b"Jefe", b"what do ya want for nothing?", &tag));
        assert!(!hmac_matches(b"Jeff", b"what do ya want for nothing?", &tag));
        assert!(!hmac_matches(b"Jefe", b"what do ya want for nothing?", &tag[..31]));
    }

    #[test]
    fn secret_comparison() {
        assert!(secret_equals("s3cret", "s3cret"));
        assert!(!secret_equals("s3cre", "s3cret"));
        assert!(!secret_equals("s3cret ", "s3cret"));
        assert!(!secret_equals("", "s3cret"));
        assert!(!secret_equals("S3cret", "s3cret"));
    }

    #[test]
    fn hex_round_trip_and_refusals() {
        assert_eq!(decode_hex("00ff10Ab"), Some(vec![0, 255, 16, 171]));
        assert_eq!(encode_hex(&[0, 255, 16, 171]), "00ff10ab");
        assert_eq!(decode_hex(""), Some(vec![]));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
        assert_eq!(decode_hex("+1"), None);
    }

    #[test]
    fn percent_escapes() {
        assert_eq!(percent_decode("a%2Bb%2fc%3D").as_deref(), Some("a+b/c="));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("%e2%82%ac").as_deref(), Some("€"));
    }
}
