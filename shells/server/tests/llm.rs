//! `AICD_AGENT=llm` through the server and its embedded worker: a job filed over the API on a
//! local repository reaches PR_OPEN driven by the recorded OpenAI conversation of the core's
//! proofs, its timeline shows the agent's tool calls, and the usage report shows what each step
//! cost.

mod support;

use std::time::Duration;

use aicd_testkit::cassette::Recording;
use aicd_testkit::files::{commit_all, copy_tree};
use reqwest::StatusCode;
use serde_json::json;
use support::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_llm_agent_drives_a_job_to_a_pull_request_through_the_server() {
    let core_tests = concat!(env!("CARGO_MANIFEST_DIR"), "/../../aicd-core/tests");
    let recording = Recording::start(format!("{core_tests}/cassettes/openai/resolves_an_issue.json")).await;
    let base = recording.base_url("/v1");
    let model = recording.model("gpt-4.1-mini");
    let server = TestServer::sqlite(&[
        ("AICD_AGENT", "llm"),
        ("AICD_LLM_PROVIDER", "openai"),
        ("AICD_LLM_BASE_URL", &base),
        ("AICD_LLM_API_KEY", "test-key-not-a-secret"),
        ("AICD_LLM_MODEL", &model),
        ("AICD_LLM_MAX_OUTPUT_TOKENS", "1024"),
    ])
    .await;
    let (org, viewer, developer, admin) = server.org_with_keys("Acme").await;

    let checkout = support::local_dir();
    let dir = checkout.path().join("calc");
    std::fs::create_dir_all(&dir).unwrap();
    copy_tree(std::path::Path::new(&format!("{core_tests}/fixtures/calc")), &dir);
    commit_all(&dir, "calc");
    let repo = server
        .post(
            &format!("/v1/orgs/{}/repos", org.id),
            &admin,
            json!({ "full_name": "acme/calc", "source": { "kind": "local", "path": dir.display().to_string() } }),
        )
        .await;
    assert_eq!(repo.status, StatusCode::CREATED, "{}", repo.text);
    let issue = json!({
        "number": 7,
        "title": "divide() multiplies instead of dividing",
        "body": "`divide(6, 3)` returns 18; it should return 2. See calc/ops.py.",
    });
    let job = server
        .post(&format!("/v1/orgs/{}/jobs", org.id), &developer, json!({ "repo_id": repo.body["id"], "issue": issue }))
        .await;
    assert_eq!(job.status, StatusCode::CREATED, "{}", job.text);
    let path = format!("/v1/orgs/{}/jobs/{}", org.id, job.body["id"].as_str().unwrap());

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let job = loop {
        let job = server.get(&path, &viewer).await;
        if !["queued", "planning", "coding", "reviewing"].contains(&job.body["state"].as_str().unwrap()) {
            break job;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", job.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job.body["state"], "pr_open", "{}", job.text);
    recording.finish();

    // The timeline shows the tool calls as they happened.
    let events = server.get(&format!("{path}/events"), &viewer).await;
    let activity: Vec<&str> = events.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "activity")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(activity.contains(&"searched `def divide`"), "{activity:#?}");
    assert!(activity.iter().any(|a| a.starts_with("coder submission rejected")), "{activity:#?}");
    // The diff is the recorded change.
    let diff = server.get(&format!("{path}/diff"), &viewer).await;
    assert!(diff.text.contains("return a / b") && diff.text.contains("test_divide_by_zero"), "{}", diff.text);

    // The usage report shows each step's tokens and cost.
    let usage = server.get(&format!("/v1/orgs/{}/usage", org.id), &viewer).await;
    assert_eq!(usage.status, StatusCode::OK, "{}", usage.text);
    let steps: Vec<(&str, u64, u64)> = usage.body["by_step"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["calls"].as_u64().unwrap(), s["cost_micros"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        steps.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
        [("coding", 2), ("planning", 1), ("reviewing", 2)]
    );
    assert!(steps.iter().all(|s| s.2 > 0), "every step is priced: {steps:?}");
    assert!(usage.body["totals"]["input_tokens"].as_u64().unwrap() > 10_000, "{}", usage.text);
    assert_eq!(usage.body["totals"]["pull_requests"], 1);
    server.shutdown().await;
}
