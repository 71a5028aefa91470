//! The tool loop of one step: the model calls tools until it calls the step's submit tool,
//! within the step's turns, the job's budget and a few invalid submissions.

use crate::{AgentError, Changeset, Plan, PlanStep, Review, TaskContext, Usage, Verdict};

use super::chat::{ChatRequest, Message, TokenUsage, ToolCall, ToolResult, ToolSpec};
use super::client::Client;
use super::config::{LlmConfig, ModelConfig};
use super::prompts::Prompt;
use super::tools::{self, ListFiles, ReadFile, Search, SubmitChanges, SubmitPlan, SubmitReview};
use super::workspace::{Workspace, shorten};

/// Invalid submissions (or answers without a tool call) after which a step fails.
const MAX_INVALID: u32 = 3;
/// About how many bytes the tools' schemas take in a request.
const TOOLS_BYTES: usize = 4_000;
/// The most bytes of tool results kept in the conversation; past it the oldest are elided (the
/// model may read again), so a long step does not outgrow the model's context.
const MAX_RESULT_BYTES: usize = 300_000;
/// What an elided result says.
const ELIDED: &str = "[this output was removed to save room; call the tool again if you need it]";

/// The role a step plays, and so its submit tool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Planner,
    Coder,
    Critic,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Planner => "planner",
            Role::Coder => "coder",
            Role::Critic => "critic",
        }
    }

    fn submit_tool(self) -> ToolSpec {
        match self {
            Role::Planner => tools::submit_plan(),
            Role::Coder => tools::submit_changes(),
            Role::Critic => tools::submit_review(),
        }
    }
}

/// What a step submitted.
pub(crate) enum Submitted {
    Plan(Plan),
    Changes(Changeset),
    Review(Review),
}

/// How a step went.
pub(crate) struct Finished {
    pub(crate) submitted: Submitted,
    pub(crate) usage: Usage,
    pub(crate) turns: u32,
}

/// One step: a role with its model and prompt, and its first message.
pub(crate) struct Step<'a> {
    pub(crate) role: Role,
    pub(crate) model: &'a ModelConfig,
    pub(crate) prompt: &'a Prompt,
    pub(crate) context: String,
}

/// Runs `step` on `workspace` until its submission is accepted.
///
/// Errors: [`AgentError::BudgetExhausted`] when the job's budget runs out (checked before each
/// turn, and each answer is capped to what is left), [`AgentError::Permanent`] after the
/// configured turns or [`MAX_INVALID`] invalid submissions, and whatever the provider's client
/// says (transient, paused, permanent). Every answer's usage is reported to the context's
/// progress sink as it comes, so a failure is still charged.
pub(crate) async fn run(
    client: &Client,
    config: &LlmConfig,
    ctx: &TaskContext,
    step: Step<'_>,
    workspace: &mut Workspace,
) -> Result<Finished, AgentError> {
    let role = step.role.name();
    let mut offered = tools::read_tools();
    offered.push(step.role.submit_tool());
    let submit = step.role.submit_tool().name;
    let mut messages: Vec<Message> = Vec::new();
    let mut spent = Usage::zero(step.model.model.clone());
    let mut invalid = 0u32;
    let mut last_problem = String::new();
    // The input the next request will send, estimated from the last answer's (four bytes a
    // token): the budget must allow it before it is sent.
    let mut next_input = estimate_tokens(step.prompt.text.len() + step.context.len() + TOOLS_BYTES);
    let price = config.prices.get(&step.model.model).copied();
    for turn in 1..=config.max_turns {
        let budget = ctx.budget();
        let tokens_left = budget.remaining_tokens().saturating_sub(spent.total_tokens());
        let cost_left = budget.remaining_cost_micros().saturating_sub(spent.cost_micros);
        let input_cost = price.map_or(0, |p| p.cost_micros(&TokenUsage { input: next_input, ..Default::default() }));
        if tokens_left <= next_input || cost_left <= input_cost {
            return Err(AgentError::budget_exhausted(format!(
                "the job's budget does not allow the {role}'s turn {turn} (about {next_input} input tokens; {tokens_left} \
                 tokens and {cost_left} micro-units left after {} tokens and {} micro-units in this step)",
                spent.total_tokens(),
                spent.cost_micros
            )));
        }
        // The answer may use what is left, in tokens and in money.
        let mut max_tokens = config.max_output_tokens.min(tokens_left - next_input);
        if let Some(price) = price.filter(|p| p.output_per_mtok > 0.0) {
            let affordable = ((cost_left - input_cost) as f64 / price.output_per_mtok).floor() as u64;
            max_tokens = max_tokens.min(affordable);
        }
        elide_old_results(&mut messages);
        let request = ChatRequest {
            model: &step.model.model,
            system: &step.prompt.text,
            context: &step.context,
            messages: &messages,
            tools: &offered,
            max_tokens: max_tokens.max(1),
        };
        let answer = match client.chat(step.model, &request).await {
            Ok(answer) => answer,
            Err(failure) => {
                // Billed even though it could not be read.
                if let Some(tokens) = failure.usage {
                    ctx.progress().spend(&priced(config, step.model, &tokens));
                }
                return Err(failure.error);
            }
        };
        let mut tokens = answer.usage;
        if tokens == TokenUsage::default() && !step.model.is_local() {
            // A server that reports no usage is still paid: estimate it rather than call it free.
            tracing::warn!(model = %step.model.model, "the provider reported no usage; estimating it");
            let sent: usize = messages_bytes(&messages) + step.prompt.text.len() + step.context.len() + TOOLS_BYTES;
            tokens =
                TokenUsage { input: estimate_tokens(sent), output: estimate_tokens(answer_bytes(&answer)), ..tokens };
        }
        let usage = priced(config, step.model, &tokens);
        ctx.progress().spend(&usage);
        spent.accumulate(&usage);
        if spent.total_tokens() > budget.remaining_tokens() || spent.cost_micros > budget.remaining_cost_micros() {
            return Err(AgentError::budget_exhausted(format!(
                "the job's budget ran out during the {role}'s turn {turn} ({} tokens and {} micro-units spent in this step)",
                spent.total_tokens(),
                spent.cost_micros
            )));
        }
        next_input = tokens.total_input() + tokens.output;
        if answer.calls.is_empty() && answer.text.trim().is_empty() {
            // An empty answer cannot be sent back (the providers refuse empty assistant turns).
            invalid += 1;
            last_problem = format!(
                "answered nothing ({})",
                if answer.finish.is_empty() { "no reason given" } else { &answer.finish }
            );
            ctx.progress().note(&format!("{role} {last_problem}; asked again"));
            if invalid >= MAX_INVALID {
                break;
            }
            let cut = matches!(answer.finish.as_str(), "length" | "max_tokens");
            messages.push(Message::User(format!(
                "Your answer was empty{}. Call a tool; when you are done, call `{submit}`.",
                if cut { " (it reached the output limit: think less, act in smaller steps)" } else { "" }
            )));
            next_input += 40;
            continue;
        }
        if !answer.calls.is_empty() && matches!(answer.finish.as_str(), "length" | "max_tokens") {
            // Cut off mid-call: the arguments may be incomplete, so nothing runs.
            invalid += 1;
            last_problem = "the answer was cut off at the output limit".into();
            ctx.progress().note(&format!("{role} answer cut off at the output limit; asked again"));
            messages.push(Message::Assistant { text: answer.text.clone(), calls: answer.calls.clone() });
            if invalid >= MAX_INVALID {
                break;
            }
            let results = answer
                .calls
                .iter()
                .map(|c| error_result(c, "not run: your answer was cut off at the output limit; send smaller edits"))
                .collect();
            messages.push(Message::Results(results));
            continue;
        }
        let calls = answer.calls.clone();
        messages.push(Message::Assistant { text: answer.text.clone(), calls: calls.clone() });
        if calls.is_empty() {
            invalid += 1;
            last_problem = "answered without calling a tool".into();
            ctx.progress().note(&format!("{role} answered without calling a tool; asked again"));
            if invalid >= MAX_INVALID {
                break;
            }
            messages.push(Message::User(format!(
                "Please continue by calling a tool. When you are done, call `{submit}` with your result."
            )));
            continue;
        }
        let mut results = Vec::with_capacity(calls.len());
        let mut accepted = None;
        for call in &calls {
            if accepted.is_some() {
                results.push(error_result(call, "not run: the submission was accepted"));
                continue;
            }
            if call.name == submit {
                match submission(step.role, call, workspace).await? {
                    Ok(done) => {
                        results.push(ToolResult {
                            call_id: call.id.clone(),
                            content: "accepted".into(),
                            is_error: false,
                        });
                        accepted = Some(done);
                    }
                    Err(why) => {
                        invalid += 1;
                        ctx.progress().note(&format!("{role} submission rejected: {}", shorten(&why, 200)));
                        last_problem = why.clone();
                        results.push(error_result(call, &why));
                    }
                }
                continue;
            }
            let (result, note) = read_tool(call, workspace).await?;
            ctx.progress().note(&note);
            results.push(result);
        }
        if let Some(submitted) = accepted {
            return Ok(Finished { submitted, usage: spent, turns: turn });
        }
        if invalid >= MAX_INVALID {
            break;
        }
        next_input += estimate_tokens(results.iter().map(|r| r.content.len() + 20).sum());
        messages.push(Message::Results(results));
    }
    if invalid >= MAX_INVALID {
        return Err(AgentError::permanent(format!(
            "the {role} ({}) made {MAX_INVALID} invalid submissions; the last: {last_problem}",
            step.model.label()
        )));
    }
    Err(AgentError::permanent(format!(
        "the {role} ({}) did not submit within {} turns",
        step.model.label(),
        config.max_turns
    )))
}

/// A read tool's result, and the note for the timeline.
async fn read_tool(call: &ToolCall, workspace: &Workspace) -> Result<(ToolResult, String), AgentError> {
    let outcome = match call.name.as_str() {
        tools::LIST_FILES => match tools::arguments::<ListFiles>(&call.name, &call.arguments) {
            Ok(args) => {
                let note = match args.path.as_deref().filter(|p| !p.is_empty()) {
                    Some(path) => format!("listed {path}"),
                    None => "listed the files".to_owned(),
                };
                Ok((workspace.list_files(&args).await?, note))
            }
            Err(why) => Err(why),
        },
        tools::READ_FILE => match tools::arguments::<ReadFile>(&call.name, &call.arguments) {
            Ok(args) => {
                let answer = workspace.read_file(&args).await?;
                let range = match (args.start_line, args.end_line) {
                    (None, None) => String::new(),
                    (start, end) => format!(":{}-{}", start.unwrap_or(1), end.map_or("end".into(), |e| e.to_string())),
                };
                let note = match &answer {
                    Ok(_) => format!("read {}{range}", args.path),
                    Err(why) => format!("could not read {}: {}", args.path, shorten(why, 120)),
                };
                Ok((answer, note))
            }
            Err(why) => Err(why),
        },
        tools::SEARCH => match tools::arguments::<Search>(&call.name, &call.arguments) {
            Ok(args) => {
                let note = match args.path.as_deref().filter(|p| !p.is_empty()) {
                    Some(path) => format!("searched `{}` in {path}", shorten(&args.pattern, 80)),
                    None => format!("searched `{}`", shorten(&args.pattern, 80)),
                };
                Ok((workspace.search(&args).await?, note))
            }
            Err(why) => Err(why),
        },
        other => Err(format!(
            "there is no tool `{other}` in this step; the tools are {}, {}, {} and this step's submit tool",
            tools::LIST_FILES,
            tools::READ_FILE,
            tools::SEARCH
        )),
    };
    Ok(match outcome {
        Ok((Ok(text), note)) => (ToolResult { call_id: call.id.clone(), content: text, is_error: false }, note),
        Ok((Err(why), note)) => (error_result(call, &why), note),
        Err(why) => {
            let note = format!("invalid call of {}: {}", shorten(&call.name, 40), shorten(&why, 160));
            (error_result(call, &why), note)
        }
    })
}

/// Checks a submission and makes its result, or says why it is not accepted.
async fn submission(
    role: Role,
    call: &ToolCall,
    workspace: &mut Workspace,
) -> Result<Result<Submitted, String>, AgentError> {
    Ok(match role {
        Role::Planner => tools::arguments::<SubmitPlan>(&call.name, &call.arguments).map(|plan| {
            let steps = plan
                .steps
                .into_iter()
                .map(|step| {
                    let mut files = step.files.into_iter();
                    let path = files.next();
                    let others: Vec<String> = files.collect();
                    let description = if others.is_empty() {
                        step.description
                    } else {
                        format!("{} (also {})", step.description, others.join(", "))
                    };
                    PlanStep { description, path }
                })
                .collect();
            Submitted::Plan(Plan::new(plan.summary, steps))
        }),
        Role::Coder => {
            let changes = match tools::arguments::<SubmitChanges>(&call.name, &call.arguments) {
                Ok(changes) => changes,
                Err(why) => return Ok(Err(why)),
            };
            if changes.summary.trim().is_empty() {
                return Ok(
                    Err("the summary is empty: say what the change does (it becomes the commit message)".into()),
                );
            }
            if let Err(problems) = workspace.apply(&changes.edits).await? {
                return Ok(Err(format!("no edit was applied: {}", problems.join("; "))));
            }
            let changeset = workspace.changeset(changes.summary.trim()).await?;
            if changeset.is_empty() {
                return Ok(Err("the edits leave every file as it was: there is no change".into()));
            }
            Ok(Submitted::Changes(changeset))
        }
        Role::Critic => tools::arguments::<SubmitReview>(&call.name, &call.arguments).and_then(|review| {
            let comments: Vec<String> = review
                .comments
                .into_iter()
                .map(|c| match (c.path, c.line) {
                    (Some(path), Some(line)) => format!("{path}:{line}: {}", c.body.trim()),
                    (Some(path), None) => format!("{path}: {}", c.body.trim()),
                    _ => c.body.trim().to_owned(),
                })
                .collect();
            match review.verdict {
                tools::ReviewVerdict::Approve => {
                    Ok(Submitted::Review(Review { verdict: Verdict::Approve, summary: review.summary, comments }))
                }
                tools::ReviewVerdict::RequestChanges if comments.is_empty() && review.summary.trim().is_empty() => {
                    Err("`request_changes` needs comments saying what to change".into())
                }
                tools::ReviewVerdict::RequestChanges => Ok(Submitted::Review(Review {
                    verdict: Verdict::RequestChanges,
                    summary: review.summary,
                    comments,
                })),
            }
        }),
    })
}

/// Tokens in `bytes` of text, roughly (four bytes a token).
fn estimate_tokens(bytes: usize) -> u64 {
    u64::try_from(bytes.div_ceil(4)).unwrap_or(u64::MAX)
}

fn messages_bytes(messages: &[Message]) -> usize {
    messages
        .iter()
        .map(|m| match m {
            Message::User(text) => text.len(),
            Message::Assistant { text, calls } => {
                text.len() + calls.iter().map(|c| c.raw.to_string().len() + 40).sum::<usize>()
            }
            Message::Results(results) => results.iter().map(|r| r.content.len() + 20).sum(),
        })
        .sum()
}

fn answer_bytes(answer: &super::chat::ChatResponse) -> usize {
    answer.text.len() + answer.calls.iter().map(|c| c.raw.to_string().len()).sum::<usize>()
}

/// Replaces the oldest tool results by a short note while the results add up to more than
/// [`MAX_RESULT_BYTES`].
fn elide_old_results(messages: &mut [Message]) {
    let mut total: usize = messages
        .iter()
        .filter_map(|m| if let Message::Results(r) = m { Some(r) } else { None })
        .flatten()
        .map(|r| r.content.len())
        .sum();
    for message in messages.iter_mut() {
        if total <= MAX_RESULT_BYTES {
            return;
        }
        if let Message::Results(results) = message {
            for result in results.iter_mut().filter(|r| r.content != ELIDED && r.content.len() > ELIDED.len()) {
                total -= result.content.len() - ELIDED.len();
                result.content = ELIDED.to_owned();
                if total <= MAX_RESULT_BYTES {
                    return;
                }
            }
        }
    }
}

fn error_result(call: &ToolCall, why: &str) -> ToolResult {
    ToolResult { call_id: call.id.clone(), content: why.to_owned(), is_error: true }
}

/// An answer's tokens as [`Usage`], with their cost (free for a model served locally without a
/// price).
fn priced(config: &LlmConfig, model: &ModelConfig, tokens: &TokenUsage) -> Usage {
    let cost = config.prices.get(&model.model).map_or(0, |price| price.cost_micros(tokens));
    Usage::new(model.model.clone(), tokens.total_input(), tokens.output, cost)
}
