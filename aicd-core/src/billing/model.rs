//! Billing's domain types: pricing modes, meters, accounts and the outbox.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{JobId, OrgId};

/// How an organization is billed: which facts are metered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PricingMode {
    /// Per token: input and output tokens on two meters.
    Tokens,
    /// Per unit of agent cost, in micro-units of currency.
    Cost,
    /// Per pull request opened.
    PullRequests,
    /// Per pull request merged (outcome pricing): a pull request closed without merging is never
    /// metered, so there is nothing to credit.
    MergedPullRequests,
}

impl PricingMode {
    /// The stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tokens => "tokens",
            Self::Cost => "cost",
            Self::PullRequests => "pull_requests",
            Self::MergedPullRequests => "merged_pull_requests",
        }
    }

    /// The meters this mode sends to.
    pub fn meters(self) -> &'static [Meter] {
        match self {
            Self::Tokens => &[Meter::InputTokens, Meter::OutputTokens],
            Self::Cost => &[Meter::CostMicros],
            Self::PullRequests => &[Meter::PullRequests],
            Self::MergedPullRequests => &[Meter::MergedPullRequests],
        }
    }
}

impl fmt::Display for PricingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PricingMode {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        Ok(match s {
            "tokens" => Self::Tokens,
            "cost" => Self::Cost,
            "pull_requests" => Self::PullRequests,
            "merged_pull_requests" => Self::MergedPullRequests,
            other => {
                return Err(crate::Error::invalid(format!(
                    "unknown pricing mode `{other}`: expected tokens, cost, pull_requests or merged_pull_requests"
                )));
            }
        })
    }
}

/// What one outbox row counts. Each has its own meter at the provider, named by configuration
/// ([`MeterNames`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Meter {
    /// Input tokens of agent calls.
    InputTokens,
    /// Output tokens of agent calls.
    OutputTokens,
    /// Agent cost, in micro-units.
    CostMicros,
    /// Pull requests opened.
    PullRequests,
    /// Pull requests merged.
    MergedPullRequests,
}

impl Meter {
    /// Every meter.
    pub const ALL: [Meter; 5] =
        [Self::InputTokens, Self::OutputTokens, Self::CostMicros, Self::PullRequests, Self::MergedPullRequests];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InputTokens => "input_tokens",
            Self::OutputTokens => "output_tokens",
            Self::CostMicros => "cost_micros",
            Self::PullRequests => "pull_requests",
            Self::MergedPullRequests => "merged_pull_requests",
        }
    }
}

impl fmt::Display for Meter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Meter {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| crate::Error::Corrupt(format!("unknown billing meter `{s}`")))
    }
}

/// The provider's event name of each meter (configuration: `AICD_STRIPE_METER_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterNames {
    /// Input tokens (default `aicd_input_tokens`).
    pub input_tokens: String,
    /// Output tokens (default `aicd_output_tokens`).
    pub output_tokens: String,
    /// Cost in micro-units (default `aicd_cost_micros`).
    pub cost_micros: String,
    /// Pull requests opened (default `aicd_pull_requests`).
    pub pull_requests: String,
    /// Pull requests merged (default `aicd_merged_pull_requests`).
    pub merged_pull_requests: String,
}

impl Default for MeterNames {
    fn default() -> Self {
        Self {
            input_tokens: "aicd_input_tokens".into(),
            output_tokens: "aicd_output_tokens".into(),
            cost_micros: "aicd_cost_micros".into(),
            pull_requests: "aicd_pull_requests".into(),
            merged_pull_requests: "aicd_merged_pull_requests".into(),
        }
    }
}

impl MeterNames {
    /// The event name of `meter`.
    pub fn name(&self, meter: Meter) -> &str {
        match meter {
            Meter::InputTokens => &self.input_tokens,
            Meter::OutputTokens => &self.output_tokens,
            Meter::CostMicros => &self.cost_micros,
            Meter::PullRequests => &self.pull_requests,
            Meter::MergedPullRequests => &self.merged_pull_requests,
        }
    }
}

/// An organization's billing account, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BillingAccount {
    /// The organization.
    pub org_id: OrgId,
    /// How it is billed.
    pub mode: PricingMode,
    /// Its customer at the provider, once created.
    pub customer_id: Option<String>,
    /// Its subscription, as the provider's webhooks last reported it.
    pub subscription: Option<Subscription>,
    /// When a payment failed and has not been settled since.
    pub payment_failed_at: Option<DateTime<Utc>>,
    /// The most the organization lets itself spend per calendar month (UTC), in micro-units.
    pub spend_cap_micros: Option<u64>,
    /// When the account was opened.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl BillingAccount {
    /// Whether the subscription entitles the organization to use the service beyond the free
    /// allowance (active or trialing).
    pub fn subscribed(&self) -> bool {
        self.subscription.as_ref().is_some_and(|s| matches!(s.status.as_str(), "active" | "trialing"))
    }
}

/// A subscription at the provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Subscription {
    /// The provider's id (`sub_...`).
    pub id: String,
    /// Its status as the provider names it (`active`, `trialing`, `past_due`, `canceled`, ...).
    pub status: String,
    /// When the current period ends.
    pub current_period_end: Option<DateTime<Utc>>,
    /// The ids of the prices subscribed to (`price_...`): the plan.
    pub prices: Vec<String>,
}

/// Where an outbox row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxStatus {
    /// Not yet acknowledged by the provider.
    Pending,
    /// Acknowledged.
    Sent,
    /// Refused for good (or its outcome could no longer be told apart from a repeat): the
    /// operator decides.
    Parked,
}

impl OutboxStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Parked => "parked",
        }
    }
}

impl FromStr for OutboxStatus {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "pending" => Ok(Self::Pending),
            "sent" => Ok(Self::Sent),
            "parked" => Ok(Self::Parked),
            other => Err(crate::Error::Corrupt(format!("unknown outbox status `{other}`"))),
        }
    }
}

/// One billable fact waiting in (or gone through) the outbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutboxEntry {
    /// The row's id; the provider's identifier of the event is derived from it
    /// ([`OutboxEntry::identifier`]).
    pub id: uuid::Uuid,
    /// The organization billed.
    pub org_id: OrgId,
    /// The job the fact belongs to.
    pub job_id: Option<JobId>,
    /// What it counts.
    pub meter: Meter,
    /// How many units.
    pub value: i64,
    /// When the fact happened.
    pub occurred_at: DateTime<Utc>,
    /// Where it is.
    pub status: OutboxStatus,
    /// How many times it was claimed for sending.
    pub attempts: u32,
    /// Why it was last refused or failed, if it was.
    pub last_error: Option<String>,
    /// The lease epoch it was claimed under (the fence of its acknowledgement).
    pub epoch: i64,
    /// When it was first sent.
    pub first_sent_at: Option<DateTime<Utc>>,
}

impl OutboxEntry {
    /// The provider's idempotency identifier of this fact: the same for every send of the row.
    pub fn identifier(&self) -> String {
        format!("aicd_{}", self.id.simple())
    }
}

/// What is not yet acknowledged for one organization and meter (`aicd-server billing reconcile`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReconcileLine {
    /// The organization.
    pub org_id: OrgId,
    /// The meter.
    pub meter: Meter,
    /// Pending or parked.
    pub status: OutboxStatus,
    /// How many rows.
    pub rows: u64,
    /// Their total value.
    pub total: i64,
    /// The oldest fact among them.
    pub oldest: DateTime<Utc>,
    /// The last error of one of them, if any.
    pub last_error: Option<String>,
}
