//! Timer triggers on the server: the scheduler's `tick` and `resume` driven with explicit
//! instants over a real store (the seed's two examples, no double fire, activation,
//! restart catch-up, edits, deactivation, DST), the schedule API, and a real server
//! whose loop fires and whose restart catches up once.

mod common;

use common::id_of;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use reqwest::Method;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use wharf_lifecycle::timers::{Fire, Timers};
use wharf_server::{Server, ServerConfig};
use wharf_store::Store;
use wharf_store::timers::NewTimer;

const HOUR: Duration = Duration::from_secs(3600);

/// A pipeline `name` with `triggers` (YAML list items, indented by two) and one task.
fn pipeline(name: &str, triggers: &str) -> String {
    format!(
        "name: {name}\ntriggers:\n{triggers}stages:\n  - name: Main\n    tasks:\n      - name: main\n        type: script\n        script: \"true\"\n"
    )
}

/// The seed's two examples: index 0 every 2 minutes, index 1 every 2 hours at minute 28.
const SEED: &str = "  - every_minutes: 2\n  - every_hours: 2\n    at_minute: 28\n";

fn at(text: &str) -> Timestamp {
    text.parse().unwrap_or_else(|e| panic!("`{text}`: {e}"))
}

/// Local time in Asia/Shanghai (the seed's examples are written in local time).
fn sh(local: &str) -> Timestamp {
    at(&format!("{local}+08:00"))
}

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("wharf.db").to_str().unwrap()).await.unwrap();
    (dir, store)
}

/// A scheduler whose server zone is Asia/Shanghai, with the default grace of 1 h.
fn scheduler(store: &Store) -> Timers {
    scheduler_with(store, "Asia/Shanghai", HOUR)
}

fn scheduler_with(store: &Store, zone: &str, grace: Duration) -> Timers {
    Timers::new(store.clone(), TimeZone::get(zone).unwrap(), grace)
}

/// Creates a pipeline "at" `now`: stored, then its timers computed from `now`.
async fn create(store: &Store, timers: &Timers, name: &str, triggers: &str, now: Timestamp) -> i64 {
    let p = store.create_pipeline("admin", name, &pipeline(name, triggers)).await.unwrap();
    timers.sync(p.id, now).await.unwrap();
    p.id
}

/// `(trigger index, due)` of fires.
fn dues(fires: &[Fire]) -> Vec<(usize, Timestamp)> {
    fires.iter().map(|f| (f.trigger_index, f.due)).collect()
}

async fn next_runs(store: &Store, id: i64) -> Vec<Option<Timestamp>> {
    let rows = store.pipeline_timers(id).await.unwrap();
    rows.iter().map(|r| r.next_run_at.map(|ms| Timestamp::from_millisecond(ms).unwrap())).collect()
}

// ---------------------------------------------------------------------------------
// tick() on explicit instants

#[tokio::test]
async fn the_seed_examples_fire_once_per_due_time() {
    let (_dir, store) = store().await;
    let timers = scheduler(&store);
    let id = create(&store, &timers, "seed", SEED, sh("2021-03-25T14:53:21")).await;
    assert_eq!(next_runs(&store, id).await, [Some(sh("2021-03-25T14:54:00")), Some(sh("2021-03-25T16:28:00"))]);

    assert!(timers.tick(sh("2021-03-25T14:53:59.999")).await.unwrap().is_empty(), "not due yet");
    let fires = timers.tick(sh("2021-03-25T14:54:00")).await.unwrap();
    assert_eq!(dues(&fires), [(0, sh("2021-03-25T14:54:00"))]);
    assert_eq!(fires[0].pipeline_id, id);
    assert!(!fires[0].catch_up, "on time");
    assert!(timers.tick(sh("2021-03-25T14:54:00")).await.unwrap().is_empty(), "a due time fires once");
    assert!(timers.tick(sh("2021-03-25T14:55:59")).await.unwrap().is_empty());
    assert_eq!(next_runs(&store, id).await[0], Some(sh("2021-03-25T14:56:00")));

    // A tick every 7 seconds (a little late each time) up to 18:30: each due time of
    // both timers fires exactly once, and nothing else does.
    let mut fired = Vec::new();
    let mut now = sh("2021-03-25T14:56:00.250");
    while now <= sh("2021-03-25T18:30:07") {
        fired.extend(dues(&timers.tick(now).await.unwrap()));
        now = now.checked_add(jiff::SignedDuration::from_secs(7)).unwrap();
    }
    let mut expected = Vec::new();
    let mut minute = sh("2021-03-25T14:56:00");
    while minute <= sh("2021-03-25T18:30:00") {
        expected.push((0, minute));
        minute = minute.checked_add(jiff::SignedDuration::from_mins(2)).unwrap();
    }
    expected.push((1, sh("2021-03-25T16:28:00")));
    expected.push((1, sh("2021-03-25T18:28:00")));
    expected.sort();
    fired.sort();
    assert_eq!(fired, expected);
}

#[tokio::test]
async fn two_schedulers_never_claim_a_due_time_twice() {
    let (_dir, store) = store().await;
    let first = scheduler(&store);
    let second = scheduler(&store);
    for n in 0..5 {
        create(&store, &first, &format!("p{n}"), SEED, sh("2021-03-25T14:53:21")).await;
    }
    let mut all = Vec::new();
    let mut now = sh("2021-03-25T14:54:00");
    while now <= sh("2021-03-25T16:30:00") {
        // Both look at the same instant at the same time.
        let (a, b) = tokio::join!(first.tick(now), second.tick(now));
        all.extend(a.unwrap().into_iter().chain(b.unwrap()).map(|f| (f.pipeline_id, f.trigger_index, f.due)));
        now = now.checked_add(jiff::SignedDuration::from_secs(30)).unwrap();
    }
    let unique: BTreeSet<_> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "a due time was claimed twice");
    // 14:54 … 16:30 every 2 minutes is 49 times, plus 16:28: 50 per pipeline.
    assert_eq!(all.len(), 5 * 50);
}

#[tokio::test]
async fn activating_or_creating_on_a_due_minute_never_fires_at_once() {
    let (_dir, store) = store().await;
    let timers = scheduler(&store);
    // Created exactly on a due minute: the next time is the one after.
    let id = create(&store, &timers, "on-the-minute", SEED, sh("2021-03-25T14:54:00")).await;
    assert_eq!(next_runs(&store, id).await[0], Some(sh("2021-03-25T14:56:00")));
    assert!(timers.tick(sh("2021-03-25T14:54:00")).await.unwrap().is_empty());

    // Inactive across 14:56 and 14:58: nothing fires, the rows stay.
    store.set_active(id, false).await.unwrap();
    timers.sync(id, sh("2021-03-25T14:55:00")).await.unwrap();
    assert!(timers.tick(sh("2021-03-25T14:56:00")).await.unwrap().is_empty());
    assert!(timers.tick(sh("2021-03-25T14:58:30")).await.unwrap().is_empty());
    assert_eq!(store.pipeline_timers(id).await.unwrap().len(), 2, "deactivating keeps the rows");

    // Activated at 14:58:30: the missed 14:56 and 14:58 do not fire; the next is 15:00.
    store.set_active(id, true).await.unwrap();
    timers.sync(id, sh("2021-03-25T14:58:30")).await.unwrap();
    assert!(timers.tick(sh("2021-03-25T14:58:30")).await.unwrap().is_empty());
    assert_eq!(next_runs(&store, id).await[0], Some(sh("2021-03-25T15:00:00")));
    assert_eq!(dues(&timers.tick(sh("2021-03-25T15:00:00")).await.unwrap()), [(0, sh("2021-03-25T15:00:00"))]);

    // Activated on a due minute itself: not at once either.
    store.set_active(id, false).await.unwrap();
    store.set_active(id, true).await.unwrap();
    timers.sync(id, sh("2021-03-25T15:02:00")).await.unwrap();
    assert!(timers.tick(sh("2021-03-25T15:02:00")).await.unwrap().is_empty());
    assert_eq!(next_runs(&store, id).await[0], Some(sh("2021-03-25T15:04:00")));
}

#[tokio::test]
async fn a_start_reads_only_pipelines_whose_timers_are_not_of_their_latest_version() {
    let (_dir, store) = store().await;
    let timers = scheduler(&store);
    let saved = create(&store, &timers, "saved", SEED, sh("2021-03-25T14:53:21")).await;
    let plain = create(&store, &timers, "plain", "  - events: [push]\n", sh("2021-03-25T14:53:21")).await;
    // Stored without its timers computed (a crash in between, or a database from before
    // the `timers_version` column): the next start computes them.
    let unsynced = store.create_pipeline("admin", "unsynced", &pipeline("unsynced", SEED)).await.unwrap().id;
    assert_eq!(store.pipelines_with_stale_timers().await.unwrap(), [unsynced]);
    store.add_version(plain, "plain", &pipeline("plain", "  - every_minutes: 5\n")).await.unwrap();
    assert_eq!(store.pipelines_with_stale_timers().await.unwrap(), [plain, unsynced]);

    let restarted = scheduler(&store);
    assert!(restarted.resume(sh("2021-03-25T14:53:30")).await.unwrap().is_empty());
    assert!(store.pipelines_with_stale_timers().await.unwrap().is_empty());
    assert_eq!(next_runs(&store, plain).await, [Some(sh("2021-03-25T14:55:00"))]);
    assert_eq!(next_runs(&store, unsynced).await, [Some(sh("2021-03-25T14:54:00")), Some(sh("2021-03-25T16:28:00"))]);
    assert_eq!(next_runs(&store, saved).await, [Some(sh("2021-03-25T14:54:00")), Some(sh("2021-03-25T16:28:00"))]);

    // Rows already of the latest version (a database from before the column) are
    // marked as such, not recomputed from now: the due times missed while down still
    // earn their catch-up runs.
    wharf_store::db::query("UPDATE pipelines SET timers_version = NULL").execute(store.pool()).await.unwrap();
    let mut fires: Vec<_> = scheduler(&store)
        .resume(sh("2021-03-25T14:55:30"))
        .await
        .unwrap()
        .iter()
        .map(|f| (f.pipeline_id, f.due, f.catch_up))
        .collect();
    fires.sort();
    assert_eq!(
        fires,
        [
            (saved, sh("2021-03-25T14:54:00"), true),
            (plain, sh("2021-03-25T14:55:00"), true),
            (unsynced, sh("2021-03-25T14:54:00"), true)
        ]
    );
    assert!(store.pipelines_with_stale_timers().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_deactivated_pipeline_fires_nothing_even_at_restart() {
    let (_dir, store) = store().await;
    let timers = scheduler(&store);
    let id = create(&store, &timers, "off", SEED, sh("2021-03-25T14:53:21")).await;
    store.set_active(id, false).await.unwrap();
    timers.sync(id, sh("2021-03-25T14:53:30")).await.unwrap();
    for now in ["2021-03-25T14:54:00", "2021-03-25T16:28:00", "2021-03-26T00:00:00"] {
        assert!(timers.tick(sh(now)).await.unwrap().is_empty(), "{now}");
    }
    let restarted = scheduler(&store);
    assert!(restarted.resume(sh("2021-03-25T14:55:00")).await.unwrap().is_empty());
    assert_eq!(restarted.next_due().await.unwrap(), None, "an inactive pipeline's timers are never due");
}

#[tokio::test]
async fn an_edited_pipeline_restarts_its_timers_from_now() {
    let (_dir, store) = store().await;
    let timers = scheduler(&store);
    let id = create(&store, &timers, "edited", SEED, sh("2021-03-25T14:53:21")).await;
    // Edited at 14:55:10 to every 5 minutes: the next time is 15:00, not 14:56.
    let every_5 = pipeline("edited", "  - events: [push]\n  - every_minutes: 5\n");
    store.add_version(id, "edited", &every_5).await.unwrap();
    timers.sync(id, sh("2021-03-25T14:55:10")).await.unwrap();
    let rows = store.pipeline_timers(id).await.unwrap();
    assert_eq!(rows.iter().map(|r| (r.trigger_index, r.version)).collect::<Vec<_>>(), [(1, 2)]);
    assert_eq!(next_runs(&store, id).await, [Some(sh("2021-03-25T15:00:00"))]);
    assert!(timers.tick(sh("2021-03-25T14:56:00")).await.unwrap().is_empty());
    assert_eq!(dues(&timers.tick(sh("2021-03-25T15:00:01")).await.unwrap()), [(1, sh("2021-03-25T15:00:00"))]);

    // Edited while this scheduler was not told (or the server was down): the rows of
    // the old version are overdue, yet the first look recomputes them from now.
    store.add_version(id, "edited", &pipeline("edited", SEED)).await.unwrap();
    assert!(timers.tick(sh("2021-03-25T15:20:30")).await.unwrap().is_empty(), "an old version's row never fires");
    assert_eq!(next_runs(&store, id).await, [Some(sh("2021-03-25T15:22:00")), Some(sh("2021-03-25T16:28:00"))]);
    store.add_version(id, "edited", &pipeline("edited", "  - daily: \"09:00\"\n")).await.unwrap();
    let restarted = scheduler(&store);
    assert!(restarted.resume(sh("2021-03-25T16:40:00")).await.unwrap().is_empty(), "no catch-up across an edit");
    assert_eq!(next_runs(&store, id).await, [Some(sh("2021-03-26T09:00:00"))]);
}

#[tokio::test]
async fn restart_catch_up_runs_once_within_the_grace_window() {
    let (_dir, store) = store().await;
    let before = scheduler(&store);
    let id = create(&store, &before, "catch-up", SEED, sh("2021-03-25T14:53:21")).await;
    assert_eq!(dues(&before.tick(sh("2021-03-25T14:54:00")).await.unwrap()), [(0, sh("2021-03-25T14:54:00"))]);
    // Down from 14:54:30 to 15:31:10: 14:56 … 15:30 were missed (18 times). One run,
    // for 15:30; the 2-hourly timer missed nothing.
    let after = scheduler(&store);
    let fires = after.resume(sh("2021-03-25T15:31:10")).await.unwrap();
    assert_eq!(dues(&fires), [(0, sh("2021-03-25T15:30:00"))]);
    assert!(fires[0].catch_up);
    assert_eq!(next_runs(&store, id).await, [Some(sh("2021-03-25T15:32:00")), Some(sh("2021-03-25T16:28:00"))]);
    // A second start (or a second replica) at the same moment owes nothing.
    assert!(scheduler(&store).resume(sh("2021-03-25T15:31:10")).await.unwrap().is_empty());
    assert!(after.tick(sh("2021-03-25T15:31:50")).await.unwrap().is_empty());
    assert_eq!(dues(&after.tick(sh("2021-03-25T15:32:00")).await.unwrap()), [(0, sh("2021-03-25T15:32:00"))]);
}

#[tokio::test]
async fn restart_catch_up_none_beyond_the_grace_window_or_with_missed_skip() {
    let (_dir, store) = store().await;
    let timers = scheduler(&store);
    let daily = "  - daily: \"03:00\"\n";
    let skip = "  - daily: \"03:00\"\n    missed: skip\n";
    let once = create(&store, &timers, "once", daily, sh("2021-03-25T02:00:00")).await;
    let skipped = create(&store, &timers, "skip", skip, sh("2021-03-25T02:00:00")).await;

    // Back at 03:40: 03:00 is 40 minutes old, within the hour: `once` runs, `skip` not.
    let at_0340 = scheduler(&store).resume(sh("2021-03-25T03:40:00")).await.unwrap();
    assert_eq!(at_0340.iter().map(|f| (f.pipeline_id, f.due)).collect::<Vec<_>>(), [(once, sh("2021-03-25T03:00:00"))]);
    assert_eq!(next_runs(&store, skipped).await, [Some(sh("2021-03-26T03:00:00"))], "skip waits for the next time");

    // Down from before the next 03:00 until 09:00: six hours late, nothing runs.
    let fires = scheduler(&store).resume(sh("2021-03-26T09:00:00")).await.unwrap();
    assert!(fires.is_empty(), "{fires:?}");
    assert_eq!(next_runs(&store, once).await, [Some(sh("2021-03-27T03:00:00"))]);
    // With an 8-hour grace window, the same outage earns one run.
    let fires = scheduler_with(&store, "Asia/Shanghai", 8 * HOUR).resume(sh("2021-03-28T09:00:00")).await.unwrap();
    assert_eq!(fires.iter().map(|f| (f.pipeline_id, f.due)).collect::<Vec<_>>(), [(once, sh("2021-03-28T03:00:00"))]);
}

#[tokio::test]
async fn the_loop_reaching_a_due_time_late_treats_it_as_missed() {
    let (_dir, store) = store().await;
    let timers = scheduler(&store);
    let once = create(&store, &timers, "once", "  - every_minutes: 10\n", sh("2021-03-25T14:53:21")).await;
    let skip =
        create(&store, &timers, "skip", "  - every_minutes: 10\n    missed: skip\n", sh("2021-03-25T14:53:21")).await;
    // 20 s late is on time, whatever `missed` says.
    let fires = timers.tick(sh("2021-03-25T15:00:20")).await.unwrap();
    assert_eq!(fires.iter().map(|f| f.pipeline_id).collect::<BTreeSet<_>>(), BTreeSet::from([once, skip]));
    // Five minutes late (the machine slept): `once` catches up, `skip` skips.
    let fires = timers.tick(sh("2021-03-25T15:15:00")).await.unwrap();
    assert_eq!(
        fires.iter().map(|f| (f.pipeline_id, f.due, f.catch_up)).collect::<Vec<_>>(),
        [(once, sh("2021-03-25T15:10:00"), true)]
    );
    assert_eq!(next_runs(&store, skip).await, [Some(sh("2021-03-25T15:20:00"))]);
}

#[tokio::test]
async fn a_wall_clock_time_that_dst_skips_or_repeats_fires_once() {
    let (_dir, store) = store().await;
    let timers = scheduler_with(&store, "Europe/Berlin", HOUR);
    let triggers = "  - daily: \"02:30\"\n  - every_minutes: 15\n";
    let id = create(&store, &timers, "dst", triggers, at("2026-03-28T23:50:00Z")).await;
    let mut fired = Vec::new();
    let mut now = at("2026-03-29T00:00:00Z");
    while now <= at("2026-03-29T02:00:00Z") {
        fired.extend(dues(&timers.tick(now).await.unwrap()));
        now = now.checked_add(jiff::SignedDuration::from_secs(20)).unwrap();
    }
    // 02:00 to 02:59 CET never happens: 02:30 daily fires at 03:00 CEST (01:00 UTC), and
    // so do the skipped 02:00, 02:15, 02:30, 02:45 of the 15-minute timer — once.
    let daily: Vec<_> = fired.iter().filter(|(i, _)| *i == 0).map(|(_, t)| *t).collect();
    assert_eq!(daily, [at("2026-03-29T01:00:00Z")]);
    let quarter: Vec<_> = fired.iter().filter(|(i, _)| *i == 1).map(|(_, t)| t.to_string()).collect();
    assert_eq!(
        quarter,
        [
            "2026-03-29T00:00:00Z", // 01:00 CET
            "2026-03-29T00:15:00Z",
            "2026-03-29T00:30:00Z",
            "2026-03-29T00:45:00Z",
            "2026-03-29T01:00:00Z", // 03:00 CEST, for 02:00 … 02:45 and 03:00 together
            "2026-03-29T01:15:00Z",
            "2026-03-29T01:30:00Z",
            "2026-03-29T01:45:00Z",
            "2026-03-29T02:00:00Z",
        ]
    );
    assert_eq!(store.pipeline_timers(id).await.unwrap().len(), 2);

    // In October 02:30 happens twice; it fires at the first (CEST) only.
    let id = create(&store, &timers, "fall", "  - daily: \"02:30\"\n", at("2026-10-24T12:00:00Z")).await;
    let mut fired = Vec::new();
    let mut now = at("2026-10-24T23:00:00Z");
    while now <= at("2026-10-25T03:00:00Z") {
        fired.extend(timers.tick(now).await.unwrap().into_iter().filter(|f| f.pipeline_id == id).map(|f| f.due));
        now = now.checked_add(jiff::SignedDuration::from_secs(30)).unwrap();
    }
    assert_eq!(fired, [at("2026-10-25T00:30:00Z")]);
}

// ---------------------------------------------------------------------------------
// The schedule API

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_shows_the_next_times_with_their_offsets() {
    let s = common::start().await;
    let triggers = "  - events: [push]\n  - every_minutes: 2\n    timezone: Asia/Shanghai\n  - every_hours: 2\n    at_minute: 28\n    timezone: Asia/Shanghai\n    missed: skip\n  - daily: \"02:30\"\n    timezone: Europe/Berlin\n  - daily: \"02:30\"\n    timezone: Europe/Berlin\n";
    let p = s.create(&pipeline("shown", triggers)).await;
    let id = id_of(&p);

    let after = "2021-03-25T14:53:21%2B08:00";
    let shown = s.get(&format!("/pipelines/shown/schedule?after={after}")).await.expect(200).json;
    assert_eq!(shown["pipeline"], id);
    assert_eq!(shown["active"], true);
    let triggers = shown["triggers"].as_array().unwrap();
    assert_eq!(triggers.len(), 4, "event triggers have no times: {shown:#}");
    assert_eq!(triggers[0]["index"], 1);
    assert_eq!(triggers[0]["kind"], "every_minutes");
    assert_eq!(triggers[0]["trigger"], serde_json::json!({ "every_minutes": 2 }));
    assert_eq!(triggers[0]["timezone"], "Asia/Shanghai");
    assert_eq!(triggers[0]["missed"], "once");
    assert_eq!(
        triggers[0]["next"],
        serde_json::json!([
            "2021-03-25T14:54:00+08:00",
            "2021-03-25T14:56:00+08:00",
            "2021-03-25T14:58:00+08:00",
            "2021-03-25T15:00:00+08:00",
            "2021-03-25T15:02:00+08:00"
        ])
    );
    assert_eq!(triggers[1]["kind"], "every_hours");
    assert_eq!(triggers[1]["trigger"], serde_json::json!({ "every_hours": 2, "at_minute": 28 }));
    assert_eq!(triggers[1]["missed"], "skip");
    assert_eq!(
        triggers[1]["next"],
        serde_json::json!([
            "2021-03-25T16:28:00+08:00",
            "2021-03-25T18:28:00+08:00",
            "2021-03-25T20:28:00+08:00",
            "2021-03-25T22:28:00+08:00",
            "2021-03-26T00:28:00+08:00"
        ])
    );

    // Across the spring-forward gap: 02:30 does not exist on 29 March, it fires at 03:00
    // CEST, and the offset changes from +01:00 to +02:00.
    let shown = s.get("/pipelines/shown/schedule?after=2026-03-27T12:00:00Z").await.expect(200).json;
    assert_eq!(
        shown["triggers"][2]["next"],
        serde_json::json!([
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:30:00+02:00",
            "2026-03-31T02:30:00+02:00",
            "2026-04-01T02:30:00+02:00"
        ])
    );
    // Across the fall-back overlap: the first 02:30 (CEST) only, then CET.
    let shown = s.get("/pipelines/shown/schedule?after=2026-10-24T12:00:00Z&count=3").await.expect(200).json;
    assert_eq!(
        shown["triggers"][3]["next"],
        serde_json::json!(["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00", "2026-10-27T02:30:00+01:00"])
    );

    // Without `after`: from now, strictly in the future; `count` from 1 to 50.
    let shown = s.get(&format!("/pipelines/{id}/schedule?count=50")).await.expect(200).json;
    let next = shown["triggers"][0]["next"].as_array().unwrap();
    assert_eq!(next.len(), 50);
    let first: Timestamp = next[0].as_str().unwrap().parse().unwrap();
    assert!(first > Timestamp::now() - jiff::SignedDuration::from_secs(1));
    assert_eq!(
        s.get("/pipelines/shown/schedule").await.expect(200).json["triggers"][0]["next"].as_array().unwrap().len(),
        5
    );
    for bad in ["count=0", "count=51", "count=x", "count=-1", "after=yesterday", "after=2026-03-27T12:00:00"] {
        let answer = s.get(&format!("/pipelines/shown/schedule?{bad}")).await.expect_error(422);
        let field = bad.split('=').next().unwrap();
        assert!(answer.error_text().contains(field), "{bad}: {}", answer.text);
    }
    s.get("/pipelines/nope/schedule").await.expect_error(404);

    // A pipeline without timers has an empty schedule; the server's zone is shown for a
    // trigger that names none.
    s.create(&pipeline("plain", "  - events: [tag]\n  - cron: \"0 9 * * mon-fri\"\n")).await;
    let shown = s.get("/pipelines/plain/schedule").await.expect(200).json;
    assert_eq!(shown["triggers"][0]["kind"], "cron");
    assert!(shown["triggers"][0]["timezone"].as_str().is_some_and(|z| !z.is_empty()));
}

// ---------------------------------------------------------------------------------
// A real server: the API keeps the rows, the loop fires, a restart catches up once

fn config(dir: &std::path::Path) -> ServerConfig {
    wharf_testenv::server_root(dir);
    let mut config = ServerConfig::new(dir.join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.admin_token = Some(common::TOKEN.to_owned());
    config.host_env = vec![("PATH".to_owned(), std::env::var("PATH").unwrap_or_default())];
    config
}

/// A test client for a server started here (a restart keeps the data directory).
fn connect(server: Server) -> common::TestServer {
    let base = format!("http://{}", server.addr);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {}", common::TOKEN).parse().unwrap());
    let client = reqwest::Client::builder().default_headers(headers).build().unwrap();
    common::TestServer { server, base, client, dir: tempfile::tempdir().unwrap() }
}

/// The runs of a pipeline started by a timer, as `(run id, due)`.
async fn timer_runs(s: &common::TestServer, key: &str) -> Vec<(i64, Timestamp)> {
    let page = s.get(&format!("/pipelines/{key}/runs")).await.expect(200).json;
    let mut out = Vec::new();
    for item in page["items"].as_array().unwrap() {
        let run = s.run(id_of(item)).await;
        if run["cause"]["kind"] == "timer" {
            out.push((id_of(&run), run["cause"]["due"].as_str().unwrap().parse().unwrap()));
        }
    }
    out
}

async fn wait_for_timer_runs(s: &common::TestServer, key: &str, n: usize) -> Vec<(i64, Timestamp)> {
    let until = Instant::now() + common::DEADLINE;
    loop {
        let runs = timer_runs(s, key).await;
        if runs.len() >= n {
            return runs;
        }
        assert!(Instant::now() < until, "no {n} timer run(s) of {key} in time: {runs:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_timer_rows_and_the_loop_fires_on_time() {
    let s = common::start().await;
    let store = s.server.state.store.clone();
    // Daily at a time 12 hours away: it will not come due during the test by itself.
    let later = Timestamp::now().checked_add(jiff::SignedDuration::from_hours(12)).unwrap();
    let hhmm = later.to_zoned(TimeZone::UTC).strftime("%H:%M").to_string();
    let yaml = pipeline("looped", &format!("  - daily: \"{hhmm}\"\n    timezone: UTC\n"));
    let id = id_of(&s.create(&yaml).await);
    let rows = store.pipeline_timers(id).await.unwrap();
    assert_eq!(rows.len(), 1, "created with its timer row");
    let next = Timestamp::from_millisecond(rows[0].next_run_at.unwrap()).unwrap();
    assert!(next > Timestamp::now() && next <= later, "{next}");
    assert!(timer_runs(&s, "looped").await.is_empty(), "creating fires nothing");

    // Make it due in 300 ms and tell the loop: it sleeps until then and fires once.
    let due = Timestamp::now().checked_add(jiff::SignedDuration::from_millis(300)).unwrap();
    let due = Timestamp::from_millisecond(due.as_millisecond()).unwrap();
    store
        .replace_timers(
            id,
            1,
            &[NewTimer { trigger_index: 0, next_run_at: Some(due.as_millisecond()), last_due: None }],
        )
        .await
        .unwrap();
    s.server.state.runs.timers().wake();
    let runs = wait_for_timer_runs(&s, "looped", 1).await;
    assert_eq!(runs.iter().map(|r| r.1).collect::<Vec<_>>(), [due]);
    s.wait_run(runs[0].0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(timer_runs(&s, "looped").await.len(), 1, "fired once");
    let row = store.pipeline_timers(id).await.unwrap().remove(0);
    assert_eq!(row.last_due, Some(due.as_millisecond()));
    assert!(row.next_run_at.unwrap() > Timestamp::now().as_millisecond());

    // Deactivating keeps the row; a due row of an inactive pipeline fires nothing.
    s.post_empty("/pipelines/looped/deactivate").await.expect(200);
    let soon = Timestamp::now().as_millisecond() + 100;
    store
        .replace_timers(id, 1, &[NewTimer { trigger_index: 0, next_run_at: Some(soon), last_due: None }])
        .await
        .unwrap();
    s.server.state.runs.timers().wake();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(timer_runs(&s, "looped").await.len(), 1);
    assert_eq!(store.pipeline_timers(id).await.unwrap()[0].next_run_at, Some(soon), "kept as it was");
    // Activating computes the next future time and fires nothing.
    s.post_empty("/pipelines/looped/activate").await.expect(200);
    let next = store.pipeline_timers(id).await.unwrap()[0].next_run_at.unwrap();
    assert!(next > Timestamp::now().as_millisecond());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(timer_runs(&s, "looped").await.len(), 1);

    // An edit recomputes, removing the timer removes the row, deleting deletes.
    s.send_yaml(Method::PUT, "/pipelines/looped", &pipeline("looped", "  - events: [push]\n")).await.expect(200);
    assert!(store.pipeline_timers(id).await.unwrap().is_empty());
    s.send_yaml(Method::PUT, "/pipelines/looped", &yaml).await.expect(200);
    assert_eq!(store.pipeline_timers(id).await.unwrap()[0].version, 3);
    let copy = id_of(&s.post("/pipelines/looped/copy", serde_json::json!({ "name": "copied" })).await.expect(201).json);
    // A copy starts inactive: its timers fire once it is activated.
    assert!(store.pipeline_timers(copy).await.unwrap().iter().all(|t| t.next_run_at.is_none()));
    s.post_empty("/pipelines/copied/activate").await.expect(200);
    assert_eq!(store.pipeline_timers(copy).await.unwrap().len(), 1, "a copy has its own timers");
    s.delete("/pipelines/looped").await.expect(204);
    assert!(store.pipeline_timers(id).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_catches_up_once() {
    let dir = tempfile::tempdir().unwrap();
    let later = Timestamp::now().checked_add(jiff::SignedDuration::from_hours(12)).unwrap();
    let hhmm = later.to_zoned(TimeZone::UTC).strftime("%H:%M").to_string();
    let yaml = pipeline("nightly", &format!("  - daily: \"{hhmm}\"\n    timezone: UTC\n"));

    let first = connect(Server::start(config(dir.path())).await.unwrap());
    let id = id_of(&first.create(&yaml).await);
    let store = first.server.state.store.clone();
    first.server.shutdown().await;

    // While it was down, a due time passed 10 minutes ago (within the hour of grace).
    let missed = Timestamp::from_millisecond(Timestamp::now().as_millisecond() - 600_000).unwrap();
    let row = store.pipeline_timers(id).await.unwrap().remove(0);
    let stored = NewTimer { trigger_index: 0, next_run_at: Some(missed.as_millisecond()), last_due: row.last_due };
    store.replace_timers(id, row.version, &[stored]).await.unwrap();

    let second = connect(Server::start(config(dir.path())).await.unwrap());
    let runs = wait_for_timer_runs(&second, "nightly", 1).await;
    assert_eq!(runs.iter().map(|r| r.1).collect::<Vec<_>>(), [missed], "one catch-up run, for the missed time");
    second.wait_run(runs[0].0).await;
    let next = store.pipeline_timers(id).await.unwrap()[0].next_run_at.unwrap();
    assert!(next > Timestamp::now().as_millisecond(), "then the next future time");
    second.server.shutdown().await;

    // A third start right after owes nothing more.
    let third = connect(Server::start(config(dir.path())).await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(timer_runs(&third, "nightly").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_without_a_zone_use_the_servers_configured_zone() {
    for (zone, first) in
        [("Asia/Shanghai", "2026-01-16T02:30:00+08:00"), ("America/New_York", "2026-01-15T02:30:00-05:00")]
    {
        let s = common::start_with(tempfile::tempdir().unwrap(), |config| {
            config.timezone = jiff::tz::TimeZone::get(zone).unwrap();
        })
        .await;
        s.create(&pipeline("zoned", "  - daily: \"02:30\"\n")).await;
        let shown = s.get("/pipelines/zoned/schedule?after=2026-01-15T06:00:00Z&count=1").await.expect(200).json;
        assert_eq!(shown["triggers"][0]["timezone"], zone, "{shown:#}");
        assert_eq!(shown["triggers"][0]["next"], serde_json::json!([first]), "{shown:#}");
    }
}
