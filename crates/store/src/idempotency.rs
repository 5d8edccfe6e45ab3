//! `Idempotency-Key` on `POST /pipelines/{key}/runs`: the run a key started, per
//! pipeline and caller, kept [`KEPT_MS`]. A request is *claimed* before its run is
//! made, so two requests with one key racing each other start one run, not two.

use crate::db;
use crate::{Result, Store, StoreError, now_ms};

/// How long a key answers with its run: 24 hours.
pub const KEPT_MS: i64 = 24 * 3600 * 1000;

/// A claim whose run was never recorded (its server died mid-request) is forgotten
/// after this long, so the key does not answer 409 for a day.
pub const ABANDONED_MS: i64 = 60 * 1000;

/// What a claim found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key is new: make the run, then [`Store::finish_run_request`] (or
    /// [`Store::release_run_request`] when it could not be made).
    New,
    /// The key was used with a request of this fingerprint; `run` is `(id, number)`,
    /// `None` while that first request is still being served.
    Used { body_sha256: String, run: Option<(i64, i64)> },
}

impl Store {
    /// Claims `key` of `caller` on `pipeline_id` for a request whose fingerprint is
    /// `body_sha256`, forgetting keys older than [`KEPT_MS`] (and claims abandoned for
    /// [`ABANDONED_MS`]) first.
    pub async fn claim_run_request(
        &self,
        pipeline_id: i64,
        caller: &str,
        key: &str,
        body_sha256: &str,
    ) -> Result<Claim> {
        let _write = self.writer.lock().await;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        db::query("DELETE FROM run_requests WHERE created_at < ? OR (run_id IS NULL AND created_at < ?)")
            .bind(now - KEPT_MS)
            .bind(now - ABANDONED_MS)
            .execute(&mut tx)
            .await?;
        let existing = db::query(
            "SELECT body_sha256, run_id, number FROM run_requests WHERE pipeline_id = ? AND caller = ? AND key = ?",
        )
        .bind(pipeline_id)
        .bind(caller)
        .bind(key)
        .fetch_optional(&mut tx)
        .await?;
        if let Some(row) = existing {
            let run = match (row.get::<Option<i64>>(1), row.get::<Option<i64>>(2)) {
                (Some(id), Some(number)) => Some((id, number)),
                _ => None,
            };
            return Ok(Claim::Used { body_sha256: row.get(0), run });
        }
        let done = db::query(
            "INSERT INTO run_requests (pipeline_id, caller, key, body_sha256, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(pipeline_id)
        .bind(caller)
        .bind(key)
        .bind(body_sha256)
        .bind(now)
        .execute(&mut tx)
        .await;
        if let Err(sqlx::Error::Database(e)) = &done
            && e.is_foreign_key_violation()
        {
            return Err(StoreError::NotFound(format!("pipeline {pipeline_id}")));
        }
        done?;
        tx.commit().await?;
        Ok(Claim::New)
    }

    /// Records the run a claimed key started.
    pub async fn finish_run_request(&self, pipeline_id: i64, caller: &str, key: &str, run: (i64, i64)) -> Result<()> {
        let _write = self.writer.lock().await;
        db::query("UPDATE run_requests SET run_id = ?, number = ? WHERE pipeline_id = ? AND caller = ? AND key = ?")
            .bind(run.0)
            .bind(run.1)
            .bind(pipeline_id)
            .bind(caller)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets a claim whose run could not be made, so the key may be tried again.
    pub async fn release_run_request(&self, pipeline_id: i64, caller: &str, key: &str) -> Result<()> {
        let _write = self.writer.lock().await;
        db::query("DELETE FROM run_requests WHERE pipeline_id = ? AND caller = ? AND key = ? AND run_id IS NULL")
            .bind(pipeline_id)
            .bind(caller)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn a_key_is_claimed_once_and_answers_its_run(s: Store) {
        db::query("INSERT INTO pipelines (id, project, name, version, created_at, updated_at) VALUES (1, 'admin', 'p', 1, 0, 0)")
            .execute(s.pool())
            .await
            .unwrap();
        assert_eq!(s.claim_run_request(1, "ann", "k1", "aa").await.unwrap(), Claim::New);
        let pending = Claim::Used { body_sha256: "aa".into(), run: None };
        assert_eq!(s.claim_run_request(1, "ann", "k1", "bb").await.unwrap(), pending);
        assert_eq!(s.claim_run_request(1, "bob", "k1", "aa").await.unwrap(), Claim::New, "per caller");
        s.finish_run_request(1, "ann", "k1", (7, 3)).await.unwrap();
        let done = Claim::Used { body_sha256: "aa".into(), run: Some((7, 3)) };
        assert_eq!(s.claim_run_request(1, "ann", "k1", "aa").await.unwrap(), done);
        db::query("UPDATE run_requests SET created_at = created_at - ? WHERE caller = 'bob'")
            .bind(ABANDONED_MS + 1)
            .execute(s.pool())
            .await
            .unwrap();
        assert_eq!(s.claim_run_request(1, "bob", "k1", "aa").await.unwrap(), Claim::New, "an abandoned claim");
        s.release_run_request(1, "bob", "k1").await.unwrap();
        assert_eq!(s.claim_run_request(1, "bob", "k1", "cc").await.unwrap(), Claim::New, "released");
        db::query("UPDATE run_requests SET created_at = 0").execute(s.pool()).await.unwrap();
        assert_eq!(s.claim_run_request(1, "ann", "k1", "dd").await.unwrap(), Claim::New, "expired after 24 h");
        assert!(matches!(s.claim_run_request(9, "ann", "k1", "aa").await, Err(StoreError::NotFound(_))));
    }

    on_both!(a_key_is_claimed_once_and_answers_its_run,);
}
