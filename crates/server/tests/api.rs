//! API integration tests: a real server on loopback, real HTTP, real host tasks.
//! Every route of `wharf_server::openapi::ROUTES` is covered with its errors (401,
//! 404, 409, 422) and its pagination; see `every_documented_route_is_routed`.
//!
//! Each test starts its own server with its own data directory, so tests run in
//! parallel and counts (metrics, pagination) are exact.

mod common;

use common::{Answer, SseEvent, SseReader, TOKEN, id_of, log_texts, task_of, ts};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use wharf_server::openapi::{Body, ROUTES};

// ---------------------------------------------------------------------------------
// Pipelines used by several tests.

/// A pipeline `name` with the top-level lines `top` (each ending in a newline) and one
/// stage `Main` holding one script task `main`.
fn one_task(name: &str, top: &str, script: &str) -> String {
    let mut yaml = format!(
        "name: {name}\n{top}stages:\n  - name: Main\n    tasks:\n      - name: main\n        type: script\n        script: |\n"
    );
    for line in script.lines() {
        yaml.push_str("          ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

fn names(values: &Value, field: &str) -> Vec<String> {
    values.as_array().unwrap().iter().map(|v| v[field].as_str().unwrap_or_default().to_owned()).collect()
}

fn numbers(page: &Value) -> Vec<i64> {
    page["items"].as_array().unwrap().iter().map(|r| r["number"].as_i64().unwrap()).collect()
}

fn history(value: &Value) -> Vec<String> {
    value["history"].as_array().unwrap().iter().map(|t| t["status"].as_str().unwrap().to_owned()).collect()
}

/// The text of a task's whole log (the plain tail from 0).
async fn task_log(s: &common::TestServer, run: i64, task: &str) -> String {
    s.tail(run, task, None).await.expect(200).text
}

// ---------------------------------------------------------------------------------
// Authentication

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_needs_the_bearer_token_but_health_and_metrics_do_not() {
    let s = common::start().await;
    let plain = reqwest::Client::new();

    let none = Answer::read(plain.get(s.url("/pipelines")).send().await.unwrap()).await.expect_error(401);
    assert!(none.error_text().contains("Bearer"), "{}", none.text);
    assert!(none.header("content-type").unwrap().starts_with("application/json"));
    Answer::read(plain.get(s.url("/pipelines")).bearer_auth("wrong-token").send().await.unwrap())
        .await
        .expect_error(401);
    // The right token under another scheme, or without one, is not accepted either.
    for value in [format!("Basic {TOKEN}"), TOKEN.to_owned(), format!("Bearer {TOKEN}x"), "Bearer ".to_owned()] {
        Answer::read(plain.get(s.url("/pipelines")).header("authorization", value).send().await.unwrap())
            .await
            .expect_error(401);
    }
    // Every documented route (bar the OpenAPI document itself) is guarded, whatever the ids.
    for route in ROUTES.iter().filter(|r| r.path != "/openapi.json") {
        let path = route.path.replace("{key}", "1").replace("{id}", "1").replace("{task}", "main");
        let method = Method::from_bytes(route.method.to_uppercase().as_bytes()).unwrap();
        let answer = Answer::read(plain.request(method, s.url(&path)).send().await.unwrap()).await;
        assert_eq!(answer.status, 401, "{} {path} without a token: {}", route.method, answer.text);
        assert_eq!(answer.json["error"]["status"], 401);
    }

    let health = plain.get(format!("{}/healthz", s.base)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap().trim(), "ok");
    let metrics = plain.get(format!("{}/metrics", s.base)).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("wharf_queue_length"));
    let doc = plain.get(s.url("/openapi.json")).send().await.unwrap();
    assert_eq!(doc.status(), 200, "the OpenAPI document is public (docs/api.md)");

    // With the token: fine.
    s.get("/pipelines").await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_get_the_json_404_of_the_fallback() {
    let s = common::start().await;
    for path in ["/api/v1/nothing-here", "/api/v2/pipelines", "/nothing"] {
        let answer = Answer::read(s.client.get(format!("{}{path}", s.base)).send().await.unwrap()).await;
        let answer = answer.expect_error(404);
        assert!(answer.error_text().contains("no such route"), "{path}: {}", answer.text);
    }
}

// ---------------------------------------------------------------------------------
// Pipelines

const SIMPLE: &str = "name: from-yaml
description: made from YAML
stages:
  - name: Build
    tasks:
      - name: build
        type: script
        script: echo built
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_a_pipeline_from_yaml_or_json_and_get_it_by_id_or_name() {
    let s = common::start().await;
    let from_yaml = s.send_yaml(Method::POST, "/pipelines", SIMPLE).await.expect(201).json;
    assert_eq!(from_yaml["name"], "from-yaml");
    assert_eq!(from_yaml["project"], "admin");
    assert_eq!(from_yaml["version"], 1);
    assert!(from_yaml["id"].is_i64(), "{from_yaml}");
    assert!(from_yaml.get("run").is_none(), "no run without ?run=true: {from_yaml}");

    let body = json!({
        "name": "from-json",
        "timeout": "5m",
        "stages": [{ "name": "Build", "tasks": [{ "name": "build", "type": "script", "script": "echo built" }] }]
    });
    let response = s
        .client
        .post(s.url("/pipelines"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let from_json = Answer::read(response).await.expect(201).json;
    assert_eq!(from_json["name"], "from-json");
    assert_eq!(from_json["project"], "admin");
    assert_eq!(from_json["version"], 1);
    assert_ne!(from_json["id"], from_yaml["id"]);

    let by_id = s.get(&format!("/pipelines/{}", id_of(&from_json))).await.expect(200).json;
    let by_name = s.get("/pipelines/from-json").await.expect(200).json;
    assert_eq!(by_id, by_name);
    assert_eq!(by_id["id"], from_json["id"]);
    assert_eq!(by_id["name"], "from-json");
    assert_eq!(by_id["active"], true);
    assert_eq!(by_id["version"], 1);
    assert_eq!(names(&by_id["definition"]["stages"], "name"), ["Build"]);
    assert_eq!(by_id["definition"]["stages"][0]["tasks"][0]["script"], "echo built");
    assert_eq!(by_id["versions"].as_array().unwrap().len(), 1);
    assert_eq!(by_id["versions"][0]["version"], 1);
    assert_eq!(by_id["last_run"], Value::Null);
    assert_eq!(by_id["active_runs"], json!([]));
    let yaml_shown = s.get("/pipelines/from-yaml").await.expect(200).json;
    assert_eq!(yaml_shown["description"], "made from YAML");

    // The stored YAML is the text as sent.
    let stored = s.get("/pipelines/from-yaml/yaml").await.expect(200);
    assert_eq!(stored.text, SIMPLE);
    assert!(stored.header("content-type").unwrap().starts_with("application/yaml"));

    // `?project=` places it (for a manager of that project: the cloud admin creates in
    // project admin only); a YAML `project:` that disagrees is refused.
    let manager = s.user("shopkeeper", "manager", &["shop"]).await;
    let other = SIMPLE.replace("from-yaml", "in-shop");
    let placed = manager.send_yaml(Method::POST, "/pipelines?project=shop", &other).await.expect(201).json;
    assert_eq!(placed["project"], "shop");
    let clash = format!("project: web\n{}", SIMPLE.replace("from-yaml", "clash"));
    let refused = manager.send_yaml(Method::POST, "/pipelines?project=shop", &clash).await.expect_error(422);
    assert_eq!(refused.json["error"]["details"][0]["path"], "project");
    s.get("/pipelines/clash").await.expect_error(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_pipelines_are_422_with_path_line_and_column() {
    let s = common::start().await;
    let yaml = "name: broken
stages:
  - name: Build
    tasks:
      - name: build
        type: script
        timeout: 5x
        script: echo hi
";
    let answer = s.send_yaml(Method::POST, "/pipelines", yaml).await.expect_error(422);
    let details = answer.json["error"]["details"].as_array().unwrap();
    assert_eq!(details.len(), 1, "{}", answer.text);
    assert_eq!(details[0]["path"], "stages[0].tasks[0].timeout");
    assert_eq!(details[0]["line"], 7);
    assert_eq!(details[0]["column"], 18);
    assert!(details[0]["message"].as_str().unwrap().contains("5x"), "{}", answer.text);

    // Every problem at once, each with its own position.
    let two = "name: broken
concurrency: sometimes
stages:
  - name: Build
    tasks:
      - name: build
        type: script
        script: echo hi
        colour: blue
";
    let answer = s.send_yaml(Method::POST, "/pipelines", two).await.expect_error(422);
    let paths: Vec<String> = names(&answer.json["error"]["details"], "path");
    assert!(paths.contains(&"concurrency".to_owned()), "{}", answer.text);
    assert!(paths.iter().any(|p| p.starts_with("stages[0].tasks[0]")), "{}", answer.text);
    for d in answer.json["error"]["details"].as_array().unwrap() {
        assert!(d["line"].as_u64().unwrap() >= 2 && d["column"].as_u64().unwrap() >= 1, "{d}");
    }

    // Not YAML at all, an empty body, JSON with a missing field: 422 with a position.
    for body in ["stages: [unclosed", "", "{\"name\": \"no-stages\"}"] {
        let answer = s.send_yaml(Method::POST, "/pipelines", body).await.expect_error(422);
        let detail = &answer.json["error"]["details"][0];
        assert!(detail["line"].is_u64() && detail["column"].is_u64(), "{body:?}: {}", answer.text);
    }
    // A body that is not text cannot be read at all.
    let response =
        s.client.post(s.url("/pipelines")).header("content-type", "application/yaml").body(vec![0xff, 0xfe]).send();
    Answer::read(response.await.unwrap()).await.expect_error(400);

    // Nothing of it was stored.
    assert_eq!(s.get("/pipelines").await.expect(200).json["total"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_name_is_taken_once_per_project() {
    let s = common::start().await;
    s.create(SIMPLE).await;
    let again = s.send_yaml(Method::POST, "/pipelines", SIMPLE).await.expect_error(409);
    assert!(again.error_text().contains("from-yaml"), "{}", again.text);
    let as_json = json!({ "name": "from-yaml", "stages": [{ "name": "B", "tasks": [{ "name": "b", "type": "script", "script": "true" }] }] });
    s.post("/pipelines", as_json).await.expect_error(409);
    // Another project may use the name (created by its manager).
    let manager = s.user("other-manager", "manager", &["other"]).await;
    manager.send_yaml(Method::POST, "/pipelines?project=other", SIMPLE).await.expect(201);
    // Then the name alone is ambiguous; the project settles it.
    s.get("/pipelines/from-yaml").await.expect_error(409);
    assert_eq!(s.get("/pipelines/from-yaml?project=other").await.expect(200).json["project"], "other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_and_run_answers_with_the_run() {
    let s = common::start().await;
    let created = s.send_yaml(Method::POST, "/pipelines?run=true", SIMPLE).await.expect(201).json;
    assert_eq!(created["version"], 1);
    assert_eq!(created["run"]["number"], 1);
    let run = s.wait_run(id_of(&created["run"])).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["version"], 1);

    // PUT ?run=true: the new version, and a run of it.
    let v2 = SIMPLE.replace("echo built", "echo built again");
    let saved = s.send_yaml(Method::PUT, "/pipelines/from-yaml?run=true", &v2).await.expect(200).json;
    assert_eq!(saved["version"], 2);
    assert_eq!(saved["run"]["number"], 2);
    let run = s.wait_run(id_of(&saved["run"])).await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["version"], 2);
    assert!(task_log(&s, id_of(&run), "build").await.contains("built again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_run_query_stores_nothing() {
    let s = common::start().await;
    let answer = s.send_yaml(Method::POST, "/pipelines?run=maybe", SIMPLE).await.expect_error(422);
    assert_eq!(answer.json["error"]["details"][0]["path"], "run");
    s.get("/pipelines/from-yaml").await.expect_error(404);

    s.create(SIMPLE).await;
    let v2 = SIMPLE.replace("echo built", "echo v2");
    s.send_yaml(Method::PUT, "/pipelines/from-yaml?run=maybe", &v2).await.expect_error(422);
    let shown = s.get("/pipelines/from-yaml").await.expect(200).json;
    assert_eq!(shown["version"], 1, "a refused update must not save a version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_and_run_that_cannot_start_stores_nothing() {
    let s = common::start().await;
    let needs = one_task("needs-param", "parameters:\n  - TARGET\n", "echo $TARGET");
    let answer = s.send_yaml(Method::POST, "/pipelines?run=true", &needs).await.expect_error(422);
    assert!(answer.error_text().contains("TARGET"), "{}", answer.text);
    s.get("/pipelines/needs-param").await.expect_error(404);

    let p = s.create(SIMPLE).await;
    s.post_empty(&format!("/pipelines/{}/deactivate", id_of(&p))).await.expect(200);
    let v2 = SIMPLE.replace("echo built", "echo v2");
    s.send_yaml(Method::PUT, "/pipelines/from-yaml?run=true", &v2).await.expect_error(409);
    assert_eq!(s.get("/pipelines/from-yaml").await.expect(200).json["version"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_from_scratch_has_the_four_default_stages_and_runs() {
    let s = common::start().await;
    // The starter the editor begins from is the same one, not stored.
    let starter = s.get("/pipelines/scratch?name=fresh").await.expect(200).json;
    assert_eq!(starter["valid"], true);
    assert_eq!(names(&starter["definition"]["stages"], "name"), ["Build", "Test", "Deploy"]);
    assert!(starter["yaml"].as_str().unwrap().contains("# source:"), "{starter:#}");
    s.get("/pipelines/scratch?name=../x").await.expect_error(422);
    assert_eq!(s.get("/pipelines").await.expect(200).json["total"], 0, "nothing stored");
    let created = s.post("/pipelines/scratch", json!({ "name": "fresh" })).await.expect(201).json;
    assert_eq!(created["name"], "fresh");
    assert_eq!(created["project"], "admin");
    assert_eq!(created["version"], 1);

    let shown = s.get("/pipelines/fresh").await.expect(200).json;
    // The Source is the pipeline's `source:` (left to fill in), then three stages.
    assert_eq!(shown["definition"]["stages"], starter["definition"]["stages"]);
    assert_eq!(names(&shown["definition"]["stages"], "name"), ["Build", "Test", "Deploy"]);
    let yaml = s.get("/pipelines/fresh/yaml").await.expect(200).text;
    assert!(yaml.contains("# source:") && yaml.contains("timeout: 0"), "{yaml}");
    for stage in ["Build", "Test", "Deploy"] {
        assert!(yaml.contains(&format!("- name: {stage}\n")), "{yaml}");
    }

    let run = s.start_run("fresh", json!({})).await;
    let run = s.wait_run(id_of(&run)).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(names(&run["stages"], "name"), ["Build", "Test", "Deploy"]);
    for stage in run["stages"].as_array().unwrap() {
        assert_eq!(stage["status"], "succeeded", "{stage:#}");
    }
    let build = task_of(&run, "build").unwrap();
    let log = task_log(&s, id_of(&run), build["name"].as_str().unwrap()).await;
    assert!(log.contains("hello from Build, run 1"), "{log}");

    // Given a project (by its manager; the cloud admin creates in project admin only).
    let manager = s.user("web-manager", "manager", &["web"]).await;
    let placed = manager.post("/pipelines/scratch", json!({ "name": "fresh", "project": "web" })).await;
    assert_eq!(placed.expect(201).json["project"], "web");
    s.post("/pipelines/scratch", json!({ "name": "fresh2", "project": "web" })).await.expect_error(403);

    // Bad requests.
    let bad = s.post("/pipelines/scratch", json!({ "name": "../etc" })).await.expect_error(422);
    assert_eq!(bad.json["error"]["details"][0]["path"], "name");
    s.post("/pipelines/scratch", json!({ "name": "" })).await.expect_error(422);
    s.post_empty("/pipelines/scratch").await.expect_error(422);
    s.post("/pipelines/scratch", json!({ "name": "x", "stages": 4 })).await.expect_error(422);
    s.post("/pipelines/scratch", json!({ "name": 7 })).await.expect_error(422);
    s.post("/pipelines/scratch", json!({ "name": "fresh" })).await.expect_error(409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_list_paginates_and_shows_each_last_run() {
    let s = common::start().await;
    for name in ["alpha", "bravo", "charlie"] {
        s.create(&one_task(name, "", "true")).await;
    }
    let first = s.get("/pipelines?limit=2").await.expect(200).json;
    assert_eq!(first["total"], 3);
    assert_eq!(first["page"], 1);
    assert_eq!(first["limit"], 2);
    assert_eq!(names(&first["items"], "name"), ["alpha", "bravo"]);
    let second = s.get("/pipelines?limit=2&page=2").await.expect(200).json;
    assert_eq!(names(&second["items"], "name"), ["charlie"]);
    assert_eq!(second["total"], 3);
    let beyond = s.get("/pipelines?limit=2&page=3").await.expect(200).json;
    assert_eq!(beyond["items"], json!([]));
    let default = s.get("/pipelines").await.expect(200).json;
    assert_eq!(default["limit"], 50);
    assert_eq!(default["items"].as_array().unwrap().len(), 3);

    for (query, field) in
        [("limit=0", "limit"), ("page=0", "page"), ("limit=abc", "limit"), ("limit=201", "limit"), ("page=-1", "page")]
    {
        let answer = s.get(&format!("/pipelines?{query}")).await.expect_error(422);
        assert_eq!(answer.json["error"]["details"][0]["path"], field, "{query}: {}", answer.text);
    }

    // last_run: none yet; after a run of bravo, its summary.
    assert!(default["items"].as_array().unwrap().iter().all(|p| p["last_run"].is_null()), "{default:#}");
    let run = s.start_run("bravo", json!({})).await;
    s.wait_run(id_of(&run)).await;
    let listed = s.get("/pipelines").await.expect(200).json;
    for item in listed["items"].as_array().unwrap() {
        if item["name"] == "bravo" {
            assert_eq!(item["last_run"]["number"], 1, "{item:#}");
            assert_eq!(item["last_run"]["status"], "succeeded", "{item:#}");
            assert_eq!(item["last_run"]["id"], run["id"]);
        } else {
            assert!(item["last_run"].is_null(), "{item:#}");
        }
    }
    let shown = s.get("/pipelines/bravo").await.expect(200).json;
    assert_eq!(shown["last_run"]["status"], "succeeded");

    // Each item's `source` is its latest version's: from the listing saved with a
    // version, or parsed from the text of one saved before listings were kept.
    let with_source = |name: &str, branch: &str| {
        let top = format!("source:\n  repo: https://git.example.com/shop/{name}.git\n  branch: {branch}\n");
        one_task(name, &top, "true")
    };
    s.create(&with_source("delta", "main")).await;
    s.send_yaml(Method::PUT, "/pipelines/delta", &with_source("delta", "release")).await.expect(200);
    let old = s.server.state.store.create_pipeline("admin", "echo", &with_source("echo", "old")).await.unwrap();
    let listed = s.get("/pipelines").await.expect(200).json;
    let item = |name: &str| listed["items"].as_array().unwrap().iter().find(|i| i["name"] == name).unwrap().clone();
    assert_eq!(item("delta")["source"]["branch"], "release", "{listed:#}");
    assert_eq!(item("delta")["source"]["repo"], "https://git.example.com/shop/delta.git");
    assert_eq!(item("echo")["source"]["branch"], "old", "{listed:#}");
    assert_eq!(item("echo")["id"], old.id);
    assert!(item("alpha")["source"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_pipelines_and_runs_are_404_on_every_route() {
    let s = common::start().await;
    let p = s.create(&one_task("known", "", "true")).await;
    let run = s.start_run("known", json!({})).await;
    s.wait_run(id_of(&run)).await;
    let yaml = one_task("known", "", "true");

    for key in ["999", "no-such-pipeline"] {
        s.get(&format!("/pipelines/{key}")).await.expect_error(404);
        s.send_yaml(Method::PUT, &format!("/pipelines/{key}"), &yaml).await.expect_error(404);
        s.delete(&format!("/pipelines/{key}")).await.expect_error(404);
        s.post(&format!("/pipelines/{key}/copy"), json!({ "name": "copied" })).await.expect_error(404);
        s.post_empty(&format!("/pipelines/{key}/activate")).await.expect_error(404);
        s.post_empty(&format!("/pipelines/{key}/deactivate")).await.expect_error(404);
        s.get(&format!("/pipelines/{key}/yaml")).await.expect_error(404);
        s.get(&format!("/pipelines/{key}/runs")).await.expect_error(404);
        s.post(&format!("/pipelines/{key}/runs"), json!({})).await.expect_error(404);
    }
    // A version that does not exist.
    s.get(&format!("/pipelines/{}/yaml?version=2", id_of(&p))).await.expect_error(404);
    s.get(&format!("/pipelines/{}/yaml?version=x", id_of(&p))).await.expect_error(422);

    for id in ["999", "abc"] {
        s.get(&format!("/runs/{id}")).await.expect_error(404);
        s.post_empty(&format!("/runs/{id}/stop")).await.expect_error(404);
        s.post_empty(&format!("/runs/{id}/rerun")).await.expect_error(404);
        s.post_empty(&format!("/runs/{id}/retry")).await.expect_error(404);
        s.get(&format!("/runs/{id}/log")).await.expect_error(404);
        s.get(&format!("/runs/{id}/tasks/main/log")).await.expect_error(404);
        s.get(&format!("/runs/{id}/tasks/main/log/stream")).await.expect_error(404);
    }
    // A task that the run does not have.
    let run_id = id_of(&run);
    let answer = s.get(&format!("/runs/{run_id}/tasks/nope/log")).await.expect_error(404);
    assert!(answer.error_text().contains("nope"), "{}", answer.text);
    s.get(&format!("/runs/{run_id}/tasks/nope/log/stream")).await.expect_error(404);
    // Nothing was changed by all that.
    assert_eq!(s.get("/pipelines").await.expect(200).json["total"], 1);
    assert_eq!(s.get("/pipelines/known").await.expect(200).json["version"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_is_a_new_version_and_runs_keep_theirs() {
    let s = common::start().await;
    let v1 = one_task("versioned", "", "sleep 0.3\necho \"this is v1\"");
    let v2 = one_task("versioned", "", "echo \"this is v2\"");
    let p = s.create(&v1).await;
    let key = id_of(&p);

    let first = s.start_run(key, json!({})).await;
    s.wait_task_running(id_of(&first), "main").await;
    let saved = s.send_yaml(Method::PUT, &format!("/pipelines/{key}"), &v2).await.expect(200).json;
    assert_eq!(saved["version"], 2);
    assert_eq!(saved["id"], key);
    assert_eq!(saved["name"], "versioned");
    let first = s.wait_run(id_of(&first)).await;
    assert_eq!(first["status"], "succeeded", "{first:#}");
    assert_eq!(first["version"], 1, "the run keeps the version it started with");
    assert!(task_log(&s, id_of(&first), "main").await.contains("this is v1"));

    let second = s.start_run(key, json!({})).await;
    let second = s.wait_run(id_of(&second)).await;
    assert_eq!(second["version"], 2);
    assert!(task_log(&s, id_of(&second), "main").await.contains("this is v2"));
    assert_eq!(s.run(id_of(&first)).await["version"], 1);

    let shown = s.get(&format!("/pipelines/{key}")).await.expect(200).json;
    assert_eq!(shown["version"], 2);
    let versions: Vec<i64> =
        shown["versions"].as_array().unwrap().iter().map(|v| v["version"].as_i64().unwrap()).collect();
    assert_eq!(versions, [2, 1]);
    assert_eq!(s.get(&format!("/pipelines/{key}/yaml?version=1")).await.expect(200).text, v1);
    assert_eq!(s.get(&format!("/pipelines/{key}/yaml?version=2")).await.expect(200).text, v2);
    assert_eq!(s.get(&format!("/pipelines/{key}/yaml")).await.expect(200).text, v2);
    let runs = s.get(&format!("/pipelines/{key}/runs")).await.expect(200).json;
    let versions: Vec<i64> = runs["items"].as_array().unwrap().iter().map(|r| r["version"].as_i64().unwrap()).collect();
    assert_eq!(versions, [2, 1]);

    // Renaming through an update: the new name finds it, the old one does not.
    let v3 = v2.replace("name: versioned", "name: renamed");
    assert_eq!(s.send_yaml(Method::PUT, "/pipelines/versioned", &v3).await.expect(200).json["version"], 3);
    assert_eq!(s.get("/pipelines/renamed").await.expect(200).json["id"], key);
    s.get("/pipelines/versioned").await.expect_error(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_update_is_refused_and_changes_nothing() {
    let s = common::start().await;
    let v1 = one_task("steady", "", "echo steady");
    let p = s.create(&v1).await;
    s.create(&one_task("neighbour", "", "true")).await;
    let key = id_of(&p);
    let before = s.get(&format!("/pipelines/{key}")).await.expect(200).json;

    let broken = v1.replace("type: script", "type: scirpt");
    let answer = s.send_yaml(Method::PUT, &format!("/pipelines/{key}"), &broken).await.expect_error(422);
    let detail = &answer.json["error"]["details"][0];
    assert_eq!(detail["path"], "stages[0].tasks[0].type", "{}", answer.text);
    assert_eq!(detail["line"], 6);
    // Moving to another project is not an update.
    let moved = format!("project: elsewhere\n{v1}");
    let answer = s.send_yaml(Method::PUT, &format!("/pipelines/{key}"), &moved).await.expect_error(422);
    assert_eq!(answer.json["error"]["details"][0]["path"], "project");
    // Renaming onto another pipeline's name is a conflict.
    let onto = v1.replace("name: steady", "name: neighbour");
    s.send_yaml(Method::PUT, &format!("/pipelines/{key}"), &onto).await.expect_error(409);
    s.send_yaml(Method::PUT, &format!("/pipelines/{key}"), "").await.expect_error(422);

    let after = s.get(&format!("/pipelines/{key}")).await.expect(200).json;
    assert_eq!(after, before, "a refused update changes nothing");
    assert_eq!(s.get(&format!("/pipelines/{key}/yaml")).await.expect(200).text, v1);
    s.get(&format!("/pipelines/{key}/yaml?version=2")).await.expect_error(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_has_the_same_stages_and_timeout_and_its_own_runs() {
    let s = common::start().await;
    let original = "name: original
timeout: 30
concurrency: allow
stages:
  - name: Build
    timeout: 5m
    tasks:
      - name: build
        type: script
        script: echo \"building ${PIPELINE_NAME} run ${BUILD_ID}\"
  - name: Ship
    tasks:
      - name: ship
        type: script
        retries: 1
        script: echo shipped
";
    let p = s.create(original).await;
    for _ in 0..2 {
        let run = s.start_run("original", json!({})).await;
        let run = s.wait_run(id_of(&run)).await;
        assert_eq!(run["status"], "succeeded", "{run:#}");
    }

    let copy = s.post(&format!("/pipelines/{}/copy", id_of(&p)), json!({ "name": "duplicate" })).await.expect(201).json;
    assert_eq!(copy["name"], "duplicate");
    assert_eq!(copy["project"], "admin");
    assert_eq!(copy["version"], 1);
    assert_ne!(copy["id"], p["id"]);

    let source = s.get("/pipelines/original").await.expect(200).json;
    let copied = s.get("/pipelines/duplicate").await.expect(200).json;
    assert_eq!(copied["definition"]["name"], "duplicate");
    assert_eq!(copied["definition"]["stages"], source["definition"]["stages"]);
    assert_eq!(copied["definition"]["timeout"], source["definition"]["timeout"]);
    assert!(!copied["definition"]["timeout"].is_null(), "{copied:#}");
    assert_eq!(copied["definition"]["concurrency"], source["definition"]["concurrency"]);
    let mut a = source["definition"].clone();
    a["name"] = json!("duplicate");
    assert_eq!(copied["definition"], a, "everything but the name is the same");
    assert!(s.get("/pipelines/duplicate/yaml").await.expect(200).text.contains("timeout: 30"));
    assert_eq!(copied["last_run"], Value::Null, "history is not copied");
    // A copy starts inactive, so its triggers fire nothing until someone activates it.
    assert_eq!(copied["active"], false, "{copied:#}");
    let refused = s.post("/pipelines/duplicate/runs", json!({})).await.expect_error(409);
    assert!(refused.error_text().contains("inactive"), "{}", refused.text);
    s.post_empty("/pipelines/duplicate/activate").await.expect(200);

    let run = s.start_run("duplicate", json!({})).await;
    assert_eq!(run["number"], 1, "the copy numbers its own runs");
    let run = s.wait_run(id_of(&run)).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert!(task_log(&s, id_of(&run), "build").await.contains("building duplicate run 1"));
    assert_eq!(s.get("/pipelines/original/runs").await.expect(200).json["total"], 2);
    assert_eq!(s.get("/pipelines/duplicate/runs").await.expect(200).json["total"], 1);
    let next = s.start_run("original", json!({})).await;
    assert_eq!(next["number"], 3);
    s.wait_run(id_of(&next)).await;

    // Errors.
    s.post("/pipelines/original/copy", json!({ "name": "duplicate" })).await.expect_error(409);
    s.post("/pipelines/original/copy", json!({ "name": "original" })).await.expect_error(409);
    let empty = s.post("/pipelines/original/copy", json!({ "name": "" })).await.expect_error(422);
    assert_eq!(empty.json["error"]["details"][0]["path"], "name");
    s.post_empty("/pipelines/original/copy").await.expect_error(422);
    s.post("/pipelines/original/copy", json!({ "name": "../bad" })).await.expect_error(422);
    s.post("/pipelines/original/copy", json!({ "name": "x", "stages": [] })).await.expect_error(422);
    assert_eq!(s.get("/pipelines").await.expect(200).json["total"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_pipeline_refuses_runs_and_keeps_its_history() {
    let s = common::start().await;
    let p = s.create(&one_task("switch", "", "echo on")).await;
    let key = id_of(&p);
    let first = s.start_run(key, json!({})).await;
    s.wait_run(id_of(&first)).await;

    let off = s.post_empty(&format!("/pipelines/{key}/deactivate")).await.expect(200).json;
    assert_eq!(off["active"], false);
    assert_eq!(off["id"], key);
    let refused = s.post(&format!("/pipelines/{key}/runs"), json!({})).await.expect_error(409);
    assert!(refused.error_text().contains("inactive"), "{}", refused.text);
    s.post_empty(&format!("/runs/{}/rerun", id_of(&first))).await.expect_error(409);
    // History stays readable.
    assert_eq!(s.get(&format!("/pipelines/{key}")).await.expect(200).json["active"], false);
    let runs = s.get(&format!("/pipelines/{key}/runs")).await.expect(200).json;
    assert_eq!(runs["total"], 1);
    assert_eq!(s.run(id_of(&first)).await["status"], "succeeded");
    assert!(task_log(&s, id_of(&first), "main").await.contains("on"));
    let listed = s.get("/pipelines").await.expect(200).json;
    assert_eq!(listed["items"][0]["active"], false);
    assert_eq!(listed["items"][0]["last_run"]["number"], 1);
    // Idempotent.
    s.post_empty(&format!("/pipelines/{key}/deactivate")).await.expect(200);

    let on = s.post_empty(&format!("/pipelines/{key}/activate")).await.expect(200).json;
    assert_eq!(on["active"], true);
    let second = s.start_run(key, json!({})).await;
    assert_eq!(second["number"], 2);
    assert_eq!(s.wait_run(id_of(&second)).await["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_pipeline_deletes_its_runs() {
    let s = common::start().await;
    let p = s.create(&one_task("doomed", "", "echo doomed")).await;
    let key = id_of(&p);
    let run = s.start_run(key, json!({})).await;
    let run_id = id_of(&run);
    s.wait_run(run_id).await;
    let log_dir = s.dir.path().join("data").join("logs").join(run_id.to_string());
    assert!(log_dir.exists(), "the run has logs at {}", log_dir.display());

    let answer = s.delete(&format!("/pipelines/{key}")).await.expect(204);
    assert!(answer.text.is_empty());
    s.get(&format!("/pipelines/{key}")).await.expect_error(404);
    s.get("/pipelines/doomed").await.expect_error(404);
    s.get(&format!("/runs/{run_id}")).await.expect_error(404);
    s.get(&format!("/runs/{run_id}/log")).await.expect_error(404);
    s.get(&format!("/runs/{run_id}/tasks/main/log")).await.expect_error(404);
    assert!(!log_dir.exists(), "the logs are deleted too");
    assert_eq!(s.get("/pipelines").await.expect(200).json["total"], 0);
    s.delete(&format!("/pipelines/{key}")).await.expect_error(404);

    // The name is free again, with fresh numbering and its own definition.
    let reborn = s.create(&one_task("doomed", "", "echo reborn")).await;
    assert_ne!(reborn["id"], p["id"]);
    let run = s.start_run("doomed", json!({})).await;
    assert_eq!(run["number"], 1);
    let run = s.wait_run(id_of(&run)).await;
    let log = task_log(&s, id_of(&run), "main").await;
    assert!(log.contains("reborn") && !log.contains("out doomed"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_pipeline_with_a_run_in_progress_is_a_conflict() {
    let s = common::start().await;
    let p = s.create(&one_task("busy", "", "sleep 30")).await;
    let key = id_of(&p);
    let run = s.start_run(key, json!({})).await;
    let run_id = id_of(&run);
    s.wait_task_running(run_id, "main").await;

    let refused = s.delete(&format!("/pipelines/{key}")).await.expect_error(409);
    assert!(refused.error_text().contains("in progress"), "{}", refused.text);
    assert_eq!(s.get(&format!("/pipelines/{key}")).await.expect(200).json["active_runs"], json!([1]));
    assert_eq!(s.run(run_id).await["status"], "running");

    s.post_empty(&format!("/runs/{run_id}/stop")).await.expect(202);
    assert_eq!(s.wait_run(run_id).await["status"], "stopped");
    s.delete(&format!("/pipelines/{key}")).await.expect(204);
    s.get(&format!("/runs/{run_id}")).await.expect_error(404);
}

// ---------------------------------------------------------------------------------
// Runs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_take_parameters_and_refuse_unknown_or_missing_ones() {
    let s = common::start().await;
    let top = "concurrency: allow\nparameters:\n  - name: GREETING\n    default: hello\n  - TARGET\n";
    let p = s.create(&one_task("params", top, "echo \"greeting=${GREETING} target=$TARGET\"")).await;
    let key = id_of(&p);

    let given = s.start_run(key, json!({ "GREETING": "bonjour", "TARGET": "moon" })).await;
    let defaulted = s.start_run(key, json!({ "TARGET": "mars" })).await;
    let given = s.wait_run(id_of(&given)).await;
    assert_eq!(given["status"], "succeeded", "{given:#}");
    assert_eq!(given["parameters"], json!({ "GREETING": "bonjour", "TARGET": "moon" }));
    assert!(task_log(&s, id_of(&given), "main").await.contains("greeting=bonjour target=moon"));
    let defaulted = s.wait_run(id_of(&defaulted)).await;
    assert!(task_log(&s, id_of(&defaulted), "main").await.contains("greeting=hello target=mars"));

    let unknown = s
        .post(&format!("/pipelines/{key}/runs"), json!({ "parameters": { "TARGET": "x", "COLOUR": "red" } }))
        .await
        .expect_error(422);
    assert!(unknown.error_text().contains("COLOUR"), "{}", unknown.text);
    assert_eq!(unknown.json["error"]["details"][0]["path"], "parameters");
    let missing = s.post(&format!("/pipelines/{key}/runs"), json!({})).await.expect_error(422);
    assert!(missing.error_text().contains("TARGET"), "{}", missing.text);
    s.post_empty(&format!("/pipelines/{key}/runs")).await.expect_error(422);
    // Bodies that are not a StartRun.
    let not_json =
        Answer::read(s.client.post(s.url(&format!("/pipelines/{key}/runs"))).body("{oops").send().await.unwrap())
            .await
            .expect_error(422);
    assert!(not_json.json["error"]["details"][0]["line"].is_u64(), "{}", not_json.text);
    s.post(&format!("/pipelines/{key}/runs"), json!({ "params": { "TARGET": "x" } })).await.expect_error(422);
    s.post(&format!("/pipelines/{key}/runs"), json!({ "parameters": { "TARGET": 5 } })).await.expect_error(422);

    // None of the refused requests made a run.
    assert_eq!(s.get(&format!("/pipelines/{key}/runs")).await.expect(200).json["total"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_list_is_newest_first_and_paginates_beyond_fifty() {
    let s = common::start().await;
    let p = s.create(&one_task("many", "concurrency: allow\n", "true")).await;
    let key = id_of(&p);
    let mut ids = Vec::new();
    for n in 1..=55 {
        let run = s.start_run(key, json!({})).await;
        assert_eq!(run["number"], n);
        ids.push(id_of(&run));
    }
    for id in &ids {
        assert_eq!(s.wait_run(*id).await["status"], "succeeded");
    }

    let first = s.get(&format!("/pipelines/{key}/runs")).await.expect(200).json;
    assert_eq!(first["total"], 55);
    assert_eq!(first["limit"], 50);
    assert_eq!(first["page"], 1);
    assert_eq!(numbers(&first), (6..=55).rev().collect::<Vec<i64>>());
    let item = &first["items"][0];
    for field in ["id", "number", "version", "status", "retry_of", "commit", "increment", "created_at", "updated_at"] {
        assert!(item.get(field).is_some(), "run rows have `{field}`: {item}");
    }
    assert_eq!(item["status"], "succeeded");
    assert_eq!(item["id"], ids[54]);
    let second = s.get(&format!("/pipelines/{key}/runs?page=2")).await.expect(200).json;
    assert_eq!(numbers(&second), [5, 4, 3, 2, 1]);
    assert_eq!(second["total"], 55);
    let small = s.get(&format!("/pipelines/{key}/runs?limit=5&page=3")).await.expect(200).json;
    assert_eq!(numbers(&small), [45, 44, 43, 42, 41]);
    let last = s.get(&format!("/pipelines/{key}/runs?limit=5&page=11")).await.expect(200).json;
    assert_eq!(numbers(&last), [5, 4, 3, 2, 1]);
    let beyond = s.get(&format!("/pipelines/{key}/runs?limit=5&page=12")).await.expect(200).json;
    assert_eq!(beyond["items"], json!([]));
    assert_eq!(beyond["total"], 55);
    let all = s.get("/pipelines/many/runs?limit=200").await.expect(200).json;
    assert_eq!(numbers(&all), (1..=55).rev().collect::<Vec<i64>>());

    for query in ["limit=0", "page=0", "limit=201", "limit=x", "page=1.5"] {
        s.get(&format!("/pipelines/{key}/runs?{query}")).await.expect_error(422);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_shows_its_stages_tasks_times_and_outputs() {
    let s = common::start().await;
    let yaml = "name: detail
stages:
  - name: Build
    tasks:
      - name: compile
        type: script
        outputs: [ARTIFACT]
        script: echo \"ARTIFACT=app-${BUILD_ID}.tar\" >> \"$WHARF_OUTPUT\"
      - name: check
        type: script
        script: echo checked
  - name: Ship
    tasks:
      - name: ship
        type: script
        script: echo \"shipping ${ARTIFACT}\"
";
    s.create(yaml).await;
    let started = s.start_run("detail", json!({})).await;
    let run = s.wait_run(id_of(&started)).await;
    assert_eq!(run["id"], started["id"]);
    assert_eq!(run["number"], 1);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["cause"]["kind"], "manual");
    assert_eq!(run["cause"]["user"], "admin");
    assert!(run.get("commit").is_some(), "commit is always there (null without a source): {run:#}");
    assert_eq!(run["commit"], Value::Null);
    assert_eq!(run["version"], 1);
    assert_eq!(run["retry_of"], Value::Null);
    assert_eq!(run["pipeline"], "detail");
    assert!(ts(&run["started_at"]) <= ts(&run["finished_at"]));
    assert!(run["duration_ms"].is_u64());
    assert_eq!(history(&run).first().unwrap(), "queued");
    assert_eq!(history(&run).last().unwrap(), "succeeded");

    assert_eq!(names(&run["stages"], "name"), ["Build", "Ship"]);
    let mut previous_end = ts(&run["started_at"]);
    for stage in run["stages"].as_array().unwrap() {
        assert_eq!(stage["status"], "succeeded");
        for task in stage["tasks"].as_array().unwrap() {
            assert_eq!(task["status"], "succeeded", "{task:#}");
            let (start, end) = (ts(&task["started_at"]), ts(&task["finished_at"]));
            assert!(previous_end <= start && start <= end, "tasks run in order: {run:#}");
            previous_end = end;
            assert!(task["log_size"].as_u64().is_some(), "{task:#}");
        }
    }
    assert!(previous_end <= ts(&run["finished_at"]));
    assert_eq!(names(&run["stages"][0]["tasks"], "name"), ["compile", "check"]);
    let compile = task_of(&run, "compile").unwrap();
    assert_eq!(compile["outputs"], json!({ "ARTIFACT": "app-1.tar" }));
    assert_eq!(compile["exit_code"], 0);
    assert!(task_log(&s, id_of(&run), "ship").await.contains("shipping app-1.tar"));
    let ship = task_of(&run, "ship").unwrap();
    assert_eq!(ship["log_size"].as_u64().unwrap(), task_log(&s, id_of(&run), "ship").await.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_of_a_run_has_outputs() {
    let s = common::start().await;
    s.create(&one_task("plain", "", "echo no outputs")).await;
    let run = s.start_run("plain", json!({})).await;
    let run = s.wait_run(id_of(&run)).await;
    let main = task_of(&run, "main").unwrap();
    assert_eq!(main["outputs"], json!({}), "{main:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_running_run_ends_it_stopped_with_a_reason() {
    let s = common::start().await;
    s.create(&one_task("long", "", "echo started\nsleep 30")).await;
    let run = s.start_run("long", json!({})).await;
    let id = id_of(&run);
    s.wait_task_running(id, "main").await;
    let metrics = s.metrics().await;
    assert!(metrics.contains("wharf_runs{status=\"running\"} 1\n"), "{metrics}");
    assert!(metrics.contains("wharf_active_runs 1\n"), "{metrics}");

    let answer = s.post_empty(&format!("/runs/{id}/stop")).await.expect(202).json;
    assert_eq!(answer["id"], id);
    assert_eq!(answer["status"], "stopping");
    let run = s.wait_run(id).await;
    assert_eq!(run["status"], "stopped", "{run:#}");
    assert!(run["reason"].as_str().unwrap().contains("stopped by user"), "{run:#}");
    let main = task_of(&run, "main").unwrap();
    assert_eq!(main["status"], "stopped");
    let log = task_log(&s, id, "main").await;
    assert!(log.contains("started"), "{log}");
    assert!(log.contains("SIGTERM"), "the log says which signal ended it: {log}");
    assert!(
        ts(&run["finished_at"]) < ts(&run["started_at"]).plus_secs(10),
        "the stop does not wait for the task: {run:#}"
    );

    // Once finished, a stop is a conflict.
    let again = s.post_empty(&format!("/runs/{id}/stop")).await.expect_error(409);
    assert!(again.error_text().contains("stopped"), "{}", again.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_finished_run_is_a_conflict() {
    let s = common::start().await;
    s.create(&one_task("quick", "", "true")).await;
    let run = s.start_run("quick", json!({})).await;
    s.wait_run(id_of(&run)).await;
    let answer = s.post_empty(&format!("/runs/{}/stop", id_of(&run))).await.expect_error(409);
    assert!(answer.error_text().contains("succeeded"), "{}", answer.text);
    assert_eq!(s.run(id_of(&run)).await["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_queued_run_never_runs() {
    let s = common::start().await;
    let top = "concurrency: queue\nparameters:\n  - name: SECS\n    default: \"30\"\n";
    s.create(&one_task("one-at-a-time", top, "sleep $SECS")).await;
    let first = id_of(&s.start_run("one-at-a-time", json!({})).await);
    s.wait_task_running(first, "main").await;
    let second = id_of(&s.start_run("one-at-a-time", json!({ "SECS": "0" })).await);
    let queued = s.run(second).await;
    assert_eq!(queued["status"], "queued", "{queued:#}");
    assert!(s.metrics().await.contains("wharf_queue_length 1\n"));
    s.delete("/pipelines/one-at-a-time").await.expect_error(409);
    // A client already following the queued run's task.
    let mut follower = open_stream(&s, second, None).await;

    let answer = s.post_empty(&format!("/runs/{second}/stop")).await.expect(202).json;
    assert_eq!(answer["status"], "stopping");
    let stopped = s.wait_run(second).await;
    assert_eq!(stopped["status"], "stopped", "{stopped:#}");
    assert!(stopped["reason"].as_str().unwrap().contains("before it started"), "{stopped:#}");
    assert!(!history(&stopped).contains(&"running".to_owned()), "{stopped:#}");
    assert_eq!(stopped["started_at"], Value::Null);
    for stage in stopped["stages"].as_array().unwrap() {
        for task in stage["tasks"].as_array().unwrap() {
            assert_eq!(task["status"], "skipped");
            assert_eq!(task["started_at"], Value::Null);
        }
    }
    assert!(s.metrics().await.contains("wharf_queue_length 0\n"));
    let events = read_to_end(&mut follower).await;
    assert_eq!(events.len(), 1, "only `end` for a task that never ran: {events:?}");

    // The first run ends; the stopped one still does not start.
    s.post_empty(&format!("/runs/{first}/stop")).await.expect(202);
    assert_eq!(s.wait_run(first).await["status"], "stopped");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.run(second).await, stopped, "the stopped queued run never started");
    s.post_empty(&format!("/runs/{second}/stop")).await.expect_error(409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_has_the_same_version_and_parameters() {
    let s = common::start().await;
    let top = "parameters:\n  - name: TARGET\n    default: earth\n";
    s.create(&one_task("again", top, "echo \"v1 to $TARGET\"")).await;
    let first = s.start_run("again", json!({ "TARGET": "moon" })).await;
    let first = s.wait_run(id_of(&first)).await;
    s.send_yaml(Method::PUT, "/pipelines/again", &one_task("again", top, "echo \"v2 to $TARGET\"")).await.expect(200);

    let rerun = s.post_empty(&format!("/runs/{}/rerun", id_of(&first))).await.expect(201).json;
    assert_eq!(rerun["number"], 2);
    let rerun = s.wait_run(id_of(&rerun)).await;
    assert_eq!(rerun["status"], "succeeded", "{rerun:#}");
    assert_eq!(rerun["version"], 1);
    assert_eq!(rerun["parameters"], json!({ "TARGET": "moon" }));
    assert_eq!(rerun["cause"], json!({ "kind": "rerun", "of": 1 }));
    assert_eq!(rerun["retry_of"], Value::Null);
    assert!(task_log(&s, id_of(&rerun), "main").await.contains("v1 to moon"));
    // A fresh run takes the latest version and the defaults.
    let fresh = s.start_run("again", json!({})).await;
    assert_eq!(fresh["number"], 3);
    let fresh = s.wait_run(id_of(&fresh)).await;
    assert_eq!(fresh["version"], 2);
    assert!(task_log(&s, id_of(&fresh), "main").await.contains("v2 to earth"));
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_checks_out_the_same_commit() {
    let s = common::start().await;
    let repo = s.dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("file.txt"), "first\n").unwrap();
    git(&repo, &["add", "file.txt"]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let first_commit = git(&repo, &["rev-parse", "HEAD"]);

    let top = format!("source:\n  repo: {}\n  branch: main\n", repo.display());
    s.create(&one_task("checked-out", &top, "cat file.txt")).await;
    let first = s.start_run("checked-out", json!({})).await;
    let first = s.wait_run(id_of(&first)).await;
    assert_eq!(first["status"], "succeeded", "{first:#}");
    assert_eq!(first["commit"], first_commit);
    assert!(task_log(&s, id_of(&first), "main").await.contains("first"));
    let checkout = task_log(&s, id_of(&first), "@checkout").await;
    assert!(!checkout.is_empty(), "the checkout has a log");

    std::fs::write(repo.join("file.txt"), "second\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "second"]);
    let second_commit = git(&repo, &["rev-parse", "HEAD"]);
    let second = s.start_run("checked-out", json!({})).await;
    let second = s.wait_run(id_of(&second)).await;
    assert_eq!(second["commit"], second_commit);
    assert!(task_log(&s, id_of(&second), "main").await.contains("second"));

    let rerun = s.post_empty(&format!("/runs/{}/rerun", id_of(&first))).await.expect(201).json;
    let rerun = s.wait_run(id_of(&rerun)).await;
    assert_eq!(rerun["status"], "succeeded", "{rerun:#}");
    assert_eq!(rerun["commit"], first_commit, "the re-run builds the recorded commit");
    let log = task_log(&s, id_of(&rerun), "main").await;
    assert!(log.contains("first") && !log.contains("second"), "{log}");
}

const FLAKY: &str = "name: flaky
stages:
  - name: Prepare
    tasks:
      - name: prepare
        type: script
        outputs: [VERSION]
        script: echo \"VERSION=1.2.${BUILD_ID}\" >> \"$WHARF_OUTPUT\"
  - name: Check
    tasks:
      - name: check
        type: script
        script: |
          echo \"checking ${VERSION}\"
          if [ -f marker ]; then echo ok; else touch marker; exit 1; fi
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_runs_from_the_failed_stage_and_reuses_what_succeeded() {
    let s = common::start().await;
    s.create(FLAKY).await;
    let original = s.start_run("flaky", json!({})).await;
    let original = s.wait_run(id_of(&original)).await;
    assert_eq!(original["status"], "failed", "{original:#}");
    assert_eq!(original["stages"][0]["status"], "succeeded");
    assert_eq!(original["stages"][1]["status"], "failed");
    assert_eq!(task_of(&original, "prepare").unwrap()["outputs"], json!({ "VERSION": "1.2.1" }));

    let retry = s.post_empty(&format!("/runs/{}/retry", id_of(&original))).await.expect(201).json;
    assert_eq!(retry["number"], 2);
    let retry = s.wait_run(id_of(&retry)).await;
    assert_eq!(retry["status"], "succeeded", "{retry:#}");
    assert_eq!(retry["retry_of"], original["id"]);
    assert_eq!(retry["cause"], json!({ "kind": "retry", "of": 1 }));
    assert_eq!(retry["version"], original["version"]);

    let prepare_stage = &retry["stages"][0];
    assert_eq!(prepare_stage["status"], "skipped");
    assert_eq!(prepare_stage["reason"], "succeeded in run #1");
    let prepare = task_of(&retry, "prepare").unwrap();
    assert_eq!(prepare["status"], "skipped");
    assert_eq!(prepare["reason"], "succeeded in run #1");
    assert_eq!(prepare["outputs"], json!({ "VERSION": "1.2.1" }), "the outputs are carried over");
    assert_eq!(retry["stages"][1]["status"], "succeeded");
    let log = task_log(&s, id_of(&retry), "check").await;
    assert!(log.contains("checking 1.2.1"), "the reused output reaches later stages: {log}");
    assert!(log.contains("ok"), "the retry ran in the first run's workspace: {log}");

    // The original is unchanged, and shown by its retry.
    assert_eq!(s.run(id_of(&original)).await["status"], "failed");
    let runs = s.get("/pipelines/flaky/runs").await.expect(200).json;
    assert_eq!(runs["items"][0]["retry_of"], original["id"]);
}

const TWICE_FLAKY: &str = "name: twice
stages:
  - name: Prepare
    tasks:
      - name: prepare
        type: script
        outputs: [VERSION]
        script: |
          echo ran >> prepare-count
          echo \"VERSION=1.2.${BUILD_ID}\" >> \"$WHARF_OUTPUT\"
  - name: Middle
    tasks:
      - name: middle
        type: script
        script: |
          if [ -f middle-marker ]; then echo ok; else touch middle-marker; exit 1; fi
  - name: Last
    tasks:
      - name: last
        type: script
        script: |
          echo \"last sees ${VERSION}\"
          if [ -f last-marker ]; then echo ok; else touch last-marker; exit 1; fi
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_a_retry_resumes_from_its_own_failed_stage() {
    let s = common::start().await;
    s.create(TWICE_FLAKY).await;
    let first = s.wait_run(id_of(&s.start_run("twice", json!({})).await)).await;
    assert_eq!(names(&first["stages"], "status"), ["succeeded", "failed", "skipped"], "{first:#}");
    let second = id_of(&s.post_empty(&format!("/runs/{}/retry", id_of(&first))).await.expect(201).json);
    let second = s.wait_run(second).await;
    assert_eq!(names(&second["stages"], "status"), ["skipped", "succeeded", "failed"], "{second:#}");

    let third = id_of(&s.post_empty(&format!("/runs/{}/retry", id_of(&second))).await.expect(201).json);
    let third = s.wait_run(third).await;
    assert_eq!(third["status"], "succeeded", "{third:#}");
    assert_eq!(names(&third["stages"], "status"), ["skipped", "skipped", "succeeded"], "{third:#}");
    assert_eq!(third["stages"][1]["reason"], "succeeded in run #2");
    assert_eq!(task_of(&third, "prepare").unwrap()["outputs"], json!({ "VERSION": "1.2.1" }));
    assert!(task_log(&s, id_of(&third), "last").await.contains("last sees 1.2.1"));
    let workspace = s.dir.path().join(format!("data/workspaces/{}/src", id_of(&first)));
    let count = std::fs::read_to_string(workspace.join("prepare-count")).unwrap();
    assert_eq!(count.lines().count(), 1, "Prepare ran once over the three runs");

    // The last retry succeeded: nothing is left to retry.
    let nothing = s.post_empty(&format!("/runs/{}/retry", id_of(&third))).await.expect_error(409);
    assert!(nothing.error_text().contains("no failed stage"), "{}", nothing.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_can_be_stopped_right_after_it_is_accepted() {
    let s = common::start().await;
    let yaml = "name: stop-the-retry
concurrency: allow
stages:
  - name: First
    tasks:
      - name: first
        type: script
        script: 'true'
  - name: Second
    tasks:
      - name: second
        type: script
        script: sleep 1; false
";
    s.create(yaml).await;
    // The window is short; several attempts make a miss all but certain to show.
    for _ in 0..5 {
        let failed = id_of(&s.start_run("stop-the-retry", json!({})).await);
        assert_eq!(s.wait_run(failed).await["status"], "failed");
        let retry = id_of(&s.post_empty(&format!("/runs/{failed}/retry")).await.expect(201).json);
        s.post_empty(&format!("/runs/{retry}/stop")).await.expect(202);
        let retry = s.wait_run(retry).await;
        assert_eq!(retry["status"], "stopped", "{retry:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_needs_the_kept_workspace() {
    let s = common::start().await;
    s.create(&one_task("always-fails", "concurrency: allow\n", "false")).await;
    let mut ids = Vec::new();
    // keep_workspaces is 5: the sixth newer run pushes the first one's out.
    for _ in 0..6 {
        ids.push(id_of(&s.start_run("always-fails", json!({})).await));
    }
    for id in &ids {
        assert_eq!(s.wait_run(*id).await["status"], "failed");
    }
    let oldest = s.dir.path().join(format!("data/workspaces/{}/src", ids[0]));
    let newest = s.dir.path().join(format!("data/workspaces/{}/src", ids[5]));
    let deadline = std::time::Instant::now() + common::DEADLINE;
    while oldest.exists() {
        assert!(std::time::Instant::now() < deadline, "the oldest workspace is never removed");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(newest.exists());
    let answer = s.post_empty(&format!("/runs/{}/retry", ids[0])).await.expect_error(409);
    assert!(answer.error_text().contains("no longer kept"), "{}", answer.text);
    // A re-run needs no workspace.
    s.post_empty(&format!("/runs/{}/rerun", ids[0])).await.expect(201);
    // The newest can still be retried.
    let retry = s.post_empty(&format!("/runs/{}/retry", ids[5])).await.expect(201).json;
    s.wait_run(id_of(&retry)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_is_refused_while_running_or_after_success() {
    let s = common::start().await;
    s.create(&one_task("ok", "", "true")).await;
    let done = s.start_run("ok", json!({})).await;
    s.wait_run(id_of(&done)).await;
    s.post_empty(&format!("/runs/{}/retry", id_of(&done))).await.expect_error(409);

    s.create(&one_task("slow-fail", "", "sleep 30\nfalse")).await;
    let running = id_of(&s.start_run("slow-fail", json!({})).await);
    s.wait_task_running(running, "main").await;
    let answer = s.post_empty(&format!("/runs/{running}/retry")).await.expect_error(409);
    assert!(answer.error_text().contains("running"), "{}", answer.text);
    s.post_empty(&format!("/runs/{running}/stop")).await.expect(202);
    s.wait_run(running).await;
    assert_eq!(s.get("/pipelines/slow-fail/runs").await.expect(200).json["total"], 1);
}

// Queueing, cancel-previous and allow run on the fake executor: crates/lifecycle/tests.

// ---------------------------------------------------------------------------------
// Logs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_tail_follows_byte_offsets() {
    let s = common::start().await;
    s.create(&one_task("tailed", "", "for i in 1 2 3 4 5 6; do echo \"line $i\"; sleep 0.15; done")).await;
    let id = id_of(&s.start_run("tailed", json!({})).await);

    // Follow it as a script would: ask from the next offset until there is no more.
    let mut followed = String::new();
    let mut offset = 0u64;
    let mut saw_more_while_running = false;
    let deadline = std::time::Instant::now() + common::DEADLINE;
    loop {
        let answer = s.tail(id, "main", Some(&offset.to_string())).await.expect(200);
        assert!(answer.header("content-type").unwrap().starts_with("text/plain"));
        let next: u64 = answer.header("x-next-offset").unwrap().parse().unwrap();
        let size: u64 = answer.header("x-log-size").unwrap().parse().unwrap();
        assert_eq!(next, offset + answer.text.len() as u64);
        assert!(next <= size);
        followed.push_str(&answer.text);
        offset = next;
        match answer.header("x-more-data").unwrap() {
            "true" => {
                saw_more_while_running |= !followed.is_empty();
                assert!(std::time::Instant::now() < deadline, "the tail never ended");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            "false" => break,
            other => panic!("X-More-Data: {other}"),
        }
    }
    assert!(saw_more_while_running, "X-More-Data is true while the task writes");
    let run = s.wait_run(id).await;
    assert_eq!(run["status"], "succeeded");

    let whole = s.tail(id, "main", None).await.expect(200);
    assert_eq!(whole.header("x-more-data"), Some("false"));
    assert_eq!(whole.header("x-log-size").unwrap(), whole.text.len().to_string());
    assert_eq!(whole.header("x-next-offset").unwrap(), whole.text.len().to_string());
    assert_eq!(followed, whole.text, "following by offsets gives the log exactly once");
    let lines: Vec<String> = log_texts(&whole.text).into_iter().filter(|l| l.starts_with("line ")).collect();
    assert_eq!(lines, (1..=6).map(|i| format!("line {i}")).collect::<Vec<_>>());
    assert!(whole.text.lines().any(|l| l.contains(" out line 1")), "{}", whole.text);

    // From the start of the fourth line, and from the middle of it: the rest.
    let fourth = whole.text.find("line 4").unwrap();
    let fourth = whole.text[..fourth].rfind('\n').map_or(0, |i| i + 1);
    let rest = s.tail(id, "main", Some(&fourth.to_string())).await.expect(200);
    assert_eq!(rest.text, whole.text[fourth..]);
    assert_eq!(rest.header("x-more-data"), Some("false"));
    let middle = fourth + 5;
    let rest = s.tail(id, "main", Some(&middle.to_string())).await.expect(200);
    assert_eq!(rest.text, whole.text[middle..]);
    let end = s.tail(id, "main", Some(&whole.text.len().to_string())).await.expect(200);
    assert_eq!(end.text, "");
    assert_eq!(end.header("x-more-data"), Some("false"));

    for bad in ["abc", "-1", "1.5"] {
        let answer = s.tail(id, "main", Some(bad)).await.expect_error(422);
        assert_eq!(answer.json["error"]["details"][0]["path"], "offset");
    }
    // The run's own log and the checkout's (there is none without a source).
    s.tail(id, "@run", None).await.expect(200);
    let checkout = s.tail(id, "@checkout", None).await.expect(200);
    assert_eq!(checkout.text, "");
    assert_eq!(checkout.header("x-more-data"), Some("false"));
    s.tail(id, "nope", None).await.expect_error(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_run_log_has_every_section() {
    let s = common::start().await;
    let yaml = "name: sections
stages:
  - name: Build
    tasks:
      - name: compile
        type: script
        script: echo compiling
      - name: lint
        type: script
        script: echo linting
  - name: Ship
    tasks:
      - name: ship
        type: script
        script: echo shipping
";
    s.create(yaml).await;
    let id = id_of(&s.start_run("sections", json!({})).await);
    s.wait_run(id).await;
    let answer = s.get(&format!("/runs/{id}/log")).await.expect(200);
    assert!(answer.header("content-type").unwrap().starts_with("text/plain"));
    let disposition = answer.header("content-disposition").unwrap();
    assert!(disposition.starts_with("attachment") && disposition.contains("sections-1.log"), "{disposition}");
    let text = &answer.text;
    let headers = [
        "===== sections #1 succeeded =====",
        "===== Build/compile succeeded =====",
        "===== Build/lint succeeded =====",
        "===== Ship/ship succeeded =====",
    ];
    let mut at = Vec::new();
    for header in headers {
        at.push(text.find(header).unwrap_or_else(|| panic!("no `{header}` in:\n{text}")));
    }
    assert!(at.windows(2).all(|w| w[0] < w[1]), "sections in order:\n{text}");
    for (i, word) in [(1, "compiling"), (2, "linting"), (3, "shipping")] {
        let section = &text[at[i]..at.get(i + 1).copied().unwrap_or(text.len())];
        assert!(section.contains(&format!(" out {word}")), "`{word}` in its section:\n{text}");
    }
}

/// The whole-run download is streamed from the log files as the client reads it, not
/// gathered in memory first: a line appended to the log after the download began (and
/// far beyond what socket buffers hold) is in the download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_run_log_is_streamed_from_the_files_as_it_is_read() {
    use std::io::Write;
    let s = common::start().await;
    s.create("name: big\nstages:\n  - name: Build\n    tasks:\n      - name: main\n        type: script\n        script: echo small\n").await;
    let id = id_of(&s.start_run("big", json!({})).await);
    s.wait_run(id).await;
    let path = s.dir.path().join("data/logs").join(id.to_string()).join("0-0.log");
    let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    let line = format!("2026-01-01T00:00:00.000Z out {}\n", "x".repeat(1000));
    let block = line.repeat(1024);
    const BLOCKS: usize = 64; // 64 MiB: far more than loopback socket buffers hold
    for _ in 0..BLOCKS {
        file.write_all(block.as_bytes()).unwrap();
    }
    let mut response = s.client.get(s.url(&format!("/runs/{id}/log"))).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut got = 0usize;
    let mut tail = Vec::new();
    while got < 1 << 20 {
        got += response.chunk().await.unwrap().expect("more of the download").len();
    }
    let marker = "2026-01-01T00:00:01.000Z out appended after the download began\n";
    file.write_all(marker.as_bytes()).unwrap();
    while let Some(chunk) = response.chunk().await.unwrap() {
        got += chunk.len();
        tail.extend_from_slice(&chunk[chunk.len().saturating_sub(200)..]);
        let keep = tail.len().saturating_sub(400);
        tail.drain(..keep);
    }
    assert!(got > BLOCKS * block.len(), "the download holds the whole log ({got} bytes)");
    let tail = String::from_utf8_lossy(&tail);
    assert!(tail.ends_with(marker), "the line appended mid-download is in it; the download ends:\n{tail}");
}

/// `Idempotency-Key` on `POST …/runs`: a client that sends the same request again (a
/// timeout, a retry) gets the run the first one started, not a second run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_answers_the_run_it_started() {
    let s = common::start().await;
    s.create(&one_task("idem", "parameters:\n  - name: X\n    default: a\n", "true")).await;
    let server = &s;
    let post = |key: &'static str, x: &'static str| async move {
        let request = server.client.post(server.url("/pipelines/idem/runs")).header("idempotency-key", key);
        Answer::read(request.json(&json!({ "parameters": { "X": x } })).send().await.unwrap()).await
    };
    let first = post("key-1", "a").await.expect(201);
    assert_eq!(first.json["number"], 1);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = post("key-1", "a").await.expect(201);
    assert_eq!(again.json, first.json, "the same run");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(post("key-2", "a").await.expect(201).json["number"], 2, "another key, another run");
    let reused = post("key-1", "b").await.expect_error(422);
    let text = reused.error_text();
    assert!(text.contains("Idempotency-Key") && text.contains("run #1") && text.contains("other parameters"), "{text}");
    let bad = s
        .client
        .post(s.url("/pipelines/idem/runs"))
        .header("idempotency-key", "has space")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert!(Answer::read(bad).await.expect_error(422).error_text().contains("Idempotency-Key"));
    // Without a key every POST starts a run.
    assert_eq!(s.start_run("idem", json!({})).await["number"], 3);
    assert_eq!(s.start_run("idem", json!({})).await["number"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_logs_of_a_task_that_never_ran_are_empty_and_complete() {
    let s = common::start().await;
    let yaml = "name: halted
stages:
  - name: First
    tasks:
      - name: breaks
        type: script
        script: exit 3
  - name: Second
    tasks:
      - name: never
        type: script
        script: echo never
";
    s.create(yaml).await;
    let id = id_of(&s.start_run("halted", json!({})).await);
    let run = s.wait_run(id).await;
    assert_eq!(task_of(&run, "breaks").unwrap()["exit_code"], 3);
    assert_eq!(task_of(&run, "never").unwrap()["status"], "skipped");
    let tail = s.tail(id, "never", None).await.expect(200);
    assert_eq!(tail.text, "");
    assert_eq!(tail.header("x-more-data"), Some("false"));
    assert_eq!(tail.header("x-log-size"), Some("0"));
    let response = s.client.get(s.url(&format!("/runs/{id}/tasks/never/log/stream"))).send().await.unwrap();
    let events = read_to_end(&mut SseReader::new(response)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event.as_deref(), Some("end"));
    let whole = s.get(&format!("/runs/{id}/log")).await.expect(200).text;
    assert!(whole.contains("===== First/breaks failed ====="), "{whole}");
    assert!(whole.contains("===== Second/never skipped ====="), "{whole}");
}

/// The numbers of the `line N` events.
fn line_numbers(events: &[SseEvent]) -> Vec<u32> {
    events
        .iter()
        .filter(|e| e.event.is_none())
        .filter_map(|e| e.data.rsplit_once(" line ").and_then(|(_, n)| n.parse().ok()))
        .collect()
}

async fn open_stream(s: &common::TestServer, id: i64, last_event_id: Option<&str>) -> SseReader {
    let mut request = s.client.get(s.url(&format!("/runs/{id}/tasks/main/log/stream")));
    if let Some(last) = last_event_id {
        request = request.header("last-event-id", last);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    SseReader::new(response)
}

/// Reads until `event: end`; checks that nothing follows it.
async fn read_to_end(reader: &mut SseReader) -> Vec<SseEvent> {
    let mut events = Vec::new();
    loop {
        let batch = reader.next_events().await;
        assert!(!batch.is_empty(), "the stream ended without `event: end`: {events:?}");
        events.extend(batch);
        if let Some(end) = events.iter().position(|e| e.event.as_deref() == Some("end")) {
            assert_eq!(end, events.len() - 1, "nothing after `end`");
            assert!(reader.next_events().await.is_empty(), "the stream closes after `end`");
            return events;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sse_stream_resumes_from_last_event_id_without_losing_or_repeating_a_line() {
    let s = common::start().await;
    let script = "i=1\nwhile [ $i -le 200 ]; do echo \"line $i\"; i=$((i+1)); sleep 0.01; done";
    s.create(&one_task("streamed", "", script)).await;
    let id = id_of(&s.start_run("streamed", json!({})).await);

    // A client reads about 50 lines, then drops the connection.
    let mut reader = open_stream(&s, id, None).await;
    let mut first = Vec::new();
    while line_numbers(&first).len() < 50 {
        let batch = reader.next_events().await;
        assert!(!batch.is_empty(), "the stream ended early");
        first.extend(batch);
    }
    drop(reader);
    assert!(first.iter().all(|e| e.event.is_none()), "no end yet: {first:?}");
    let last_id = first.last().unwrap().id.clone().expect("line events have ids");
    let seen = line_numbers(&first);
    assert!(seen.len() < 200, "the client left mid-stream");
    assert_eq!(task_of(&s.run(id).await, "main").unwrap()["status"], "running", "dropped while the task runs");

    // It comes back with Last-Event-ID and gets the rest, then `end`.
    let mut reader = open_stream(&s, id, Some(&last_id)).await;
    let rest = read_to_end(&mut reader).await;
    let mut all = seen.clone();
    all.extend(line_numbers(&rest));
    assert_eq!(all, (1..=200).collect::<Vec<u32>>(), "every line once, in order");

    // Ids are byte offsets: increasing, and the last one is the log's size.
    let ids: Vec<u64> = first.iter().chain(&rest).filter_map(|e| e.id.as_ref()).map(|i| i.parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    s.wait_run(id).await;
    let size: u64 = s.tail(id, "main", None).await.header("x-log-size").unwrap().parse().unwrap();
    assert_eq!(*ids.last().unwrap(), size);

    // A client that comes after the end gets it all, then `end`.
    let mut late = open_stream(&s, id, None).await;
    let everything = read_to_end(&mut late).await;
    assert_eq!(line_numbers(&everything), (1..=200).collect::<Vec<u32>>());
    // And one that resumes at the end gets only `end`.
    let mut done = open_stream(&s, id, Some(&size.to_string())).await;
    let only_end = read_to_end(&mut done).await;
    assert_eq!(only_end.len(), 1, "{only_end:?}");
    // `?offset=` resumes like Last-Event-ID (for clients that cannot set headers).
    let response =
        s.client.get(s.url(&format!("/runs/{id}/tasks/main/log/stream?offset={last_id}"))).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let resumed = read_to_end(&mut SseReader::new(response)).await;
    assert_eq!(line_numbers(&resumed), line_numbers(&rest));

    let bad = s
        .client
        .get(s.url(&format!("/runs/{id}/tasks/main/log/stream")))
        .header("last-event-id", "not-a-number")
        .send()
        .await
        .unwrap();
    Answer::read(bad).await.expect_error(422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_sse_clients_follow_one_task() {
    let s = common::start().await;
    let script = "for i in 1 2 3 4 5 6 7 8 9 10; do echo \"line $i\"; sleep 0.05; done";
    s.create(&one_task("fan-out", "", script)).await;
    let id = id_of(&s.start_run("fan-out", json!({})).await);
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(open_stream(&s, id, None).await);
    }
    for mut reader in readers {
        let events = read_to_end(&mut reader).await;
        assert_eq!(line_numbers(&events), (1..=10).collect::<Vec<u32>>());
    }
}

// ---------------------------------------------------------------------------------
// Metrics and the OpenAPI document

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no `{name}` in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_runs_by_status_queue_and_task_durations() {
    let s = common::start().await;
    let before = s.metrics().await;
    assert_eq!(metric(&before, "wharf_runs{status=\"succeeded\"}"), 0.0);
    assert_eq!(metric(&before, "wharf_task_duration_seconds_count"), 0.0);

    s.create(&one_task("good", "concurrency: allow\n", "true")).await;
    s.create(&one_task("bad", "", "false")).await;
    let mut ids = Vec::new();
    for key in ["good", "good", "bad"] {
        ids.push(id_of(&s.start_run(key, json!({})).await));
    }
    for id in ids {
        s.wait_run(id).await;
    }
    let response = reqwest::get(format!("{}/metrics", s.base)).await.unwrap();
    let content_type = response.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.unwrap();
    assert!(text.contains("# TYPE wharf_runs gauge"), "{text}");
    assert_eq!(metric(&text, "wharf_runs{status=\"succeeded\"}"), 2.0);
    assert_eq!(metric(&text, "wharf_runs{status=\"failed\"}"), 1.0);
    for status in ["queued", "pending", "running", "waiting", "stopped", "timed_out", "skipped"] {
        assert_eq!(metric(&text, &format!("wharf_runs{{status=\"{status}\"}}")), 0.0, "{status}");
    }
    assert_eq!(metric(&text, "wharf_queue_length"), 0.0);
    assert_eq!(metric(&text, "wharf_active_runs"), 0.0);
    assert_eq!(metric(&text, "wharf_task_duration_seconds_count"), 3.0);
    assert_eq!(metric(&text, "wharf_task_duration_seconds_bucket{le=\"+Inf\"}"), 3.0);
    assert!(metric(&text, "wharf_task_duration_seconds_sum") > 0.0);
    // Every sample line is `name[{labels}] value`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line `{line}`"));
        assert!(value.parse::<f64>().is_ok(), "bad sample line `{line}`");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route() {
    let s = common::start().await;
    let doc = s.get("/openapi.json").await.expect(200).json;
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string());
    let paths = doc["paths"].as_object().expect("paths");
    for route in ROUTES {
        let op = &paths[route.path][route.method];
        assert!(op.is_object(), "{} {} is in the document", route.method, route.path);
        assert!(op["responses"][route.status.to_string()].is_object(), "{} {}", route.method, route.path);
        for name in ["key", "id", "task"] {
            if route.path.contains(&format!("{{{name}}}")) {
                let params = op["parameters"].as_array().unwrap();
                assert!(
                    params.iter().any(|p| p["name"] == name && p["in"] == "path"),
                    "{} {}",
                    route.method,
                    route.path
                );
            }
        }
        if let Body::Json(schema) = route.body {
            assert!(doc["components"]["schemas"][schema].is_object(), "schema {schema}");
        }
    }
    let operations: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(operations, ROUTES.len(), "nothing in the document that is not a route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_routed() {
    let s = common::start().await;
    // What the placeholders stand for, chosen so that each call can succeed.
    let main = id_of(&s.create(&one_task("main-pipeline", "concurrency: allow\n", "echo failing\nfalse")).await);
    let doomed = id_of(&s.create(&one_task("doomed", "", "true")).await);
    let switch = id_of(&s.create(&one_task("switch", "", "true")).await);
    s.create(&one_task("sleeper", "", "sleep 30")).await;
    let failed = id_of(&s.start_run(main, json!({})).await);
    assert_eq!(s.wait_run(failed).await["status"], "failed");
    let sleeping = id_of(&s.start_run("sleeper", json!({})).await);
    s.wait_task_running(sleeping, "main").await;
    // Two approval tasks waiting side by side: one to approve, one to reject.
    let gates = "name: gated\nstages:\n  - name: Review\n    mode: parallel\n    tasks:\n      - {name: approve-me, type: approval, approvers: [admin]}\n      - {name: reject-me, type: approval, approvers: [admin]}\n";
    s.create(gates).await;
    let gated = id_of(&s.start_run("gated", json!({})).await);
    // A stage that waits for its hook URL.
    let hooked = "name: hooked\nstages:\n  - name: Release\n    wait: {hook: true}\n    tasks:\n      - {name: go, type: script, script: 'true'}\n";
    let hooked = id_of(&s.create(hooked).await);
    s.wait_run_until(gated, "waiting twice", |r| {
        ["approve-me", "reject-me"].iter().all(|t| common::task_of(r, t).is_some_and(|t| t["status"] == "waiting"))
    })
    .await;
    for binding in ["main-binding", "doomed-binding"] {
        s.post("/bindings", json!({ "name": binding, "provider": "gitlab", "webhook_secret": "s" })).await.expect(201);
    }
    let delivery = common::deliver(
        &s,
        "gitlab",
        "main-binding",
        &[("x-gitlab-token", "s"), ("x-gitlab-event", "Note Hook")],
        b"{}",
    )
    .await
    .expect(200)
    .json["delivery"]
        .as_i64()
        .unwrap();
    // Routes that call the binding's provider use a binding pointed at a local stand-in.
    let provider = common::provider_mock::MockProvider::start().await;
    let pat = Some(common::provider_mock::PAT);
    common::provider_mock::bind(&s, "provider-binding", "gitlab", Some(&provider.base), pat).await;

    // Registry routes talk to the real test registry; the upload sends a real image.
    let registry_env = wharf_testenv::containers_or_fail_in_ci();
    let image_name = format!("routes{}", std::process::id());
    let mut tarball = Vec::new();
    if let Some(env) = &registry_env {
        let registry = |name: &str| {
            json!({ "name": name, "url": env.registry_url, "insecure": true, "username": env.registry_user,
                    "password": env.registry_password, "workspaces": ["ws-main"] })
        };
        s.post("/registries", registry("main-registry")).await.expect(201);
        s.post("/registries", registry("doomed-registry")).await.expect(201);
        tarball = common::saved_image(&env.busybox_image, &format!("wharf-routes/{image_name}:v1"));
    }

    // Cluster routes talk to the Kubernetes API test double.
    let kube = wharf_kube_fake::KubeFake::start(wharf_kube_fake::Options::default()).await.unwrap();
    for cluster in ["main-cluster", "doomed-cluster"] {
        s.post("/clusters", json!({ "name": cluster, "kubeconfig": kube.kubeconfig() })).await.expect(201);
    }

    // Release routes act on a release in main-cluster's namespace `default`: a chart
    // pushed to main-registry (when there is one) and installed from it.
    let chart_dir = s.dir.path().join("route-chart");
    std::fs::create_dir_all(chart_dir.join("templates")).unwrap();
    std::fs::write(chart_dir.join("Chart.yaml"), "apiVersion: v2\nname: route-chart\nversion: 0.1.0\n").unwrap();
    std::fs::write(
        chart_dir.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n  a: b\n",
    )
    .unwrap();
    let chart = wharf_chart::load_dir(&chart_dir).unwrap();
    let package = wharf_chart::package::package(&chart, &Default::default()).unwrap();
    if let Some(env) = &registry_env {
        let login = wharf_executor::build::RegistryLogin {
            name: "main-registry".into(),
            host: env.registry.clone(),
            username: Some(env.registry_user.clone()),
            password: Some(env.registry_password.clone()),
            insecure: true,
        };
        let upload = wharf_executor::chart::ChartUpload {
            repository: "ws-main/route-chart".into(),
            version: "0.1.0".into(),
            archive: package.archive.clone(),
            config: package.config.clone(),
        };
        let policy = wharf_kube::Policy::new(&["127.0.0.1"]).unwrap();
        wharf_image::OciCharts::new(policy).push_chart(&login, &upload).await.unwrap();
    }
    {
        use wharf_executor::deploy::{ClusterLogin, Deployer, ReleaseSpec};
        let spec = ReleaseSpec {
            run: String::new(),
            stage: String::new(),
            task: String::new(),
            cluster: ClusterLogin { name: "main-cluster".into(), kubeconfig: kube.kubeconfig(), context: None },
            namespace: "default".into(),
            release: "route-release".into(),
            chart: package.archive,
            source: "main-registry/ws-main/route-chart".into(),
            values: Default::default(),
        };
        let deployer = wharf_kube::deploy::KubeDeployer::new(wharf_kube::Policy::new(&["127.0.0.1"]).unwrap());
        let (_stop, rx) = tokio::sync::watch::channel(None);
        deployer.release(spec, std::sync::Arc::new(common::NoLogs), rx).await.unwrap();
    }

    let mut problems = Vec::new();
    for route in ROUTES {
        if route.path.starts_with("/registries") && registry_env.is_none() {
            continue;
        }
        if route.path.ends_with("/upgrade") && registry_env.is_none() {
            continue;
        }
        let registry = if route.method == "delete" && route.path == "/registries/{name}" {
            "doomed-registry"
        } else {
            "main-registry"
        };
        let route_path = if route.path.starts_with("/registries/") {
            route
                .path
                .replace("{name}", registry)
                .replace("/workspaces/{workspace}", "/workspaces/added-ws")
                .replace("{workspace}", "ws-main")
                .replace("{image}", &image_name)
                .replace("{tag}", "v1")
                .replace("/upload", "/upload?workspace=ws-main")
        } else {
            route.path.to_owned()
        };
        let key = match route.path {
            "/pipelines/{key}" if route.method == "delete" => doomed,
            "/pipelines/{key}/activate" | "/pipelines/{key}/deactivate" => switch,
            "/pipelines/{key}/stages/{stage}/hook" => hooked,
            _ => main,
        };
        let (id, task) = match route.path {
            "/runs/{id}/stop" => (sleeping, "main"),
            "/runs/{id}/tasks/{task}/approve" => (gated, "approve-me"),
            "/runs/{id}/tasks/{task}/reject" => (gated, "reject-me"),
            _ => (failed, "main"),
        };
        let binding = if route.method == "delete" { "doomed-binding" } else { "main-binding" };
        let binding = if route.path.starts_with("/bindings/{name}/") { "provider-binding" } else { binding };
        let name = match route.path {
            "/users/{name}" if route.method == "delete" => "route-user",
            p if p.starts_with("/users/") || p.starts_with("/projects/") => "admin",
            p if p.starts_with("/secrets/") => "ROUTE_SECRET",
            "/clusters/{name}" if route.method == "delete" => "doomed-cluster",
            p if p.starts_with("/clusters/") => "main-cluster",
            _ => binding,
        };
        let path = route_path
            .replace("{key}", &key.to_string())
            .replace("{id}", &id.to_string())
            .replace("{task}", task)
            .replace("{name}", name)
            .replace("{token}", "route-token")
            .replace("{stage}", "Release")
            .replace("{ns}", "default")
            .replace("{release}", "route-release")
            .replace("{delivery}", &delivery.to_string());
        let path = path.replace("{repo}", "diaspora/infra/deploy");
        let method = Method::from_bytes(route.method.to_uppercase().as_bytes()).unwrap();
        let answer = match route.body {
            Body::None => s.call(method, &path, None).await,
            Body::Json("Scratch") => s.call(method, &path, Some(json!({ "name": "from-scratch" }))).await,
            Body::Json("Copy") => s.call(method, &path, Some(json!({ "name": "copied" }))).await,
            Body::Json("Binding") => {
                s.call(method, &path, Some(json!({ "name": "created-binding", "provider": "github" }))).await
            }
            Body::Json("Token") => s.call(method, &path, Some(json!({ "token": common::provider_mock::PAT }))).await,
            Body::Json("Registry") => {
                let env = registry_env.as_ref().expect("registry routes run with the container environment");
                let body = json!({ "name": "created-registry", "url": env.registry_url, "insecure": true,
                                   "username": env.registry_user, "password": env.registry_password });
                s.call(method, &path, Some(body)).await
            }
            Body::Json("Workspace") => s.call(method, &path, Some(json!({ "name": "added-ws" }))).await,
            Body::Tarball => {
                let response = s.client.request(method, s.url(&path)).body(tarball.clone()).send().await.unwrap();
                common::Answer::read(response).await
            }
            Body::Json("Login") => {
                s.call(method, &path, Some(json!({ "name": "admin", "password": common::ADMIN_PASSWORD }))).await
            }
            Body::Json("Department") => s.call(method, &path, Some(json!({ "name": "Route" }))).await,
            Body::Json("Project") => {
                s.call(method, &path, Some(json!({ "name": "route-project", "department": "Route" }))).await
            }
            Body::Json("User") => {
                let user = json!({ "name": "route-user", "role": "user", "projects": ["route-project"] });
                s.call(method, &path, Some(user)).await
            }
            Body::Json("ProjectUpdate") => s.call(method, &path, Some(json!({ "trusted": true }))).await,
            Body::Json("UserUpdate") => s.call(method, &path, Some(json!({ "projects": ["route-project"] }))).await,
            Body::Json("NewToken") => s.call(method, &path, Some(json!({ "name": "route-token" }))).await,
            Body::Json("NewCluster") => {
                s.call(method, &path, Some(json!({ "name": "created-cluster", "kubeconfig": kube.kubeconfig() }))).await
            }
            Body::Json("ClusterSettings") => s.call(method, &path, Some(json!({ "pending_limit": "5m" }))).await,
            Body::Json("Decide") => s.call(method, &path, Some(json!({ "comment": "route check" }))).await,
            Body::Json("Secret") => s.call(method, &path, Some(json!({ "value": "route-secret-value" }))).await,
            Body::Json("Rollback") => s.call(method, &path, Some(json!({ "revision": 1 }))).await,
            Body::Json("Upgrade") => s.call(method, &path, Some(json!({ "version": "0.1.0" }))).await,
            Body::Json(_) => s.call(method, &path, Some(json!({ "parameters": {} }))).await,
            Body::Pipeline => {
                let name = if route.method == "post" { "created" } else { "main-pipeline" };
                s.send_yaml(method, &path, &one_task(name, "", "true")).await
            }
        };
        let routing_404 = answer.status == 404 && answer.text.contains("no such route");
        if answer.status == 405 || routing_404 {
            problems.push(format!("{} {path}: not routed ({}): {}", route.method, answer.status, answer.text));
        } else if answer.status.as_u16() != route.status {
            problems.push(format!(
                "{} {path}: {} instead of the documented {}: {}",
                route.method, answer.status, route.status, answer.text
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    s.wait_run(sleeping).await;
}

/// The card editor's round trip: YAML → model, model → YAML, with the same parser and
/// the same diagnostics as a save; nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_turns_yaml_into_the_model_and_the_model_into_yaml() {
    let s = common::start().await;
    let yaml = "name: app\ntimeout: 90s\nvariables: {B: two, A: one}\nstages:\n  - name: Build\n    mode: parallel\n    tasks:\n      - {name: a, type: script, script: \"echo ${A}\\necho ${B}\\n\"}\n";
    let answer = s.send_yaml(Method::POST, "/pipelines/validate", yaml).await.expect(200);
    assert_eq!(answer.json["valid"], true, "{}", answer.text);
    assert_eq!(answer.json["yaml"], yaml, "YAML is answered as given");
    let definition = answer.json["definition"].clone();
    assert_eq!(definition["stages"][0]["mode"], "parallel");
    assert_eq!(definition["timeout"], 90_000, "the model's durations are milliseconds");

    // The model (as the editor changes it) written back as YAML that parses to it.
    let mut changed = definition.clone();
    changed["stages"][0]["tasks"][0]["name"] = json!("renamed");
    let answer = s.post("/pipelines/validate", json!({ "definition": changed })).await.expect(200);
    assert_eq!(answer.json["valid"], true, "{}", answer.text);
    let written = answer.json["yaml"].as_str().unwrap();
    assert!(written.contains("- name: renamed") && written.contains("timeout: 1m30s"), "{written}");
    assert!(
        written.find("B: two").unwrap() < written.find("A: one").unwrap(),
        "variables keep their order:\n{written}"
    );
    assert_eq!(answer.json["definition"], changed, "the written YAML reads back as the same model");
    let again = s.post("/pipelines/validate", json!({ "yaml": written })).await.expect(200);
    assert_eq!(again.json["definition"], changed);

    // Problems: 200 with every diagnostic at its line and column in the YAML.
    let bad = "name: app\nstages:\n  - name: Build\n    tasks:\n      - name: a\n        type: scrpt\n";
    let answer = s.post("/pipelines/validate", json!({ "yaml": bad })).await.expect(200);
    assert_eq!(answer.json["valid"], false);
    assert!(answer.json["definition"].is_null());
    let d = &answer.json["diagnostics"][0];
    assert_eq!((d["line"].as_u64(), d["column"].as_u64()), (Some(6), Some(15)), "{}", answer.text);
    assert_eq!(d["path"], "stages[0].tasks[0].type");
    // A model that breaks a rule (a duplicate task name) is caught by the same checks,
    // at its line in the written YAML.
    let mut dup = definition.clone();
    let task = dup["stages"][0]["tasks"][0].clone();
    dup["stages"][0]["tasks"].as_array_mut().unwrap().push(task);
    let answer = s.post("/pipelines/validate", json!({ "definition": dup })).await.expect(200);
    assert_eq!(answer.json["valid"], false, "{}", answer.text);
    let line = answer.json["diagnostics"][0]["line"].as_u64().unwrap() as usize;
    let yaml_lines: Vec<&str> = answer.json["yaml"].as_str().unwrap().lines().collect();
    assert!(yaml_lines[line - 1].contains("name: a"), "line {line} of:\n{}", answer.json["yaml"]);
    // Something that is not a model at all.
    let answer = s.post("/pipelines/validate", json!({ "definition": { "stages": 3 } })).await.expect(200);
    assert_eq!(answer.json["valid"], false);
    assert!(!answer.json["diagnostics"][0]["message"].as_str().unwrap().is_empty());

    assert_eq!(s.get("/pipelines").await.expect(200).json["total"], 0, "nothing stored");
}

/// The web UI is served by the same server: page paths get the HTML shell with a strict
/// Content-Security-Policy, assets their types, and the API is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_is_served_beside_the_api() {
    let s = common::start().await;
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let root = plain.get(format!("{}/", s.base)).send().await.unwrap();
    assert_eq!(root.status(), 303, "/ sends the browser to the pipeline list");
    assert_eq!(root.headers()["location"], "/pipelines");
    for page in ["/login", "/pipelines", "/pipelines/new", "/pipelines/7", "/pipelines/7/edit", "/runs/3"] {
        let r = plain.get(format!("{}{page}", s.base)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{page}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"), "{page}");
        let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{page}: {csp}");
        assert!(r.text().await.unwrap().contains("/ui/js/app.js"), "{page}");
    }
    let js = plain.get(format!("{}/ui/js/log.js", s.base)).send().await.unwrap();
    assert_eq!(js.status(), 200);
    assert!(js.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    let css = plain.get(format!("{}/ui/app.css", s.base)).send().await.unwrap();
    assert!(css.headers()["content-type"].to_str().unwrap().starts_with("text/css"));
    let missing = plain.get(format!("{}/ui/js/nope.js", s.base)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    // The pages need no token; the API still does, and its routes are not shadowed.
    assert_eq!(plain.get(s.url("/pipelines")).send().await.unwrap().status(), 401);
    s.get("/pipelines").await.expect(200);
}
