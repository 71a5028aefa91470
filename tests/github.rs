//! The GitHub integration end to end, as a deployment runs it: the real `aicd-server` (no embedded
//! worker) and `aicd-worker` processes on PostgreSQL and Redis, configured as a GitHub App whose
//! GitHub is a stateful fake (wiremock), fed signed webhook deliveries shaped like GitHub's.
//!
//! The main test links installation 4242 to an organization through the App's setup flow (the
//! install link's signed state, GitHub's redirect with an OAuth code, the user-to-server check
//! that the installer administers `acme`), adds `acme/widgets` to it by webhook,
//! labels issue #7 `aicd` and follows the job to its pull request on the fake GitHub (one branch,
//! one commit, one pull request closing the issue, one progress comment edited up to the link);
//! redelivers the same delivery and labels the issue again (still one job, one pull request);
//! refuses badly signed deliveries without storing them (the same delivery id, correctly signed,
//! is then processed); and ends the job when the pull request is merged. Both processes stop with
//! exit code 0 on SIGTERM.
//!
//! The second test covers `/aicd run` comment commands: refused politely for a user who may only
//! read the repository, carried out for one with write access.
//!
//! The binaries must have been built (`cargo build -p aicd-server -p aicd-worker`, or
//! `cargo test --workspace`); see `tests/README.md`.

// The fake GitHub's answers are large `json!` literals.
#![recursion_limit = "256"]

mod support;

use std::time::Duration;

use aicd_github::webhooks::WebhookSecret;
use reqwest::StatusCode;
use serde_json::{Value, json};

use aicd_testkit::github::{APP_ID, FULL_NAME, INSTALLATION, Pull, REPO_ID, TOKEN_PREFIX};
use support::{World, delivery_id, payloads};

const ISSUE_7_BODY: &str =
    "Please add a greeting to the docs.\n\n```aicd:write docs/hello.txt\nHello from AI-CD!\n```\n";
const ISSUE_8_BODY: &str = "And a farewell, please.\n\n```aicd:write docs/bye.txt\nGoodbye from AI-CD!\n```\n";

/// How long a job may take from its webhook to its pull request.
const JOB_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to leave the worker to (wrongly) act on a delivery before checking it did not.
const SETTLE: Duration = Duration::from_millis(1500);

/// Step 1 and 2: links installation 4242 to the organization through the App's setup flow, which
/// registers its repository `acme/widgets`, and adds it again with an
/// `installation_repositories.added` delivery (which changes nothing); returns the repository as
/// the API lists it.
async fn link_installation_and_repository(world: &World) -> Value {
    let org = &world.org;
    // The org admin asks for the install link; GitHub sends the installer back with a code.
    let (status, link) = world.post(&format!("/v1/orgs/{org}/github/install"), &json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "the install link: {link}");
    let install_url = link["install_url"].as_str().expect("an install URL");
    assert!(
        install_url.starts_with(&format!("{}/github-apps/aicd-test/installations/new?state=", world.github.uri())),
        "{install_url}"
    );
    let state = install_url.split("state=").nth(1).expect("a state");
    world.github.add_user("monalisa", 583_231, true, Some("admin"));
    world.github.issue_code("the-code", "monalisa");
    let setup =
        format!("/github/setup?installation_id={INSTALLATION}&setup_action=install&state={state}&code=the-code");
    // This server's landing page links nothing and shows nothing of the redirect...
    let (status, _, landing) = world.browse(&setup).await;
    assert_eq!(status, StatusCode::OK, "the setup landing: {landing}");
    assert_eq!(landing["status"], "not_linked", "{landing}");
    assert!(!landing.to_string().contains("the-code"), "{landing}");
    // ...the web app's setup page posts the redirect's query, signed in as the admin.
    let complete = format!("/v1/orgs/{org}/github/setup");
    let query =
        json!({ "installation_id": INSTALLATION, "setup_action": "install", "state": state, "code": "the-code" });
    let (status, installation) = world.post(&complete, &query).await;
    assert_eq!(status, StatusCode::OK, "linking the installation: {installation}");
    assert_eq!(installation["status"], "linked", "{installation}");
    assert_eq!(installation["installation_id"], INSTALLATION, "{installation}");
    assert_eq!(installation["org_id"], org.as_str(), "{installation}");
    assert_eq!(installation["account_login"], "acme", "{installation}");
    assert_eq!(installation["linked_by"], "github:monalisa", "{installation}");
    assert_eq!(world.github.revoked_user_tokens().len(), 1, "the user token is revoked after the check");
    // The state is used up.
    let (status, again) = world.post(&complete, &query).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a used state: {again}");
    // Linking lists the installation's repositories through the App and registers them.
    assert_eq!(installation["repositories_synced"], 1, "{installation}");
    let (_, repos) = world.get(&format!("/v1/orgs/{org}/repos")).await;
    assert!(repos["items"].as_array().unwrap().iter().any(|r| r["full_name"] == FULL_NAME), "{repos}");

    let added = payloads::installation_repositories_added();
    let status = world.deliver("installation_repositories", &delivery_id(), &added).await;
    assert!(status.is_success(), "installation_repositories.added: {status}");
    let repo = world
        .wait_until("acme/widgets to be registered", Duration::from_secs(10), || async {
            let (status, repos) = world.get(&format!("/v1/orgs/{org}/repos")).await;
            assert_eq!(status, StatusCode::OK, "listing repositories: {repos}");
            repos["items"].as_array()?.iter().find(|r| r["full_name"] == FULL_NAME).cloned()
        })
        .await;
    assert_eq!(
        repo["source"],
        json!({ "kind": "github", "installation_id": INSTALLATION, "repo_id": REPO_ID }),
        "{repo}"
    );
    assert_eq!(repo["default_branch"], "main", "{repo}");
    repo
}

/// The pull requests the fake GitHub has for `branch`.
fn pulls_of(world: &World, branch: &str) -> Vec<Pull> {
    world.github.pulls().into_iter().filter(|p| p.head == branch).collect()
}

/// SIGTERM to both processes; each must exit 0 within 30 s.
async fn stop(world: &World) {
    for process in [&world.processes.worker, &world.processes.server] {
        process.terminate();
    }
    for (name, process) in [("aicd-worker", &world.processes.worker), ("aicd-server", &world.processes.server)] {
        let status = process.wait(Duration::from_secs(30)).await;
        let status = status.unwrap_or_else(|| panic!("{name} did not stop within 30 s of SIGTERM"));
        assert!(status.success(), "{name} exits 0 after SIGTERM: {status}\n{}", process.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labelled_issue_becomes_one_pull_request_and_its_merge_ends_the_job() {
    let world = World::start().await;
    let org = world.org.clone();

    // 1-3. The installation is linked and the repository registered through it.
    let repo = link_installation_and_repository(&world).await;

    // 4. Labelling issue #7 `aicd` starts a job that opens a pull request.
    let labeled = payloads::issue_labeled(7, "Add a greeting", ISSUE_7_BODY);
    let delivery = delivery_id();
    let status = world.deliver("issues", &delivery, &labeled).await;
    assert!(status.is_success(), "issues.labeled: {status}");
    let job = world.wait_for_issue_job(7, "pr_open", JOB_TIMEOUT).await;
    let job_id = job["id"].as_str().expect("a job id").to_owned();
    assert_eq!(job["repo_id"], repo["id"], "{job}");
    assert_eq!(job["trigger"], "label", "{job}");
    assert_eq!(job["created_by"], "github:monalisa", "{job}");
    assert_eq!(job["issue"]["title"], "Add a greeting", "{job}");
    assert_eq!(job["issue"]["body"], ISSUE_7_BODY, "{job}");
    assert_eq!(job["issue"]["url"], "https://github.com/acme/widgets/issues/7", "{job}");
    assert_eq!(job["issue"]["author"], "monalisa", "{job}");
    assert!(job["lease"].is_null(), "{job}");
    let recorded = &job["checkpoints"]["pull_request"];
    let branch = recorded["branch"].as_str().expect("the job records its branch").to_owned();
    assert!(branch.starts_with("aicd/issue-7-"), "{branch}");

    // 5. What the fake GitHub saw: one branch, one commit with the file, one pull request.
    let posts = world.github.pull_request_posts().await;
    assert_eq!(posts.len(), 1, "exactly one POST /repos/acme/widgets/pulls: {posts:#?}");
    let pulls = pulls_of(&world, &branch);
    let [pull] = pulls.as_slice() else { panic!("one pull request for {branch}: {pulls:#?}") };
    assert_eq!((recorded["number"].as_u64(), recorded["url"].as_str()), (Some(pull.number), Some(&*pull.html_url())));
    assert_eq!(pull.base, "main");
    assert!(pull.body.contains("Closes #7"), "the pull request closes the issue: {}", pull.body);
    let refs = world.github.created_refs().await;
    let branch_ref = format!("refs/heads/{branch}");
    assert_eq!(refs.iter().filter(|r| r["ref"] == branch_ref.as_str()).count(), 1, "{refs:#?}");
    assert_eq!(world.github.file(&branch, "docs/hello.txt").as_deref(), Some(&b"Hello from AI-CD!\n"[..]));
    assert_eq!(world.github.file(&branch, "README.md").as_deref(), Some(&b"# Widgets\n"[..]), "the rest is kept");
    assert_eq!(world.github.commits_ahead_of_main(&branch), Some(1), "one commit on the branch");

    // The App authenticated as GitHub requires: an RS256 JWT of App 123456 for installation
    // tokens, each narrowed to the repository, and those tokens for everything else.
    let authorizations = world.github.token_request_authorizations().await;
    assert!(!authorizations.is_empty(), "an installation token was minted");
    let grants = world.github.token_grants();
    let listing = grants.iter().filter(|g| g.repository_ids.is_none()).count();
    assert!(grants.iter().all(|g| !g.permissions.is_empty()), "every token names its permissions: {grants:#?}");
    assert!(listing <= 1, "only the repository listing reaches every repository: {grants:#?}");
    assert!(grants.iter().filter(|g| g.repository_ids.is_some()).all(|g| g.repository_ids == Some(vec![REPO_ID])));
    // No token holds more than one write permission: pushing, the pull request and comments each
    // get their own.
    for grant in &grants {
        let writes = grant.permissions.values().filter(|level| *level == "write").count();
        assert!(writes <= 1, "a token for one thing: {grant:#?}");
    }
    for request in world.github.requests().await {
        let agent = request.headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(agent.starts_with("aicd-test (aicd/"), "the App names itself: {agent}");
    }
    for authorization in &authorizations {
        let jwt = authorization.strip_prefix("Bearer ").expect("a Bearer JWT");
        let claims = support::verify_app_jwt(jwt);
        assert_eq!(claims["iss"], APP_ID.to_string(), "{claims}");
    }
    for request in world.github.requests().await.iter().filter(|r| r.url.path().starts_with("/repos/")) {
        let authorization = request.headers.get("authorization").and_then(|v| v.to_str().ok());
        let token = authorization.and_then(|a| a.strip_prefix("Bearer ")).unwrap_or_default();
        assert!(
            token.starts_with(TOKEN_PREFIX) && world.github.is_minted_token(token),
            "{} {}",
            request.method,
            request.url
        );
    }

    // One progress comment on the issue, edited as the job moved, ending with the link.
    let link = pull.html_url();
    let comment = world
        .wait_until("the progress comment to link the pull request", Duration::from_secs(10), || async {
            let comments = world.github.comments_on(7);
            comments.first().filter(|c| c.body().contains(&link)).cloned()
        })
        .await;
    assert_eq!(world.github.comments_on(7).len(), 1, "one progress comment: {:#?}", world.github.comments_on(7));
    assert!(comment.edits() >= 1, "the progress comment was edited: {comment:#?}");
    assert!(comment.bodies[0].contains(&job_id), "it names the job: {comment:#?}");
    let (_, job) = world.get(&format!("/v1/orgs/{org}/jobs/{job_id}")).await;
    assert_eq!(job["checkpoints"]["progress_comment"], comment.id, "{job}");

    // 6. A redelivery of the same delivery changes nothing...
    let status = world.deliver("issues", &delivery, &labeled).await;
    assert!(status.is_success(), "the redelivery is acknowledged: {status}");
    tokio::time::sleep(SETTLE).await;
    let jobs = world.jobs_of_issue(7).await;
    assert_eq!(jobs.len(), 1, "a redelivery starts nothing: {jobs:#?}");
    assert_eq!(world.github.pull_request_posts().await.len(), 1);

    // ...and neither does labelling again, in a new delivery, an issue whose job is active.
    let status = world.deliver("issues", &delivery_id(), &labeled).await;
    assert!(status.is_success(), "a second label event: {status}");
    tokio::time::sleep(SETTLE).await;
    let jobs = world.jobs_of_issue(7).await;
    assert_eq!(jobs.len(), 1, "an issue with an active job gets no second one: {jobs:#?}");
    assert_eq!((jobs[0]["id"].as_str(), jobs[0]["state"].as_str()), (Some(&*job_id), Some("pr_open")));
    assert_eq!(world.github.pull_request_posts().await.len(), 1);
    assert_eq!(pulls_of(&world, &branch).len(), 1);

    // 7. Deliveries with a wrong, a malformed or no signature are refused and not stored: the
    // same delivery id, correctly signed, is then processed as new.
    let labeled_8 = payloads::issue_labeled(8, "Say goodbye", ISSUE_8_BODY);
    let delivery_8 = delivery_id();
    let body = serde_json::to_vec(&labeled_8).expect("the payload serializes");
    let forged = WebhookSecret::new("not the webhook secret, but long enough").expect("a secret").sign(&body);
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let signed_before_tampering = world.sign(&body);
    for (what, body, signature) in [
        ("a wrong signature", body.clone(), Some(forged.as_str())),
        ("no signature", body.clone(), None),
        ("a malformed signature", body.clone(), Some("sha256=not-hex")),
        ("a body changed after it was signed", tampered, Some(signed_before_tampering.as_str())),
    ] {
        let status = world.deliver_raw("issues", &delivery_8, body, signature).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "a delivery with {what}");
    }
    tokio::time::sleep(SETTLE).await;
    let jobs = world.jobs_of_issue(8).await;
    assert!(jobs.is_empty(), "a refused delivery starts nothing: {jobs:#?}");
    let status = world.deliver("issues", &delivery_8, &labeled_8).await;
    assert!(status.is_success(), "the same delivery, correctly signed, is accepted: {status}");
    let job_8 = world.wait_for_issue_job(8, "pr_open", JOB_TIMEOUT).await;
    let branch_8 = job_8["checkpoints"]["pull_request"]["branch"].as_str().expect("a branch").to_owned();
    assert!(branch_8.starts_with("aicd/issue-8-"), "{branch_8}");
    assert_eq!(pulls_of(&world, &branch_8).len(), 1, "{:#?}", world.github.pulls());
    assert_eq!(world.github.pull_request_posts().await.len(), 2, "one pull request per issue");
    assert_eq!(world.github.file(&branch_8, "docs/bye.txt").as_deref(), Some(&b"Goodbye from AI-CD!\n"[..]));
    assert_eq!(world.github.file(&branch_8, "docs/hello.txt"), None, "issue #8's branch starts at main");

    // 8. Merging the pull request of issue #7 ends its job; issue #8's stays open.
    let status = world.deliver("pull_request", &delivery_id(), &payloads::pull_request_merged(pull)).await;
    assert!(status.is_success(), "pull_request.closed: {status}");
    let merged = world.wait_for_job(&job_id, "merged", Duration::from_secs(15)).await;
    assert_eq!(merged["checkpoints"]["pull_request"]["number"], pull.number, "{merged}");
    let job_8_id = job_8["id"].as_str().expect("a job id");
    let (_, job_8) = world.get(&format!("/v1/orgs/{org}/jobs/{job_8_id}")).await;
    assert_eq!(job_8["state"], "pr_open", "{job_8}");

    assert_eq!(world.github.unknown_requests(), Vec::<String>::new(), "requests the fake GitHub does not know");
    stop(&world).await;
}

/// Step 9 of the plan (comment commands, processed by the worker): a `/aicd run` from a user who
/// may only read the repository gets a polite reply and no job; the same from a user with write
/// access starts one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_command_needs_write_access_to_the_repository() {
    let world = World::start().await;
    link_installation_and_repository(&world).await;
    let title = "Add a greeting";

    // A reader's command: the worker checks the permission and answers on the issue.
    let from_reader = payloads::issue_comment_created(9, title, 3_000_000_001, "octo-reader", "/aicd run");
    let status = world.deliver("issue_comment", &delivery_id(), &from_reader).await;
    assert!(status.is_success(), "issue_comment.created: {status}");
    let reply = world
        .wait_until("a reply to the reader's command", Duration::from_secs(30), || async {
            world.github.comments_on(9).into_iter().next()
        })
        .await;
    assert!(!reply.body().trim().is_empty(), "{reply:#?}");
    eprintln!("the reply to a reader's command: {:?}", reply.body());
    let permission = "/repos/acme/widgets/collaborators/octo-reader/permission";
    assert!(world.github.count("GET", permission).await >= 1, "{}", world.github.describe().await);
    tokio::time::sleep(SETTLE).await;
    let jobs = world.jobs_of_issue(9).await;
    assert!(jobs.is_empty(), "a reader's command starts nothing: {jobs:#?}");
    assert_eq!(world.github.comments_on(9).len(), 1, "one reply: {:#?}", world.github.comments_on(9));

    // An admin's command starts a job, which runs to its pull request.
    let from_admin = payloads::issue_comment_created(9, title, 3_000_000_002, "monalisa", "Looks good.\n\n/aicd run\n");
    let status = world.deliver("issue_comment", &delivery_id(), &from_admin).await;
    assert!(status.is_success(), "issue_comment.created: {status}");
    let job = world.wait_for_issue_job(9, "pr_open", JOB_TIMEOUT).await;
    assert_eq!(job["trigger"], "comment", "{job}");
    assert_eq!(job["created_by"], "github:monalisa", "{job}");
    let branch = job["checkpoints"]["pull_request"]["branch"].as_str().expect("a branch").to_owned();
    assert_eq!(pulls_of(&world, &branch).len(), 1, "{:#?}", world.github.pulls());
    assert_eq!(world.github.file(&branch, "hello.txt").as_deref(), Some(&b"Hello, world!\n"[..]));

    stop(&world).await;
}
