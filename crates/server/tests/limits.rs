//! Issue 11 findings 3 and 13 over the API: pipelines over a size limit and values no
//! task could be given are refused at save (422 with line and column) or at the run
//! request; what persisting a run costs does not grow with its tasks; a stop of a
//! large run ends its waiting tasks in one update.

mod common;

use common::TestServer;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Instant;

/// The value of a counter (or gauge) in the Prometheus text.
async fn metric(s: &TestServer, name: &str) -> u64 {
    let text = s.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        .parse()
        .unwrap()
}

/// One stage per entry of `stages`, each with that many parallel tasks running `script`.
fn wide(name: &str, stages: &[usize], script: &str) -> String {
    let mut yaml = format!("name: {name}\nstages:\n");
    for (s, tasks) in stages.iter().enumerate() {
        yaml.push_str(&format!("  - name: s{s}\n    mode: parallel\n    tasks:\n"));
        for t in 0..*tasks {
            yaml.push_str(&format!("      - {{name: s{s}-t{t}, type: script, script: '{script}'}}\n"));
        }
    }
    yaml
}

/// The first detail of a 422 answer: (path, line, column, message).
fn first_detail(answer: &common::Answer) -> (String, u64, u64, String) {
    let d = &answer.json["error"]["details"][0];
    (
        d["path"].as_str().unwrap_or_default().to_owned(),
        d["line"].as_u64().unwrap_or(0),
        d["column"].as_u64().unwrap_or(0),
        d["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_over_a_limit_or_with_unusable_values_are_refused_at_save_with_line_and_column() {
    let s = common::start().await;
    let task_with = |field: &str| {
        format!(
            "name: p\nstages:\n  - name: b\n    tasks:\n      - name: t\n        type: script\n        script: 'true'\n{field}"
        )
    };
    // (what, the YAML, (path, line, column, a part of the message))
    type Case<'a> = (&'a str, String, (&'a str, u64, u64, &'a str));
    let cases: Vec<Case> = vec![
        ("stages", wide("p", &[1; 101], "true"), ("stages[100]", 403, 5, "101 stages; at most 100")),
        ("tasks per stage", wide("p", &[101], "true"), ("stages[0].tasks[100]", 106, 9, "at most 100")),
        (
            "tasks in all",
            wide("p", &[100, 100, 100, 100, 100, 1], "true"),
            ("stages[5].tasks[0]", 521, 9, "at most 500 tasks in all"),
        ),
        (
            "script size",
            format!(
                "name: p\nstages:\n  - name: b\n    tasks:\n      - name: t\n        type: script\n        script: {}\n",
                "x".repeat(70_000)
            ),
            ("stages[0].tasks[0].script", 7, 17, "at most 65536 bytes"),
        ),
        ("image with ;", task_with("        image: 'alpine;id'\n"), ("stages[0].tasks[0].image", 8, 16, "`alpine;id`")),
        ("image with $(..)", task_with("        image: '$(id)'\n"), ("stages[0].tasks[0].image", 8, 16, "`$(id)`")),
        (
            "image option",
            task_with("        image: '--privileged'\n"),
            ("stages[0].tasks[0].image", 8, 16, "`--privileged`"),
        ),
        (
            "NUL in env",
            task_with("        env:\n          X: \"a\\0b\"\n"),
            ("stages[0].tasks[0].env.X", 9, 16, "contains a NUL byte"),
        ),
        (
            "large parameter default",
            format!(
                "name: p\nparameters:\n  - {{name: P, default: {}}}\n{}",
                "v".repeat(40_000),
                &wide("p", &[1], "true")[8..]
            ),
            ("parameters[0].default", 3, 24, "at most 32768 bytes"),
        ),
    ];
    for (what, yaml, (path, line, column, says)) in cases {
        let answer = s.send_yaml(Method::POST, "/pipelines", &yaml).await.expect_error(422);
        let (got_path, got_line, got_column, message) = first_detail(&answer);
        assert_eq!((got_path.as_str(), got_line, got_column), (path, line, column), "{what}: {}", answer.text);
        assert!(message.contains(says), "{what}: {message}");
    }
    // At the limits, the same shapes are fine.
    s.create(&wide("at-the-limits", &[100, 100, 100, 100, 100], "true")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_no_task_could_be_given_are_refused_when_a_run_is_asked_for() {
    let s = common::start().await;
    s.create("name: p\nparameters: [{name: MSG, default: hi}]\nstages:\n  - name: b\n    tasks:\n      - {name: t, type: script, script: 'true'}\n")
        .await;
    for (value, says) in [
        ("a\0b".to_owned(), "parameter `MSG` contains a NUL byte"),
        ("x".repeat(1_900_000), "parameter `MSG` is 1900000 bytes long; a value may be at most 32768 bytes"),
    ] {
        let answer = s.post("/pipelines/p/runs", json!({ "parameters": { "MSG": value } })).await.expect_error(422);
        assert!(answer.error_text().contains(&format!("parameters: {says}")), "{}", answer.error_text());
    }
    let answer =
        s.call(Method::PUT, "/secrets/TOKEN", Some(json!({ "value": "long-enough\0value" }))).await.expect_error(422);
    assert!(answer.error_text().contains("value: contains a NUL byte"), "{}", answer.error_text());
    assert_eq!(s.get("/pipelines/p/runs").await.json["items"].as_array().map_or(0, Vec::len), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_writes_of_a_many_task_run_do_not_grow_with_its_tasks() {
    let s = common::start().await;
    s.create(&wide("many", &[100, 100], "true")).await;
    let started = Instant::now();
    let run = s.start_run("many", json!({})).await;
    let run = s.wait_run(run["id"].as_i64().unwrap()).await;
    let took = started.elapsed();
    assert_eq!(run["status"], "succeeded");
    let changes = metric(&s, "wharf_run_record_changes_total").await;
    let writes = metric(&s, "wharf_run_record_writes_total").await;
    // Each of the 200 tasks goes pending, running, succeeded (the slots are 8).
    assert!(changes >= 400, "{changes} changes");
    // At most one write per period (plus the first and the final one), however many
    // tasks changed in it.
    let periods = (took.as_millis() / wharf_lifecycle::persist::SAVE_EVERY.as_millis()) as u64;
    assert!(writes <= periods + 2, "{writes} writes in {took:?} for {changes} changes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_of_a_large_run_ends_its_waiting_tasks_in_one_update() {
    let s = common::start_with(tempfile::tempdir().unwrap(), |c| c.max_parallel_tasks = 4).await;
    s.create(&wide("large", &[100, 100], "sleep 30")).await;
    let run = s.start_run("large", json!({})).await;
    let id = run["id"].as_i64().unwrap();
    let count = |run: &Value, status: &str| {
        run["stages"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|st| st["tasks"].as_array().into_iter().flatten())
            .filter(|t| t["status"] == status)
            .count()
    };
    s.wait_run_until(id, "4 running and 96 pending", |r| count(r, "running") == 4 && count(r, "pending") == 96).await;
    let (updates, writes) =
        (metric(&s, "wharf_run_record_updates_total").await, metric(&s, "wharf_run_record_writes_total").await);
    let started = Instant::now();
    s.post_empty(&format!("/runs/{id}/stop")).await.expect(202);
    let run = s.wait_run(id).await;
    let took = started.elapsed();
    assert_eq!(run["status"], "stopped");
    assert_eq!(count(&run, "stopped"), 100);
    assert_eq!(count(&run, "skipped"), 100);
    let updates = metric(&s, "wharf_run_record_updates_total").await - updates;
    let writes = metric(&s, "wharf_run_record_writes_total").await - writes;
    // The 4 running tasks end one by one; the 96 waiting ones in one update, the 100
    // of the next stage in another; then the stage and the run: about 8. Without the
    // batch it is one per task (103). A fresh CI run under full load once counted 24
    // (waiting tasks woken by a freed slot before the batch reached them, each then
    // ended on its own), so the bound is what separates batched from per-task, not the
    // quiet-machine figure.
    assert!(updates <= 50, "{updates} updates for the stop");
    let periods = (took.as_millis() / wharf_lifecycle::persist::SAVE_EVERY.as_millis()) as u64;
    assert!(writes <= periods + 2, "{writes} writes in {took:?} for the stop");
}
