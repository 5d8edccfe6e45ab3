//! Webhook deliveries: every request to `/hooks/{provider}/{binding}`, stored before
//! the server answers it, with the headers (secret-bearing ones redacted by the
//! caller), the body (kept for replay), its SHA-256, the verdict and the runs it
//! started. A repeated provider delivery id is found with [`Store::earlier_delivery`],
//! which claims the id under a unique key, so servers sharing one database agree on
//! which copy goes ahead.

use crate::db::{self, DbRow};
use crate::{Result, Store, StoreError, now_ms};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// What became of a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Authentic and readable, being handled; a delivery still `received` after a
    /// restart was cut short and is handled again when the server starts.
    Received,
    /// It started at least one run.
    Started,
    /// Authentic, but it starts nothing (a ping, a deletion, no matching pipeline…).
    Ignored,
    /// The provider's delivery id was seen before: nothing started.
    Duplicate,
    /// Refused: unknown binding, bad signature, unreadable payload, too large.
    Rejected,
}

impl Verdict {
    pub const ALL: [Verdict; 5] =
        [Verdict::Received, Verdict::Started, Verdict::Ignored, Verdict::Duplicate, Verdict::Rejected];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Received => "received",
            Verdict::Started => "started",
            Verdict::Ignored => "ignored",
            Verdict::Duplicate => "duplicate",
            Verdict::Rejected => "rejected",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Verdict {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self> {
        Verdict::ALL
            .into_iter()
            .find(|v| v.as_str() == text)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown delivery verdict `{text}`")))
    }
}

/// How many deliveries are kept: those among the last `keep` received (but never one
/// still [`Verdict::Received`], which is waiting to be handled), and of the refused ones
/// ([`Verdict::Rejected`], sent by anyone) only the newest `keep_rejected`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub keep: u32,
    pub keep_rejected: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { keep: 10_000, keep_rejected: 1_000 }
    }
}

/// What storing a delivery writes.
#[derive(Clone, Debug)]
pub struct NewDelivery {
    /// The binding name from the URL (stored even when no such binding exists).
    pub binding: String,
    /// The provider from the URL: `github`, `gitlab`, `gitee`.
    pub provider: String,
    /// The provider's delivery id; empty when it could not be read.
    pub delivery_id: String,
    /// The event header as sent; empty when absent.
    pub event: String,
    /// The headers as a JSON object, secret-bearing ones already redacted.
    pub headers: serde_json::Value,
    /// The body (possibly cut short for rejected deliveries); `None` when not kept.
    pub body: Option<Vec<u8>>,
    /// Lower-case hex SHA-256 of the whole body as received; empty when the body was
    /// not read whole (too large).
    pub body_sha256: String,
    pub verdict: Verdict,
    pub reason: Option<String>,
    /// Gitee's signature mode: SHA-256 (hex) of the `X-Gitee-Token` signature, so that
    /// one signature is accepted with one body only ([`Store::signature_reused`]).
    pub signature_sha256: Option<String>,
}

/// A delivery as listed: everything but the headers and the body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeliverySummary {
    pub id: i64,
    pub binding: String,
    pub provider: String,
    pub delivery_id: String,
    pub event: String,
    pub verdict: Verdict,
    pub reason: Option<String>,
    /// Ids of the runs it started.
    pub runs: Vec<i64>,
    pub body_sha256: String,
    /// Epoch milliseconds.
    pub received_at: i64,
}

/// A delivery with its headers and body (for the detail view and replay).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRow {
    pub summary: DeliverySummary,
    pub headers: serde_json::Value,
    pub body: Option<Vec<u8>>,
}

const SUMMARY: &str = "id, binding, provider, delivery_id, event, verdict, reason, runs, body_sha256, received_at";

fn summary(row: &DbRow) -> Result<DeliverySummary> {
    let id: i64 = row.get(0);
    let verdict: String = row.get(5);
    let runs: String = row.get(7);
    Ok(DeliverySummary {
        id,
        binding: row.get(1),
        provider: row.get(2),
        delivery_id: row.get(3),
        event: row.get(4),
        verdict: verdict.parse()?,
        reason: row.get(6),
        runs: serde_json::from_str(&runs)
            .map_err(|e| StoreError::Corrupt(format!("the runs of delivery {id}: {e}")))?,
        body_sha256: row.get(8),
        received_at: row.get(9),
    })
}

fn full(row: &DbRow) -> Result<DeliveryRow> {
    let summary = summary(row)?;
    let headers: String = row.get(10);
    let headers = serde_json::from_str(&headers)
        .map_err(|e| StoreError::Corrupt(format!("the headers of delivery {}: {e}", summary.id)))?;
    Ok(DeliveryRow { summary, headers, body: row.get(11) })
}

impl Store {
    /// Stores a delivery and returns its id. Deliveries being handled are stored
    /// [`Verdict::Received`] and updated with [`Store::update_delivery`]; refused ones
    /// are stored with their final verdict at once. Older deliveries past the store's
    /// [`Retention`] are deleted in the same write.
    pub async fn insert_delivery(&self, new: &NewDelivery) -> Result<i64> {
        let headers = serde_json::to_string(&new.headers).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let _write = self.writer.lock().await;
        let done = db::query(
            "INSERT INTO deliveries (binding, provider, delivery_id, event, headers, body, body_sha256, verdict, \
             reason, runs, received_at, signature_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '[]', ?, ?) RETURNING id",
        )
        .bind(&new.binding)
        .bind(&new.provider)
        .bind(&new.delivery_id)
        .bind(&new.event)
        .bind(headers)
        .bind(&new.body)
        .bind(&new.body_sha256)
        .bind(new.verdict.as_str())
        .bind(&new.reason)
        .bind(now_ms())
        .bind(&new.signature_sha256)
        .fetch_one(&self.pool)
        .await?;
        let id: i64 = done.get(0);
        let Retention { keep, keep_rejected } = self.delivery_retention;
        if new.verdict == Verdict::Rejected {
            db::query(
                "DELETE FROM deliveries WHERE verdict = 'rejected' AND id <= (SELECT id FROM deliveries \
                 WHERE verdict = 'rejected' ORDER BY id DESC LIMIT 1 OFFSET ?)",
            )
            .bind(i64::from(keep_rejected))
            .execute(&self.pool)
            .await?;
        }
        // Ids are never reused (AUTOINCREMENT): the newest `keep` received are the ids
        // above this one's minus `keep` (a range on the primary key, however many are stored).
        db::query("DELETE FROM deliveries WHERE id <= ? AND verdict <> 'received'")
            .bind(id - i64::from(keep))
            .execute(&self.pool)
            .await?;
        Ok(id)
    }

    /// Sets a delivery's verdict, reason and the runs it started (all of them, not
    /// only the new ones).
    pub async fn update_delivery(&self, id: i64, verdict: Verdict, reason: Option<&str>, runs: &[i64]) -> Result<()> {
        let runs = serde_json::to_string(runs).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let _write = self.writer.lock().await;
        let done = db::query("UPDATE deliveries SET verdict = ?, reason = ?, runs = ? WHERE id = ?")
            .bind(verdict.as_str())
            .bind(reason)
            .bind(runs)
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("delivery {id}")));
        }
        Ok(())
    }

    /// Claims the provider delivery id for the stored delivery `before`: `None` when
    /// it is the first accepted delivery with this provider, binding and delivery id
    /// (it goes ahead), else `Some(id)` of the delivery that holds the claim (this one
    /// repeats it). The claim is a row under a primary key (`delivery_claims`), so of
    /// copies stored at once — on one server or on several sharing a database —
    /// exactly one gets `None`, whatever order their inserts commit in; asking again
    /// for the same delivery answers the same (a restart finishing a `received` one).
    /// Rejected deliveries never ask, so a forged copy does not make the real one a
    /// repeat. The claim goes with its delivery when retention deletes that.
    pub async fn earlier_delivery(
        &self,
        provider: &str,
        binding: &str,
        delivery_id: &str,
        before: i64,
    ) -> Result<Option<i64>> {
        let inserted = db::query(
            "INSERT INTO delivery_claims (provider, binding, delivery_id, delivery) VALUES (?, ?, ?, ?) \
             ON CONFLICT DO NOTHING RETURNING delivery",
        )
        .bind(provider)
        .bind(binding)
        .bind(delivery_id)
        .bind(before)
        .fetch_optional(&self.pool)
        .await?;
        if inserted.is_some() {
            return Ok(None); // the first: the claim is this delivery's
        }
        // Whoever inserted first holds it: this statement sees that committed row (a
        // concurrent insert of the same key waits for the first one to commit).
        let holder: i64 =
            db::query("SELECT delivery FROM delivery_claims WHERE provider = ? AND binding = ? AND delivery_id = ?")
                .bind(provider)
                .bind(binding)
                .bind(delivery_id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("delivery {before}")))?
                .get(0);
        Ok((holder != before).then_some(holder))
    }

    /// The id of an earlier accepted delivery that carried the same signature
    /// (`signature_sha256`) with another body: a signature that does not cover the body
    /// (Gitee's) is good for the body it first came with only.
    pub async fn signature_reused(&self, signature_sha256: &str, body_sha256: &str) -> Result<Option<i64>> {
        let row = db::query(
            "SELECT id FROM deliveries WHERE signature_sha256 = ? AND body_sha256 <> ? AND verdict <> 'rejected'              ORDER BY id LIMIT 1",
        )
        .bind(signature_sha256)
        .bind(body_sha256)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// A page of deliveries, newest first, with the total count.
    pub async fn deliveries(&self, limit: i64, offset: i64) -> Result<(Vec<DeliverySummary>, i64)> {
        let rows = db::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SUMMARY} FROM deliveries ORDER BY id DESC LIMIT ? OFFSET ?"
        )))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let items = rows.iter().map(summary).collect::<Result<Vec<_>>>()?;
        let total: i64 = db::query("SELECT COUNT(*) FROM deliveries").fetch_one(&self.pool).await?.get(0);
        Ok((items, total))
    }

    /// One delivery with its headers and body.
    pub async fn delivery(&self, id: i64) -> Result<DeliveryRow> {
        let row =
            db::query(sqlx::AssertSqlSafe(format!("SELECT {SUMMARY}, headers, body FROM deliveries WHERE id = ?")))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("delivery {id}")))?;
        full(&row)
    }

    /// Deliveries with `verdict`, oldest first, with headers and bodies (after a
    /// restart: the ones still `received`).
    pub async fn deliveries_with_verdict(&self, verdict: Verdict) -> Result<Vec<DeliveryRow>> {
        let rows = db::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SUMMARY}, headers, body FROM deliveries WHERE verdict = ? ORDER BY id"
        )))
        .bind(verdict.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(full).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(delivery_id: &str) -> NewDelivery {
        NewDelivery {
            binding: "gh".into(),
            provider: "github".into(),
            delivery_id: delivery_id.into(),
            event: "push".into(),
            headers: serde_json::json!({}),
            body: Some(b"{}".to_vec()),
            body_sha256: "ab".repeat(32),
            verdict: Verdict::Received,
            reason: None,
            signature_sha256: None,
        }
    }

    on_both!(url: copies_arriving_at_once_on_two_servers_start_once);

    /// Eight copies of one delivery, stored and checked at once through two stores
    /// (two servers on PostgreSQL; one SQLite file is one server's): exactly one goes
    /// ahead, and every other names it.
    async fn copies_arriving_at_once_on_two_servers_start_once(url: String) {
        let a = Store::open(&url).await.unwrap();
        let b = if a.is_postgres() { Store::open(&url).await.unwrap() } else { a.clone() };
        for round in 0..5 {
            let id = format!("d-{round}");
            let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(8));
            let mut handles = Vec::new();
            for n in 0..8 {
                let store = if n % 2 == 0 { a.clone() } else { b.clone() };
                let (id, barrier) = (id.clone(), barrier.clone());
                handles.push(tokio::spawn(async move {
                    let mine = store.insert_delivery(&copy(&id)).await.unwrap();
                    barrier.wait().await;
                    (mine, store.earlier_delivery("github", "gh", &id, mine).await.unwrap())
                }));
            }
            let mut answers = Vec::new();
            for h in handles {
                answers.push(h.await.unwrap());
            }
            let ahead: Vec<i64> = answers.iter().filter(|(_, e)| e.is_none()).map(|(m, _)| *m).collect();
            assert_eq!(ahead.len(), 1, "exactly one copy goes ahead: {answers:?}");
            assert!(answers.iter().all(|(m, e)| *m == ahead[0] || *e == Some(ahead[0])), "{answers:?}");
            // Asked again (a restart finishing it), the first still goes ahead.
            assert_eq!(a.earlier_delivery("github", "gh", &id, ahead[0]).await.unwrap(), None);
        }
    }
}
