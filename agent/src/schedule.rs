//! When the daemon polls next: the poll interval plus jitter after a cycle that
//! reached the bucket, exponential backoff with jitter after one that did not.
//!
//! Backoff after `n` failures in a row is `min(backoff-max, poll-interval × 2^(n-1))`
//! with "equal jitter": half of it fixed, the other half uniformly random, so a fleet
//! whose bucket comes back does not return in one burst yet no host retries sooner
//! than half the nominal wait.

use std::time::Duration;

/// Random numbers for jitter (xorshift64*, seeded from the OS).
#[derive(Debug)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator seeded from the operating system's random source.
    pub fn new() -> Self {
        let mut seed = [0u8; 8];
        if getrandom::fill(&mut seed).is_err() {
            // No random source: the process id still spreads hosts apart.
            seed = (u64::from(std::process::id()) | 1).to_le_bytes();
        }
        Self(u64::from_le_bytes(seed) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A duration uniformly in `[0, max]`.
    pub fn upto(&mut self, max: Duration) -> Duration {
        let nanos = max.as_nanos().min(u64::MAX as u128) as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.next() % (nanos + 1))
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Self::new()
    }
}

/// The wait after a cycle that reached the bucket.
pub fn next_poll(poll: Duration, jitter: Duration, rng: &mut Jitter) -> Duration {
    poll + rng.upto(jitter)
}

/// The wait after the `failures`-th failure in a row (1 for the first).
pub fn backoff(failures: u32, poll: Duration, max: Duration, rng: &mut Jitter) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let nominal = poll.saturating_mul(1u32 << exp).min(max.max(poll));
    let half = nominal / 2;
    half + rng.upto(nominal - half)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let mut r = Jitter::new();
        let poll = Duration::from_secs(10);
        let max = Duration::from_secs(100);
        for (n, nominal) in [(1, 10), (2, 20), (3, 40), (4, 80), (5, 100), (40, 100)] {
            for _ in 0..100 {
                let d = backoff(n, poll, max, &mut r);
                let nominal = Duration::from_secs(nominal);
                assert!(d >= nominal / 2 && d <= nominal, "{n}: {d:?}");
            }
        }
    }

    #[test]
    fn jitter_spreads_and_stays_in_range() {
        let mut r = Jitter::new();
        let vals: Vec<Duration> = (0..200)
            .map(|_| next_poll(Duration::from_secs(60), Duration::from_secs(10), &mut r))
            .collect();
        assert!(vals.iter().all(|d| *d >= Duration::from_secs(60)));
        assert!(vals.iter().all(|d| *d <= Duration::from_secs(70)));
        let distinct: std::collections::HashSet<_> = vals.iter().collect();
        assert!(distinct.len() > 150, "{}", distinct.len());
        assert_eq!(r.upto(Duration::ZERO), Duration::ZERO);
    }
}
