//! Several servers ("replicas") on one PostgreSQL database: who starts which run, and
//! what happens when one of them dies or stops. The store keeps the claims
//! ([`wharf_store::claims`]); this module is the decisions around them. On SQLite
//! (one server per database) none of this runs: the queue is in memory as before.
//!
//! - **The queue is the database.** An accepted run is stored `queued` and announced
//!   on the store's events ([`wharf_store::events`], LISTEN/NOTIFY); every replica's
//!   scheduler wakes, reads the claimable runs and tries to claim them. The claim
//!   decides the pipeline's `concurrency` under the pipeline's lock, so two replicas
//!   never start two runs where the policy allows one. Besides the events, each
//!   scheduler looks every [`POLL`]: a bounded safety net, not a polling storm.
//! - **Leases.** A claimed run is this replica's while it renews the lease, every
//!   third of [`Settings::lease`](crate::Settings::lease), in one query for all its
//!   runs. The renewal also brings stops asked on other replicas (a user's stop, or
//!   `cancel-previous`), so they reach the run within a third of the lease.
//! - **Fencing.** Every record write of a claimed run carries the claim's fence. A
//!   replica that paused past its lease finds its write refused, or its renewal
//!   missing the run: its claim is lost, and the run is abandoned where it is — no
//!   more writes, and no stop either (the new owner may have re-attached the same
//!   containers).
//! - **Takeover.** A started run whose lease lapsed is claimed by another replica
//!   (fence + 1) and settled as after a restart (`recover`): containers and pods are
//!   re-attached by their run label — labels start with a hash of the installation id
//!   stored in the database, the same on every replica —, a run that had executed
//!   nothing is queued again, host tasks end as interrupted.
//! - **Start-up.** A replica's id is kept in its data directory (`replica-id`), so a
//!   restarted replica first lets its previous life's leases lapse and takes those runs
//!   over at once; runs other live replicas hold are never touched.
//! - **Graceful stop** ([`Lifecycle::drain`]): the replica claims nothing more, lets
//!   its runs finish for the drain grace, then releases the leases of those still
//!   going, so another replica takes them over at once (re-attaching their containers)
//!   instead of after the lease.

use crate::dispatch::{Active, Queued};
use crate::{Lifecycle, RunError, Settings};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use wharf_core::status::Status;
use wharf_engine::StopReason;
use wharf_executor::StopRequest;
use wharf_store::claims::{Claimed, StopAsked};
use wharf_store::events::Event;
use wharf_store::{RunRow, Store};

/// The lease of a claim when the server's settings name none.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// How often an idle replica looks for work nobody announced (lapsed leases, a lost
/// event).
pub const POLL: Duration = Duration::from_secs(2);

/// Queued runs read per scheduling pass.
const CLAIM_BATCH: i64 = 256;

/// Lapsed runs taken over per pass.
const TAKEOVER_BATCH: i64 = 16;

/// How long a replica that used its pass's budget waits before its next pass, so the
/// other replicas claim part of a burst.
const SHARE_PAUSE: Duration = Duration::from_millis(50);

/// This replica's identity and lease.
pub(crate) struct Claims {
    pub(crate) owner: String,
    pub(crate) lease: Duration,
    /// Set by [`Lifecycle::drain`]: nothing more is claimed.
    draining: AtomicBool,
}

impl Claims {
    /// Claims for a server on PostgreSQL (`None` on SQLite): its replica id is read
    /// from (or written once to) `<data_dir>/replica-id`.
    pub(crate) fn for_store(store: &Store, settings: &Settings) -> Option<Claims> {
        if !store.is_postgres() {
            return None;
        }
        Some(Claims { owner: replica_id(&settings.data_dir), lease: settings.lease, draining: AtomicBool::new(false) })
    }
}

/// The replica id kept in the data directory; a fresh random one when it cannot be
/// read or written (the replica then cannot take over its own runs at once after a
/// restart, only when their leases lapse).
fn replica_id(data_dir: &std::path::Path) -> String {
    let path = data_dir.join("replica-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return id.to_owned();
        }
    }
    let seed = format!("{:?}{}{:?}", std::time::SystemTime::now(), std::process::id(), data_dir);
    let id = format!("replica-{}", &crate::hex_sha256(seed.as_bytes())[..16]);
    if let Err(e) = std::fs::write(&path, format!("{id}\n")) {
        tracing::warn!(path = %path.display(), error = %e, "cannot keep the replica id; a new one is used each start");
    }
    id
}

/// This replica's claim on one run: the fence its writes carry, and whether it was
/// lost (another replica took the run over).
pub(crate) struct Hold {
    pub(crate) fence: i64,
    lost: watch::Sender<bool>,
    /// A stop asked elsewhere was passed on already.
    asked: AtomicBool,
}

impl Hold {
    pub(crate) fn new(fence: i64) -> Arc<Hold> {
        Arc::new(Hold { fence, lost: watch::channel(false).0, asked: AtomicBool::new(false) })
    }

    pub(crate) fn lose(&self) {
        self.lost.send_replace(true);
    }

    pub(crate) fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves when the claim is lost.
    pub(crate) async fn lost(&self) {
        let mut rx = self.lost.subscribe();
        let _ = rx.wait_for(|lost| *lost).await;
    }
}

impl Lifecycle {
    fn claims(&self) -> &Claims {
        self.0.claims.as_ref().expect("replica code runs only with claims")
    }

    /// Writes a run's record, under `hold`'s fence when there is one.
    pub(crate) async fn save_held(
        &self,
        run_id: i64,
        record: &wharf_core::run::RunRecord,
        hold: Option<&Hold>,
    ) -> wharf_store::Result<usize> {
        match hold {
            Some(hold) => self.store().save_record_fenced(run_id, record, hold.fence).await,
            None => self.store().save_record(run_id, record).await,
        }
    }

    /// Tells every replica there may be work (a run queued, or one ended that others
    /// wait for); a lost notice is covered by their [`POLL`].
    pub(crate) async fn announce_work(&self, run: Option<i64>) {
        if let Err(e) = self.store().publish(&Event::Work { run }).await {
            tracing::warn!(error = %e, "cannot announce new work to the other replicas");
        }
        self.0.wake.notify_one();
    }

    /// Tells the replica that runs `run_id` (whichever it is) that a decision or signal
    /// for it was stored: its waiting tasks and stages read the store again. Nothing on
    /// SQLite, where the bell rung in this process is all there is.
    pub(crate) async fn announce_run(&self, run_id: i64) {
        if self.0.claims.is_some()
            && let Err(e) = self.store().publish(&Event::Work { run: Some(run_id) }).await
        {
            tracing::warn!(run = run_id, error = %e, "cannot tell the other replicas about a decision or signal");
        }
    }

    /// Wakes the scheduler on every work notice from any replica, and the waits of a
    /// run of this replica that a notice names.
    pub(crate) async fn spawn_work_listener(&self) {
        let mut events = self.store().subscribe().await;
        let weak = self.downgrade();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                match event {
                    Event::Work { run } => {
                        if let Some(run) = run {
                            inner.approvals.ring_run(run);
                            inner.signals.ring_run(run);
                        }
                        inner.wake.notify_one();
                    }
                    Event::Missed => {
                        inner.wake.notify_one();
                        // A decision's notice may be among those lost: every wait looks.
                        let runs: Vec<i64> = inner.active.lock().unwrap().keys().copied().collect();
                        for run in runs {
                            inner.approvals.ring_run(run);
                            inner.signals.ring_run(run);
                        }
                    }
                    _ => {}
                }
            }
        });
    }

    /// One scheduling pass on PostgreSQL: claims what the pipelines' policies let
    /// start, then takes over runs whose leases lapsed.
    pub(crate) async fn schedule_claims(&self) {
        if self.claims().draining.load(Ordering::SeqCst) {
            return;
        }
        let (owner, lease) = (self.claims().owner.clone(), self.claims().lease);
        let queued = match self.store().claimable_runs(CLAIM_BATCH).await {
            Ok(rows) => rows,
            Err(e) => return tracing::error!(error = %e, "cannot read the queued runs"),
        };
        // Pipelines whose `queue` policy said "not now" in this pass: their later runs
        // wait too, without a claim attempt each.
        let mut waiting: Vec<i64> = Vec::new();
        // A pass starts at most as many runs as the replica runs tasks at once, then
        // looks again shortly: a burst is shared with the other replicas.
        let mut budget = self.0.settings.max_parallel_tasks.max(1);
        for run in queued {
            if waiting.contains(&run.pipeline_id) {
                continue;
            }
            if budget == 0 {
                let wake = self.0.wake.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(SHARE_PAUSE).await;
                    wake.notify_one();
                });
                break;
            }
            let model = self.pipeline_version(run.pipeline_id, run.version).await;
            let policy = model.as_ref().map_or(wharf_core::model::Concurrency::Allow, |m| m.concurrency);
            let claimed = match self.store().claim_queued(run.run_id, run.pipeline_id, policy, &owner, lease).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::error!(run = run.run_id, error = %e, "cannot claim a queued run");
                    continue;
                }
            };
            match claimed {
                Claimed::Wait => {
                    waiting.push(run.pipeline_id);
                    continue;
                }
                Claimed::Gone => continue,
                Claimed::Start { .. } | Claimed::Superseded { .. } => budget -= 1,
            }
            let row = match self.store().run(run.run_id).await {
                Ok(row) => row,
                Err(e) => {
                    let why = "cannot read a claimed run; it is taken over when its lease lapses";
                    tracing::error!(run = run.run_id, error = %e, "{why}");
                    continue;
                }
            };
            let entry = Queued::from_row(&row);
            match claimed {
                Claimed::Wait | Claimed::Gone => {}
                Claimed::Superseded { fence } => {
                    let why = "superseded by a newer run before it started";
                    self.end_unstarted(&row, Hold::new(fence), Status::Stopped, why).await;
                }
                Claimed::Start { fence, supersede } => {
                    let hold = Hold::new(fence);
                    let model = match model {
                        Ok(model) => model,
                        Err(e) => {
                            let why = format!("cannot load the pipeline: {e}");
                            self.end_unstarted(&row, hold, Status::Failed, &why).await;
                            continue;
                        }
                    };
                    self.stop_superseded(&supersede, entry.number);
                    let (stop_tx, stop_rx) = watch::channel(None);
                    self.0.active.lock().unwrap().insert(
                        entry.run_id,
                        Active {
                            pipeline_id: entry.pipeline_id,
                            number: entry.number,
                            stop: stop_tx,
                            superseded_by: None,
                            hold: Some(hold.clone()),
                        },
                    );
                    self.start_run_soon(entry, model, stop_rx, Some(hold));
                }
            }
        }
        self.take_over_lapsed().await;
    }

    /// Stops the runs of this replica among `ids`, superseded by run `by`; the others'
    /// owners were asked in the store and hear it when they renew their leases.
    fn stop_superseded(&self, ids: &[i64], by: i64) {
        let mut active = self.0.active.lock().unwrap();
        for id in ids {
            if let Some(run) = active.get_mut(id)
                && run.superseded_by.is_none()
            {
                run.superseded_by = Some(by);
                run.stop.send_replace(Some(StopRequest {
                    reason: StopReason::Superseded { by: by as u64 },
                    grace: self.0.settings.stop_grace,
                }));
            }
        }
    }

    /// Ends a claimed run that never started, under its claim.
    async fn end_unstarted(&self, row: &RunRow, hold: Arc<Hold>, status: Status, why: &str) {
        let mut record = row.record.clone();
        record.end_unstarted(status, why, jiff::Timestamp::now());
        match self.save_held(row.summary.id, &record, Some(&hold)).await {
            Ok(_) => {
                if status == Status::Failed {
                    tracing::warn!(run = row.summary.id, "the run could not start: {why}");
                    self.0.shared.notify(crate::notify::RunEvent {
                        run_id: row.summary.id,
                        pipeline_id: row.summary.pipeline_id,
                        version: row.summary.version,
                        record,
                        kind: crate::notify::RunEventKind::Ended,
                    });
                }
                self.announce_work(None).await;
            }
            Err(e) => tracing::error!(run = row.summary.id, error = %e, "cannot end a run that did not start"),
        }
    }

    /// Takes over the started runs whose leases lapsed and settles them as after a
    /// restart.
    async fn take_over_lapsed(&self) {
        let (owner, lease) = (self.claims().owner.clone(), self.claims().lease);
        let lapsed = match self.store().lapsed_runs(TAKEOVER_BATCH).await {
            Ok(ids) => ids,
            Err(e) => return tracing::error!(error = %e, "cannot look for runs whose lease lapsed"),
        };
        let mut taken = Vec::new();
        for id in lapsed {
            match self.store().take_over(id, &owner, lease).await {
                Ok(Some((fence, row))) => {
                    tracing::warn!(run = id, fence, "took over a run whose server stopped renewing its lease");
                    taken.push((row, Some(Hold::new(fence))));
                }
                Ok(None) => {}
                Err(e) => tracing::error!(run = id, error = %e, "cannot take over a run"),
            }
        }
        if taken.is_empty() {
            return;
        }
        // Only what the taken runs' tasks left: other replicas' runs share the labels.
        let labels: Vec<String> = taken.iter().map(|(row, _)| self.run_label(row.summary.id)).collect();
        let found = self.leftovers().await.into_iter().filter(|f| labels.contains(&f.leftover.owner)).collect();
        if let Err(e) = self.settle_runs(taken, found).await {
            tracing::error!(error = %e, "cannot settle the runs taken over");
        }
    }

    /// Start-up on PostgreSQL: lets this replica's previous leases lapse, takes over
    /// every lapsed run (never one a live replica holds), and ends what tasks of runs
    /// that have ended left behind.
    pub(crate) async fn recover_replica(&self) -> Result<(), wharf_store::StoreError> {
        let owner = self.claims().owner.clone();
        let released = self.store().release_leases_of(&owner).await?;
        if released > 0 {
            tracing::warn!(runs = released, replica = %owner, "taking over the runs of this replica's previous process");
        }
        // Bounded: at most this many passes, each of a bounded batch.
        for _ in 0..64 {
            if self.store().lapsed_runs(1).await?.is_empty() {
                break;
            }
            self.take_over_lapsed().await;
        }
        // Leftovers of runs that have ended (their owner died between the end and the
        // clean-up): nobody will adopt them.
        let mut ended = Vec::new();
        for found in self.leftovers().await {
            let run = found.leftover.owner.strip_prefix(self.label_prefix()).and_then(|id| id.parse::<i64>().ok());
            let over = match run {
                Some(id) => match self.store().run(id).await {
                    Ok(row) => row.summary.status.is_terminal(),
                    Err(wharf_store::StoreError::NotFound(_)) => true,
                    Err(_) => false,
                },
                None => false,
            };
            if over {
                ended.push(found);
            }
        }
        self.discard(&ended).await;
        Ok(())
    }

    /// Renews the leases of this replica's runs every third of the lease; passes on
    /// stops asked elsewhere; loses the claims the store no longer gives it (or all of
    /// them when the database has not answered for a whole lease).
    pub(crate) fn spawn_lease_renewal(&self) {
        let weak = self.downgrade();
        let every = self.claims().lease / 3;
        tokio::spawn(async move {
            let mut renewed_at = Instant::now();
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { return };
                let this = Lifecycle(inner);
                renewed_at = this.renew_leases(renewed_at).await;
            }
        });
    }

    /// One renewal; returns when the leases were last known renewed.
    async fn renew_leases(&self, renewed_at: Instant) -> Instant {
        let held: Vec<(i64, Arc<Hold>)> = self
            .0
            .active
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(id, a)| a.hold.clone().map(|h| (*id, h)))
            .filter(|(_, h)| !h.is_lost())
            .collect();
        let ids: Vec<i64> = held.iter().map(|(id, _)| *id).collect();
        let renewed = match self.store().renew_leases(&self.claims().owner, &ids, self.claims().lease).await {
            Ok(renewed) => renewed,
            Err(e) => {
                tracing::error!(error = %e, "cannot renew this replica's leases");
                if renewed_at.elapsed() >= self.claims().lease {
                    for (id, hold) in &held {
                        tracing::warn!(run = id, "lease not renewed for a whole lease: the run is left to others");
                        hold.lose();
                    }
                }
                return renewed_at;
            }
        };
        for (id, hold) in held {
            let Some(mine) = renewed.iter().find(|r| r.run_id == id && r.fence == hold.fence) else {
                hold.lose();
                continue;
            };
            let Some(asked) = &mine.stop_request else { continue };
            if hold.asked.swap(true, Ordering::SeqCst) {
                continue;
            }
            let reason = match asked.strip_prefix("superseded:").and_then(|n| n.parse::<u64>().ok()) {
                Some(by) => StopReason::Superseded { by },
                None => StopReason::Stopped,
            };
            if let Some(run) = self.0.active.lock().unwrap().get_mut(&id) {
                if let StopReason::Superseded { by } = reason {
                    run.superseded_by = Some(by as i64);
                }
                run.stop.send_replace(Some(StopRequest { reason, grace: self.0.settings.stop_grace }));
            }
        }
        Instant::now()
    }

    /// Stops a run this replica does not hold: asked in the store for its owner, or
    /// ended here when it was queued and nobody held it.
    pub(crate) async fn stop_elsewhere(&self, run_id: i64) -> crate::error::Result<()> {
        let (owner, lease) = (self.claims().owner.clone(), self.claims().lease);
        match self.store().request_stop(run_id, &owner, lease).await? {
            StopAsked::Claimed { fence } => {
                let row = self.store().run(run_id).await?;
                let mut record = row.record;
                record.end_unstarted(Status::Stopped, "stopped by user before it started", jiff::Timestamp::now());
                self.store().save_record_fenced(run_id, &record, fence).await?;
                self.announce_work(None).await;
                Ok(())
            }
            StopAsked::Asked => Ok(()),
            StopAsked::Ended => {
                let row = self.store().run(run_id).await?;
                Err(RunError::Conflict(format!(
                    "run #{} of `{}` is already {}",
                    row.summary.number, row.pipeline, row.summary.status
                )))
            }
        }
    }

    /// A graceful stop: claims nothing more, waits up to `grace` for this replica's
    /// runs to end, then releases the leases of those still going so another replica
    /// takes them over at once (re-attaching what their tasks run; host tasks end as
    /// interrupted). Returns how many runs were handed over. On SQLite it only waits.
    pub async fn drain(&self, grace: Duration) -> usize {
        if let Some(claims) = &self.0.claims {
            claims.draining.store(true, Ordering::SeqCst);
        }
        self.shutdown();
        let deadline = Instant::now() + grace;
        while !self.0.active.lock().unwrap().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let left: Vec<(i64, Arc<Hold>)> =
            self.0.active.lock().unwrap().iter().filter_map(|(id, a)| a.hold.clone().map(|h| (*id, h))).collect();
        for (id, hold) in &left {
            // Lost first, so nothing of this process is written after the release.
            hold.lose();
            match self.store().release_lease(*id, hold.fence).await {
                Ok(_) => tracing::warn!(run = id, "stopping: the run is handed over to another replica"),
                Err(e) => tracing::error!(run = id, error = %e, "cannot release the lease; it lapses by itself"),
            }
        }
        if !left.is_empty() {
            self.announce_work(None).await;
        }
        left.len()
    }
}
