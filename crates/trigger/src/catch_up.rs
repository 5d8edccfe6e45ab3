//! Due times missed while the server was down, and the one catch-up run they may earn.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp, Zoned};
use wharf_core::model::Missed;

use crate::Schedule;

/// What a timer owes at `now`, given the last due time it handled: the answer of
/// [`Schedule::due_between`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// The earliest due time in `(since, now]`; `None` when nothing was missed.
    pub first_missed: Option<Zoned>,
    /// The one run to start now, for this due time (the run's cause): the latest missed
    /// due time, when the policy is `missed: once` and it is no older than the grace
    /// window. `None` with `missed: skip`, when nothing was missed, or when the latest
    /// missed time is older than the window.
    pub catch_up: Option<Zoned>,
    /// The first due time strictly after both `now` and `since`: the timer's new
    /// `next_run_at`. `None` when the timer never fires again.
    pub next: Option<Zoned>,
}

impl Schedule {
    /// The due times in `(since, now]` and what to do about them, for a scheduler that
    /// starts up (or finds it fell behind). `since` is the due time of the last run this
    /// timer started, or the moment it was activated or edited; after acting on the
    /// answer, the timer has handled everything up to `now`.
    ///
    /// With `missed: once` (the default) the missed times earn **one** run, for the
    /// latest of them, and only when that time is at least `now - grace` (inclusive);
    /// with `missed: skip` they earn none. Either way [`Due::next`] is strictly in the
    /// future, so no due time is run twice. A `since` at or after `now` (a clock that
    /// went back) misses nothing, and `next` stays after `since`.
    pub fn due_between(&self, since: Timestamp, now: Timestamp, grace: Duration) -> Due {
        let next = self.next_after(since.max(now));
        let first_missed = self.next_after(since).filter(|t| t.timestamp() <= now);
        if first_missed.is_none() || self.missed() == Missed::Skip {
            return Due { first_missed, catch_up: None, next };
        }
        // Walk only the due times inside the window: a long outage of a frequent timer
        // costs no more than the window holds.
        let grace = SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX);
        let window_opens = now.checked_sub(grace).unwrap_or(Timestamp::MIN);
        let walk_from = window_opens.checked_sub(SignedDuration::from_nanos(1)).unwrap_or(Timestamp::MIN).max(since);
        let catch_up = self.fire_times_after(walk_from).take_while(|t| t.timestamp() <= now).last();
        Due { first_missed, catch_up, next }
    }
}
