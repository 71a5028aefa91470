//! The comment command processor over a real store (SQLite) and a mock GitHub (wiremock): a
//! command counts only from a user with write access, others get a polite reply; GitHub being
//! unavailable defers the command; a repository the installation lost fails it.

use std::sync::Arc;
use std::time::Duration;

use aicd_core::github::{CommandKind, CommandStatus, NewCommand};
use aicd_core::jobs::{IssueRef, JobFilter, JobState, Trigger};
use aicd_core::repos::{NewRepo, RepoSource, Repository};
use aicd_core::store::{GithubStore, JobStore, SqlStore};
use aicd_core::tenancy::NewOrg;
use aicd_core::{Core, CoreOptions, OrgId};
use aicd_github::commands::{MAX_ATTEMPTS, Processed};
use aicd_github::{AppCredentials, CommandProcessor, InstallationTokens};
use aicd_testkit::TestSqlite;
use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const INSTALLATION: i64 = 42;
const REPO_PATH: &str = "/repos/octo/hello";

fn private_key() -> &'static str {
    &aicd_testkit::rsa_key_pair().private_pem
}

struct Setup {
    github: MockServer,
    core: Core,
    store: Arc<SqlStore>,
    processor: CommandProcessor,
    org: OrgId,
    repo: Repository,
    _db: TestSqlite,
}

async fn setup() -> Setup {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let github = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/app/installations/{INSTALLATION}/access_tokens")))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "token": "ghs_16C7e42F292c6912E7710c838347Ae178B4a",
            "expires_at": (Utc::now() + TimeDelta::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "permissions": { "issues": "write", "metadata": "read" },
            "repository_selection": "selected"
        })))
        .mount(&github)
        .await;
    let db = TestSqlite::new();
    let store = Arc::new(SqlStore::sqlite(db.path()).await.unwrap());
    let core = Core::new(store.clone(), CoreOptions::default());
    let (org, _, secret) =
        core.bootstrap_org(NewOrg { name: "Octo".into(), max_concurrent_jobs: None, settings: None }).await.unwrap();
    let admin = core.authenticate_api_key(&secret).await.unwrap();
    core.link_installation(&admin, org.id, INSTALLATION, Some("octo".into())).await.unwrap();
    let repo = core
        .create_repo(
            &admin,
            org.id,
            NewRepo {
                full_name: "octo/hello".into(),
                source: RepoSource::Github { installation_id: INSTALLATION, repo_id: 7 },
                default_branch: None,
                settings: None,
            },
        )
        .await
        .unwrap();
    let tokens = InstallationTokens::new(AppCredentials::new(1, private_key()).unwrap(), &github.uri()).unwrap();
    let processor = CommandProcessor::new(core.clone(), tokens, "test-worker").with_lease(Duration::ZERO);
    Setup { github, core, store, processor, org: org.id, repo, _db: db }
}

impl Setup {
    async fn command(&self, kind: CommandKind, login: &str, comment_id: i64) {
        let issue = IssueRef {
            number: None,
            title: "Add a greeting".into(),
            body: "Please.".into(),
            url: Some("https://github.com/octo/hello/issues/7".into()),
            author: Some("monalisa".into()),
        };
        let command = NewCommand {
            repo_id: self.repo.id,
            issue_number: 7,
            command: kind,
            login: login.into(),
            comment_id,
            issue: Some(issue),
        };
        self.core.github_intake().enqueue_command(self.org, command).await.unwrap();
    }

    async fn permission(&self, login: &str, permission: &str) {
        Mock::given(method("GET"))
            .and(path(format!("{REPO_PATH}/collaborators/{login}/permission")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "permission": permission,
                "role_name": permission,
                "user": { "login": login, "id": 1, "type": "User", "site_admin": false }
            })))
            .mount(&self.github)
            .await;
    }

    async fn replies(&self) -> Vec<String> {
        let requests = self.github.received_requests().await.unwrap_or_default();
        requests
            .iter()
            .filter(|r| r.method.as_str() == "POST" && r.url.path() == format!("{REPO_PATH}/issues/7/comments"))
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["body"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn finished(&self) -> aicd_core::github::Command {
        match self.processor.process_next().await.unwrap() {
            Some(Processed::Finished(command)) => command,
            other => panic!("expected a finished command, got {other:?}"),
        }
    }

    async fn jobs(&self) -> Vec<aicd_core::jobs::Job> {
        self.store.list_jobs(self.org, JobFilter::default()).await.unwrap().items
    }
}

async fn mount_comment(github: &MockServer) {
    Mock::given(method("POST"))
        .and(path(format!("{REPO_PATH}/issues/7/comments")))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({ "id": 1001, "body": "..." })))
        .mount(github)
        .await;
}

#[tokio::test]
async fn a_command_without_write_access_is_refused_politely() {
    let s = setup().await;
    s.permission("visitor", "read").await;
    mount_comment(&s.github).await;
    s.command(CommandKind::Run, "visitor", 1).await;
    let command = s.finished().await;
    assert_eq!(command.status, CommandStatus::Refused);
    assert!(s.jobs().await.is_empty(), "no job for a reader");
    let replies = s.replies().await;
    assert_eq!(replies.len(), 1);
    assert!(replies[0].starts_with("@visitor, thanks, but only people with write access"), "{}", replies[0]);
    assert!(s.processor.process_next().await.unwrap().is_none(), "nothing left to do");
}

#[tokio::test]
async fn commands_from_writers_are_carried_out() {
    let s = setup().await;
    s.permission("maintainer", "maintain").await;
    mount_comment(&s.github).await;
    s.command(CommandKind::Run, "maintainer", 1).await;
    assert_eq!(s.finished().await.status, CommandStatus::Done);
    let jobs = s.jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].trigger, jobs[0].state, jobs[0].created_by.as_str()),
        (Trigger::Comment, JobState::Queued, "github:maintainer")
    );
    assert!(s.replies().await.is_empty(), "the job's own progress comment speaks for it");

    // A second run while one is active: no second job, and a note saying so.
    s.command(CommandKind::Run, "maintainer", 2).await;
    assert_eq!(s.finished().await.status, CommandStatus::Done);
    assert_eq!(s.jobs().await.len(), 1);
    assert!(s.replies().await[0].contains("already has an AI-CD job in progress"));

    // Cancel, then retry.
    s.command(CommandKind::Cancel, "maintainer", 3).await;
    assert_eq!(s.finished().await.status, CommandStatus::Done);
    assert_eq!(s.jobs().await[0].state, JobState::Cancelled);
    s.command(CommandKind::Retry, "maintainer", 4).await;
    assert_eq!(s.finished().await.status, CommandStatus::Done);
    let states: Vec<JobState> = s.jobs().await.iter().map(|j| j.state).collect();
    assert_eq!(states.len(), 2);
    assert!(states.contains(&JobState::Queued) && states.contains(&JobState::Cancelled), "{states:?}");
}

#[tokio::test]
async fn github_unavailable_defers_and_a_lost_repository_fails() {
    let s = setup().await;
    Mock::given(method("GET"))
        .and(path(format!("{REPO_PATH}/collaborators/busy/permission")))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-reset", (Utc::now().timestamp() + 60).to_string())
                .set_body_json(json!({ "message": "API rate limit exceeded", "documentation_url": "https://docs.github.com/rest" })),
        )
        .mount(&s.github)
        .await;
    s.command(CommandKind::Run, "busy", 1).await;
    for attempt in 1..MAX_ATTEMPTS {
        match s.processor.process_next().await.unwrap() {
            Some(Processed::Deferred { command, error }) => {
                assert_eq!(command.attempts, attempt);
                assert!(error.contains("unavailable"), "{error}");
            }
            other => panic!("attempt {attempt}: expected a deferral, got {other:?}"),
        }
    }
    // The last attempt gives up for good.
    let command = s.finished().await;
    assert_eq!((command.status, command.attempts), (CommandStatus::Failed, MAX_ATTEMPTS));
    assert!(s.jobs().await.is_empty());

    // The installation no longer reaches the repository: failed at once, saying why.
    Mock::given(method("GET"))
        .and(path(format!("{REPO_PATH}/collaborators/gone/permission")))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({ "message": "Not Found" })))
        .mount(&s.github)
        .await;
    Mock::given(method("GET"))
        .and(path(REPO_PATH))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({ "message": "Not Found" })))
        .mount(&s.github)
        .await;
    s.command(CommandKind::Run, "gone", 2).await;
    let command = s.finished().await;
    assert_eq!(command.status, CommandStatus::Failed);
    assert!(command.error.as_deref().unwrap_or_default().contains("could not carry out"), "{command:?}");
    assert!(s.store.find_installation(INSTALLATION).await.unwrap().is_some());
}
