//! The monitoring files in `deploy/monitoring/` name only metrics the binaries really export:
//! every `aicd_*` name in the alert rules, their unit tests and the Grafana dashboards is checked
//! against a live scrape of an embedded `aicd-server` (API, webhooks and worker in one process)
//! that has served requests, refused a webhook and run a job to PR_OPEN.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aicd_testkit::process::{self, Process};

use serde_json::{Value, json};

/// A webhook secret of this run (a fixed one would look like a placeholder to `config check`).
fn webhook_secret() -> &'static str {
    static SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SECRET.get_or_init(|| format!("{:032x}", uuid::Uuid::new_v4().as_u128()))
}

/// The server's environment: a data directory, quick polling and a webhook secret.
fn env(data: &Path) -> Vec<(String, String)> {
    [
        ("AICD_DATA_DIR", data.display().to_string()),
        ("AICD_POLL_INTERVAL_MS", "100".to_owned()),
        ("AICD_GITHUB_WEBHOOK_SECRET", webhook_secret().to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The `aicd_*` metric names written in `text`: every maximal run of `[a-z0-9_]` starting with
/// `aicd_` and not preceded by a name character.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("aicd_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let len =
            tail.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.push(tail[..len].to_owned());
        }
        rest = &tail[len..];
    }
    names
}

/// Whether the scrape `text` exports `name`: a family declared by `# TYPE`, or one of its
/// samples (`_total`, `_bucket`, `_sum`, `_count`, `_created`).
fn exported(text: &str, name: &str) -> bool {
    let families: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    families.iter().any(|family| {
        name == *family
            || name
                .strip_prefix(family)
                .is_some_and(|suffix| ["_total", "_bucket", "_sum", "_count", "_created"].contains(&suffix))
    })
}

/// The files of `dir` (relative to the repository root) whose names end with one of `suffixes`.
fn files(dir: &str, suffixes: &[&str]) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| suffixes.iter().any(|s| n.ends_with(s))))
        .collect();
    files.sort();
    files
}

#[test]
fn metric_names_are_found_whole_and_checked_against_families_and_samples() {
    let names = metric_names(
        r#"sum(rate(aicd_http_requests_total{status=~"5.."}[5m])) / xaicd_not, aicd_jobs{state="queued"}"#,
    );
    assert_eq!(names, ["aicd_http_requests_total", "aicd_jobs"]);
    let text = "# TYPE aicd_http_requests counter\naicd_http_requests_total 1\n# TYPE aicd_jobs gauge\n";
    assert!(exported(text, "aicd_http_requests_total") && exported(text, "aicd_jobs"));
    assert!(!exported(text, "aicd_http_requests_seconds") && !exported(text, "aicd_job"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alerts_and_the_dashboard_use_is_exported_by_a_live_server() {
    aicd_runtime::telemetry::install_crypto_provider();
    let data = tempfile::tempdir().unwrap();
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = repo_dir.path();
    aicd_testkit::files::git(repo, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(repo.join("README.md"), "# Demo\n").unwrap();
    aicd_testkit::files::commit_all(repo, "Initial commit");

    let server = Path::new(env!("CARGO_BIN_EXE_aicd-server"));
    let out = process::run(server, &["admin", "bootstrap", "--org", "Acme", "--json"], &env(data.path()));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (org, key) = (printed["org_id"].as_str().unwrap().to_owned(), printed["api_key"].as_str().unwrap().to_owned());

    let port = process::free_port();
    let mut serve_env = env(data.path());
    serve_env.push(("AICD_LISTEN_ADDR".to_owned(), format!("127.0.0.1:{port}")));
    serve_env.push(("AICD_LOCAL_REPO_ROOTS".to_owned(), repo.display().to_string()));
    let running = Process::spawn("aicd-server", server, &serve_env, &data.path().join("server.log"));
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http.get(format!("{base}/health")).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(running.exit_status().is_none(), "the server exited while starting:\n{}", running.log());
        assert!(Instant::now() < deadline, "the server did not answer /health within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A webhook delivery with a bad signature, then a job run to PR_OPEN.
    let refused = http
        .post(format!("{base}/webhooks/github"))
        .header("X-GitHub-Event", "ping")
        .header("X-GitHub-Delivery", "0b6b0a52-0000-4000-8000-000000000001")
        .header("X-Hub-Signature-256", format!("sha256={}", "0".repeat(64)))
        .body(r#"{"zen":"Keep it logically awesome."}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "{}", refused.text().await.unwrap());
    let created = http
        .post(format!("{base}/v1/orgs/{org}/repos"))
        .bearer_auth(&key)
        .json(&json!({"full_name": "acme/demo", "source": {"kind": "local", "path": repo.display().to_string()}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let repo_id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let body = "Add a greeting.\n\n```aicd:write docs/hello.txt\nHello!\n```\n";
    let created = http
        .post(format!("{base}/v1/orgs/{org}/jobs"))
        .bearer_auth(&key)
        .json(&json!({"repo_id": repo_id, "issue": {"title": "Add a greeting", "body": body, "number": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let job_id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job: Value = http
            .get(format!("{base}/v1/orgs/{org}/jobs/{job_id}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match job["state"].as_str() {
            Some("pr_open") => break,
            Some("failed") => panic!("the job failed: {job}"),
            _ => assert!(Instant::now() < deadline, "the job did not reach PR_OPEN within 60 s: {job}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The observer hears of the last step just after it is written, and a request is counted
    // once answered: scrape until publishing has been counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        if text.lines().any(|l| l == r#"aicd_job_steps_total{step="publishing",outcome="succeeded"} 1"#) {
            break text;
        }
        assert!(Instant::now() < deadline, "publishing was never counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(text.contains(&format!(r#"aicd_org_agent_tokens_total{{org_id="{org}",direction="input"}}"#)), "{text}");
    assert!(text.contains(r#"aicd_webhook_deliveries_total{event="unknown",outcome="rejected"} 1"#), "{text}");
    assert!(text.lines().any(|l| l.starts_with("aicd_worker_slots ") && !l.ends_with(" 0")), "{text}");

    let sources = [
        files("deploy/monitoring/prometheus/rules", &[".yml", ".yaml"]),
        files("deploy/monitoring/prometheus/tests", &[".yml", ".yaml"]),
        files("deploy/monitoring/grafana/dashboards", &[".json"]),
    ];
    assert!(sources.iter().all(|found| !found.is_empty()), "rules, rule tests and dashboards are all present");
    let mut checked = 0;
    let mut missing = Vec::new();
    for file in sources.iter().flatten() {
        for name in metric_names(&std::fs::read_to_string(file).unwrap()) {
            checked += 1;
            if !exported(&text, &name) {
                missing.push(format!("{}: {name}", file.display()));
            }
        }
    }
    assert!(checked >= 20, "only {checked} metric references found: the check would prove nothing");
    assert!(missing.is_empty(), "not exported by the binaries:\n{}\n--- scrape ---\n{text}", missing.join("\n"));
}
