//! The store against real databases: every test runs on a SQLite file and on a
//! PostgreSQL database (see `backends`).

#[macro_use]
mod backends;

use std::collections::BTreeMap;
use wharf_core::run::{Cause, Progress, RunRecord};
use wharf_core::status::Status;
use wharf_store::{Store, StoreError};

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

async fn pipelines_have_versions_and_unique_names(store: Store) {
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

    // A list page carries each pipeline's latest version: its text when it was saved
    // without a listing, else the listing alone; and its total even past the end.
    use wharf_store::{Listed, NewVersion, PipelineFilter};
    let all = PipelineFilter::All;
    let (page, total) = store.pipelines_listed(&all, 10, 0).await.unwrap();
    let versions: Vec<_> = page.iter().map(|(p, _, v)| (p.id, v.clone())).collect();
    assert_eq!(total, 2);
    assert!(versions.contains(&(p.id, Some(Listed::Source("name: app\n# v2\n".into())))), "{versions:?}");
    let listed = NewVersion { source: "name: app\n# v3\n", listing: Some(r#"{"source":null}"#), events_repo: None };
    store.add_version(p.id, "app", listed).await.unwrap();
    let (page, _) = store.pipelines_listed(&all, 10, 0).await.unwrap();
    let mine = page.iter().find(|(row, _, _)| row.id == p.id).unwrap();
    assert_eq!((mine.0.version, &mine.2), (3, &Some(Listed::Listing(r#"{"source":null}"#.into()))));
    let (page, total) = store.pipelines_listed(&all, 10, 10).await.unwrap();
    assert_eq!((page.len(), total), (0, 2));

    // The filters: by project and by creator, each with its own total.
    let ann = store.create_pipeline_by("third", "job", "name: job\n", "ann", None).await.unwrap();
    let projects = PipelineFilter::Projects(vec!["third".into(), "other".into()]);
    let (page, total) = store.pipelines_listed(&projects, 1, 0).await.unwrap();
    assert_eq!((page.iter().map(|(p, _, _)| p.project.as_str()).collect::<Vec<_>>(), total), (vec!["other"], 2));
    let (page, total) = store.pipelines_listed(&projects, 1, 1).await.unwrap();
    assert_eq!((page.iter().map(|(p, _, _)| p.id).collect::<Vec<_>>(), total), (vec![ann.id], 2));
    let by_ann = PipelineFilter::CreatedBy("ann".into());
    let (page, total) = store.pipelines_listed(&by_ann, 10, 0).await.unwrap();
    assert_eq!((page.iter().map(|(p, _, _)| p.id).collect::<Vec<_>>(), total), (vec![ann.id], 1));
    let nobody = PipelineFilter::CreatedBy("nobody".into());
    assert_eq!(store.pipelines_listed(&nobody, 10, 0).await.unwrap().1, 0);
    assert_eq!(store.pipelines_listed(&all, 10, 0).await.unwrap().1, 3);
}

async fn events_read_only_the_pipelines_of_their_repository(store: Store) {
    use wharf_store::NewVersion;
    let version = |events_repo| NewVersion { source: "name: x\n", listing: None, events_repo };
    let app = store.create_pipeline_by("b", "app", version(Some("github.com/acme/app")), "admin", None).await.unwrap();
    let lib = store.create_pipeline_by("a", "lib", version(Some("github.com/acme/lib")), "admin", None).await.unwrap();
    let quiet = store.create_pipeline_by("a", "quiet", version(Some("")), "admin", None).await.unwrap();
    // Saved without saying (before the column, or by a caller that did not parse).
    let old = store.create_pipeline("c", "old", "name: old\n").await.unwrap();
    let ids = |rows: Vec<wharf_store::PipelineRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let app_key = vec!["github.com/acme/app".to_owned()];
    assert_eq!(ids(store.pipelines_for_events(&app_key).await.unwrap()), [app.id, old.id]);
    let both = vec!["github.com/acme/lib".to_owned(), "github.com/acme/app".to_owned()];
    assert_eq!(ids(store.pipelines_for_events(&both).await.unwrap()), [lib.id, app.id, old.id]);
    assert_eq!(ids(store.pipelines_for_events(&[]).await.unwrap()), [old.id]);
    // A new version moves the pipeline: `app` now listens to `lib`'s repository, `quiet`
    // to `app`'s, and `old` says it has no events trigger.
    store.add_version(app.id, "app", version(Some("github.com/acme/lib"))).await.unwrap();
    store.add_version(quiet.id, "quiet", version(Some("github.com/acme/app"))).await.unwrap();
    store.add_version(old.id, "old", version(Some(""))).await.unwrap();
    assert_eq!(ids(store.pipelines_for_events(&app_key).await.unwrap()), [quiet.id]);
    assert_eq!(ids(store.pipelines_for_events(&both).await.unwrap()), [lib.id, quiet.id, app.id]);

    // Versions saved without a key are found (by id, past a cursor) and given one,
    // unless a newer version came meanwhile.
    let older = store.create_pipeline("c", "older", "name: older\n").await.unwrap();
    let newer = store.create_pipeline("c", "newer", "name: newer\n").await.unwrap();
    let unkeyed = store.pipelines_without_events_repo(0, 10).await.unwrap();
    assert_eq!(unkeyed, [(older.id, 1, "name: older\n".to_owned()), (newer.id, 1, "name: newer\n".to_owned())]);
    assert_eq!(store.pipelines_without_events_repo(older.id, 10).await.unwrap().len(), 1);
    store.set_events_repo(older.id, 1, "github.com/acme/app").await.unwrap();
    store.add_version(newer.id, "newer", "name: newer\n# v2\n").await.unwrap();
    store.set_events_repo(newer.id, 1, "github.com/acme/app").await.unwrap();
    assert_eq!(ids(store.pipelines_for_events(&app_key).await.unwrap()), [quiet.id, newer.id, older.id]);
    assert_eq!(
        store.pipelines_without_events_repo(0, 10).await.unwrap(),
        [(newer.id, 2, "name: newer\n# v2\n".to_owned())]
    );
}

async fn run_numbers_and_increments_are_allocated_once_even_concurrently(store: Store) {
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

async fn records_round_trip_and_drive_status_and_deletion_rules(store: Store) {
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

async fn retention_finds_runs_beyond_the_count_or_older_than_the_age(store: Store) {
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

async fn reopening_keeps_everything_and_migrations_run_once(url: String) {
    let store = Store::open(&url).await.unwrap();
    store.create_pipeline("admin", "app", "name: app\n").await.unwrap();
    store.set_setting("k", "v").await.unwrap();
    store.pool().close().await;
    drop(store);
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.pipeline_by_name("app", None).await.unwrap().version, 1);
    assert_eq!(store.setting("k").await.unwrap().as_deref(), Some("v"));
}

async fn bindings_keep_secrets_out_of_their_json(store: Store) {
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

fn delivery(delivery_id: &str, verdict: wharf_store::deliveries::Verdict) -> wharf_store::deliveries::NewDelivery {
    wharf_store::deliveries::NewDelivery {
        binding: "gh".into(),
        provider: "github".into(),
        delivery_id: delivery_id.into(),
        event: "push".into(),
        headers: serde_json::json!({ "x-github-event": "push", "x-github-delivery": delivery_id }),
        body: Some(b"{\"ref\":\"refs/heads/main\"}".to_vec()),
        body_sha256: "ab".repeat(32),
        verdict,
        reason: None,
        signature_sha256: None,
    }
}

async fn deliveries_are_stored_updated_listed_and_found_again(store: Store) {
    use wharf_store::deliveries::Verdict;
    let first = store.insert_delivery(&delivery("d-1", Verdict::Received)).await.unwrap();
    assert_eq!(store.earlier_delivery("github", "gh", "d-1", first).await.unwrap(), None, "nothing before it");
    store.update_delivery(first, Verdict::Started, None, &[7, 9]).await.unwrap();

    // The same id again is a repeat of the first; another binding or provider is not.
    let again = store.insert_delivery(&delivery("d-1", Verdict::Received)).await.unwrap();
    assert_eq!(store.earlier_delivery("github", "gh", "d-1", again).await.unwrap(), Some(first));
    assert_eq!(store.earlier_delivery("github", "other", "d-1", again).await.unwrap(), None);
    assert_eq!(store.earlier_delivery("gitlab", "gh", "d-1", again).await.unwrap(), None);
    store.update_delivery(again, Verdict::Duplicate, Some("a repeat of delivery 1"), &[]).await.unwrap();

    // A rejected delivery (say, a forged one) does not make the real one a repeat.
    let forged = store.insert_delivery(&delivery("d-2", Verdict::Rejected)).await.unwrap();
    let real = store.insert_delivery(&delivery("d-2", Verdict::Received)).await.unwrap();
    assert!(forged < real);
    assert_eq!(store.earlier_delivery("github", "gh", "d-2", real).await.unwrap(), None);

    let row = store.delivery(first).await.unwrap();
    assert_eq!(row.summary.verdict, Verdict::Started);
    assert_eq!(row.summary.runs, [7, 9]);
    assert_eq!(row.body.as_deref(), Some(&b"{\"ref\":\"refs/heads/main\"}"[..]));
    assert_eq!(row.headers["x-github-delivery"], "d-1");
    assert!(row.summary.received_at > 0);
    assert!(matches!(store.delivery(999).await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.update_delivery(999, Verdict::Ignored, None, &[]).await, Err(StoreError::NotFound(_))));

    // Newest first, paginated, with the total.
    let (page, total) = store.deliveries(2, 0).await.unwrap();
    assert_eq!(total, 4);
    assert_eq!(page.iter().map(|d| d.id).collect::<Vec<_>>(), [real, forged]);
    let (page, _) = store.deliveries(2, 2).await.unwrap();
    assert_eq!(page.iter().map(|d| d.id).collect::<Vec<_>>(), [again, first]);
    assert_eq!(page[0].reason.as_deref(), Some("a repeat of delivery 1"));
    let json = serde_json::to_value(&page[0]).unwrap();
    assert_eq!(json["verdict"], "duplicate");
    assert!(json.get("headers").is_none() && json.get("body").is_none(), "{json}");

    let received = store.deliveries_with_verdict(Verdict::Received).await.unwrap();
    assert_eq!(received.iter().map(|d| d.summary.id).collect::<Vec<_>>(), [real]);
}

// ---- timers ----

use wharf_store::timers::{NewTimer, TimerRow};

fn timer(index: i64, next: Option<i64>) -> NewTimer {
    NewTimer { trigger_index: index, next_run_at: next, last_due: None }
}

async fn timer_rows_are_replaced_per_pipeline_and_listed_when_due(store: Store) {
    let a = store.create_pipeline("admin", "a", "name: a\n").await.unwrap();
    let b = store.create_pipeline("admin", "b", "name: b\n").await.unwrap();
    store.replace_timers(a.id, 1, &[timer(0, Some(1_000)), timer(2, Some(5_000))]).await.unwrap();
    store.replace_timers(b.id, 1, &[timer(1, Some(3_000)), timer(3, None)]).await.unwrap();
    assert_eq!(store.timers().await.unwrap().len(), 4);
    let due: Vec<(i64, i64)> =
        store.due_timers(3_000).await.unwrap().iter().map(|t| (t.pipeline_id, t.trigger_index)).collect();
    assert_eq!(due, [(a.id, 0), (b.id, 1)], "earliest first, a NULL next_run_at is never due");
    assert_eq!(store.next_timer_at().await.unwrap(), Some(1_000));

    // A new version replaces every row of that pipeline, and only of that one.
    store.add_version(a.id, "a", "name: a\n# v2\n").await.unwrap();
    store.replace_timers(a.id, 2, &[timer(1, Some(9_000))]).await.unwrap();
    let rows = store.pipeline_timers(a.id).await.unwrap();
    assert_eq!(
        rows,
        [TimerRow { pipeline_id: a.id, trigger_index: 1, version: 2, next_run_at: Some(9_000), last_due: None }]
    );
    assert_eq!(store.pipeline_timers(b.id).await.unwrap().len(), 2);

    // An inactive pipeline keeps its rows, but they are never due.
    store.set_active(b.id, false).await.unwrap();
    assert!(store.due_timers(i64::MAX).await.unwrap().iter().all(|t| t.pipeline_id == a.id));
    assert_eq!(store.next_timer_at().await.unwrap(), Some(9_000));
    assert_eq!(store.pipeline_timers(b.id).await.unwrap().len(), 2);

    // No timers: no rows. Unknown pipelines are NotFound.
    store.replace_timers(a.id, 2, &[]).await.unwrap();
    assert!(store.pipeline_timers(a.id).await.unwrap().is_empty());
    assert!(matches!(store.replace_timers(999, 1, &[timer(0, Some(1))]).await, Err(StoreError::NotFound(_))));
    store.delete_timers(b.id).await.unwrap();
    assert!(store.timers().await.unwrap().is_empty());
}

async fn a_timer_is_claimed_once_even_by_racing_schedulers(store: Store) {
    let p = store.create_pipeline("admin", "app", "name: app\n").await.unwrap();
    store.replace_timers(p.id, 1, &[timer(0, Some(60_000))]).await.unwrap();
    let read = store.due_timers(60_000).await.unwrap().remove(0);
    // Twenty schedulers read the same row and all try to claim its due time.
    let mut handles = Vec::new();
    for _ in 0..20 {
        let (store, read) = (store.clone(), read.clone());
        handles.push(tokio::spawn(async move { store.claim_timer(&read, Some(120_000), Some(60_000)).await.unwrap() }));
    }
    let mut won = 0;
    for h in handles {
        won += usize::from(h.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one claim wins");
    let now = store.pipeline_timers(p.id).await.unwrap().remove(0);
    assert_eq!((now.next_run_at, now.last_due), (Some(120_000), Some(60_000)));
    // The stale read loses; the fresh one wins.
    assert!(!store.claim_timer(&read, Some(180_000), Some(120_000)).await.unwrap());
    assert!(store.claim_timer(&now, Some(180_000), Some(120_000)).await.unwrap());

    // A row replaced in between (an edit, even to the same next_run_at) is not claimed.
    let read = store.pipeline_timers(p.id).await.unwrap().remove(0);
    store.add_version(p.id, "app", "name: app\n# v2\n").await.unwrap();
    store
        .replace_timers(
            p.id,
            2,
            &[NewTimer { trigger_index: 0, next_run_at: read.next_run_at, last_due: read.last_due }],
        )
        .await
        .unwrap();
    assert!(!store.claim_timer(&read, Some(240_000), Some(180_000)).await.unwrap());

    // Deleting the pipeline deletes its timers.
    store.delete_pipeline(p.id).await.unwrap();
    assert!(store.timers().await.unwrap().is_empty());
}

async fn oauth_states_work_once_survive_reopening_and_expire(url: String) {
    use wharf_store::bindings::OAuthState;
    let store = Store::open(&url).await.unwrap();
    let now = wharf_store::now_ms();
    let pending = |expires_at| OAuthState {
        binding: "gl".into(),
        provider: "gitlab".into(),
        redirect_uri: "https://ci.example.com/devops/repository/gitlab/redirect".into(),
        expires_at,
    };
    store.put_oauth_state("aa", &pending(now + 600_000)).await.unwrap();
    store.put_oauth_state("bb", &pending(now - 1)).await.unwrap();
    store.pool().close().await;
    drop(store);
    let store = Store::open(&url).await.unwrap();
    assert_eq!(store.take_oauth_state("aa").await.unwrap(), Some(pending(now + 600_000)));
    assert_eq!(store.take_oauth_state("aa").await.unwrap(), None, "a state works once");
    assert_eq!(store.take_oauth_state("bb").await.unwrap(), None, "an expired state works never");
    assert_eq!(store.take_oauth_state("cc").await.unwrap(), None);
}

async fn grants_keep_their_refresh_token_and_a_pat_drops_it(store: Store) {
    use wharf_store::bindings::{NewBinding, StoredGrant};
    let new = NewBinding { name: "gl".into(), provider: "gitlab".into(), ..Default::default() };
    store.create_binding(&new).await.unwrap();
    let grant = StoredGrant {
        token: "t1".into(),
        refresh_token: Some("r1".into()),
        expires_at: Some(42),
        redirect_uri: Some("https://ci/cb".into()),
    };
    let b = store.set_binding_grant("gl", &grant).await.unwrap();
    assert_eq!(
        (b.token.as_deref(), b.refresh_token.as_deref(), b.token_expires_at),
        (Some("t1"), Some("r1"), Some(42))
    );
    // A refresh that sends no new refresh token keeps the old one and the redirect_uri.
    let refreshed = StoredGrant { token: "t2".into(), expires_at: Some(99), ..Default::default() };
    let b = store.set_binding_grant("gl", &refreshed).await.unwrap();
    assert_eq!((b.token.as_deref(), b.refresh_token.as_deref()), (Some("t2"), Some("r1")));
    assert_eq!((b.token_expires_at, b.oauth_redirect_uri.as_deref()), (Some(99), Some("https://ci/cb")));
    let json = serde_json::to_string(&b).unwrap();
    assert!(!json.contains("r1") && !json.contains("t2") && json.contains("\"token_expires_at\":99"), "{json}");
    let b = store.set_binding_token("gl", Some("pat")).await.unwrap();
    assert_eq!((b.refresh_token, b.token_expires_at, b.oauth_redirect_uri), (None, None, None));
}

async fn registries_keep_their_workspaces_and_hide_the_password(store: Store) {
    use wharf_store::registries::NewRegistry;
    let new = NewRegistry {
        name: "local".into(),
        host: "127.0.0.1:5055".into(),
        username: Some("wharf".into()),
        password: Some("s3cret".into()),
        insecure: true,
        workspaces: vec!["devops".into(), "apps".into()],
    };
    let r = store.create_registry(&new).await.unwrap();
    assert_eq!(r.workspaces, vec!["apps".to_owned(), "devops".to_owned()]);
    assert_eq!(r.password.as_deref(), Some("s3cret"));
    assert!(r.has_password && r.insecure);
    let json = serde_json::to_string(&r).unwrap();
    assert!(!json.contains("s3cret"), "{json}");
    let err = store.create_registry(&new).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(ref m) if m.contains("`local` already exists")), "{err}");

    let r = store.add_workspace("local", "qa").await.unwrap();
    assert_eq!(r.workspaces, vec!["apps".to_owned(), "devops".to_owned(), "qa".to_owned()]);
    assert!(matches!(store.add_workspace("local", "qa").await, Err(StoreError::Conflict(_))));
    store.delete_workspace("local", "apps").await.unwrap();
    assert!(matches!(store.delete_workspace("local", "apps").await, Err(StoreError::NotFound(_))));
    assert_eq!(store.registries().await.unwrap()[0].workspaces, vec!["devops".to_owned(), "qa".to_owned()]);

    store.delete_registry("local").await.unwrap();
    assert!(matches!(store.registry("local").await, Err(StoreError::NotFound(_))));
    assert!(store.registries().await.unwrap().is_empty());
}

async fn deliveries_past_the_retention_go_as_new_ones_arrive_and_refused_ones_sooner(store: Store) {
    use wharf_store::deliveries::Verdict;
    let store = store.with_delivery_retention(6, 2);
    // One still waiting to be handled is never pruned.
    let waiting = store.insert_delivery(&delivery("w", Verdict::Received)).await.unwrap();
    for i in 0..5 {
        store.insert_delivery(&delivery(&format!("bad-{i}"), Verdict::Rejected)).await.unwrap();
    }
    let (all, _) = store.deliveries(100, 0).await.unwrap();
    let rejected: Vec<_> =
        all.iter().filter(|d| d.verdict == Verdict::Rejected).map(|d| d.delivery_id.as_str()).collect();
    assert_eq!(rejected, ["bad-4", "bad-3"], "a ring of the newest refused ones");
    for i in 0..8 {
        store.insert_delivery(&delivery(&format!("ok-{i}"), Verdict::Ignored)).await.unwrap();
    }
    let (all, total) = store.deliveries(100, 0).await.unwrap();
    let ids: Vec<_> = all.iter().map(|d| d.delivery_id.as_str()).collect();
    assert_eq!(ids, ["ok-7", "ok-6", "ok-5", "ok-4", "ok-3", "ok-2", "w"], "the newest 6, and the waiting one");
    assert_eq!(total, 7);
    assert_eq!(store.delivery(waiting).await.unwrap().summary.verdict, Verdict::Received);
}

/// The statements written differently per database (JSON paths and lists, the quoted
/// `user` column, `IS NOT DISTINCT FROM`, booleans) answer the same on both.
async fn the_statements_that_differ_per_database_answer_alike(store: Store) {
    use wharf_core::approval::{Decision, Verdict};
    use wharf_core::run::CheckoutRecord;
    use wharf_store::PipelineFilter;
    store.create_project("web", "Default", false).await.unwrap();
    store.create_project("ops", "Default", false).await.unwrap();
    let p = store.create_pipeline("web", "app", "name: app\n").await.unwrap();
    let q = store.create_pipeline_by("ops", "job", "name: job\n", "ann", None).await.unwrap();

    // A list narrowed to projects (a JSON array of names) or to a creator.
    let only = |projects: &[&str]| PipelineFilter::Projects(projects.iter().map(|p| p.to_string()).collect());
    let names = |page: Vec<(wharf_store::PipelineRow, Option<wharf_store::RunSummary>)>| {
        page.into_iter().map(|(p, _)| p.name).collect::<Vec<_>>()
    };
    let (page, total) = store.pipelines_filtered(&only(&["ops"]), 10, 0).await.unwrap();
    assert_eq!((names(page), total), (vec!["job".to_owned()], 1));
    let (page, total) = store.pipelines_filtered(&only(&["ops", "web"]), 10, 0).await.unwrap();
    assert_eq!((names(page), total), (vec!["job".to_owned(), "app".to_owned()], 2), "by project, then name");
    assert_eq!(store.pipelines_filtered(&only(&[]), 10, 0).await.unwrap().1, 0);
    let (page, _) = store.pipelines_filtered(&PipelineFilter::CreatedBy("ann".into()), 10, 0).await.unwrap();
    assert_eq!(names(page), ["job"]);
    assert_eq!(store.pipelines_filtered(&only(&["ops"]), 10, 5).await.unwrap(), (vec![], 1), "past the end");

    // A run an event started, found again by the paths in its JSON record.
    let checkout = |branch: Option<&str>, tag: Option<&str>| CheckoutRecord {
        repo: "https://git.example/app.git".into(),
        branch: branch.map(str::to_owned),
        tag: tag.map(str::to_owned),
        commit: Some("c0ffee".into()),
        progress: Progress::new(jiff::Timestamp::now()),
        reason: None,
    };
    let event = Cause::Event {
        provider: "github".into(),
        delivery: "d".into(),
        sender: "ann".into(),
        commit: "c0ffee".into(),
        fork: false,
    };
    let (run, mut rec) = store
        .create_run(p.id, 1, None, Some("c0ffee"), |n| RunRecord { cause: event.clone(), ..record("app", n.number) })
        .await
        .unwrap();
    rec.checkout = Some(checkout(Some("main"), None));
    store.save_record(run.id, &rec).await.unwrap();
    assert_eq!(store.event_run_at(p.id, "c0ffee", Some("main"), None, 0).await.unwrap(), Some(run.number));
    assert_eq!(store.event_run_at(p.id, "c0ffee", Some("dev"), None, 0).await.unwrap(), None, "another branch");
    assert_eq!(store.event_run_at(p.id, "c0ffee", None, Some("v1"), 0).await.unwrap(), None, "a tag");
    assert_eq!(store.event_run_at(p.id, "c0ffee", Some("main"), None, i64::MAX).await.unwrap(), None, "too old");
    let (tagged, mut rec) = store
        .create_run(p.id, 1, None, Some("c0ffee"), |n| RunRecord { cause: event.clone(), ..record("app", n.number) })
        .await
        .unwrap();
    rec.checkout = Some(checkout(None, Some("v1")));
    store.save_record(tagged.id, &rec).await.unwrap();
    assert_eq!(store.event_run_at(p.id, "c0ffee", None, Some("v1"), 0).await.unwrap(), Some(tagged.number));

    // Pipelines whose timers were computed from an older version (NULL: never).
    assert_eq!(store.pipelines_with_stale_timers().await.unwrap(), [p.id, q.id]);
    store.mark_timers_current(&[(p.id, 1), (q.id, 7)]).await.unwrap();
    assert_eq!(store.pipelines_with_stale_timers().await.unwrap(), [q.id], "7 is not its version");
    store.set_active(q.id, false).await.unwrap();
    assert!(store.pipelines_with_stale_timers().await.unwrap().is_empty(), "inactive ones wait");

    // A token with its user's projects (a JSON list made by the database), or none.
    store.create_user("ann", "user", None, &["web".into(), "ops".into()]).await.unwrap();
    store.create_user("bob", "user", None, &[]).await.unwrap();
    store.create_token("ann", "ci", "hash-a", "write", None).await.unwrap();
    store.create_token("bob", "ci", "hash-b", "read", None).await.unwrap();
    let (token, role, projects) = store.token_with_user("hash-a").await.unwrap().unwrap();
    assert_eq!((token.user.as_str(), role.as_str(), projects), ("ann", "user", vec!["ops".into(), "web".into()]));
    assert_eq!(store.token_with_user("hash-b").await.unwrap().unwrap().2, Vec::<String>::new());
    assert!(store.token_with_user("nope").await.unwrap().is_none());

    // Approval decisions (a column named `user`), once per user.
    let decision = |user: &str| Decision {
        user: user.into(),
        verdict: Verdict::Approve,
        comment: "ok".into(),
        at: jiff::Timestamp::from_millisecond(1_700_000_000_000).unwrap(),
    };
    assert!(store.add_decision(run.id, "gate", &decision("ann")).await.unwrap());
    assert!(!store.add_decision(run.id, "gate", &decision("ann")).await.unwrap(), "once per user");
    assert!(store.add_decision(run.id, "gate", &decision("bob")).await.unwrap());
    assert_eq!(store.decisions(run.id, "gate").await.unwrap(), [decision("ann"), decision("bob")]);

    // Projects' trust (a boolean) and stage signals (a JSON object as text).
    assert!(!store.project("web").await.unwrap().trusted);
    assert!(store.set_project_trusted("web", true).await.unwrap().trusted);
    let values: BTreeMap<String, String> = [("k".to_owned(), "v".to_owned())].into();
    store.add_signal(run.id, "deploy", "hook", &values).await.unwrap();
    assert_eq!(store.signals(run.id, "deploy").await.unwrap(), [("hook".to_owned(), values)]);
}

/// This build has no TLS to PostgreSQL: a URL that asks for it fails to connect (never
/// silently plain), and the error names the server but not the password.
#[tokio::test]
async fn postgres_refuses_a_url_that_requires_tls_and_hides_the_password() {
    let Some((_keep, url)) = backends::postgres_url() else { return };
    let err = Store::open(&format!("{url}?sslmode=require")).await.unwrap_err().to_string();
    assert!(err.contains("127.0.0.1"), "{err}");
    assert!(!err.contains("wharf-test-password"), "{err}");
    let err = Store::open(&url.replace("wharf-test-password", "wrong")).await.unwrap_err().to_string();
    assert!(err.contains("cannot connect to PostgreSQL at 127.0.0.1"), "{err}");
    assert!(!err.contains("wrong"), "{err}");
}

on_both!(
    pipelines_have_versions_and_unique_names,
    events_read_only_the_pipelines_of_their_repository,
    run_numbers_and_increments_are_allocated_once_even_concurrently,
    records_round_trip_and_drive_status_and_deletion_rules,
    retention_finds_runs_beyond_the_count_or_older_than_the_age,
    bindings_keep_secrets_out_of_their_json,
    timer_rows_are_replaced_per_pipeline_and_listed_when_due,
    a_timer_is_claimed_once_even_by_racing_schedulers,
    deliveries_are_stored_updated_listed_and_found_again,
    grants_keep_their_refresh_token_and_a_pat_drops_it,
    registries_keep_their_workspaces_and_hide_the_password,
    deliveries_past_the_retention_go_as_new_ones_arrive_and_refused_ones_sooner,
    the_statements_that_differ_per_database_answer_alike,
);
on_both!(url: reopening_keeps_everything_and_migrations_run_once, oauth_states_work_once_survive_reopening_and_expire);
