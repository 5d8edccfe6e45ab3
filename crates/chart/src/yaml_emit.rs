//! go-yaml v2's emitter, the part `toYaml` reaches: block style, keys in go-yaml's
//! natural order, scalar styles chosen as libyaml chooses them, plain and quoted
//! scalars folded at spaces past column 80, multi-line strings as literal blocks.
//!
//! `toYaml` is `sigs.k8s.io/yaml.Marshal`: JSON first (so float64 `80` is written as
//! the integer `80`, and `1e+21` as a float), then go-yaml v2.

use std::cmp::Ordering;

use gotmpl::Value;

use crate::yaml::{Resolved, json_float, resolve_plain};

const BEST_WIDTH: usize = 80;
const BEST_INDENT: usize = 2;

/// `v` as Helm's `toYaml` writes it (without the final newline).
pub fn to_yaml(v: &Value) -> String {
    let mut e = Emitter { out: String::new(), column: 0, whitespace: true, indention: true };
    let node = normalize(v);
    e.node(&node, 0, Ctx::Root);
    if e.column != 0 {
        e.out.push('\n');
    }
    let mut out = e.out;
    if out.ends_with('\n') {
        out.pop();
    }
    out
}

/// A value after the JSON round trip.
enum Node {
    Null,
    Bool(bool),
    Int(String),
    Float(String),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

fn normalize(v: &Value) -> Node {
    match v {
        Value::Nil | Value::Function(_) => Node::Null,
        Value::Bool(b) => Node::Bool(*b),
        Value::Int(i) => Node::Int(i.to_string()),
        Value::Uint(u) => Node::Int(u.to_string()),
        Value::Float(f) => {
            // JSON text read back by go-yaml: an integer literal stays an integer.
            let text = json_float(*f);
            match resolve_plain(&text) {
                Resolved::Int(i) => Node::Int(i.to_string()),
                _ => Node::Float(go_format_g(*f)),
            }
        }
        Value::String(s) => Node::Str(s.to_string()),
        Value::List(l) => Node::Seq(l.iter().map(normalize).collect()),
        Value::Map(m) => {
            let mut entries: Vec<(String, Node)> = m.iter().map(|(k, v)| (k.to_string(), normalize(v))).collect();
            entries.sort_by(|a, b| key_order(&a.0, &b.0));
            Node::Map(entries)
        }
    }
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 64)`.
pub(crate) fn go_format_g(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf".into() } else { "-.inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let e = format!("{f:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    // Shortest form: exponent notation below 1e-4 and from 1e6 (strconv's `eprec = 6`).
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        let a = exp.abs();
        return if a < 10 { format!("{mant}e{sign}0{a}") } else { format!("{mant}e{sign}{a}") };
    }
    format!("{f}")
}

/// go-yaml v2's `keyList.Less` for string keys: letters after other characters, runs
/// of digits compared as numbers.
fn key_order(a: &str, b: &str) -> Ordering {
    let ar: Vec<char> = a.chars().collect();
    let br: Vec<char> = b.chars().collect();
    let mut i = 0;
    while i < ar.len() && i < br.len() {
        if ar[i] == br[i] {
            i += 1;
            continue;
        }
        let al = ar[i].is_alphabetic();
        let bl = br[i].is_alphabetic();
        if al && bl {
            return ar[i].cmp(&br[i]);
        }
        if al || bl {
            return if bl { Ordering::Less } else { Ordering::Greater };
        }
        let (mut an, mut bn) = (0i64, 0i64);
        if ar[i] == '0' || br[i] == '0' {
            let mut j = i;
            while j > 0 && ar[j - 1].is_ascii_digit() {
                j -= 1;
                if ar[j] != '0' {
                    an = 1;
                    bn = 1;
                    break;
                }
            }
        }
        let mut ai = i;
        while ai < ar.len() && ar[ai].is_ascii_digit() {
            an = an.wrapping_mul(10).wrapping_add(ar[ai] as i64 - '0' as i64);
            ai += 1;
        }
        let mut bi = i;
        while bi < br.len() && br[bi].is_ascii_digit() {
            bn = bn.wrapping_mul(10).wrapping_add(br[bi] as i64 - '0' as i64);
            bi += 1;
        }
        if an != bn {
            return an.cmp(&bn);
        }
        if ai != bi {
            return ai.cmp(&bi);
        }
        return ar[i].cmp(&br[i]);
    }
    ar.len().cmp(&br.len())
}

#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    Root,
    /// A mapping value after `key:`.
    MapValue,
    /// A sequence item after `-`.
    SeqItem,
}

#[derive(Clone, Copy, PartialEq)]
enum Style {
    Plain,
    Single,
    Double,
    Literal,
}

struct Emitter {
    out: String,
    column: usize,
    /// The last character written was whitespace (libyaml's `whitespace`).
    whitespace: bool,
    /// Only indentation has been written on this line (libyaml's `indention`).
    indention: bool,
}

impl Emitter {
    fn put(&mut self, c: char) {
        self.out.push(c);
        self.column += 1;
    }

    fn put_break(&mut self) {
        self.out.push('\n');
        self.column = 0;
    }

    fn write_indent(&mut self, indent: usize) {
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.put_break();
        }
        while self.column < indent {
            self.put(' ');
        }
        self.whitespace = true;
        self.indention = true;
    }

    fn indicator(&mut self, s: &str, need_whitespace: bool, is_whitespace: bool, is_indention: bool) {
        if need_whitespace && !self.whitespace {
            self.put(' ');
        }
        for c in s.chars() {
            self.put(c);
        }
        self.whitespace = is_whitespace;
        self.indention = self.indention && is_indention;
    }

    /// `indent`: the indentation of the collection this node is in (libyaml's
    /// `emitter.indent` before the node), or 0 at the root.
    fn node(&mut self, node: &Node, indent: usize, ctx: Ctx) {
        match node {
            Node::Null => self.scalar("null", Style::Plain, indent, ctx, false),
            Node::Bool(b) => self.scalar(if *b { "true" } else { "false" }, Style::Plain, indent, ctx, false),
            Node::Int(s) | Node::Float(s) => self.scalar(s, Style::Plain, indent, ctx, false),
            Node::Str(s) => self.string(s, indent, ctx, false),
            Node::Seq(items) if items.is_empty() => {
                self.indicator("[", true, true, false);
                self.indicator("]", false, false, false);
            }
            Node::Map(entries) if entries.is_empty() => {
                self.indicator("{", true, true, false);
                self.indicator("}", false, false, false);
            }
            Node::Seq(items) => {
                // A sequence as a mapping's value is not indented further.
                let inner = match ctx {
                    Ctx::Root => 0,
                    Ctx::MapValue => indent,
                    Ctx::SeqItem => indent + BEST_INDENT,
                };
                for item in items {
                    self.write_indent(inner);
                    self.indicator("-", true, false, true);
                    self.node(item, inner, Ctx::SeqItem);
                }
            }
            Node::Map(entries) => {
                let inner = match ctx {
                    Ctx::Root => 0,
                    Ctx::MapValue | Ctx::SeqItem => indent + BEST_INDENT,
                };
                for (k, v) in entries {
                    self.write_indent(inner);
                    self.string(k, inner, Ctx::MapValue, true);
                    self.indicator(":", false, false, false);
                    self.node(v, inner, Ctx::MapValue);
                }
            }
        }
    }

    fn string(&mut self, s: &str, indent: usize, ctx: Ctx, simple_key: bool) {
        let can_plain = resolve_plain(s) == Resolved::Str && !is_base60_float(s) && !is_timestamp(s) && s != "<<";
        let style = if s.contains('\n') {
            Style::Literal
        } else if can_plain {
            Style::Plain
        } else {
            Style::Double
        };
        self.scalar(s, style, indent, ctx, simple_key);
    }

    fn scalar(&mut self, s: &str, requested: Style, indent: usize, _ctx: Ctx, simple_key: bool) {
        let a = analyze(s);
        let mut style = requested;
        if simple_key && a.multiline {
            style = Style::Double;
        }
        if style == Style::Plain && (!a.block_plain_allowed || (s.is_empty() && simple_key)) {
            style = Style::Single;
        }
        if style == Style::Single && !a.single_quoted_allowed {
            style = Style::Double;
        }
        if style == Style::Literal && (!a.block_allowed || simple_key) {
            style = Style::Double;
        }
        // libyaml's emit_scalar indents the scalar's continuation lines one step in.
        let scalar_indent = indent + BEST_INDENT;
        let allow_breaks = !simple_key;
        match style {
            Style::Plain => self.write_plain(s, scalar_indent, allow_breaks),
            Style::Single => self.write_single(s, scalar_indent, allow_breaks),
            Style::Double => self.write_double(s, scalar_indent, allow_breaks),
            Style::Literal => self.write_literal(s, scalar_indent),
        }
    }

    fn write_plain(&mut self, s: &str, indent: usize, allow_breaks: bool) {
        if !self.whitespace && !s.is_empty() {
            self.put(' ');
        }
        let chars: Vec<char> = s.chars().collect();
        let mut spaces = false;
        for (i, &c) in chars.iter().enumerate() {
            if c == ' ' {
                let next_space = chars.get(i + 1) == Some(&' ');
                if allow_breaks && !spaces && self.column > BEST_WIDTH && !next_space {
                    self.write_indent(indent);
                } else {
                    self.put(c);
                }
                spaces = true;
            } else {
                self.put(c);
                self.indention = false;
                spaces = false;
            }
        }
        self.whitespace = false;
        self.indention = false;
    }

    fn write_single(&mut self, s: &str, indent: usize, allow_breaks: bool) {
        self.indicator("'", true, false, false);
        let chars: Vec<char> = s.chars().collect();
        let mut spaces = false;
        for (i, &c) in chars.iter().enumerate() {
            if c == ' ' {
                let next_space = chars.get(i + 1) == Some(&' ');
                if allow_breaks && !spaces && self.column > BEST_WIDTH && i != 0 && i != chars.len() - 1 && !next_space
                {
                    self.write_indent(indent);
                } else {
                    self.put(c);
                }
                spaces = true;
            } else {
                if c == '\'' {
                    self.put('\'');
                }
                self.put(c);
                self.indention = false;
                spaces = false;
            }
        }
        self.indicator("'", false, false, false);
    }

    fn write_double(&mut self, s: &str, indent: usize, allow_breaks: bool) {
        self.indicator("\"", true, false, false);
        let chars: Vec<char> = s.chars().collect();
        let mut spaces = false;
        for (i, &c) in chars.iter().enumerate() {
            if !is_printable(c) || c == '\u{FEFF}' || is_break(c) || c == '"' || c == '\\' {
                self.put('\\');
                let esc = match c {
                    '\0' => Some('0'),
                    '\x07' => Some('a'),
                    '\x08' => Some('b'),
                    '\t' => Some('t'),
                    '\n' => Some('n'),
                    '\x0b' => Some('v'),
                    '\x0c' => Some('f'),
                    '\r' => Some('r'),
                    '\x1b' => Some('e'),
                    '"' => Some('"'),
                    '\\' => Some('\\'),
                    '\u{85}' => Some('N'),
                    '\u{A0}' => Some('_'),
                    '\u{2028}' => Some('L'),
                    '\u{2029}' => Some('P'),
                    _ => None,
                };
                match esc {
                    Some(e) => self.put(e),
                    None => {
                        let v = c as u32;
                        let hex = if v <= 0xFF {
                            format!("x{v:02X}")
                        } else if v <= 0xFFFF {
                            format!("u{v:04X}")
                        } else {
                            format!("U{v:08X}")
                        };
                        for h in hex.chars() {
                            self.put(h);
                        }
                    }
                }
                spaces = false;
            } else if c == ' ' {
                if allow_breaks && !spaces && self.column > BEST_WIDTH && i != 0 && i != chars.len() - 1 {
                    self.write_indent(indent);
                    if chars.get(i + 1) == Some(&' ') {
                        self.put('\\');
                    }
                } else {
                    self.put(c);
                }
                spaces = true;
            } else {
                self.put(c);
                spaces = false;
            }
        }
        self.indicator("\"", false, false, false);
    }

    fn write_literal(&mut self, s: &str, indent: usize) {
        self.indicator("|", true, false, false);
        let chars: Vec<char> = s.chars().collect();
        if chars.first().is_some_and(|&c| c == ' ' || is_break(c)) {
            self.put(char::from_digit(BEST_INDENT as u32, 10).unwrap_or('2'));
        }
        match chars.len() {
            0 => self.put('-'),
            n if !is_break(chars[n - 1]) => self.put('-'),
            1 => self.put('+'),
            n if is_break(chars[n - 2]) => self.put('+'),
            _ => {}
        }
        self.put_break();
        self.indention = true;
        self.whitespace = true;
        let mut breaks = true;
        for &c in &chars {
            if is_break(c) {
                self.put_break();
                self.indention = true;
                breaks = true;
            } else {
                if breaks {
                    self.write_indent(indent);
                    breaks = false;
                }
                self.put(c);
                self.indention = false;
            }
        }
    }
}

fn is_break(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

fn is_printable(c: char) -> bool {
    let v = c as u32;
    v == 0x0A
        || (0x20..=0x7E).contains(&v)
        || (0xA0..=0xD7FF).contains(&v)
        || ((0xE000..=0xFFFD).contains(&v) && v != 0xFEFF)
}

fn is_blank_or_end(c: Option<&char>) -> bool {
    match c {
        None => true,
        Some(&c) => c == ' ' || c == '\t' || is_break(c),
    }
}

struct Analysis {
    multiline: bool,
    block_plain_allowed: bool,
    single_quoted_allowed: bool,
    block_allowed: bool,
}

/// libyaml's `yaml_emitter_analyze_scalar` (block context).
fn analyze(s: &str) -> Analysis {
    if s.is_empty() {
        return Analysis {
            multiline: false,
            block_plain_allowed: true,
            single_quoted_allowed: true,
            block_allowed: false,
        };
    }
    let chars: Vec<char> = s.chars().collect();
    let mut block_indicators = s.starts_with("---") || s.starts_with("...");
    let (mut leading_space, mut leading_break, mut trailing_space, mut trailing_break) = (false, false, false, false);
    let (mut break_space, mut space_break, mut previous_space, mut previous_break) = (false, false, false, false);
    let (mut line_breaks, mut special) = (false, false);
    let mut preceded_by_ws = true;
    let mut followed_by_ws = is_blank_or_end(chars.get(1));
    let last = chars.len() - 1;
    for (i, &c) in chars.iter().enumerate() {
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"' | '%' | '@' | '`' => {
                    block_indicators = true;
                }
                '?' | ':' | '-' if followed_by_ws => block_indicators = true,
                _ => {}
            }
        } else {
            match c {
                ':' if followed_by_ws => block_indicators = true,
                '#' if preceded_by_ws => block_indicators = true,
                _ => {}
            }
        }
        if !is_printable(c) {
            special = true;
        }
        if is_break(c) {
            line_breaks = true;
        }
        if c == ' ' {
            if i == 0 {
                leading_space = true;
            }
            if i == last {
                trailing_space = true;
            }
            if previous_break {
                break_space = true;
            }
            previous_space = true;
            previous_break = false;
        } else if is_break(c) {
            if i == 0 {
                leading_break = true;
            }
            if i == last {
                trailing_break = true;
            }
            if previous_space {
                space_break = true;
            }
            previous_space = false;
            previous_break = true;
        } else {
            previous_space = false;
            previous_break = false;
        }
        preceded_by_ws = c == ' ' || c == '\t' || is_break(c);
        followed_by_ws = is_blank_or_end(chars.get(i + 2));
    }
    let mut a = Analysis {
        multiline: line_breaks,
        block_plain_allowed: true,
        single_quoted_allowed: true,
        block_allowed: true,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.block_plain_allowed = false;
    }
    if trailing_space {
        a.block_allowed = false;
    }
    if break_space {
        a.block_plain_allowed = false;
        a.single_quoted_allowed = false;
    }
    if space_break || special {
        a.block_plain_allowed = false;
        a.single_quoted_allowed = false;
        a.block_allowed = false;
    }
    if line_breaks {
        a.block_plain_allowed = false;
    }
    if block_indicators {
        a.block_plain_allowed = false;
    }
    a
}

/// go-yaml's `^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$`.
fn is_base60_float(s: &str) -> bool {
    let b = s.strip_prefix(['-', '+']).unwrap_or(s).as_bytes();
    if b.first().is_none_or(|c| !c.is_ascii_digit()) {
        return false;
    }
    let mut i = 1;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
        i += 1;
    }
    let mut groups = 0;
    while i < b.len() && b[i] == b':' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() && i - start < 2 {
            i += 1;
        }
        let digits = &b[start..i];
        let ok = match digits.len() {
            1 => true,
            2 => digits[0] <= b'5',
            _ => false,
        };
        if !ok {
            return false;
        }
        groups += 1;
    }
    if groups == 0 {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
            i += 1;
        }
    }
    i == b.len()
}

/// A plain scalar go-yaml v2 would read as a timestamp (`2006-1-2`, with a time part).
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 8 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return false;
    }
    let digits = |i: &mut usize, max: usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() && *i - start < max {
            *i += 1;
        }
        *i > start
    };
    let mut i = 5;
    if !digits(&mut i, 2) || i >= b.len() || b[i] != b'-' {
        return false;
    }
    i += 1;
    if !digits(&mut i, 2) {
        return false;
    }
    if i == b.len() {
        return true;
    }
    if !matches!(b[i], b'T' | b't' | b' ') {
        return false;
    }
    i += 1;
    for sep in [b':', b':'] {
        if !digits(&mut i, 2) || i >= b.len() || b[i] != sep {
            return false;
        }
        i += 1;
    }
    if !digits(&mut i, 2) {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if !digits(&mut i, 9) {
            return false;
        }
    }
    match &b[i..] {
        [] | [b'Z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_naturally() {
        // The order helm's toYaml writes them in.
        let want = ["_x", "9", "10", "A", "a-b", "a.b", "a_b", "a9", "a10", "ab", "b", "x1y", "x01y", "é"];
        let mut keys = want.to_vec();
        keys.reverse();
        keys.sort_by(|a, b| key_order(a, b));
        assert_eq!(keys, want);
    }

    #[test]
    fn base60_and_timestamps_are_quoted() {
        assert!(is_base60_float("1:20"));
        assert!(!is_base60_float("1:2a"));
        assert!(is_timestamp("2020-01-01"));
        assert!(is_timestamp("2001-12-14t21:59:43.10-05:00"));
        assert!(!is_timestamp("2020-01-01x"));
    }
}
