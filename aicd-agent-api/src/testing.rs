//! Agents and helpers for tests of code that drives an [`Agent`].
//!
//! The wrappers ([`FlakyAgent`], [`RejectingAgent`], [`SlowAgent`],
//! [`OverspendingAgent`], [`CountingAgent`]) take any inner agent (often a
//! [`ScriptedAgent`](crate::ScriptedAgent)) and change one behaviour.
//! Every agent here counts the calls made to it per [`Step`]; get the
//! [`StepCounts`] handle with `counts()` *before* moving the agent into an
//! `Arc<dyn Agent>`, and read it after the code under test ran. Clones of
//! an agent share its counts.

mod counting;
mod failing;
mod flaky;
mod overspending;
mod rejecting;
mod slow;

pub use counting::CountingAgent;
pub use failing::FailingAgent;
pub use flaky::FlakyAgent;
pub use overspending::OverspendingAgent;
pub use rejecting::RejectingAgent;
pub use slow::SlowAgent;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};

use crate::{Agent, Budget, Issue, MemoryRepoView, RepoRef, TaskContext};

/// One of the three calls of an [`Agent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// [`Agent::plan`].
    Plan,
    /// [`Agent::code`].
    Code,
    /// [`Agent::review`].
    Review,
}

impl Step {
    /// All steps, in the order a run calls them first.
    pub const ALL: [Step; 3] = [Step::Plan, Step::Code, Step::Review];

    /// The step's lowercase name: `"plan"`, `"code"` or `"review"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Plan => "plan",
            Step::Code => "code",
            Step::Review => "review",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Shared, thread-safe call counters, one per [`Step`].
///
/// Clones share the same counters, so a test can keep a clone while the
/// agent that increments them is owned elsewhere.
#[derive(Clone, Debug, Default)]
pub struct StepCounts {
    counts: Arc<[AtomicU32; 3]>,
}

impl StepCounts {
    /// New counters, all zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one more call of `step` and returns the new count (so the
    /// first call returns 1). Saturates at `u32::MAX`.
    pub fn increment(&self, step: Step) -> u32 {
        let counter = &self.counts[step.index()];
        let previous = counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| Some(n.saturating_add(1)))
            .unwrap_or_else(|n| n);
        previous.saturating_add(1)
    }

    /// How many times `step` was called.
    pub fn get(&self, step: Step) -> u32 {
        self.counts[step.index()].load(Ordering::SeqCst)
    }

    /// How many times `plan` was called.
    pub fn plan(&self) -> u32 {
        self.get(Step::Plan)
    }

    /// How many times `code` was called.
    pub fn code(&self) -> u32 {
        self.get(Step::Code)
    }

    /// How many times `review` was called.
    pub fn review(&self) -> u32 {
        self.get(Step::Review)
    }

    /// Calls of all steps together.
    pub fn total(&self) -> u32 {
        Step::ALL.iter().fold(0u32, |acc, &s| acc.saturating_add(self.get(s)))
    }
}

/// A context for job `"test-job"` on an issue titled `"Test issue"` with
/// `body`, in repository `"example/repo"` (branch `"main"`), with an
/// unlimited budget and an empty [`MemoryRepoView`].
pub fn task_context(body: &str) -> TaskContext {
    TaskContext::new(
        "test-job",
        Issue::new("Test issue", body),
        RepoRef::new("example/repo", "main"),
        Budget::unlimited(),
        Arc::new(MemoryRepoView::new()),
    )
}

/// The display name of a wrapper: `"<kind>(<inner name>)"`.
fn wrapper_name(kind: &str, inner: &dyn Agent) -> String {
    format!("{kind}({})", inner.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_shared_and_saturate() {
        let a = StepCounts::new();
        let b = a.clone();
        assert_eq!(a.increment(Step::Code), 1);
        assert_eq!(a.increment(Step::Code), 2);
        b.increment(Step::Review);
        assert_eq!((b.plan(), b.code(), b.review(), b.total()), (0, 2, 1, 3));
        a.counts[0].store(u32::MAX, Ordering::SeqCst);
        assert_eq!(a.increment(Step::Plan), u32::MAX);
        assert_eq!(a.total(), u32::MAX);
        assert_eq!(Step::Review.to_string(), "review");
    }
}
