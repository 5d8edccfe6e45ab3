//! What a notification tells: the [`Facts`] of a run at the moment it is sent, as the
//! webhook's JSON body (documented in docs/pipeline-yaml.md, `notify`) and as an
//! e-mail's subject and text.

use serde::Serialize;
use wharf_core::run::RunRecord;
use wharf_core::status::Status;

/// Why a notification is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// The run succeeded.
    Success,
    /// The run ended otherwise (failed, timed out, stopped).
    Failure,
    /// An approval task started waiting for people.
    Waiting,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Success => "success",
            Event::Failure => "failure",
            Event::Waiting => "waiting",
        }
    }
}

/// The approval a `waiting` notification is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Waiting {
    pub stage: String,
    pub task: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub approvers: Vec<String>,
}

/// The webhook's JSON body; the e-mail says the same in words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Facts {
    pub event: Event,
    pub pipeline: String,
    /// The run number (`BUILD_ID`).
    pub run: u64,
    /// The run's id on the server.
    pub run_id: i64,
    /// For a stage's own notification: the stage, whose status `status` then is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The run's status when sent (`running` for `waiting`), or the stage's.
    pub status: Status,
    /// Wall time from start to end (or to now), milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// What started it, in words (`started by ann`, `timer due …`).
    pub cause: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// `Stage/task` of the first task that failed or timed out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_task: Option<String>,
    /// Why the run ended as it did, when it did not succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Waiting>,
    /// The run page, when the server knows its public address (`public_url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// When it was sent, RFC 3339.
    pub sent_at: String,
}

impl Facts {
    /// The facts of `record` (run `run_id`) for `event`; `public_url` is the server's
    /// base address (`https://ci.example.com`).
    pub fn of(
        record: &RunRecord,
        run_id: i64,
        event: Event,
        waiting: Option<Waiting>,
        public_url: Option<&str>,
    ) -> Facts {
        let now = jiff::Timestamp::now();
        let failed_task = record.stages.iter().find_map(|s| {
            s.tasks
                .iter()
                .find(|t| matches!(t.progress.status, Status::Failed | Status::TimedOut))
                .map(|t| format!("{}/{}", s.name, t.name))
        });
        let checkout = record.checkout.as_ref();
        Facts {
            event,
            pipeline: record.pipeline.clone(),
            run: record.number,
            run_id,
            stage: None,
            status: record.progress.status,
            duration_ms: record.progress.wall_time(now).map(|d| d.as_millis() as u64),
            cause: record.cause.describe(),
            commit: checkout.and_then(|c| c.commit.clone()),
            branch: checkout.and_then(|c| c.branch.clone().or(c.tag.clone())),
            failed_task,
            reason: record.reason.clone(),
            waiting,
            url: public_url.map(|base| format!("{}/runs/{run_id}", base.trim_end_matches('/'))),
            sent_at: now.to_string(),
        }
    }

    /// The facts as a channel message's values (`notify: [{channel: …}]`), named
    /// `NOTIFY_EVENT`, `NOTIFY_PIPELINE`, `NOTIFY_RUN`, `NOTIFY_STATUS`, and when known
    /// `NOTIFY_STAGE`, `NOTIFY_CAUSE`, `NOTIFY_COMMIT`, `NOTIFY_BRANCH`,
    /// `NOTIFY_FAILED_TASK`, `NOTIFY_REASON`, `NOTIFY_URL`, `NOTIFY_TASK` and
    /// `NOTIFY_MESSAGE` (the approval that waits): a pipeline the channel triggers takes
    /// those it declares as parameters.
    pub fn values(&self) -> std::collections::BTreeMap<String, String> {
        let waiting = self.waiting.as_ref();
        [
            ("EVENT", Some(self.event.as_str().to_owned())),
            ("PIPELINE", Some(self.pipeline.clone())),
            ("RUN", Some(self.run.to_string())),
            ("STATUS", Some(self.status.as_str().to_owned())),
            ("STAGE", self.stage.clone().or_else(|| waiting.map(|w| w.stage.clone()))),
            ("CAUSE", Some(self.cause.clone())),
            ("COMMIT", self.commit.clone()),
            ("BRANCH", self.branch.clone()),
            ("FAILED_TASK", self.failed_task.clone()),
            ("REASON", self.reason.clone()),
            ("URL", self.url.clone()),
            ("TASK", waiting.map(|w| w.task.clone())),
            ("MESSAGE", waiting.and_then(|w| w.message.clone())),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (format!("NOTIFY_{name}"), v)))
        .collect()
    }

    /// The documented JSON body.
    pub fn json(&self) -> String {
        serde_json::to_string(self).expect("facts serialise")
    }

    /// `[Wharf] gated #3 failed`, `[Wharf] gated #3 waits for approval of Review/sign`.
    pub fn subject(&self) -> String {
        match (&self.waiting, &self.stage) {
            (Some(w), _) => {
                format!("[Wharf] {} #{} waits for approval of {}/{}", self.pipeline, self.run, w.stage, w.task)
            }
            (None, Some(stage)) => format!("[Wharf] {} #{}: stage {stage} {}", self.pipeline, self.run, self.status),
            (None, None) => format!("[Wharf] {} #{} {}", self.pipeline, self.run, self.status),
        }
    }

    /// The e-mail's text: one fact per line.
    pub fn text(&self) -> String {
        let mut lines = vec![self.subject().trim_start_matches("[Wharf] ").to_owned(), String::new()];
        let mut fact = |label: &str, value: &str| lines.push(format!("{label:<13}{value}"));
        fact("Pipeline:", &self.pipeline);
        fact("Run:", &format!("#{}", self.run));
        fact("Status:", self.status.as_str());
        if let Some(ms) = self.duration_ms {
            fact("Duration:", &human(ms));
        }
        fact("Cause:", &self.cause);
        if let Some(commit) = &self.commit {
            fact("Commit:", commit);
        }
        if let Some(branch) = &self.branch {
            fact("Branch:", branch);
        }
        if let Some(task) = &self.failed_task {
            fact("Failed task:", task);
        }
        if let Some(reason) = &self.reason {
            fact("Reason:", reason);
        }
        if let Some(w) = &self.waiting {
            fact("Waiting at:", &format!("{}/{}", w.stage, w.task));
            fact("Approvers:", &w.approvers.join(", "));
            if let Some(message) = &w.message {
                fact("Question:", message);
            }
        }
        if let Some(url) = &self.url {
            fact("Run page:", url);
        }
        lines.push(String::new());
        lines.push("-- Wharf".to_owned());
        lines.join("\n") + "\n"
    }
}

/// `1.2s`, `3m 4s`, `1h 2m`.
fn human(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..60 => format!("{}.{}s", secs, (ms % 1000) / 100),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3600, (secs % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_core::run::{Cause, Progress};

    #[test]
    fn the_facts_name_the_failed_task_and_link_the_run_page() {
        let at = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let mut progress = Progress::new(at);
        progress.advance(Status::Running, at).unwrap();
        progress.advance(Status::Failed, at.checked_add(jiff::SignedDuration::from_secs(75)).unwrap()).unwrap();
        let record = RunRecord {
            pipeline: "shop".into(),
            number: 3,
            cause: Cause::Manual { user: "ann".into() },
            parameters: Default::default(),
            progress,
            reason: Some("stage `Test` failed".into()),
            checkout: None,
            stages: vec![],
        };
        let facts = Facts::of(&record, 12, Event::Failure, None, Some("https://ci.example.com/"));
        assert_eq!(facts.url.as_deref(), Some("https://ci.example.com/runs/12"));
        assert_eq!(facts.subject(), "[Wharf] shop #3 failed");
        let text = facts.text();
        assert!(text.contains("Duration:    1m 15s\n"), "{text}");
        assert!(text.contains("Cause:       started by ann\n"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&facts.json()).unwrap();
        assert_eq!((json["event"].as_str(), json["run"].as_u64()), (Some("failure"), Some(3)));
        assert_eq!(json["duration_ms"], 75_000);
    }
}
