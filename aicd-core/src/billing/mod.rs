//! Billing: usage metering through an outbox, pricing modes per organization, subscriptions and
//! the entitlements that follow from them.
//!
//! The rules live here; the payment provider is behind the [`Billing`] port ([`stripe`] for
//! Stripe, [`MemoryBilling`] in memory). See `docs/billing.md` for the guarantees.

mod dispatcher;
mod model;
mod port;
mod service;
mod store;
#[cfg(feature = "stripe")]
pub mod stripe;
pub mod webhook;

pub use dispatcher::{DEDUPLICATION_WINDOW, DispatchReport, MeterDispatcher};
pub use model::{
    BillingAccount, Meter, MeterNames, OutboxEntry, OutboxStatus, PricingMode, ReconcileLine, Subscription,
};
pub use port::{Billing, BillingError, MemoryBilling, MeterEvent};
pub use service::BillingOptions;
pub use service::BillingStatus;
pub use store::{AccountChange, BillingStore, EventOutcome, PeriodUsage, Settlement};
pub(crate) use store::{enqueue_pull_request, enqueue_usage};
