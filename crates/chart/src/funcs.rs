//! Helm's template functions and the sprig functions charts use, as gotmpl functions.
//!
//! Go's types decide the results: sprig's arithmetic is int64 (`add 1 1.5` is 2),
//! `toString` of a float64 is Go's `%v` (`1e+06`), `default` tests sprig's `empty`.
//! Functions that need the template set (`include`, `tpl`), the call-site aware
//! `required`/`fail` and the strict field walk live in `engine.rs`. gotmpl values are
//! immutable: `set`/`unset`/`merge*` return the changed map, and the engine turns
//! `$_ := set $d …` into `$d = set $d …` so the variable sees the change as in Go.
//! Left out: `env`/`expandenv` (Helm removes them too), the crypto helpers that create
//! keys or certificates (`genCA`, `genPrivateKey`, …), `toToml`, `getHostByName`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use base64::Engine as _;
use gotmpl::{FuncMap, TemplateError, Value};
use sha2::Digest as _;

use crate::yaml;
use crate::yaml_emit::go_format_g;

type R = Result<Value, TemplateError>;

fn err(msg: impl Into<String>) -> TemplateError {
    TemplateError::Exec(msg.into())
}

fn s(v: &str) -> Value {
    Value::String(v.into())
}

/// Go's `fmt.Sprint(v)` (`%v`): floats as `%g`, nil as `<nil>`, maps sorted.
pub(crate) fn go_string(v: &Value) -> String {
    let mut out = String::new();
    write_go(&mut out, v);
    out
}

fn write_go(out: &mut String, v: &Value) {
    match v {
        Value::Nil => out.push_str("<nil>"),
        Value::Float(f) => out.push_str(&go_float_v(*f)),
        Value::String(s) => out.push_str(s),
        Value::List(l) => {
            out.push('[');
            for (i, item) in l.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_go(out, item);
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push_str("map[");
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                write_go(out, v);
            }
            out.push(']');
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// `%v` of a float64: `strconv.FormatFloat(f, 'g', -1, 64)` with Go's spelling of infinities.
fn go_float_v(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    go_format_g(f)
}

/// sprig's `strval`: strings as they are, everything else as `%v`.
pub(crate) fn strval(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        other => go_string(other),
    }
}

/// sprig's `empty`.
pub(crate) fn empty(v: &Value) -> bool {
    match v {
        Value::Nil => true,
        Value::Bool(b) => !b,
        Value::Int(i) => *i == 0,
        Value::Uint(u) => *u == 0,
        Value::Float(f) => *f == 0.0,
        Value::String(s) => s.is_empty(),
        Value::List(l) => l.is_empty(),
        Value::Map(m) => m.is_empty(),
        Value::Function(_) => false,
    }
}

/// `cast.ToInt64`: floats truncated, strings parsed (0 when they are not numbers).
fn to_i64(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        Value::Uint(u) => *u as i64,
        Value::Float(f) => *f as i64,
        Value::Bool(b) => i64::from(*b),
        Value::String(s) => {
            let t = s.trim();
            t.parse::<i64>().ok().or_else(|| t.parse::<f64>().ok().map(|f| f as i64)).unwrap_or(0)
        }
        _ => 0,
    }
}

fn to_f64(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Uint(u) => *u as f64,
        Value::Float(f) => *f,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::String(s) => s.trim().parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

fn arg(args: &[Value], i: usize, name: &str) -> Result<Value, TemplateError> {
    args.get(i)
        .cloned()
        .ok_or_else(|| err(format!("wrong number of args for {name}: want at least {} got {}", i + 1, args.len())))
}

fn str_arg(args: &[Value], i: usize, name: &str) -> Result<String, TemplateError> {
    Ok(strval(&arg(args, i, name)?))
}

fn list_of(v: &Value) -> Vec<Value> {
    match v {
        Value::List(l) => l.to_vec(),
        Value::Nil => Vec::new(),
        other => vec![other.clone()],
    }
}

fn map_of(v: &Value) -> BTreeMap<Arc<str>, Value> {
    match v {
        Value::Map(m) => (**m).clone(),
        _ => BTreeMap::new(),
    }
}

fn list(v: Vec<Value>) -> Value {
    Value::List(v.into())
}

fn map(m: BTreeMap<Arc<str>, Value>) -> Value {
    Value::Map(Arc::new(m))
}

/// Go's `%q`.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let v = c as u32;
                if v <= 0xFFFF {
                    let _ = write!(out, "\\u{v:04x}");
                } else {
                    let _ = write!(out, "\\U{v:08x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Go's `encoding/json` string, with its HTML escaping when `html`.
fn json_string(out: &mut String, s: &str, html: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' if html => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Go's `json.Marshal` (compact; `indent` for `MarshalIndent`).
pub(crate) fn to_json(v: &Value, html: bool, indent: Option<&str>) -> String {
    let mut out = String::new();
    write_json(&mut out, v, html, indent, 0);
    out
}

fn write_json(out: &mut String, v: &Value, html: bool, indent: Option<&str>, depth: usize) {
    let nl = |out: &mut String, d: usize| {
        if let Some(ind) = indent {
            out.push('\n');
            for _ in 0..d {
                out.push_str(ind);
            }
        }
    };
    match v {
        Value::Nil | Value::Function(_) => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(_) | Value::Uint(_) | Value::Float(_) => out.push_str(&yaml::json_number(v)),
        Value::String(s) => json_string(out, s, html),
        Value::List(l) => {
            out.push('[');
            for (i, item) in l.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                nl(out, depth + 1);
                write_json(out, item, html, indent, depth + 1);
            }
            if !l.is_empty() {
                nl(out, depth);
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push('{');
            for (i, (k, item)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                nl(out, depth + 1);
                json_string(out, k, html);
                out.push(':');
                if indent.is_some() {
                    out.push(' ');
                }
                write_json(out, item, html, indent, depth + 1);
            }
            if !m.is_empty() {
                nl(out, depth);
            }
            out.push('}');
        }
    }
}

/// JSON text as Go's `json.Unmarshal` into `interface{}` reads it (numbers float64).
fn from_json_value(j: serde_json::Value) -> Value {
    match j {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => Value::Float(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Value::String(s.into()),
        serde_json::Value::Array(a) => list(a.into_iter().map(from_json_value).collect()),
        serde_json::Value::Object(o) => map(o.into_iter().map(|(k, v)| (Arc::from(k), from_json_value(v))).collect()),
    }
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Nil => "<nil>",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int64",
        Value::Uint(_) => "uint64",
        Value::Float(_) => "float64",
        Value::String(_) => "string",
        Value::List(_) => "[]interface {}",
        Value::Map(_) => "map[string]interface {}",
        Value::Function(_) => "func",
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Nil => "invalid",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int64",
        Value::Uint(_) => "uint64",
        Value::Float(_) => "float64",
        Value::String(_) => "string",
        Value::List(_) => "slice",
        Value::Map(_) => "map",
        Value::Function(_) => "func",
    }
}

fn regex(pattern: &str) -> Result<regex::Regex, TemplateError> {
    regex::RegexBuilder::new(pattern).size_limit(1 << 20).build().map_err(|e| err(format!("error parsing regexp: {e}")))
}

fn rand_string(n: i64, alphabet: &[u8]) -> R {
    let n = n.clamp(0, 10_000) as usize;
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| err(format!("no randomness: {e}")))?;
    Ok(Value::String(bytes.iter().map(|b| alphabet[*b as usize % alphabet.len()] as char).collect::<String>().into()))
}

/// A semantic version as Masterminds/semver reads it (`v` prefix and missing parts allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SemVer {
    major: u64,
    minor: u64,
    patch: u64,
    pre: String,
    meta: String,
    original: String,
}

impl SemVer {
    pub(crate) fn parse(s: &str) -> Option<SemVer> {
        let original = s.to_string();
        let t = s.trim().trim_start_matches('v');
        let (t, meta) = t.split_once('+').map_or((t, ""), |(a, b)| (a, b));
        let (core, pre) = t.split_once('-').map_or((t, ""), |(a, b)| (a, b));
        let mut parts = core.split('.');
        let num = |p: Option<&str>| -> Option<u64> {
            match p {
                None => Some(0),
                Some(x) => x.parse().ok(),
            }
        };
        let major = parts.next().and_then(|x| x.parse().ok())?;
        let minor = num(parts.next())?;
        let patch = num(parts.next())?;
        if parts.next().is_some() {
            return None;
        }
        Some(SemVer { major, minor, patch, pre: pre.into(), meta: meta.into(), original })
    }

    pub(crate) fn major_minor(&self) -> (u64, u64) {
        (self.major, self.minor)
    }

    fn cmp(&self, o: &SemVer) -> std::cmp::Ordering {
        (self.major, self.minor, self.patch).cmp(&(o.major, o.minor, o.patch)).then_with(|| {
            match (self.pre.is_empty(), o.pre.is_empty()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                (false, false) => cmp_pre(&self.pre, &o.pre),
            }
        })
    }

    fn value(&self) -> Value {
        let mut m = BTreeMap::new();
        m.insert(Arc::from("Major"), Value::Int(self.major as i64));
        m.insert(Arc::from("Minor"), Value::Int(self.minor as i64));
        m.insert(Arc::from("Patch"), Value::Int(self.patch as i64));
        m.insert(Arc::from("Prerelease"), s(&self.pre));
        m.insert(Arc::from("Metadata"), s(&self.meta));
        m.insert(Arc::from("Original"), s(&self.original));
        map(m)
    }
}

fn cmp_pre(a: &str, b: &str) -> std::cmp::Ordering {
    let (ap, bp): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
    for (x, y) in ap.iter().zip(bp.iter()) {
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(i), Ok(j)) => i.cmp(&j),
            (Ok(_), Err(_)) => std::cmp::Ordering::Less,
            (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
            _ => x.cmp(y),
        };
        if o != std::cmp::Ordering::Equal {
            return o;
        }
    }
    ap.len().cmp(&bp.len())
}

/// Masterminds/semver constraints: `||` of comma/space-separated comparisons
/// (`=`, `!=`, `>`, `<`, `>=`, `<=`, `~`, `^`, wildcards `1.2.x`).
pub(crate) fn semver_matches(constraint: &str, version: &SemVer) -> Result<bool, String> {
    for alt in constraint.split("||") {
        let mut all = true;
        let mut any = false;
        let re = constraint_space();
        let normalized = re.replace_all(alt, "$1");
        for c in normalized.split([',', ' ']).map(str::trim).filter(|c| !c.is_empty()) {
            any = true;
            if !check_one(c, version)? {
                all = false;
            }
        }
        if any && all {
            return Ok(true);
        }
    }
    Ok(false)
}

fn constraint_space() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| match regex::Regex::new(r"(>=|<=|!=|=>|=<|~>|>|<|=|~|\^)\s+") {
        Ok(r) => r,
        Err(_) => regex::Regex::new("$^").unwrap_or_else(|_| unreachable_regex()),
    })
}

#[expect(clippy::panic, reason = "constant patterns compile")]
fn unreachable_regex() -> regex::Regex {
    panic!("constant regex")
}

fn check_one(c: &str, v: &SemVer) -> Result<bool, String> {
    let ops = [">=", "<=", "!=", "=>", "=<", ">", "<", "=", "~>", "~", "^"];
    let (op, rest) = ops.iter().find_map(|op| c.strip_prefix(op).map(|r| (*op, r.trim()))).unwrap_or(("", c));
    let wild = |p: &str| p == "x" || p == "X" || p == "*";
    let core = rest.trim_start_matches('v');
    let parts: Vec<&str> = core.split(['-', '+']).next().unwrap_or("").split('.').collect();
    let wildcard_at = parts.iter().position(|p| wild(p)).unwrap_or(parts.len());
    let filled: Vec<&str> = parts.iter().map(|p| if wild(p) { "0" } else { p }).collect();
    let cv_text = if rest.contains('-') { rest.to_string() } else { filled.join(".") };
    let cv = SemVer::parse(if wild(rest) { "0.0.0" } else { &cv_text })
        .ok_or_else(|| format!("improper constraint: {c}"))?;
    // A pre-release version only satisfies a constraint that names a pre-release.
    if !v.pre.is_empty() && cv.pre.is_empty() {
        return Ok(false);
    }
    let o = v.cmp(&cv);
    use std::cmp::Ordering::*;
    let specified = wildcard_at.min(parts.len());
    let upper = |level: usize| -> SemVer {
        let mut u = cv.clone();
        u.pre.clear();
        match level {
            0 => {
                u.major += 1;
                u.minor = 0;
                u.patch = 0;
            }
            1 => {
                u.minor += 1;
                u.patch = 0;
            }
            _ => u.patch += 1,
        }
        u
    };
    Ok(match op {
        "" | "=" if wild(rest) => true,
        "" | "=" if specified < 3 => o != Less && v.cmp(&upper(specified.saturating_sub(1))) == Less,
        "" | "=" => o == Equal,
        "!=" => o != Equal,
        ">" if specified < 3 => v.cmp(&upper(specified.saturating_sub(1))) != Less,
        ">" => o == Greater,
        "<" => o == Less,
        "<=" | "=<" if specified < 3 => v.cmp(&upper(specified.saturating_sub(1))) == Less,
        ">=" | "=>" => o != Less,
        "<=" | "=<" => o != Greater,
        "~" | "~>" => o != Less && v.cmp(&upper(if specified >= 2 { 1 } else { 0 })) == Less,
        "^" => {
            let level = if cv.major > 0 || specified < 2 {
                0
            } else if cv.minor > 0 || specified < 3 {
                1
            } else {
                2
            };
            o != Less && v.cmp(&upper(level)) == Less
        }
        _ => return Err(format!("improper constraint: {c}")),
    })
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_letter = false;
    for c in s.chars() {
        if !prev_letter && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_letter = !(c.is_whitespace() || c.is_ascii_punctuation() && c != '\'' && c != '_');
    }
    out
}

fn case_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if c.is_uppercase() && !cur.is_empty() {
            let prev_lower = chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit();
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev_lower || (next_lower && chars[i - 1].is_uppercase()) {
                words.push(std::mem::take(&mut cur));
            }
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

fn dig(keys: &[Value], default: Value, m: &Value) -> Value {
    let mut cur = m.clone();
    for k in keys {
        match &cur {
            Value::Map(mm) => match mm.get(strval(k).as_str()) {
                Some(v) => cur = v.clone(),
                None => return default,
            },
            _ => return default,
        }
    }
    cur
}

fn merge_into(dst: &mut BTreeMap<Arc<str>, Value>, src: &BTreeMap<Arc<str>, Value>, overwrite: bool) {
    for (k, v) in src {
        match (dst.get_mut(k), v) {
            (Some(Value::Map(d)), Value::Map(sv)) => merge_into(Arc::make_mut(d), sv, overwrite),
            (Some(existing), _) => {
                if overwrite
                    || empty(existing) && !matches!(existing, Value::Bool(false)) && !matches!(existing, Value::Map(_))
                {
                    *existing = v.clone();
                }
            }
            (None, _) => {
                dst.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The pure functions: everything but `include`, `tpl`, `required`, `fail`.
pub(crate) fn pure() -> FuncMap {
    let mut f = FuncMap::new();
    let mut add = |name: &str, func: fn(&[Value]) -> R| {
        f.insert(name.to_string(), Arc::new(func));
    };
    let aliases: &[(&str, &str)] = &[
        ("mustAppend", "append"),
        ("mustPush", "push"),
        ("mustPrepend", "prepend"),
        ("mustFirst", "first"),
        ("mustLast", "last"),
        ("mustRest", "rest"),
        ("mustInitial", "initial"),
        ("mustReverse", "reverse"),
        ("mustUniq", "uniq"),
        ("mustWithout", "without"),
        ("mustHas", "has"),
        ("mustCompact", "compact"),
        ("mustMergeOverwrite", "mergeOverwrite"),
        ("mustToPrettyJson", "toPrettyJson"),
        ("mustToRawJson", "toRawJson"),
        ("mustRegexFind", "regexFind"),
        ("mustRegexFindAll", "regexFindAll"),
        ("mustRegexReplaceAll", "regexReplaceAll"),
        ("mustRegexReplaceAllLiteral", "regexReplaceAllLiteral"),
        ("mustRegexSplit", "regexSplit"),
        ("mustDateModify", "dateModify"),
        ("mustChunk", "chunk"),
        ("osBase", "base"),
        ("osDir", "dir"),
        ("osExt", "ext"),
        ("osIsAbs", "isAbs"),
        ("trimall", "trimAll"),
        ("biggest", "max"),
    ];

    // Go's fmt, with float64 spelled as Go spells it.
    add("printf", |a| {
        let format = str_arg(a, 0, "printf")?;
        Ok(s(&crate::gofmt::sprintf(&format, &a[1..])))
    });
    add("print", |a| Ok(s(&crate::gofmt::sprint(a))));
    add("println", |a| Ok(s(&crate::gofmt::sprintln(a))));

    // Strings.
    add("toString", |a| Ok(s(&strval(&arg(a, 0, "toString")?))));
    add("toStrings", |a| Ok(list(list_of(&arg(a, 0, "toStrings")?).iter().map(|v| s(&strval(v))).collect())));
    add("upper", |a| Ok(s(&str_arg(a, 0, "upper")?.to_uppercase())));
    add("lower", |a| Ok(s(&str_arg(a, 0, "lower")?.to_lowercase())));
    add("title", |a| Ok(s(&title(&str_arg(a, 0, "title")?))));
    add("untitle", |a| {
        let t = str_arg(a, 0, "untitle")?;
        let mut out = String::new();
        let mut start = true;
        for c in t.chars() {
            if start && c.is_alphabetic() {
                out.extend(c.to_lowercase());
            } else {
                out.push(c);
            }
            start = c.is_whitespace();
        }
        Ok(s(&out))
    });
    add("trim", |a| Ok(s(str_arg(a, 0, "trim")?.trim())));
    add("trimAll", |a| {
        let cut = str_arg(a, 0, "trimAll")?;
        Ok(s(str_arg(a, 1, "trimAll")?.trim_matches(|c| cut.contains(c))))
    });
    add("trimPrefix", |a| {
        let p = str_arg(a, 0, "trimPrefix")?;
        let t = str_arg(a, 1, "trimPrefix")?;
        Ok(s(t.strip_prefix(p.as_str()).unwrap_or(&t)))
    });
    add("trimSuffix", |a| {
        let p = str_arg(a, 0, "trimSuffix")?;
        let t = str_arg(a, 1, "trimSuffix")?;
        Ok(s(t.strip_suffix(p.as_str()).unwrap_or(&t)))
    });
    add("nospace", |a| Ok(s(&str_arg(a, 0, "nospace")?.chars().filter(|c| !c.is_whitespace()).collect::<String>())));
    add("repeat", |a| {
        let n = to_i64(&arg(a, 0, "repeat")?).clamp(0, 1_000_000) as usize;
        let t = str_arg(a, 1, "repeat")?;
        if t.len().saturating_mul(n) > crate::render::MAX_OUTPUT_BYTES {
            return Err(err("repeat: the result would be too large"));
        }
        Ok(s(&t.repeat(n)))
    });
    add("substr", |a| {
        let start = to_i64(&arg(a, 0, "substr")?);
        let end = to_i64(&arg(a, 1, "substr")?);
        let t = str_arg(a, 2, "substr")?;
        let len = t.len() as i64;
        let (st, en) = if start < 0 {
            (0, if end < 0 || end > len { len } else { end })
        } else if end < 0 || end > len {
            (start.min(len), len)
        } else {
            (start.min(end), end)
        };
        Ok(s(&String::from_utf8_lossy(&t.as_bytes()[st as usize..en as usize])))
    });
    add("trunc", |a| {
        let c = to_i64(&arg(a, 0, "trunc")?);
        let t = str_arg(a, 1, "trunc")?;
        let len = t.len() as i64;
        let out = if c < 0 && len + c > 0 {
            &t.as_bytes()[(len + c) as usize..]
        } else if c >= 0 && len > c {
            &t.as_bytes()[..c as usize]
        } else {
            t.as_bytes()
        };
        Ok(s(&String::from_utf8_lossy(out)))
    });
    add("abbrev", |a| {
        let w = to_i64(&arg(a, 0, "abbrev")?);
        let t = str_arg(a, 1, "abbrev")?;
        if w < 4 || t.len() as i64 <= w {
            return Ok(s(&t));
        }
        Ok(s(&format!("{}...", &t[..(w as usize - 3).min(t.len())])))
    });
    add("initials", |a| {
        Ok(s(&str_arg(a, 0, "initials")?.split_whitespace().filter_map(|w| w.chars().next()).collect::<String>()))
    });
    add("contains", |a| Ok(Value::Bool(str_arg(a, 1, "contains")?.contains(&str_arg(a, 0, "contains")?))));
    add("hasPrefix", |a| Ok(Value::Bool(str_arg(a, 1, "hasPrefix")?.starts_with(&str_arg(a, 0, "hasPrefix")?))));
    add("hasSuffix", |a| Ok(Value::Bool(str_arg(a, 1, "hasSuffix")?.ends_with(&str_arg(a, 0, "hasSuffix")?))));
    add("quote", |a| {
        Ok(s(&a
            .iter()
            .filter(|v| !matches!(v, Value::Nil))
            .map(|v| go_quote(&strval(v)))
            .collect::<Vec<_>>()
            .join(" ")))
    });
    add("squote", |a| {
        Ok(s(&a
            .iter()
            .filter(|v| !matches!(v, Value::Nil))
            .map(|v| format!("'{}'", strval(v)))
            .collect::<Vec<_>>()
            .join(" ")))
    });
    add("cat", |a| Ok(s(&a.iter().filter(|v| !matches!(v, Value::Nil)).map(strval).collect::<Vec<_>>().join(" "))));
    add("indent", |a| {
        let n = to_i64(&arg(a, 0, "indent")?).clamp(0, 10_000) as usize;
        let pad = " ".repeat(n);
        Ok(s(&format!("{pad}{}", str_arg(a, 1, "indent")?.replace('\n', &format!("\n{pad}")))))
    });
    add("nindent", |a| {
        let n = to_i64(&arg(a, 0, "nindent")?).clamp(0, 10_000) as usize;
        let pad = " ".repeat(n);
        Ok(s(&format!("\n{pad}{}", str_arg(a, 1, "nindent")?.replace('\n', &format!("\n{pad}")))))
    });
    add("replace", |a| {
        let old = str_arg(a, 0, "replace")?;
        let new = str_arg(a, 1, "replace")?;
        Ok(s(&str_arg(a, 2, "replace")?.replace(&old, &new)))
    });
    add("plural", |a| {
        let one = str_arg(a, 0, "plural")?;
        let many = str_arg(a, 1, "plural")?;
        Ok(s(if to_i64(&arg(a, 2, "plural")?) == 1 { &one } else { &many }))
    });
    add("snakecase", |a| {
        Ok(s(&case_words(&str_arg(a, 0, "snakecase")?).iter().map(|w| w.to_lowercase()).collect::<Vec<_>>().join("_")))
    });
    add("kebabcase", |a| {
        Ok(s(&case_words(&str_arg(a, 0, "kebabcase")?).iter().map(|w| w.to_lowercase()).collect::<Vec<_>>().join("-")))
    });
    add("camelcase", |a| {
        let t = str_arg(a, 0, "camelcase")?;
        Ok(s(&t.split('_').map(|w| title(&w.to_lowercase())).collect::<String>()))
    });
    add("swapcase", |a| {
        Ok(s(&str_arg(a, 0, "swapcase")?
            .chars()
            .map(|c| {
                if c.is_uppercase() {
                    c.to_lowercase().next().unwrap_or(c)
                } else {
                    c.to_uppercase().next().unwrap_or(c)
                }
            })
            .collect::<String>()))
    });
    add("wrap", |a| {
        let w = to_i64(&arg(a, 0, "wrap")?).max(1) as usize;
        let t = str_arg(a, 1, "wrap")?;
        let mut out = String::new();
        let mut line = 0;
        for word in t.split(' ') {
            if line > 0 && line + 1 + word.len() > w {
                out.push('\n');
                line = 0;
            } else if line > 0 {
                out.push(' ');
                line += 1;
            }
            out.push_str(word);
            line += word.len();
        }
        Ok(s(&out))
    });
    add("join", |a| {
        let sep = str_arg(a, 0, "join")?;
        Ok(s(&list_of(&arg(a, 1, "join")?).iter().map(strval).collect::<Vec<_>>().join(&sep)))
    });
    add("splitList", |a| {
        let sep = str_arg(a, 0, "splitList")?;
        Ok(list(str_arg(a, 1, "splitList")?.split(sep.as_str()).map(s).collect()))
    });
    add("split", |a| {
        let sep = str_arg(a, 0, "split")?;
        let m = str_arg(a, 1, "split")?
            .split(sep.as_str())
            .enumerate()
            .map(|(i, p)| (Arc::from(format!("_{i}")), s(p)))
            .collect();
        Ok(map(m))
    });
    add("splitn", |a| {
        let sep = str_arg(a, 0, "splitn")?;
        let n = to_i64(&arg(a, 1, "splitn")?).max(0) as usize;
        let m = str_arg(a, 2, "splitn")?
            .splitn(n, sep.as_str())
            .enumerate()
            .map(|(i, p)| (Arc::from(format!("_{i}")), s(p)))
            .collect();
        Ok(map(m))
    });
    add("sortAlpha", |a| {
        let mut v: Vec<String> = list_of(&arg(a, 0, "sortAlpha")?).iter().map(strval).collect();
        v.sort();
        Ok(list(v.iter().map(|x| s(x)).collect()))
    });
    add("regexMatch", |a| {
        Ok(Value::Bool(regex(&str_arg(a, 0, "regexMatch")?)?.is_match(&str_arg(a, 1, "regexMatch")?)))
    });
    add("mustRegexMatch", |a| {
        Ok(Value::Bool(regex(&str_arg(a, 0, "mustRegexMatch")?)?.is_match(&str_arg(a, 1, "mustRegexMatch")?)))
    });
    add("regexFind", |a| {
        let r = regex(&str_arg(a, 0, "regexFind")?)?;
        Ok(s(r.find(&str_arg(a, 1, "regexFind")?).map_or("", |m| m.as_str())))
    });
    add("regexFindAll", |a| {
        let r = regex(&str_arg(a, 0, "regexFindAll")?)?;
        let t = str_arg(a, 1, "regexFindAll")?;
        let n = to_i64(&arg(a, 2, "regexFindAll")?);
        let it = r.find_iter(&t).map(|m| s(m.as_str()));
        Ok(list(if n < 0 { it.collect() } else { it.take(n as usize).collect() }))
    });
    add("regexReplaceAll", |a| {
        let r = regex(&str_arg(a, 0, "regexReplaceAll")?)?;
        let t = str_arg(a, 1, "regexReplaceAll")?;
        let rep = str_arg(a, 2, "regexReplaceAll")?;
        Ok(s(&r.replace_all(&t, rep.as_str())))
    });
    add("regexReplaceAllLiteral", |a| {
        let r = regex(&str_arg(a, 0, "regexReplaceAllLiteral")?)?;
        let t = str_arg(a, 1, "regexReplaceAllLiteral")?;
        let rep = str_arg(a, 2, "regexReplaceAllLiteral")?;
        Ok(s(&r.replace_all(&t, regex::NoExpand(&rep))))
    });
    add("regexSplit", |a| {
        let r = regex(&str_arg(a, 0, "regexSplit")?)?;
        let t = str_arg(a, 1, "regexSplit")?;
        let n = to_i64(&arg(a, 2, "regexSplit")?);
        Ok(list(if n < 0 { r.split(&t).map(s).collect() } else { r.splitn(&t, n as usize).map(s).collect() }))
    });
    add("b64enc", |a| Ok(s(&base64::engine::general_purpose::STANDARD.encode(str_arg(a, 0, "b64enc")?))));
    add("b64dec", |a| {
        let t = str_arg(a, 0, "b64dec")?;
        Ok(s(&match base64::engine::general_purpose::STANDARD.decode(t.as_bytes()) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => e.to_string(),
        }))
    });
    add("sha256sum", |a| {
        let d = sha2::Sha256::digest(str_arg(a, 0, "sha256sum")?.as_bytes());
        Ok(s(&d.iter().map(|b| format!("{b:02x}")).collect::<String>()))
    });
    add("adler32sum", |a| {
        let t = str_arg(a, 0, "adler32sum")?;
        let (mut x, mut y) = (1u32, 0u32);
        for b in t.bytes() {
            x = (x + u32::from(b)) % 65521;
            y = (y + x) % 65521;
        }
        Ok(s(&((y << 16) | x).to_string()))
    });
    add("randAlphaNum", |a| {
        rand_string(
            to_i64(&arg(a, 0, "randAlphaNum")?),
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        )
    });
    add("randAlpha", |a| {
        rand_string(to_i64(&arg(a, 0, "randAlpha")?), b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    });
    add("randNumeric", |a| rand_string(to_i64(&arg(a, 0, "randNumeric")?), b"0123456789"));
    add("randAscii", |a| {
        let printable: Vec<u8> = (0x21u8..0x7f).collect();
        rand_string(to_i64(&arg(a, 0, "randAscii")?), &printable)
    });
    add("uuidv4", |_| {
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).map_err(|e| err(format!("no randomness: {e}")))?;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        Ok(s(&format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])))
    });

    // Defaults and logic.
    add("default", |a| {
        let d = arg(a, 0, "default")?;
        match a.get(1) {
            Some(v) if !empty(v) => Ok(v.clone()),
            _ => Ok(d),
        }
    });
    add("empty", |a| Ok(Value::Bool(a.first().is_none_or(empty))));
    add("coalesce", |a| Ok(a.iter().find(|v| !empty(v)).cloned().unwrap_or(Value::Nil)));
    add("all", |a| Ok(Value::Bool(a.iter().all(|v| !empty(v)))));
    add("any", |a| Ok(Value::Bool(a.iter().any(|v| !empty(v)))));
    add("ternary", |a| {
        let t = arg(a, 0, "ternary")?;
        let f = arg(a, 1, "ternary")?;
        Ok(if arg(a, 2, "ternary")?.is_truthy() { t } else { f })
    });
    add("fail", |a| Err(err(str_arg(a, 0, "fail")?)));
    add("typeOf", |a| Ok(s(type_of(&arg(a, 0, "typeOf")?))));
    add("kindOf", |a| Ok(s(kind_of(&arg(a, 0, "kindOf")?))));
    add("kindIs", |a| Ok(Value::Bool(str_arg(a, 0, "kindIs")? == kind_of(&arg(a, 1, "kindIs")?))));
    add("typeIs", |a| Ok(Value::Bool(str_arg(a, 0, "typeIs")? == type_of(&arg(a, 1, "typeIs")?))));
    add("deepEqual", |a| Ok(Value::Bool(arg(a, 0, "deepEqual")? == arg(a, 1, "deepEqual")?)));

    // Numbers (int64, as sprig's).
    add("int", |a| Ok(Value::Int(to_i64(&arg(a, 0, "int")?))));
    add("int64", |a| Ok(Value::Int(to_i64(&arg(a, 0, "int64")?))));
    add("atoi", |a| Ok(Value::Int(str_arg(a, 0, "atoi")?.trim().parse().unwrap_or(0))));
    add("float64", |a| Ok(Value::Float(to_f64(&arg(a, 0, "float64")?))));
    add("add", |a| Ok(Value::Int(a.iter().map(to_i64).fold(0i64, i64::wrapping_add))));
    add("add1", |a| Ok(Value::Int(to_i64(&arg(a, 0, "add1")?).wrapping_add(1))));
    add("sub", |a| Ok(Value::Int(to_i64(&arg(a, 0, "sub")?).wrapping_sub(to_i64(&arg(a, 1, "sub")?)))));
    add("mul", |a| Ok(Value::Int(a.iter().map(to_i64).fold(1i64, i64::wrapping_mul))));
    add("div", |a| {
        let d = to_i64(&arg(a, 1, "div")?);
        if d == 0 {
            return Err(err("runtime error: integer divide by zero"));
        }
        Ok(Value::Int(to_i64(&arg(a, 0, "div")?).wrapping_div(d)))
    });
    add("mod", |a| {
        let d = to_i64(&arg(a, 1, "mod")?);
        if d == 0 {
            return Err(err("runtime error: integer divide by zero"));
        }
        Ok(Value::Int(to_i64(&arg(a, 0, "mod")?).wrapping_rem(d)))
    });
    add("max", |a| Ok(Value::Int(a.iter().map(to_i64).max().unwrap_or(0))));
    add("min", |a| Ok(Value::Int(a.iter().map(to_i64).min().unwrap_or(0))));
    add("addf", |a| Ok(Value::Float(a.iter().map(to_f64).sum())));
    add("subf", |a| Ok(Value::Float(a.iter().skip(1).fold(a.first().map_or(0.0, to_f64), |x, y| x - to_f64(y)))));
    add("mulf", |a| Ok(Value::Float(a.iter().map(to_f64).product())));
    add("divf", |a| Ok(Value::Float(a.iter().skip(1).fold(a.first().map_or(0.0, to_f64), |x, y| x / to_f64(y)))));
    add("floor", |a| Ok(Value::Float(to_f64(&arg(a, 0, "floor")?).floor())));
    add("ceil", |a| Ok(Value::Float(to_f64(&arg(a, 0, "ceil")?).ceil())));
    add("round", |a| {
        let x = to_f64(&arg(a, 0, "round")?);
        let p = a.get(1).map_or(0, to_i64).clamp(0, 15) as i32;
        let m = 10f64.powi(p);
        Ok(Value::Float((x * m).round() / m))
    });
    add("until", |a| {
        let n = to_i64(&arg(a, 0, "until")?);
        range_list(0, n, if n < 0 { -1 } else { 1 })
    });
    add("untilStep", |a| {
        range_list(to_i64(&arg(a, 0, "untilStep")?), to_i64(&arg(a, 1, "untilStep")?), to_i64(&arg(a, 2, "untilStep")?))
    });
    add("seq", |a| {
        let nums: Vec<i64> = a.iter().map(to_i64).collect();
        let (start, step, end) = match nums.as_slice() {
            [e] => (1, 1, *e),
            [s0, e] => (*s0, if e >= s0 { 1 } else { -1 }, *e),
            [s0, st, e] => (*s0, *st, *e),
            _ => return Ok(s("")),
        };
        let v = range_inclusive(start, end, step)?;
        Ok(s(&v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" ")))
    });

    // Lists.
    add("list", |a| Ok(list(a.to_vec())));
    add("tuple", |a| Ok(list(a.to_vec())));
    add("append", |a| {
        let mut l = list_of(&arg(a, 0, "append")?);
        l.push(arg(a, 1, "append")?);
        Ok(list(l))
    });
    add("push", |a| {
        let mut l = list_of(&arg(a, 0, "push")?);
        l.push(arg(a, 1, "push")?);
        Ok(list(l))
    });
    add("prepend", |a| {
        let mut l = list_of(&arg(a, 0, "prepend")?);
        l.insert(0, arg(a, 1, "prepend")?);
        Ok(list(l))
    });
    add("first", |a| Ok(list_of(&arg(a, 0, "first")?).first().cloned().unwrap_or(Value::Nil)));
    add("last", |a| Ok(list_of(&arg(a, 0, "last")?).last().cloned().unwrap_or(Value::Nil)));
    add("rest", |a| Ok(list(list_of(&arg(a, 0, "rest")?).into_iter().skip(1).collect())));
    add("initial", |a| {
        let mut l = list_of(&arg(a, 0, "initial")?);
        l.pop();
        Ok(list(l))
    });
    add("reverse", |a| {
        let mut l = list_of(&arg(a, 0, "reverse")?);
        l.reverse();
        Ok(list(l))
    });
    add("uniq", |a| {
        let mut out: Vec<Value> = Vec::new();
        for v in list_of(&arg(a, 0, "uniq")?) {
            if !out.contains(&v) {
                out.push(v);
            }
        }
        Ok(list(out))
    });
    add("without", |a| {
        let l = list_of(&arg(a, 0, "without")?);
        Ok(list(l.into_iter().filter(|v| !a[1..].contains(v)).collect()))
    });
    add("has", |a| {
        let needle = arg(a, 0, "has")?;
        Ok(Value::Bool(list_of(&arg(a, 1, "has")?).contains(&needle)))
    });
    add("compact", |a| Ok(list(list_of(&arg(a, 0, "compact")?).into_iter().filter(|v| !empty(v)).collect())));
    add("concat", |a| Ok(list(a.iter().flat_map(list_of).collect())));
    add("chunk", |a| {
        let n = to_i64(&arg(a, 0, "chunk")?).max(1) as usize;
        Ok(list(list_of(&arg(a, 1, "chunk")?).chunks(n).map(|c| list(c.to_vec())).collect()))
    });

    // Dictionaries.
    add("dict", |a| {
        let mut m = BTreeMap::new();
        for pair in a.chunks(2) {
            m.insert(Arc::from(strval(&pair[0])), pair.get(1).cloned().unwrap_or(Value::String("".into())));
        }
        Ok(map(m))
    });
    add("get", |a| {
        let m = arg(a, 0, "get")?;
        let k = str_arg(a, 1, "get")?;
        Ok(match &m {
            Value::Map(mm) => mm.get(k.as_str()).cloned().unwrap_or_else(|| s("")),
            _ => s(""),
        })
    });
    add("set", |a| {
        let mut m = map_of(&arg(a, 0, "set")?);
        m.insert(Arc::from(str_arg(a, 1, "set")?), arg(a, 2, "set")?);
        Ok(map(m))
    });
    add("unset", |a| {
        let mut m = map_of(&arg(a, 0, "unset")?);
        m.remove(str_arg(a, 1, "unset")?.as_str());
        Ok(map(m))
    });
    add("hasKey", |a| {
        let k = str_arg(a, 1, "hasKey")?;
        Ok(Value::Bool(matches!(&arg(a, 0, "hasKey")?, Value::Map(m) if m.contains_key(k.as_str()))))
    });
    add("keys", |a| {
        let mut ks: Vec<Value> = Vec::new();
        for m in a {
            if let Value::Map(mm) = m {
                ks.extend(mm.keys().map(|k| Value::String(k.clone())));
            }
        }
        Ok(list(ks))
    });
    add("values", |a| Ok(list(map_of(&arg(a, 0, "values")?).into_values().collect())));
    add("pick", |a| {
        let m = map_of(&arg(a, 0, "pick")?);
        let want: Vec<String> = a[1..].iter().map(strval).collect();
        Ok(map(m.into_iter().filter(|(k, _)| want.iter().any(|w| w.as_str() == &**k)).collect()))
    });
    add("omit", |a| {
        let m = map_of(&arg(a, 0, "omit")?);
        let drop: Vec<String> = a[1..].iter().map(strval).collect();
        Ok(map(m.into_iter().filter(|(k, _)| !drop.iter().any(|w| w.as_str() == &**k)).collect()))
    });
    add("pluck", |a| {
        let k = str_arg(a, 0, "pluck")?;
        Ok(list(
            a[1..]
                .iter()
                .filter_map(|m| if let Value::Map(mm) = m { mm.get(k.as_str()).cloned() } else { None })
                .collect(),
        ))
    });
    add("dig", |a| {
        if a.len() < 3 {
            return Err(err("dig needs at least three arguments"));
        }
        let n = a.len();
        Ok(dig(&a[..n - 2], a[n - 2].clone(), &a[n - 1]))
    });
    add("merge", |a| {
        let mut dst = map_of(&arg(a, 0, "merge")?);
        for src in &a[1..] {
            merge_into(&mut dst, &map_of(src), false);
        }
        Ok(map(dst))
    });
    add("mustMerge", |a| {
        let mut dst = map_of(&arg(a, 0, "mustMerge")?);
        for src in &a[1..] {
            merge_into(&mut dst, &map_of(src), false);
        }
        Ok(map(dst))
    });
    add("mergeOverwrite", |a| {
        let mut dst = map_of(&arg(a, 0, "mergeOverwrite")?);
        for src in &a[1..] {
            merge_into(&mut dst, &map_of(src), true);
        }
        Ok(map(dst))
    });
    add("deepCopy", |a| arg(a, 0, "deepCopy"));
    add("mustDeepCopy", |a| arg(a, 0, "mustDeepCopy"));

    // Encodings.
    add("toYaml", |a| Ok(s(&yaml::to_yaml(&arg(a, 0, "toYaml")?))));
    add("mustToYaml", |a| Ok(s(&yaml::to_yaml(&arg(a, 0, "mustToYaml")?))));
    add("fromYaml", |a| {
        Ok(match yaml::from_yaml(&str_arg(a, 0, "fromYaml")?) {
            Ok(Value::Map(m)) => Value::Map(m),
            Ok(Value::Nil) => map(BTreeMap::new()),
            Ok(_) => error_map(
                "error unmarshaling JSON: json: cannot unmarshal array into Go value of type map[string]interface {}",
            ),
            Err(e) => error_map(&format!("error converting YAML to JSON: yaml: {e}")),
        })
    });
    add("fromYamlArray", |a| {
        Ok(match yaml::from_yaml(&str_arg(a, 0, "fromYamlArray")?) {
            Ok(Value::List(l)) => Value::List(l),
            Ok(Value::Nil) => list(Vec::new()),
            Ok(_) => list(vec![s(
                "error unmarshaling JSON: json: cannot unmarshal object into Go value of type []interface {}",
            )]),
            Err(e) => list(vec![s(&format!("error converting YAML to JSON: yaml: {e}"))]),
        })
    });
    add("toJson", |a| Ok(s(&to_json(&arg(a, 0, "toJson")?, true, None))));
    add("mustToJson", |a| Ok(s(&to_json(&arg(a, 0, "mustToJson")?, true, None))));
    add("toRawJson", |a| Ok(s(&to_json(&arg(a, 0, "toRawJson")?, false, None))));
    add("toPrettyJson", |a| Ok(s(&to_json(&arg(a, 0, "toPrettyJson")?, true, Some("  ")))));
    add("fromJson", |a| {
        Ok(match serde_json::from_str::<serde_json::Value>(&str_arg(a, 0, "fromJson")?) {
            Ok(j @ serde_json::Value::Object(_)) => from_json_value(j),
            Ok(_) => error_map("json: cannot unmarshal into Go value of type map[string]interface {}"),
            Err(e) => error_map(&e.to_string()),
        })
    });
    add("fromJsonArray", |a| {
        Ok(match serde_json::from_str::<serde_json::Value>(&str_arg(a, 0, "fromJsonArray")?) {
            Ok(j @ serde_json::Value::Array(_)) => from_json_value(j),
            Ok(_) => list(vec![s("json: cannot unmarshal into Go value of type []interface {}")]),
            Err(e) => list(vec![s(&e.to_string())]),
        })
    });

    // Versions.
    add("semver", |a| {
        let t = str_arg(a, 0, "semver")?;
        SemVer::parse(&t).map(|v| v.value()).ok_or_else(|| err(format!("invalid semantic version: {t}")))
    });
    add("semverCompare", |a| {
        let c = str_arg(a, 0, "semverCompare")?;
        let t = str_arg(a, 1, "semverCompare")?;
        let v = SemVer::parse(&t).ok_or_else(|| err("invalid semantic version"))?;
        semver_matches(&c, &v).map(Value::Bool).map_err(err)
    });

    // Dates (not deterministic: `now` is the time of the render).
    add("now", |_| Ok(s(&jiff::Zoned::now().strftime("%Y-%m-%d %H:%M:%S.%f %z %Z").to_string())));
    add("date", |a| {
        let layout = str_arg(a, 0, "date")?;
        let when = str_arg(a, 1, "date")?;
        let ts = when.parse::<jiff::Timestamp>().unwrap_or_else(|_| jiff::Timestamp::now());
        Ok(s(&go_date(&layout, &ts.to_zoned(jiff::tz::TimeZone::system()))))
    });
    add("htmlDate", |a| {
        let when = str_arg(a, 0, "htmlDate")?;
        let ts = when.parse::<jiff::Timestamp>().unwrap_or_else(|_| jiff::Timestamp::now());
        Ok(s(&go_date("2006-01-02", &ts.to_zoned(jiff::tz::TimeZone::system()))))
    });
    add("unixEpoch", |_| Ok(s(&jiff::Timestamp::now().as_second().to_string())));

    // Paths (Go's `path` package).
    add("base", |a| {
        let p = str_arg(a, 0, "base")?;
        let t = p.trim_end_matches('/');
        Ok(s(if t.is_empty() { if p.is_empty() { "." } else { "/" } } else { t.rsplit('/').next().unwrap_or(t) }))
    });
    add("dir", |a| {
        let p = str_arg(a, 0, "dir")?;
        Ok(s(match p.rfind('/') {
            Some(0) => "/",
            Some(i) => &p[..i],
            None => ".",
        }))
    });
    add("ext", |a| {
        let p = str_arg(a, 0, "ext")?;
        let base = p.rsplit('/').next().unwrap_or(&p);
        Ok(s(base.rfind('.').map_or("", |i| &base[i..])))
    });
    add("isAbs", |a| Ok(Value::Bool(str_arg(a, 0, "isAbs")?.starts_with('/'))));

    // Helm's cluster look-up: `helm template` has no cluster, so it is always empty.
    add("lookup", |_| Ok(map(BTreeMap::new())));
    for (alias, name) in aliases {
        if let Some(func) = f.get(*name).cloned() {
            f.insert(alias.to_string(), func);
        }
    }
    f
}

fn error_map(msg: &str) -> Value {
    let mut m = BTreeMap::new();
    m.insert(Arc::from("Error"), s(msg));
    map(m)
}

fn range_list(start: i64, stop: i64, step: i64) -> R {
    if step == 0 {
        return Ok(list(Vec::new()));
    }
    let mut out = Vec::new();
    let mut i = start;
    while (step > 0 && i < stop) || (step < 0 && i > stop) {
        if out.len() >= 1_000_000 {
            return Err(err("until: more than 1000000 items"));
        }
        out.push(Value::Int(i));
        i += step;
    }
    Ok(list(out))
}

fn range_inclusive(start: i64, end: i64, step: i64) -> Result<Vec<i64>, TemplateError> {
    let mut out = Vec::new();
    if step == 0 {
        return Ok(out);
    }
    let mut i = start;
    while (step > 0 && i <= end) || (step < 0 && i >= end) {
        if out.len() >= 1_000_000 {
            return Err(err("seq: more than 1000000 items"));
        }
        out.push(i);
        i += step;
    }
    Ok(out)
}

/// Go's reference-time layout (`2006-01-02 15:04:05`) rendered for `t`.
fn go_date(layout: &str, t: &jiff::Zoned) -> String {
    let table: [(&str, &str); 16] = [
        ("2006", "%Y"),
        ("January", "%B"),
        ("Jan", "%b"),
        ("Monday", "%A"),
        ("Mon", "%a"),
        ("MST", "%Z"),
        ("-07:00", "%:z"),
        ("-0700", "%z"),
        ("01", "%m"),
        ("02", "%d"),
        ("15", "%H"),
        ("03", "%I"),
        ("04", "%M"),
        ("05", "%S"),
        ("PM", "%p"),
        ("06", "%y"),
    ];
    let mut fmt = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        for (go, strf) in table {
            if let Some(r) = rest.strip_prefix(go) {
                fmt.push_str(strf);
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        if c == '%' {
            fmt.push_str("%%");
        } else {
            fmt.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    t.strftime(&fmt).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> SemVer {
        SemVer::parse(s).unwrap()
    }

    #[test]
    fn semver_constraints() {
        assert!(semver_matches(">=1.19-0", &v("v1.35.0")).unwrap());
        assert!(!semver_matches("<1.19", &v("v1.35.0")).unwrap());
        assert!(semver_matches("~1.2.3", &v("1.2.9")).unwrap());
        assert!(!semver_matches("~1.2.3", &v("1.3.0")).unwrap());
        assert!(semver_matches("^1.2", &v("1.9.0")).unwrap());
        assert!(semver_matches("1.2.x", &v("1.2.7")).unwrap());
        assert!(semver_matches(">= 1.0, < 2.0 || 3.x", &v("3.1.0")).unwrap());
        assert!(semver_matches(">=1.19-0", &v("v1.35.0-gke.1")).unwrap());
        assert!(!semver_matches(">1.2", &v("1.2.5")).unwrap());
        assert!(semver_matches("<=1.2", &v("1.2.5")).unwrap());
    }

    #[test]
    fn go_formats() {
        assert_eq!(go_string(&Value::Float(1_000_000.0)), "1e+06");
        assert_eq!(go_string(&Value::Float(80.0)), "80");
        assert_eq!(go_string(&Value::Float(1.5)), "1.5");
        assert_eq!(go_quote("a\"b\n"), "\"a\\\"b\\n\"");
        assert_eq!(to_json(&Value::String("<a&b>".into()), true, None), "\"\\u003ca\\u0026b\\u003e\"");
    }
}
