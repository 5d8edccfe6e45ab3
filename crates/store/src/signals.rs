//! Stage triggers (migration 0015): each stage's hook token, kept as its SHA-256, and
//! the signals that came for waiting stages of runs (they go with their run).

use crate::db;
use crate::{Result, Store, StoreError};
use std::collections::BTreeMap;

/// A stage hook found by its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageHook {
    pub pipeline_id: i64,
    pub stage: String,
}

impl Store {
    /// Sets (or replaces) the hook token of `stage` of pipeline `pipeline_id`.
    pub async fn set_stage_hook(&self, pipeline_id: i64, stage: &str, token_sha256: &str) -> Result<()> {
        let _write = self.writer.lock().await;
        db::query(
            "INSERT INTO stage_hooks (pipeline_id, stage, token_sha256, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (pipeline_id, stage) DO UPDATE SET token_sha256 = excluded.token_sha256, \
             created_at = excluded.created_at",
        )
        .bind(pipeline_id)
        .bind(stage)
        .bind(token_sha256)
        .bind(jiff::Timestamp::now().as_millisecond())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The stage whose hook token hashes to `token_sha256`.
    pub async fn stage_hook(&self, token_sha256: &str) -> Result<Option<StageHook>> {
        let row = db::query("SELECT pipeline_id, stage FROM stage_hooks WHERE token_sha256 = ?")
            .bind(token_sha256)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| StageHook { pipeline_id: r.get(0), stage: r.get(1) }))
    }

    /// The stages of pipeline `pipeline_id` that have a hook token.
    pub async fn stage_hooks(&self, pipeline_id: i64) -> Result<Vec<String>> {
        let rows = db::query("SELECT stage FROM stage_hooks WHERE pipeline_id = ? ORDER BY stage")
            .bind(pipeline_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Stores a signal from `source` for `stage` of run `run_id`.
    pub async fn add_signal(
        &self,
        run_id: i64,
        stage: &str,
        source: &str,
        values: &BTreeMap<String, String>,
    ) -> Result<()> {
        let _write = self.writer.lock().await;
        let vals = serde_json::to_string(values).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        db::query("INSERT INTO stage_signals (run_id, stage, source, vals, at) VALUES (?, ?, ?, ?, ?)")
            .bind(run_id)
            .bind(stage)
            .bind(source)
            .bind(vals)
            .bind(jiff::Timestamp::now().as_millisecond())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The signals for `stage` of run `run_id`, in the order they came: (source, values).
    pub async fn signals(&self, run_id: i64, stage: &str) -> Result<Vec<(String, BTreeMap<String, String>)>> {
        let rows = db::query("SELECT source, vals FROM stage_signals WHERE run_id = ? AND stage = ? ORDER BY id")
            .bind(run_id)
            .bind(stage)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let vals: String = row.get(1);
                let values = serde_json::from_str(&vals)
                    .map_err(|e| StoreError::Corrupt(format!("a stage signal's values: {e}")))?;
                Ok((row.get(0), values))
            })
            .collect()
    }
}
