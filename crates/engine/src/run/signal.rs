//! A stage's `wait:`: the stage goes `running` → `waiting` and waits for the run's
//! [`SignalGate`](crate::signal::SignalGate), the wait's own `timeout` or a stop. It
//! holds no executor slot and no running clock, so the wait counts against neither the
//! pipeline's nor the stage's timeout. The signals' values named in `params` become
//! variables of this stage and the ones after it. A re-attached run's stage that was
//! waiting goes on waiting, the time already waited counted; one that ended before the
//! restart gets its values back from the gate.

use super::stop::{ended_status, stop_requested};
use super::{RunState, StopRx};
use crate::Part;
use crate::signal::{Signal, SignalAsk};
use jiff::Timestamp;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use wharf_core::model::{Stage, StageWait, WaitFor};
use wharf_core::status::Status;

impl RunState {
    /// Waits for stage `s`'s signals. `Ok` when they came (the stage is `running`
    /// again); `Err` with the stage's final status when it ended waiting.
    pub(super) async fn wait_for_signals(
        self: &Arc<Self>,
        s: usize,
        stage: &Stage,
        wait: &StageWait,
        mut stop: StopRx,
    ) -> Result<(), Status> {
        let part = Part::Stage(s);
        let resumed = self.status_of(part) == Status::Waiting;
        if !resumed {
            self.set(part, Status::Running, None);
            self.set(part, Status::Waiting, None);
        }
        let Some(gate) = self.request.signals.clone() else {
            let why = "a stage that waits for signals needs the Wharf server".to_owned();
            self.set(part, Status::Failed, Some(why));
            return Err(Status::Failed);
        };
        let sources = wait.sources();
        self.system_run(format!(
            "stage `{}` {} for {} of: {}{}",
            stage.name,
            if resumed { "still waiting, after a server restart," } else { "waiting" },
            match wait.need {
                WaitFor::Any => "any",
                WaitFor::All => "all",
            },
            sources.join(", "),
            wait.timeout.map(|t| format!(" (timeout {t})")).unwrap_or_default()
        ));
        // The time waited before a restart counts against the wait's own timeout.
        let waited = if resumed {
            let record = self.record.lock().unwrap();
            let since = record.stages[s].progress.history.iter().rev().find(|h| h.status == Status::Waiting);
            since.and_then(|h| Timestamp::now().duration_since(h.at).try_into().ok()).unwrap_or_default()
        } else {
            Duration::ZERO
        };
        let limit = wait.timeout.map_or(Duration::MAX / 4, |d| d.as_std().saturating_sub(waited));
        let arrived = gate.arrived(SignalAsk { stage: stage.name.to_string(), wait: wait.clone() });
        let (status, reason) = tokio::select! {
            biased;
            request = stop_requested(&mut stop) => {
                let why = match self.run_end.lock().unwrap().clone() {
                    Some((_, why)) => why,
                    None => request.reason.to_string(),
                };
                (ended_status(request.reason), why)
            }
            _ = tokio::time::sleep(limit), if wait.timeout.is_some() => {
                let limit = wait.timeout.map(|d| d.to_string()).unwrap_or_default();
                (Status::TimedOut, format!("timed out: no signal started the stage within its wait timeout of {limit}"))
            }
            result = arrived => match result {
                Err(why) => (Status::Failed, why),
                Ok(signals) => {
                    self.take_values(stage, wait, &signals);
                    self.set(part, Status::Running, None);
                    return Ok(());
                }
            },
        };
        self.system_run(format!("stage `{}`: {reason}", stage.name));
        self.set(part, status, Some(reason));
        Err(status)
    }

    /// A stage that waited and ended before a restart: its values back into the scope.
    pub(super) async fn restore_signals(self: &Arc<Self>, stage: &Stage, wait: &StageWait) {
        let Some(gate) = self.request.signals.clone() else { return };
        let ask = SignalAsk { stage: stage.name.to_string(), wait: wait.clone() };
        // Stored signals answer at once; a stage that never got them has nothing to give.
        if let Ok(Ok(signals)) = tokio::time::timeout(Duration::from_secs(5), gate.arrived(ask)).await {
            self.take_values(stage, wait, &signals);
        }
    }

    /// The `params` from `signals` (a later signal's value wins) as variables.
    fn take_values(&self, stage: &Stage, wait: &StageWait, signals: &[Signal]) {
        let came: Vec<&str> = signals.iter().map(|s| s.source.as_str()).collect();
        let mut scope = self.scope.lock().unwrap();
        let mut missing = Vec::new();
        for name in &wait.params {
            let value = signals.iter().rev().find_map(|s| s.values.get(name));
            if value.is_none() {
                missing.push(name.as_str());
            }
            scope.names.insert(name.clone(), value.cloned().unwrap_or_default());
        }
        drop(scope);
        let note =
            if missing.is_empty() { String::new() } else { format!("; no signal gave {} (empty)", missing.join(", ")) };
        self.system_run(format!("stage `{}` started by {}{note}", stage.name, came.join(", ")));
    }

    /// Sends the outputs of `tasks` (later tasks' values win) on `channel`.
    pub(super) async fn send_outputs<'a>(self: &Arc<Self>, channel: &str, tasks: impl Iterator<Item = &'a str>) {
        let values: BTreeMap<String, String> = {
            let scope = self.scope.lock().unwrap();
            tasks
                .filter_map(|t| scope.outputs.get(t))
                .flat_map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())))
                .collect()
        };
        let Some(gate) = self.request.signals.clone() else {
            self.system_run(format!("not sent to channel `{channel}`: channels need the Wharf server"));
            return;
        };
        match gate.send(channel.to_owned(), values).await {
            Ok(line) => self.system_run(line),
            Err(why) => self.system_run(format!("channel `{channel}`: {why}")),
        }
    }
}
