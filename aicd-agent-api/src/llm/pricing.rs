//! What model calls cost: a price table per model, built in for common OpenAI and Anthropic
//! models and extended from a TOML file.

use std::collections::HashMap;

use serde::Deserialize;

use super::chat::TokenUsage;

/// A model's prices, in US dollars per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Input tokens read fresh.
    pub input_per_mtok: f64,
    /// Output tokens.
    pub output_per_mtok: f64,
    /// Input tokens read from the prompt cache (`None`: the input price).
    #[serde(default)]
    pub cached_input_per_mtok: Option<f64>,
    /// Input tokens written to the prompt cache (`None`: the input price; Anthropic charges
    /// 1.25 times it, which the built-in table says).
    #[serde(default)]
    pub cache_write_per_mtok: Option<f64>,
}

impl Price {
    const fn new(input: f64, output: f64, cached: f64) -> Self {
        Self {
            input_per_mtok: input,
            output_per_mtok: output,
            cached_input_per_mtok: Some(cached),
            cache_write_per_mtok: None,
        }
    }

    const fn with_cache_write(mut self, write: f64) -> Self {
        self.cache_write_per_mtok = Some(write);
        self
    }

    /// What `usage` costs, in micro-dollars, rounded up.
    pub(crate) fn cost_micros(&self, usage: &TokenUsage) -> u64 {
        // Dollars per million tokens are micro-dollars per token.
        let cost = usage.input as f64 * self.input_per_mtok
            + usage.cached_input as f64 * self.cached_input_per_mtok.unwrap_or(self.input_per_mtok)
            + usage.cache_write as f64 * self.cache_write_per_mtok.unwrap_or(self.input_per_mtok)
            + usage.output as f64 * self.output_per_mtok;
        if cost.is_finite() && cost > 0.0 { cost.ceil().min(u64::MAX as f64) as u64 } else { 0 }
    }

    fn is_valid(&self) -> bool {
        let ok = |p: f64| p.is_finite() && p >= 0.0;
        ok(self.input_per_mtok)
            && ok(self.output_per_mtok)
            && self.cached_input_per_mtok.is_none_or(ok)
            && self.cache_write_per_mtok.is_none_or(ok)
    }
}

/// Prices by model name. A name with a date suffix (`claude-sonnet-4-5-20250929`,
/// `gpt-4o-2024-08-06`) or `-latest` takes its base name's price unless it has its own.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PriceTable {
    prices: HashMap<String, Price>,
}

/// The built-in prices (list prices, US dollars per million tokens).
const BUILTIN: &[(&str, Price)] = &[
    ("gpt-5", Price::new(1.25, 10.0, 0.125)),
    ("gpt-5-mini", Price::new(0.25, 2.0, 0.025)),
    ("gpt-5-nano", Price::new(0.05, 0.4, 0.005)),
    ("gpt-4.1", Price::new(2.0, 8.0, 0.5)),
    ("gpt-4.1-mini", Price::new(0.4, 1.6, 0.1)),
    ("gpt-4.1-nano", Price::new(0.1, 0.4, 0.025)),
    ("gpt-4o", Price::new(2.5, 10.0, 1.25)),
    ("gpt-4o-mini", Price::new(0.15, 0.6, 0.075)),
    ("o3", Price::new(2.0, 8.0, 0.5)),
    ("o4-mini", Price::new(1.1, 4.4, 0.275)),
    ("claude-opus-4-1", Price::new(15.0, 75.0, 1.5).with_cache_write(18.75)),
    ("claude-opus-4", Price::new(15.0, 75.0, 1.5).with_cache_write(18.75)),
    ("claude-sonnet-4-5", Price::new(3.0, 15.0, 0.3).with_cache_write(3.75)),
    ("claude-sonnet-4", Price::new(3.0, 15.0, 0.3).with_cache_write(3.75)),
    ("claude-3-7-sonnet", Price::new(3.0, 15.0, 0.3).with_cache_write(3.75)),
    ("claude-haiku-4-5", Price::new(1.0, 5.0, 0.1).with_cache_write(1.25)),
    ("claude-3-5-haiku", Price::new(0.8, 4.0, 0.08).with_cache_write(1.0)),
];

/// A prices file: `[models."<model>"]` tables of [`Price`] fields.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PricesFile {
    #[serde(default)]
    models: HashMap<String, Price>,
}

impl PriceTable {
    /// The built-in prices of common OpenAI and Anthropic models.
    pub fn builtin() -> Self {
        Self { prices: BUILTIN.iter().map(|(name, price)| ((*name).to_owned(), *price)).collect() }
    }

    /// No prices at all.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The same table with `price` for `model` (replacing any).
    #[must_use]
    pub fn with(mut self, model: impl Into<String>, price: Price) -> Self {
        self.prices.insert(model.into(), price);
        self
    }

    /// The same table extended, and overridden, by a prices file's text:
    ///
    /// ```toml
    /// [models."my-model"]
    /// input_per_mtok = 0.5
    /// output_per_mtok = 1.5
    /// cached_input_per_mtok = 0.05   # optional
    /// ```
    ///
    /// A readable error names what is wrong.
    pub fn extended_by_toml(mut self, text: &str) -> Result<Self, String> {
        let file: PricesFile = toml::from_str(text).map_err(|e| format!("invalid prices file: {e}"))?;
        for (model, price) in file.models {
            if !price.is_valid() {
                return Err(format!("invalid prices file: the prices of `{model}` must be numbers of at least 0"));
            }
            self.prices.insert(model, price);
        }
        Ok(self)
    }

    /// The price of `model`, by its name or its base name (without a date or `-latest`).
    pub fn get(&self, model: &str) -> Option<&Price> {
        self.prices.get(model).or_else(|| self.prices.get(base_name(model)))
    }
}

/// `model` without a trailing date (`-20250929`, `-2024-08-06`) or `-latest`.
fn base_name(model: &str) -> &str {
    if let Some(base) = model.strip_suffix("-latest") {
        return base;
    }
    let bytes = model.as_bytes();
    let is_date = |s: &str| {
        s.bytes().all(|b| b.is_ascii_digit() || b == b'-') && s.bytes().filter(u8::is_ascii_digit).count() == 8
    };
    for len in [9, 11] {
        if bytes.len() > len && bytes[bytes.len() - len] == b'-' && is_date(&model[model.len() - len + 1..]) {
            return &model[..model.len() - len];
        }
    }
    model
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_priced_per_kind_of_token_and_rounded_up() {
        let table = PriceTable::builtin();
        let sonnet = table.get("claude-sonnet-4-5-20250929").unwrap();
        let usage = TokenUsage { input: 1_000, cached_input: 10_000, cache_write: 2_000, output: 500 };
        // 1000*3 + 10000*0.3 + 2000*3.75 + 500*15 = 3000 + 3000 + 7500 + 7500
        assert_eq!(sonnet.cost_micros(&usage), 21_000);
        let mini = table.get("gpt-4o-mini-2024-07-18").unwrap();
        assert_eq!(mini.cost_micros(&TokenUsage { input: 1, output: 1, ..Default::default() }), 1, "rounded up");
        assert_eq!(table.get("gpt-4.1-latest"), table.get("gpt-4.1"));
        assert!(table.get("llama3.1:8b").is_none());
    }

    #[test]
    fn a_prices_file_extends_and_overrides() {
        let text = "[models.\"llama3.1:8b\"]\ninput_per_mtok = 0\noutput_per_mtok = 0\n\n\
                    [models.\"gpt-4.1\"]\ninput_per_mtok = 1.0\noutput_per_mtok = 4.0\ncached_input_per_mtok = 0.25\n";
        let table = PriceTable::builtin().extended_by_toml(text).unwrap();
        assert_eq!(table.get("llama3.1:8b").unwrap().cost_micros(&TokenUsage { input: 9, ..Default::default() }), 0);
        assert_eq!(table.get("gpt-4.1").unwrap().input_per_mtok, 1.0);
        for bad in
            ["[models.x]\ninput_per_mtok = 1\n", "[models.x]\ninput_per_mtok = -1\noutput_per_mtok = 1\n", "junk"]
        {
            assert!(PriceTable::empty().extended_by_toml(bad).is_err(), "{bad}");
        }
    }
}
