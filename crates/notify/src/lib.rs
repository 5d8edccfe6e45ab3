//! Run notifications, free of the store and of HTTP serving: [`message`] says what a
//! notification tells (the [`Facts`](message::Facts) of a run: pipeline, run number,
//! status, duration, cause, commit, the failed task, a link to the run page) as the
//! documented JSON body and as e-mail text; [`webhook`] sends it to a URL, signed with
//! an HMAC-SHA256 header, retried with backoff, through the server's outbound policy;
//! [`email`] sends it over SMTP (STARTTLS or TLS, with or without a login).
//!
//! Every attempt is reported to the caller ([`Attempt`]), which stores it; a failure
//! is an attempt that says so, never an error the run sees.

pub mod email;
pub mod message;
pub mod webhook;

use std::time::Duration;

/// One delivery attempt, as reported to the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// 1, 2, …
    pub number: u32,
    pub delivered: bool,
    /// The receiver's answer (`HTTP 200`, `250 …`) or what went wrong.
    pub detail: String,
}

/// How often and how patiently a notification is tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Attempts at most (1 = no retry).
    pub attempts: u32,
    /// The wait before the second attempt; each later wait doubles.
    pub first_delay: Duration,
    /// How long one attempt may take.
    pub timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry { attempts: 4, first_delay: Duration::from_secs(2), timeout: Duration::from_secs(15) }
    }
}

impl Retry {
    /// The wait after attempt `n` (1-based) failed.
    pub fn delay_after(&self, n: u32) -> Duration {
        self.first_delay.saturating_mul(1u32 << n.saturating_sub(1).min(16))
    }
}

/// An error with its causes, `: `-joined (a cause already in the text is not repeated).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let words = cause.to_string();
        if !text.contains(&words) {
            text.push_str(": ");
            text.push_str(&words);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles() {
        let r = Retry { attempts: 4, first_delay: Duration::from_secs(2), timeout: Duration::from_secs(1) };
        assert_eq!([r.delay_after(1), r.delay_after(2), r.delay_after(3)].map(|d| d.as_secs()), [2, 4, 8]);
    }
}
