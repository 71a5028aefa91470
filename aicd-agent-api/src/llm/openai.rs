//! OpenAI's Chat Completions protocol (`POST {base}/chat/completions`), which OpenAI, Azure
//! OpenAI, OpenRouter, LiteLLM, vLLM, Ollama and llama.cpp's server all speak.

use serde::Deserialize;
use serde_json::{Value, json};

use super::chat::{ChatRequest, ChatResponse, Message, TokenUsage, ToolCall};
use super::config::ModelConfig;
use super::transport::HttpRequest;

/// The request for `request` to `model`'s server.
pub(crate) fn encode(model: &ModelConfig, request: &ChatRequest<'_>) -> HttpRequest {
    let mut messages = vec![
        json!({ "role": "system", "content": request.system }),
        json!({ "role": "user", "content": request.context }),
    ];
    for message in request.messages {
        match message {
            Message::User(text) => messages.push(json!({ "role": "user", "content": text })),
            Message::Assistant { text, calls } => {
                let mut entry =
                    json!({ "role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) } });
                if !calls.is_empty() {
                    entry["tool_calls"] = calls
                        .iter()
                        .map(|call| {
                            json!({ "id": call.id, "type": "function", "function": { "name": call.name, "arguments": call.raw } })
                        })
                        .collect();
                }
                messages.push(entry);
            }
            Message::Results(results) => {
                for result in results {
                    let content =
                        if result.is_error { format!("error: {}", result.content) } else { result.content.clone() };
                    messages.push(json!({ "role": "tool", "tool_call_id": result.call_id, "content": content }));
                }
            }
        }
    }
    let tools: Vec<Value> = request
        .tools
        .iter()
        .map(|t| json!({ "type": "function", "function": { "name": t.name, "description": t.description, "parameters": t.parameters } }))
        .collect();
    // Every answer calls a tool: the loop ends with a submit tool, never with prose.
    let mut body = json!({ "model": request.model, "messages": messages, "tools": tools, "tool_choice": "required" });
    // OpenAI's and Azure's own APIs want `max_completion_tokens` (newer models refuse
    // `max_tokens`); the servers that mimic them know `max_tokens`.
    let azure = model.base_url.contains(".openai.azure.com");
    let limit = if model.base_url.contains("api.openai.com") || azure { "max_completion_tokens" } else { "max_tokens" };
    body[limit] = json!(request.max_tokens);
    let auth = (!model.api_key.is_empty()).then(|| match azure {
        true => ("api-key".to_owned(), model.api_key.clone()),
        false => ("authorization".to_owned(), format!("Bearer {}", model.api_key)),
    });
    HttpRequest { url: format!("{}/chat/completions", model.base_url), headers: Vec::new(), auth, body }
}

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    model: String,
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: AssistantMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct AssistantMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireCall>>,
}

#[derive(Deserialize)]
struct WireCall {
    /// Some compatible servers leave it out.
    #[serde(default)]
    id: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    /// A JSON string (OpenAI), or an object (some compatible servers).
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

/// A successful answer's body.
pub(crate) fn decode(body: &str) -> Result<ChatResponse, String> {
    let completion: Completion =
        serde_json::from_str(body).map_err(|e| format!("the answer is not a chat completion: {e}"))?;
    let choice = completion.choices.into_iter().next().ok_or("the answer has no choices")?;
    let calls = choice
        .message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(n, call)| {
            let raw = match call.function.arguments {
                Some(Value::String(text)) => text,
                Some(Value::Null) | None => "{}".to_owned(),
                Some(object) => object.to_string(),
            };
            let arguments = serde_json::from_str::<Value>(&raw).map_err(|e| e.to_string());
            let id = call.id.filter(|id| !id.is_empty()).unwrap_or_else(|| format!("call_{n}"));
            ToolCall { id, name: call.function.name, raw: Value::String(raw), arguments }
        })
        .collect();
    let usage = completion.usage.map_or_else(TokenUsage::default, |u| {
        let cached = u.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0).min(u.prompt_tokens);
        TokenUsage {
            input: u.prompt_tokens - cached,
            cached_input: cached,
            cache_write: 0,
            output: u.completion_tokens,
        }
    });
    Ok(ChatResponse {
        text: choice.message.content.unwrap_or_default(),
        calls,
        usage,
        finish: choice.finish_reason.unwrap_or_default(),
        model: completion.model,
    })
}

fn tokens(u: Usage) -> TokenUsage {
    let cached = u.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0).min(u.prompt_tokens);
    TokenUsage { input: u.prompt_tokens - cached, cached_input: cached, cache_write: 0, output: u.completion_tokens }
}

/// The usage block of an answer that could not be read otherwise: what it was billed.
pub(crate) fn usage_of(body: &str) -> Option<TokenUsage> {
    let value: Value = serde_json::from_str(body).ok()?;
    serde_json::from_value::<Usage>(value.get("usage")?.clone()).ok().map(tokens)
}

/// The message of an error answer (`{"error": {"message": ...}}`), if it has one.
pub(crate) fn error_message(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    let error = value.get("error")?;
    error.get("message").and_then(Value::as_str).map(str::to_owned).or_else(|| error.as_str().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::chat::{ToolResult, ToolSpec};
    use crate::llm::config::Provider;

    #[test]
    fn a_conversation_is_encoded_as_chat_messages() {
        let model = ModelConfig::new(Provider::OpenAi, "gpt-4.1", "sk-test");
        let calls = vec![ToolCall {
            id: "call_1".into(),
            name: "read_file".into(),
            raw: json!("{\"path\":\"a.py\"}"),
            arguments: Ok(json!({ "path": "a.py" })),
        }];
        let messages = [
            Message::Assistant { text: String::new(), calls },
            Message::Results(vec![ToolResult { call_id: "call_1".into(), content: "nope".into(), is_error: true }]),
        ];
        let tools = [ToolSpec { name: "read_file", description: "Read", parameters: json!({ "type": "object" }) }];
        let request = ChatRequest {
            model: "gpt-4.1",
            system: "sys",
            context: "ctx",
            messages: &messages,
            tools: &tools,
            max_tokens: 100,
        };
        let http = encode(&model, &request);
        assert_eq!(http.url, "https://api.openai.com/v1/chat/completions");
        assert_eq!(http.auth, Some(("authorization".into(), "Bearer sk-test".into())));
        let body = &http.body;
        assert_eq!(body["messages"][0], json!({ "role": "system", "content": "sys" }));
        assert_eq!(body["messages"][2]["tool_calls"][0]["function"]["arguments"], "{\"path\":\"a.py\"}");
        assert_eq!(body["messages"][3], json!({ "role": "tool", "tool_call_id": "call_1", "content": "error: nope" }));
        assert_eq!((&body["max_completion_tokens"], &body["tool_choice"]), (&json!(100), &json!("required")));
        let azure = encode(
            &ModelConfig::new(Provider::OpenAi, "m", "k").at("https://acme.openai.azure.com/openai/v1"),
            &request,
        );
        assert_eq!(azure.auth, Some(("api-key".into(), "k".into())));
        let local = encode(&ModelConfig::new(Provider::OpenAi, "m", "").at("http://localhost:11434/v1"), &request);
        assert_eq!((local.auth, &local.body["max_tokens"]), (None, &json!(100)));
    }

    #[test]
    fn an_answer_is_decoded_with_its_usage() {
        let body = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4.1-2025-04-14",
            "choices": [{ "index": 0, "finish_reason": "tool_calls", "message": { "role": "assistant", "content": null,
                "tool_calls": [{ "id": "call_9", "type": "function", "function": { "name": "search", "arguments": "{\"pattern\":" } }] } }],
            "usage": { "prompt_tokens": 1200, "completion_tokens": 30, "total_tokens": 1230,
                "prompt_tokens_details": { "cached_tokens": 1024 } }
        });
        let answer = decode(&body.to_string()).unwrap();
        assert_eq!(answer.usage, TokenUsage { input: 176, cached_input: 1024, cache_write: 0, output: 30 });
        assert_eq!((answer.finish.as_str(), answer.model.as_str()), ("tool_calls", "gpt-4.1-2025-04-14"));
        assert!(answer.calls[0].arguments.is_err(), "broken arguments are kept for the model to repair");
        // Lenient with compatible servers: no id, arguments as an object.
        let lenient = json!({ "choices": [{ "message": { "tool_calls": [{ "function": { "name": "list_files", "arguments": {} } }] } }] });
        let answer = decode(&lenient.to_string()).unwrap();
        assert_eq!((answer.calls[0].id.as_str(), &answer.calls[0].arguments), ("call_0", &Ok(json!({}))));
        assert_eq!(usage_of(&body.to_string()).map(|u| u.output), Some(30));
        assert_eq!(error_message(r#"{"error":{"message":"bad","type":"x"}}"#).as_deref(), Some("bad"));
    }
}
