//! Property-style loops over many instants and zones (a fixed-seed generator, no
//! proptest): the next fire time is in the future, is the earliest one, and does not
//! depend on where the search starts.

mod common;

use common::*;
use jiff::civil::{DateTime, Weekday as CivilWeekday};
use jiff::{SignedDuration, Timestamp};
use wharf_core::model::Trigger;
use wharf_core::model::Weekday::{Mon, Sat, Sun, Wed};

/// Zones with the awkward cases: DST both ways, a half-hour DST (Lord Howe), a
/// 45-minute offset (Kathmandu), DST changes at midnight (Santiago, and São Paulo until
/// 2019), a skipped day (Apia, 2011-12-30), and no DST at all.
const ZONES: &[&str] = &[
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "America/Santiago",
    "America/Sao_Paulo",
    "Pacific/Apia",
    "Asia/Shanghai",
    "UTC",
];

type Matcher = Box<dyn Fn(DateTime) -> bool>;

/// Triggers with the wall-clock minutes they schedule, written independently of the crate.
fn cases() -> Vec<(Trigger, Matcher)> {
    let minute_of_day = |w: DateTime| i32::from(w.hour()) * 60 + i32::from(w.minute());
    vec![
        (every_minutes(1), Box::new(|_| true)),
        (every_minutes(15), Box::new(move |w| minute_of_day(w) % 15 == 0)),
        (every_minutes(7), Box::new(move |w| minute_of_day(w) % 7 == 0)),
        (every_minutes(90), Box::new(move |w| minute_of_day(w) % 90 == 0)),
        (every_hours(2, 28), Box::new(|w| w.hour() % 2 == 0 && w.minute() == 28)),
        (every_hours(5, 0), Box::new(|w| w.hour() % 5 == 0 && w.minute() == 0)),
        (daily("00:00"), Box::new(|w| (w.hour(), w.minute()) == (0, 0))),
        (daily("02:30"), Box::new(|w| (w.hour(), w.minute()) == (2, 30))),
        (
            weekly(&[Mon, Wed, Sat, Sun], "01:30"),
            Box::new(|w| {
                matches!(
                    w.weekday(),
                    CivilWeekday::Monday | CivilWeekday::Wednesday | CivilWeekday::Saturday | CivilWeekday::Sunday
                ) && (w.hour(), w.minute()) == (1, 30)
            }),
        ),
        (monthly(31, "00:30"), Box::new(|w| w.day() == w.date().days_in_month() && (w.hour(), w.minute()) == (0, 30))),
        (cron("*/15 * * * *"), Box::new(|w| w.minute() % 15 == 0)),
        (cron("30 2 * * *"), Box::new(|w| (w.hour(), w.minute()) == (2, 30))),
        (
            cron("5 0-3 1,15 * mon"),
            Box::new(|w| {
                w.minute() == 5
                    && w.hour() <= 3
                    && (w.day() == 1 || w.day() == 15 || w.weekday() == CivilWeekday::Monday)
            }),
        ),
    ]
}

fn nanos(n: i64) -> SignedDuration {
    SignedDuration::from_nanos(n)
}

#[test]
fn the_next_fire_time_is_strictly_later_and_the_earliest() {
    let (from, until) = (at("2010-01-01T00:00:00Z"), at("2030-01-01T00:00:00Z"));
    let mut rng = Lcg(0x5eed);
    for zone in ZONES {
        for (trigger, matches) in cases() {
            let schedule = schedule(&in_zone(trigger.clone(), zone), "UTC");
            for sample in 0..40 {
                let t = rng.instant(from, until);
                let next = schedule.next_after(t).expect("fires again").timestamp();
                assert!(next > t, "{trigger:?} in {zone} after {t}");
                // Nothing fires in (t, next): the search just before `next` finds `next`.
                let just_before = next.checked_sub(nanos(1)).unwrap();
                assert_eq!(
                    schedule.next_after(just_before).map(|z| z.timestamp()),
                    Some(next),
                    "{trigger:?} in {zone}"
                );
                // Where the search starts does not matter: walking from a day earlier passes the same times.
                let earlier = t.checked_sub(SignedDuration::from_hours(25)).unwrap();
                let walked = schedule.fire_times_after(earlier).map(|z| z.timestamp()).find(|&f| f > t);
                assert_eq!(walked, Some(next), "{trigger:?} in {zone} after {t}");
                // The brute-force oracle agrees, when the wait is short enough to walk (a few samples).
                if sample < 10 && next.duration_since(t) <= SignedDuration::from_hours(36) {
                    let start = t.round(jiff::Unit::Minute).unwrap();
                    let start =
                        if start <= t { start.checked_add(SignedDuration::from_mins(1)).unwrap() } else { start };
                    let want = oracle(schedule.time_zone(), start, next.checked_add(nanos(1)).unwrap(), &matches);
                    assert_eq!(want.first(), Some(&next), "{trigger:?} in {zone} after {t}: oracle {want:?}");
                }
            }
        }
    }
}

#[test]
fn fire_times_strictly_increase_and_never_repeat_a_wall_clock_time() {
    let mut rng = Lcg(42);
    for zone in ZONES {
        for (trigger, _) in cases() {
            let schedule = schedule(&in_zone(trigger.clone(), zone), "UTC");
            let t = rng.instant(at("2011-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z"));
            let times: Vec<_> = schedule.fire_times_after(t).take(200).collect();
            assert_eq!(times.len(), 200);
            assert!(times[0].timestamp() > t);
            assert!(times.windows(2).all(|w| w[0].timestamp() < w[1].timestamp()), "{trigger:?} in {zone}");
            assert!(times.windows(2).all(|w| w[0].datetime() < w[1].datetime()), "{trigger:?} in {zone}");
        }
    }
}

/// Around every transition of the years 2010–2030, in each zone: the fire times the crate
/// lists match the oracle's, minute for minute.
#[test]
fn every_transition_matches_the_oracle() {
    let mut checked = 0;
    for zone in ZONES {
        let tz = tz(zone);
        let transitions: Vec<Timestamp> = tz
            .following(at("2010-01-01T00:00:00Z"))
            .map(|t| t.timestamp())
            .take_while(|&t| t < at("2030-01-01T00:00:00Z"))
            .collect();
        for transition in transitions {
            let from = transition.checked_sub(SignedDuration::from_hours(4)).unwrap();
            let until = transition.checked_add(SignedDuration::from_hours(4)).unwrap();
            for (trigger, matches) in cases() {
                let schedule = schedule(&in_zone(trigger.clone(), zone), "UTC");
                let got: Vec<Timestamp> = all_fires(&schedule, from, until).iter().map(|z| z.timestamp()).collect();
                let want = oracle(&tz, from, until, &matches);
                assert_eq!(got, want, "{trigger:?} in {zone} around {transition}");
            }
            checked += 1;
        }
    }
    assert!(checked > 150, "only {checked} transitions");
}

#[test]
fn a_skipped_day_fires_its_times_once_at_the_end_of_the_gap() {
    // Samoa skipped 2011-12-30: 2011-12-29 23:59:59 -10:00 was followed by 2011-12-31 00:00 +14:00.
    let apia = "Pacific/Apia";
    assert_eq!(
        fires_local(&daily("12:00"), local("2011-12-29 13:00", apia), apia, 2),
        ["2011-12-31T00:00:00+14:00", "2011-12-31T12:00:00+14:00"]
    );
    assert_eq!(
        fires_local(&monthly(30, "09:00"), local("2011-12-29 13:00", apia), apia, 2),
        ["2011-12-31T00:00:00+14:00", "2012-01-30T09:00:00+14:00"]
    );
}
