//! The server on PostgreSQL (`database_url = postgres://…`, a fresh database of the test
//! PostgreSQL): a pipeline is stored and runs end to end, its logs and records are
//! served, and a restart on the same database keeps everything.

mod common;

use common::{TestServer, id_of};
use reqwest::Method;
use serde_json::json;

const PIPELINE: &str = "name: on-postgres
stages:
  - name: Build
    tasks:
      - name: build
        type: script
        script: echo built on run $BUILD_ID
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_runs_end_to_end_on_postgresql_and_a_restart_keeps_it() {
    let Some(pg) = wharf_testenv::postgres_or_fail_in_ci() else { return };
    let url = pg.url.clone();
    let s = common::start_with(tempfile::tempdir().unwrap(), |c| c.database_url = Some(url)).await;
    assert!(s.server.state.store.is_postgres());
    assert!(!s.dir.path().join("data/wharf.db").exists(), "no SQLite file beside it");

    let created = s.send_yaml(Method::POST, "/pipelines?run=true", PIPELINE).await.expect(201).json;
    let first = s.wait_run(id_of(&created["run"])).await;
    assert_eq!(first["status"], "succeeded", "{first:#}");
    let log = s.tail(id_of(&first), "build", None).await.expect(200).text;
    assert!(log.contains("built on run 1"), "{log}");
    let second = s.wait_run(id_of(&s.start_run(id_of(&created), json!({})).await)).await;
    assert_eq!((second["number"].as_i64(), second["status"].as_str()), (Some(2), Some("succeeded")), "{second:#}");
    let listed = s.get("/pipelines").await.expect(200).json;
    assert_eq!(listed["total"], 1, "{listed:#}");

    let TestServer { server, dir, .. } = s;
    server.shutdown().await;
    let url = pg.url.clone();
    let s = common::start_with(dir, |c| c.database_url = Some(url)).await;
    let again = s.run(id_of(&first)).await;
    assert_eq!((again["status"].as_str(), again["number"].as_i64()), (Some("succeeded"), Some(1)), "{again:#}");
    assert!(s.tail(id_of(&first), "build", None).await.expect(200).text.contains("built on run 1"));
    let third = s.wait_run(id_of(&s.start_run(id_of(&created), json!({})).await)).await;
    assert_eq!((third["number"].as_i64(), third["status"].as_str()), (Some(3), Some("succeeded")), "{third:#}");
    let TestServer { server, .. } = s;
    server.shutdown().await;
}
