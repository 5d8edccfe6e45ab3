//! Prometheus text-format metrics: runs by status (from the store), the queue, webhook
//! deliveries, and the lifecycle's own ([`wharf_lifecycle::metrics`]: task durations,
//! what persisting run records costs).

use std::fmt::Write;
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    /// Webhook deliveries by final verdict, in `Verdict::ALL` order.
    webhooks: Mutex<[u64; 5]>,
}

impl Metrics {
    /// A webhook delivery got its final verdict.
    pub fn webhook(&self, verdict: wharf_store::deliveries::Verdict) {
        if let Some(i) = wharf_store::deliveries::Verdict::ALL.iter().position(|v| *v == verdict) {
            self.webhooks.lock().unwrap()[i] += 1;
        }
    }

    pub fn render(&self, runs_by_status: &[(String, i64)], runs: &wharf_lifecycle::Lifecycle) -> String {
        let (queued, active) = (runs.queued(), runs.active());
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
        runs.metrics().render_tasks(&mut out);
        out.push_str("# HELP wharf_webhook_deliveries_total Webhook deliveries handled, by verdict.\n");
        out.push_str("# TYPE wharf_webhook_deliveries_total counter\n");
        let webhooks = *self.webhooks.lock().unwrap();
        for (verdict, n) in wharf_store::deliveries::Verdict::ALL.iter().zip(webhooks) {
            let _ = writeln!(out, "wharf_webhook_deliveries_total{{verdict=\"{verdict}\"}} {n}");
        }
        runs.metrics().render_records(&mut out);
        out
    }
}
