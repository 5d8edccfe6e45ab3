//! The seam for charts in a registry: `chart-publish` pushes a packaged chart,
//! `chart-deploy` pulls one by version. A chart is stored as an OCI Helm artifact (the
//! way `helm push` stores it), so `helm pull oci://…` fetches what Wharf pushed and
//! Wharf pulls what `helm push` pushed. The engine resolves the registry and packages
//! the chart; a [`ChartRegistry`] (the OCI one lives in `wharf-image`) only moves the
//! archive.

use crate::BoxFuture;
use crate::build::RegistryLogin;

/// Largest chart archive (`.tgz`) pushed or pulled (the most `wharf_chart` loads,
/// its `MAX_ARCHIVE_BYTES`). A pull stops reading beyond it.
pub const MAX_CHART_ARCHIVE_BYTES: usize = 10 * 1024 * 1024;

/// One chart to push, packaged.
#[derive(Clone, Debug)]
pub struct ChartUpload {
    /// `workspace/chart`: the registry workspace and the chart's name.
    pub repository: String,
    /// The chart's version (SemVer, as in its `Chart.yaml`); the tag is this version
    /// with `+` written `_`, as Helm tags it.
    pub version: String,
    /// The packaged chart (`helm package`'s `.tgz`), at most
    /// [`MAX_CHART_ARCHIVE_BYTES`].
    pub archive: Vec<u8>,
    /// The chart's metadata (its `Chart.yaml`) as the JSON Helm puts in the artifact's
    /// config blob (`wharf_chart::package::oci_config`).
    pub config: Vec<u8>,
}

/// What a push stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChartPushed {
    /// `host/workspace/chart:tag`.
    pub reference: String,
    /// The manifest digest the registry stored (`sha256:…`).
    pub digest: String,
}

/// A chart pulled by version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PulledChart {
    /// The packaged chart, its digest checked against the manifest.
    pub archive: Vec<u8>,
    /// The manifest digest (`sha256:…`).
    pub digest: String,
}

/// What went wrong with a chart in a registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChartRegistryError {
    /// The chart or that version of it is not in the registry.
    #[error("{0}")]
    NotFound(String),
    /// The tag exists but is no Helm chart (an image, another artifact), or its
    /// archive is larger than [`MAX_CHART_ARCHIVE_BYTES`].
    #[error("{0}")]
    NotAChart(String),
    /// Anything else: the registry unreachable, credentials refused, a bad name or
    /// version. The message names the registry and says why.
    #[error("{0}")]
    Failed(String),
}

/// Pushes and pulls charts as OCI Helm artifacts.
///
/// Contract: `push` uploads the archive and config blobs before the manifest, so a
/// failed push never leaves the tag pointing to a half-uploaded chart; pushing the
/// same version again moves the tag (as `helm push` does). `pull` reads at most
/// [`MAX_CHART_ARCHIVE_BYTES`] and checks the archive's digest. Calls may run
/// concurrently; neither logs credentials.
pub trait ChartRegistry: Send + Sync {
    fn push<'a>(
        &'a self,
        login: RegistryLogin,
        chart: ChartUpload,
    ) -> BoxFuture<'a, Result<ChartPushed, ChartRegistryError>>;

    /// The chart `repository` (`workspace/chart`) at `version`.
    fn pull<'a>(
        &'a self,
        login: RegistryLogin,
        repository: String,
        version: String,
    ) -> BoxFuture<'a, Result<PulledChart, ChartRegistryError>>;
}

/// The tag Helm gives a chart version: OCI tags cannot hold `+`, so `1.0.0+build.3`
/// is tagged `1.0.0_build.3`.
pub fn version_tag(version: &str) -> String {
    version.replace('+', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_metadata_is_tagged_with_an_underscore() {
        assert_eq!(version_tag("1.0.0+build.3"), "1.0.0_build.3");
        assert_eq!(version_tag("1.0.7"), "1.0.7");
    }
}
