//! The engine's observer for one run on the server: log lines go to their files at
//! once (one write each) and wake live readers, or (logs in the database) into the next
//! batch, which is stored before any record written after them; record changes are
//! coalesced into at most one store write per [`SAVE_EVERY`], so what one change costs
//! does not grow with the run (a change copies only the part that changed; the whole record is
//! written once per period, however many tasks changed in it).
//!
//! Durability: the final record is written by [`Persist::finish`] after every earlier
//! write, before the lifecycle lets the run go, so a terminal status is stored before
//! anyone is told the run ended. A `kill -9` loses at most the non-terminal changes of
//! the last [`SAVE_EVERY`] (and the write in flight), which restart recovery settles
//! anyway: a run left `running` is failed as interrupted or re-attached.
//!
//! On PostgreSQL (replicas) every record write carries the fence of this server's
//! claim on the run ([`crate::replicas`]); a refused write means another replica took
//! the run over: the claim is marked lost, and nothing more is written for it, log
//! lines included.

use crate::Shared;
use crate::live::LiveLogs;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use wharf_core::run::RunRecord;
use wharf_core::status::Status;
use wharf_engine::{Observer, Part};
use wharf_executor::LogLine;
use wharf_store::logs::{LogKey, LogWriter};

/// The longest a non-terminal change waits before it is stored; changes in between
/// share one write.
pub const SAVE_EVERY: Duration = Duration::from_millis(200);

/// Something to do once a record write is done: what it announces is stored then.
pub(crate) type AfterSave = Box<dyn FnOnce() + Send>;

/// The newest record, kept up to date part by part, and whether the store has it.
#[derive(Default)]
struct Mirror {
    record: Option<RunRecord>,
    dirty: bool,
    /// Run after the next write (which holds the changes made before they were added).
    after: Vec<AfterSave>,
}

/// Coalesces record changes into periodic writes by a background saver.
pub(crate) struct Coalescer {
    mirror: Arc<Mutex<Mirror>>,
    changed: Arc<Notify>,
    /// Cuts the pause between writes short: someone waits for a write ([`Self::flush`]).
    urgent: Arc<Notify>,
    closing: watch::Sender<bool>,
    saver: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Coalescer {
    /// `save` stores one record; it is called at most once per `every`, never twice
    /// at once, with the newest record at the time.
    pub(crate) fn new<F, Fut>(every: Duration, save: F) -> Self
    where
        F: Fn(RunRecord) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let mirror = Arc::new(Mutex::new(Mirror::default()));
        let changed = Arc::new(Notify::new());
        let urgent = Arc::new(Notify::new());
        let (closing, mut closed) = watch::channel(false);
        let saver = tokio::spawn({
            let (mirror, changed, urgent) = (mirror.clone(), changed.clone(), urgent.clone());
            async move {
                loop {
                    tokio::select! {
                        biased;
                        _ = closed.wait_for(|c| *c) => return,
                        () = changed.notified() => {}
                    }
                    let (snapshot, after) = {
                        let mut mirror = mirror.lock().unwrap();
                        if !mirror.dirty {
                            continue;
                        }
                        mirror.dirty = false;
                        (mirror.record.clone(), std::mem::take(&mut mirror.after))
                    };
                    if let Some(record) = snapshot {
                        save(record).await;
                    }
                    for then in after {
                        then();
                    }
                    // Changes made meanwhile wait for the next write, unless someone
                    // waits for it.
                    tokio::select! {
                        _ = closed.wait_for(|c| *c) => return,
                        () = tokio::time::sleep(every) => {}
                        () = urgent.notified() => {}
                    }
                }
            }
        });
        Coalescer { mirror, changed, urgent, closing, saver: Mutex::new(Some(saver)) }
    }

    /// Resolves once a write begun after this call is done, so every change taken
    /// before it is stored; without waiting out the pause between writes. Resolves at
    /// once when the saver is closed.
    pub(crate) fn flush(&self) -> impl Future<Output = ()> + Send + 'static {
        let (done, stored) = tokio::sync::oneshot::channel::<()>();
        if *self.closing.borrow() {
            drop(done);
        } else {
            let mut mirror = self.mirror.lock().unwrap();
            mirror.after.push(Box::new(move || {
                let _ = done.send(());
            }));
            mirror.dirty = true;
        }
        self.changed.notify_one();
        self.urgent.notify_one();
        async move {
            let _ = stored.await;
        }
    }

    /// Takes the changed `parts` of `record` (copying only them) for the next write.
    #[cfg(test)]
    pub(crate) fn changed(&self, record: &RunRecord, parts: &[Part]) {
        self.changed_then(record, parts, Vec::new());
    }

    /// As [`changed`](Self::changed), and runs `after` once the write holding these
    /// changes is done (whether it succeeded: a failed write is logged, and what was to
    /// be announced is announced anyway). Dropped unrun when the saver closes first.
    pub(crate) fn changed_then(&self, record: &RunRecord, parts: &[Part], after: Vec<AfterSave>) {
        let mut mirror = self.mirror.lock().unwrap();
        mirror.after.extend(after);
        let copied = match mirror.record.as_mut() {
            Some(mine) => parts.iter().all(|part| copy_part(mine, record, *part)),
            None => false,
        };
        if !copied {
            mirror.record = Some(record.clone());
        }
        mirror.dirty = true;
        drop(mirror);
        self.changed.notify_one();
    }

    /// Stops the saver once its write in flight is done; changes it had not written
    /// are dropped (the caller writes the final record next), and so is what was to
    /// follow them (a waiting approval of a run that has ended is not announced).
    pub(crate) async fn close(&self) {
        self.closing.send_replace(true);
        let saver = self.saver.lock().unwrap().take();
        if let Some(saver) = saver {
            let _ = saver.await;
        }
    }
}

/// Copies `part` of `from` into `into`; false when the two differ in shape (stages
/// were added: rollback stages), which needs a whole copy.
fn copy_part(into: &mut RunRecord, from: &RunRecord, part: Part) -> bool {
    if into.stages.len() != from.stages.len() {
        return false;
    }
    match part {
        Part::Run => return false,
        Part::Checkout => into.checkout.clone_from(&from.checkout),
        Part::Stage(s) => into.stages[s].clone_from(&from.stages[s]),
        Part::Task(s, t) => match (into.stages[s].tasks.get_mut(t), from.stages[s].tasks.get(t)) {
            (Some(mine), Some(theirs)) => mine.clone_from(theirs),
            _ => return false,
        },
    }
    true
}

/// See the module documentation.
pub(crate) struct Persist {
    shared: Arc<Shared>,
    run_id: i64,
    /// The run's pipeline and version, for the events it announces.
    pipeline_id: i64,
    version: i64,
    /// This replica's claim on the run (PostgreSQL); `None` on SQLite.
    hold: Option<Arc<crate::replicas::Hold>>,
    writers: Mutex<HashMap<LogKey, LogWriter>>,
    records: Coalescer,
}

impl Persist {
    pub(crate) fn new(
        shared: Arc<Shared>,
        (run_id, pipeline_id, version): (i64, i64, i64),
        hold: Option<Arc<crate::replicas::Hold>>,
    ) -> Self {
        let records = Coalescer::new(SAVE_EVERY, {
            let (shared, hold) = (shared.clone(), hold.clone());
            move |record: RunRecord| {
                let (shared, hold) = (shared.clone(), hold.clone());
                async move {
                    // Lines before the changes: a reader who sees a task ended finds
                    // all it printed (logs in the database are written in batches).
                    if let Err(e) = shared.logs.flush().await {
                        tracing::error!(run = run_id, error = %e, "cannot write log lines");
                    }
                    if let Err(e) = save(&shared, run_id, &record, hold.as_deref()).await {
                        tracing::error!(run = run_id, error = %e, "cannot save the run record");
                    }
                }
            }
        });
        Persist { shared, run_id, pipeline_id, version, hold, writers: Mutex::default(), records }
    }

    /// Writes the final record after every earlier one, and closes the logs. False
    /// when the run is no longer this server's (its claim was lost): nothing written.
    pub(crate) async fn finish(&self, record: &RunRecord) -> bool {
        self.records.close().await;
        if let Err(e) = self.shared.logs.flush().await {
            tracing::error!(run = self.run_id, error = %e, "cannot write the last log lines");
        }
        let saved = save(&self.shared, self.run_id, record, self.hold.as_deref()).await;
        if let Err(e) = &saved {
            tracing::error!(run = self.run_id, error = %e, "cannot save the final run record");
        }
        self.shared.live.forget_run(self.run_id);
        !self.lost()
    }

    fn lost(&self) -> bool {
        self.hold.as_ref().is_some_and(|h| h.is_lost())
    }

    /// What a change means besides the record: live logs open and close, finished
    /// tasks count in the metrics.
    fn announce(&self, live: &LiveLogs, record: &RunRecord, part: Part) {
        match part {
            Part::Task(s, t) => {
                let task = &record.stages[s].tasks[t];
                if task.progress.status == Status::Running {
                    live.open(self.run_id, LogKey::Task(s, t));
                }
                if task.progress.status.is_terminal() {
                    if let Some(took) = task.progress.wall_time(jiff::Timestamp::now()) {
                        self.shared.metrics.task_finished(took.as_secs_f64());
                    }
                    live.close(self.run_id, LogKey::Task(s, t));
                }
            }
            Part::Checkout => {
                let status = record.checkout.as_ref().map(|c| c.progress.status);
                if status == Some(Status::Running) {
                    live.open(self.run_id, LogKey::Checkout);
                } else if status.is_some_and(Status::is_terminal) {
                    live.close(self.run_id, LogKey::Checkout);
                }
            }
            Part::Run | Part::Stage(_) => {}
        }
    }
}

impl Observer for Persist {
    fn changed(&self, record: &RunRecord, part: Part) {
        self.changed_parts(record, &[part]);
    }

    fn changed_parts(&self, record: &RunRecord, parts: &[Part]) {
        self.shared.metrics.record_changed(parts.len());
        // An approval that starts waiting is announced once the store holds it waiting.
        let mut after: Vec<AfterSave> = Vec::new();
        for part in parts {
            self.announce(&self.shared.live, record, *part);
            if let Part::Stage(s) = *part
                && let Some(stage) = record.stages.get(s)
                && stage.progress.status.is_terminal()
                && stage.progress.status != wharf_core::status::Status::Skipped
            {
                self.shared.notify(crate::notify::RunEvent {
                    run_id: self.run_id,
                    pipeline_id: self.pipeline_id,
                    version: self.version,
                    record: record.clone(),
                    kind: crate::notify::RunEventKind::StageEnded { stage: stage.name.clone() },
                });
            }
            if let Part::Task(s, t) = *part
                && let Some(task) = record.stages.get(s).and_then(|stage| stage.tasks.get(t))
                && task.progress.status == wharf_core::status::Status::Waiting
                && task.approval.is_some()
            {
                let event = crate::notify::RunEvent {
                    run_id: self.run_id,
                    pipeline_id: self.pipeline_id,
                    version: self.version,
                    record: record.clone(),
                    kind: crate::notify::RunEventKind::Waiting {
                        stage: record.stages[s].name.clone(),
                        task: task.name.clone(),
                    },
                };
                let shared = self.shared.clone();
                after.push(Box::new(move || shared.notify(event)));
            }
        }
        // The terminal record is written by `finish`, after every earlier write, so no
        // late periodic write can put an older state over the final word.
        if !record.progress.status.is_terminal() {
            self.records.changed_then(record, parts, after);
        }
    }

    /// On PostgreSQL (replicas) an attempt begins only once the record saying so is
    /// stored: a replica killed right after leaves a run another one takes over as
    /// begun (its host tasks interrupted), never one it would start a second time. On
    /// SQLite one server owns the runs and nothing waits (a restart there settles the
    /// last [`SAVE_EVERY`] as the module documentation says).
    fn durable(&self) -> wharf_executor::BoxFuture<'static, ()> {
        if self.hold.is_none() || self.lost() {
            return Box::pin(std::future::ready(()));
        }
        Box::pin(self.records.flush())
    }

    fn log(&self, part: Part, line: &LogLine) {
        if self.lost() {
            return;
        }
        let key = log_key(part);
        let mut writers = self.writers.lock().unwrap();
        let writer = match writers.get_mut(&key) {
            Some(w) => w,
            None => match self.shared.logs.writer(self.run_id, key) {
                Ok(w) => writers.entry(key).or_insert(w),
                Err(e) => {
                    tracing::error!(run = self.run_id, error = %e, "cannot open a log file");
                    return;
                }
            },
        };
        if let Err(e) = writer.append(&wharf_executor::stored::line(line.at, line.stream, &line.text)) {
            tracing::error!(run = self.run_id, error = %e, "cannot write a log line");
            return;
        }
        // Logs in the database wake readers when the lines are stored (`live::spawn_feed`).
        if !self.shared.logs.is_database() {
            self.shared.live.grew(self.run_id, key, writer.size());
        }
    }
}

/// Writes `record`, under `hold`'s fence when there is one; a refused write loses the
/// claim, and a lost claim writes nothing.
async fn save(
    shared: &Shared,
    run_id: i64,
    record: &RunRecord,
    hold: Option<&crate::replicas::Hold>,
) -> wharf_store::Result<()> {
    let saved = match hold {
        None => shared.store.save_record(run_id, record).await,
        Some(hold) if hold.is_lost() => return Ok(()),
        Some(hold) => shared.store.save_record_fenced(run_id, record, hold.fence).await,
    };
    match saved {
        Ok(bytes) => {
            shared.metrics.record_written(bytes);
            Ok(())
        }
        Err(wharf_store::StoreError::Fenced(_)) => {
            if let Some(hold) = hold {
                hold.lose();
            }
            tracing::warn!(
                run = run_id,
                "the run is now another server's (its lease lapsed): this server stops writing it"
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn log_key(part: Part) -> LogKey {
    match part {
        Part::Run | Part::Stage(_) => LogKey::Run,
        Part::Checkout => LogKey::Checkout,
        Part::Task(s, t) => LogKey::Task(s, t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh record of one stage of `tasks` tasks (more than a pipeline may have, to
    /// show the cost does not depend on it).
    fn record(tasks: usize) -> RunRecord {
        let yaml = "name: p\nstages:\n  - name: S\n    tasks:\n      - {name: t, type: script, script: x}\n";
        let mut record = wharf_engine::initial_record(&wharf_engine::RunRequest {
            pipeline: Arc::new(wharf_pipeline::parse(yaml).unwrap()),
            number: 1,
            increment: 1,
            cause: wharf_core::run::Cause::Local { user: "t".into() },
            parameters: Default::default(),
            secrets: Default::default(),
            workspace: wharf_engine::Workspace::Checkout { dir: Default::default() },
            commit: None,
            git_ref: None,
            resume: None,
            created_at: None,
            labels: vec![],
            registries: Default::default(),
            clusters: Default::default(),
            local_sources: false,
            approvals: None,
            signals: None,
        });
        let task = record.stages[0].tasks[0].clone();
        record.stages[0].tasks =
            (0..tasks).map(|t| wharf_core::run::TaskRecord { name: format!("t{t}"), ..task.clone() }).collect();
        record
    }

    /// A saver on `every` that counts its writes and keeps the last record written.
    fn counting(every: Duration) -> (Coalescer, Arc<AtomicUsize>, Arc<Mutex<Option<RunRecord>>>) {
        let writes = Arc::new(AtomicUsize::new(0));
        let last = Arc::new(Mutex::new(None));
        let coalescer = Coalescer::new(every, {
            let (writes, last) = (writes.clone(), last.clone());
            move |record: RunRecord| {
                writes.fetch_add(1, Ordering::SeqCst);
                *last.lock().unwrap() = Some(record);
                async {}
            }
        });
        (coalescer, writes, last)
    }

    /// Every task of `rec` goes pending, running, succeeded, with the saver free to run
    /// between changes (as on a busy server).
    async fn run_through(coalescer: &Coalescer, rec: &mut RunRecord) {
        let now = jiff::Timestamp::now();
        rec.progress.advance(Status::Running, now).unwrap();
        coalescer.changed(rec, &[Part::Run]);
        for step in [Status::Pending, Status::Running, Status::Succeeded] {
            for t in 0..rec.stages[0].tasks.len() {
                rec.stages[0].tasks[t].progress.advance(step, now).unwrap();
                coalescer.changed(rec, &[Part::Task(0, t)]);
                tokio::task::yield_now().await;
            }
        }
    }

    #[tokio::test]
    async fn writes_do_not_grow_with_the_number_of_changes() {
        let mut counts = Vec::new();
        for tasks in [5, 500] {
            // A period longer than the test: only the first change is written by then.
            let (coalescer, writes, _) = counting(Duration::from_secs(3600));
            run_through(&coalescer, &mut record(tasks)).await;
            coalescer.close().await;
            counts.push(writes.load(Ordering::SeqCst));
        }
        assert_eq!(counts, [1, 1], "15 and 1,500 task changes in one period cost one write each");
    }

    #[tokio::test]
    async fn the_newest_record_is_written_one_period_later() {
        let (coalescer, writes, last) = counting(Duration::from_millis(20));
        let mut rec = record(50);
        run_through(&coalescer, &mut rec).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while last.lock().unwrap().as_ref() != Some(&rec) {
            assert!(std::time::Instant::now() < deadline, "the last changes were never written");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        coalescer.close().await;
        assert!(writes.load(Ordering::SeqCst) < 150, "not one write per change");
    }

    #[tokio::test]
    async fn the_mirror_takes_only_the_changed_part_and_a_whole_record_when_stages_grew() {
        let coalescer = Coalescer::new(SAVE_EVERY, |_| async {});
        let mut rec = record(3);
        coalescer.changed(&rec, &[Part::Run]);
        rec.stages[0].tasks[1].reason = Some("mine".into());
        rec.stages[0].tasks[2].reason = Some("not announced".into());
        coalescer.changed(&rec, &[Part::Task(0, 1)]);
        {
            let mirror = coalescer.mirror.lock().unwrap();
            let mine = mirror.record.as_ref().unwrap();
            assert_eq!(mine.stages[0].tasks[1].reason.as_deref(), Some("mine"));
            assert_eq!(mine.stages[0].tasks[2].reason, None, "only the announced part is copied");
        }
        rec.stages.push(rec.stages[0].clone());
        coalescer.changed(&rec, &[Part::Stage(1)]);
        assert_eq!(coalescer.mirror.lock().unwrap().record.as_ref(), Some(&rec));
        coalescer.close().await;
    }

    #[tokio::test]
    async fn what_follows_a_change_runs_after_the_write_that_holds_it() {
        let (coalescer, _, last) = counting(Duration::from_millis(30));
        let mut rec = record(2);
        coalescer.changed(&rec, &[Part::Run]);
        // The first write is under way or done; the next change waits for the period.
        rec.stages[0].tasks[1].reason = Some("waiting".into());
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
        let stored = last.clone();
        let then: AfterSave = Box::new(move || {
            let held = stored.lock().unwrap().as_ref().map(|r| r.stages[0].tasks[1].reason.clone());
            let _ = seen_tx.send(held);
        });
        coalescer.changed_then(&rec, &[Part::Task(0, 1)], vec![then]);
        let held = tokio::time::timeout(Duration::from_secs(10), seen_rx).await.expect("never ran").unwrap();
        assert_eq!(held, Some(Some("waiting".to_owned())), "ran before the change was written");
        coalescer.close().await;
    }
}
