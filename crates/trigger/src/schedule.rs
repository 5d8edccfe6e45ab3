//! A timer trigger compiled for one time zone: its wall-clock times mapped onto instants
//! with the crate's one DST rule.

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, Zoned};
use wharf_core::model::{Missed, Trigger};

use crate::ScheduleError;
use crate::wall::WallClock;

/// A timer trigger ready to answer "when next?": the trigger's wall clock, its zone and
/// its `missed` policy. Build it once per trigger and ask it many times; it is cheap to
/// clone and never fails after [`Schedule::new`].
#[derive(Clone, Debug)]
pub struct Schedule {
    wall: WallClock,
    zone: TimeZone,
    missed: Missed,
}

impl Schedule {
    /// Compiles `trigger` in its own `timezone`, or in `server_tz` when it names none.
    /// `Ok(None)` for an event trigger, which has no times.
    pub fn new(trigger: &Trigger, server_tz: &TimeZone) -> Result<Option<Schedule>, ScheduleError> {
        let Some(wall) = WallClock::new(&trigger.kind)? else {
            return Ok(None);
        };
        let zone = match &trigger.timezone {
            Some(name) => {
                TimeZone::get(name).map_err(|source| ScheduleError::UnknownTimeZone { name: name.clone(), source })?
            }
            None => server_tz.clone(),
        };
        Ok(Some(Schedule { wall, zone, missed: trigger.missed.unwrap_or(Missed::Once) }))
    }

    /// The zone the timer's wall-clock times are read in.
    pub fn time_zone(&self) -> &TimeZone {
        &self.zone
    }

    /// What to do with due times missed while the server was down (`once` by default).
    pub fn missed(&self) -> Missed {
        self.missed
    }

    /// The first fire time strictly after `after`, in the timer's zone. `None` when there
    /// is none before the end of the calendar (year 9999, 5000 for cron) or the cron
    /// expression matches no date at all (`0 0 30 2 *`).
    pub fn next_after(&self, after: Timestamp) -> Option<Zoned> {
        // The instant of a wall-clock time never decreases as the wall clock advances
        // (see `instant_of`), and no wall-clock time at or before `after`'s own has an
        // instant after `after`. So the first wall-clock time past `after`'s whose
        // instant lies past `after` gives the earliest fire time. Only inside a repeated
        // hour does this loop turn more than once.
        let mut wall = after.to_zoned(self.zone.clone()).datetime();
        loop {
            wall = self.wall.next_after(wall)?;
            let at = self.instant_of(wall)?;
            if at > after {
                return Some(at.to_zoned(self.zone.clone()));
            }
        }
    }

    /// The fire times strictly after `after`, in order, each once.
    pub fn fire_times_after(&self, after: Timestamp) -> FireTimes<'_> {
        FireTimes { schedule: self, after: Some(after) }
    }

    /// The instant a wall-clock time fires at, the crate's DST rule: a time the clock
    /// skips fires at the first instant after the gap; a time the clock repeats fires at
    /// its first occurrence. Several skipped times share the instant and fire once.
    fn instant_of(&self, wall: DateTime) -> Option<Timestamp> {
        match self.zone.to_ambiguous_timestamp(wall).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(wall).ok(),
            AmbiguousOffset::Fold { before, .. } => before.to_timestamp(wall).ok(),
            AmbiguousOffset::Gap { before, after } => {
                // Read with the offset after the gap, `wall` lands before the transition;
                // read with the one before, past it. The transition lies between.
                let (earliest, latest) = (after.to_timestamp(wall).ok()?, before.to_timestamp(wall).ok()?);
                self.zone
                    .following(earliest)
                    .take_while(|t| t.timestamp() <= latest)
                    .find(|t| t.offset() == after)
                    .map(|t| t.timestamp())
            }
        }
    }
}

/// The fire times of a [`Schedule`] after an instant: strictly increasing, each once.
/// Ends only past the end of the calendar.
#[derive(Debug)]
pub struct FireTimes<'a> {
    schedule: &'a Schedule,
    after: Option<Timestamp>,
}

impl Iterator for FireTimes<'_> {
    type Item = Zoned;

    fn next(&mut self) -> Option<Zoned> {
        let next = self.schedule.next_after(self.after?);
        self.after = next.as_ref().map(Zoned::timestamp);
        next
    }
}
