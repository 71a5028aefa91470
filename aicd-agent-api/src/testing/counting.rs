//! An agent wrapper that records every call.

use std::sync::{Arc, Mutex, PoisonError};

use super::{Step, StepCounts, wrapper_name};
use crate::{Agent, Changeset, Feedback, Output, Plan, Result, Review, TaskContext};

/// Wraps an agent, delegating every call unchanged while counting calls per
/// [`Step`] and recording the feedback each `code` call received.
#[derive(Clone, Debug)]
pub struct CountingAgent<A> {
    inner: A,
    name: String,
    counts: StepCounts,
    feedback: Arc<Mutex<Vec<Option<Feedback>>>>,
}

impl<A: Agent> CountingAgent<A> {
    /// Wraps `inner`.
    pub fn new(inner: A) -> Self {
        Self { name: wrapper_name("counting", &inner), inner, counts: StepCounts::new(), feedback: Arc::default() }
    }

    /// The shared call counters.
    pub fn counts(&self) -> StepCounts {
        self.counts.clone()
    }

    /// The feedback passed to each `code` call so far, in call order.
    pub fn feedback_log(&self) -> Vec<Option<Feedback>> {
        self.feedback.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The wrapped agent.
    pub fn inner(&self) -> &A {
        &self.inner
    }
}

#[async_trait::async_trait]
impl<A: Agent> Agent for CountingAgent<A> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn plan(&self, ctx: &TaskContext) -> Result<Output<Plan>> {
        self.counts.increment(Step::Plan);
        self.inner.plan(ctx).await
    }

    async fn code(&self, ctx: &TaskContext, plan: &Plan, feedback: Option<&Feedback>) -> Result<Output<Changeset>> {
        self.counts.increment(Step::Code);
        self.feedback.lock().unwrap_or_else(PoisonError::into_inner).push(feedback.cloned());
        self.inner.code(ctx, plan, feedback).await
    }

    async fn review(&self, ctx: &TaskContext, plan: &Plan, changeset: &Changeset) -> Result<Output<Review>> {
        self.counts.increment(Step::Review);
        self.inner.review(ctx, plan, changeset).await
    }
}
