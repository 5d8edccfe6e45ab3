//! The API contract as a reviewer reads it: the whole OpenAPI document (schemas from
//! `wharf-api`, operations from `openapi::ROUTES`) as a snapshot, so that a change to
//! the wire shows in review (`cargo insta review`; CI never rewrites snapshots), and
//! every reference in it names a schema that is there. And the JSON a running server
//! answers for a run, a pipeline list and an error, with times and sizes redacted.

mod common;

use serde_json::{Value, json};
use wharf_server::openapi::{Body, ROUTES, document};

fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn every_reference_in_the_document_names_a_schema() {
    let doc = document();
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.len() > 50, "{} references", found.len());
    for r in found {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("`{r}` is not a schema ref"));
        assert!(schemas.contains_key(name), "`{r}` names no schema");
    }
    for route in ROUTES {
        if let Body::Json(name) = route.body {
            assert!(schemas.contains_key(name), "{} {}: body {name}", route.method, route.path);
        }
        if let Some(name) = route.answer {
            assert!(schemas.contains_key(name), "{} {}: answer {name}", route.method, route.path);
        }
    }
}

#[test]
fn the_openapi_document_is_as_reviewed() {
    insta::assert_json_snapshot!("openapi", document(), { ".info.version" => "[version]" });
}

/// Times, sizes and durations vary from run to run; their presence and shape do not.
fn redacted(mut value: Value) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    let varies = matches!(
                        key.as_str(),
                        "at" | "started_at" | "finished_at" | "created_at" | "updated_at" | "duration_ms" | "log_size"
                    );
                    if varies && !v.is_null() {
                        *v = json!(format!("[{key}]"));
                    } else {
                        walk(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut value);
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_run_a_pipeline_list_and_an_error_are_as_reviewed() {
    let s = common::start().await;
    let yaml = "name: contract\nparameters:\n  - WHO\nstages:\n  - name: Main\n    tasks:\n      - name: main\n        type: script\n        \
                script: echo hello\n";
    let saved = s.create(yaml).await;
    let accepted = s.start_run(common::id_of(&saved), json!({ "WHO": "world" })).await;
    s.wait_run(common::id_of(&accepted)).await;
    let run = s.run(common::id_of(&accepted)).await;
    insta::assert_json_snapshot!("served_run", redacted(run));
    insta::assert_json_snapshot!("served_pipelines", redacted(s.get("/pipelines").await.expect(200).json));
    insta::assert_json_snapshot!("served_error", s.get("/runs/999").await.expect_error(404).json);
}
