//! An agent wrapper that fails transiently before it succeeds.

use std::time::Duration;

use super::{Step, StepCounts, wrapper_name};
use crate::{Agent, AgentError, Changeset, Feedback, Output, Plan, Result, Review, TaskContext};

/// Wraps an agent, failing the first N calls of each [`Step`] with
/// [`AgentError::Transient`] and delegating the calls after them.
///
/// The failures are counted separately per step, across the wrapper's whole
/// life (and its clones): with N = 2, plan calls 1 and 2 fail and plan call
/// 3 succeeds, independently of code and review. Counts include the
/// failed calls.
#[derive(Clone, Debug)]
pub struct FlakyAgent<A> {
    inner: A,
    name: String,
    failures: [u32; 3],
    retry_after: Option<Duration>,
    counts: StepCounts,
}

impl<A: Agent> FlakyAgent<A> {
    /// Wraps `inner`, failing the first `failures_per_step` calls of every
    /// step.
    pub fn new(inner: A, failures_per_step: u32) -> Self {
        Self {
            name: wrapper_name("flaky", &inner),
            inner,
            failures: [failures_per_step; 3],
            retry_after: None,
            counts: StepCounts::new(),
        }
    }

    /// Sets how many leading calls of `step` fail.
    #[must_use]
    pub fn with_failures(mut self, step: Step, failures: u32) -> Self {
        self.failures[step.index()] = failures;
        self
    }

    /// Sets the `retry_after` hint of the transient errors.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// The shared call counters.
    pub fn counts(&self) -> StepCounts {
        self.counts.clone()
    }

    /// The wrapped agent.
    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// Counts a call of `step` and fails it if it is among the first N.
    fn check(&self, step: Step) -> Result<()> {
        let call = self.counts.increment(step);
        let failures = self.failures[step.index()];
        if call > failures {
            return Ok(());
        }
        Err(AgentError::Transient {
            message: format!("{}: simulated transient failure {call} of {failures} in {step}", self.name),
            retry_after: self.retry_after,
        })
    }
}

#[async_trait::async_trait]
impl<A: Agent> Agent for FlakyAgent<A> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn plan(&self, ctx: &TaskContext) -> Result<Output<Plan>> {
        self.check(Step::Plan)?;
        self.inner.plan(ctx).await
    }

    async fn code(&self, ctx: &TaskContext, plan: &Plan, feedback: Option<&Feedback>) -> Result<Output<Changeset>> {
        self.check(Step::Code)?;
        self.inner.code(ctx, plan, feedback).await
    }

    async fn review(&self, ctx: &TaskContext, plan: &Plan, changeset: &Changeset) -> Result<Output<Review>> {
        self.check(Step::Review)?;
        self.inner.review(ctx, plan, changeset).await
    }
}
