use aicd_core::github::{GithubRepoId, InstallationId};
use aicd_core::jobs::{
    DayUsage, EventKind, IssueRef, JobFilter, JobState, NewEvent, NewJob, RepoUsage, Trigger, UsageSummary,
};
use aicd_core::repos::{NewRepo, RepoPatch, RepoSource, Repository};
use aicd_core::store::{JobStore, NewUsage, RepoStore};
use aicd_core::tenancy::{Actor, NewOrg, NewUser, Role};
use aicd_core::{Core, CoreOptions, Error, OrgId, RepoId};
use chrono::{Duration, Utc};
use serde_json::json;

use crate::support::{Harness, local_options};

/// The installation tests link to `org`: derived from its id, so every org has its own.
pub(crate) fn installation_of(org: OrgId) -> InstallationId {
    let bytes = org.as_uuid().into_bytes();
    let tail = u64::from_be_bytes(bytes[8..16].try_into().unwrap());
    InstallationId::new(i64::try_from(tail >> 1).unwrap() + 1).unwrap()
}

/// A GitHub repository `name` of `org`, through the org's installation ([`installation_of`]),
/// which is linked here if it is not yet (a repository may only name a linked installation).
pub(crate) async fn github_repo(core: &Core, org: OrgId, name: &str) -> NewRepo {
    let installation = installation_of(org);
    core.github_intake().link_installation(org, installation, None, "operator").await.unwrap();
    NewRepo {
        full_name: name.into(),
        source: RepoSource::Github { installation_id: installation, repo_id: GithubRepoId::new(100).unwrap() },
        default_branch: None,
        settings: None,
    }
}

pub(crate) fn issue(number: Option<u64>, title: &str) -> IssueRef {
    IssueRef { number, title: title.into(), body: "body".into(), url: None, author: None }
}

pub(crate) fn new_job(repo: RepoId, number: Option<u64>) -> NewJob {
    NewJob {
        repo_id: repo,
        issue: issue(number, "Fix it"),
        trigger: Trigger::Api,
        max_tokens: None,
        max_cost_micros: None,
    }
}

pub(crate) async fn org_with_repo(h: &Harness, name: &str) -> (OrgId, Actor, Repository) {
    let (org, _, admin) = h.org_with_admin(name).await;
    let repo = h
        .core
        .create_repo(&admin, org.id, github_repo(&h.core, org.id, &format!("{}/repo", name.to_lowercase())).await)
        .await
        .unwrap();
    (org.id, admin, repo)
}

pub(crate) async fn repositories_are_registered_listed_changed_and_removed(h: &Harness) {
    let (org, _, admin) = h.org_with_admin("Acme").await;
    let b = h.core.create_repo(&admin, org.id, github_repo(&h.core, org.id, "acme/b").await).await.unwrap();
    let a = h.core.create_repo(&admin, org.id, github_repo(&h.core, org.id, "acme/a").await).await.unwrap();
    let installation_id = installation_of(org.id);
    assert_eq!(a.source, RepoSource::Github { installation_id, repo_id: GithubRepoId::new(100).unwrap() });
    assert_eq!(a.default_branch, "main");
    assert_eq!(a.settings.to_json(), json!({}));
    let dup = h.core.create_repo(&admin, org.id, github_repo(&h.core, org.id, "acme/a").await).await;
    assert!(matches!(dup, Err(Error::Conflict(_))), "{dup:?}");

    let names: Vec<_> = h.core.list_repos(&admin, org.id).await.unwrap().into_iter().map(|r| r.full_name).collect();
    assert_eq!(names, ["acme/a", "acme/b"]);

    let settings = json!({"triggers": {"label": "bot"}, "policy": {"max_files": 10}});
    let patch = RepoPatch { default_branch: Some("develop".into()), settings: Some(settings.clone()) };
    let changed = h.core.update_repo(&admin, org.id, a.id, patch).await.unwrap();
    assert_eq!((changed.default_branch.as_str(), changed.settings.to_json()), ("develop", settings));
    assert_eq!(h.core.get_repo(&admin, org.id, a.id).await.unwrap(), changed);
    for bad in [json!("not an object"), json!({"trigger_label": "bot"}), json!({"policy": {"max_files": "many"}})] {
        let patch = RepoPatch { default_branch: None, settings: Some(bad.clone()) };
        let refused = h.core.update_repo(&admin, org.id, a.id, patch).await;
        assert!(matches!(refused, Err(Error::InvalidInput(_))), "{bad}: {refused:?}");
    }
    assert_eq!(h.core.get_repo(&admin, org.id, a.id).await.unwrap(), changed, "a refused patch writes nothing");

    h.core.delete_repo(&admin, org.id, b.id).await.unwrap();
    assert!(matches!(h.core.get_repo(&admin, org.id, b.id).await, Err(Error::NotFound { .. })));
    assert!(matches!(h.core.delete_repo(&admin, org.id, b.id).await, Err(Error::NotFound { .. })));
}

pub(crate) async fn local_repositories_need_to_be_allowed(h: &Harness) {
    let (org, _, admin) = h.org_with_admin("Acme").await;
    let path = h.local_path("local");
    let local = NewRepo {
        full_name: "me/local".into(),
        source: RepoSource::Local { path: path.clone() },
        default_branch: None,
        settings: None,
    };
    let locked = Core::new(h.store.clone(), CoreOptions { allow_local_repos: false, ..local_options(h.repos.path()) });
    assert!(matches!(locked.create_repo(&admin, org.id, local.clone()).await, Err(Error::InvalidInput(_))));
    let repo = h.core.create_repo(&admin, org.id, local).await.unwrap();
    assert_eq!(repo.source, RepoSource::Local { path });
}

pub(crate) async fn local_repositories_stay_under_the_roots_and_in_one_org(h: &Harness) {
    let (org, _, admin) = h.org_with_admin("Acme").await;
    let (other, _, other_admin) = h.org_with_admin("Globex").await;
    let local = |path: String| NewRepo {
        full_name: format!("me/{}", uuid::Uuid::new_v4().simple()),
        source: RepoSource::Local { path },
        default_branch: None,
        settings: None,
    };
    let refused = |result: aicd_core::Result<aicd_core::repos::Repository>| match result {
        Err(Error::InvalidInput(message)) => {
            assert!(message.contains("not an accessible repository"), "{message}");
            assert!(!message.contains("No such file") && !message.contains("Permission"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    };
    // Outside every root: the server's own files, another directory, a way out through `..`.
    refused(h.core.create_repo(&admin, org.id, local("/etc".into())).await);
    let outside = tempfile::tempdir().unwrap();
    refused(h.core.create_repo(&admin, org.id, local(outside.path().display().to_string())).await);
    let escape =
        format!("{}/a/../../{}", h.repos.path().display(), outside.path().file_name().unwrap().to_string_lossy());
    refused(h.core.create_repo(&admin, org.id, local(escape)).await);
    refused(h.core.create_repo(&admin, org.id, local(format!("{}/missing", h.repos.path().display()))).await);
    // A link under the root pointing outside it.
    let link = h.repos.path().join("link");
    std::os::unix::fs::symlink(outside.path(), &link).unwrap();
    refused(h.core.create_repo(&admin, org.id, local(link.display().to_string())).await);

    // Under the root it is registered at its canonical path...
    let path = h.local_path("shared");
    let spelled = format!("{}/./shared/", h.repos.path().display());
    let repo = h.core.create_repo(&admin, org.id, local(spelled)).await.unwrap();
    assert_eq!(repo.source, RepoSource::Local { path: path.clone() });
    // ...and belongs to that organization alone: another gets the same refusal as for `/etc`,
    // for the path itself and for another way into the same repository (its `.git`).
    refused(h.core.create_repo(&other_admin, other.id, local(format!("{path}/.git"))).await);
    refused(h.core.create_repo(&other_admin, other.id, local(path)).await);
    // A directory that is not a repository's top is refused too.
    let plain = h.repos.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    refused(h.core.create_repo(&admin, org.id, local(plain.display().to_string())).await);
}

pub(crate) async fn a_new_job_is_queued_with_defaults_and_a_created_event(h: &Harness) {
    let (org, admin, repo) = org_with_repo(h, "Acme").await;
    let job = h.core.create_job(&admin, org, new_job(repo.id, Some(1))).await.unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.attempts, Default::default());
    assert_eq!((job.review_round, job.epoch), (0, 0));
    assert_eq!(job.budget.max_tokens, aicd_core::jobs::DEFAULT_MAX_TOKENS);
    assert_eq!((job.budget.spent_tokens, job.budget.spent_cost_micros), (0, 0));
    assert!(job.lease.is_none() && !job.cancel_requested);
    assert_eq!(job.checkpoints, Default::default());
    assert_eq!(job.created_by, admin.principal.label());

    let events = h.core.list_events(&admin, org, job.id, None, 100).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::Created);
    assert_eq!(events[0].actor, admin.principal.label());
}

pub(crate) async fn jobs_are_listed_newest_first_with_filters_and_cursor(h: &Harness) {
    let (org, admin, repo) = org_with_repo(h, "Acme").await;
    let other = h.core.create_repo(&admin, org, github_repo(&h.core, org, "acme/other").await).await.unwrap();
    let mut ids = Vec::new();
    for n in 1..=5 {
        ids.push(h.core.create_job(&admin, org, new_job(repo.id, Some(n))).await.unwrap().id);
    }
    let elsewhere = h.core.create_job(&admin, org, new_job(other.id, Some(1))).await.unwrap();
    h.core.cancel_job(&admin, org, ids[0]).await.unwrap();

    let all = h.core.list_jobs(&admin, org, JobFilter::default()).await.unwrap();
    let listed: Vec<_> = all.items.iter().map(|j| j.id).collect();
    assert_eq!(listed, [elsewhere.id, ids[4], ids[3], ids[2], ids[1], ids[0]]);
    assert_eq!(all.next_cursor, None);

    let page1 = h
        .core
        .list_jobs(&admin, org, JobFilter { repo_id: Some(repo.id), limit: Some(2), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(page1.items.iter().map(|j| j.id).collect::<Vec<_>>(), [ids[4], ids[3]]);
    let page2 = h
        .core
        .list_jobs(
            &admin,
            org,
            JobFilter { repo_id: Some(repo.id), limit: Some(2), before: page1.next_cursor, ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(page2.items.iter().map(|j| j.id).collect::<Vec<_>>(), [ids[2], ids[1]]);
    let page3 = h
        .core
        .list_jobs(
            &admin,
            org,
            JobFilter { repo_id: Some(repo.id), limit: Some(2), before: page2.next_cursor, ..Default::default() },
        )
        .await
        .unwrap();
    assert_eq!(page3.items.iter().map(|j| j.id).collect::<Vec<_>>(), [ids[0]]);
    assert_eq!(page3.next_cursor, None);

    let cancelled = h
        .core
        .list_jobs(&admin, org, JobFilter { state: Some(JobState::Cancelled), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(cancelled.items.iter().map(|j| j.id).collect::<Vec<_>>(), [ids[0]]);

    for limit in [0, 101] {
        let result = h.core.list_jobs(&admin, org, JobFilter { limit: Some(limit), ..Default::default() }).await;
        assert!(matches!(result, Err(Error::InvalidInput(_))));
    }
}

pub(crate) async fn an_issue_has_at_most_one_active_job(h: &Harness) {
    let (org, admin, repo) = org_with_repo(h, "Acme").await;
    let first = h.core.create_job(&admin, org, new_job(repo.id, Some(9))).await.unwrap();
    let second = h.core.create_job(&admin, org, new_job(repo.id, Some(9))).await;
    assert!(matches!(&second, Err(Error::Conflict(m)) if m.contains("#9")), "{second:?}");
    // Jobs without an issue number (API jobs) are never duplicates.
    h.core.create_job(&admin, org, new_job(repo.id, None)).await.unwrap();
    h.core.create_job(&admin, org, new_job(repo.id, None)).await.unwrap();
    // Once the first is finished, the issue can have a new one.
    h.core.cancel_job(&admin, org, first.id).await.unwrap();
    h.core.create_job(&admin, org, new_job(repo.id, Some(9))).await.unwrap();
}

pub(crate) async fn a_job_for_an_unknown_repository_is_not_found(h: &Harness) {
    let (org, admin, _) = org_with_repo(h, "Acme").await;
    let result = h.core.create_job(&admin, org, new_job(RepoId::new(), Some(1))).await;
    assert!(matches!(result, Err(Error::NotFound { kind: "repository" })), "{result:?}");
}

pub(crate) async fn invalid_job_input_is_rejected(h: &Harness) {
    let (org, admin, repo) = org_with_repo(h, "Acme").await;
    let mut blank = new_job(repo.id, Some(1));
    blank.issue.title = "   ".into();
    let mut huge = new_job(repo.id, Some(2));
    huge.issue.body = "x".repeat(300 * 1024);
    let mut zero = new_job(repo.id, Some(0));
    zero.issue.number = Some(0);
    let mut no_budget = new_job(repo.id, Some(3));
    no_budget.max_tokens = Some(0);
    let mut nul = new_job(repo.id, Some(4));
    nul.issue.body = "a\u{0}b".into();
    for bad in [blank, huge, zero, no_budget, nul] {
        let result = h.core.create_job(&admin, org, bad).await;
        assert!(matches!(result, Err(Error::InvalidInput(_))), "{result:?}");
    }
}

pub(crate) async fn a_queued_job_is_cancelled_at_once(h: &Harness) {
    let (org, admin, repo) = org_with_repo(h, "Acme").await;
    let job = h.core.create_job(&admin, org, new_job(repo.id, Some(1))).await.unwrap();
    let cancelled = h.core.cancel_job(&admin, org, job.id).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(cancelled.finished_at.is_some());
    assert!(cancelled.epoch > job.epoch, "the epoch moves so a stale worker is fenced off");
    let events = h.core.list_events(&admin, org, job.id, None, 100).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        (last.kind, last.from_state, last.to_state),
        (EventKind::StateChanged, Some(JobState::Queued), Some(JobState::Cancelled))
    );
    assert_eq!(last.actor, admin.principal.label());
}

pub(crate) async fn a_finished_job_cannot_be_cancelled(h: &Harness) {
    let (org, admin, repo) = org_with_repo(h, "Acme").await;
    let job = h.core.create_job(&admin, org, new_job(repo.id, Some(1))).await.unwrap();
    h.core.cancel_job(&admin, org, job.id).await.unwrap();
    let again = h.core.cancel_job(&admin, org, job.id).await;
    assert!(
        matches!(again, Err(Error::IllegalTransition { from: JobState::Cancelled, to: JobState::Cancelled })),
        "{again:?}"
    );
}

pub(crate) async fn only_finished_jobs_can_be_deleted(h: &Harness) {
    let (org, admin, repo) = org_with_repo(h, "Acme").await;
    let job = h.core.create_job(&admin, org, new_job(repo.id, Some(1))).await.unwrap();
    assert!(matches!(h.core.delete_job(&admin, org, job.id).await, Err(Error::Conflict(_))));
    h.core.cancel_job(&admin, org, job.id).await.unwrap();
    h.core.delete_job(&admin, org, job.id).await.unwrap();
    assert!(matches!(h.core.get_job(&admin, org, job.id).await, Err(Error::NotFound { .. })));
    assert!(matches!(h.core.list_events(&admin, org, job.id, None, 10).await, Err(Error::NotFound { .. })));
}

pub(crate) async fn events_are_appended_in_order_and_resume_after_an_id(h: &Harness) {
    let (org, admin, repo) = org_with_repo(h, "Acme").await;
    let job = h.core.create_job(&admin, org, new_job(repo.id, Some(1))).await.unwrap();
    let planning = NewEvent::state_changed("worker:w1", JobState::Queued, JobState::Planning);
    let e1 = h.store.append_event(org, job.id, planning).await.unwrap();
    let step = NewEvent::new("worker:w1", EventKind::StepSucceeded, "planned 2 steps").with_data(json!({"steps": 2}));
    let e2 = h.store.append_event(org, job.id, step).await.unwrap();
    assert!(e2.id > e1.id);
    assert_eq!(e2.data, json!({"steps": 2}));
    assert_eq!((e1.from_state, e1.to_state), (Some(JobState::Queued), Some(JobState::Planning)));

    let all = h.core.list_events(&admin, org, job.id, None, 100).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id && w[0].at <= w[1].at));
    let after = h.core.list_events(&admin, org, job.id, Some(e1.id), 100).await.unwrap();
    assert_eq!(after, vec![e2.clone()]);
    let limited = h.core.list_events(&admin, org, job.id, None, 1).await.unwrap();
    assert_eq!(limited.len(), 1);

    let missing = h.store.append_event(org, aicd_core::JobId::new(), NewEvent::new("x", EventKind::Note, "n")).await;
    assert!(matches!(missing, Err(Error::NotFound { .. })), "{missing:?}");
}

pub(crate) async fn usage_is_recorded_against_the_org_and_the_job(h: &Harness) {
    let (org, admin, repo) = org_with_repo(h, "Acme").await;
    let job = h.core.create_job(&admin, org, new_job(repo.id, Some(1))).await.unwrap();
    let start = Utc::now() - Duration::seconds(1);
    for (step, input, output, cost) in [("planning", 100, 20, 1_500), ("coding", 1_000, 400, 12_000)] {
        let usage = NewUsage {
            id: None,
            job_id: Some(job.id),
            step: step.into(),
            model: "m-1".into(),
            input_tokens: input,
            output_tokens: output,
            cost_micros: cost,
        };
        let record = h.store.record_usage(org, usage).await.unwrap();
        assert_eq!((record.job_id, record.repo_id), (Some(job.id), Some(repo.id)));
    }
    let end = Utc::now() + Duration::seconds(1);
    let totals = h.core.usage_totals(&admin, org, start, end).await.unwrap();
    assert_eq!((totals.input_tokens, totals.output_tokens, totals.cost_micros, totals.calls), (1_100, 420, 13_500, 2));
    let job = h.core.get_job(&admin, org, job.id).await.unwrap();
    assert_eq!((job.budget.spent_tokens, job.budget.spent_cost_micros), (1_520, 13_500));
    assert_eq!(h.store.list_usage(org, start, end).await.unwrap().len(), 2);
    // Outside the window: nothing.
    let earlier = h.core.usage_totals(&admin, org, start - Duration::days(2), start).await.unwrap();
    assert_eq!(earlier.calls, 0);
    assert!(matches!(h.core.usage_totals(&admin, org, end, start).await, Err(Error::InvalidInput(_))));
}

pub(crate) async fn the_same_usage_recorded_twice_is_stored_and_counted_once(h: &Harness) {
    let (org, admin, repo) = org_with_repo(h, "Acme").await;
    let job = h.core.create_job(&admin, org, new_job(repo.id, Some(1))).await.unwrap();
    let usage = NewUsage {
        id: Some(aicd_core::UsageId::new()),
        job_id: Some(job.id),
        step: "coding".into(),
        model: "m".into(),
        input_tokens: 100,
        output_tokens: 20,
        cost_micros: 7,
    };
    let first = h.store.record_usage(org, usage.clone()).await.unwrap();
    // A worker that never learnt whether its write committed records the usage again.
    let again = h.store.record_usage(org, usage).await.unwrap();
    assert_eq!(first.id, again.id);
    let start = job.created_at - Duration::hours(1);
    assert_eq!(h.store.list_usage(org, start, chrono::Utc::now()).await.unwrap().len(), 1);
    let job = h.store.get_job(org, job.id).await.unwrap();
    assert_eq!((job.budget.spent_tokens, job.budget.spent_cost_micros), (120, 7), "counted once");
}

pub(crate) async fn deleting_an_org_removes_everything_it_owns(h: &Harness) {
    let (org, admin, repo) = org_with_repo(h, "Acme").await;
    let job = h.core.create_job(&admin, org, new_job(repo.id, Some(1))).await.unwrap();
    let usage = NewUsage {
        id: None,
        job_id: Some(job.id),
        step: "planning".into(),
        model: "m".into(),
        input_tokens: 1,
        output_tokens: 1,
        cost_micros: 1,
    };
    h.store.record_usage(org, usage).await.unwrap();
    let (other, other_admin, other_repo) = org_with_repo(h, "Other").await;
    let survivor = h.core.create_job(&other_admin, other, new_job(other_repo.id, Some(1))).await.unwrap();

    h.core.delete_org(&admin, org).await.unwrap();
    assert!(matches!(h.store.get_job(org, job.id).await, Err(Error::NotFound { .. })));
    assert!(matches!(h.store.get_repo(org, repo.id).await, Err(Error::NotFound { .. })));
    assert!(h.store.list_repos(org).await.unwrap().is_empty());
    assert_eq!(h.store.get_job(other, survivor.id).await.unwrap().id, survivor.id);
}

/// Direct access to the database under the store, to move rows to chosen times (the store stamps
/// usage and events with the current time). On PostgreSQL it connects as the owner, whom RLS does
/// not restrict; on SQLite it opens a second connection to the same file.
enum Raw {
    Postgres(String),
    Sqlite(std::path::PathBuf),
}

/// A row to move in time.
enum Row {
    Usage(aicd_core::UsageId),
    Event(i64),
}

impl Raw {
    async fn set_time(&self, row: Row, at: chrono::DateTime<Utc>) {
        use sqlx::Connection;
        macro_rules! run {
            ($conn:expr) => {{
                let mut conn = $conn;
                let query = match row {
                    Row::Usage(id) => {
                        sqlx::query("UPDATE usage_records SET at = $1 WHERE id = $2").bind(at).bind(id.as_uuid())
                    }
                    Row::Event(id) => sqlx::query("UPDATE job_events SET at = $1 WHERE id = $2").bind(at).bind(id),
                };
                query.execute(&mut conn).await.unwrap().rows_affected()
            }};
        }
        let touched = match self {
            Raw::Postgres(url) => run!(sqlx::PgConnection::connect(url).await.unwrap()),
            Raw::Sqlite(path) => {
                run!(sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap())
            }
        };
        assert_eq!(touched, 1, "one row moved");
    }
}

/// The store, core and raw access for a test that sets timestamps: the harness's on PostgreSQL; a
/// store of its own on SQLite, whose file the test can open.
struct Timed {
    store: std::sync::Arc<aicd_core::store::SqlStore>,
    core: Core,
    raw: Raw,
    _sqlite: Option<aicd_testkit::TestSqlite>,
}

impl Timed {
    async fn new(h: &Harness) -> Self {
        match &h.postgres {
            Some(db) => Timed {
                store: h.store.clone(),
                core: h.core.clone(),
                raw: Raw::Postgres(db.owner_url()),
                _sqlite: None,
            },
            None => {
                let db = aicd_testkit::TestSqlite::new();
                let store = std::sync::Arc::new(aicd_core::store::SqlStore::sqlite(db.path()).await.unwrap());
                let core = crate::support::core(&store, h.repos.path());
                Timed { store, core, raw: Raw::Sqlite(db.path().to_owned()), _sqlite: Some(db) }
            }
        }
    }

    /// A new org and its admin.
    async fn org(&self, name: &str) -> (OrgId, Actor) {
        let subject = format!("https://idp.example|{name}-{}", uuid::Uuid::new_v4());
        let user = self.core.sign_in(NewUser { subject, email: None, name: None }).await.unwrap().id;
        let org = self
            .core
            .create_org(user, NewOrg { name: name.into(), max_concurrent_jobs: None, settings: None })
            .await
            .unwrap();
        (org.id, Actor::user(user, org.id, Role::OrgAdmin))
    }
}

fn utc(s: &str) -> chrono::DateTime<Utc> {
    s.parse().unwrap()
}

/// Drives a job (the only runnable one) to PR_OPEN through the dispatch port; returns the
/// `pr_open` event's id.
async fn open_pull_request(store: &aicd_core::store::SqlStore, org: OrgId, job: aicd_core::JobId) -> i64 {
    use aicd_core::jobs::{Fence, JobUpdate, PullRequestRef};
    use aicd_core::store::DispatchStore;
    let claimed = store.claim_next("w1", Duration::seconds(60)).await.unwrap().expect("the job is claimed");
    assert_eq!(claimed.id, job);
    let mut current = claimed;
    let mut last_event = 0;
    for state in [JobState::Planning, JobState::Coding, JobState::Reviewing, JobState::PrOpen] {
        let fence = Fence { worker: "w1".into(), epoch: current.epoch, state: current.state };
        let pull_request = (state == JobState::PrOpen).then(|| PullRequestRef {
            number: 1,
            url: "https://example.test/pull/1".into(),
            branch: "aicd/1".into(),
        });
        let update = JobUpdate { state: Some(state), pull_request, ..Default::default() };
        let (job, events) = store.update_job(org, job, &fence, update).await.unwrap();
        current = job;
        last_event = events[0].id;
    }
    assert_eq!(current.state, JobState::PrOpen);
    last_event
}

pub(crate) async fn a_usage_report_adds_up_per_repository_and_per_day(h: &Harness) {
    let t = Timed::new(h).await;
    let (acme, admin) = t.org("Acme").await;
    let repo_a = t.core.create_repo(&admin, acme, github_repo(&t.core, acme, "acme/a").await).await.unwrap();
    let repo_b = t.core.create_repo(&admin, acme, github_repo(&t.core, acme, "acme/b").await).await.unwrap();
    let (other, other_admin) = t.org("Other").await;
    let other_repo =
        t.core.create_repo(&other_admin, other, github_repo(&t.core, other, "other/a").await).await.unwrap();

    // Each job is taken to PR_OPEN before the next is created, so the claim takes it.
    let job_a = t.core.create_job(&admin, acme, new_job(repo_a.id, Some(1))).await.unwrap();
    let opened_a = open_pull_request(&t.store, acme, job_a.id).await;
    let job_b = t.core.create_job(&admin, acme, new_job(repo_b.id, Some(2))).await.unwrap();
    let opened_b = open_pull_request(&t.store, acme, job_b.id).await;
    // Another org, with usage and a pull request in the same period: never in Acme's report.
    let other_job = t.core.create_job(&other_admin, other, new_job(other_repo.id, Some(1))).await.unwrap();
    let opened_other = open_pull_request(&t.store, other, other_job.id).await;
    // A job still being worked on has opened no pull request.
    t.core.create_job(&admin, acme, new_job(repo_b.id, Some(3))).await.unwrap();

    let usage = |job: Option<aicd_core::JobId>, input: u64| NewUsage {
        id: None,
        job_id: job,
        step: "coding".into(),
        model: "m-1".into(),
        input_tokens: input,
        output_tokens: input / 10,
        cost_micros: input * 10,
    };
    let records = [
        (Some(job_a.id), 100, "2026-03-01T10:00:00Z"),
        (Some(job_a.id), 200, "2026-03-02T09:00:00Z"),
        (Some(job_b.id), 300, "2026-03-02T23:59:59.500000Z"),
        (None, 7, "2026-03-01T12:00:00Z"),
        // Just outside the period on either side.
        (Some(job_b.id), 50_000, "2026-03-03T00:00:00Z"),
        (Some(job_a.id), 60_000, "2026-02-28T23:59:59.999999Z"),
    ];
    for (job, input, at) in records {
        let record = t.store.record_usage(acme, usage(job, input)).await.unwrap();
        t.raw.set_time(Row::Usage(record.id), utc(at)).await;
    }
    let record = t.store.record_usage(other, usage(Some(other_job.id), 9_000)).await.unwrap();
    t.raw.set_time(Row::Usage(record.id), utc("2026-03-01T10:00:00Z")).await;
    // Job A's pull request was opened in the period, job B's just after it.
    t.raw.set_time(Row::Event(opened_a), utc("2026-03-02T12:00:00Z")).await;
    t.raw.set_time(Row::Event(opened_b), utc("2026-03-03T00:00:01Z")).await;
    t.raw.set_time(Row::Event(opened_other), utc("2026-03-01T08:00:00Z")).await;

    let (from, to) = (utc("2026-03-01T00:00:00Z"), utc("2026-03-03T00:00:00Z"));
    let report = t.core.usage_report(&admin, acme, from, to).await.unwrap();
    let summary = |input: u64, output: u64, cost: u64, calls: u64, pull_requests: u64| UsageSummary {
        input_tokens: input,
        output_tokens: output,
        cost_micros: cost,
        calls,
        pull_requests,
    };
    assert_eq!((report.from, report.to), (from, to));
    assert_eq!(report.totals, summary(607, 60, 6_070, 4, 1));
    let day = |s: &str| s.parse::<chrono::NaiveDate>().unwrap();
    assert_eq!(
        report.by_day,
        [
            DayUsage { day: day("2026-03-01"), summary: summary(107, 10, 1_070, 2, 0) },
            DayUsage { day: day("2026-03-02"), summary: summary(500, 50, 5_000, 2, 1) },
        ]
    );
    let mut by_repo = vec![
        RepoUsage { repo_id: repo_a.id, summary: summary(300, 30, 3_000, 2, 1) },
        RepoUsage { repo_id: repo_b.id, summary: summary(300, 30, 3_000, 1, 0) },
    ];
    by_repo.sort_by_key(|r| r.repo_id);
    assert_eq!(report.by_repo, by_repo);
    assert_eq!(
        report.by_step,
        [aicd_core::jobs::StepUsage {
            step: "coding".into(),
            model: "m-1".into(),
            summary: summary(607, 60, 6_070, 4, 0)
        }]
    );

    // The JSON form: the summary is flattened into each day and repository.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["by_day"][0]["day"], "2026-03-01");
    assert_eq!(json["by_day"][1]["pull_requests"], 1);
    assert_eq!(json["by_repo"][0]["repo_id"], json!(by_repo[0].repo_id));

    // The other org sees only its own.
    let theirs = t.core.usage_report(&other_admin, other, from, to).await.unwrap();
    assert_eq!(theirs.totals, summary(9_000, 900, 90_000, 1, 1));
    assert_eq!(theirs.by_repo.iter().map(|r| r.repo_id).collect::<Vec<_>>(), [other_repo.id]);
    // Nor can Acme's actor ask for it.
    assert!(matches!(t.core.usage_report(&admin, other, from, to).await, Err(Error::NotFound { .. })));

    // An empty period is an empty report.
    let empty = t.core.usage_report(&admin, acme, utc("2025-01-01T00:00:00Z"), utc("2025-02-01T00:00:00Z")).await;
    let empty = empty.unwrap();
    assert_eq!((empty.totals, empty.by_day.len(), empty.by_repo.len()), (UsageSummary::default(), 0, 0));

    // Periods must run forwards and span at most 366 days.
    for (from, to) in [(to, from), (from, from), (from, from + Duration::days(366) + Duration::microseconds(1))] {
        let result = t.core.usage_report(&admin, acme, from, to).await;
        assert!(matches!(result, Err(Error::InvalidInput(_))), "{result:?}");
    }
    t.core.usage_report(&admin, acme, from, from + Duration::days(366)).await.unwrap();
}

pub(crate) async fn creating_and_retrying_a_job_publish_its_created_events(h: &Harness) {
    use aicd_core::signals::{EventBus, LocalEventBus};
    let bus = std::sync::Arc::new(LocalEventBus::new());
    let core = h.core.clone().with_event_bus(bus.clone());
    let mut events = bus.subscribe();
    let (org, admin, repo) = org_with_repo(h, "Acme").await;

    let job = core.create_job(&admin, org, new_job(repo.id, Some(1))).await.unwrap();
    let created = events.try_recv().expect("the created event is published");
    assert_eq!((created.job_id, created.kind), (job.id, EventKind::Created));
    assert!(events.try_recv().is_err(), "nothing else");

    core.cancel_job(&admin, org, job.id).await.unwrap();
    assert_eq!(events.try_recv().unwrap().to_state, Some(JobState::Cancelled));
    let retried = core.retry_job(&admin, org, job.id).await.unwrap();
    let published: Vec<_> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    assert_eq!(published, h.core.list_events(&admin, org, retried.id, None, 10).await.unwrap());
    assert_eq!(published.iter().map(|e| e.kind).collect::<Vec<_>>(), [EventKind::Created, EventKind::Note]);
}
