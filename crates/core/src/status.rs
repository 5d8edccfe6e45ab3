//! The status of a run, a stage or a task, and the one function that moves it.
//!
//! ```text
//!  queued ──► pending ──► running ──► succeeded | failed | stopped | timed_out
//!    │           ▲  │        │  ▲
//!    │           └──┼────────┘  │        (a retry goes back to pending for a slot)
//!    │              │        ▼  │
//!    │              │     waiting        (approval, stage trigger)
//!    └──────────────┴──► skipped | stopped | failed | timed_out
//! ```
//!
//! Terminal statuses never change again. Everything that records a status change goes
//! through [`Status::transition`], so an impossible change is a bug caught at the
//! point where it happens, not a surprise in the UI later.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a run, stage or task is in its life. Stored and sent as the snake-case string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Accepted, not yet looked at by the engine.
    Queued,
    /// Waiting for executor resources (a slot, a node). Does not count against timeouts.
    Pending,
    /// Doing work. Only this status counts against timeouts.
    Running,
    /// Waiting for a person (approval) or an outside signal (stage trigger).
    Waiting,
    /// Finished and every part that had to succeed did.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Ended by a person (or by a newer run under `concurrency: cancel-previous`).
    Stopped,
    /// Ended because a timeout ran out.
    TimedOut,
    /// Never started because an earlier part decided the outcome.
    Skipped,
}

/// A status change that the state machine does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid status change from `{from}` to `{to}`")]
pub struct InvalidTransition {
    pub from: Status,
    pub to: Status,
}

impl Status {
    /// Every status, in life order. Handy for exhaustive tests and documentation.
    pub const ALL: [Status; 9] = [
        Status::Queued,
        Status::Pending,
        Status::Running,
        Status::Waiting,
        Status::Succeeded,
        Status::Failed,
        Status::Stopped,
        Status::TimedOut,
        Status::Skipped,
    ];

    /// True once the status can never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Stopped | Status::TimedOut | Status::Skipped)
    }

    /// True for terminal statuses that count as "it did not work".
    pub fn is_unsuccessful(self) -> bool {
        matches!(self, Status::Failed | Status::Stopped | Status::TimedOut)
    }

    /// Whether `self → to` is allowed. The whole state machine is this one match.
    pub fn can_become(self, to: Status) -> bool {
        use Status::*;
        match (self, to) {
            (Queued, Pending | Running | Skipped | Stopped | Failed | TimedOut) => true,
            // A slot freed (running), or the run ended before one did.
            (Pending, Running | Stopped | Failed | TimedOut | Skipped) => true,
            // Back to pending: a retry waits for a slot again.
            (Running, Pending | Waiting | Succeeded | Failed | Stopped | TimedOut) => true,
            (Waiting, Running | Succeeded | Failed | Stopped | TimedOut) => true,
            _ => false,
        }
    }

    /// Moves to `to`, or says why it cannot.
    pub fn transition(self, to: Status) -> Result<Status, InvalidTransition> {
        if self.can_become(to) { Ok(to) } else { Err(InvalidTransition { from: self, to }) }
    }

    /// The stored and displayed spelling (`timed_out`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Waiting => "waiting",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Stopped => "stopped",
            Status::TimedOut => "timed_out",
            Status::Skipped => "skipped",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` honours width and alignment, so statuses line up in tables.
        f.pad(self.as_str())
    }
}

/// A string that is not one of the nine status spellings.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown status `{0}`")]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL.into_iter().find(|status| status.as_str() == s).ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    /// The full table, written out by hand so a change to the machine is a visible diff.
    const ALLOWED: &[(Status, &[Status])] = &[
        (Queued, &[Pending, Running, Skipped, Stopped, Failed, TimedOut]),
        (Pending, &[Running, Stopped, Failed, TimedOut, Skipped]),
        (Running, &[Pending, Waiting, Succeeded, Failed, Stopped, TimedOut]),
        (Waiting, &[Running, Succeeded, Failed, Stopped, TimedOut]),
        (Succeeded, &[]),
        (Failed, &[]),
        (Stopped, &[]),
        (TimedOut, &[]),
        (Skipped, &[]),
    ];

    #[test]
    fn every_pair_of_statuses_follows_the_table() {
        for (from, allowed) in ALLOWED {
            for to in Status::ALL {
                let expected = allowed.contains(&to);
                assert_eq!(from.can_become(to), expected, "{from} -> {to}");
                match from.transition(to) {
                    Ok(next) => assert!(expected && next == to),
                    Err(err) => {
                        assert!(!expected);
                        assert_eq!(err, InvalidTransition { from: *from, to });
                    }
                }
            }
        }
        assert_eq!(ALLOWED.len(), Status::ALL.len());
    }

    #[test]
    fn terminal_statuses_are_exactly_those_without_exits() {
        for (from, allowed) in ALLOWED {
            assert_eq!(from.is_terminal(), allowed.is_empty(), "{from}");
        }
    }

    #[test]
    fn spelling_round_trips_through_text_and_json() {
        for status in Status::ALL {
            assert_eq!(status.as_str().parse::<Status>(), Ok(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        assert_eq!("done".parse::<Status>(), Err(UnknownStatus("done".to_owned())));
        assert_eq!(TimedOut.to_string(), "timed_out");
    }
}
