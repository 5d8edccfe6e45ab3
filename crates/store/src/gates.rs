//! Approval decisions and notification delivery attempts of runs (migration 0014).
//! Both go with their run when retention deletes it.

use crate::db;
use crate::{Result, Store, StoreError};
use wharf_core::approval::{Decision, Verdict};

/// Longest comment kept with a decision, in characters.
pub const MAX_COMMENT_CHARS: usize = 2000;

/// One delivery attempt of a notification.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NotificationAttempt {
    /// `success`, `failure` or `waiting`.
    pub event: String,
    /// `webhook`, `email` or `channel`.
    pub channel: String,
    /// The URL without its query, or the addresses.
    pub target: String,
    /// 1, 2, … per notification.
    pub attempt: u32,
    /// `delivered` or `failed`.
    pub outcome: String,
    pub detail: String,
    /// Epoch milliseconds.
    pub at: i64,
}

impl Store {
    /// Stores `user`'s decision on `task` of run `run_id`; `false` when that user had
    /// decided already (nothing changes).
    pub async fn add_decision(&self, run_id: i64, task: &str, decision: &Decision) -> Result<bool> {
        let _write = self.writer.lock().await;
        let comment: String = decision.comment.chars().take(MAX_COMMENT_CHARS).collect();
        let done = db::query(
            "INSERT INTO approval_decisions (run_id, task, \"user\", verdict, comment, at) VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (run_id, task, \"user\") DO NOTHING",
        )
        .bind(run_id)
        .bind(task)
        .bind(&decision.user)
        .bind(decision.verdict.as_str())
        .bind(comment)
        .bind(decision.at.as_millisecond())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The decisions on `task` of run `run_id`, in the order given.
    pub async fn decisions(&self, run_id: i64, task: &str) -> Result<Vec<Decision>> {
        let rows = db::query(
            "SELECT \"user\", verdict, comment, at FROM approval_decisions WHERE run_id = ? AND task = ? ORDER BY id",
        )
        .bind(run_id)
        .bind(task)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let verdict: String = row.get(1);
                let verdict = match verdict.as_str() {
                    "approve" => Verdict::Approve,
                    "reject" => Verdict::Reject,
                    other => return Err(StoreError::Corrupt(format!("unknown approval verdict `{other}`"))),
                };
                let at = jiff::Timestamp::from_millisecond(row.get(3))
                    .map_err(|e| StoreError::Corrupt(format!("approval decision time: {e}")))?;
                Ok(Decision { user: row.get(0), verdict, comment: row.get(2), at })
            })
            .collect()
    }

    /// Stores one notification delivery attempt of run `run_id`.
    pub async fn add_notification_attempt(&self, run_id: i64, attempt: &NotificationAttempt) -> Result<()> {
        let _write = self.writer.lock().await;
        db::query(
            "INSERT INTO notification_attempts (run_id, event, channel, target, attempt, outcome, detail, at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(run_id)
        .bind(&attempt.event)
        .bind(&attempt.channel)
        .bind(&attempt.target)
        .bind(i64::from(attempt.attempt))
        .bind(&attempt.outcome)
        .bind(attempt.detail.chars().take(MAX_COMMENT_CHARS).collect::<String>())
        .bind(attempt.at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The notification delivery attempts of run `run_id`, oldest first (at most 500).
    pub async fn notification_attempts(&self, run_id: i64) -> Result<Vec<NotificationAttempt>> {
        let rows = db::query(
            "SELECT event, channel, target, attempt, outcome, detail, at FROM notification_attempts \
             WHERE run_id = ? ORDER BY id LIMIT 500",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| NotificationAttempt {
                event: row.get(0),
                channel: row.get(1),
                target: row.get(2),
                attempt: row.get::<i64>(3) as u32,
                outcome: row.get(4),
                detail: row.get(5),
                at: row.get(6),
            })
            .collect())
    }
}
