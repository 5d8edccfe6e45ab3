//! Who may put tasks on the host executor (issue 11): nobody where `allow_host` is
//! false (`executor: host` included); on a server with users besides `admin`, only
//! projects an administrator marked trusted; only administrators mark them.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

fn one_task(name: &str, extra: &str) -> String {
    format!(
        "name: {name}\n{extra}stages:\n  - name: Main\n    tasks:\n      - {{name: main, type: script, script: echo hi}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_host_is_refused_where_the_server_allows_no_host_execution() {
    let s = start_with(tempfile::tempdir().unwrap(), |c| c.allow_host = false).await;
    s.create(&one_task("on-host", "executor: host\n")).await;
    let answer = s.post("/pipelines/on-host/runs", json!({})).await.expect_error(422);
    let why = answer.error_text();
    assert!(why.contains("Main/main would run on the host executor") && why.contains("allow_host = false"), "{why}");
    // Save-and-run is refused before anything is saved.
    let saved = s.send_yaml(Method::POST, "/pipelines?run=true", &one_task("never-saved", "executor: host\n")).await;
    assert!(saved.expect_error(422).error_text().contains("allow_host = false"));
    s.get("/pipelines/never-saved").await.expect_error(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_multi_user_server_only_trusted_projects_run_host_tasks() {
    let s = start().await;
    let created = s.post("/projects", json!({ "name": "web" })).await.expect(201).json;
    assert_eq!(created["trusted"], false, "projects start untrusted");
    let store = &s.server.state.store;
    store.create_pipeline_by("web", "hosted", &one_task("hosted", ""), "admin", None).await.unwrap();

    // One user (the built-in admin): nobody else's code can be on the server.
    let run = id_of(&s.start_run("hosted", json!({})).await);
    assert_eq!(s.wait_run(run).await["status"], "succeeded");

    let mia = s.user("mia", "manager", &["web"]).await;
    let refused = s.post("/pipelines/hosted/runs", json!({})).await.expect_error(422);
    let why = refused.error_text();
    assert!(
        why.contains("Main/main would run on the host executor") && why.contains("project `web` is not trusted"),
        "{why}"
    );
    assert!(why.contains("PATCH /api/v1/projects/web"), "says how: {why}");

    // Only an administrator decides.
    mia.call(Method::PATCH, "/projects/web", Some(json!({ "trusted": true }))).await.expect_error(403);
    assert!(!store.project("web").await.unwrap().trusted);
    let trusted = s.call(Method::PATCH, "/projects/web", Some(json!({ "trusted": true }))).await.expect(200).json;
    assert_eq!(trusted["trusted"], true);
    let listed = s.get("/projects").await.expect(200).json;
    assert!(listed["items"].as_array().unwrap().iter().any(|p| p["name"] == "web" && p["trusted"] == true));
    s.call(Method::PATCH, "/projects/ghost", Some(json!({ "trusted": true }))).await.expect_error(404);
    s.call(Method::PATCH, "/projects/web", Some(json!({ "trusted": "yes" }))).await.expect_error(422);

    let run = id_of(&mia.post("/pipelines/hosted/runs", json!({})).await.expect(201).json);
    assert_eq!(s.wait_run(run).await["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_server_without_its_task_user_refuses_host_tasks_and_says_how_to_create_it() {
    if !wharf_testenv::root_or_skip("a missing task user matters only to a server running as root") {
        return;
    }
    let s = start_with(tempfile::tempdir().unwrap(), |c| c.host_user = "wharf-no-such-user".into()).await;
    s.create(&one_task("hosted", "")).await;
    let why = s.post("/pipelines/hosted/runs", json!({})).await.expect_error(422).error_text();
    assert!(why.contains("Main/main would run on the host executor"), "{why}");
    assert!(why.contains("useradd --system") && why.contains("wharf-no-such-user"), "{why}");

    // Never as root, even when named.
    let s = start_with(tempfile::tempdir().unwrap(), |c| c.host_user = "root".into()).await;
    s.create(&one_task("hosted", "")).await;
    let why = s.post("/pipelines/hosted/runs", json!({})).await.expect_error(422).error_text();
    assert!(why.contains("must not run as root"), "{why}");
}
