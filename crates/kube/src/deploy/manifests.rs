//! A `deploy-yaml` file → checked Kubernetes objects, before anything talks to a cluster.
//!
//! The text is split into its YAML documents with granit-parser's event stream, so every
//! document keeps the line it starts on and every error can say "document 3 (line 40)".
//! Scalars resolve as `kubectl` reads them (sigs.k8s.io/yaml, i.e. YAML 1.1 via go-yaml):
//! plain `yes`/`no`/`on`/`off` are booleans, `0x1F` and `0777` are integers, quoted text is
//! always a string. Hostile input is bounded here: nesting depth, and the number of values
//! after aliases are expanded ("billion laughs").
//!
//! Empty documents (a trailing `---`, comments only) are skipped. A `kind: List` document
//! (what `kubectl get -o yaml` prints) is read as its `items`, each checked like a document.

use std::collections::HashMap;
use std::fmt;

use granit_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Value};

/// Nesting deeper than this is refused.
const MAX_DEPTH: usize = 100;
/// Values after alias expansion, for the whole file.
const MAX_VALUES: usize = 1_000_000;

/// Where an object came from in the file, for messages: `document 3 (line 40)`, or
/// `document 2, item 5 (line 12)` inside a `List`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// 1-based, counting every document of the file (empty ones too).
    pub document: usize,
    /// 1-based index in a `List`'s `items`.
    pub item: Option<usize>,
    /// 1-based line where the document (or item) starts.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.item {
            Some(item) => write!(f, "document {}, item {item} (line {})", self.document, self.line),
            None => write!(f, "document {} (line {})", self.document, self.line),
        }
    }
}

/// One object of the file, its identity checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub origin: Origin,
    /// `apps/v1`
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// `metadata.namespace` as written.
    pub namespace: Option<String>,
    /// The whole object as JSON.
    pub object: Value,
}

impl Manifest {
    /// `document 3 (Deployment web, line 40)`
    pub fn describe(&self) -> String {
        let o = &self.origin;
        match o.item {
            Some(item) => {
                format!("document {}, item {item} ({} {}, line {})", o.document, self.kind, self.name, o.line)
            }
            None => format!("document {} ({} {}, line {})", o.document, self.kind, self.name, o.line),
        }
    }

    /// `(group, version)` of `apiVersion`: `("", "v1")`, `("apps", "v1")`.
    pub fn group_version(&self) -> (&str, &str) {
        match self.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", self.api_version.as_str()),
        }
    }
}

/// Something wrong with the file, found before any write.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct ManifestError {
    pub origin: Origin,
    pub message: String,
}

/// Reads every document of `text`; the first problem found is the error. An error about a
/// document names its index and line; nothing is returned unless all of them are good.
pub fn parse(text: &str) -> Result<Vec<Manifest>, ManifestError> {
    let mut out = Vec::new();
    for (index, line, value) in documents(text)? {
        let origin = Origin { document: index, item: None, line };
        let Some(value) = value else { continue };
        if value.get("kind").and_then(Value::as_str) == Some("List")
            && value.get("apiVersion").and_then(Value::as_str) == Some("v1")
        {
            let items = value.get("items").and_then(Value::as_array).ok_or_else(|| ManifestError {
                origin,
                message: "a `kind: List` needs a list of objects under `items`".into(),
            })?;
            for (i, item) in items.iter().enumerate() {
                out.push(check(Origin { item: Some(i + 1), ..origin }, item.clone())?);
            }
        } else {
            out.push(check(origin, value)?);
        }
    }
    Ok(out)
}

fn check(origin: Origin, object: Value) -> Result<Manifest, ManifestError> {
    let fail = |message: String| ManifestError { origin, message };
    if !object.is_object() {
        return Err(fail(format!("expected a Kubernetes object (a mapping), found {}", describe(&object))));
    }
    let text = |v: Option<&Value>, field: &str| -> Result<String, ManifestError> {
        match v {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
            None | Some(Value::Null) => Err(fail(format!("`{field}` is missing"))),
            Some(Value::String(_)) => Err(fail(format!("`{field}` is empty"))),
            Some(other) => Err(fail(format!("`{field}` must be a string, found {}", describe(other)))),
        }
    };
    let api_version = text(object.get("apiVersion"), "apiVersion")?;
    let kind = text(object.get("kind"), "kind")?;
    let metadata = match object.get("metadata") {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => return Err(fail(format!("{kind}: `metadata` with a `name` is missing"))),
        Some(other) => return Err(fail(format!("{kind}: `metadata` must be a mapping, found {}", describe(other)))),
    };
    if metadata.get("generateName").is_some() && metadata.get("name").is_none() {
        return Err(fail(format!(
            "{kind}: `metadata.generateName` makes a new object on every apply; give it a `metadata.name`"
        )));
    }
    let name = text(metadata.get("name"), "metadata.name").map_err(|e| fail(format!("{kind}: {}", e.message)))?;
    let namespace = match metadata.get("namespace") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(fail(format!(
                "{kind} {name}: `metadata.namespace` must be a string, found {}",
                describe(other)
            )));
        }
    };
    if api_version.split('/').count() > 2 || api_version.starts_with('/') || api_version.ends_with('/') {
        return Err(fail(format!("{kind} {name}: `apiVersion: {api_version}` is not `group/version` or `version`")));
    }
    Ok(Manifest { origin, api_version, kind, name, namespace, object })
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Every document of the stream: its 1-based index, start line and value (`None`: empty).
fn documents(text: &str) -> Result<Vec<(usize, usize, Option<Value>)>, ManifestError> {
    let mut b = Builder::default();
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|err| {
            let m = err.marker();
            let start = b.open_doc.as_ref().map_or(m.line().max(1), |(l, _)| *l);
            ManifestError {
                origin: Origin { document: b.docs.len() + 1, item: None, line: start },
                message: format!("invalid YAML: {} (line {}, column {})", err.info(), m.line(), m.col() + 1),
            }
        })?;
        b.event(event, &span)?;
    }
    Ok(b.docs)
}

enum Open {
    Seq { anchor: usize, items: Vec<Value> },
    Map { anchor: usize, map: Map<String, Value>, key: Option<(String, bool)>, explicit: Vec<String> },
}

#[derive(Default)]
struct Builder {
    docs: Vec<(usize, usize, Option<Value>)>,
    /// The document being read: its start line and (once read) its value.
    open_doc: Option<(usize, Option<Value>)>,
    stack: Vec<Open>,
    anchors: HashMap<usize, (Value, usize)>,
    values: usize,
}

fn line_of(span: &Span) -> usize {
    span.start.line().max(1)
}

fn size(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(size).sum::<usize>(),
        Value::Object(m) => 1 + m.values().map(size).sum::<usize>(),
        _ => 1,
    }
}

impl Builder {
    fn origin(&self, line: usize) -> Origin {
        Origin { document: self.docs.len() + 1, item: None, line }
    }

    fn fail(&self, line: usize, message: impl Into<String>) -> ManifestError {
        let start = self.open_doc.as_ref().map_or(line, |(l, _)| *l);
        ManifestError { origin: self.origin(start), message: format!("{} (line {line})", message.into()) }
    }

    fn count(&mut self, n: usize, line: usize) -> Result<(), ManifestError> {
        self.values += n;
        if self.values > MAX_VALUES {
            return Err(self.fail(
                line,
                format!("the file expands to more than {MAX_VALUES} values (aliases of aliases?); refusing to read it"),
            ));
        }
        Ok(())
    }

    fn event(&mut self, event: Event<'_>, span: &Span) -> Result<(), ManifestError> {
        let line = line_of(span);
        match event {
            Event::DocumentStart(..) => {
                self.open_doc = Some((line, None));
                Ok(())
            }
            Event::DocumentEnd => {
                if let Some((start, value)) = self.open_doc.take() {
                    let index = self.docs.len() + 1;
                    self.docs.push((index, start, value));
                }
                self.anchors.clear();
                Ok(())
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, line)?;
                // A plain `<<` key is a merge key; remember how it was written.
                let merge = style == ScalarStyle::Plain && text == "<<";
                let value = match tag.as_deref() {
                    Some(t) if t.is_yaml_core_schema_tag("str") => Value::String(text.into_owned()),
                    Some(t) if t.is_yaml_core_schema() => {
                        resolve(&text, ScalarStyle::Plain).map_err(|m| self.fail(line, m))?
                    }
                    Some(t) => return Err(self.fail(line, format!("the YAML tag `{}` is not supported", t.original()))),
                    None => resolve(&text, style).map_err(|m| self.fail(line, m))?,
                };
                self.place(value, anchor, line, merge)
            }
            Event::SequenceStart(_, anchor, _) => self.open(Open::Seq { anchor, items: Vec::new() }, line),
            Event::MappingStart(_, anchor, _) => {
                self.open(Open::Map { anchor, map: Map::new(), key: None, explicit: Vec::new() }, line)
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (value, anchor) = match self.stack.pop() {
                    Some(Open::Seq { anchor, items }) => (Value::Array(items), anchor),
                    Some(Open::Map { anchor, map, .. }) => (Value::Object(map), anchor),
                    None => return Ok(()),
                };
                self.place(value, anchor, line, false)
            }
            Event::Alias(id) => {
                let (value, n) = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| self.fail(line, "an alias names an anchor not defined before it"))?;
                self.count(n, line)?;
                self.place(value, 0, line, false)
            }
            _ => Ok(()),
        }
    }

    fn open(&mut self, open: Open, line: usize) -> Result<(), ManifestError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.fail(line, format!("values are nested more than {MAX_DEPTH} levels deep")));
        }
        self.count(1, line)?;
        self.stack.push(open);
        Ok(())
    }

    fn place(&mut self, value: Value, anchor: usize, line: usize, merge_key: bool) -> Result<(), ManifestError> {
        if anchor != 0 {
            let n = size(&value);
            self.anchors.insert(anchor, (value.clone(), n));
        }
        let err = |b: &Self, m: String| b.fail(line, m);
        match self.stack.last_mut() {
            None => {
                if let Some((_, slot)) = self.open_doc.as_mut() {
                    *slot = (!value.is_null()).then_some(value);
                }
                Ok(())
            }
            Some(Open::Seq { items, .. }) => {
                items.push(value);
                Ok(())
            }
            Some(Open::Map { map, key, explicit, .. }) => match key.take() {
                None => {
                    let k = match value {
                        Value::String(s) => s,
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Null => "null".to_owned(),
                        other => {
                            let what = describe(&other);
                            return Err(err(self, format!("a mapping key must be a scalar, found {what}")));
                        }
                    };
                    *key = Some((k, merge_key));
                    Ok(())
                }
                Some((k, true)) => {
                    // `<<: *base` or `<<: [*a, *b]`: keys not written in this mapping come
                    // from the merged ones, earlier sources first.
                    let sources = match value {
                        Value::Object(m) => vec![m],
                        Value::Array(items) if items.iter().all(Value::is_object) => {
                            items.into_iter().filter_map(|v| v.as_object().cloned()).collect()
                        }
                        _ => {
                            return Err(err(
                                self,
                                format!("`{k}` (a merge key) needs a mapping or a list of mappings"),
                            ));
                        }
                    };
                    for source in sources {
                        for (mk, mv) in source {
                            if !explicit.contains(&mk) && !map.contains_key(&mk) {
                                map.insert(mk, mv);
                            }
                        }
                    }
                    Ok(())
                }
                Some((k, false)) => {
                    if explicit.contains(&k) {
                        return Err(err(self, format!("the key `{k}` is written twice in one mapping")));
                    }
                    explicit.push(k.clone());
                    map.insert(k, value);
                    Ok(())
                }
            },
        }
    }
}

/// A scalar as go-yaml (and so kubectl) resolves it: quoted and block scalars are strings;
/// plain ones may be null, a YAML 1.1 boolean, an integer or a float.
fn resolve(text: &str, style: ScalarStyle) -> Result<Value, String> {
    if style != ScalarStyle::Plain {
        return Ok(Value::String(text.to_owned()));
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Ok(Value::Bool(true));
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Ok(Value::Bool(false));
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF" | ".nan" | ".NaN"
        | ".NAN" => return Err(format!("`{text}` has no JSON form; quote it if it is text")),
        _ => {}
    }
    if let Some(n) = integer(text) {
        return Ok(Value::Number(n.into()));
    }
    if is_float(text) {
        let cleaned = text.replace('_', "");
        if let Some(n) = cleaned.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
            return Ok(Value::Number(n));
        }
    }
    Ok(Value::String(text.to_owned()))
}

fn integer(text: &str) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let digits = digits.replace('_', "");
    if digits.is_empty() {
        return None;
    }
    let magnitude = if let Some(hex) = digits.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(bin) = digits.strip_prefix("0b") {
        i64::from_str_radix(bin, 2).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()?
    } else if digits.len() > 1 && digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit()) {
        i64::from_str_radix(&digits[1..], 8).ok()?
    } else if digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()?
    } else {
        return None;
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`, go-yaml's float form.
fn is_float(text: &str) -> bool {
    let s = text.strip_prefix(['-', '+']).unwrap_or(text).replace('_', "");
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s.as_str(), None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => digits(frac),
        Some((int, frac)) => digits(int) && (frac.is_empty() || digits(frac)),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const WEB: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n";

    #[test]
    fn documents_keep_their_index_and_line() {
        let text = format!(
            "# leading comment\n---\n{WEB}---\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: games\n"
        );
        let all = parse(&text).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].origin, Origin { document: 1, item: None, line: 2 });
        assert_eq!(all[0].object["spec"]["replicas"], json!(2));
        assert_eq!(all[1].origin, Origin { document: 3, item: None, line: 10 });
        assert_eq!(all[1].namespace.as_deref(), Some("games"));
        assert_eq!(all[1].describe(), "document 3 (Service web, line 10)");
        assert_eq!(all[0].group_version(), ("apps", "v1"));
        assert_eq!(all[1].group_version(), ("", "v1"));
    }

    #[test]
    fn every_document_is_checked() {
        let missing_kind = format!("{WEB}---\napiVersion: v1\nmetadata:\n  name: x\n");
        let err = parse(&missing_kind).unwrap_err();
        assert_eq!(err.to_string(), "document 2 (line 7): `kind` is missing");
        let no_name = format!("{WEB}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{}}\n");
        assert_eq!(
            parse(&no_name).unwrap_err().to_string(),
            "document 2 (line 7): ConfigMap: `metadata.name` is missing"
        );
        let bad_yaml = format!("{WEB}---\napiVersion: v1\nkind: [unclosed\n");
        let err = parse(&bad_yaml).unwrap_err();
        assert_eq!(err.origin.document, 2, "{err}");
        assert!(err.message.starts_with("invalid YAML"), "{err}");
        let scalar = "just text\n";
        assert_eq!(
            parse(scalar).unwrap_err().to_string(),
            "document 1 (line 1): expected a Kubernetes object (a mapping), found a string"
        );
        let twice = "apiVersion: v1\nkind: ConfigMap\nkind: Secret\nmetadata: {name: a}\n";
        assert!(parse(twice).unwrap_err().to_string().contains("`kind` is written twice"), "{:?}", parse(twice));
    }

    #[test]
    fn scalars_resolve_as_kubectl_reads_them() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata:\n  q: \"yes\"\n  b: yes\n  o: off\n  i: 0x1F\n  oct: 0755\n  f: 1.5e3\n  s: 1.2.3\n  n: ~\n  big: 99999999999999999999\n";
        let m = &parse(text).unwrap()[0].object["data"];
        assert_eq!(m["q"], json!("yes"));
        assert_eq!(m["b"], json!(true));
        assert_eq!(m["o"], json!(false));
        assert_eq!(m["i"], json!(31));
        assert_eq!(m["oct"], json!(493));
        assert_eq!(m["f"], json!(1500.0));
        assert_eq!(m["s"], json!("1.2.3"));
        assert_eq!(m["n"], Value::Null);
        assert_eq!(m["big"], json!(1e20));
    }

    #[test]
    fn anchors_merges_and_lists() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- &base\n  apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: a}\n- <<: *base\n  metadata: {name: b}\n";
        let all = parse(text).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].name, "b");
        assert_eq!(all[1].kind, "ConfigMap");
        assert_eq!(all[1].origin.item, Some(2));
        assert_eq!(all[1].describe(), "document 1, item 2 (ConfigMap b, line 1)");
    }

    #[test]
    fn billion_laughs_stops() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("more than"), "{err}");
    }

    #[test]
    fn empty_file_has_no_objects() {
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse("---\n# nothing\n---\n").unwrap(), vec![]);
    }
}
