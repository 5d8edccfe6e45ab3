//! Timeouts count only `running` time (DESIGN.md §3): a [`RunningClock`] advances
//! while at least one of the things it watches is running and stands still while
//! they all wait for a slot.

use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Counts how many watched things run; [`RunningClock::expired`] waits for the limit.
#[derive(Clone)]
pub struct RunningClock {
    running: watch::Sender<usize>,
}

/// Keeps the clock advancing while held.
pub struct Ticking {
    clock: RunningClock,
}

impl Drop for Ticking {
    fn drop(&mut self) {
        self.clock.running.send_modify(|n| *n -= 1);
    }
}

impl Default for RunningClock {
    fn default() -> Self {
        RunningClock { running: watch::Sender::new(0) }
    }
}

impl RunningClock {
    pub fn start(&self) -> Ticking {
        self.running.send_modify(|n| *n += 1);
        Ticking { clock: self.clone() }
    }

    /// Resolves once the clock has advanced by `limit`.
    pub async fn expired(&self, limit: Duration) {
        let mut rx = self.running.subscribe();
        let mut used = Duration::ZERO;
        loop {
            if *rx.borrow_and_update() > 0 {
                let since = Instant::now();
                tokio::select! {
                    _ = tokio::time::sleep(limit.saturating_sub(used)) => return,
                    _ = rx.changed() => used += since.elapsed(),
                }
                if used >= limit {
                    return;
                }
            } else if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
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
        tokio::time::sleep(Duration::from_secs(50)).await; // pending again
        let _c = clock.start();
        let fired = watcher.await.unwrap();
        assert_eq!(fired - t0, Duration::from_secs(100 + 6 + 50 + 4));
    }
}
