//! Stage triggers and channels on the lifecycle's side. Each run gets a
//! [`SignalGate`] that reads the stored signals of its waiting stage and waits for the
//! next one. Signals come from a stage's hook URL ([`Lifecycle::hook_signal`]) or a
//! message on a channel ([`Lifecycle::publish`], sent by a stage or pipeline with
//! `send:`); a message also starts the pipelines of the project whose trigger is that
//! channel, with its values as their parameters. The signals live in the store, so a
//! restarted server's waiting stage finds those that came before. Channels belong to a
//! project: a message never reaches another project's pipelines.

use crate::{Inner, Lifecycle};
use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use wharf_core::model::Pipeline;
use wharf_core::run::Cause;
use wharf_core::status::Status;
use wharf_engine::signal::{Signal, SignalAsk, SignalGate};
use wharf_executor::BoxFuture;
use wharf_store::{PipelineFilter, PipelineRow, StoreError};

/// Most values a signal carries, and the longest value kept (characters).
pub const MAX_SIGNAL_VALUES: usize = 100;
pub const MAX_SIGNAL_VALUE_CHARS: usize = 4096;

/// Most pipelines of one project looked at for a channel (the licence bounds them too).
const MAX_PIPELINES: i64 = 10_000;

/// The signal gate of one run.
struct RunSignals {
    run_id: i64,
    project: String,
    pipeline: String,
    number: i64,
    lifecycle: Weak<Inner>,
}

impl SignalGate for RunSignals {
    fn arrived(&self, ask: SignalAsk) -> BoxFuture<'static, Result<Vec<Signal>, String>> {
        let (run_id, lifecycle) = (self.run_id, self.lifecycle.clone());
        Box::pin(async move {
            let Some(inner) = lifecycle.upgrade() else { return std::future::pending().await };
            let lifecycle = Lifecycle(inner);
            let desk = lifecycle.0.signals.clone();
            let store = lifecycle.store().clone();
            drop(lifecycle);
            let bell = desk.bell(run_id, &ask.stage);
            // The bell goes however the wait ends: signalled, or dropped by the engine
            // (a stop, the wait's timeout).
            let _leave = crate::approvals::Leave { desk: desk.clone(), run_id, task: ask.stage.clone() };
            let wanted = ask.wait.sources();
            loop {
                let rung = bell.notified();
                tokio::pin!(rung);
                // Registered before the store is read, so a signal stored in between
                // still wakes this loop.
                rung.as_mut().enable();
                let stored = match store.signals(run_id, &ask.stage).await {
                    Ok(stored) => stored,
                    Err(e) => return Err(format!("cannot read the stage's signals: {e}")),
                };
                if ask.wait.satisfied_by(stored.iter().map(|(source, _)| source.as_str())) {
                    let signals = stored.into_iter().filter(|(source, _)| wanted.contains(source));
                    return Ok(signals.map(|(source, values)| Signal { source, values }).collect());
                }
                rung.await;
            }
        })
    }

    fn send(&self, channel: String, values: BTreeMap<String, String>) -> BoxFuture<'static, Result<String, String>> {
        let lifecycle = self.lifecycle.clone();
        let from = (self.project.clone(), self.pipeline.clone(), self.number);
        Box::pin(async move {
            let Some(inner) = lifecycle.upgrade() else { return Err("the server is shutting down".into()) };
            let lifecycle = Lifecycle(inner);
            let (project, pipeline, number) = from;
            let cause = Cause::Channel { channel: channel.clone(), pipeline, number: number as u64 };
            let sent = lifecycle.publish(&project, &channel, &values, cause).await.map_err(|e| e.to_string())?;
            Ok(sent.describe(&channel, values.len()))
        })
    }
}

/// Where a message or a hook call went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Runs whose waiting stage got the signal: (pipeline, run number, stage).
    pub stages: Vec<(String, i64, String)>,
    /// Runs started: (pipeline, run number).
    pub started: Vec<(String, i64)>,
    /// Pipelines whose run could not start, with why.
    pub refused: Vec<(String, String)>,
}

impl Delivered {
    /// Where a message of `values` values on `channel` went, in a sentence.
    pub fn describe(&self, channel: &str, values: usize) -> String {
        let list = |items: Vec<String>| if items.is_empty() { "none".to_owned() } else { items.join(", ") };
        let mut line = format!(
            "sent {values} value(s) to channel `{channel}`: waiting stages told: {}; runs started: {}",
            list(self.stages.iter().map(|(p, n, s)| format!("{p}#{n} {s}")).collect()),
            list(self.started.iter().map(|(p, n)| format!("{p}#{n}")).collect()),
        );
        for (pipeline, why) in &self.refused {
            line.push_str(&format!("; {pipeline} not started: {why}"));
        }
        line
    }
}

/// Keeps at most [`MAX_SIGNAL_VALUES`] values, each cut to [`MAX_SIGNAL_VALUE_CHARS`].
pub fn bounded(values: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    values
        .iter()
        .take(MAX_SIGNAL_VALUES)
        .map(|(k, v)| (k.clone(), v.chars().take(MAX_SIGNAL_VALUE_CHARS).collect()))
        .collect()
}

impl Lifecycle {
    pub(crate) fn signal_gate(&self, run_id: i64, pipeline: &PipelineRow, number: i64) -> Arc<dyn SignalGate> {
        Arc::new(RunSignals {
            run_id,
            project: pipeline.project.clone(),
            pipeline: pipeline.name.clone(),
            number,
            lifecycle: self.downgrade(),
        })
    }

    /// The runs in progress of `pipelines` with the stage whose wait `wants` says yes
    /// waiting: (run id, pipeline name, run number, stage name).
    async fn waiting_stages(
        &self,
        pipelines: &[i64],
        wants: impl Fn(&wharf_core::model::StageWait, &str) -> bool,
    ) -> Result<Vec<(i64, String, i64, String)>, StoreError> {
        let mut out = Vec::new();
        for row in self.store().runs_with_status(&[Status::Running]).await? {
            if !pipelines.contains(&row.summary.pipeline_id) {
                continue;
            }
            let Ok(model) = self.pipeline_version(row.summary.pipeline_id, row.summary.version).await else {
                continue;
            };
            for (stage, recorded) in model.stages.iter().zip(&row.record.stages) {
                if recorded.progress.status != Status::Waiting {
                    continue;
                }
                if let Some(wait) = &stage.wait
                    && wants(wait, stage.name.as_str())
                {
                    out.push((row.summary.id, row.pipeline.clone(), row.summary.number, stage.name.to_string()));
                }
            }
        }
        Ok(out)
    }

    /// A call to the hook URL of `stage` of pipeline `pipeline_id`: the signal goes to
    /// every run of it whose stage waits now. Empty when none waits.
    pub async fn hook_signal(
        &self,
        pipeline_id: i64,
        stage: &str,
        values: &BTreeMap<String, String>,
    ) -> Result<Vec<(String, i64, String)>, StoreError> {
        let values = bounded(values);
        let waiting = self.waiting_stages(&[pipeline_id], |wait, name| wait.hook && name == stage).await?;
        for (run_id, _, _, stage) in &waiting {
            self.store().add_signal(*run_id, stage, "hook", &values).await?;
            self.0.signals.ring(*run_id, stage);
            self.announce_run(*run_id).await;
        }
        tracing::info!(pipeline = pipeline_id, stage, runs = waiting.len(), "stage hook called");
        Ok(waiting.into_iter().map(|(_, p, n, s)| (p, n, s)).collect())
    }

    /// A message on `channel` of `project`: every waiting stage of the project's runs
    /// that waits for the channel gets it, and every active pipeline of the project
    /// whose trigger is the channel starts a run with the values it declares as
    /// parameters (the others are left out).
    pub async fn publish(
        &self,
        project: &str,
        channel: &str,
        values: &BTreeMap<String, String>,
        cause: Cause,
    ) -> Result<Delivered, StoreError> {
        let values = bounded(values);
        let (rows, _) = self
            .store()
            .pipelines_filtered(&PipelineFilter::Projects(vec![project.to_owned()]), MAX_PIPELINES, 0)
            .await?;
        let ids: Vec<i64> = rows.iter().map(|(p, _)| p.id).collect();
        let source = format!("channel:{channel}");
        let mut delivered = Delivered::default();
        for (run_id, pipeline, number, stage) in
            self.waiting_stages(&ids, |wait, _| wait.channels.iter().any(|c| c == channel)).await?
        {
            self.store().add_signal(run_id, &stage, &source, &values).await?;
            self.0.signals.ring(run_id, &stage);
            self.announce_run(run_id).await;
            delivered.stages.push((pipeline, number, stage));
        }
        for (row, _) in rows {
            let Ok(model) = self.pipeline_version(row.id, row.version).await else { continue };
            if !row.active || !model.channel_triggers().contains(&channel) {
                continue;
            }
            let given: BTreeMap<String, String> = values
                .iter()
                .filter(|(k, _)| model.parameters.iter().any(|p| p.name.as_str() == k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            match self.enqueue(&row, row.version, cause.clone(), given, None, None).await {
                Ok(accepted) => delivered.started.push((row.name.clone(), accepted.number)),
                Err(e) => delivered.refused.push((row.name.clone(), e.to_string())),
            }
        }
        tracing::info!(
            project,
            channel,
            stages = delivered.stages.len(),
            runs = delivered.started.len(),
            "channel message"
        );
        Ok(delivered)
    }
}

/// The loops `candidate` (about to be saved in its project) would close among
/// `others` (the project's other pipelines): a pipeline that sends to a channel starts
/// the pipelines triggered by it, so a chain that comes back to where it began would
/// run for ever. `None` when there is none; else the chain, `a → b → a`.
pub fn channel_loop(candidate: &Pipeline, others: &[Arc<Pipeline>]) -> Option<String> {
    let all: Vec<&Pipeline> = std::iter::once(candidate)
        .chain(others.iter().map(|p| p.as_ref()).filter(|p| p.name != candidate.name))
        .collect();
    let starts = |from: &Pipeline, to: &Pipeline| from.sends().iter().any(|c| to.channel_triggers().contains(c));
    // Depth-first from the candidate; every loop through it is found this way, and
    // loops that do not pass through it were refused when they were saved.
    let mut path = vec![0usize];
    let mut next = vec![0usize];
    let mut seen = vec![false; all.len()];
    seen[0] = true;
    while let Some(&at) = path.last() {
        let i = *next.last().unwrap();
        if i >= all.len() {
            path.pop();
            next.pop();
            continue;
        }
        *next.last_mut().unwrap() += 1;
        if !starts(all[at], all[i]) {
            continue;
        }
        if i == 0 {
            let mut names: Vec<&str> = path.iter().map(|&p| all[p].name.as_str()).collect();
            names.push(all[0].name.as_str());
            return Some(names.join(" → "));
        }
        if !seen[i] {
            seen[i] = true;
            path.push(i);
            next.push(0);
        }
    }
    None
}
