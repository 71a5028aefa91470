//! An agent wrapper that reports huge usage.

use super::{Step, StepCounts, wrapper_name};
use crate::{Agent, Changeset, Feedback, Output, Plan, Result, Review, TaskContext, Usage};

/// Wraps an agent, delegating every call and adding a configured number of
/// output tokens and cost to the usage each successful call reports
/// (saturating), so budget enforcement can be tested.
#[derive(Clone, Debug)]
pub struct OverspendingAgent<A> {
    inner: A,
    name: String,
    extra_tokens: u64,
    extra_cost_micros: u64,
    counts: StepCounts,
}

impl<A: Agent> OverspendingAgent<A> {
    /// Wraps `inner`, adding `extra_tokens` output tokens and
    /// `extra_cost_micros` to each call's usage.
    pub fn new(inner: A, extra_tokens: u64, extra_cost_micros: u64) -> Self {
        Self {
            name: wrapper_name("overspending", &inner),
            inner,
            extra_tokens,
            extra_cost_micros,
            counts: StepCounts::new(),
        }
    }

    /// The shared call counters.
    pub fn counts(&self) -> StepCounts {
        self.counts.clone()
    }

    /// The wrapped agent.
    pub fn inner(&self) -> &A {
        &self.inner
    }

    fn inflate<T>(&self, result: Result<Output<T>>) -> Result<Output<T>> {
        result.map(|mut out| {
            let u: &mut Usage = &mut out.usage;
            u.output_tokens = u.output_tokens.saturating_add(self.extra_tokens);
            u.cost_micros = u.cost_micros.saturating_add(self.extra_cost_micros);
            out
        })
    }
}

#[async_trait::async_trait]
impl<A: Agent> Agent for OverspendingAgent<A> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn plan(&self, ctx: &TaskContext) -> Result<Output<Plan>> {
        self.counts.increment(Step::Plan);
        self.inflate(self.inner.plan(ctx).await)
    }

    async fn code(&self, ctx: &TaskContext, plan: &Plan, feedback: Option<&Feedback>) -> Result<Output<Changeset>> {
        self.counts.increment(Step::Code);
        self.inflate(self.inner.code(ctx, plan, feedback).await)
    }

    async fn review(&self, ctx: &TaskContext, plan: &Plan, changeset: &Changeset) -> Result<Output<Review>> {
        self.counts.increment(Step::Review);
        self.inflate(self.inner.review(ctx, plan, changeset).await)
    }
}
