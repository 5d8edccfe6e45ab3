//! `helm package`, natively: a loaded [`Chart`] written as the `.tgz` Helm writes, and
//! its metadata as the JSON Helm puts in an OCI artifact's config blob.
//!
//! The archive is laid out as Helm lays it out: one top directory named after the
//! chart; `Chart.yaml` first (the metadata written again, keys sorted, comments gone,
//! as Helm does), then `Chart.lock`, `values.yaml` (as written), `values.schema.json`,
//! the templates, every other file, and the subcharts as directories under `charts/`
//! (a `.tgz` subchart is unpacked, as Helm does). Entries are regular files, mode
//! 0644, owner 0:0, all stamped with one time; no directory entries. `.helmignore` was
//! already applied by [`crate::load_dir`].

use crate::model::{Chart, ChartFile, ChartType, Dependency, ImportValue, Metadata};
use serde_json::{Map, Value as Json, json};
use std::io::Write;

/// What to change while packaging (`helm package --version/--app-version`).
#[derive(Clone, Debug, Default)]
pub struct PackageOptions {
    /// Replaces `version` in Chart.yaml; SemVer 2 (`1.0.7`, `1.0.0-rc.1+build.5`).
    pub version: Option<String>,
    /// Replaces `appVersion`.
    pub app_version: Option<String>,
    /// Every entry's modification time, seconds since the Unix epoch (Helm stamps the
    /// time of packaging).
    pub mtime: u64,
}

/// A packaged chart.
#[derive(Clone, Debug)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// The `.tgz`.
    pub archive: Vec<u8>,
    /// The chart's metadata as the JSON of an OCI Helm artifact's config blob.
    pub config: Vec<u8>,
}

impl Package {
    /// `name-version.tgz`, as `helm package` names the file.
    pub fn file_name(&self) -> String {
        format!("{}-{}.tgz", self.name, self.version)
    }
}

/// Why a chart cannot be packaged.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The version (from Chart.yaml or the override) is not SemVer 2.
    #[error("Chart.yaml: version `{version}` is not a semantic version (like 1.0.7 or 1.0.0-rc.1+build.5): {why}")]
    Version { version: String, why: String },
    /// The name cannot name a chart (Helm: letters, digits, `-`, `_`, `.`; no `/`).
    #[error("Chart.yaml: name `{0}` is not a chart name (letters, digits, `-`, `_` and `.`)")]
    Name(String),
    /// `dependencies:` lists a chart that `charts/` does not hold.
    #[error("Chart.yaml: dependency `{0}` is listed but missing in the charts/ directory")]
    MissingDependency(String),
    /// `values.schema.json` is not JSON (Helm refuses to package it).
    #[error("{chart}/values.schema.json is not valid JSON: {why}")]
    Schema { chart: String, why: String },
    /// The archive grew past `max` bytes (compressed).
    #[error("the packaged chart is larger than {max} bytes")]
    TooLarge { max: usize },
}

/// Packages `chart` (loaded with [`crate::load_dir`]); `options` may set the version
/// and app version. The archive is at most [`crate::MAX_ARCHIVE_BYTES`].
pub fn package(chart: &Chart, options: &PackageOptions) -> Result<Package, PackageError> {
    let mut metadata = chart.metadata.clone();
    if let Some(version) = &options.version {
        metadata.version = version.clone();
    }
    if let Some(app_version) = &options.app_version {
        metadata.app_version = Some(app_version.clone());
    }
    check_metadata(&metadata)?;
    let mut chart = chart.clone();
    chart.metadata = metadata;
    let mut tar = tar::Builder::new(Vec::new());
    tar.mode(tar::HeaderMode::Deterministic);
    write_chart(&mut tar, &chart, "", options.mtime)?;
    let tar = tar.into_inner().map_err(|_| PackageError::TooLarge { max: crate::MAX_ARCHIVE_BYTES })?;
    let mut gz = flate2::GzBuilder::new().comment("Helm").write(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).expect("writing to memory");
    let archive = gz.finish().expect("writing to memory");
    if archive.len() > crate::MAX_ARCHIVE_BYTES {
        return Err(PackageError::TooLarge { max: crate::MAX_ARCHIVE_BYTES });
    }
    let config = serde_json::to_vec(&metadata_json(&chart.metadata)).expect("JSON serialises");
    Ok(Package { name: chart.metadata.name.clone(), version: chart.metadata.version.clone(), archive, config })
}

/// Checks what `helm package` checks: a SemVer version, a usable name.
pub fn check_metadata(metadata: &Metadata) -> Result<(), PackageError> {
    let name = &metadata.name;
    if name.is_empty()
        || name == "."
        || name == ".."
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(PackageError::Name(name.clone()));
    }
    semver::Version::parse(&metadata.version)
        .map_err(|e| PackageError::Version { version: metadata.version.clone(), why: e.to_string() })?;
    Ok(())
}

fn file(f: &ChartFile) -> (&str, &[u8]) {
    (f.path.as_str(), f.data.as_slice())
}

fn write_chart(tar: &mut tar::Builder<Vec<u8>>, chart: &Chart, prefix: &str, mtime: u64) -> Result<(), PackageError> {
    let base = format!("{prefix}{}", chart.metadata.name);
    for dependency in &chart.metadata.dependencies {
        if !chart.subcharts.iter().any(|c| c.metadata.name == dependency.name) {
            return Err(PackageError::MissingDependency(dependency.name.clone()));
        }
    }
    let chart_yaml = chart_yaml(&chart.metadata);
    let mut entries: Vec<(&str, &[u8])> = vec![("Chart.yaml", chart_yaml.as_bytes())];
    entries.extend(chart.files.iter().filter(|f| f.path == "Chart.lock").map(file));
    entries.extend(chart.values_yaml.iter().map(file));
    for schema in chart.files.iter().filter(|f| f.path == "values.schema.json") {
        if let Err(e) = serde_json::from_slice::<Json>(&schema.data) {
            return Err(PackageError::Schema { chart: base.clone(), why: e.to_string() });
        }
        entries.push(file(schema));
    }
    entries.extend(chart.templates.iter().map(file));
    entries.extend(chart.files.iter().filter(|f| f.path != "Chart.lock" && f.path != "values.schema.json").map(file));
    for (path, data) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        header.set_size(data.len() as u64);
        tar.append_data(&mut header, format!("{base}/{path}"), data)
            .map_err(|_| PackageError::TooLarge { max: crate::MAX_ARCHIVE_BYTES })?;
        if tar.get_ref().len() > crate::MAX_CHART_BYTES {
            return Err(PackageError::TooLarge { max: crate::MAX_ARCHIVE_BYTES });
        }
    }
    for sub in &chart.subcharts {
        write_chart(tar, sub, &format!("{base}/charts/"), mtime)?;
    }
    Ok(())
}

/// The metadata as Helm's JSON: its field names and order, empty fields left out.
pub fn metadata_json(m: &Metadata) -> Json {
    let mut out = Map::new();
    let mut put = |key: &str, value: Json| {
        let empty = match &value {
            Json::String(s) => s.is_empty(),
            Json::Array(a) => a.is_empty(),
            Json::Object(o) => o.is_empty(),
            Json::Bool(b) => !b,
            Json::Null => true,
            _ => false,
        };
        if !empty {
            out.insert(key.to_owned(), value);
        }
    };
    let opt = |s: &Option<String>| Json::from(s.clone().unwrap_or_default());
    put("name", m.name.clone().into());
    put("home", opt(&m.home));
    put("sources", m.sources.clone().into());
    put("version", m.version.clone().into());
    put("description", opt(&m.description));
    put("keywords", m.keywords.clone().into());
    put(
        "maintainers",
        Json::Array(
            m.maintainers
                .iter()
                .map(|p| {
                    let mut o = Map::new();
                    for (k, v) in [("name", Some(p.name.clone())), ("email", p.email.clone()), ("url", p.url.clone())] {
                        if let Some(v) = v.filter(|v| !v.is_empty()) {
                            o.insert(k.into(), v.into());
                        }
                    }
                    Json::Object(o)
                })
                .collect(),
        ),
    );
    put("icon", opt(&m.icon));
    put("apiVersion", m.api_version.clone().into());
    put("appVersion", opt(&m.app_version));
    put("deprecated", m.deprecated.into());
    put("annotations", Json::Object(m.annotations.iter().map(|(k, v)| (k.clone(), Json::from(v.clone()))).collect()));
    put("kubeVersion", opt(&m.kube_version));
    put("dependencies", Json::Array(m.dependencies.iter().map(dependency_json).collect()));
    put(
        "type",
        match m.chart_type {
            ChartType::Application => "application",
            ChartType::Library => "library",
        }
        .into(),
    );
    Json::Object(out)
}

fn dependency_json(d: &Dependency) -> Json {
    let mut o = Map::new();
    o.insert("name".into(), d.name.clone().into());
    for (k, v) in [("version", &d.version), ("repository", &d.repository), ("condition", &d.condition)] {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            o.insert(k.into(), v.clone().into());
        }
    }
    if !d.tags.is_empty() {
        o.insert("tags".into(), d.tags.clone().into());
    }
    if !d.import_values.is_empty() {
        let values = d
            .import_values
            .iter()
            .map(|iv| match iv {
                ImportValue::Exports(name) => Json::from(name.clone()),
                ImportValue::Map { child, parent } => json!({"child": child, "parent": parent}),
            })
            .collect();
        o.insert("import-values".into(), Json::Array(values));
    }
    if let Some(alias) = d.alias.as_ref().filter(|a| !a.is_empty()) {
        o.insert("alias".into(), alias.clone().into());
    }
    Json::Object(o)
}

/// Chart.yaml as Helm writes it into a package: the metadata's fields as YAML, keys
/// sorted, block style.
pub fn chart_yaml(m: &Metadata) -> String {
    let mut out = String::new();
    emit(&mut out, &metadata_json(m), 0);
    out
}

/// Block-style YAML of the metadata's JSON (strings, booleans, lists and maps only);
/// keys sorted, strings quoted when YAML would read them as
/// something else.
fn emit(out: &mut String, value: &Json, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        Json::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for key in keys {
                let v = &map[key.as_str()];
                out.push_str(&pad);
                out.push_str(&scalar(key));
                out.push(':');
                emit_child(out, v, indent);
            }
        }
        Json::Array(items) => {
            for item in items {
                out.push_str(&pad);
                out.push('-');
                match item {
                    Json::Object(map) if !map.is_empty() => {
                        // The first key on the dash's line, the rest under it.
                        let mut first = String::new();
                        emit(&mut first, item, indent + 2);
                        out.push(' ');
                        out.push_str(first.trim_start());
                    }
                    other => emit_child(out, other, indent),
                }
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&scalar_json(other));
            out.push('\n');
        }
    }
}

fn emit_child(out: &mut String, v: &Json, indent: usize) {
    match v {
        Json::Object(m) if !m.is_empty() => {
            out.push('\n');
            emit(out, v, indent + 2);
        }
        Json::Array(a) if !a.is_empty() => {
            out.push('\n');
            emit(out, v, indent);
        }
        Json::Object(_) => out.push_str(" {}\n"),
        Json::Array(_) => out.push_str(" []\n"),
        other => {
            out.push(' ');
            out.push_str(&scalar_json(other));
            out.push('\n');
        }
    }
}

fn scalar_json(v: &Json) -> String {
    match v {
        Json::String(s) => scalar(s),
        other => other.to_string(),
    }
}

/// A string as a plain YAML scalar when that reads back as the same string, else
/// double-quoted (JSON's escapes are YAML's).
fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || " ._-/+()=@".contains(c))
        && !s.starts_with([' ', '-', '.', '+', '('])
        && !s.ends_with(' ')
        && s.parse::<f64>().is_err()
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "~" | ".inf" | ".nan"
        )
        && !s.starts_with("0x")
        && !s.starts_with("0o");
    if plain { s.to_owned() } else { Json::from(s).to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Maintainer;

    #[test]
    fn chart_yaml_sorts_keys_and_quotes_what_yaml_would_misread() {
        let m = Metadata {
            api_version: "v2".into(),
            name: "demo".into(),
            version: "0.3.0+b.7".into(),
            app_version: Some("1.16".into()),
            kube_version: Some(">=1.20.0".into()),
            maintainers: vec![
                Maintainer { name: "Ann".into(), email: Some("ann@example.com".into()), url: None },
                Maintainer { name: "Bob".into(), email: None, url: None },
            ],
            annotations: vec![("z".into(), "1".into()), ("a".into(), "yes".into())],
            ..Metadata::default()
        };
        assert_eq!(
            chart_yaml(&m),
            "annotations:\n  a: \"yes\"\n  z: \"1\"\napiVersion: v2\nappVersion: \"1.16\"\nkubeVersion: \">=1.20.0\"\n\
             maintainers:\n- email: ann@example.com\n  name: Ann\n- name: Bob\nname: demo\ntype: application\n\
             version: 0.3.0+b.7\n"
        );
        let config = metadata_json(&m);
        assert_eq!(config["name"], "demo");
        assert_eq!(config["maintainers"][1], json!({"name": "Bob"}));
        assert!(config.get("dependencies").is_none(), "empty fields are left out: {config}");
    }

    #[test]
    fn versions_must_be_semver_and_names_plain() {
        let mut m =
            Metadata { api_version: "v2".into(), name: "demo".into(), version: "1.0".into(), ..Metadata::default() };
        assert!(check_metadata(&m).unwrap_err().to_string().contains("`1.0` is not a semantic version"));
        m.version = "1.0.0-rc.1+b.5".into();
        check_metadata(&m).unwrap();
        m.name = "../x".into();
        assert!(matches!(check_metadata(&m), Err(PackageError::Name(_))));
    }
}
