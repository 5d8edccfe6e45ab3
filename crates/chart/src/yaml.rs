//! YAML as Helm reads and writes it.
//!
//! Reading follows `sigs.k8s.io/yaml` (what Helm uses): go-yaml v2 resolves plain
//! scalars with YAML 1.1 rules (`yes`, `on`, `y` are booleans, `0777` is octal), then
//! the tree goes through JSON, so every number becomes a float64 and every mapping key
//! a string. Writing ([`to_yaml`]) is go-yaml v2's emitter after the same JSON round
//! trip: keys in its natural order, strings quoted only when they would read back as
//! something else, multi-line strings as `|` blocks, long lines folded at 80 columns.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use gotmpl::Value;
use granit_parser::{Event, Parser, ScalarStyle, Span};

/// How deep mappings and sequences may nest, and how many nodes a document may expand
/// to (aliases of aliases): a values file is client input.
const MAX_DEPTH: usize = 200;
const MAX_NODES: usize = 1_000_000;

/// A YAML text that could not be read, with the line it failed at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct YamlError {
    pub line: usize,
    pub message: String,
}

/// Every document of `text`, each as Helm would see it (`None` for an empty document).
pub fn documents(text: &str) -> Result<Vec<Option<Value>>, YamlError> {
    let mut b = Builder::default();
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|err| YamlError {
            line: err.marker().line().max(1),
            message: format!("{} (column {})", err.info(), err.marker().col() + 1),
        })?;
        b.event(event, &span)?;
    }
    Ok(b.docs)
}

/// The first document of `text` (`Nil` when empty), as Helm's `yaml.Unmarshal` reads it.
pub fn from_yaml(text: &str) -> Result<Value, YamlError> {
    Ok(documents(text)?.into_iter().next().flatten().unwrap_or(Value::Nil))
}

enum Open {
    Seq { anchor: usize, items: Vec<Value> },
    Map { anchor: usize, map: BTreeMap<Arc<str>, Value>, key: Option<(Arc<str>, bool)> },
}

#[derive(Default)]
struct Builder {
    docs: Vec<Option<Value>>,
    current: Option<Option<Value>>,
    stack: Vec<Open>,
    anchors: HashMap<usize, (Value, usize)>,
    nodes: usize,
}

fn line_of(span: &Span) -> usize {
    span.start.line().max(1)
}

fn size(v: &Value) -> usize {
    match v {
        Value::List(a) => 1 + a.iter().map(size).sum::<usize>(),
        Value::Map(m) => 1 + m.values().map(size).sum::<usize>(),
        _ => 1,
    }
}

impl Builder {
    fn fail(&self, line: usize, message: impl Into<String>) -> YamlError {
        YamlError { line, message: message.into() }
    }

    fn count(&mut self, n: usize, line: usize) -> Result<(), YamlError> {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            return Err(self.fail(line, format!("the document expands to more than {MAX_NODES} values")));
        }
        Ok(())
    }

    fn event(&mut self, event: Event<'_>, span: &Span) -> Result<(), YamlError> {
        let line = line_of(span);
        match event {
            Event::DocumentStart(..) => {
                self.current = Some(None);
                Ok(())
            }
            Event::DocumentEnd => {
                if let Some(value) = self.current.take() {
                    self.docs.push(value);
                }
                self.anchors.clear();
                Ok(())
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, line)?;
                let merge = style == ScalarStyle::Plain && text == "<<";
                let value = match tag.as_deref() {
                    Some(t) if t.is_yaml_core_schema_tag("str") => Value::String(text.as_ref().into()),
                    Some(t) if t.is_yaml_core_schema_tag("binary") => Value::String(text.as_ref().into()),
                    Some(_) => resolve(&text, ScalarStyle::Plain),
                    None => resolve(&text, style),
                };
                self.place(value, anchor, line, merge)
            }
            Event::SequenceStart(_, anchor, _) => self.open(Open::Seq { anchor, items: Vec::new() }, line),
            Event::MappingStart(_, anchor, _) => self.open(Open::Map { anchor, map: BTreeMap::new(), key: None }, line),
            Event::SequenceEnd | Event::MappingEnd => {
                let (value, anchor) = match self.stack.pop() {
                    Some(Open::Seq { anchor, items }) => (Value::List(items.into()), anchor),
                    Some(Open::Map { anchor, map, .. }) => (Value::Map(Arc::new(map)), anchor),
                    None => return Ok(()),
                };
                self.place(value, anchor, line, false)
            }
            Event::Alias(id) => {
                let (value, n) =
                    self.anchors.get(&id).cloned().ok_or_else(|| self.fail(line, "unknown anchor referenced"))?;
                self.count(n, line)?;
                self.place(value, 0, line, false)
            }
            _ => Ok(()),
        }
    }

    fn open(&mut self, open: Open, line: usize) -> Result<(), YamlError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.fail(line, format!("nested more than {MAX_DEPTH} levels deep")));
        }
        self.count(1, line)?;
        self.stack.push(open);
        Ok(())
    }

    fn place(&mut self, value: Value, anchor: usize, line: usize, merge_key: bool) -> Result<(), YamlError> {
        if anchor != 0 {
            let n = size(&value);
            self.anchors.insert(anchor, (value.clone(), n));
        }
        match self.stack.last_mut() {
            None => {
                if let Some(slot) = self.current.as_mut() {
                    *slot = (!matches!(value, Value::Nil)).then_some(value);
                }
                Ok(())
            }
            Some(Open::Seq { items, .. }) => {
                items.push(value);
                Ok(())
            }
            Some(Open::Map { map, key, .. }) => match key.take() {
                None => {
                    let k: Arc<str> = match &value {
                        Value::String(s) => s.clone(),
                        Value::Nil => "null".into(),
                        Value::Bool(b) => b.to_string().into(),
                        Value::Float(_) | Value::Int(_) => json_number(&value).into(),
                        _ => return Err(YamlError { line, message: "a mapping key must be a scalar".into() }),
                    };
                    *key = Some((k, merge_key));
                    Ok(())
                }
                Some((_, true)) => {
                    let sources: Vec<Value> = match value {
                        Value::List(items) => items.iter().cloned().collect(),
                        other => vec![other],
                    };
                    for source in sources {
                        if let Value::Map(m) = source {
                            for (k, v) in m.iter() {
                                map.entry(k.clone()).or_insert_with(|| v.clone());
                            }
                        }
                    }
                    Ok(())
                }
                Some((k, false)) => {
                    map.insert(k, value);
                    Ok(())
                }
            },
        }
    }
}

/// A scalar as go-yaml v2 resolves it, then as JSON carries it (numbers are float64).
fn resolve(text: &str, style: ScalarStyle) -> Value {
    if style != ScalarStyle::Plain {
        return Value::String(text.into());
    }
    match resolve_plain(text) {
        Resolved::Null => Value::Nil,
        Resolved::Bool(b) => Value::Bool(b),
        Resolved::Int(i) => Value::Float(i as f64),
        Resolved::Float(f) if f.is_finite() => Value::Float(f),
        // JSON has no infinities: sigs.k8s.io/yaml fails on them; keep the text.
        Resolved::Float(_) | Resolved::Str => Value::String(text.into()),
    }
}

#[derive(Debug, PartialEq)]
pub(crate) enum Resolved {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str,
}

/// go-yaml v2's `resolve` for a plain scalar.
pub(crate) fn resolve_plain(s: &str) -> Resolved {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Resolved::Bool(true);
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Resolved::Bool(false);
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Resolved::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        _ => {}
    }
    let first = s.as_bytes()[0];
    if !(first.is_ascii_digit() || first == b'-' || first == b'+' || first == b'.') {
        return Resolved::Str;
    }
    let plain = s.replace('_', "");
    if let Some(i) = parse_go_int(&plain) {
        return Resolved::Int(i);
    }
    if is_yaml_float(&plain)
        && let Ok(f) = plain.parse::<f64>()
    {
        return Resolved::Float(f);
    }
    if let Some(bin) = plain.strip_prefix("0b")
        && let Ok(i) = i64::from_str_radix(bin, 2)
    {
        return Resolved::Int(i);
    }
    if let Some(bin) = plain.strip_prefix("-0b")
        && let Ok(i) = i64::from_str_radix(bin, 2)
    {
        return Resolved::Int(-i);
    }
    Resolved::Str
}

/// Go's `strconv.ParseInt(s, 0, 64)`: decimal, `0x`, `0o`, `0b`, and a leading `0` for octal.
fn parse_go_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if body.is_empty() {
        return None;
    }
    let (radix, digits) = if let Some(d) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        (16, d)
    } else if let Some(d) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
        (8, d)
    } else if let Some(d) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
        (2, d)
    } else if body.len() > 1 && body.starts_with('0') {
        (8, &body[1..])
    } else {
        (10, body)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i128::from_str_radix(digits, radix).ok()?;
    let v = if neg { -magnitude } else { magnitude };
    i64::try_from(v).ok()
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`
fn is_yaml_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if int_digits == 0 && i == frac_start {
            return false;
        }
    } else if int_digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return false;
        }
    }
    i == b.len()
}

/// A number as Go's `encoding/json` writes it (float64: shortest form, exponent below
/// 1e-6 and from 1e21).
pub(crate) fn json_number(v: &Value) -> String {
    match v {
        Value::Int(i) => i.to_string(),
        Value::Uint(u) => u.to_string(),
        Value::Float(f) => json_float(*f),
        other => other.to_string(),
    }
}

pub(crate) fn json_float(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // Go's encoding/json: 'e' format with the exponent's padding removed ("1e-7", "1e+21").
        let s = format!("{f:e}");
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        return match exp.strip_prefix('-') {
            Some(d) => format!("{mant}e-{d}"),
            None => format!("{mant}e+{exp}"),
        };
    }
    if f.fract() == 0.0 && abs < 1e21 {
        return format!("{f:.0}");
    }
    format!("{f}")
}

pub use crate::yaml_emit::to_yaml;
