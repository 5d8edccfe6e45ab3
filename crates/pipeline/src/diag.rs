//! Diagnostics: what is wrong, where (line, column, field path), and what was expected.

use std::fmt;

/// A position in the source, both 1-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, col: 1 };
}

/// One problem in a pipeline definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub pos: Pos,
    /// The field path, e.g. `stages[1].tasks[0].timeout`; empty for the whole file.
    pub path: String,
    pub message: String,
}

impl Diagnostic {
    pub fn new(pos: Pos, path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic { pos, path: path.into(), message: message.into() }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.pos.line, self.pos.col)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found, in source order. Validation does not stop at the first one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Renders each problem as `file:line:col: path: message` followed by the source
    /// line and a caret under the column, the way compilers do.
    pub fn render(&self, file: &str, source: &str) -> String {
        let lines: Vec<&str> = source.lines().collect();
        let mut out = String::new();
        for d in &self.0 {
            out.push_str(&format!("error: {file}:{d}\n"));
            if let Some(line) = lines.get(d.pos.line.wrapping_sub(1)) {
                let shown: String = line.chars().take(160).collect();
                let gutter = d.pos.line.to_string().len();
                let caret_col =
                    line.char_indices().take_while(|(i, _)| *i < d.pos.col.saturating_sub(1)).count().min(160);
                out.push_str(&format!("{:gutter$} |\n", ""));
                out.push_str(&format!("{} | {shown}\n", d.pos.line));
                out.push_str(&format!("{:gutter$} | {:caret_col$}^\n", "", ""));
            }
        }
        let n = self.0.len();
        out.push_str(&format!("{n} error{} in {file}\n", if n == 1 { "" } else { "s" }));
        out
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// The closest candidate by edit distance, when it is close enough to be a typo.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_only() {
        let fields = ["name", "stages", "timeout", "variables"];
        assert_eq!(did_you_mean("stagse", fields), Some("stages"));
        assert_eq!(did_you_mean("timout", fields), Some("timeout"));
        assert_eq!(did_you_mean("colour", fields), None);
    }

    #[test]
    fn render_points_at_the_column() {
        let d = Diagnostics(vec![Diagnostic::new(Pos { line: 2, col: 10 }, "timeout", "bad")]);
        assert_eq!(
            d.render("p.yaml", "name: x\ntimeout: 5x\n"),
            "error: p.yaml:2:10: timeout: bad\n  |\n2 | timeout: 5x\n  |          ^\n1 error in p.yaml\n"
        );
    }
}
