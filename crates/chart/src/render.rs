//! Rendering a chart as `helm template` does: values coalesced, templates of the chart
//! and its enabled subcharts executed (partials `_*.tpl` only define), `<no value>`
//! removed, each output split into YAML documents, hooks set apart by their
//! `helm.sh/hook` annotation, manifests sorted in Helm's install order.

use crate::model::Chart;
use crate::values::Values;

/// The most rendered output one render may produce (all templates together).
pub const MAX_OUTPUT_BYTES: usize = 20 * 1024 * 1024;

/// What a render knows about the release and the cluster (`.Release`, `.Capabilities`).
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// `.Release.Name`; `helm template` uses `release-name` when none is given.
    pub release_name: String,
    pub namespace: String,
    pub revision: u32,
    pub is_upgrade: bool,
    /// `.Capabilities.KubeVersion`, e.g. `v1.20.0` (`helm template` 4.1's default: v1.35.0).
    pub kube_version: String,
    /// Extra `.Capabilities.APIVersions` on top of the built-in ones.
    pub api_versions: Vec<String>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            release_name: "release-name".into(),
            namespace: "default".into(),
            revision: 1,
            is_upgrade: false,
            kube_version: "v1.35.0".into(),
            api_versions: Vec::new(),
        }
    }
}

/// One rendered Kubernetes object (one YAML document of a template's output).
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The template it came from, as Helm names it: `mychart/templates/service.yaml`
    /// (`mychart/charts/sub/templates/x.yaml` for a subchart).
    pub path: String,
    /// The document's text, without `---` and the `# Source:` line.
    pub content: String,
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

/// When a hook runs (`helm.sh/hook`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HookEvent {
    PreInstall,
    PostInstall,
    PreDelete,
    PostDelete,
    PreUpgrade,
    PostUpgrade,
    PreRollback,
    PostRollback,
    Test,
}

impl HookEvent {
    pub fn parse(s: &str) -> Option<HookEvent> {
        Some(match s {
            "pre-install" => HookEvent::PreInstall,
            "post-install" => HookEvent::PostInstall,
            "pre-delete" => HookEvent::PreDelete,
            "post-delete" => HookEvent::PostDelete,
            "pre-upgrade" => HookEvent::PreUpgrade,
            "post-upgrade" => HookEvent::PostUpgrade,
            "pre-rollback" => HookEvent::PreRollback,
            "post-rollback" => HookEvent::PostRollback,
            "test" | "test-success" => HookEvent::Test,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HookEvent::PreInstall => "pre-install",
            HookEvent::PostInstall => "post-install",
            HookEvent::PreDelete => "pre-delete",
            HookEvent::PostDelete => "post-delete",
            HookEvent::PreUpgrade => "pre-upgrade",
            HookEvent::PostUpgrade => "post-upgrade",
            HookEvent::PreRollback => "pre-rollback",
            HookEvent::PostRollback => "post-rollback",
            HookEvent::Test => "test",
        }
    }
}

/// `helm.sh/hook-delete-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookDeletePolicy {
    BeforeHookCreation,
    HookSucceeded,
    HookFailed,
}

impl HookDeletePolicy {
    pub fn parse(s: &str) -> Option<HookDeletePolicy> {
        Some(match s {
            "before-hook-creation" => HookDeletePolicy::BeforeHookCreation,
            "hook-succeeded" => HookDeletePolicy::HookSucceeded,
            "hook-failed" => HookDeletePolicy::HookFailed,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HookDeletePolicy::BeforeHookCreation => "before-hook-creation",
            HookDeletePolicy::HookSucceeded => "hook-succeeded",
            HookDeletePolicy::HookFailed => "hook-failed",
        }
    }
}

/// A rendered object carrying a `helm.sh/hook` annotation: not part of the release
/// manifest, run at its events (in weight order, then by name).
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    pub manifest: Manifest,
    pub events: Vec<HookEvent>,
    /// `helm.sh/hook-weight` (0 when absent or not a number).
    pub weight: i32,
    /// `helm.sh/hook-delete-policy` as written (Helm applies `before-hook-creation`
    /// when a hook has none).
    pub delete_policies: Vec<HookDeletePolicy>,
}

/// A file of a chart's `crds/` directory (never templated).
#[derive(Debug, Clone, PartialEq)]
pub struct Crd {
    /// `mychart/crds/crontab.yaml`
    pub path: String,
    pub content: String,
}

/// A render's result: what `helm template` prints and what a release record stores.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Non-hook objects in Helm's install order (by kind, then as rendered).
    pub manifests: Vec<Manifest>,
    /// Hook objects in the order Helm lists them.
    pub hooks: Vec<Hook>,
    /// The top chart's `templates/NOTES.txt`, rendered (Helm keeps only the top chart's).
    pub notes: Option<String>,
    /// The CRDs of the chart and its enabled subcharts.
    pub crds: Vec<Crd>,
    /// The values the user supplied (a release record's `config`).
    pub config: Values,
    /// The values the top chart's templates saw (chart defaults coalesced).
    pub values: Values,
}

/// What `helm template` prints besides the manifests.
#[derive(Debug, Clone, Default)]
pub struct TemplateOutput {
    /// `--include-crds`: print the CRDs first.
    pub include_crds: bool,
    /// `--show-only`: only these templates (`templates/x.yaml` or `mychart/templates/x.yaml`).
    pub show_only: Vec<String>,
    /// `--skip-tests`: leave out `test` hooks.
    pub skip_tests: bool,
}

impl Rendered {
    /// The release manifest as Helm stores it: every non-hook object as
    /// `---\n# Source: PATH\nCONTENT\n`.
    pub fn manifest(&self) -> String {
        let mut out = String::new();
        for m in &self.manifests {
            write_doc(&mut out, &m.path, &m.content);
        }
        out
    }

    /// What `helm template` prints on stdout.
    pub fn helm_template(&self, opts: &TemplateOutput) -> Result<String, RenderError> {
        let mut body = String::new();
        if opts.include_crds {
            for crd in &self.crds {
                write_doc(&mut body, &crd.path, &crd.content);
            }
        }
        body.push_str(&self.manifest());
        let mut out = String::new();
        out.push_str(body.trim());
        out.push('\n');
        for h in &self.hooks {
            if opts.skip_tests && h.events.contains(&HookEvent::Test) {
                continue;
            }
            write_doc(&mut out, &h.manifest.path, &h.manifest.content);
        }
        if opts.show_only.is_empty() {
            return Ok(out);
        }
        // As helm: split the whole output into documents, keep those whose source
        // (without the chart name) matches a --show-only pattern, in pattern order.
        let docs = crate::engine::split_manifests(&out);
        let mut shown = String::new();
        for pattern in &opts.show_only {
            let mut missing = true;
            for doc in &docs {
                let Some(source) = doc.lines().find_map(|l| l.strip_prefix("# Source: ")) else { continue };
                let Some((_, rest)) = source.split_once('/') else { continue };
                if crate::load::glob_match(pattern, rest) {
                    shown.push_str("---\n");
                    shown.push_str(doc);
                    shown.push('\n');
                    missing = false;
                }
            }
            if missing {
                return Err(RenderError::ShowOnly(pattern.clone()));
            }
        }
        Ok(shown)
    }
}

pub(crate) fn write_doc(out: &mut String, path: &str, content: &str) {
    out.push_str("---\n# Source: ");
    out.push_str(path);
    out.push('\n');
    out.push_str(content);
    out.push('\n');
}

/// Why a chart did not render. The messages are Helm's (`template: …:LINE:COL: …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A template does not parse or fails while executing (`required`, `fail`, a type
    /// error); the message names the template file and, where known, the line.
    #[error("{0}")]
    Template(String),
    /// A rendered document is not valid YAML (`YAML parse error on …`).
    #[error("YAML parse error on {path}: {message}")]
    Yaml { path: String, message: String },
    /// Values could not be read or merged.
    #[error("{0}")]
    Values(String),
    /// `--show-only` named a template that produced nothing.
    #[error("could not find template {0} in chart")]
    ShowOnly(String),
    /// The chart cannot be rendered (a library chart, an unsatisfied kubeVersion).
    #[error("{0}")]
    Chart(String),
    /// The output is larger than [`MAX_OUTPUT_BYTES`] (or the templates wrote more
    /// than a few times that on the way, in `include`s).
    #[error("rendered output is larger than {MAX_OUTPUT_BYTES} bytes")]
    TooLarge,
    /// The templates ran longer than the render may take (seconds).
    #[error("rendering took longer than {0} s; the chart's templates loop too long")]
    TimedOut(u64),
    /// The render could not run (its thread did not start or panicked).
    #[error("rendering failed: {0}")]
    Internal(String),
}

/// Renders `chart` with the user's `values` (see [`Values::from_user`]).
///
/// The templates run on a thread of their own with a large stack: `include` and
/// `tpl` nest executions, and the caller's thread (a tokio worker has 2 MiB) must not
/// overflow on a chart that nests deeply.
pub fn render(chart: &Chart, values: &Values, opts: &RenderOptions) -> Result<Rendered, RenderError> {
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("wharf-chart-render".into())
            .stack_size(RENDER_STACK_BYTES)
            .spawn_scoped(scope, || crate::engine::render(chart, values, opts))
            .map_err(|e| RenderError::Internal(format!("cannot start the render thread: {e}")))?;
        worker.join().map_err(|_| RenderError::Internal("the render panicked".into()))?
    })
}

/// The render thread's stack: room for `include`s nested as deep as a render allows.
const RENDER_STACK_BYTES: usize = 64 * 1024 * 1024;
