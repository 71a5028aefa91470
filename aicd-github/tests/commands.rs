//! The command processor over a real store (SQLite) and the fake GitHub: a comment command, a
//! label or an assignment counts only from people with write access (and, for an issue opened
//! with the label, from an author with write access too); others get a polite reply; bots count
//! only where the repository allows them; GitHub being unavailable defers the command; a
//! repository whose installation was unlinked fails it without asking GitHub for a token.

use std::sync::Arc;
use std::time::Duration;

use aicd_core::github::{
    CommandKind, CommandSource, CommandStatus, GithubRepoId, GithubRepoInfo, InstallationId, NewCommand,
};
use aicd_core::jobs::{IssueRef, JobFilter, JobState, Trigger};
use aicd_core::repos::{RepoPatch, Repository};
use aicd_core::store::{JobStore, SqlStore};
use aicd_core::tenancy::{Actor, NewOrg};
use aicd_core::{Core, CoreOptions, OrgId};
use aicd_github::commands::{MAX_ATTEMPTS, Processed};
use aicd_github::{AppCredentials, CommandProcessor, InstallationTokens};
use aicd_testkit::TestSqlite;
use aicd_testkit::github::{APP_ID, FULL_NAME, FakeGitHub, INSTALLATION, REPO_ID};

struct Setup {
    github: FakeGitHub,
    core: Core,
    store: Arc<SqlStore>,
    processor: CommandProcessor,
    org: OrgId,
    admin: Actor,
    repo: Repository,
    _db: TestSqlite,
}

async fn setup() -> Setup {
    setup_with(CoreOptions::default()).await
}

async fn setup_with(options: CoreOptions) -> Setup {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let keys = aicd_testkit::rsa_key_pair();
    let github = FakeGitHub::start(&keys.public_pem).await;
    let db = TestSqlite::new();
    let store = Arc::new(SqlStore::sqlite(db.path()).await.unwrap());
    let core = Core::new(store.clone(), options);
    let (org, _, secret) =
        core.bootstrap_org(NewOrg { name: "Acme".into(), max_concurrent_jobs: None, settings: None }).await.unwrap();
    let admin = core.authenticate_api_key(&secret).await.unwrap();
    let intake = core.github_intake();
    let installation = InstallationId::from_u64(INSTALLATION).unwrap();
    intake.link_installation(org.id, installation, Some("acme".into()), "operator").await.unwrap();
    let info = GithubRepoInfo {
        repo_id: GithubRepoId::from_u64(REPO_ID).unwrap(),
        full_name: FULL_NAME.into(),
        default_branch: None,
    };
    let repo = intake.sync_github_repos(org.id, installation, &[info], &[]).await.unwrap().upserted.remove(0);
    let tokens =
        InstallationTokens::new(AppCredentials::new(APP_ID, &keys.private_pem).unwrap(), &github.uri()).unwrap();
    let processor = CommandProcessor::new(core.clone(), tokens, "test-worker").with_lease(Duration::ZERO);
    Setup { github, core, store, processor, org: org.id, admin, repo, _db: db }
}

fn issue() -> IssueRef {
    IssueRef {
        number: None,
        title: "Add a greeting".into(),
        body: "Please.".into(),
        url: Some("https://github.com/acme/widgets/issues/7".into()),
        author: Some("monalisa".into()),
    }
}

impl Setup {
    async fn record(&self, kind: CommandKind, source: CommandSource, login: &str, author: Option<&str>) {
        let command = NewCommand {
            repo_id: self.repo.id,
            issue_number: 7,
            command: kind,
            source,
            login: login.into(),
            author_login: author.map(str::to_owned),
            issue: Some(issue()),
        };
        self.core.github_intake().enqueue_command(self.org, command).await.unwrap();
    }

    async fn command(&self, kind: CommandKind, login: &str, comment_id: i64) {
        self.record(kind, CommandSource::Comment { comment_id }, login, None).await;
    }

    async fn label(&self, login: &str, author: Option<&str>, delivery: &str) {
        self.record(CommandKind::Run, CommandSource::Label { delivery_id: delivery.into() }, login, author).await;
    }

    fn replies(&self) -> Vec<String> {
        self.github.comments_on(7).iter().map(|c| c.body().to_owned()).collect()
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

#[tokio::test]
async fn a_command_without_write_access_is_refused_politely() {
    let s = setup().await;
    s.github.set_permission("visitor", "read");
    s.command(CommandKind::Run, "visitor", 1).await;
    let command = s.finished().await;
    assert_eq!(command.status, CommandStatus::Refused);
    assert_eq!(command.error.as_deref(), Some("`visitor` has no write access"));
    assert!(s.jobs().await.is_empty(), "no job for a reader");
    let replies = s.replies();
    assert_eq!(replies.len(), 1);
    assert!(replies[0].starts_with("@visitor, thanks, but only people with write access"), "{}", replies[0]);
    assert!(s.processor.process_next().await.unwrap().is_none(), "nothing left to do");
}

#[tokio::test]
async fn commands_from_writers_are_carried_out() {
    let s = setup().await;
    s.github.set_permission("maintainer", "maintain");
    s.command(CommandKind::Run, "maintainer", 1).await;
    assert_eq!(s.finished().await.status, CommandStatus::Done);
    let jobs = s.jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].trigger, jobs[0].state, jobs[0].created_by.as_str()),
        (Trigger::Comment, JobState::Queued, "github:maintainer")
    );
    assert!(s.replies().is_empty(), "the job's own progress comment speaks for it");

    // A second run while one is active: no second job, and a note saying so.
    s.command(CommandKind::Run, "maintainer", 2).await;
    assert_eq!(s.finished().await.status, CommandStatus::Done);
    assert_eq!(s.jobs().await.len(), 1);
    assert!(s.replies()[0].contains("already has an AI-CD job in progress"));

    // Cancel, then retry.
    s.command(CommandKind::Cancel, "maintainer", 3).await;
    assert_eq!(s.finished().await.status, CommandStatus::Done);
    assert_eq!(s.jobs().await[0].state, JobState::Cancelled);
    s.command(CommandKind::Retry, "maintainer", 4).await;
    assert_eq!(s.finished().await.status, CommandStatus::Done);
    let states: Vec<JobState> = s.jobs().await.iter().map(|j| j.state).collect();
    assert_eq!(states.len(), 2);
    assert!(states.contains(&JobState::Queued) && states.contains(&JobState::Cancelled), "{states:?}");

    // The permission was asked with a token narrowed to the repository, for issues and metadata.
    let grants = s.github.token_grants();
    assert!(!grants.is_empty());
    for grant in grants {
        assert_eq!(grant.repository_ids, Some(vec![REPO_ID]));
        assert_eq!(grant.permissions.get("issues").map(String::as_str), Some("write"));
        assert!(!grant.permissions.contains_key("contents"), "no access to the code: {grant:?}");
    }
}

#[tokio::test]
async fn a_label_from_a_reader_starts_nothing_and_from_a_writer_one_job() {
    let s = setup().await;
    s.github.set_permission("drive-by", "read");
    s.github.set_permission("triager", "triage");
    s.github.set_permission("committer", "write");

    s.label("drive-by", None, "d-1").await;
    assert_eq!(s.finished().await.status, CommandStatus::Refused);
    s.label("triager", None, "d-2").await;
    assert_eq!(s.finished().await.status, CommandStatus::Refused, "triage cannot push, so it cannot start AI-CD");
    assert!(s.jobs().await.is_empty());
    let replies = s.replies();
    assert_eq!(replies.len(), 2, "{replies:#?}");
    assert!(
        replies[0]
            .starts_with("@drive-by, thanks, but only people with write access to `acme/widgets` can start AI-CD"),
        "{}",
        replies[0]
    );

    s.label("committer", None, "d-3").await;
    assert_eq!(s.finished().await.status, CommandStatus::Done);
    let jobs = s.jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!((jobs[0].trigger, jobs[0].created_by.as_str()), (Trigger::Label, "github:committer"));
    // The same label delivery again is the same command.
    s.label("committer", None, "d-3").await;
    assert!(s.processor.process_next().await.unwrap().is_none());
}

#[tokio::test]
async fn an_issue_opened_with_the_label_needs_a_trusted_author() {
    let s = setup().await;
    s.github.set_permission("committer", "write");
    s.github.set_permission("reporter", "read");
    // An issue template put the label on a reader's issue: the author is checked too.
    s.label("committer", Some("reporter"), "d-1").await;
    let command = s.finished().await;
    assert_eq!(command.status, CommandStatus::Refused);
    assert!(s.jobs().await.is_empty());
    assert!(s.replies()[0].starts_with("@reporter, thanks for the issue."), "{}", s.replies()[0]);
    s.label("committer", Some("monalisa"), "d-2").await;
    assert_eq!(s.finished().await.status, CommandStatus::Done);
    assert_eq!(s.jobs().await.len(), 1);
}

#[tokio::test]
async fn bots_count_only_where_the_repository_allows_them() {
    let s = setup().await;
    s.label("labeler[bot]", None, "d-1").await;
    assert_eq!(s.finished().await.status, CommandStatus::Refused);
    assert!(s.jobs().await.is_empty());
    assert!(s.replies().is_empty(), "bots are not answered");
    let permission_asked = s.github.count("GET", "/repos/acme/widgets/collaborators/labeler%5Bbot%5D/permission").await;
    assert_eq!(permission_asked, 0);

    let allow = RepoPatch { settings: Some(serde_json::json!({ "triggers": { "bots": true } })), ..Default::default() };
    s.core.update_repo(&s.admin, s.org, s.repo.id, allow).await.unwrap();
    s.label("labeler[bot]", None, "d-2").await;
    assert_eq!(s.finished().await.status, CommandStatus::Done);
    assert_eq!(s.jobs().await.len(), 1);
}

#[tokio::test]
async fn github_unavailable_defers_and_an_unlinked_installation_fails_without_a_token() {
    let s = setup().await;
    s.github.fail("/repos/acme/widgets/collaborators", 503);
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
    s.github.recover();

    // Unlinked: the command fails, saying why, and no token is asked for.
    s.command(CommandKind::Run, "monalisa", 2).await;
    s.core.unlink_installation(&s.admin, s.org, InstallationId::from_u64(INSTALLATION).unwrap()).await.unwrap();
    let before = s.github.token_requests().await;
    let command = s.finished().await;
    assert_eq!(command.status, CommandStatus::Failed);
    let error = command.error.as_deref().unwrap_or_default();
    assert!(error.contains("detached"), "{command:?}");
    assert_eq!(s.github.token_requests().await, before, "no token for an unlinked installation");
    assert!(s.jobs().await.is_empty());
}

#[tokio::test]
async fn a_trigger_beyond_the_free_allowance_is_refused_with_one_reply_and_no_job() {
    let billing = aicd_core::billing::BillingOptions { free_jobs_per_month: Some(1), ..Default::default() };
    let s = setup_with(CoreOptions { billing: Some(billing), ..CoreOptions::default() }).await;
    s.github.set_permission("monalisa", "write");
    s.label("monalisa", None, "delivery-1").await;
    assert_eq!(s.finished().await.status, CommandStatus::Done);
    assert_eq!(s.jobs().await.len(), 1, "the allowance's one job");
    let first = s.jobs().await.remove(0);
    s.core.cancel_job(&s.admin, s.org, first.id).await.unwrap();

    // The allowance is used up: the next trigger is refused once, with the reason, and no job.
    s.label("monalisa", None, "delivery-2").await;
    let refused = s.finished().await;
    assert_eq!((refused.status, refused.error.as_deref()), (CommandStatus::Refused, Some("quota_exceeded")));
    assert_eq!(s.jobs().await.len(), 1, "nothing was started");
    let replies = s.replies();
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(replies[0].starts_with("@monalisa, AI-CD did not start: the free allowance of 1 job"), "{}", replies[0]);
    assert!(replies[0].contains(&format!("/v1/orgs/{}/billing", s.org)), "{}", replies[0]);
    // The same delivery again is the same command: no second reply.
    s.label("monalisa", None, "delivery-2").await;
    assert!(s.processor.process_next().await.unwrap().is_none(), "nothing left to do");
    assert_eq!(s.replies().len(), 1);
}
