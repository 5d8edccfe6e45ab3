//! Restart catch-up: due times missed while the server was down earn at most one run, the
//! latest, within the grace window (`missed: once`), or none (`missed: skip`).

mod common;

use std::time::Duration;

use common::*;
use jiff::{SignedDuration, Timestamp};
use wharf_core::model::Missed;
use wharf_trigger::{Due, Schedule, due_between, first_after_activation};

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

fn shown(due: &Due) -> [Option<String>; 3] {
    [due.first_missed.as_ref().map(show), due.catch_up.as_ref().map(show), due.next.as_ref().map(show)]
}

fn s(text: &str) -> Option<String> {
    Some(text.to_owned())
}

#[test]
fn a_down_time_over_several_due_times_earns_one_run_for_the_latest() {
    let utc = tz("UTC");
    let hourly = every_hours(1, 0);
    // Last run at 10:00; down until 15:20: 11:00 … 15:00 were missed.
    let (since, now) = (at("2026-05-04T10:00:00Z"), at("2026-05-04T15:20:00Z"));
    let due = due_between(&hourly, since, now, &utc, HOUR).unwrap();
    assert_eq!(
        shown(&due),
        [s("2026-05-04T11:00:00+00:00[UTC]"), s("2026-05-04T15:00:00+00:00[UTC]"), s("2026-05-04T16:00:00+00:00[UTC]")]
    );
    // `missed: once` is the default; saying it changes nothing.
    assert_eq!(due_between(&missed(hourly.clone(), Missed::Once), since, now, &utc, HOUR).unwrap(), due);
}

#[test]
fn the_catch_up_run_needs_the_latest_due_time_inside_the_grace_window() {
    let utc = tz("UTC");
    let hourly = every_hours(1, 0);
    let (since, now) = (at("2026-05-04T10:00:00Z"), at("2026-05-04T15:20:00Z"));
    // 15:00 is 20 minutes old: a 20-minute window holds it (inclusive), 19m59s does not.
    let due = due_between(&hourly, since, now, &utc, 20 * MINUTE).unwrap();
    assert_eq!(due.catch_up.as_ref().map(show), s("2026-05-04T15:00:00+00:00[UTC]"));
    let due = due_between(&hourly, since, now, &utc, 20 * MINUTE - Duration::from_secs(1)).unwrap();
    assert_eq!(
        shown(&due),
        [s("2026-05-04T11:00:00+00:00[UTC]"), None, s("2026-05-04T16:00:00+00:00[UTC]")],
        "too old: missed, no run, and the timer goes on"
    );
    // A zero window still runs a due time that is exactly now.
    let due = due_between(&hourly, since, at("2026-05-04T11:00:00Z"), &utc, Duration::ZERO).unwrap();
    assert_eq!(due.catch_up.as_ref().map(show), s("2026-05-04T11:00:00+00:00[UTC]"));
    // An unbounded window does not overflow.
    let due = due_between(&hourly, since, now, &utc, Duration::MAX).unwrap();
    assert_eq!(due.catch_up.as_ref().map(show), s("2026-05-04T15:00:00+00:00[UTC]"));
}

#[test]
fn missed_skip_earns_no_run() {
    let utc = tz("UTC");
    let hourly = missed(every_hours(1, 0), Missed::Skip);
    let due = due_between(&hourly, at("2026-05-04T10:00:00Z"), at("2026-05-04T15:20:00Z"), &utc, HOUR).unwrap();
    assert_eq!(shown(&due), [s("2026-05-04T11:00:00+00:00[UTC]"), None, s("2026-05-04T16:00:00+00:00[UTC]")]);
}

#[test]
fn no_due_time_missed_means_nothing_to_catch_up() {
    let utc = tz("UTC");
    let hourly = every_hours(1, 0);
    let due = due_between(&hourly, at("2026-05-04T10:00:00Z"), at("2026-05-04T10:59:59.999Z"), &utc, HOUR).unwrap();
    assert_eq!(shown(&due), [None, None, s("2026-05-04T11:00:00+00:00[UTC]")]);
    // A clock that went back: nothing missed, and the next time stays after `since`.
    let due = due_between(&hourly, at("2026-05-04T10:00:00Z"), at("2026-05-04T08:30:00Z"), &utc, HOUR).unwrap();
    assert_eq!(shown(&due), [None, None, s("2026-05-04T11:00:00+00:00[UTC]")]);
    // Event triggers owe nothing.
    let due = due_between(&events(), at("2026-05-04T10:00:00Z"), at("2026-05-05T10:00:00Z"), &utc, HOUR).unwrap();
    assert_eq!(due, Due::default());
}

#[test]
fn catch_up_in_the_trigger_zone_across_a_dst_gap() {
    let berlin = "Europe/Berlin";
    let nightly = in_zone(daily("02:30"), berlin);
    // Down from Friday noon to Sunday 08:00; Sunday's 02:30 did not exist and was due at 03:00 CEST.
    let (since, now) = (local("2026-03-27 12:00", berlin), local("2026-03-29 08:00", berlin));
    let due = due_between(&nightly, since, now, &tz("UTC"), 6 * HOUR).unwrap();
    assert_eq!(
        shown(&due),
        [
            s("2026-03-28T02:30:00+01:00[Europe/Berlin]"),
            s("2026-03-29T03:00:00+02:00[Europe/Berlin]"),
            s("2026-03-30T02:30:00+02:00[Europe/Berlin]"),
        ]
    );
    // Five hours is exactly the age of 03:00 at 08:00; 4h59m is not enough.
    assert!(due_between(&nightly, since, now, &tz("UTC"), 5 * HOUR).unwrap().catch_up.is_some());
    assert!(due_between(&nightly, since, now, &tz("UTC"), 5 * HOUR - MINUTE).unwrap().catch_up.is_none());
}

#[test]
fn a_long_outage_of_a_frequent_timer_looks_only_inside_the_window() {
    let utc = tz("UTC");
    let every_minute = every_minutes(1);
    let (since, now) = (at("2025-05-04T00:00:00Z"), at("2026-05-04T12:34:56Z"));
    let due = due_between(&every_minute, since, now, &utc, 5 * MINUTE).unwrap();
    assert_eq!(
        shown(&due),
        [s("2025-05-04T00:01:00+00:00[UTC]"), s("2026-05-04T12:34:00+00:00[UTC]"), s("2026-05-04T12:35:00+00:00[UTC]")]
    );
}

/// A scheduler on a controllable clock, with crashes: on time it starts the stored
/// `next_run_at` and computes the next; after a restart it asks `due_between`. Every due
/// time is started at most once, catch-ups only for the latest missed time of an outage,
/// and only within grace.
#[test]
fn a_scheduler_with_restarts_never_runs_a_due_time_twice() {
    for policy in [Missed::Once, Missed::Skip] {
        for trigger in [every_minutes(7), every_hours(1, 30), in_zone(cron("*/20 1-3 * * *"), "Europe/Berlin")] {
            let trigger = missed(trigger, policy);
            let schedule = Schedule::new(&trigger, &tz("Europe/Berlin")).unwrap().unwrap();
            let grace = 30 * MINUTE;
            let start = at("2026-10-24T00:00:00Z");
            let mut since = start;
            let mut next = first_after_activation(&trigger, start, &tz("Europe/Berlin")).unwrap();
            let mut started: Vec<Timestamp> = Vec::new();
            let mut catch_ups = 0;
            let mut rng = Lcg(7);
            let mut now = start;
            while now < at("2026-10-27T00:00:00Z") {
                // Up for a while: start each due time as the clock reaches it.
                let up_until = now.checked_add(SignedDuration::from_mins((rng.next_u64() % 300) as i64)).unwrap();
                while let Some(due) = next.clone().filter(|n| n.timestamp() <= up_until) {
                    started.push(due.timestamp());
                    since = due.timestamp();
                    next = schedule.next_after(since);
                }
                // Crash, down for a while, restart.
                now = up_until.checked_add(SignedDuration::from_mins((rng.next_u64() % 200) as i64)).unwrap();
                let due = schedule.due_between(since, now, grace);
                if let Some(first) = &due.first_missed {
                    assert!(first.timestamp() > since && first.timestamp() <= now);
                }
                if let Some(run) = &due.catch_up {
                    assert_eq!(policy, Missed::Once);
                    assert!(now.duration_since(run.timestamp()) <= SignedDuration::try_from(grace).unwrap());
                    assert_eq!(schedule.next_after(run.timestamp()).map(|n| n.timestamp() > now), Some(true));
                    started.push(run.timestamp());
                    catch_ups += 1;
                }
                since = now;
                next = due.next;
                assert!(next.as_ref().is_some_and(|n| n.timestamp() > now));
            }
            assert!(started.windows(2).all(|w| w[0] < w[1]), "{trigger:?}: a due time started twice");
            let fire_times: Vec<Timestamp> =
                all_fires(&schedule, start, now.checked_add(SignedDuration::from_nanos(1)).unwrap())
                    .iter()
                    .map(|z| z.timestamp())
                    .collect();
            let off: Vec<_> = started.iter().filter(|t| !fire_times.contains(t)).collect();
            assert!(off.is_empty(), "{trigger:?}: started off schedule: {off:?}");
            assert!(!started.is_empty());
            assert_eq!(catch_ups > 0, policy == Missed::Once, "{trigger:?}: {catch_ups} catch-ups");
        }
    }
}
