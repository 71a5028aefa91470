//! The agent contract: plan, code, review.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Changeset, Feedback, Plan, Result, Review, TaskContext, Usage};

/// A step's result together with what it cost.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Output<T> {
    /// The step's result.
    pub value: T,
    /// What producing it consumed, in all (including what was reported during the step through
    /// [`ProgressSink::spend`](crate::ProgressSink::spend)).
    pub usage: Usage,
    /// How the result was produced, recorded with the step's result in the job's timeline: e.g.
    /// `"prompt"` → `"coder@1"`, `"model"` → `"gpt-4.1"`, `"turns"` → `"7"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

impl<T> Output<T> {
    /// An output of `value` that consumed `usage`.
    pub fn new(value: T, usage: Usage) -> Self {
        Self { value, usage, meta: BTreeMap::new() }
    }

    /// The same output with `key` set to `value` in [`Output::meta`].
    #[must_use]
    pub fn with_meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.meta.insert(key.into(), value.into());
        self
    }

    /// The same usage and meta with the value transformed by `f`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Output<U> {
        Output { value: f(self.value), usage: self.usage, meta: self.meta }
    }

    /// The value and the usage.
    pub fn into_parts(self) -> (T, Usage) {
        (self.value, self.usage)
    }
}

/// An AI agent that can plan, code and review a change for an issue.
///
/// The orchestrator calls [`plan`](Agent::plan) once, then alternates
/// [`code`](Agent::code) and [`review`](Agent::review) (passing the critic's
/// or the policy engine's [`Feedback`] to later `code` rounds) until the
/// review approves or a limit is reached. Every successful call reports its
/// [`Usage`]; failures are classified by [`AgentError`](crate::AgentError)
/// so the orchestrator knows whether to retry.
///
/// The trait is object safe: use it as `Arc<dyn Agent>`. Implementations
/// must be `Send + Sync` and should not keep per-job state between calls
/// beyond what the arguments carry, since calls may be retried or resumed
/// from a checkpoint on another worker.
#[async_trait::async_trait]
pub trait Agent: Send + Sync {
    /// The agent's name, for logs and metrics (e.g. `"scripted"`).
    fn name(&self) -> &str;

    /// Plans how to resolve the issue in `ctx`.
    async fn plan(&self, ctx: &TaskContext) -> Result<Output<Plan>>;

    /// Produces the changes that carry out `plan`. On rounds after the
    /// first, `feedback` holds what the critic or policy engine asked to fix.
    async fn code(&self, ctx: &TaskContext, plan: &Plan, feedback: Option<&Feedback>) -> Result<Output<Changeset>>;

    /// Reviews `changeset` against `plan` and the issue.
    async fn review(&self, ctx: &TaskContext, plan: &Plan, changeset: &Changeset) -> Result<Output<Review>>;
}

macro_rules! forward_agent {
    ($ptr:ident) => {
        /// Delegates every call to the pointed-to agent.
        #[async_trait::async_trait]
        impl<A: Agent + ?Sized> Agent for $ptr<A> {
            fn name(&self) -> &str {
                (**self).name()
            }

            async fn plan(&self, ctx: &TaskContext) -> Result<Output<Plan>> {
                (**self).plan(ctx).await
            }

            async fn code(
                &self,
                ctx: &TaskContext,
                plan: &Plan,
                feedback: Option<&Feedback>,
            ) -> Result<Output<Changeset>> {
                (**self).code(ctx, plan, feedback).await
            }

            async fn review(&self, ctx: &TaskContext, plan: &Plan, changeset: &Changeset) -> Result<Output<Review>> {
                (**self).review(ctx, plan, changeset).await
            }
        }
    };
}

forward_agent!(Arc);
forward_agent!(Box);
