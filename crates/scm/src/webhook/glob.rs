//! Branch filters: `branches: ["master", "release/*"]`.

/// Whether `branch` matches the glob `pattern`, as a whole:
///
/// - `*` matches any run of characters within one path segment (never a `/`);
/// - `**` matches any run of characters, `/` included; `**/` also matches nothing, so
///   `**/fix` matches `fix` and `a/**/b` matches `a/b`;
/// - `?` matches one character other than `/`;
/// - every other character matches itself.
///
/// Git forbids `*`, `?` and `[` in branch names, so no escaping is needed and there
/// are no character classes. Matching takes time proportional to the pattern's length
/// times the branch's, whatever the pattern.
pub fn branch_matches(pattern: &str, branch: &str) -> bool {
    let tokens = tokenize(pattern);
    let text: Vec<char> = branch.chars().collect();
    let n = text.len();
    // `next[j]`: the tokens after the current one match `text[j..]`.
    let mut next = vec![false; n + 1];
    next[n] = true;
    for token in tokens.iter().rev() {
        let mut cur = vec![false; n + 1];
        // `Star`, `Globstar` and `GlobstarSlash` look at `cur[j + 1]` or a running
        // suffix, so `j` runs backwards.
        let mut slash_then_rest = false;
        for j in (0..=n).rev() {
            let c = text.get(j).copied();
            cur[j] = match token {
                Token::Char(want) => c == Some(*want) && next[j + 1],
                Token::AnyChar => c.is_some_and(|c| c != '/') && next[j + 1],
                Token::Star => next[j] || (c.is_some_and(|c| c != '/') && cur[j + 1]),
                Token::Globstar => next[j] || (c.is_some() && cur[j + 1]),
                Token::GlobstarSlash => {
                    slash_then_rest = slash_then_rest || (c == Some('/') && next[j + 1]);
                    next[j] || slash_then_rest
                }
            };
        }
        next = cur;
    }
    next[0]
}

#[derive(Debug, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `?`
    AnyChar,
    /// `*`
    Star,
    /// `**` not followed by `/`
    Globstar,
    /// `**/`: nothing, or anything that ends with `/`
    GlobstarSlash,
}

fn tokenize(pattern: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '?' => Token::AnyChar,
            '*' if chars.peek() == Some(&'*') => {
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                if chars.peek() == Some(&'/') {
                    chars.next();
                    Token::GlobstarSlash
                } else {
                    Token::Globstar
                }
            }
            '*' => Token::Star,
            c => Token::Char(c),
        });
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pattern: &str, matching: &[&str], not_matching: &[&str]) {
        for branch in matching {
            assert!(branch_matches(pattern, branch), "`{pattern}` should match `{branch}`");
        }
        for branch in not_matching {
            assert!(!branch_matches(pattern, branch), "`{pattern}` should not match `{branch}`");
        }
    }

    #[test]
    fn literal_patterns_match_exactly() {
        check("master", &["master"], &["maste", "master2", "Master", "xmaster", "master/x", ""]);
        check("release/1.0", &["release/1.0"], &["release/1x0", "release/1.0/x"]);
        check("", &[""], &["a"]);
    }

    #[test]
    fn star_stays_within_a_segment() {
        check(
            "release/*",
            &["release/1.0", "release/x-y_z", "release/"],
            &["release", "release/1.0/hotfix", "release-1", "x/release/1"],
        );
        check("*", &["main", "feature-x", ""], &["feature/x", "/"]);
        check("feat*", &["feat", "feature", "feat-1"], &["feature/x", "xfeat"]);
        check("*-rc*", &["1.0-rc1", "-rc", "v2-rc"], &["1.0-rc1/x", "1.0-beta"]);
        check("*/*", &["a/b", "feature/x"], &["a", "a/b/c"]);
        check("a*b*c", &["abc", "aXbYc", "abbbc"], &["ab", "a/b/c", "acb"]);
    }

    #[test]
    fn double_star_crosses_segments() {
        check("**", &["", "main", "a/b/c"], &[]);
        check("feature/**", &["feature/a", "feature/a/b/c", "feature/"], &["feature", "features/a", "x/feature/a"]);
        check("**/fix", &["fix", "a/fix", "a/b/fix"], &["afix", "a/fix/b", "fix/"]);
        check("a/**/b", &["a/b", "a/x/b", "a/x/y/b"], &["ab", "a/xb", "a/b/c", "b"]);
        check("feat**", &["feat", "feature/x/y"], &["xfeat"]);
        check("a**b", &["ab", "a/b", "axx/yyb"], &["a/c"]);
        check("***", &["a/b"], &[]);
        check("**/release/*", &["release/1", "team/release/1"], &["release/1/2", "team/release"]);
    }

    #[test]
    fn question_mark_is_one_character_but_not_a_slash() {
        check("v?", &["v1", "vx"], &["v", "v10", "v/"]);
        check("v?.?", &["v1.2"], &["v1.22", "v12.2"]);
        check("a?b", &["axb"], &["a/b", "ab"]);
        check("?", &["é"], &["", "ab"]);
    }

    #[test]
    fn characters_beyond_ascii_are_single_characters() {
        check("é*", &["été", "é"], &["e"]);
        check("修复/*", &["修复/登录"], &["修复/登/录"]);
    }

    #[test]
    fn tokens() {
        use Token::*;
        assert_eq!(tokenize("a*?"), [Char('a'), Star, AnyChar]);
        assert_eq!(tokenize("**/x"), [GlobstarSlash, Char('x')]);
        assert_eq!(tokenize("x/**"), [Char('x'), Char('/'), Globstar]);
        assert_eq!(tokenize("****/"), [GlobstarSlash]);
    }

    #[test]
    fn pathological_patterns_stay_fast() {
        let branch = "a".repeat(255);
        let pattern = format!("{}b", "*a".repeat(100));
        let started = std::time::Instant::now();
        assert!(!branch_matches(&pattern, &branch));
        assert!(branch_matches(&"**a".repeat(100), &branch));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
