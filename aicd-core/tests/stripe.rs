//! The Stripe adapter of the billing port against a stand-in for Stripe (wiremock) that answers
//! with Stripe's documented response shapes: what goes on the wire, and how each answer maps to
//! a [`BillingError`].

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aicd_core::OrgId;
use aicd_core::billing::stripe::StripeBilling;
use aicd_core::billing::{Billing, BillingError, MeterEvent};
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "sk_test_51AicdTestKeyDoNotLeak";

fn customer_json(id: &str, name: &str, org: &str) -> Value {
    json!({
        "id": id,
        "object": "customer",
        "address": null,
        "balance": 0,
        "created": 1680893993,
        "currency": null,
        "default_source": null,
        "delinquent": false,
        "description": null,
        "email": null,
        "invoice_prefix": "0759376C",
        "invoice_settings": {
            "custom_fields": null,
            "default_payment_method": null,
            "footer": null,
            "rendering_options": null
        },
        "livemode": false,
        "metadata": { "aicd_org_id": org },
        "name": name,
        "next_invoice_sequence": 1,
        "phone": null,
        "preferred_locales": [],
        "shipping": null,
        "tax_exempt": "none",
        "test_clock": null
    })
}

fn meter_event_json(event: &MeterEvent) -> Value {
    json!({
        "object": "billing.meter_event",
        "created": 1704824589,
        "event_name": event.event_name,
        "identifier": event.identifier,
        "livemode": false,
        "payload": { "stripe_customer_id": event.customer, "value": event.value.to_string() },
        "timestamp": event.timestamp.timestamp()
    })
}

fn stripe_error(kind: &str, code: Option<&str>, message: &str) -> Value {
    let mut error = json!({ "type": kind, "message": message });
    if let Some(code) = code {
        error["code"] = json!(code);
    }
    json!({ "error": error })
}

fn event() -> MeterEvent {
    MeterEvent {
        event_name: "aicd_tokens".into(),
        customer: "cus_NffrFeUfNV2Hib".into(),
        value: 1234,
        identifier: "aicd-usage-0190f3a2-7c1e-7000-8000-000000000001".into(),
        timestamp: Utc.with_ymd_and_hms(2026, 3, 14, 15, 9, 26).single().expect("a valid date"),
    }
}

async fn billing(server: &MockServer) -> StripeBilling {
    StripeBilling::new(KEY, Some(&server.uri())).expect("a client")
}

/// The body of a form-encoded request as its (name, value) pairs, in order.
fn form(request: &Request) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
                    out.push(u8::from_str_radix(hex, 16).expect("a percent escape"));
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).expect("utf-8")
    }
    let body = std::str::from_utf8(&request.body).expect("a text body");
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

fn sorted(mut pairs: Vec<(String, String)>) -> Vec<(String, String)> {
    pairs.sort();
    pairs
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    sorted(expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

async fn received(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.expect("request recording is on")
}

#[tokio::test]
async fn a_meter_event_is_sent_form_encoded_with_exactly_its_fields_and_the_bearer_key() {
    let server = MockServer::start().await;
    let event = event();
    Mock::given(method("POST"))
        .and(path("/v1/billing/meter_events"))
        .respond_with(ResponseTemplate::new(200).set_body_json(meter_event_json(&event)))
        .expect(1)
        .mount(&server)
        .await;

    billing(&server).await.send_meter_event(&event).await.expect("the event is recorded");

    let requests = received(&server).await;
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.headers.get("authorization").and_then(|v| v.to_str().ok()), Some(&*format!("Bearer {KEY}")));
    assert_eq!(
        request.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        sorted(form(request)),
        pairs(&[
            ("event_name", "aicd_tokens"),
            ("identifier", "aicd-usage-0190f3a2-7c1e-7000-8000-000000000001"),
            ("payload[stripe_customer_id]", "cus_NffrFeUfNV2Hib"),
            ("payload[value]", "1234"),
            ("timestamp", "1773500966"),
        ])
    );
    assert!(request.headers.get("idempotency-key").is_none(), "the identifier is the deduplication key");
}

#[tokio::test]
async fn a_customer_is_created_under_an_idempotency_key_per_org_with_its_metadata() {
    let server = MockServer::start().await;
    let org = OrgId::new();
    let key = format!("aicd-customer-{org}");
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .and(header("idempotency-key", key.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(customer_json(
            "cus_NffrFeUfNV2Hib",
            "Acme",
            &org.to_string(),
        )))
        .expect(2)
        .mount(&server)
        .await;

    let billing = billing(&server).await;
    let first = billing.create_customer(org, "Acme & Co").await.expect("a customer");
    let second = billing.create_customer(org, "Acme & Co").await.expect("the same customer");
    assert_eq!(first, "cus_NffrFeUfNV2Hib");
    assert_eq!(second, first);

    let requests = received(&server).await;
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.headers.get("idempotency-key").and_then(|v| v.to_str().ok()), Some(key.as_str()));
        assert_eq!(request.headers.get("authorization").and_then(|v| v.to_str().ok()), Some(&*format!("Bearer {KEY}")));
        assert_eq!(sorted(form(request)), pairs(&[("metadata[aicd_org_id]", &org.to_string()), ("name", "Acme & Co")]));
    }
}

#[tokio::test]
async fn customers_of_two_orgs_get_two_keys() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(ResponseTemplate::new(200).set_body_json(customer_json("cus_A", "A", "x")))
        .mount(&server)
        .await;
    let billing = billing(&server).await;
    let (a, b) = (OrgId::new(), OrgId::new());
    billing.create_customer(a, "A").await.expect("a customer");
    billing.create_customer(b, "B").await.expect("a customer");
    let keys: Vec<_> = received(&server)
        .await
        .iter()
        .map(|r| r.headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned())
        .collect();
    assert_eq!(keys, [format!("aicd-customer-{a}"), format!("aicd-customer-{b}")]);
}

#[tokio::test]
async fn rate_limiting_is_transient_and_not_retried_by_the_client() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/billing/meter_events"))
        .respond_with(ResponseTemplate::new(429).insert_header("Stripe-Should-Retry", "true").set_body_json(
            stripe_error("invalid_request_error", Some("rate_limit"), "Too many requests hit the API too quickly."),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let err = billing(&server).await.send_meter_event(&event()).await.expect_err("refused");
    match err {
        BillingError::Transient { message, retry_after } => {
            assert!(message.contains("429"), "{message}");
            assert!(message.contains("Too many requests"), "{message}");
            assert_eq!(retry_after, None);
        }
        other => panic!("expected a transient error, got {other:?}"),
    }
    assert_eq!(received(&server).await.len(), 1, "the outbox, not the client, retries");
}

#[tokio::test]
async fn a_server_error_is_transient_and_not_retried_by_the_client() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/billing/meter_events"))
        .respond_with(
            ResponseTemplate::new(500).insert_header("Stripe-Should-Retry", "true").set_body_json(stripe_error(
                "api_error",
                None,
                "An unknown error occurred",
            )),
        )
        .expect(1)
        .mount(&server)
        .await;

    let err = billing(&server).await.send_meter_event(&event()).await.expect_err("failed");
    assert!(matches!(&err, BillingError::Transient { message, .. } if message.contains("500")), "{err:?}");
    assert_eq!(received(&server).await.len(), 1);
}

#[tokio::test]
async fn an_error_page_that_is_not_stripe_json_is_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(ResponseTemplate::new(502).set_body_string("<html><body>Bad Gateway</body></html>"))
        .mount(&server)
        .await;

    let err = billing(&server).await.create_customer(OrgId::new(), "Acme").await.expect_err("failed");
    assert!(matches!(err, BillingError::Transient { .. }), "{err:?}");
}

#[tokio::test]
async fn a_bad_request_is_permanent_with_stripes_message_and_code() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/billing/meter_events"))
        .respond_with(ResponseTemplate::new(400).set_body_json(stripe_error(
            "invalid_request_error",
            Some("resource_missing"),
            "No such customer: 'cus_NffrFeUfNV2Hib'",
        )))
        .expect(1)
        .mount(&server)
        .await;

    let err = billing(&server).await.send_meter_event(&event()).await.expect_err("refused");
    match err {
        BillingError::Permanent { message } => {
            assert!(message.contains("No such customer: 'cus_NffrFeUfNV2Hib'"), "{message}");
            assert!(message.contains("resource_missing"), "{message}");
        }
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_identifier_stripe_already_holds_is_a_success() {
    // What the v1 endpoint answers (no code), and the code the v2 API documents.
    let answers = [
        stripe_error(
            "invalid_request_error",
            None,
            "An event already exists with identifier aicd-usage-0190f3a2-7c1e-7000-8000-000000000001.",
        ),
        stripe_error(
            "invalid_request_error",
            Some("duplicate_meter_event"),
            "A meter event with a duplicate identifier has already been submitted.",
        ),
    ];
    for answer in answers {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/billing/meter_events"))
            .respond_with(
                ResponseTemplate::new(400).insert_header("Stripe-Should-Retry", "false").set_body_json(answer),
            )
            .expect(1)
            .mount(&server)
            .await;
        billing(&server).await.send_meter_event(&event()).await.expect("already recorded is recorded");
    }
}

#[tokio::test]
async fn a_duplicate_message_on_another_call_is_still_an_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/billing_portal/sessions"))
        .respond_with(ResponseTemplate::new(400).set_body_json(stripe_error(
            "invalid_request_error",
            None,
            "An event already exists with identifier x.",
        )))
        .mount(&server)
        .await;
    let err = billing(&server).await.portal_session("cus_x", "https://example.com").await.expect_err("refused");
    assert!(matches!(err, BillingError::Permanent { .. }), "{err:?}");
}

#[tokio::test]
async fn a_refused_key_never_appears_in_the_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/billing/meter_events"))
        .respond_with(ResponseTemplate::new(401).set_body_json(stripe_error(
            "invalid_request_error",
            None,
            &format!("Invalid API Key provided: {KEY}"),
        )))
        .mount(&server)
        .await;
    let err = billing(&server).await.send_meter_event(&event()).await.expect_err("refused");
    let shown = format!("{err} {err:?}");
    assert!(matches!(err, BillingError::Permanent { .. }), "{shown}");
    assert!(!shown.contains("DoNotLeak"), "{shown}");
    assert!(shown.contains("Invalid API Key provided"), "{shown}");
}

#[tokio::test]
async fn a_server_that_never_answers_is_transient_after_the_timeout() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/billing/meter_events"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(meter_event_json(&event())).set_delay(Duration::from_secs(30)),
        )
        .mount(&server)
        .await;

    let billing = billing(&server).await.with_timeout(Duration::from_millis(300));
    assert_eq!(billing.timeout(), Duration::from_millis(300));
    let started = Instant::now();
    let err = billing.send_meter_event(&event()).await.expect_err("no answer");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(matches!(err, BillingError::Transient { retry_after: None, .. }), "{err:?}");
}

#[tokio::test]
async fn a_server_that_refuses_connections_is_transient() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        listener.local_addr().expect("an address").port()
    };
    let billing = StripeBilling::new(KEY, Some(&format!("http://127.0.0.1:{port}"))).expect("a client");
    let err = billing.send_meter_event(&event()).await.expect_err("unreachable");
    assert!(matches!(err, BillingError::Transient { .. }), "{err:?}");
    assert!(!format!("{err:?}").contains("DoNotLeak"));
}

#[tokio::test]
async fn a_portal_session_returns_its_url() {
    let server = MockServer::start().await;
    let url = "https://billing.stripe.com/p/session/test_YWNjdF8xTTJKVGtMa2RJd0h1N2l4LF9OY2lBWWNYZkxuqBoz";
    Mock::given(method("POST"))
        .and(path("/v1/billing_portal/sessions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "bps_1MrSjzLkdIwHu7ixex0IvU9b",
            "object": "billing_portal.session",
            "configuration": "bpc_1MAhNDLkdIwHu7ixckACO1Jq",
            "created": 1680210639,
            "customer": "cus_NffrFeUfNV2Hib",
            "flow": null,
            "livemode": false,
            "locale": null,
            "on_behalf_of": null,
            "return_url": "https://app.example.com/orgs/acme/billing",
            "url": url
        })))
        .expect(1)
        .mount(&server)
        .await;

    let got = billing(&server)
        .await
        .portal_session("cus_NffrFeUfNV2Hib", "https://app.example.com/orgs/acme/billing")
        .await
        .expect("a session");
    assert_eq!(got, url);
    let requests = received(&server).await;
    assert_eq!(
        sorted(form(&requests[0])),
        pairs(&[("customer", "cus_NffrFeUfNV2Hib"), ("return_url", "https://app.example.com/orgs/acme/billing")])
    );
}

#[test]
fn a_bad_url_is_a_configuration_error_without_the_key() {
    let err = StripeBilling::new(KEY, Some("not a url")).expect_err("refused");
    assert!(matches!(&err, BillingError::Permanent { .. }), "{err:?}");
    assert!(!format!("{err:?}").contains("DoNotLeak"));
}

/// The whole path of a billable fact: a usage record writes its outbox rows, the dispatcher sends
/// them through this adapter, and a send that timed out (after Stripe received it) goes again
/// under the same identifier, so Stripe counts it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_reaches_stripe_and_a_timed_out_send_is_retried_with_the_same_identifier() {
    use aicd_core::billing::{BillingOptions, BillingStore, MeterDispatcher, OutboxStatus};
    use aicd_core::jobs::{IssueRef, NewJob, Trigger};
    use aicd_core::repos::{NewRepo, RepoSource};
    use aicd_core::store::{JobStore, NewUsage};
    use aicd_core::{Core, CoreOptions};

    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(ResponseTemplate::new(200).set_body_json(customer_json("cus_NffrFeUfNV2Hib", "Acme", "org")))
        .mount(&server)
        .await;
    let accepted = |request: &Request| {
        let fields: std::collections::HashMap<_, _> = form(request).into_iter().collect();
        ResponseTemplate::new(200).set_body_json(meter_event_json(&MeterEvent {
            event_name: fields["event_name"].clone(),
            customer: fields["payload[stripe_customer_id]"].clone(),
            value: fields["payload[value]"].parse().unwrap(),
            identifier: fields["identifier"].clone(),
            timestamp: Utc.timestamp_opt(fields["timestamp"].parse().unwrap(), 0).unwrap(),
        }))
    };
    // The first meter event is received but answered too late; later ones at once.
    Mock::given(method("POST"))
        .and(path("/v1/billing/meter_events"))
        .respond_with(move |request: &Request| accepted(request).set_delay(Duration::from_secs(3)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST")).and(path("/v1/billing/meter_events")).respond_with(accepted).mount(&server).await;

    let h = support::sqlite().await;
    let stripe = StripeBilling::new(KEY, Some(&server.uri())).unwrap().with_timeout(Duration::from_millis(500));
    let options = CoreOptions { billing: Some(BillingOptions::default()), ..support::local_options(h.repos.path()) };
    let core = Core::new(h.store.clone(), options).with_billing(Arc::new(stripe));
    let (org, _, admin) = h.org_with_admin("Acme").await;
    let repo = NewRepo {
        full_name: "local/widgets".into(),
        source: RepoSource::Local { path: h.local_path("widgets") },
        default_branch: None,
        settings: None,
    };
    let repo = core.create_repo(&admin, org.id, repo).await.unwrap();
    let issue = IssueRef { number: None, title: "Greet".into(), body: "Please.".into(), url: None, author: None };
    let job = NewJob { repo_id: repo.id, issue, trigger: Trigger::Api, max_tokens: None, max_cost_micros: None };
    let job = core.create_job(&admin, org.id, job).await.unwrap();
    let usage = NewUsage {
        id: None,
        job_id: Some(job.id),
        step: "coding".into(),
        model: "gpt-4.1-mini".into(),
        input_tokens: 1200,
        output_tokens: 340,
        cost_micros: 900,
    };
    h.store.record_usage(org.id, usage).await.unwrap();

    let dispatcher = MeterDispatcher::new(core.clone(), "worker-1").unwrap();
    let first = dispatcher.run_once().await.unwrap();
    assert_eq!((first.claimed, first.sent, first.retried), (2, 1, 1), "{first:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.store.list_outbox(org.id).await.unwrap().iter().any(|e| e.status != OutboxStatus::Sent) {
        assert!(Instant::now() < deadline, "the timed-out row was not sent again");
        tokio::time::sleep(Duration::from_millis(200)).await;
        dispatcher.run_once().await.unwrap();
    }

    let sends: Vec<_> =
        received(&server).await.iter().filter(|r| r.url.path() == "/v1/billing/meter_events").map(form).collect();
    assert_eq!(sends.len(), 3, "two facts, one of them sent twice");
    let mut distinct: Vec<_> = sends.iter().map(|f| sorted(f.clone())).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 2, "the repeat is the same event, field for field: {sends:?}");
    let expected_at = job.created_at.timestamp();
    for (name, value) in [("aicd_input_tokens", "1200"), ("aicd_output_tokens", "340")] {
        let event = distinct.iter().find(|f| f.contains(&("event_name".into(), name.into()))).expect(name);
        let field = |key: &str| event.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(field("payload[value]"), value);
        assert_eq!(field("payload[stripe_customer_id]"), "cus_NffrFeUfNV2Hib");
        assert!(field("identifier").starts_with("aicd_"), "{event:?}");
        let at: i64 = field("timestamp").parse().unwrap();
        assert!((at - expected_at).abs() < 60, "the fact's time: {at} vs {expected_at}");
    }
}
