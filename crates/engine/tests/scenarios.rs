//! Scenario files: `tests/scenarios/NN_name.yaml` is a pipeline (the ordinary YAML)
//! with, beside it in `x-` extension fields that the pipeline parser ignores, what the
//! fake executor's tasks do and what the run must look like afterwards. Each file runs
//! in-process on a paused clock, so a scenario of hours takes microseconds.
//!
//! ```yaml
//! x-fake:                      # task → one behaviour per attempt (the last repeats);
//!   compile:                   # tasks not listed succeed at once
//!     - {runs: 10s, exit: 1, lines: [a], outputs: {K: V}, ignores_term: true, cannot_start: true}
//! x-engine: {slots: 1, grace: 5s}        # EngineConfig (default 8 slots, 10s grace)
//! x-stop: {after: 15s, grace: 2s}        # a person's stop; `after: 0s` = before the run starts
//! x-expect: {…}               # what the run must look like: see common/scenario.rs
//! ```
//!
//! Besides the listed expectations, every run is checked for: an observer that saw
//! the same history as the record, no change the state machine forbids, and every
//! part ending in a terminal status.

mod common;

use common::scenario::{check, duration, entries, get, items, text, tree};
use common::{Dirs, Recorder};
use std::path::Path;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use wharf_engine::{Engine, EngineConfig};
use wharf_executor::fake::{Behavior, FakeExecutor};
use wharf_executor::{StopReason, StopRequest};
use wharf_pipeline::yaml::Node;

fn behavior(node: &Node) -> Behavior {
    let mut b = Behavior::default();
    for (key, value) in entries(node) {
        match key {
            "runs" => b.runs_for = duration(value),
            "exit" => b.exit_code = text(value).parse().unwrap(),
            "lines" => b.lines = items(value).iter().map(|l| text(l).to_owned()).collect(),
            "outputs" => {
                b.outputs = entries(value).into_iter().map(|(k, v)| (k.to_owned(), text(v).to_owned())).collect()
            }
            "ignores_term" => b.ignores_term = text(value) == "true",
            "cannot_start" => b.cannot_start = text(value) == "true",
            other => panic!("line {}: unknown behaviour field `{other}`", value.pos.line),
        }
    }
    b
}

async fn run_scenario(file: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios").join(file);
    let yaml = std::fs::read_to_string(&path).unwrap();
    let pipeline = common::pipeline(&yaml);
    let root = tree(&yaml);

    let fake = FakeExecutor::new();
    if let Some(tasks) = get(&root, "x-fake") {
        for (name, attempts) in entries(tasks) {
            fake.on(name, items(attempts).iter().map(behavior).collect());
        }
    }
    let mut config = EngineConfig::default();
    if let Some(engine) = get(&root, "x-engine") {
        for (key, value) in entries(engine) {
            match key {
                "slots" => config.max_parallel_tasks = text(value).parse().unwrap(),
                "grace" => config.timeout_grace = duration(value),
                other => panic!("unknown x-engine field `{other}`"),
            }
        }
    }
    let stop = get(&root, "x-stop").map(|s| {
        let after = duration(get(s, "after").expect("x-stop.after"));
        let grace = get(s, "grace").map_or(Duration::from_secs(10), duration);
        (after, StopRequest { reason: StopReason::Stopped, grace })
    });

    let engine = Engine::new(config, fake.clone());
    let dirs = Dirs::new();
    let request = common::request(pipeline, dirs.existing());
    let recorder = Recorder::new();
    let started = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(None);
    let record = match stop {
        Some((after, request_stop)) if after.is_zero() => {
            stop_tx.send_replace(Some(request_stop));
            engine.run(request, recorder.clone(), stop_rx).await
        }
        Some((after, request_stop)) => {
            common::run_stopped_when(&engine, request, recorder.clone(), tokio::time::sleep(after), Some(request_stop))
                .await
        }
        None => engine.run(request, recorder.clone(), stop_rx).await,
    };
    let elapsed = started.elapsed();
    recorder.assert_consistent_with(&record);

    check(file, &root, &record, &recorder, elapsed);
}

macro_rules! scenarios {
    ($($name:ident => $file:literal,)*) => {
        $(
            #[tokio::test(start_paused = true)]
            async fn $name() {
                run_scenario($file).await;
            }
        )*

        /// A scenario file that no test names would silently never run.
        #[test]
        fn every_scenario_file_is_run() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
            let mut files: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            files.sort();
            let mut named = vec![$($file.to_owned()),*];
            named.sort();
            assert_eq!(files, named);
        }
    };
}

scenarios! {
    s01_success => "01_success.yaml",
    s02_pending_for_a_slot => "02_pending_for_a_slot.yaml",
    s03_failure_skips_the_rest => "03_failure_skips_the_rest.yaml",
    s04_on_error_ignore => "04_on_error_ignore.yaml",
    s05_on_error_rollback => "05_on_error_rollback.yaml",
    s06_rollback_that_fails => "06_rollback_that_fails.yaml",
    s07_retries_then_success => "07_retries_then_success.yaml",
    s08_retries_exhausted => "08_retries_exhausted.yaml",
    s09_task_timeout => "09_task_timeout.yaml",
    s10_stage_timeout => "10_stage_timeout.yaml",
    s11_pipeline_timeout => "11_pipeline_timeout.yaml",
    s12_timeout_grace => "12_timeout_grace.yaml",
    s13_pending_is_not_stage_time => "13_pending_is_not_stage_time.yaml",
    s14_stop_mid_run => "14_stop_mid_run.yaml",
    s15_stop_before_start => "15_stop_before_start.yaml",
    s16_stop_is_not_retried => "16_stop_is_not_retried.yaml",
    s17_stop_with_grace => "17_stop_with_grace.yaml",
    s18_stop_while_pending => "18_stop_while_pending.yaml",
    s19_parallel_failure => "19_parallel_failure.yaml",
    s20_cannot_start => "20_cannot_start.yaml",
    s21_declared_output_missing => "21_declared_output_missing.yaml",
    s22_stage_timeout_hung_task_holds_the_slot => "22_stage_timeout_hung_task_holds_the_slot.yaml",
    s23_parallel_stage_timeout => "23_parallel_stage_timeout.yaml",
}
