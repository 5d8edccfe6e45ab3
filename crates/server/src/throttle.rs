//! Per-address token buckets for what unauthenticated clients can make the server do:
//! login attempts, refused webhook deliveries, audit lines for refused requests.
//!
//! Each address has a bucket of `burst` tokens that refills one token every `refill`;
//! an action takes one token, and an empty bucket answers how long until the next one.
//! The map of addresses is bounded ([`Throttle::MAX_ADDRESSES`]): a full bucket is the
//! same as no bucket and goes first; past that, the least recently used one goes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Throttle {
    burst: f64,
    refill: Duration,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Throttle {
    /// Addresses remembered at most.
    pub const MAX_ADDRESSES: usize = 10_000;

    pub fn new(burst: u32, refill: Duration) -> Self {
        Throttle { burst: f64::from(burst.max(1)), refill, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `address`; `Err(seconds to wait)` when its bucket is empty.
    pub fn take(&self, address: &str) -> Result<(), u64> {
        self.take_at(address, Instant::now())
    }

    /// Whether `address` has a token left, without taking it.
    pub fn peek(&self, address: &str) -> Result<(), u64> {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        match buckets.get(address) {
            Some(bucket) => self.wait(self.refilled(*bucket, Instant::now())),
            None => Ok(()),
        }
    }

    fn take_at(&self, address: &str, now: Instant) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(address) && buckets.len() >= Self::MAX_ADDRESSES {
            self.evict(&mut buckets, now);
        }
        let bucket = buckets.entry(address.to_owned()).or_insert(Bucket { tokens: self.burst, at: now });
        *bucket = self.refilled(*bucket, now);
        self.wait(*bucket)?;
        bucket.tokens -= 1.0;
        Ok(())
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> Bucket {
        let gained = now.saturating_duration_since(bucket.at).as_secs_f64() / self.refill.as_secs_f64().max(1e-9);
        Bucket { tokens: (bucket.tokens + gained).min(self.burst), at: now }
    }

    fn wait(&self, bucket: Bucket) -> Result<(), u64> {
        if bucket.tokens >= 1.0 {
            return Ok(());
        }
        let missing = self.refill.as_secs_f64() * (1.0 - bucket.tokens);
        Err((missing.ceil() as u64).max(1))
    }

    fn evict(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        buckets.retain(|_, b| self.refilled(*b, now).tokens < self.burst);
        if buckets.len() >= Self::MAX_ADDRESSES
            && let Some(oldest) = buckets.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| k.clone())
        {
            buckets.remove(&oldest);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_refill_per_address() {
        let t = Throttle::new(3, Duration::from_secs(10));
        let start = Instant::now();
        for _ in 0..3 {
            assert!(t.take_at("a", start).is_ok());
        }
        assert_eq!(t.take_at("a", start), Err(10));
        assert!(t.take_at("b", start).is_ok(), "another address has its own bucket");
        assert_eq!(t.take_at("a", start + Duration::from_secs(4)), Err(6));
        assert!(t.take_at("a", start + Duration::from_secs(10)).is_ok());
        assert!(t.take_at("a", start + Duration::from_secs(10)).is_err());
    }

    #[test]
    fn the_map_of_addresses_is_bounded() {
        let t = Throttle::new(2, Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..Throttle::MAX_ADDRESSES + 500 {
            assert!(t.take_at(&format!("10.0.{}.{}", i / 256, i % 256), now).is_ok());
        }
        assert!(t.len() <= Throttle::MAX_ADDRESSES, "{}", t.len());
    }
}
