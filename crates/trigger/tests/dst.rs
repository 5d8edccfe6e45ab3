//! Daylight saving time: a skipped wall-clock time fires once, at the first instant after
//! the gap; a repeated one fires once, at its first occurrence — for every kind.
//!
//! 2026 in Europe/Berlin: 03-29 02:00 CET → 03:00 CEST; 10-25 03:00 CEST → 02:00 CET.
//! 2026 in America/New_York: 03-08 02:00 EST → 03:00 EDT; 11-01 02:00 EDT → 01:00 EST.

mod common;

use common::*;
use jiff::civil::{DateTime, Weekday as CivilWeekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Zoned};
use wharf_core::model::Trigger;
use wharf_core::model::Weekday::{Sat, Sun};

const BERLIN: &str = "Europe/Berlin";
const NEW_YORK: &str = "America/New_York";

// ---- gaps (spring forward) ----

#[test]
fn daily_in_the_berlin_gap_fires_once_at_03_00() {
    for t in [daily("02:30"), cron("30 2 * * *")] {
        assert_eq!(
            fires_local(&t, local("2026-03-27 12:00", BERLIN), BERLIN, 3),
            ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"],
            "{t:?}"
        );
    }
    // The gap's edges: 02:00 is skipped too, 03:00 is not.
    assert_eq!(
        fires_local(&daily("02:00"), local("2026-03-28 12:00", BERLIN), BERLIN, 1),
        ["2026-03-29T03:00:00+02:00"]
    );
    assert_eq!(
        fires_local(&daily("03:00"), local("2026-03-28 12:00", BERLIN), BERLIN, 1),
        ["2026-03-29T03:00:00+02:00"]
    );
    assert_eq!(
        fires_local(&daily("01:59"), local("2026-03-28 12:00", BERLIN), BERLIN, 1),
        ["2026-03-29T01:59:00+01:00"]
    );
}

#[test]
fn daily_in_the_new_york_gap_fires_once_at_03_00() {
    for t in [daily("02:30"), cron("30 2 * * *")] {
        assert_eq!(
            fires_local(&t, local("2026-03-07 12:00", NEW_YORK), NEW_YORK, 3),
            ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"],
            "{t:?}"
        );
    }
}

#[test]
fn weekly_and_monthly_in_the_gap_fire_once_at_03_00() {
    // 2026-03-29 is a Sunday, and the 29th.
    let weekly = weekly(&[Sat, Sun], "02:30");
    assert_eq!(
        fires_local(&weekly, local("2026-03-28 00:00", BERLIN), BERLIN, 3),
        ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-04-04T02:30:00+02:00"]
    );
    assert_eq!(
        fires_local(&monthly(29, "02:15"), local("2026-02-01", BERLIN), BERLIN, 3),
        ["2026-02-28T02:15:00+01:00", "2026-03-29T03:00:00+02:00", "2026-04-29T02:15:00+02:00"]
    );
}

#[test]
fn interval_timers_fire_once_for_all_the_times_in_the_gap() {
    for t in [every_minutes(15), cron("*/15 * * * *")] {
        assert_eq!(
            fires_local(&t, local("2026-03-29 01:30", BERLIN), BERLIN, 3),
            ["2026-03-29T01:45:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:15:00+02:00"],
            "{t:?}"
        );
        assert_eq!(
            fires_local(&t, local("2026-03-08 01:30", NEW_YORK), NEW_YORK, 3),
            ["2026-03-08T01:45:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T03:15:00-04:00"],
            "{t:?}"
        );
    }
    assert_eq!(
        fires_local(&every_minutes(1), local("2026-03-29 01:58:30", BERLIN), BERLIN, 3),
        ["2026-03-29T01:59:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:01:00+02:00"]
    );
    // 02:15 (skipped) and 03:00 share one instant and fire once.
    assert_eq!(
        fires_local(&every_minutes(45), local("2026-03-29 01:00", BERLIN), BERLIN, 3),
        ["2026-03-29T01:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:45:00+02:00"]
    );
    for t in [every_hours(2, 28), cron("28 */2 * * *")] {
        assert_eq!(
            fires_local(&t, local("2026-03-29 00:00", BERLIN), BERLIN, 3),
            ["2026-03-29T00:28:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T04:28:00+02:00"],
            "{t:?}"
        );
    }
    assert_eq!(
        fires_local(&every_hours(1, 30), local("2026-03-08 01:00", NEW_YORK), NEW_YORK, 3),
        ["2026-03-08T01:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00"]
    );
}

/// Lord Howe Island moves its clock by 30 minutes: 02:00 → 02:30 on 2026-10-04.
#[test]
fn a_half_hour_gap_fires_at_its_end() {
    let zone = "Australia/Lord_Howe";
    assert_eq!(fires_local(&daily("02:15"), local("2026-10-03 12:00", zone), zone, 1), ["2026-10-04T02:30:00+11:00"]);
    assert_eq!(
        fires_local(&every_minutes(10), local("2026-10-04 01:45", zone), zone, 3),
        ["2026-10-04T01:50:00+10:30", "2026-10-04T02:30:00+11:00", "2026-10-04T02:40:00+11:00"]
    );
}

// ---- overlaps (fall back) ----

#[test]
fn daily_in_the_berlin_overlap_fires_once_at_the_first_occurrence() {
    for t in [daily("02:30"), cron("30 2 * * *")] {
        assert_eq!(
            fires_local(&t, local("2026-10-23 12:00", BERLIN), BERLIN, 3),
            ["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"],
            "{t:?}"
        );
        // Asked during the repeated hour, after the first 02:30 and before the second:
        // the second is not a fire time.
        for after in ["2026-10-25T02:30:00+02:00", "2026-10-25T02:10:00+01:00", "2026-10-25T02:29:59.999999999+01:00"] {
            assert_eq!(fires_local(&t, at(after), BERLIN, 1), ["2026-10-26T02:30:00+01:00"], "{t:?} after {after}");
        }
        // Asked just before the first: the first.
        assert_eq!(fires_local(&t, at("2026-10-25T02:29:59+02:00"), BERLIN, 1), ["2026-10-25T02:30:00+02:00"], "{t:?}");
    }
}

#[test]
fn daily_in_the_new_york_overlap_fires_once_at_the_first_occurrence() {
    for t in [daily("01:30"), cron("30 1 * * *")] {
        assert_eq!(
            fires_local(&t, local("2026-10-31 12:00", NEW_YORK), NEW_YORK, 3),
            ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00", "2026-11-03T01:30:00-05:00"],
            "{t:?}"
        );
        assert_eq!(fires_local(&t, at("2026-11-01T01:15:00-05:00"), NEW_YORK, 1), ["2026-11-02T01:30:00-05:00"]);
    }
}

#[test]
fn interval_timers_do_not_fire_again_in_the_repeated_hour() {
    for t in [every_minutes(15), cron("*/15 * * * *")] {
        assert_eq!(
            fires_local(&t, local("2026-10-25 02:30", BERLIN), BERLIN, 3),
            ["2026-10-25T02:45:00+02:00", "2026-10-25T03:00:00+01:00", "2026-10-25T03:15:00+01:00"],
            "{t:?}"
        );
        // Asked inside the repeated hour: the next new wall-clock time.
        assert_eq!(fires_local(&t, at("2026-10-25T02:05:00+01:00"), BERLIN, 1), ["2026-10-25T03:00:00+01:00"], "{t:?}");
        assert_eq!(
            fires_local(&t, local("2026-11-01 00:50", NEW_YORK), NEW_YORK, 3),
            ["2026-11-01T01:00:00-04:00", "2026-11-01T01:15:00-04:00", "2026-11-01T01:30:00-04:00"],
            "{t:?}"
        );
        assert_eq!(
            fires_local(&t, at("2026-11-01T01:45:00-04:00"), NEW_YORK, 2),
            ["2026-11-01T02:00:00-05:00", "2026-11-01T02:15:00-05:00"],
            "{t:?}"
        );
    }
    for t in [every_hours(2, 28), cron("28 */2 * * *")] {
        assert_eq!(
            fires_local(&t, local("2026-10-25 00:00", BERLIN), BERLIN, 3),
            ["2026-10-25T00:28:00+02:00", "2026-10-25T02:28:00+02:00", "2026-10-25T04:28:00+01:00"],
            "{t:?}"
        );
    }
    assert_eq!(
        fires_local(&every_hours(1, 0), local("2026-10-31 23:30", NEW_YORK), NEW_YORK, 3),
        ["2026-11-01T00:00:00-04:00", "2026-11-01T01:00:00-04:00", "2026-11-01T02:00:00-05:00"]
    );
}

// ---- a whole year: no double fire, no skipped fire, spacing as documented ----

/// Every real minute of `year` in `zone` with the wall-clock minutes it newly reaches
/// (see `common::oracle`): computed once per zone, shared by the triggers.
struct Year {
    zone: TimeZone,
    from: Timestamp,
    until: Timestamp,
    reached: Vec<Reached>,
}

impl Year {
    fn new(zone: &str, year: i16) -> Year {
        let zone = tz(zone);
        let from = jiff::civil::date(year, 1, 1).to_zoned(zone.clone()).unwrap().timestamp();
        let until = jiff::civil::date(year + 1, 1, 1).to_zoned(zone.clone()).unwrap().timestamp();
        let reached = reached(&zone, from, until);
        Year { zone, from, until, reached }
    }

    /// Checks the crate's fire times for `trigger` against the brute-force oracle, and
    /// that they strictly increase and never repeat a wall-clock time. Returns them.
    fn check(&self, trigger: &Trigger, matches: impl Fn(DateTime) -> bool) -> Vec<Zoned> {
        let schedule = wharf_trigger::Schedule::new(trigger, &self.zone).unwrap().unwrap();
        let got = all_fires(&schedule, self.from, self.until);
        let want = oracle_fires(&self.reached, matches);
        let got_instants: Vec<Timestamp> = got.iter().map(Zoned::timestamp).collect();
        if got_instants != want {
            let first_diff = got_instants.iter().zip(&want).position(|(a, b)| a != b);
            panic!(
                "{trigger:?} in {:?}: {} fire times, oracle {}; first difference at index {first_diff:?}",
                self.zone.iana_name(),
                got.len(),
                want.len()
            );
        }
        assert!(got.windows(2).all(|w| w[0].timestamp() < w[1].timestamp()), "strictly increasing");
        let mut walls: Vec<DateTime> = got.iter().map(Zoned::datetime).collect();
        walls.dedup();
        assert_eq!(walls.len(), got.len(), "{trigger:?}: a wall-clock time fired twice");
        got
    }
}

/// The real spacings between consecutive fire times, with how often each occurs.
fn spacings(fires: &[Zoned]) -> Vec<(SignedDuration, usize)> {
    let mut all: Vec<SignedDuration> =
        fires.windows(2).map(|w| w[1].timestamp().duration_since(w[0].timestamp())).collect();
    all.sort();
    let mut counted: Vec<(SignedDuration, usize)> = Vec::new();
    for d in all {
        match counted.last_mut() {
            Some((last, n)) if *last == d => *n += 1,
            _ => counted.push((d, 1)),
        }
    }
    counted
}

fn mins(m: i64) -> SignedDuration {
    SignedDuration::from_mins(m)
}

fn hm(wall: DateTime) -> (i8, i8) {
    (wall.hour(), wall.minute())
}

#[test]
fn a_year_of_every_15_minutes_in_berlin() {
    let year = Year::new(BERLIN, 2026);
    for t in [every_minutes(15), cron("*/15 * * * *")] {
        let fires = year.check(&t, |w| w.minute() % 15 == 0);
        // 96 a day; the skipped hour's 02:00, 02:15, 02:30, 02:45 fire together with 03:00.
        assert_eq!(fires.len(), 365 * 96 - 4, "{t:?}");
        // Always 15 minutes apart, but once: the repeated hour does not fire again.
        assert_eq!(spacings(&fires), [(mins(15), 365 * 96 - 6), (mins(75), 1)], "{t:?}");
    }
}

#[test]
fn a_year_of_every_7_minutes_in_new_york() {
    let year = Year::new(NEW_YORK, 2026);
    let fires = year.check(&every_minutes(7), |w| (i32::from(w.hour()) * 60 + i32::from(w.minute())) % 7 == 0);
    // 206 a day (00:00 … 23:55), less the skipped hour's multiples (02:06 … 02:55, 8 of them)
    // folded into one fire at 03:00 EDT.
    assert_eq!(fires.len(), 365 * 206 - 7);
    // 7 minutes apart; 5 at midnight (23:55 → 00:00); 01:59 EST → 03:00 EDT is 1 minute and
    // 03:00 → 03:02 is 2; 01:59 EDT → 02:06 EST is 67, as the repeated hour fires no more.
    assert_eq!(
        spacings(&fires),
        [(mins(1), 1), (mins(2), 1), (mins(5), 364), (mins(7), fires.len() - 1 - 367), (mins(67), 1)]
    );
}

#[test]
fn a_year_of_every_2_hours_at_28_in_berlin() {
    let year = Year::new(BERLIN, 2026);
    for t in [every_hours(2, 28), cron("28 */2 * * *")] {
        let fires = year.check(&t, |w| w.minute() == 28 && w.hour() % 2 == 0);
        assert_eq!(fires.len(), 365 * 12, "{t:?}");
        assert_eq!(
            spacings(&fires),
            [(mins(88), 1), (mins(92), 1), (mins(120), 365 * 12 - 4), (mins(180), 1)],
            "{t:?}"
        );
    }
}

#[test]
fn a_year_of_daily_times_in_berlin_and_new_york() {
    let (berlin, new_york) = (Year::new(BERLIN, 2026), Year::new(NEW_YORK, 2026));
    for (zone, at_) in
        [(BERLIN, "02:30"), (BERLIN, "02:00"), (BERLIN, "03:00"), (NEW_YORK, "01:30"), (NEW_YORK, "02:30")]
    {
        let year = if zone == BERLIN { &berlin } else { &new_york };
        let clock = clock(at_);
        let want = (clock.hour as i8, clock.minute as i8);
        let expr = format!("{} {} * * *", clock.minute, clock.hour);
        for t in [daily(at_), cron(&expr)] {
            let fires = year.check(&t, |w| hm(w) == want);
            assert_eq!(fires.len(), 365, "{t:?} in {zone}");
            // One a day; around the transitions, 23 to 25 hours apart.
            let days: Vec<_> = fires.iter().map(|z| z.date()).collect();
            assert!(days.windows(2).all(|d| d[0].tomorrow().unwrap() == d[1]), "{t:?} in {zone}");
            assert!(spacings(&fires).iter().all(|&(d, _)| d >= mins(23 * 60) && d <= mins(25 * 60)), "{t:?} in {zone}");
        }
    }
}

#[test]
fn a_year_of_weekly_and_monthly_in_berlin() {
    let year = Year::new(BERLIN, 2026);
    let fires = year.check(&weekly(&[Sat, Sun], "02:30"), |w| {
        matches!(w.weekday(), CivilWeekday::Saturday | CivilWeekday::Sunday) && hm(w) == (2, 30)
    });
    assert_eq!(fires.len(), 104);
    for day in [1, 25, 29, 31] {
        let fires = year.check(&monthly(day, "02:30"), |w| {
            w.day() == (day as i8).min(w.date().days_in_month()) && hm(w) == (2, 30)
        });
        assert_eq!(fires.len(), 12, "monthly: {day}");
    }
}

#[test]
fn a_year_of_cron_with_weekdays_in_new_york() {
    let year = Year::new(NEW_YORK, 2026);
    let fires = year.check(&cron("*/20 1-3 * * sun"), |w| {
        w.weekday() == CivilWeekday::Sunday && (1..=3).contains(&w.hour()) && w.minute() % 20 == 0
    });
    // 9 a Sunday; on 03-08, 02:00 02:20 02:40 fold into 03:00 (3 fewer); on 11-01 nothing repeats.
    assert_eq!(fires.len(), 52 * 9 - 3);
}
