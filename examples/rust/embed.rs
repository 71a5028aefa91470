//! Embedding aicd-core in another Rust program: a SQLite store, a local git repository, an agent
//! of the program's own (here the scripted one, which follows directives in the issue's text), and
//! a worker that drives the job to PR_OPEN and stops once nothing is left to do.
//!
//! Run it with `cargo run -p aicd-examples --example embed`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use aicd_agent_api::ScriptedAgent;
use aicd_core::embed::{Engine, OpenOptions, WorkerOptions};
use serde_json::json;

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .args(["-c", "user.name=Example", "-c", "user.email=example@example.com"])
        .args(args)
        .current_dir(dir)
        .output()?;
    anyhow::ensure!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().canonicalize()?;
    let repo = root.join("widgets");
    std::fs::create_dir_all(&repo)?;
    std::fs::write(repo.join("README.md"), "# Widgets\n")?;
    git(&repo, &["init", "-q", "-b", "main"])?;
    git(&repo, &["add", "-A"])?;
    git(&repo, &["commit", "-q", "-m", "Initial commit"])?;

    let url = format!("sqlite:{}", root.join("aicd.db").display());
    let engine = Engine::open(&url, OpenOptions { local_roots: vec![root.clone()], ..OpenOptions::default() }).await?;
    let boot = engine.bootstrap("Acme").await?;
    let session = engine.session(&boot.api_key).await?;
    let source = json!({"kind": "local", "path": repo.display().to_string()});
    let registered = session.call("repos.create", json!({"full_name": "acme/widgets", "source": source})).await?;
    let body = "```aicd:write hello.txt\nHello, world!\n```";
    let issue = json!({"title": "Add a greeting", "body": body});
    let job = session.call("jobs.create", json!({"repo_id": registered["id"], "issue": issue})).await?;
    println!("job {} is {}", job["id"], job["state"]);

    let mut follow = session.follow(serde_json::from_value(job["id"].clone())?);
    let printer = tokio::spawn(async move {
        while let Ok(Some(event)) = follow.next().await {
            println!("  #{} {:<14} {}", event.id, event.kind.as_str(), event.message);
        }
    });
    let options = WorkerOptions { poll_interval: std::time::Duration::from_millis(100), ..WorkerOptions::default() };
    engine.orchestrator(Arc::new(ScriptedAgent::default()), options).run_until_idle().await?;
    printer.await?;

    let done = session.call("jobs.get", json!({"job_id": job["id"]})).await?;
    let branch = done["checkpoints"]["pull_request"]["branch"].as_str().unwrap_or_default();
    println!(
        "job is {}; {branch}: hello.txt = {:?}",
        done["state"],
        git(&repo, &["show", &format!("{branch}:hello.txt")])?
    );
    anyhow::ensure!(done["state"] == "pr_open", "the job did not reach PR_OPEN");
    Ok(())
}
