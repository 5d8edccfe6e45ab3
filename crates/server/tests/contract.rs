//! The API contract as a reviewer reads it: the whole OpenAPI document (schemas from
//! `wharf-api`, operations from `openapi::ROUTES`) as a snapshot, so that a change to
//! the wire shows in review (`cargo insta review`; CI never rewrites snapshots), and
//! every reference in it names a schema that is there.

use serde_json::Value;
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
