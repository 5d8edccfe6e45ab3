//! Model → YAML: the text the card editor shows and saves. [`to_yaml`] writes every
//! field of the model in the shape [`crate::parse`] reads, so `parse(to_yaml(p)) == p`
//! (tests/docs.rs checks it for every example of the reference). Defaults are left
//! out, durations are written as minutes (or `90s` when not whole minutes), and
//! strings are written plainly when that reads back as the same string, as a block
//! literal when they span lines, and double-quoted otherwise.

use serde_json::{Map, Value};
use wharf_core::duration::Duration;
use wharf_core::model::Pipeline;

/// The pipeline as YAML text, in the field order of DESIGN.md §8.
pub fn to_yaml(pipeline: &Pipeline) -> String {
    let Ok(Value::Object(mut root)) = serde_json::to_value(pipeline) else {
        unreachable!("a pipeline serialises to a JSON object")
    };
    if root.get("concurrency").and_then(Value::as_str) == Some("queue") {
        root.remove("concurrency");
    }
    duration_field(&mut root, "timeout");
    if let Some(Value::Array(triggers)) = root.get_mut("triggers") {
        triggers.iter_mut().filter_map(Value::as_object_mut).for_each(flatten_trigger);
    }
    for key in ["stages", "on_failure"] {
        if let Some(Value::Array(stages)) = root.get_mut(key) {
            stages.iter_mut().filter_map(Value::as_object_mut).for_each(tidy_stage);
        }
    }
    let mut out = String::new();
    for key in ordered_keys(&root) {
        if key == "variables" {
            // In the order written (a JSON map would sort them).
            out.push_str("variables:\n");
            for v in pipeline.variables.iter() {
                entry(&mut out, 2, v.name.as_str(), &Value::String(v.value.clone()));
            }
            continue;
        }
        entry(&mut out, 0, key, &root[key.as_str()]);
    }
    out
}

/// `name` and `type` first, the lists of stages and tasks last, the rest by name.
fn ordered_keys(map: &Map<String, Value>) -> Vec<&String> {
    let first = ["name", "type", "description", "project", "source", "variables", "parameters", "timeout"];
    let last = ["stages", "on_failure", "tasks"];
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort_by_key(|k| {
        let k = k.as_str();
        (last.contains(&k), first.iter().position(|o| *o == k).unwrap_or(first.len()))
    });
    keys
}

/// serde nests a trigger's fields under its kind (`{"daily": {"daily": "02:30"}}`);
/// the YAML has them side by side.
fn flatten_trigger(trigger: &mut Map<String, Value>) {
    let kinds = ["events", "every_minutes", "every_hours", "daily", "weekly", "monthly", "cron", "channel"];
    for kind in kinds {
        if let Some(Value::Object(fields)) = trigger.get(kind).cloned() {
            trigger.remove(kind);
            trigger.extend(fields);
        }
    }
}

fn tidy_stage(stage: &mut Map<String, Value>) {
    if stage.get("mode").and_then(Value::as_str) == Some("sequential") {
        stage.remove("mode");
    }
    if stage.get("on_error").and_then(Value::as_str) == Some("stop") {
        stage.remove("on_error");
    }
    duration_field(stage, "timeout");
    if let Some(Value::Object(wait)) = stage.get_mut("wait") {
        duration_field(wait, "timeout");
        if wait.get("for").and_then(Value::as_str) == Some("any") {
            wait.remove("for");
        }
    }
    if let Some(Value::Array(tasks)) = stage.get_mut("tasks") {
        for task in tasks.iter_mut().filter_map(Value::as_object_mut) {
            duration_field(task, "timeout");
            duration_field(task, "pause");
        }
    }
}

/// Milliseconds (the model's unit) → minutes, or the shortest exact text.
fn duration_field(map: &mut Map<String, Value>, key: &str) {
    if let Some(ms) = map.get(key).and_then(Value::as_u64) {
        let value = if ms % 60_000 == 0 {
            Value::from(ms / 60_000)
        } else {
            Value::String(Duration::from_millis(ms).to_string())
        };
        map.insert(key.into(), value);
    }
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// `key: value` at `depth` spaces, nested values below it.
fn entry(out: &mut String, depth: usize, key: &str, value: &Value) {
    indent(out, depth);
    out.push_str(&scalar_text(key));
    out.push(':');
    after_key(out, depth, value);
}

/// What follows `key:` or `- `: an inline scalar, or a nested block.
fn after_key(out: &mut String, depth: usize, value: &Value) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            for k in ordered_keys(map) {
                entry(out, depth + 2, k, &map[k.as_str()]);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            if items.iter().all(|v| !v.is_object() && !v.is_array() && !is_multiline(v)) {
                let parts: Vec<String> = items.iter().map(flow_scalar).collect();
                out.push_str(&format!(" [{}]\n", parts.join(", ")));
                return;
            }
            out.push('\n');
            for item in items {
                indent(out, depth + 2);
                out.push('-');
                list_item(out, depth + 2, item);
            }
        }
        Value::String(s) if s.contains('\n') && block_safe(s) => block_literal(out, depth, s),
        other => {
            out.push(' ');
            out.push_str(&flow_scalar(other));
            out.push('\n');
        }
    }
}

/// After `- `: a mapping's first entry on the dash's line, the others aligned with it.
fn list_item(out: &mut String, depth: usize, item: &Value) {
    match item {
        Value::Object(map) if !map.is_empty() => {
            for (i, k) in ordered_keys(map).into_iter().enumerate() {
                let v = &map[k.as_str()];
                if i == 0 {
                    out.push(' ');
                    out.push_str(&scalar_text(k));
                    out.push(':');
                    after_key(out, depth + 2, v);
                } else {
                    entry(out, depth + 2, k, v);
                }
            }
        }
        other => after_key(out, depth, other),
    }
}

fn is_multiline(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.contains('\n'))
}

/// A block literal keeps the text exactly when no line starts with a space on the
/// first line, there are no carriage returns or tabs at line starts, and no other
/// control characters.
fn block_safe(s: &str) -> bool {
    !s.starts_with([' ', '\t', '\n'])
        && !s.chars().any(|c| c.is_control() && c != '\n')
        && s.lines().all(|l| l.trim_end_matches(' ') == l)
}

fn block_literal(out: &mut String, depth: usize, s: &str) {
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    out.push_str(match trailing {
        0 => " |-\n",
        1 => " |\n",
        _ => " |+\n",
    });
    for line in s[..body.len() + trailing.saturating_sub(1)].split('\n') {
        if !line.is_empty() {
            indent(out, depth + 2);
            out.push_str(line);
        }
        out.push('\n');
    }
}

fn flow_scalar(value: &Value) -> String {
    match value {
        Value::String(s) => scalar_text(s),
        Value::Object(m) if m.is_empty() => "{}".into(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        // Nested collections inside a flow list do not occur in the model; JSON is YAML.
        other => other.to_string(),
    }
}

/// A string plainly when YAML reads it back as the same string, else double-quoted
/// (JSON's escapes are YAML's).
fn scalar_text(s: &str) -> String {
    if is_plain_safe(s) { s.to_owned() } else { Value::String(s.to_owned()).to_string() }
}

fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else { return false };
    if !(first.is_ascii_alphanumeric() || matches!(first, '_' | '.' | '/' | '$')) {
        return false;
    }
    if s.ends_with([' ', ':']) || s.contains(": ") || s.contains(" #") || s.contains(['\n', '\t', '\r']) {
        return false;
    }
    if s.chars().any(|c| {
        matches!(c, ',' | '[' | ']' | '{' | '}' | '"' | '\'' | '`' | '|' | '>' | '%' | '&' | '*' | '!' | '#' | '@')
    }) {
        // `${X}` braces are fine in block context, but flow lists would split them.
        let braces_only = s
            .chars()
            .all(|c| !matches!(c, ',' | '[' | ']' | '"' | '\'' | '`' | '|' | '>' | '%' | '&' | '*' | '!' | '#' | '@'));
        if !(braces_only && s.contains("${")) {
            return false;
        }
    }
    let lower = s.to_ascii_lowercase();
    let special = ["true", "false", "yes", "no", "on", "off", "y", "n", "null", "~", ".inf", ".nan", "-.inf", ".na"];
    if special.contains(&lower.as_str()) {
        return false;
    }
    // Anything that looks like a number (or a time like 02:30, read base 60 by YAML 1.1).
    if s.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | '_' | ':' | 'e' | 'E' | 'x' | 'o'))
        && s.chars().any(|c| c.is_ascii_digit())
    {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_strings_that_need_care() {
        let yaml = concat!(
            "name: p\n",
            "variables: {Z: '1', A: 'true', B: '02:30', C: 'a: b', D: '${A}-1', E: ' lead', F: '', G: \"x\\ty\"}\n",
            "stages:\n  - name: S\n    timeout: 90s\n    tasks:\n",
            "      - {name: t, type: script, script: \"echo 1\\n  echo 2\\n\\n\", env: {K1: '#x', L: '1.5', M: 'a, b'}}\n",
            "      - {name: u, type: script, script: \"no newline\\nat end\", timeout: 2}\n",
        );
        let p = crate::parse(yaml).unwrap();
        let text = super::to_yaml(&p);
        let back = crate::parse(&text).unwrap_or_else(|d| panic!("{}\n{text}", d.render("emitted", &text)));
        assert_eq!(back, p, "{text}");
        assert!(text.contains("timeout: 1m30s") && text.contains("timeout: 2\n"), "{text}");
    }
}
