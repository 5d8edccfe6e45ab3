//! The timer kinds as sets of wall-clock times, with no time zone: each answers "the first
//! wall-clock time of mine strictly after this one". Turning wall-clock times into
//! instants (and DST) is `schedule.rs`'s job, so every kind shares one DST rule.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::civil::{Date, DateTime, Time, Weekday};
use wharf_core::model::{ClockTime, TriggerKind, Weekday as ModelWeekday};

use crate::ScheduleError;

const MINUTES_PER_DAY: u32 = 24 * 60;

#[derive(Clone, Debug)]
pub(crate) enum WallClock {
    /// Minutes since local midnight that are a multiple of the interval.
    EveryMinutes(u32),
    /// Minute `minute` of the hours since local midnight that are a multiple of `every`.
    EveryHours {
        every: u32,
        minute: u32,
    },
    Daily(Time),
    /// `days[i]` is Monday + i.
    Weekly {
        days: [bool; 7],
        at: Time,
    },
    /// Day `day`, or the month's last day when it is shorter.
    Monthly {
        day: i8,
        at: Time,
    },
    Cron(Box<Cron>),
}

impl WallClock {
    /// The wall clock of a timer kind; `None` for event triggers.
    pub(crate) fn new(kind: &TriggerKind) -> Result<Option<WallClock>, ScheduleError> {
        Ok(Some(match kind {
            TriggerKind::Events { .. } | TriggerKind::Channel { .. } => return Ok(None),
            &TriggerKind::EveryMinutes { every_minutes } => {
                in_range("every_minutes", every_minutes, 1, MINUTES_PER_DAY, "1 to 1440")?;
                WallClock::EveryMinutes(every_minutes)
            }
            &TriggerKind::EveryHours { every_hours, at_minute } => {
                in_range("every_hours", every_hours, 1, 24, "1 to 24")?;
                in_range("at_minute", at_minute, 0, 59, "0 to 59")?;
                WallClock::EveryHours { every: every_hours, minute: at_minute }
            }
            TriggerKind::Daily { daily } => WallClock::Daily(clock_time(*daily)?),
            TriggerKind::Weekly { weekly, at } => {
                let mut days = [false; 7];
                for day in weekly {
                    days[weekday(*day).to_monday_zero_offset() as usize] = true;
                }
                if !days.contains(&true) {
                    return Err(ScheduleError::NoWeekday);
                }
                WallClock::Weekly { days, at: clock_time(*at)? }
            }
            &TriggerKind::Monthly { monthly, at } => {
                in_range("monthly", monthly, 1, 31, "a day of the month, 1 to 31")?;
                WallClock::Monthly { day: monthly as i8, at: clock_time(at)? }
            }
            TriggerKind::Cron { cron } => WallClock::Cron(Box::new(parse_cron(cron)?)),
        }))
    }

    /// The first wall-clock time of this timer strictly after `wall`, or `None` past the
    /// end of the calendar (year 9999; 5000 for cron) or for a cron expression that
    /// matches no date.
    pub(crate) fn next_after(&self, wall: DateTime) -> Option<DateTime> {
        let (date, time) = (wall.date(), wall.time());
        match *self {
            WallClock::EveryMinutes(every) => {
                let minute_of_day =
                    u32::from(time.hour().unsigned_abs()) * 60 + u32::from(time.minute().unsigned_abs());
                // A multiple at or before the current minute is at or before `wall`.
                let next = (minute_of_day / every + 1) * every;
                if next < MINUTES_PER_DAY {
                    Some(date.to_datetime(hm(next / 60, next % 60)?))
                } else {
                    Some(date.tomorrow().ok()?.to_datetime(Time::midnight()))
                }
            }
            WallClock::EveryHours { every, minute } => {
                let today = (0..24).step_by(every as usize).filter_map(|hour| hm(hour, minute)).find(|&at| at > time);
                match today {
                    Some(at) => Some(date.to_datetime(at)),
                    None => Some(date.tomorrow().ok()?.to_datetime(hm(0, minute)?)),
                }
            }
            WallClock::Daily(at) => {
                let day = if at > time { date } else { date.tomorrow().ok()? };
                Some(day.to_datetime(at))
            }
            WallClock::Weekly { days, at } => {
                let mut day = date;
                for ahead in 0..=7 {
                    if days[day.weekday().to_monday_zero_offset() as usize] && (ahead > 0 || at > time) {
                        return Some(day.to_datetime(at));
                    }
                    day = day.tomorrow().ok()?;
                }
                None
            }
            WallClock::Monthly { day, at } => {
                let this_month = monthly_day(date, day).to_datetime(at);
                if this_month > wall {
                    return Some(this_month);
                }
                let next_month = date.last_of_month().tomorrow().ok()?;
                Some(monthly_day(next_month, day).to_datetime(at))
            }
            // On a civil `DateTime` croner walks the calendar alone: no zone, no DST.
            WallClock::Cron(ref cron) => cron.find_next_occurrence(&wall, false).ok(),
        }
    }
}

/// Parses a 5-field cron expression as Vixie cron reads it: a day matching either a
/// restricted day-of-month or a restricted day-of-week fires.
pub(crate) fn parse_cron(expr: &str) -> Result<Cron, ScheduleError> {
    let parser = CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).dom_and_dow(false).build();
    parser.parse(expr).map_err(|source| ScheduleError::Cron { expr: expr.to_owned(), source })
}

/// Day `day` of `date`'s month, or the month's last day when the month is shorter.
fn monthly_day(date: Date, day: i8) -> Date {
    let last = date.last_of_month();
    Date::new(date.year(), date.month(), day.min(last.day())).unwrap_or(last)
}

fn hm(hour: u32, minute: u32) -> Option<Time> {
    Time::new(i8::try_from(hour).ok()?, i8::try_from(minute).ok()?, 0, 0).ok()
}

fn clock_time(at: ClockTime) -> Result<Time, ScheduleError> {
    in_range("hour", u32::from(at.hour), 0, 23, "0 to 23")?;
    in_range("minute", u32::from(at.minute), 0, 59, "0 to 59")?;
    hm(u32::from(at.hour), u32::from(at.minute)).ok_or(ScheduleError::OutOfRange {
        field: "hour",
        value: u32::from(at.hour),
        expected: "0 to 23",
    })
}

fn in_range(field: &'static str, value: u32, lo: u32, hi: u32, expected: &'static str) -> Result<(), ScheduleError> {
    if (lo..=hi).contains(&value) { Ok(()) } else { Err(ScheduleError::OutOfRange { field, value, expected }) }
}

fn weekday(day: ModelWeekday) -> Weekday {
    match day {
        ModelWeekday::Mon => Weekday::Monday,
        ModelWeekday::Tue => Weekday::Tuesday,
        ModelWeekday::Wed => Weekday::Wednesday,
        ModelWeekday::Thu => Weekday::Thursday,
        ModelWeekday::Fri => Weekday::Friday,
        ModelWeekday::Sat => Weekday::Saturday,
        ModelWeekday::Sun => Weekday::Sunday,
    }
}
