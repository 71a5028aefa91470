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
        let (model, prompt) = self.setup(role);
        session::run(&self.inner.client, &self.inner.config, ctx, Step { role, model, prompt, context }, workspace)
            .await
    }

    /// The model and prompt of `role`.
    fn setup(&self, role: Role) -> (&ModelConfig, &Prompt) {
        let config = &self.inner.config;
        let [planner, coder, critic] = config.models();
        match role {
            Role::Planner => (planner, &config.prompts.planner),
            Role::Coder => (coder, &config.prompts.coder),
            Role::Critic => (critic, &config.prompts.critic),
        }
    }

    fn output<T>(&self, role: Role, value: T, finished: &Finished) -> Output<T> {
        let (model, prompt) = self.setup(role);
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::{Value, json};

    use super::*;
    use crate::{Budget, Issue, MemoryRepoView, RecordedProgress, RepoRef};

    /// Answers each request with the next canned reply (OpenAI's shape), and keeps the requests.
    struct Canned {
        replies: Mutex<Vec<HttpReply>>,
        requests: Mutex<Vec<Value>>,
    }

    impl Canned {
        fn new(replies: Vec<HttpReply>) -> Arc<Self> {
            Arc::new(Self { replies: Mutex::new(replies.into_iter().rev().collect()), requests: Mutex::default() })
        }
    }

    #[async_trait::async_trait]
    impl Transport for Canned {
        async fn post(&self, request: &HttpRequest) -> std::result::Result<HttpReply, TransportError> {
            self.requests.lock().unwrap().push(request.body.clone());
            self.replies.lock().unwrap().pop().ok_or_else(|| TransportError::Failed("no more replies".into()))
        }
    }

    fn ok(body: Value) -> HttpReply {
        HttpReply { status: 200, headers: vec![], body: body.to_string() }
    }

    /// A chat completion calling `calls` (name, arguments), finishing with `finish`.
    fn answer(calls: &[(&str, Value)], finish: &str) -> HttpReply {
        let calls: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(n, (name, args))| json!({ "id": format!("call_{n}"), "type": "function", "function": { "name": name, "arguments": args.to_string() } }))
            .collect();
        let message = if calls.is_empty() {
            json!({ "role": "assistant", "content": null })
        } else {
            json!({ "role": "assistant", "content": null, "tool_calls": calls })
        };
        ok(json!({ "model": "gpt-4.1", "choices": [{ "index": 0, "message": message, "finish_reason": finish }],
                   "usage": { "prompt_tokens": 100, "completion_tokens": 10 } }))
    }

    fn agent(transport: Arc<Canned>) -> LlmAgent {
        let mut config =
            LlmConfig::new(ModelConfig::new(Provider::OpenAi, "gpt-4.1", "k").at("https://llm.example.test/v1"));
        config.http = HttpSettings {
            max_retries: 0,
            base_backoff: std::time::Duration::from_millis(1),
            ..HttpSettings::default()
        };
        LlmAgent::with_transport(config, transport).unwrap()
    }

    fn context(progress: Arc<RecordedProgress>) -> TaskContext {
        let view = MemoryRepoView::from_files([("a.py", "x = 1\n"), ("b.py", "y = 2\n")]);
        TaskContext::new("j", Issue::new("t", "b"), RepoRef::new("o/r", "main"), Budget::unlimited(), Arc::new(view))
            .with_progress(progress)
    }

    #[tokio::test]
    async fn parallel_calls_run_in_order_and_a_submit_ends_the_step() {
        let plan = json!({ "summary": "s", "steps": [{ "description": "d", "files": ["a.py", "b.py"] }] });
        let canned = Canned::new(vec![answer(
            &[
                ("read_file", json!({ "path": "a.py" })),
                ("submit_plan", plan),
                ("read_file", json!({ "path": "b.py" })),
            ],
            "tool_calls",
        )]);
        let progress = RecordedProgress::new();
        let out = agent(canned.clone()).plan(&context(progress.clone())).await.unwrap();
        assert_eq!(out.value.steps[0].path.as_deref(), Some("a.py"));
        assert!(out.value.steps[0].description.contains("also b.py"));
        assert_eq!(progress.notes(), ["read a.py"], "the call after the submission did not run");
        assert_eq!(out.usage.total_tokens(), 110);
        assert_eq!(progress.spent(), out.usage);
    }

    #[tokio::test]
    async fn empty_and_cut_off_answers_are_asked_again_and_never_sent_back_empty() {
        let plan = json!({ "summary": "s", "steps": [] });
        let canned = Canned::new(vec![
            answer(&[], "length"),
            answer(&[("submit_plan", json!({ "summary": "half" }))], "length"),
            answer(&[("submit_plan", plan)], "tool_calls"),
        ]);
        let progress = RecordedProgress::new();
        let out = agent(canned.clone()).plan(&context(progress.clone())).await.unwrap();
        assert_eq!(out.value.summary, "s");
        let requests = canned.requests.lock().unwrap();
        // The empty answer left no empty assistant turn; the nudge says why.
        let second = &requests[1]["messages"];
        assert_eq!(second.as_array().unwrap().len(), 3, "{second:#}");
        assert!(second[2]["content"].as_str().unwrap().contains("output limit"));
        // The cut-off call was answered without being run.
        let third = requests[2]["messages"].as_array().unwrap();
        assert!(third.last().unwrap()["content"].as_str().unwrap().contains("cut off"));
        assert!(progress.notes().iter().any(|n| n.contains("cut off")));
    }

    #[tokio::test]
    async fn an_unreadable_answer_is_still_charged() {
        let canned = Canned::new(vec![ok(
            json!({ "choices": "nonsense", "usage": { "prompt_tokens": 500, "completion_tokens": 50 } }),
        )]);
        let progress = RecordedProgress::new();
        let error = agent(canned).plan(&context(progress.clone())).await.unwrap_err();
        assert!(error.is_transient() && error.message().contains("answered oddly"), "{error:?}");
        assert_eq!(progress.spent().total_tokens(), 550, "what the provider billed is reported");
        assert!(progress.spent().cost_micros > 0);
    }

    #[tokio::test]
    async fn the_budget_refuses_a_turn_it_cannot_afford_before_sending_it() {
        let canned = Canned::new(vec![answer(&[("read_file", json!({ "path": "a.py" }))], "tool_calls")]);
        let ctx = context(RecordedProgress::new()).with_budget(Budget::new(1_000, u64::MAX));
        let error = agent(canned.clone()).plan(&ctx).await.unwrap_err();
        assert!(error.is_budget_exhausted() && error.message().contains("turn 1"), "{error:?}");
        assert!(canned.requests.lock().unwrap().is_empty(), "nothing was sent");
        // With room for one turn, its answer is capped to what is left, and the next turn (whose
        // input alone would not fit) is not sent.
        let mut big = answer(&[("read_file", json!({ "path": "a.py" }))], "tool_calls");
        big.body = big.body.replace("\"prompt_tokens\":100", "\"prompt_tokens\":2000");
        let canned = Canned::new(vec![big]);
        let ctx = context(RecordedProgress::new()).with_budget(Budget::new(2_300, u64::MAX));
        let error = agent(canned.clone()).plan(&ctx).await.unwrap_err();
        assert!(error.is_budget_exhausted() && error.message().contains("turn 2"), "{error:?}");
        let max = canned.requests.lock().unwrap()[0]["max_tokens"].as_u64().unwrap();
        assert!(max < 2_300 && max > 0, "{max}");
    }

    #[tokio::test]
    async fn a_circuit_lets_one_trial_through_and_a_failed_trial_counts() {
        let failing = || HttpReply { status: 500, headers: vec![], body: "{}".into() };
        let canned = Canned::new((0..10).map(|_| failing()).collect());
        let mut config =
            LlmConfig::new(ModelConfig::new(Provider::OpenAi, "gpt-4.1", "k").at("https://llm.example.test/v1"));
        config.http = HttpSettings {
            max_retries: 5,
            base_backoff: std::time::Duration::from_millis(1),
            breaker_threshold: 2,
            breaker_cooldown: std::time::Duration::from_millis(50),
            ..HttpSettings::default()
        };
        let agent = LlmAgent::with_transport(config, canned.clone()).unwrap();
        let ctx = context(RecordedProgress::new());
        let opened = agent.plan(&ctx).await.unwrap_err();
        assert!(matches!(opened, AgentError::Paused { .. }), "{opened:?}");
        assert_eq!(canned.requests.lock().unwrap().len(), 2, "it opened after two failures");
        let still_open = agent.plan(&ctx).await.unwrap_err();
        assert!(matches!(still_open, AgentError::Paused { .. }));
        assert_eq!(canned.requests.lock().unwrap().len(), 2, "no request while open");
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        let trial = agent.plan(&ctx).await.unwrap_err();
        assert!(matches!(trial, AgentError::Transient { .. }), "a failed trial is a real, counted attempt: {trial:?}");
        assert!(trial.message().contains("still failing after a pause"));
        assert_eq!(canned.requests.lock().unwrap().len(), 3);
    }
}
