//! The JSON of representative answers, built from fixed inputs, as snapshots: a
//! change to a field's name, presence or shape shows here (`cargo insta review`; CI
//! never rewrites snapshots). And the client's reading of it: what the server writes,
//! the types read back.

use jiff::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use wharf_api::pipelines::{Pipeline, PipelineListed, Saved, WebhookInstall, WebhookStatus};
use wharf_api::runs::{Accepted, RunDetail, RunIds, RunSummary};
use wharf_api::{Detail, Error, ErrorInfo, Paged};
use wharf_core::run::{Cause, CheckoutRecord, Progress, RunRecord, StageRecord, TaskRecord};
use wharf_core::status::Status;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_790_000_000 + secs).unwrap()
}

/// Queued at `from`, running a second later, `end` after `secs` more.
fn progress(from: i64, secs: i64, end: Status) -> Progress {
    let mut p = Progress::new(at(from));
    p.advance(Status::Running, at(from + 1)).unwrap();
    p.advance(end, at(from + 1 + secs)).unwrap();
    p
}

fn record() -> RunRecord {
    RunRecord {
        pipeline: "shop".into(),
        number: 7,
        cause: Cause::Manual { user: "alice".into() },
        parameters: BTreeMap::from([("TARGET".into(), "staging".into())]),
        progress: progress(0, 20, Status::Failed),
        reason: Some("task `unit` failed (exit code 1)".into()),
        checkout: Some(CheckoutRecord {
            repo: "https://git.example.com/shop.git".into(),
            branch: Some("main".into()),
            tag: None,
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            progress: progress(1, 2, Status::Succeeded),
            reason: None,
        }),
        stages: vec![
            StageRecord {
                name: "Build".into(),
                rollback: false,
                progress: progress(4, 5, Status::Succeeded),
                reason: None,
                reused_from: None,
                tasks: vec![TaskRecord {
                    name: "build".into(),
                    task_type: "script".into(),
                    progress: progress(4, 5, Status::Succeeded),
                    attempts: 1,
                    attempt_started: None,
                    exit_code: Some(0),
                    outputs: BTreeMap::from([("version".into(), "1.2.3".into())]),
                    reason: None,
                    approval: None,
                }],
            },
            StageRecord {
                name: "Test".into(),
                rollback: false,
                progress: progress(10, 8, Status::Failed),
                reason: Some("task `unit` failed".into()),
                reused_from: None,
                tasks: vec![TaskRecord {
                    name: "unit".into(),
                    task_type: "script".into(),
                    progress: progress(10, 8, Status::Failed),
                    attempts: 2,
                    attempt_started: None,
                    exit_code: Some(1),
                    outputs: BTreeMap::new(),
                    reason: Some("exit code 1".into()),
                    approval: None,
                }],
            },
        ],
    }
}

fn detail() -> RunDetail {
    let ids = RunIds { id: 42, pipeline_id: 3, version: 2, retry_of: None, commit: None, increment: 17 };
    RunDetail::new(record(), ids, at(100), |stage, task| 1000 * stage as u64 + task as u64 + 12)
}

/// Serialised, then read back as the client reads it: the same value.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) -> serde_json::Value {
    let json = serde_json::to_value(value).unwrap();
    let back: T = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(&back, value);
    json
}

#[test]
fn a_run_detail() {
    insta::assert_json_snapshot!("run_detail", round_trip(&detail()));
}

#[test]
fn a_run_detail_holds_the_record() {
    assert_eq!(RunRecord::from(detail()), record());
}

fn summary() -> RunSummary {
    RunSummary {
        id: 42,
        pipeline_id: 3,
        number: 7,
        version: 2,
        status: Status::Failed,
        retry_of: None,
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        created_at: 1_790_000_000_000,
        updated_at: 1_790_000_021_000,
        increment: 17,
    }
}

#[test]
fn a_pipeline_list() {
    let pipeline = Pipeline {
        id: 3,
        project: "admin".into(),
        name: "shop".into(),
        active: true,
        version: 2,
        created_at: 1_789_000_000_000,
        updated_at: 1_789_500_000_000,
        created_by: "alice".into(),
    };
    let source = serde_json::from_value(serde_json::json!({ "repo": "https://git.example.com/shop.git" })).unwrap();
    let page = Paged {
        items: vec![
            PipelineListed { pipeline: pipeline.clone(), source: Some(source), last_run: Some(summary()) },
            PipelineListed {
                pipeline: Pipeline { id: 4, name: "docs".into(), active: false, ..pipeline },
                source: None,
                last_run: None,
            },
        ],
        page: 1,
        limit: 50,
        total: 2,
    };
    insta::assert_json_snapshot!("pipeline_list", round_trip(&page));
}

#[test]
fn a_save_that_started_a_run() {
    let saved = Saved {
        id: 3,
        name: "shop".into(),
        project: "admin".into(),
        version: 2,
        run: Some(Accepted { id: 43, number: 8 }),
        webhook: Some(WebhookInstall {
            binding: "gh".into(),
            repository: "acme/shop".into(),
            status: WebhookStatus::Manual,
            url: "http://wharf.example.com/hooks/github/gh".into(),
            hook_id: None,
            message: "the webhook was not installed: the server's `public_url` is not set".into(),
        }),
    };
    insta::assert_json_snapshot!("saved", round_trip(&saved));
}

#[test]
fn an_error_body() {
    let error = Error {
        error: ErrorInfo {
            status: 422,
            message: "the pipeline is not valid (2 problem(s))".into(),
            details: vec![
                Detail {
                    path: "stages[0].tasks[0].type".into(),
                    line: Some(7),
                    column: Some(15),
                    message: "bad".into(),
                },
                Detail::at("parameters", "missing X"),
            ],
        },
    };
    insta::assert_json_snapshot!("error", round_trip(&error));
}
