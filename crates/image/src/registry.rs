//! A client for the OCI Distribution API: catalog, tags, manifests (Docker schema 2,
//! OCI, manifest lists and indexes), blob upload, tag deletion; Basic auth and the
//! Bearer token challenge (`WWW-Authenticate: Bearer realm=…,service=…,scope=…`).
//!
//! Every error names the registry and says what it answered (the status, and the
//! Distribution API's error codes), so a person can tell a wrong password from a
//! registry that is down; the registry's own text goes to the server log only.
//!
//! Registries are registered by admins, and the client calls the registry where the
//! admin said (loopback included); any other address the registry sends it to (a
//! token realm, a redirect, an upload `Location`) is under the outbound policy
//! ([`wharf_outbound::Policy`]).

use crate::reference::{check_digest, check_host, check_repository, check_tag};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use wharf_outbound::Policy;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or config blob read into memory.
const MAX_JSON_BYTES: usize = 4 * 1024 * 1024;

/// Where a registry is and how to log in. The password is a secret: `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAccess {
    /// `host[:port]`, as image references name the registry.
    pub host: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Plain HTTP (local registries); HTTPS otherwise.
    pub insecure: bool,
}

impl fmt::Debug for RegistryAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAccess")
            .field("host", &self.host)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl RegistryAccess {
    /// Reads a registry URL as a person writes it (`127.0.0.1:5055`,
    /// `http://127.0.0.1:5055`, `https://hub.example.com/`) into its host. A scheme,
    /// when given, must agree with `insecure` (`http://` needs `insecure: true`).
    pub fn from_url(url: &str, insecure: bool) -> Result<String, String> {
        let url = url.trim();
        let (scheme, rest) = match url.split_once("://") {
            Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
            None => (None, url),
        };
        match scheme.as_deref() {
            None => {}
            Some("http") if !insecure => {
                return Err(format!("`{url}` is plain HTTP; set `insecure: true` to use a registry without TLS"));
            }
            Some("https") if insecure => {
                return Err(format!("`{url}` says https but `insecure: true` asks for plain HTTP; drop one of them"));
            }
            Some("http" | "https") => {}
            Some(other) => return Err(format!("`{url}`: the scheme `{other}` is not http or https")),
        }
        let host = rest.trim_end_matches('/');
        if host.contains('/') {
            return Err(format!("`{url}`: give the registry's address only (host and port), without a path"));
        }
        check_host(host).map_err(|e| e.to_string())?;
        Ok(host.to_owned())
    }

    pub fn base_url(&self) -> String {
        format!("{}://{}", if self.insecure { "http" } else { "https" }, self.host)
    }
}

/// What went wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry could not be reached at all (refused, DNS, TLS, timeout).
    #[error("registry {registry} is unreachable: {message}")]
    Unreachable { registry: String, message: String },
    /// The credentials were refused (or none were given and some are needed).
    #[error("registry {registry} refused the credentials{user}: {message}", user = .username.as_ref().map(|u| format!(" of user `{u}`")).unwrap_or_default())]
    Unauthorized { registry: String, username: Option<String>, message: String },
    /// The repository, tag or blob does not exist.
    #[error("{what} was not found in registry {registry}")]
    NotFound { registry: String, what: String },
    /// Deleting is switched off in the registry (405).
    #[error(
        "registry {registry} does not allow deleting images (it answered 405 Method Not Allowed); enable deletes in its configuration (for the CNCF distribution registry: `storage: delete: enabled: true`, or REGISTRY_STORAGE_DELETE_ENABLED=true)"
    )]
    DeleteDisabled { registry: String },
    /// Any other answer the registry should not have given (`message`: the status and
    /// the Distribution API's error codes; never the registry's own text).
    #[error("registry {registry} refused {action}: it answered {message} (the server log has its answer)")]
    Refused { registry: String, action: String, status: u16, message: String },
    /// The registry's answer could not be understood.
    #[error("registry {registry}: {message}")]
    Protocol { registry: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// A tag as the registry describes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TagInfo {
    pub tag: String,
    /// The manifest (or index) digest the tag points to.
    pub digest: String,
    pub media_type: String,
    /// Config plus layers, compressed as stored, in bytes (the first platform's image
    /// for an index).
    pub size: u64,
    /// The image config's `created`, RFC 3339, when it has one.
    pub created: Option<String>,
    /// The manifest's config media type: tells an image from a Helm chart
    /// ([`crate::chart::HELM_CONFIG`]) or another artifact. `None` for an index.
    pub config_media_type: Option<String>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

#[derive(Deserialize)]
struct ConfigCreated {
    #[serde(default)]
    created: Option<String>,
}

/// A connection to one registry. Cheap to share; tokens are cached per scope.
pub struct RegistryClient {
    access: RegistryAccess,
    http: reqwest::Client,
    /// The outbound policy, with the registry's own host allowed.
    policy: Policy,
    tokens: Mutex<HashMap<String, String>>,
}

/// How to send one request again after an auth challenge.
type MakeRequest<'a> = &'a (dyn Fn(&reqwest::Client) -> Result<RequestBuilder, RegistryError> + Send + Sync);

impl RegistryClient {
    /// A client for the registry `access` names. It calls that registry wherever it
    /// is (an admin registered it); every other address it is sent to (a Bearer
    /// token realm, a redirect, an upload `Location`) goes through `policy`.
    pub fn new(access: RegistryAccess, policy: &Policy) -> Result<RegistryClient, RegistryError> {
        let policy = policy.also_allowing(&access.host);
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION")));
        let http = policy
            .apply(builder)
            .build()
            .map_err(|e| RegistryError::Invalid(format!("cannot make an HTTP client: {e}")))?;
        Ok(RegistryClient { access, http, policy, tokens: Mutex::default() })
    }

    /// Sends a request after checking its address against the policy (an IP-literal
    /// address meets no resolver).
    async fn execute(&self, request: RequestBuilder) -> Result<Response, RegistryError> {
        let request = request.build().map_err(|e| self.unreachable(e))?;
        if let Err(refused) = self.policy.check_url(request.url()) {
            return Err(RegistryError::Unreachable { registry: self.registry(), message: refused.to_string() });
        }
        self.http.execute(request).await.map_err(|e| self.unreachable(e))
    }

    pub fn access(&self) -> &RegistryAccess {
        &self.access
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.access.base_url())
    }

    fn registry(&self) -> String {
        self.access.host.clone()
    }

    fn unreachable(&self, e: reqwest::Error) -> RegistryError {
        // reqwest's Display hides the cause ("error sending request"); the chain says it.
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message = format!("{message}: {s}");
            source = s.source();
        }
        RegistryError::Unreachable { registry: self.registry(), message }
    }

    /// Sends a request, answering an auth challenge once: Basic with the
    /// credentials, or a Bearer token fetched from the challenge's realm for `scope`.
    async fn send(&self, scope: &str, make: MakeRequest<'_>) -> Result<Response, RegistryError> {
        let cached = self.tokens.lock().unwrap().get(scope).cloned();
        let first = self.authorize(make(&self.http)?, cached.as_deref(), cached.is_none());
        let response = self.execute(first).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge =
            response.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let body = error_text(response).await;
        let token = if challenge.to_ascii_lowercase().starts_with("bearer") {
            Some(self.fetch_token(&challenge, scope).await?)
        } else if self.access.username.is_none() || cached.is_some() {
            // Basic was not tried yet (no credentials) or a cached token went stale.
            if self.access.username.is_none() {
                return Err(self.unauthorized(format!("it needs credentials and none are configured ({body})")));
            }
            None
        } else {
            return Err(self.unauthorized(body));
        };
        let retry = self.authorize(make(&self.http)?, token.as_deref(), token.is_none());
        let response = self.execute(retry).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let body = error_text(response).await;
            return Err(self.unauthorized(body));
        }
        Ok(response)
    }

    fn authorize(&self, request: RequestBuilder, token: Option<&str>, basic: bool) -> RequestBuilder {
        match (token, &self.access.username) {
            (Some(token), _) => request.bearer_auth(token),
            (None, Some(user)) if basic => request.basic_auth(user, self.access.password.as_deref()),
            _ => request,
        }
    }

    fn unauthorized(&self, message: String) -> RegistryError {
        RegistryError::Unauthorized { registry: self.registry(), username: self.access.username.clone(), message }
    }

    async fn fetch_token(&self, challenge: &str, scope: &str) -> Result<String, RegistryError> {
        let params = parse_challenge(challenge);
        let realm = params.get("realm").ok_or_else(|| RegistryError::Protocol {
            registry: self.registry(),
            message: format!("its Bearer challenge names no realm: {challenge}"),
        })?;
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(service) = params.get("service") {
            query.push(("service", service));
        }
        let scope = params.get("scope").map(String::as_str).unwrap_or(scope);
        if !scope.is_empty() {
            query.push(("scope", scope));
        }
        let url = reqwest::Url::parse_with_params(realm, &query)
            .map_err(|e| self.protocol(format!("its token realm `{realm}` is not a URL: {e}")))?;
        let mut request = self.http.get(url);
        if let Some(user) = &self.access.username {
            request = request.basic_auth(user, self.access.password.as_deref());
        }
        let response = self.execute(request).await?;
        if !response.status().is_success() {
            let status = response.status();
            let body = error_text(response).await;
            return Err(if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                self.unauthorized(format!("its token service {realm} answered {body}"))
            } else {
                RegistryError::Refused {
                    registry: self.registry(),
                    action: format!("a token request to {realm}"),
                    status: status.as_u16(),
                    message: body,
                }
            });
        }
        #[derive(Deserialize)]
        struct TokenAnswer {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let answer: TokenAnswer = response.json().await.map_err(|e| RegistryError::Protocol {
            registry: self.registry(),
            message: format!("its token service answered something that is not a token: {e}"),
        })?;
        let token = answer.token.or(answer.access_token).ok_or_else(|| RegistryError::Protocol {
            registry: self.registry(),
            message: "its token service answered without a token".into(),
        })?;
        self.tokens.lock().unwrap().insert(scope.to_owned(), token.clone());
        Ok(token)
    }

    /// Turns a non-success answer into the right error.
    async fn check(&self, response: Response, action: &str, what: &str) -> Result<Response, RegistryError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let message = error_text(response).await;
        Err(match status {
            StatusCode::NOT_FOUND => RegistryError::NotFound { registry: self.registry(), what: what.to_owned() },
            StatusCode::FORBIDDEN => self.unauthorized(message),
            _ => RegistryError::Refused {
                registry: self.registry(),
                action: action.to_owned(),
                status: status.as_u16(),
                message,
            },
        })
    }

    /// Answers whether the registry speaks the API and accepts the credentials.
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let url = self.url("/v2/");
        let response = self.send("", &|http| Ok(http.get(&url))).await?;
        self.check(response, "GET /v2/", "the API root /v2/").await.map(drop)
    }

    /// Every repository, following the registry's pagination.
    pub async fn catalog(&self) -> Result<Vec<String>, RegistryError> {
        let pages = Listing {
            scope: "registry:catalog:*",
            request: "GET /v2/_catalog",
            what: "the catalog",
            body: "the catalog",
        };
        self.list_all("/v2/_catalog?n=1000".to_owned(), pages, |page| page.repositories).await
    }

    /// Every tag of `repository`, sorted.
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>, RegistryError> {
        check_repository(repository).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        let scope = format!("repository:{repository}:pull");
        let what = format!("the repository `{repository}`");
        let pages = Listing { scope: &scope, request: "a tag listing", what: &what, body: "the tag list" };
        self.list_all(format!("/v2/{repository}/tags/list?n=1000"), pages, |page| page.tags).await
    }

    /// A paginated listing (`n`/`last` with `Link` headers), every page's names
    /// together, sorted and without repeats.
    async fn list_all(
        &self,
        first: String,
        listing: Listing<'_>,
        names: fn(ListPage) -> Option<Vec<String>>,
    ) -> Result<Vec<String>, RegistryError> {
        let mut out = Vec::new();
        let mut next = Some(first);
        while let Some(path) = next.take() {
            let url = self.url(&path);
            let response = self.send(listing.scope, &|http| Ok(http.get(&url))).await?;
            let response = self.check(response, listing.request, listing.what).await?;
            next = next_link(response.headers());
            let page: ListPage = self.json(response, listing.body).await?;
            let page = names(page).unwrap_or_default();
            if page.is_empty() {
                break;
            }
            out.extend(page);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The digest a tag points to, without downloading the manifest (HEAD).
    pub async fn resolve(&self, repository: &str, tag: &str) -> Result<String, RegistryError> {
        check_repository(repository).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        check_tag(tag).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        let url = self.url(&format!("/v2/{repository}/manifests/{tag}"));
        let scope = format!("repository:{repository}:pull");
        let response = self.send(&scope, &|http| Ok(http.head(&url).header(ACCEPT, ACCEPT_MANIFESTS))).await?;
        let response = self.check(response, "a manifest HEAD", &format!("the tag `{repository}:{tag}`")).await?;
        match response.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()) {
            Some(digest) if check_digest(digest).is_ok() => Ok(digest.to_owned()),
            // No header: the digest of the manifest bytes is the digest.
            _ => Ok(self.fetch_manifest(repository, tag).await?.0),
        }
    }

    /// `(digest, media type, bytes)` of the manifest `reference` (tag or digest).
    pub(crate) async fn fetch_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<(String, String, Vec<u8>), RegistryError> {
        let url = self.url(&format!("/v2/{repository}/manifests/{reference}"));
        let scope = format!("repository:{repository}:pull");
        let response = self.send(&scope, &|http| Ok(http.get(&url).header(ACCEPT, ACCEPT_MANIFESTS))).await?;
        let what = format!("the manifest `{repository}:{reference}`");
        let response = self.check(response, "a manifest GET", &what).await?;
        let media_type = header(&response, CONTENT_TYPE.as_str()).unwrap_or_default();
        let bytes = self.bytes(response, &what).await?;
        let digest = sha256_digest(&bytes);
        Ok((digest, media_type, bytes))
    }

    /// Digest, size and creation time of a tag.
    pub async fn tag_info(&self, repository: &str, tag: &str) -> Result<TagInfo, RegistryError> {
        check_repository(repository).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        check_tag(tag).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        let (digest, header_type, bytes) = self.fetch_manifest(repository, tag).await?;
        let mut manifest: Manifest = self.parse(&bytes, "the manifest")?;
        let media_type = manifest.media_type.clone().unwrap_or(header_type);
        if !manifest.manifests.is_empty() {
            // An index: describe the image a linux/amd64 host would pull (else the first).
            let pick = manifest
                .manifests
                .iter()
                .find(|d| d.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64"))
                .or_else(|| manifest.manifests.first())
                .map(|d| d.digest.clone());
            if let Some(child) = pick {
                check_digest(&child).map_err(|e| self.protocol(e.to_string()))?;
                let (_, _, bytes) = self.fetch_manifest(repository, &child).await?;
                manifest = self.parse(&bytes, "the manifest")?;
            }
        }
        let size = manifest.config.as_ref().map_or(0, |c| c.size) + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        let config_media_type = manifest.config.as_ref().map(|c| c.media_type.clone()).filter(|t| !t.is_empty());
        let created = match &manifest.config {
            // A chart's config is its metadata: no `created` in it.
            Some(config)
                if !crate::chart::is_chart_config(&config.media_type)
                    && (config.media_type.contains("json") || config.media_type.is_empty()) =>
            {
                check_digest(&config.digest).map_err(|e| self.protocol(e.to_string()))?;
                let bytes = self.blob(repository, &config.digest).await?;
                serde_json::from_slice::<ConfigCreated>(&bytes).ok().and_then(|c| c.created)
            }
            _ => None,
        }
        .or_else(|| manifest.annotations.get("org.opencontainers.image.created").cloned());
        Ok(TagInfo { tag: tag.to_owned(), digest, media_type, size, created, config_media_type })
    }

    /// The config media type of the manifest `repository:tag` (`None` for an index
    /// or a manifest without a config): tells an image from a chart.
    pub async fn config_media_type(&self, repository: &str, tag: &str) -> Result<Option<String>, RegistryError> {
        check_repository(repository).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        check_tag(tag).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        let (_, _, bytes) = self.fetch_manifest(repository, tag).await?;
        let manifest: Manifest = self.parse(&bytes, "the manifest")?;
        Ok(manifest.config.map(|c| c.media_type).filter(|t| !t.is_empty()))
    }

    /// A small blob (a config) in memory.
    pub async fn blob(&self, repository: &str, digest: &str) -> Result<Vec<u8>, RegistryError> {
        self.blob_at_most(repository, digest, MAX_JSON_BYTES).await
    }

    /// A blob in memory, refused beyond `max` bytes (reading stops there).
    pub async fn blob_at_most(&self, repository: &str, digest: &str, max: usize) -> Result<Vec<u8>, RegistryError> {
        let url = self.url(&format!("/v2/{repository}/blobs/{digest}"));
        let scope = format!("repository:{repository}:pull");
        let response = self.send(&scope, &|http| Ok(http.get(&url))).await?;
        let what = format!("the blob {digest} of `{repository}`");
        let response = self.check(response, "a blob GET", &what).await?;
        self.bytes_at_most(response, &what, max).await
    }

    /// Deletes `repository:tag`: resolves its digest and deletes the manifest. Every
    /// other tag pointing to the same digest goes with it (the registry keeps tags
    /// per manifest); returns those other tags.
    pub async fn delete_tag(&self, repository: &str, tag: &str) -> Result<Vec<String>, RegistryError> {
        let digest = self.resolve(repository, tag).await?;
        let mut siblings = Vec::new();
        for other in self.tags(repository).await? {
            if other != tag && self.resolve(repository, &other).await.is_ok_and(|d| d == digest) {
                siblings.push(other);
            }
        }
        let url = self.url(&format!("/v2/{repository}/manifests/{digest}"));
        let scope = format!("repository:{repository}:delete");
        let response = self.send(&scope, &|http| Ok(http.delete(&url))).await?;
        if response.status() == StatusCode::METHOD_NOT_ALLOWED {
            return Err(RegistryError::DeleteDisabled { registry: self.registry() });
        }
        self.check(response, "a manifest DELETE", &format!("the tag `{repository}:{tag}`")).await?;
        Ok(siblings)
    }

    /// Whether the registry already holds a blob.
    pub async fn has_blob(&self, repository: &str, digest: &str) -> Result<bool, RegistryError> {
        let url = self.url(&format!("/v2/{repository}/blobs/{digest}"));
        let scope = format!("repository:{repository}:pull,push");
        let response = self.send(&scope, &|http| Ok(http.head(&url))).await?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => self.check(response, "a blob HEAD", digest).await.map(|_| true),
        }
    }

    /// Uploads `len` bytes of `file` from `offset` as the blob `digest` (a monolithic
    /// PUT, streamed from disk), unless the registry has it already.
    pub async fn push_blob(
        &self,
        repository: &str,
        digest: &str,
        file: &Path,
        offset: u64,
        len: u64,
    ) -> Result<bool, RegistryError> {
        if self.has_blob(repository, digest).await? {
            return Ok(false);
        }
        let scope = format!("repository:{repository}:pull,push");
        let start = self.url(&format!("/v2/{repository}/blobs/uploads/"));
        let response = self.send(&scope, &|http| Ok(http.post(&start).header(CONTENT_LENGTH, "0"))).await?;
        let response = self.check(response, "starting a blob upload", repository).await?;
        let location = header(&response, LOCATION.as_str())
            .ok_or_else(|| self.protocol("a blob upload started without a Location".into()))?;
        let location = if location.starts_with('/') { self.url(&location) } else { location };
        let mut put = reqwest::Url::parse(&location).map_err(|e| self.protocol(format!("bad upload Location: {e}")))?;
        put.query_pairs_mut().append_pair("digest", digest);
        let path = file.to_path_buf();
        let response = self
            .send(&scope, &|http| {
                let std_file = std::fs::File::open(&path)
                    .map_err(|e| RegistryError::Io { context: format!("opening {}", path.display()), source: e })?;
                let body = section_body(std_file, offset, len)
                    .map_err(|e| RegistryError::Io { context: format!("reading {}", path.display()), source: e })?;
                Ok(http
                    .request(Method::PUT, put.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, len)
                    .body(body))
            })
            .await?;
        self.check(response, &format!("the upload of blob {digest}"), repository).await?;
        Ok(true)
    }

    /// Uploads a small blob (a config) from memory.
    pub async fn push_blob_bytes(&self, repository: &str, digest: &str, bytes: &[u8]) -> Result<(), RegistryError> {
        let dir = tempfile::tempdir().map_err(|e| RegistryError::Io { context: "a temp dir".into(), source: e })?;
        let path = dir.path().join("blob");
        std::fs::write(&path, bytes).map_err(|e| RegistryError::Io { context: "a temp file".into(), source: e })?;
        self.push_blob(repository, digest, &path, 0, bytes.len() as u64).await.map(drop)
    }

    /// Puts a manifest under `reference` (a tag); returns its digest.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String, RegistryError> {
        let url = self.url(&format!("/v2/{repository}/manifests/{reference}"));
        let scope = format!("repository:{repository}:pull,push");
        let body = bytes.to_vec();
        let response =
            self.send(&scope, &|http| Ok(http.put(&url).header(CONTENT_TYPE, media_type).body(body.clone()))).await?;
        let response = self.check(response, &format!("the manifest of `{repository}:{reference}`"), repository).await?;
        Ok(header(&response, "docker-content-digest").unwrap_or_else(|| sha256_digest(bytes)))
    }

    fn protocol(&self, message: String) -> RegistryError {
        RegistryError::Protocol { registry: self.registry(), message }
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, bytes: &[u8], what: &str) -> Result<T, RegistryError> {
        serde_json::from_slice(bytes).map_err(|e| self.protocol(format!("{what} is not valid JSON: {e}")))
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, response: Response, what: &str) -> Result<T, RegistryError> {
        let bytes = self.bytes(response, what).await?;
        self.parse(&bytes, what)
    }

    async fn bytes(&self, response: Response, what: &str) -> Result<Vec<u8>, RegistryError> {
        self.bytes_at_most(response, what, MAX_JSON_BYTES).await
    }

    async fn bytes_at_most(&self, mut response: Response, what: &str, max: usize) -> Result<Vec<u8>, RegistryError> {
        let mut out = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(e))? {
            out.extend_from_slice(&chunk);
            if out.len() > max {
                return Err(self.protocol(format!("{what} is larger than {max} bytes")));
            }
        }
        Ok(out)
    }
}

fn header(response: &Response, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What Wharf says about a registry's error answer: the status, and the error codes
/// of the Distribution API (`errors[].code`, e.g. `NAME_UNKNOWN`) when it uses ones
/// the specification defines. The registry's own text (messages, details, a proxy's
/// page) goes to the server log, never into an error a caller sees.
async fn error_text(response: Response) -> String {
    /// The error codes of the OCI Distribution Specification.
    const SPEC_CODES: [&str; 14] = [
        "BLOB_UNKNOWN",
        "BLOB_UPLOAD_INVALID",
        "BLOB_UPLOAD_UNKNOWN",
        "DIGEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN",
        "MANIFEST_INVALID",
        "MANIFEST_UNKNOWN",
        "NAME_INVALID",
        "NAME_UNKNOWN",
        "SIZE_INVALID",
        "UNAUTHORIZED",
        "DENIED",
        "UNSUPPORTED",
        "TOOMANYREQUESTS",
    ];
    let status = response.status();
    let url = response.url().clone();
    let text = response.text().await.unwrap_or_default();
    let logged: String = text.chars().take(500).map(|c| if c.is_control() { ' ' } else { c }).collect();
    tracing::warn!(registry = %url.host_str().unwrap_or("?"), path = %url.path(), status = status.as_u16(), body = %logged, "registry error answer");
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
    }
    let mut codes: Vec<&str> = Vec::new();
    if let Ok(errors) = serde_json::from_str::<Errors>(&text) {
        for e in &errors.errors {
            if let Some(code) = SPEC_CODES.iter().find(|c| **c == e.code)
                && !codes.contains(code)
            {
                codes.push(code);
            }
        }
    }
    if codes.is_empty() { status.to_string() } else { format!("{status} ({})", codes.join(", ")) }
}

/// `key="value"` pairs of a `WWW-Authenticate` challenge.
fn parse_challenge(header: &str) -> HashMap<String, String> {
    let rest = header.split_once(' ').map_or("", |(_, rest)| rest);
    let mut out = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        out.insert(key.trim().to_ascii_lowercase(), value);
    }
    out
}

/// The path of a `Link: </v2/...?last=x&n=100>; rel="next"` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get("link")?.to_str().ok()?;
    let (target, params) = link.split_once(';')?;
    if !params.contains("rel=\"next\"") && !params.contains("rel=next") {
        return None;
    }
    let target = target.trim().trim_start_matches('<').trim_end_matches('>');
    let path = match target.find("/v2/") {
        Some(i) => &target[i..],
        None => return None,
    };
    Some(path.to_owned())
}

fn section_body(mut file: std::fs::File, offset: u64, len: u64) -> std::io::Result<reqwest::Body> {
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(offset))?;
    let file = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), len);
    Ok(reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)))
}

/// What a paginated listing asks for and how its errors name it.
struct Listing<'a> {
    scope: &'a str,
    request: &'a str,
    /// What a refusal names.
    what: &'a str,
    /// What an unreadable answer names.
    body: &'a str,
}

/// One page of `_catalog` (`repositories`) or `tags/list` (`tags`).
#[derive(Deserialize)]
struct ListPage {
    #[serde(default)]
    repositories: Option<Vec<String>>,
    #[serde(default)]
    tags: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_read_with_quotes_and_commas() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(c["realm"], "https://auth.example.com/token");
        assert_eq!(c["service"], "registry.example.com");
        assert_eq!(c["scope"], "repository:a/b:pull,push");
        let c = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(c["realm"], "Registry Realm");
    }

    #[test]
    fn next_links_keep_the_path_and_query() {
        let mut h = HeaderMap::new();
        h.insert("link", r#"</v2/_catalog?last=b&n=2>; rel="next""#.parse().unwrap());
        assert_eq!(next_link(&h).as_deref(), Some("/v2/_catalog?last=b&n=2"));
        h.insert("link", r#"<https://r.example/v2/x/tags/list?last=9&n=1>; rel="next""#.parse().unwrap());
        assert_eq!(next_link(&h).as_deref(), Some("/v2/x/tags/list?last=9&n=1"));
        h.insert("link", r#"</v2/_catalog?last=b>; rel="prev""#.parse().unwrap());
        assert_eq!(next_link(&h), None);
    }

    #[test]
    fn urls_become_hosts_and_must_agree_with_insecure() {
        assert_eq!(RegistryAccess::from_url("127.0.0.1:5055", true).unwrap(), "127.0.0.1:5055");
        assert_eq!(RegistryAccess::from_url("http://127.0.0.1:5055/", true).unwrap(), "127.0.0.1:5055");
        assert_eq!(RegistryAccess::from_url("https://hub.example.com", false).unwrap(), "hub.example.com");
        assert!(RegistryAccess::from_url("http://hub.example.com", false).unwrap_err().contains("insecure: true"));
        assert!(RegistryAccess::from_url("ftp://x", false).unwrap_err().contains("`ftp`"));
        assert!(RegistryAccess::from_url("hub.example.com/devops", false).unwrap_err().contains("without a path"));
        assert!(RegistryAccess::from_url("hub example", false).is_err());
        let access = RegistryAccess {
            host: "h".into(),
            username: Some("u".into()),
            password: Some("pw".into()),
            insecure: true,
        };
        assert!(!format!("{access:?}").contains("pw"));
    }
}
