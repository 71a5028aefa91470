//! The [`super::Billing`] port on Stripe (async-stripe).
