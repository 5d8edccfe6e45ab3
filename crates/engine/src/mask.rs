//! Secret values never reach a log: every line passes through a [`Masker`].
//!
//! What is masked: each secret as it is; each line of a multi-line secret; and the
//! secret as base64 (standard alphabet, what `base64` and `openssl base64` print):
//! alone, with the newline `echo` adds, wrapped at 76 columns, and embedded in longer
//! base64'd text at any of the three byte alignments (the part of the encoding that
//! depends only on the secret's bytes, when that part is at least 8 characters).
//!
//! What is not, and cannot be in general: other encodings (hex, URL encoding,
//! compression, encryption), a secret printed in pieces on separate lines or
//! interleaved with other text, and the up to 4 base64 characters at either end of an
//! embedded secret that also carry neighbouring bytes.

/// The fewest characters a secret value may have (GitLab's rule for masked
/// variables). A shorter value would be masked wherever its text appears: a one-letter
/// secret turns that letter into `***` in every log of the project. Values stored
/// before the rule stay masked as they are (no secret is ever shown); set them again
/// with a longer value.
pub const MIN_SECRET_CHARS: usize = 8;

/// Why `value` cannot be a secret, if it cannot (the message says the rule).
pub fn refuse_short_secret(value: &str) -> Option<String> {
    let chars = value.chars().count();
    (chars < MIN_SECRET_CHARS).then(|| {
        format!(
            "the value has {chars} character(s); a secret must have at least {MIN_SECRET_CHARS}, or its text would \
             be masked as *** wherever it appears in the logs"
        )
    })
}

/// Replaces every occurrence of any secret value with `***`.
#[derive(Clone, Debug, Default)]
pub struct Masker {
    /// Longest first, so a secret that contains another is masked whole.
    values: Vec<String>,
}

impl Masker {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut values: Vec<String> = Vec::new();
        for secret in secrets {
            // Multi-line secrets (keys, kubeconfigs) reach logs line by line.
            for part in secret.lines().map(str::trim_end).filter(|p| !p.is_empty()) {
                values.push(part.to_owned());
            }
            if !secret.is_empty() && !values.iter().any(|v| v == secret) && !secret.contains('\n') {
                values.push(secret.to_owned());
            }
            if !secret.is_empty() {
                values.extend(base64_forms(secret));
            }
        }
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Masker { values }
    }

    /// The length of the longest value masked, in bytes.
    pub fn longest(&self) -> usize {
        self.values.first().map_or(0, String::len)
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Where to cut `text` at or before `at` so that no masked value found whole in
    /// `text` crosses the cut, walking back at most [`Masker::longest`] bytes: the part
    /// before the cut can then be masked on its own. (A cut inside an occurrence would
    /// leave its two halves unmasked on either side.)
    pub fn cut_outside(&self, text: &str, at: usize) -> usize {
        let mut at = text.floor_char_boundary(at);
        let floor = at.saturating_sub(self.longest());
        'moved: loop {
            for value in &self.values {
                let from = text.floor_char_boundary(at.saturating_sub(value.len()));
                let to = text.ceil_char_boundary((at + value.len()).min(text.len()));
                let window = &text[from..to];
                let step = value.chars().next().map_or(1, char::len_utf8);
                let mut i = 0;
                while let Some(j) = window[i..].find(value.as_str()) {
                    let start = from + i + j;
                    if start < at && start + value.len() > at && start >= floor {
                        at = start;
                        continue 'moved;
                    }
                    i += j + step;
                }
            }
            return at;
        }
    }

    pub fn mask(&self, text: &str) -> String {
        if self.values.is_empty() || !self.values.iter().any(|v| text.contains(v.as_str())) {
            return text.to_owned();
        }
        let mut out = text.to_owned();
        for value in &self.values {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), "***");
            }
        }
        out
    }
}

/// The base64 forms of a secret that a script's output may hold (see the module doc).
fn base64_forms(secret: &str) -> Vec<String> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    for whole in [secret.to_owned(), format!("{secret}\n")] {
        let encoded = STANDARD.encode(whole.as_bytes());
        let trimmed = encoded.trim_end_matches('=');
        if trimmed.len() >= 8 {
            out.push(trimmed.to_owned());
        }
        // `base64` wraps its output at 76 columns: each full line on its own.
        if encoded.len() > 76 {
            out.extend(
                encoded
                    .as_bytes()
                    .chunks(76)
                    .filter(|c| c.len() >= 8)
                    .map(|c| String::from_utf8_lossy(c).trim_end_matches('=').to_owned()),
            );
        }
    }
    // Embedded at byte offset k (mod 3): the groups made of the secret's bytes only.
    let bytes = secret.as_bytes();
    for k in 0..3usize {
        let mut padded = vec![0u8; k];
        padded.extend_from_slice(bytes);
        let encoded = STANDARD.encode(&padded);
        let first = k.div_ceil(3);
        let last = (k + bytes.len()) / 3;
        if last > first {
            let stable = &encoded[first * 4..last * 4];
            if stable.len() >= 8 {
                out.push(stable.to_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::Masker;

    #[test]
    fn a_cut_never_falls_inside_a_secret() {
        let m = Masker::new(["tok-8d1f0c2e9"]);
        let text = "tok-8d1f0c2e9".repeat(4);
        for at in 0..=text.len() {
            let cut = m.cut_outside(&text, at);
            assert!(cut <= at && cut.is_multiple_of(13), "{at} -> {cut}");
            let (before, after) = text.split_at(cut);
            assert_eq!(m.mask(before) + &m.mask(after), "***".repeat(4), "cut at {cut}");
        }
        // Text without a secret is cut where asked, on a char boundary.
        assert_eq!(m.cut_outside("héllo", 2), 1);
        assert_eq!(m.cut_outside("hello", 3), 3);
    }

    #[test]
    fn base64_of_a_secret_is_masked_alone_with_a_newline_and_embedded() {
        use base64::Engine;
        use base64::engine::general_purpose::STANDARD;
        let secret = "s3cr3t-Value-0123456789";
        let m = Masker::new([secret]);
        let embedded =
            [format!("token={secret}&x=1"), format!("ab{secret}"), format!("a{secret}b"), format!("{secret}&more")];
        for text in [secret.to_owned(), format!("{secret}\n")].into_iter().chain(embedded) {
            let encoded = STANDARD.encode(text.as_bytes());
            let masked = m.mask(&encoded);
            assert!(masked.contains("***"), "{text:?} -> {encoded} -> {masked}");
            // No stretch of 8 characters of the secret's own encoding is left.
            let own = STANDARD.encode(secret.as_bytes());
            assert!(!masked.contains(&own[4..12]), "{text:?}: {masked}");
        }
        // A long secret wrapped at 76 columns by `base64`.
        let long = "x".repeat(40) + &"y".repeat(40) + "z";
        let m = Masker::new([long.as_str()]);
        let encoded = STANDARD.encode(long.as_bytes());
        for line in encoded.as_bytes().chunks(76) {
            assert_eq!(m.mask(std::str::from_utf8(line).unwrap()).trim_end_matches('='), "***");
        }
    }

    #[test]
    fn masks_every_occurrence_longest_first() {
        let m = Masker::new(["hunter2", "hunter2-extended", ""]);
        assert_eq!(m.mask("pw=hunter2 and hunter2-extended"), "pw=*** and ***");
        assert_eq!(m.mask("nothing here"), "nothing here");
    }

    #[test]
    fn secrets_shorter_than_eight_characters_are_refused() {
        let why = super::refuse_short_secret("abc").unwrap();
        assert!(why.contains("3 character(s)") && why.contains("at least 8"), "{why}");
        assert!(super::refuse_short_secret("").is_some());
        assert!(super::refuse_short_secret("ééééééé").is_some(), "counted in characters, not bytes");
        assert_eq!(super::refuse_short_secret("12345678"), None);
    }

    #[test]
    fn multi_line_secrets_are_masked_per_line() {
        let m = Masker::new(["-----BEGIN KEY-----\nabcdef123\n-----END KEY-----\n"]);
        assert_eq!(m.mask("abcdef123"), "***");
        assert_eq!(m.mask("x -----END KEY----- y"), "x *** y");
    }
}
