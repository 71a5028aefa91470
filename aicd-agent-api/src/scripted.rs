//! A deterministic agent driven by `aicd:` blocks in the issue body.

mod parse;

pub use parse::{DELETE_DIRECTIVE, ScriptError, WRITE_DIRECTIVE, parse_script};

use crate::{
    Agent, AgentError, Changeset, Feedback, FileChange, Output, Plan, PlanStep, Result, Review, TaskContext, Usage,
};

/// The message that starts the error for an issue with no `aicd:` block.
const NOTHING_TO_DO: &str = "nothing to do: the issue has no `aicd:write <path>` or \
`aicd:delete <path>` block. To write a file, add a fenced code block whose info string is \
`aicd:write <path>` and whose content is the file's new text, e.g.\n\n\
~~~\n```aicd:write docs/hello.md\nHello!\n```\n~~~\n\n\
To delete a file, add an empty block whose info string is `aicd:delete <path>`.";

/// A deterministic agent that needs no network: it takes its changes from
/// the issue body, so a person can drive a whole run by writing an issue.
///
/// Each fenced block whose info string is `aicd:write <path>` writes the
/// block's text to `path`; each empty block whose info string is
/// `aicd:delete <path>` deletes `path` (see [`parse_script`] for the exact
/// rules). [`plan`](Agent::plan) lists one step per block,
/// [`code`](Agent::code) returns the changes (ignoring feedback: it can only
/// do what the issue says), and [`review`](Agent::review) always approves.
///
/// An issue with no such block, or with a malformed one, fails every step
/// with [`AgentError::Permanent`] and a message the author can act on.
///
/// It reports each step's work to the context's progress sink (`read the issue's script: 2
/// scripted changes`, `write docs/hello.md`).
///
/// Usage is deterministic: `input_tokens` is the issue body's length in
/// bytes divided by 4 (rounded up), `output_tokens` the length of what the
/// step produced (plan text, written content, review text) divided by 4
/// (rounded up), `cost_micros` 0, and `model` [`ScriptedAgent::MODEL`].
#[derive(Clone, Debug, Default)]
pub struct ScriptedAgent {
    _private: (),
}

impl ScriptedAgent {
    /// The agent's name and the model it reports in [`Usage`].
    pub const MODEL: &'static str = "scripted";

    /// A scripted agent.
    pub fn new() -> Self {
        Self::default()
    }

    /// The changes the issue in `ctx` asks for, or a permanent error.
    fn changes(ctx: &TaskContext) -> Result<Vec<FileChange>> {
        let changes = parse_script(&ctx.issue().body).map_err(|e| AgentError::permanent(e.to_string()))?;
        if changes.is_empty() {
            return Err(AgentError::permanent(NOTHING_TO_DO));
        }
        Ok(changes)
    }

    fn usage(ctx: &TaskContext, produced_bytes: usize) -> Usage {
        let tokens = |bytes: usize| u64::try_from(bytes.div_ceil(4)).unwrap_or(u64::MAX);
        Usage::new(Self::MODEL, tokens(ctx.issue().body.len()), tokens(produced_bytes), 0)
    }
}

fn describe(change: &FileChange) -> String {
    let verb = if change.is_delete() { "delete" } else { "write" };
    format!("{verb} {}", change.path)
}

fn count(n: usize) -> String {
    if n == 1 { "1 scripted change".to_owned() } else { format!("{n} scripted changes") }
}

#[async_trait::async_trait]
impl Agent for ScriptedAgent {
    fn name(&self) -> &str {
        Self::MODEL
    }

    async fn plan(&self, ctx: &TaskContext) -> Result<Output<Plan>> {
        let changes = Self::changes(ctx)?;
        ctx.progress().note(&format!("read the issue's script: {}", count(changes.len())));
        let steps: Vec<PlanStep> = changes.iter().map(|c| PlanStep::for_path(describe(c), c.path.clone())).collect();
        let plan = Plan::new(format!("Apply {} from the issue body.", count(steps.len())), steps);
        let produced = plan.summary.len() + plan.steps.iter().map(|s| s.description.len()).sum::<usize>();
        Ok(Output::new(plan, Self::usage(ctx, produced)))
    }

    async fn code(&self, ctx: &TaskContext, _plan: &Plan, feedback: Option<&Feedback>) -> Result<Output<Changeset>> {
        let changes = Self::changes(ctx)?;
        for change in &changes {
            ctx.progress().note(&describe(change));
        }
        let mut summary =
            format!("{}: {}", count(changes.len()), changes.iter().map(describe).collect::<Vec<_>>().join(", "));
        if let Some(feedback) = feedback {
            summary.push_str(&format!(
                " (feedback from round {} not applied: the scripted agent follows the issue body)",
                feedback.round
            ));
        }
        let changeset = Changeset::new(summary, changes);
        let produced = changeset.total_bytes();
        Ok(Output::new(changeset, Self::usage(ctx, produced)))
    }

    async fn review(&self, ctx: &TaskContext, _plan: &Plan, changeset: &Changeset) -> Result<Output<Review>> {
        let review = Review::approve(format!(
            "Approved {} to {}.",
            count(changeset.changes.len()),
            if changeset.is_empty() { "no file".to_owned() } else { changeset.paths().join(", ") }
        ));
        let produced = review.summary.len();
        Ok(Output::new(review, Self::usage(ctx, produced)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::task_context;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn nothing_to_do_explains_syntax() {
        let ctx = task_context("Please fix the bug.");
        let err = block_on(ScriptedAgent::new().plan(&ctx)).unwrap_err();
        assert!(err.is_permanent());
        assert!(err.message().starts_with("nothing to do"));
        assert!(err.message().contains("aicd:write <path>"));
        let err = block_on(ScriptedAgent::new().code(&ctx, &Plan::default(), None)).unwrap_err();
        assert!(err.message().starts_with("nothing to do"));
    }

    #[test]
    fn usage_is_deterministic() {
        let body = "```aicd:write a\n12345678\n```"; // 28 bytes
        let ctx = task_context(body);
        let agent = ScriptedAgent::new();
        let out = block_on(agent.code(&ctx, &Plan::default(), None)).unwrap();
        assert_eq!(out.usage, Usage::new("scripted", 7, 3, 0));
        let again = block_on(agent.code(&ctx, &Plan::default(), None)).unwrap();
        assert_eq!(out, again);
    }

    #[test]
    fn steps_are_reported_as_progress() {
        let progress = crate::RecordedProgress::new();
        let ctx = task_context("```aicd:write a\nx\n```").with_progress(progress.clone());
        let agent = ScriptedAgent::new();
        block_on(agent.plan(&ctx)).unwrap();
        block_on(agent.code(&ctx, &Plan::default(), None)).unwrap();
        assert_eq!(progress.notes(), ["read the issue's script: 1 scripted change", "write a"]);
    }

    #[test]
    fn feedback_is_mentioned_but_ignored() {
        let ctx = task_context("```aicd:write a\nx\n```");
        let fb = Feedback::new(2, vec!["do better".into()]);
        let out = block_on(ScriptedAgent::new().code(&ctx, &Plan::default(), Some(&fb))).unwrap();
        assert!(out.value.summary.contains("round 2"));
        assert_eq!(out.value.changes, [FileChange::write("a", "x\n")]);
    }
}
