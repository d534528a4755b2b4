//! Retry policy: which failures are transient, and how long to wait.

use std::time::{Duration, Instant};

/// Capped exponential backoff with jitter, bounded in attempts and total time.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
    pub total: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            attempts: 6,
            base: Duration::from_millis(200),
            cap: Duration::from_secs(10),
            total: Duration::from_secs(120),
        }
    }
}

/// Whether an HTTP status is worth retrying: 408, 429 and 5xx.
pub fn retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}

impl Policy {
    /// The same limits, without retries: for a caller that retries itself.
    pub fn single_attempt(self) -> Self {
        Self {
            attempts: 1,
            ..self
        }
    }

    /// The wait before attempt `n` (1-based retry count), honouring a
    /// server's `Retry-After` seconds when given; `None` when out of budget.
    pub fn wait(
        &self,
        n: u32,
        started: Instant,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        if n >= self.attempts {
            return None;
        }
        let exp = self.base.saturating_mul(1 << n.min(16)).min(self.cap);
        // Jitter: between half and all of the exponential step.
        let nanos = u64::try_from(exp.as_nanos()).unwrap_or(u64::MAX);
        let jitter = Duration::from_nanos(nanos / 2 + pseudo_random() % (nanos / 2 + 1));
        let wait = retry_after.map_or(jitter, |r| r.min(self.cap));
        (started.elapsed() + wait <= self.total).then_some(wait)
    }
}

fn pseudo_random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// `Retry-After` in seconds (the HTTP-date form is treated as absent).
pub fn parse_retry_after(v: Option<&str>) -> Option<Duration> {
    v.and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_bounded() {
        let p = Policy {
            attempts: 4,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(300),
            total: Duration::from_secs(5),
        };
        let now = Instant::now();
        for n in 1..4 {
            let w = p.wait(n, now, None).unwrap();
            assert!(w <= Duration::from_millis(300), "{w:?}");
        }
        assert_eq!(p.wait(4, now, None), None);
        assert_eq!(
            p.wait(1, now, Some(Duration::from_secs(1))),
            Some(Duration::from_millis(300))
        );
        assert!(
            retryable_status(503)
                && retryable_status(429)
                && !retryable_status(404)
                && !retryable_status(401)
        );
    }
}
