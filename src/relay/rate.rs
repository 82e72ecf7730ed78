//! Token buckets: how often a device may do a thing, on whatever clock the
//! caller keeps (the core's virtual time, or a connection task's).

use serde::Deserialize;

/// A sustained rate with room for a burst.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub per_sec: f64,
    pub burst: u32,
}

impl Rate {
    pub const fn new(per_sec: f64, burst: u32) -> Rate {
        Rate { per_sec, burst }
    }

    /// A full bucket at `now`.
    pub fn bucket(self, now_ms: u64) -> Bucket {
        Bucket {
            rate: self,
            tokens: f64::from(self.burst),
            at_ms: now_ms,
        }
    }

    pub fn check(&self, name: &str) -> Result<(), String> {
        if !(self.per_sec > 0.0 && self.per_sec.is_finite()) || self.burst == 0 {
            return Err(format!(
                "relay.rate_limits.{name}: per_sec must be above 0 and burst at least 1"
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Bucket {
    rate: Rate,
    tokens: f64,
    at_ms: u64,
}

impl Bucket {
    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * self.rate.per_sec).min(f64::from(self.rate.burst));
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now_ms: u64) -> bool {
        self.take_n(now_ms, 1)
    }

    /// Takes `n` tokens if there are that many (none otherwise).
    pub fn take_n(&mut self, now_ms: u64, n: u32) -> bool {
        self.refill(now_ms);
        if self.tokens >= f64::from(n) {
            self.tokens -= f64::from(n);
            true
        } else {
            false
        }
    }

    /// Milliseconds until a token is there (0: now).
    pub fn wait_ms(&mut self, now_ms: u64) -> u64 {
        self.wait_n_ms(now_ms, 1)
    }

    /// Milliseconds until `n` tokens are there (0: now).
    pub fn wait_n_ms(&mut self, now_ms: u64, n: u32) -> u64 {
        self.refill(now_ms);
        let missing = f64::from(n) - self.tokens;
        if missing <= 0.0 {
            0
        } else {
            (missing / self.rate.per_sec * 1000.0).ceil() as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let mut b = Rate::new(2.0, 3).bucket(0);
        assert!(b.take(0) && b.take(0) && b.take(0));
        assert!(!b.take(0));
        assert_eq!(b.wait_ms(0), 500);
        assert!(!b.take(499));
        assert!(b.take(500));
        // Idle time refills up to the burst, never beyond.
        assert!((0..3).all(|_| b.take(60_000)));
        assert!(!b.take(60_000));
    }
}
