//! Stripe webhooks: signature verification over the raw body and the events billing handles.
