//! The store against a real SQLite database file.

use std::collections::BTreeMap;
use wharf_core::run::{Cause, Progress, RunRecord};
use wharf_core::status::Status;
use wharf_store::{Store, StoreError};

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("wharf.db").to_str().unwrap()).await.unwrap();
    (dir, store)
}

fn record(pipeline: &str, number: i64) -> RunRecord {
    RunRecord {
        pipeline: pipeline.into(),
        number: number as u64,
        cause: Cause::Manual { user: "admin".into() },
        parameters: BTreeMap::new(),
        progress: Progress::new(jiff::Timestamp::now()),
        reason: None,
        checkout: None,
        stages: vec![],
    }
}

#[tokio::test]
async fn pipelines_have_versions_and_unique_names() {
    let (_dir, store) = store().await;
    let p = store.create_pipeline("admin", "app", "name: app\n").await.unwrap();
    assert_eq!((p.version, p.active), (1, true));
    let err = store.create_pipeline("admin", "app", "x").await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(ref m) if m.contains("`app` already exists")), "{err}");
    // Same name in another project is fine; the name alone is then ambiguous.
    store.create_pipeline("other", "app", "name: app\n").await.unwrap();
    assert!(matches!(store.pipeline_by_name("app", None).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.pipeline_by_name("app", Some("admin")).await.unwrap().id, p.id);

    let v2 = store.add_version(p.id, "app", "name: app\n# v2\n").await.unwrap();
    assert_eq!(v2.version, 2);
    let versions = store.versions(p.id).await.unwrap();
    assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(store.version(p.id, 1).await.unwrap().source, "name: app\n");
    assert!(matches!(store.version(p.id, 9).await, Err(StoreError::NotFound(_))));
    assert!(!store.set_active(p.id, false).await.unwrap().active);
    let (page, total) = store.pipelines(1, 0).await.unwrap();
    assert_eq!((page.len(), total), (1, 2));
}

#[tokio::test]
async fn run_numbers_and_increments_are_allocated_once_even_concurrently() {
    let (_dir, store) = store().await;
    let p = store.create_pipeline("admin", "app", "name: app\n").await.unwrap();
    let mut handles = Vec::new();
    for _ in 0..20 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            store.create_run(p.id, 1, None, None, |new| record("app", new.number)).await.unwrap().0
        }));
    }
    let mut numbers = Vec::new();
    for h in handles {
        let new = h.await.unwrap();
        assert_eq!(new.number, new.increment);
        numbers.push(new.number);
    }
    numbers.sort();
    assert_eq!(numbers, (1..=20).collect::<Vec<_>>());
    let (page, total) = store.runs(p.id, 5, 5).await.unwrap();
    assert_eq!(total, 20);
    assert_eq!(page.iter().map(|r| r.number).collect::<Vec<_>>(), [15, 14, 13, 12, 11]);
    let (list, _) = store.pipelines(10, 0).await.unwrap();
    assert_eq!(list[0].1.as_ref().map(|r| r.number), Some(20), "the list shows the last run");
}

#[tokio::test]
async fn records_round_trip_and_drive_status_and_deletion_rules() {
    let (_dir, store) = store().await;
    let p = store.create_pipeline("admin", "app", "name: app\n").await.unwrap();
    let (new, mut rec) = store.create_run(p.id, 1, None, None, |n| record("app", n.number)).await.unwrap();
    rec.progress.advance(Status::Running, jiff::Timestamp::now()).unwrap();
    store.save_record(new.id, &rec).await.unwrap();
    let row = store.run(new.id).await.unwrap();
    assert_eq!(row.record, rec);
    assert_eq!(row.summary.status, Status::Running);
    assert_eq!(row.pipeline, "app");
    assert_eq!(store.runs_with_status(&[Status::Running]).await.unwrap().len(), 1);
    let err = store.delete_pipeline(p.id).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(ref m) if m.contains("in progress")), "{err}");
    rec.progress.advance(Status::Succeeded, jiff::Timestamp::now()).unwrap();
    store.save_record(new.id, &rec).await.unwrap();
    assert_eq!(store.count_by_status().await.unwrap(), [("succeeded".to_owned(), 1)]);
    assert_eq!(store.delete_pipeline(p.id).await.unwrap(), [new.id]);
    assert!(matches!(store.run(new.id).await, Err(StoreError::NotFound(_))));
}

#[tokio::test]
async fn retention_finds_runs_beyond_the_count_or_older_than_the_age() {
    let (_dir, store) = store().await;
    let p = store.create_pipeline("admin", "app", "name: app\n").await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (new, mut rec) = store.create_run(p.id, 1, None, None, |n| record("app", n.number)).await.unwrap();
        rec.progress.advance(Status::Running, jiff::Timestamp::now()).unwrap();
        rec.progress.advance(Status::Failed, jiff::Timestamp::now()).unwrap();
        store.save_record(new.id, &rec).await.unwrap();
        ids.push(new.id);
    }
    assert_eq!(store.expired_runs(p.id, Some(2), None).await.unwrap(), ids[..3]);
    assert!(store.expired_runs(p.id, None, Some(0)).await.unwrap().is_empty());
    assert_eq!(store.expired_runs(p.id, None, Some(wharf_store::now_ms() + 1000)).await.unwrap(), ids);
    store.delete_runs(&ids[..3]).await.unwrap();
    assert_eq!(store.runs(p.id, 50, 0).await.unwrap().1, 2);
}

#[tokio::test]
async fn reopening_keeps_everything_and_migrations_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wharf.db");
    let store = Store::open(path.to_str().unwrap()).await.unwrap();
    store.create_pipeline("admin", "app", "name: app\n").await.unwrap();
    store.set_setting("k", "v").await.unwrap();
    drop(store);
    let store = Store::open(&format!("sqlite://{}", path.display())).await.unwrap();
    assert_eq!(store.pipeline_by_name("app", None).await.unwrap().version, 1);
    assert_eq!(store.setting("k").await.unwrap().as_deref(), Some("v"));
}

#[tokio::test]
async fn bindings_keep_secrets_out_of_their_json() {
    let (_dir, store) = store().await;
    let new = wharf_store::bindings::NewBinding {
        name: "gh".into(),
        provider: "github".into(),
        token: Some("ghp_secret".into()),
        webhook_secret: Some("hook-secret".into()),
        ..Default::default()
    };
    let b = store.create_binding(&new).await.unwrap();
    assert!(b.has_token && b.has_webhook_secret && !b.has_client_secret);
    let json = serde_json::to_string(&b).unwrap();
    assert!(!json.contains("ghp_secret") && !json.contains("hook-secret"), "{json}");
    assert!(matches!(store.create_binding(&new).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.set_binding_token("gh", Some("new")).await.unwrap().token.as_deref(), Some("new"));
    assert_eq!(store.bindings().await.unwrap().len(), 1);
    store.delete_binding("gh").await.unwrap();
    assert!(matches!(store.binding("gh").await, Err(StoreError::NotFound(_))));
}
