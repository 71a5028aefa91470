//! An agent wrapper that is slow.

use std::time::Duration;

use super::{Step, StepCounts, wrapper_name};
use crate::{Agent, Changeset, Feedback, Output, Plan, Result, Review, TaskContext};

/// Wraps an agent, sleeping a fixed delay (with `tokio::time::sleep`, so
/// paused test clocks apply) before delegating each call. Useful for
/// timeouts, cancellation and lease-expiry tests.
#[derive(Clone, Debug)]
pub struct SlowAgent<A> {
    inner: A,
    name: String,
    delay: Duration,
    counts: StepCounts,
}

impl<A: Agent> SlowAgent<A> {
    /// Wraps `inner`, sleeping `delay` before each call.
    pub fn new(inner: A, delay: Duration) -> Self {
        Self { name: wrapper_name("slow", &inner), inner, delay, counts: StepCounts::new() }
    }

    /// The shared call counters (counted when a call starts, before the
    /// sleep).
    pub fn counts(&self) -> StepCounts {
        self.counts.clone()
    }

    /// The wrapped agent.
    pub fn inner(&self) -> &A {
        &self.inner
    }

    async fn pause(&self, step: Step) {
        self.counts.increment(step);
        tokio::time::sleep(self.delay).await;
    }
}

#[async_trait::async_trait]
impl<A: Agent> Agent for SlowAgent<A> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn plan(&self, ctx: &TaskContext) -> Result<Output<Plan>> {
        self.pause(Step::Plan).await;
        self.inner.plan(ctx).await
    }

    async fn code(&self, ctx: &TaskContext, plan: &Plan, feedback: Option<&Feedback>) -> Result<Output<Changeset>> {
        self.pause(Step::Code).await;
        self.inner.code(ctx, plan, feedback).await
    }

    async fn review(&self, ctx: &TaskContext, plan: &Plan, changeset: &Changeset) -> Result<Output<Review>> {
        self.pause(Step::Review).await;
        self.inner.review(ctx, plan, changeset).await
    }
}
