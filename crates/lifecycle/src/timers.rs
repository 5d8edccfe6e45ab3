//! The timer scheduler: starts runs when a pipeline's timer triggers come due.
//!
//! The time arithmetic is `wharf-trigger`'s (the rules are in its docs and in
//! `docs/pipeline-yaml.md`, "When timers fire"); this module keeps the state and acts.
//! Each timer trigger of an active pipeline's latest version has a row in the `timers`
//! table ([`wharf_store::timers`]) with its stored `next_run_at`.
//!
//! - **Saving or activating** a pipeline ([`Timers::changed`], called by the API after
//!   create, update, copy, activate, deactivate and delete) recomputes its rows from
//!   now: the first fire time strictly in the future, so it never fires at once. An
//!   inactive pipeline keeps its rows, but they are never due; activating recomputes.
//! - **The loop** sleeps until the earliest `next_run_at` (or until woken by a change),
//!   then [`Timers::due`]: every due row is claimed by a compare-and-set on the row as
//!   read, in one transaction with the insert of its run
//!   ([`wharf_store::Store::create_timer_run`]), so a due time starts exactly one run
//!   even when two schedulers (or replicas on one PostgreSQL) race; the run has
//!   `Cause::Timer { due }` and the pipeline's default parameters and goes through the
//!   lifecycle's queue, whose concurrency policy decides about overlap.
//! - **At start** ([`Timers::resume`]), rows of a version that is not the latest (or
//!   missing) are recomputed from now; due times missed while the server was down earn
//!   at most one catch-up run, for the latest of them, if within the grace window
//!   (`timer_grace`, default 1 h) and the trigger says `missed: once` (the default);
//!   `missed: skip` earns none. Then each timer waits for its next future time.
//!
//! A due time the loop reaches more than [`ON_TIME`] late (a suspended machine, a stall)
//! counts as missed too and follows the same policy. Claim and run are one
//! transaction, and a run's due time is unique per pipeline in the store: a crash
//! loses no due time and none runs twice.
//!
//! [`Timers::tick`] and [`Timers::resume`] take "now" as an argument, claim, and return
//! the runs to start ([`Fire`]), so tests drive the decisions with explicit instants;
//! the loop uses their unclaimed twins ([`Timers::due`], [`Timers::resume_unclaimed`])
//! and [`start_runs`] claims with the run.

use crate::Lifecycle;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use wharf_core::model::{Missed, Trigger};
use wharf_core::run::Cause;
use wharf_store::timers::{NewTimer, TimerClaim, TimerRow};
use wharf_store::{Store, StoreError};
use wharf_trigger::Schedule;

/// How late the loop may reach a due time and still run it as on time. Later than this,
/// the due time was missed (the machine slept or stalled) and the trigger's `missed`
/// policy and the grace window apply, as after a restart.
pub const ON_TIME: Duration = Duration::from_secs(60);

/// The loop looks at the clock at least this often, so a wall clock that jumps (or
/// rows another scheduler changed) are noticed.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Pause after a failure (the database), and when a due row could not be moved on.
const RETRY: Duration = Duration::from_millis(250);

/// Parsed trigger lists kept in memory at most.
const PARSED_CACHE: usize = 1024;

/// A run to start: a due time claimed for one timer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fire {
    pub pipeline_id: i64,
    /// The pipeline version the timer was computed from.
    pub version: i64,
    /// The trigger's position in the version's `triggers`.
    pub trigger_index: usize,
    /// The due time the run is for (its cause).
    pub due: Timestamp,
    /// The due time was missed (server down, or reached more than [`ON_TIME`] late):
    /// this is the one catch-up run.
    pub catch_up: bool,
    /// The claim still to make, with the run in one transaction ([`start_runs`]);
    /// `None` when the due time is claimed already ([`Timers::tick`]).
    pub claim: Option<TimerClaim>,
}

/// What a timer that is due at `now` does: the decision of [`decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The due time to start a run for, if any.
    pub fire: Option<Timestamp>,
    /// `fire` is a catch-up for missed times (not on time).
    pub catch_up: bool,
    /// The new `next_run_at`: strictly after `now`; `None` when it never fires again.
    pub next: Option<Timestamp>,
}

/// The due times of a timer at `now`: its stored `next_run_at` (`stored_due`) and every
/// fire time after it up to `now`. The latest of them no older than `on_time` runs (on
/// time); when all are older, they were missed: `missed: once` runs the latest if it is
/// within `grace`, `missed: skip` runs none. Either way at most one run, and the next
/// time is strictly after `now`.
pub fn decide(
    schedule: &Schedule,
    stored_due: Timestamp,
    now: Timestamp,
    grace: Duration,
    on_time: Duration,
) -> Decision {
    let next = schedule.next_after(now.max(stored_due)).map(|z| z.timestamp());
    if stored_due > now {
        return Decision { fire: None, catch_up: false, next: Some(stored_due) };
    }
    let since = |window: Duration| {
        let window = SignedDuration::try_from(window).unwrap_or(SignedDuration::MAX);
        now.checked_sub(window).unwrap_or(Timestamp::MIN)
    };
    // The latest due time within `on_time` of now.
    let opens = since(on_time);
    let walk_from = opens.checked_sub(SignedDuration::from_nanos(1)).unwrap_or(Timestamp::MIN).max(stored_due);
    let recent = schedule
        .fire_times_after(walk_from)
        .take_while(|t| t.timestamp() <= now)
        .last()
        .map(|t| t.timestamp())
        .or((stored_due >= opens).then_some(stored_due));
    if recent.is_some() {
        return Decision { fire: recent, catch_up: false, next };
    }
    let fire = match schedule.missed() {
        Missed::Skip => None,
        Missed::Once => {
            let due = schedule.due_between(stored_due, now, grace);
            due.catch_up.map(|t| t.timestamp()).or((stored_due >= since(grace)).then_some(stored_due))
        }
    };
    Decision { fire, catch_up: fire.is_some(), next }
}

/// A saved version's trigger list.
type Triggers = Arc<Vec<Trigger>>;

/// The scheduler's state, shared by the loop and the API.
pub struct Timers {
    store: Store,
    zone: TimeZone,
    grace: Duration,
    wake: Arc<Notify>,
    stopped: AtomicBool,
    /// Trigger lists of pipeline versions (immutable once saved); `None`: the version
    /// no longer validates.
    parsed: Mutex<HashMap<(i64, i64), Option<Triggers>>>,
}

fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

fn at_ms(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 { Timestamp::MIN } else { Timestamp::MAX })
}

impl Timers {
    /// `zone` is the server's, for triggers that name none; `grace` the catch-up window.
    pub fn new(store: Store, zone: TimeZone, grace: Duration) -> Timers {
        Timers {
            store,
            zone,
            grace,
            wake: Arc::new(Notify::new()),
            stopped: AtomicBool::new(false),
            parsed: Mutex::default(),
        }
    }

    /// The server's zone: the zone of triggers that name none.
    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }

    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// The triggers of a saved pipeline version; `None` when it no longer validates.
    pub async fn triggers(&self, pipeline_id: i64, version: i64) -> Result<Option<Triggers>, StoreError> {
        if let Some(known) = self.parsed.lock().unwrap().get(&(pipeline_id, version)) {
            return Ok(known.clone());
        }
        let source = self.store.version(pipeline_id, version).await?.source;
        let parsed = match wharf_pipeline::parse(&source) {
            Ok(model) => Some(Arc::new(model.triggers)),
            Err(e) => {
                tracing::error!(
                    pipeline = pipeline_id,
                    version,
                    "stored version no longer validates; its timers are off: {e}"
                );
                None
            }
        };
        let mut cache = self.parsed.lock().unwrap();
        if cache.len() >= PARSED_CACHE {
            cache.clear();
        }
        cache.insert((pipeline_id, version), parsed.clone());
        Ok(parsed)
    }

    /// The timer triggers of a list, by index, compiled; a trigger that cannot be
    /// scheduled (a zone gone from the time zone database) is logged and left out.
    fn schedules(&self, pipeline_id: i64, triggers: &[Trigger]) -> Vec<(usize, Schedule)> {
        let mut out = Vec::new();
        for (index, trigger) in triggers.iter().enumerate() {
            match Schedule::new(trigger, &self.zone) {
                Ok(Some(schedule)) => out.push((index, schedule)),
                Ok(None) => {}
                Err(e) => tracing::error!(pipeline = pipeline_id, trigger = index, "timer cannot be scheduled: {e}"),
            }
        }
        out
    }

    /// Recomputes a pipeline's timers from `now` (it was created, edited or activated):
    /// each fires next at its first time strictly after `now`, never at once. An
    /// inactive pipeline's rows are left as they are (never due); a deleted pipeline's
    /// are removed.
    pub async fn sync(&self, pipeline_id: i64, now: Timestamp) -> Result<(), StoreError> {
        let pipeline = match self.store.pipeline(pipeline_id).await {
            Ok(p) => p,
            Err(StoreError::NotFound(_)) => return self.store.delete_timers(pipeline_id).await,
            Err(e) => return Err(e),
        };
        if !pipeline.active {
            return Ok(());
        }
        let triggers = self.triggers(pipeline.id, pipeline.version).await?.unwrap_or_default();
        let rows: Vec<NewTimer> = self
            .schedules(pipeline.id, &triggers)
            .into_iter()
            .map(|(index, schedule)| NewTimer {
                trigger_index: index as i64,
                next_run_at: schedule.next_after(now).map(|z| ms(z.timestamp())),
                last_due: None,
            })
            .collect();
        match self.store.replace_timers(pipeline.id, pipeline.version, &rows).await {
            Err(StoreError::NotFound(_)) => Ok(()), // deleted meanwhile; the cascade took the rows
            other => other,
        }
    }

    /// A pipeline was saved, activated, deactivated or deleted: recompute its timers
    /// from now and wake the loop. Failures are logged (the next start reconciles).
    pub async fn changed(&self, pipeline_id: i64) {
        if let Err(e) = self.sync(pipeline_id, Timestamp::now()).await {
            tracing::error!(pipeline = pipeline_id, error = %e, "cannot update the pipeline's timers");
        }
        self.wake.notify_one();
    }

    /// Wakes the loop to look at the rows again.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Ends the loop (at its next wake-up, which this causes).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// At server start: brings every active pipeline's rows up to its latest version
    /// (rows missing, or of an older version — edited while this server was down — are
    /// computed from `now`, firing nothing), then claims what was missed: at most one
    /// catch-up run per timer, for the latest missed due time within the grace window,
    /// none with `missed: skip`.
    ///
    /// Only pipelines whose timers were not computed from their latest version are read
    /// and parsed ([`Store::pipelines_with_stale_timers`]): a start reads no pipeline
    /// that was saved through [`Timers::changed`].
    pub async fn resume(&self, now: Timestamp) -> Result<Vec<Fire>, StoreError> {
        self.bring_up_to_date(now).await?;
        self.claim_due(now, Duration::ZERO, true).await
    }

    /// [`resume`](Self::resume) without claiming: the catch-up fires, each with the
    /// claim [`start_runs`] makes together with its run.
    pub async fn resume_unclaimed(&self, now: Timestamp) -> Result<Vec<Fire>, StoreError> {
        self.bring_up_to_date(now).await?;
        self.claim_due(now, Duration::ZERO, false).await
    }

    async fn bring_up_to_date(&self, now: Timestamp) -> Result<(), StoreError> {
        let mut current_rows = Vec::new();
        for id in self.store.pipelines_with_stale_timers().await? {
            let pipeline = match self.store.pipeline(id).await {
                Ok(p) => p,
                Err(StoreError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            if !pipeline.active {
                continue;
            }
            let rows = self.store.pipeline_timers(id).await?;
            let triggers = self.triggers(id, pipeline.version).await?.unwrap_or_default();
            let wanted: Vec<i64> = self.schedules(id, &triggers).iter().map(|(i, _)| *i as i64).collect();
            let current = rows.iter().all(|r| r.version == pipeline.version)
                && rows.iter().map(|r| r.trigger_index).eq(wanted.iter().copied());
            if current {
                current_rows.push((id, pipeline.version));
            } else {
                self.sync(id, now).await?;
            }
        }
        self.store.mark_timers_current(&current_rows).await
    }

    /// One step of the loop at `now`: claims every due timer of an active pipeline and
    /// returns the runs to start, one per claimed due time. A row of an older version
    /// (the pipeline was edited and this scheduler not told) is recomputed from `now`
    /// instead, firing nothing.
    pub async fn tick(&self, now: Timestamp) -> Result<Vec<Fire>, StoreError> {
        self.claim_due(now, ON_TIME, true).await
    }

    /// [`tick`](Self::tick) without claiming the fires: each carries the claim that
    /// [`start_runs`] makes in one transaction with its run (what the loop does). Due
    /// times that fire nothing are moved on here, as in `tick`.
    pub async fn due(&self, now: Timestamp) -> Result<Vec<Fire>, StoreError> {
        self.claim_due(now, ON_TIME, false).await
    }

    /// Claims the due rows at `now`. Only the first read can fail the call: after it, a
    /// failure on one row is logged and the others go on, so no claimed due time is lost
    /// to a later row's error.
    async fn claim_due(&self, now: Timestamp, on_time: Duration, claim: bool) -> Result<Vec<Fire>, StoreError> {
        let mut fires = Vec::new();
        let mut resynced: Vec<i64> = Vec::new();
        for row in self.store.due_timers(ms(now)).await? {
            if resynced.contains(&row.pipeline_id) {
                continue;
            }
            let outcome = match self.store.pipeline(row.pipeline_id).await {
                Err(StoreError::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
                Ok(pipeline) if pipeline.version != row.version => {
                    resynced.push(pipeline.id);
                    self.sync(pipeline.id, now).await.map(|()| None)
                }
                Ok(_) => self.claim_row(&row, now, on_time, claim).await,
            };
            match outcome {
                Ok(fire) => fires.extend(fire),
                Err(e) => tracing::error!(
                    pipeline = row.pipeline_id,
                    trigger = row.trigger_index,
                    error = %e,
                    "cannot handle a due timer; trying again shortly"
                ),
            }
        }
        Ok(fires)
    }

    /// Decides about one due row and claims it; the fire when this call won the claim
    /// and the decision is to run.
    async fn claim_row(
        &self,
        row: &TimerRow,
        now: Timestamp,
        on_time: Duration,
        claim: bool,
    ) -> Result<Option<Fire>, StoreError> {
        let Some(stored) = row.next_run_at else { return Ok(None) };
        let index = usize::try_from(row.trigger_index).unwrap_or(usize::MAX);
        let schedule = self.triggers(row.pipeline_id, row.version).await?.and_then(|triggers| {
            let trigger = triggers.get(index)?;
            Schedule::new(trigger, &self.zone)
                .inspect_err(|e| {
                    tracing::error!(pipeline = row.pipeline_id, trigger = index, "timer cannot be scheduled: {e}")
                })
                .ok()
                .flatten()
        });
        let Some(schedule) = schedule else {
            // Nothing to schedule any more: it never fires again.
            self.store.claim_timer(row, None, row.last_due).await?;
            return Ok(None);
        };
        let decision = decide(&schedule, at_ms(stored), now, self.grace, on_time);
        if let (Some(due), false) = (decision.fire, claim) {
            let claim = TimerClaim { read: row.clone(), next_run_at: decision.next.map(ms), due: ms(due) };
            return Ok(Some(Fire {
                pipeline_id: row.pipeline_id,
                version: row.version,
                trigger_index: index,
                due,
                catch_up: decision.catch_up,
                claim: Some(claim),
            }));
        }
        let last_due = decision.fire.map(ms).or(row.last_due);
        if !self.store.claim_timer(row, decision.next.map(ms), last_due).await? {
            tracing::debug!(pipeline = row.pipeline_id, trigger = index, "timer claimed elsewhere");
            return Ok(None);
        }
        if decision.fire.is_none() {
            tracing::info!(
                pipeline = row.pipeline_id,
                trigger = index,
                due = %at_ms(stored),
                "missed due time(s) skipped (missed: skip, or older than the grace window)"
            );
        }
        Ok(decision.fire.map(|due| Fire {
            pipeline_id: row.pipeline_id,
            version: row.version,
            trigger_index: index,
            due,
            catch_up: decision.catch_up,
            claim: None,
        }))
    }

    /// The earliest `next_run_at` of an active pipeline's timer.
    pub async fn next_due(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.store.next_timer_at().await?.map(at_ms))
    }
}

/// Starts the runs of due times: the pipeline's latest version with its default
/// parameters, `Cause::Timer { due }`. A fire that carries its claim is claimed in one
/// transaction with its run (lost to another scheduler: nothing happens here). A
/// pipeline that is inactive, gone, or whose run cannot start records nothing; the
/// reason is logged and the due time is spent (the row moves on).
pub async fn start_runs(lifecycle: &Lifecycle, fires: Vec<Fire>) {
    for fire in fires {
        let pipeline = match lifecycle.store().pipeline(fire.pipeline_id).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(pipeline = fire.pipeline_id, due = %fire.due, error = %e, "timer run not started");
                spend(lifecycle.store(), &fire).await;
                continue;
            }
        };
        if !pipeline.active {
            tracing::info!(pipeline = %pipeline.name, due = %fire.due, "timer run not started: the pipeline is inactive");
            spend(lifecycle.store(), &fire).await;
            continue;
        }
        let cause = Cause::Timer { due: fire.due };
        let version = pipeline.version;
        let claim = fire.claim.as_ref();
        match lifecycle.enqueue_claiming(&pipeline, version, cause, BTreeMap::new(), None, None, None, claim).await {
            Ok(accepted) => tracing::info!(
                pipeline = %pipeline.name,
                run = accepted.id,
                number = accepted.number,
                due = %fire.due,
                catch_up = fire.catch_up,
                "timer started a run"
            ),
            Err(e) => {
                tracing::warn!(pipeline = %pipeline.name, due = %fire.due, "timer run not started: {e}");
                spend(lifecycle.store(), &fire).await;
            }
        }
    }
}

/// Moves an unclaimed fire's row on without a run, so a due time that cannot start
/// is not tried again and again (a no-op when another scheduler claimed it).
async fn spend(store: &Store, fire: &Fire) {
    if let Some(claim) = &fire.claim
        && let Err(e) = store.claim_timer(&claim.read, claim.next_run_at, Some(claim.due)).await
    {
        tracing::error!(pipeline = fire.pipeline_id, error = %e, "cannot move a timer on");
    }
}

/// Runs the restart catch-up, then spawns the loop. Called once by
/// [`Lifecycle::start`], after the previous process's runs were recovered.
pub(crate) async fn start(lifecycle: &Lifecycle) {
    let timers = lifecycle.timers();
    match timers.resume_unclaimed(Timestamp::now()).await {
        Ok(fires) => start_runs(lifecycle, fires).await,
        Err(e) => tracing::error!(error = %e, "timer catch-up failed; timers start from their stored times"),
    }
    let weak = lifecycle.downgrade();
    let wake = timers.wake.clone();
    tokio::spawn(async move {
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let lifecycle = Lifecycle(inner);
            let timers = lifecycle.timers();
            if timers.stopped.load(Ordering::SeqCst) {
                return;
            }
            let now = Timestamp::now();
            let wait = match timers.due(now).await {
                Ok(fires) => {
                    start_runs(&lifecycle, fires).await;
                    match timers.next_due().await {
                        // Still due at the tick's instant: a row that could not be moved on.
                        Ok(Some(at)) if at <= now => RETRY,
                        Ok(Some(at)) => Timestamp::now().duration_until(at).try_into().unwrap_or(Duration::ZERO),
                        Ok(None) => MAX_SLEEP,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot read the timers");
                            RETRY
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "timer tick failed");
                    RETRY
                }
            };
            // Hold no strong reference while idle, so the lifecycle can be dropped.
            drop(lifecycle);
            tokio::select! {
                _ = tokio::time::sleep(wait.min(MAX_SLEEP)) => {}
                _ = wake.notified() => {}
            }
        }
    });
}
