//! One HTTP exchange with a provider. The agent sends JSON and reads the answer; how bytes move
//! is a [`Transport`]: reqwest in production, a recording wrapper when cassettes are made.

use std::time::Duration;

use serde_json::Value;

/// A request to a provider. `Debug` never shows the key.
#[derive(Clone)]
pub struct HttpRequest {
    /// The full URL.
    pub url: String,
    /// Headers that carry no secret (`anthropic-version`).
    pub headers: Vec<(String, String)>,
    /// The header that carries the API key, if any (`authorization`, `x-api-key`). Never logged
    /// or recorded.
    pub auth: Option<(String, String)>,
    /// The JSON body.
    pub body: Value,
}

impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRequest")
            .field("url", &self.url)
            .field("headers", &self.headers)
            .field("auth", &self.auth.as_ref().map(|(name, _)| (name, "[REDACTED]")))
            .field("body", &self.body)
            .finish()
    }
}

impl HttpRequest {
    /// The URL's path and query (`/v1/messages`), as cassettes record it.
    pub fn path(&self) -> &str {
        let rest = self.url.split_once("://").map_or(self.url.as_str(), |(_, rest)| rest);
        rest.find('/').map_or("/", |i| &rest[i..])
    }
}

/// A provider's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body, as text.
    pub body: String,
}

impl HttpReply {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Why no answer came.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The request took longer than allowed.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The provider could not be reached, or the exchange broke off.
    #[error("{0}")]
    Failed(String),
}

/// Sends requests to providers. Implementations must be cheap to share across tasks.
#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    /// Sends `request` (a POST with a JSON body) and returns the answer, whatever its status.
    async fn post(&self, request: &HttpRequest) -> Result<HttpReply, TransportError>;
}

/// The [`Transport`] over reqwest, with connect and request timeouts. HTTPS uses rustls with the
/// process's crypto provider (`ring` is installed if there is none).
#[derive(Clone, Debug)]
pub struct HttpTransport {
    client: reqwest::Client,
}

impl HttpTransport {
    /// A transport whose connections time out after `connect_timeout` and whose requests time
    /// out after `request_timeout`.
    pub fn new(connect_timeout: Duration, request_timeout: Duration) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(request_timeout)
            .user_agent(concat!("aicd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self { client })
    }
}

#[async_trait::async_trait]
impl Transport for HttpTransport {
    async fn post(&self, request: &HttpRequest) -> Result<HttpReply, TransportError> {
        let mut builder = self.client.post(&request.url).json(&request.body);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some((name, value)) = &request.auth {
            let mut value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| TransportError::Failed("the API key cannot be sent in a header".into()))?;
            value.set_sensitive(true);
            builder = builder.header(name, value);
        }
        let response = builder.send().await.map_err(failure)?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(name, value)| Some((name.as_str().to_ascii_lowercase(), value.to_str().ok()?.to_owned())))
            .collect();
        let body = response.text().await.map_err(failure)?;
        Ok(HttpReply { status, headers, body })
    }
}

/// A reqwest error as a transport error, without the URL's query (which carries nothing secret
/// here, but is noise).
fn failure(error: reqwest::Error) -> TransportError {
    let timeout = error.is_timeout();
    let message = error.without_url().to_string();
    if timeout { TransportError::Timeout(message) } else { TransportError::Failed(message) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_not_in_debug_output() {
        let request = HttpRequest {
            url: "https://x/v1".into(),
            headers: vec![],
            auth: Some(("x-api-key".into(), "sk-ant-secret".into())),
            body: Value::Null,
        };
        let shown = format!("{request:?}");
        assert!(!shown.contains("sk-ant-secret") && shown.contains("x-api-key"), "{shown}");
    }

    #[test]
    fn the_path_is_what_follows_the_host() {
        let request = |url: &str| HttpRequest { url: url.into(), headers: vec![], auth: None, body: Value::Null };
        assert_eq!(request("https://api.anthropic.com/v1/messages").path(), "/v1/messages");
        assert_eq!(request("http://127.0.0.1:9/v1/chat/completions?x=1").path(), "/v1/chat/completions?x=1");
        assert_eq!(request("http://host").path(), "/");
    }
}
