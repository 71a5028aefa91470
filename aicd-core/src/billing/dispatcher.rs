//! The meter dispatcher: sends the billing outbox to the payment provider.
//!
//! It claims due rows under a lease (each claim raises the row's epoch), sends each as a meter
//! event whose identifier is derived from the row, and settles the rows it still holds: `sent`
//! when the provider acknowledged, due again later (with backoff) when the provider was
//! unavailable, `parked` with the reason when it refused. A dispatcher that dies between sending
//! and settling leaves its rows to be claimed again when the lease expires; they are sent again
//! with the same identifier, which the provider recognises, so nothing is counted twice.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::model::{MeterNames, OutboxEntry};
use super::port::{Billing, BillingError, MeterEvent};
use super::store::Settlement;
use crate::{Core, Error, OrgId, Result};

/// How long the provider recognises an identifier sent before (Stripe: at least 24 hours). A row
/// first sent longer ago than this that still fails is parked rather than sent again, since a
/// repeat could no longer be told apart from a new event. Attempts that failed before sending
/// (creating the customer) do not start the window.
pub const DEDUPLICATION_WINDOW: Duration = Duration::from_secs(23 * 3600);

/// The longest wait between two attempts of a row.
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// What one [`MeterDispatcher::run_once`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchReport {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows the provider acknowledged.
    pub sent: usize,
    /// Rows due again later.
    pub retried: usize,
    /// Rows parked for the operator.
    pub parked: usize,
}

/// Sends the billing outbox to the payment provider (see the module's documentation).
pub struct MeterDispatcher {
    core: Core,
    provider: Arc<dyn Billing>,
    meters: MeterNames,
    worker: String,
    lease: Duration,
    batch: usize,
    concurrency: usize,
    poll_interval: Duration,
}

impl std::fmt::Debug for MeterDispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeterDispatcher")
            .field("worker", &self.worker)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl MeterDispatcher {
    /// A dispatcher named `worker` (its leases carry the name) for `core`, which must have a
    /// payment provider ([`Core::with_billing`]) and billing options; [`Error::InvalidInput`]
    /// otherwise. Defaults: a 60 s lease, batches of 100, 8 sends at a time, a 5 s poll.
    pub fn new(core: Core, worker: impl Into<String>) -> Result<Self> {
        let provider =
            core.billing_provider().cloned().ok_or_else(|| Error::invalid("no payment provider is configured"))?;
        let meters =
            core.options.billing.as_ref().ok_or_else(|| Error::invalid("billing is not configured"))?.meters.clone();
        Ok(Self {
            core,
            provider,
            meters,
            worker: worker.into(),
            lease: Duration::from_secs(60),
            batch: 100,
            concurrency: 8,
            poll_interval: Duration::from_secs(5),
        })
    }

    /// How long a claim holds its rows before another dispatcher may send them.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long to wait when nothing is due.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Claims one batch of due rows, sends them and settles them.
    ///
    /// # Errors
    /// Only when the database fails; provider failures are settled on the rows.
    pub async fn run_once(&self) -> Result<DispatchReport> {
        let lease = chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(60));
        let claimed = self.core.store.claim_outbox(&self.worker, lease, self.batch).await?;
        let mut report = DispatchReport { claimed: claimed.len(), ..DispatchReport::default() };
        if claimed.is_empty() {
            return Ok(report);
        }
        let mut settlements = Vec::with_capacity(claimed.len());
        let mut ready = Vec::with_capacity(claimed.len());
        let mut customers: Vec<(OrgId, std::result::Result<String, BillingError>)> = Vec::new();
        for entry in claimed {
            let customer = match customers.iter().find(|(org, _)| *org == entry.org_id) {
                Some((_, customer)) => customer.clone(),
                None => {
                    let customer = self.customer(entry.org_id).await?;
                    customers.push((entry.org_id, customer.clone()));
                    customer
                }
            };
            match customer {
                Ok(customer) => ready.push((entry, customer)),
                Err(err) => settlements.push(settle(entry, Err(err))),
            }
        }
        let sending: Vec<OutboxEntry> = ready.iter().map(|(entry, _)| entry.clone()).collect();
        self.core.store.begin_outbox_sends(&self.worker, &sending).await?;
        for chunk in ready.chunks(self.concurrency.max(1)) {
            let mut sends = JoinSet::new();
            for (entry, customer) in chunk {
                let event = MeterEvent {
                    event_name: self.meters.name(entry.meter).to_owned(),
                    customer: customer.clone(),
                    value: entry.value,
                    identifier: entry.identifier(),
                    timestamp: entry.occurred_at,
                };
                let (provider, entry) = (self.provider.clone(), entry.clone());
                sends.spawn(async move {
                    let result = provider.send_meter_event(&event).await;
                    (entry, result)
                });
            }
            while let Some(joined) = sends.join_next().await {
                match joined {
                    Ok((entry, result)) => settlements.push(settle(entry, result)),
                    // A send that panicked leaves its row to the lease: it is claimed again.
                    Err(err) => tracing::error!(error = %err, "a meter event send panicked"),
                }
            }
        }
        for (entry, settlement) in &settlements {
            match settlement {
                Settlement::Sent => report.sent += 1,
                Settlement::Retry { error, .. } => {
                    report.retried += 1;
                    tracing::info!(outbox = %entry.id, attempts = entry.attempts, error, "meter event deferred");
                }
                Settlement::Park { reason } => {
                    report.parked += 1;
                    tracing::warn!(outbox = %entry.id, org = %entry.org_id, meter = %entry.meter, reason, "meter event parked");
                }
            }
        }
        self.core.store.settle_outbox(&self.worker, &settlements).await?;
        Ok(report)
    }

    /// The organization's customer, created on first need; a provider failure is returned for
    /// the rows to settle, a database failure is the caller's.
    async fn customer(&self, org: OrgId) -> Result<std::result::Result<String, BillingError>> {
        match self.core.billing_customer(org).await {
            Ok(customer) => Ok(Ok(customer)),
            Err(Error::Unavailable { message, retry_after, .. }) => {
                Ok(Err(BillingError::Transient { message, retry_after }))
            }
            Err(Error::Rejected { message, .. }) => Ok(Err(BillingError::Permanent { message })),
            Err(Error::NotFound { kind }) => {
                Ok(Err(BillingError::Permanent { message: format!("the organization has no {kind} account") }))
            }
            Err(err) => Err(err),
        }
    }

    /// Runs [`Self::run_once`] until `stop` turns `true`, waiting the poll interval whenever
    /// nothing was due. Database errors are logged and retried after the interval.
    pub fn spawn(self, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            tracing::info!(worker = %self.worker, "sending billing meter events");
            while !*stop.borrow() {
                let idle = match self.run_once().await {
                    Ok(report) => report.claimed == 0,
                    Err(error) => {
                        tracing::warn!(%error, "could not send billing meter events");
                        true
                    }
                };
                if idle {
                    tokio::select! {
                        () = tokio::time::sleep(self.poll_interval) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        })
    }
}

/// How a row's attempt ends, given the provider's answer.
fn settle(entry: OutboxEntry, result: std::result::Result<(), BillingError>) -> (OutboxEntry, Settlement) {
    let settlement = match result {
        Ok(()) => Settlement::Sent,
        Err(BillingError::Permanent { message }) => Settlement::Park { reason: message },
        Err(BillingError::Transient { message, retry_after }) => {
            let now = Utc::now();
            let window = chrono::Duration::from_std(DEDUPLICATION_WINDOW).unwrap_or(chrono::Duration::hours(23));
            if entry.first_sent_at.is_some_and(|first| now - first > window) {
                Settlement::Park {
                    reason: format!(
                        "still failing ({message}) after the provider's deduplication window; check the provider's \
                         meter for identifier {} before sending it again",
                        entry.identifier()
                    ),
                }
            } else {
                let wait = backoff(entry.attempts).max(retry_after.unwrap_or_default());
                let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::minutes(15));
                Settlement::Retry { run_after: now + wait, error: message }
            }
        }
    };
    (entry, settlement)
}

/// The wait after the `attempts`-th failed attempt: 1 s, 2 s, 4 s, ... up to 15 minutes.
fn backoff(attempts: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(20);
    Duration::from_secs(1u64 << exponent).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_fifteen_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
