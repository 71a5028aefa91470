//! Billing on [`Core`]: entitlements checked before new work starts, the organization's billing
//! view, its spend cap and the provider's portal.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::Serialize;

use super::model::{BillingAccount, MeterNames, PricingMode, Subscription};
use super::store::PeriodUsage;
use crate::tenancy::{Actor, Permission};
use crate::{Core, Error, OrgId, Result};

/// How a deployment bills (configuration: `AICD_BILLING_*`, `AICD_STRIPE_*`). Without it
/// ([`crate::CoreOptions::billing`] `None`) nothing is metered and nothing is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillingOptions {
    /// The pricing mode of an organization's account when it is opened.
    pub default_mode: PricingMode,
    /// Jobs an organization without an active subscription may create per calendar month (UTC);
    /// `None`: no limit on jobs.
    pub free_jobs_per_month: Option<u64>,
    /// Agent cost an organization without an active subscription may spend per calendar month, in
    /// micro-units; `None`: no limit on cost.
    pub free_cost_micros_per_month: Option<u64>,
    /// How long after a failed payment new jobs are still accepted.
    pub grace_period: std::time::Duration,
    /// The highest monthly spend cap of any organization, in micro-units (an org admin may set a
    /// lower one); `None`: none.
    pub plan_spend_cap_micros: Option<u64>,
    /// The provider's event names of the meters.
    pub meters: MeterNames,
}

impl Default for BillingOptions {
    fn default() -> Self {
        Self {
            default_mode: PricingMode::Tokens,
            free_jobs_per_month: Some(20),
            free_cost_micros_per_month: Some(5_000_000),
            grace_period: std::time::Duration::from_secs(7 * 24 * 3600),
            plan_spend_cap_micros: None,
            meters: MeterNames::default(),
        }
    }
}

/// An organization's billing, as its admins see it (`GET /v1/orgs/{org_id}/billing`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BillingStatus {
    /// How the organization is billed.
    pub mode: PricingMode,
    /// Whether it has a customer at the payment provider.
    pub has_customer: bool,
    /// Its subscription's status (`active`, `trialing`, `past_due`, `canceled`, ...), if any.
    pub subscription_status: Option<String>,
    /// The plan: the ids of the prices its subscription is to (empty without one).
    pub plan: Vec<String>,
    /// When the subscription's current period ends.
    pub current_period_end: Option<DateTime<Utc>>,
    /// When a payment failed that has not been settled since.
    pub payment_failed_at: Option<DateTime<Utc>>,
    /// The first instant of the calendar month (UTC) that allowances and caps count.
    pub period_start: DateTime<Utc>,
    /// Jobs created this month.
    pub period_jobs: u64,
    /// Agent cost this month, in micro-units.
    pub period_cost_micros: u64,
    /// Jobs left in the free allowance this month; `None` when subscribed or unlimited.
    pub free_jobs_left: Option<u64>,
    /// Cost left in the free allowance this month; `None` when subscribed or unlimited.
    pub free_cost_micros_left: Option<u64>,
    /// The organization's own monthly spend cap.
    pub spend_cap_micros: Option<u64>,
    /// The deployment's highest monthly spend cap.
    pub plan_spend_cap_micros: Option<u64>,
    /// Whether new jobs are accepted now.
    pub accepting_jobs: bool,
    /// Why not, when they are not.
    pub refusal: Option<String>,
}

/// The first instant of `at`'s calendar month, UTC.
pub(crate) fn month_start(at: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0).single().unwrap_or(at)
}

fn money(micros: u64) -> String {
    format!("{}.{:02}", micros / 1_000_000, (micros % 1_000_000) / 10_000)
}

impl Core {
    /// Makes the payment provider available to the billing services (the customer portal,
    /// customers created on demand).
    pub fn with_billing(mut self, billing: std::sync::Arc<dyn super::Billing>) -> Self {
        self.billing = Some(billing);
        self
    }

    /// The payment provider, if one is configured.
    pub fn billing_provider(&self) -> Option<&std::sync::Arc<dyn super::Billing>> {
        self.billing.as_ref()
    }

    /// The organization's billing account, opened with the deployment's default mode if it has
    /// none yet. `None` when the deployment does not bill.
    pub async fn billing_account(&self, org: OrgId) -> Result<Option<BillingAccount>> {
        let Some(options) = &self.options.billing else { return Ok(None) };
        if let Some(account) = self.store.billing_account(org).await? {
            return Ok(Some(account));
        }
        self.store.open_billing_account(org, options.default_mode).await.map(Some)
    }

    /// Whether the organization may start new work now: `Ok`, or [`Error::PaymentRequired`]
    /// saying what was reached and where to fix it. Work already running is never stopped by
    /// this. Always `Ok` when the deployment does not bill.
    pub async fn check_entitlement(&self, org: OrgId) -> Result<()> {
        let Some(account) = self.billing_account(org).await? else { return Ok(()) };
        let now = crate::store::now();
        let usage = self.store.usage_since(org, month_start(now)).await?;
        match self.refusal(org, &account, usage, now) {
            Some((code, message)) => Err(Error::PaymentRequired { code, message }),
            None => Ok(()),
        }
    }

    fn refusal(
        &self,
        org: OrgId,
        account: &BillingAccount,
        usage: PeriodUsage,
        now: DateTime<Utc>,
    ) -> Option<(&'static str, String)> {
        let options = self.options.billing.as_ref()?;
        let fix = format!("an org admin can fix it on the organization's billing page (/v1/orgs/{org}/billing)");
        let grace = chrono::Duration::from_std(options.grace_period).unwrap_or(chrono::Duration::days(7));
        if let Some(failed) = account.payment_failed_at.filter(|at| *at + grace <= now) {
            return Some((
                "payment_required",
                format!(
                    "a payment failed on {} and is still unpaid, so new jobs are not accepted; {fix}",
                    failed.format("%Y-%m-%d")
                ),
            ));
        }
        let cap = match (account.spend_cap_micros, options.plan_spend_cap_micros) {
            (Some(own), Some(plan)) => Some(own.min(plan)),
            (own, plan) => own.or(plan),
        };
        if let Some(cap) = cap.filter(|cap| usage.cost_micros >= *cap) {
            return Some((
                "quota_exceeded",
                format!("this month's spend cap of {} is reached, so new jobs are not accepted; {fix}", money(cap)),
            ));
        }
        if account.subscribed() {
            return None;
        }
        if let Some(jobs) = options.free_jobs_per_month.filter(|n| usage.jobs >= *n) {
            return Some((
                "quota_exceeded",
                format!(
                    "the free allowance of {jobs} {} this month is used up; subscribe to continue: {fix}",
                    if jobs == 1 { "job" } else { "jobs" }
                ),
            ));
        }
        if let Some(cost) = options.free_cost_micros_per_month.filter(|n| usage.cost_micros >= *n) {
            return Some((
                "quota_exceeded",
                format!("the free allowance of {} this month is used up; subscribe to continue: {fix}", money(cost)),
            ));
        }
        None
    }

    /// The organization's billing as its admins see it. [`Error::NotFound`] (`billing`) when the
    /// deployment does not bill.
    pub async fn billing_status(&self, actor: &Actor, org: OrgId) -> Result<BillingStatus> {
        self.authorize(actor, org, Permission::BillingManage)?;
        let account = self.billing_account(org).await?.ok_or(Error::not_found("billing"))?;
        let options = self.options.billing.as_ref().ok_or(Error::not_found("billing"))?;
        let now = crate::store::now();
        let period_start = month_start(now);
        let usage = self.store.usage_since(org, period_start).await?;
        let refusal = self.refusal(org, &account, usage, now);
        let free = |allowance: Option<u64>, used: u64| {
            allowance.filter(|_| !account.subscribed()).map(|n| n.saturating_sub(used))
        };
        let subscription = account.subscription.clone();
        Ok(BillingStatus {
            mode: account.mode,
            has_customer: account.customer_id.is_some(),
            current_period_end: subscription.as_ref().and_then(|s| s.current_period_end),
            plan: subscription.as_ref().map(|s| s.prices.clone()).unwrap_or_default(),
            subscription_status: subscription.map(|s| s.status),
            payment_failed_at: account.payment_failed_at,
            period_start,
            period_jobs: usage.jobs,
            period_cost_micros: usage.cost_micros,
            free_jobs_left: free(options.free_jobs_per_month, usage.jobs),
            free_cost_micros_left: free(options.free_cost_micros_per_month, usage.cost_micros),
            spend_cap_micros: account.spend_cap_micros,
            plan_spend_cap_micros: options.plan_spend_cap_micros,
            accepting_jobs: refusal.is_none(),
            refusal: refusal.map(|(_, message)| message),
        })
    }

    /// Sets (or, with `None`, removes) the organization's monthly spend cap; it may not be above
    /// the deployment's ([`Error::InvalidInput`] naming it).
    pub async fn set_spend_cap(&self, actor: &Actor, org: OrgId, cap_micros: Option<u64>) -> Result<BillingStatus> {
        self.authorize(actor, org, Permission::BillingManage)?;
        let options = self.options.billing.as_ref().ok_or(Error::not_found("billing"))?;
        if let (Some(cap), Some(plan)) = (cap_micros, options.plan_spend_cap_micros)
            && cap > plan
        {
            return Err(Error::invalid(format!(
                "spend_cap_micros must be at most {plan}, this deployment's monthly cap"
            )));
        }
        self.billing_account(org).await?;
        self.store.set_spend_cap(org, cap_micros).await?;
        self.billing_status(actor, org).await
    }

    /// The organization's customer at the payment provider, created on first need (idempotently:
    /// concurrent callers end up with the same customer).
    pub async fn billing_customer(&self, org: OrgId) -> Result<String> {
        let provider = self.billing.clone().ok_or(Error::not_found("billing"))?;
        let account = self.billing_account(org).await?.ok_or(Error::not_found("billing"))?;
        if let Some(customer) = account.customer_id {
            return Ok(customer);
        }
        let name = match self.store.get_org(org).await {
            Ok(org) => org.name,
            Err(Error::NotFound { .. }) => format!("deleted organization {org}"),
            Err(err) => return Err(err),
        };
        let customer = provider.create_customer(org, &name).await.map_err(provider_error)?;
        self.store.set_billing_customer(org, &customer).await
    }

    /// A short-lived URL of the payment provider's portal for the organization (payment method,
    /// invoices, subscription), returning to `return_url`.
    pub async fn billing_portal(&self, actor: &Actor, org: OrgId, return_url: &str) -> Result<String> {
        self.authorize(actor, org, Permission::BillingManage)?;
        let provider = self.billing.clone().ok_or(Error::not_found("billing"))?;
        let customer = self.billing_customer(org).await?;
        provider.portal_session(&customer, return_url).await.map_err(provider_error)
    }
}

impl Core {
    /// Applies a verified provider webhook event once (see [`super::BillingStore::apply_billing_event`]):
    /// subscription changes, settled and failed payments, and deleted customers change the
    /// account they name; other events are recorded and ignored. Works whether or not this
    /// replica bills (the event is the provider's truth either way).
    pub async fn apply_billing_webhook(&self, event: &super::webhook::StripeEvent) -> Result<super::EventOutcome> {
        use super::AccountChange;
        use super::webhook::BillingChange;
        let (customer, change) = match &event.change {
            BillingChange::Subscription { customer, subscription, status, current_period_end, price_ids } => (
                customer,
                AccountChange::Subscription(Subscription {
                    id: subscription.clone(),
                    status: status.as_str().to_owned(),
                    current_period_end: *current_period_end,
                    prices: price_ids.clone(),
                }),
            ),
            BillingChange::InvoicePaid { customer, .. } => (customer, AccountChange::PaymentSucceeded),
            BillingChange::InvoicePaymentFailed { customer, .. } => {
                (customer, AccountChange::PaymentFailed { at: event.created })
            }
            BillingChange::CustomerDeleted { customer } => (customer, AccountChange::CustomerDeleted),
            _ => {
                let new = self.store.record_billing_event(&event.id, &event.kind).await?;
                return Ok(if new { super::EventOutcome::Ignored } else { super::EventOutcome::Duplicate });
            }
        };
        self.store.apply_billing_event(&event.id, &event.kind, event.created, customer, change).await
    }
}

/// A provider failure in the core's words.
pub(crate) fn provider_error(err: super::BillingError) -> Error {
    match err {
        super::BillingError::Transient { message, retry_after } => {
            Error::Unavailable { service: "billing", message, retry_after }
        }
        super::BillingError::Permanent { message } => Error::Rejected { service: "billing", message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_month_starts_on_the_first_at_midnight_utc() {
        let at = Utc.with_ymd_and_hms(2026, 12, 17, 13, 4, 5).unwrap();
        assert_eq!(month_start(at), Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        assert_eq!(money(12_345_678), "12.34");
    }
}
