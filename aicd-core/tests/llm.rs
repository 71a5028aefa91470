//! The LLM agent driving whole jobs, for both providers, against recorded interactions
//! (`tests/cassettes/<provider>/<scenario>.json`, replayed by a mock server; see
//! `aicd_testkit::cassette` for recording new ones): a real bug in a small Python package is
//! found, fixed with a `replace` edit, reviewed, sent back once, and opened as a pull request
//! through the local git forge; and the ways a step can go wrong.

#[path = "support/mod.rs"]
mod support;

use aicd_testkit::files::{copy_tree, git};
use std::sync::Arc;
use std::time::Duration;

use aicd_agent_api::llm::{HttpSettings, LlmAgent, LlmConfig, ModelConfig, Provider};
use aicd_core::forge::{LocalGitForge, LocalRoots};
use aicd_core::jobs::{EventKind, IssueRef, Job, JobState, NewJob, Trigger};
use aicd_core::orchestrator::{Backoff, Orchestrator, OrchestratorConfig, WorkerHandle};
use aicd_core::repos::{NewRepo, RepoSource};
use aicd_core::signals::{LocalDoorbell, LocalEventBus};
use aicd_core::store::JobStore;
use aicd_core::tenancy::Actor;
use aicd_core::{JobId, OrgId, RepoId};
use aicd_testkit::cassette::{Recording, cassettes_dir};

/// The package with the bug (`divide` multiplies): `tests/fixtures/calc`.
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/calc");

struct World {
    h: support::Harness,
    org: OrgId,
    admin: Actor,
    repo: RepoId,
    dir: std::path::PathBuf,
    doorbell: Arc<LocalDoorbell>,
    bus: Arc<LocalEventBus>,
}

async fn world() -> World {
    let h = support::sqlite().await;
    let (org, _, admin) = h.org_with_admin("Acme").await;
    let dir = h.repos.path().join("calc");
    std::fs::create_dir_all(&dir).unwrap();
    copy_tree(std::path::Path::new(FIXTURE), &dir);
    git(&dir, &["init", "-q", "-b", "main"]);
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "calc"]);
    let repo = NewRepo {
        full_name: "acme/calc".into(),
        source: RepoSource::Local { path: dir.display().to_string() },
        default_branch: None,
        settings: None,
    };
    let repo = h.core.create_repo(&admin, org.id, repo).await.unwrap();
    let dir = std::fs::canonicalize(dir).unwrap();
    World {
        org: org.id,
        admin,
        repo: repo.id,
        dir,
        h,
        doorbell: Arc::new(LocalDoorbell::new()),
        bus: Arc::new(LocalEventBus::new()),
    }
}

/// Quick retries and a circuit that opens after three failures, so tests take milliseconds.
fn http() -> HttpSettings {
    HttpSettings {
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_secs(2),
        max_retries: 2,
        breaker_threshold: 3,
        breaker_cooldown: Duration::from_millis(400),
        ..HttpSettings::default()
    }
}

fn default_model(provider: Provider) -> &'static str {
    match provider {
        Provider::OpenAi => "gpt-4.1-mini",
        Provider::Anthropic => "claude-haiku-4-5",
    }
}

fn base_suffix(provider: Provider) -> &'static str {
    match provider {
        Provider::OpenAi => "/v1",
        Provider::Anthropic => "",
    }
}

/// The cassette of `scenario` for `provider`, and an agent talking to it.
async fn recorded(provider: Provider, scenario: &str) -> (Recording, LlmAgent) {
    let path = cassettes_dir(env!("CARGO_MANIFEST_DIR")).join(provider.as_str()).join(format!("{scenario}.json"));
    let recording = Recording::start(path).await;
    let model = ModelConfig::new(provider, recording.model(default_model(provider)), recording.api_key())
        .at(recording.base_url(base_suffix(provider)));
    let mut config = LlmConfig::new(model);
    config.http = http();
    config.max_output_tokens = 1024;
    let agent = LlmAgent::with_transport(config, recording.transport()).unwrap();
    (recording, agent)
}

impl World {
    fn worker(&self, agent: LlmAgent) -> WorkerHandle {
        let forge = LocalGitForge::new().within(LocalRoots::new([self.h.repos.path().to_path_buf()]));
        let config = OrchestratorConfig {
            concurrency: 1,
            lease: Duration::from_secs(5),
            heartbeat_every: Duration::from_millis(500),
            poll_interval: Duration::from_millis(100),
            max_attempts: 4,
            backoff: Backoff { base: Duration::from_millis(20), max: Duration::from_millis(100) },
            max_review_rounds: 3,
            ..OrchestratorConfig::default()
        };
        Orchestrator::new(
            self.h.store.clone(),
            Arc::new(agent),
            Arc::new(forge),
            self.doorbell.clone(),
            self.bus.clone(),
            config,
        )
        .spawn_worker()
    }

    async fn job(&self, max_tokens: Option<u64>) -> Job {
        let issue = IssueRef {
            number: Some(7),
            title: "divide() multiplies instead of dividing".into(),
            body: "`divide(6, 3)` returns 18; it should return 2. See calc/ops.py.".into(),
            url: None,
            author: Some("octocat".into()),
        };
        let new = NewJob { repo_id: self.repo, issue, trigger: Trigger::Api, max_tokens, max_cost_micros: None };
        self.h.core.clone().with_doorbell(self.doorbell.clone()).create_job(&self.admin, self.org, new).await.unwrap()
    }

    async fn wait(&self, job: JobId, done: impl Fn(&Job) -> bool) -> Job {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let current = self.h.store.get_job(self.org, job).await.unwrap();
            if done(&current) {
                return current;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out: {current:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn settled(&self, job: JobId) -> Job {
        self.wait(job, |j| !j.state.is_runnable()).await
    }

    async fn events(&self, job: JobId, kind: EventKind) -> Vec<aicd_core::jobs::JobEvent> {
        let events = self.h.store.list_events(self.org, job, None, 1000).await.unwrap();
        events.into_iter().filter(|e| e.kind == kind).collect()
    }
}

macro_rules! for_both_providers {
    ($($name:ident),* $(,)?) => {
        mod openai { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(aicd_agent_api::llm::Provider::OpenAi).await }
        )* }
        mod anthropic { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(aicd_agent_api::llm::Provider::Anthropic).await }
        )* }
    };
}

for_both_providers!(
    a_real_bug_is_found_fixed_reviewed_and_opened_as_a_pull_request,
    three_invalid_submissions_fail_the_job_with_a_readable_reason,
    a_rate_limit_is_waited_out,
    the_budget_running_out_mid_step_fails_the_job_and_is_charged,
    repeated_server_errors_open_the_circuit_and_requeue_the_job,
    a_refused_key_fails_the_job_naming_the_provider_but_not_the_key,
);

async fn a_real_bug_is_found_fixed_reviewed_and_opened_as_a_pull_request(provider: Provider) {
    let w = world().await;
    let (recording, agent) = recorded(provider, "resolves_an_issue").await;
    let worker = w.worker(agent);
    let job = w.settled(w.job(None).await.id).await;
    recording.finish();
    assert_eq!(job.state, JobState::PrOpen, "{job:#?}");
    assert_eq!(job.review_round, 1, "the critic sent the coder back once");

    // Exactly the recorded change, on its branch: the fix from round one and the test from
    // round two (the changeset is cumulative).
    let branch = job.checkpoints.pull_request.as_ref().unwrap().branch.clone();
    let show = |path: &str| git(&w.dir, &["show", &format!("{branch}:{path}")]);
    assert!(show("calc/ops.py").ends_with("    return a / b\n"), "{}", show("calc/ops.py"));
    assert_eq!(
        show("tests/test_ops.py"),
        "import pytest\n\nfrom calc import add, divide\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\n\
         def test_divide():\n    assert divide(6, 3) == 2\n\n\ndef test_divide_by_zero():\n    with pytest.raises(ZeroDivisionError):\n        divide(1, 0)\n"
    );
    let changed = git(&w.dir, &["diff", "--name-only", "main", &branch]);
    assert_eq!(changed, "calc/ops.py\ntests/test_ops.py\n");
    let message = git(&w.dir, &["log", "-1", "--format=%B", &branch]);
    assert!(message.starts_with("divide() multiplies instead of dividing (#7)"), "{message}");
    assert!(message.contains("Test that divide() refuses a zero divisor"), "the coder's summary: {message}");

    // The timeline shows what the agent did, as it did it.
    let activity: Vec<String> = w.events(job.id, EventKind::Activity).await.into_iter().map(|e| e.message).collect();
    for expected in [
        "searched `def divide`",
        "invalid call of read_file",
        "read calc/ops.py",
        "coder submission rejected: no edit was applied: edit 1 (replace `calc/ops.py`): no match",
        "read tests/test_ops.py",
    ] {
        assert!(activity.iter().any(|a| a.starts_with(expected)), "{expected:?} not in {activity:#?}");
    }
    // Each step records its prompt, model and turns with its result, and what it cost.
    let results = w.events(job.id, EventKind::StepSucceeded).await;
    let planned = &results[0].data;
    assert_eq!(planned["agent"]["prompt"], "planner@1", "{planned:#?}");
    assert_eq!(planned["agent"]["turns"], "4", "{planned:#?}");
    assert!(planned["agent"]["model"].as_str().unwrap().starts_with(provider.as_str()));
    let usage =
        w.h.store.list_usage(w.org, chrono::Utc::now() - chrono::Duration::hours(1), chrono::Utc::now()).await.unwrap();
    let steps: Vec<&str> = usage.iter().map(|u| u.step.as_str()).collect();
    assert_eq!(steps, ["planning", "coding", "reviewing", "coding", "reviewing"], "{usage:#?}");
    assert!(usage.iter().all(|u| u.input_tokens > 1000 && u.output_tokens > 0 && u.cost_micros > 0), "{usage:#?}");
    let total: u64 = usage.iter().map(|u| u.input_tokens + u.output_tokens).sum();
    assert_eq!(job.budget.spent_tokens, total);
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn three_invalid_submissions_fail_the_job_with_a_readable_reason(provider: Provider) {
    let w = world().await;
    let (recording, agent) = recorded(provider, "three_invalid_submissions").await;
    let worker = w.worker(agent);
    let job = w.settled(w.job(None).await.id).await;
    recording.finish();
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let reason = job.failure_reason.unwrap();
    assert!(reason.contains("the coder") && reason.contains("made 3 invalid submissions"), "{reason}");
    assert!(reason.contains("the summary is empty"), "the last problem is named: {reason}");
    assert_eq!(job.attempts.coding, 1, "a model that cannot submit is not retried");
    let rejected = w.events(job.id, EventKind::Activity).await;
    assert_eq!(rejected.iter().filter(|e| e.message.contains("submission rejected")).count(), 3);
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn a_rate_limit_is_waited_out(provider: Provider) {
    let w = world().await;
    let (recording, agent) = recorded(provider, "rate_limited").await;
    let worker = w.worker(agent);
    let started = std::time::Instant::now();
    let job = w.settled(w.job(None).await.id).await;
    recording.finish();
    assert_eq!(job.state, JobState::PrOpen, "{job:#?}");
    assert_eq!(job.attempts.planning, 1, "retried within the attempt");
    assert!(started.elapsed() >= Duration::from_secs(1), "the provider's retry-after was honoured");
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn the_budget_running_out_mid_step_fails_the_job_and_is_charged(provider: Provider) {
    let w = world().await;
    let (recording, agent) = recorded(provider, "budget_runs_out").await;
    let worker = w.worker(agent);
    let job = w.settled(w.job(Some(2_000)).await.id).await;
    recording.finish();
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let reason = job.failure_reason.unwrap();
    assert!(reason.contains("budget") && reason.contains("planner's turn 2"), "{reason}");
    // The first answer is charged; the second turn, whose input alone would not fit, was never
    // sent (the cassette holds one interaction, and replay checks all were played).
    assert!(job.budget.spent_tokens > 1_500 && job.budget.spent_tokens <= 2_000, "{:?}", job.budget);
    worker.shutdown(Duration::from_secs(5)).await;
}

/// A mock provider answering every request with `status` and the provider's error body.
async fn failing_provider(
    provider: Provider,
    status: u16,
    message: &str,
    key: &str,
) -> (wiremock::MockServer, LlmAgent) {
    let server = wiremock::MockServer::start().await;
    let body = match provider {
        Provider::OpenAi => serde_json::json!({
            "error": { "message": message, "type": if status == 401 { "invalid_request_error" } else { "server_error" },
                       "param": null, "code": if status == 401 { serde_json::json!("invalid_api_key") } else { serde_json::Value::Null } }
        }),
        Provider::Anthropic => serde_json::json!({
            "type": "error",
            "error": { "type": if status == 401 { "authentication_error" } else { "api_error" }, "message": message },
            "request_id": "req_011AICDfixture"
        }),
    };
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(status).set_body_json(body))
        .mount(&server)
        .await;
    let model = ModelConfig::new(provider, default_model(provider), key).at(format!(
        "{}{}",
        server.uri(),
        base_suffix(provider)
    ));
    let mut config = LlmConfig::new(model);
    config.http = http();
    (server, LlmAgent::new(config).unwrap())
}

async fn repeated_server_errors_open_the_circuit_and_requeue_the_job(provider: Provider) {
    let w = world().await;
    let (server, agent) = failing_provider(provider, 500, "Internal server error", "k").await;
    let worker = w.worker(agent);
    let job = w.job(None).await;
    let paused = w.wait(job.id, |j| j.failure_reason.as_deref().is_some_and(|r| r.contains("paused"))).await;
    // Let it be paused again after the cool-down: still queued, never failed.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let job = w.h.store.get_job(w.org, job.id).await.unwrap();
    assert!(job.state.is_runnable(), "re-queued, not failed: {job:#?}");
    assert!(job.attempts.planning < 4, "pauses are not attempts: {:?}", job.attempts);
    assert!(paused.failure_reason.unwrap().contains("failed 3 times in a row"));
    let notes: Vec<String> = w.events(job.id, EventKind::StepFailed).await.into_iter().map(|e| e.message).collect();
    assert!(notes.iter().any(|n| n.contains("not counted as an attempt")), "{notes:#?}");
    // Fail fast while open: far fewer requests than a retry storm would make.
    let requests = server.received_requests().await.unwrap().len();
    assert!(requests <= 10, "{requests} requests");
    worker.shutdown(Duration::from_secs(5)).await;
}

async fn a_refused_key_fails_the_job_naming_the_provider_but_not_the_key(provider: Provider) {
    let w = world().await;
    let key = "sk-proj-AICDfixture0123456789";
    let message = match provider {
        Provider::OpenAi => {
            "Incorrect API key provided: sk-proj-****6789. You can find your API key at https://platform.openai.com/account/api-keys."
        }
        Provider::Anthropic => "invalid x-api-key",
    };
    let (server, agent) = failing_provider(provider, 401, message, key).await;
    let worker = w.worker(agent);
    let job = w.settled(w.job(None).await.id).await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let reason = job.failure_reason.unwrap();
    assert!(reason.contains(&format!("{provider} at {}", server.uri())), "{reason}");
    assert!(reason.contains("refused the API key (401)"), "{reason}");
    assert!(!reason.contains("AICDfixture") && !reason.contains("sk-proj"), "{reason}");
    assert_eq!(job.attempts.planning, 1, "a refused key is not retried");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    // The key is in no event either.
    let events = w.h.store.list_events(w.org, job.id, None, 1000).await.unwrap();
    assert!(events.iter().all(|e| !e.message.contains("AICDfixture") && !e.data.to_string().contains("AICDfixture")));
    worker.shutdown(Duration::from_secs(5)).await;
}
