//! What is deleted when: finished runs beyond the pipeline's (else the server's) count
//! or age, with their logs and workspaces, and checkouts beyond the newest
//! `keep_workspaces` runs. A run's end applies its pipeline's policy; a sweep every
//! ten minutes applies the age limits to every pipeline.

use crate::Lifecycle;
use std::time::Duration;

/// How often the age-based sweep runs.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

impl Lifecycle {
    /// Deletes what the retention policy no longer keeps (see the module).
    pub async fn apply_retention(&self, pipeline_id: i64) {
        let store = self.store();
        let settings = &self.0.settings;
        let Ok(pipeline) = store.pipeline(pipeline_id).await else { return };
        let policy = self.retention_policy(pipeline.id, pipeline.version).await;
        let keep = policy.and_then(|p| p.runs).or(settings.keep_runs).map(i64::from);
        let days = policy.and_then(|p| p.days).or(settings.keep_days).map(i64::from);
        let before = days.map(|d| wharf_store::now_ms() - d * 86_400_000);
        if (keep.is_some() || before.is_some())
            && let Ok(ids) = store.expired_runs(pipeline_id, keep, before).await
            && !ids.is_empty()
        {
            for id in &ids {
                let _ = self.logs().remove_run(*id).await;
                let _ = std::fs::remove_dir_all(self.workspace_dir(*id));
            }
            let _ = store.delete_runs(&ids).await;
        }
        // Only the runs just past the newest `keep_workspaces` (each run's end looks,
        // so older ones were handled already; the window covers a few ending at once).
        let keep_ws = i64::from(settings.keep_workspaces);
        if let Ok(old) = store.runs_newest_first(pipeline_id, 16, keep_ws).await {
            for run in old.iter().filter(|r| r.status.is_terminal()) {
                let src = self.workspace_dir(run.id).join("src");
                if src.is_symlink() {
                    let _ = std::fs::remove_file(&src);
                } else if src.exists() {
                    let _ = std::fs::remove_dir_all(&src);
                }
            }
        }
    }

    /// A version's retention policy, from the parse cache when it is there, without
    /// filling the cache (a sweep over every pipeline would keep them all in memory).
    async fn retention_policy(&self, pipeline_id: i64, version: i64) -> Option<wharf_core::model::Retention> {
        if let Some(model) = self.0.pipelines.lock().unwrap().get(&(pipeline_id, version)) {
            return model.retention;
        }
        let source = self.store().version(pipeline_id, version).await.ok()?.source;
        wharf_pipeline::parse(&source).ok()?.retention
    }

    /// Age-based retention needs a sweep now and then; runs ending apply the
    /// count-based part themselves. Not at start: a restart should be quick.
    pub(crate) fn spawn_retention_sweep(&self) {
        let weak = self.downgrade();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + SWEEP_EVERY, SWEEP_EVERY);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let this = Lifecycle(inner);
                if let Ok(ids) = this.store().pipeline_ids().await {
                    for id in ids {
                        this.apply_retention(id).await;
                    }
                }
            }
        });
    }
}
