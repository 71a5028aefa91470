//! `POST /webhooks/github` over real HTTP against PostgreSQL and Redis: signatures checked before
//! anything is stored, deliveries deduplicated by id, triggers from repository settings over the
//! organization's, unlinked installations recorded and ignored, and installations linked by org
//! admins. Payloads are GitHub's documented examples (`aicd-github/tests/fixtures`), adjusted.

mod support;

use aicd_core::deliveries::DeliveryStatus;
use aicd_core::github::CommandStatus;
use aicd_core::jobs::{JobFilter, JobState, Trigger};
use aicd_core::store::{DeliveryStore, GithubStore, JobStore};
use aicd_core::{Error, OrgId};
use aicd_github::webhooks::WebhookSecret;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Reply, TestServer, reply};

const SECRET: &str = "9f2c4e81b7d05a3e6c1f8b2d4a7e0c95";
const INSTALLATION: i64 = 2_311_213;
const REPO: i64 = 1_296_269;

fn fixture(name: &str) -> Value {
    let path = format!("{}/../../aicd-github/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

async fn server() -> TestServer {
    TestServer::postgres(&[("AICD_GITHUB_WEBHOOK_SECRET", SECRET), ("AICD_GITHUB_APP_SLUG", "aicd-app")]).await
}

/// Sends a delivery signed with `signature` (`None`: correctly signed).
async fn deliver_signed(
    server: &TestServer,
    event: &str,
    delivery: &str,
    body: &[u8],
    signature: Option<Option<&str>>,
) -> Reply {
    let good = WebhookSecret::new(SECRET).unwrap().sign(body);
    let mut request = server
        .http
        .post(server.url("/webhooks/github"))
        .header("X-GitHub-Event", event)
        .header("X-GitHub-Delivery", delivery)
        .header("Content-Type", "application/json")
        .body(body.to_vec());
    match signature {
        None => request = request.header("X-Hub-Signature-256", good),
        Some(Some(bad)) => request = request.header("X-Hub-Signature-256", bad),
        Some(None) => {}
    }
    reply(request.send().await.unwrap()).await
}

async fn deliver(server: &TestServer, event: &str, delivery: &str, payload: &Value) -> Reply {
    deliver_signed(server, event, delivery, payload.to_string().as_bytes(), None).await
}

fn delivery_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An org admin links the installation, and GitHub adds the repository to it.
async fn linked_org(server: &TestServer) -> (OrgId, String) {
    let (org, _, _, admin) = server.org_with_keys("Octo").await;
    let linked = server
        .post(
            &format!("/v1/orgs/{}/github/installations", org.id),
            &admin,
            json!({ "installation_id": INSTALLATION, "account_login": "octo-org" }),
        )
        .await;
    assert_eq!(linked.status, StatusCode::CREATED, "{}", linked.text);
    let mut added = fixture("installation_repositories_added");
    added["repositories_added"] = json!([{ "id": REPO, "node_id": "R_1", "name": "Hello-World", "full_name": "octocat/Hello-World", "private": false }]);
    let r = deliver(server, "installation_repositories", &delivery_id(), &added).await;
    assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("processed")), "{}", r.text);
    (org.id, admin)
}

async fn jobs(server: &TestServer, org: OrgId) -> Vec<aicd_core::jobs::Job> {
    server.store.list_jobs(org, JobFilter::default()).await.unwrap().items
}

fn labeled(issue: u64, label: &str) -> Value {
    let mut payload = fixture("issues_labeled");
    payload["issue"]["number"] = json!(issue);
    payload["label"]["name"] = json!(label);
    payload
}

#[tokio::test]
async fn without_a_webhook_secret_the_route_is_unavailable() {
    let server = TestServer::postgres(&[]).await;
    let body = fixture("ping").to_string();
    let r = deliver_signed(&server, "ping", &delivery_id(), body.as_bytes(), Some(Some("sha256=00"))).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.error_code(), "webhooks_disabled");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("AICD_GITHUB_WEBHOOK_SECRET"));
}

#[tokio::test]
async fn a_bad_signature_is_refused_and_nothing_is_stored() {
    let server = server().await;
    let (org, _) = linked_org(&server).await;
    let body = labeled(7, "aicd").to_string();
    let id = delivery_id();
    let other = WebhookSecret::new("another-secret-entirely-different").unwrap().sign(body.as_bytes());
    for signature in [Some(other.as_str()), None, Some("sha256=zz"), Some("sha1=abc")] {
        let r = deliver_signed(&server, "issues", &id, body.as_bytes(), Some(signature)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{signature:?}: {}", r.text);
        assert_eq!(r.error_code(), "invalid_signature");
    }
    // A signature over another body does not cover this one.
    let tampered = body.replace("\"aicd\"", "\"aicd \"");
    let r = deliver_signed(
        &server,
        "issues",
        &id,
        tampered.as_bytes(),
        Some(Some(&WebhookSecret::new(SECRET).unwrap().sign(body.as_bytes()))),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(matches!(server.store.get_delivery(&id).await, Err(Error::NotFound { .. })), "no delivery recorded");
    assert!(jobs(&server, org).await.is_empty(), "no job created");

    // The same delivery, correctly signed, is new: it is processed.
    let r = deliver_signed(&server, "issues", &id, body.as_bytes(), None).await;
    assert_eq!(r.body["status"], "processed", "{}", r.text);
    assert_eq!(jobs(&server, org).await.len(), 1);
}

#[tokio::test]
async fn a_labeled_issue_starts_one_job_and_redeliveries_change_nothing() {
    let server = server().await;
    let (org, _) = linked_org(&server).await;
    let id = delivery_id();
    let payload = labeled(7, "AICD");
    let r = deliver(&server, "issues", &id, &payload).await;
    assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("processed")), "{}", r.text);
    let created = jobs(&server, org).await;
    assert_eq!(created.len(), 1);
    let job = &created[0];
    assert_eq!((job.state, job.trigger, job.issue.number), (JobState::Queued, Trigger::Label, Some(7)));
    assert_eq!(job.issue.title, payload["issue"]["title"].as_str().unwrap().trim());
    assert_eq!(job.created_by, format!("github:{}", payload["sender"]["login"].as_str().unwrap()));
    let recorded = server.store.get_delivery(&id).await.unwrap();
    assert_eq!((recorded.status, recorded.event.as_str()), (DeliveryStatus::Processed, "issues"));
    assert_eq!((recorded.action.as_deref(), recorded.installation_id), (Some("labeled"), Some(INSTALLATION)));

    // The same delivery again: acknowledged, nothing done.
    let again = deliver(&server, "issues", &id, &payload).await;
    assert_eq!((again.status, again.body["status"].as_str()), (StatusCode::OK, Some("duplicate")), "{}", again.text);
    // Another delivery for the same issue: the active job stands.
    let second = deliver(&server, "issues", &delivery_id(), &payload).await;
    assert!(second.body["detail"].as_str().unwrap().contains("already has an active job"), "{}", second.text);
    assert_eq!(jobs(&server, org).await.len(), 1);

    // A delivery whose processing failed is processed when redelivered.
    let failed = delivery_id();
    let payload8 = labeled(8, "aicd");
    let r = deliver(&server, "issues", &failed, &payload8).await;
    assert_eq!(r.body["status"], "processed");
    server.store.finish_delivery(&failed, DeliveryStatus::Failed, Some("simulated")).await.unwrap();
    let retried = deliver(&server, "issues", &failed, &payload8).await;
    assert_eq!(retried.body["status"], "processed", "{}", retried.text);
    assert_eq!(server.store.get_delivery(&failed).await.unwrap().attempts, 2);
}

#[tokio::test]
async fn triggers_follow_repository_settings_over_the_organizations() {
    let server = server().await;
    let (org, admin) = linked_org(&server).await;
    // Another label does nothing.
    let r = deliver(&server, "issues", &delivery_id(), &labeled(1, "bug")).await;
    assert_eq!(r.body["status"], "ignored", "{}", r.text);

    // The organization's default label is `ship`; the repository says nothing yet.
    let r = server
        .call(
            Method::PATCH,
            &format!("/v1/orgs/{org}"),
            Some(&admin),
            Some(json!({ "settings": { "triggers": { "label": "ship" } } })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(deliver(&server, "issues", &delivery_id(), &labeled(2, "aicd")).await.body["status"], "ignored");
    assert_eq!(deliver(&server, "issues", &delivery_id(), &labeled(2, "Ship")).await.body["status"], "processed");

    // The repository overrides it.
    let repo = server.store.find_github_repo(org, REPO).await.unwrap().unwrap();
    let r = server
        .call(
            Method::PATCH,
            &format!("/v1/orgs/{org}/repos/{}", repo.id),
            Some(&admin),
            Some(json!({ "settings": { "triggers": { "label": "robot", "assignment": false } } })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(deliver(&server, "issues", &delivery_id(), &labeled(3, "ship")).await.body["status"], "ignored");
    assert_eq!(deliver(&server, "issues", &delivery_id(), &labeled(3, "robot")).await.body["status"], "processed");

    // Assignment to the App's bot user is turned off for this repository...
    let mut assigned = fixture("issues_assigned");
    assigned["issue"]["number"] = json!(4);
    assert_eq!(deliver(&server, "issues", &delivery_id(), &assigned).await.body["status"], "ignored");
    // ...and on by default.
    server
        .call(
            Method::PATCH,
            &format!("/v1/orgs/{org}/repos/{}", repo.id),
            Some(&admin),
            Some(json!({ "settings": {} })),
        )
        .await;
    let r = deliver(&server, "issues", &delivery_id(), &assigned).await;
    assert_eq!(r.body["status"], "processed", "{}", r.text);
    // Someone else's assignment is not a trigger.
    assigned["issue"]["number"] = json!(5);
    assigned["assignee"]["login"] = json!("octocat");
    assert_eq!(deliver(&server, "issues", &delivery_id(), &assigned).await.body["status"], "ignored");

    // An issue opened with the trigger label starts a job.
    let mut opened = fixture("issues_opened");
    opened["issue"]["number"] = json!(6);
    opened["issue"]["labels"] = json!([{ "id": 1, "name": "ship", "color": "f29513", "default": false }]);
    assert_eq!(deliver(&server, "issues", &delivery_id(), &opened).await.body["status"], "processed");

    let mut triggers: Vec<(u64, Trigger)> =
        jobs(&server, org).await.iter().map(|j| (j.issue.number.unwrap(), j.trigger)).collect();
    triggers.sort_by_key(|t| t.0);
    assert_eq!(triggers, [(2, Trigger::Label), (3, Trigger::Label), (4, Trigger::Assignment), (6, Trigger::Label)]);

    // Closing an issue cancels its job.
    let mut closed = fixture("issues_closed");
    closed["issue"]["number"] = json!(4);
    let r = deliver(&server, "issues", &delivery_id(), &closed).await;
    assert_eq!(r.body["status"], "processed", "{}", r.text);
    let four = jobs(&server, org).await.into_iter().find(|j| j.issue.number == Some(4)).unwrap();
    assert_eq!(four.state, JobState::Cancelled);
}

#[tokio::test]
async fn comment_commands_are_recorded_for_the_worker() {
    let server = server().await;
    let (org, _) = linked_org(&server).await;
    let payload = fixture("issue_comment_created");
    let r = deliver(&server, "issue_comment", &delivery_id(), &payload).await;
    assert_eq!(r.body["status"], "processed", "{}", r.text);
    let command = server.store.claim_pending_command("test", chrono::Duration::seconds(30)).await.unwrap().unwrap();
    assert_eq!((command.org_id, command.issue_number, command.status), (org, 1347, CommandStatus::Pending));
    assert_eq!(command.login, payload["comment"]["user"]["login"].as_str().unwrap());
    assert!(jobs(&server, org).await.is_empty(), "the worker decides, after checking the author's access");

    // No command, or a comment on a pull request: nothing recorded.
    let mut chat = payload.clone();
    chat["comment"]["body"] = json!("Thanks! `/aicd run` would start a job.");
    chat["comment"]["id"] = json!(99);
    assert_eq!(deliver(&server, "issue_comment", &delivery_id(), &chat).await.body["status"], "ignored");
    let on_pr = fixture("issue_comment_on_pull_request");
    assert_eq!(deliver(&server, "issue_comment", &delivery_id(), &on_pr).await.body["status"], "ignored");
}

#[tokio::test]
async fn unlinked_installations_and_other_events_are_acknowledged_and_ignored() {
    let server = server().await;
    // Nobody linked the installation: recorded, ignored.
    let id = delivery_id();
    let r = deliver(&server, "issues", &id, &labeled(7, "aicd")).await;
    assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("ignored")), "{}", r.text);
    let recorded = server.store.get_delivery(&id).await.unwrap();
    assert_eq!(recorded.status, DeliveryStatus::Ignored);
    assert!(recorded.error.unwrap().contains("not linked"));

    let (org, _) = linked_org(&server).await;
    for (event, name) in [
        ("ping", "ping"),
        ("star", "star_created"),
        ("issues", "issues_pinned"),
        ("issues", "issues_opened_nulls"),
        ("issues", "issues_labeled_null_label"),
        ("issues", "issues_assigned_null_assignee"),
        ("issue_comment", "issue_comment_nulls"),
        ("issue_comment", "issue_comment_edited"),
        ("pull_request", "pull_request_opened"),
        ("pull_request", "pull_request_closed_null_merged"),
        ("installation", "installation_new_permissions_accepted"),
    ] {
        let r = deliver(&server, event, &delivery_id(), &fixture(name)).await;
        assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.text);
        assert!(["processed", "ignored"].contains(&r.body["status"].as_str().unwrap()), "{name}: {}", r.text);
    }
    // Surprising shapes are acknowledged too.
    for odd in [json!([]), json!({ "action": 5, "issue": null, "repository": "x" }), json!(null)] {
        let r = deliver(&server, "issues", &delivery_id(), &odd).await;
        assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("ignored")), "{odd}: {}", r.text);
    }
    assert!(jobs(&server, org).await.is_empty());

    // A signed body that is not JSON is a client error, not a 500.
    let r = deliver_signed(&server, "issues", &delivery_id(), b"{not json", None).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::BAD_REQUEST, "bad_request"));
    // Headers GitHub always sends.
    let body = b"{}";
    let signature = WebhookSecret::new(SECRET).unwrap().sign(body);
    let r = reply(
        server
            .http
            .post(server.url("/webhooks/github"))
            .header("X-Hub-Signature-256", signature)
            .body(&body[..])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
}

#[tokio::test]
async fn installation_events_follow_the_installation() {
    let server = server().await;
    let (org, _) = linked_org(&server).await;
    let mut suspend = fixture("installation_suspend");
    suspend["installation"]["id"] = json!(INSTALLATION);
    assert_eq!(deliver(&server, "installation", &delivery_id(), &suspend).await.body["status"], "processed");
    // A suspended installation's events are ignored.
    let r = deliver(&server, "issues", &delivery_id(), &labeled(7, "aicd")).await;
    assert!(r.body["detail"].as_str().unwrap().contains("suspended"), "{}", r.text);
    let mut unsuspend = suspend.clone();
    unsuspend["action"] = json!("unsuspend");
    assert_eq!(deliver(&server, "installation", &delivery_id(), &unsuspend).await.body["status"], "processed");
    assert_eq!(deliver(&server, "issues", &delivery_id(), &labeled(7, "aicd")).await.body["status"], "processed");

    // Repositories removed from the installation follow (one with an active job is kept).
    let mut removed = fixture("installation_repositories_removed");
    removed["installation"]["id"] = json!(INSTALLATION);
    removed["repositories_removed"] = json!([{ "id": REPO, "full_name": "octocat/Hello-World" }]);
    let r = deliver(&server, "installation_repositories", &delivery_id(), &removed).await;
    assert!(r.body["detail"].as_str().unwrap().contains("1 kept"), "{}", r.text);

    // Uninstalling unlinks it.
    let mut deleted = fixture("installation_deleted");
    deleted["installation"]["id"] = json!(INSTALLATION);
    assert_eq!(deliver(&server, "installation", &delivery_id(), &deleted).await.body["status"], "processed");
    assert!(server.store.find_installation(INSTALLATION).await.unwrap().is_none());
    assert!(jobs(&server, org).await.len() == 1);
}

#[tokio::test]
async fn installations_are_linked_by_org_admins_to_one_org() {
    let server = server().await;
    let (org, viewer, developer, admin) = server.org_with_keys("One").await;
    let path = format!("/v1/orgs/{}/github/installations", org.id);
    let body = json!({ "installation_id": 77 });
    for key in [&viewer, &developer] {
        let r = server.post(&path, key, body.clone()).await;
        assert_eq!((r.status, r.error_code()), (StatusCode::FORBIDDEN, "forbidden"));
    }
    let r = server.post(&path, &admin, body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["installation_id"], 77);
    let listed = server.get(&path, &viewer).await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1, "{}", listed.text);

    // Another organization cannot take it.
    let (other, _, _, other_admin) = server.org_with_keys("Two").await;
    let r = server.post(&format!("/v1/orgs/{}/github/installations", other.id), &other_admin, body.clone()).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::CONFLICT, "conflict"));
    assert!(!r.text.contains(&org.id.to_string()), "the owner is not revealed");
    // Bad input is a 422.
    let r = server.post(&path, &admin, json!({ "installation_id": -1 })).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);

    let r = server.call(Method::DELETE, &format!("{path}/77"), Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = server.call(Method::DELETE, &format!("{path}/77"), Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deliveries_may_exceed_the_api_body_limit_up_to_githubs() {
    let server = server().await;
    let mut ping = fixture("ping");
    ping["padding"] = json!("x".repeat(3 * 1024 * 1024));
    let r = deliver(&server, "ping", &delivery_id(), &ping).await;
    assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("processed")), "{}", r.text.len());
    // An API route keeps its own limit.
    let (org, _, _, admin) = server.org_with_keys("Big").await;
    let big = json!({ "name": "x".repeat(2 * 1024 * 1024) });
    let r = server.call(Method::PATCH, &format!("/v1/orgs/{}", org.id), Some(&admin), Some(big)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Beyond GitHub's 25 MB: refused on the declared length.
    let r = reply(
        server
            .http
            .post(server.url("/webhooks/github"))
            .header("X-GitHub-Event", "ping")
            .header("X-GitHub-Delivery", delivery_id())
            .header("X-Hub-Signature-256", "sha256=00")
            .body(vec![b' '; 26 * 1024 * 1024])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn linking_registers_the_installations_repositories_through_the_app() {
    use wiremock::matchers::{method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let github = MockServer::start().await;
    let token = json!({ "token": "ghs_16C7e42F292c6912E7710c838347Ae178B4a", "expires_at": "2099-01-01T00:00:00Z" });
    Mock::given(method("POST"))
        .and(path("/app/installations/77/access_tokens"))
        .respond_with(ResponseTemplate::new(201).set_body_json(token))
        .mount(&github)
        .await;
    Mock::given(method("POST"))
        .and(path("/app/installations/78/access_tokens"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({ "message": "Not Found" })))
        .mount(&github)
        .await;
    let repo = |id: u64, name: &str| {
        json!({ "id": id, "node_id": "R_1", "name": name, "full_name": format!("octo-org/{name}"),
                "private": true, "default_branch": "trunk", "owner": { "login": "octo-org", "type": "Organization" } })
    };
    Mock::given(method("GET"))
        .and(path("/installation/repositories"))
        .and(query_param("page", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "total_count": 2, "repository_selection": "selected",
            "repositories": [repo(501, "api"), repo(502, "web")]
        })))
        .mount(&github)
        .await;
    let key = &aicd_testkit::rsa_key_pair().private_pem;
    let server = TestServer::postgres(&[
        ("AICD_GITHUB_WEBHOOK_SECRET", SECRET),
        ("AICD_GITHUB_APP_ID", "123456"),
        ("AICD_GITHUB_PRIVATE_KEY", key),
        ("AICD_GITHUB_API_URL", &github.uri()),
    ])
    .await;
    let (org, _, _, admin) = server.org_with_keys("Octo").await;
    let link = format!("/v1/orgs/{}/github/installations", org.id);
    let r = server.post(&link, &admin, json!({ "installation_id": 77 })).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!((r.body["installation_id"].as_i64(), r.body["repositories_synced"].as_i64()), (Some(77), Some(2)));
    let repos = server.get(&format!("/v1/orgs/{}/repos", org.id), &admin).await;
    let names: Vec<(&str, &str)> = repos.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["full_name"].as_str().unwrap(), r["default_branch"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("octo-org/api", "trunk"), ("octo-org/web", "trunk")]);

    // An installation GitHub does not know is not linked.
    let r = server.post(&link, &admin, json!({ "installation_id": 78 })).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"), "{}", r.text);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("does not exist"), "{}", r.text);
    assert!(server.store.find_installation(78).await.unwrap().is_none());
}
