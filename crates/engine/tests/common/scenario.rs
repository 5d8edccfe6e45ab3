//! Scenario files, shared by the two suites that run them: `tests/scenarios.rs` (the fake
//! executor on a paused clock) and `tests/executors.rs` (the same kind of file with real
//! scripts, on the host, Docker and kubernetes executors). A file is an ordinary pipeline
//! plus `x-` extension fields, which the pipeline parser ignores; this module reads them
//! and checks a finished run against `x-expect`.
//!
//! ```yaml
//! x-expect:                    # every stage and task must be listed
//!   run: queued running failed           # the exact status history
//!   reason: "…"                          # the run's exact reason (absent = none)
//!   elapsed: 25s                         # clock time from start to end (paused clock only)
//!   elapsed_under: 20s                   # … at most this (real clock)
//!   checkout: queued running succeeded  # the source checkout's history (with `source:`)
//!   stages: {Build: queued running failed}
//!   tasks: {compile: queued running failed}
//!   reasons: {compile: "exit code 1"}    # exact reasons of stages or tasks (by name)
//!   attempts: {compile: 1}
//!   exit_codes: {compile: 1}             # the last attempt's exit code
//!   rollback: [Undo]                     # the stages marked as rollback stages (absent = none)
//!   output: {compile: [a]}               # what the task printed, in order
//!   output_any_order: {compile: [a, b]}  # … in any order (stdout and stderr of one task)
//!   outputs: {compile: {VERSION: "1"}}   # the task's recorded outputs, exactly
//!   output_sizes: {compile: [65536, 3]}  # the byte length of each line the task printed
//!   output_joined_len: {compile: 98307}  # the byte length of all its lines put together
//!   output_numbered:                     # `before`, then `line 1` … `line 500`, then `after`
//!     compile: {before: [a], from: 1, to: 500, after: [z]}
//! ```

use super::{Recorder, history, stage, statuses, task};
use std::collections::BTreeMap;
use std::time::Duration;
use wharf_core::run::RunRecord;
use wharf_engine::Part;
use wharf_pipeline::yaml::{Kind, Limits, Node};

/// The file's YAML tree, for its `x-` fields.
pub fn tree(yaml: &str) -> Node {
    wharf_pipeline::yaml::parse(yaml, Limits::default()).unwrap()
}

pub fn entries(node: &Node) -> Vec<(&str, &Node)> {
    match &node.kind {
        Kind::Map(entries) => entries.iter().map(|(k, v)| (text(k), v)).collect(),
        _ => panic!("line {}: expected a mapping", node.pos.line),
    }
}

pub fn get<'n>(node: &'n Node, key: &str) -> Option<&'n Node> {
    entries(node).into_iter().find(|(k, _)| *k == key).map(|(_, v)| v)
}

pub fn text(node: &Node) -> &str {
    match &node.kind {
        Kind::Scalar(s) => &s.text,
        _ => panic!("line {}: expected a scalar", node.pos.line),
    }
}

pub fn items(node: &Node) -> &[Node] {
    match &node.kind {
        Kind::Seq(items) => items,
        _ => panic!("line {}: expected a list", node.pos.line),
    }
}

pub fn duration(node: &Node) -> Duration {
    wharf_core::Duration::parse(text(node)).unwrap_or_else(|e| panic!("line {}: {e}", node.pos.line)).as_std()
}

/// A mapping of scalars, e.g. `x-secrets: {API_TOKEN: tok}`.
pub fn string_map(node: &Node) -> BTreeMap<String, String> {
    entries(node).into_iter().map(|(k, v)| (k.to_owned(), text(v).to_owned())).collect()
}

/// Checks the run against the file's `x-expect`; `file` names the scenario in failures.
pub fn check(file: &str, root: &Node, record: &RunRecord, recorder: &Recorder, elapsed: Duration) {
    let expect = get(root, "x-expect").expect("a scenario says what it expects in x-expect");
    let mut listed: Vec<Part> = vec![Part::Run];
    let mut reasons: BTreeMap<&str, &str> = BTreeMap::new();
    for (key, value) in entries(expect) {
        match key {
            "run" => assert_eq!(history(record, Part::Run), statuses(text(value)), "{file}: run"),
            "reason" => assert_eq!(record.reason.as_deref(), Some(text(value)), "{file}: run reason"),
            "elapsed" => assert_eq!(elapsed, duration(value), "{file}: elapsed"),
            "elapsed_under" => assert!(elapsed < duration(value), "{file}: took {elapsed:?}"),
            "checkout" => {
                listed.push(Part::Checkout);
                assert_eq!(history(record, Part::Checkout), statuses(text(value)), "{file}: checkout");
            }
            "stages" => {
                for (name, want) in entries(value) {
                    let part = stage(record, name);
                    listed.push(part);
                    assert_eq!(history(record, part), statuses(text(want)), "{file}: stage {name}");
                }
            }
            "tasks" => {
                for (name, want) in entries(value) {
                    let part = task(record, name);
                    listed.push(part);
                    assert_eq!(history(record, part), statuses(text(want)), "{file}: task {name}");
                }
            }
            "rollback" => {} // checked below, also when absent
            "reasons" => reasons.extend(entries(value).into_iter().map(|(k, v)| (k, text(v)))),
            "attempts" => {
                for (name, want) in entries(value) {
                    let got = super::task_record(record, name).attempts;
                    assert_eq!(got.to_string(), text(want), "{file}: attempts of {name}");
                }
            }
            "exit_codes" => {
                for (name, want) in entries(value) {
                    let got = super::task_record(record, name).exit_code;
                    assert_eq!(got.map(|c| c.to_string()).as_deref(), Some(text(want)), "{file}: exit code of {name}");
                }
            }
            "output" => {
                for (name, want) in entries(value) {
                    let want: Vec<&str> = items(want).iter().map(text).collect();
                    assert_eq!(recorder.output(task(record, name)), want, "{file}: output of {name}");
                }
            }
            "output_any_order" => {
                for (name, want) in entries(value) {
                    let mut want: Vec<&str> = items(want).iter().map(text).collect();
                    want.sort_unstable();
                    let mut got = recorder.output(task(record, name));
                    got.sort_unstable();
                    assert_eq!(got, want, "{file}: output of {name} (any order)");
                }
            }
            "output_numbered" => {
                for (name, want) in entries(value) {
                    let list =
                        |key| get(want, key).map_or(vec![], |l| items(l).iter().map(|i| text(i).to_owned()).collect());
                    let number = |key| text(get(want, key).expect("from and to")).parse::<u32>().unwrap();
                    let mut lines = list("before");
                    lines.extend((number("from")..=number("to")).map(|n| format!("line {n}")));
                    lines.extend(list("after"));
                    let got = recorder.output(task(record, name));
                    // Where they part, not 2000 lines of both.
                    let same = got.iter().zip(&lines).take_while(|(g, w)| g == w).count();
                    let (got_rest, want_rest) =
                        (&got[same..got.len().min(same + 3)], &lines[same..lines.len().min(same + 3)]);
                    assert_eq!(
                        (got.len(), got_rest),
                        (lines.len(), want_rest),
                        "{file}: output of {name} (line count; the lines from the first difference, at {same})"
                    );
                }
            }
            "output_sizes" => {
                for (name, want) in entries(value) {
                    let want: Vec<usize> = items(want).iter().map(|n| text(n).parse().unwrap()).collect();
                    let got: Vec<usize> = recorder.output(task(record, name)).iter().map(String::len).collect();
                    assert_eq!(got, want, "{file}: line sizes of {name}");
                }
            }
            "output_joined_len" => {
                for (name, want) in entries(value) {
                    let got: usize = recorder.output(task(record, name)).iter().map(String::len).sum();
                    assert_eq!(got.to_string(), text(want), "{file}: output size of {name}");
                }
            }
            "outputs" => {
                for (name, want) in entries(value) {
                    let got = &super::task_record(record, name).outputs;
                    assert_eq!(got, &string_map(want), "{file}: outputs of {name}");
                }
            }
            other => panic!("{file}: unknown x-expect field `{other}`"),
        }
    }
    if get(expect, "reason").is_none() {
        assert_eq!(record.reason, None, "{file}: run reason");
    }
    let rollback: Vec<&str> = record.stages.iter().filter(|s| s.rollback).map(|s| s.name.as_str()).collect();
    let want: Vec<&str> = get(expect, "rollback").map_or(vec![], |r| items(r).iter().map(text).collect());
    assert_eq!(rollback, want, "{file}: rollback stages");
    for part in super::parts(record) {
        assert!(listed.contains(&part), "{file}: x-expect does not list {part:?}; a scenario shows the whole run");
    }
    for (name, want) in reasons {
        let got = match record.stages.iter().find(|s| s.name == name) {
            Some(s) => s.reason.as_deref(),
            None => super::task_record(record, name).reason.as_deref(),
        };
        assert_eq!(got, Some(want), "{file}: reason of {name}");
    }
}
