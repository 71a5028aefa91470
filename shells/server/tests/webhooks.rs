//! `POST /webhooks/github` over real HTTP against PostgreSQL and Redis: signatures checked before
//! anything is stored, deliveries deduplicated by id and by body, triggers recorded (from
//! repository settings over the organization's) for the worker's permission check, unlinked
//! installations recorded and ignored, and the route's limits: bodies in flight, body size, slow
//! senders, and clients that keep sending bad signatures. Payloads are GitHub's documented
//! examples (`aicd-github/tests/fixtures`), adjusted.

mod support;

use aicd_core::deliveries::DeliveryStatus;
use aicd_core::github::{Command, CommandSource, CommandStatus, GithubRepoId, InstallationId};
use aicd_core::jobs::{JobFilter, JobState, Trigger};
use aicd_core::store::{DeliveryStore, GithubStore, JobStore, RepoStore};
use aicd_core::{Error, OrgId};
use aicd_github::webhooks::WebhookSecret;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Reply, TestServer, reply};

const SECRET: &str = "9f2c4e81b7d05a3e6c1f8b2d4a7e0c95";
const INSTALLATION: i64 = 2_311_213;
const REPO: i64 = 1_296_269;

fn installation() -> InstallationId {
    InstallationId::new(INSTALLATION).unwrap()
}

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

/// A signature of GitHub's form that is wrong for any body.
const WRONG_SIGNATURE: &str = "sha256=0000000000000000000000000000000000000000000000000000000000000000";

fn delivery_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An org that linked the installation (as an operator would), to which GitHub added the
/// repository.
async fn linked_org(server: &TestServer) -> (OrgId, String) {
    let (org, _, _, admin) = server.org_with_keys("Octo").await;
    let intake = server.core.github_intake();
    intake.link_installation(org.id, installation(), Some("octo-org".into()), "operator").await.unwrap();
    let mut added = fixture("installation_repositories_added");
    added["repositories_added"] = json!([{ "id": REPO, "node_id": "R_1", "name": "Hello-World", "full_name": "octocat/Hello-World", "private": false }]);
    let r = deliver(server, "installation_repositories", &delivery_id(), &added).await;
    assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("processed")), "{}", r.text);
    (org.id, admin)
}

async fn jobs(server: &TestServer, org: OrgId) -> Vec<aicd_core::jobs::Job> {
    server.store.list_jobs(org, JobFilter::default()).await.unwrap().items
}

/// Every command recorded and not yet claimed, oldest first (claiming them).
async fn recorded_commands(server: &TestServer) -> Vec<Command> {
    let mut commands = Vec::new();
    while let Some(command) = server.store.claim_pending_command("test", chrono::Duration::minutes(5)).await.unwrap() {
        commands.push(command);
    }
    commands
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
async fn while_the_secret_is_rotated_deliveries_signed_with_the_old_or_the_new_one_are_accepted() {
    const OLD: &str = "3b8e0d6a91c47f25e0b9d83c6a1f4e72";
    let server =
        TestServer::postgres(&[("AICD_GITHUB_WEBHOOK_SECRET", SECRET), ("AICD_GITHUB_WEBHOOK_SECRET_PREVIOUS", OLD)])
            .await;
    let body = fixture("ping").to_string();
    for secret in [SECRET, OLD] {
        let signature = WebhookSecret::new(secret).unwrap().sign(body.as_bytes());
        let r = deliver_signed(&server, "ping", &delivery_id(), body.as_bytes(), Some(Some(&signature))).await;
        assert_eq!(r.status, StatusCode::OK, "signed with {secret}: {}", r.text);
    }
    let other = WebhookSecret::new("another-secret-entirely-different").unwrap().sign(body.as_bytes());
    for signature in [Some(other.as_str()), None, Some(WRONG_SIGNATURE)] {
        let r = deliver_signed(&server, "ping", &delivery_id(), body.as_bytes(), Some(signature)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{signature:?}: {}", r.text);
        assert_eq!(r.error_code(), "invalid_signature");
    }
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
    assert!(recorded_commands(&server).await.is_empty(), "nothing recorded");

    // The same delivery, correctly signed, is new: it is processed.
    let r = deliver_signed(&server, "issues", &id, body.as_bytes(), None).await;
    assert_eq!(r.body["status"], "processed", "{}", r.text);
    assert_eq!(recorded_commands(&server).await.len(), 1);
    assert!(jobs(&server, org).await.is_empty(), "the worker starts the job once the sender is checked");
}

#[tokio::test]
async fn a_label_is_recorded_once_for_the_worker_and_replays_change_nothing() {
    let server = server().await;
    let (org, _) = linked_org(&server).await;
    let id = delivery_id();
    let payload = labeled(7, "AICD");
    let r = deliver(&server, "issues", &id, &payload).await;
    assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("processed")), "{}", r.text);
    assert!(r.body["detail"].as_str().unwrap().contains("sender's access is checked"), "{}", r.text);
    assert!(jobs(&server, org).await.is_empty(), "no job before the sender's permission is checked");
    let recorded = server.store.get_delivery(&id).await.unwrap();
    assert_eq!((recorded.status, recorded.event.as_str()), (DeliveryStatus::Processed, "issues"));
    assert_eq!((recorded.action.as_deref(), recorded.installation_id), (Some("labeled"), Some(installation())));

    // The same delivery again: acknowledged, nothing done.
    let again = deliver(&server, "issues", &id, &payload).await;
    assert_eq!((again.status, again.body["status"].as_str()), (StatusCode::OK, Some("duplicate")), "{}", again.text);
    // The same signed body under another delivery id: a replay, acknowledged, nothing done.
    let replay = deliver(&server, "issues", &delivery_id(), &payload).await;
    assert_eq!(replay.body["status"], "duplicate", "{}", replay.text);

    let commands = recorded_commands(&server).await;
    assert_eq!(commands.len(), 1, "{commands:#?}");
    let command = &commands[0];
    assert_eq!(command.source, CommandSource::Label { delivery_id: id.clone() });
    assert_eq!((command.issue_number, command.status), (7, CommandStatus::Pending));
    assert_eq!(command.login, payload["sender"]["login"].as_str().unwrap());
    assert_eq!(command.author_login, None, "a label's sender is checked, not the issue's author");
    assert_eq!(command.issue.as_ref().map(|i| i.title.as_str()), payload["issue"]["title"].as_str().map(str::trim));

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
    let repo = server.store.find_github_repo(org, GithubRepoId::new(REPO).unwrap()).await.unwrap().unwrap();
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
    // ...and on by default (GitHub's next assignment is a new event, with a new timestamp).
    server
        .call(
            Method::PATCH,
            &format!("/v1/orgs/{org}/repos/{}", repo.id),
            Some(&admin),
            Some(json!({ "settings": {} })),
        )
        .await;
    assigned["issue"]["updated_at"] = json!("2026-12-01T10:00:00Z");
    let r = deliver(&server, "issues", &delivery_id(), &assigned).await;
    assert_eq!(r.body["status"], "processed", "{}", r.text);
    // Someone else's assignment is not a trigger.
    assigned["issue"]["number"] = json!(5);
    assigned["assignee"]["login"] = json!("octocat");
    assert_eq!(deliver(&server, "issues", &delivery_id(), &assigned).await.body["status"], "ignored");

    // An issue opened with the trigger label: its author is checked too (if it is not the sender).
    let mut opened = fixture("issues_opened");
    opened["issue"]["number"] = json!(6);
    opened["issue"]["labels"] = json!([{ "id": 1, "name": "ship", "color": "f29513", "default": false }]);
    opened["issue"]["user"]["login"] = json!("reporter");
    assert_eq!(deliver(&server, "issues", &delivery_id(), &opened).await.body["status"], "processed");

    // A bot's label is not obeyed unless the repository allows bots.
    let mut by_bot = labeled(9, "ship");
    by_bot["sender"]["login"] = json!("labeler[bot]");
    let r = deliver(&server, "issues", &delivery_id(), &by_bot).await;
    assert_eq!(r.body["status"], "ignored", "{}", r.text);

    let mut recorded: Vec<(u64, Trigger, Option<String>)> = recorded_commands(&server)
        .await
        .into_iter()
        .map(|c| (c.issue_number, c.source.trigger(), c.author_login))
        .collect();
    recorded.sort_by_key(|r| r.0);
    assert_eq!(
        recorded,
        [
            (2, Trigger::Label, None),
            (3, Trigger::Label, None),
            (4, Trigger::Assignment, None),
            (6, Trigger::Label, Some("reporter".into()))
        ]
    );

    // Closing an issue cancels its job.
    let repo_id = repo.id;
    let issue = aicd_core::jobs::IssueRef {
        number: Some(4),
        title: "Four".into(),
        body: String::new(),
        url: None,
        author: None,
    };
    server.core.github_intake().start_issue_job(org, repo_id, issue, Trigger::Assignment, "monalisa").await.unwrap();
    let mut closed = fixture("issues_closed");
    closed["issue"]["number"] = json!(4);
    let r = deliver(&server, "issues", &delivery_id(), &closed).await;
    assert_eq!(r.body["status"], "processed", "{}", r.text);
    let four = jobs(&server, org).await.into_iter().find(|j| j.issue.number == Some(4)).unwrap();
    assert_eq!(four.state, JobState::Cancelled);
}

#[tokio::test]
async fn the_apps_own_bot_never_triggers_even_where_bots_may() {
    let server = server().await;
    let (org, admin) = linked_org(&server).await;
    let repo = server.store.find_github_repo(org, GithubRepoId::new(REPO).unwrap()).await.unwrap().unwrap();
    let r = server
        .call(
            Method::PATCH,
            &format!("/v1/orgs/{org}/repos/{}", repo.id),
            Some(&admin),
            Some(json!({ "settings": { "triggers": { "bots": true } } })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let mut own = labeled(1, "aicd");
    own["sender"]["login"] = json!("aicd-app[bot]");
    let r = deliver(&server, "issues", &delivery_id(), &own).await;
    assert_eq!(r.body["status"], "ignored", "{}", r.text);
    assert!(r.body["detail"].as_str().unwrap().contains("own"), "{}", r.text);
    let mut comment = fixture("issue_comment_created");
    comment["comment"]["body"] = json!("/aicd run");
    comment["comment"]["user"]["login"] = json!("AICD-App[bot]");
    let r = deliver(&server, "issue_comment", &delivery_id(), &comment).await;
    assert_eq!(r.body["status"], "ignored", "{}", r.text);
    assert!(r.body["detail"].as_str().unwrap().contains("own"), "{}", r.text);
    // Another bot is obeyed here.
    let mut other = labeled(2, "aicd");
    other["sender"]["login"] = json!("labeler[bot]");
    let r = deliver(&server, "issues", &delivery_id(), &other).await;
    assert_eq!(r.body["status"], "processed", "{}", r.text);
    let recorded: Vec<_> = recorded_commands(&server).await.into_iter().map(|c| c.login).collect();
    assert_eq!(recorded, ["labeler[bot]"]);
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
    assert!(matches!(command.source, CommandSource::Comment { .. }));
    assert!(jobs(&server, org).await.is_empty(), "the worker decides, after checking the author's access");

    // No command, or a comment on a pull request: nothing recorded.
    let mut chat = payload.clone();
    chat["comment"]["body"] = json!("Thanks! `/aicd run` would start a job.");
    chat["comment"]["id"] = json!(99);
    assert_eq!(deliver(&server, "issue_comment", &delivery_id(), &chat).await.body["status"], "ignored");
    let on_pr = fixture("issue_comment_on_pull_request");
    assert_eq!(deliver(&server, "issue_comment", &delivery_id(), &on_pr).await.body["status"], "ignored");
    // A bot's command is not obeyed.
    let mut by_bot = payload.clone();
    by_bot["comment"]["id"] = json!(100);
    by_bot["comment"]["user"]["login"] = json!("helper[bot]");
    assert_eq!(deliver(&server, "issue_comment", &delivery_id(), &by_bot).await.body["status"], "ignored");
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
    let mut later = labeled(7, "aicd");
    later["issue"]["updated_at"] = json!("2026-12-01T10:00:00Z");
    assert_eq!(deliver(&server, "issues", &delivery_id(), &later).await.body["status"], "processed");

    // A repository removed from the installation is detached, with its history; its
    // unfinished job is cancelled, and its events are ignored from then on.
    let repo = server.store.find_github_repo(org, GithubRepoId::new(REPO).unwrap()).await.unwrap().unwrap();
    let issue = aicd_core::jobs::IssueRef {
        number: Some(7),
        title: "Seven".into(),
        body: String::new(),
        url: None,
        author: None,
    };
    server.core.github_intake().start_issue_job(org, repo.id, issue, Trigger::Label, "monalisa").await.unwrap();
    let mut removed = fixture("installation_repositories_removed");
    removed["installation"]["id"] = json!(INSTALLATION);
    removed["repositories_removed"] = json!([{ "id": REPO, "full_name": "octocat/Hello-World" }]);
    let r = deliver(&server, "installation_repositories", &delivery_id(), &removed).await;
    assert!(r.body["detail"].as_str().unwrap().contains("1 detached"), "{}", r.text);
    let kept = server.store.get_repo(org, repo.id).await.unwrap();
    assert!(kept.detached_at.is_some());
    let all = jobs(&server, org).await;
    assert_eq!((all.len(), all[0].state), (1, JobState::Cancelled), "the job is kept, cancelled");
    let r = deliver(&server, "issues", &delivery_id(), &labeled(8, "aicd")).await;
    assert!(r.body["detail"].as_str().unwrap().contains("detached"), "{}", r.text);
    // Added back: attached again.
    let mut added = fixture("installation_repositories_added");
    added["repositories_added"] = json!([{ "id": REPO, "node_id": "R_1", "name": "Hello-World", "full_name": "octocat/Hello-World", "private": false }]);
    added["installation"]["updated_at"] = json!("2026-12-01T10:00:00Z");
    let r = deliver(&server, "installation_repositories", &delivery_id(), &added).await;
    assert_eq!(r.body["status"], "processed", "{}", r.text);
    assert_eq!(server.store.get_repo(org, repo.id).await.unwrap().detached_at, None);

    // Uninstalling unlinks it; its repositories are detached.
    let mut deleted = fixture("installation_deleted");
    deleted["installation"]["id"] = json!(INSTALLATION);
    assert_eq!(deliver(&server, "installation", &delivery_id(), &deleted).await.body["status"], "processed");
    assert!(server.store.find_installation(installation()).await.unwrap().is_none());
    assert!(server.store.get_repo(org, repo.id).await.unwrap().detached_at.is_some());
    assert_eq!(jobs(&server, org).await.len(), 1);
}

#[tokio::test]
async fn installations_are_listed_and_unlinked_by_org_admins_but_never_linked_by_tenants() {
    let server = server().await;
    let (org, viewer, developer, admin) = server.org_with_keys("One").await;
    let path = format!("/v1/orgs/{}/github/installations", org.id);
    // No tenant route links an installation: that takes the App's setup flow, or an operator.
    let body = json!({ "installation_id": 77 });
    for key in [&viewer, &developer, &admin] {
        let r = server.post(&path, key, body.clone()).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{}", r.text);
    }
    assert!(server.store.find_installation(InstallationId::new(77).unwrap()).await.unwrap().is_none());

    server
        .core
        .github_intake()
        .link_installation(org.id, InstallationId::new(77).unwrap(), None, "operator")
        .await
        .unwrap();
    let listed = server.get(&path, &viewer).await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1, "{}", listed.text);
    assert_eq!(listed.body["items"][0]["linked_by"], "operator", "{}", listed.text);
    for key in [&viewer, &developer] {
        let r = server.call(Method::DELETE, &format!("{path}/77"), Some(key), None).await;
        assert_eq!((r.status, r.error_code()), (StatusCode::FORBIDDEN, "forbidden"));
    }
    let r = server.call(Method::DELETE, &format!("{path}/77"), Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = server.call(Method::DELETE, &format!("{path}/77"), Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = server.call(Method::DELETE, &format!("{path}/0"), Some(&admin), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
}

#[tokio::test]
async fn deliveries_have_a_limit_of_their_own() {
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
    // Beyond the webhook limit (5 MiB by default): refused on the declared length...
    let oversized = |len: usize| {
        server
            .http
            .post(server.url("/webhooks/github"))
            .header("X-GitHub-Event", "ping")
            .header("X-GitHub-Delivery", delivery_id())
            .header("X-Hub-Signature-256", WRONG_SIGNATURE)
            .body(vec![b' '; len])
    };
    let r = reply(oversized(6 * 1024 * 1024).send().await.unwrap()).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.body["error"]["details"]["limit_bytes"], 5 * 1024 * 1024, "{}", r.text);
    // ...and on the bytes that arrive when no length is declared.
    let line = chunked(&server, 6 * 1024 * 1024).await;
    assert!(line.contains("413"), "{line}");
    // ...and configurable (never above GitHub's 25 MB).
    let small =
        TestServer::postgres(&[("AICD_GITHUB_WEBHOOK_SECRET", SECRET), ("AICD_WEBHOOK_MAX_BODY_BYTES", "2048")]).await;
    let r = reply(
        small
            .http
            .post(small.url("/webhooks/github"))
            .header("X-GitHub-Event", "ping")
            .header("X-GitHub-Delivery", delivery_id())
            .header("X-Hub-Signature-256", WRONG_SIGNATURE)
            .body(vec![b' '; 4096])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_client_sending_bad_signatures_is_turned_away() {
    let server = server().await;
    let body = fixture("ping").to_string();
    let mut statuses = Vec::new();
    let started = std::time::Instant::now();
    for n in 0..100 {
        // Malformed and wrong signatures count alike.
        let bad = if n % 2 == 0 { "sha256=00" } else { WRONG_SIGNATURE };
        let r = deliver_signed(&server, "ping", &delivery_id(), body.as_bytes(), Some(Some(bad))).await;
        statuses.push(r.status);
    }
    // The default allows a burst of 20 bad signatures, refilled at 20 a minute (one every 3 s): a
    // slow machine may earn a few more while the loop runs, never more than the time allows.
    let refilled = (started.elapsed().as_secs_f64() / 3.0).ceil() as usize;
    let unauthorized = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
    let limited = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert!(statuses[..20].iter().all(|s| *s == StatusCode::UNAUTHORIZED), "the first 20 are read: {statuses:?}");
    assert!(
        (20..=20 + refilled).contains(&unauthorized),
        "20 bad signatures a minute, {refilled} refilled meanwhile: {statuses:?}"
    );
    assert_eq!(limited, 100 - unauthorized, "{statuses:?}");
    assert_eq!(statuses.last(), Some(&StatusCode::TOO_MANY_REQUESTS));
    let r = deliver_signed(&server, "ping", &delivery_id(), body.as_bytes(), Some(None)).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "no signature at all: {}", r.text);
    assert!(r.headers.get("retry-after").is_some());
    // This address is not one of GitHub's: it is turned away before anything is read, even
    // with a good signature.
    let r = deliver(&server, "ping", &delivery_id(), &fixture("ping")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
}

#[tokio::test]
async fn githubs_own_addresses_are_never_locked_out_by_bad_signatures() {
    // GitHub sends every App's deliveries from shared addresses: anyone can point a webhook
    // with a wrong secret at this server from them.
    let server = TestServer::postgres(&[
        ("AICD_GITHUB_WEBHOOK_SECRET", SECRET),
        ("AICD_WEBHOOK_TRUSTED_SOURCES", "127.0.0.0/8,::1"),
        ("AICD_WEBHOOK_BAD_SIGNATURES_PER_MINUTE", "3"),
    ])
    .await;
    let body = fixture("ping").to_string();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = deliver_signed(&server, "ping", &delivery_id(), body.as_bytes(), Some(Some(WRONG_SIGNATURE))).await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429], "bad signatures are still counted");
    // A good signature from the same address is accepted.
    let r = deliver(&server, "ping", &delivery_id(), &fixture("ping")).await;
    assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("processed")), "{}", r.text);
}

#[tokio::test]
async fn one_address_holds_only_a_few_places() {
    let server = TestServer::postgres(&[
        ("AICD_GITHUB_WEBHOOK_SECRET", SECRET),
        ("AICD_WEBHOOK_MAX_INFLIGHT", "10"),
        ("AICD_WEBHOOK_MAX_INFLIGHT_PER_ADDRESS", "2"),
        ("AICD_WEBHOOK_READ_TIMEOUT_SECS", "3"),
    ])
    .await;
    let _slow = [trickle(&server, 1000, 10).await, trickle(&server, 1000, 10).await];
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut third = trickle(&server, 1000, 10).await;
    let line = status_of(&mut third).await;
    assert!(line.contains("503"), "the address has two places: {line}");
}

#[tokio::test]
async fn malformed_headers_are_refused_before_a_place_is_taken() {
    let server = TestServer::postgres(&[
        ("AICD_GITHUB_WEBHOOK_SECRET", SECRET),
        ("AICD_WEBHOOK_MAX_INFLIGHT", "1"),
        ("AICD_WEBHOOK_READ_TIMEOUT_SECS", "5"),
    ])
    .await;
    // One sender holds the only place...
    let _slow = trickle(&server, 1000, 10).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // ...yet requests that cannot be deliveries are answered for what they are, at once.
    let body = fixture("ping").to_string();
    let r = deliver_signed(&server, "ping", &delivery_id(), body.as_bytes(), Some(Some("sha1=abc"))).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::UNAUTHORIZED, "invalid_signature"), "{}", r.text);
    let r = reply(
        server
            .http
            .post(server.url("/webhooks/github"))
            .header("X-GitHub-Delivery", delivery_id())
            .header("X-Hub-Signature-256", WRONG_SIGNATURE)
            .body(body.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((r.status, r.error_code()), (StatusCode::BAD_REQUEST, "bad_request"), "no event: {}", r.text);
    let r = reply(
        server
            .http
            .post(server.url("/webhooks/github"))
            .header("X-GitHub-Event", "ping")
            .header("X-GitHub-Delivery", delivery_id())
            .header("X-Hub-Signature-256", WRONG_SIGNATURE)
            .body(vec![b' '; 6 * 1024 * 1024])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    // A well-formed one waits for a place like any delivery.
    let r = deliver(&server, "ping", &delivery_id(), &fixture("ping")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
}

/// Sends a delivery of `len` bytes in chunks, without declaring its length; the status line of
/// the answer.
async fn chunked(server: &TestServer, len: usize) -> String {
    use tokio::io::AsyncWriteExt;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         X-GitHub-Event: ping\r\nX-GitHub-Delivery: {}\r\nX-Hub-Signature-256: {WRONG_SIGNATURE}\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        delivery_id()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0;
    while sent < len {
        let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        // The server may answer and close before everything is sent.
        if stream.write_all(&frame).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    status_of(&mut stream).await
}

/// Opens a connection and sends a delivery's headers and `sent` bytes of a body declared
/// `declared` bytes long, then holds the connection open.
async fn trickle(server: &TestServer, declared: usize, sent: usize) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         X-GitHub-Event: ping\r\nX-GitHub-Delivery: {}\r\nX-Hub-Signature-256: {WRONG_SIGNATURE}\r\n\
         Content-Length: {declared}\r\n\r\n",
        delivery_id()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![b' '; sent]).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

/// Reads the status line of the answer on `stream`.
async fn status_of(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(std::time::Duration::from_secs(20), stream.read(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn deliveries_in_flight_are_bounded_and_slow_senders_cut_off() {
    let server = TestServer::postgres(&[
        ("AICD_GITHUB_WEBHOOK_SECRET", SECRET),
        ("AICD_WEBHOOK_MAX_INFLIGHT", "3"),
        ("AICD_WEBHOOK_READ_TIMEOUT_SECS", "2"),
    ])
    .await;
    // Three senders trickle their bodies: each holds one of the three places.
    let mut slow = Vec::new();
    for _ in 0..3 {
        slow.push(trickle(&server, 1000, 10).await);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The fourth is turned away at once, without its body being read.
    let started = std::time::Instant::now();
    let mut extra = trickle(&server, 1000, 10).await;
    let line = status_of(&mut extra).await;
    assert!(line.contains("503"), "{line}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "at once: {:?}", started.elapsed());
    // The slow ones are cut off after the read timeout.
    for stream in &mut slow {
        let line = status_of(stream).await;
        assert!(line.contains("408"), "{line}");
    }
    // Then there is room again.
    let r = deliver(&server, "ping", &delivery_id(), &fixture("ping")).await;
    assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("processed")), "{}", r.text);
}
