//! An executor whose tasks do what a test says, on tokio's clock, so engine tests run
//! on a paused clock in microseconds and never sleep for real.

use crate::{
    BoxFuture, Executor, ExecutorError, Exit, Leftover, LogLine, LogResume, LogSink, StopSignal, Stream, TaskSpec,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one attempt of a task does.
#[derive(Clone, Debug, Default)]
pub struct Behavior {
    /// How long it runs before exiting by itself.
    pub runs_for: Duration,
    pub exit_code: i32,
    /// Printed on stdout at the start.
    pub lines: Vec<String>,
    /// Appended to `$WHARF_OUTPUT` as `KEY=VALUE` lines.
    pub outputs: Vec<(String, String)>,
    /// Ignores the polite stop and needs the forced one after the grace.
    pub ignores_term: bool,
    /// `run` returns an executor error instead of running.
    pub cannot_start: bool,
    /// Runs until it is stopped (`runs_for` does not count): no timer ends it, so a
    /// paused clock that jumps ahead cannot either.
    pub until_stopped: bool,
    /// Reports [`Phase::Pending`](crate::Phase) with this reason for `pending_for` first
    /// (a pod the scheduler cannot place yet), then [`Phase::Running`](crate::Phase).
    pub pending: Option<(String, Duration)>,
}

/// One `run` call as the fake saw it.
#[derive(Clone, Debug)]
pub struct Call {
    pub spec: TaskSpec,
    pub started: tokio::time::Instant,
    pub ended: tokio::time::Instant,
}

#[derive(Default)]
pub struct FakeExecutor {
    /// Behaviours per task name, one per attempt; the last repeats.
    behaviors: Mutex<HashMap<String, Vec<Behavior>>>,
    calls: Mutex<Vec<Call>>,
    /// The specs of `run` calls as they begin (calls are recorded as they end).
    begun: Mutex<Vec<TaskSpec>>,
    /// What `adopt` finds per task name (taken once), and the resume points it was given.
    adoptable: Mutex<HashMap<String, Behavior>>,
    adopted: Mutex<Vec<(TaskSpec, LogResume)>>,
    /// What `leftovers` reports, and the ids `discard` was called with.
    left: Mutex<Vec<Leftover>>,
    discarded: Mutex<Vec<String>>,
    /// Task types it claims to support; empty means only `script`.
    pub types: Vec<&'static str>,
}

impl FakeExecutor {
    pub fn new() -> Arc<Self> {
        Arc::new(FakeExecutor::default())
    }

    /// Sets what attempts of `task` do, in order.
    pub fn on(&self, task: &str, attempts: Vec<Behavior>) {
        self.behaviors.lock().unwrap().insert(task.to_owned(), attempts);
    }

    /// Makes `adopt` find a still running attempt of `task` that goes on as `behavior`.
    pub fn on_adopt(&self, task: &str, behavior: Behavior) {
        self.adoptable.lock().unwrap().insert(task.to_owned(), behavior);
    }

    /// Makes `leftovers` report `leftover` (as if an earlier server had started it).
    pub fn leave(&self, leftover: Leftover) {
        self.left.lock().unwrap().push(leftover);
    }

    /// The ids `discard` was called with, in order.
    pub fn discarded(&self) -> Vec<String> {
        self.discarded.lock().unwrap().clone()
    }

    /// The `adopt` calls that found something, with the resume point each was given.
    pub fn adopted(&self) -> Vec<(TaskSpec, LogResume)> {
        self.adopted.lock().unwrap().clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The `run` calls begun so far, ended or not, in order.
    pub fn begun(&self) -> Vec<TaskSpec> {
        self.begun.lock().unwrap().clone()
    }

    pub fn calls_of(&self, task: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.spec.task == task).collect()
    }

    fn behavior(&self, task: &str, attempt: u32) -> Behavior {
        let map = self.behaviors.lock().unwrap();
        match map.get(task) {
            Some(list) if !list.is_empty() => list[(attempt as usize - 1).min(list.len() - 1)].clone(),
            _ => Behavior::default(),
        }
    }
}

impl Executor for FakeExecutor {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn supports(&self, task_type: &str) -> Result<(), ExecutorError> {
        if task_type == "script" || self.types.contains(&task_type) {
            Ok(())
        } else {
            Err(ExecutorError::Unsupported(format!("the fake executor does not run `{task_type}` tasks")))
        }
    }

    fn run<'a>(
        &'a self,
        spec: TaskSpec,
        logs: Arc<dyn LogSink>,
        stop: StopSignal,
    ) -> BoxFuture<'a, Result<Exit, ExecutorError>> {
        let behavior = self.behavior(&spec.task, spec.attempt);
        Box::pin(self.play(spec, behavior, logs, stop))
    }

    fn adopt<'a>(
        &'a self,
        spec: TaskSpec,
        logs: Arc<dyn LogSink>,
        stop: StopSignal,
        resume: LogResume,
    ) -> BoxFuture<'a, Result<Option<Exit>, ExecutorError>> {
        let found = self.adoptable.lock().unwrap().remove(&spec.task);
        Box::pin(async move {
            let Some(behavior) = found else { return Ok(None) };
            self.adopted.lock().unwrap().push((spec.clone(), resume));
            self.play(spec, behavior, logs, stop).await.map(Some)
        })
    }

    /// What [`FakeExecutor::leave`] left, whatever `label` is.
    fn leftovers<'a>(&'a self, label: &'a str) -> BoxFuture<'a, Result<Vec<Leftover>, ExecutorError>> {
        let _ = label;
        let left = self.left.lock().unwrap().clone();
        Box::pin(async move { Ok(left) })
    }

    fn discard<'a>(&'a self, leftover: &'a Leftover) -> BoxFuture<'a, Result<(), ExecutorError>> {
        self.discarded.lock().unwrap().push(leftover.id.clone());
        self.left.lock().unwrap().retain(|l| l.id != leftover.id);
        Box::pin(async { Ok(()) })
    }
}

impl FakeExecutor {
    async fn play(
        &self,
        spec: TaskSpec,
        behavior: Behavior,
        logs: Arc<dyn LogSink>,
        mut stop: StopSignal,
    ) -> Result<Exit, ExecutorError> {
        {
            let started = tokio::time::Instant::now();
            self.begun.lock().unwrap().push(spec.clone());
            if let Some((reason, pending_for)) = &behavior.pending {
                logs.phase(crate::Phase::Pending { reason: reason.clone() });
                tokio::select! {
                    () = tokio::time::sleep(*pending_for) => logs.phase(crate::Phase::Running),
                    request = stop.wait_for(Option::is_some) => {
                        let reason = request.ok().and_then(|r| *r).map(|r| r.reason);
                        return Ok(Exit { code: None, signal: None, stopped: reason });
                    }
                }
            }
            if behavior.cannot_start {
                return Err(ExecutorError::Start {
                    message: format!("fake: {} cannot start", spec.task),
                    source: None,
                });
            }
            for text in &behavior.lines {
                logs.line(LogLine {
                    continued: false,
                    at: jiff::Timestamp::now(),
                    stream: Stream::Stdout,
                    text: text.clone(),
                });
            }
            if !behavior.outputs.is_empty() {
                let body: String = behavior.outputs.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
                std::fs::write(&spec.output_file, body)
                    .map_err(|source| ExecutorError::Io { context: "fake: writing outputs".into(), source })?;
            }
            let runs_for = behavior.runs_for;
            let until_stopped = behavior.until_stopped;
            let finished = async move {
                if until_stopped {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(runs_for).await;
            };
            tokio::pin!(finished);
            let exit = loop {
                let request = *stop.borrow_and_update();
                if let Some(request) = request {
                    if behavior.ignores_term {
                        tokio::select! {
                            _ = &mut finished => break Exit { code: Some(behavior.exit_code), signal: None, stopped: Some(request.reason) },
                            _ = tokio::time::sleep(request.grace) => break Exit { code: None, signal: Some(9), stopped: Some(request.reason) },
                        }
                    }
                    break Exit { code: None, signal: Some(15), stopped: Some(request.reason) };
                }
                tokio::select! {
                    _ = &mut finished => break Exit { code: Some(behavior.exit_code), signal: None, stopped: None },
                    changed = stop.changed() => {
                        if changed.is_err() {
                            // The engine dropped its side: nobody can stop us any more.
                            (&mut finished).await;
                            break Exit { code: Some(behavior.exit_code), signal: None, stopped: None };
                        }
                    }
                }
            };
            self.calls.lock().unwrap().push(Call { spec, started, ended: tokio::time::Instant::now() });
            Ok(exit)
        }
    }
}
