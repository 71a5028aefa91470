//! Token and cost accounting for a single agent call, and sums of calls.

use std::iter::Sum;
use std::ops::{Add, AddAssign};

use serde::{Deserialize, Serialize};

/// What one agent call (or a sum of calls) consumed.
///
/// Every [`Output`](crate::Output) carries a `Usage` so the orchestrator can
/// charge it against the job's [`Budget`](crate::Budget) and report it in
/// logs and metrics. All arithmetic on `Usage` saturates instead of
/// overflowing, so a misbehaving agent that reports huge numbers cannot wrap
/// the totals around.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens sent to the model (prompt, context, files).
    pub input_tokens: u64,
    /// Tokens produced by the model.
    pub output_tokens: u64,
    /// Cost of the call in micro-units of the billing currency
    /// (1_000_000 = one unit, e.g. one US dollar).
    pub cost_micros: u64,
    /// The model (or models, joined with `+`) that did the work,
    /// e.g. `"scripted"`. Empty only for a default value.
    pub model: String,
}

impl Usage {
    /// A usage of nothing, attributed to `model`.
    pub fn zero(model: impl Into<String>) -> Self {
        Self { input_tokens: 0, output_tokens: 0, cost_micros: 0, model: model.into() }
    }

    /// A usage with the given counts, attributed to `model`.
    pub fn new(model: impl Into<String>, input_tokens: u64, output_tokens: u64, cost_micros: u64) -> Self {
        Self { input_tokens, output_tokens, cost_micros, model: model.into() }
    }

    /// Input plus output tokens (saturating at `u64::MAX`).
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    /// Adds `other` to `self`: counts are summed (saturating) and the model
    /// names are merged.
    ///
    /// Model merging keeps each distinct name once, in first-seen order,
    /// joined with `+` (`"a"` + `"b"` = `"a+b"`; `"a+b"` + `"a"` = `"a+b"`).
    /// An empty model name contributes nothing.
    pub fn accumulate(&mut self, other: &Usage) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cost_micros = self.cost_micros.saturating_add(other.cost_micros);
        for name in other.model.split('+').filter(|m| !m.is_empty()) {
            if self.model.split('+').any(|m| m == name) {
                continue;
            }
            if !self.model.is_empty() {
                self.model.push('+');
            }
            self.model.push_str(name);
        }
    }
}

impl AddAssign<&Usage> for Usage {
    fn add_assign(&mut self, rhs: &Usage) {
        self.accumulate(rhs);
    }
}

impl AddAssign for Usage {
    fn add_assign(&mut self, rhs: Usage) {
        self.accumulate(&rhs);
    }
}

impl Add for Usage {
    type Output = Usage;

    fn add(mut self, rhs: Usage) -> Usage {
        self.accumulate(&rhs);
        self
    }
}

impl Sum for Usage {
    fn sum<I: Iterator<Item = Usage>>(iter: I) -> Usage {
        iter.fold(Usage::default(), Add::add)
    }
}

impl<'a> Sum<&'a Usage> for Usage {
    fn sum<I: Iterator<Item = &'a Usage>>(iter: I) -> Usage {
        iter.fold(Usage::default(), |mut acc, u| {
            acc.accumulate(u);
            acc
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_total() {
        let u = Usage::zero("m");
        assert_eq!(u.total_tokens(), 0);
        assert_eq!(u.model, "m");
        assert_eq!(Usage::new("m", 3, 4, 5).total_tokens(), 7);
    }

    #[test]
    fn accumulate_sums_and_merges_models() {
        let mut u = Usage::new("a", 1, 2, 3);
        u += Usage::new("b", 10, 20, 30);
        u += &Usage::new("a", 1, 1, 1);
        assert_eq!(u, Usage::new("a+b", 12, 23, 34));
        let mut empty = Usage::default();
        empty += &Usage::new("a+b", 0, 0, 0);
        assert_eq!(empty.model, "a+b");
        empty += &Usage::default();
        assert_eq!(empty.model, "a+b");
    }

    #[test]
    fn saturates() {
        let u = Usage::new("m", u64::MAX, 1, u64::MAX) + Usage::new("m", 1, 0, 1);
        assert_eq!(u.input_tokens, u64::MAX);
        assert_eq!(u.cost_micros, u64::MAX);
        assert_eq!(u.total_tokens(), u64::MAX);
    }

    #[test]
    fn sums() {
        let parts = [Usage::new("x", 1, 1, 1), Usage::new("x", 2, 2, 2)];
        let by_ref: Usage = parts.iter().sum();
        let by_val: Usage = parts.into_iter().sum();
        assert_eq!(by_ref, Usage::new("x", 3, 3, 3));
        assert_eq!(by_ref, by_val);
    }
}
