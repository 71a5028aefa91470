//! The conversation of one step, in neutral terms each provider encodes its own way.

use serde_json::Value;

/// A tool offered to the model: its name, what it is for, and the JSON schema of its arguments.
#[derive(Clone, Debug)]
pub(crate) struct ToolSpec {
    pub(crate) name: &'static str,
    pub(crate) description: &'static str,
    pub(crate) parameters: Value,
}

/// One message after the first (the context, which every request starts with).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Message {
    /// Text from the agent to the model (a nudge after an answer without a tool call).
    User(String),
    /// What the model answered: text, tool calls, or both.
    Assistant { text: String, calls: Vec<ToolCall> },
    /// The results of the tool calls of the previous answer, in order.
    Results(Vec<ToolResult>),
}

/// A tool call of the model.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ToolCall {
    /// The provider's id of the call, echoed with its result.
    pub(crate) id: String,
    /// The tool's name.
    pub(crate) name: String,
    /// The arguments exactly as the provider sent them (OpenAI: a JSON string; Anthropic: an
    /// object), to send back unchanged in later requests.
    pub(crate) raw: Value,
    /// The arguments as JSON, or why they are not JSON.
    pub(crate) arguments: Result<Value, String>,
}

/// The result of one tool call, as the model will read it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ToolResult {
    pub(crate) call_id: String,
    pub(crate) content: String,
    pub(crate) is_error: bool,
}

/// One request of the conversation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChatRequest<'a> {
    pub(crate) model: &'a str,
    /// The role's instructions.
    pub(crate) system: &'a str,
    /// The first user message: the task and the repository's map (the part worth caching).
    pub(crate) context: &'a str,
    pub(crate) messages: &'a [Message],
    pub(crate) tools: &'a [ToolSpec],
    /// The most tokens the answer may have.
    pub(crate) max_tokens: u64,
}

/// What the model answered.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ChatResponse {
    pub(crate) text: String,
    pub(crate) calls: Vec<ToolCall>,
    pub(crate) usage: TokenUsage,
    /// Why it stopped, as the provider says it (`tool_calls`, `end_turn`, `max_tokens`, ...).
    pub(crate) finish: String,
    /// The model that answered, as the provider names it.
    pub(crate) model: String,
}

/// The tokens of one answer, split as they are priced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TokenUsage {
    /// Input tokens read fresh.
    pub(crate) input: u64,
    /// Input tokens read from the provider's prompt cache.
    pub(crate) cached_input: u64,
    /// Input tokens written to the provider's prompt cache.
    pub(crate) cache_write: u64,
    /// Output tokens.
    pub(crate) output: u64,
}

impl TokenUsage {
    /// Every input token, however priced.
    pub(crate) fn total_input(&self) -> u64 {
        self.input.saturating_add(self.cached_input).saturating_add(self.cache_write)
    }
}
