//! A chart archive and the user's values → a [`ReleaseRequest`]: loaded and rendered by
//! `wharf-chart` exactly as `helm template` renders it, and the chart written into the
//! record the way Helm writes it (Chart.yaml fields by their Chart.yaml names, templates
//! and files as base64).

use serde_json::{Map, Value, json};
use wharf_chart::{Chart, Metadata, RenderOptions, Values};

use super::ops::ReleaseRequest;
use super::record::{ChartRecord, FileRecord, HookRecord};

/// What the render needs to know about the release and the cluster.
#[derive(Clone, Debug)]
pub struct Target<'a> {
    pub release: &'a str,
    pub namespace: &'a str,
    /// The revision this render becomes.
    pub revision: u32,
    pub is_upgrade: bool,
    /// The cluster's version (`.Capabilities.KubeVersion`), e.g. `v1.32.0`.
    pub kube_version: &'a str,
}

/// Loads the archive, renders it with `values` (Helm's `config`: merged over the chart's
/// `values.yaml`) and returns what an install or upgrade needs.
pub fn request(
    archive: &[u8],
    values: &Map<String, Value>,
    target: &Target<'_>,
    source: Option<String>,
) -> Result<ReleaseRequest, String> {
    let chart = wharf_chart::load_archive(archive).map_err(|e| format!("the chart archive: {e}"))?;
    // JSON is YAML: the values read as a values file would (`helm install -f`).
    let user = Values::from_yaml(&Value::Object(values.clone()).to_string()).map_err(|e| format!("values: {e}"))?;
    let opts = RenderOptions {
        release_name: target.release.to_owned(),
        namespace: target.namespace.to_owned(),
        revision: target.revision,
        is_upgrade: target.is_upgrade,
        kube_version: target.kube_version.to_owned(),
        api_versions: Vec::new(),
    };
    let rendered = wharf_chart::render(&chart, &user, &opts)
        .map_err(|e| format!("chart {}-{} does not render: {e}", chart.metadata.name, chart.metadata.version))?;
    let hooks = rendered
        .hooks
        .iter()
        .map(|h| HookRecord {
            name: h.manifest.name.clone(),
            kind: h.manifest.kind.clone(),
            path: h.manifest.path.clone(),
            manifest: h.manifest.content.clone(),
            events: h.events.iter().map(|e| e.as_str().to_owned()).collect(),
            last_run: Default::default(),
            weight: i64::from(h.weight),
            delete_policies: h.delete_policies.iter().map(|p| p.as_str().to_owned()).collect(),
            extra: Map::new(),
        })
        .collect();
    let mut crds = String::new();
    for c in &rendered.crds {
        crds.push_str("---\n");
        crds.push_str(&c.content);
        crds.push('\n');
    }
    Ok(ReleaseRequest {
        release: target.release.to_owned(),
        chart: record(&chart),
        config: rendered.config.to_json().as_object().cloned().unwrap_or_default(),
        manifest: rendered.manifest(),
        hooks,
        notes: rendered.notes.clone().unwrap_or_default(),
        crds,
        source,
    })
}

/// `Chart.yaml` as Helm's JSON names its fields, empty ones left out (Go's `omitempty`).
fn metadata(m: &Metadata) -> Map<String, Value> {
    let mut out = Map::new();
    let mut put = |k: &str, v: Value| {
        let empty = match &v {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            Value::Bool(b) => !b,
            Value::Number(_) => false,
        };
        if !empty {
            out.insert(k.to_owned(), v);
        }
    };
    put("name", json!(m.name));
    put("home", json!(m.home));
    put("sources", json!(m.sources));
    put("version", json!(m.version));
    put("description", json!(m.description));
    put("keywords", json!(m.keywords));
    let maintainers: Vec<Value> = m
        .maintainers
        .iter()
        .map(|x| {
            let mut o = Map::new();
            o.insert("name".into(), json!(x.name));
            if let Some(e) = &x.email {
                o.insert("email".into(), json!(e));
            }
            if let Some(u) = &x.url {
                o.insert("url".into(), json!(u));
            }
            Value::Object(o)
        })
        .collect();
    put("maintainers", Value::Array(maintainers));
    put("icon", json!(m.icon));
    put("apiVersion", json!(m.api_version));
    put("appVersion", json!(m.app_version));
    put("deprecated", json!(m.deprecated));
    let annotations: Map<String, Value> = m.annotations.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    put("annotations", Value::Object(annotations));
    put("kubeVersion", json!(m.kube_version));
    let deps: Vec<Value> = m
        .dependencies
        .iter()
        .map(|d| {
            let mut o = Map::new();
            o.insert("name".into(), json!(d.name));
            for (k, v) in [("version", &d.version), ("repository", &d.repository), ("condition", &d.condition)] {
                if let Some(v) = v {
                    o.insert(k.into(), json!(v));
                }
            }
            if !d.tags.is_empty() {
                o.insert("tags".into(), json!(d.tags));
            }
            if let Some(a) = &d.alias {
                o.insert("alias".into(), json!(a));
            }
            Value::Object(o)
        })
        .collect();
    put("dependencies", Value::Array(deps));
    put(
        "type",
        json!(match m.chart_type {
            wharf_chart::ChartType::Application => "application",
            wharf_chart::ChartType::Library => "library",
        }),
    );
    out
}

/// The chart as Helm's release record keeps it (the top chart; Helm keeps no subcharts).
pub fn record(chart: &Chart) -> ChartRecord {
    let templates = chart.templates.iter().map(|f| FileRecord::new(&f.path, &f.data)).collect();
    let schema = chart.files.iter().find(|f| f.path == "values.schema.json");
    let files: Vec<Value> = chart
        .files
        .iter()
        .filter(|f| f.path != "values.schema.json")
        .map(|f| serde_json::to_value(FileRecord::new(&f.path, &f.data)).unwrap_or_default())
        .collect();
    ChartRecord {
        metadata: metadata(&chart.metadata),
        lock: Value::Null,
        templates,
        values: chart.values.to_json().as_object().cloned().unwrap_or_default(),
        schema: schema.map_or(Value::Null, |f| json!(FileRecord::new("", &f.data).data)),
        files: if files.is_empty() { Value::Null } else { Value::Array(files) },
        extra: Map::new(),
    }
}
