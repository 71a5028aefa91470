//! The [`super::Billing`] port on Stripe (async-stripe).
//!
//! Three calls, each one HTTP request with no retry of its own: the outbox that calls
//! [`StripeBilling`] owns the backoff, so the client's request strategy is
//! [`RequestStrategy::Once`] (or [`RequestStrategy::Idempotent`], which also sends once), and a
//! failure comes back at once as a [`BillingError`]:
//!
//! - HTTP 429, 409 (a concurrent request on the same object or idempotency key), 424 and 5xx, a
//!   timeout, a connection failure or an answer that is not Stripe's JSON (a proxy's error page)
//!   are [`BillingError::Transient`]. Every call is safe to repeat: customers are created under
//!   an idempotency key, meter events carry their identifier and portal sessions are throwaway.
//!   async-stripe does not expose the response headers, so `retry_after` is always `None`.
//! - Any other refusal (a 4xx) is [`BillingError::Permanent`] with Stripe's message and code.
//! - A meter event whose identifier Stripe already holds is a success (see
//!   [`StripeBilling::send_meter_event`]).
//!
//! The secret key is sent as the bearer token and appears nowhere else: not in `Debug`, not in
//! a log, not in an error (messages from Stripe are scrubbed of anything shaped like a key).

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_core::customer::CreateCustomer;

use super::{Billing, BillingError, MeterEvent};
use crate::OrgId;

/// How long one request may take, connection included, before it counts as failed (transient).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The metadata key under which a Stripe customer records the organization it bills.
pub const ORG_ID_METADATA_KEY: &str = "aicd_org_id";

/// The [`Billing`] port on the Stripe API: customers, meter events and customer portal sessions.
#[derive(Clone)]
pub struct StripeBilling {
    client: Client,
    timeout: Duration,
    /// Used only to scrub the key out of error messages; never printed.
    secret: String,
}

impl fmt::Debug for StripeBilling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeBilling").field("secret_key", &"[redacted]").field("timeout", &self.timeout).finish()
    }
}

impl StripeBilling {
    /// A client for the Stripe account of `secret_key` (`sk_live_...`, `sk_test_...` or a
    /// restricted `rk_...` key), talking to `api_url` when given (a test server or a proxy: the
    /// base without `/v1`, such as `http://127.0.0.1:8080`) and to `https://api.stripe.com`
    /// otherwise. Requests time out after [`DEFAULT_TIMEOUT`].
    ///
    /// Installs rustls' ring provider as the process default if none is installed yet (it is
    /// the only one this crate builds in).
    ///
    /// # Errors
    ///
    /// [`BillingError::Permanent`] when the key is empty or not usable as a header value, or
    /// the URL does not parse. The message never contains the key.
    pub fn new(secret_key: impl Into<String>, api_url: Option<&str>) -> Result<Self, BillingError> {
        let secret = secret_key.into();
        if secret.trim().is_empty() {
            return Err(BillingError::Permanent { message: "the Stripe secret key is empty".into() });
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder =
            ClientBuilder::new(secret.clone()).request_strategy(RequestStrategy::Once).timeout(DEFAULT_TIMEOUT);
        if let Some(url) = api_url {
            // async-stripe appends `v1/...` to the base as it is: it must end with a slash.
            builder = builder.url(format!("{}/", url.trim_end_matches('/')));
        }
        let client = builder.build().map_err(|e| BillingError::Permanent {
            message: format!("invalid Stripe client configuration: {}", redact(&e.to_string(), &secret)),
        })?;
        Ok(Self { client, timeout: DEFAULT_TIMEOUT, secret })
    }

    /// The same client with another per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The per-request timeout in force.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn error(&self, err: StripeError) -> BillingError {
        classify(err, &self.secret)
    }
}

#[async_trait]
impl Billing for StripeBilling {
    /// `POST /v1/customers` with the org's name and `metadata[aicd_org_id]`, under the
    /// idempotency key `aicd-customer-<org id>`: a creation repeated after a timeout, or from
    /// another replica, returns the customer the first one created. Stripe keeps idempotency
    /// keys for 24 hours, so the caller still records the id it gets; a repeat with another
    /// name inside that window is refused (`idempotency_error`, permanent).
    async fn create_customer(&self, org: OrgId, org_name: &str) -> Result<String, BillingError> {
        let key = IdempotencyKey::new(format!("aicd-customer-{org}"))
            .map_err(|e| BillingError::Permanent { message: format!("invalid idempotency key: {e}") })?;
        let metadata = HashMap::from([(ORG_ID_METADATA_KEY.to_owned(), org.to_string())]);
        let customer = CreateCustomer::new()
            .name(org_name)
            .metadata(metadata)
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .timeout(self.timeout)
            .send(&self.client)
            .await
            .map_err(|e| self.error(e))?;
        Ok(customer.id.as_str().to_owned())
    }

    /// `POST /v1/billing/meter_events` with `event_name`, `payload[stripe_customer_id]`,
    /// `payload[value]`, `identifier` and `timestamp` (Unix seconds).
    ///
    /// Stripe refuses an identifier it already holds (uniqueness is enforced over at least a
    /// rolling 24 hours) rather than ignoring it: HTTP 400, `invalid_request_error`, with the
    /// message `An event already exists with identifier <id>.` and no `code` on the v1
    /// endpoint, as observed by several public integrations; the v2 API documents the same case
    /// as the code `duplicate_meter_event`. Either form is taken as "recorded before" and is a
    /// success.
    async fn send_meter_event(&self, event: &MeterEvent) -> Result<(), BillingError> {
        let payload = HashMap::from([
            ("stripe_customer_id".to_owned(), event.customer.clone()),
            ("value".to_owned(), event.value.to_string()),
        ]);
        let sent = CreateBillingMeterEvent::new(event.event_name.as_str(), payload)
            .identifier(event.identifier.as_str())
            .timestamp(event.timestamp.timestamp())
            .customize()
            .timeout(self.timeout)
            .send(&self.client)
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(StripeError::Stripe(err, 400)) if is_duplicate_meter_event(&err) => {
                tracing::debug!(identifier = %event.identifier, "meter event already recorded by Stripe");
                Ok(())
            }
            Err(e) => Err(self.error(e)),
        }
    }

    /// `POST /v1/billing_portal/sessions` with `customer` and `return_url`; returns the
    /// session's `url`.
    async fn portal_session(&self, customer: &str, return_url: &str) -> Result<String, BillingError> {
        let session = CreateBillingPortalSession::new()
            .customer(customer)
            .return_url(return_url)
            .customize()
            .timeout(self.timeout)
            .send(&self.client)
            .await
            .map_err(|e| self.error(e))?;
        Ok(session.url)
    }
}

/// Whether Stripe's refusal says the meter event's identifier is already taken.
fn is_duplicate_meter_event(err: &stripe::ApiErrors) -> bool {
    let code = err.code.as_ref().map(|c| c.as_str());
    let message = err.message.as_deref().unwrap_or_default().to_ascii_lowercase();
    code == Some("duplicate_meter_event") || message.contains("already exists with identifier")
}

/// Statuses worth another try: what Stripe documents as transient (and async-stripe's own
/// retry strategy retries), from rate limiting to Stripe's own failures.
fn retryable_status(status: u16) -> bool {
    matches!(status, 409 | 424 | 429) || (500..=599).contains(&status)
}

fn classify(err: StripeError, secret: &str) -> BillingError {
    match err {
        StripeError::Stripe(api, status) => {
            let mut message = format!("Stripe answered HTTP {status}");
            if let Some(text) = api.message.as_deref() {
                message.push_str(": ");
                message.push_str(text);
            }
            if let Some(code) = &api.code {
                message.push_str(&format!(" (code {})", code.as_str()));
            } else {
                message.push_str(&format!(" ({})", api.type_.as_str()));
            }
            let message = redact(&message, secret);
            if retryable_status(status) {
                BillingError::Transient { message, retry_after: None }
            } else {
                BillingError::Permanent { message }
            }
        }
        StripeError::Timeout => {
            BillingError::Transient { message: "no answer from Stripe before the timeout".into(), retry_after: None }
        }
        StripeError::ClientError(e) => BillingError::Transient {
            message: format!("cannot reach Stripe: {}", redact(&e, secret)),
            retry_after: None,
        },
        // An unreadable answer: most likely an error page from something in front of Stripe,
        // whose status async-stripe does not keep. Repeating any of these calls is harmless.
        StripeError::JSONDeserialize(e) => BillingError::Transient {
            message: format!("unreadable answer from Stripe: {}", redact(&e, secret)),
            retry_after: None,
        },
        StripeError::ConfigError(e) => {
            BillingError::Permanent { message: format!("invalid Stripe request: {}", redact(&e, secret)) }
        }
    }
}

/// `text` without the secret key nor anything shaped like a Stripe key (Stripe's own "Invalid
/// API Key provided: sk_test_****1234" included).
fn redact(text: &str, secret: &str) -> String {
    let text = if secret.is_empty() { text.to_owned() } else { text.replace(secret, "[redacted]") };
    text.split(' ')
        .map(|word| {
            let bare = word.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
            let keyish = ["sk_live_", "sk_test_", "rk_live_", "rk_test_"].iter().any(|p| bare.starts_with(p));
            if keyish { "[redacted]" } else { word }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_removes_the_secret_and_key_shaped_words() {
        let secret = "sk_test_abc123";
        assert_eq!(redact("bad sk_test_abc123 here", secret), "bad [redacted] here");
        assert_eq!(
            redact("Invalid API Key provided: sk_test_********1234", secret),
            "Invalid API Key provided: [redacted]"
        );
        assert_eq!(redact("key 'rk_live_x' refused", "other"), "key [redacted] refused");
        assert_eq!(redact("No such customer: 'cus_123'", secret), "No such customer: 'cus_123'");
    }

    #[test]
    fn retryable_statuses() {
        for s in [409, 424, 429, 500, 502, 503, 504, 599] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [400, 401, 402, 403, 404] {
            assert!(!retryable_status(s), "{s}");
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let billing = StripeBilling::new("sk_test_supersecret", Some("http://127.0.0.1:9")).expect("client");
        let shown = format!("{billing:?}");
        assert!(!shown.contains("supersecret"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn an_empty_key_is_refused() {
        assert!(matches!(StripeBilling::new("  ", None), Err(BillingError::Permanent { .. })));
    }
}
