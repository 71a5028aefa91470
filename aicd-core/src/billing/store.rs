//! [`BillingStore`]: billing accounts, the outbox of billable facts, and provider webhook events,
//! on [`SqlStore`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::model::{BillingAccount, Meter, OutboxEntry, OutboxStatus, PricingMode, ReconcileLine, Subscription};
use crate::store::SqlStore;
use crate::store::connect::Scope;
use crate::store::sql::{One, Tx, int, q};
use crate::{Error, JobId, OrgId, Result, UsageId};

/// What an organization used in a period, for its entitlements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeriodUsage {
    /// Jobs created.
    pub jobs: u64,
    /// Agent cost, in micro-units.
    pub cost_micros: u64,
}

/// How a claimed outbox row ends its attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// The provider acknowledged it.
    Sent,
    /// It failed in a way that may pass: claimable again from `run_after`.
    Retry {
        /// When to try again.
        run_after: DateTime<Utc>,
        /// What happened.
        error: String,
    },
    /// Refused for good: kept, with the reason, for the operator.
    Park {
        /// Why.
        reason: String,
    },
}

/// A change of an account's subscription, as the provider reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountChange {
    /// The subscription was created or changed (its status may be `canceled` when deleted).
    Subscription(Subscription),
    /// A payment succeeded: any failed one is settled.
    PaymentSucceeded,
    /// A payment failed at `at`.
    PaymentFailed {
        /// When the provider reported it.
        at: DateTime<Utc>,
    },
    /// The customer was deleted at the provider: the account forgets it and its subscription.
    CustomerDeleted,
}

/// What applying a provider event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventOutcome {
    /// The account of `org` changed.
    Applied {
        /// The organization whose account it was.
        org: OrgId,
    },
    /// The event was applied before (the same event id): nothing changed.
    Duplicate,
    /// No account has the event's customer: recorded, nothing changed.
    UnknownCustomer,
    /// An event billing does not act on: recorded, nothing changed.
    Ignored,
}

/// Billing's storage.
#[async_trait]
pub trait BillingStore: Send + Sync {
    /// The organization's billing account, if it has one.
    async fn billing_account(&self, org: OrgId) -> Result<Option<BillingAccount>>;
    /// Opens the organization's account with `mode` if it has none, and returns it as stored.
    async fn open_billing_account(&self, org: OrgId, mode: PricingMode) -> Result<BillingAccount>;
    /// Sets how the organization is billed from now on (facts already in the outbox keep the
    /// meter they were recorded for). [`Error::NotFound`] without an account.
    async fn set_pricing_mode(&self, org: OrgId, mode: PricingMode) -> Result<BillingAccount>;
    /// Sets (or, with `None`, removes) the organization's monthly spend cap.
    async fn set_spend_cap(&self, org: OrgId, cap_micros: Option<u64>) -> Result<BillingAccount>;
    /// Records the organization's customer at the provider unless it already has one; returns
    /// the customer the account holds afterwards.
    async fn set_billing_customer(&self, org: OrgId, customer: &str) -> Result<String>;
    /// Jobs created and cost spent by the organization since `since`.
    async fn usage_since(&self, org: OrgId, since: DateTime<Utc>) -> Result<PeriodUsage>;
    /// Claims up to `max` due, pending outbox rows of any organization for `worker`, for
    /// `lease`: each claim raises the row's epoch, which fences its settlement.
    async fn claim_outbox(&self, worker: &str, lease: chrono::Duration, max: usize) -> Result<Vec<OutboxEntry>>;
    /// Records that the meter events of these claimed rows are about to be sent (the first time
    /// starts the provider's deduplication window, [`crate::billing::DEDUPLICATION_WINDOW`]), for
    /// the rows `worker` still holds under the epoch it claimed them with.
    async fn begin_outbox_sends(&self, worker: &str, entries: &[OutboxEntry]) -> Result<()>;
    /// Settles claimed rows, each only if `worker` still holds it under the epoch it was claimed
    /// with; returns how many were settled.
    async fn settle_outbox(&self, worker: &str, settlements: &[(OutboxEntry, Settlement)]) -> Result<u64>;
    /// The organization's outbox rows, oldest first.
    async fn list_outbox(&self, org: OrgId) -> Result<Vec<OutboxEntry>>;
    /// What is not acknowledged yet, per organization, meter and status, across organizations.
    async fn reconcile_outbox(&self) -> Result<Vec<ReconcileLine>>;
    /// Applies a provider event (`event_id`, of type `kind`, created at `created`) about
    /// `customer`'s account once: an event id seen before is a [`EventOutcome::Duplicate`] and
    /// changes nothing, and a subscription change older than the one applied last is recorded but
    /// not applied (deliveries arrive out of order). The dedup record and the change are one
    /// transaction.
    async fn apply_billing_event(
        &self,
        event_id: &str,
        kind: &str,
        created: DateTime<Utc>,
        customer: &str,
        change: AccountChange,
    ) -> Result<EventOutcome>;
    /// Records a provider event that changes no account (so a redelivery is recognised); returns
    /// whether it was new.
    async fn record_billing_event(&self, event_id: &str, kind: &str) -> Result<bool>;
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    org_id: Uuid,
    mode: String,
    customer_id: Option<String>,
    subscription_id: Option<String>,
    subscription_status: Option<String>,
    subscription_prices: Option<String>,
    current_period_end: Option<DateTime<Utc>>,
    payment_failed_at: Option<DateTime<Utc>>,
    spend_cap_micros: Option<i64>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

macro_rules! account_columns {
    () => {
        "org_id, mode, customer_id, subscription_id, subscription_status, subscription_prices, current_period_end, \
         payment_failed_at, spend_cap_micros, created_at, updated_at"
    };
}

impl TryFrom<AccountRow> for BillingAccount {
    type Error = Error;
    fn try_from(r: AccountRow) -> Result<Self> {
        let subscription = match (r.subscription_id, r.subscription_status) {
            (Some(id), Some(status)) => Some(Subscription {
                id,
                status,
                current_period_end: r.current_period_end,
                prices: r
                    .subscription_prices
                    .as_deref()
                    .unwrap_or_default()
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect(),
            }),
            _ => None,
        };
        Ok(Self {
            org_id: r.org_id.into(),
            mode: r.mode.parse().map_err(|_| Error::Corrupt(format!("unknown pricing mode `{}`", r.mode)))?,
            customer_id: r.customer_id,
            subscription,
            payment_failed_at: r.payment_failed_at,
            spend_cap_micros: r.spend_cap_micros.map(|c| u64::try_from(c).unwrap_or(0)),
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: Uuid,
    org_id: Uuid,
    job_id: Option<Uuid>,
    meter: String,
    value: i64,
    occurred_at: DateTime<Utc>,
    status: String,
    attempts: i32,
    last_error: Option<String>,
    epoch: i64,
    first_sent_at: Option<DateTime<Utc>>,
}

macro_rules! outbox_columns {
    () => {
        "id, org_id, job_id, meter, value, occurred_at, status, attempts, last_error, epoch, first_sent_at"
    };
}

impl TryFrom<OutboxRow> for OutboxEntry {
    type Error = Error;
    fn try_from(r: OutboxRow) -> Result<Self> {
        Ok(Self {
            id: r.id,
            org_id: r.org_id.into(),
            job_id: r.job_id.map(JobId::from),
            meter: r.meter.parse()?,
            value: r.value,
            occurred_at: r.occurred_at,
            status: r.status.parse()?,
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            last_error: r.last_error,
            epoch: r.epoch,
            first_sent_at: r.first_sent_at,
        })
    }
}

/// Outbox rows of an agent call's usage for the org's account, in the mode it is billed in (none
/// without an account, or for a zero value). A fact already recorded (its source key) is not
/// recorded again.
const ENQUEUE_USAGE_SQL: &str = "INSERT INTO billing_outbox (id, org_id, job_id, meter, value, source_key, occurred_at, \
     status, run_after) \
     SELECT $3, a.org_id, $2, 'input_tokens', $4, $5, $12, 'pending', $12 FROM billing_accounts a \
     WHERE a.org_id = $1 AND a.mode = 'tokens' AND $4 > 0 \
     UNION ALL SELECT $6, a.org_id, $2, 'output_tokens', $7, $8, $12, 'pending', $12 FROM billing_accounts a \
     WHERE a.org_id = $1 AND a.mode = 'tokens' AND $7 > 0 \
     UNION ALL SELECT $9, a.org_id, $2, 'cost_micros', $10, $11, $12, 'pending', $12 FROM billing_accounts a \
     WHERE a.org_id = $1 AND a.mode = 'cost' AND $10 > 0 \
     ON CONFLICT DO NOTHING";

/// Records the billable facts of one agent call's usage (see [`ENQUEUE_USAGE_SQL`]), in the
/// caller's transaction (the one that records the usage).
pub(crate) async fn enqueue_usage(
    tx: &mut Tx,
    org: OrgId,
    job: Option<JobId>,
    usage: UsageId,
    (input_tokens, output_tokens, cost_micros): (u64, u64, u64),
    at: DateTime<Utc>,
) -> Result<()> {
    tx.execute(
        q(ENQUEUE_USAGE_SQL)
            .arg(org)
            .arg(job)
            .arg(Uuid::now_v7())
            .arg(int(input_tokens))
            .arg(format!("usage:{usage}:input_tokens"))
            .arg(Uuid::now_v7())
            .arg(int(output_tokens))
            .arg(format!("usage:{usage}:output_tokens"))
            .arg(Uuid::now_v7())
            .arg(int(cost_micros))
            .arg(format!("usage:{usage}:cost_micros"))
            .arg(at),
    )
    .await?;
    Ok(())
}

/// Records one pull request of `job` on `meter` (opened, or merged) for the org's account if it is
/// billed per pull request of that kind, in the caller's transaction. Recorded once per job, however
/// often the change is reported.
pub(crate) async fn enqueue_pull_request(
    tx: &mut Tx,
    org: OrgId,
    job: JobId,
    meter: Meter,
    at: DateTime<Utc>,
) -> Result<()> {
    let mode = match meter {
        Meter::PullRequests => PricingMode::PullRequests,
        Meter::MergedPullRequests => PricingMode::MergedPullRequests,
        _ => return Err(Error::invalid(format!("`{meter}` is not a pull request meter"))),
    };
    tx.execute(
        q("INSERT INTO billing_outbox (id, org_id, job_id, meter, value, source_key, occurred_at, status, run_after) \
           SELECT $3, a.org_id, $2, $4, 1, $5, $6, 'pending', $6 FROM billing_accounts a \
           WHERE a.org_id = $1 AND a.mode = $7 ON CONFLICT DO NOTHING")
        .arg(org)
        .arg(job)
        .arg(Uuid::now_v7())
        .arg(meter.as_str())
        .arg(format!("{meter}:{job}"))
        .arg(at)
        .arg(mode.as_str()),
    )
    .await?;
    Ok(())
}

const CLAIM_POSTGRES_SQL: &str = concat!(
    "UPDATE billing_outbox SET lease_owner = $1, lease_expires_at = $2, epoch = epoch + 1, \
     attempts = attempts + 1 \
     WHERE id IN (SELECT id FROM billing_outbox WHERE status = 'pending' AND run_after <= $3 \
     AND (lease_expires_at IS NULL OR lease_expires_at < $3) ORDER BY run_after, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
     RETURNING ",
    outbox_columns!()
);

const CLAIM_SQLITE_SQL: &str = concat!(
    "UPDATE billing_outbox SET lease_owner = $1, lease_expires_at = $2, epoch = epoch + 1, \
     attempts = attempts + 1 \
     WHERE id IN (SELECT id FROM billing_outbox WHERE status = 'pending' AND run_after <= $3 \
     AND (lease_expires_at IS NULL OR lease_expires_at < $3) ORDER BY run_after, id LIMIT $4) \
     RETURNING ",
    outbox_columns!()
);

async fn fetch_account(tx: &mut Tx, org: OrgId) -> Result<Option<BillingAccount>> {
    let row: Option<AccountRow> = tx
        .fetch_optional(q(concat!("SELECT ", account_columns!(), " FROM billing_accounts WHERE org_id = $1")).arg(org))
        .await?;
    row.map(BillingAccount::try_from).transpose()
}

#[async_trait]
impl BillingStore for SqlStore {
    async fn billing_account(&self, org: OrgId) -> Result<Option<BillingAccount>> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let account = fetch_account(&mut tx, org).await?;
        tx.commit().await?;
        Ok(account)
    }

    async fn open_billing_account(&self, org: OrgId, mode: PricingMode) -> Result<BillingAccount> {
        let at = crate::store::now();
        let mut tx = self.begin(Scope::Org(org)).await?;
        tx.execute(
            q("INSERT INTO billing_accounts (org_id, mode, created_at, updated_at) VALUES ($1, $2, $3, $3) \
               ON CONFLICT (org_id) DO NOTHING")
            .arg(org)
            .arg(mode.as_str())
            .arg(at),
        )
        .await?;
        let account = fetch_account(&mut tx, org).await?.ok_or(Error::not_found("billing account"))?;
        tx.commit().await?;
        Ok(account)
    }

    async fn set_pricing_mode(&self, org: OrgId, mode: PricingMode) -> Result<BillingAccount> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        tx.execute(
            q("UPDATE billing_accounts SET mode = $2, updated_at = $3 WHERE org_id = $1")
                .arg(org)
                .arg(mode.as_str())
                .arg(crate::store::now()),
        )
        .await?;
        let account = fetch_account(&mut tx, org).await?.ok_or(Error::not_found("billing account"))?;
        tx.commit().await?;
        Ok(account)
    }

    async fn set_spend_cap(&self, org: OrgId, cap_micros: Option<u64>) -> Result<BillingAccount> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        tx.execute(
            q("UPDATE billing_accounts SET spend_cap_micros = $2, updated_at = $3 WHERE org_id = $1")
                .arg(org)
                .arg(cap_micros.map(|c| i64::try_from(c).unwrap_or(i64::MAX)))
                .arg(crate::store::now()),
        )
        .await?;
        let account = fetch_account(&mut tx, org).await?.ok_or(Error::not_found("billing account"))?;
        tx.commit().await?;
        Ok(account)
    }

    async fn set_billing_customer(&self, org: OrgId, customer: &str) -> Result<String> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        tx.execute(
            q("UPDATE billing_accounts SET customer_id = $2, updated_at = $3 WHERE org_id = $1 AND customer_id IS NULL")
                .arg(org)
                .arg(customer)
                .arg(crate::store::now()),
        )
        .await?;
        let account = fetch_account(&mut tx, org).await?.ok_or(Error::not_found("billing account"))?;
        tx.commit().await?;
        account.customer_id.ok_or_else(|| Error::Corrupt("a billing account lost its customer".into()))
    }

    async fn usage_since(&self, org: OrgId, since: DateTime<Utc>) -> Result<PeriodUsage> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let jobs: One<i64> = tx
            .fetch_one(q("SELECT COUNT(*) FROM jobs WHERE org_id = $1 AND created_at >= $2").arg(org).arg(since))
            .await?;
        let cost: One<Option<i64>> = tx
            .fetch_one(
                q("SELECT CAST(SUM(cost_micros) AS BIGINT) FROM usage_records WHERE org_id = $1 AND at >= $2")
                    .arg(org)
                    .arg(since),
            )
            .await?;
        tx.commit().await?;
        Ok(PeriodUsage {
            jobs: u64::try_from(jobs.0).unwrap_or(0),
            cost_micros: cost.0.and_then(|c| u64::try_from(c).ok()).unwrap_or(0),
        })
    }

    async fn claim_outbox(&self, worker: &str, lease: chrono::Duration, max: usize) -> Result<Vec<OutboxEntry>> {
        let at = crate::store::now();
        let mut tx = self.begin(Scope::System).await?;
        let sql = if matches!(tx, Tx::Postgres(_)) { CLAIM_POSTGRES_SQL } else { CLAIM_SQLITE_SQL };
        let rows: Vec<OutboxRow> = tx.fetch_all(q(sql).arg(worker).arg(at + lease).arg(at).arg(int(max))).await?;
        tx.commit().await?;
        let mut claimed = rows.into_iter().map(OutboxEntry::try_from).collect::<Result<Vec<_>>>()?;
        claimed.sort_by_key(|e| (e.occurred_at, e.id));
        Ok(claimed)
    }

    async fn begin_outbox_sends(&self, worker: &str, entries: &[OutboxEntry]) -> Result<()> {
        let at = crate::store::now();
        let mut tx = self.begin(Scope::System).await?;
        for entry in entries.iter().filter(|e| e.first_sent_at.is_none()) {
            tx.execute(
                q("UPDATE billing_outbox SET first_sent_at = COALESCE(first_sent_at, $4) \
                   WHERE id = $1 AND epoch = $2 AND lease_owner = $3")
                .arg(entry.id)
                .arg(entry.epoch)
                .arg(worker)
                .arg(at),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn settle_outbox(&self, worker: &str, settlements: &[(OutboxEntry, Settlement)]) -> Result<u64> {
        let at = crate::store::now();
        let mut tx = self.begin(Scope::System).await?;
        let mut settled = 0;
        for (entry, settlement) in settlements {
            let (status, run_after, error, sent_at) = match settlement {
                Settlement::Sent => (OutboxStatus::Sent, None, None, Some(at)),
                Settlement::Retry { run_after, error } => (OutboxStatus::Pending, Some(*run_after), Some(error), None),
                Settlement::Park { reason } => (OutboxStatus::Parked, None, Some(reason), None),
            };
            settled += tx
                .execute(
                    q("UPDATE billing_outbox SET status = $4, run_after = COALESCE($5, run_after), \
                       last_error = COALESCE($6, last_error), sent_at = $7, lease_owner = NULL, lease_expires_at = NULL \
                       WHERE id = $1 AND epoch = $2 AND lease_owner = $3 AND status = 'pending'")
                    .arg(entry.id)
                    .arg(entry.epoch)
                    .arg(worker)
                    .arg(status.as_str())
                    .arg(run_after)
                    .arg(error.map(String::as_str))
                    .arg(sent_at),
                )
                .await?;
        }
        tx.commit().await?;
        Ok(settled)
    }

    async fn list_outbox(&self, org: OrgId) -> Result<Vec<OutboxEntry>> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let rows: Vec<OutboxRow> = tx
            .fetch_all(
                q(concat!(
                    "SELECT ",
                    outbox_columns!(),
                    " FROM billing_outbox WHERE org_id = $1 ORDER BY occurred_at, id"
                ))
                .arg(org),
            )
            .await?;
        tx.commit().await?;
        rows.into_iter().map(OutboxEntry::try_from).collect()
    }

    async fn reconcile_outbox(&self) -> Result<Vec<ReconcileLine>> {
        let mut tx = self.begin(Scope::System).await?;
        let rows: Vec<(Uuid, String, String, i64, Option<i64>, DateTime<Utc>, Option<String>)> = tx
            .fetch_all(q("SELECT org_id, meter, status, CAST(COUNT(*) AS BIGINT), CAST(SUM(value) AS BIGINT), \
                 MIN(occurred_at), MAX(last_error) FROM billing_outbox WHERE status <> 'sent' \
                 GROUP BY org_id, meter, status ORDER BY org_id, meter, status"))
            .await?;
        tx.commit().await?;
        rows.into_iter()
            .map(|(org, meter, status, rows, total, oldest, last_error)| {
                Ok(ReconcileLine {
                    org_id: org.into(),
                    meter: meter.parse()?,
                    status: status.parse()?,
                    rows: u64::try_from(rows).unwrap_or(0),
                    total: total.unwrap_or(0),
                    oldest,
                    last_error,
                })
            })
            .collect()
    }

    async fn apply_billing_event(
        &self,
        event_id: &str,
        kind: &str,
        created: DateTime<Utc>,
        customer: &str,
        change: AccountChange,
    ) -> Result<EventOutcome> {
        let at = crate::store::now();
        let mut tx = self.begin(Scope::System).await?;
        let org: Option<One<Uuid>> =
            tx.fetch_optional(q("SELECT org_id FROM billing_accounts WHERE customer_id = $1").arg(customer)).await?;
        let org = org.map(|o| OrgId::from(o.0));
        let new = tx
            .execute(
                q("INSERT INTO stripe_events (event_id, kind, org_id, received_at) VALUES ($1, $2, $3, $4) \
                   ON CONFLICT (event_id) DO NOTHING")
                .arg(event_id)
                .arg(kind)
                .arg(org)
                .arg(at),
            )
            .await?;
        if new == 0 {
            return Ok(EventOutcome::Duplicate);
        }
        let Some(org) = org else {
            tx.commit().await?;
            return Ok(EventOutcome::UnknownCustomer);
        };
        let update = match change {
            AccountChange::Subscription(s) => {
                q("UPDATE billing_accounts SET subscription_id = $2, subscription_status = $3, \
                   current_period_end = $4, subscription_at = $6, subscription_prices = $7, updated_at = $5 \
                   WHERE org_id = $1 AND (subscription_at IS NULL OR subscription_at <= $6)")
                .arg(org)
                .arg(s.id)
                .arg(s.status)
                .arg(s.current_period_end)
                .arg(at)
                .arg(created)
                .arg(s.prices.join(","))
            }
            AccountChange::PaymentSucceeded => {
                q("UPDATE billing_accounts SET payment_failed_at = NULL, updated_at = $2 WHERE org_id = $1")
                    .arg(org)
                    .arg(at)
            }
            AccountChange::PaymentFailed { at: failed } => {
                q("UPDATE billing_accounts SET payment_failed_at = COALESCE(payment_failed_at, $2), updated_at = $3 \
                 WHERE org_id = $1")
                .arg(org)
                .arg(failed)
                .arg(at)
            }
            AccountChange::CustomerDeleted => {
                q("UPDATE billing_accounts SET customer_id = NULL, subscription_id = NULL, \
                   subscription_status = NULL, subscription_prices = NULL, current_period_end = NULL, \
                   updated_at = $2 WHERE org_id = $1")
                .arg(org)
                .arg(at)
            }
        };
        tx.execute(update).await?;
        tx.commit().await?;
        Ok(EventOutcome::Applied { org })
    }

    async fn record_billing_event(&self, event_id: &str, kind: &str) -> Result<bool> {
        let mut tx = self.begin(Scope::System).await?;
        let new = tx
            .execute(
                q("INSERT INTO stripe_events (event_id, kind, received_at) VALUES ($1, $2, $3) \
                   ON CONFLICT (event_id) DO NOTHING")
                .arg(event_id)
                .arg(kind)
                .arg(crate::store::now()),
            )
            .await?;
        tx.commit().await?;
        Ok(new == 1)
    }
}
