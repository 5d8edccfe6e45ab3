//! `canary` tasks on a cluster: [`KubeDeployer`](crate::deploy::KubeDeployer)'s
//! [`Deployer::canary`](wharf_executor::deploy::Deployer::canary).
//!
//! The honest canary for a plain Deployment and its Service, without a service mesh:
//! - **Begin**: `<name>-canary` is created as a copy of the stable Deployment `<name>`
//!   with the new image and no replicas. Its selector and pod labels are the stable
//!   ones plus [`CANARY_LABEL`], so the Service (which selects the shared labels) sends
//!   traffic to both, and the canary's selector never matches stable pods. The stable
//!   Deployment's selector is immutable and may still match canary pods; Kubernetes'
//!   controller references keep each ReplicaSet to its own pods. The stable replica
//!   count (the total) is recorded on the canary as [`TOTAL_ANNOTATION`], so that an
//!   abort — even by a restarted server — restores it exactly. A canary left by an
//!   earlier run is aborted first.
//! - **Step** `p`: the canary gets `ceil(total × p / 100)` replicas and the stable one
//!   `ceil(total × (100 − p) / 100)` (Argo Rollouts' rounding without traffic routing:
//!   both rounded up, so for a moment one pod more than the total may run, and never
//!   fewer). The canary is scaled up and its rollout waited for before the stable one
//!   is scaled down and waited for.
//! - **Promote**: the new image goes into the stable Deployment with the total
//!   replicas; after its rollout the canary is deleted.
//! - **Abort**: the stable Deployment gets the recorded total back (its image was never
//!   touched, so the rollback is exact); after its rollout the canary is deleted.
//!
//! Traffic follows pods only approximately: a Service spreads connections over ready
//! endpoints, not requests by weight.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use wharf_executor::deploy::{CanaryAction, CanaryExit, CanarySpec, DeployError};
use wharf_executor::{LogLine, LogSink, StopSignal};

use crate::Connection;
use crate::deploy::Ctx;
use crate::deploy::rollout::{self, Workload, WorkloadKind};

/// The label a canary's pods (and its selector) carry on top of the stable ones; its
/// value is the stable Deployment's name.
pub const CANARY_LABEL: &str = "wharf.dev/canary";
/// On the canary Deployment: the stable Deployment's replica count before the canary.
pub const TOTAL_ANNOTATION: &str = "wharf.dev/canary-total";
/// On the canary Deployment: the step it is at, in percent (`0` right after Begin).
pub const STEP_ANNOTATION: &str = "wharf.dev/canary-step";
/// On the canary Deployment: the run that made it (`<pipeline>#<number>`).
pub const RUN_ANNOTATION: &str = "wharf.dev/canary-run";
/// The most an abort waits for the stable Deployment's rollout (it runs after a stop,
/// so no stop can end it).
const ABORT_WAIT: Duration = Duration::from_secs(600);

/// (canary, stable) replicas at `percent` of `total`: both rounded up, as Argo
/// Rollouts rounds a basic canary without traffic routing.
pub fn replicas_at(total: u32, percent: u8) -> (u32, u32) {
    let p = u64::from(percent.min(100));
    let t = u64::from(total);
    let canary = (t * p).div_ceil(100) as u32;
    let stable = (t * (100 - p)).div_ceil(100) as u32;
    (canary, stable)
}

/// The canary's name for stable Deployment `name`.
pub fn canary_name(name: &str) -> String {
    format!("{name}-canary")
}

/// One canary move on an open connection.
pub async fn run(
    conn: &Connection,
    spec: &CanarySpec,
    action: CanaryAction,
    logs: &dyn LogSink,
    mut stop: StopSignal,
) -> Result<CanaryExit, DeployError> {
    let ctx = Ctx { cluster: &spec.cluster.name, conn, namespace: &spec.namespace };
    let c = Canary { conn, ctx, spec, logs };
    match action {
        CanaryAction::Begin => c.begin().await,
        CanaryAction::Step { percent, total } => c.step(percent, total, &mut stop).await,
        CanaryAction::Promote { total } => c.promote(total, &mut stop).await,
        CanaryAction::Abort => c.abort().await,
    }
}

struct Canary<'a> {
    conn: &'a Connection,
    ctx: Ctx<'a>,
    spec: &'a CanarySpec,
    logs: &'a dyn LogSink,
}

impl Canary<'_> {
    fn api(&self) -> Api<Deployment> {
        Api::namespaced(self.conn.client().clone(), &self.spec.namespace)
    }

    fn say(&self, text: impl Into<String>) {
        self.logs.line(LogLine::system(format!("canary: {}", text.into())));
    }

    fn stable(&self) -> String {
        self.spec.deployment.clone()
    }

    fn canary(&self) -> String {
        canary_name(&self.spec.deployment)
    }

    async fn get(&self, name: &str) -> Result<Option<Deployment>, DeployError> {
        self.api().get_opt(name).await.map_err(|e| self.ctx.api("get", &format!("Deployment {name}"), e))
    }

    async fn begin(&self) -> Result<CanaryExit, DeployError> {
        if self.get(&self.canary()).await?.is_some() {
            self.say(format!("Deployment {} is left from an earlier canary; undoing it first", self.canary()));
            self.abort().await?;
        }
        let Some(stable) = self.get(&self.stable()).await? else {
            return Err(self.ctx.error(format!(
                "Deployment `{}` does not exist; a canary starts from a deployed stable version",
                self.stable()
            )));
        };
        let total = stable.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        if total < 1 {
            return Err(self.ctx.error(format!(
                "Deployment `{}` has 0 replicas: there is no traffic to move (scale it up first)",
                self.stable()
            )));
        }
        let total = total as u32;
        let object = serde_json::to_value(&stable).map_err(|e| self.ctx.error(e))?;
        let canary = canary_object(&object, self.spec, total).map_err(|e| self.ctx.error(e))?;
        let canary: Deployment = serde_json::from_value(canary).map_err(|e| self.ctx.error(e))?;
        self.api()
            .create(&PostParams { field_manager: Some("wharf".into()), ..Default::default() }, &canary)
            .await
            .map_err(|e| self.ctx.api("create", &format!("Deployment {}", self.canary()), e))?;
        self.say(format!(
            "created Deployment {} ({} with image {}, no replicas yet); stable {} has {total} replica(s)",
            self.canary(),
            self.stable(),
            self.spec.image,
            self.stable()
        ));
        Ok(CanaryExit::Done { total })
    }

    async fn step(&self, percent: u8, total: u32, stop: &mut StopSignal) -> Result<CanaryExit, DeployError> {
        let (canary, stable) = replicas_at(total, percent);
        self.say(format!(
            "step {percent}%: canary {canary} of {total} replica(s), stable {stable} (traffic follows pods only \
             approximately)"
        ));
        let step =
            json!({"metadata": {"annotations": {STEP_ANNOTATION: percent.to_string()}}, "spec": {"replicas": canary}});
        self.patch(&self.canary(), step).await?;
        if let Some(reason) = self.wait(&self.canary(), stop).await? {
            return Ok(CanaryExit::Stopped(reason));
        }
        self.patch(&self.stable(), json!({"spec": {"replicas": stable}})).await?;
        if let Some(reason) = self.wait(&self.stable(), stop).await? {
            return Ok(CanaryExit::Stopped(reason));
        }
        Ok(CanaryExit::Done { total })
    }

    async fn promote(&self, total: u32, stop: &mut StopSignal) -> Result<CanaryExit, DeployError> {
        let Some(stable) = self.get(&self.stable()).await? else {
            return Err(self.ctx.error(format!("Deployment `{}` is gone", self.stable())));
        };
        let object = serde_json::to_value(&stable).map_err(|e| self.ctx.error(e))?;
        let containers = object.pointer("/spec/template/spec/containers").cloned().unwrap_or(json!([]));
        let (i, name) = container_for(&containers, &self.spec.image).map_err(|e| self.ctx.error(e))?;
        let mut list = containers;
        list[i]["image"] = json!(self.spec.image);
        self.say(format!(
            "100%: image {} into Deployment {} (container {name}) with {total} replica(s)",
            self.spec.image,
            self.stable()
        ));
        self.patch(&self.stable(), json!({"spec": {"replicas": total, "template": {"spec": {"containers": list}}}}))
            .await?;
        if let Some(reason) = self.wait(&self.stable(), stop).await? {
            return Ok(CanaryExit::Stopped(reason));
        }
        self.delete_canary().await?;
        self.say(format!("promoted: {} runs {}", self.stable(), self.spec.image));
        Ok(CanaryExit::Done { total })
    }

    async fn abort(&self) -> Result<CanaryExit, DeployError> {
        let Some(canary) = self.get(&self.canary()).await? else {
            self.say(format!("no Deployment {}: nothing to undo", self.canary()));
            return Ok(CanaryExit::Done { total: 0 });
        };
        let recorded = canary.metadata.annotations.as_ref().and_then(|a| a.get(TOTAL_ANNOTATION));
        let Some(total) = recorded.and_then(|t| t.parse::<u32>().ok()) else {
            return Err(self.ctx.error(format!(
                "Deployment {} has no readable `{TOTAL_ANNOTATION}` annotation; it was not made by Wharf, so it is \
                 left alone",
                self.canary()
            )));
        };
        self.say(format!("rolling back: stable {} back to {total} replica(s)", self.stable()));
        self.patch(&self.stable(), json!({"spec": {"replicas": total}})).await?;
        // No stop reaches this wait: the rollback itself is what a stop asks for.
        let (_keep, mut never) = tokio::sync::watch::channel(None);
        match tokio::time::timeout(ABORT_WAIT, self.wait(&self.stable(), &mut never)).await {
            Ok(result) => {
                result?;
            }
            Err(_) => self.say(format!(
                "stable {} did not finish rolling out within {} minutes; deleting the canary anyway",
                self.stable(),
                ABORT_WAIT.as_secs() / 60
            )),
        }
        self.delete_canary().await?;
        self.say(format!("rolled back: {} deleted, {} unchanged", self.canary(), self.stable()));
        Ok(CanaryExit::Done { total })
    }

    async fn patch(&self, name: &str, patch: Value) -> Result<(), DeployError> {
        self.api()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| self.ctx.api("patch", &format!("Deployment {name}"), e))
    }

    async fn wait(&self, name: &str, stop: &mut StopSignal) -> Result<Option<wharf_executor::StopReason>, DeployError> {
        let w =
            Workload { kind: WorkloadKind::Deployment, namespace: self.spec.namespace.clone(), name: name.to_owned() };
        rollout::wait(self.conn, &self.ctx, &w, self.logs, stop).await
    }

    async fn delete_canary(&self) -> Result<(), DeployError> {
        match self.api().delete(&self.canary(), &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(self.ctx.api("delete", &format!("Deployment {}", self.canary()), e)),
        }
    }
}

/// The canary Deployment for stable Deployment `stable` (as the API server returned it).
fn canary_object(stable: &Value, spec: &CanarySpec, total: u32) -> Result<Value, String> {
    let name = canary_name(&spec.deployment);
    let s = stable.get("spec").ok_or("the stable Deployment has no spec")?;
    let mut selector = s.get("selector").cloned().unwrap_or(json!({}));
    selector["matchLabels"][CANARY_LABEL] = json!(spec.deployment);
    let mut template = s.get("template").cloned().ok_or("the stable Deployment has no pod template")?;
    template["metadata"]["labels"][CANARY_LABEL] = json!(spec.deployment);
    let containers = template.pointer("/spec/containers").cloned().unwrap_or(json!([]));
    let (i, _) = container_for(&containers, &spec.image)?;
    template["spec"]["containers"][i]["image"] = json!(spec.image);
    let mut labels: BTreeMap<String, Value> =
        stable.pointer("/metadata/labels").and_then(|l| serde_json::from_value(l.clone()).ok()).unwrap_or_default();
    labels.insert(CANARY_LABEL.into(), json!(spec.deployment));
    let mut new_spec = json!({"replicas": 0, "selector": selector, "template": template});
    for keep in ["strategy", "minReadySeconds", "progressDeadlineSeconds", "revisionHistoryLimit"] {
        if let Some(v) = s.get(keep) {
            new_spec[keep] = v.clone();
        }
    }
    Ok(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": spec.namespace,
            "labels": labels,
            "annotations": {
                TOTAL_ANNOTATION: total.to_string(),
                STEP_ANNOTATION: "0",
                RUN_ANNOTATION: spec.run,
            },
        },
        "spec": new_spec,
    }))
}

/// Which container gets the new image: the only one, or the one whose image has the
/// new image's repository (the part before the tag or digest).
fn container_for(containers: &Value, image: &str) -> Result<(usize, String), String> {
    let list = containers.as_array().map(Vec::as_slice).unwrap_or_default();
    let name = |c: &Value| c["name"].as_str().unwrap_or("").to_owned();
    match list {
        [] => Err("the stable Deployment's pod template has no containers".into()),
        [only] => Ok((0, name(only))),
        many => {
            let repo = repository(image);
            let matching: Vec<usize> =
                (0..many.len()).filter(|&i| many[i]["image"].as_str().map(repository) == Some(repo)).collect();
            match matching[..] {
                [i] => Ok((i, name(&many[i]))),
                _ => Err(format!(
                    "the stable Deployment has {} containers and not exactly one runs an image of `{repo}`: \
                     cannot tell which gets `{image}`",
                    many.len()
                )),
            }
        }
    }
}

/// `registry:5000/team/app` of `registry:5000/team/app:1.2` or `…@sha256:…`.
fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => &image[..i],
        _ => image,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_round_up_on_both_sides() {
        assert_eq!(replicas_at(10, 10), (1, 9));
        assert_eq!(replicas_at(4, 25), (1, 3));
        assert_eq!(replicas_at(3, 10), (1, 3));
        assert_eq!(replicas_at(3, 50), (2, 2));
        assert_eq!(replicas_at(3, 90), (3, 1));
        assert_eq!(replicas_at(1, 1), (1, 1));
        assert_eq!(replicas_at(5, 100), (5, 0));
        assert_eq!(replicas_at(5, 0), (0, 5));
    }

    #[test]
    fn the_container_is_the_only_one_or_the_one_of_the_repository() {
        let one = json!([{"name": "web", "image": "nginx:1.27"}]);
        assert_eq!(container_for(&one, "other:2").unwrap(), (0, "web".into()));
        let two = json!([{"name": "proxy", "image": "envoy:1"}, {"name": "app", "image": "reg:5000/t/app:1"}]);
        assert_eq!(container_for(&two, "reg:5000/t/app:2").unwrap(), (1, "app".into()));
        assert!(container_for(&two, "nginx:1").unwrap_err().contains("2 containers"));
        assert!(container_for(&json!([]), "x").is_err());
        assert_eq!(repository("reg:5000/t/app@sha256:ab"), "reg:5000/t/app");
        assert_eq!(repository("reg:5000/t/app"), "reg:5000/t/app");
    }
}
