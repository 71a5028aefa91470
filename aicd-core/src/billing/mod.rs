//! Billing: usage metering through an outbox, pricing modes per organization, subscriptions and
//! the entitlements that follow from them.
//!
//! The rules live here; the payment provider is behind the [`Billing`] port ([`stripe`] for
//! Stripe, [`MemoryBilling`] in memory). See `docs/billing.md` for the guarantees.

mod port;
#[cfg(feature = "stripe")]
pub mod stripe;
pub mod webhook;

pub use port::{Billing, BillingError, MemoryBilling, MeterEvent};
