//! Helm charts as OCI artifacts, stored the way `helm push` stores them: an OCI image
//! manifest whose config blob (media type [`HELM_CONFIG`]) is the chart's metadata as
//! JSON and whose one layer ([`HELM_CHART_CONTENT`]) is the packaged `.tgz`, tagged with
//! the chart's version (`+` written `_`). So `helm pull oci://…` fetches what Wharf
//! pushed, and [`OciCharts`] pulls what `helm push` pushed.

use crate::registry::{OCI_MANIFEST, RegistryAccess, RegistryClient, RegistryError, sha256_digest};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use wharf_core::reference::{check_repository, check_tag};
use wharf_executor::BoxFuture;
use wharf_executor::build::RegistryLogin;
use wharf_executor::chart::{
    ChartPushed, ChartRegistry, ChartRegistryError, ChartUpload, MAX_CHART_ARCHIVE_BYTES, PulledChart, version_tag,
};
use wharf_outbound::Policy;

/// The config media type of a Helm chart artifact.
pub const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
/// The media type of its one layer, the packaged chart.
pub const HELM_CHART_CONTENT: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
/// The layer media type Helm 3.0–3.7 wrote; Helm still pulls it.
const LEGACY_CHART_CONTENT: &str = "application/tar+gzip";

/// Largest config blob (the chart's metadata) pushed or read.
const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// Whether a manifest's config media type says the artifact is a Helm chart.
pub fn is_chart_config(media_type: &str) -> bool {
    media_type == HELM_CONFIG
}

/// The [`ChartRegistry`] over the OCI Distribution API. Every connection goes under
/// the server's outbound policy (as [`RegistryClient`] applies it).
pub struct OciCharts {
    policy: Policy,
}

impl OciCharts {
    pub fn new(policy: Policy) -> OciCharts {
        OciCharts { policy }
    }

    fn client(&self, login: &RegistryLogin) -> Result<RegistryClient, RegistryError> {
        let access = RegistryAccess {
            host: login.host.clone(),
            username: login.username.clone(),
            password: login.password.clone(),
            insecure: login.insecure,
        };
        RegistryClient::new(access, &self.policy)
    }

    /// Pushes a packaged chart; see [`ChartRegistry::push`].
    pub async fn push_chart(
        &self,
        login: &RegistryLogin,
        chart: &ChartUpload,
    ) -> Result<ChartPushed, ChartRegistryError> {
        let tag = checked_names(&chart.repository, &chart.version)?;
        if chart.archive.len() > MAX_CHART_ARCHIVE_BYTES {
            return Err(ChartRegistryError::NotAChart(format!(
                "the chart archive is {} bytes; at most {MAX_CHART_ARCHIVE_BYTES} are pushed",
                chart.archive.len()
            )));
        }
        if chart.config.len() > MAX_CONFIG_BYTES {
            return Err(failed(format!("the chart's metadata is larger than {MAX_CONFIG_BYTES} bytes")));
        }
        let metadata: Map<String, Value> = serde_json::from_slice(&chart.config)
            .map_err(|e| failed(format!("the chart's metadata is not a JSON object: {e}")))?;
        let client = self.client(login).map_err(|e| registry_failed(login, e))?;
        let repository = &chart.repository;
        let layer = sha256_digest(&chart.archive);
        let config = sha256_digest(&chart.config);
        let in_registry = |e| registry_failed(login, e);
        // An image and a chart of the same name and version would share the tag: the
        // push would silently replace the image a deployment may be running.
        match client.config_media_type(repository, &tag).await {
            Ok(Some(kind)) if is_chart_config(&kind) => {}
            Err(RegistryError::NotFound { .. }) => {}
            Ok(kind) => {
                return Err(failed(format!(
                    "`{repository}:{tag}` in registry `{}` already holds an image ({}), not a chart; \
                     pushing the chart there would replace it: publish charts to another workspace \
                     (e.g. `charts`) or under another name",
                    login.name,
                    kind.as_deref().unwrap_or("an index or a manifest without a config")
                )));
            }
            Err(e) => return Err(in_registry(e)),
        }
        client.push_blob_bytes(repository, &layer, &chart.archive).await.map_err(in_registry)?;
        client.push_blob_bytes(repository, &config, &chart.config).await.map_err(in_registry)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": HELM_CONFIG, "digest": config, "size": chart.config.len()},
            "layers": [{"mediaType": HELM_CHART_CONTENT, "digest": layer, "size": chart.archive.len()}],
            "annotations": annotations(&metadata),
        });
        let bytes = serde_json::to_vec(&manifest).expect("a JSON value serialises");
        let digest = client.put_manifest(repository, &tag, OCI_MANIFEST, &bytes).await.map_err(in_registry)?;
        Ok(ChartPushed { reference: format!("{}/{repository}:{tag}", login.host), digest })
    }

    /// Pulls a chart by version; see [`ChartRegistry::pull`].
    pub async fn pull_chart(
        &self,
        login: &RegistryLogin,
        repository: &str,
        version: &str,
    ) -> Result<PulledChart, ChartRegistryError> {
        let tag = checked_names(repository, version)?;
        let client = self.client(login).map_err(|e| registry_failed(login, e))?;
        let what = format!("the chart `{repository}` version {version} in registry `{}`", login.name);
        let (digest, _, bytes) = client.fetch_manifest(repository, &tag).await.map_err(|e| match e {
            RegistryError::NotFound { .. } => ChartRegistryError::NotFound(format!("{what} does not exist")),
            e => registry_failed(login, e),
        })?;
        let manifest: ChartManifest = serde_json::from_slice(&bytes).map_err(|_| {
            ChartRegistryError::NotAChart(format!("{what} is not a Helm chart (its manifest is no OCI image manifest)"))
        })?;
        let config_type = manifest.config.as_ref().map_or("", |c| c.media_type.as_str());
        if !is_chart_config(config_type) {
            return Err(ChartRegistryError::NotAChart(format!(
                "{what} is not a Helm chart: its config media type is `{config_type}`, not `{HELM_CONFIG}`"
            )));
        }
        let layers: Vec<&Layer> = manifest
            .layers
            .iter()
            .filter(|l| l.media_type == HELM_CHART_CONTENT || l.media_type == LEGACY_CHART_CONTENT)
            .collect();
        let [layer] = layers.as_slice() else {
            return Err(ChartRegistryError::NotAChart(format!(
                "{what} has {} chart content layers; a Helm chart has one (`{HELM_CHART_CONTENT}`)",
                layers.len()
            )));
        };
        if layer.size > MAX_CHART_ARCHIVE_BYTES as u64 {
            return Err(ChartRegistryError::NotAChart(format!(
                "{what} is {} bytes packaged; at most {MAX_CHART_ARCHIVE_BYTES} are pulled",
                layer.size
            )));
        }
        crate::reference::check_digest(&layer.digest)
            .map_err(|e| ChartRegistryError::NotAChart(format!("{what}: its chart layer's digest: {e}")))?;
        let archive =
            client.blob_at_most(repository, &layer.digest, MAX_CHART_ARCHIVE_BYTES).await.map_err(in_login(login))?;
        if sha256_digest(&archive) != layer.digest {
            return Err(failed(format!(
                "{what}: the archive the registry sent does not match its digest {}",
                layer.digest
            )));
        }
        Ok(PulledChart { archive, digest })
    }
}

impl ChartRegistry for OciCharts {
    fn push<'a>(
        &'a self,
        login: RegistryLogin,
        chart: ChartUpload,
    ) -> BoxFuture<'a, Result<ChartPushed, ChartRegistryError>> {
        Box::pin(async move { self.push_chart(&login, &chart).await })
    }

    fn pull<'a>(
        &'a self,
        login: RegistryLogin,
        repository: String,
        version: String,
    ) -> BoxFuture<'a, Result<PulledChart, ChartRegistryError>> {
        Box::pin(async move { self.pull_chart(&login, &repository, &version).await })
    }
}

#[derive(Deserialize)]
struct ChartManifest {
    #[serde(default)]
    config: Option<Layer>,
    #[serde(default)]
    layers: Vec<Layer>,
}

#[derive(Deserialize)]
struct Layer {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
}

/// The manifest annotations Helm writes: the OCI image annotations from the chart's
/// metadata, then the chart's own annotations where they do not clash.
fn annotations(metadata: &Map<String, Value>) -> Map<String, Value> {
    let text = |key: &str| metadata.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
    let mut out = Map::new();
    if let Some(Value::Object(own)) = metadata.get("annotations") {
        for (k, v) in own {
            if v.is_string() {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    let created = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    out.insert("org.opencontainers.image.created".into(), created.into());
    for (key, field) in [
        ("org.opencontainers.image.title", "name"),
        ("org.opencontainers.image.version", "version"),
        ("org.opencontainers.image.description", "description"),
        ("org.opencontainers.image.url", "home"),
    ] {
        if let Some(value) = text(field) {
            out.insert(key.into(), value.into());
        }
    }
    if let Some(source) =
        metadata.get("sources").and_then(Value::as_array).and_then(|s| s.first()).and_then(Value::as_str)
    {
        out.insert("org.opencontainers.image.source".into(), source.into());
    }
    let authors: Vec<String> = metadata
        .get("maintainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let name = m.get("name")?.as_str()?;
            Some(match m.get("email").and_then(Value::as_str) {
                Some(email) if !email.is_empty() => format!("{name} ({email})"),
                _ => name.to_owned(),
            })
        })
        .collect();
    if !authors.is_empty() {
        out.insert("org.opencontainers.image.authors".into(), authors.join(", ").into());
    }
    out
}

/// Checks `workspace/chart` and the version's tag; returns the tag.
fn checked_names(repository: &str, version: &str) -> Result<String, ChartRegistryError> {
    check_repository(repository).map_err(|e| failed(format!("the chart's repository: {e}")))?;
    if !repository.contains('/') {
        return Err(failed(format!("the chart's repository `{repository}` must be `workspace/chart`")));
    }
    let tag = version_tag(version);
    check_tag(&tag).map_err(|e| failed(format!("the chart version `{version}` cannot be a tag: {e}")))?;
    Ok(tag)
}

fn failed(message: String) -> ChartRegistryError {
    ChartRegistryError::Failed(message)
}

fn registry_failed(login: &RegistryLogin, e: RegistryError) -> ChartRegistryError {
    ChartRegistryError::Failed(format!("registry `{}`: {e}", login.name))
}

fn in_login(login: &RegistryLogin) -> impl Fn(RegistryError) -> ChartRegistryError + '_ {
    move |e| registry_failed(login, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_follow_the_chart_metadata() {
        let metadata: Map<String, Value> = serde_json::from_value(json!({
            "name": "demo", "version": "1.0.0", "description": "", "home": "https://x.example",
            "sources": ["https://git.example/a"], "maintainers": [{"name": "Ann", "email": "a@x"}, {"name": "Bob"}],
            "annotations": {"team": "ops", "org.opencontainers.image.title": "not this"}
        }))
        .unwrap();
        let a = annotations(&metadata);
        assert_eq!(a["org.opencontainers.image.title"], "demo");
        assert_eq!(a["org.opencontainers.image.version"], "1.0.0");
        assert_eq!(a["org.opencontainers.image.url"], "https://x.example");
        assert_eq!(a["org.opencontainers.image.source"], "https://git.example/a");
        assert_eq!(a["org.opencontainers.image.authors"], "Ann (a@x), Bob");
        assert_eq!(a["team"], "ops");
        assert!(!a.contains_key("org.opencontainers.image.description"));
    }

    #[test]
    fn names_are_checked_before_any_call() {
        assert_eq!(checked_names("ws/demo", "1.0.0+b.3").unwrap(), "1.0.0_b.3");
        assert!(checked_names("demo", "1.0.0").unwrap_err().to_string().contains("workspace/chart"));
        assert!(checked_names("ws/demo", "1.0.0 beta").unwrap_err().to_string().contains("cannot be a tag"));
        assert!(checked_names("ws/De mo", "1").is_err());
    }
}
