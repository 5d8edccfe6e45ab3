//! Just enough of Kubernetes' protobuf encoding to read what kubectl sends as protobuf for
//! built-in types (`kubectl create namespace|configmap|secret`): the `k8s\0` envelope, an
//! object's `metadata` (name, generateName, namespace, labels, annotations), a ConfigMap's
//! `data`/`binaryData` and a Secret's `type`/`data`/`stringData`. Other kinds with content
//! are refused; varint fields (`immutable`) are dropped.

use base64::Engine as _;
use serde_json::{Map, Value, json};

const MAGIC: &[u8] = b"k8s\0";

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The fields of one message: (number, bytes) for length-delimited fields, others skipped.
fn fields(buf: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        match key & 7 {
            0 => {
                varint(buf, &mut pos)?;
            }
            1 => pos += 8,
            5 => pos += 4,
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len())?;
                out.push((key >> 3, &buf[pos..end]));
                pos = end;
            }
            _ => return None,
        }
    }
    (pos == buf.len()).then_some(out)
}

fn text(b: &[u8]) -> Option<String> {
    String::from_utf8(b.to_vec()).ok()
}

fn string_map(entries: &[&[u8]]) -> Option<Value> {
    map_of(entries, text)
}

/// A `map<string, bytes>`, values base64 as in JSON.
fn bytes_map(entries: &[&[u8]]) -> Option<Value> {
    map_of(entries, |b| Some(base64::engine::general_purpose::STANDARD.encode(b)))
}

fn map_of(entries: &[&[u8]], value: impl Fn(&[u8]) -> Option<String>) -> Option<Value> {
    let mut map = Map::new();
    for entry in entries {
        let f = fields(entry)?;
        let k = f.iter().find(|(n, _)| *n == 1).map_or(Some(String::new()), |(_, b)| text(b))?;
        let v = f.iter().find(|(n, _)| *n == 2).map_or(Some(String::new()), |(_, b)| value(b))?;
        map.insert(k, json!(v));
    }
    Some(Value::Object(map))
}

fn repeated<'a>(object: &[(u64, &'a [u8])], n: u64) -> Vec<&'a [u8]> {
    object.iter().filter(|(f, _)| *f == n).map(|(_, b)| *b).collect()
}

/// The object a protobuf body holds, as JSON, or why it cannot be read.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body.strip_prefix(MAGIC).ok_or("the protobuf body lacks the k8s envelope")?;
    let unknown = fields(rest).ok_or("the protobuf envelope is malformed")?;
    let type_meta = unknown.iter().find(|(n, _)| *n == 1).and_then(|(_, b)| fields(b)).unwrap_or_default();
    let api_version = type_meta.iter().find(|(n, _)| *n == 1).and_then(|(_, b)| text(b)).unwrap_or_default();
    let kind = type_meta.iter().find(|(n, _)| *n == 2).and_then(|(_, b)| text(b)).unwrap_or_default();
    let raw = unknown.iter().find(|(n, _)| *n == 2).map(|(_, b)| *b).unwrap_or_default();
    let object = fields(raw).ok_or("the protobuf object is malformed")?;
    let mut out = json!({"apiVersion": api_version, "kind": kind});
    // (field number, JSON name, values are bytes) per kind it reads.
    let content: &[(u64, &str, bool)] = match kind.as_str() {
        "Namespace" => &[],
        "ConfigMap" => &[(2, "data", false), (3, "binaryData", true)],
        "Secret" => &[(2, "data", true), (4, "stringData", false)],
        _ if object.iter().all(|(n, b)| *n == 1 || b.is_empty()) => &[],
        _ => {
            return Err(format!(
                "kube-fake reads protobuf bodies of Namespaces, ConfigMaps and Secrets only, not {kind}; send JSON (kubectl apply, kubectl create -f)"
            ));
        }
    };
    for (n, name, bytes) in content {
        let entries = repeated(&object, *n);
        if !entries.is_empty() {
            let map = if *bytes { bytes_map(&entries) } else { string_map(&entries) };
            out[*name] = map.ok_or_else(|| format!("the protobuf {kind} {name} is malformed"))?;
        }
    }
    if kind == "Secret"
        && let Some((_, t)) = object.iter().find(|(n, _)| *n == 3)
    {
        out["type"] = json!(text(t).ok_or("the Secret type is not UTF-8")?);
    }
    let mut meta = Map::new();
    if let Some((_, m)) = object.iter().find(|(n, _)| *n == 1) {
        let m = fields(m).ok_or("the protobuf metadata is malformed")?;
        for (n, key) in [(1, "name"), (2, "generateName"), (3, "namespace")] {
            if let Some((_, b)) = m.iter().find(|(f, _)| *f == n) {
                meta.insert(key.into(), json!(text(b).ok_or("metadata is not UTF-8")?));
            }
        }
        for (n, key) in [(11, "labels"), (12, "annotations")] {
            let entries: Vec<&[u8]> = m.iter().filter(|(f, _)| *f == n).map(|(_, b)| *b).collect();
            if !entries.is_empty() {
                meta.insert(key.into(), string_map(&entries).ok_or("metadata maps are malformed")?);
            }
        }
    }
    out["metadata"] = Value::Object(meta);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::try_from(n << 3 | 2).unwrap(), u8::try_from(bytes.len()).unwrap()];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn reads_a_namespace_as_kubectl_create_namespace_sends_it() {
        let type_meta = [field(1, b"v1"), field(2, b"Namespace")].concat();
        let label = [field(1, b"team"), field(2, b"a")].concat();
        let meta = [field(1, b"shop"), field(11, &label)].concat();
        let raw = [field(1, &meta), field(2, b""), field(3, b"")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        assert_eq!(
            decode(&body).unwrap(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "a"}}})
        );
    }

    #[test]
    fn refuses_other_kinds_with_content() {
        let type_meta = [field(1, b"v1"), field(2, b"Pod")].concat();
        let raw = [field(1, &field(1, b"x")), field(2, &field(1, b"k"))].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        assert!(decode(&body).unwrap_err().contains("not Pod"));
    }

    #[test]
    fn reads_secret_data_as_base64() {
        let type_meta = [field(1, b"v1"), field(2, b"Secret")].concat();
        let entry = [field(1, b"pw"), field(2, b"hunter2")].concat();
        let raw = [field(1, &field(1, b"s")), field(2, &entry), field(3, b"Opaque")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        let secret = decode(&body).unwrap();
        assert_eq!(secret["data"], json!({"pw": "aHVudGVyMg=="}));
        assert_eq!(secret["type"], "Opaque");
    }
}
