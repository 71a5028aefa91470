//! How the LLM agent is set up: which model serves each role, and the limits of its loop and
//! its HTTP calls.

use std::fmt;
use std::time::Duration;

use super::pricing::PriceTable;
use super::prompts::Prompts;

/// The wire protocol of a model provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    /// OpenAI's Chat Completions (`POST {base}/chat/completions`): OpenAI, Azure OpenAI,
    /// OpenRouter, LiteLLM, vLLM, Ollama, llama.cpp's server.
    OpenAi,
    /// Anthropic's Messages (`POST {base}/v1/messages`).
    Anthropic,
}

impl Provider {
    /// The name used in configuration (`openai`, `anthropic`).
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
        }
    }

    /// The vendor's own base URL.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Provider::OpenAi => "https://api.openai.com/v1",
            Provider::Anthropic => "https://api.anthropic.com",
        }
    }
}

impl std::str::FromStr for Provider {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "openai" => Ok(Provider::OpenAi),
            "anthropic" => Ok(Provider::Anthropic),
            other => Err(format!("unknown LLM provider `{other}` (expected openai or anthropic)")),
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One model at one provider: what serves a role.
#[derive(Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// The provider's protocol.
    pub provider: Provider,
    /// Where it is served, without a trailing `/` (the vendor's by default).
    pub base_url: String,
    /// The API key; empty for servers that need none (a local Ollama). Never printed.
    pub api_key: String,
    /// The model's name at the provider.
    pub model: String,
}

impl ModelConfig {
    /// `model` at `provider`'s own address, with `api_key`.
    pub fn new(provider: Provider, model: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self {
            provider,
            base_url: provider.default_base_url().to_owned(),
            api_key: api_key.into(),
            model: model.into(),
        }
    }

    /// The same model served at `base_url`.
    #[must_use]
    pub fn at(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into().trim_end_matches('/').to_owned();
        self
    }

    /// Whether it is served from this machine (a loopback address), where models are free.
    pub fn is_local(&self) -> bool {
        let rest = self.base_url.split_once("://").map_or(self.base_url.as_str(), |(_, rest)| rest);
        let host = rest.split(['/', '?']).next().unwrap_or_default();
        let host = host.rsplit_once('@').map_or(host, |(_, host)| host);
        let host = if host.starts_with('[') {
            host.trim_start_matches('[').split(']').next().unwrap_or_default()
        } else {
            host.split(':').next().unwrap_or_default()
        };
        host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// `provider model` for messages (`openai gpt-4.1`).
    pub fn label(&self) -> String {
        format!("{} {}", self.provider, self.model)
    }
}

impl fmt::Debug for ModelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelConfig")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("api_key", &if self.api_key.is_empty() { "" } else { "[REDACTED]" })
            .field("model", &self.model)
            .finish()
    }
}

/// How the agent's HTTP calls behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    /// Connecting times out after this.
    pub connect_timeout: Duration,
    /// A whole request times out after this (a long answer takes a while).
    pub request_timeout: Duration,
    /// Retries of one request after a 429, a 5xx or a timeout.
    pub max_retries: u32,
    /// The first retry's delay; each next one doubles, with jitter, up to `max_backoff`.
    pub base_backoff: Duration,
    /// The longest delay between retries (and the longest `retry-after` waited for in place;
    /// longer ones are handed to the orchestrator).
    pub max_backoff: Duration,
    /// Failed requests in a row to one provider address after which its circuit opens.
    pub breaker_threshold: u32,
    /// How long an open circuit fails fast before one request may try again.
    pub breaker_cooldown: Duration,
}

impl Default for HttpSettings {
    /// 10 s to connect, 300 s per request, 3 retries from 1 s up to 20 s, a circuit that opens
    /// after 5 failures in a row for 30 s.
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(300),
            max_retries: 3,
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(20),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

/// Everything the [`LlmAgent`](super::LlmAgent) needs.
#[derive(Clone, Debug)]
pub struct LlmConfig {
    /// The coder's model, and the others' unless they have their own.
    pub coder: ModelConfig,
    /// The planner's model (`None`: the coder's).
    pub planner: Option<ModelConfig>,
    /// The critic's model (`None`: the coder's); it may be another vendor's.
    pub critic: Option<ModelConfig>,
    /// Turns (model answers) a step may take before it fails.
    pub max_turns: u32,
    /// The most tokens one answer may have (less when the budget has less left).
    pub max_output_tokens: u64,
    /// Prices per model.
    pub prices: PriceTable,
    /// The instructions of each role.
    pub prompts: Prompts,
    /// HTTP behaviour.
    pub http: HttpSettings,
}

impl LlmConfig {
    /// The default turns per step.
    pub const DEFAULT_MAX_TURNS: u32 = 30;
    /// The default most tokens per answer.
    pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 8192;

    /// `coder` for every role, with the built-in prices and prompts and default limits.
    pub fn new(coder: ModelConfig) -> Self {
        Self {
            coder,
            planner: None,
            critic: None,
            max_turns: Self::DEFAULT_MAX_TURNS,
            max_output_tokens: Self::DEFAULT_MAX_OUTPUT_TOKENS,
            prices: PriceTable::builtin(),
            prompts: Prompts::builtin(),
            http: HttpSettings::default(),
        }
    }

    /// The models of the planner, coder and critic, in that order.
    pub fn models(&self) -> [&ModelConfig; 3] {
        [self.planner.as_ref().unwrap_or(&self.coder), &self.coder, self.critic.as_ref().unwrap_or(&self.coder)]
    }

    /// Checks that every model can be priced (or is served locally, which is free), so budgets
    /// can be enforced; says which cannot and how to price it otherwise.
    pub fn check_prices(&self) -> Result<(), String> {
        for model in self.models() {
            if !model.is_local() && self.prices.get(&model.model).is_none() {
                return Err(format!(
                    "the model `{}` has no price: add it to a prices file (AICD_LLM_PRICES_PATH) as \
                     [models.\"{}\"] with input_per_mtok and output_per_mtok (US dollars per million tokens)",
                    model.model, model.model
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_servers_are_recognised() {
        let local = |url: &str| ModelConfig::new(Provider::OpenAi, "m", "").at(url).is_local();
        for url in
            ["http://localhost:11434/v1", "http://127.0.0.1:8080", "http://[::1]:8000/v1", "http://u@localhost/v1"]
        {
            assert!(local(url), "{url}");
        }
        for url in ["https://api.openai.com/v1", "http://10.0.0.2:8000", "http://localhost.example.com"] {
            assert!(!local(url), "{url}");
        }
    }

    #[test]
    fn the_key_is_never_printed() {
        let model = ModelConfig::new(Provider::Anthropic, "claude-sonnet-4-5", "sk-ant-secret");
        assert!(!format!("{model:?}").contains("secret"));
        assert_eq!(model.base_url, "https://api.anthropic.com");
        assert_eq!("OpenAI".parse::<Provider>(), Ok(Provider::OpenAi));
        assert!("bard".parse::<Provider>().is_err());
    }

    #[test]
    fn unpriced_remote_models_are_refused() {
        let mut config = LlmConfig::new(ModelConfig::new(Provider::OpenAi, "gpt-4.1", "k"));
        assert!(config.check_prices().is_ok());
        config.critic = Some(ModelConfig::new(Provider::OpenAi, "mystery-1", "k"));
        assert!(config.check_prices().unwrap_err().contains("mystery-1"));
        config.critic = Some(ModelConfig::new(Provider::OpenAi, "mystery-1", "").at("http://localhost:11434/v1"));
        assert!(config.check_prices().is_ok(), "local models are free");
    }
}
