//! Access follows the link, and GitHub's limits are the forge's: the embedded default (SQLite,
//! the worker in-process) as a GitHub App on the fake GitHub, which enforces GitHub's rules.
//! After an installation is unlinked, jobs on its repositories fail without asking GitHub for a
//! token and their diffs are refused; linked again to another organization, the first stays
//! refused while the second works. An issue title at GitHub's limit still gets its pull request,
//! and a publish that fails for good cleans up the branch it pushed.

mod support;

use std::time::Duration;

use aicd_core::OrgId;
use aicd_core::github::{GithubRepoId, GithubRepoInfo, InstallationId};
use aicd_testkit::github::{APP_ID, APP_SLUG, FULL_NAME, FakeGitHub, INSTALLATION, MAX_TITLE_CHARS, REPO_ID};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::TestServer;

struct World {
    server: TestServer,
    github: FakeGitHub,
}

async fn world() -> World {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let keys = aicd_testkit::rsa_key_pair();
    let github = FakeGitHub::start(&keys.public_pem).await;
    let uri = github.uri();
    let app_id = APP_ID.to_string();
    let server = TestServer::sqlite(&[
        ("AICD_GITHUB_APP_ID", app_id.as_str()),
        ("AICD_GITHUB_PRIVATE_KEY", keys.private_pem.as_str()),
        ("AICD_GITHUB_API_URL", uri.as_str()),
        ("AICD_GITHUB_APP_SLUG", APP_SLUG),
        ("AICD_RATE_LIMIT_PER_MINUTE", "100000"),
        ("AICD_IP_RATE_LIMIT_PER_MINUTE", "100000"),
    ])
    .await;
    World { server, github }
}

/// An organization with installation 4242 linked (as an operator would) and `acme/widgets`
/// registered through it: (org, developer key, admin key, repository id).
async fn linked(w: &World, name: &str) -> (OrgId, String, String, String) {
    let (org, _, developer, admin) = w.server.org_with_keys(name).await;
    let intake = w.server.core.github_intake();
    let installation = InstallationId::from_u64(INSTALLATION).unwrap();
    intake.link_installation(org.id, installation, Some("acme".into()), "operator").await.unwrap();
    let info = GithubRepoInfo {
        repo_id: GithubRepoId::from_u64(REPO_ID).unwrap(),
        full_name: FULL_NAME.into(),
        default_branch: None,
    };
    let repo = intake.sync_github_repos(org.id, installation, &[info], &[]).await.unwrap().upserted.remove(0);
    (org.id, developer, admin, repo.id.to_string())
}

impl World {
    async fn job(&self, org: OrgId, key: &str, repo: &str, number: u64, title: &str) -> String {
        let body = format!("```aicd:write notes/{number}.md\nIssue {number}\n```");
        let issue = json!({ "number": number, "title": title, "body": body });
        let r =
            self.server.post(&format!("/v1/orgs/{org}/jobs"), key, json!({ "repo_id": repo, "issue": issue })).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.body["id"].as_str().unwrap().to_owned()
    }

    /// Waits for job `id` to end (PR_OPEN or a terminal state) and returns it.
    async fn settled(&self, org: OrgId, key: &str, id: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let job = self.server.get(&format!("/v1/orgs/{org}/jobs/{id}"), key).await.body;
            if ["pr_open", "failed", "cancelled"].contains(&job["state"].as_str().unwrap_or_default()) {
                return job;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job {id} did not settle: {job}\n{}",
                self.github.describe().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_unlinking_nothing_reaches_github_and_a_relink_elsewhere_leaves_the_first_org_refused() {
    let w = world().await;
    let (a, a_dev, a_admin, a_repo) = linked(&w, "Acme").await;
    let first = w.job(a, &a_dev, &a_repo, 7, "Add notes").await;
    let job = w.settled(a, &a_dev, &first).await;
    assert_eq!(job["state"], "pr_open", "{job}");
    let diff = w.server.get(&format!("/v1/orgs/{a}/jobs/{first}/diff"), &a_dev).await;
    assert_eq!(diff.status, StatusCode::OK, "{}", diff.text);

    // Unlinked: the repository is detached, and nothing of A reaches GitHub any more.
    let r = w
        .server
        .call(Method::DELETE, &format!("/v1/orgs/{a}/github/installations/{INSTALLATION}"), Some(&a_admin), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let repo = w.server.get(&format!("/v1/orgs/{a}/repos/{a_repo}"), &a_dev).await;
    assert!(repo.body["detached_at"].is_string(), "{}", repo.text);
    let minted = w.github.token_requests().await;
    let requests = w.github.requests().await.len();
    let refused = w.job(a, &a_dev, &a_repo, 8, "More notes").await;
    let job = w.settled(a, &a_dev, &refused).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert!(job["failure_reason"].as_str().unwrap().contains("detached"), "{job}");
    assert_eq!(w.github.token_requests().await, minted, "no token was asked for");
    assert_eq!(w.github.requests().await.len(), requests, "nothing reached GitHub");
    let diff = w.server.get(&format!("/v1/orgs/{a}/jobs/{first}/diff"), &a_dev).await;
    assert_eq!((diff.status, diff.error_code()), (StatusCode::CONFLICT, "conflict"), "{}", diff.text);

    // Linked to B instead: B's jobs work, A's stay refused.
    let (b, b_dev, _, b_repo) = linked(&w, "Globex").await;
    let b_job = w.job(b, &b_dev, &b_repo, 9, "Notes for B").await;
    assert_eq!(w.settled(b, &b_dev, &b_job).await["state"], "pr_open");
    let minted = w.github.token_requests().await;
    let again = w.job(a, &a_dev, &a_repo, 10, "Still A").await;
    let job = w.settled(a, &a_dev, &again).await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(w.github.token_requests().await, minted, "still no token for A");
    let diff = w.server.get(&format!("/v1/orgs/{a}/jobs/{first}/diff"), &a_dev).await;
    assert_eq!(diff.status, StatusCode::CONFLICT, "{}", diff.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issue_title_at_githubs_limit_still_gets_its_pull_request() {
    let w = world().await;
    let (org, dev, _, repo) = linked(&w, "Acme").await;
    let title = format!("Make {}", "the widgets shine ".repeat(20)).chars().take(MAX_TITLE_CHARS).collect::<String>();
    assert_eq!(title.chars().count(), 256);
    let id = w.job(org, &dev, &repo, 7, &title).await;
    let job = w.settled(org, &dev, &id).await;
    assert_eq!(job["state"], "pr_open", "{job}");
    let pulls = w.github.pulls();
    let [pull] = pulls.as_slice() else { panic!("one pull request: {pulls:#?}") };
    assert_eq!(pull.title.chars().count(), MAX_TITLE_CHARS, "{}", pull.title);
    assert!(pull.title.ends_with("… (#7)"), "shortened on a character boundary, the number kept: {}", pull.title);
    assert!(pull.body.chars().count() <= aicd_testkit::github::MAX_BODY_CHARS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_that_fails_for_good_deletes_the_branch_it_pushed() {
    let w = world().await;
    let (org, dev, _, repo) = linked(&w, "Acme").await;
    // GitHub refuses the pull request for good (as for a repository whose pull requests are off).
    w.github.fail("/repos/acme/widgets/pulls", 422);
    let id = w.job(org, &dev, &repo, 7, "Add notes").await;
    let job = w.settled(org, &dev, &id).await;
    assert_eq!(job["state"], "failed", "{job}");
    let reason = job["failure_reason"].as_str().unwrap();
    assert!(reason.contains("the branch `aicd/issue-7-") && reason.contains("was deleted"), "{reason}");
    let created = w.github.created_refs().await;
    assert_eq!(created.len(), 1, "the branch had been pushed: {created:#?}");
    let branches: Vec<String> = w.github.branches().into_iter().map(|(b, _)| b).collect();
    assert_eq!(branches, ["main"], "and is gone again");
}
