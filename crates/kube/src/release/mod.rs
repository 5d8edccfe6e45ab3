//! Helm releases, stored the way Helm 4 stores them, so `helm list`, `helm history` and
//! `helm rollback` see Wharf's releases and Wharf sees Helm's.
//!
//! # The storage format (observed from helm v4.1.4 against kube-fake)
//!
//! Every revision of a release is one Secret in the release's namespace:
//!
//! - name `sh.helm.release.v1.<release>.v<revision>` (revision from 1, no padding);
//! - `type: helm.sh/release.v1`;
//! - labels `name=<release>`, `owner=helm`, `status=<status>`, `version=<revision>`,
//!   `modifiedAt=<unix seconds when the Secret was created>` (Helm 4 does not move it when
//!   it updates the status);
//! - one data key `release`: the release as JSON, gzipped, then base64 (standard
//!   alphabet, padded) — and that text is the Secret's value, so over the API it is base64
//!   twice (`.data.release | base64 -d | base64 -d | gunzip`). Helm reads plain JSON too
//!   (no gzip magic `1f 8b`), and so does [`decode`].
//!
//! The JSON (Go's `encoding/json` of Helm's `release.Release`; omitted fields are Go's
//! `omitempty` ones):
//!
//! ```text
//! {"name": "web",
//!  "info": {"first_deployed": RFC3339Nano, "last_deployed": RFC3339Nano,
//!           "deleted": RFC3339Nano (only once uninstalled),
//!           "description": "Install complete" | "Upgrade complete" | "Rollback to 1" |
//!                          "Uninstallation complete" | "Initial install underway" | …,
//!           "status": "unknown" | "deployed" | "uninstalled" | "superseded" | "failed" |
//!                     "uninstalling" | "pending-install" | "pending-upgrade" | "pending-rollback",
//!           "notes": rendered NOTES.txt (omitted when empty)},
//!  "chart": {"metadata": Chart.yaml as JSON (name, version, apiVersion, appVersion, …),
//!            "lock": null, "templates": [{"name": "templates/x.yaml", "data": base64}],
//!            "values": the chart's values.yaml, "schema": base64 or null,
//!            "schemamodtime": RFC3339, "files": [{"name", "data": base64}] or null,
//!            "modtime": RFC3339},
//!  "config": the user's values (-f/--set; omitted when empty),
//!  "manifest": "---\n# Source: chart/templates/x.yaml\n…" (every non-hook document),
//!  "hooks": [{"name", "kind", "path": "chart/templates/hook.yaml", "manifest": the document,
//!             "events": ["pre-install", …], "last_run": {"started_at", "completed_at",
//!             "phase": "" | "Running" | "Succeeded" | "Failed"},
//!             "weight": n (omitted when 0), "delete_policies": [...] (omitted when none)}],
//!  "version": revision, "namespace": "default", "apply_method": "ssa"}
//! ```
//!
//! Helm 4 applies with server-side apply, field manager `helm`, and marks every object it
//! applies with the label `app.kubernetes.io/managed-by: Helm` and the annotations
//! `meta.helm.sh/release-name` and `meta.helm.sh/release-namespace` (it refuses to adopt an
//! object whose annotations name another release). Wharf does the same, with the same
//! field manager, so either tool can take over the other's release: an upgrade by one
//! removes the fields the other's revision had and this one does not.
//!
//! An install writes the revision `pending-install`, runs `pre-install` hooks, applies,
//! waits, runs `post-install` hooks and rewrites it `deployed` (`failed` on an error); an
//! upgrade does the same with `pending-upgrade` and then marks the previous `deployed`
//! revision `superseded`; a rollback is a new revision made from an old one's manifest,
//! chart, values and hooks (`pending-rollback`, description `Rollback to N`); an uninstall
//! runs `pre-delete` hooks, deletes the objects, runs `post-delete` hooks and deletes every
//! revision's Secret (Helm's default; `--keep-history` would mark the last `uninstalled`).

pub mod chart;
mod hooks;
mod ops;
mod record;
mod store;

pub use hooks::HELM_MANAGER;
pub use ops::{Operation, ReleaseOutcome, ReleaseRequest, check_name, install_or_upgrade, rollback, uninstall};
pub use record::{ChartRecord, FileRecord, HookRecord, Info, LastRun, Release, Status, decode, encode, now};
pub use store::{
    MAX_RELEASE_BYTES, MAX_RELEASE_SECRETS, SOURCE_ANNOTATION, history, latest_releases, secret_name, source,
};

use wharf_executor::deploy::{DeployError, ReleaseExit, ReleaseSpec, Released};
use wharf_executor::{LogLine, LogSink, StopSignal};

use crate::Connection;
use crate::deploy::Ctx;

/// The cluster's version as `.Capabilities.KubeVersion` reads it (`v1.32.0`).
pub async fn kube_version(conn: &Connection, ctx: &Ctx<'_>) -> Result<String, DeployError> {
    let info = conn.client().apiserver_version().await.map_err(|e| ctx.api("get", "the server version", e))?;
    Ok(info.git_version)
}

/// A `chart-deploy` task (or an upgrade asked through the API): the chart rendered for
/// the next revision, then installed or upgraded.
pub async fn deploy_chart(
    conn: &Connection,
    spec: &ReleaseSpec,
    logs: &dyn LogSink,
    mut stop: StopSignal,
) -> Result<ReleaseExit, DeployError> {
    let ctx = Ctx { cluster: &spec.cluster.name, conn, namespace: &spec.namespace };
    check_name(&spec.release).map_err(|e| ctx.error(e))?;
    let past = history(conn, &ctx, &spec.release).await?;
    let live = past.iter().any(|r| r.info.status != Status::Uninstalled);
    let version = kube_version(conn, &ctx).await?;
    let target = chart::Target {
        release: &spec.release,
        namespace: &spec.namespace,
        revision: past.last().map_or(1, |r| r.version + 1),
        is_upgrade: live,
        kube_version: &version,
    };
    let source = Some(spec.source.clone()).filter(|s| !s.is_empty());
    let request = chart::request(&spec.chart, &spec.values, &target, source)
        .map_err(|e| ctx.error(format!("release `{}`: {e}", spec.release)))?;
    logs.line(LogLine::system(format!(
        "chart-deploy: chart {}-{} as release `{}` to cluster `{}` ({}), namespace `{}`",
        request.chart.name(),
        request.chart.version(),
        spec.release,
        spec.cluster.name,
        conn.server(),
        spec.namespace
    )));
    let out = install_or_upgrade(conn, &ctx, request, logs, &mut stop).await?;
    Ok(match out.stopped {
        Some(reason) => ReleaseExit::Stopped(reason),
        None => ReleaseExit::Released(Released {
            revision: out.release.version,
            status: out.release.info.status.to_string(),
            applied: out.applied,
            notes: out.release.info.notes,
        }),
    })
}
