//! Trigger builders, time parsing and a brute-force oracle shared by the timer tests.
#![allow(dead_code, reason = "each test binary uses a different part")]

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Zoned};
use wharf_core::model::{ClockTime, GitEvent, Missed, Trigger, TriggerKind, Weekday};
use wharf_trigger::Schedule;

pub fn trigger(kind: TriggerKind) -> Trigger {
    Trigger { kind, timezone: None, missed: None }
}

pub fn every_minutes(n: u32) -> Trigger {
    trigger(TriggerKind::EveryMinutes { every_minutes: n })
}

pub fn every_hours(n: u32, at_minute: u32) -> Trigger {
    trigger(TriggerKind::EveryHours { every_hours: n, at_minute })
}

pub fn daily(at: &str) -> Trigger {
    trigger(TriggerKind::Daily { daily: clock(at) })
}

pub fn weekly(days: &[Weekday], at: &str) -> Trigger {
    trigger(TriggerKind::Weekly { weekly: days.to_vec(), at: clock(at) })
}

pub fn monthly(day: u32, at: &str) -> Trigger {
    trigger(TriggerKind::Monthly { monthly: day, at: clock(at) })
}

pub fn cron(expr: &str) -> Trigger {
    trigger(TriggerKind::Cron { cron: expr.to_owned() })
}

pub fn events() -> Trigger {
    trigger(TriggerKind::Events { events: vec![GitEvent::Push], branches: vec![] })
}

pub fn in_zone(mut trigger: Trigger, zone: &str) -> Trigger {
    trigger.timezone = Some(zone.to_owned());
    trigger
}

pub fn missed(mut trigger: Trigger, missed: Missed) -> Trigger {
    trigger.missed = Some(missed);
    trigger
}

pub fn clock(at: &str) -> ClockTime {
    ClockTime::parse(at).unwrap_or_else(|| panic!("bad clock time {at}"))
}

pub fn tz(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap_or_else(|e| panic!("time zone {name}: {e}"))
}

/// `2021-03-25 14:53:21` read as wall-clock time in `zone` (unambiguous times only).
pub fn local(text: &str, zone: &str) -> Timestamp {
    let wall: DateTime = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
    wall.to_zoned(tz(zone)).unwrap_or_else(|e| panic!("{text} in {zone}: {e}")).timestamp()
}

/// An RFC 3339 / RFC 9557 instant: `2026-10-25T02:30:00+02:00`.
pub fn at(text: &str) -> Timestamp {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

pub fn schedule(trigger: &Trigger, server_tz: &str) -> Schedule {
    Schedule::new(trigger, &tz(server_tz)).expect("a valid trigger").expect("a timer, not events")
}

/// The next `n` fire times after `after`, as `2021-03-25T14:54:00+08:00[Asia/Shanghai]`.
pub fn fires(trigger: &Trigger, after: Timestamp, server_tz: &str, n: usize) -> Vec<String> {
    wharf_trigger::next_n(trigger, after, &tz(server_tz), n).expect("a valid trigger").iter().map(show).collect()
}

/// The same, as wall-clock time with its offset: `2026-03-29T03:00:00+02:00`.
pub fn fires_local(trigger: &Trigger, after: Timestamp, server_tz: &str, n: usize) -> Vec<String> {
    wharf_trigger::next_n(trigger, after, &tz(server_tz), n)
        .expect("a valid trigger")
        .iter()
        .map(|z| z.timestamp().display_with_offset(z.offset()).to_string())
        .collect()
}

pub fn show(z: &Zoned) -> String {
    z.to_string()
}

/// Every fire time in `[from, until)`, from the crate.
pub fn all_fires(schedule: &Schedule, from: Timestamp, until: Timestamp) -> Vec<Zoned> {
    let before = from.checked_sub(SignedDuration::from_nanos(1)).expect("in range");
    schedule.fire_times_after(before).take_while(|z| z.timestamp() < until).collect()
}

/// Every fire time in `[from, until)` by brute force, from the rule as the docs state it
/// and not from the crate's search: walk real time minute by minute and fire when the
/// local clock *reaches* a scheduled wall-clock time for the first time. A clock that
/// jumps forward reaches every skipped time at once, at the first instant after the
/// gap; a clock that goes back reaches nothing new until it passes its old high mark.
/// `matches` says whether a wall-clock minute is scheduled.
pub fn oracle(
    zone: &TimeZone,
    from: Timestamp,
    until: Timestamp,
    matches: impl Fn(DateTime) -> bool,
) -> Vec<Timestamp> {
    oracle_fires(&reached(zone, from, until), matches)
}

/// One minute of real time in which the local clock reached new wall-clock minutes,
/// `first..=last` (more than one after a gap).
pub struct Reached {
    pub at: Timestamp,
    pub first: DateTime,
    pub last: DateTime,
}

/// The minutes of `[from, until)` that reach new wall-clock minutes, for [`oracle_fires`].
/// The walk starts six hours early to learn the high mark (longer than any repeated
/// hour); `from` must be on a whole minute, and the zone's offsets whole minutes.
pub fn reached(zone: &TimeZone, from: Timestamp, until: Timestamp) -> Vec<Reached> {
    let minute = SignedDuration::from_mins(1);
    let mut t = from.checked_sub(SignedDuration::from_hours(6)).expect("in range");
    let mut high = t.checked_sub(minute).expect("in range").to_zoned(zone.clone()).datetime();
    let mut steps = Vec::new();
    while t < until {
        let wall = t.to_zoned(zone.clone()).datetime();
        if wall > high {
            if t >= from {
                steps.push(Reached { at: t, first: high.checked_add(minute).expect("in range"), last: wall });
            }
            high = wall;
        }
        t = t.checked_add(minute).expect("in range");
    }
    steps
}

pub fn oracle_fires(steps: &[Reached], matches: impl Fn(DateTime) -> bool) -> Vec<Timestamp> {
    let minute = SignedDuration::from_mins(1);
    steps
        .iter()
        .filter(|step| {
            let mut wall = step.first;
            while wall <= step.last {
                if matches(wall) {
                    return true;
                }
                wall = wall.checked_add(minute).expect("in range");
            }
            false
        })
        .map(|step| step.at)
        .collect()
}

/// A tiny deterministic generator for property-style loops (no dependency needed).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 11
    }

    /// A uniformly spread instant in `[from, until)`, at nanosecond precision.
    pub fn instant(&mut self, from: Timestamp, until: Timestamp) -> Timestamp {
        let span = until.duration_since(from).as_nanos() as u128;
        let offset = (u128::from(self.next_u64()) << 21 | u128::from(self.next_u64() & 0x1f_ffff)) % span;
        from.checked_add(SignedDuration::from_nanos(offset as i64)).expect("in range")
    }
}
