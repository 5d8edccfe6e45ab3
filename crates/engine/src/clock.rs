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

/// The clocks one attempt advances: the run's and its stage's (`shared`) and its own.
/// All of them tick from its start and stand still while its executor reports it
/// pending ([`pause`](Self::pause)); while it waits for people (a canary between
/// steps, [`pause_shared`](Self::pause_shared)) only the run's and the stage's stand
/// still, and the task's own timeout goes on counting.
pub struct AttemptClocks {
    shared: Vec<RunningClock>,
    own: RunningClock,
    ticking: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    shared: Vec<Ticking>,
    own: Option<Ticking>,
}

impl AttemptClocks {
    /// The clocks, ticking.
    pub fn start(shared: Vec<RunningClock>, own: RunningClock) -> Self {
        let held = Held { shared: shared.iter().map(RunningClock::start).collect(), own: Some(own.start()) };
        AttemptClocks { shared, own, ticking: Mutex::new(held) }
    }

    /// Stops every clock (the attempt waits for resources).
    pub fn pause(&self) {
        *self.ticking.lock().unwrap() = Held::default();
    }

    /// Stops the run's and the stage's clocks (the attempt waits for people).
    pub fn pause_shared(&self) {
        self.ticking.lock().unwrap().shared.clear();
    }

    /// Starts every clock again that stands still.
    pub fn resume(&self) {
        let mut held = self.ticking.lock().unwrap();
        if held.shared.is_empty() {
            held.shared = self.shared.iter().map(RunningClock::start).collect();
        }
        if held.own.is_none() {
            held.own = Some(self.own.start());
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

    #[tokio::test(start_paused = true)]
    async fn waiting_for_people_stops_the_shared_clocks_and_pending_stops_all() {
        let (run, own) = (RunningClock::default(), RunningClock::default());
        let clocks = AttemptClocks::start(vec![run.clone()], own.clone());
        tokio::time::sleep(Duration::from_secs(3)).await;
        clocks.pause_shared(); // a canary waits for a decision
        tokio::time::sleep(Duration::from_secs(10)).await;
        clocks.resume();
        tokio::time::sleep(Duration::from_secs(2)).await;
        clocks.pause(); // the executor reports the attempt pending
        tokio::time::sleep(Duration::from_secs(20)).await;
        clocks.resume();
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(clocks);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(run.used(), Duration::from_secs(3 + 2 + 1));
        assert_eq!(own.used(), Duration::from_secs(3 + 10 + 2 + 1));
    }
}
