//! What the lifecycle counts for the server's Prometheus metrics: a histogram of task
//! durations and what persisting run records costs. The server renders them beside
//! its own ([`RunMetrics::render_tasks`], [`RunMetrics::render_records`]).

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the task duration buckets, in seconds.
const BUCKETS: [f64; 12] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

#[derive(Default)]
pub struct RunMetrics {
    tasks: Mutex<Histogram>,
    /// Run record updates the engine announced, and the parts they changed.
    record_updates: AtomicU64,
    record_changes: AtomicU64,
    /// Run record writes to the store, and their bytes.
    record_writes: AtomicU64,
    record_bytes: AtomicU64,
}

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl RunMetrics {
    pub fn task_finished(&self, seconds: f64) {
        let mut h = self.tasks.lock().unwrap();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// The engine announced one update of a run record that changed `parts` parts.
    pub fn record_changed(&self, parts: usize) {
        self.record_updates.fetch_add(1, Ordering::Relaxed);
        self.record_changes.fetch_add(parts as u64, Ordering::Relaxed);
    }

    /// A run record of `bytes` was written to the store.
    pub fn record_written(&self, bytes: usize) {
        self.record_writes.fetch_add(1, Ordering::Relaxed);
        self.record_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// `wharf_task_duration_seconds`, in the Prometheus text format.
    pub fn render_tasks(&self, out: &mut String) {
        let h = self.tasks.lock().unwrap();
        out.push_str("# HELP wharf_task_duration_seconds Wall time of finished tasks.\n");
        out.push_str("# TYPE wharf_task_duration_seconds histogram\n");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "wharf_task_duration_seconds_bucket{{le=\"{bound}\"}} {}", h.counts[i]);
        }
        let _ = writeln!(out, "wharf_task_duration_seconds_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "wharf_task_duration_seconds_sum {}", h.sum);
        let _ = writeln!(out, "wharf_task_duration_seconds_count {}", h.count);
    }

    /// `wharf_run_record_*_total`, in the Prometheus text format.
    pub fn render_records(&self, out: &mut String) {
        let record = [
            ("updates", "Run record updates the engine announced (one may change many parts).", &self.record_updates),
            ("changes", "Run record parts (run, checkout, stages, tasks) the engine changed.", &self.record_changes),
            ("writes", "Run record writes to the store (changes are coalesced).", &self.record_writes),
            ("written_bytes", "Bytes of run records written to the store.", &self.record_bytes),
        ];
        for (name, help, counter) in record {
            let _ = writeln!(out, "# HELP wharf_run_record_{name}_total {help}");
            let _ = writeln!(out, "# TYPE wharf_run_record_{name}_total counter");
            let _ = writeln!(out, "wharf_run_record_{name}_total {}", counter.load(Ordering::Relaxed));
        }
    }
}
