//! Timer state: one row per timer trigger of a pipeline (its position in the version's
//! `triggers`), with the version it was computed from, the stored `next_run_at` and the
//! due time of the last run it started. Times are epoch milliseconds.
//!
//! A due time is claimed with a compare-and-set on the row as it was read: of several
//! schedulers (tasks, or replicas on one database) that read the same row, exactly one
//! moves it on, and only that one starts the run. [`Store::create_timer_run`] makes the
//! claim and the run's insert one transaction, so a scheduler that dies between the
//! two loses nothing and doubles nothing; the run also carries its due time under a
//! unique key (pipeline, due time), so however the row was moved, a due time has at
//! most one run. [`Store::claim_timer`] claims without a run (a due time skipped).

use crate::db::{self, DbRow};
use crate::{Result, Store};
use serde::Serialize;

/// A stored timer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TimerRow {
    pub pipeline_id: i64,
    /// The trigger's position in the version's `triggers` (event triggers count too).
    pub trigger_index: i64,
    /// The pipeline version the row was computed from.
    pub version: i64,
    /// When it fires next; `None` when it never fires again.
    pub next_run_at: Option<i64>,
    /// The due time of the last run it started; `None` before the first.
    pub last_due: Option<i64>,
}

/// One timer of a pipeline version, as [`Store::replace_timers`] writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewTimer {
    pub trigger_index: i64,
    pub next_run_at: Option<i64>,
    pub last_due: Option<i64>,
}

/// A due time to claim together with its run: the row as read, and where the claim
/// moves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimerClaim {
    pub read: TimerRow,
    /// The row's next `next_run_at`.
    pub next_run_at: Option<i64>,
    /// The due time the run is for (the row's new `last_due`).
    pub due: i64,
}

const SELECT: &str = "SELECT t.pipeline_id, t.trigger_index, t.version, t.next_run_at, t.last_due FROM timers t";

fn timer(row: &DbRow) -> TimerRow {
    TimerRow {
        pipeline_id: row.get(0),
        trigger_index: row.get(1),
        version: row.get(2),
        next_run_at: row.get(3),
        last_due: row.get(4),
    }
}

impl Store {
    /// Replaces every timer row of a pipeline with `timers`, computed from `version`
    /// (none: the pipeline has no timers any more), and records `version` as the one
    /// its timers are computed from. One transaction: a reader sees the old rows or the
    /// new ones. A pipeline that does not exist is `NotFound`.
    pub async fn replace_timers(&self, pipeline_id: i64, version: i64, timers: &[NewTimer]) -> Result<()> {
        let _write = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        let marked = db::query("UPDATE pipelines SET timers_version = ? WHERE id = ?")
            .bind(version)
            .bind(pipeline_id)
            .execute(&mut tx)
            .await?;
        if marked.rows_affected() == 0 {
            return Err(crate::StoreError::NotFound(format!("pipeline {pipeline_id}")));
        }
        db::query("DELETE FROM timers WHERE pipeline_id = ?").bind(pipeline_id).execute(&mut tx).await?;
        for t in timers {
            db::query(
                "INSERT INTO timers (pipeline_id, trigger_index, version, next_run_at, last_due) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(pipeline_id)
            .bind(t.trigger_index)
            .bind(version)
            .bind(t.next_run_at)
            .bind(t.last_due)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The ids of the active pipelines whose timers were not computed from their latest
    /// version (edited or created without that step completing, or never looked at
    /// since the `timers_version` column arrived), by id.
    pub async fn pipelines_with_stale_timers(&self) -> Result<Vec<i64>> {
        let rows =
            db::query("SELECT id FROM pipelines WHERE active AND timers_version IS DISTINCT FROM version ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Records, for each `(pipeline id, version)`, that the pipeline's timer rows are
    /// those of `version` (found current without rewriting them), where that still is
    /// its latest version. One transaction for all.
    pub async fn mark_timers_current(&self, versions: &[(i64, i64)]) -> Result<()> {
        if versions.is_empty() {
            return Ok(());
        }
        let _write = self.writer.lock().await;
        // The pairs travel as one JSON array: one statement however many there are.
        let pairs = if self.pool.is_postgres() {
            "SELECT (e->>0)::bigint, (e->>1)::bigint FROM jsonb_array_elements(?::jsonb) e"
        } else {
            "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?)"
        };
        db::query(sqlx::AssertSqlSafe(format!(
            "UPDATE pipelines SET timers_version = version WHERE (id, version) IN ({pairs})"
        )))
        .bind(serde_json::json!(versions).to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every timer row, by pipeline and trigger.
    pub async fn timers(&self) -> Result<Vec<TimerRow>> {
        let sql = format!("{SELECT} ORDER BY t.pipeline_id, t.trigger_index");
        let rows = db::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(timer).collect())
    }

    /// A pipeline's timer rows, by trigger.
    pub async fn pipeline_timers(&self, pipeline_id: i64) -> Result<Vec<TimerRow>> {
        let sql = format!("{SELECT} WHERE t.pipeline_id = ? ORDER BY t.trigger_index");
        let rows = db::query(sqlx::AssertSqlSafe(sql)).bind(pipeline_id).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(timer).collect())
    }

    /// The timers of **active** pipelines due at `at_ms` (`next_run_at <= at_ms`), the
    /// earliest first. An inactive pipeline's rows are kept but never due.
    pub async fn due_timers(&self, at_ms: i64) -> Result<Vec<TimerRow>> {
        let sql = format!(
            "{SELECT} JOIN pipelines p ON p.id = t.pipeline_id \
             WHERE p.active AND t.next_run_at IS NOT NULL AND t.next_run_at <= ? \
             ORDER BY t.next_run_at, t.pipeline_id, t.trigger_index"
        );
        let rows = db::query(sqlx::AssertSqlSafe(sql)).bind(at_ms).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(timer).collect())
    }

    /// The earliest `next_run_at` of an active pipeline's timer: when a scheduler
    /// should look again.
    pub async fn next_timer_at(&self) -> Result<Option<i64>> {
        let row = db::query(
            "SELECT MIN(t.next_run_at) FROM timers t JOIN pipelines p ON p.id = t.pipeline_id WHERE p.active",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.get(0))
    }

    /// Compare-and-set: moves the timer `read` to `next_run_at` and `last_due` only if
    /// its row still is exactly as read (same version, `next_run_at` and `last_due`).
    /// `true` when this call moved it — the caller then owns the due time it claimed;
    /// `false` when another scheduler, an edit or a deletion got there first.
    pub async fn claim_timer(&self, read: &TimerRow, next_run_at: Option<i64>, last_due: Option<i64>) -> Result<bool> {
        let _write = self.writer.lock().await;
        compare_and_set(&self.pool, read, next_run_at, last_due).await
    }

    /// Claims `claim`'s due time and creates its run, in one transaction: `Ok(None)`
    /// when another scheduler, an edit or a deletion got to the row first (or the due
    /// time already has its run), and nothing is written. Otherwise as
    /// [`Store::create_run`] for the row's pipeline.
    pub async fn create_timer_run(
        &self,
        claim: &TimerClaim,
        version: i64,
        make_record: impl FnOnce(crate::Numbering) -> wharf_core::run::RunRecord,
    ) -> Result<Option<(crate::NewRun, wharf_core::run::RunRecord)>> {
        let _write = self.writer.lock().await;
        let mut tx = self.pool.begin().await?;
        let read = &claim.read;
        if !compare_and_set(&mut tx, read, claim.next_run_at, Some(claim.due)).await? {
            return Ok(None);
        }
        match crate::insert_run(&mut tx, read.pipeline_id, version, None, None, Some(claim.due), make_record).await {
            Ok(created) => {
                tx.commit().await?;
                Ok(Some(created))
            }
            Err(crate::StoreError::Conflict(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes a pipeline's timer rows (deleting the pipeline does it too).
    pub async fn delete_timers(&self, pipeline_id: i64) -> Result<()> {
        let _write = self.writer.lock().await;
        db::query("DELETE FROM timers WHERE pipeline_id = ?").bind(pipeline_id).execute(&self.pool).await?;
        Ok(())
    }
}

/// Moves the timer `read` to `next_run_at` and `last_due` if its row still is exactly
/// as read (same version, `next_run_at` and `last_due`); whether it did.
async fn compare_and_set<'c>(
    on: impl Into<db::On<'c>>,
    read: &TimerRow,
    next_run_at: Option<i64>,
    last_due: Option<i64>,
) -> Result<bool> {
    // `IS NOT DISTINCT FROM` compares NULLs as equal.
    let done = db::query(
        "UPDATE timers SET next_run_at = ?, last_due = ? \
         WHERE pipeline_id = ? AND trigger_index = ? AND version = ? \
         AND next_run_at IS NOT DISTINCT FROM ? AND last_due IS NOT DISTINCT FROM ?",
    )
    .bind(next_run_at)
    .bind(last_due)
    .bind(read.pipeline_id)
    .bind(read.trigger_index)
    .bind(read.version)
    .bind(read.next_run_at)
    .bind(read.last_due)
    .execute(on)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_core::run::{Cause, Progress, RunRecord};

    fn record(due: i64) -> impl FnOnce(crate::Numbering) -> RunRecord {
        move |new| RunRecord {
            pipeline: "app".into(),
            number: new.number as u64,
            cause: Cause::Timer { due: jiff::Timestamp::from_millisecond(due).unwrap() },
            parameters: Default::default(),
            progress: Progress::new(jiff::Timestamp::now()),
            reason: None,
            checkout: None,
            stages: vec![],
        }
    }

    on_both!(url: a_due_time_and_its_run_are_claimed_once_across_servers);

    /// Twenty schedulers on two stores (two servers on PostgreSQL) claim one due time
    /// with its run at once: one run. A stale read claims nothing; a due time whose row
    /// was recomputed (an edit to the same times) still gets no second run.
    async fn a_due_time_and_its_run_are_claimed_once_across_servers(url: String) {
        let a = Store::open(&url).await.unwrap();
        let b = if a.is_postgres() { Store::open(&url).await.unwrap() } else { a.clone() };
        let p = a.create_pipeline("admin", "app", "name: app\n").await.unwrap();
        let new = NewTimer { trigger_index: 0, next_run_at: Some(60_000), last_due: None };
        a.replace_timers(p.id, 1, &[new]).await.unwrap();
        let read = a.due_timers(60_000).await.unwrap().remove(0);
        let claim = TimerClaim { read: read.clone(), next_run_at: Some(120_000), due: 60_000 };
        let mut handles = Vec::new();
        for n in 0..20 {
            let store = if n % 2 == 0 { a.clone() } else { b.clone() };
            let claim = claim.clone();
            handles.push(tokio::spawn(async move {
                store.create_timer_run(&claim, 1, record(60_000)).await.unwrap().map(|(new, _)| new.id)
            }));
        }
        let mut runs = Vec::new();
        for h in handles {
            runs.extend(h.await.unwrap());
        }
        assert_eq!(runs.len(), 1, "exactly one claim creates a run");
        let row = a.pipeline_timers(p.id).await.unwrap().remove(0);
        assert_eq!((row.next_run_at, row.last_due), (Some(120_000), Some(60_000)));
        assert_eq!(a.runs(p.id, 10, 0).await.unwrap().1, 1);
        assert!(a.create_timer_run(&claim, 1, record(60_000)).await.unwrap().is_none(), "a stale read");

        // The row recomputed back to the same due time (as an edit might): the unique
        // key still refuses a second run for it, and the row is left as it was.
        a.replace_timers(p.id, 1, &[new]).await.unwrap();
        let again = TimerClaim { read: a.pipeline_timers(p.id).await.unwrap().remove(0), ..claim };
        assert!(a.create_timer_run(&again, 1, record(60_000)).await.unwrap().is_none());
        assert_eq!(a.pipeline_timers(p.id).await.unwrap()[0].next_run_at, Some(60_000), "rolled back");
        assert_eq!(a.runs(p.id, 10, 0).await.unwrap().1, 1);
        // Other runs (no due time) are not limited by the key.
        for _ in 0..2 {
            a.create_run(p.id, 1, None, None, record(60_000)).await.unwrap();
        }
        assert_eq!(a.runs(p.id, 10, 0).await.unwrap().1, 3);
    }
}
