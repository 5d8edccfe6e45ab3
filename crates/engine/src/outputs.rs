//! Task outputs: the `KEY=VALUE` lines a task appends to `$WHARF_OUTPUT`.

use std::collections::BTreeMap;

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
}
