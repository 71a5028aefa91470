//! Billing over HTTP: Stripe's webhook verified over the raw body and applied once, the billing
//! routes for org admins, and new jobs refused with 402 beyond the free allowance until a
//! subscription is active. wiremock stands in for Stripe's API, answering with its documented
//! shapes.

mod support;

use aicd_core::billing::webhook::sign;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::TestServer;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const WEBHOOK_SECRET: &str = "whsec_test_5f8a1c2d3e4b5a6978c1d2e3f4a5b6c7";
const OLD_WEBHOOK_SECRET: &str = "whsec_test_0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d";
const CUSTOMER: &str = "cus_NffrFeUfNV2Hib";

async fn stripe() -> MockServer {
    let stripe = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": CUSTOMER, "object": "customer", "address": null, "balance": 0, "created": 1_680_893_993,
            "currency": null, "default_source": null, "delinquent": false, "description": null,
            "discount": null, "email": null, "invoice_prefix": "0759376C", "invoice_settings": {
                "custom_fields": null, "default_payment_method": null, "footer": null, "rendering_options": null
            }, "livemode": false, "metadata": {}, "name": "Acme", "next_invoice_sequence": 1, "phone": null,
            "preferred_locales": [], "shipping": null, "tax_exempt": "none", "test_clock": null
        })))
        .mount(&stripe)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/billing_portal/sessions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "bps_1MrSjzLkdIwHu7ixex0IvU9b", "object": "billing_portal.session", "configuration": "bpc_1MAhNDLkdIwHu7ixckACO1Jq",
            "created": 1_680_210_639, "customer": CUSTOMER, "flow": null, "livemode": false, "locale": null,
            "on_behalf_of": null, "return_url": "https://app.aicd.example/billing",
            "url": "https://billing.stripe.com/p/session/test_YWNjdF8xTTJKVGtMa2RJd0h1N2l4LF9OY2dSNmVRSUdPaFdMUDFmRUtJbmxUVTJsdVdWdnFP"
        })))
        .mount(&stripe)
        .await;
    stripe
}

async fn server(stripe: &MockServer, free_jobs: &str) -> TestServer {
    let uri = stripe.uri();
    TestServer::postgres(&[
        ("AICD_STRIPE_SECRET_KEY", "sk_test_51MzQ2aLkdIwHu7ix0123456789abcdef"),
        ("AICD_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("AICD_STRIPE_WEBHOOK_SECRET_PREVIOUS", OLD_WEBHOOK_SECRET),
        ("AICD_STRIPE_API_URL", &uri),
        ("AICD_BILLING_FREE_JOBS", free_jobs),
        ("AICD_BILLING_MAX_MONTHLY_COST_MICROS", "100000000"),
        ("AICD_PUBLIC_URL", "https://app.aicd.example"),
    ])
    .await
}

/// A `customer.subscription.*` event as Stripe sends it (API version 2025-03-31.basil: the period
/// is on the items).
fn subscription_event(id: &str, kind: &str, status: &str, created: i64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id, "object": "event", "api_version": "2025-03-31.basil", "created": created,
        "data": { "object": {
            "id": "sub_1MowQVLkdIwHu7ixeRlqHVzs", "object": "subscription", "customer": CUSTOMER,
            "status": status, "cancel_at_period_end": false, "collection_method": "charge_automatically",
            "items": { "object": "list", "data": [{
                "id": "si_NcLYdDxLHxlFo7", "object": "subscription_item", "current_period_end": created + 2_592_000,
                "current_period_start": created, "price": { "id": "price_1Mr6rdLkdIwHu7ixwPmiybbR", "object": "price" }
            }]},
            "livemode": false
        }},
        "livemode": false, "pending_webhooks": 1, "request": { "id": null, "idempotency_key": null }, "type": kind
    }))
    .unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn deliver(server: &TestServer, body: &[u8], signature: &str) -> support::Reply {
    let response = server
        .http
        .post(server.url("/webhooks/stripe"))
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    support::reply(response).await
}

async fn billing(server: &TestServer, org: &aicd_core::tenancy::Org, key: &str) -> Value {
    let reply = server.get(&format!("/v1/orgs/{}/billing", org.id), key).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_webhooks_are_verified_over_the_raw_body_and_applied_once() {
    let stripe = stripe().await;
    let server = server(&stripe, "20").await;
    let (org, viewer, _, admin) = server.org_with_keys("Acme").await;

    let status = billing(&server, &org, &admin).await;
    assert_eq!((status["mode"].as_str(), status["has_customer"].as_bool()), (Some("tokens"), Some(false)));
    let refused = server.get(&format!("/v1/orgs/{}/billing", org.id), &viewer).await;
    assert_eq!((refused.status, refused.error_code()), (StatusCode::FORBIDDEN, "forbidden"));

    // The portal creates the customer on first need, once, under an idempotency key.
    let portal = server.post(&format!("/v1/orgs/{}/billing/portal", org.id), &admin, json!({})).await;
    assert_eq!(portal.status, StatusCode::OK, "{}", portal.text);
    assert!(portal.body["url"].as_str().unwrap().starts_with("https://billing.stripe.com/p/session/"));
    server.post(&format!("/v1/orgs/{}/billing/portal", org.id), &admin, json!({})).await;
    let requests = stripe.received_requests().await.unwrap();
    let customers: Vec<_> = requests.iter().filter(|r| r.url.path() == "/v1/customers").collect();
    assert_eq!(customers.len(), 1, "the customer is created once");
    assert_eq!(
        customers[0].headers.get("idempotency-key").and_then(|v| v.to_str().ok()),
        Some(format!("aicd-customer-{}", org.id).as_str())
    );
    let sessions: Vec<_> = requests.iter().filter(|r| r.url.path() == "/v1/billing_portal/sessions").collect();
    let form = String::from_utf8_lossy(&sessions[0].body).into_owned();
    assert!(form.contains(&format!("customer={CUSTOMER}")), "{form}");
    assert!(form.contains("return_url=https://app.aicd.example"), "{form}");

    let active = subscription_event("evt_1NG8Du2eZvKYlo2CUI79vXWy", "customer.subscription.updated", "active", now());
    // A tampered body, a stale signature and none at all are refused, and store nothing.
    let mut tampered = active.clone();
    let at = tampered.iter().position(|b| *b == b'a').unwrap();
    tampered[at] = b'b';
    let tampered_reply = deliver(&server, &tampered, &sign(WEBHOOK_SECRET, now(), &active)).await;
    assert_eq!((tampered_reply.status, tampered_reply.error_code()), (StatusCode::BAD_REQUEST, "invalid_signature"));
    let stale = deliver(&server, &active, &sign(WEBHOOK_SECRET, now() - 301, &active)).await;
    assert_eq!((stale.status, stale.error_code()), (StatusCode::BAD_REQUEST, "invalid_signature"));
    assert!(stale.body["error"]["message"].as_str().unwrap().contains("too old"));
    let unsigned = deliver(&server, &active, "").await;
    assert_eq!(unsigned.status, StatusCode::BAD_REQUEST);
    assert_eq!(billing(&server, &org, &admin).await["subscription_status"], Value::Null);

    // Two `v1` signatures (Stripe rolling the secret), only the second valid: accepted.
    let good = sign(WEBHOOK_SECRET, now(), &active);
    let v1 = good.split("v1=").nth(1).unwrap();
    let header = format!("t={},v1={},v1={v1}", now(), "0".repeat(64));
    let applied = deliver(&server, &active, &header).await;
    assert_eq!(applied.status, StatusCode::OK, "{}", applied.text);
    assert_eq!(applied.body, json!({"event_id": "evt_1NG8Du2eZvKYlo2CUI79vXWy", "status": "applied"}));
    let status = billing(&server, &org, &admin).await;
    assert_eq!(status["subscription_status"], "active");
    assert_eq!(status["plan"], json!(["price_1Mr6rdLkdIwHu7ixwPmiybbR"]));
    assert!(status["current_period_end"].is_string());

    // The same event id again, even with another body, is a duplicate: nothing changes.
    let replay = subscription_event("evt_1NG8Du2eZvKYlo2CUI79vXWy", "customer.subscription.deleted", "canceled", now());
    let duplicate = deliver(&server, &replay, &sign(WEBHOOK_SECRET, now(), &replay)).await;
    assert_eq!(duplicate.body["status"], "duplicate", "{}", duplicate.text);
    assert_eq!(billing(&server, &org, &admin).await["subscription_status"], "active");

    // Signed with the previous secret while it is rolled: accepted. An event billing does not act
    // on is acknowledged and ignored.
    let other = serde_json::to_vec(&json!({
        "id": "evt_3MtwBwLkdIwHu7ix28a3tqPa", "object": "event", "api_version": "2025-03-31.basil", "created": now(),
        "data": { "object": { "id": "ch_3MtwBwLkdIwHu7ix28a3tqPa", "object": "charge", "amount": 1099 } },
        "livemode": false, "pending_webhooks": 1, "request": { "id": null, "idempotency_key": null },
        "type": "charge.succeeded"
    }))
    .unwrap();
    let ignored = deliver(&server, &other, &sign(OLD_WEBHOOK_SECRET, now(), &other)).await;
    assert_eq!(
        (ignored.status, ignored.body["status"].as_str()),
        (StatusCode::OK, Some("ignored")),
        "{}",
        ignored.text
    );

    // A deletion (a new event) cancels it.
    let deleted =
        subscription_event("evt_1NG8Du2eZvKYlo2CUI79vXWz", "customer.subscription.deleted", "canceled", now() + 1);
    assert_eq!(deliver(&server, &deleted, &sign(WEBHOOK_SECRET, now(), &deleted)).await.body["status"], "applied");
    assert_eq!(billing(&server, &org, &admin).await["subscription_status"], "canceled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_free_allowance_new_jobs_are_refused_with_402_until_a_subscription_is_active() {
    let stripe = stripe().await;
    let server = server(&stripe, "1").await;
    let (org, _, developer, admin) = server.org_with_keys("Acme").await;
    let repo = support::git_repo();
    let repo_id = server.local_repo(&org, &admin, repo.path()).await;
    let job = |title: &str| json!({"repo_id": repo_id, "issue": {"title": title, "body": "Please."}});
    let jobs = format!("/v1/orgs/{}/jobs", org.id);

    assert_eq!(server.post(&jobs, &developer, job("first")).await.status, StatusCode::CREATED);
    let refused = server.post(&jobs, &developer, job("second")).await;
    assert_eq!((refused.status, refused.error_code()), (StatusCode::PAYMENT_REQUIRED, "quota_exceeded"));
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("free allowance of 1 job") && message.contains("/billing"), "{message}");
    let listed = server.get(&jobs, &developer).await;
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(1), "nothing was enqueued: {}", listed.text);

    let status = billing(&server, &org, &admin).await;
    assert_eq!((status["accepting_jobs"].as_bool(), status["free_jobs_left"].as_u64()), (Some(false), Some(0)));

    // The org admin subscribes through the portal; Stripe reports the subscription active.
    server.post(&format!("/v1/orgs/{}/billing/portal", org.id), &admin, json!({})).await;
    let active = subscription_event("evt_1NG8Du2eZvKYlo2CUI79vXWy", "customer.subscription.created", "active", now());
    assert_eq!(deliver(&server, &active, &sign(WEBHOOK_SECRET, now(), &active)).await.body["status"], "applied");
    assert_eq!(server.post(&jobs, &developer, job("second")).await.status, StatusCode::CREATED);

    // A spend cap above the deployment's is refused; the admin may set a lower one.
    let path = format!("/v1/orgs/{}/billing", org.id);
    let too_high =
        server.call(Method::PATCH, &path, Some(&admin), Some(json!({"spend_cap_micros": 200_000_000}))).await;
    assert_eq!((too_high.status, too_high.error_code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"));
    let capped = server.call(Method::PATCH, &path, Some(&admin), Some(json!({"spend_cap_micros": 0}))).await;
    assert_eq!((capped.status, capped.body["spend_cap_micros"].as_u64()), (StatusCode::OK, Some(0)), "{}", capped.text);
    let refused = server.post(&jobs, &developer, job("third")).await;
    assert_eq!((refused.status, refused.error_code()), (StatusCode::PAYMENT_REQUIRED, "quota_exceeded"));
    let uncapped = server.call(Method::PATCH, &path, Some(&admin), Some(json!({"spend_cap_micros": null}))).await;
    assert_eq!(uncapped.body["spend_cap_micros"], Value::Null, "{}", uncapped.text);
    assert_eq!(server.post(&jobs, &developer, job("third")).await.status, StatusCode::CREATED);
    let developer_patch =
        server.call(Method::PATCH, &path, Some(&developer), Some(json!({"spend_cap_micros": 1}))).await;
    assert_eq!(developer_patch.status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_stripe_nothing_is_billed_or_refused_and_the_routes_say_so() {
    let server = TestServer::postgres(&[]).await;
    let (org, _, developer, admin) = server.org_with_keys("Acme").await;
    let missing = server.get(&format!("/v1/orgs/{}/billing", org.id), &admin).await;
    assert_eq!((missing.status, missing.error_code()), (StatusCode::NOT_FOUND, "not_found"));
    let body = subscription_event("evt_1", "customer.subscription.updated", "active", now());
    let disabled = deliver(&server, &body, &sign(WEBHOOK_SECRET, now(), &body)).await;
    assert_eq!((disabled.status, disabled.error_code()), (StatusCode::SERVICE_UNAVAILABLE, "webhooks_disabled"));
    let repo = support::git_repo();
    let repo_id = server.local_repo(&org, &admin, repo.path()).await;
    for n in 0..3 {
        let job = json!({"repo_id": repo_id, "issue": {"title": format!("job {n}"), "body": "Please."}});
        assert_eq!(
            server.post(&format!("/v1/orgs/{}/jobs", org.id), &developer, job).await.status,
            StatusCode::CREATED
        );
    }
}
