//! An agent that always fails permanently.

use super::{Step, StepCounts};
use crate::{Agent, AgentError, Changeset, Feedback, Output, Plan, Result, Review, TaskContext};

/// An agent whose every call fails with [`AgentError::Permanent`] carrying
/// the configured message. Its name is `"failing"`.
#[derive(Clone, Debug)]
pub struct FailingAgent {
    message: String,
    counts: StepCounts,
}

impl FailingAgent {
    /// An agent failing with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), counts: StepCounts::new() }
    }

    /// The shared call counters.
    pub fn counts(&self) -> StepCounts {
        self.counts.clone()
    }

    fn fail<T>(&self, step: Step) -> Result<T> {
        self.counts.increment(step);
        Err(AgentError::permanent(self.message.clone()))
    }
}

#[async_trait::async_trait]
impl Agent for FailingAgent {
    fn name(&self) -> &str {
        "failing"
    }

    async fn plan(&self, _ctx: &TaskContext) -> Result<Output<Plan>> {
        self.fail(Step::Plan)
    }

    async fn code(&self, _ctx: &TaskContext, _plan: &Plan, _feedback: Option<&Feedback>) -> Result<Output<Changeset>> {
        self.fail(Step::Code)
    }

    async fn review(&self, _ctx: &TaskContext, _plan: &Plan, _changeset: &Changeset) -> Result<Output<Review>> {
        self.fail(Step::Review)
    }
}
