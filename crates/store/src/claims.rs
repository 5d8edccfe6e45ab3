//! Run claims: which server ("replica") runs which run when several share one
//! PostgreSQL database (issue 18). On SQLite there is one server per database and the
//! lifecycle does not use them (they work there too, for the tests).
//!
//! - **Claim.** A queued run is started by the replica that claims it: in one
//!   transaction, under a lock on its pipeline (`pg_advisory_xact_lock(pipeline id)`)
//!   so each pipeline's `concurrency` is decided by one replica at a time, the run's
//!   row is locked (`FOR UPDATE SKIP LOCKED`), checked still queued and unclaimed, and
//!   given an owner, a lease expiry and a fence one higher than before ([`Store::claim_queued`]).
//! - **Lease.** The owner renews the leases of the runs it has while they are active
//!   ([`Store::renew_leases`]); the renewal also brings it stops asked on other replicas
//!   (`stop_request`).
//! - **Fence.** Every write of a claimed run's record carries the fence of its claim
//!   ([`Store::save_record_fenced`]); after a takeover the fence is higher, so a
//!   replica that paused past its lease is refused ([`StoreError::Fenced`]) and must
//!   stop writing.
//! - **Takeover.** A started run whose lease lapsed (its owner died) is claimed by
//!   another replica ([`Store::take_over`], fence + 1), which handles it as a restart
//!   would (re-attach, queue again or settle as interrupted).
//!
//! Lease times are the replicas' own clocks (epoch ms): keep them in sync (NTP); the
//! skew must stay well below the lease.

use crate::db::{self, Tx};
use crate::{Result, RunRow, Store, StoreError, now_ms};
use std::time::Duration;
use wharf_core::model::Concurrency;

/// The statuses of a run in progress (started, not ended).
const STARTED: &str = "('pending', 'running', 'waiting')";

/// What [`Store::claim_queued`] decided for a queued run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claimed {
    /// Claimed with this fence: start it. `supersede`: the pipeline's runs in progress
    /// that a `cancel-previous` start stops (asked in the store, `stop_request`).
    Start { fence: i64, supersede: Vec<i64> },
    /// Claimed with this fence, but a newer queued run of its `cancel-previous`
    /// pipeline supersedes it: end it unstarted.
    Superseded { fence: i64 },
    /// Not now: the pipeline's `queue` policy waits for a run in progress or an older
    /// queued one.
    Wait,
    /// Another replica has it, or it is no longer queued.
    Gone,
}

/// A queued run a replica may try to claim ([`Store::claimable_runs`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claimable {
    pub run_id: i64,
    pub pipeline_id: i64,
    pub version: i64,
}

/// A lease renewed by [`Store::renew_leases`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renewed {
    pub run_id: i64,
    pub fence: i64,
    /// A stop asked on another replica: `stopped`, or `superseded:<number>`.
    pub stop_request: Option<String>,
}

/// What [`Store::request_stop`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopAsked {
    /// The run was queued and unclaimed: it is now claimed with this fence, for the
    /// caller to end unstarted.
    Claimed { fence: i64 },
    /// Another replica has it: its owner reads the request when it renews its lease.
    Asked,
    /// It has ended already.
    Ended,
}

fn ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2)
}

impl Store {
    /// Queued runs no live lease holds, oldest first, at most `limit`: what a replica
    /// may try to claim (without their records: most passes claim few of them).
    pub async fn claimable_runs(&self, limit: i64) -> Result<Vec<Claimable>> {
        let rows = db::query(
            "SELECT id, pipeline_id, version FROM runs WHERE status = 'queued' AND (owner IS NULL OR lease_until < ?) \
             ORDER BY id LIMIT ?",
        )
        .bind(now_ms())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| Claimable { run_id: r.get(0), pipeline_id: r.get(1), version: r.get(2) }).collect())
    }

    /// Claims queued run `run_id` of `pipeline_id` for `owner` when its pipeline's
    /// `policy` lets it start now (see the module docs).
    pub async fn claim_queued(
        &self,
        run_id: i64,
        pipeline_id: i64,
        policy: Concurrency,
        owner: &str,
        lease: Duration,
    ) -> Result<Claimed> {
        let _write = self.writer.lock().await;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        lock_pipeline(&mut tx, pipeline_id).await?;
        let Some(row) = lock_run(&mut tx, run_id).await? else { return Ok(Claimed::Gone) };
        let (status, owned, lease_until): (String, Option<String>, i64) = (row.get(0), row.get(1), row.get(2));
        if status != "queued" || (owned.is_some() && lease_until >= now) {
            return Ok(Claimed::Gone);
        }
        // The pipeline's other runs in progress, or claimed to start, not asked to stop.
        let busy: Vec<i64> = db::query(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM runs WHERE pipeline_id = ? AND id <> ? AND stop_request IS NULL \
             AND (status IN {STARTED} OR (status = 'queued' AND owner IS NOT NULL AND lease_until >= ?)) ORDER BY id"
        )))
        .bind(pipeline_id)
        .bind(run_id)
        .bind(now)
        .fetch_all(&mut tx)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
        let decided = match policy {
            Concurrency::Allow => Claimed::Start { fence: 0, supersede: vec![] },
            Concurrency::Queue => {
                let older: i64 = db::query(
                    "SELECT COUNT(*) FROM runs WHERE pipeline_id = ? AND status = 'queued' AND id < ? \
                     AND stop_request IS NULL",
                )
                .bind(pipeline_id)
                .bind(run_id)
                .fetch_one(&mut tx)
                .await?
                .get(0);
                if !busy.is_empty() || older > 0 {
                    return Ok(Claimed::Wait);
                }
                Claimed::Start { fence: 0, supersede: vec![] }
            }
            Concurrency::CancelPrevious => {
                let newer: i64 = db::query(
                    "SELECT COUNT(*) FROM runs WHERE pipeline_id = ? AND status = 'queued' AND id > ? \
                     AND stop_request IS NULL",
                )
                .bind(pipeline_id)
                .bind(run_id)
                .fetch_one(&mut tx)
                .await?
                .get(0);
                if newer > 0 {
                    // Asked to stop as it is claimed: it no longer counts as busy.
                    db::query("UPDATE runs SET stop_request = 'superseded' WHERE id = ?")
                        .bind(run_id)
                        .execute(&mut tx)
                        .await?;
                    Claimed::Superseded { fence: 0 }
                } else {
                    let number: i64 =
                        db::query("SELECT number FROM runs WHERE id = ?").bind(run_id).fetch_one(&mut tx).await?.get(0);
                    let asked = format!("superseded:{number}");
                    for id in &busy {
                        db::query("UPDATE runs SET stop_request = ? WHERE id = ?")
                            .bind(&asked)
                            .bind(id)
                            .execute(&mut tx)
                            .await?;
                    }
                    Claimed::Start { fence: 0, supersede: busy }
                }
            }
        };
        let fence = claim(&mut tx, run_id, owner, now + ms(lease)).await?;
        tx.commit().await?;
        Ok(match decided {
            Claimed::Start { supersede, .. } => Claimed::Start { fence, supersede },
            Claimed::Superseded { .. } => Claimed::Superseded { fence },
            other => other,
        })
    }

    /// Started runs whose lease lapsed (their owner died, or they predate claims),
    /// oldest first, at most `limit`: what [`Store::take_over`] may take.
    pub async fn lapsed_runs(&self, limit: i64) -> Result<Vec<i64>> {
        let rows = db::query(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM runs WHERE status IN {STARTED} AND lease_until < ? ORDER BY id LIMIT ?"
        )))
        .bind(now_ms())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Claims started run `run_id` for `owner` if its lease lapsed (fence + 1), with
    /// its row as it is now; `None` when it ended, another replica holds it or is
    /// taking it over right now.
    pub async fn take_over(&self, run_id: i64, owner: &str, lease: Duration) -> Result<Option<(i64, RunRow)>> {
        let _write = self.writer.lock().await;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let Some(row) = lock_run(&mut tx, run_id).await? else { return Ok(None) };
        let (status, lease_until): (String, i64) = (row.get(0), row.get(2));
        if !matches!(status.as_str(), "pending" | "running" | "waiting") || lease_until >= now {
            return Ok(None);
        }
        let fence = claim(&mut tx, run_id, owner, now + ms(lease)).await?;
        let row = db::query(sqlx::AssertSqlSafe(format!("{} WHERE r.id = ?", crate::RUN_SELECT)))
            .bind(run_id)
            .fetch_one(&mut tx)
            .await?;
        let row = crate::run_row(&row)?;
        tx.commit().await?;
        Ok(Some((fence, row)))
    }

    /// Extends the leases `owner` holds on `runs` (not ended); answers each one it
    /// still holds, with its fence and any stop asked for it. A run missing from the
    /// answer (or with another fence) is no longer this owner's.
    pub async fn renew_leases(&self, owner: &str, runs: &[i64], lease: Duration) -> Result<Vec<Renewed>> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = runs.iter().map(i64::to_string).collect();
        let _write = self.writer.lock().await;
        // The ids are numbers, formatted here.
        let rows = db::query(sqlx::AssertSqlSafe(format!(
            "UPDATE runs SET lease_until = ? WHERE owner = ? AND id IN ({}) \
             AND status IN ('queued', 'pending', 'running', 'waiting') RETURNING id, fence, stop_request",
            ids.join(", ")
        )))
        .bind(now_ms() + ms(lease))
        .bind(owner)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| Renewed { run_id: r.get(0), fence: r.get(1), stop_request: r.get(2) }).collect())
    }

    /// Lets the lease of `run_id` lapse now if `fence` still holds it, so another
    /// replica takes it over at once (a server stopping gracefully with runs left).
    pub async fn release_lease(&self, run_id: i64, fence: i64) -> Result<bool> {
        let _write = self.writer.lock().await;
        let done = db::query("UPDATE runs SET lease_until = 0 WHERE id = ? AND fence = ?")
            .bind(run_id)
            .bind(fence)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Lets lapse every lease `owner` holds: at start, what a previous process under
    /// the same replica id held is taken over at once instead of after its lease.
    pub async fn release_leases_of(&self, owner: &str) -> Result<u64> {
        let _write = self.writer.lock().await;
        let done = db::query(
            "UPDATE runs SET lease_until = 0 WHERE owner = ? AND status IN ('queued', 'pending', 'running', 'waiting')",
        )
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Asks for run `run_id` to stop, from a replica that does not run it (see
    /// [`StopAsked`]). A queued run nobody holds is claimed for `owner` to end it.
    pub async fn request_stop(&self, run_id: i64, owner: &str, lease: Duration) -> Result<StopAsked> {
        let _write = self.writer.lock().await;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let Some(row) = lock_run_waiting(&mut tx, run_id).await? else {
            return Err(StoreError::NotFound(format!("run {run_id}")));
        };
        let (status, owned, lease_until): (String, Option<String>, i64) = (row.get(0), row.get(1), row.get(2));
        let asked = match status.as_str() {
            "queued" if owned.is_none() || lease_until < now => {
                StopAsked::Claimed { fence: claim(&mut tx, run_id, owner, now + ms(lease)).await? }
            }
            "queued" | "pending" | "running" | "waiting" => {
                db::query("UPDATE runs SET stop_request = 'stopped' WHERE id = ? AND stop_request IS NULL")
                    .bind(run_id)
                    .execute(&mut tx)
                    .await?;
                StopAsked::Asked
            }
            _ => StopAsked::Ended,
        };
        tx.commit().await?;
        Ok(asked)
    }

    /// [`save_record`](Store::save_record) for the holder of claim `fence`: refused
    /// with [`StoreError::Fenced`] when another replica has claimed the run since.
    pub async fn save_record_fenced(
        &self,
        run_id: i64,
        record: &wharf_core::run::RunRecord,
        fence: i64,
    ) -> Result<usize> {
        self.write_record(run_id, record, Some(fence)).await
    }

    /// This installation's id: made once by the first server on the database, the
    /// same for every replica (what ties the labels of tasks' containers and pods to
    /// the installation rather than to one server's data directory).
    pub async fn installation_id(&self) -> Result<String> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| StoreError::Corrupt(format!("no randomness: {e}")))?;
        let fresh: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        {
            let _write = self.writer.lock().await;
            db::query("INSERT INTO settings (key, value) VALUES ('installation_id', ?) ON CONFLICT (key) DO NOTHING")
                .bind(fresh)
                .execute(&self.pool)
                .await?;
        }
        self.setting("installation_id")
            .await?
            .ok_or_else(|| StoreError::Corrupt("the installation id was not stored".into()))
    }
}

/// Holds the decision lock of `pipeline_id` until the transaction ends (PostgreSQL;
/// SQLite has one writer at a time anyway).
async fn lock_pipeline(tx: &mut Tx, pipeline_id: i64) -> Result<()> {
    if tx.is_postgres() {
        db::query("SELECT pg_advisory_xact_lock(?)").bind(pipeline_id).execute(&mut *tx).await?;
    }
    Ok(())
}

/// `status, owner, lease_until, fence` of a run, its row locked for the transaction;
/// `None` when it is missing or another transaction holds it (PostgreSQL skips it).
async fn lock_run(tx: &mut Tx, run_id: i64) -> Result<Option<db::DbRow>> {
    let lock = if tx.is_postgres() { " FOR UPDATE SKIP LOCKED" } else { "" };
    Ok(db::query(sqlx::AssertSqlSafe(format!("SELECT status, owner, lease_until, fence FROM runs WHERE id = ?{lock}")))
        .bind(run_id)
        .fetch_optional(&mut *tx)
        .await?)
}

/// As [`lock_run`], waiting for the row instead of skipping it.
async fn lock_run_waiting(tx: &mut Tx, run_id: i64) -> Result<Option<db::DbRow>> {
    let lock = if tx.is_postgres() { " FOR UPDATE" } else { "" };
    Ok(db::query(sqlx::AssertSqlSafe(format!("SELECT status, owner, lease_until, fence FROM runs WHERE id = ?{lock}")))
        .bind(run_id)
        .fetch_optional(&mut *tx)
        .await?)
}

/// Gives the run to `owner` until `until`, one fence higher; returns the new fence.
async fn claim(tx: &mut Tx, run_id: i64, owner: &str, until: i64) -> Result<i64> {
    Ok(db::query("UPDATE runs SET owner = ?, lease_until = ?, fence = fence + 1 WHERE id = ? RETURNING fence")
        .bind(owner)
        .bind(until)
        .bind(run_id)
        .fetch_one(&mut *tx)
        .await?
        .get(0))
}
