//! After a restart: settling the runs the previous server process left behind.
//!
//! - What its tasks left running is asked of every executor
//!   ([`Executor::leftovers`](wharf_executor::Executor::leftovers)), by this data
//!   directory's [`RUN_LABEL`] values (other servers may share the machine or the daemon).
//!   What cannot be taken over (host processes) is discarded at once.
//! - A run with leftovers that can be taken over (containers of its running tasks) is
//!   continued: the engine adopts them, resuming their logs where the stored ones end.
//! - A run that had executed nothing yet (it waited for a slot) is queued again under
//!   its own number.
//! - Any other started run is failed as interrupted, or started again as a new run when
//!   its pipeline says `retry_on_restart: true`; its failure is notified as any run's end.
//! - A run with an `approval` task waiting is continued too: the task goes on waiting
//!   (the decisions are in the store), whatever its other running tasks left.
//! - Queued runs go back in the queue; leftovers nobody adopted are discarded.
//!
//! On PostgreSQL (replicas) the same rules settle each run taken over from a replica
//! that died ([`crate::replicas`]), under the new claim's fence, and only such runs:
//! never one a live replica holds.

use crate::dispatch::{Active, Queued, RequestBasics, request};
use crate::replicas::Hold;
use crate::{Lifecycle, RUN_LABEL};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use tokio::sync::watch;
use wharf_core::model::ExecutorKind;
use wharf_core::run::Cause;
use wharf_core::settle::INTERRUPTED;
use wharf_core::status::Status;
use wharf_engine::{Resume, RunRequest, Workspace};
use wharf_executor::{Leftover, LogResume, Stream};
use wharf_store::RunRow;
use wharf_store::logs::LogKey;

/// A leftover and the executor kind that reported it.
pub(crate) struct Found {
    pub(crate) kind: ExecutorKind,
    pub(crate) leftover: Leftover,
}

impl Lifecycle {
    /// See the module documentation.
    pub(crate) async fn recover(&self) -> Result<(), wharf_store::StoreError> {
        let interrupted = self.store().runs_with_status(&[Status::Pending, Status::Running, Status::Waiting]).await?;
        // At start nothing of ours runs yet, so everything labelled with this data
        // directory is a leftover of the previous process (whatever its run's stored
        // status says: a run cut before its start was saved still looks queued).
        let found = self.leftovers().await;
        self.settle_runs(interrupted.into_iter().map(|row| (row, None)).collect(), found).await?;
        let queued = self.store().runs_with_status(&[Status::Queued]).await?;
        let mut queue = self.0.queue.lock().unwrap();
        for row in queued {
            if !queue.iter().any(|q| q.run_id == row.summary.id) {
                queue.push_back(Queued::from_row(&row));
            }
        }
        Ok(())
    }

    /// Settles each of `runs` (with this replica's claim on it, on PostgreSQL) by the
    /// rules of the module docs, with `found`, what their tasks left; discards what
    /// nobody adopts.
    pub(crate) async fn settle_runs(
        &self,
        runs: Vec<(RunRow, Option<Arc<Hold>>)>,
        found: Vec<Found>,
    ) -> Result<(), wharf_store::StoreError> {
        // Runs whose tasks left something executed something, whatever their stored
        // record (written every 200 ms) still says: they are never queued again.
        let ran: HashSet<String> = found.iter().map(|f| f.leftover.owner.clone()).collect();
        let (adoptable, doomed): (Vec<Found>, Vec<Found>) =
            found.into_iter().partition(|f| f.leftover.attempt.is_some());
        self.discard(&doomed).await;
        let mut adopted: HashSet<String> = HashSet::new();
        for (row, hold) in runs {
            if let Some(ids) = self.reattach(&row, &adoptable, hold.clone()).await {
                adopted.extend(ids);
                continue;
            }
            if !ran.contains(&self.run_label(row.summary.id)) && self.requeue_unstarted(&row, hold.as_deref()).await {
                continue;
            }
            self.settle_interrupted(&row, hold.as_deref()).await?;
        }
        let unadopted: Vec<Found> = adoptable.into_iter().filter(|f| !adopted.contains(&f.leftover.id)).collect();
        self.discard(&unadopted).await;
        Ok(())
    }

    /// What every executor reports its tasks left, this server's only.
    pub(crate) async fn leftovers(&self) -> Vec<Found> {
        let mut found = Vec::new();
        for (kind, engine) in self.0.engines.all() {
            match engine.executor().leftovers(RUN_LABEL).await {
                Ok(leftovers) => found.extend(
                    leftovers
                        .into_iter()
                        .filter(|l| l.owner.starts_with(self.label_prefix()))
                        .map(|leftover| Found { kind: *kind, leftover }),
                ),
                Err(e) => tracing::error!(
                    executor = kind.as_str(),
                    error = %e,
                    "cannot list what the previous server's tasks left"
                ),
            }
        }
        found
    }

    pub(crate) async fn discard(&self, found: &[Found]) {
        for Found { kind, leftover } in found {
            let Some((_, engine)) = self.0.engines.all().find(|(k, _)| k == kind) else { continue };
            match engine.executor().discard(leftover).await {
                Ok(()) => tracing::warn!(
                    executor = kind.as_str(),
                    id = %leftover.id,
                    run = %leftover.owner,
                    "ended what a task of the previous server left running (its run is not continued)"
                ),
                Err(e) => tracing::error!(
                    executor = kind.as_str(),
                    id = %leftover.id,
                    error = %e,
                    "cannot end what a task of the previous server left"
                ),
            }
        }
    }

    /// Fails a run the previous process had started ([`INTERRUPTED`]), and starts it
    /// again as a new run when its pipeline says `retry_on_restart: true`.
    async fn settle_interrupted(&self, row: &RunRow, hold: Option<&Hold>) -> Result<(), wharf_store::StoreError> {
        let mut record = row.record.clone();
        record.end_interrupted(jiff::Timestamp::now());
        let again = match self.store().pipeline(row.summary.pipeline_id).await {
            Ok(p) => match self.pipeline_version(p.id, row.summary.version).await {
                Ok(model) if model.retry_on_restart => Some(p),
                _ => None,
            },
            Err(_) => None,
        };
        if let Some(p) = again {
            let cause = Cause::Rerun { of: row.summary.number as u64 };
            let basics = RequestBasics::of_row(row);
            let started = self
                .enqueue_at(&p, row.summary.version, cause, basics.parameters, basics.commit, basics.git_ref, None)
                .await;
            record.reason = Some(match started {
                Ok(new) => format!("{INTERRUPTED}; started again as run #{}", new.number),
                Err(e) => format!("{INTERRUPTED}; could not start it again: {e}"),
            });
        }
        let why = record.reason.clone().unwrap_or_else(|| INTERRUPTED.to_owned());
        self.system_line(row.summary.id, &why);
        self.save_held(row.summary.id, &record, hold).await?;
        tracing::warn!(run = row.summary.id, "{why}");
        // Its end is told like any other run's, once stored.
        self.0.shared.notify(crate::notify::RunEvent {
            run_id: row.summary.id,
            pipeline_id: row.summary.pipeline_id,
            version: row.summary.version,
            record,
            kind: crate::notify::RunEventKind::Ended,
        });
        Ok(())
    }

    /// Appends a line of Wharf's own to a run's log.
    fn system_line(&self, run_id: i64, text: &str) {
        if let Ok(mut w) = self.logs().writer(run_id, LogKey::Run) {
            let _ = w.append(&wharf_executor::stored::line(jiff::Timestamp::now(), Stream::System, text));
        }
    }

    /// Puts back in the queue, under its own number, a run the previous process had
    /// taken from the queue but that had executed nothing yet (it waited for a slot):
    /// its record is made afresh, `queued`, and the queue sweep of `recover` picks it
    /// up. Retries of a failed stage, and runs that got further, are left to the
    /// interrupted-run rules (`false`).
    async fn requeue_unstarted(&self, row: &RunRow, hold: Option<&Hold>) -> bool {
        if row.summary.retry_of.is_some() || !row.record.executed_nothing() {
            return false;
        }
        // A stage waiting for signals goes on waiting (re-attached), its wait counted.
        if row.record.stages.iter().any(|s| s.progress.status == Status::Waiting) {
            return false;
        }
        let Ok(model) = self.pipeline_version(row.summary.pipeline_id, row.summary.version).await else {
            return false;
        };
        let record = wharf_engine::initial_record(&request(model, RequestBasics::of_row(row)));
        if let Err(e) = self.save_held(row.summary.id, &record, hold).await {
            tracing::error!(run = row.summary.id, error = %e, "cannot queue an unstarted run again");
            return false;
        }
        // Queued again: claimable at once, by any replica.
        if let Some(hold) = hold {
            let _ = self.store().release_lease(row.summary.id, hold.fence).await;
        }
        let why = "the server restarted before this run had started any task; it is queued again";
        self.system_line(row.summary.id, why);
        tracing::warn!(run = row.summary.id, "{why}");
        true
    }

    /// Continues a run the previous server process left running when what its running
    /// tasks run is still there (DESIGN.md §3, Durability): the engine adopts them,
    /// resuming their logs where the stored ones end. Returns the ids of the leftovers
    /// it takes over; `None` leaves the run to the other rules.
    async fn reattach(&self, row: &RunRow, found: &[Found], hold: Option<Arc<Hold>>) -> Option<Vec<String>> {
        let label = self.run_label(row.summary.id);
        // A task waiting for people, or a stage for its signals, needs nothing of the previous process: it goes on
        // waiting.
        let waiting = row.record.stages.iter().flat_map(|s| &s.tasks).any(|t| t.progress.status == Status::Waiting)
            || row.record.stages.iter().any(|s| s.progress.status == Status::Waiting);
        if !waiting && !found.iter().any(|f| f.leftover.owner == label) {
            return None;
        }
        let pipeline = self.store().pipeline(row.summary.pipeline_id).await.ok()?;
        let model = self.pipeline_version(pipeline.id, row.summary.version).await.ok()?;
        self.engine_for(&model)?;
        let kind = self.0.engines.kind_for(&model);
        let theirs: Vec<&Leftover> =
            found.iter().filter(|f| f.kind == kind && f.leftover.owner == label).map(|f| &f.leftover).collect();
        let record = &row.record;
        let mut ids = Vec::new();
        let mut logs = BTreeMap::new();
        for (s, stage) in record.stages.iter().enumerate() {
            for (t, task) in stage.tasks.iter().enumerate() {
                // Pending with attempts made: its executor reported it waiting (a pod not
                // yet placed); what it started is taken over like a running one.
                if !matches!(task.progress.status, Status::Running | Status::Pending) || task.attempts == 0 {
                    continue;
                }
                let found = theirs.iter().find(|l| {
                    l.attempt
                        .as_ref()
                        .is_some_and(|a| a.stage == stage.name && a.task == task.name && a.attempt == task.attempts)
                });
                if let Some(leftover) = found {
                    ids.push(leftover.id.clone());
                    // Where the attempt began: its last `running` spell may have started
                    // after lines it printed (a pod reported running after pending).
                    let started = task.attempt_started.or_else(|| {
                        task.progress.history.iter().rev().find(|h| h.status == Status::Running).map(|h| h.at)
                    });
                    let key = LogKey::Task(s, t);
                    logs.insert((s, t), log_resume(self.logs(), row.summary.id, key, started).await);
                }
            }
        }
        if ids.is_empty() && !waiting {
            return None;
        }
        let resume = Resume::reattach(record.clone(), logs.clone())?;
        let dir = self.workspace_dir(row.summary.id);
        let workspace = match std::fs::canonicalize(dir.join("src")) {
            // A retry works in the checkout of the run it retries, linked from its own.
            Ok(src) if dir.join("src").is_symlink() => Workspace::Existing { src, run_dir: dir },
            _ => Workspace::Checkout { dir },
        };
        let request = RunRequest {
            secrets: if record.cause.gets_secrets() {
                self.store().secret_values(&pipeline.project).await.ok()?
            } else {
                BTreeMap::new()
            },
            workspace,
            resume: Some(resume),
            labels: vec![(RUN_LABEL.to_owned(), label)],
            registries: self.registries().await.ok()?,
            clusters: if record.cause.gets_secrets() {
                super::dispatch::clusters(self.store(), &pipeline.project, self.0.settings.default_cluster.clone())
                    .await
                    .ok()?
            } else {
                Default::default()
            },
            // A reattached run is past its checkout; it clones nothing.
            local_sources: false,
            approvals: Some(self.gate(row.summary.id)),
            signals: Some(self.signal_gate(row.summary.id, &pipeline, row.summary.number)),
            ..request(model, RequestBasics::of_row(row))
        };
        let (stop_tx, stop_rx) = watch::channel(None);
        self.0.active.lock().unwrap().insert(
            row.summary.id,
            Active {
                pipeline_id: row.summary.pipeline_id,
                number: row.summary.number,
                stop: stop_tx,
                superseded_by: None,
                hold: hold.clone(),
            },
        );
        for (s, t) in logs.keys() {
            self.live().open(row.summary.id, LogKey::Task(*s, *t));
        }
        let continuing = if waiting {
            format!(
                "the server restarted; continuing the run with {} running task(s) it left and its approvals waiting",
                ids.len()
            )
        } else {
            format!("the server restarted; continuing the run with {} running task(s) it left", ids.len())
        };
        self.system_line(row.summary.id, &continuing);
        tracing::warn!(
            run = row.summary.id,
            tasks = ids.len(),
            "re-attached to a run the previous server left running"
        );
        self.launch((row.summary.id, row.summary.pipeline_id, row.summary.version), request, stop_rx, hold);
        Some(ids)
    }
}

/// Where the stored log of a task's attempt (which started running at `started`)
/// ends, in the executor's terms: the last second its stored output lines reach and
/// how many of them are stamped in or after it. Lines of earlier attempts (before
/// `started`) and Wharf's own (`sys`) lines do not count.
async fn log_resume(
    logs: &wharf_store::logs::LogFiles,
    run: i64,
    key: LogKey,
    started: Option<jiff::Timestamp>,
) -> LogResume {
    // Read in pieces through the log's own reader (a file, or chunks in the database),
    // so a long log is never held whole.
    const PIECE: usize = 1 << 20;
    let from_ms = started.map_or(i64::MIN, |t| t.as_millisecond());
    let mut seconds: Vec<i64> = Vec::new();
    let (mut offset, mut partial) = (0u64, Vec::new());
    loop {
        let Ok(piece) = logs.read_from(run, key, offset, PIECE).await else { break };
        if piece.is_empty() {
            break;
        }
        offset += piece.len() as u64;
        partial.extend_from_slice(&piece);
        let complete = partial.iter().rposition(|b| *b == b'\n').map_or(0, |at| at + 1);
        for line in partial[..complete].split(|b| *b == b'\n') {
            let Some(line) = wharf_executor::stored::parse(line) else { continue };
            if line.stream != Stream::System && line.at.as_millisecond() >= from_ms {
                seconds.push(line.at.as_second());
            }
        }
        partial.drain(..complete);
    }
    match seconds.last() {
        None => LogResume::default(),
        Some(&last) => LogResume {
            since_second: last,
            skip_lines: seconds.iter().rev().take_while(|s| **s >= last).count() as u64,
        },
    }
}
