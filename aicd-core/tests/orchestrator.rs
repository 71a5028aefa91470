//! The orchestrator end to end in one process: real stores (PostgreSQL with Redis signals, and
//! SQLite with in-process signals), the scripted agent and its test variants, and the memory forge.

#[path = "support/mod.rs"]
mod support;

use aicd_core::github::{GithubRepoId, InstallationId};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aicd_agent_api::testing::{FailingAgent, FlakyAgent, OverspendingAgent, RejectingAgent, SlowAgent};
use aicd_agent_api::{
    Agent, Changeset, Feedback, Output, Plan, Result as AgentResult, Review, ScriptedAgent, TaskContext, async_trait,
};
use aicd_core::forge::{BranchRef, CommentId, Forge, ForgeCall, ForgeFailure, MemoryForge, NewPullRequest};
use aicd_core::jobs::{EventKind, IssueRef, Job, JobState, NewJob, PullRequestRef, Trigger};
use aicd_core::orchestrator::{
    Backoff, Orchestrator, OrchestratorConfig, StepObserver, StepOutcome, StepReport, StepTimeouts, WorkerHandle,
};
use aicd_core::repos::{NewRepo, RepoSource, Repository};
use aicd_core::signals::{Doorbell, EventBus, LocalDoorbell, LocalEventBus, RedisSignals};
use aicd_core::store::{JobStore, TenancyStore};
use aicd_core::tenancy::{Actor, OrgPatch};
use aicd_core::{JobId, OrgId};
use aicd_testkit::TestRedis;

const REPO: &str = "acme/widgets";

struct World {
    h: support::Harness,
    forge: MemoryForge,
    doorbell: Arc<dyn Doorbell>,
    bus: Arc<dyn EventBus>,
    _redis: Option<TestRedis>,
    org: OrgId,
    admin: Actor,
    repo: Repository,
}

async fn world(postgres: bool) -> World {
    let (h, doorbell, bus, redis): (_, Arc<dyn Doorbell>, Arc<dyn EventBus>, _) = if postgres {
        let h = support::postgres().await;
        let redis = TestRedis::new().await;
        let signals = Arc::new(RedisSignals::connect(redis.url(), redis.namespace()).await.unwrap());
        (h, signals.clone(), signals, Some(redis))
    } else {
        (support::sqlite().await, Arc::new(LocalDoorbell::new()), Arc::new(LocalEventBus::new()), None)
    };
    let (org, _, admin) = h.org_with_admin("Acme").await;
    h.core.github_intake().link_installation(org.id, InstallationId::new(1).unwrap(), None, "operator").await.unwrap();
    let repo = NewRepo {
        full_name: REPO.into(),
        source: RepoSource::Github {
            installation_id: InstallationId::new(1).unwrap(),
            repo_id: GithubRepoId::new(1).unwrap(),
        },
        default_branch: None,
        settings: None,
    };
    let repo = h.core.create_repo(&admin, org.id, repo).await.unwrap();
    let forge = MemoryForge::new();
    forge.add_repo(
        REPO,
        "main",
        [
            ("README.md", "# Widgets\n"),
            ("tests/widget_test.rs", "#[test]\nfn a() { assert!(true); }\n#[test]\nfn b() { assert_eq!(1, 1); }\n"),
        ],
    );
    World { h, forge, doorbell, bus, _redis: redis, org: org.id, admin, repo }
}

fn config() -> OrchestratorConfig {
    OrchestratorConfig {
        concurrency: 4,
        lease: Duration::from_secs(3),
        heartbeat_every: Duration::from_millis(300),
        poll_interval: Duration::from_millis(200),
        max_attempts: 4,
        backoff: Backoff { base: Duration::from_millis(40), max: Duration::from_millis(200) },
        max_review_rounds: 3,
        ..OrchestratorConfig::default()
    }
}

fn write_block(path: &str, text: &str) -> String {
    format!("```aicd:write {path}\n{text}\n```\n")
}

impl World {
    fn orchestrator(&self, agent: impl Agent + 'static, config: OrchestratorConfig) -> Orchestrator {
        Orchestrator::new(
            self.h.store.clone(),
            Arc::new(agent),
            Arc::new(self.forge.clone()),
            self.doorbell.clone(),
            self.bus.clone(),
            config,
        )
    }

    fn worker(&self, agent: impl Agent + 'static) -> WorkerHandle {
        self.orchestrator(agent, config()).spawn_worker()
    }

    async fn job(&self, number: u64, body: &str) -> Job {
        let issue = IssueRef {
            number: Some(number),
            title: format!("Issue {number}"),
            body: body.into(),
            url: None,
            author: Some("octocat".into()),
        };
        let job =
            NewJob { repo_id: self.repo.id, issue, trigger: Trigger::Label, max_tokens: None, max_cost_micros: None };
        let core = self.h.core.clone().with_doorbell(self.doorbell.clone());
        core.create_job(&self.admin, self.org, job).await.unwrap()
    }

    async fn wait_until(&self, job: JobId, what: &str, done: impl Fn(&Job) -> bool) -> Job {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let current = self.h.store.get_job(self.org, job).await.unwrap();
            if done(&current) {
                return current;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {current:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The issue's comments once `done` holds for them (the progress comment is edited after the
    /// state it reports is written).
    async fn comments_once(&self, issue: u64, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let comments = self.forge.comments(REPO, issue);
            if done(&comments) {
                return comments;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {comments:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn settled(&self, job: JobId) -> Job {
        self.wait_until(job, "a settled state", |j| !j.state.is_runnable()).await
    }

    async fn states(&self, job: JobId) -> Vec<JobState> {
        let events = self.h.store.list_events(self.org, job, None, 1000).await.unwrap();
        let mut states = vec![JobState::Queued];
        states.extend(events.iter().filter(|e| e.kind == EventKind::StateChanged).filter_map(|e| e.to_state));
        states
    }

    async fn events_of(&self, job: JobId, kind: EventKind) -> Vec<String> {
        let events = self.h.store.list_events(self.org, job, None, 1000).await.unwrap();
        events.into_iter().filter(|e| e.kind == kind).map(|e| e.message).collect()
    }
}

/// Generates a test per backend: PostgreSQL with Redis signals, SQLite with in-process ones.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod postgres { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::world(true).await).await }
        )* }
        mod sqlite { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::world(false).await).await }
        )* }
    };
}

both!(
    the_scripted_agent_drives_a_job_through_every_state_to_pr_open,
    the_critic_sends_the_coder_back_until_it_approves,
    too_many_rejections_fail_the_job,
    transient_failures_are_retried_with_backoff,
    exhausted_retries_fail_the_job,
    a_permanent_error_fails_the_job_with_its_reason,
    an_exhausted_budget_fails_the_job,
    cancelling_a_running_job_stops_it_at_its_next_checkpoint,
    each_policy_rule_family_blocks_before_the_forge,
    a_secret_in_the_plan_or_review_text_blocks_the_pull_request,
    binary_content_is_blocked,
    an_organizations_protected_path_blocks_a_change_even_if_the_repository_removes_it,
    a_new_job_wakes_an_idle_worker_through_the_doorbell,
    many_jobs_on_several_workers_each_finish_exactly_once_within_org_limits,
    every_state_change_reaches_subscribers_of_the_event_bus,
    the_local_git_repository_holds_the_branch_and_commit,
    policy_feedback_sends_the_coder_back_once,
    a_publish_retried_after_a_lost_response_opens_one_pull_request,
    a_worker_shuts_down_gracefully_and_another_resumes,
    the_observer_sees_every_step_of_a_job_that_reaches_pr_open,
    an_agents_notes_reach_the_timeline_and_its_spending_is_charged_even_when_it_fails,
    the_coder_is_handed_the_changeset_the_feedback_is_about,
    a_paused_agent_is_requeued_without_spending_attempts,
    a_panicking_step_is_retried_and_its_lease_released_meanwhile,
    an_agent_that_always_panics_fails_the_job_after_its_attempts,
    an_agent_call_past_its_timeout_is_retried_like_a_transient_error,
    a_stalled_forge_call_times_out_and_publishing_is_retried,
    a_forge_panic_between_steps_is_retried_and_attempts_count_from_1,
);

async fn the_scripted_agent_drives_a_job_through_every_state_to_pr_open(w: World) {
    let worker = w.worker(ScriptedAgent::new());
    let body = format!("Please greet.\n\n{}", write_block("src/hello.txt", "Hello, world!"));
    let job = w.job(7, &body).await;
    let job = w.settled(job.id).await;
    assert_eq!(job.state, JobState::PrOpen, "{job:#?}");
    use JobState::*;
    assert_eq!(w.states(job.id).await, [Queued, Planning, Coding, Reviewing, PrOpen]);

    let pr = job.checkpoints.pull_request.clone().expect("the PR is recorded");
    let prs = w.forge.pull_request_details(REPO);
    assert_eq!(prs.len(), 1);
    assert_eq!(prs[0].number, pr.number);
    assert!(prs[0].body.contains("Closes #7"), "{}", prs[0].body);
    let files = w.forge.branch_files(REPO, &pr.branch).expect("the branch exists");
    assert_eq!(files.get("src/hello.txt").map(Vec::as_slice), Some(&b"Hello, world!\n"[..]));
    assert_eq!(w.forge.commits_on(REPO, &pr.branch), 1);

    let comments =
        w.comments_once(7, "the pull request in the progress comment", |c| c.iter().any(|c| c.contains(&pr.url))).await;
    assert_eq!(comments.len(), 1, "one progress comment, edited in place");
    assert!(job.budget.spent_tokens > 0, "usage is recorded against the job");
    assert_eq!(job.attempts.planning, 1);
    worker.shutdown(Duration::from_secs(5)).await;
}

/// Records every step the orchestrator reports.
#[derive(Default)]
struct RecordingObserver {
    steps: Mutex<Vec<(JobState, StepOutcome, Option<u64>)>>,
    timeouts: Mutex<Vec<(JobState, Duration)>>,
}

impl StepObserver for RecordingObserver {
    fn step_finished(&self, report: &StepReport<'_>) {
        let tokens = report.usage.map(|u| u.input_tokens + u.output_tokens);
        self.steps.lock().unwrap().push((report.step, report.outcome, tokens));
    }

    fn step_timed_out(&self, step: JobState, limit: Duration) {
        self.timeouts.lock().unwrap().push((step, limit));
    }
}

async fn the_observer_sees_every_step_of_a_job_that_reaches_pr_open(w: World) {
    let observer = Arc::new(RecordingObserver::default());
    let worker = w.orchestrator(ScriptedAgent::new(), config()).with_observer(observer.clone()).spawn_worker();
    let job = w.settled(w.job(1, &write_block("a.txt", "a")).await.id).await;
    assert_eq!(job.state, JobState::PrOpen, "{job:#?}");
    // The observer hears of the last step just after it is written: wait for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while observer.steps.lock().unwrap().len() < 4 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let steps = observer.steps.lock().unwrap().clone();
    let seen: Vec<(JobState, StepOutcome)> = steps.iter().map(|(s, o, _)| (*s, *o)).collect();
    use JobState::*;
    use StepOutcome::Succeeded;
    assert_eq!(seen, [(Planning, Succeeded), (Coding, Succeeded), (Reviewing, Succeeded), (PrOpen, Succeeded)]);
    assert!(
        steps[..3].iter().all(|(_, _, tokens)| tokens.is_some_and(|t| t > 0)),
        "agent steps report usage: {steps:?}"
    );
    assert_eq!(steps[3].2, None, "publishing calls no agent");
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn the_critic_sends_the_coder_back_until_it_approves(w: World) {
    let worker = w.worker(RejectingAgent::new(ScriptedAgent::new(), 2));
    let job = w.job(1, &write_block("a.txt", "a")).await;
    let job = w.settled(job.id).await;
    assert_eq!(job.state, JobState::PrOpen, "{job:#?}");
    assert_eq!(job.review_round, 2);
    use JobState::*;
    assert_eq!(
        w.states(job.id).await,
        [Queued, Planning, Coding, Reviewing, Coding, Reviewing, Coding, Reviewing, PrOpen]
    );
    let requested = w.events_of(job.id, EventKind::StepSucceeded).await;
    assert_eq!(requested.iter().filter(|m| m.starts_with("changes requested")).count(), 2);
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn too_many_rejections_fail_the_job(w: World) {
    let worker = w.worker(RejectingAgent::new(ScriptedAgent::new(), 10));
    let job = w.settled(w.job(1, &write_block("a.txt", "a")).await.id).await;
    assert_eq!(job.state, JobState::Failed);
    assert!(job.failure_reason.as_deref().unwrap().contains("critic requested changes 4 times"), "{job:#?}");
    assert!(w.forge.pull_requests(REPO).is_empty());
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn transient_failures_are_retried_with_backoff(w: World) {
    let worker = w.worker(FlakyAgent::new(ScriptedAgent::new(), 2));
    let job = w.settled(w.job(1, &write_block("a.txt", "a")).await.id).await;
    assert_eq!(job.state, JobState::PrOpen, "{job:#?}");
    assert_eq!((job.attempts.planning, job.attempts.coding, job.attempts.reviewing), (3, 3, 3));
    let failures = w.events_of(job.id, EventKind::StepFailed).await;
    assert_eq!(failures.len(), 6);
    assert!(failures.iter().all(|m| m.contains("retrying in")), "{failures:?}");
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn exhausted_retries_fail_the_job(w: World) {
    let worker = w.worker(FlakyAgent::new(ScriptedAgent::new(), 100));
    let job = w.settled(w.job(1, &write_block("a.txt", "a")).await.id).await;
    assert_eq!(job.state, JobState::Failed);
    let reason = job.failure_reason.unwrap();
    assert!(reason.contains("did not succeed in 4 attempts"), "{reason}");
    assert_eq!(job.attempts.planning, 4);
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn a_permanent_error_fails_the_job_with_its_reason(w: World) {
    let worker = w.worker(FailingAgent::new("the model refused the request"));
    let failed = w.settled(w.job(1, "anything").await.id).await;
    assert_eq!(failed.state, JobState::Failed);
    assert!(failed.failure_reason.as_deref().unwrap().contains("the model refused the request"));
    assert_eq!(failed.attempts.planning, 1, "permanent errors are not retried");
    worker.shutdown(Duration::from_secs(5)).await;

    let worker = w.worker(ScriptedAgent::new());
    let nothing = w.settled(w.job(2, "No instructions here.").await.id).await;
    assert_eq!(nothing.state, JobState::Failed);
    assert!(nothing.failure_reason.as_deref().unwrap().contains("nothing to do"), "{nothing:#?}");
    let failed = |c: &[String]| c.first().is_some_and(|c| c.contains("Failed") && c.contains("nothing to do"));
    w.comments_once(2, "the failure in the progress comment", failed).await;
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn an_exhausted_budget_fails_the_job(w: World) {
    let worker = w.worker(OverspendingAgent::new(ScriptedAgent::new(), 5_000_000, 0));
    let job = w.settled(w.job(1, &write_block("a.txt", "a")).await.id).await;
    assert_eq!(job.state, JobState::Failed);
    assert!(job.failure_reason.as_deref().unwrap().starts_with("budget exhausted"), "{job:#?}");
    assert!(job.checkpoints.plan.is_none(), "an over-budget step is not checkpointed");
    assert!(w.forge.pull_requests(REPO).is_empty());
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn cancelling_a_running_job_stops_it_at_its_next_checkpoint(w: World) {
    let worker = w.worker(SlowAgent::new(ScriptedAgent::new(), Duration::from_secs(20)));
    let job = w.job(1, &write_block("a.txt", "a")).await;
    w.wait_until(job.id, "planning", |j| j.state == JobState::Planning).await;
    let marked = w.h.core.cancel_job(&w.admin, w.org, job.id).await.unwrap();
    assert!(marked.cancel_requested);
    let started = std::time::Instant::now();
    let job = w.settled(job.id).await;
    assert_eq!(job.state, JobState::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(15), "the slow agent call was abandoned");
    assert!(job.lease.is_none(), "the lease is released");
    assert!(w.forge.pull_requests(REPO).is_empty());
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn each_policy_rule_family_blocks_before_the_forge(w: World) {
    w.h.store.update_org(w.org, OrgPatch { max_concurrent_jobs: Some(10), ..Default::default() }).await.unwrap();
    let fake_aws_key = format!("AKIA{}", "QWERTYUIOPASDFGH");
    let cases: Vec<(&str, String)> = vec![
        ("protected_path", write_block(".github/workflows/ci.yml", "on: push")),
        ("secret", write_block("config.py", &format!("aws_key = \"{fake_aws_key}\""))),
        ("unsafe_path", write_block("../outside.txt", "x")),
        ("deleted_test", "```aicd:delete tests/widget_test.rs\n```\n".to_owned()),
        (
            "removed_assertion",
            write_block("tests/widget_test.rs", "#[test]\nfn a() { assert!(true); }\n#[test]\nfn b() {}"),
        ),
        (
            "weakened_test",
            write_block(
                "tests/widget_test.rs",
                "#[test]\n#[ignore]\nfn a() { assert!(true); }\n#[test]\nfn b() { assert_eq!(1, 1); }",
            ),
        ),
        ("too_many_files", (0..60).map(|i| write_block(&format!("f{i}.txt"), "x")).collect()),
    ];
    let worker = w.worker(ScriptedAgent::new());
    let mut jobs = Vec::new();
    for (n, (rule, body)) in cases.iter().enumerate() {
        jobs.push((*rule, w.job(n as u64 + 1, body).await.id));
    }
    for (rule, id) in jobs {
        let job = w.settled(id).await;
        assert_eq!(job.state, JobState::Failed, "{rule}: {job:#?}");
        assert!(job.failure_reason.as_deref().unwrap().contains("policy engine blocked"), "{rule}");
        let events = w.h.store.list_events(w.org, id, None, 1000).await.unwrap();
        let blocked = events.iter().find(|e| e.kind == EventKind::PolicyBlocked).expect("a policy event");
        let rules: Vec<_> = blocked.data["violations"].as_array().unwrap().iter().map(|v| v["rule"].clone()).collect();
        assert!(rules.contains(&serde_json::json!(rule)), "{rule}: {rules:?}");
        assert!(!blocked.message.contains(&fake_aws_key), "secrets never reach the timeline");
    }
    assert_eq!(w.forge.call_count(ForgeCall::CreateBranch), 0, "nothing reached the forge");
    assert_eq!(w.forge.call_count(ForgeCall::CommitChanges), 0);
    worker.shutdown(Duration::from_secs(5)).await;
}

/// An agent whose files are clean but whose plan or review text repeats a secret: the text would
/// reach the pull request's body.
struct Leaky {
    plan: String,
    review: String,
}

#[async_trait]
impl Agent for Leaky {
    fn name(&self) -> &str {
        "leaky"
    }

    async fn plan(&self, _: &TaskContext) -> AgentResult<Output<Plan>> {
        let step = aicd_agent_api::PlanStep::new("write a.txt");
        Ok(Output::new(Plan::new(self.plan.clone(), vec![step]), aicd_agent_api::Usage::zero("leaky")))
    }

    async fn code(&self, _: &TaskContext, _: &Plan, _: Option<&Feedback>) -> AgentResult<Output<Changeset>> {
        let changes = vec![aicd_agent_api::FileChange::write("a.txt", "fine\n")];
        Ok(Output::new(Changeset { summary: "Add a.txt".into(), changes }, aicd_agent_api::Usage::zero("leaky")))
    }

    async fn review(&self, _: &TaskContext, _: &Plan, _: &Changeset) -> AgentResult<Output<Review>> {
        Ok(Output::new(Review::approve(self.review.clone()), aicd_agent_api::Usage::zero("leaky")))
    }
}

async fn a_secret_in_the_plan_or_review_text_blocks_the_pull_request(w: World) {
    let token = format!("ghp_{}", "Zq8rT2mW5xY7bN4kL1vC9dF3gH6jP0sA2eR5");
    let leaks = [
        Leaky { plan: format!("Call the API with {token} as the bearer"), review: "Looks right".into() },
        Leaky { plan: "Write a.txt".into(), review: format!("Approved; the token\n{token}\nworks") },
    ];
    for (n, agent) in leaks.into_iter().enumerate() {
        let worker = w.worker(agent);
        let job = w.settled(w.job(n as u64 + 1, "please").await.id).await;
        worker.shutdown(Duration::from_secs(5)).await;
        assert_eq!(job.state, JobState::Failed, "{job:#?}");
        let reason = job.failure_reason.as_deref().unwrap();
        assert!(reason.contains("policy engine blocked"), "{reason}");
        assert!(reason.contains("pull request body"), "{reason}");
        assert!(!reason.contains(&token), "the secret is redacted: {reason}");
        let events = w.h.store.list_events(w.org, job.id, None, 1000).await.unwrap();
        let blocked = events.iter().find(|e| e.kind == EventKind::PolicyBlocked).expect("a policy event");
        assert_eq!(blocked.data["violations"][0]["rule"], "secret");
        assert!(!blocked.message.contains(&token));
    }
    assert_eq!(w.forge.call_count(ForgeCall::CreateBranch), 0, "nothing was pushed");
    assert!(w.forge.pull_requests(REPO).is_empty());
}

async fn an_organizations_protected_path_blocks_a_change_even_if_the_repository_removes_it(w: World) {
    let policy = serde_json::json!({ "policy": { "protected_paths": ["deploy/**"] } });
    let patch = OrgPatch { settings: Some(policy), ..Default::default() };
    w.h.core.update_org(&w.admin, w.org, patch).await.unwrap();
    // The repository's own file tries to clear the list; it can only add to it.
    w.forge.add_repo(REPO, "main", [("README.md", "# Widgets\n"), (".aicd.toml", "[policy]\nprotected_paths = []\n")]);
    let worker = w.worker(ScriptedAgent::new());
    let blocked = w.job(1, &write_block("deploy/app.yml", "replicas: 3")).await;
    let allowed = w.job(2, &write_block("src/app.txt", "fine")).await;
    let blocked = w.settled(blocked.id).await;
    assert_eq!(blocked.state, JobState::Failed, "{blocked:#?}");
    let events = w.h.store.list_events(w.org, blocked.id, None, 1000).await.unwrap();
    let event = events.iter().find(|e| e.kind == EventKind::PolicyBlocked).expect("a policy event");
    let violations = event.data["violations"].as_array().unwrap();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0]["rule"], "protected_path");
    assert_eq!(violations[0]["path"], "deploy/app.yml");
    assert!(violations[0]["message"].as_str().unwrap().contains("(matches `deploy/**`)"), "{violations:?}");
    let allowed = w.settled(allowed.id).await;
    assert_eq!(allowed.state, JobState::PrOpen, "{allowed:#?}");
    let pr = allowed.checkpoints.pull_request.expect("the allowed change is published");
    assert!(w.forge.branch_files(REPO, &pr.branch).unwrap().contains_key("src/app.txt"));
    assert!(w.forge.pull_request_details(REPO).iter().all(|p| p.number == pr.number), "one pull request only");
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn policy_feedback_sends_the_coder_back_once(w: World) {
    let worker =
        w.orchestrator(ScriptedAgent::new(), OrchestratorConfig { policy_feedback: true, ..config() }).spawn_worker();
    let job = w.settled(w.job(1, &write_block(".github/workflows/x.yml", "on: push")).await.id).await;
    assert_eq!(job.state, JobState::Failed);
    use JobState::*;
    assert_eq!(w.states(job.id).await, [Queued, Planning, Coding, Coding, Failed]);
    assert_eq!(w.events_of(job.id, EventKind::PolicyBlocked).await.len(), 2);
    assert_eq!(job.attempts.policy_blocks, 1);
    worker.shutdown(Duration::from_secs(5)).await;

    // The coder sent back is handed the changeset without what the policy engine blocked.
    let agent = Arc::new(ReportingAgent { inner: ScriptedAgent::new(), feedback: Mutex::new(Vec::new()) });
    let worker = w.orchestrator(agent.clone(), OrchestratorConfig { policy_feedback: true, ..config() }).spawn_worker();
    let body = format!("{}{}", write_block("a.txt", "fine"), write_block(".github/workflows/x.yml", "on: push"));
    w.settled(w.job(2, &body).await.id).await;
    let feedback = agent.feedback.lock().unwrap().clone();
    let previous = feedback.first().and_then(|f| f.previous.clone()).expect("the blocked change comes back");
    assert_eq!(previous.paths(), ["a.txt"], "{feedback:#?}");
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn a_publish_retried_after_a_lost_response_opens_one_pull_request(w: World) {
    w.forge.fail_next(ForgeCall::CommitChanges, ForgeFailure::LostResponse, 1);
    w.forge.fail_next(ForgeCall::OpenPullRequest, ForgeFailure::LostResponse, 1);
    w.forge.fail_next(ForgeCall::CreateBranch, ForgeFailure::Transient, 1);
    let agent = CountingAgent::default();
    let reviews = agent.reviews.clone();
    let worker = w.worker(agent);
    let job = w.settled(w.job(1, &write_block("a.txt", "a")).await.id).await;
    assert_eq!(job.state, JobState::PrOpen, "{job:#?}");
    assert_eq!(w.forge.pull_requests(REPO).len(), 1, "exactly one pull request");
    assert_eq!(w.forge.commits_on(REPO, &job.checkpoints.pull_request.unwrap().branch), 1, "exactly one commit");
    assert_eq!(*reviews.lock().unwrap(), 1, "the checkpointed review was not paid for again");
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn a_worker_shuts_down_gracefully_and_another_resumes(w: World) {
    let slow = w.worker(SlowAgent::new(ScriptedAgent::new(), Duration::from_secs(20)));
    let job = w.job(1, &write_block("a.txt", "a")).await;
    w.wait_until(job.id, "planning", |j| j.state == JobState::Planning && j.lease.is_some()).await;
    slow.shutdown(Duration::from_secs(5)).await;
    let released = w.h.store.get_job(w.org, job.id).await.unwrap();
    assert!(released.lease.is_none(), "shutdown releases the lease at once: {released:#?}");
    assert_eq!(released.state, JobState::Planning);
    let worker = w.worker(ScriptedAgent::new());
    let job = w.settled(job.id).await;
    assert_eq!(job.state, JobState::PrOpen);
    worker.shutdown(Duration::from_secs(5)).await;
}

/// The scripted agent, counting reviews.
#[derive(Default)]
struct CountingAgent {
    inner: ScriptedAgent,
    reviews: Arc<Mutex<u32>>,
}

#[async_trait]
impl Agent for CountingAgent {
    fn name(&self) -> &str {
        "counting"
    }
    async fn plan(&self, ctx: &TaskContext) -> AgentResult<Output<Plan>> {
        self.inner.plan(ctx).await
    }
    async fn code(
        &self,
        ctx: &TaskContext,
        plan: &Plan,
        feedback: Option<&Feedback>,
    ) -> AgentResult<Output<Changeset>> {
        self.inner.code(ctx, plan, feedback).await
    }
    async fn review(&self, ctx: &TaskContext, plan: &Plan, changeset: &Changeset) -> AgentResult<Output<Review>> {
        *self.reviews.lock().unwrap() += 1;
        self.inner.review(ctx, plan, changeset).await
    }
}

/// An agent that records which jobs are inside a call at any moment, to catch a job held by two
/// workers at once or an org over its concurrency limit.
#[derive(Clone, Default)]
struct Watchdog {
    inner: Arc<ScriptedAgent>,
    state: Arc<Mutex<WatchState>>,
    org_of: Arc<Mutex<HashMap<String, OrgId>>>,
}

#[derive(Default)]
struct WatchState {
    active: HashSet<String>,
    per_org: HashMap<OrgId, usize>,
    max_per_org: HashMap<OrgId, usize>,
    double_held: Vec<String>,
}

impl Watchdog {
    async fn guard<T>(&self, ctx: &TaskContext, call: impl Future<Output = T>) -> T {
        let job = ctx.job_id().to_owned();
        let org = self.org_of.lock().unwrap().get(&job).copied().unwrap_or(OrgId(uuid::Uuid::nil()));
        {
            let mut s = self.state.lock().unwrap();
            if !s.active.insert(job.clone()) {
                s.double_held.push(job.clone());
            }
            let n = s.per_org.entry(org).or_default();
            *n += 1;
            let n = *n;
            let max = s.max_per_org.entry(org).or_default();
            *max = (*max).max(n);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let out = call.await;
        let mut s = self.state.lock().unwrap();
        s.active.remove(&job);
        *s.per_org.entry(org).or_default() -= 1;
        out
    }
}

#[async_trait]
impl Agent for Watchdog {
    fn name(&self) -> &str {
        "watchdog"
    }
    async fn plan(&self, ctx: &TaskContext) -> AgentResult<Output<Plan>> {
        self.guard(ctx, self.inner.plan(ctx)).await
    }
    async fn code(
        &self,
        ctx: &TaskContext,
        plan: &Plan,
        feedback: Option<&Feedback>,
    ) -> AgentResult<Output<Changeset>> {
        self.guard(ctx, self.inner.code(ctx, plan, feedback)).await
    }
    async fn review(&self, ctx: &TaskContext, plan: &Plan, changeset: &Changeset) -> AgentResult<Output<Review>> {
        self.guard(ctx, self.inner.review(ctx, plan, changeset)).await
    }
}

async fn many_jobs_on_several_workers_each_finish_exactly_once_within_org_limits(w: World) {
    w.h.store.update_org(w.org, OrgPatch { max_concurrent_jobs: Some(2), ..Default::default() }).await.unwrap();
    let (other, _, other_admin) = w.h.org_with_admin("Other").await;
    let installation = InstallationId::new(2).unwrap();
    w.h.core.github_intake().link_installation(other.id, installation, None, "operator").await.unwrap();
    let other_repo = NewRepo {
        full_name: REPO.into(),
        source: RepoSource::Github {
            installation_id: InstallationId::new(2).unwrap(),
            repo_id: GithubRepoId::new(2).unwrap(),
        },
        default_branch: None,
        settings: None,
    };
    let other_repo = w.h.core.create_repo(&other_admin, other.id, other_repo).await.unwrap();
    let agent = Watchdog::default();
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let config = OrchestratorConfig { worker_id: format!("w{i}"), concurrency: 3, ..config() };
            Orchestrator::new(
                w.h.store.clone(),
                Arc::new(agent.clone()),
                Arc::new(w.forge.clone()),
                w.doorbell.clone(),
                w.bus.clone(),
                config,
            )
            .spawn_worker()
        })
        .collect();
    let mut jobs = Vec::new();
    for n in 1..=24u64 {
        let (org, actor, repo) =
            if n % 3 == 0 { (other.id, &other_admin, other_repo.id) } else { (w.org, &w.admin, w.repo.id) };
        let issue = IssueRef {
            number: Some(n),
            title: format!("#{n}"),
            body: write_block(&format!("f{n}.txt"), "x"),
            url: None,
            author: None,
        };
        let job =
            w.h.core
                .create_job(
                    actor,
                    org,
                    NewJob { repo_id: repo, issue, trigger: Trigger::Api, max_tokens: None, max_cost_micros: None },
                )
                .await
                .unwrap();
        agent.org_of.lock().unwrap().insert(job.id.to_string(), org);
        jobs.push((org, job.id));
        w.doorbell.ring().await;
    }
    for (org, id) in &jobs {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let job = w.h.store.get_job(*org, *id).await.unwrap();
            if !job.state.is_runnable() {
                assert_eq!(job.state, JobState::PrOpen, "{job:#?}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "job {id} did not finish");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let events = w.h.store.list_events(*org, *id, None, 1000).await.unwrap();
        let opened = events.iter().filter(|e| e.to_state == Some(JobState::PrOpen)).count();
        assert_eq!(opened, 1, "job {id} reached PR_OPEN exactly once");
    }
    for worker in workers {
        worker.shutdown(Duration::from_secs(5)).await;
    }
    assert_eq!(w.forge.pull_requests(REPO).len(), 24, "one pull request per job");
    let s = agent.state.lock().unwrap();
    assert!(s.double_held.is_empty(), "jobs held by two workers at once: {:?}", s.double_held);
    assert!(s.max_per_org[&w.org] <= 2, "Acme's limit of 2 was exceeded: {}", s.max_per_org[&w.org]);
    assert!(s.max_per_org[&w.org] >= 1);
    let _ = other;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_jobs_still_finish_by_polling() {
    let mut w = world(true).await;
    let redis = w._redis.as_ref().unwrap();
    let mut proxy = aicd_testkit::TcpProxy::redis(redis.url()).await;
    let proxied = format!("redis://127.0.0.1:{}", proxy.port());
    let signals = Arc::new(RedisSignals::connect(&proxied, redis.namespace()).await.unwrap());
    w.doorbell = signals.clone();
    w.bus = signals;
    let worker = w.worker(ScriptedAgent::new());
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let job = w.job(1, &write_block("a.txt", "a")).await;
    let job = w.settled(job.id).await;
    assert_eq!(job.state, JobState::PrOpen);
    worker.shutdown(Duration::from_secs(5)).await;
}

/// Writes one binary file, whatever the issue says.
struct BinaryAgent(ScriptedAgent);

#[async_trait]
impl Agent for BinaryAgent {
    fn name(&self) -> &str {
        "binary"
    }
    async fn plan(&self, ctx: &TaskContext) -> AgentResult<Output<Plan>> {
        self.0.plan(ctx).await
    }
    async fn code(&self, _: &TaskContext, _: &Plan, _: Option<&Feedback>) -> AgentResult<Output<Changeset>> {
        let change = aicd_agent_api::FileChange::write("logo.png", vec![0x89, b'P', b'N', b'G', 0, 0, 0xff]);
        Ok(Output::new(Changeset::new("add a logo", vec![change]), aicd_agent_api::Usage::zero("binary")))
    }
    async fn review(&self, ctx: &TaskContext, plan: &Plan, changeset: &Changeset) -> AgentResult<Output<Review>> {
        self.0.review(ctx, plan, changeset).await
    }
}

async fn binary_content_is_blocked(w: World) {
    let worker = w.worker(BinaryAgent(ScriptedAgent::new()));
    let job = w.settled(w.job(1, &write_block("a.txt", "a")).await.id).await;
    assert_eq!(job.state, JobState::Failed);
    let events = w.h.store.list_events(w.org, job.id, None, 1000).await.unwrap();
    let blocked = events.iter().find(|e| e.kind == EventKind::PolicyBlocked).expect("a policy event");
    assert_eq!(blocked.data["violations"][0]["rule"], "binary_content");
    assert_eq!(w.forge.call_count(ForgeCall::CreateBranch), 0);
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn a_new_job_wakes_an_idle_worker_through_the_doorbell(w: World) {
    // With a one-minute poll, only the doorbell can get this job done within the wait's 30 s.
    let config = OrchestratorConfig { poll_interval: Duration::from_secs(60), ..config() };
    let worker = w.orchestrator(ScriptedAgent::new(), config).spawn_worker();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let job = w.settled(w.job(1, &write_block("a.txt", "a")).await.id).await;
    assert_eq!(job.state, JobState::PrOpen);
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn the_local_git_repository_holds_the_branch_and_commit(w: World) {
    let dir = tempfile::tempdir_in(w.h.repos.path()).unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(dir.path().join("README.md"), "# Local\n").unwrap();
    git(&["add", "README.md"]);
    git(&["commit", "-q", "-m", "initial"]);
    let repo = NewRepo {
        full_name: "me/local".into(),
        source: RepoSource::Local { path: dir.path().to_str().unwrap().into() },
        default_branch: None,
        settings: None,
    };
    let repo = w.h.core.create_repo(&w.admin, w.org, repo).await.unwrap();
    let forge = aicd_core::forge::LocalGitForge::new();
    let orch = Orchestrator::new(
        w.h.store.clone(),
        Arc::new(ScriptedAgent::new()),
        Arc::new(forge.clone()),
        w.doorbell.clone(),
        w.bus.clone(),
        config(),
    );
    let worker = orch.spawn_worker();
    let issue = IssueRef {
        number: Some(3),
        title: "Greet".into(),
        body: write_block("hello.txt", "Hello from AI-CD"),
        url: None,
        author: None,
    };
    let new = NewJob { repo_id: repo.id, issue, trigger: Trigger::Api, max_tokens: None, max_cost_micros: None };
    let job = w.h.core.clone().with_doorbell(w.doorbell.clone()).create_job(&w.admin, w.org, new).await.unwrap();
    let job = w.settled(job.id).await;
    assert_eq!(job.state, JobState::PrOpen, "{job:#?}");
    let branch = job.checkpoints.pull_request.as_ref().unwrap().branch.clone();
    assert_eq!(git(&["show", &format!("{branch}:hello.txt")]), "Hello from AI-CD\n");
    assert_eq!(git(&["rev-list", "--count", &format!("main..{branch}")]).trim(), "1", "one commit on the branch");
    assert_eq!(git(&["rev-parse", "--abbrev-ref", "HEAD"]).trim(), "main", "the checkout is untouched");
    let prs = forge.pull_requests(&repo).await.unwrap();
    assert_eq!(prs.len(), 1);
    let diff = forge.pull_request_diff(&repo, prs[0].number).await.unwrap();
    assert!(diff.contains("+Hello from AI-CD"), "{diff}");
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn every_state_change_reaches_subscribers_of_the_event_bus(w: World) {
    let mut events = w.bus.subscribe();
    let worker = w.worker(ScriptedAgent::new());
    let done = w.settled(w.job(1, &write_block("a.txt", "a")).await.id).await;
    worker.shutdown(Duration::from_secs(5)).await;
    let core = w.h.core.clone().with_event_bus(w.bus.clone());
    let queued = core
        .create_job(
            &w.admin,
            w.org,
            NewJob {
                repo_id: w.repo.id,
                issue: IssueRef { number: Some(2), title: "Two".into(), body: String::new(), url: None, author: None },
                trigger: Trigger::Api,
                max_tokens: None,
                max_cost_micros: None,
            },
        )
        .await
        .unwrap();
    core.cancel_job(&w.admin, w.org, queued.id).await.unwrap();

    let mut seen: Vec<(JobId, JobState)> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(&(queued.id, JobState::Cancelled)) {
        let event = tokio::time::timeout_at(deadline, events.recv()).await.expect("events arrive").unwrap();
        if let Some(to) = event.to_state {
            seen.push((event.job_id, to));
        }
    }
    use JobState::*;
    let of_done: Vec<_> = seen.iter().filter(|(id, _)| *id == done.id).map(|(_, s)| *s).collect();
    assert_eq!(of_done, [Planning, Coding, Reviewing, PrOpen]);
}

/// Notes what it does and reports spending through the progress sink; its coder fails after
/// spending when the issue body says `fail`, and records the feedback it is given.
struct ReportingAgent {
    inner: ScriptedAgent,
    feedback: Mutex<Vec<Feedback>>,
}

#[async_trait]
impl Agent for ReportingAgent {
    fn name(&self) -> &str {
        "reporting"
    }

    async fn plan(&self, ctx: &TaskContext) -> AgentResult<Output<Plan>> {
        ctx.progress().note("read README.md:1-1");
        let call = aicd_agent_api::Usage::new("m", 100, 10, 1_000);
        ctx.progress().spend(&call);
        let mut out = self.inner.plan(ctx).await?.with_meta("prompt", "planner@1");
        out.usage.accumulate(&call);
        Ok(out)
    }

    async fn code(
        &self,
        ctx: &TaskContext,
        plan: &Plan,
        feedback: Option<&Feedback>,
    ) -> AgentResult<Output<Changeset>> {
        self.feedback.lock().unwrap().extend(feedback.cloned());
        ctx.progress().spend(&aicd_agent_api::Usage::new("m", 7, 3, 50));
        if ctx.issue().body.contains("fail") {
            return Err(aicd_agent_api::AgentError::permanent("the model gave up"));
        }
        self.inner.code(ctx, plan, feedback).await
    }

    async fn review(&self, ctx: &TaskContext, plan: &Plan, changeset: &Changeset) -> AgentResult<Output<Review>> {
        if self.feedback.lock().unwrap().is_empty() {
            return Ok(Output::new(Review::request_changes("add a docstring", vec![]), Default::default()));
        }
        self.inner.review(ctx, plan, changeset).await
    }
}

async fn an_agents_notes_reach_the_timeline_and_its_spending_is_charged_even_when_it_fails(w: World) {
    let agent = Arc::new(ReportingAgent { inner: ScriptedAgent::new(), feedback: Mutex::new(Vec::new()) });
    let worker = w.orchestrator(agent.clone(), config()).spawn_worker();
    let body = format!("fail\n{}", write_block("a.txt", "a"));
    let job = w.settled(w.job(1, &body).await.id).await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    assert!(job.failure_reason.as_deref().unwrap().contains("the model gave up"));
    // The planner's note is on the timeline, as the agent's, and its result names the prompt.
    let events = w.h.store.list_events(w.org, job.id, None, 1000).await.unwrap();
    let activity: Vec<_> = events.iter().filter(|e| e.kind == EventKind::Activity).collect();
    assert_eq!(
        activity.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
        ["read README.md:1-1", "read the issue's script: 1 scripted change"],
        "the agent's notes, in order"
    );
    assert_eq!(activity[0].actor, "agent:reporting");
    let planned = events.iter().find(|e| e.kind == EventKind::StepSucceeded).unwrap();
    assert_eq!(planned.data["agent"]["prompt"], "planner@1", "{:#?}", planned.data);
    assert!(planned.data["usage"]["input_tokens"].as_u64().unwrap() >= 100, "{:#?}", planned.data);
    // The planner is charged its output's usage (which includes what it reported), the failed
    // coder what it reported before failing.
    let planning_tokens = 100 + 10;
    assert!(job.budget.spent_tokens >= planning_tokens + 10, "{:?}", job.budget);
    assert!(job.budget.spent_cost_micros >= 1_050, "{:?}", job.budget);
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn the_coder_is_handed_the_changeset_the_feedback_is_about(w: World) {
    let agent = Arc::new(ReportingAgent { inner: ScriptedAgent::new(), feedback: Mutex::new(Vec::new()) });
    let worker = w.orchestrator(agent.clone(), config()).spawn_worker();
    let job = w.settled(w.job(1, &write_block("a.txt", "a")).await.id).await;
    assert_eq!(job.state, JobState::PrOpen, "{job:#?}");
    let feedback = agent.feedback.lock().unwrap().clone();
    assert_eq!(feedback.len(), 1, "{feedback:#?}");
    assert_eq!(feedback[0].notes, ["add a docstring"]);
    let previous = feedback[0].previous.as_ref().expect("the reviewed changeset comes with the feedback");
    assert_eq!(previous.paths(), ["a.txt"]);
    worker.shutdown(Duration::from_secs(5)).await;
}

/// Paused (its provider's circuit open) for the first `pauses` plans.
struct PausingAgent {
    inner: ScriptedAgent,
    pauses: std::sync::atomic::AtomicU32,
}

#[async_trait]
impl Agent for PausingAgent {
    fn name(&self) -> &str {
        "pausing"
    }

    async fn plan(&self, ctx: &TaskContext) -> AgentResult<Output<Plan>> {
        use std::sync::atomic::Ordering;
        if self.pauses.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(aicd_agent_api::AgentError::paused("the provider is failing", Duration::from_millis(50)));
        }
        self.inner.plan(ctx).await
    }

    async fn code(
        &self,
        ctx: &TaskContext,
        plan: &Plan,
        feedback: Option<&Feedback>,
    ) -> AgentResult<Output<Changeset>> {
        self.inner.code(ctx, plan, feedback).await
    }

    async fn review(&self, ctx: &TaskContext, plan: &Plan, changeset: &Changeset) -> AgentResult<Output<Review>> {
        self.inner.review(ctx, plan, changeset).await
    }
}

async fn a_paused_agent_is_requeued_without_spending_attempts(w: World) {
    // More pauses than the step has attempts: they are not attempts.
    let agent = PausingAgent { inner: ScriptedAgent::new(), pauses: std::sync::atomic::AtomicU32::new(6) };
    let worker = w.worker(agent);
    let job = w.settled(w.job(1, &write_block("a.txt", "a")).await.id).await;
    assert_eq!(job.state, JobState::PrOpen, "{job:#?}");
    assert_eq!(job.attempts.planning, 1);
    let paused = w.events_of(job.id, EventKind::StepFailed).await;
    assert_eq!(paused.len(), 6, "{paused:?}");
    assert!(paused.iter().all(|m| m.contains("paused") && m.contains("not counted")), "{paused:?}");
    worker.shutdown(Duration::from_secs(5)).await;
}

/// What [`TroubledCoder`] does instead of coding.
#[derive(Clone, Copy)]
enum Trouble {
    /// Panics.
    Panic,
    /// Sleeps this long first (then codes).
    Stall(Duration),
}

/// Has `trouble` in its first `times` calls to `code`, and otherwise works as the scripted
/// agent does.
struct TroubledCoder {
    inner: ScriptedAgent,
    trouble: Trouble,
    times: std::sync::atomic::AtomicU32,
}

impl TroubledCoder {
    fn new(trouble: Trouble, times: u32) -> Self {
        Self { inner: ScriptedAgent::new(), trouble, times: std::sync::atomic::AtomicU32::new(times) }
    }
}

#[async_trait]
impl Agent for TroubledCoder {
    fn name(&self) -> &str {
        "troubled"
    }

    async fn plan(&self, ctx: &TaskContext) -> AgentResult<Output<Plan>> {
        self.inner.plan(ctx).await
    }

    async fn code(
        &self,
        ctx: &TaskContext,
        plan: &Plan,
        feedback: Option<&Feedback>,
    ) -> AgentResult<Output<Changeset>> {
        use std::sync::atomic::Ordering;
        if self.times.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            match self.trouble {
                Trouble::Panic => panic!("the coder panicked on purpose"),
                Trouble::Stall(how_long) => tokio::time::sleep(how_long).await,
            }
        }
        self.inner.code(ctx, plan, feedback).await
    }

    async fn review(&self, ctx: &TaskContext, plan: &Plan, changeset: &Changeset) -> AgentResult<Output<Review>> {
        self.inner.review(ctx, plan, changeset).await
    }
}

impl World {
    /// The job as it is once its first `step_failed` event is written, and that event's message.
    async fn at_first_step_failure(&self, job: JobId) -> (Job, String) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let failed = self.events_of(job, EventKind::StepFailed).await;
            if let Some(message) = failed.into_iter().next() {
                return (self.h.store.get_job(self.org, job).await.unwrap(), message);
            }
            assert!(tokio::time::Instant::now() < deadline, "no step_failed event within 30 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn a_panicking_step_is_retried_and_its_lease_released_meanwhile(w: World) {
    // A backoff of half a second at least, to look at the job between the attempts.
    let backoff = Backoff { base: Duration::from_secs(1), max: Duration::from_secs(1) };
    let worker = w.orchestrator(TroubledCoder::new(Trouble::Panic, 1), OrchestratorConfig { backoff, ..config() });
    let worker = worker.spawn_worker();
    let job = w.job(1, &write_block("a.txt", "a")).await;

    let (between, failure) = w.at_first_step_failure(job.id).await;
    assert!(failure.contains("panicked") && failure.contains("the coder panicked on purpose"), "{failure}");
    assert!(failure.contains("retrying in"), "{failure}");
    assert_eq!(between.state, JobState::Coding, "{between:#?}");
    assert!(between.lease.is_none(), "the lease is released, not kept alive by the heartbeat: {between:#?}");
    assert!(between.run_after > chrono::Utc::now(), "the retry waits for the backoff: {between:#?}");

    let job = w.settled(job.id).await;
    assert_eq!(job.state, JobState::PrOpen, "{job:#?}");
    assert_eq!(job.attempts.coding, 2, "the panicked attempt counts");
    assert_eq!(w.forge.pull_requests(REPO).len(), 1);
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn an_agent_that_always_panics_fails_the_job_after_its_attempts(w: World) {
    let worker = w.worker(TroubledCoder::new(Trouble::Panic, u32::MAX));
    let job = w.settled(w.job(1, &write_block("a.txt", "a")).await.id).await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let reason = job.failure_reason.as_deref().unwrap();
    assert!(reason.contains("did not succeed in 4 attempts") && reason.contains("panicked"), "{reason}");
    assert_eq!(job.attempts.coding, 4);
    assert!(job.lease.is_none());
    let failures = w.events_of(job.id, EventKind::StepFailed).await;
    assert_eq!(failures.len(), 4, "{failures:?}");
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn an_agent_call_past_its_timeout_is_retried_like_a_transient_error(w: World) {
    let observer = Arc::new(RecordingObserver::default());
    let step_timeouts = StepTimeouts { coding: Duration::from_millis(200), ..StepTimeouts::default() };
    let agent = TroubledCoder::new(Trouble::Stall(Duration::from_secs(20)), 1);
    let orchestrator = w.orchestrator(agent, OrchestratorConfig { step_timeouts, ..config() });
    let worker = orchestrator.with_observer(observer.clone()).spawn_worker();
    let started = std::time::Instant::now();
    let job = w.settled(w.job(1, &write_block("a.txt", "a")).await.id).await;
    assert_eq!(job.state, JobState::PrOpen, "{job:#?}");
    assert!(started.elapsed() < Duration::from_secs(15), "the stalled call was abandoned");
    assert_eq!(job.attempts.coding, 2, "the timed-out attempt counts");
    let failures = w.events_of(job.id, EventKind::StepFailed).await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].contains("coding timed out after 200 ms") && failures[0].contains("retrying in"),
        "{failures:?}"
    );
    assert_eq!(*observer.timeouts.lock().unwrap(), [(JobState::Coding, Duration::from_millis(200))]);
    worker.shutdown(Duration::from_secs(5)).await;
}

/// The memory forge, with trouble once: its first `open_pull_request` stalls for `stall` (if
/// given), and its first `post_comment` panics (if `panic_on_comment`).
struct TroubledForge {
    inner: MemoryForge,
    stall: Option<Duration>,
    panic_on_comment: bool,
    stalled: std::sync::atomic::AtomicBool,
    panicked: std::sync::atomic::AtomicBool,
}

impl TroubledForge {
    fn new(inner: MemoryForge, stall: Option<Duration>, panic_on_comment: bool) -> Self {
        Self { inner, stall, panic_on_comment, stalled: Default::default(), panicked: Default::default() }
    }
}

#[async_trait]
impl Forge for TroubledForge {
    async fn repo_view(&self, repo: &Repository) -> aicd_core::Result<Arc<dyn aicd_agent_api::RepoView>> {
        self.inner.repo_view(repo).await
    }
    async fn create_branch(&self, repo: &Repository, branch: &str) -> aicd_core::Result<BranchRef> {
        self.inner.create_branch(repo, branch).await
    }
    async fn commit_changes(
        &self,
        repo: &Repository,
        branch: &str,
        changeset: &Changeset,
        message: &str,
    ) -> aicd_core::Result<BranchRef> {
        self.inner.commit_changes(repo, branch, changeset, message).await
    }
    async fn delete_branch(&self, repo: &Repository, branch: &str) -> aicd_core::Result<()> {
        self.inner.delete_branch(repo, branch).await
    }
    async fn open_pull_request(&self, repo: &Repository, pr: &NewPullRequest) -> aicd_core::Result<PullRequestRef> {
        if let Some(stall) = self.stall
            && !self.stalled.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            tokio::time::sleep(stall).await;
        }
        self.inner.open_pull_request(repo, pr).await
    }
    async fn post_comment(&self, repo: &Repository, issue: u64, body: &str) -> aicd_core::Result<CommentId> {
        if self.panic_on_comment && !self.panicked.swap(true, std::sync::atomic::Ordering::SeqCst) {
            panic!("the forge panicked on purpose");
        }
        self.inner.post_comment(repo, issue, body).await
    }
    async fn update_comment(&self, repo: &Repository, issue: u64, id: CommentId, body: &str) -> aicd_core::Result<()> {
        self.inner.update_comment(repo, issue, id, body).await
    }
}

impl World {
    /// An orchestrator with the scripted agent over `forge`.
    fn orchestrator_over(&self, forge: TroubledForge, config: OrchestratorConfig) -> Orchestrator {
        let agent = Arc::new(ScriptedAgent::new());
        Orchestrator::new(self.h.store.clone(), agent, Arc::new(forge), self.doorbell.clone(), self.bus.clone(), config)
    }
}

async fn a_stalled_forge_call_times_out_and_publishing_is_retried(w: World) {
    let observer = Arc::new(RecordingObserver::default());
    let forge = TroubledForge::new(w.forge.clone(), Some(Duration::from_secs(20)), false);
    let step_timeouts = StepTimeouts { forge: Duration::from_millis(300), ..StepTimeouts::default() };
    let orchestrator = w.orchestrator_over(forge, OrchestratorConfig { step_timeouts, ..config() });
    let worker = orchestrator.with_observer(observer.clone()).spawn_worker();
    let job = w.settled(w.job(1, &write_block("a.txt", "a")).await.id).await;
    assert_eq!(job.state, JobState::PrOpen, "{job:#?}");
    let failures = w.events_of(job.id, EventKind::StepFailed).await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    let expected = "publishing (opening the pull request) timed out after 300 ms";
    assert!(failures[0].starts_with("reviewing failed") && failures[0].contains(expected), "{failures:?}");
    assert_eq!(w.forge.pull_requests(REPO).len(), 1, "exactly one pull request");
    assert_eq!(*observer.timeouts.lock().unwrap(), [(JobState::PrOpen, Duration::from_millis(300))]);
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn a_forge_panic_between_steps_is_retried_and_attempts_count_from_1(w: World) {
    // The progress comment is posted while the job starts, before QUEUED -> PLANNING is written
    // (its id goes with that write): starting has no attempts to count.
    let worker = w.orchestrator_over(TroubledForge::new(w.forge.clone(), None, true), config()).spawn_worker();
    let job = w.settled(w.job(1, &write_block("a.txt", "a")).await.id).await;
    assert_eq!(job.state, JobState::PrOpen, "{job:#?}");
    let failures = w.events_of(job.id, EventKind::StepFailed).await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].starts_with("queued failed: the queued step panicked"), "{failures:?}");
    assert!(failures[0].contains("the forge panicked on purpose"), "{failures:?}");
    assert_eq!(job.attempts.planning, 1, "planning was attempted once, after the retry");
    worker.shutdown(Duration::from_secs(5)).await;
}
