//! Container images: what Wharf does with them outside of running tasks.
//!
//! Start with [`reference`] (the OCI reference grammar every name and tag is checked
//! against, from `wharf-core`), then [`registry`] (a Distribution API client: catalog, tags with size and
//! creation time, delete, blob and manifest upload, Basic and Bearer auth),
//! [`upload`] (a `docker save` tarball pushed to a registry workspace), [`chart`] (Helm
//! charts as OCI artifacts, the executor's `ChartRegistry`) and [`build`]
//! (the Docker Engine [`wharf_executor::build::ImageBuilder`] for `image` tasks).

pub mod build;
pub mod chart;
pub mod registry;
pub mod upload;

pub use build::DockerBuilder;
pub use chart::OciCharts;
pub use reference::{Reference, ReferenceError};
pub use registry::{RegistryAccess, RegistryClient, RegistryError, TagInfo};
pub use upload::{Pushed, UploadError, upload_tarball};
/// The OCI reference grammar lives in `wharf-core` (the pipeline checks names with it).
pub use wharf_core::reference;
