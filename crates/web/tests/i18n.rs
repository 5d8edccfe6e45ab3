//! The UI's words live in the message catalogues (`assets/js/i18n/*.js`), nowhere else:
//! the catalogues have exactly the same keys with the same `{parameters}`, every key
//! the pages ask for exists, and no page module has a user-visible string literal left
//! (a small scanner over the JavaScript: strings, template literals, comments and
//! regular expressions told apart; technical strings such as CSS classes, headers and
//! API paths look nothing like words, and the few that do are allowed below by name).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `key → the {parameters} its message uses`, from a catalogue's `  'key': …,` lines.
/// Every line inside the object must be one of those (or a comment), so a line the
/// parser does not understand fails here instead of hiding a key.
fn catalogue(name: &str) -> BTreeMap<String, BTreeSet<String>> {
    let path = assets().join("js/i18n").join(name);
    let text = read(&path);
    let body = text
        .split_once("export default {")
        .and_then(|(_, rest)| rest.rsplit_once("};"))
        .unwrap_or_else(|| panic!("{name}: no `export default {{ … }};`"))
        .0;
    let mut keys = BTreeMap::new();
    for (n, line) in body.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("//") {
            continue;
        }
        let parsed = line.strip_prefix('\'').and_then(|rest| rest.split_once("': ")).filter(|_| line.ends_with(','));
        let Some((key, value)) = parsed else { panic!("{name}: line {} is not `'key': message,`: {line}", n + 1) };
        assert!(!value.trim_end_matches(',').trim().is_empty(), "{name}: `{key}` has an empty message");
        let params = placeholders(value);
        assert!(keys.insert(key.to_owned(), params).is_none(), "{name}: `{key}` twice");
    }
    assert!(keys.len() > 100, "{name}: only {} keys read", keys.len());
    keys
}

/// The `{name}` parameters of a message (the plural selectors `one:`/`other:` are not).
fn placeholders(value: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = value;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) if after[..end].chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && end > 0 => {
                out.insert(after[..end].to_owned());
                rest = &after[end + 1..];
            }
            _ => rest = after,
        }
    }
    out
}

#[test]
fn the_catalogues_have_the_same_keys_and_parameters() {
    let en = catalogue("en.js");
    let zh = catalogue("zh-CN.js");
    let only_en: Vec<_> = en.keys().filter(|k| !zh.contains_key(*k)).collect();
    let only_zh: Vec<_> = zh.keys().filter(|k| !en.contains_key(*k)).collect();
    assert!(only_en.is_empty() && only_zh.is_empty(), "only in en.js: {only_en:?}; only in zh-CN.js: {only_zh:?}");
    for (key, params) in &en {
        assert_eq!(params, &zh[key], "`{key}`: en.js and zh-CN.js use different {{parameters}}");
    }
}

/// The page modules (everything under js/ but the catalogues).
fn modules() -> Vec<(String, String)> {
    let dir = assets().join("js");
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "js"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), read(&p)))
        .collect();
    out.sort();
    assert!(out.len() >= 10, "the page modules were not found in {}", dir.display());
    out
}

#[test]
fn every_key_the_pages_ask_for_is_in_the_catalogue() {
    let en = catalogue("en.js");
    for (file, text) in modules() {
        for (at, _) in text.match_indices("t('") {
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                continue; // `list('…`, `x.t('…`: another function
            }
            let key: String = text[at + 3..].chars().take_while(|&c| c != '\'').collect();
            let next = text[at + 3 + key.len() + 1..].chars().next();
            if next == Some(' ') {
                continue; // `t('status.' + x)`: a computed key, checked by its users' tests
            }
            assert!(en.contains_key(&key), "{file}: t('{key}') is not in en.js");
        }
    }
}

/// One string literal found in a module: its text (template expressions left out) and line.
struct Literal {
    text: String,
    line: usize,
    /// The code just before it (up to 24 characters), to tell a class list or a CSS
    /// selector from words.
    before: String,
}

/// Where a literal is a class list or a selector, not text.
const CODE_PLACES: &[&str] = &["class:", "className =", "querySelector(", "querySelectorAll(", "closest("];

/// The string and template literals of a JavaScript file, skipping comments and regular
/// expressions. Enough JavaScript for these modules, not a parser: a `/` starts a
/// regular expression where an operand is expected.
fn literals(src: &str) -> Vec<Literal> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    // Open template literals and, inside each `${`, the brace depth of its expression.
    let mut templates: Vec<(String, usize, usize)> = Vec::new(); // (text so far, start line, depth)
    let mut template_starts: Vec<usize> = Vec::new();
    let mut in_expr = false;
    let mut last = '(';
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
        }
        if !in_expr && !templates.is_empty() {
            // Inside a template's text.
            let top = templates.last_mut().unwrap();
            if c == '\\' {
                top.0.push(unescape(chars.get(i + 1).copied().unwrap_or(' ')));
                i += 2;
                continue;
            }
            if c == '`' {
                let (text, start, _) = templates.pop().unwrap();
                let at = template_starts.pop().unwrap();
                out.push(Literal { text, line: start, before: context(&chars, at) });
                in_expr = !templates.is_empty();
                last = 'a';
                i += 1;
                continue;
            }
            if c == '$' && chars.get(i + 1) == Some(&'{') {
                top.2 = 0;
                in_expr = true;
                last = '(';
                i += 2;
                continue;
            }
            top.0.push(c);
            i += 1;
            continue;
        }
        match c {
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
                continue;
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
                i += 2;
                continue;
            }
            '/' if "(,=:[!&|?{};+-*%<>~^".contains(last) || last == 'n' && ends_with_word(&chars[..i], "return") => {
                // A regular expression: up to the closing `/` outside a class.
                let mut class = false;
                i += 1;
                while i < chars.len() {
                    match chars[i] {
                        '\\' => i += 1,
                        '[' => class = true,
                        ']' => class = false,
                        '/' if !class => break,
                        _ => {}
                    }
                    i += 1;
                }
                i += 1;
                while i < chars.len() && chars[i].is_ascii_alphabetic() {
                    i += 1;
                }
                last = 'a';
                continue;
            }
            '\'' | '"' => {
                let start = line;
                let at = i;
                let mut text = String::new();
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' {
                        i += 1;
                        text.push(unescape(chars[i]));
                    } else {
                        text.push(chars[i]);
                    }
                    i += 1;
                }
                out.push(Literal { text, line: start, before: context(&chars, at) });
                last = 'a';
                i += 1;
                continue;
            }
            '`' => {
                templates.push((String::new(), line, 0));
                template_starts.push(i);
                in_expr = false;
                i += 1;
                continue;
            }
            '{' if in_expr => templates.last_mut().unwrap().2 += 1,
            '}' if in_expr => {
                let top = templates.last_mut().unwrap();
                if top.2 == 0 {
                    in_expr = false;
                    i += 1;
                    continue;
                }
                top.2 -= 1;
            }
            _ => {}
        }
        if !c.is_whitespace() {
            last = if c.is_alphanumeric() || c == '_' || c == '$' || c == ')' || c == ']' { 'n' } else { c };
            if c == ')' || c == ']' {
                last = 'a';
            }
        }
        i += 1;
    }
    out
}

fn unescape(c: char) -> char {
    match c {
        'n' => '\n',
        't' => '\t',
        other => other,
    }
}

fn context(chars: &[char], at: usize) -> String {
    chars[at.saturating_sub(24)..at].iter().collect::<String>().trim_end().to_owned()
}

fn ends_with_word(before: &[char], word: &str) -> bool {
    let s: String = before.iter().rev().take(word.len()).collect::<String>().chars().rev().collect();
    s == word
}

/// Whether a literal reads like words for a person: two words with a space, a
/// capitalised word, or a sentence's end.
fn looks_like_text(s: &str) -> bool {
    let s = &s.replace("Wharf", ""); // the product's name, the same in every language
    let words: Vec<&str> = s.split(|c: char| !c.is_alphabetic()).filter(|w| w.chars().count() >= 2).collect();
    if words.is_empty() {
        return false;
    }
    let two_words = s.split_whitespace().filter(|w| w.chars().filter(|c| c.is_alphabetic()).count() >= 2).count() >= 2;
    let capitalised = s.split_whitespace().any(|w| {
        let mut cs = w.chars();
        cs.next().is_some_and(|c| c.is_uppercase()) && cs.next().is_some_and(|c| c.is_lowercase())
    });
    let sentence = s.trim_end().ends_with(['.', '…', '?', '!']) && s.contains(' ');
    two_words || capitalised || sentence || s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))
}

/// Literals that read like words but are not the UI's: product names, the brand, a
/// command line and YAML shown as code, HTTP header names, keyboard keys, units, defaults
/// and examples that are identifiers in the pipeline's YAML.
const TECHNICAL: &[&str] = &[
    "Content-Type",
    "X-CSRF-Token",
    "Last-Event-ID",
    "Escape",
    "ArrowDown",
    "ArrowUp",
    "GitHub",
    "GitLab",
    "Gitee",
    "English",
    "简体中文",
    " · Wharf",
    "Dockerfile",
    "Stage",
    "HTTPS",
    "KiB",
    "MiB",
    "GiB",
    "TiB",
    "echo hello\n",
    "master, release/*",
    "devops, team-a",
    "wharf clusters add NAME --kubeconfig ~/.kube/config [--context CONTEXT]",
    "- name: deploy\n  type: deploy-yaml\n  file: k8s/deploy.yaml\n  cluster: \n  namespace: my-app",
    "apiVersion: v1\nkind: Config\nclusters:\n- name: …",
    "- name: install\n  type: chart-deploy\n  release: my-app\n  chart: my-app\n  version: 1.0.${BUILD_ID}\n  workspace: charts\n  cluster: \n  namespace: my-app",
];

#[test]
fn no_page_module_has_user_visible_text_of_its_own() {
    let mut found = Vec::new();
    for (file, text) in modules() {
        for literal in literals(&text) {
            let s = literal.text.as_str();
            let code = CODE_PLACES.iter().any(|p| literal.before.ends_with(p));
            if code || TECHNICAL.contains(&s) || s.starts_with("./") || s.starts_with('/') {
                continue;
            }
            if looks_like_text(s) {
                found.push(format!("{file}:{}: {s:?}", literal.line));
            }
        }
    }
    assert!(found.is_empty(), "text for people belongs in js/i18n/en.js and zh-CN.js:\n{}", found.join("\n"));
}

#[test]
fn the_scanner_finds_text_and_skips_code() {
    let src = "const a = 'Save'; // 'Not this'\nconst b = `Run #${n} of ${p.name ? `x` : ''}`;\n\
               const r = /`([^`]*)`/g; /* 'nor this' */ h('div', { class: 'muted meta' }, t('a.b'));\n\
               const c = \"two words\"; const d = x / 2; const e = 'after.division';";
    let found = literals(src);
    let texts: Vec<&str> = found.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["Save", "x", "", "Run # of ", "div", "muted meta", "a.b", "two words", "after.division"]);
    let flagged: Vec<&str> = found
        .iter()
        .filter(|l| looks_like_text(&l.text) && !CODE_PLACES.iter().any(|p| l.before.ends_with(p)))
        .map(|l| l.text.as_str())
        .collect();
    assert_eq!(flagged, ["Save", "Run # of ", "two words"]);
}
