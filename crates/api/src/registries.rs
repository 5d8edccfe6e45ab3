//! `/registries`: OCI registries and their workspaces, their repositories and tags,
//! tag deletion and tarball upload. The password goes in, never out.

use serde::{Deserialize, Serialize};

/// A registry as answered, without its password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = RegistryInfo))]
pub struct Registry {
    pub id: i64,
    pub name: String,
    /// `host[:port]`, as image references name the registry.
    pub host: String,
    pub username: Option<String>,
    /// Whether a password is set.
    pub has_password: bool,
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
    /// Registered workspaces, sorted.
    pub workspaces: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Its base URL (`https://host`, or `http://` when insecure).
    pub url: String,
}

/// `GET /registries`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Registries {
    pub items: Vec<Registry>,
    pub total: usize,
    /// The registry `image` tasks push to when they name none.
    pub default: Option<String>,
}

/// `POST /registries`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = Registry))]
#[serde(deny_unknown_fields)]
pub struct NewRegistry {
    #[serde(default)]
    pub name: String,
    /// `host[:port]`, or with `http://` (needs `insecure`) or `https://`.
    #[serde(default)]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(write_only))]
    pub password: Option<String>,
    /// Plain HTTP (a local registry).
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub workspaces: Vec<String>,
}

/// `POST /registries/{name}/workspaces`: a repository namespace such as `devops`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = Workspace))]
#[serde(deny_unknown_fields)]
pub struct NewWorkspace {
    #[serde(default)]
    pub name: String,
}

/// What a repository or tag holds, told by its manifest's config media type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Artifact {
    /// A container image (Docker or OCI image config, or a multi-platform index).
    #[default]
    Image,
    /// A Helm chart (`application/vnd.cncf.helm.config.v1+json`), as `helm push` and
    /// `chart-publish` store it.
    Chart,
    /// Another OCI artifact.
    Other,
}

/// One repository of a registry's catalog.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImageRepository {
    /// `workspace/image`.
    pub name: String,
    pub workspace: String,
    /// The image's (or chart's) name.
    pub image: String,
    /// What its last tag by name holds (a repository without tags counts as an image).
    #[serde(default)]
    pub artifact: Artifact,
}

/// `GET /registries/{name}/repositories/{workspace}/{image}/tags`, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tags {
    /// `workspace/image`.
    pub repository: String,
    pub items: Vec<Tag>,
    pub total: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tag {
    pub tag: String,
    /// The manifest (or index) digest the tag points to.
    pub digest: String,
    pub media_type: String,
    /// Config plus layers, compressed as stored, in bytes.
    pub size: u64,
    /// The image config's `created`, RFC 3339, when it has one.
    pub created: Option<String>,
    /// `host/workspace/image:tag`.
    pub image: String,
    #[serde(default)]
    pub artifact: Artifact,
}

/// `DELETE …/tags/{tag}`: the registry deletes the manifest, so other tags of the
/// same digest go with it, and are named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TagDeleted {
    /// `host/workspace/image:tag`.
    pub deleted: String,
    pub digest: String,
    pub also_removed: Vec<String>,
}

/// One image pushed by `POST /registries/{name}/upload`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pushed {
    /// `host/workspace/name:tag`.
    pub image: String,
    pub digest: String,
    /// Bytes of blobs this image references (config and layers).
    pub size: u64,
}
