//! The embedded default end to end, as a self-hoster runs it: the `aicd-server` binary with a
//! fresh data directory, `admin bootstrap`, a local git repository, a job whose issue carries the
//! scripted agent's `aicd:write` blocks, the live event stream until PR_OPEN, the diff, and the
//! branch and commit in the repository.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};

fn server(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aicd-server"));
    for (var, _) in std::env::vars() {
        if var.starts_with("AICD_") || var == "DATABASE_URL" || var == "REDIS_URL" || var.starts_with("OTEL_") {
            cmd.env_remove(var);
        }
    }
    cmd.env("AICD_DATA_DIR", data).env("RUST_LOG", "info").env("AICD_POLL_INTERVAL_MS", "100");
    cmd
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_default_turns_an_issue_into_a_branch_commit_and_diff() {
    aicd_runtime::telemetry::install_crypto_provider();
    let data = tempfile::tempdir().unwrap();
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = repo_dir.path();
    git(repo, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(repo.join("README.md"), "# Demo\n").unwrap();
    git(repo, &["add", "README.md"]);
    git(repo, &["commit", "--quiet", "-m", "Initial commit"]);

    // 1. Bootstrap an organization and its first admin key.
    let out = server(data.path()).args(["admin", "bootstrap", "--org", "Acme", "--json"]).output().unwrap();
    assert!(out.status.success(), "bootstrap failed: {}", String::from_utf8_lossy(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    let org = printed["org_id"].as_str().unwrap().to_owned();
    let key = printed["api_key"].as_str().unwrap().to_owned();

    // 2. Serve, with nothing but a data directory.
    let port = free_port();
    // The repository is outside the data directory: `--repo-root` lets it be registered.
    let mut running = Running(
        server(data.path())
            .args(["serve", "--repo-root"])
            .arg(repo)
            .env("AICD_LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/health")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(running.0.try_wait().unwrap().is_none(), "the server exited while starting");
        assert!(Instant::now() < deadline, "the server did not answer /health within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready = http.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());

    // 3. Register the local repository.
    let created = http
        .post(format!("{base}/v1/orgs/{org}/repos"))
        .bearer_auth(&key)
        .json(&json!({"full_name": "acme/demo", "source": {"kind": "local", "path": repo.display().to_string()}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let repo_id = created.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    // 4. File a job whose issue says what to write.
    let issue_body = "Please add a greeting.\n\n```aicd:write docs/hello.txt\nHello from AI-CD!\n```\n";
    let created = http
        .post(format!("{base}/v1/orgs/{org}/jobs"))
        .bearer_auth(&key)
        .json(&json!({"repo_id": repo_id, "issue": {"title": "Add a greeting", "body": issue_body, "number": 7}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());
    let job: Value = created.json().await.unwrap();
    let job_id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["state"], "queued");

    // 5. Follow the live stream until the pull request is open.
    let stream =
        http.get(format!("{base}/v1/orgs/{org}/jobs/{job_id}/events/stream")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut bytes = stream.bytes_stream();
    let mut buffer = String::new();
    let mut states = Vec::new();
    let mut last_id = 0_i64;
    let deadline = Instant::now() + Duration::from_secs(60);
    'read: while Instant::now() < deadline {
        let chunk = tokio::time::timeout(Duration::from_secs(30), bytes.next())
            .await
            .expect("the stream keeps talking")
            .expect("the stream does not end before PR_OPEN")
            .unwrap();
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let mut id = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().parse::<i64>().unwrap());
                }
                if let Some(v) = line.strip_prefix("data:") {
                    data = Some(serde_json::from_str::<Value>(v.trim()).unwrap());
                }
            }
            let (Some(id), Some(data)) = (id, data) else { continue };
            assert!(id > last_id, "event ids increase: {id} after {last_id}");
            last_id = id;
            if let Some(state) = data["to_state"].as_str() {
                states.push(state.to_owned());
                assert_ne!(state, "failed", "the job failed: {data}");
                if state == "pr_open" {
                    break 'read;
                }
            }
        }
    }
    assert_eq!(states, ["planning", "coding", "reviewing", "pr_open"], "state changes seen on the stream");

    // Resuming with Last-Event-ID replays nothing already seen.
    let resumed = http
        .get(format!("{base}/v1/orgs/{org}/jobs/{job_id}/events"))
        .query(&[("after", last_id.to_string())])
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert!(resumed["items"].as_array().unwrap().iter().all(|e| e["id"].as_i64().unwrap() > last_id));

    // 6. The job and its diff.
    let job: Value = http
        .get(format!("{base}/v1/orgs/{org}/jobs/{job_id}"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["state"], "pr_open");
    let branch = job["checkpoints"]["pull_request"]["branch"].as_str().expect("the job records its branch").to_owned();
    let diff: Value = http
        .get(format!("{base}/v1/orgs/{org}/jobs/{job_id}/diff"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let patch = diff["patch"].as_str().expect("a patch");
    assert!(patch.contains("+++ b/docs/hello.txt"), "{patch}");
    assert!(patch.contains("+Hello from AI-CD!"), "{patch}");
    assert_eq!(diff["files"][0]["path"], "docs/hello.txt");
    assert_eq!(diff["files"][0]["status"], "added");

    // 7. The branch and its commit are in the repository; the checkout is untouched.
    assert!(branch.starts_with("aicd/issue-7-"), "{branch}");
    let content = git(repo, &["show", &format!("{branch}:docs/hello.txt")]);
    assert_eq!(content, "Hello from AI-CD!\n");
    let log = git(repo, &["log", "--format=%s", &format!("main..{branch}")]);
    assert_eq!(log.lines().count(), 1, "one commit on the branch: {log}");
    assert!(!repo.join("docs/hello.txt").exists(), "the working tree is untouched");
    assert_eq!(git(repo, &["rev-parse", "--abbrev-ref", "HEAD"]).trim(), "main");

    // 8. SIGTERM stops it cleanly.
    let child = &mut running.0;
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not stop within 30 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "the server exits 0 after SIGTERM: {status}");
}
