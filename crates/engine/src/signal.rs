//! The seam through which a stage waits for signals before it starts (its `wait:`): the
//! engine asks a [`SignalGate`] for the signals that came for one stage and waits for
//! its answer, the wait's own `timeout` or a stop, whichever comes first. The gate (the
//! server's lifecycle: the store, the stage hook URL, channels) is handed in per run
//! with [`RunRequest::signals`](crate::RunRequest::signals); `wharf run` has none and
//! refuses waiting stages at start.

use std::collections::BTreeMap;
use wharf_core::model::StageWait;
use wharf_executor::BoxFuture;

/// One stage that waits, as the gate needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignalAsk {
    pub stage: String,
    pub wait: StageWait,
}

/// One signal that came for a stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signal {
    /// `hook` or `channel:<name>` (see [`StageWait::sources`]).
    pub source: String,
    /// The values it carried (the hook's JSON body, the message's outputs).
    pub values: BTreeMap<String, String>,
}

/// Where a waiting stage's signals come from.
///
/// Contract: [`arrived`](Self::arrived) is called once when the stage starts waiting,
/// once more by a restarted server for a stage that was waiting when the previous
/// process ended, and once for a stage that ended before a restart (to restore its
/// values); signals stored before count. It resolves with the signals that satisfy the
/// wait ([`StageWait::satisfied_by`]), in the order they came, as soon as they do; it
/// may never resolve. The engine drops the future on a timeout or a stop; dropping must
/// be harmless. `Err` fails the stage with its words.
///
/// [`send`](Self::send) is called when a stage with `send:` succeeds (with its tasks'
/// outputs) and when a run of a pipeline with `send:` succeeds (with every output); it
/// resolves once the message is handed on (the waiting stages told, the triggered
/// pipelines' runs queued), with a line for the run's log; `Err` is logged, and never
/// fails the run.
pub trait SignalGate: Send + Sync {
    fn arrived(&self, ask: SignalAsk) -> BoxFuture<'static, Result<Vec<Signal>, String>>;
    fn send(&self, channel: String, values: BTreeMap<String, String>) -> BoxFuture<'static, Result<String, String>>;
}
