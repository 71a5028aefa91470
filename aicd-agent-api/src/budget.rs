//! The spending limits of one job.

use serde::{Deserialize, Serialize};

use crate::Usage;

/// How much a job may spend, and how much it has spent so far.
///
/// Limits are hard: a limit of `0` allows nothing, so a budget with
/// `max_cost_micros == 0` is exhausted from the start. Use
/// [`Budget::unlimited`] (or `u64::MAX` for one limit) for no limit.
/// All arithmetic saturates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Budget {
    /// Most tokens (input plus output) the job may use.
    pub max_tokens: u64,
    /// Most the job may cost, in micro-units of currency.
    pub max_cost_micros: u64,
    /// Tokens used so far.
    pub spent_tokens: u64,
    /// Cost so far, in micro-units of currency.
    pub spent_cost_micros: u64,
}

impl Budget {
    /// A fresh budget with the given limits and nothing spent.
    pub const fn new(max_tokens: u64, max_cost_micros: u64) -> Self {
        Self { max_tokens, max_cost_micros, spent_tokens: 0, spent_cost_micros: 0 }
    }

    /// A budget with no effective limit (both limits are `u64::MAX`).
    pub const fn unlimited() -> Self {
        Self::new(u64::MAX, u64::MAX)
    }

    /// Tokens still available (zero once the limit is reached or passed).
    pub const fn remaining_tokens(&self) -> u64 {
        self.max_tokens.saturating_sub(self.spent_tokens)
    }

    /// Cost still available in micro-units (zero once reached or passed).
    pub const fn remaining_cost_micros(&self) -> u64 {
        self.max_cost_micros.saturating_sub(self.spent_cost_micros)
    }

    /// True when either limit has been reached: no further call may be made.
    pub const fn is_exhausted(&self) -> bool {
        self.remaining_tokens() == 0 || self.remaining_cost_micros() == 0
    }

    /// True when spending `usage` on top of what is spent would pass either
    /// limit. Spending exactly up to a limit does not exceed it.
    pub fn would_exceed(&self, usage: &Usage) -> bool {
        usage.total_tokens() > self.remaining_tokens() || usage.cost_micros > self.remaining_cost_micros()
    }

    /// Records `usage` as spent. It is always recorded, even past the
    /// limits, because it was already consumed; check [`is_exhausted`]
    /// afterwards.
    ///
    /// [`is_exhausted`]: Budget::is_exhausted
    pub fn charge(&mut self, usage: &Usage) {
        self.spent_tokens = self.spent_tokens.saturating_add(usage.total_tokens());
        self.spent_cost_micros = self.spent_cost_micros.saturating_add(usage.cost_micros);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_and_exhaustion() {
        let mut b = Budget::new(100, 1_000);
        assert_eq!(b.remaining_tokens(), 100);
        assert_eq!(b.remaining_cost_micros(), 1_000);
        assert!(!b.is_exhausted());
        b.charge(&Usage::new("m", 40, 20, 500));
        assert_eq!(b.spent_tokens, 60);
        assert_eq!(b.remaining_tokens(), 40);
        assert_eq!(b.remaining_cost_micros(), 500);
        assert!(!b.is_exhausted());
        b.charge(&Usage::new("m", 0, 0, 500));
        assert!(b.is_exhausted());
        assert_eq!(b.remaining_cost_micros(), 0);
    }

    #[test]
    fn overspend_saturates() {
        let mut b = Budget::new(10, 10);
        b.charge(&Usage::new("m", u64::MAX, u64::MAX, u64::MAX));
        assert_eq!(b.spent_tokens, u64::MAX);
        assert_eq!(b.remaining_tokens(), 0);
        assert!(b.is_exhausted());
    }

    #[test]
    fn would_exceed_is_strict() {
        let b = Budget { max_tokens: 100, max_cost_micros: 50, spent_tokens: 90, spent_cost_micros: 40 };
        assert!(!b.would_exceed(&Usage::new("m", 5, 5, 10)));
        assert!(b.would_exceed(&Usage::new("m", 5, 6, 0)));
        assert!(b.would_exceed(&Usage::new("m", 0, 0, 11)));
        assert!(!b.would_exceed(&Usage::zero("m")));
    }

    #[test]
    fn zero_limit_and_unlimited() {
        assert!(Budget::new(100, 0).is_exhausted());
        let u = Budget::unlimited();
        assert!(!u.is_exhausted());
        assert!(!u.would_exceed(&Usage::new("m", u64::MAX / 2, u64::MAX / 2, u64::MAX)));
    }
}
