//! A byte-rate limiter on the runtime's clock, for compaction writes.
//!
//! It keeps the time at which the bytes charged so far will have been "paid" at the given rate:
//! a charge pushes that time forward by the charge's share of a second, and the caller sleeps
//! until it if it lies ahead. Concurrent compactions share one limiter, so together they stay
//! under the rate. Under the simulator the clock is virtual, so the limit shapes the schedule
//! without slowing the simulation.

use crate::metrics::Counters;
use crate::runtime::Runtime;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

#[derive(Debug)]
pub(crate) struct RateLimiter {
    bytes_per_sec: u64,
    /// When the bytes charged so far are paid for.
    paid_until: Mutex<Duration>,
}

impl RateLimiter {
    /// A limiter of `bytes_per_sec`; 0 for none.
    pub(crate) fn new(bytes_per_sec: u64) -> Self {
        RateLimiter { bytes_per_sec, paid_until: Mutex::new(Duration::ZERO) }
    }

    /// Charges `bytes` and waits until the rate allows them, counting the wait.
    pub(crate) async fn charge(&self, rt: &dyn Runtime, counters: &Counters, bytes: u64) {
        let wait = self.admit(rt.now(), bytes);
        if !wait.is_zero() {
            rt.sleep(wait).await;
            let us = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
            Counters::add(&counters.compaction_rate_limited_us, us);
        }
    }

    /// Charges `bytes` at time `now`; returns how long the caller must wait. The charge just
    /// made is allowed at once if nothing else is owed: a writer waits only for what was
    /// charged before it.
    fn admit(&self, now: Duration, bytes: u64) -> Duration {
        if self.bytes_per_sec == 0 || bytes == 0 {
            return Duration::ZERO;
        }
        let cost = Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        let mut paid = self.paid_until.lock().unwrap_or_else(PoisonError::into_inner);
        let start = (*paid).max(now);
        *paid = start + cost;
        start - now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_past_the_rate_wait_for_what_came_before() {
        let ms = Duration::from_millis;
        let limiter = RateLimiter::new(1000);
        assert_eq!(limiter.admit(ms(0), 500), ms(0), "nothing owed yet");
        assert_eq!(limiter.admit(ms(0), 500), ms(500), "waits for the first half second");
        assert_eq!(limiter.admit(ms(700), 100), ms(300), "the first second is not paid yet");
        assert_eq!(limiter.admit(ms(5000), 1000), ms(0), "idle time pays for nothing ahead");
        assert_eq!(RateLimiter::new(0).admit(ms(0), u64::MAX), ms(0), "0 means no limit");
    }
}
