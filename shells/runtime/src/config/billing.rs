//! Billing's settings (`AICD_STRIPE_*`, `AICD_BILLING_*`): on when `AICD_STRIPE_SECRET_KEY` is set.

use aicd_core::billing::{BillingOptions, MeterNames, PricingMode};

use super::reader::{Reader, shorten};
use super::secret::Secret;

/// The most a count or amount of the billing settings may be (far from overflow).
const MAX_AMOUNT: u64 = 1_000_000_000_000_000;

/// How the deployment bills, through Stripe.
#[derive(Clone, Debug)]
pub struct BillingSettings {
    /// The Stripe API key (`AICD_STRIPE_SECRET_KEY`: `sk_live_`/`rk_live_`, or `sk_test_`/`rk_test_`
    /// outside production).
    pub secret_key: Secret,
    /// What Stripe signs webhook events with (`AICD_STRIPE_WEBHOOK_SECRET`, `whsec_...`); without it
    /// `/webhooks/stripe` answers 503.
    pub webhook_secret: Option<Secret>,
    /// The previous webhook secret while it is rolled (`AICD_STRIPE_WEBHOOK_SECRET_PREVIOUS`).
    pub previous_webhook_secret: Option<Secret>,
    /// Stripe's API base URL (`AICD_STRIPE_API_URL`; tests and proxies change it).
    pub api_url: String,
    /// Where the customer portal returns to (`AICD_BILLING_PORTAL_RETURN_URL`; default the public
    /// URL).
    pub portal_return_url: Option<String>,
    /// The billing rules' settings (mode, allowances, grace period, cap, meter names).
    pub options: BillingOptions,
}

impl BillingSettings {
    /// The secrets, to scrub from messages.
    pub(crate) fn secrets(&self) -> impl Iterator<Item = &Secret> {
        std::iter::once(&self.secret_key).chain(&self.webhook_secret).chain(&self.previous_webhook_secret)
    }

    /// The effective value of an `AICD_STRIPE_*` or `AICD_BILLING_*` variable, for `config check`.
    pub(crate) fn effective(&self, name: &str) -> Option<String> {
        let o = &self.options;
        let meters = &o.meters;
        Some(match name {
            "AICD_STRIPE_SECRET_KEY" => String::new(),
            "AICD_STRIPE_WEBHOOK_SECRET" => self.webhook_secret.as_ref().map(|_| String::new())?,
            "AICD_STRIPE_WEBHOOK_SECRET_PREVIOUS" => self.previous_webhook_secret.as_ref().map(|_| String::new())?,
            "AICD_STRIPE_API_URL" => self.api_url.clone(),
            "AICD_STRIPE_METER_INPUT_TOKENS" => meters.input_tokens.clone(),
            "AICD_STRIPE_METER_OUTPUT_TOKENS" => meters.output_tokens.clone(),
            "AICD_STRIPE_METER_COST" => meters.cost_micros.clone(),
            "AICD_STRIPE_METER_PRS" => meters.pull_requests.clone(),
            "AICD_STRIPE_METER_MERGED_PRS" => meters.merged_pull_requests.clone(),
            "AICD_BILLING_MODE" => o.default_mode.as_str().to_owned(),
            "AICD_BILLING_FREE_JOBS" => o.free_jobs_per_month.map_or("unlimited".into(), |n| n.to_string()),
            "AICD_BILLING_FREE_COST_MICROS" => {
                o.free_cost_micros_per_month.map_or("unlimited".into(), |n| n.to_string())
            }
            "AICD_BILLING_GRACE_DAYS" => (o.grace_period.as_secs() / (24 * 3600)).to_string(),
            "AICD_BILLING_MAX_MONTHLY_COST_MICROS" => o.plan_spend_cap_micros?.to_string(),
            "AICD_BILLING_PORTAL_RETURN_URL" => self.portal_return_url.clone()?,
            _ => return None,
        })
    }
}

/// Reads billing's settings: `None` without `AICD_STRIPE_SECRET_KEY` (and then the other
/// billing variables must be unset too, so a half-configured deployment is noticed).
pub(crate) fn read(r: &mut Reader<'_>, production: bool) -> Option<BillingSettings> {
    let Some(key) = r.get("AICD_STRIPE_SECRET_KEY").map(|k| k.trim().to_owned()) else {
        for name in super::variables().iter().map(|v| v.name) {
            if (name.starts_with("AICD_STRIPE_") || name.starts_with("AICD_BILLING_")) && r.get(name).is_some() {
                r.problem(format!("{name} is set but AICD_STRIPE_SECRET_KEY is not: billing is off without it"));
            }
        }
        return None;
    };
    let live = key.starts_with("sk_live_") || key.starts_with("rk_live_");
    let test = key.starts_with("sk_test_") || key.starts_with("rk_test_");
    if !live && !test {
        r.problem("AICD_STRIPE_SECRET_KEY must be a Stripe secret or restricted key (sk_live_, rk_live_, sk_test_ or rk_test_)");
    } else if production && test {
        r.problem("AICD_STRIPE_SECRET_KEY is a test-mode key; production needs a live key (sk_live_ or rk_live_)");
    }
    let webhook_secret = read_webhook_secret(r, "AICD_STRIPE_WEBHOOK_SECRET");
    let previous_webhook_secret = read_webhook_secret(r, "AICD_STRIPE_WEBHOOK_SECRET_PREVIOUS");
    if previous_webhook_secret.is_some() && webhook_secret.is_none() {
        r.problem("AICD_STRIPE_WEBHOOK_SECRET_PREVIOUS needs AICD_STRIPE_WEBHOOK_SECRET (the new secret)");
    }
    let api_url = r
        .http_url("AICD_STRIPE_API_URL", production, "Stripe is reached over https in production")
        .map_or_else(|| "https://api.stripe.com".to_owned(), |url| url.trim_end_matches('/').to_owned());
    let portal_return_url =
        r.http_url("AICD_BILLING_PORTAL_RETURN_URL", production, "the portal returns to a page over https");
    let default_mode = match r.get("AICD_BILLING_MODE") {
        None => PricingMode::Tokens,
        Some(mode) => mode.trim().parse().unwrap_or_else(|_| {
            r.problem(format!(
                "AICD_BILLING_MODE must be tokens, cost, pull_requests or merged_pull_requests (got `{}`)",
                shorten(&mode)
            ));
            PricingMode::Tokens
        }),
    };
    let defaults = BillingOptions::default();
    let free_jobs_per_month = allowance(r, "AICD_BILLING_FREE_JOBS", defaults.free_jobs_per_month);
    let free_cost_micros_per_month = allowance(r, "AICD_BILLING_FREE_COST_MICROS", defaults.free_cost_micros_per_month);
    let grace_days = r.number("AICD_BILLING_GRACE_DAYS", 7, 0, 365, "days");
    let plan_spend_cap_micros = r
        .get("AICD_BILLING_MAX_MONTHLY_COST_MICROS")
        .map(|_| r.number("AICD_BILLING_MAX_MONTHLY_COST_MICROS", 0, 1, MAX_AMOUNT, "micro-units"));
    let mut meter = |name: &str, default: String| match r.get(name).map(|v| v.trim().to_owned()) {
        None => default,
        Some(value) if valid_event_name(&value) => value,
        Some(value) => {
            r.problem(format!(
                "{name} must be a Stripe meter event name: 1 to 100 letters, digits, `_`, `-` or `.` (got `{}`)",
                shorten(&value)
            ));
            default
        }
    };
    let names = MeterNames::default();
    let meters = MeterNames {
        input_tokens: meter("AICD_STRIPE_METER_INPUT_TOKENS", names.input_tokens),
        output_tokens: meter("AICD_STRIPE_METER_OUTPUT_TOKENS", names.output_tokens),
        cost_micros: meter("AICD_STRIPE_METER_COST", names.cost_micros),
        pull_requests: meter("AICD_STRIPE_METER_PRS", names.pull_requests),
        merged_pull_requests: meter("AICD_STRIPE_METER_MERGED_PRS", names.merged_pull_requests),
    };
    Some(BillingSettings {
        secret_key: Secret::new(key),
        webhook_secret,
        previous_webhook_secret,
        api_url,
        portal_return_url,
        options: BillingOptions {
            default_mode,
            free_jobs_per_month,
            free_cost_micros_per_month,
            grace_period: std::time::Duration::from_secs(grace_days * 24 * 3600),
            plan_spend_cap_micros,
            meters,
        },
    })
}

fn read_webhook_secret(r: &mut Reader<'_>, name: &str) -> Option<Secret> {
    let secret = r.get(name)?.trim().to_owned();
    if !secret.starts_with("whsec_") || secret.len() < 20 {
        r.problem(format!("{name} must be the endpoint's signing secret from Stripe (whsec_...)"));
    }
    Some(Secret::new(secret))
}

/// A monthly allowance: a number, or `unlimited`.
fn allowance(r: &mut Reader<'_>, name: &str, default: Option<u64>) -> Option<u64> {
    match r.get(name).map(|v| v.trim().to_ascii_lowercase()) {
        None => default,
        Some(v) if v == "unlimited" => None,
        Some(_) => Some(r.number(name, 0, 0, MAX_AMOUNT, "per month")),
    }
}

fn valid_event_name(name: &str) -> bool {
    (1..=100).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}
