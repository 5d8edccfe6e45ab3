//! Prometheus text-format metrics: runs by status (from the store), the queue, and a
//! histogram of task durations.

use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds of the task duration buckets, in seconds.
const BUCKETS: [f64; 12] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

#[derive(Default)]
pub struct Metrics {
    tasks: Mutex<Histogram>,
    /// Webhook deliveries by final verdict, in `Verdict::ALL` order.
    webhooks: Mutex<[u64; 5]>,
}

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
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

    /// A webhook delivery got its final verdict.
    pub fn webhook(&self, verdict: wharf_store::deliveries::Verdict) {
        if let Some(i) = wharf_store::deliveries::Verdict::ALL.iter().position(|v| *v == verdict) {
            self.webhooks.lock().unwrap()[i] += 1;
        }
    }

    pub fn render(&self, runs_by_status: &[(String, i64)], queued: usize, active: usize) -> String {
        let mut out = String::new();
        out.push_str("# HELP wharf_runs Stored runs by status.\n# TYPE wharf_runs gauge\n");
        for status in wharf_core::status::Status::ALL {
            let n = runs_by_status.iter().find(|(s, _)| s == status.as_str()).map_or(0, |(_, n)| *n);
            let _ = writeln!(out, "wharf_runs{{status=\"{status}\"}} {n}");
        }
        out.push_str("# HELP wharf_queue_length Runs waiting to start.\n# TYPE wharf_queue_length gauge\n");
        let _ = writeln!(out, "wharf_queue_length {queued}");
        out.push_str("# HELP wharf_active_runs Runs started and not finished.\n# TYPE wharf_active_runs gauge\n");
        let _ = writeln!(out, "wharf_active_runs {active}");
        let h = self.tasks.lock().unwrap();
        out.push_str("# HELP wharf_task_duration_seconds Wall time of finished tasks.\n");
        out.push_str("# TYPE wharf_task_duration_seconds histogram\n");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(out, "wharf_task_duration_seconds_bucket{{le=\"{bound}\"}} {}", h.counts[i]);
        }
        let _ = writeln!(out, "wharf_task_duration_seconds_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "wharf_task_duration_seconds_sum {}", h.sum);
        let _ = writeln!(out, "wharf_task_duration_seconds_count {}", h.count);
        drop(h);
        out.push_str("# HELP wharf_webhook_deliveries_total Webhook deliveries handled, by verdict.\n");
        out.push_str("# TYPE wharf_webhook_deliveries_total counter\n");
        let webhooks = *self.webhooks.lock().unwrap();
        for (verdict, n) in wharf_store::deliveries::Verdict::ALL.iter().zip(webhooks) {
            let _ = writeln!(out, "wharf_webhook_deliveries_total{{verdict=\"{verdict}\"}} {n}");
        }
        out
    }
}
