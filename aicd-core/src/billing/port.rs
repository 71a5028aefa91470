//! The billing port: what the billing rules ask of a payment provider. [`crate::billing::stripe`]
//! implements it against Stripe; [`MemoryBilling`] keeps everything in memory, for tests and for
//! deployments that meter without a provider.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::OrgId;

/// One usage event for a provider's meter: `value` units of `event_name` for `customer` at
/// `timestamp`. `identifier` is derived from the outbox row the event comes from, so sending it
/// again (a retry after a timeout, a crash between sending and recording the acknowledgement)
/// is recognised by the provider as the same event and never counted twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterEvent {
    /// The meter's event name (configuration, such as `aicd_tokens`).
    pub event_name: String,
    /// The provider's customer id (`cus_...`).
    pub customer: String,
    /// How many units (tokens, micro-units of cost, pull requests).
    pub value: i64,
    /// Unique per billable fact: the provider deduplicates on it.
    pub identifier: String,
    /// When the fact happened.
    pub timestamp: DateTime<Utc>,
}

/// Why a provider call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BillingError {
    /// It may pass if tried again (a timeout, a connection failure, HTTP 429 or 5xx).
    #[error("billing provider unavailable: {message}")]
    Transient {
        /// What happened (never a credential).
        message: String,
        /// How long the provider asked to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// It will fail the same way again (the request was refused: an unknown customer, a
    /// missing meter, an invalid value); the reason is kept for the operator.
    #[error("billing provider refused: {message}")]
    Permanent {
        /// The provider's reason (never a credential).
        message: String,
    },
}

/// What the billing rules need from a payment provider.
#[async_trait]
pub trait Billing: Send + Sync {
    /// Creates the provider's customer for `org` and returns its id. Idempotent per org: calling
    /// it again for the same org (after a timeout, from another replica) returns the same
    /// customer rather than creating a second one.
    async fn create_customer(&self, org: OrgId, org_name: &str) -> Result<String, BillingError>;

    /// Records `event` on its meter. An event whose identifier the provider already holds is a
    /// success: it was recorded before.
    async fn send_meter_event(&self, event: &MeterEvent) -> Result<(), BillingError>;

    /// A short-lived URL of the provider's self-service portal for `customer`, which returns to
    /// `return_url`.
    async fn portal_session(&self, customer: &str, return_url: &str) -> Result<String, BillingError>;
}

/// A provider kept in memory: customers are numbered per org, meter events are deduplicated by
/// identifier as the real provider does. Failures can be scripted for tests.
#[derive(Debug, Default)]
pub struct MemoryBilling {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    customers: HashMap<OrgId, String>,
    events: Vec<MeterEvent>,
    failures: Vec<BillingError>,
    calls: u64,
}

impl MemoryBilling {
    /// An empty provider.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next `send_meter_event` calls fail with these errors, in order (each after the event
    /// has been recorded when it is [`BillingError::Transient`], as a timeout after the provider
    /// received the request would).
    pub fn fail_next(&self, errors: impl IntoIterator<Item = BillingError>) {
        self.lock().failures.extend(errors);
    }

    /// Every distinct meter event received, in order of first arrival.
    pub fn events(&self) -> Vec<MeterEvent> {
        self.lock().events.clone()
    }

    /// The sum of the values received on `event_name` for `customer`.
    pub fn total(&self, event_name: &str, customer: &str) -> i64 {
        self.lock()
            .events
            .iter()
            .filter(|e| e.event_name == event_name && e.customer == customer)
            .map(|e| e.value)
            .sum()
    }

    /// How many `send_meter_event` calls were made, duplicates and failures included.
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    /// The customer created for `org`, if any.
    pub fn customer(&self, org: OrgId) -> Option<String> {
        self.lock().customers.get(&org).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Billing for MemoryBilling {
    async fn create_customer(&self, org: OrgId, _org_name: &str) -> Result<String, BillingError> {
        let mut state = self.lock();
        let next = state.customers.len() + 1;
        Ok(state.customers.entry(org).or_insert_with(|| format!("cus_memory{next:06}")).clone())
    }

    async fn send_meter_event(&self, event: &MeterEvent) -> Result<(), BillingError> {
        let mut state = self.lock();
        state.calls += 1;
        match (!state.failures.is_empty()).then(|| state.failures.remove(0)) {
            Some(refused @ BillingError::Permanent { .. }) => Err(refused),
            failure => {
                if !state.events.iter().any(|e| e.identifier == event.identifier) {
                    state.events.push(event.clone());
                }
                failure.map_or(Ok(()), Err)
            }
        }
    }

    async fn portal_session(&self, customer: &str, return_url: &str) -> Result<String, BillingError> {
        Ok(format!("https://billing.invalid/portal/{customer}?return_url={return_url}"))
    }
}
