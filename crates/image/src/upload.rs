//! Pushing a `docker save` tarball to a registry workspace.
//!
//! The tarball (tar, or tar.gz: told apart by the gzip magic bytes) is read from
//! disk, never into memory: a gzip one is first inflated into a temp file, then one
//! pass over the tar records where every entry's bytes are and hashes them. Both
//! layouts Docker writes are understood: the legacy one (`manifest.json` with
//! `<id>/layer.tar` entries, Docker ≤ 24) and the OCI image layout (`index.json` and
//! `blobs/sha256/…`, Docker ≥ 25, also with a `manifest.json`).
//!
//! Everything is checked before the first byte goes out (a tarball that is not an
//! image pushes nothing); then all blobs go up (those the registry already has are
//! skipped), and the manifests last, so a tag never points at missing blobs. A tag
//! that exists is overwritten.

use crate::reference::{Reference, check_component, check_tag};
use crate::registry::{DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, RegistryClient, RegistryError, hex};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

/// Largest tarball accepted (the seed's limit).
pub const MAX_TARBALL_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Why a tarball cannot be uploaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// The file is not an image tarball `docker save` wrote; nothing was pushed.
    #[error("not an image tarball: {0}")]
    NotAnImage(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn not_image(why: impl Into<String>) -> UploadError {
    UploadError::NotAnImage(why.into())
}

/// One image pushed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Pushed {
    /// `host/workspace/name:tag`.
    pub image: String,
    pub digest: String,
    /// Bytes of blobs this image references (config and layers).
    pub size: u64,
}

/// Where an entry's bytes sit in the (uncompressed) tar file.
#[derive(Clone, Debug)]
struct Entry {
    offset: u64,
    size: u64,
    digest: String,
}

/// A blob to push: its bytes in the tar and what the manifest says of it.
#[derive(Clone, Debug)]
struct Blob {
    entry: Entry,
    media_type: String,
}

/// One image found in the tarball, ready to push.
#[derive(Debug)]
struct Image {
    /// `workspace/name` and tag in the target registry.
    repository: String,
    tag: String,
    config: Blob,
    layers: Vec<Blob>,
    /// The manifest as it goes up (built for the legacy layout, kept as it was for OCI).
    manifest: Vec<u8>,
    media_type: String,
}

/// Pushes every tagged image of the tarball at `path` to `workspace` in the
/// registry: `<host>/<workspace>/<name>:<tag>` for each of its `RepoTags` (the
/// workspace replaces whatever namespace the tag had).
pub async fn upload_tarball(client: &RegistryClient, path: &Path, workspace: &str) -> Result<Vec<Pushed>, UploadError> {
    check_component(workspace).map_err(|e| not_image_or_invalid(e.to_string()))?;
    let path = path.to_path_buf();
    let workspace = workspace.to_owned();
    let started = std::time::Instant::now();
    let (tar_path, _spool, images) = tokio::task::spawn_blocking(move || read_tarball(&path, &workspace))
        .await
        .map_err(|e| UploadError::Io { context: "reading the tarball".into(), source: std::io::Error::other(e) })??;
    let read = started.elapsed();
    // Blobs first (all images), manifests last.
    for image in &images {
        for blob in std::iter::once(&image.config).chain(&image.layers) {
            client
                .push_blob(&image.repository, &blob.entry.digest, &tar_path, blob.entry.offset, blob.entry.size)
                .await?;
        }
    }
    tracing::info!(?read, push = ?(started.elapsed() - read), images = images.len(), "tarball blobs pushed");
    let mut pushed = Vec::new();
    for image in &images {
        let digest = client.put_manifest(&image.repository, &image.tag, &image.media_type, &image.manifest).await?;
        pushed.push(Pushed {
            image: format!("{}/{}:{}", client.access().host, image.repository, image.tag),
            digest,
            size: image.config.entry.size + image.layers.iter().map(|l| l.entry.size).sum::<u64>(),
        });
    }
    Ok(pushed)
}

fn not_image_or_invalid(why: String) -> UploadError {
    UploadError::Registry(RegistryError::Invalid(why))
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> UploadError {
    let context = context.into();
    move |source| UploadError::Io { context, source }
}

/// Returns the plain tar's path (the input, or an inflated temp copy kept alive by
/// the returned handle) and the images to push.
fn read_tarball(
    path: &Path,
    workspace: &str,
) -> Result<(PathBuf, Option<tempfile::TempPath>, Vec<Image>), UploadError> {
    let mut file = std::fs::File::open(path).map_err(io(format!("opening {}", path.display())))?;
    let len = file.metadata().map_err(io("reading the tarball's size"))?.len();
    if len > MAX_TARBALL_BYTES {
        return Err(not_image(format!("it is {len} bytes; at most {MAX_TARBALL_BYTES} (2 GB)")));
    }
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(io("reading the tarball"))?;
    file.seek(SeekFrom::Start(0)).map_err(io("reading the tarball"))?;
    let (tar_path, spool) = if n == 2 && magic == [0x1f, 0x8b] {
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut out = tempfile::NamedTempFile::new_in(dir).map_err(io("creating a temp file to inflate into"))?;
        let mut decoder = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file));
        // An inflated tarball is bounded too: a small gzip must not fill the disk.
        let copied = std::io::copy(&mut (&mut decoder).take(MAX_TARBALL_BYTES * 4 + 1), &mut out)
            .map_err(|e| not_image(format!("it starts like gzip but does not inflate: {e}")))?;
        if copied > MAX_TARBALL_BYTES * 4 {
            return Err(not_image("it inflates to more than 8 GB"));
        }
        out.flush().map_err(io("writing the inflated tarball"))?;
        let temp = out.into_temp_path();
        (temp.to_path_buf(), Some(temp))
    } else {
        (path.to_path_buf(), None)
    };
    let entries = index_tar(&tar_path)?;
    let images = if entries.contains_key("manifest.json") {
        legacy_images(&tar_path, &entries, workspace)?
    } else if entries.contains_key("index.json") {
        oci_images(&tar_path, &entries, workspace)?
    } else {
        return Err(not_image(
            "it has neither a manifest.json nor an index.json; make it with `docker save NAME:TAG -o FILE.tar`",
        ));
    };
    if images.is_empty() {
        return Err(not_image("it holds no tagged image; save the image by NAME:TAG, not by id"));
    }
    Ok((tar_path, spool, images))
}

/// Every regular file of the tar by its normalised path, with its place and digest.
/// Symlinks (Docker dedups identical layers with them) point at their target's entry.
fn index_tar(path: &Path) -> Result<BTreeMap<String, Entry>, UploadError> {
    let file = std::fs::File::open(path).map_err(io(format!("opening {}", path.display())))?;
    let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(256 * 1024, file));
    let mut entries = BTreeMap::new();
    let mut links = Vec::new();
    let read_err = |e: std::io::Error| not_image(format!("it is not a readable tar archive: {e}"));
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let name = normalise(&entry.path().map_err(read_err)?)
            .ok_or_else(|| not_image("an entry's path leaves the archive (`..` or absolute)"))?;
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let offset = entry.raw_file_position();
                let size = entry.size();
                let mut hasher = HashWriter(Sha256::new());
                std::io::copy(&mut entry, &mut hasher).map_err(read_err)?;
                let digest = format!("sha256:{}", hex(&hasher.0.finalize()));
                entries.insert(name, Entry { offset, size, digest });
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                if let Some(target) = entry.link_name().map_err(read_err)? {
                    let target = if entry.header().entry_type() == tar::EntryType::Symlink {
                        Path::new(&name).parent().unwrap_or(Path::new("")).join(target)
                    } else {
                        target.to_path_buf()
                    };
                    if let Some(target) = normalise(&target) {
                        links.push((name, target));
                    }
                }
            }
            _ => {}
        }
    }
    for (name, target) in links {
        if let Some(entry) = entries.get(&target).cloned() {
            entries.insert(name, entry);
        }
    }
    Ok(entries)
}

/// `a/./b/../c` → `a/c`; `None` when it climbs out or is absolute.
fn normalise(path: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads an entry (a small JSON file) into memory.
fn read_entry(tar: &Path, entries: &BTreeMap<String, Entry>, name: &str) -> Result<Vec<u8>, UploadError> {
    let entry = entries.get(name).ok_or_else(|| not_image(format!("`{name}` is missing")))?;
    if entry.size > 16 * 1024 * 1024 {
        return Err(not_image(format!("`{name}` is {} bytes; too large for a JSON document", entry.size)));
    }
    let mut file = std::fs::File::open(tar).map_err(io("opening the tarball"))?;
    file.seek(SeekFrom::Start(entry.offset)).map_err(io("reading the tarball"))?;
    let mut out = vec![0; entry.size as usize];
    file.read_exact(&mut out).map_err(io("reading the tarball"))?;
    Ok(out)
}

/// `workspace/name` and tag for a `RepoTag` like `docker.io/library/busybox:1.35`.
fn target(repo_tag: &str, workspace: &str) -> Result<(String, String), UploadError> {
    let reference = Reference::parse(repo_tag).map_err(|e| not_image(format!("its tag {e}")))?;
    let tag = reference.tag.clone().unwrap_or_else(|| "latest".to_owned());
    check_tag(&tag).map_err(|e| not_image(e.to_string()))?;
    Ok((format!("{workspace}/{}", reference.name()), tag))
}

#[derive(Deserialize)]
struct LegacyManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// The legacy layout: layers are plain tars, pushed as they are under OCI media types.
fn legacy_images(tar: &Path, entries: &BTreeMap<String, Entry>, workspace: &str) -> Result<Vec<Image>, UploadError> {
    let manifests: Vec<LegacyManifest> = serde_json::from_slice(&read_entry(tar, entries, "manifest.json")?)
        .map_err(|e| not_image(format!("manifest.json is not a docker save manifest: {e}")))?;
    let mut images = Vec::new();
    for m in manifests {
        let config_name =
            normalise(Path::new(&m.config)).ok_or_else(|| not_image("a Config path leaves the archive"))?;
        let config =
            entries.get(&config_name).ok_or_else(|| not_image(format!("the config `{}` is missing", m.config)))?;
        // The config must be an image config; its diff_ids must match the layers.
        let config_json: serde_json::Value = serde_json::from_slice(&read_entry(tar, entries, &config_name)?)
            .map_err(|e| not_image(format!("the config `{}` is not JSON: {e}", m.config)))?;
        let diff_ids: Vec<&str> = config_json
            .pointer("/rootfs/diff_ids")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .ok_or_else(|| not_image(format!("the config `{}` has no rootfs.diff_ids", m.config)))?;
        let mut layers = Vec::new();
        for (i, layer) in m.layers.iter().enumerate() {
            let name = normalise(Path::new(layer)).ok_or_else(|| not_image("a layer path leaves the archive"))?;
            let entry = entries.get(&name).ok_or_else(|| not_image(format!("the layer `{layer}` is missing")))?;
            if diff_ids.get(i) != Some(&entry.digest.as_str()) {
                return Err(not_image(format!(
                    "the layer `{layer}` ({}) does not match the config's diff_id {}",
                    entry.digest,
                    diff_ids.get(i).unwrap_or(&"(none)")
                )));
            }
            layers.push(Blob { entry: entry.clone(), media_type: "application/vnd.oci.image.layer.v1.tar".into() });
        }
        let config = Blob { entry: config.clone(), media_type: "application/vnd.oci.image.config.v1+json".into() };
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(&config),
            "layers": layers.iter().map(descriptor).collect::<Vec<_>>(),
        });
        let manifest = serde_json::to_vec(&manifest).map_err(|e| not_image(e.to_string()))?;
        for repo_tag in m.repo_tags.unwrap_or_default() {
            let (repository, tag) = target(&repo_tag, workspace)?;
            images.push(Image {
                repository,
                tag,
                config: config.clone(),
                layers: layers.clone(),
                manifest: manifest.clone(),
                media_type: OCI_MANIFEST.into(),
            });
        }
    }
    Ok(images)
}

fn descriptor(blob: &Blob) -> serde_json::Value {
    serde_json::json!({ "mediaType": blob.media_type, "digest": blob.entry.digest, "size": blob.entry.size })
}

#[derive(Deserialize)]
struct OciDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct OciManifest {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<OciDescriptor>,
    #[serde(default)]
    layers: Vec<OciDescriptor>,
    #[serde(default)]
    manifests: Vec<OciDescriptor>,
}

/// The OCI layout: blobs and manifests go up as they are (their digests do not change).
fn oci_images(tar: &Path, entries: &BTreeMap<String, Entry>, workspace: &str) -> Result<Vec<Image>, UploadError> {
    let index: OciManifest = serde_json::from_slice(&read_entry(tar, entries, "index.json")?)
        .map_err(|e| not_image(format!("index.json is not an OCI index: {e}")))?;
    let blob_entry = |digest: &str| -> Result<Entry, UploadError> {
        crate::reference::check_digest(digest).map_err(|e| not_image(e.to_string()))?;
        let name = format!("blobs/{}", digest.replacen(':', "/", 1));
        let entry = entries.get(&name).ok_or_else(|| not_image(format!("the blob `{name}` is missing")))?;
        if entry.digest != digest {
            return Err(not_image(format!("the blob `{name}` does not match its digest")));
        }
        Ok(entry.clone())
    };
    let mut images = Vec::new();
    let mut queue: Vec<OciDescriptor> = index.manifests;
    while let Some(d) = queue.pop() {
        let entry = blob_entry(&d.digest)?;
        let bytes = read_entry(tar, entries, &format!("blobs/{}", d.digest.replacen(':', "/", 1)))?;
        let manifest: OciManifest = serde_json::from_slice(&bytes)
            .map_err(|e| not_image(format!("the manifest {} is not JSON: {e}", d.digest)))?;
        let media_type = manifest.media_type.clone().unwrap_or(d.media_type.clone());
        if media_type == OCI_INDEX || !manifest.manifests.is_empty() {
            // A nested index names its images with the same annotations.
            for mut child in manifest.manifests {
                for (k, v) in &d.annotations {
                    child.annotations.entry(k.clone()).or_insert_with(|| v.clone());
                }
                queue.push(child);
            }
            continue;
        }
        let Some(config) = manifest.config else {
            return Err(not_image(format!("the manifest {} has no config", d.digest)));
        };
        let name = d
            .annotations
            .get("io.containerd.image.name")
            .or_else(|| d.annotations.get("org.opencontainers.image.ref.name").filter(|n| n.contains([':', '/'])));
        let Some(name) = name else { continue };
        let (repository, tag) = target(name, workspace)?;
        let config = Blob { entry: blob_entry(&config.digest)?, media_type: config.media_type };
        let layers = manifest
            .layers
            .iter()
            .map(|l| Ok(Blob { entry: blob_entry(&l.digest)?, media_type: l.media_type.clone() }))
            .collect::<Result<Vec<_>, UploadError>>()?;
        let _ = entry;
        images.push(Image {
            repository,
            tag,
            config,
            layers,
            manifest: bytes,
            media_type: if media_type.is_empty() { DOCKER_MANIFEST.into() } else { media_type },
        });
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(files: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let mut out = tempfile::NamedTempFile::new().unwrap();
        {
            let mut builder = tar::Builder::new(&mut out);
            for (name, bytes) in files {
                let mut header = tar::Header::new_gnu();
                header.set_size(bytes.len() as u64);
                header.set_mode(0o644);
                header.set_cksum();
                builder.append_data(&mut header, name, *bytes).unwrap();
            }
            builder.finish().unwrap();
        }
        out
    }

    #[test]
    fn a_tarball_that_is_not_an_image_says_so() {
        let t = tarball(&[("hello.txt", b"hi")]);
        let err = read_tarball(t.path(), "devops").unwrap_err().to_string();
        assert!(err.contains("neither a manifest.json nor an index.json"), "{err}");

        let mut junk = tempfile::NamedTempFile::new().unwrap();
        junk.write_all(&[7u8; 3000]).unwrap();
        let err = read_tarball(junk.path(), "devops").unwrap_err().to_string();
        assert!(err.starts_with("not an image tarball"), "{err}");

        let mut gz = tempfile::NamedTempFile::new().unwrap();
        gz.write_all(&[0x1f, 0x8b, 1, 2, 3]).unwrap();
        let err = read_tarball(gz.path(), "devops").unwrap_err().to_string();
        assert!(err.contains("does not inflate"), "{err}");
    }

    #[test]
    fn layers_must_match_the_config() {
        let config = br#"{"rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}"#;
        let manifest = br#"[{"Config":"c.json","RepoTags":["x/app:1"],"Layers":["l/layer.tar"]}]"#;
        let t = tarball(&[("manifest.json", manifest), ("c.json", config), ("l/layer.tar", b"layer")]);
        let err = read_tarball(t.path(), "devops").unwrap_err().to_string();
        assert!(err.contains("does not match the config's diff_id"), "{err}");
    }

    #[test]
    fn repo_tags_land_in_the_workspace() {
        assert_eq!(target("busybox:1.35", "devops").unwrap(), ("devops/busybox".into(), "1.35".into()));
        assert_eq!(target("docker.io/library/nginx", "w").unwrap(), ("w/nginx".into(), "latest".into()));
        assert!(target("Bad/Name:1", "w").is_err());
        assert_eq!(normalise(Path::new("./a/../b/c")).as_deref(), Some("b/c"));
        assert_eq!(normalise(Path::new("../x")), None);
    }
}
