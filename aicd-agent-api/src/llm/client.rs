//! Calling a provider with discipline: retries with exponential backoff and jitter on 429, 5xx
//! and timeouts (honouring `retry-after`), a circuit breaker per provider address, and errors a
//! person can read that never carry the API key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::AgentError;

use super::chat::{ChatRequest, ChatResponse, TokenUsage};
use super::config::{HttpSettings, ModelConfig, Provider};
use super::transport::{HttpReply, Transport};
use super::{anthropic, openai};

/// Sends chat requests to providers. Shared by the agent's roles, so a failing provider address
/// opens one circuit for all of them.
pub(crate) struct Client {
    transport: Arc<dyn Transport>,
    http: HttpSettings,
    breakers: Mutex<HashMap<String, Breaker>>,
}

#[derive(Default)]
struct Breaker {
    /// Failures in a row.
    failures: u32,
    /// Until when calls fail fast.
    open_until: Option<Instant>,
    /// After the cool-down, one call is let through to try; the others keep failing fast.
    trial: bool,
}

/// What a failure did to the breaker.
enum Tripped {
    /// Counted; the circuit is still closed.
    No,
    /// This failure opened the circuit.
    Opened,
    /// The trial after a cool-down failed: the circuit is open again.
    TrialFailed,
}

/// A failed chat call: why, and what the provider billed for it if anything (a 2xx answer
/// that could not be read is still paid for).
pub(crate) struct ChatFailure {
    pub(crate) error: AgentError,
    pub(crate) usage: Option<TokenUsage>,
}

impl From<AgentError> for ChatFailure {
    fn from(error: AgentError) -> Self {
        Self { error, usage: None }
    }
}

/// How a non-2xx answer is handled.
enum Failure {
    /// Retrying will not help.
    Permanent(String),
    /// The provider works but limits us: wait and retry (not a breaker failure).
    Limited { message: String, retry_after: Option<Duration> },
    /// The provider is failing: retry, and count it against the breaker.
    Failing { message: String, retry_after: Option<Duration> },
}

impl Client {
    pub(crate) fn new(transport: Arc<dyn Transport>, http: HttpSettings) -> Self {
        Self { transport, http, breakers: Mutex::default() }
    }

    /// Sends `request` to `model`, retrying what may pass. Errors: permanent for a refusal
    /// (400, 401, 403, 404, 422, an exhausted quota), transient once the retries are spent, when
    /// the provider asks for a longer wait than is waited in place, or when the trial after a
    /// pause fails; paused while the address's circuit is open (no request is made).
    pub(crate) async fn chat(
        &self,
        model: &ModelConfig,
        request: &ChatRequest<'_>,
    ) -> Result<ChatResponse, ChatFailure> {
        let key = format!("{} {}", model.provider, model.base_url);
        let wire = match model.provider {
            Provider::OpenAi => openai::encode(model, request),
            Provider::Anthropic => anthropic::encode(model, request),
        };
        let provider = format!("{} at {}", model.provider, shown_url(&model.base_url));
        let mut attempt = 0u32;
        loop {
            if let Some(wait) = self.open_for(&key) {
                return Err(self.paused(&provider, &key, wait).into());
            }
            let failure = match self.transport.post(&wire).await {
                Ok(reply) if (200..300).contains(&reply.status) => {
                    self.succeeded(&key);
                    let decoded = match model.provider {
                        Provider::OpenAi => openai::decode(&reply.body),
                        Provider::Anthropic => anthropic::decode(&reply.body),
                    };
                    return decoded.map_err(|why| {
                        let usage = match model.provider {
                            Provider::OpenAi => openai::usage_of(&reply.body),
                            Provider::Anthropic => anthropic::usage_of(&reply.body),
                        };
                        ChatFailure { error: AgentError::transient(format!("{provider} answered oddly: {why}")), usage }
                    });
                }
                Ok(reply) => classify(model, &provider, &reply),
                Err(error) => Failure::Failing {
                    message: format!("{provider} could not be reached: {}", redact(&error.to_string(), model)),
                    retry_after: None,
                },
            };
            let (message, asked) = match failure {
                Failure::Permanent(message) => return Err(AgentError::permanent(message).into()),
                Failure::Limited { message, retry_after } => (message, retry_after),
                Failure::Failing { message, retry_after } => match self.failed(&key) {
                    Tripped::No => (message, retry_after),
                    Tripped::Opened => {
                        tracing::warn!(provider = %model.provider, base_url = %shown_url(&model.base_url), "LLM provider failing; circuit open");
                        return Err(self.paused(&provider, &key, self.http.breaker_cooldown).into());
                    }
                    Tripped::TrialFailed => {
                        // A real attempt, so it counts: a provider that stays down fails its jobs
                        // in the end rather than pausing them for ever.
                        return Err(AgentError::Transient {
                            message: format!("{message} (still failing after a pause)"),
                            retry_after: Some(self.http.breaker_cooldown),
                        }
                        .into());
                    }
                },
            };
            // Workers told the same `retry-after` should not all come back at once.
            let wait = asked.map_or_else(|| self.backoff(attempt), |w| w + w.mul_f64(jitter() / 10.0));
            if attempt >= self.http.max_retries || wait > self.http.max_backoff {
                return Err(AgentError::Transient { message, retry_after: Some(wait) }.into());
            }
            tracing::debug!(provider = %model.provider, attempt, wait_ms = wait.as_millis() as u64, %message, "retrying an LLM call");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    fn paused(&self, provider: &str, key: &str, wait: Duration) -> AgentError {
        let failures = self.breakers.lock().unwrap_or_else(PoisonError::into_inner).get(key).map_or(0, |b| b.failures);
        AgentError::paused(
            format!(
                "{provider} failed {failures} times in a row; calls to it are paused for {}s",
                wait.as_secs().max(1)
            ),
            wait,
        )
    }

    /// How long the circuit of `key` is still open; `None` when a call may go. After the
    /// cool-down, one call (the first to ask) is let through as a trial; the others keep failing
    /// fast until it succeeds or fails.
    fn open_for(&self, key: &str) -> Option<Duration> {
        let mut breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        let breaker = breakers.get_mut(key)?;
        let until = breaker.open_until?;
        let now = Instant::now();
        if until > now {
            return Some(until - now);
        }
        if breaker.trial {
            return Some(self.http.breaker_cooldown.min(Duration::from_secs(1)));
        }
        breaker.trial = true;
        None
    }

    fn succeeded(&self, key: &str) {
        self.breakers.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
    }

    /// Counts a failure, and says what it did to the circuit.
    fn failed(&self, key: &str) -> Tripped {
        let mut breakers = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        let breaker = breakers.entry(key.to_owned()).or_default();
        breaker.failures += 1;
        let reopen = Some(Instant::now() + self.http.breaker_cooldown);
        if breaker.trial {
            breaker.trial = false;
            breaker.open_until = reopen;
            return Tripped::TrialFailed;
        }
        if breaker.open_until.is_none() && breaker.failures >= self.http.breaker_threshold {
            breaker.open_until = reopen;
            return Tripped::Opened;
        }
        Tripped::No
    }

    /// The delay before retry `attempt` (0 for the first): doubling from the base, at most the
    /// maximum, half of it random.
    fn backoff(&self, attempt: u32) -> Duration {
        let full = self.http.base_backoff.saturating_mul(1u32 << attempt.min(16)).min(self.http.max_backoff);
        full / 2 + full.mul_f64(jitter() / 2.0)
    }
}

/// `url` as shown in messages: without credentials (`user:pass@`) or a query.
pub(crate) fn shown_url(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (host, path) = rest.split_once('/').map_or((rest, ""), |(h, p)| (h, p));
            let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
            if path.is_empty() { format!("{scheme}://{host}") } else { format!("{scheme}://{host}/{path}") }
        }
        None => url.to_owned(),
    }
}

/// A number in [0, 1), different each call.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// What to do with a non-2xx answer.
fn classify(model: &ModelConfig, provider: &str, reply: &HttpReply) -> Failure {
    let said = match model.provider {
        Provider::OpenAi => openai::error_message(&reply.body),
        Provider::Anthropic => anthropic::error_message(&reply.body),
    };
    let said = redact(&said.unwrap_or_else(|| first_line(&reply.body)), model);
    let retry_after = retry_after(reply);
    // OpenAI says a spent quota with a 429 too; waiting does not bring money back.
    if reply.status == 429 && reply.body.contains("insufficient_quota") {
        return Failure::Permanent(format!("{provider} says the account's quota is used up (429): {said}"));
    }
    match reply.status {
        401 | 403 => Failure::Permanent(format!(
            "{provider} refused the API key ({}): {said} (check AICD_LLM_API_KEY)",
            reply.status
        )),
        404 => Failure::Permanent(format!(
            "{provider} answered 404 for the model `{}`: {said} (the model does not exist there, or the base URL is wrong)",
            model.model
        )),
        400 | 413 | 422 => Failure::Permanent(format!("{provider} refused the request ({}): {said}", reply.status)),
        429 => Failure::Limited { message: format!("{provider} is rate limiting (429): {said}"), retry_after },
        408 | 409 | 500..=599 => {
            Failure::Failing { message: format!("{provider} failed ({}): {said}", reply.status), retry_after }
        }
        other => Failure::Permanent(format!("{provider} answered {other}: {said}")),
    }
}

/// The wait a provider asked for: `retry-after-ms`, or `retry-after` in seconds.
fn retry_after(reply: &HttpReply) -> Option<Duration> {
    if let Some(ms) = reply.header("retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    let seconds = reply.header("retry-after")?.trim().parse::<f64>().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

fn first_line(body: &str) -> String {
    let line = body.lines().next().unwrap_or_default().trim();
    let line: String = line.chars().take(300).collect();
    if line.is_empty() { "(no message)".into() } else { line }
}

/// `text` without the API key, or anything that looks like one (a provider's error may quote a
/// masked key, `sk-abc...xyz`).
pub(crate) fn redact(text: &str, model: &ModelConfig) -> String {
    let mut text = text.to_owned();
    if model.api_key.len() >= 4 {
        text = text.replace(&model.api_key, "[redacted]");
    }
    text.split(' ')
        .map(|word| {
            let bare = word.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_' && c != '*');
            if bare.starts_with("sk-") && bare.len() > 6 { word.replace(bare, "[redacted]") } else { word.to_owned() }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str, headers: &[(&str, &str)]) -> HttpReply {
        HttpReply {
            status,
            headers: headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect(),
            body: body.into(),
        }
    }

    #[test]
    fn refusals_are_permanent_and_never_quote_the_key() {
        let model = ModelConfig::new(Provider::OpenAi, "gpt-4.1", "sk-proj-abcdef123456");
        let body = r#"{"error":{"message":"Incorrect API key provided: sk-proj-****3456. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        let provider = "openai at https://api.openai.com/v1";
        let Failure::Permanent(message) = classify(&model, provider, &reply(401, body, &[])) else {
            panic!("permanent")
        };
        assert!(message.contains("openai at https://api.openai.com/v1 refused the API key (401)"), "{message}");
        assert!(!message.contains("sk-proj") && !message.contains("3456"), "{message}");
        let Failure::Permanent(message) =
            classify(&model, provider, &reply(404, r#"{"error":{"message":"no such model"}}"#, &[]))
        else {
            panic!("permanent")
        };
        assert!(message.contains("the model `gpt-4.1`"), "{message}");
        let quota = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        assert!(matches!(classify(&model, provider, &reply(429, quota, &[])), Failure::Permanent(_)));
        assert_eq!(shown_url("https://user:pw@llm.example.com/v1?key=abc"), "https://llm.example.com/v1");
    }

    #[test]
    fn limits_and_failures_carry_the_wait_asked_for() {
        let model = ModelConfig::new(Provider::Anthropic, "claude-sonnet-4-5", "k");
        let provider = "anthropic at https://api.anthropic.com";
        let limited = classify(
            &model,
            provider,
            &reply(
                429,
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
                &[("retry-after", "7")],
            ),
        );
        assert!(matches!(limited, Failure::Limited { retry_after: Some(d), .. } if d == Duration::from_secs(7)));
        let overloaded = classify(
            &model,
            provider,
            &reply(529, r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#, &[]),
        );
        assert!(matches!(overloaded, Failure::Failing { .. }));
        let ms = reply(429, "", &[("retry-after-ms", "1500")]);
        assert_eq!(retry_after(&ms), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_jitter() {
        let http = HttpSettings {
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            ..HttpSettings::default()
        };
        let client = Client::new(
            Arc::new(
                super::super::transport::HttpTransport::new(Duration::from_secs(1), Duration::from_secs(1)).unwrap(),
            ),
            http,
        );
        for (attempt, full) in [(0, 100), (1, 200), (2, 400), (3, 500), (9, 500)] {
            let wait = client.backoff(attempt).as_millis() as u64;
            assert!(wait >= full / 2 && wait <= full, "attempt {attempt}: {wait}");
        }
    }
}
