//! Hooks, as Helm runs them: the hooks of one event in weight order (then name), each
//! deleted first when its policy is `before-hook-creation` (Helm's default when a hook
//! names no policy), applied, waited for when it is a Job (until `Complete` or `Failed`)
//! or a Pod (until `Succeeded` or `Failed`), and deleted afterwards by `hook-succeeded` or
//! `hook-failed`. A failed hook fails the operation. Each hook's `last_run` is recorded.

use std::time::Duration;

use serde_json::Value;
use wharf_executor::deploy::DeployError;
use wharf_executor::{LogLine, LogSink, StopReason, StopSignal};

use super::record::{HookRecord, LastRun, now};
use crate::Connection;
use crate::deploy::Ctx;
use crate::deploy::apply::{self, Plan};
use crate::deploy::manifests;

/// How often a hook's object is looked at while waiting for it.
const POLL: Duration = Duration::from_millis(250);
/// How long a deleted hook object may take to disappear before it is made again.
const GONE_WAIT: Duration = Duration::from_secs(60);

/// The field manager Helm 4 applies with; Wharf uses it too (see the module doc).
pub const HELM_MANAGER: &str = "helm";

fn policies(h: &HookRecord) -> Vec<&str> {
    if h.delete_policies.is_empty() {
        vec!["before-hook-creation"]
    } else {
        h.delete_policies.iter().map(String::as_str).collect()
    }
}

/// Runs the hooks of `event` (`pre-install`, …). `Ok(Some(reason))`: a stop ended it.
pub async fn run(
    conn: &Connection,
    ctx: &Ctx<'_>,
    hooks: &mut [HookRecord],
    event: &str,
    logs: &dyn LogSink,
    stop: &mut StopSignal,
) -> Result<Option<StopReason>, DeployError> {
    let mut order: Vec<usize> = (0..hooks.len()).filter(|i| hooks[*i].events.iter().any(|e| e == event)).collect();
    order.sort_by(|a, b| (hooks[*a].weight, &hooks[*a].name).cmp(&(hooks[*b].weight, &hooks[*b].name)));
    for i in order {
        if let Some(r) = *stop.borrow_and_update() {
            return Ok(Some(r.reason));
        }
        let hook = &mut hooks[i];
        let what = format!("{event} hook {} {} ({})", hook.kind, hook.name, hook.path);
        let objects = manifests::parse(&hook.manifest).map_err(|e| ctx.error(format!("{what}: {e}")))?;
        let plan = apply::plan(conn, ctx, &what, objects).await?;
        let policies: Vec<String> = policies(hook).into_iter().map(str::to_owned).collect();
        for j in 0..plan.len() {
            if policies.iter().any(|p| p == "before-hook-creation") && plan.delete(conn, ctx, j).await? {
                wait_gone(conn, ctx, &plan, j).await?;
            }
        }
        hook.last_run = LastRun { started_at: Some(now()), completed_at: None, phase: "Running".into() };
        logs.line(LogLine::system(format!("running the {what}")));
        let mut failure = None;
        for j in 0..plan.len() {
            plan.apply_as(conn, ctx, j, logs, HELM_MANAGER).await?;
            match wait_done(conn, ctx, &plan, j, stop).await? {
                Done::Succeeded => {}
                Done::Failed(why) => {
                    failure = Some(why);
                    break;
                }
                Done::Stopped(reason) => {
                    hook.last_run.phase = "Failed".into();
                    hook.last_run.completed_at = Some(now());
                    return Ok(Some(reason));
                }
            }
        }
        hook.last_run.completed_at = Some(now());
        let (phase, policy) = match &failure {
            None => ("Succeeded", "hook-succeeded"),
            Some(_) => ("Failed", "hook-failed"),
        };
        hook.last_run.phase = phase.into();
        if policies.iter().any(|p| p == policy) {
            for j in 0..plan.len() {
                plan.delete(conn, ctx, j).await?;
            }
        }
        if let Some(why) = failure {
            return Err(ctx.error(format!("the {what} failed: {why}")));
        }
        logs.line(LogLine::system(format!("the {what} succeeded")));
    }
    Ok(None)
}

enum Done {
    Succeeded,
    Failed(String),
    Stopped(StopReason),
}

/// A condition `kind` with status `True` in `status.conditions`: its message.
fn condition(obj: &Value, kind: &str) -> Option<String> {
    obj.pointer("/status/conditions")?.as_array()?.iter().find_map(|c| {
        (c.get("type")?.as_str()? == kind && c.get("status")?.as_str()? == "True")
            .then(|| c.get("message").and_then(Value::as_str).unwrap_or("").to_owned())
    })
}

/// Waits for a Job to complete or a Pod to finish; other kinds are done once applied.
async fn wait_done(
    conn: &Connection,
    ctx: &Ctx<'_>,
    plan: &Plan,
    j: usize,
    stop: &mut StopSignal,
) -> Result<Done, DeployError> {
    let (group, kind, _, _) = plan.identity(j);
    let job = group == "batch" && kind == "Job";
    let pod = group.is_empty() && kind == "Pod";
    if !job && !pod {
        return Ok(Done::Succeeded);
    }
    loop {
        if let Some(r) = *stop.borrow_and_update() {
            return Ok(Done::Stopped(r.reason));
        }
        let Some(obj) = plan.get(conn, ctx, j).await? else {
            return Ok(Done::Failed(format!("{} was deleted while it ran", plan.object(j))));
        };
        let obj = serde_json::to_value(&obj).unwrap_or_default();
        if job {
            if condition(&obj, "Complete").is_some() {
                return Ok(Done::Succeeded);
            }
            if let Some(why) = condition(&obj, "Failed") {
                return Ok(Done::Failed(format!("{}: {why}", plan.object(j))));
            }
        } else {
            match obj.pointer("/status/phase").and_then(Value::as_str) {
                Some("Succeeded") => return Ok(Done::Succeeded),
                Some("Failed") => return Ok(Done::Failed(format!("{}: the pod failed", plan.object(j)))),
                _ => {}
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn wait_gone(conn: &Connection, ctx: &Ctx<'_>, plan: &Plan, j: usize) -> Result<(), DeployError> {
    let deadline = tokio::time::Instant::now() + GONE_WAIT;
    while plan.get(conn, ctx, j).await?.is_some() {
        if tokio::time::Instant::now() >= deadline {
            return Err(ctx.error(format!(
                "{} was deleted (hook policy before-hook-creation) but is still there after {} s",
                plan.object(j),
                GONE_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}
