//! The reference brain: an [`Agent`] that drives a language model through a tool loop over the
//! repository (feature `llm`).
//!
//! Each step is a conversation in which the model calls tools until it calls the step's submit
//! tool:
//!
//! - every step may `list_files`, `read_file` (with line ranges) and `search` (a regular
//!   expression across the repository), all bounded;
//! - the planner submits a plan (`submit_plan`), the coder its edits (`submit_changes`: whole
//!   files, deletions, or `replace` edits that swap exactly one occurrence of a text), the critic
//!   its review (`submit_review`). A submission that does not fit (an edit that does not apply,
//!   arguments that do not match the tool's schema) goes back to the model as a tool error.
//!
//! The coder of a later round works on the repository with its previous changeset applied, and
//! returns a cumulative changeset. Every tool call is reported to the context's
//! [`ProgressSink`](crate::ProgressSink), and every answer's usage (priced with a
//! [`PriceTable`]) too, so a failed step is still charged. The budget is checked before every
//! turn and caps each answer's length.
//!
//! Two protocols are spoken: OpenAI's Chat Completions ([`Provider::OpenAi`], which most
//! servers mimic) and Anthropic's Messages ([`Provider::Anthropic`], with prompt caching). Calls
//! are retried with backoff on 429, 5xx and timeouts, and a provider address that keeps failing
//! is paused by a circuit breaker ([`AgentError::Paused`]).
//!
//! ```no_run
//! use aicd_agent_api::llm::{LlmAgent, LlmConfig, ModelConfig, Provider};
//!
//! let coder = ModelConfig::new(Provider::Anthropic, "claude-sonnet-4-5", std::env::var("KEY").unwrap_or_default());
//! let mut config = LlmConfig::new(coder);
//! // The critic may be another vendor's model.
//! config.critic = Some(ModelConfig::new(Provider::OpenAi, "gpt-4.1", "sk-..."));
//! let agent = LlmAgent::new(config).expect("every model is priced");
//! # let _ = agent;
//! ```

mod anthropic;
mod brief;
pub mod cassette;
mod chat;
mod client;
mod config;
mod openai;
mod pricing;
mod prompts;
mod session;
mod tools;
mod transport;
mod workspace;

use std::sync::Arc;

pub use config::{HttpSettings, LlmConfig, ModelConfig, Provider};
pub use pricing::{Price, PriceTable};
pub use prompts::{Prompt, Prompts};
pub use transport::{HttpReply, HttpRequest, HttpTransport, Transport, TransportError};

use crate::{
    Agent, AgentError, Changeset, ChangesetView, Feedback, Output, Plan, RepoView, Result, Review, TaskContext,
};

use self::client::Client;
use self::session::{Finished, Role, Step, Submitted};
use self::workspace::Workspace;

/// An [`Agent`] backed by language models (see the [module documentation](self)). Cheap to
/// clone.
#[derive(Clone)]
pub struct LlmAgent {
    inner: Arc<Inner>,
}

struct Inner {
    config: LlmConfig,
    client: Client,
}

impl std::fmt::Debug for LlmAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmAgent").field("models", &self.inner.config.models()).finish_non_exhaustive()
    }
}

impl LlmAgent {
    /// The name it reports ([`Agent::name`]).
    pub const NAME: &'static str = "llm";

    /// An agent over `config`, calling providers over HTTP. Fails, saying why, when a model
    /// served remotely has no price (a budget cannot be enforced on what cannot be priced) or the
    /// HTTP client cannot be built.
    pub fn new(config: LlmConfig) -> std::result::Result<Self, String> {
        let transport = HttpTransport::new(config.http.connect_timeout, config.http.request_timeout)?;
        Self::with_transport(config, Arc::new(transport))
    }

    /// An agent over `config` that sends its requests through `transport` (a recorder, a test
    /// double). Fails when a model served remotely has no price.
    pub fn with_transport(config: LlmConfig, transport: Arc<dyn Transport>) -> std::result::Result<Self, String> {
        config.check_prices()?;
        let client = Client::new(transport, config.http);
        Ok(Self { inner: Arc::new(Inner { config, client }) })
    }

    /// The configuration.
    pub fn config(&self) -> &LlmConfig {
        &self.inner.config
    }

    async fn step(
        &self,
        ctx: &TaskContext,
        role: Role,
        context: String,
        workspace: &mut Workspace,
    ) -> Result<Finished> {
        let config = &self.inner.config;
        let [planner, coder, critic] = config.models();
        let (model, prompt) = match role {
            Role::Planner => (planner, &config.prompts.planner),
            Role::Coder => (coder, &config.prompts.coder),
            Role::Critic => (critic, &config.prompts.critic),
        };
        session::run(&self.inner.client, config, ctx, Step { role, model, prompt, context }, workspace).await
    }

    fn output<T>(&self, role: Role, value: T, finished: &Finished) -> Output<T> {
        let config = &self.inner.config;
        let [planner, coder, critic] = config.models();
        let (model, prompt) = match role {
            Role::Planner => (planner, &config.prompts.planner),
            Role::Coder => (coder, &config.prompts.coder),
            Role::Critic => (critic, &config.prompts.critic),
        };
        Output::new(value, finished.usage.clone())
            .with_meta("prompt", prompt.version.clone())
            .with_meta("model", model.label())
            .with_meta("turns", finished.turns.to_string())
    }
}

#[async_trait::async_trait]
impl Agent for LlmAgent {
    fn name(&self) -> &str {
        Self::NAME
    }

    async fn plan(&self, ctx: &TaskContext) -> Result<Output<Plan>> {
        let mut workspace = Workspace::new(ctx.repo_view().clone(), None);
        let context = brief::repository(ctx, &workspace).await?;
        let finished = self.step(ctx, Role::Planner, context, &mut workspace).await?;
        let Submitted::Plan(plan) = &finished.submitted else {
            return Err(AgentError::permanent("the planner submitted no plan"));
        };
        Ok(self.output(Role::Planner, plan.clone(), &finished))
    }

    async fn code(&self, ctx: &TaskContext, plan: &Plan, feedback: Option<&Feedback>) -> Result<Output<Changeset>> {
        let previous = feedback.and_then(|f| f.previous.as_ref());
        let mut workspace = Workspace::new(ctx.repo_view().clone(), previous);
        let mut context = brief::repository(ctx, &workspace).await?;
        context.push('\n');
        context.push_str(&brief::plan(plan));
        if let Some(feedback) = feedback {
            context.push('\n');
            context.push_str(&brief::feedback(feedback));
        }
        let finished = self.step(ctx, Role::Coder, context, &mut workspace).await?;
        let Submitted::Changes(changeset) = &finished.submitted else {
            return Err(AgentError::permanent("the coder submitted no changes"));
        };
        Ok(self.output(Role::Coder, changeset.clone(), &finished))
    }

    async fn review(&self, ctx: &TaskContext, plan: &Plan, changeset: &Changeset) -> Result<Output<Review>> {
        let changed: Arc<dyn RepoView> = Arc::new(ChangesetView::new(ctx.repo_view().clone(), changeset));
        let diff = Workspace::new(ctx.repo_view().clone(), Some(changeset)).diff(brief::MAX_DIFF_BYTES).await?;
        let mut workspace = Workspace::new(changed, None);
        let mut context = brief::repository(ctx, &workspace).await?;
        context.push('\n');
        context.push_str(&brief::plan(plan));
        context.push('\n');
        context.push_str(&brief::change(changeset, &diff));
        let finished = self.step(ctx, Role::Critic, context, &mut workspace).await?;
        let Submitted::Review(review) = &finished.submitted else {
            return Err(AgentError::permanent("the critic submitted no review"));
        };
        Ok(self.output(Role::Critic, review.clone(), &finished))
    }
}
