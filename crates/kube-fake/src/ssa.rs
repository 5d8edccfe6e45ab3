//! Managed fields and server-side apply, simplified (see the crate docs for exactly how).
//!
//! A field set is the set of leaf paths of an object (lists are atomic leaves; an empty
//! map is a leaf). Metadata counts only under `labels` and `annotations`; `status` is left
//! out (it belongs to the status subresource). `fieldsV1` is written as real servers write
//! it (`{"f:spec":{"f:replicas":{}}}`) but without `"."` or `k:`/`v:` list-item keys.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

pub type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

/// The paths an object's writer owns.
pub fn owned_paths(object: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(map) = object.as_object() else { return out };
    for (key, value) in map {
        match key.as_str() {
            "apiVersion" | "kind" | "status" => {}
            "metadata" => {
                for sub in ["labels", "annotations"] {
                    if let Some(v) = value.get(sub) {
                        leaves(v, &mut vec!["metadata".into(), sub.into()], &mut out);
                    }
                }
            }
            _ => leaves(value, &mut vec![key.clone()], &mut out),
        }
    }
    out
}

fn leaves(value: &Value, prefix: &mut Path, out: &mut FieldSet) {
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (k, v) in map {
                prefix.push(k.clone());
                leaves(v, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for key in path {
            node = node
                .entry(format!("f:{key}"))
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("fieldsV1 nodes are maps");
        }
    }
    Value::Object(root)
}

pub fn from_fields_v1(value: &Value) -> FieldSet {
    fn walk(v: &Value, prefix: &mut Path, out: &mut FieldSet) {
        let children: Vec<_> = v
            .as_object()
            .map(|m| m.iter().filter_map(|(k, v)| k.strip_prefix("f:").map(|k| (k, v))).collect())
            .unwrap_or_default();
        if children.is_empty() {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
            return;
        }
        for (k, child) in children {
            prefix.push(k.to_owned());
            walk(child, prefix, out);
            prefix.pop();
        }
    }
    let mut out = FieldSet::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

pub fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(object, |v, k| v.get(k))
}

/// Removes a field, and the maps it leaves empty.
fn remove_path(object: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else { return };
    let Some(map) = object.as_object_mut() else { return };
    if rest.is_empty() {
        map.remove(first);
        return;
    }
    if let Some(child) = map.get_mut(first) {
        remove_path(child, rest);
        if child.as_object().is_some_and(Map::is_empty) {
            map.remove(first);
        }
    }
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Maps merge key by key; everything else (lists included) is replaced.
pub fn deep_merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => deep_merge(existing, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// RFC 7386 JSON merge patch: `null` deletes.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made a map above");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub fields: FieldSet,
}

pub fn read_entries(object: &Value) -> Vec<Entry> {
    let Some(list) = object.pointer("/metadata/managedFields").and_then(Value::as_array) else { return Vec::new() };
    list.iter()
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            Entry {
                manager: s("manager"),
                operation: s("operation"),
                api_version: s("apiVersion"),
                time: s("time"),
                fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
            }
        })
        .collect()
}

pub fn write_entries(object: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            json!({"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                   "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.fields)})
        })
        .collect();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("managedFields".into(), Value::Array(list));
    }
}

/// A field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// As the API server names it: `"alice"` for an applier, `"kubectl-edit" using apps/v1` for an updater.
    pub manager: String,
    /// `.spec.replicas`
    pub field: String,
}

pub fn dotted(path: &[String]) -> String {
    path.iter().map(|k| format!(".{k}")).collect()
}

/// The API server's words for apply conflicts (structured-merge-diff's `Conflicts.Error`).
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    let body = match conflicts {
        [one] => format!("conflict with {}: {}", one.manager, one.field),
        _ => {
            let mut managers: Vec<&str> = conflicts.iter().map(|c| c.manager.as_str()).collect();
            managers.sort_unstable();
            managers.dedup();
            let mut lines = Vec::new();
            for m in managers {
                lines.push(format!("conflicts with {m}:"));
                lines.extend(conflicts.iter().filter(|c| c.manager == m).map(|c| format!("- {}", c.field)));
            }
            lines.join("\n")
        }
    };
    let n = conflicts.len();
    format!("Apply failed with {n} conflict{}: {body}", if n == 1 { "" } else { "s" })
}

/// RFC 6902 JSON patch: add, remove, replace, move, copy, test.
pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    fn split(path: &str) -> Result<Vec<String>, String> {
        if path.is_empty() {
            return Ok(Vec::new());
        }
        let rest = path.strip_prefix('/').ok_or_else(|| format!("JSON pointer {path:?} does not start with /"))?;
        Ok(rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect())
    }
    fn parent<'a>(v: &'a mut Value, path: &[String]) -> Result<&'a mut Value, String> {
        path.iter().try_fold(v, |node, k| match node {
            Value::Object(m) => m.get_mut(k).ok_or_else(|| format!("no field {k:?}")),
            Value::Array(a) => {
                k.parse::<usize>().ok().and_then(|i| a.get_mut(i)).ok_or_else(|| format!("no list item {k:?}"))
            }
            _ => Err(format!("{k:?} is inside a value that is not a map or list")),
        })
    }
    fn remove(v: &mut Value, path: &[String]) -> Result<Value, String> {
        let (last, up) = path.split_last().ok_or("cannot remove the whole object")?;
        match parent(v, up)? {
            Value::Object(m) => m.remove(last).ok_or_else(|| format!("no field {last:?} to remove")),
            Value::Array(a) => match last.parse::<usize>() {
                Ok(i) if i < a.len() => Ok(a.remove(i)),
                _ => Err(format!("no list item {last:?} to remove")),
            },
            _ => Err("remove inside a value that is not a map or list".into()),
        }
    }
    fn add(v: &mut Value, path: &[String], value: Value) -> Result<(), String> {
        let Some((last, up)) = path.split_last() else {
            *v = value;
            return Ok(());
        };
        match parent(v, up)? {
            Value::Object(m) => {
                m.insert(last.clone(), value);
                Ok(())
            }
            Value::Array(a) if last == "-" => {
                a.push(value);
                Ok(())
            }
            Value::Array(a) => match last.parse::<usize>() {
                Ok(i) if i <= a.len() => {
                    a.insert(i, value);
                    Ok(())
                }
                _ => Err(format!("list index {last:?} is out of range")),
            },
            _ => Err("add inside a value that is not a map or list".into()),
        }
    }
    let list = ops.as_array().ok_or("a JSON patch is a list of operations")?;
    for op in list {
        let field = |k: &str| op.get(k).and_then(Value::as_str).ok_or_else(|| format!("operation {op} has no {k:?}"));
        let path = split(field("path")?)?;
        let value = || op.get("value").cloned().ok_or_else(|| format!("operation {op} has no \"value\""));
        match field("op")? {
            "add" => add(target, &path, value()?)?,
            "remove" => {
                remove(target, &path)?;
            }
            "replace" => {
                remove(target, &path)?;
                add(target, &path, value()?)?;
            }
            "move" => {
                let v = remove(target, &split(field("from")?)?)?;
                add(target, &path, v)?;
            }
            "copy" => {
                let v = value_at_pointer(target, &split(field("from")?)?)?;
                add(target, &path, v)?;
            }
            "test" => {
                if value_at_pointer(target, &path)? != value()? {
                    return Err(format!("test failed at {}", field("path")?));
                }
            }
            other => return Err(format!("unknown JSON patch operation {other:?}")),
        }
    }
    return Ok(());

    fn value_at_pointer(v: &Value, path: &[String]) -> Result<Value, String> {
        let pointer: String = path.iter().map(|k| format!("/{}", k.replace('~', "~0").replace('/', "~1"))).collect();
        v.pointer(&pointer).cloned().ok_or_else(|| format!("nothing at {pointer}"))
    }
}

/// Server-side apply of `applied` by `manager` onto an existing object: the merged object
/// with its managed fields, or the conflicts (unless `force`, which takes the fields over).
pub fn apply(
    current: &Value,
    applied: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let applied_set = owned_paths(applied);
    let mut entries = read_entries(current);
    let is_mine = |e: &Entry| e.manager == manager && e.operation == "Apply";
    let mut conflicts = Vec::new();
    for e in entries.iter().filter(|e| !is_mine(e)) {
        for p in &applied_set {
            let owned = e.fields.iter().any(|q| overlaps(p, q));
            if owned && value_at(current, p) != value_at(applied, p) {
                let manager = if e.operation == "Apply" {
                    format!("{:?}", e.manager)
                } else {
                    format!("{:?} using {}", e.manager, e.api_version)
                };
                conflicts.push(Conflict { manager, field: dotted(p) });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    if force {
        for e in entries.iter_mut().filter(|e| !is_mine(e)) {
            e.fields.retain(|q| {
                !applied_set.iter().any(|p| overlaps(p, q) && value_at(current, p) != value_at(applied, p))
            });
        }
    }
    let previous: FieldSet = entries.iter().filter(|e| is_mine(e)).flat_map(|e| e.fields.clone()).collect();
    let mut merged = current.clone();
    let mut body = applied.clone();
    if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in ["resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"] {
            meta.remove(k);
        }
    }
    if let Some(map) = body.as_object_mut() {
        map.remove("status");
    }
    deep_merge(&mut merged, &body);
    for p in previous.difference(&applied_set) {
        let others_own = entries.iter().filter(|e| !is_mine(e)).any(|e| e.fields.iter().any(|q| overlaps(p, q)));
        if !others_own {
            remove_path(&mut merged, p);
        }
    }
    entries.retain(|e| !is_mine(e));
    entries.push(Entry {
        manager: manager.to_owned(),
        operation: "Apply".into(),
        api_version: api_version.to_owned(),
        time: now.to_owned(),
        fields: applied_set,
    });
    write_entries(&mut merged, &entries);
    Ok(merged)
}

/// The bookkeeping of a non-apply write (create, replace, patch): `manager` takes the fields
/// whose value it changed, from whoever owned them; removed fields leave every set.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    operation: &str,
    api_version: &str,
    now: &str,
) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let new_set = owned_paths(new);
    let changed: FieldSet =
        new_set.iter().filter(|p| old.is_none_or(|o| value_at(o, p) != value_at(new, p))).cloned().collect();
    for e in &mut entries {
        e.fields.retain(|q| new_set.contains(q) && !changed.contains(q));
    }
    if !changed.is_empty() {
        match entries.iter_mut().find(|e| e.manager == manager && e.operation == operation) {
            Some(e) => {
                e.fields.extend(changed);
                e.time = now.to_owned();
            }
            None => entries.push(Entry {
                manager: manager.to_owned(),
                operation: operation.to_owned(),
                api_version: api_version.to_owned(),
                time: now.to_owned(),
                fields: changed,
            }),
        }
    }
    write_entries(new, &entries);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(replicas: u64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "labels": {"app": "web"}, "uid": "u"},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    fn managers(o: &Value) -> Vec<(String, String)> {
        read_entries(o).into_iter().map(|e| (e.manager, e.operation)).collect()
    }

    #[test]
    fn field_sets_round_trip_through_fields_v1() {
        let set = owned_paths(&deploy(1, "a"));
        let v1 = to_fields_v1(&set);
        assert_eq!(v1["f:spec"]["f:replicas"], json!({}));
        assert_eq!(v1["f:metadata"]["f:labels"]["f:app"], json!({}));
        assert!(v1["f:metadata"].get("f:uid").is_none());
        assert_eq!(from_fields_v1(&v1), set);
    }

    #[test]
    fn apply_records_the_manager_and_drops_fields_it_no_longer_applies() {
        let mut created = deploy(1, "a");
        record_update(None, &mut created, "kubectl", "Apply", "apps/v1", "t0");
        // Re-apply without the label: the manager owned it alone, so it goes.
        let mut next = deploy(2, "a");
        next["metadata"].as_object_mut().unwrap().remove("labels");
        let merged = apply(&created, &next, "kubectl", false, "apps/v1", "t1").unwrap();
        assert_eq!(merged["spec"]["replicas"], 2);
        assert!(merged["metadata"].get("labels").is_none(), "{merged}");
        assert_eq!(merged["metadata"]["uid"], "u");
        assert_eq!(managers(&merged), [("kubectl".into(), "Apply".into())]);
    }

    #[test]
    fn apply_conflicts_with_another_managers_different_value_unless_forced() {
        let mut created = deploy(1, "a");
        record_update(None, &mut created, "alice", "Apply", "apps/v1", "t0");
        let err = apply(&created, &deploy(3, "a"), "bob", false, "apps/v1", "t1").unwrap_err();
        assert_eq!(err, [Conflict { manager: "\"alice\"".into(), field: ".spec.replicas".into() }]);
        assert_eq!(conflict_message(&err), "Apply failed with 1 conflict: conflict with \"alice\": .spec.replicas");
        // Same values are shared, not conflicts.
        let shared = apply(&created, &deploy(1, "a"), "bob", false, "apps/v1", "t1").unwrap();
        assert_eq!(managers(&shared).len(), 2);
        let forced = apply(&created, &deploy(3, "a"), "bob", true, "apps/v1", "t1").unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        let alice = read_entries(&forced).into_iter().find(|e| e.manager == "alice").unwrap();
        assert!(!alice.fields.contains(&vec!["spec".to_string(), "replicas".to_string()]));
    }

    #[test]
    fn updates_take_over_the_fields_they_change() {
        let mut created = deploy(1, "a");
        record_update(None, &mut created, "alice", "Apply", "apps/v1", "t0");
        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(Some(&created), &mut scaled, "kubectl-scale", "Update", "apps/v1", "t1");
        let entries = read_entries(&scaled);
        let scale = entries.iter().find(|e| e.manager == "kubectl-scale").unwrap();
        assert_eq!(scale.fields.iter().map(|p| dotted(p)).collect::<Vec<_>>(), [".spec.replicas"]);
        let alice = entries.iter().find(|e| e.manager == "alice").unwrap();
        assert!(!alice.fields.iter().any(|p| dotted(p) == ".spec.replicas"));
        // alice applying her old value now conflicts with the scaler.
        let err = apply(&scaled, &deploy(1, "a"), "alice", false, "apps/v1", "t2").unwrap_err();
        assert_eq!(err[0].manager, "\"kubectl-scale\" using apps/v1");
    }

    #[test]
    fn json_patch_applies_rfc_6902_operations() {
        let mut v = json!({"a": {"b": 1}, "l": [1, 2]});
        let ops = json!([{"op": "add", "path": "/a/c", "value": 3}, {"op": "remove", "path": "/a/b"},
                         {"op": "replace", "path": "/l/0", "value": 9}, {"op": "add", "path": "/l/-", "value": 4},
                         {"op": "test", "path": "/a/c", "value": 3}, {"op": "copy", "from": "/a", "path": "/d"}]);
        json_patch(&mut v, &ops).unwrap();
        assert_eq!(v, json!({"a": {"c": 3}, "d": {"c": 3}, "l": [9, 2, 4]}));
        let e = json_patch(&mut v, &json!([{"op": "remove", "path": "/nothere"}])).unwrap_err();
        assert!(e.contains("nothere"), "{e}");
    }

    #[test]
    fn merge_patch_null_deletes() {
        let mut v = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge_patch(&mut v, &json!({"a": {"b": null, "d": 3}, "l": [3]}));
        assert_eq!(v, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }
}
