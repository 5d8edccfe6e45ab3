//! Secret values never reach a log: every line passes through a [`Masker`].

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

#[cfg(test)]
mod tests {
    use super::Masker;

    #[test]
    fn masks_every_occurrence_longest_first() {
        let m = Masker::new(["hunter2", "hunter2-extended", ""]);
        assert_eq!(m.mask("pw=hunter2 and hunter2-extended"), "pw=*** and ***");
        assert_eq!(m.mask("nothing here"), "nothing here");
    }

    #[test]
    fn multi_line_secrets_are_masked_per_line() {
        let m = Masker::new(["-----BEGIN KEY-----\nabcdef123\n-----END KEY-----\n"]);
        assert_eq!(m.mask("abcdef123"), "***");
        assert_eq!(m.mask("x -----END KEY----- y"), "x *** y");
    }
}
