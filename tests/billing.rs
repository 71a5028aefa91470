//! Billing end to end, as a deployment runs it: the real `aicd-server` (no embedded worker) and
//! `aicd-worker` processes on PostgreSQL and Redis, configured as a GitHub App (the stateful fake
//! GitHub of `aicd_testkit::github`) billing through Stripe, whose API is a wiremock stand-in
//! answering in Stripe's documented shapes. Like Stripe, the stand-in records every meter event
//! it receives and refuses a second one with an identifier it already holds (HTTP 400 "An event
//! already exists with identifier ...").
//!
//! - A worker killed (SIGKILL) after Stripe received its meter events but before it could record
//!   Stripe's answer leaves them to the next worker, which sends each again with the same
//!   identifier and value; Stripe counts each once and the outbox ends all `sent`, so what Stripe
//!   counted per meter is exactly the usage the API reports.
//! - Beyond the free allowance, a GitHub label trigger gets one polite comment and no job (a
//!   redelivery of the same delivery nothing more); a subscription applied by Stripe's signed
//!   webhook lifts the refusal.
//! - In `merged_pull_requests` mode a merged pull request is one meter event however often its
//!   `closed` webhook is delivered, and one closed without merging is none.
//!
//! The binaries must have been built (`cargo build -p aicd-server -p aicd-worker`); see
//! `tests/README.md`.

// The fake GitHub's answers are large `json!` literals.
#![recursion_limit = "256"]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aicd_core::OrgId;
use aicd_core::billing::{Meter, OutboxEntry, OutboxStatus};
use aicd_core::store::{BillingStore, PostgresOptions, SqlStore};
use aicd_testkit::github::{INSTALLATION, Pull};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use support::{World, delivery_id, payloads};

/// A Stripe test-mode key (the stand-in checks it is the bearer token).
const STRIPE_KEY: &str = "sk_test_51AicdE2eOnlyNotARealKey000000000000";
/// The signing secret of the Stripe webhook endpoint.
const WEBHOOK_SECRET: &str = "whsec_e2eTestSigningSecretFor1WebhookEndpoint";
/// The customer the stand-in creates for the organization.
const CUSTOMER: &str = "cus_NffrFeUfNV2Hib";

const ISSUE_7_BODY: &str =
    "Please add a greeting to the docs.\n\n```aicd:write docs/hello.txt\nHello from AI-CD!\n```\n";
const ISSUE_8_BODY: &str = "And a farewell, please.\n\n```aicd:write docs/bye.txt\nGoodbye from AI-CD!\n```\n";

/// How long a job may take from its webhook to its pull request.
const JOB_TIMEOUT: Duration = Duration::from_secs(45);
/// How long the meter dispatcher may take to send what is due: it looks every 5 s when idle.
const DISPATCH_TIMEOUT: Duration = Duration::from_secs(30);

// --- Stripe ----------------------------------------------------------------------------------

/// A meter event as it went on the wire (`POST /v1/billing/meter_events`, form-encoded).
#[derive(Clone, Debug, PartialEq, Eq)]
struct SentMeterEvent {
    event_name: String,
    customer: String,
    value: i64,
    identifier: String,
    timestamp: i64,
}

/// The form fields of a request's body, in order.
fn form(request: &Request) -> Vec<(String, String)> {
    url::form_urlencoded::parse(&request.body).into_owned().collect()
}

impl SentMeterEvent {
    /// The event of `request`; `None` if its body is not exactly the five fields Stripe takes.
    fn of(request: &Request) -> Option<Self> {
        let fields: BTreeMap<String, String> = form(request).into_iter().collect();
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        let expected = ["event_name", "identifier", "payload[stripe_customer_id]", "payload[value]", "timestamp"];
        if names != expected {
            return None;
        }
        Some(Self {
            event_name: fields["event_name"].clone(),
            customer: fields["payload[stripe_customer_id]"].clone(),
            value: fields["payload[value]"].parse().ok()?,
            identifier: fields["identifier"].clone(),
            timestamp: fields["timestamp"].parse().ok()?,
        })
    }
}

/// Stripe's error body.
fn stripe_error(kind: &str, message: &str) -> Value {
    json!({ "error": { "type": kind, "message": message } })
}

/// `POST /v1/billing/meter_events` as Stripe answers it: the event recorded (its documented
/// shape) unless its identifier is already held, then 400 as Stripe's v1 endpoint refuses it;
/// every answer after `delay`. The event is recorded when it is received, so an answer that never
/// reaches the sender does not undo it.
struct MeterEvents {
    delay: Duration,
    recorded: Arc<Mutex<Vec<SentMeterEvent>>>,
}

impl Respond for MeterEvents {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let Some(event) = SentMeterEvent::of(request) else {
            let body = String::from_utf8_lossy(&request.body).into_owned();
            return ResponseTemplate::new(400)
                .set_body_json(stripe_error("invalid_request_error", &format!("unexpected fields: {body}")));
        };
        let mut recorded = self.recorded.lock().unwrap_or_else(PoisonError::into_inner);
        let answer = if recorded.iter().any(|e| e.identifier == event.identifier) {
            let message = format!("An event already exists with identifier {}.", event.identifier);
            ResponseTemplate::new(400).set_body_json(stripe_error("invalid_request_error", &message))
        } else {
            recorded.push(event.clone());
            ResponseTemplate::new(200).set_body_json(json!({
                "object": "billing.meter_event",
                "created": chrono::Utc::now().timestamp(),
                "event_name": event.event_name,
                "identifier": event.identifier,
                "livemode": false,
                "payload": { "stripe_customer_id": event.customer, "value": event.value.to_string() },
                "timestamp": event.timestamp,
            }))
        };
        answer.set_delay(self.delay)
    }
}

/// `POST /v1/customers`: the customer [`CUSTOMER`], with the name and metadata asked for, in
/// Stripe's documented shape.
struct Customers;

impl Respond for Customers {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let fields: BTreeMap<String, String> = form(request).into_iter().collect();
        let metadata: BTreeMap<String, String> = fields
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("metadata[")?.strip_suffix(']')?.to_owned(), v.clone())))
            .collect();
        ResponseTemplate::new(200).set_body_json(json!({
            "id": CUSTOMER,
            "object": "customer",
            "address": null,
            "balance": 0,
            "created": 1_680_893_993,
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
            "metadata": metadata,
            "name": fields.get("name"),
            "next_invoice_sequence": 1,
            "phone": null,
            "preferred_locales": [],
            "shipping": null,
            "tax_exempt": "none",
            "test_clock": null
        }))
    }
}

/// The Stripe API stand-in.
struct FakeStripe {
    server: MockServer,
    recorded: Arc<Mutex<Vec<SentMeterEvent>>>,
}

impl FakeStripe {
    async fn start() -> Self {
        Self { server: MockServer::start().await, recorded: Arc::default() }
    }

    /// The billing configuration of a deployment on this Stripe, with `extra` settings.
    fn env<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, String)> {
        let mut env = vec![
            ("AICD_STRIPE_SECRET_KEY", STRIPE_KEY.to_owned()),
            ("AICD_STRIPE_API_URL", self.server.uri()),
            ("AICD_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
            ("AICD_BILLING_PORTAL_RETURN_URL", "https://app.example.com/billing".to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        env
    }

    /// Customers are created (at `priority`: 1 wins over the default 5).
    async fn create_customers(&self, priority: u8) {
        Mock::given(method("POST"))
            .and(path("/v1/customers"))
            .respond_with(Customers)
            .with_priority(priority)
            .mount(&self.server)
            .await;
    }

    /// Customer creation fails as when Stripe is having trouble (503).
    async fn refuse_customers(&self) {
        let answer = stripe_error("api_error", "Stripe is temporarily unavailable; please try again.");
        Mock::given(method("POST"))
            .and(path("/v1/customers"))
            .respond_with(ResponseTemplate::new(503).set_body_json(answer))
            .mount(&self.server)
            .await;
    }

    /// Meter events are recorded and answered after `delay` (at `priority`).
    async fn record_meter_events(&self, delay: Duration, priority: u8) {
        Mock::given(method("POST"))
            .and(path("/v1/billing/meter_events"))
            .respond_with(MeterEvents { delay, recorded: self.recorded.clone() })
            .with_priority(priority)
            .mount(&self.server)
            .await;
    }

    /// Customer portal sessions are opened.
    async fn open_portal_sessions(&self) {
        Mock::given(method("POST"))
            .and(path("/v1/billing_portal/sessions"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": "bps_1MrSjzLkdIwHu7ixex0IvU9b",
                "object": "billing_portal.session",
                "configuration": "bpc_1MAhNDLkdIwHu7ixckACO1Jq",
                "created": 1_680_210_639,
                "customer": CUSTOMER,
                "flow": null,
                "livemode": false,
                "locale": null,
                "on_behalf_of": null,
                "return_url": "https://app.example.com/billing",
                "url": "https://billing.stripe.com/p/session/test_YWNjdF8xTTJKVGtMa2RJd0h1N2l4"
            })))
            .mount(&self.server)
            .await;
    }

    /// Every request received, in order.
    async fn requests(&self) -> Vec<Request> {
        self.server.received_requests().await.expect("wiremock records requests")
    }

    /// The requests to `path`, in order.
    async fn requests_to(&self, path: &str) -> Vec<Request> {
        self.requests().await.into_iter().filter(|r| r.url.path() == path).collect()
    }

    /// Every meter event received (repeats included), in order; panics on a malformed one.
    async fn meter_events(&self) -> Vec<SentMeterEvent> {
        let requests = self.requests_to("/v1/billing/meter_events").await;
        let events = requests.iter().map(|r| {
            SentMeterEvent::of(r)
                .unwrap_or_else(|| panic!("a malformed meter event: {:?}", String::from_utf8_lossy(&r.body)))
        });
        events.collect()
    }

    /// The meter events Stripe recorded (counted): one per identifier.
    fn recorded(&self) -> Vec<SentMeterEvent> {
        self.recorded.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Every request carried the secret key as its bearer token.
    async fn assert_authenticated(&self) {
        for request in self.requests().await {
            let authorization = request.headers.get("authorization").and_then(|v| v.to_str().ok());
            assert_eq!(authorization, Some(&*format!("Bearer {STRIPE_KEY}")), "{} {}", request.method, request.url);
        }
    }
}

/// A signed Stripe webhook delivery of `customer.subscription.updated` (API version
/// `2025-03-31.basil`: the period is on the items) saying `customer`'s subscription is `status`.
fn subscription_updated(event_id: &str, customer: &str, status: &str) -> (Vec<u8>, String) {
    let now = chrono::Utc::now().timestamp();
    let event = json!({
        "id": event_id,
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": now,
        "data": {
            "object": {
                "id": "sub_1RAbcd2eZvKYlo2Cx9y8z7w6",
                "object": "subscription",
                "cancel_at_period_end": false,
                "collection_method": "charge_automatically",
                "created": now - 60,
                "currency": "usd",
                "customer": customer,
                "items": {
                    "object": "list",
                    "data": [{
                        "id": "si_S4abcdItem0001",
                        "object": "subscription_item",
                        "created": now - 60,
                        "current_period_end": now + 30 * 24 * 3600,
                        "current_period_start": now - 60,
                        "price": { "id": "price_1RAmeteredTok0", "object": "price", "type": "recurring" },
                        "subscription": "sub_1RAbcd2eZvKYlo2Cx9y8z7w6"
                    }],
                    "has_more": false,
                    "total_count": 1,
                    "url": "/v1/subscription_items?subscription=sub_1RAbcd2eZvKYlo2Cx9y8z7w6"
                },
                "livemode": false,
                "metadata": {},
                "status": status
            },
            "previous_attributes": { "status": "incomplete" }
        },
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": "customer.subscription.updated"
    });
    let body = serde_json::to_vec(&event).expect("the event serializes");
    let signature = aicd_core::billing::webhook::sign(WEBHOOK_SECRET, now, &body);
    (body, signature)
}

// --- the deployment --------------------------------------------------------------------------

/// The test database, read as the product reads it, and as its owner for what the product offers
/// no way to do.
struct Database {
    store: SqlStore,
    owner: tokio::sync::Mutex<PgConnection>,
}

impl Database {
    async fn open(world: &World) -> Self {
        let options = PostgresOptions { max_connections: 2, ..PostgresOptions::default() };
        let store = SqlStore::postgres(world.app_database_url(), options).await.expect("the store opens");
        let owner = PgConnection::connect(world.owner_database_url()).await.expect("the owner connects");
        Self { store, owner: tokio::sync::Mutex::new(owner) }
    }

    /// The organization's billing outbox, oldest first.
    async fn outbox(&self, org: OrgId) -> Vec<OutboxEntry> {
        self.store.list_outbox(org).await.expect("the outbox is readable")
    }

    /// How many pending outbox rows `lease_owner` holds under a lease that has not expired.
    async fn leased_by(&self, lease_owner: &str) -> i64 {
        let mut owner = self.owner.lock().await;
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM billing_outbox WHERE lease_owner = $1 AND status = 'pending' \
             AND lease_expires_at > now()",
        )
        .bind(lease_owner)
        .fetch_one(&mut *owner)
        .await
        .expect("the outbox is readable")
    }

    /// The status and error of the command recorded for the label delivery `delivery`, once it
    /// is finished (not `pending`).
    async fn finished_label_command(&self, delivery: &str) -> Option<(String, Option<String>)> {
        let mut owner = self.owner.lock().await;
        sqlx::query_as("SELECT status, error FROM github_commands WHERE source_key = $1 AND status <> 'pending'")
            .bind(format!("label:{delivery}"))
            .fetch_optional(&mut *owner)
            .await
            .expect("the commands are readable")
    }

    /// How many commands were recorded for issue `number`.
    async fn commands_of_issue(&self, number: i64) -> i64 {
        let mut owner = self.owner.lock().await;
        sqlx::query_scalar("SELECT COUNT(*) FROM github_commands WHERE issue_number = $1")
            .bind(number)
            .fetch_one(&mut *owner)
            .await
            .expect("the commands are readable")
    }
}

/// Links installation 4242 to the organization as the operator, which registers `acme/widgets`.
async fn link_installation(world: &World) {
    let installation = INSTALLATION.to_string();
    let args =
        ["admin", "link-installation", "--org", &world.org, "--installation", &installation, "--account", "acme"];
    let out = world.server_command(&args);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("1 repositories registered"), "{printed}");
}

/// A GitHub timestamp (seconds) no earlier event of this test binary has: two deliveries of
/// distinct events never have the same body (the server takes a body it has seen under another
/// delivery id for a replay).
fn event_time() -> String {
    static TICKS: AtomicI64 = AtomicI64::new(0);
    let at = chrono::Utc::now() + chrono::Duration::seconds(TICKS.fetch_add(1, Ordering::Relaxed));
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Labels issue `number` `aicd`, as a new event in a new delivery; returns the delivery id and
/// its payload.
async fn label(world: &World, number: u64, title: &str, body: &str) -> (String, Value) {
    let delivery = delivery_id();
    let mut labeled = payloads::issue_labeled(number, title, body);
    labeled["issue"]["updated_at"] = json!(event_time());
    let (status, reply) = world.deliver_for_reply("issues", &delivery, &labeled).await;
    assert_eq!(status, StatusCode::OK, "issues.labeled #{number}: {reply}");
    assert_eq!(reply["status"], "processed", "issues.labeled #{number}: {reply}");
    (delivery, labeled)
}

/// The pull request the fake GitHub has for the job's branch.
fn pull_of(world: &World, job: &Value) -> Pull {
    let branch = job["checkpoints"]["pull_request"]["branch"].as_str().expect("the job records its branch");
    let pulls: Vec<Pull> = world.github.pulls().into_iter().filter(|p| p.head == branch).collect();
    let [pull] = pulls.as_slice() else { panic!("one pull request for {branch}: {pulls:#?}") };
    pull.clone()
}

/// `aicd-server billing reconcile` says every billable fact is acknowledged, in words and as JSON
/// (no line).
fn assert_reconciled(world: &World) {
    let out = world.server_command(&["billing", "reconcile"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(printed.trim(), "every billable fact is acknowledged by the payment provider", "{printed}");
    let out = world.server_command(&["billing", "reconcile", "--json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "", "nothing is pending or parked");
}

/// SIGTERM to both processes; each must exit 0 within 30 s.
async fn stop(world: &World) {
    for process in [&world.processes.worker, &world.processes.server] {
        process.terminate();
    }
    for process in [&world.processes.worker, &world.processes.server] {
        let status = process.wait(Duration::from_secs(30)).await;
        let status = status.unwrap_or_else(|| panic!("{} did not stop within 30 s of SIGTERM", process.name()));
        assert!(status.success(), "{} exits 0 after SIGTERM: {status}\n{}", process.name(), process.log());
    }
}

// --- the tests -------------------------------------------------------------------------------

/// A worker dies (SIGKILL) after Stripe received its meter events and before it could record
/// Stripe's answer. Its rows stay pending under its claim; once the claim has lapsed, another
/// worker sends each of them again with the same identifier and value, Stripe refuses the repeats
/// as events it already holds, the worker takes that as acknowledged, and Stripe has counted
/// exactly the usage the API reports.
///
/// The workers' claims last `AICD_LEASE_SECS` (5 s here), for jobs and outbox rows alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_between_sending_and_acknowledging_resends_the_same_identifier_and_bills_exactly() {
    let started = Instant::now();
    let stripe = FakeStripe::start().await;
    // Customer creation fails until the job has opened its pull request, so that nothing is sent
    // before all its usage is recorded and killing the worker cuts no job short. Meter events are
    // answered after 8 s (within the client's 10 s timeout): the window to kill the worker in.
    stripe.refuse_customers().await;
    stripe.record_meter_events(Duration::from_secs(8), 5).await;
    let env = stripe.env(&[("AICD_LEASE_SECS", "5")]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut world = World::start_with(&env).await;
    let org: OrgId = world.org.parse().expect("an org id");
    let db = Database::open(&world).await;
    link_installation(&world).await;

    label(&world, 7, "Add a greeting", ISSUE_7_BODY).await;
    let job = world.wait_for_issue_job(7, "pr_open", JOB_TIMEOUT).await;
    let job_id = job["id"].as_str().expect("a job id").to_owned();

    // The scripted agent's usage, per step, is in the outbox: input and output tokens (the
    // default mode), none acknowledged.
    let rows = db.outbox(org).await;
    assert!(!rows.is_empty(), "the job's usage is metered");
    for row in &rows {
        assert!(matches!(row.meter, Meter::InputTokens | Meter::OutputTokens), "{row:?}");
        assert_eq!(row.status, OutboxStatus::Pending, "{row:?}");
        assert_eq!(row.job_id.map(|j| j.to_string()), Some(job_id.clone()), "{row:?}");
        assert!(row.value > 0, "{row:?}");
    }

    // Stripe is back; the first worker's next claim creates the customer and sends meter events.
    stripe.create_customers(1).await;
    let first_seen = world
        .wait_until("the first meter event to reach Stripe", DISPATCH_TIMEOUT, || async {
            (!stripe.meter_events().await.is_empty()).then(Instant::now)
        })
        .await;
    // It sends the rows it claimed 8 at a time, all at once: wait until Stripe has them all.
    world
        .wait_until("the worker's claimed meter events to reach Stripe", Duration::from_secs(4), || async {
            let claimed = db.leased_by("e2e-worker-billing").await.min(8);
            let sent = i64::try_from(stripe.meter_events().await.len()).expect("a count");
            (claimed > 0 && sent >= claimed).then_some(())
        })
        .await;
    let status = world.processes.worker.kill();
    assert!(!status.success(), "the worker was killed: {status}");
    assert!(first_seen.elapsed() < Duration::from_secs(8), "killed before Stripe's answer could arrive");

    // Stripe recorded them; the worker recorded nothing.
    let first = stripe.meter_events().await;
    let by_id = |events: &[SentMeterEvent]| {
        let mut events = events.to_vec();
        events.sort_by(|a, b| a.identifier.cmp(&b.identifier));
        events
    };
    assert_eq!(by_id(&stripe.recorded()), by_id(&first), "Stripe counted each event it received");
    let rows = db.outbox(org).await;
    assert!(rows.iter().all(|r| r.status == OutboxStatus::Pending), "no acknowledgement was recorded: {rows:#?}");
    let identifiers: BTreeSet<&str> = first.iter().map(|e| e.identifier.as_str()).collect();
    assert_eq!(identifiers.len(), first.len(), "the first worker sent each row once: {first:#?}");
    for event in &first {
        let row = rows.iter().find(|r| r.identifier() == event.identifier);
        let row = row.unwrap_or_else(|| panic!("{event:?} is the event of an outbox row: {rows:#?}"));
        let name = if row.meter == Meter::InputTokens { "aicd_input_tokens" } else { "aicd_output_tokens" };
        assert_eq!(event.identifier, format!("aicd_{}", row.id.simple()), "{event:?}");
        assert_eq!((event.event_name.as_str(), event.value), (name, row.value), "{event:?} for {row:?}");
        assert_eq!(event.customer, CUSTOMER, "{event:?}");
        assert_eq!(event.timestamp, row.occurred_at.timestamp(), "{event:?}");
        assert!(row.attempts >= 1 && row.first_sent_at.is_some(), "{row:?}");
    }

    // Stripe answers at once from now on, and a new worker takes over once the dead one's claims
    // have lapsed.
    stripe.record_meter_events(Duration::ZERO, 1).await;
    world.replace_worker("e2e-worker-2").await;

    let rows = world
        .wait_until("every outbox row to be acknowledged", DISPATCH_TIMEOUT, || async {
            let rows = db.outbox(org).await;
            rows.iter().all(|r| r.status == OutboxStatus::Sent).then_some(rows)
        })
        .await;

    // Every event the first worker sent was sent again, the same; Stripe refused those repeats as
    // events it holds, which the worker took for acknowledgements (the rows are `sent`, not
    // parked). The new worker sent each row once.
    let all = stripe.meter_events().await;
    let again = &all[first.len()..];
    for event in &first {
        assert!(again.contains(event), "{event:?} was sent again with the same identifier and value: {again:#?}");
    }
    let resent: BTreeSet<&str> = again.iter().map(|e| e.identifier.as_str()).collect();
    assert_eq!((resent.len(), again.len()), (rows.len(), rows.len()), "{again:#?}");
    // Each row's identifier always carried the same event, and the identifiers are the rows'.
    let mut by_identifier: BTreeMap<&str, &SentMeterEvent> = BTreeMap::new();
    for event in &all {
        let earlier = by_identifier.entry(&event.identifier).or_insert(event);
        assert_eq!(*earlier, event, "one identifier, one event");
    }
    let row_identifiers: BTreeSet<String> = rows.iter().map(OutboxEntry::identifier).collect();
    let sent_identifiers: BTreeSet<String> = by_identifier.keys().map(|i| (*i).to_owned()).collect();
    assert_eq!(sent_identifiers, row_identifiers, "every row reached Stripe, and nothing else did");

    // What Stripe counted (each identifier once) is the usage the API reports.
    let recorded = stripe.recorded();
    assert_eq!(recorded.len(), rows.len(), "Stripe counted one event per row: {recorded:#?}");
    let total = |events: &[SentMeterEvent], name: &str| -> i64 {
        events.iter().filter(|e| e.event_name == name).map(|e| e.value).sum()
    };
    let distinct: Vec<SentMeterEvent> = by_identifier.values().map(|e| (*e).clone()).collect();
    let (status, usage) = world.get(&format!("/v1/orgs/{org}/usage")).await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    let reported = |field: &str| usage["totals"][field].as_i64().expect("a token count");
    for (name, field) in [("aicd_input_tokens", "input_tokens"), ("aicd_output_tokens", "output_tokens")] {
        assert!(reported(field) > 0, "{usage}");
        assert_eq!(total(&distinct, name), reported(field), "{name} over distinct identifiers: {usage}");
        assert_eq!(total(&recorded, name), reported(field), "{name} as Stripe counted it: {usage}");
    }
    let customers = stripe.requests_to("/v1/customers").await;
    for request in &customers {
        let key = request.headers.get("idempotency-key").and_then(|v| v.to_str().ok());
        assert_eq!(key, Some(&*format!("aicd-customer-{org}")), "one customer per organization");
    }
    stripe.assert_authenticated().await;
    assert_reconciled(&world);
    stop(&world).await;
    eprintln!(
        "{} meter events sent by the killed worker, all sent again; {} in all for {} rows; {:?}",
        first.len(),
        all.len(),
        rows.len(),
        started.elapsed()
    );
}

/// With a free allowance of one job a month, a second label trigger is refused: one comment on
/// the issue saying why and where to fix it, and no job; the same delivery again changes
/// nothing. Once Stripe reports an active subscription (a signed webhook, for the customer the
/// billing portal created), the same label starts a job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_trigger_beyond_the_free_allowance_gets_one_comment_and_no_job() {
    let stripe = FakeStripe::start().await;
    stripe.create_customers(5).await;
    stripe.record_meter_events(Duration::ZERO, 5).await;
    stripe.open_portal_sessions().await;
    let env = stripe.env(&[("AICD_BILLING_FREE_JOBS", "1"), ("AICD_BILLING_FREE_COST_MICROS", "unlimited")]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let world = World::start_with(&env).await;
    let org = world.org.clone();
    let db = Database::open(&world).await;
    link_installation(&world).await;

    // Issue #7 uses the allowance.
    label(&world, 7, "Add a greeting", ISSUE_7_BODY).await;
    world.wait_for_issue_job(7, "pr_open", JOB_TIMEOUT).await;
    let (status, billing) = world.get(&format!("/v1/orgs/{org}/billing")).await;
    assert_eq!(status, StatusCode::OK, "{billing}");
    assert_eq!((billing["free_jobs_left"].as_u64(), billing["accepting_jobs"].as_bool()), (Some(0), Some(false)));

    // Issue #8: refused, with one comment, and no job.
    let (delivery, labeled) = label(&world, 8, "Say goodbye", ISSUE_8_BODY).await;
    let (status, error) = world
        .wait_until("the label command of #8 to be refused", JOB_TIMEOUT, || async {
            db.finished_label_command(&delivery).await
        })
        .await;
    assert_eq!((status.as_str(), error.as_deref()), ("refused", Some("quota_exceeded")));
    let comment = world
        .wait_until("the refusal on #8", Duration::from_secs(10), || async {
            world.github.comments_on(8).into_iter().next()
        })
        .await;
    let refusal = comment.body().to_owned();
    assert!(refusal.starts_with("@monalisa, AI-CD did not start: "), "{refusal}");
    assert!(refusal.contains("free allowance of 1 job this month is used up"), "{refusal}");
    assert!(refusal.contains(&format!("billing page (/v1/orgs/{org}/billing)")), "{refusal}");
    assert!(world.jobs_of_issue(8).await.is_empty(), "no job for #8");

    // The same delivery again is recognised and does nothing.
    let (status, reply) = world.deliver_for_reply("issues", &delivery, &labeled).await;
    assert_eq!((status, reply["status"].as_str()), (StatusCode::OK, Some("duplicate")), "{reply}");
    assert_eq!(db.commands_of_issue(8).await, 1, "a redelivery records no command");

    // Labelling #8 again is a new command, refused the same way; it gets its own answer (what the
    // sender did this time is answered), and still no job.
    let (again, _) = label(&world, 8, "Say goodbye", ISSUE_8_BODY).await;
    let (status, _) = world
        .wait_until("the second label command of #8 to be refused", JOB_TIMEOUT, || async {
            db.finished_label_command(&again).await
        })
        .await;
    assert_eq!(status, "refused");
    let comments = world
        .wait_until("the answer to the second label", Duration::from_secs(10), || async {
            let comments = world.github.comments_on(8);
            (comments.len() >= 2).then_some(comments)
        })
        .await;
    assert_eq!(comments.len(), 2, "one answer per command: {comments:#?}");
    assert_eq!(comments[1].body(), refusal, "{comments:#?}");
    assert!(comments.iter().all(|c| c.edits() == 0), "{comments:#?}");
    assert!(world.jobs_of_issue(8).await.is_empty(), "still no job for #8");

    // The org admin opens the billing portal: the organization's customer is created (once).
    let (status, portal) = world.post(&format!("/v1/orgs/{org}/billing/portal"), &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{portal}");
    assert!(portal["url"].as_str().is_some_and(|u| u.starts_with("https://billing.stripe.com/")), "{portal}");
    let (_, billing) = world.get(&format!("/v1/orgs/{org}/billing")).await;
    assert_eq!(billing["has_customer"], true, "{billing}");
    let customers = stripe.requests_to("/v1/customers").await;
    assert!(!customers.is_empty());
    for request in &customers {
        let key = request.headers.get("idempotency-key").and_then(|v| v.to_str().ok());
        assert_eq!(key, Some(&*format!("aicd-customer-{org}")));
        assert!(form(request).contains(&("metadata[aicd_org_id]".to_owned(), org.clone())), "{:?}", form(request));
    }
    let sessions = stripe.requests_to("/v1/billing_portal/sessions").await;
    let [session] = sessions.as_slice() else { panic!("one portal session: {sessions:#?}") };
    assert!(form(session).contains(&("customer".to_owned(), CUSTOMER.to_owned())), "{:?}", form(session));

    // Stripe reports the subscription active.
    let (body, signature) = subscription_updated("evt_1RAbcd2eZvKYlo2C0a1b2c3d", CUSTOMER, "active");
    let headers = [("content-type", "application/json"), ("stripe-signature", signature.as_str())];
    let (status, reply) = world.post_raw("/webhooks/stripe", &headers, body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply, json!({ "event_id": "evt_1RAbcd2eZvKYlo2C0a1b2c3d", "status": "applied" }));
    let (status, reply) = world.post_raw("/webhooks/stripe", &headers, body).await;
    assert_eq!((status, reply["status"].as_str()), (StatusCode::OK, Some("duplicate")), "{reply}");
    let (_, billing) = world.get(&format!("/v1/orgs/{org}/billing")).await;
    assert_eq!(billing["subscription_status"], "active", "{billing}");
    assert_eq!(billing["accepting_jobs"], true, "{billing}");
    assert!(billing["free_jobs_left"].is_null(), "{billing}");

    // Now labelling #8 starts its job.
    let (third, _) = label(&world, 8, "Say goodbye", ISSUE_8_BODY).await;
    let job = world.wait_for_issue_job(8, "pr_open", JOB_TIMEOUT).await;
    assert_eq!(job["trigger"], "label", "{job}");
    let (status, _) = db.finished_label_command(&third).await.expect("the command is recorded");
    assert_eq!(status, "done");
    assert_eq!(world.github.comments_on(8)[..2].iter().map(|c| c.body()).collect::<Vec<_>>(), [&refusal, &refusal]);

    stripe.assert_authenticated().await;
    stop(&world).await;
}

/// An organization billed per merged pull request: its pull request's `closed` (merged) webhook
/// delivered twice under one delivery id and once more under another is one meter event of 1, and
/// another job's pull request closed without merging is none. No token usage is metered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_pull_request_is_billed_once_across_redelivered_closed_webhooks() {
    let stripe = FakeStripe::start().await;
    stripe.create_customers(5).await;
    stripe.record_meter_events(Duration::ZERO, 5).await;
    let env = stripe.env(&[]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let world = World::start_with(&env).await;
    let org: OrgId = world.org.parse().expect("an org id");
    let db = Database::open(&world).await;

    let out = world.server_command(&["billing", "set-mode", "--org", &world.org, "--mode", "merged_pull_requests"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("billed by merged_pull_requests from now on"), "{printed}");
    link_installation(&world).await;

    label(&world, 7, "Add a greeting", ISSUE_7_BODY).await;
    label(&world, 8, "Say goodbye", ISSUE_8_BODY).await;
    let job_7 = world.wait_for_issue_job(7, "pr_open", JOB_TIMEOUT).await;
    let job_8 = world.wait_for_issue_job(8, "pr_open", JOB_TIMEOUT).await;
    let (id_7, id_8) = (job_7["id"].as_str().expect("an id"), job_8["id"].as_str().expect("an id"));
    let (pull_7, pull_8) = (pull_of(&world, &job_7), pull_of(&world, &job_8));
    assert!(db.outbox(org).await.is_empty(), "opening pull requests and agent tokens are not billed in this mode");

    // #7's pull request is merged: its webhook, the same delivery again, the same body under a new
    // delivery id (a replay), and a second `closed` event for it in a new delivery.
    let mut merged = payloads::pull_request_merged(&pull_7);
    merged["pull_request"]["updated_at"] = json!(event_time());
    let delivery = delivery_id();
    let (status, reply) = world.deliver_for_reply("pull_request", &delivery, &merged).await;
    assert_eq!((status, reply["status"].as_str()), (StatusCode::OK, Some("processed")), "{reply}");
    world.wait_for_job(id_7, "merged", Duration::from_secs(10)).await;
    let (status, reply) = world.deliver_for_reply("pull_request", &delivery, &merged).await;
    assert_eq!((status, reply["status"].as_str()), (StatusCode::OK, Some("duplicate")), "{reply}");
    let (status, reply) = world.deliver_for_reply("pull_request", &delivery_id(), &merged).await;
    assert_eq!((status, reply["status"].as_str()), (StatusCode::OK, Some("duplicate")), "a replay: {reply}");
    merged["pull_request"]["updated_at"] = json!(event_time());
    let (status, reply) = world.deliver_for_reply("pull_request", &delivery_id(), &merged).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["status"], "ignored", "a new delivery is read, and finds no job to end: {reply}");

    // #8's is closed without merging.
    let mut closed = payloads::pull_request_closed_unmerged(&pull_8);
    closed["pull_request"]["updated_at"] = json!(event_time());
    let (status, reply) = world.deliver_for_reply("pull_request", &delivery_id(), &closed).await;
    assert_eq!((status, reply["status"].as_str()), (StatusCode::OK, Some("processed")), "{reply}");
    world.wait_for_job(id_8, "closed", Duration::from_secs(10)).await;

    // One billable fact, for #7's job, and Stripe gets it once.
    let rows = db.outbox(org).await;
    let [row] = rows.as_slice() else { panic!("one billable fact: {rows:#?}") };
    assert_eq!((row.meter, row.value), (Meter::MergedPullRequests, 1), "{row:?}");
    assert_eq!(row.job_id.map(|j| j.to_string()).as_deref(), Some(id_7), "{row:?}");
    world
        .wait_until("the merged pull request to be acknowledged by Stripe", DISPATCH_TIMEOUT, || async {
            let rows = db.outbox(org).await;
            rows.iter().all(|r| r.status == OutboxStatus::Sent).then_some(())
        })
        .await;
    let events = stripe.meter_events().await;
    let expected = SentMeterEvent {
        event_name: "aicd_merged_pull_requests".into(),
        customer: CUSTOMER.into(),
        value: 1,
        identifier: row.identifier(),
        timestamp: row.occurred_at.timestamp(),
    };
    assert_eq!(events, [expected], "exactly one meter event");
    assert_eq!(db.outbox(org).await.len(), 1, "{:#?}", db.outbox(org).await);

    stripe.assert_authenticated().await;
    assert_reconciled(&world);
    stop(&world).await;
}
