//! The LLM agent's settings (`AICD_AGENT=llm`, `AICD_LLM_*`, `AICD_AGENT_PROMPTS_DIR`).

use std::path::PathBuf;

use aicd_agent_api::llm::{LlmConfig, ModelConfig, PriceTable, Prompts, Provider};

use super::reader::{Reader, shorten};
use super::secret::Secret;

/// One role's model (`AICD_LLM_*`, `AICD_LLM_PLANNER_*`, `AICD_LLM_CRITIC_*`).
#[derive(Clone, Debug)]
pub struct LlmModel {
    /// The provider's protocol.
    pub provider: Provider,
    /// Where it is served.
    pub base_url: String,
    /// The API key (empty for a local server).
    pub api_key: Secret,
    /// The model's name.
    pub model: String,
}

impl LlmModel {
    /// As the agent takes it.
    pub fn to_model_config(&self) -> ModelConfig {
        ModelConfig::new(self.provider, self.model.clone(), self.api_key.expose()).at(self.base_url.clone())
    }
}

/// Everything the LLM agent is built from.
#[derive(Clone, Debug)]
pub struct LlmSettings {
    /// The coder's model, and the others' unless they have their own.
    pub coder: LlmModel,
    /// The planner's, when it differs.
    pub planner: Option<LlmModel>,
    /// The critic's, when it differs.
    pub critic: Option<LlmModel>,
    /// Turns a step may take (`AICD_LLM_MAX_TURNS`).
    pub max_turns: u32,
    /// Most tokens per answer (`AICD_LLM_MAX_OUTPUT_TOKENS`).
    pub max_output_tokens: u64,
    /// The prices file (`AICD_LLM_PRICES_PATH`), when one extends the built-in table.
    pub prices_path: Option<PathBuf>,
    /// The prompts directory (`AICD_AGENT_PROMPTS_DIR`), when one overrides the built-in ones.
    pub prompts_dir: Option<PathBuf>,
    /// The prices, loaded.
    pub prices: PriceTable,
    /// The prompts, loaded.
    pub prompts: Prompts,
}

impl LlmSettings {
    /// The agent's configuration (default HTTP behaviour).
    pub fn to_llm_config(&self) -> LlmConfig {
        let mut config = LlmConfig::new(self.coder.to_model_config());
        config.planner = self.planner.as_ref().map(LlmModel::to_model_config);
        config.critic = self.critic.as_ref().map(LlmModel::to_model_config);
        config.max_turns = self.max_turns;
        config.max_output_tokens = self.max_output_tokens;
        config.prices = self.prices.clone();
        config.prompts = self.prompts.clone();
        config
    }

    /// The API keys, to scrub from messages.
    pub(crate) fn secrets(&self) -> impl Iterator<Item = &Secret> {
        std::iter::once(&self.coder)
            .chain(self.planner.as_ref())
            .chain(self.critic.as_ref())
            .map(|m| &m.api_key)
            .filter(|k| !k.expose().is_empty())
    }

    /// The effective value of an `AICD_LLM_*` variable, for `config check`.
    pub(crate) fn effective(&self, name: &str) -> Option<String> {
        let role = |prefix: &str| match prefix {
            "AICD_LLM_PLANNER_" => self.planner.as_ref(),
            "AICD_LLM_CRITIC_" => self.critic.as_ref(),
            _ => Some(&self.coder),
        };
        for prefix in ["AICD_LLM_PLANNER_", "AICD_LLM_CRITIC_", "AICD_LLM_"] {
            if let Some(suffix) = name.strip_prefix(prefix) {
                let model = role(prefix)?;
                return Some(match suffix {
                    "PROVIDER" => model.provider.as_str().to_owned(),
                    "BASE_URL" => model.base_url.clone(),
                    "API_KEY" => String::new(),
                    "MODEL" => model.model.clone(),
                    "MAX_TURNS" if prefix == "AICD_LLM_" => self.max_turns.to_string(),
                    "MAX_OUTPUT_TOKENS" if prefix == "AICD_LLM_" => self.max_output_tokens.to_string(),
                    "PRICES_PATH" if prefix == "AICD_LLM_" => self.prices_path.as_ref()?.display().to_string(),
                    _ => return None,
                });
            }
        }
        match name {
            "AICD_AGENT_PROMPTS_DIR" => Some(self.prompts_dir.as_ref()?.display().to_string()),
            _ => None,
        }
    }
}

/// Reads the LLM agent's settings, recording every problem.
pub(crate) fn read(r: &mut Reader<'_>) -> Option<LlmSettings> {
    let coder = read_model(r, "AICD_LLM_", None);
    let planner = read_override(r, "AICD_LLM_PLANNER_", coder.as_ref());
    let critic = read_override(r, "AICD_LLM_CRITIC_", coder.as_ref());
    let max_turns = u32::try_from(r.number("AICD_LLM_MAX_TURNS", 30, 1, 500, "turns")).unwrap_or(30);
    let max_output_tokens = r.number("AICD_LLM_MAX_OUTPUT_TOKENS", 8192, 256, 1_000_000, "tokens");
    let prices_path = r.get("AICD_LLM_PRICES_PATH").map(PathBuf::from);
    let mut prices = PriceTable::builtin();
    if let Some(path) = &prices_path {
        match std::fs::read_to_string(path) {
            Ok(text) => match prices.clone().extended_by_toml(&text) {
                Ok(table) => prices = table,
                Err(why) => r.problem(format!("AICD_LLM_PRICES_PATH ({}): {why}", path.display())),
            },
            Err(e) => r.problem(format!("AICD_LLM_PRICES_PATH: cannot read {}: {e}", path.display())),
        }
    }
    let prompts_dir = r.get("AICD_AGENT_PROMPTS_DIR").map(PathBuf::from);
    let prompts = match &prompts_dir {
        Some(dir) if !dir.is_dir() => {
            r.problem(format!("AICD_AGENT_PROMPTS_DIR: {} is not a directory", dir.display()));
            Prompts::builtin()
        }
        Some(dir) => Prompts::from_dir(dir).unwrap_or_else(|why| {
            r.problem(format!("AICD_AGENT_PROMPTS_DIR: {why}"));
            Prompts::builtin()
        }),
        None => Prompts::builtin(),
    };
    let settings = LlmSettings {
        coder: coder?,
        planner,
        critic,
        max_turns,
        max_output_tokens,
        prices_path,
        prompts_dir,
        prices,
        prompts,
    };
    // A paid platform cannot enforce budgets it cannot price.
    if let Err(why) = settings.to_llm_config().check_prices() {
        r.problem(format!("AICD_LLM_MODEL: {why}"));
    }
    Some(settings)
}

/// A role's model under `prefix`; unset values come from `inherit` (the coder's) when the
/// provider is the same.
fn read_model(r: &mut Reader<'_>, prefix: &str, inherit: Option<&LlmModel>) -> Option<LlmModel> {
    let var = |suffix: &str| format!("{prefix}{suffix}");
    let provider = match r.get(&var("PROVIDER")) {
        Some(raw) => match raw.parse::<Provider>() {
            Ok(provider) => Some(provider),
            Err(why) => {
                r.problem(format!("{}: {why}", var("PROVIDER")));
                None
            }
        },
        None => match inherit {
            Some(coder) => Some(coder.provider),
            None => {
                r.problem("AICD_LLM_PROVIDER is required with AICD_AGENT=llm (openai or anthropic)");
                None
            }
        },
    }?;
    let same = inherit.filter(|c| c.provider == provider);
    let base_url = match r.http_url(&var("BASE_URL"), false, "") {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => same.map_or_else(|| provider.default_base_url().to_owned(), |c| c.base_url.clone()),
    };
    let model = match r.get(&var("MODEL")).map(|m| m.trim().to_owned()) {
        Some(model) if model.len() <= 200 && !model.contains(char::is_whitespace) => Some(model),
        Some(model) => {
            r.problem(format!("{} must be a model name (got `{}`)", var("MODEL"), shorten(&model)));
            None
        }
        None => match same {
            Some(coder) => Some(coder.model.clone()),
            None => {
                r.problem(format!("{} is required (the model's name at {provider})", var("MODEL")));
                None
            }
        },
    }?;
    let api_key = r.get(&var("API_KEY")).map(|k| k.trim().to_owned());
    let api_key = api_key.or_else(|| same.filter(|c| c.base_url == base_url).map(|c| c.api_key.expose().to_owned()));
    let api_key = Secret::new(api_key.unwrap_or_default());
    let candidate = LlmModel { provider, base_url, api_key, model };
    if candidate.api_key.expose().is_empty() && !candidate.to_model_config().is_local() {
        r.problem(format!(
            "{} is required for {} (only a server on this machine may go without a key)",
            var("API_KEY"),
            candidate.base_url
        ));
    }
    Some(candidate)
}

/// A role's own model, when any of its variables is set.
fn read_override(r: &mut Reader<'_>, prefix: &str, coder: Option<&LlmModel>) -> Option<LlmModel> {
    let set = ["PROVIDER", "BASE_URL", "API_KEY", "MODEL"].iter().any(|s| r.get(&format!("{prefix}{s}")).is_some());
    if !set {
        return None;
    }
    read_model(r, prefix, coder)
}
