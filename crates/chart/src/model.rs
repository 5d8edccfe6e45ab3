//! The chart as Helm sees it: `Chart.yaml`'s metadata, the templates, the default
//! values, every other file (`.Files`, `crds/`) and the subcharts found in `charts/`.

use crate::values::Values;

/// One file of a chart, its path relative to the chart's root (`templates/service.yaml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartFile {
    pub path: String,
    pub data: Vec<u8>,
}

/// A loaded chart. Subcharts are charts of their own, found in `charts/` (as a
/// directory or a `.tgz`) and listed in [`Chart::subcharts`] in file-name order.
#[derive(Debug, Clone)]
pub struct Chart {
    pub metadata: Metadata,
    /// `templates/**`, sorted by path.
    pub templates: Vec<ChartFile>,
    /// `values.yaml` as parsed (empty when the chart has none).
    pub values: Values,
    /// `values.yaml` as written, kept for release records and packaging.
    pub values_yaml: Option<ChartFile>,
    /// Every other file (what `.Files` sees, `crds/` among them), sorted by path.
    /// `Chart.yaml`, `values.yaml`, `templates/` and `charts/` are not here.
    pub files: Vec<ChartFile>,
    pub subcharts: Vec<Chart>,
}

impl Chart {
    /// `name` from Chart.yaml.
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// The files under `crds/` (Helm installs them before anything else, never templated).
    pub fn crds(&self) -> impl Iterator<Item = &ChartFile> {
        self.files.iter().filter(|f| {
            f.path.starts_with("crds/")
                && (f.path.ends_with(".yaml") || f.path.ends_with(".yml") || f.path.ends_with(".json"))
        })
    }
}

/// `type:` in Chart.yaml. A library chart only provides `define`s; it is never rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChartType {
    #[default]
    Application,
    Library,
}

/// `Chart.yaml`. Field names follow Helm's; what templates see as `.Chart` is built
/// from this with Helm's Go field names (`.Chart.Name`, `.Chart.AppVersion`, …).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    pub api_version: String,
    pub name: String,
    pub version: String,
    pub app_version: Option<String>,
    pub description: Option<String>,
    pub kube_version: Option<String>,
    pub chart_type: ChartType,
    pub home: Option<String>,
    pub icon: Option<String>,
    pub sources: Vec<String>,
    pub keywords: Vec<String>,
    pub maintainers: Vec<Maintainer>,
    pub deprecated: bool,
    pub annotations: Vec<(String, String)>,
    pub dependencies: Vec<Dependency>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Maintainer {
    pub name: String,
    pub email: Option<String>,
    pub url: Option<String>,
}

/// An entry of `dependencies:` in Chart.yaml.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dependency {
    pub name: String,
    pub version: Option<String>,
    pub repository: Option<String>,
    /// Comma-separated values paths; the first that exists decides (`subchart.enabled`).
    pub condition: Option<String>,
    pub tags: Vec<String>,
    pub alias: Option<String>,
    /// `import-values`, each either `child: a, parent: b` or a plain name under `exports`.
    pub import_values: Vec<ImportValue>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ImportValue {
    /// `- data`: the child's `exports.data` merged into the parent's values.
    Exports(String),
    /// `- child: a.b, parent: c`.
    Map { child: String, parent: String },
}
