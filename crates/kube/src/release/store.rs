//! Release revisions as Secrets: read (one release's history, or the latest revision of
//! every release in the cluster), create, rewrite, delete. Reads are bounded: at most
//! [`MAX_RELEASE_SECRETS`] Secrets listed, each value at most [`MAX_RELEASE_BYTES`].

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PartialObjectMeta, PostParams};
use wharf_executor::deploy::DeployError;

use super::ops::check_name;
use super::record::{Release, decode, encode};
use crate::Connection;
use crate::deploy::Ctx;

/// Secrets (release revisions) read by one listing; more is refused, not truncated.
pub const MAX_RELEASE_SECRETS: usize = 20_000;
/// A release value larger than this is not read (Kubernetes caps a Secret at 1 MiB).
pub const MAX_RELEASE_BYTES: usize = 4 << 20;
/// Revisions of one release read, the newest (Helm keeps 10 unless told otherwise).
pub const MAX_HISTORY: usize = 1000;
/// Secrets asked for per page.
const PAGE: u32 = 500;
const SECRET_TYPE: &str = "helm.sh/release.v1";

/// `sh.helm.release.v1.web.v3`
pub fn secret_name(release: &str, revision: u32) -> String {
    format!("sh.helm.release.v1.{release}.v{revision}")
}

fn labels(release: &Release, modified_at: i64) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("name".to_owned(), release.name.clone()),
        ("owner".to_owned(), "helm".to_owned()),
        ("status".to_owned(), release.info.status.as_str().to_owned()),
        ("version".to_owned(), release.version.to_string()),
        ("modifiedAt".to_owned(), modified_at.to_string()),
    ])
}

/// The annotation on the revisions Wharf writes: `registry/workspace/chart`, where the
/// chart came from (Helm keeps no such thing; an upgrade asked later pulls from there).
pub const SOURCE_ANNOTATION: &str = "wharf.dev/chart-source";

fn secret(release: &Release, modified_at: i64, source: Option<&str>) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(secret_name(&release.name, release.version)),
            namespace: Some(release.namespace.clone()),
            labels: Some(labels(release, modified_at)),
            annotations: source.map(|s| BTreeMap::from([(SOURCE_ANNOTATION.to_owned(), s.to_owned())])),
            ..Default::default()
        },
        type_: Some(SECRET_TYPE.to_owned()),
        data: Some(BTreeMap::from([("release".to_owned(), ByteString(encode(release)))])),
        ..Default::default()
    }
}

/// The metadata of every release Secret matching `selector`, in `namespace` or (None)
/// everywhere, page by page: Secrets' data is read one at a time, only where needed.
async fn list(
    conn: &Connection,
    ctx: &Ctx<'_>,
    namespace: Option<&str>,
    selector: &str,
) -> Result<Vec<PartialObjectMeta<Secret>>, DeployError> {
    let api: Api<Secret> = match namespace {
        Some(ns) => Api::namespaced(conn.client().clone(), ns),
        None => Api::all(conn.client().clone()),
    };
    let mut out = Vec::new();
    let mut params = ListParams::default().labels(selector).limit(PAGE);
    loop {
        let page = api.list_metadata(&params).await.map_err(|e| ctx.api("list", "the Helm release Secrets", e))?;
        out.extend(page.items);
        if out.len() > MAX_RELEASE_SECRETS {
            return Err(ctx.error(format!(
                "more than {MAX_RELEASE_SECRETS} Helm release Secrets; Wharf does not read that many"
            )));
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}

fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// `(namespace, name, revision)` of a release Secret, from its labels.
fn revision_of(meta: &ObjectMeta) -> Option<(String, String, u32)> {
    Some((meta.namespace.clone()?, label(meta, "name")?.to_owned(), label(meta, "version")?.parse().ok()?))
}

/// Reads and decodes one release Secret.
async fn read(conn: &Connection, ctx: &Ctx<'_>, ns: &str, name: &str) -> Result<Option<Release>, DeployError> {
    let api: Api<Secret> = Api::namespaced(conn.client().clone(), ns);
    let s = match api.get(name).await {
        Ok(s) => s,
        // Deleted since it was listed.
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(None),
        Err(e) => return Err(ctx.api("get", &format!("Secret {ns}/{name}"), e)),
    };
    if s.type_.as_deref() != Some(SECRET_TYPE) {
        return Ok(None);
    }
    let Some(value) = s.data.as_ref().and_then(|d| d.get("release")) else {
        return Err(ctx.error(format!("Secret {ns}/{name} has no `release` data")));
    };
    if value.0.len() > MAX_RELEASE_BYTES {
        return Err(ctx.error(format!("Secret {ns}/{name}: the release is larger than {MAX_RELEASE_BYTES} bytes")));
    }
    decode(&value.0).map(Some).map_err(|e| ctx.error(format!("Secret {ns}/{name}: {e}")))
}

/// Every revision of `release` in `ctx.namespace`, oldest first; empty when there is none
/// (or the name is no release name). At most [`MAX_HISTORY`] revisions, the newest.
pub async fn history(conn: &Connection, ctx: &Ctx<'_>, release: &str) -> Result<Vec<Release>, DeployError> {
    if check_name(release).is_err() {
        return Ok(Vec::new());
    }
    let metas = list(conn, ctx, Some(ctx.namespace), &format!("owner=helm,name={release}")).await?;
    let mut found: Vec<(u32, String)> =
        metas.iter().filter_map(|m| Some((revision_of(&m.metadata)?.2, m.metadata.name.clone()?))).collect();
    found.sort();
    let skip = found.len().saturating_sub(MAX_HISTORY);
    let mut out = Vec::with_capacity(found.len() - skip);
    for (_, name) in &found[skip..] {
        out.extend(read(conn, ctx, ctx.namespace, name).await?);
    }
    out.sort_by_key(|r| r.version);
    Ok(out)
}

/// The latest revision of every release in the cluster (or in `namespace`), sorted by
/// namespace and name. Only the latest revision's Secret of each release is read; one
/// that does not read is reported in the second list, not fatal.
pub async fn latest_releases(
    conn: &Connection,
    ctx: &Ctx<'_>,
    namespace: Option<&str>,
) -> Result<(Vec<Release>, Vec<String>), DeployError> {
    let metas = list(conn, ctx, namespace, "owner=helm").await?;
    let mut latest: BTreeMap<(String, String), (u32, String)> = BTreeMap::new();
    for m in &metas {
        let (Some((ns, release, version)), Some(name)) = (revision_of(&m.metadata), m.metadata.name.clone()) else {
            continue;
        };
        let key = (ns, release);
        if latest.get(&key).is_none_or(|(v, _)| *v < version) {
            latest.insert(key, (version, name));
        }
    }
    let mut releases = Vec::with_capacity(latest.len());
    let mut unreadable = Vec::new();
    for ((ns, _), (_, name)) in &latest {
        match read(conn, ctx, ns, name).await {
            Ok(r) => releases.extend(r),
            Err(e) => unreadable.push(e.0),
        }
    }
    Ok((releases, unreadable))
}

/// Writes a new revision's Secret.
pub async fn create(
    conn: &Connection,
    ctx: &Ctx<'_>,
    release: &Release,
    source: Option<&str>,
) -> Result<(), DeployError> {
    let api: Api<Secret> = Api::namespaced(conn.client().clone(), &release.namespace);
    let name = secret_name(&release.name, release.version);
    api.create(&PostParams::default(), &secret(release, jiff::Timestamp::now().as_second(), source))
        .await
        .map_err(|e| ctx.api("create", &format!("Secret {}/{name} (release revision)", release.namespace), e))?;
    Ok(())
}

/// Rewrites a revision's Secret (its status changed), keeping its `modifiedAt` as Helm does.
pub async fn update(conn: &Connection, ctx: &Ctx<'_>, release: &Release) -> Result<(), DeployError> {
    let api: Api<Secret> = Api::namespaced(conn.client().clone(), &release.namespace);
    let name = secret_name(&release.name, release.version);
    let what = format!("Secret {}/{name} (release revision)", release.namespace);
    let old = api.get(&name).await.map_err(|e| ctx.api("get", &what, e))?;
    let modified_at = label(&old.metadata, "modifiedAt")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| jiff::Timestamp::now().as_second());
    let source = old.metadata.annotations.as_ref().and_then(|a| a.get(SOURCE_ANNOTATION)).map(String::as_str);
    let mut new = secret(release, modified_at, source);
    new.metadata.resource_version = old.metadata.resource_version;
    api.replace(&name, &PostParams::default(), &new).await.map_err(|e| ctx.api("update", &what, e))?;
    Ok(())
}

/// Deletes every revision's Secret of `release` (an uninstall without history).
pub async fn delete_all(conn: &Connection, ctx: &Ctx<'_>, history: &[Release]) -> Result<(), DeployError> {
    for r in history {
        let api: Api<Secret> = Api::namespaced(conn.client().clone(), &r.namespace);
        let name = secret_name(&r.name, r.version);
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(ctx.api("delete", &format!("Secret {}/{name}", r.namespace), e)),
        }
    }
    Ok(())
}

/// Where the newest revision that remembers it says the release's chart came from.
pub async fn source(conn: &Connection, ctx: &Ctx<'_>, release: &str) -> Result<Option<String>, DeployError> {
    if check_name(release).is_err() {
        return Ok(None);
    }
    let metas = list(conn, ctx, Some(ctx.namespace), &format!("owner=helm,name={release}")).await?;
    let mut found: Vec<(u32, String)> = metas
        .iter()
        .filter_map(|m| {
            let version = revision_of(&m.metadata)?.2;
            Some((version, m.metadata.annotations.as_ref()?.get(SOURCE_ANNOTATION)?.clone()))
        })
        .collect();
    found.sort();
    Ok(found.pop().map(|(_, s)| s))
}
