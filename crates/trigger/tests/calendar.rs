//! Calendar rules away from DST: week and month boundaries, month ends, leap days,
//! intervals that do not divide the day, cron fields, and the errors.

mod common;

use common::*;
use wharf_core::model::Weekday::{Fri, Mon, Sun, Thu, Wed};
use wharf_core::model::{ClockTime, TriggerKind};
use wharf_trigger::{ScheduleError, next_after};

#[test]
fn daily_fires_today_when_the_time_is_ahead_and_tomorrow_otherwise() {
    let t = daily("09:30");
    assert_eq!(
        fires(&t, local("2026-05-04 09:29:59", "UTC"), "UTC", 2),
        ["2026-05-04T09:30:00+00:00[UTC]", "2026-05-05T09:30:00+00:00[UTC]"]
    );
    assert_eq!(fires(&t, local("2026-05-04 09:30:00", "UTC"), "UTC", 1), ["2026-05-05T09:30:00+00:00[UTC]"]);
    // Across a year end.
    assert_eq!(
        fires(&daily("00:00"), local("2026-12-31 12:00", "UTC"), "UTC", 2),
        ["2027-01-01T00:00:00+00:00[UTC]", "2027-01-02T00:00:00+00:00[UTC]"]
    );
}

#[test]
fn weekly_crosses_the_week_boundary() {
    // 2026-05-08 is a Friday; after its 18:00, next come Sunday, Monday, Wednesday.
    let t = weekly(&[Mon, Wed, Fri, Sun], "18:00");
    assert_eq!(
        fires(&t, local("2026-05-08 18:00:00", "UTC"), "UTC", 5),
        [
            "2026-05-10T18:00:00+00:00[UTC]",
            "2026-05-11T18:00:00+00:00[UTC]",
            "2026-05-13T18:00:00+00:00[UTC]",
            "2026-05-15T18:00:00+00:00[UTC]",
            "2026-05-17T18:00:00+00:00[UTC]",
        ]
    );
    // One weekday, asked on that weekday after its time: a full week ahead.
    assert_eq!(
        fires(&weekly(&[Thu], "09:00"), local("2026-05-07 09:00:01", "UTC"), "UTC", 2),
        ["2026-05-14T09:00:00+00:00[UTC]", "2026-05-21T09:00:00+00:00[UTC]"]
    );
    // Sunday to Monday across a month and year end.
    assert_eq!(
        fires(&weekly(&[Mon], "00:00"), local("2026-12-27 23:59", "UTC"), "UTC", 2),
        ["2026-12-28T00:00:00+00:00[UTC]", "2027-01-04T00:00:00+00:00[UTC]"]
    );
}

#[test]
fn monthly_31_fires_on_the_last_day_of_shorter_months() {
    let all = fires(&monthly(31, "23:00"), local("2023-12-31 23:00", "UTC"), "UTC", 14);
    let dates: Vec<&str> = all.iter().map(|s| &s[..10]).collect();
    assert_eq!(
        dates,
        [
            "2024-01-31",
            "2024-02-29",
            "2024-03-31",
            "2024-04-30",
            "2024-05-31",
            "2024-06-30",
            "2024-07-31",
            "2024-08-31",
            "2024-09-30",
            "2024-10-31",
            "2024-11-30",
            "2024-12-31",
            "2025-01-31",
            "2025-02-28",
        ]
    );
}

#[test]
fn monthly_29_and_30_fire_on_leap_days_and_on_the_28th_otherwise() {
    let on_29 = monthly(29, "12:00");
    assert_eq!(
        fires(&on_29, local("2024-01-29 12:00", "UTC"), "UTC", 2),
        ["2024-02-29T12:00:00+00:00[UTC]", "2024-03-29T12:00:00+00:00[UTC]"]
    );
    assert_eq!(
        fires(&on_29, local("2023-01-29 12:00", "UTC"), "UTC", 2),
        ["2023-02-28T12:00:00+00:00[UTC]", "2023-03-29T12:00:00+00:00[UTC]"]
    );
    assert_eq!(fires(&monthly(30, "00:00"), local("2023-02-01", "UTC"), "UTC", 1), ["2023-02-28T00:00:00+00:00[UTC]"]);
    // Asked on the clamped day itself, after its time: next month's real day.
    assert_eq!(
        fires(&monthly(31, "08:00"), local("2023-02-28 08:00:01", "UTC"), "UTC", 1),
        ["2023-03-31T08:00:00+00:00[UTC]"]
    );
    // Asked on the clamped day, before its time: today.
    assert_eq!(
        fires(&monthly(31, "08:00"), local("2023-02-28 07:59", "UTC"), "UTC", 1),
        ["2023-02-28T08:00:00+00:00[UTC]"]
    );
    // A century that is not a leap year, and one that is.
    assert_eq!(fires(&on_29, local("2100-02-01", "UTC"), "UTC", 1), ["2100-02-28T12:00:00+00:00[UTC]"]);
    assert_eq!(fires(&on_29, local("2000-02-01", "UTC"), "UTC", 1), ["2000-02-29T12:00:00+00:00[UTC]"]);
}

#[test]
fn monthly_fires_exactly_once_in_every_month() {
    for day in 1..=31 {
        let all = fires(&monthly(day, "06:15"), local("2023-01-01", "Europe/Berlin"), "Europe/Berlin", 36);
        let months: Vec<&str> = all.iter().map(|s| &s[..7]).collect();
        let expected: Vec<String> = (2023..=2025).flat_map(|y| (1..=12).map(move |m| format!("{y}-{m:02}"))).collect();
        assert_eq!(months, expected, "monthly: {day}");
    }
}

#[test]
fn daily_fires_on_leap_days() {
    assert_eq!(
        fires(&daily("23:59"), local("2024-02-28 23:59", "UTC"), "UTC", 2),
        ["2024-02-29T23:59:00+00:00[UTC]", "2024-03-01T23:59:00+00:00[UTC]"]
    );
    assert_eq!(fires(&daily("23:59"), local("2023-02-28 23:59", "UTC"), "UTC", 1), ["2023-03-01T23:59:00+00:00[UTC]"]);
}

#[test]
fn cron_skips_months_without_the_day_unlike_monthly() {
    let all = fires(&cron("0 0 31 * *"), local("2024-01-31 00:00", "UTC"), "UTC", 3);
    assert_eq!(
        all,
        ["2024-03-31T00:00:00+00:00[UTC]", "2024-05-31T00:00:00+00:00[UTC]", "2024-07-31T00:00:00+00:00[UTC]"]
    );
    assert_eq!(
        fires(&cron("0 0 29 2 *"), local("2023-01-01", "UTC"), "UTC", 2),
        ["2024-02-29T00:00:00+00:00[UTC]", "2028-02-29T00:00:00+00:00[UTC]"]
    );
}

#[test]
fn cron_reads_fields_as_vixie_cron() {
    // `*/15` and names.
    assert_eq!(
        fires(&cron("*/15 * * * *"), local("2026-05-04 10:07:30", "UTC"), "UTC", 3),
        ["2026-05-04T10:15:00+00:00[UTC]", "2026-05-04T10:30:00+00:00[UTC]", "2026-05-04T10:45:00+00:00[UTC]"]
    );
    assert_eq!(
        fires(&cron("*/15 8-18 * * mon-fri"), local("2026-05-08 18:45", "Asia/Shanghai"), "Asia/Shanghai", 2),
        ["2026-05-11T08:00:00+08:00[Asia/Shanghai]", "2026-05-11T08:15:00+08:00[Asia/Shanghai]"]
    );
    // Day-of-month and day-of-week both restricted: either matches (the 13th, a Monday
    // in April 2026, or a Friday).
    let days: Vec<String> = fires(&cron("0 12 13 * fri"), local("2026-04-01", "UTC"), "UTC", 5)
        .into_iter()
        .map(|s| s[..10].to_owned())
        .collect();
    assert_eq!(days, ["2026-04-03", "2026-04-10", "2026-04-13", "2026-04-17", "2026-04-24"]);
    // 0 and 7 are both Sunday.
    assert_eq!(
        fires(&cron("0 0 * * 7"), local("2026-05-04", "UTC"), "UTC", 1),
        fires(&cron("0 0 * * 0"), local("2026-05-04", "UTC"), "UTC", 1)
    );
}

#[test]
fn every_n_hours_that_does_not_divide_24_starts_again_at_midnight() {
    let all = fires(&every_hours(5, 0), local("2026-05-04 00:00", "UTC"), "UTC", 6);
    let times: Vec<&str> = all.iter().map(|s| &s[..16]).collect();
    assert_eq!(
        times,
        [
            "2026-05-04T05:00",
            "2026-05-04T10:00",
            "2026-05-04T15:00",
            "2026-05-04T20:00",
            "2026-05-05T00:00",
            "2026-05-05T05:00"
        ]
    );
    let all = fires(&every_hours(24, 45), local("2026-05-04 00:45", "UTC"), "UTC", 2);
    assert_eq!(all, ["2026-05-05T00:45:00+00:00[UTC]", "2026-05-06T00:45:00+00:00[UTC]"]);
    let all = fires(&every_hours(1, 59), local("2026-05-04 23:59", "UTC"), "UTC", 1);
    assert_eq!(all, ["2026-05-05T00:59:00+00:00[UTC]"]);
}

#[test]
fn every_n_minutes_that_does_not_divide_the_day_starts_again_at_midnight() {
    // 1440 = 205 × 7 + 5: the last run of the day is 23:55, then 00:00.
    let all = fires(&every_minutes(7), local("2026-05-04 23:47", "UTC"), "UTC", 4);
    let times: Vec<&str> = all.iter().map(|s| &s[11..16]).collect();
    assert_eq!(times, ["23:48", "23:55", "00:00", "00:07"]);
    // 45 divides the day but not the hour: 00:00, 00:45, 01:30, …
    let all = fires(&every_minutes(45), local("2026-05-04 00:00", "UTC"), "UTC", 3);
    let times: Vec<&str> = all.iter().map(|s| &s[11..16]).collect();
    assert_eq!(times, ["00:45", "01:30", "02:15"]);
    // 1440: daily at midnight.
    let all = fires(&every_minutes(1440), local("2026-05-04 00:00", "UTC"), "UTC", 2);
    assert_eq!(all, ["2026-05-05T00:00:00+00:00[UTC]", "2026-05-06T00:00:00+00:00[UTC]"]);
}

#[test]
fn event_triggers_have_no_times() {
    let utc = tz("UTC");
    assert_eq!(next_after(&events(), at("2026-05-04T00:00:00Z"), &utc).unwrap(), None);
    assert!(fires(&events(), at("2026-05-04T00:00:00Z"), "UTC", 5).is_empty());
}

#[test]
fn a_cron_expression_that_matches_no_date_never_fires() {
    let utc = tz("UTC");
    assert_eq!(next_after(&cron("0 0 30 2 *"), at("2026-05-04T00:00:00Z"), &utc).unwrap(), None);
}

#[test]
fn the_end_of_the_calendar_ends_the_timer_without_panicking() {
    for zone in ["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago"] {
        let zone = tz(zone);
        for late in [jiff::Timestamp::MAX, at("9999-12-30T21:59:00Z")] {
            for t in [every_minutes(1), every_hours(1, 0), daily("23:59"), weekly(&[Mon], "00:00"), monthly(1, "00:00")]
            {
                if let Some(next) = next_after(&t, late, &zone).unwrap() {
                    assert!(next.timestamp() > late, "{t:?}");
                }
            }
            assert_eq!(next_after(&monthly(1, "00:00"), late, &zone).unwrap(), None);
        }
        assert_eq!(next_after(&every_minutes(1), jiff::Timestamp::MAX, &zone).unwrap(), None);
        // croner searches up to the year 5000.
        assert_eq!(next_after(&cron("* * * * *"), at("5000-12-31T23:59:00Z"), &zone).unwrap(), None);
    }
}

#[test]
fn bad_triggers_are_errors_not_panics() {
    let utc = tz("UTC");
    let now = at("2026-05-04T00:00:00Z");
    let err = next_after(&in_zone(daily("09:00"), "Mars/Olympus_Mons"), now, &utc).unwrap_err();
    assert!(matches!(err, ScheduleError::UnknownTimeZone { ref name, .. } if name == "Mars/Olympus_Mons"), "{err}");
    assert_eq!(err.to_string(), "`Mars/Olympus_Mons` is not a known IANA time zone");

    let err = next_after(&cron("61 * * * *"), now, &utc).unwrap_err();
    assert!(matches!(err, ScheduleError::Cron { .. }), "{err}");
    let err = next_after(&cron("0 0 * * * *"), now, &utc).unwrap_err();
    assert!(matches!(err, ScheduleError::Cron { .. }), "six fields: {err}");

    for (t, field) in [
        (every_minutes(0), "every_minutes"),
        (every_minutes(1441), "every_minutes"),
        (every_hours(0, 0), "every_hours"),
        (every_hours(25, 0), "every_hours"),
        (every_hours(2, 60), "at_minute"),
        (monthly(0, "00:00"), "monthly"),
        (monthly(32, "00:00"), "monthly"),
        (trigger(TriggerKind::Daily { daily: ClockTime { hour: 24, minute: 0 } }), "hour"),
        (trigger(TriggerKind::Daily { daily: ClockTime { hour: 0, minute: 60 } }), "minute"),
    ] {
        let err = next_after(&t, now, &utc).unwrap_err();
        assert!(matches!(err, ScheduleError::OutOfRange { field: f, .. } if f == field), "{t:?}: {err}");
    }
    let err = next_after(&weekly(&[], "09:00"), now, &utc).unwrap_err();
    assert!(matches!(err, ScheduleError::NoWeekday), "{err}");
}
