//! Timeouts count only `running` time (DESIGN.md §3): a [`RunningClock`] advances
//! while at least one of the things it watches is running and stands still while
//! they all wait for a slot.
//!
//! Starting and stopping never wakes anyone: [`RunningClock::expired`] sleeps for the
//! time that is left as if the clock ran all along (running time never exceeds wall
//! time, so it can only wake early), then looks again. That keeps the per-task cost of
//! timeouts at two short lock operations.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Default)]
struct Inner {
    running: usize,
    /// Running time accumulated before `since`.
    used: Duration,
    /// When the current running spell began, while `running > 0`.
    since: Option<Instant>,
}

/// Counts how many watched things run; [`RunningClock::expired`] waits for the limit.
/// Clones share the same clock.
#[derive(Clone, Default)]
pub struct RunningClock {
    inner: Arc<Mutex<Inner>>,
}

/// Keeps the clock advancing while held.
pub struct Ticking {
    clock: RunningClock,
}

impl Drop for Ticking {
    fn drop(&mut self) {
        let mut inner = self.clock.inner.lock().unwrap();
        inner.running -= 1;
        if inner.running == 0
            && let Some(since) = inner.since.take()
        {
            inner.used += since.elapsed();
        }
    }
}

impl RunningClock {
    pub fn start(&self) -> Ticking {
        let mut inner = self.inner.lock().unwrap();
        if inner.running == 0 {
            inner.since = Some(Instant::now());
        }
        inner.running += 1;
        drop(inner);
        Ticking { clock: self.clone() }
    }

    /// Running time so far.
    pub fn used(&self) -> Duration {
        let inner = self.inner.lock().unwrap();
        inner.used + inner.since.map_or(Duration::ZERO, |since| since.elapsed())
    }

    /// Resolves once the clock has advanced by `limit`.
    pub async fn expired(&self, limit: Duration) {
        loop {
            let used = self.used();
            if used >= limit {
                return;
            }
            tokio::time::sleep(limit - used).await;
        }
    }
}

/// The clocks one attempt advances (the run's, its stage's, its own): ticking from its
/// start, standing still while its executor reports it pending.
pub struct AttemptClocks {
    clocks: Vec<RunningClock>,
    ticking: Mutex<Vec<Ticking>>,
}

impl AttemptClocks {
    /// The clocks, ticking.
    pub fn start(clocks: Vec<RunningClock>) -> Self {
        let ticking = clocks.iter().map(RunningClock::start).collect();
        AttemptClocks { clocks, ticking: Mutex::new(ticking) }
    }

    /// Stops every clock (the attempt waits for resources).
    pub fn pause(&self) {
        self.ticking.lock().unwrap().clear();
    }

    /// Starts them again, if paused.
    pub fn resume(&self) {
        let mut ticking = self.ticking.lock().unwrap();
        if ticking.is_empty() {
            *ticking = self.clocks.iter().map(RunningClock::start).collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stands_still_while_nothing_runs() {
        let clock = RunningClock::default();
        let t0 = Instant::now();
        let watcher = tokio::spawn({
            let clock = clock.clone();
            async move {
                clock.expired(Duration::from_secs(10)).await;
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_secs(100)).await; // pending: not counted
        let a = clock.start();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let b = clock.start(); // two at once still count once
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(a);
        drop(b);
        assert_eq!(clock.used(), Duration::from_secs(6));
        tokio::time::sleep(Duration::from_secs(50)).await; // pending again
        let _c = clock.start();
        let fired = watcher.await.unwrap();
        assert_eq!(fired - t0, Duration::from_secs(100 + 6 + 50 + 4));
    }
}
