//! Helm charts, natively: a chart loaded from a directory or a `.tgz`, values merged in
//! Helm's order, and templates rendered to exactly the bytes `helm template` prints.
//!
//! Start reading at [`render`]: it takes a [`Chart`] (from [`load_dir`] or
//! [`load_archive`]), the user's [`Values`] (`-f` files and `--set` flags, see
//! [`Values::from_user`]) and [`RenderOptions`] (release, namespace, capabilities), and
//! returns [`Rendered`]: the manifests in Helm's install order, the hooks, the notes,
//! the CRDs, and the values a Helm release record stores. [`Rendered::helm_template`]
//! prints it the way `helm template` does.
//!
//! The templates run on the `gotmpl` crate (Go's `text/template`), with Helm's own
//! functions and the sprig functions charts use (`funcs.rs`, `gofmt.rs`); `engine.rs`
//! rewrites each parsed template where gotmpl and Go differ (methods such as
//! `.Files.Get`, strict field walks, `$_ := set $d …`, call sites for `required`).
//! Values follow Go's types: numbers from YAML files are float64 (`1000000` prints
//! `1e+06`), numbers from `--set` are int64, exactly as Helm. YAML is read and written
//! as go-yaml v2 does (`yaml.rs`, `yaml_emit.rs`). Pure: no network, no Kubernetes, no
//! helm binary; every render is bounded in size, time and stack.

mod engine;
mod funcs;
mod gofmt;
mod load;
mod model;
pub mod package;
mod render;
mod sort;
mod strvals;
mod values;
mod yaml;
mod yaml_emit;

pub use gotmpl::Value;
pub use load::{LoadError, MAX_ARCHIVE_BYTES, MAX_CHART_BYTES, MAX_FILE_BYTES, load_archive, load_dir};
pub use model::{Chart, ChartFile, ChartType, Dependency, ImportValue, Maintainer, Metadata};
pub use render::{
    Crd, Hook, HookDeletePolicy, HookEvent, MAX_OUTPUT_BYTES, Manifest, RenderError, RenderOptions, Rendered,
    TemplateOutput, render,
};
pub use values::{Values, ValuesError};
pub use yaml::{YamlError, from_yaml, to_yaml};
