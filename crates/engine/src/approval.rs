//! The seam through which an `approval` task waits for people: the engine asks an
//! [`ApprovalGate`] for the decisions on one task and waits for its answer, its own
//! `timeout` or a stop, whichever comes first. The gate (the server's lifecycle: the
//! store, the API that takes decisions) is handed in per run with
//! [`RunRequest::approvals`](crate::RunRequest::approvals), so the engine never sees
//! HTTP, users or the store; `wharf run` has none and refuses approval tasks at start.

use wharf_core::approval::Decision;
use wharf_core::model::ApprovalTask;
use wharf_executor::BoxFuture;

/// One approval task that waits, as the gate needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalAsk {
    /// The stage's and the task's names (task names are unique in a pipeline).
    pub stage: String,
    pub task: String,
    /// The task's rule, its `message` rendered.
    pub rule: ApprovalTask,
}

/// Where an approval's decisions come from.
///
/// Contract: [`decided`](Self::decided) is called once when the task starts waiting,
/// and once more by a restarted server for a task that was waiting when the previous
/// process ended; decisions made before (stored) count. It resolves with every
/// decision given, in order, as soon as they decide the task
/// ([`wharf_core::approval::outcome`] is `Some`); it may never resolve. The engine drops
/// the future when the task times out or is stopped; dropping must be harmless.
/// `Err` fails the task with its words (the store could not be read, say).
pub trait ApprovalGate: Send + Sync {
    fn decided(&self, ask: ApprovalAsk) -> BoxFuture<'static, Result<Vec<Decision>, String>>;
}
