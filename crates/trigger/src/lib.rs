//! When timer triggers fire: pure time arithmetic, no IO and no clock of its own — every
//! function takes "now" as an argument, so the server's scheduler and the tests drive it
//! with any clock. Start at [`Schedule`] (a trigger compiled for its zone), or the free
//! functions [`next_after`], [`next_n`], [`first_after_activation`] and [`due_between`].
//! The same rules are written for users in `docs/pipeline-yaml.md`, "When timers fire".
//!
//! # The rules
//!
//! Every timer is a set of **wall-clock times in the trigger's `timezone`** (an IANA
//! name; default: the server's zone):
//!
//! - **`every_minutes: n`** fires when the minutes since local midnight are a whole
//!   multiple of n: 00:00, 00:n, 00:2n, … up to the last one before 24:00, then again
//!   from 00:00. An n that divides 60 gives the same minutes in every hour; for an n
//!   that does not divide 1440 the last interval of the day is shorter (`7`: … 23:48,
//!   23:55, 00:00). The seed's example: set at 2021-03-25 14:53:21 with n = 2, it fires
//!   at 14:54:00, 14:56:00, 14:58:00, …
//! - **`every_hours: n`, `at_minute: m`** fires at minute m of the hours since local
//!   midnight that are a whole multiple of n (0, n, 2n, … below 24). The seed's
//!   example: set at 2021-03-25 14:53:21 with n = 2 and m = 28, it fires at 16:28,
//!   18:28, 20:28, … An n that does not divide 24 starts again at midnight: `5` fires at
//!   00, 05, 10, 15 and 20 h.
//! - **`daily`**, **`weekly`**, **`monthly`** fire at `HH:MM` every day, on the listed
//!   weekdays, or on day D of every month. A month without day D fires on its last day:
//!   `monthly: 31` fires on 30 April and on 28 February (29 in a leap year);
//!   `monthly: 29` on 28 February 2023 and on 29 February 2024. It fires once every
//!   month.
//! - **`cron`** reads its 5 fields as Vixie cron does: when both day-of-month and
//!   day-of-week are restricted, a day matching either fires. Unlike `monthly`, a cron
//!   day-of-month skips the months without that day (`0 0 31 * *` fires in 7 months).
//!   croner finds the matching wall-clock times; the zone and DST are applied here, so
//!   cron follows the same DST rule as the other kinds.
//! - **Daylight saving time**, the same rule for every kind. A wall-clock time that the
//!   clock skips (02:30 on 2026-03-29 in Europe/Berlin) fires once, at the first instant
//!   after the gap (03:00 CEST); the skipped times of an interval timer fire there
//!   together, once. A wall-clock time that occurs twice (02:30 on 2026-10-25 in
//!   Europe/Berlin) fires once, at its first occurrence (02:30 CEST); the repeated hour
//!   does not fire again, so `every_minutes: 15` has no run between 02:45 CEST and 03:00
//!   CET. (Vixie cron, and croner on a zoned time, would run `*/15` in both halves.)
//!   Put another way: a timer fires when the local clock *reaches* one of its wall-clock
//!   times for the first time.
//! - **Never at once**: the next fire time is always strictly after "now", so
//!   activating or editing a timer never starts a run at once, even on a due minute
//!   ([`first_after_activation`]).
//! - **Missed times** ([`due_between`]): of the due times that passed while the server
//!   was down, `missed: once` (the default) starts **one** run, for the latest of them,
//!   and only if that time is no older than the grace window (an argument: the server's
//!   configuration); `missed: skip` starts none. Either way the timer then waits for its
//!   next future time.
//!
//! Event triggers have no times: the functions answer `None` (or nothing due) for them.

mod catch_up;
mod error;
mod schedule;
mod wall;

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use wharf_core::model::Trigger;

pub use catch_up::Due;
pub use error::ScheduleError;
pub use schedule::{FireTimes, Schedule};

/// The first fire time of `trigger` strictly after `after`, in the trigger's zone
/// (`server_tz` when it names none). `Ok(None)` for an event trigger, or when the timer
/// never fires again (see [`Schedule::next_after`]).
pub fn next_after(trigger: &Trigger, after: Timestamp, server_tz: &TimeZone) -> Result<Option<Zoned>, ScheduleError> {
    Ok(Schedule::new(trigger, server_tz)?.and_then(|s| s.next_after(after)))
}

/// The next `n` fire times strictly after `after`, in order (what the schedule API and
/// CLI show); fewer when the timer ends, none for an event trigger.
pub fn next_n(
    trigger: &Trigger,
    after: Timestamp,
    server_tz: &TimeZone,
    n: usize,
) -> Result<Vec<Zoned>, ScheduleError> {
    Ok(Schedule::new(trigger, server_tz)?.map(|s| s.fire_times_after(after).take(n).collect()).unwrap_or_default())
}

/// The `next_run_at` of a timer activated or edited at `now`: its first fire time
/// strictly after `now`. A timer never fires at the moment it is switched on.
pub fn first_after_activation(
    trigger: &Trigger,
    now: Timestamp,
    server_tz: &TimeZone,
) -> Result<Option<Zoned>, ScheduleError> {
    next_after(trigger, now, server_tz)
}

/// Restart catch-up: the due times of `trigger` in `(since, now]`, the one catch-up run
/// they earn under its `missed` policy and `grace`, and the next future time. See
/// [`Schedule::due_between`]. Nothing is due for an event trigger.
pub fn due_between(
    trigger: &Trigger,
    since: Timestamp,
    now: Timestamp,
    server_tz: &TimeZone,
    grace: Duration,
) -> Result<Due, ScheduleError> {
    Ok(Schedule::new(trigger, server_tz)?.map(|s| s.due_between(since, now, grace)).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    /// The server keeps schedules in shared state across tasks.
    #[test]
    fn schedules_are_send_and_sync() {
        fn shared<T: Send + Sync + Clone>() {}
        shared::<crate::Schedule>();
        shared::<crate::Due>();
    }
}
