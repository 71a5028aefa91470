//! The GitHub integration's data: installations, repositories that follow them, idempotent issue
//! triggers, comment commands and closed pull requests.

use aicd_core::deliveries::{DeliveryClaim, DeliveryStatus, NewDelivery};
use aicd_core::github::{
    CommandKind, CommandOutcome, CommandSource, CommandStatus, GithubIntake, GithubRepoId, GithubRepoInfo,
    InstallationId, NewCommand, StartOutcome, TriggerSettings,
};
use aicd_core::jobs::{EventKind, Fence, IssueRef, Job, JobFilter, JobState, JobUpdate, PullRequestRef, Trigger};
use aicd_core::repos::{NewRepo, RepoPatch, RepoSource, Repository};
use aicd_core::store::{DispatchStore, GithubStore, JobStore, RepoStore};
use aicd_core::tenancy::{Actor, OrgPatch, Role};
use aicd_core::{Error, JobId, OrgId, RepoId};
use chrono::Duration;

use crate::support::Harness;

fn issue(number: u64) -> IssueRef {
    IssueRef {
        number: Some(number),
        title: format!("Issue {number}"),
        body: "Please fix it.".into(),
        url: Some(format!("https://github.com/acme/app/issues/{number}")),
        author: Some("reporter".into()),
    }
}

/// Installation `n`.
fn inst(n: i64) -> InstallationId {
    InstallationId::new(n).unwrap()
}

/// GitHub repository `n`.
fn gh(n: i64) -> GithubRepoId {
    GithubRepoId::new(n).unwrap()
}

fn repo_info(id: i64, name: &str) -> GithubRepoInfo {
    GithubRepoInfo { repo_id: gh(id), full_name: name.into(), default_branch: None }
}

/// Links `installation` to `org` as an operator would (after the setup flow's proof).
async fn link(h: &Harness, org: OrgId, installation: i64, login: Option<&str>) -> aicd_core::github::Installation {
    h.core
        .github_intake()
        .link_installation(org, inst(installation), login.map(str::to_owned), "operator")
        .await
        .unwrap()
}

/// An org that linked `installation` and has its repository `acme/app` (GitHub id 1000 + installation).
async fn linked_org(h: &Harness, name: &str, installation: i64) -> (OrgId, Actor, Repository) {
    let (org, _, admin) = h.org_with_admin(name).await;
    link(h, org.id, installation, Some(&name.to_lowercase())).await;
    let full_name = format!("{}/app", name.to_lowercase());
    let sync = h
        .core
        .github_intake()
        .sync_github_repos(org.id, inst(installation), &[repo_info(1000 + installation, &full_name)], &[])
        .await
        .unwrap();
    (org.id, admin, sync.upserted[0].clone())
}

fn run_command(repo: RepoId, number: u64, comment_id: i64, login: &str) -> NewCommand {
    NewCommand {
        repo_id: repo,
        issue_number: number,
        command: CommandKind::Run,
        source: CommandSource::Comment { comment_id },
        login: login.into(),
        author_login: None,
        issue: Some(issue(number)),
    }
}

fn command(kind: CommandKind, repo: RepoId, number: u64, comment_id: i64) -> NewCommand {
    NewCommand { command: kind, issue: None, ..run_command(repo, number, comment_id, "alice") }
}

/// Drives a job (the only runnable one) to PR_OPEN with pull request `pr`.
async fn open_pull_request(h: &Harness, org: OrgId, job: JobId, pr: u64) -> Job {
    let mut current = h.store.claim_next("w1", Duration::seconds(60)).await.unwrap().expect("the job is claimed");
    assert_eq!(current.id, job);
    for state in [JobState::Planning, JobState::Coding, JobState::Reviewing, JobState::PrOpen] {
        let fence = Fence { worker: "w1".into(), epoch: current.epoch, state: current.state };
        let pull_request = (state == JobState::PrOpen).then(|| PullRequestRef {
            number: pr,
            url: format!("https://github.com/acme/app/pull/{pr}"),
            branch: format!("aicd/{pr}"),
        });
        let update = JobUpdate { state: Some(state), pull_request, ..Default::default() };
        current = h.store.update_job(org, job, &fence, update).await.unwrap().0;
    }
    current
}

fn created(outcome: StartOutcome) -> Job {
    match outcome {
        StartOutcome::Created(job) => job,
        other => panic!("expected a new job, got {other:?}"),
    }
}

fn already_active(outcome: StartOutcome) -> Job {
    match outcome {
        StartOutcome::AlreadyActive(job) => job,
        other => panic!("expected the active job, got {other:?}"),
    }
}

pub(crate) async fn installations_are_linked_listed_and_unlinked(h: &Harness) {
    let (org, _, admin) = h.org_with_admin("Acme").await;
    let c = &h.core;
    let intake = c.github_intake();
    let linked = intake.link_installation(org.id, inst(42), Some("acme".into()), "github:mona").await.unwrap();
    assert_eq!((linked.installation_id, linked.org_id), (inst(42), org.id));
    assert_eq!((linked.account_login.as_deref(), linked.suspended), (Some("acme"), false));
    assert_eq!(linked.linked_by.as_deref(), Some("github:mona"));

    // Linking again is idempotent: the same link, the login refreshed only when given.
    let again = intake.link_installation(org.id, inst(42), None, "operator").await.unwrap();
    assert_eq!((again.created_at, again.account_login.as_deref()), (linked.created_at, Some("acme")));
    assert_eq!(again.linked_by.as_deref(), Some("operator"));
    let renamed = intake.link_installation(org.id, inst(42), Some("acme-inc".into()), "operator").await.unwrap();
    assert_eq!(renamed.account_login.as_deref(), Some("acme-inc"));
    link(h, org.id, 7, None).await;
    let listed: Vec<_> =
        c.list_installations(&admin, org.id).await.unwrap().iter().map(|i| i.installation_id).collect();
    assert_eq!(listed, [inst(7), inst(42)]);
    let bad_login = intake.link_installation(org.id, inst(44), Some("a b".into()), "operator").await;
    assert!(matches!(bad_login, Err(Error::InvalidInput(_))), "{bad_login:?}");

    // Only an org_admin unlinks; any member lists.
    let dev = h.user("dev").await;
    c.add_member(&admin, org.id, dev, Role::Developer).await.unwrap();
    let dev = c.user_actor(dev, org.id).await.unwrap();
    assert!(matches!(c.unlink_installation(&dev, org.id, inst(42)).await, Err(Error::Forbidden { .. })));
    assert_eq!(c.list_installations(&dev, org.id).await.unwrap().len(), 2);

    c.unlink_installation(&admin, org.id, inst(42)).await.unwrap();
    let listed: Vec<_> =
        c.list_installations(&admin, org.id).await.unwrap().iter().map(|i| i.installation_id).collect();
    assert_eq!(listed, [inst(7)]);
    let gone = c.unlink_installation(&admin, org.id, inst(42)).await;
    assert!(matches!(gone, Err(Error::NotFound { .. })), "{gone:?}");
}

pub(crate) async fn an_install_state_is_used_once_by_an_admin_of_its_org(h: &Harness) {
    let (org, admin_id, admin) = h.org_with_admin("Acme").await;
    let (other, _, other_admin) = h.org_with_admin("Globex").await;
    let c = &h.core;
    let hash = |n: u8| vec![n; 32];
    let later = chrono::Utc::now() + Duration::minutes(30);
    let not_found = |r: Result<(), Error>| matches!(r, Err(Error::NotFound { .. }));

    let state = c.start_github_install(&admin, org.id, hash(1), later).await.unwrap();
    assert_eq!((state.org_id, state.created_by.as_str()), (org.id, format!("user:{admin_id}").as_str()));
    c.check_github_install(&admin, org.id, &hash(1)).await.unwrap();
    // Only in its own org, and only by whoever started it: another admin of the org cannot use it.
    assert!(not_found(c.check_github_install(&other_admin, other.id, &hash(1)).await));
    let second = h.user("second-admin").await;
    c.add_member(&admin, org.id, second, Role::OrgAdmin).await.unwrap();
    let second = c.user_actor(second, org.id).await.unwrap();
    assert!(not_found(c.check_github_install(&second, org.id, &hash(1)).await));
    let stolen = c.complete_github_install(&second, org.id, &hash(1), inst(5), None, "github:mallory").await;
    assert!(matches!(stolen, Err(Error::NotFound { .. })), "{stolen:?}");
    assert!(c.list_installations(&admin, org.id).await.unwrap().is_empty(), "nothing was linked");

    // Used once: the link and the use happen together.
    let acme = Some("acme".to_owned());
    let linked = c.complete_github_install(&admin, org.id, &hash(1), inst(5), acme, "github:octocat").await.unwrap();
    assert_eq!((linked.org_id, linked.linked_by.as_deref()), (org.id, Some("github:octocat")));
    assert!(not_found(c.check_github_install(&admin, org.id, &hash(1)).await));
    let again = c.complete_github_install(&admin, org.id, &hash(1), inst(6), None, "github:octocat").await;
    assert!(matches!(again, Err(Error::NotFound { .. })), "{again:?}");
    assert!(not_found(c.check_github_install(&admin, org.id, &hash(9)).await));

    // An installation linked elsewhere is a conflict, and leaves the state usable.
    c.start_github_install(&other_admin, other.id, hash(8), later).await.unwrap();
    let taken = c.complete_github_install(&other_admin, other.id, &hash(8), inst(5), None, "github:x").await;
    assert!(matches!(taken, Err(Error::Conflict(_))), "{taken:?}");
    c.check_github_install(&other_admin, other.id, &hash(8)).await.unwrap();

    // An expired state is refused.
    let past = chrono::Utc::now() - Duration::seconds(1);
    c.start_github_install(&admin, org.id, hash(2), past).await.unwrap();
    assert!(not_found(c.check_github_install(&admin, org.id, &hash(2)).await));
    let late = c.complete_github_install(&admin, org.id, &hash(2), inst(7), None, "github:octocat").await;
    assert!(matches!(late, Err(Error::NotFound { .. })), "{late:?}");

    // Only an org admin may start one, and only while still one when it is used.
    let dev = h.user("dev").await;
    c.add_member(&admin, org.id, dev, Role::OrgAdmin).await.unwrap();
    let dev_actor = c.user_actor(dev, org.id).await.unwrap();
    c.start_github_install(&dev_actor, org.id, hash(3), later).await.unwrap();
    c.set_member_role(&admin, org.id, dev, Role::Developer).await.unwrap();
    let dev_actor = c.user_actor(dev, org.id).await.unwrap();
    assert!(matches!(c.check_github_install(&dev_actor, org.id, &hash(3)).await, Err(Error::Forbidden { .. })));
    let demoted = c.complete_github_install(&dev_actor, org.id, &hash(3), inst(7), None, "github:dev").await;
    assert!(matches!(demoted, Err(Error::Forbidden { .. })), "{demoted:?}");
    // Demoted while the flow was with GitHub: the caller still presents the admin it was, but the
    // store says otherwise when the link is made.
    let still_admin = Actor::user(dev, org.id, Role::OrgAdmin);
    c.set_member_role(&admin, org.id, dev, Role::OrgAdmin).await.unwrap();
    c.start_github_install(&still_admin, org.id, hash(10), later).await.unwrap();
    c.set_member_role(&admin, org.id, dev, Role::Viewer).await.unwrap();
    let late = c.complete_github_install(&still_admin, org.id, &hash(10), inst(7), None, "github:dev").await;
    assert!(matches!(late, Err(Error::Forbidden { .. })), "{late:?}");
    assert!(c.list_installations(&admin, org.id).await.unwrap().iter().all(|i| i.installation_id != inst(7)));
    let denied = c.start_github_install(&dev_actor, org.id, hash(4), later).await;
    assert!(matches!(denied, Err(Error::Forbidden { .. })), "{denied:?}");
    let elsewhere = c.start_github_install(&other_admin, org.id, hash(5), later).await;
    assert!(matches!(elsewhere, Err(Error::NotFound { .. })), "{elsewhere:?}");
    let short = c.start_github_install(&admin, org.id, vec![1; 5], later).await;
    assert!(matches!(short, Err(Error::InvalidInput(_))), "{short:?}");

    // An API key's state is the key's own: another key of the org cannot use it.
    let key = |name: &str| aicd_core::tenancy::NewApiKey { name: name.into(), role: Role::OrgAdmin, expires_at: None };
    let (_, secret) = c.create_api_key(&admin, org.id, key("ci")).await.unwrap();
    let (_, other_secret) = c.create_api_key(&admin, org.id, key("other")).await.unwrap();
    let key_actor = c.authenticate_api_key(&secret).await.unwrap();
    let other_key = c.authenticate_api_key(&other_secret).await.unwrap();
    c.start_github_install(&key_actor, org.id, hash(6), later).await.unwrap();
    assert!(not_found(c.check_github_install(&other_key, org.id, &hash(6)).await));
    c.check_github_install(&key_actor, org.id, &hash(6)).await.unwrap();
}

pub(crate) async fn an_installation_linked_to_another_org_is_a_conflict(h: &Harness) {
    let (a, _, a_admin) = h.org_with_admin("Acme").await;
    let (b, _, b_admin) = h.org_with_admin("Globex").await;
    let intake = h.core.github_intake();
    link(h, a.id, 42, Some("acme")).await;

    let taken = intake.link_installation(b.id, inst(42), Some("globex".into()), "operator").await;
    match &taken {
        Err(Error::Conflict(message)) => {
            assert!(!message.contains(&a.id.to_string()) && !message.contains("Acme") && !message.contains("acme"));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(h.core.list_installations(&b_admin, b.id).await.unwrap().is_empty());
    let kept = h.core.list_installations(&a_admin, a.id).await.unwrap();
    assert_eq!((kept.len(), kept[0].account_login.as_deref()), (1, Some("acme")));

    // Once A lets go, B may link it.
    h.core.unlink_installation(&a_admin, a.id, inst(42)).await.unwrap();
    assert_eq!(link(h, b.id, 42, None).await.org_id, b.id);
}

pub(crate) async fn access_follows_the_link(h: &Harness) {
    let (a, a_admin, repo) = linked_org(h, "Acme", 42).await;
    let (b, b_admin) = {
        let (org, _, admin) = h.org_with_admin("Globex").await;
        (org.id, admin)
    };
    let intake = h.core.github_intake();
    let rejected = |result: aicd_core::Result<aicd_core::github::GithubAccess>, needle: &str| match result {
        Err(Error::Rejected { service: "github", message }) => assert!(message.contains(needle), "{message}"),
        other => panic!("expected a refusal naming `{needle}`, got {other:?}"),
    };
    let access = h.store.github_access(a, repo.id).await.unwrap();
    assert_eq!((access.installation_id, access.repo_id, access.full_name.as_str()), (inst(42), gh(1042), "acme/app"));
    assert!(matches!(h.store.github_access(b, repo.id).await, Err(Error::NotFound { .. })));

    // Suspended: refused, and back once unsuspended.
    intake.set_installation_suspended(inst(42), true).await.unwrap();
    rejected(h.store.github_access(a, repo.id).await, "suspended");
    intake.set_installation_suspended(inst(42), false).await.unwrap();
    assert!(h.store.github_access(a, repo.id).await.is_ok());

    // Unlinked: the repository is detached (kept with its history) and its unfinished jobs end.
    let pr_open = created(intake.start_issue_job(a, repo.id, issue(2), Trigger::Label, "alice").await.unwrap());
    let pr_open = open_pull_request(h, a, pr_open.id, 5).await;
    let queued = created(intake.start_issue_job(a, repo.id, issue(1), Trigger::Label, "alice").await.unwrap());
    let detached = h.core.unlink_installation(&a_admin, a, inst(42)).await.unwrap();
    assert_eq!(detached.iter().map(|r| r.id).collect::<Vec<_>>(), [repo.id]);
    let stored = h.store.get_repo(a, repo.id).await.unwrap();
    assert!(stored.detached_at.is_some());
    rejected(h.store.github_access(a, repo.id).await, "detached");
    let cancelled = h.store.get_job(a, queued.id).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(h.store.get_job(a, pr_open.id).await.unwrap().state, JobState::PrOpen);
    let events = h.core.list_events(&a_admin, a, queued.id, None, 10).await.unwrap();
    assert!(!events.is_empty(), "the job's history is kept");

    // Linked again to B, with the same repository: A's copy stays detached; B's own works.
    link(h, b, 42, Some("acme")).await;
    let sync = intake.sync_github_repos(b, inst(42), &[repo_info(1042, "acme/app")], &[]).await.unwrap();
    let b_repo = &sync.upserted[0];
    assert_eq!(h.store.github_access(b, b_repo.id).await.unwrap().installation_id, inst(42));
    rejected(h.store.github_access(a, repo.id).await, "detached");
    assert!(h.core.list_repos(&b_admin, b).await.unwrap().iter().all(|r| r.org_id == b));

    // Back to A (after B lets go): the repository is reattached by the sync.
    h.core.unlink_installation(&b_admin, b, inst(42)).await.unwrap();
    link(h, a, 42, None).await;
    let sync = intake.sync_github_repos(a, inst(42), &[repo_info(1042, "acme/app")], &[]).await.unwrap();
    assert_eq!(sync.upserted[0].id, repo.id);
    assert_eq!(sync.upserted[0].detached_at, None);
    assert!(h.store.github_access(a, repo.id).await.is_ok());

    // A local repository is not a GitHub one.
    let local = h
        .store
        .create_repo(
            a,
            NewRepo {
                full_name: "acme/local".into(),
                source: RepoSource::Local { path: h.local_path("access") },
                default_branch: None,
                settings: None,
            },
        )
        .await
        .unwrap();
    rejected(h.store.github_access(a, local.id).await, "not a GitHub repository");
}

pub(crate) async fn webhooks_find_an_installation_from_the_system_scope(h: &Harness) {
    let (org, _, repo) = linked_org(h, "Acme", 42).await;
    let intake = h.core.github_intake();
    assert_eq!(intake.installation_org(inst(42)).await.unwrap(), Some((org, false)));
    assert_eq!(intake.installation(inst(42)).await.unwrap().unwrap().account_login.as_deref(), Some("acme"));
    assert_eq!(intake.installation_org(inst(43)).await.unwrap(), None);

    let suspended = intake.set_installation_suspended(inst(42), true).await.unwrap().expect("linked");
    assert!(suspended.suspended);
    assert_eq!(intake.installation_org(inst(42)).await.unwrap(), Some((org, true)));
    assert!(!intake.set_installation_suspended(inst(42), false).await.unwrap().unwrap().suspended);
    assert_eq!(intake.set_installation_suspended(inst(43), true).await.unwrap(), None);

    // Uninstalling unlinks; the repositories stay, with their history, detached.
    let removed = intake.remove_installation(inst(42)).await.unwrap().expect("it was linked");
    assert_eq!(removed.org_id, org);
    assert_eq!(intake.installation_org(inst(42)).await.unwrap(), None);
    assert_eq!(intake.remove_installation(inst(42)).await.unwrap(), None);
    let kept = h.store.get_repo(org, repo.id).await.unwrap();
    assert_eq!((kept.id, kept.full_name.as_str()), (repo.id, repo.full_name.as_str()));
    assert!(kept.detached_at.is_some());
}

pub(crate) async fn repositories_follow_the_installation(h: &Harness) {
    let (org, _, _) = h.org_with_admin("Acme").await;
    let intake = h.core.github_intake();
    link(h, org.id, 42, None).await;
    let org = org.id;

    let added = [
        GithubRepoInfo { repo_id: gh(1), full_name: "acme/one".into(), default_branch: Some("develop".into()) },
        repo_info(2, "acme/two"),
        repo_info(3, "acme/three"),
    ];
    let sync = intake.sync_github_repos(org, inst(42), &added, &[]).await.unwrap();
    assert_eq!(sync.upserted.len(), 3);
    assert!(sync.detached.is_empty() && sync.skipped.is_empty());
    let one = intake.find_github_repo(org, gh(1)).await.unwrap().expect("registered");
    assert_eq!(one.source, RepoSource::Github { installation_id: inst(42), repo_id: gh(1) });
    assert_eq!((one.full_name.as_str(), one.default_branch.as_str()), ("acme/one", "develop"));
    assert_eq!(intake.find_github_repo(org, gh(2)).await.unwrap().unwrap().default_branch, "main");
    assert_eq!(intake.find_github_repo(org, gh(99)).await.unwrap(), None);

    // A rename, or the same repository again, updates in place; the chosen branch is kept.
    let renamed = GithubRepoInfo { repo_id: gh(1), full_name: "acme/uno".into(), default_branch: Some("main".into()) };
    let sync = intake.sync_github_repos(org, inst(42), &[renamed], &[]).await.unwrap();
    assert_eq!(sync.upserted[0].id, one.id);
    assert_eq!(
        (sync.upserted[0].full_name.as_str(), sync.upserted[0].default_branch.as_str()),
        ("acme/uno", "develop")
    );
    assert_eq!(h.store.list_repos(org).await.unwrap().len(), 3);

    // Removed: detached, never deleted; the history stays and unfinished jobs are cancelled.
    let two = intake.find_github_repo(org, gh(2)).await.unwrap().unwrap();
    let three = intake.find_github_repo(org, gh(3)).await.unwrap().unwrap();
    let busy = created(intake.start_issue_job(org, three.id, issue(1), Trigger::Label, "alice").await.unwrap());
    let sync = intake.sync_github_repos(org, inst(42), &[], &[gh(2), gh(3), gh(404)]).await.unwrap();
    let mut detached: Vec<_> = sync.detached.iter().map(|r| r.id).collect();
    detached.sort();
    let mut expected = vec![two.id, three.id];
    expected.sort();
    assert_eq!(detached, expected);
    assert!(sync.detached.iter().all(|r| r.detached_at.is_some()));
    assert!(intake.find_github_repo(org, gh(2)).await.unwrap().unwrap().detached_at.is_some());
    assert_eq!(h.store.get_job(org, busy.id).await.unwrap().state, JobState::Cancelled);
    assert_eq!(h.store.list_repos(org).await.unwrap().len(), 3);
    // Removed again: nothing more to detach.
    assert!(intake.sync_github_repos(org, inst(42), &[], &[gh(2)]).await.unwrap().detached.is_empty());
    // Added back: reattached, same repository.
    let back = intake.sync_github_repos(org, inst(42), &[repo_info(2, "acme/two")], &[]).await.unwrap();
    assert_eq!((back.upserted[0].id, back.upserted[0].detached_at), (two.id, None));

    // Invalid names and names taken by another repository are skipped, not fatal.
    let local = NewRepo {
        full_name: "acme/taken".into(),
        source: RepoSource::Local { path: h.local_path("taken") },
        default_branch: None,
        settings: None,
    };
    h.store.create_repo(org, local).await.unwrap();
    let sync = intake
        .sync_github_repos(
            org,
            inst(42),
            &[repo_info(5, "acme/taken"), repo_info(6, "not a name"), repo_info(7, "acme/seven")],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(sync.upserted.iter().map(|r| r.full_name.as_str()).collect::<Vec<_>>(), ["acme/seven"]);
    assert_eq!(sync.skipped.iter().map(|s| s.repo.repo_id).collect::<Vec<_>>(), [gh(5), gh(6)]);

    // Another installation's removal does not touch this installation's repositories.
    link(h, org, 43, None).await;
    let sync = intake.sync_github_repos(org, inst(43), &[], &[gh(7)]).await.unwrap();
    assert!(sync.detached.is_empty());
    assert!(intake.find_github_repo(org, gh(7)).await.unwrap().is_some());
    // Moving a repository to another installation follows it.
    let moved = intake.sync_github_repos(org, inst(43), &[repo_info(7, "acme/seven")], &[]).await.unwrap();
    assert_eq!(moved.upserted[0].source, RepoSource::Github { installation_id: inst(43), repo_id: gh(7) });

    let unknown = intake.sync_github_repos(org, inst(44), &[repo_info(8, "acme/eight")], &[]).await;
    assert!(matches!(unknown, Err(Error::NotFound { .. })), "{unknown:?}");
}

pub(crate) async fn an_issue_trigger_creates_one_active_job(h: &Harness) {
    let (org, admin, repo) = linked_org(h, "Acme", 42).await;
    let intake = h.core.github_intake();
    let first = created(intake.start_issue_job(org, repo.id, issue(7), Trigger::Label, "octocat").await.unwrap());
    assert_eq!(
        (first.state, first.trigger, first.created_by.as_str()),
        (JobState::Queued, Trigger::Label, "github:octocat")
    );
    assert_eq!(first.issue, issue(7));
    let events = h.core.list_events(&admin, org, first.id, None, 10).await.unwrap();
    assert_eq!((events[0].kind, events[0].actor.as_str()), (EventKind::Created, "github:octocat"));

    let second = intake.start_issue_job(org, repo.id, issue(7), Trigger::Assignment, "hubot").await.unwrap();
    assert!(!second.is_created());
    assert_eq!(already_active(second).id, first.id);
    // Another issue is independent.
    created(intake.start_issue_job(org, repo.id, issue(8), Trigger::Label, "octocat").await.unwrap());

    // Once the job has ended, the issue may have a new one.
    h.core.cancel_job(&admin, org, first.id).await.unwrap();
    let third = created(intake.start_issue_job(org, repo.id, issue(7), Trigger::Label, "octocat").await.unwrap());
    assert_ne!(third.id, first.id);

    // A job whose pull request is open is still active.
    let eight = intake.active_issue_job(org, repo.id, 8).await.unwrap().expect("issue 8 has a job");
    h.core.cancel_job(&admin, org, eight.id).await.unwrap();
    open_pull_request(h, org, third.id, 3).await;
    let again = intake.start_issue_job(org, repo.id, issue(7), Trigger::Label, "octocat").await.unwrap();
    assert_eq!(already_active(again).id, third.id);

    let no_number = IssueRef { number: None, ..issue(9) };
    let refused = intake.start_issue_job(org, repo.id, no_number, Trigger::Label, "octocat").await;
    assert!(matches!(refused, Err(Error::InvalidInput(_))), "{refused:?}");
    let bad_login = intake.start_issue_job(org, repo.id, issue(9), Trigger::Label, "").await;
    assert!(matches!(bad_login, Err(Error::InvalidInput(_))), "{bad_login:?}");
    let unknown = intake.start_issue_job(org, RepoId::new(), issue(9), Trigger::Label, "octocat").await;
    assert!(matches!(unknown, Err(Error::NotFound { .. })), "{unknown:?}");
}

pub(crate) async fn concurrent_triggers_for_an_issue_create_exactly_one_job(h: &Harness) {
    let (org, admin, repo) = linked_org(h, "Acme", 42).await;
    let intake = h.core.github_intake();
    for number in 1..=3u64 {
        let start = |login: &'static str| {
            let intake = intake.clone();
            async move { intake.start_issue_job(org, repo.id, issue(number), Trigger::Label, login).await.unwrap() }
        };
        let (a, b, c, d, e) = tokio::join!(start("a"), start("b"), start("c"), start("d"), start("e"));
        let outcomes = [a, b, c, d, e];
        assert_eq!(outcomes.iter().filter(|o| o.is_created()).count(), 1, "issue {number}: {outcomes:#?}");
        let ids: std::collections::HashSet<_> = outcomes.iter().map(|o| o.job().id).collect();
        assert_eq!(ids.len(), 1, "every delivery sees the one job");
    }
    let jobs = h.core.list_jobs(&admin, org, JobFilter::default()).await.unwrap().items;
    assert_eq!(jobs.len(), 3);
}

pub(crate) async fn comment_commands_are_recorded_once_and_claimed(h: &Harness) {
    let (org, _, repo) = linked_org(h, "Acme", 42).await;
    let intake = h.core.github_intake();
    let run = intake.enqueue_command(org, run_command(repo.id, 7, 555, "alice")).await.unwrap();
    assert_eq!(
        (run.command, run.status, run.attempts, run.lease.is_none()),
        (CommandKind::Run, CommandStatus::Pending, 0, true)
    );
    assert_eq!(
        (run.issue_number, run.source.clone(), run.login.as_str()),
        (7, CommandSource::Comment { comment_id: 555 }, "alice")
    );
    assert_eq!(run.issue, Some(issue(7)));
    // A redelivered comment is the same command.
    let again = intake.enqueue_command(org, run_command(repo.id, 7, 555, "alice")).await.unwrap();
    assert_eq!(again, run);
    let cancel = intake.enqueue_command(org, command(CommandKind::Cancel, repo.id, 7, 556)).await.unwrap();
    assert!(cancel.id > run.id);
    assert_eq!(cancel.issue, None);

    let claimed = intake.claim_pending_command("w1", Duration::seconds(60)).await.unwrap().expect("the oldest");
    assert_eq!((claimed.id, claimed.attempts), (run.id, 1));
    assert_eq!(claimed.lease.as_ref().map(|l| l.owner.as_str()), Some("w1"));
    let next = intake.claim_pending_command("w2", Duration::milliseconds(1)).await.unwrap().expect("the next");
    assert_eq!(next.id, cancel.id);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // An expired lease is taken over; a held one is not.
    let retaken = intake.claim_pending_command("w3", Duration::seconds(60)).await.unwrap().expect("expired");
    assert_eq!((retaken.id, retaken.attempts), (cancel.id, 2));
    assert!(intake.claim_pending_command("w4", Duration::seconds(60)).await.unwrap().is_none());

    let done = intake.finish_command(org, run.id, CommandStatus::Done, None).await.unwrap();
    assert_eq!((done.status, done.lease), (CommandStatus::Done, None));
    let twice = intake.finish_command(org, run.id, CommandStatus::Failed, Some("x")).await;
    assert!(matches!(twice, Err(Error::Conflict(_))), "{twice:?}");
    let pending = intake.finish_command(org, cancel.id, CommandStatus::Pending, None).await;
    assert!(matches!(pending, Err(Error::InvalidInput(_))), "{pending:?}");
    let refused = intake.finish_command(org, cancel.id, CommandStatus::Refused, Some("no write access")).await.unwrap();
    assert_eq!((refused.status, refused.error.as_deref()), (CommandStatus::Refused, Some("no write access")));
    assert_eq!(intake.get_command(org, refused.id).await.unwrap(), refused);
    assert!(intake.claim_pending_command("w1", Duration::seconds(60)).await.unwrap().is_none());
    // Finished commands stay finished when their comment is redelivered.
    assert_eq!(
        intake.enqueue_command(org, run_command(repo.id, 7, 555, "alice")).await.unwrap().status,
        CommandStatus::Done
    );

    let no_issue = NewCommand { issue: None, ..run_command(repo.id, 8, 557, "alice") };
    assert!(matches!(intake.enqueue_command(org, no_issue).await, Err(Error::InvalidInput(_))));
    let unknown_repo = intake.enqueue_command(org, run_command(RepoId::new(), 8, 558, "alice")).await;
    assert!(matches!(unknown_repo, Err(Error::NotFound { .. })), "{unknown_repo:?}");
}

pub(crate) async fn commands_are_carried_out_as_their_author(h: &Harness) {
    use aicd_core::signals::{EventBus, LocalEventBus};
    let bus = std::sync::Arc::new(LocalEventBus::new());
    let mut published = bus.subscribe();
    let (org, admin, repo) = linked_org(h, "Acme", 42).await;
    let intake: GithubIntake = h.core.clone().with_event_bus(bus.clone()).github_intake();

    let run = intake.enqueue_command(org, run_command(repo.id, 7, 1, "alice")).await.unwrap();
    let job = match intake.execute_command(&run).await.unwrap() {
        CommandOutcome::Started(outcome) => created(outcome),
        other => panic!("{other:?}"),
    };
    assert_eq!((job.trigger, job.created_by.as_str()), (Trigger::Comment, "github:alice"));
    assert_eq!(job.issue, issue(7));
    let event = published.try_recv().expect("the created event is published");
    assert_eq!((event.job_id, event.kind), (job.id, EventKind::Created));
    // Carrying it out again (a worker died before finishing it) starts nothing new.
    match intake.execute_command(&run).await.unwrap() {
        CommandOutcome::Started(outcome) => assert_eq!(already_active(outcome).id, job.id),
        other => panic!("{other:?}"),
    }

    let cancel = intake.enqueue_command(org, command(CommandKind::Cancel, repo.id, 7, 2)).await.unwrap();
    let cancelled = match intake.execute_command(&cancel).await.unwrap() {
        CommandOutcome::Cancelled(Some(job)) => job,
        other => panic!("{other:?}"),
    };
    assert_eq!((cancelled.id, cancelled.state), (job.id, JobState::Cancelled));
    let event = published.try_recv().expect("the cancellation is published");
    assert_eq!((event.to_state, event.actor.as_str()), (Some(JobState::Cancelled), "github:alice"));
    assert_eq!(intake.execute_command(&cancel).await.unwrap(), CommandOutcome::Cancelled(None));

    let retry = intake.enqueue_command(org, command(CommandKind::Retry, repo.id, 7, 3)).await.unwrap();
    let retried = match intake.execute_command(&retry).await.unwrap() {
        CommandOutcome::Retried(Some(outcome)) => created(outcome),
        other => panic!("{other:?}"),
    };
    assert_ne!(retried.id, job.id);
    assert_eq!((retried.issue.clone(), retried.trigger, retried.state), (issue(7), Trigger::Comment, JobState::Queued));
    let events = h.core.list_events(&admin, org, retried.id, None, 10).await.unwrap();
    assert_eq!(events.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::Created, EventKind::Note]);
    assert_eq!(events[1].data["retry_of"], serde_json::json!(job.id));
    match intake.execute_command(&retry).await.unwrap() {
        CommandOutcome::Retried(Some(outcome)) => assert_eq!(already_active(outcome).id, retried.id),
        other => panic!("{other:?}"),
    }

    // A held job is marked for cancellation; the worker stops at its next checkpoint.
    let held = h.store.claim_next("w1", Duration::seconds(60)).await.unwrap().expect("claimed");
    assert_eq!(held.id, retried.id);
    let marked = intake.cancel_issue_job(org, repo.id, 7, "bob").await.unwrap().expect("marked");
    assert!(marked.cancel_requested && marked.state == JobState::Queued);

    // Nothing to cancel or retry on an issue without jobs; a job whose pull request is open is
    // not cancellable, and a merged one is not retried.
    assert_eq!(intake.cancel_issue_job(org, repo.id, 99, "bob").await.unwrap(), None);
    assert_eq!(intake.retry_issue_job(org, repo.id, 99, "bob").await.unwrap(), None);
    let other = created(intake.start_issue_job(org, repo.id, issue(8), Trigger::Label, "bob").await.unwrap());
    let fence = Fence { worker: "w1".into(), epoch: held.epoch, state: held.state };
    h.store
        .update_job(org, held.id, &fence, JobUpdate { state: Some(JobState::Cancelled), ..Default::default() })
        .await
        .unwrap();
    open_pull_request(h, org, other.id, 8).await;
    assert_eq!(intake.cancel_issue_job(org, repo.id, 8, "bob").await.unwrap(), None);
    intake.close_pull_request(org, repo.id, 8, true).await.unwrap().expect("merged");
    assert_eq!(intake.retry_issue_job(org, repo.id, 8, "bob").await.unwrap(), None);
}

pub(crate) async fn a_closed_pull_request_ends_its_job(h: &Harness) {
    let (org, admin, repo) = linked_org(h, "Acme", 42).await;
    let intake = h.core.github_intake();
    let first = created(intake.start_issue_job(org, repo.id, issue(1), Trigger::Label, "alice").await.unwrap());
    open_pull_request(h, org, first.id, 11).await;
    let second = created(intake.start_issue_job(org, repo.id, issue(2), Trigger::Label, "alice").await.unwrap());
    open_pull_request(h, org, second.id, 12).await;

    let merged = intake.close_pull_request(org, repo.id, 11, true).await.unwrap().expect("job of #11");
    assert_eq!((merged.id, merged.state), (first.id, JobState::Merged));
    assert!(merged.finished_at.is_some());
    let events = h.core.list_events(&admin, org, first.id, None, 100).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!((last.kind, last.actor.as_str()), (EventKind::StateChanged, "github"));
    assert_eq!((last.from_state, last.to_state), (Some(JobState::PrOpen), Some(JobState::Merged)));

    let closed = intake.close_pull_request(org, repo.id, 12, false).await.unwrap().expect("job of #12");
    assert_eq!((closed.id, closed.state), (second.id, JobState::Closed));

    // Redeliveries, other pull requests and other repositories change nothing.
    assert_eq!(intake.close_pull_request(org, repo.id, 11, false).await.unwrap(), None);
    assert_eq!(intake.close_pull_request(org, repo.id, 99, true).await.unwrap(), None);
    assert_eq!(intake.close_pull_request(org, RepoId::new(), 11, true).await.unwrap(), None);
    assert_eq!(h.store.get_job(org, first.id).await.unwrap().state, JobState::Merged);
}

pub(crate) async fn org_b_cannot_see_org_a_github_data(h: &Harness) {
    let (a, a_admin, a_repo) = linked_org(h, "Acme", 42).await;
    let (b, b_admin, b_repo) = linked_org(h, "Globex", 43).await;
    let intake = h.core.github_intake();
    let a_command = intake.enqueue_command(a, command(CommandKind::Cancel, a_repo.id, 1, 9)).await.unwrap();
    let a_job = created(intake.start_issue_job(a, a_repo.id, issue(1), Trigger::Label, "alice").await.unwrap());
    let c = &h.core;

    // Through Core: naming A outright, or A's installation under B.
    assert!(matches!(c.list_installations(&b_admin, a).await, Err(Error::NotFound { .. })));
    let later = chrono::Utc::now() + Duration::minutes(5);
    assert!(matches!(c.start_github_install(&b_admin, a, vec![0; 32], later).await, Err(Error::NotFound { .. })));
    assert!(matches!(c.unlink_installation(&b_admin, a, inst(42)).await, Err(Error::NotFound { .. })));
    assert!(matches!(c.unlink_installation(&b_admin, b, inst(42)).await, Err(Error::NotFound { .. })));
    let b_sees: Vec<_> = c.list_installations(&b_admin, b).await.unwrap().iter().map(|i| i.installation_id).collect();
    assert_eq!(b_sees, [inst(43)]);
    assert!(matches!(h.store.github_access(b, a_repo.id).await, Err(Error::NotFound { .. })));

    // Through the intake and the store, scoped to B.
    assert!(matches!(intake.get_command(b, a_command.id).await, Err(Error::NotFound { .. })));
    let finish = intake.finish_command(b, a_command.id, CommandStatus::Done, None).await;
    assert!(matches!(finish, Err(Error::NotFound { .. })), "{finish:?}");
    let on_a_repo = intake.enqueue_command(b, command(CommandKind::Cancel, a_repo.id, 1, 10)).await;
    assert!(matches!(on_a_repo, Err(Error::NotFound { .. })), "{on_a_repo:?}");
    assert_eq!(intake.find_github_repo(b, gh(1042)).await.unwrap(), None);
    let sync = intake.sync_github_repos(b, inst(42), &[repo_info(5, "globex/x")], &[gh(1042)]).await;
    assert!(matches!(sync, Err(Error::NotFound { .. })), "{sync:?}");
    let start = intake.start_issue_job(b, a_repo.id, issue(2), Trigger::Label, "mallory").await;
    assert!(matches!(start, Err(Error::NotFound { .. })), "{start:?}");
    assert_eq!(intake.cancel_issue_job(b, a_repo.id, 1, "mallory").await.unwrap(), None);
    assert_eq!(intake.retry_issue_job(b, a_repo.id, 1, "mallory").await.unwrap(), None);
    assert_eq!(intake.close_pull_request(b, a_repo.id, 1, true).await.unwrap(), None);
    assert!(h.store.list_installations(b).await.unwrap().iter().all(|i| i.org_id == b));
    assert!(h.store.active_issue_job(b, a_repo.id, 1).await.unwrap().is_none());
    assert!(h.store.latest_issue_job(b, a_repo.id, 1).await.unwrap().is_none());

    // A is untouched.
    assert_eq!(intake.get_command(a, a_command.id).await.unwrap().status, CommandStatus::Pending);
    assert_eq!(c.get_job(&a_admin, a, a_job.id).await.unwrap().state, JobState::Queued);
    assert_eq!(intake.installation_org(inst(42)).await.unwrap(), Some((a, false)));
    assert_eq!(c.list_repos(&b_admin, b).await.unwrap(), [b_repo]);
}

pub(crate) async fn trigger_settings_resolve_the_repository_over_the_organization(h: &Harness) {
    let (org, admin, repo) = linked_org(h, "Acme", 42).await;
    let intake = h.core.github_intake();
    let resolve = |repo: Repository| {
        let intake = intake.clone();
        async move { intake.trigger_settings(org, &repo).await.unwrap() }
    };

    // Nothing set anywhere: the defaults.
    assert_eq!(resolve(repo.clone()).await, TriggerSettings::default());
    assert!(resolve(repo.clone()).await.matches_label("AICD"));

    // Organization defaults apply to every repository...
    let org_settings = serde_json::json!({ "triggers": { "label": "AI Ready", "assignment": false } });
    let patch = OrgPatch { settings: Some(org_settings), ..Default::default() };
    h.core.update_org(&admin, org, patch).await.unwrap();
    let resolved = resolve(repo.clone()).await;
    assert_eq!(
        resolved,
        TriggerSettings { label: Some("AI Ready".into()), assignment: false, commands: true, bots: false }
    );
    assert!(resolved.matches_label("ai ready"));
    assert!(!resolved.matches_label("aicd"));

    // ...and a repository overrides them key by key.
    let repo_settings = serde_json::json!({ "triggers": { "label": null, "commands": false }, "policy": {} });
    let patch = RepoPatch { settings: Some(repo_settings), ..Default::default() };
    let repo = h.core.update_repo(&admin, org, repo.id, patch).await.unwrap();
    assert_eq!(
        resolve(repo.clone()).await,
        TriggerSettings { label: None, assignment: false, commands: false, bots: false }
    );
    let patch =
        RepoPatch { settings: Some(serde_json::json!({ "triggers": { "assignment": true } })), ..Default::default() };
    let repo = h.core.update_repo(&admin, org, repo.id, patch).await.unwrap();
    assert_eq!(
        resolve(repo.clone()).await,
        TriggerSettings { label: Some("AI Ready".into()), assignment: true, commands: true, bots: false }
    );

    // A malformed `triggers` is refused at the door, for the repository and the organization.
    let bad = serde_json::json!({ "triggers": { "label": 7 } });
    let patch = RepoPatch { settings: Some(bad.clone()), ..Default::default() };
    assert!(matches!(h.core.update_repo(&admin, org, repo.id, patch).await, Err(Error::InvalidInput(_))));
    let patch = OrgPatch { settings: Some(bad), ..Default::default() };
    assert!(matches!(h.core.update_org(&admin, org, patch).await, Err(Error::InvalidInput(_))));

    // Another organization's repository is not resolved against this one's defaults.
    let (other, _, other_repo) = linked_org(h, "Globex", 43).await;
    assert!(matches!(intake.trigger_settings(org, &other_repo).await, Err(Error::NotFound { .. })));
    assert_eq!(intake.trigger_settings(other, &other_repo).await.unwrap(), TriggerSettings::default());
    // An organization that no longer exists.
    h.core.delete_org(&admin, org).await.unwrap();
    assert!(matches!(intake.trigger_settings(org, &repo).await, Err(Error::NotFound { .. })));
}

pub(crate) async fn the_intake_records_webhook_deliveries(h: &Harness) {
    let intake = h.core.github_intake();
    let delivery = NewDelivery {
        delivery_id: "intake-1".into(),
        event: "issues".into(),
        action: Some("opened".into()),
        installation_id: Some(inst(42)),
        body_sha256: Some(vec![42; 32]),
    };
    assert_eq!(intake.begin_delivery(delivery.clone(), Duration::minutes(5)).await.unwrap(), DeliveryClaim::Process);
    assert_eq!(
        intake.begin_delivery(delivery.clone(), Duration::minutes(5)).await.unwrap(),
        DeliveryClaim::Duplicate(DeliveryStatus::Processing)
    );
    intake.finish_delivery("intake-1", DeliveryStatus::Failed, Some("boom")).await.unwrap();
    let stored = intake.get_delivery("intake-1").await.unwrap();
    assert_eq!((stored.status, stored.error.as_deref()), (DeliveryStatus::Failed, Some("boom")));
    assert_eq!(intake.begin_delivery(delivery.clone(), Duration::minutes(5)).await.unwrap(), DeliveryClaim::Process);
    intake.finish_delivery("intake-1", DeliveryStatus::Processed, None).await.unwrap();
    let stored = intake.get_delivery("intake-1").await.unwrap();
    assert_eq!((stored.status, stored.error, stored.attempts), (DeliveryStatus::Processed, None, 2));
    assert_eq!(
        intake.begin_delivery(delivery, Duration::minutes(5)).await.unwrap(),
        DeliveryClaim::Duplicate(DeliveryStatus::Processed)
    );
    assert!(matches!(intake.get_delivery("unknown").await, Err(Error::NotFound { .. })));
    let unknown = intake.finish_delivery("unknown", DeliveryStatus::Processed, None).await;
    assert!(matches!(unknown, Err(Error::NotFound { .. })));
}
