//! Agents written in another language.
//!
//! The Python and Node bindings let people write the agent in their own language. Everything
//! such an agent sends and receives crosses as the contract's serde shapes (JSON values), and
//! everything about those values — what a step is given, how its answer is read, what an answer
//! that cannot be read means — is decided here, once, for every binding. A binding implements
//! [`HostAgent`]: call the host object's method for a [`Step`] with the JSON it is given, and say
//! how the call ended ([`HostFailure`] for an exception). [`HostAdapter`] turns that into an
//! [`Agent`] the orchestrator runs.
//!
//! What a host method receives (`ctx` is [`context_json`]):
//! - `plan(ctx)`;
//! - `code(ctx, plan, feedback)`, `feedback` being `None`/`null` on the first round;
//! - `review(ctx, plan, changeset)`.
//!
//! What it returns: `{"value": <Plan | Changeset | Review>, "usage": {"input_tokens",
//! "output_tokens", "cost_micros", "model"}}` (`usage` may be left out when the step cost nothing
//! measurable; its fields default to zero, `model` to the agent's name).

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{Agent, AgentError, Changeset, Feedback, Output, Plan, Result, Review, TaskContext, Usage};

/// The agent call a host method stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// [`Agent::plan`]: the host's `plan(ctx)`.
    Plan,
    /// [`Agent::code`]: the host's `code(ctx, plan, feedback)`.
    Code,
    /// [`Agent::review`]: the host's `review(ctx, plan, changeset)`.
    Review,
}

impl Step {
    /// The host method's name: `plan`, `code` or `review`.
    pub fn method(self) -> &'static str {
        match self {
            Self::Plan => "plan",
            Self::Code => "code",
            Self::Review => "review",
        }
    }
}

/// How a host method's call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostFailure {
    /// Any exception other than the two below: retried with backoff, as a transient failure.
    Raised(String),
    /// The binding's `PermanentAgentError`: the job fails with this message.
    Permanent(String),
    /// The binding's `BudgetExhausted`: the job stops, its budget used up.
    BudgetExhausted(String),
}

impl From<HostFailure> for AgentError {
    fn from(failure: HostFailure) -> Self {
        match failure {
            HostFailure::Raised(message) => AgentError::transient(message),
            HostFailure::Permanent(message) => AgentError::permanent(message),
            HostFailure::BudgetExhausted(message) => AgentError::budget_exhausted(message),
        }
    }
}

/// An agent object of another language, as a binding calls it.
#[async_trait::async_trait]
pub trait HostAgent: Send + Sync {
    /// The agent's name, for logs and metrics (and the model of a usage that names none).
    fn name(&self) -> &str;

    /// Calls the host object's method for `step` with `args` (in order, see the module docs) and
    /// returns what it returned, or how it failed. `ctx` is the call's context, for the
    /// repository view the binding hands to the host as `ctx.repo`.
    async fn call(&self, step: Step, ctx: &TaskContext, args: Vec<Value>) -> std::result::Result<Value, HostFailure>;
}

/// The context a host method receives: `{"job_id", "issue", "repo", "budget"}` in the contract's
/// shapes, with `budget.remaining_tokens` and `budget.remaining_cost_micros` added.
pub fn context_json(ctx: &TaskContext) -> Value {
    let budget = ctx.budget();
    json!({
        "job_id": ctx.job_id(),
        "issue": ctx.issue(),
        "repo": ctx.repo(),
        "budget": {
            "max_tokens": budget.max_tokens,
            "max_cost_micros": budget.max_cost_micros,
            "spent_tokens": budget.spent_tokens,
            "spent_cost_micros": budget.spent_cost_micros,
            "remaining_tokens": budget.max_tokens.saturating_sub(budget.spent_tokens),
            "remaining_cost_micros": budget.max_cost_micros.saturating_sub(budget.spent_cost_micros),
        },
    })
}

/// A [`HostAgent`] as an [`Agent`].
#[derive(Debug)]
pub struct HostAdapter<H>(pub H);

/// A host method's answer, before its value is read as the step's type.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    value: Value,
    #[serde(default)]
    usage: Option<AnswerUsage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cost_micros: u64,
    #[serde(default)]
    model: Option<String>,
}

impl<H: HostAgent> HostAdapter<H> {
    async fn run<T: DeserializeOwned>(&self, step: Step, ctx: &TaskContext, args: Vec<Value>) -> Result<Output<T>> {
        let answer = self.0.call(step, ctx, args).await?;
        read_answer(self.0.name(), step, answer)
    }
}

/// Reads a host method's answer as an [`Output`]. An answer that does not have the contract's
/// shape is a bug of the agent that no retry fixes: a permanent failure naming what is wrong.
fn read_answer<T: DeserializeOwned>(agent: &str, step: Step, answer: Value) -> Result<Output<T>> {
    let method = step.method();
    let bad = |e: serde_json::Error| AgentError::permanent(format!("the agent's {method}() returned {e}"));
    let answer: Answer = serde_json::from_value(answer).map_err(|e| {
        AgentError::permanent(format!("the agent's {method}() must return {{\"value\": ..., \"usage\": ...}}: {e}"))
    })?;
    let value = serde_json::from_value(answer.value).map_err(bad)?;
    let usage = match answer.usage {
        Some(u) => Usage::new(
            u.model.filter(|m| !m.is_empty()).unwrap_or_else(|| agent.to_owned()),
            u.input_tokens,
            u.output_tokens,
            u.cost_micros,
        ),
        None => Usage::zero(agent),
    };
    Ok(Output::new(value, usage))
}

#[async_trait::async_trait]
impl<H: HostAgent> Agent for HostAdapter<H> {
    fn name(&self) -> &str {
        self.0.name()
    }

    async fn plan(&self, ctx: &TaskContext) -> Result<Output<Plan>> {
        self.run(Step::Plan, ctx, vec![context_json(ctx)]).await
    }

    async fn code(&self, ctx: &TaskContext, plan: &Plan, feedback: Option<&Feedback>) -> Result<Output<Changeset>> {
        let args = vec![context_json(ctx), to_json(plan)?, feedback.map_or(Ok(Value::Null), to_json)?];
        self.run(Step::Code, ctx, args).await
    }

    async fn review(&self, ctx: &TaskContext, plan: &Plan, changeset: &Changeset) -> Result<Output<Review>> {
        self.run(Step::Review, ctx, vec![context_json(ctx), to_json(plan)?, to_json(changeset)?]).await
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| AgentError::permanent(format!("cannot encode an argument: {e}")))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::{Budget, Issue, MemoryRepoView, RepoRef, Verdict};

    /// A host agent answering from a script, recording what it was given.
    struct Scripted {
        answers: Mutex<Vec<std::result::Result<Value, HostFailure>>>,
        seen: Mutex<Vec<(Step, Vec<Value>)>>,
    }

    #[async_trait::async_trait]
    impl HostAgent for Scripted {
        fn name(&self) -> &str {
            "host"
        }

        async fn call(&self, step: Step, _: &TaskContext, args: Vec<Value>) -> std::result::Result<Value, HostFailure> {
            self.seen.lock().unwrap().push((step, args));
            self.answers.lock().unwrap().remove(0)
        }
    }

    fn ctx() -> TaskContext {
        TaskContext::new(
            "job-1",
            Issue::new("Add a greeting", "please"),
            RepoRef::new("acme/widgets", "main"),
            Budget { max_tokens: 100, max_cost_micros: 50, spent_tokens: 30, spent_cost_micros: 50 },
            Arc::new(MemoryRepoView::default()),
        )
    }

    fn agent(answers: Vec<std::result::Result<Value, HostFailure>>) -> HostAdapter<Scripted> {
        HostAdapter(Scripted { answers: Mutex::new(answers), seen: Mutex::default() })
    }

    #[tokio::test]
    async fn answers_are_read_in_the_contracts_shapes_and_usage_defaults_to_the_agents_name() {
        let plan = json!({"summary": "greet", "steps": [{"description": "write hello.txt", "path": "hello.txt"}]});
        let changes = json!({"summary": "hello", "changes": [
            {"path": "hello.txt", "op": {"kind": "write", "content": {"text": "hi\n"}}},
            {"path": "old.txt", "op": {"kind": "delete"}}]});
        let review = json!({"verdict": "approve", "summary": "fine", "comments": []});
        let agent = agent(vec![
            Ok(
                json!({"value": plan, "usage": {"input_tokens": 3, "output_tokens": 4, "cost_micros": 5, "model": "m"}}),
            ),
            Ok(json!({"value": changes})),
            Ok(json!({"value": review, "usage": {"output_tokens": 1}})),
        ]);
        let ctx = ctx();
        let planned = agent.plan(&ctx).await.unwrap();
        assert_eq!(planned.value.steps[0].path.as_deref(), Some("hello.txt"));
        assert_eq!(planned.usage, Usage::new("m", 3, 4, 5));
        let coded = agent.code(&ctx, &planned.value, None).await.unwrap();
        assert_eq!(coded.value.changes.len(), 2);
        assert_eq!(coded.usage, Usage::zero("host"));
        let reviewed = agent.review(&ctx, &planned.value, &coded.value).await.unwrap();
        assert_eq!(reviewed.value.verdict, Verdict::Approve);
        assert_eq!(reviewed.usage, Usage::new("host", 0, 1, 0));

        let seen = agent.0.seen.lock().unwrap();
        let steps: Vec<Step> = seen.iter().map(|(s, _)| *s).collect();
        assert_eq!(steps, [Step::Plan, Step::Code, Step::Review]);
        let context = &seen[0].1[0];
        assert_eq!(context["issue"]["title"], "Add a greeting");
        assert_eq!(context["repo"]["full_name"], "acme/widgets");
        assert_eq!(context["budget"]["remaining_tokens"], 70);
        assert_eq!(context["budget"]["remaining_cost_micros"], 0);
        assert_eq!(seen[1].1.len(), 3);
        assert_eq!(seen[1].1[2], Value::Null, "no feedback on the first round");
        assert_eq!(seen[2].1[2]["changes"][0]["path"], "hello.txt");
    }

    #[tokio::test]
    async fn failures_are_classified_and_a_malformed_answer_is_permanent() {
        let agent = agent(vec![
            Err(HostFailure::Raised("ConnectionError: reset".into())),
            Err(HostFailure::Permanent("cannot do this".into())),
            Err(HostFailure::BudgetExhausted("out of money".into())),
            Ok(json!({"summary": "no envelope"})),
            Ok(json!({"value": {"summary": "x", "steps": "not a list"}})),
        ]);
        let ctx = ctx();
        let errors: Vec<AgentError> = [
            agent.plan(&ctx).await,
            agent.plan(&ctx).await,
            agent.plan(&ctx).await,
            agent.plan(&ctx).await,
            agent.plan(&ctx).await,
        ]
        .into_iter()
        .map(|r| r.unwrap_err())
        .collect();
        assert!(errors[0].is_transient());
        assert_eq!(errors[1], AgentError::permanent("cannot do this"));
        assert_eq!(errors[2], AgentError::budget_exhausted("out of money"));
        for malformed in &errors[3..] {
            assert!(
                matches!(malformed, AgentError::Permanent { message } if message.starts_with("the agent's plan()"))
            );
        }
    }
}
