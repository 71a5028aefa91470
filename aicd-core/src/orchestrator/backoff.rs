//! Exponential backoff with full jitter.

use std::time::Duration;

/// Delay before retry `n` (1-based): a random duration up to `min(max, base * 2^(n-1))` ("full
/// jitter"), so retries of many jobs after one outage spread out instead of arriving together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay's upper bound.
    pub base: Duration,
    /// The largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_secs(2), max: Duration::from_secs(120) }
    }
}

impl Backoff {
    /// The upper bound of the delay before retry `attempt` (1-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// A random delay in `[ceiling / 2, ceiling]` for retry `attempt`, at least as long as the
    /// dependency asked for (`retry_after`), and never above `max` unless it asked for more.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.ceiling(attempt);
        let mut bytes = [0u8; 4];
        let fraction = match getrandom::fill(&mut bytes) {
            Ok(()) => f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX),
            Err(_) => 1.0,
        };
        // Half fixed, half jitter: never hammer at once, and still spread out.
        let jittered = ceiling.mul_f64(0.5 + 0.5 * fraction);
        jittered.max(retry_after.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_maximum() {
        let b = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(1) };
        let ceilings: Vec<_> = (1..=6).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn delays_stay_within_half_and_the_whole_ceiling() {
        let b = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(10) };
        for attempt in 1..=8 {
            for _ in 0..50 {
                let d = b.delay(attempt, None);
                assert!(d >= b.ceiling(attempt) / 2 && d <= b.ceiling(attempt), "{attempt}: {d:?}");
            }
        }
    }

    #[test]
    fn a_requested_retry_after_is_honoured() {
        let b = Backoff { base: Duration::from_millis(10), max: Duration::from_millis(100) };
        assert!(b.delay(1, Some(Duration::from_secs(30))) >= Duration::from_secs(30));
    }

    #[test]
    fn delays_are_jittered() {
        let b = Backoff { base: Duration::from_secs(10), max: Duration::from_secs(10) };
        let delays: std::collections::HashSet<_> = (0..20).map(|_| b.delay(1, None)).collect();
        assert!(delays.len() > 1);
    }
}
