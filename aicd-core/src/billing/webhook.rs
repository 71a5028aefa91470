//! Stripe webhooks: signature verification over the raw body and the events billing handles.
//!
//! A delivery is handled in two steps, in this order:
//!
//! 1. [`verify_signature`] checks the `Stripe-Signature` header against the raw body, exactly as
//!    received, before anything in it is read. Every `v1` signature in the header is tried against
//!    every configured endpoint secret, so deliveries keep passing while a secret is rolled.
//! 2. [`parse_event`] reads the verified body into a [`StripeEvent`] whose [`BillingChange`] is
//!    what billing acts on. Event types billing does not handle come back as
//!    [`BillingChange::Ignored`], to be acknowledged and dropped.
//!
//! Both accept the shapes of the API versions before and after `2025-03-31.basil`.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

/// How far a signature's timestamp may be from now, either way: Stripe's default of 300 s.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The length of a `v1` signature: an HMAC-SHA256 digest.
const DIGEST_LEN: usize = 32;

/// Why a `Stripe-Signature` header was refused. Each case must be answered with an error status
/// and nothing recorded. No message includes a secret or a signature.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header has no `t=` element.
    #[error("the Stripe-Signature header has no timestamp (t=)")]
    MissingTimestamp,
    /// The header has no `v1=` element (only `v0` or unknown schemes, if anything).
    #[error("the Stripe-Signature header has no v1 signature")]
    NoSignature,
    /// The signature is authentic but its timestamp is farther from now than the tolerance: an
    /// old delivery replayed, or a clock far off.
    #[error("the Stripe-Signature timestamp is {age_secs} s old (negative: in the future), outside the tolerance")]
    Stale {
        /// Now minus the header's timestamp, in seconds; negative for a timestamp in the future.
        age_secs: i64,
    },
    /// No `v1` signature in the header matches the body under any configured secret.
    #[error("no v1 signature in the Stripe-Signature header matches the body")]
    Mismatch,
    /// The header is not a list of `scheme=value` elements, or its timestamp is not an integer, or
    /// a `v1` value is not 64 hexadecimal digits.
    #[error("the Stripe-Signature header is malformed")]
    Malformed,
}

/// Checks a delivery's `Stripe-Signature` header against its raw `body`.
///
/// Passes when some `v1` signature in the header is the HMAC-SHA256 of `"{t}.{body}"` under one
/// of `secrets` (the whole `whsec_...` string is the key), and the timestamp `t` is within
/// `tolerance` of `now`, before or after. Every `v1` value is tried against every secret, so
/// pass the current secret and, while rolling, the previous one. Empty secrets never match.
/// `v0` and unknown schemes are ignored. Signatures are compared in constant time.
///
/// The header is checked before the timestamp: [`SignatureError::Stale`] is only returned for
/// an authentic signature.
pub fn verify_signature(
    secrets: &[&str],
    header: &str,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let header = SignatureHeader::parse(header)?;
    let authentic = secrets.iter().any(|secret| header.signed_by(secret, body));
    if !authentic {
        return Err(SignatureError::Mismatch);
    }
    check_age(header.timestamp, now, tolerance)
}

/// The `Stripe-Signature` header Stripe would send for `body` signed with `secret` at
/// `timestamp` (unix seconds): `t={timestamp},v1={hex}`.
///
/// Meant for tests that post signed deliveries; [`verify_signature`] accepts what it returns
/// under the same secret while `timestamp` is within the tolerance.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC keys of any length; the empty fallback cannot happen and would not verify.
    let digest = signature(secret, timestamp, body).map(hex::encode).unwrap_or_default();
    format!("t={timestamp},v1={digest}")
}

/// The elements of a `Stripe-Signature` header that matter: the timestamp and the `v1` digests.
struct SignatureHeader {
    timestamp: i64,
    v1: Vec<[u8; DIGEST_LEN]>,
}

impl SignatureHeader {
    fn parse(header: &str) -> Result<Self, SignatureError> {
        let mut timestamp = None;
        let mut v1 = Vec::new();
        for element in header.split(',') {
            let (scheme, value) = element.trim().split_once('=').ok_or(SignatureError::Malformed)?;
            match scheme {
                "t" if timestamp.is_some() => return Err(SignatureError::Malformed),
                "t" => timestamp = Some(value.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
                "v1" => v1.push(decode_digest(value)?),
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::MissingTimestamp)?;
        if v1.is_empty() {
            return Err(SignatureError::NoSignature);
        }
        Ok(Self { timestamp, v1 })
    }

    /// Whether any `v1` digest is the signature of `body` under `secret`. All digests are
    /// compared, without stopping at the first match.
    fn signed_by(&self, secret: &str, body: &[u8]) -> bool {
        if secret.is_empty() {
            return false;
        }
        let Some(expected) = signature(secret, self.timestamp, body) else {
            return false;
        };
        let matched = self.v1.iter().fold(Choice::from(0), |matched, candidate| matched | expected.ct_eq(candidate));
        matched.into()
    }
}

/// A `v1` value: exactly 64 hexadecimal digits.
fn decode_digest(value: &str) -> Result<[u8; DIGEST_LEN], SignatureError> {
    let mut digest = [0u8; DIGEST_LEN];
    hex::decode_to_slice(value, &mut digest).map_err(|_| SignatureError::Malformed)?;
    Ok(digest)
}

/// HMAC-SHA256 of `"{timestamp}.{body}"` keyed with the secret's bytes.
fn signature(secret: &str, timestamp: i64, body: &[u8]) -> Option<[u8; DIGEST_LEN]> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let mut digest = [0u8; DIGEST_LEN];
    digest.copy_from_slice(&mac.finalize().into_bytes());
    Some(digest)
}

fn check_age(timestamp: i64, now: DateTime<Utc>, tolerance: Duration) -> Result<(), SignatureError> {
    let age_secs = now.timestamp().saturating_sub(timestamp);
    if age_secs.unsigned_abs() > tolerance.as_secs() {
        return Err(SignatureError::Stale { age_secs });
    }
    Ok(())
}

/// A verified Stripe event, reduced to what billing needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StripeEvent {
    /// The event's id (`evt_...`); Stripe may deliver the same event more than once, so handlers
    /// deduplicate on it.
    pub id: String,
    /// The event's `type`, such as `customer.subscription.updated`, also for ignored events.
    pub kind: String,
    /// When Stripe created the event. Deliveries can arrive out of order; this orders them.
    pub created: DateTime<Utc>,
    /// Whether the event comes from live mode (`false`: test mode).
    pub livemode: bool,
    /// What the event changes for billing.
    pub change: BillingChange,
}

/// What a Stripe event changes for billing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BillingChange {
    /// A subscription's state, from `customer.subscription.created`, `.updated` and `.deleted`
    /// (whose status is the one sent, normally [`SubscriptionStatus::Canceled`]).
    Subscription {
        /// The customer (`cus_...`).
        customer: String,
        /// The subscription (`sub_...`).
        subscription: String,
        /// The subscription's status.
        status: SubscriptionStatus,
        /// The end of the current billing period: the subscription's own (API versions before
        /// `2025-03-31.basil`), else the latest of its items' (basil and later), else none.
        current_period_end: Option<DateTime<Utc>>,
        /// The price of each subscription item (`price_...`), in the order sent.
        price_ids: Vec<String>,
    },
    /// `invoice.paid`: an invoice was paid, or needed no payment.
    InvoicePaid {
        /// The customer (`cus_...`).
        customer: String,
        /// The invoice (`in_...`).
        invoice: String,
        /// The subscription the invoice bills, if it bills one.
        subscription: Option<String>,
    },
    /// `invoice.payment_failed`: an attempt to pay an invoice failed.
    InvoicePaymentFailed {
        /// The customer (`cus_...`).
        customer: String,
        /// The invoice (`in_...`).
        invoice: String,
        /// The subscription the invoice bills, if it bills one.
        subscription: Option<String>,
        /// How many payment attempts have been made, this one included.
        attempt_count: u32,
        /// When Stripe tries again; none when it will not retry automatically.
        next_payment_attempt: Option<DateTime<Utc>>,
    },
    /// `customer.deleted`: the customer no longer exists at Stripe.
    CustomerDeleted {
        /// The customer (`cus_...`).
        customer: String,
    },
    /// Any other event type: acknowledged and ignored.
    Ignored,
}

/// A Stripe subscription status.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SubscriptionStatus {
    /// `incomplete`: the first payment has not succeeded yet.
    Incomplete,
    /// `incomplete_expired`: the first payment never succeeded; the subscription is over.
    IncompleteExpired,
    /// `trialing`: in a trial period.
    Trialing,
    /// `active`: paid up.
    Active,
    /// `past_due`: the latest invoice's payment failed and is being retried.
    PastDue,
    /// `canceled`: ended.
    Canceled,
    /// `unpaid`: payment retries are exhausted and the invoice is left open.
    Unpaid,
    /// `paused`: a trial ended without a payment method.
    Paused,
    /// A status this version does not know, kept as sent.
    Other(String),
}

impl SubscriptionStatus {
    /// The status as Stripe spells it (`past_due`, ...); an unknown one as it was sent.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Incomplete => "incomplete",
            Self::IncompleteExpired => "incomplete_expired",
            Self::Trialing => "trialing",
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Canceled => "canceled",
            Self::Unpaid => "unpaid",
            Self::Paused => "paused",
            Self::Other(status) => status,
        }
    }

    /// Whether the subscription entitles the customer to the paid service: only while
    /// [`Active`](Self::Active) or [`Trialing`](Self::Trialing).
    pub fn is_entitled(&self) -> bool {
        matches!(self, Self::Active | Self::Trialing)
    }
}

impl From<&str> for SubscriptionStatus {
    /// Reads a status as Stripe spells it; any other string becomes [`SubscriptionStatus::Other`].
    fn from(status: &str) -> Self {
        match status {
            "incomplete" => Self::Incomplete,
            "incomplete_expired" => Self::IncompleteExpired,
            "trialing" => Self::Trialing,
            "active" => Self::Active,
            "past_due" => Self::PastDue,
            "canceled" => Self::Canceled,
            "unpaid" => Self::Unpaid,
            "paused" => Self::Paused,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl FromStr for SubscriptionStatus {
    type Err = Infallible;

    /// As [`From<&str>`](SubscriptionStatus::from): never fails.
    fn from_str(status: &str) -> Result<Self, Self::Err> {
        Ok(Self::from(status))
    }
}

impl fmt::Display for SubscriptionStatus {
    /// The status as Stripe spells it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a verified body could not be read as a Stripe event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body is not JSON.
    #[error("the body is not JSON: {0}")]
    Json(String),
    /// The body is JSON but not an object with `"object": "event"`.
    #[error("the body is not a Stripe event")]
    NotAnEvent,
    /// A field the event's type requires is absent or null; `field` is its path, such as
    /// `data.object.customer`.
    #[error("the event has no `{field}`")]
    MissingField {
        /// The path of the field.
        field: String,
    },
    /// A field has the wrong type or an impossible value.
    #[error("the event's `{field}` is not {expected}")]
    InvalidField {
        /// The path of the field.
        field: String,
        /// What it should be.
        expected: &'static str,
    },
}

/// Reads a verified webhook body into the event billing handles.
///
/// Requires the envelope (`object` = `event`, `id`, `type`, `created`, `livemode`); for the
/// handled types, the fields their [`BillingChange`] carries. Other types need nothing more and
/// become [`BillingChange::Ignored`]. Unknown fields are ignored. Ids may be sent as strings or
/// as expanded objects with an `id`.
pub fn parse_event(body: &[u8]) -> Result<StripeEvent, ParseError> {
    let value: Value = serde_json::from_slice(body).map_err(|error| ParseError::Json(error.to_string()))?;
    let event = Node::root(&value);
    if event.value.get("object").and_then(Value::as_str) != Some("event") {
        return Err(ParseError::NotAnEvent);
    }
    let kind = event.req("type")?.string()?;
    Ok(StripeEvent {
        id: event.req("id")?.id()?,
        created: event.req("created")?.time()?,
        livemode: event.req("livemode")?.boolean()?,
        change: billing_change(&kind, &event)?,
        kind,
    })
}

fn billing_change(kind: &str, event: &Node<'_>) -> Result<BillingChange, ParseError> {
    match kind {
        "customer.subscription.created" | "customer.subscription.updated" | "customer.subscription.deleted" => {
            subscription_change(&data_object(event)?)
        }
        "invoice.paid" => invoice_paid(&data_object(event)?),
        "invoice.payment_failed" => invoice_payment_failed(&data_object(event)?),
        "customer.deleted" => Ok(BillingChange::CustomerDeleted { customer: data_object(event)?.req("id")?.id()? }),
        _ => Ok(BillingChange::Ignored),
    }
}

/// The event's `data.object`: the resource the event is about.
fn data_object<'a>(event: &Node<'a>) -> Result<Node<'a>, ParseError> {
    let object = event.req("data")?.req("object")?;
    if !object.value.is_object() {
        return Err(object.invalid("an object"));
    }
    Ok(object)
}

fn subscription_change(subscription: &Node<'_>) -> Result<BillingChange, ParseError> {
    let items = subscription.req("items")?.req("data")?.array()?;
    let price_ids = items.iter().map(|item| item.req("price")?.id()).collect::<Result<Vec<_>, _>>()?;
    Ok(BillingChange::Subscription {
        customer: subscription.req("customer")?.id()?,
        subscription: subscription.req("id")?.id()?,
        status: SubscriptionStatus::from(subscription.req("status")?.string()?.as_str()),
        current_period_end: current_period_end(subscription, &items)?,
        price_ids,
    })
}

/// The subscription's own `current_period_end`, else the latest of its items'.
fn current_period_end(subscription: &Node<'_>, items: &[Node<'_>]) -> Result<Option<DateTime<Utc>>, ParseError> {
    if let Some(end) = subscription.opt("current_period_end") {
        return end.time().map(Some);
    }
    let mut latest = None;
    for item in items {
        if let Some(end) = item.opt("current_period_end") {
            latest = latest.max(Some(end.time()?));
        }
    }
    Ok(latest)
}

fn invoice_paid(invoice: &Node<'_>) -> Result<BillingChange, ParseError> {
    Ok(BillingChange::InvoicePaid {
        customer: invoice.req("customer")?.id()?,
        invoice: invoice.req("id")?.id()?,
        subscription: invoice_subscription(invoice)?,
    })
}

fn invoice_payment_failed(invoice: &Node<'_>) -> Result<BillingChange, ParseError> {
    let attempt_count = invoice.req("attempt_count")?;
    Ok(BillingChange::InvoicePaymentFailed {
        customer: invoice.req("customer")?.id()?,
        invoice: invoice.req("id")?.id()?,
        subscription: invoice_subscription(invoice)?,
        attempt_count: attempt_count
            .value
            .as_u64()
            .and_then(|count| u32::try_from(count).ok())
            .ok_or_else(|| attempt_count.invalid("a count"))?,
        next_payment_attempt: invoice.opt("next_payment_attempt").map(|at| at.time()).transpose()?,
    })
}

/// The invoice's `subscription` (before `2025-03-31.basil`), else its
/// `parent.subscription_details.subscription` (basil and later).
fn invoice_subscription(invoice: &Node<'_>) -> Result<Option<String>, ParseError> {
    let subscription =
        invoice.opt("subscription").or_else(|| invoice.opt("parent")?.opt("subscription_details")?.opt("subscription"));
    subscription.map(|subscription| subscription.id()).transpose()
}

/// A JSON value and its path from the event's root, for errors that name the field.
struct Node<'a> {
    value: &'a Value,
    path: String,
}

impl<'a> Node<'a> {
    fn root(value: &'a Value) -> Self {
        Self { value, path: String::new() }
    }

    fn child_path(&self, name: &str) -> String {
        if self.path.is_empty() { name.to_owned() } else { format!("{}.{name}", self.path) }
    }

    /// The field `name`; none when it is absent or null.
    fn opt(&self, name: &str) -> Option<Node<'a>> {
        match self.value.get(name) {
            None | Some(Value::Null) => None,
            Some(value) => Some(Node { value, path: self.child_path(name) }),
        }
    }

    /// The field `name`, which must be present and not null.
    fn req(&self, name: &str) -> Result<Node<'a>, ParseError> {
        self.opt(name).ok_or_else(|| ParseError::MissingField { field: self.child_path(name) })
    }

    fn invalid(&self, expected: &'static str) -> ParseError {
        ParseError::InvalidField { field: self.path.clone(), expected }
    }

    fn string(&self) -> Result<String, ParseError> {
        self.value.as_str().map(str::to_owned).ok_or_else(|| self.invalid("a string"))
    }

    fn boolean(&self) -> Result<bool, ParseError> {
        self.value.as_bool().ok_or_else(|| self.invalid("a boolean"))
    }

    /// Unix seconds.
    fn time(&self) -> Result<DateTime<Utc>, ParseError> {
        self.value
            .as_i64()
            .and_then(|secs| DateTime::from_timestamp(secs, 0))
            .ok_or_else(|| self.invalid("a time in unix seconds"))
    }

    /// A non-empty id, sent as a string or as an expanded object with an `id`.
    fn id(&self) -> Result<String, ParseError> {
        let id = match self.value {
            Value::Object(_) => self.req("id")?.value,
            value => value,
        };
        match id.as_str() {
            Some(id) if !id.is_empty() => Ok(id.to_owned()),
            _ => Err(self.invalid("an id")),
        }
    }

    fn array(&self) -> Result<Vec<Node<'a>>, ParseError> {
        let values = self.value.as_array().ok_or_else(|| self.invalid("an array"))?;
        Ok(values
            .iter()
            .enumerate()
            .map(|(index, value)| Node { value, path: format!("{}[{index}]", self.path) })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test";
    const PREVIOUS_SECRET: &str = "whsec_previous";
    const T: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","type":"invoice.paid"}"#;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).expect("a valid time")
    }

    fn verify(secrets: &[&str], header: &str, body: &[u8], now: i64) -> Result<(), SignatureError> {
        verify_signature(secrets, header, body, at(now), DEFAULT_TOLERANCE)
    }

    /// The `v1` digest of a header made by [`sign`].
    fn v1_of(header: &str) -> String {
        header.split_once(",v1=").expect("a signed header").1.to_owned()
    }

    #[test]
    fn known_answer_matches_an_independent_hmac() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"whsec_test",
        //   b"1700000000." + BODY, hashlib.sha256).hexdigest())'
        let expected = "t=1700000000,v1=1c2f96127e7a2cf2d4e6c7411d1084ca8bbb3c48760054040f24bfbb6f277046";
        assert_eq!(sign(SECRET, T, BODY), expected);
        assert_eq!(verify(&[SECRET], expected, BODY, T), Ok(()));
    }

    #[test]
    fn accepts_a_valid_signature() {
        let header = sign(SECRET, T, BODY);
        assert_eq!(verify(&[SECRET], &header, BODY, T + 10), Ok(()));
    }

    #[test]
    fn rejects_a_tampered_body() {
        let header = sign(SECRET, T, BODY);
        let tampered = br#"{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","type":"invoice.paid" }"#;
        assert_eq!(verify(&[SECRET], &header, tampered, T), Err(SignatureError::Mismatch));
    }

    #[test]
    fn rejects_a_tampered_timestamp() {
        let header = sign(SECRET, T, BODY).replace("t=1700000000", "t=1700000001");
        assert_eq!(verify(&[SECRET], &header, BODY, T), Err(SignatureError::Mismatch));
    }

    #[test]
    fn rejects_another_secret() {
        let header = sign("whsec_other", T, BODY);
        assert_eq!(verify(&[SECRET], &header, BODY, T), Err(SignatureError::Mismatch));
        assert_eq!(verify(&[], &header, BODY, T), Err(SignatureError::Mismatch));
    }

    #[test]
    fn an_empty_secret_never_matches() {
        let header = sign("", T, BODY);
        assert_eq!(verify(&[""], &header, BODY, T), Err(SignatureError::Mismatch));
    }

    #[test]
    fn accepts_timestamps_up_to_the_tolerance_either_way() {
        let header = sign(SECRET, T, BODY);
        assert_eq!(verify(&[SECRET], &header, BODY, T + 300), Ok(()));
        assert_eq!(verify(&[SECRET], &header, BODY, T - 300), Ok(()));
    }

    #[test]
    fn rejects_a_stale_timestamp() {
        let header = sign(SECRET, T, BODY);
        assert_eq!(verify(&[SECRET], &header, BODY, T + 301), Err(SignatureError::Stale { age_secs: 301 }));
        assert_eq!(verify(&[SECRET], &header, BODY, T + 86_400), Err(SignatureError::Stale { age_secs: 86_400 }));
    }

    #[test]
    fn rejects_a_future_timestamp() {
        let header = sign(SECRET, T, BODY);
        assert_eq!(verify(&[SECRET], &header, BODY, T - 301), Err(SignatureError::Stale { age_secs: -301 }));
    }

    #[test]
    fn the_tolerance_is_the_callers() {
        let header = sign(SECRET, T, BODY);
        let now = at(T + 10);
        assert_eq!(verify_signature(&[SECRET], &header, BODY, now, Duration::from_secs(10)), Ok(()));
        assert_eq!(
            verify_signature(&[SECRET], &header, BODY, now, Duration::from_secs(9)),
            Err(SignatureError::Stale { age_secs: 10 })
        );
    }

    #[test]
    fn a_forged_stale_delivery_is_a_mismatch() {
        let header = sign("whsec_other", T, BODY);
        assert_eq!(verify(&[SECRET], &header, BODY, T + 10_000), Err(SignatureError::Mismatch));
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        for t in [i64::MIN, i64::MAX] {
            let header = sign(SECRET, t, BODY);
            assert!(matches!(verify(&[SECRET], &header, BODY, T), Err(SignatureError::Stale { .. })));
        }
    }

    #[test]
    fn accepts_when_only_the_last_v1_is_valid() {
        let wrong = v1_of(&sign("whsec_other", T, BODY));
        let right = v1_of(&sign(SECRET, T, BODY));
        let header = format!("t={T},v1={wrong},v1={right}");
        assert_eq!(verify(&[SECRET], &header, BODY, T), Ok(()));
    }

    #[test]
    fn accepts_when_only_the_first_v1_is_valid() {
        let right = v1_of(&sign(SECRET, T, BODY));
        let wrong = v1_of(&sign("whsec_other", T, BODY));
        let header = format!("t={T},v1={right},v1={wrong}");
        assert_eq!(verify(&[SECRET], &header, BODY, T), Ok(()));
    }

    #[test]
    fn rejects_when_no_v1_is_valid() {
        let wrong = v1_of(&sign("whsec_other", T, BODY));
        let also_wrong = v1_of(&sign("whsec_another", T, BODY));
        let header = format!("t={T},v1={wrong},v1={also_wrong}");
        assert_eq!(verify(&[SECRET, PREVIOUS_SECRET], &header, BODY, T), Err(SignatureError::Mismatch));
    }

    #[test]
    fn accepts_the_previous_secret_while_rolling() {
        let old = sign(PREVIOUS_SECRET, T, BODY);
        assert_eq!(verify(&[SECRET, PREVIOUS_SECRET], &old, BODY, T), Ok(()));
        assert_eq!(verify(&[SECRET], &old, BODY, T), Err(SignatureError::Mismatch));

        // While rolling, Stripe signs with both: either order of secrets and signatures passes.
        let new = v1_of(&sign(SECRET, T, BODY));
        let both = format!("{old},v1={new}");
        assert_eq!(verify(&[PREVIOUS_SECRET], &both, BODY, T), Ok(()));
        assert_eq!(verify(&[SECRET], &both, BODY, T), Ok(()));
    }

    #[test]
    fn ignores_v0_and_unknown_schemes() {
        let right = v1_of(&sign(SECRET, T, BODY));
        let header = format!("t={T},v0=not-even-hex,v1={right},v2=whatever,x=");
        assert_eq!(verify(&[SECRET], &header, BODY, T), Ok(()));
        // A valid digest under v0 is not a v1 signature.
        assert_eq!(verify(&[SECRET], &format!("t={T},v0={right}"), BODY, T), Err(SignatureError::NoSignature));
    }

    #[test]
    fn tolerates_spaces_between_elements() {
        let right = v1_of(&sign(SECRET, T, BODY));
        assert_eq!(verify(&[SECRET], &format!(" t={T}, v1={right} "), BODY, T), Ok(()));
    }

    #[test]
    fn names_a_missing_timestamp_or_signature() {
        let right = v1_of(&sign(SECRET, T, BODY));
        assert_eq!(verify(&[SECRET], &format!("v1={right}"), BODY, T), Err(SignatureError::MissingTimestamp));
        assert_eq!(verify(&[SECRET], &format!("t={T}"), BODY, T), Err(SignatureError::NoSignature));
        assert_eq!(verify(&[SECRET], "v0=abc", BODY, T), Err(SignatureError::MissingTimestamp));
    }

    #[test]
    fn rejects_malformed_headers() {
        let right = v1_of(&sign(SECRET, T, BODY));
        let headers = [
            String::new(),
            " ".to_owned(),
            ",".to_owned(),
            "t=".to_owned(),
            "t".to_owned(),
            "v1=zz".to_owned(),
            "garbage".to_owned(),
            format!("t=abc,v1={right}"),
            format!("t=1.5,v1={right}"),
            format!("t=99999999999999999999,v1={right}"),
            format!("t={T},t={T},v1={right}"),
            format!("t={T},,v1={right}"),
            format!("t={T},v1={right},"),
            format!("t={T},v1="),
            format!("t={T},v1=zz"),
            format!("t={T},v1={}", &right[..62]),
            format!("t={T},v1={right}00"),
            format!("t={T},v1={}", right.replace(char::is_numeric, "g")),
            format!("t={T};v1={right}"),
        ];
        for header in headers {
            assert_eq!(verify(&[SECRET], &header, BODY, T), Err(SignatureError::Malformed), "{header:?}");
        }
    }

    #[test]
    fn accepts_uppercase_hex() {
        let right = v1_of(&sign(SECRET, T, BODY)).to_uppercase();
        assert_eq!(verify(&[SECRET], &format!("t={T},v1={right}"), BODY, T), Ok(()));
    }

    #[test]
    fn error_messages_do_not_reveal_the_secret() {
        let header = sign(SECRET, T, BODY);
        for now in [T, T + 1_000] {
            for body in [BODY, b"other"] {
                if let Err(error) = verify(&[SECRET], &header, body, now) {
                    let message = error.to_string();
                    assert!(!message.contains(SECRET) && !message.contains(&v1_of(&header)), "{message}");
                }
            }
        }
    }

    // Event bodies as Stripe sends them (trimmed of fields billing never reads).

    /// `customer.subscription.updated` in `2025-03-31.basil`: the period is on the items, and the
    /// first item's ends last.
    const SUBSCRIPTION_UPDATED_BASIL: &str = r#"{
      "id": "evt_1RAbcd2eZvKYlo2C0a1b2c3d",
      "object": "event",
      "api_version": "2025-03-31.basil",
      "created": 1743465600,
      "data": {
        "object": {
          "id": "sub_1RAbcd2eZvKYlo2Cx9y8z7w6",
          "object": "subscription",
          "billing_cycle_anchor": 1743465600,
          "cancel_at_period_end": false,
          "collection_method": "charge_automatically",
          "created": 1743465600,
          "currency": "usd",
          "customer": "cus_S4abcdEFGHijkl",
          "items": {
            "object": "list",
            "data": [
              {
                "id": "si_S4abcdItem0001",
                "object": "subscription_item",
                "created": 1743465601,
                "current_period_end": 1746144000,
                "current_period_start": 1743465600,
                "price": {
                  "id": "price_1RAbasePlan000",
                  "object": "price",
                  "active": true,
                  "currency": "usd",
                  "product": "prod_S4abcdBase",
                  "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
                  "type": "recurring",
                  "unit_amount": 4900
                },
                "quantity": 1,
                "subscription": "sub_1RAbcd2eZvKYlo2Cx9y8z7w6"
              },
              {
                "id": "si_S4abcdItem0002",
                "object": "subscription_item",
                "created": 1743465601,
                "current_period_end": 1746057600,
                "current_period_start": 1743465600,
                "price": {
                  "id": "price_1RAmeteredTok0",
                  "object": "price",
                  "recurring": {"interval": "month", "interval_count": 1, "meter": "mtr_123", "usage_type": "metered"},
                  "type": "recurring",
                  "unit_amount": null
                },
                "subscription": "sub_1RAbcd2eZvKYlo2Cx9y8z7w6"
              }
            ],
            "has_more": false,
            "total_count": 2,
            "url": "/v1/subscription_items?subscription=sub_1RAbcd2eZvKYlo2Cx9y8z7w6"
          },
          "latest_invoice": "in_1RAbcd2eZvKYlo2Cinv00001",
          "livemode": false,
          "metadata": {"aicd_org": "0192f1a4-0000-7000-8000-000000000001"},
          "start_date": 1743465600,
          "status": "active",
          "trial_end": null
        },
        "previous_attributes": {"status": "incomplete"}
      },
      "livemode": false,
      "pending_webhooks": 1,
      "request": {"id": "req_abc123", "idempotency_key": "8b5c0b4e-2f4e-4a0c-9a43-1f6f0a2b3c4d"},
      "type": "customer.subscription.updated"
    }"#;

    /// `customer.subscription.created` in `2024-06-20`: the period is on the subscription, and
    /// the customer is expanded.
    const SUBSCRIPTION_CREATED_2024: &str = r#"{
      "id": "evt_1PXyz12eZvKYlo2CAbCdEfGh",
      "object": "event",
      "api_version": "2024-06-20",
      "created": 1719878400,
      "data": {
        "object": {
          "id": "sub_1PXyz12eZvKYlo2Csubsub01",
          "object": "subscription",
          "current_period_end": 1722556800,
          "current_period_start": 1719878400,
          "customer": {"id": "cus_QOldShapeCust", "object": "customer", "email": "billing@example.com"},
          "items": {
            "object": "list",
            "data": [
              {
                "id": "si_QOldShapeItem",
                "object": "subscription_item",
                "plan": {"id": "price_1PXteamPlan00", "object": "plan", "interval": "month"},
                "price": {"id": "price_1PXteamPlan00", "object": "price", "unit_amount": 19900},
                "quantity": 5
              }
            ],
            "has_more": false
          },
          "livemode": true,
          "status": "trialing",
          "trial_end": 1721088000
        }
      },
      "livemode": true,
      "pending_webhooks": 2,
      "request": {"id": null, "idempotency_key": null},
      "type": "customer.subscription.created"
    }"#;

    const SUBSCRIPTION_DELETED: &str = r#"{
      "id": "evt_1RCdel02eZvKYlo2Cdeleted",
      "object": "event",
      "api_version": "2025-03-31.basil",
      "created": 1746057700,
      "data": {
        "object": {
          "id": "sub_1RAbcd2eZvKYlo2Cx9y8z7w6",
          "object": "subscription",
          "canceled_at": 1746057700,
          "customer": "cus_S4abcdEFGHijkl",
          "ended_at": 1746057700,
          "items": {"object": "list", "data": [
            {"id": "si_S4abcdItem0001", "current_period_end": 1746057600, "price": {"id": "price_1RAbasePlan000"}}
          ], "has_more": false},
          "status": "canceled"
        }
      },
      "livemode": false,
      "pending_webhooks": 1,
      "request": {"id": null, "idempotency_key": null},
      "type": "customer.subscription.deleted"
    }"#;

    /// `invoice.paid` in `2024-06-20`: the subscription is a top-level field.
    const INVOICE_PAID_2024: &str = r#"{
      "id": "evt_1PXinvPaid2eZvKYlo2Cpaid",
      "object": "event",
      "api_version": "2024-06-20",
      "created": 1722556900,
      "data": {
        "object": {
          "id": "in_1PXinvoice2eZvKYlo2C0001",
          "object": "invoice",
          "amount_due": 19900,
          "amount_paid": 19900,
          "attempt_count": 1,
          "attempted": true,
          "billing_reason": "subscription_cycle",
          "customer": "cus_QOldShapeCust",
          "next_payment_attempt": null,
          "paid": true,
          "status": "paid",
          "subscription": "sub_1PXyz12eZvKYlo2Csubsub01",
          "subscription_details": {"metadata": {}}
        }
      },
      "livemode": true,
      "pending_webhooks": 1,
      "request": {"id": null, "idempotency_key": null},
      "type": "invoice.paid"
    }"#;

    /// `invoice.paid` in `2025-03-31.basil`: the subscription is under `parent`.
    const INVOICE_PAID_BASIL: &str = r#"{
      "id": "evt_1RBinvPaid2eZvKYlo2Cpaid",
      "object": "event",
      "api_version": "2025-03-31.basil",
      "created": 1746057800,
      "data": {
        "object": {
          "id": "in_1RBinvoice2eZvKYlo2C0002",
          "object": "invoice",
          "amount_due": 4900,
          "amount_paid": 4900,
          "attempt_count": 1,
          "billing_reason": "subscription_cycle",
          "customer": "cus_S4abcdEFGHijkl",
          "next_payment_attempt": null,
          "parent": {
            "quote_details": null,
            "subscription_details": {
              "metadata": {"aicd_org": "0192f1a4-0000-7000-8000-000000000001"},
              "subscription": "sub_1RAbcd2eZvKYlo2Cx9y8z7w6"
            },
            "type": "subscription_details"
          },
          "status": "paid"
        }
      },
      "livemode": false,
      "pending_webhooks": 1,
      "request": {"id": null, "idempotency_key": null},
      "type": "invoice.paid"
    }"#;

    /// `invoice.payment_failed` in `2025-03-31.basil`, with a retry scheduled.
    const INVOICE_PAYMENT_FAILED_BASIL: &str = r#"{
      "id": "evt_1RBfail002eZvKYlo2Cfailed",
      "object": "event",
      "api_version": "2025-03-31.basil",
      "created": 1746057900,
      "data": {
        "object": {
          "id": "in_1RBinvoice2eZvKYlo2C0003",
          "object": "invoice",
          "amount_due": 4900,
          "amount_paid": 0,
          "attempt_count": 2,
          "attempted": true,
          "customer": "cus_S4abcdEFGHijkl",
          "next_payment_attempt": 1746316800,
          "parent": {
            "quote_details": null,
            "subscription_details": {"metadata": {}, "subscription": "sub_1RAbcd2eZvKYlo2Cx9y8z7w6"},
            "type": "subscription_details"
          },
          "status": "open"
        }
      },
      "livemode": false,
      "pending_webhooks": 1,
      "request": {"id": null, "idempotency_key": null},
      "type": "invoice.payment_failed"
    }"#;

    /// `invoice.payment_failed` in `2024-06-20` for a one-off invoice, retries exhausted.
    const INVOICE_PAYMENT_FAILED_2024: &str = r#"{
      "id": "evt_1PXfail002eZvKYlo2Cfailed",
      "object": "event",
      "api_version": "2024-06-20",
      "created": 1722557000,
      "data": {
        "object": {
          "id": "in_1PXinvoice2eZvKYlo2C0004",
          "object": "invoice",
          "attempt_count": 4,
          "customer": "cus_QOldShapeCust",
          "next_payment_attempt": null,
          "status": "open",
          "subscription": null
        }
      },
      "livemode": true,
      "pending_webhooks": 1,
      "request": {"id": null, "idempotency_key": null},
      "type": "invoice.payment_failed"
    }"#;

    const CUSTOMER_DELETED: &str = r#"{
      "id": "evt_1RCcusDel2eZvKYlo2Cgone",
      "object": "event",
      "api_version": "2025-03-31.basil",
      "created": 1746058000,
      "data": {
        "object": {"id": "cus_S4abcdEFGHijkl", "object": "customer", "email": "billing@example.com", "metadata": {}}
      },
      "livemode": false,
      "pending_webhooks": 1,
      "request": {"id": null, "idempotency_key": null},
      "type": "customer.deleted"
    }"#;

    const CHARGE_SUCCEEDED: &str = r#"{
      "id": "evt_3RCchg2eZvKYlo2C1charge",
      "object": "event",
      "api_version": "2025-03-31.basil",
      "created": 1746058100,
      "data": {"object": {"id": "ch_3RCchg2eZvKYlo2C1abc", "object": "charge", "amount": 4900}},
      "livemode": false,
      "pending_webhooks": 1,
      "request": {"id": null, "idempotency_key": null},
      "type": "charge.succeeded"
    }"#;

    /// An event of type `kind` with only the envelope, and `rest` appended to it.
    fn minimal_event(kind: &str, rest: &str) -> String {
        format!(r#"{{"id":"evt_1","object":"event","created":1,"livemode":false,"type":"{kind}"{rest}}}"#)
    }

    fn parse(body: &str) -> StripeEvent {
        parse_event(body.as_bytes()).expect("a valid event")
    }

    /// `body` with the JSON field `"{name}": ...` (on one line) removed.
    fn without(body: &str, name: &str) -> String {
        let needle = format!("\"{name}\":");
        body.lines().filter(|line| !line.trim_start().starts_with(&needle)).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn parses_a_basil_subscription_update_with_item_periods() {
        let event = parse(SUBSCRIPTION_UPDATED_BASIL);
        assert_eq!(event.id, "evt_1RAbcd2eZvKYlo2C0a1b2c3d");
        assert_eq!(event.kind, "customer.subscription.updated");
        assert_eq!(event.created, at(1_743_465_600));
        assert!(!event.livemode);
        assert_eq!(
            event.change,
            BillingChange::Subscription {
                customer: "cus_S4abcdEFGHijkl".into(),
                subscription: "sub_1RAbcd2eZvKYlo2Cx9y8z7w6".into(),
                status: SubscriptionStatus::Active,
                current_period_end: Some(at(1_746_144_000)),
                price_ids: vec!["price_1RAbasePlan000".into(), "price_1RAmeteredTok0".into()],
            }
        );
    }

    #[test]
    fn parses_an_older_subscription_with_its_own_period_and_an_expanded_customer() {
        let event = parse(SUBSCRIPTION_CREATED_2024);
        assert_eq!(event.kind, "customer.subscription.created");
        assert!(event.livemode);
        assert_eq!(
            event.change,
            BillingChange::Subscription {
                customer: "cus_QOldShapeCust".into(),
                subscription: "sub_1PXyz12eZvKYlo2Csubsub01".into(),
                status: SubscriptionStatus::Trialing,
                current_period_end: Some(at(1_722_556_800)),
                price_ids: vec!["price_1PXteamPlan00".into()],
            }
        );
    }

    #[test]
    fn the_subscription_period_wins_over_the_items() {
        let body =
            SUBSCRIPTION_UPDATED_BASIL.replace(r#""billing_cycle_anchor""#, r#""current_period_end": 1750000000, "x""#);
        let BillingChange::Subscription { current_period_end, .. } = parse(&body).change else {
            panic!("a subscription change");
        };
        assert_eq!(current_period_end, Some(at(1_750_000_000)));
    }

    #[test]
    fn a_subscription_without_any_period_has_none() {
        let body = without(SUBSCRIPTION_UPDATED_BASIL, "current_period_end");
        let BillingChange::Subscription { current_period_end, price_ids, .. } = parse(&body).change else {
            panic!("a subscription change");
        };
        assert_eq!(current_period_end, None);
        assert_eq!(price_ids.len(), 2);
    }

    #[test]
    fn parses_a_subscription_deletion_with_the_status_sent() {
        let event = parse(SUBSCRIPTION_DELETED);
        let BillingChange::Subscription { status, subscription, current_period_end, .. } = event.change else {
            panic!("a subscription change");
        };
        assert_eq!(status, SubscriptionStatus::Canceled);
        assert!(!status.is_entitled());
        assert_eq!(subscription, "sub_1RAbcd2eZvKYlo2Cx9y8z7w6");
        assert_eq!(current_period_end, Some(at(1_746_057_600)));
    }

    #[test]
    fn an_unknown_subscription_status_is_kept() {
        let body = SUBSCRIPTION_DELETED.replace(r#""status": "canceled""#, r#""status": "suspended""#);
        let BillingChange::Subscription { status, .. } = parse(&body).change else {
            panic!("a subscription change");
        };
        assert_eq!(status, SubscriptionStatus::Other("suspended".into()));
        assert_eq!(status.as_str(), "suspended");
    }

    #[test]
    fn parses_an_older_paid_invoice_with_a_top_level_subscription() {
        let event = parse(INVOICE_PAID_2024);
        assert_eq!(event.kind, "invoice.paid");
        assert_eq!(
            event.change,
            BillingChange::InvoicePaid {
                customer: "cus_QOldShapeCust".into(),
                invoice: "in_1PXinvoice2eZvKYlo2C0001".into(),
                subscription: Some("sub_1PXyz12eZvKYlo2Csubsub01".into()),
            }
        );
    }

    #[test]
    fn parses_a_basil_paid_invoice_with_the_subscription_under_parent() {
        let event = parse(INVOICE_PAID_BASIL);
        assert_eq!(
            event.change,
            BillingChange::InvoicePaid {
                customer: "cus_S4abcdEFGHijkl".into(),
                invoice: "in_1RBinvoice2eZvKYlo2C0002".into(),
                subscription: Some("sub_1RAbcd2eZvKYlo2Cx9y8z7w6".into()),
            }
        );
    }

    #[test]
    fn an_invoice_with_an_expanded_subscription_gives_its_id() {
        let body = INVOICE_PAID_2024.replace(
            r#""subscription": "sub_1PXyz12eZvKYlo2Csubsub01""#,
            r#""subscription": {"id": "sub_expanded", "object": "subscription"}"#,
        );
        let BillingChange::InvoicePaid { subscription, .. } = parse(&body).change else {
            panic!("an invoice change");
        };
        assert_eq!(subscription.as_deref(), Some("sub_expanded"));
    }

    #[test]
    fn parses_a_failed_payment_with_a_retry() {
        let event = parse(INVOICE_PAYMENT_FAILED_BASIL);
        assert_eq!(event.kind, "invoice.payment_failed");
        assert_eq!(
            event.change,
            BillingChange::InvoicePaymentFailed {
                customer: "cus_S4abcdEFGHijkl".into(),
                invoice: "in_1RBinvoice2eZvKYlo2C0003".into(),
                subscription: Some("sub_1RAbcd2eZvKYlo2Cx9y8z7w6".into()),
                attempt_count: 2,
                next_payment_attempt: Some(at(1_746_316_800)),
            }
        );
    }

    #[test]
    fn parses_a_failed_payment_without_subscription_or_retry() {
        let event = parse(INVOICE_PAYMENT_FAILED_2024);
        assert_eq!(
            event.change,
            BillingChange::InvoicePaymentFailed {
                customer: "cus_QOldShapeCust".into(),
                invoice: "in_1PXinvoice2eZvKYlo2C0004".into(),
                subscription: None,
                attempt_count: 4,
                next_payment_attempt: None,
            }
        );
    }

    #[test]
    fn parses_a_customer_deletion() {
        let event = parse(CUSTOMER_DELETED);
        assert_eq!(event.kind, "customer.deleted");
        assert_eq!(event.change, BillingChange::CustomerDeleted { customer: "cus_S4abcdEFGHijkl".into() });
    }

    #[test]
    fn other_event_types_are_ignored() {
        let event = parse(CHARGE_SUCCEEDED);
        assert_eq!(event.kind, "charge.succeeded");
        assert_eq!(event.id, "evt_3RCchg2eZvKYlo2C1charge");
        assert_eq!(event.change, BillingChange::Ignored);

        // Near misses of handled types are other types too; an ignored event needs no data.
        for kind in ["invoice.payment_succeeded", "customer.subscription.paused", "customer.updated"] {
            assert_eq!(parse(&minimal_event(kind, "")).change, BillingChange::Ignored, "{kind}");
        }
    }

    fn missing(body: &str) -> String {
        match parse_event(body.as_bytes()) {
            Err(ParseError::MissingField { field }) => field,
            other => panic!("expected a missing field, got {other:?}"),
        }
    }

    #[test]
    fn names_a_missing_field() {
        assert_eq!(missing(&without(SUBSCRIPTION_UPDATED_BASIL, "customer")), "data.object.customer");
        assert_eq!(missing(&without(SUBSCRIPTION_CREATED_2024, "status")), "data.object.status");
        assert_eq!(missing(&without(SUBSCRIPTION_CREATED_2024, "price")), "data.object.items.data[0].price");
        assert_eq!(missing(&without(INVOICE_PAYMENT_FAILED_BASIL, "attempt_count")), "data.object.attempt_count");
        assert_eq!(missing(&without(INVOICE_PAID_BASIL, "customer")), "data.object.customer");
        assert_eq!(missing(&without(CHARGE_SUCCEEDED, "created")), "created");
        assert_eq!(missing(&without(CHARGE_SUCCEEDED, "livemode")), "livemode");
        assert_eq!(missing(&CHARGE_SUCCEEDED.replace(r#""type":"#, r#""kind":"#)), "type");
        assert_eq!(missing(&minimal_event("customer.deleted", "")), "data");
        assert_eq!(missing(&minimal_event("customer.deleted", r#","data":{"object":{}}"#)), "data.object.id");
        let expanded_without_id = SUBSCRIPTION_CREATED_2024.replace(r#""id": "cus_QOldShapeCust", "#, "");
        assert_eq!(missing(&expanded_without_id), "data.object.customer.id");
    }

    #[test]
    fn names_an_invalid_field() {
        let invalid = |body: &str| match parse_event(body.as_bytes()) {
            Err(ParseError::InvalidField { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        };
        assert_eq!(invalid(&CHARGE_SUCCEEDED.replace("1746058100", r#""1746058100""#)), "created");
        assert_eq!(invalid(&CHARGE_SUCCEEDED.replace(r#""livemode": false"#, r#""livemode": "no""#)), "livemode");
        assert_eq!(
            invalid(&INVOICE_PAYMENT_FAILED_BASIL.replace(r#""attempt_count": 2"#, r#""attempt_count": -1"#)),
            "data.object.attempt_count"
        );
        assert_eq!(
            invalid(&INVOICE_PAYMENT_FAILED_BASIL.replace("1746316800", "1e99")),
            "data.object.next_payment_attempt"
        );
        assert_eq!(
            invalid(&INVOICE_PAID_BASIL.replace(r#""customer": "cus_S4abcdEFGHijkl""#, r#""customer": """#)),
            "data.object.customer"
        );
        assert_eq!(
            invalid(
                &SUBSCRIPTION_DELETED
                    .replace(r#""items": {"object": "list", "data": ["#, r#""items": {"data": {}, "x": ["#)
            ),
            "data.object.items.data"
        );
        assert_eq!(
            invalid(
                &SUBSCRIPTION_DELETED
                    .replace("\"current_period_end\": 1746057600", "\"current_period_end\": 99999999999999999")
            ),
            "data.object.items.data[0].current_period_end"
        );
        assert_eq!(invalid(&minimal_event("customer.deleted", r#","data":{"object":"cus_1"}"#)), "data.object");
    }

    #[test]
    fn rejects_bodies_that_are_not_events() {
        assert!(matches!(parse_event(b""), Err(ParseError::Json(_))));
        assert!(matches!(parse_event(b"{\"id\":"), Err(ParseError::Json(_))));
        assert!(matches!(parse_event(&[0xff, 0xfe]), Err(ParseError::Json(_))));
        for body in [r#"[]"#, r#""event""#, "null", r#"{"id":"cus_1","object":"customer"}"#, r#"{"id":"evt_1"}"#] {
            assert_eq!(parse_event(body.as_bytes()), Err(ParseError::NotAnEvent), "{body}");
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(parse_event(deep.as_bytes()), Err(ParseError::Json(_))));
    }

    #[test]
    fn subscription_statuses_round_trip() {
        let known = [
            (SubscriptionStatus::Incomplete, "incomplete"),
            (SubscriptionStatus::IncompleteExpired, "incomplete_expired"),
            (SubscriptionStatus::Trialing, "trialing"),
            (SubscriptionStatus::Active, "active"),
            (SubscriptionStatus::PastDue, "past_due"),
            (SubscriptionStatus::Canceled, "canceled"),
            (SubscriptionStatus::Unpaid, "unpaid"),
            (SubscriptionStatus::Paused, "paused"),
        ];
        for (status, name) in known {
            assert_eq!(status.as_str(), name);
            assert_eq!(status.to_string(), name);
            assert_eq!(SubscriptionStatus::from(name), status);
            assert_eq!(name.parse::<SubscriptionStatus>(), Ok(status));
        }
        assert_eq!("Active".parse::<SubscriptionStatus>(), Ok(SubscriptionStatus::Other("Active".into())));
    }

    #[test]
    fn only_active_and_trialing_are_entitled() {
        let entitled: Vec<_> = [
            "incomplete",
            "incomplete_expired",
            "trialing",
            "active",
            "past_due",
            "canceled",
            "unpaid",
            "paused",
            "other",
        ]
        .into_iter()
        .filter(|name| SubscriptionStatus::from(*name).is_entitled())
        .collect();
        assert_eq!(entitled, ["trialing", "active"]);
    }

    #[test]
    fn a_signed_event_verifies_then_parses() {
        let body = INVOICE_PAID_BASIL.as_bytes();
        let header = sign(SECRET, 1_746_057_800, body);
        assert_eq!(verify(&[SECRET], &header, body, 1_746_057_810), Ok(()));
        assert!(matches!(parse_event(body).map(|event| event.change), Ok(BillingChange::InvoicePaid { .. })));
    }
}
