//! The embedding API the bindings are built on, on PostgreSQL and SQLite: opening by URL, a key's
//! session speaking the HTTP API's JSON shapes, a job driven to PR_OPEN through a local git
//! repository by a worker that stops when idle, its timeline followed live, and tenant isolation.

use std::sync::Arc;
use std::time::Duration;

use aicd_agent_api::ScriptedAgent;
use aicd_core::embed::{Engine, OpenOptions, WorkerOptions};
use aicd_testkit::files::{commit_all, git};
use aicd_testkit::{TestPostgres, TestSqlite};
use serde_json::{Value, json};

/// A git repository with one commit under `root`, returned as its path.
fn local_repo(root: &std::path::Path) -> String {
    let dir = root.join("widgets");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("README.md"), "# Widgets\n").unwrap();
    commit_all(&dir, "Initial commit");
    dir.canonicalize().unwrap().display().to_string()
}

async fn the_embedding_api_drives_a_job_to_pr_open(engine: Engine, root: &std::path::Path) {
    let path = local_repo(root);
    let a = engine.bootstrap("Acme").await.unwrap();
    let b = engine.bootstrap("Globex").await.unwrap();
    let session = engine.session(&a.api_key).await.unwrap();
    let outsider = engine.session(&b.api_key).await.unwrap();
    assert_eq!(session.org_id(), a.org_id);

    let orgs = session.call("orgs.list", Value::Null).await.unwrap();
    assert_eq!(orgs[0]["org"]["name"], "Acme");
    assert_eq!(orgs[0]["role"], "org_admin");

    let repo = session
        .call("repos.create", json!({"full_name": "acme/widgets", "source": {"kind": "local", "path": path}}))
        .await
        .unwrap();
    let body = "```aicd:write hello.txt\nHello, world!\n```";
    let job = session
        .call("jobs.create", json!({"repo_id": repo["id"], "issue": {"title": "Add a greeting", "body": body}}))
        .await
        .unwrap();
    assert_eq!(job["state"], "queued");
    let job_id: aicd_core::JobId = serde_json::from_value(job["id"].clone()).unwrap();

    let mut follow = session.follow(job_id);
    let followed = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(event) = follow.next().await.unwrap() {
            events.push(event);
        }
        events
    });
    let options = WorkerOptions { poll_interval: Duration::from_millis(100), ..WorkerOptions::default() };
    let worker = engine.orchestrator(Arc::new(ScriptedAgent::default()), options);
    tokio::time::timeout(Duration::from_secs(60), worker.run_until_idle()).await.expect("idle in time").unwrap();

    let done = session.call("jobs.get", json!({"job_id": job_id})).await.unwrap();
    assert_eq!(done["state"], "pr_open", "{done}");
    let branch = done["checkpoints"]["pull_request"]["branch"].as_str().expect("a branch").to_owned();
    assert!(git(std::path::Path::new(&path), &["branch", "--list", &branch]).contains(&branch));

    let followed = tokio::time::timeout(Duration::from_secs(10), followed).await.expect("the follow ends").unwrap();
    let states: Vec<String> = followed.iter().filter_map(|e| e.to_state.map(|s| s.to_string())).collect();
    assert_eq!(states, ["planning", "coding", "reviewing", "pr_open"]);
    let ids: Vec<i64> = followed.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order, each once: {ids:?}");
    let timeline = session.call("jobs.events", json!({"job_id": job_id})).await.unwrap();
    let timeline: Vec<i64> = timeline.as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(&timeline[..ids.len()], &ids[..], "the follow saw the timeline up to PR_OPEN");

    let page = session.call("jobs.list", json!({"state": "pr_open"})).await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let usage = session.call("usage", Value::Null).await.unwrap();
    assert!(usage["totals"].is_object(), "{usage}");

    // Another organization's key sees nothing of it.
    let hidden = outsider.call("jobs.get", json!({"job_id": job_id})).await.unwrap_err();
    assert_eq!(hidden.code(), "not_found");
    assert_eq!(outsider.call("repos.list", Value::Null).await.unwrap(), json!([]));

    // Bad input is a clear error, never a panic.
    let unknown = session.call("jobs.explode", Value::Null).await.unwrap_err();
    assert_eq!(unknown.code(), "invalid_input");
    assert!(unknown.to_string().contains("jobs.create"), "{unknown}");
    let typo = session.call("jobs.create", json!({"repo_id": repo["id"], "isue": {}})).await.unwrap_err();
    assert_eq!(typo.code(), "invalid_input");
    assert!(typo.to_string().contains("isue"), "{typo}");
    let wrong = engine.session("aicd_not-a-key").await.unwrap_err();
    assert_eq!(wrong.code(), "unauthenticated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    let db = TestPostgres::new().await;
    let owner = db.owner_url();
    aicd_core::store::SqlStore::migrate_postgres(&owner).await.unwrap();
    let app = db.app_url("aicd_app").await;
    let root = tempfile::tempdir().unwrap();
    let options = OpenOptions {
        migrate: true,
        owner_url: Some(owner),
        local_roots: vec![root.path().canonicalize().unwrap()],
        ..OpenOptions::default()
    };
    let engine = Engine::open(&app, options).await.unwrap();
    assert_eq!(engine.backend(), "postgres");
    the_embedding_api_drives_a_job_to_pr_open(engine, root.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    let db = TestSqlite::new();
    let root = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", db.path().display());
    let options = OpenOptions { local_roots: vec![root.path().canonicalize().unwrap()], ..OpenOptions::default() };
    let engine = Engine::open(&url, options).await.unwrap();
    assert_eq!(engine.backend(), "sqlite");
    the_embedding_api_drives_a_job_to_pr_open(engine, root.path()).await;
}

#[tokio::test]
async fn an_unknown_url_or_a_superuser_is_refused() {
    let err = Engine::open("mysql://root@localhost/db", OpenOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), "invalid_input");
    let err = Engine::open("sqlite:", OpenOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), "invalid_input");
    // The schema owner bypasses row-level security: the engine refuses to run as it.
    let db = TestPostgres::new().await;
    let owner = db.owner_url();
    let options = OpenOptions { migrate: true, ..OpenOptions::default() };
    let err = Engine::open(&owner, options).await.unwrap_err();
    assert_eq!(err.code(), "unsafe_database", "{err}");
}
