//! An agent wrapper whose reviews reject before they delegate.

use super::{Step, StepCounts, wrapper_name};
use crate::{Agent, Changeset, Feedback, Output, Plan, Result, Review, TaskContext, Usage};

/// Wraps an agent, answering the first N reviews with
/// [`Verdict::RequestChanges`](crate::Verdict::RequestChanges) and one
/// comment, then delegating reviews to the inner agent. `plan` and `code`
/// always delegate.
///
/// The rejecting reviews report zero usage with model `"rejecting"`.
#[derive(Clone, Debug)]
pub struct RejectingAgent<A> {
    inner: A,
    name: String,
    rejections: u32,
    comment: String,
    counts: StepCounts,
}

impl<A: Agent> RejectingAgent<A> {
    /// The default comment of a rejecting review.
    pub const DEFAULT_COMMENT: &'static str = "Please revise the change.";

    /// Wraps `inner`, rejecting its first `rejections` reviews.
    pub fn new(inner: A, rejections: u32) -> Self {
        Self {
            name: wrapper_name("rejecting", &inner),
            inner,
            rejections,
            comment: Self::DEFAULT_COMMENT.to_owned(),
            counts: StepCounts::new(),
        }
    }

    /// Sets the comment of the rejecting reviews.
    #[must_use]
    pub fn with_comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = comment.into();
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
}

#[async_trait::async_trait]
impl<A: Agent> Agent for RejectingAgent<A> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn plan(&self, ctx: &TaskContext) -> Result<Output<Plan>> {
        self.counts.increment(Step::Plan);
        self.inner.plan(ctx).await
    }

    async fn code(&self, ctx: &TaskContext, plan: &Plan, feedback: Option<&Feedback>) -> Result<Output<Changeset>> {
        self.counts.increment(Step::Code);
        self.inner.code(ctx, plan, feedback).await
    }

    async fn review(&self, ctx: &TaskContext, plan: &Plan, changeset: &Changeset) -> Result<Output<Review>> {
        let call = self.counts.increment(Step::Review);
        if call > self.rejections {
            return self.inner.review(ctx, plan, changeset).await;
        }
        let review = Review::request_changes(
            format!("Rejected review {call} of {}.", self.rejections),
            vec![self.comment.clone()],
        );
        Ok(Output::new(review, Usage::zero("rejecting")))
    }
}
