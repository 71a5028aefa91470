//! Anthropic's Messages protocol (`POST {base}/v1/messages`), with prompt caching on the system
//! prompt and the repository context, which a tool loop resends every turn.

use serde::Deserialize;
use serde_json::{Value, json};

use super::chat::{ChatRequest, ChatResponse, Message, TokenUsage, ToolCall};
use super::config::ModelConfig;
use super::transport::HttpRequest;

/// The API version sent in `anthropic-version`.
const VERSION: &str = "2023-06-01";

/// The request for `request` to `model`'s server.
pub(crate) fn encode(model: &ModelConfig, request: &ChatRequest<'_>) -> HttpRequest {
    let cached = json!({ "type": "ephemeral" });
    let mut messages = vec![
        json!({ "role": "user", "content": [{ "type": "text", "text": request.context, "cache_control": cached }] }),
    ];
    for message in request.messages {
        match message {
            Message::User(text) => {
                messages.push(json!({ "role": "user", "content": [{ "type": "text", "text": text }] }))
            }
            Message::Assistant { text, calls } => {
                let mut content = Vec::new();
                if !text.is_empty() {
                    content.push(json!({ "type": "text", "text": text }));
                }
                for call in calls {
                    content.push(json!({ "type": "tool_use", "id": call.id, "name": call.name, "input": call.raw }));
                }
                messages.push(json!({ "role": "assistant", "content": content }));
            }
            Message::Results(results) => {
                let content: Vec<Value> = results
                    .iter()
                    .map(|r| {
                        json!({ "type": "tool_result", "tool_use_id": r.call_id, "content": r.content, "is_error": r.is_error })
                    })
                    .collect();
                messages.push(json!({ "role": "user", "content": content }));
            }
        }
    }
    // A third cache point at the end of the conversation, so each turn reads everything before it
    // from the cache (four are allowed: the system prompt, the context, this).
    if !request.messages.is_empty()
        && let Some(last) = messages.last_mut().and_then(|m| m["content"].as_array_mut()).and_then(|c| c.last_mut())
    {
        last["cache_control"] = cached.clone();
    }
    let tools: Vec<Value> = request
        .tools
        .iter()
        .map(|t| json!({ "name": t.name, "description": t.description, "input_schema": t.parameters }))
        .collect();
    let body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens,
        "system": [{ "type": "text", "text": request.system, "cache_control": cached }],
        "tools": tools,
        // Every answer calls a tool: the loop ends with a submit tool, never with prose.
        "tool_choice": { "type": "any" },
        "messages": messages,
    });
    let auth = (!model.api_key.is_empty()).then(|| ("x-api-key".to_owned(), model.api_key.clone()));
    HttpRequest {
        url: format!("{}/v1/messages", model.base_url),
        headers: vec![("anthropic-version".into(), VERSION.into())],
        auth,
        body,
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: Vec<Block>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

/// A successful answer's body.
pub(crate) fn decode(body: &str) -> Result<ChatResponse, String> {
    let answer: Answer = serde_json::from_str(body).map_err(|e| format!("the answer is not a message: {e}"))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in answer.content {
        match block {
            Block::Text { text: t } => {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(&t);
            }
            Block::ToolUse { id, name, input } => {
                calls.push(ToolCall { id, name, raw: input.clone(), arguments: Ok(input) });
            }
            Block::Other => {}
        }
    }
    let usage = answer.usage.map_or_else(TokenUsage::default, tokens);
    Ok(ChatResponse { text, calls, usage, finish: answer.stop_reason.unwrap_or_default(), model: answer.model })
}

fn tokens(u: Usage) -> TokenUsage {
    TokenUsage {
        input: u.input_tokens,
        cached_input: u.cache_read_input_tokens.unwrap_or(0),
        cache_write: u.cache_creation_input_tokens.unwrap_or(0),
        output: u.output_tokens,
    }
}

/// The usage block of an answer that could not be read otherwise: what it was billed.
pub(crate) fn usage_of(body: &str) -> Option<TokenUsage> {
    let value: Value = serde_json::from_str(body).ok()?;
    serde_json::from_value::<Usage>(value.get("usage")?.clone()).ok().map(tokens)
}

/// The message of an error answer (`{"type": "error", "error": {"message": ...}}`).
pub(crate) fn error_message(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    value.get("error")?.get("message").and_then(Value::as_str).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::chat::{ToolResult, ToolSpec};
    use crate::llm::config::Provider;

    #[test]
    fn a_conversation_is_encoded_as_messages_with_cache_points() {
        let model = ModelConfig::new(Provider::Anthropic, "claude-sonnet-4-5", "sk-ant-test");
        let calls = vec![ToolCall {
            id: "toolu_1".into(),
            name: "list_files".into(),
            raw: json!({}),
            arguments: Ok(json!({})),
        }];
        let messages = [
            Message::Assistant { text: "Looking.".into(), calls },
            Message::Results(vec![ToolResult { call_id: "toolu_1".into(), content: "a.py".into(), is_error: false }]),
        ];
        let tools = [ToolSpec { name: "list_files", description: "List", parameters: json!({ "type": "object" }) }];
        let request = ChatRequest {
            model: "claude-sonnet-4-5",
            system: "sys",
            context: "ctx",
            messages: &messages,
            tools: &tools,
            max_tokens: 64,
        };
        let http = encode(&model, &request);
        assert_eq!(http.url, "https://api.anthropic.com/v1/messages");
        assert_eq!(http.auth, Some(("x-api-key".into(), "sk-ant-test".into())));
        assert_eq!(http.headers, [("anthropic-version".to_owned(), "2023-06-01".to_owned())]);
        let body = &http.body;
        assert_eq!(body["system"][0]["cache_control"]["type"], "ephemeral");
        assert_eq!(body["messages"][0]["content"][0]["cache_control"]["type"], "ephemeral");
        assert_eq!(
            body["messages"][1]["content"][1],
            json!({ "type": "tool_use", "id": "toolu_1", "name": "list_files", "input": {} })
        );
        assert_eq!(body["messages"][2]["content"][0]["tool_use_id"], "toolu_1");
        assert_eq!(body["messages"][2]["content"][0]["cache_control"]["type"], "ephemeral", "the last block is cached");
        assert!(body["messages"][1]["content"][1].get("cache_control").is_none());
        assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
    }

    #[test]
    fn an_answer_is_decoded_with_its_cache_usage() {
        let body = json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
            "content": [{ "type": "text", "text": "Reading." }, { "type": "tool_use", "id": "toolu_2", "name": "read_file", "input": { "path": "a.py" } }],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": { "input_tokens": 12, "output_tokens": 40, "cache_creation_input_tokens": 2000, "cache_read_input_tokens": 0 }
        });
        let answer = decode(&body.to_string()).unwrap();
        assert_eq!(answer.text, "Reading.");
        assert_eq!(answer.calls[0].arguments, Ok(json!({ "path": "a.py" })));
        assert_eq!(answer.usage, TokenUsage { input: 12, cached_input: 0, cache_write: 2000, output: 40 });
        let error = r#"{"type":"error","error":{"type":"not_found_error","message":"model: claude-x"}}"#;
        assert_eq!(error_message(error).as_deref(), Some("model: claude-x"));
    }
}
