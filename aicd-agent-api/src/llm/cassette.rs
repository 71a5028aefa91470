//! Recorded interactions with a provider, replayed in tests without a network.
//!
//! A cassette is one JSON file per scenario: the ordered requests (method, path, the SHA-256 of
//! the canonical JSON body, and the body itself, to show what differs when a request does not
//! match) and the responses (status, the headers that matter, body). Cassettes never hold a key:
//! request headers are not recorded, and of the response's only `content-type`, `retry-after`
//! and `retry-after-ms` are.
//!
//! [`RecordingTransport`] writes cassettes from a real provider; a replayer (the test kit's)
//! serves them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::transport::{HttpReply, HttpRequest, Transport, TransportError};

/// The response headers a cassette keeps.
const KEPT_HEADERS: [&str; 3] = ["content-type", "retry-after", "retry-after-ms"];

/// A scenario's recorded interactions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cassette {
    /// What the scenario shows.
    pub scenario: String,
    /// Where the cassette comes from (a real provider and model, or "written by hand in the
    /// provider's documented response shapes").
    pub source: String,
    /// The interactions, in order.
    pub interactions: Vec<Interaction>,
}

/// One request and its response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    /// The request.
    pub request: RecordedRequest,
    /// The response.
    pub response: RecordedResponse,
}

/// A request as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// `POST`.
    pub method: String,
    /// The URL's path (`/v1/messages`).
    pub path: String,
    /// The SHA-256 (hex) of [`canonical`] of the body.
    pub body_sha256: String,
    /// The body.
    pub body: Value,
}

/// A response as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedResponse {
    /// The status code.
    pub status: u16,
    /// The kept headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body: JSON when it was JSON, else a string.
    pub body: Value,
}

impl Cassette {
    /// Reads a cassette file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{} is not a cassette: {e}", path.display()))
    }

    /// Writes the cassette, pretty-printed.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

impl RecordedRequest {
    /// The record of `request`.
    pub fn of(request: &HttpRequest) -> Self {
        Self {
            method: "POST".into(),
            path: request.path().to_owned(),
            body_sha256: body_hash(&request.body),
            body: request.body.clone(),
        }
    }
}

impl RecordedResponse {
    /// The record of `reply`.
    pub fn of(reply: &HttpReply) -> Self {
        let headers = reply
            .headers
            .iter()
            .filter(|(name, _)| KEPT_HEADERS.contains(&name.as_str()))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        let body = serde_json::from_str(&reply.body).unwrap_or_else(|_| Value::String(reply.body.clone()));
        Self { status: reply.status, headers, body }
    }

    /// The body as sent: JSON text, or the string itself.
    pub fn body_text(&self) -> String {
        match &self.body {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        }
    }
}

/// `value` as JSON text with object keys sorted and no spaces: the same for equal values.
pub fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let members: Vec<String> =
                keys.into_iter().map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&map[k]))).collect();
            format!("{{{}}}", members.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// The hex SHA-256 of [`canonical`] of `body`.
pub fn body_hash(body: &Value) -> String {
    hex::encode(Sha256::digest(canonical(body).as_bytes()))
}

/// A [`Transport`] that sends through another and records every exchange.
pub struct RecordingTransport {
    inner: Arc<dyn Transport>,
    recorded: Mutex<Vec<Interaction>>,
}

impl RecordingTransport {
    /// Records what goes through `inner`.
    pub fn new(inner: Arc<dyn Transport>) -> Self {
        Self { inner, recorded: Mutex::default() }
    }

    /// The cassette of what was recorded so far.
    pub fn cassette(&self, scenario: impl Into<String>, source: impl Into<String>) -> Cassette {
        Cassette {
            scenario: scenario.into(),
            source: source.into(),
            interactions: self.recorded.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        }
    }
}

#[async_trait::async_trait]
impl Transport for RecordingTransport {
    async fn post(&self, request: &HttpRequest) -> Result<HttpReply, TransportError> {
        let reply = self.inner.post(request).await?;
        let interaction = Interaction { request: RecordedRequest::of(request), response: RecordedResponse::of(&reply) };
        self.recorded.lock().unwrap_or_else(PoisonError::into_inner).push(interaction);
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_ignores_key_order() {
        let a = json!({ "b": 1, "a": [ { "y": true, "x": null } ] });
        let b = json!({ "a": [ { "x": null, "y": true } ], "b": 1 });
        assert_eq!(canonical(&a), r#"{"a":[{"x":null,"y":true}],"b":1}"#);
        assert_eq!(body_hash(&a), body_hash(&b));
    }

    #[test]
    fn recordings_keep_no_key() {
        let request = HttpRequest {
            url: "https://api.example.test/v1/messages".into(),
            headers: vec![("anthropic-version".into(), "2023-06-01".into())],
            auth: Some(("x-api-key".into(), "sk-ant-secret".into())),
            body: json!({ "model": "m" }),
        };
        let reply = HttpReply {
            status: 429,
            headers: vec![("retry-after".into(), "2".into()), ("set-cookie".into(), "s=1".into())],
            body: "{\"type\":\"error\"}".into(),
        };
        let interaction =
            Interaction { request: RecordedRequest::of(&request), response: RecordedResponse::of(&reply) };
        let text = serde_json::to_string(&interaction).unwrap();
        assert!(!text.contains("sk-ant-secret") && !text.contains("set-cookie"), "{text}");
        assert_eq!(interaction.request.path, "/v1/messages");
        assert_eq!(interaction.response.headers["retry-after"], "2");
    }
}
