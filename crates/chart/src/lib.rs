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
//! functions and the sprig functions charts use ([`funcs`]). Values follow Go's types:
//! numbers from YAML files are float64 (`1000000` prints `1e+06`), numbers from `--set`
//! are int64, exactly as Helm. Pure: no network, no Kubernetes, no helm binary.

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

pub use gotmpl::Value;
pub use load::{LoadError, MAX_ARCHIVE_BYTES, MAX_CHART_BYTES, MAX_FILE_BYTES, load_archive, load_dir};
pub use model::{Chart, ChartFile, ChartType, Dependency, ImportValue, Maintainer, Metadata};
pub use render::{
    Crd, Hook, HookDeletePolicy, HookEvent, MAX_OUTPUT_BYTES, Manifest, RenderError, RenderOptions, Rendered,
    TemplateOutput, render,
};
pub use values::{Values, ValuesError};
pub use yaml::{YamlError, from_yaml, to_yaml};
mod yaml_emit;
