//! `wharf migrate --from sqlite://… --to postgres://…` end to end: a SQLite store filled
//! through `Store` (every kind of row, more runs than one page of the copy), the real
//! binary copying it into a fresh database of the test PostgreSQL, and everything read
//! back through `Store` on PostgreSQL.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use wharf_core::approval::{Decision, Verdict};
use wharf_core::run::{Cause, Progress, RunRecord};
use wharf_store::Store;
use wharf_store::secretbox::{SecretBox, SecretKey};

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

/// More than one page (500 rows) of the copy.
const RUNS: i64 = 520;

fn wharf(args: &[&str]) -> Output {
    Command::new(WHARF).args(args).env_remove("WHARF_DATA_DIR").output().expect("run wharf")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn record(pipeline: &str, number: i64) -> RunRecord {
    RunRecord {
        pipeline: pipeline.into(),
        number: number as u64,
        cause: Cause::Manual { user: "ann".into() },
        parameters: BTreeMap::from([("N".to_owned(), number.to_string())]),
        progress: Progress::new(jiff::Timestamp::from_millisecond(1_700_000_000_000 + number).unwrap()),
        reason: None,
        checkout: None,
        stages: vec![],
    }
}

/// The same key on both sides: sealed secrets are copied as they are.
fn keys() -> SecretBox {
    SecretBox::new(SecretKey::from_bytes([7; 32]), vec![])
}

async fn fill(store: &Store) -> (i64, i64) {
    use wharf_store::bindings::NewBinding;
    use wharf_store::deliveries::{NewDelivery, Verdict as Delivered};
    use wharf_store::registries::NewRegistry;
    store.set_setting("instance", "one").await.unwrap();
    store.create_department("Eng").await.unwrap();
    store.create_project("web", "Eng", true).await.unwrap();
    store.create_user("ann", "manager", Some("$argon2id$hash"), &["web".into()]).await.unwrap();
    store.create_token("ann", "ci", "token-hash", "write", None).await.unwrap();
    store.put_secret("web", "API_KEY", "s3cret-value", "ann").await.unwrap();
    let app = store.create_pipeline_by("web", "app", "name: app\n", "ann", None).await.unwrap();
    store.add_version(app.id, "app", "name: app\n# v2\n").await.unwrap();
    let old = store.create_pipeline("admin", "old", "name: old\n").await.unwrap();
    store.delete_pipeline(old.id).await.unwrap(); // a gap in the ids: they are kept, not renumbered
    store.create_pipeline("admin", "off", "name: off\n").await.unwrap();
    let off = store.pipeline_by_name("off", None).await.unwrap();
    store.set_active(off.id, false).await.unwrap();
    let mut last_run = 0;
    for _ in 0..RUNS {
        last_run = store.create_run(app.id, 2, None, Some("c0ffee"), |n| record("app", n.number)).await.unwrap().0.id;
    }
    let decision = Decision {
        user: "ann".into(),
        verdict: Verdict::Approve,
        comment: "ship it".into(),
        at: jiff::Timestamp::from_millisecond(1_700_000_000_000).unwrap(),
    };
    store.add_decision(last_run, "gate", &decision).await.unwrap();
    store
        .create_binding(&NewBinding {
            name: "gh".into(),
            provider: "github".into(),
            token: Some("ghp_token".into()),
            webhook_secret: Some("hook-secret".into()),
            created_by: "ann".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    store
        .insert_delivery(&NewDelivery {
            binding: "gh".into(),
            provider: "github".into(),
            delivery_id: "d-1".into(),
            event: "push".into(),
            headers: serde_json::json!({ "X-GitHub-Event": "push" }),
            body: Some(vec![0, 159, 146, 150, 255]),
            body_sha256: "ab".into(),
            verdict: Delivered::Received,
            reason: None,
            signature_sha256: None,
        })
        .await
        .unwrap();
    store
        .create_registry(&NewRegistry {
            name: "local".into(),
            host: "127.0.0.1:5000".into(),
            username: Some("u".into()),
            password: Some("registry-password".into()),
            insecure: true,
            workspaces: vec!["devops".into()],
        })
        .await
        .unwrap();
    store
        .replace_timers(
            app.id,
            2,
            &[wharf_store::timers::NewTimer { trigger_index: 0, next_run_at: Some(5), last_due: None }],
        )
        .await
        .unwrap();
    (app.id, last_run)
}

#[tokio::test]
async fn a_sqlite_store_moves_to_postgresql_whole_and_only_into_an_empty_database() {
    let Some(pg) = wharf_testenv::postgres_or_fail_in_ci() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("wharf.db").display());
    let source = Store::open(&sqlite).await.unwrap().with_secret_box(keys());
    let (app, last_run) = fill(&source).await;
    source.pool().close().await;
    // The server's log files beside the database: PostgreSQL keeps logs in the database.
    let files = wharf_store::logs::LogFiles::new(dir.path().join("logs"), 1_000_000);
    files.writer(last_run, wharf_store::logs::LogKey::Task(0, 0)).unwrap().append("built it").unwrap();

    let out = wharf(&["migrate", "--from", &sqlite, "--to", &pg.url]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    let runs_line = said.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|w| w.first() == Some(&"runs"));
    assert_eq!(runs_line, Some(vec!["runs", &*RUNS.to_string()]), "{said}");
    assert!(said.contains("The secret key stays in the data directory"), "{said}");
    assert!(said.contains("copied 1 task logs (9 bytes)"), "{said}");
    assert!(!said.contains("wharf-test-password"), "the password is never printed: {said}");

    // Read back through the store, on PostgreSQL, next to the original.
    let source = Store::open(&sqlite).await.unwrap().with_secret_box(keys());
    let target = Store::open(&pg.url).await.unwrap().with_secret_box(keys());
    assert!(target.is_postgres());
    let in_db = wharf_store::logs::LogFiles::in_database(target.clone(), 1_000_000);
    let log = in_db.read_from(last_run, wharf_store::logs::LogKey::Task(0, 0), 0, 1000).await.unwrap();
    assert_eq!(log, b"built it\n", "the log files were copied");
    assert_eq!(target.setting("instance").await.unwrap().as_deref(), Some("one"));
    let all = wharf_store::PipelineFilter::All;
    assert_eq!(
        target.pipelines_with_sources(&all, 50, 0).await.unwrap(),
        source.pipelines_with_sources(&all, 50, 0).await.unwrap(),
        "pipelines, their last runs and sources"
    );
    assert_eq!(target.versions(app).await.unwrap(), source.versions(app).await.unwrap());
    let (runs, total) = target.runs(app, 1000, 0).await.unwrap();
    assert_eq!((runs.len() as i64, total), (RUNS, RUNS));
    assert_eq!(runs, source.runs(app, 1000, 0).await.unwrap().0);
    assert_eq!(target.run(last_run).await.unwrap().record, source.run(last_run).await.unwrap().record);
    assert_eq!(target.decisions(last_run, "gate").await.unwrap(), source.decisions(last_run, "gate").await.unwrap());
    assert_eq!(target.projects().await.unwrap(), source.projects().await.unwrap(), "with their trust");
    assert_eq!(target.departments().await.unwrap(), ["Default", "Eng"]);
    assert_eq!(target.users().await.unwrap(), source.users().await.unwrap());
    let (token, role, projects) = target.token_with_user("token-hash").await.unwrap().unwrap();
    assert_eq!((token.user.as_str(), role.as_str(), projects), ("ann", "manager", vec!["web".to_owned()]));
    assert_eq!(target.secret_values("web").await.unwrap()["API_KEY"], "s3cret-value");
    let binding = target.binding("gh").await.unwrap();
    assert_eq!((binding.token.as_deref(), binding.webhook_secret.as_deref()), (Some("ghp_token"), Some("hook-secret")));
    let (deliveries, _) = target.deliveries(10, 0).await.unwrap();
    let delivery = target.delivery(deliveries[0].id).await.unwrap();
    assert_eq!(delivery, source.delivery(deliveries[0].id).await.unwrap());
    assert_eq!(delivery.body.as_deref(), Some(&[0, 159, 146, 150, 255][..]), "bytes stay bytes");
    let registry = target.registry("local").await.unwrap();
    assert!(registry.insecure);
    assert_eq!(
        (registry.password.as_deref(), registry.workspaces.clone()),
        (Some("registry-password"), vec!["devops".into()])
    );
    assert_eq!(target.timers().await.unwrap(), source.timers().await.unwrap());

    // The sequences were moved past the ids copied: new rows get new ids.
    let next = target.create_pipeline("admin", "new", "name: new\n").await.unwrap();
    assert!(next.id > app.max(source.pipeline_by_name("off", None).await.unwrap().id), "{}", next.id);
    let (run, _) = target.create_run(next.id, 1, None, None, |n| record("new", n.number)).await.unwrap();
    assert_eq!((run.id, run.number), (last_run + 1, 1));

    // A second copy into the same database is refused, and changes nothing.
    let out = wharf(&["migrate", "--from", &sqlite, "--to", &pg.url]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("the PostgreSQL database is not empty (table `settings` has 1 row(s))"),
        "{}",
        text(&out)
    );
    assert_eq!(target.runs(app, 1, 0).await.unwrap().1, RUNS);
    target.pool().close().await;
}

#[test]
fn bad_arguments_say_what_is_expected_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}", dir.path().join("typo.db").display());
    let out = wharf(&["migrate", "--from", &missing, "--to", "postgres://u:pw@127.0.0.1:1/db"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("there is no SQLite database at"), "{}", text(&out));
    assert!(!dir.path().join("typo.db").exists(), "a typo creates no database");
    let out = wharf(&["migrate", "--from", &missing, "--to", "mysql://x"]);
    assert!(text(&out).contains("--to: expected postgres://"), "{}", text(&out));
    let out = wharf(&["migrate", "--from", "/a/path", "--to", "postgres://x"]);
    assert!(text(&out).contains("--from: expected sqlite://PATH"), "{}", text(&out));
}
