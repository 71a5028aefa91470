//! `AICD_AGENT=llm` in a standalone `aicd-worker` process: a job on a local repository reaches
//! PR_OPEN driven by the recorded OpenAI conversation of the core's proofs, replayed by a
//! cassette server the worker reaches over HTTP, with each step's usage recorded.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aicd_core::jobs::{EventKind, IssueRef, JobState, NewJob, Trigger};
use aicd_core::repos::{NewRepo, RepoSource};
use aicd_core::store::{JobStore, SqlStore};
use aicd_core::tenancy::{Actor, NewOrg};
use aicd_core::{Core, CoreOptions};
use aicd_testkit::TestSqlite;
use aicd_testkit::cassette::Recording;
use aicd_testkit::files::{commit_all, copy_tree};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_llm_agent_drives_a_job_to_a_pull_request_in_a_worker_process() {
    let core_tests = concat!(env!("CARGO_MANIFEST_DIR"), "/../../aicd-core/tests");
    let recording = Recording::start(format!("{core_tests}/cassettes/openai/resolves_an_issue.json")).await;

    let db = TestSqlite::new();
    let store = Arc::new(SqlStore::sqlite(db.path()).await.unwrap());
    let roots = aicd_core::forge::LocalRoots::new([std::env::temp_dir()]);
    let core =
        Core::new(store.clone(), CoreOptions { allow_local_repos: true, local_roots: roots, ..CoreOptions::default() });
    let (org, key, _secret) =
        core.bootstrap_org(NewOrg { name: "Acme".into(), max_concurrent_jobs: None, settings: None }).await.unwrap();
    let admin = Actor::api_key(key.id, org.id, key.role);

    let checkout = tempfile::Builder::new().prefix("aicd-worker-llm-").tempdir().unwrap();
    let dir = checkout.path().join("calc");
    std::fs::create_dir_all(&dir).unwrap();
    copy_tree(Path::new(&format!("{core_tests}/fixtures/calc")), &dir);
    commit_all(&dir, "calc");
    let path = dir.canonicalize().unwrap().to_str().unwrap().to_owned();
    let repo = NewRepo {
        full_name: "acme/calc".into(),
        source: RepoSource::Local { path },
        default_branch: Some("main".into()),
        settings: None,
    };
    let repo = core.create_repo(&admin, org.id, repo).await.unwrap();
    let issue = IssueRef {
        number: Some(7),
        title: "divide() multiplies instead of dividing".into(),
        body: "`divide(6, 3)` returns 18; it should return 2. See calc/ops.py.".into(),
        url: None,
        author: None,
    };
    let job = NewJob { repo_id: repo.id, issue, trigger: Trigger::Api, max_tokens: None, max_cost_micros: None };
    let job = core.create_job(&admin, org.id, job).await.unwrap();

    let log = checkout.path().join("worker.log");
    let mut worker = Command::new(env!("CARGO_BIN_EXE_aicd-worker"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs([
            ("AICD_DATA_DIR", db.dir().to_str().unwrap()),
            ("AICD_WORKER_LISTEN_ADDR", "127.0.0.1:0"),
            ("AICD_POLL_INTERVAL_MS", "100"),
            ("AICD_LOCAL_REPO_ROOTS", std::env::temp_dir().to_str().unwrap()),
            ("AICD_AGENT", "llm"),
            ("AICD_LLM_PROVIDER", "openai"),
            ("AICD_LLM_BASE_URL", &recording.base_url("/v1")),
            ("AICD_LLM_API_KEY", "test-key-not-a-secret"),
            ("AICD_LLM_MODEL", &recording.model("gpt-4.1-mini")),
            ("AICD_LLM_MAX_OUTPUT_TOKENS", "1024"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("the worker starts");

    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let current = store.get_job(org.id, job.id).await.unwrap();
        if !current.state.is_runnable() {
            break current;
        }
        if let Some(status) = worker.try_wait().unwrap() {
            panic!("the worker exited ({status}): {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "timed out: {current:#?}\n{}", std::fs::read_to_string(&log).unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(done.state, JobState::PrOpen, "{done:#?}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    recording.finish();

    let events = store.list_events(org.id, job.id, None, 1000).await.unwrap();
    assert!(
        events.iter().any(|e| e.kind == EventKind::Activity && e.message == "searched `def divide`"),
        "the tool calls are on the timeline"
    );
    let usage = store.list_usage(org.id, job.created_at, chrono::Utc::now()).await.unwrap();
    let steps: Vec<&str> = usage.iter().map(|u| u.step.as_str()).collect();
    assert_eq!(steps, ["planning", "coding", "reviewing", "coding", "reviewing"], "one record per step taken");
    assert!(usage.iter().all(|u| u.cost_micros > 0 && u.model.contains("gpt")), "{usage:#?}");
}
