//! The embedded default end to end: a SQLite store in a temporary directory, an organization
//! bootstrapped with an admin API key, a repository, a job, its timeline, and tenant isolation.
//!
//! Run it with `cargo run -p aicd-examples --example quickstart`.

use std::sync::Arc;

use aicd_core::forge::LocalRoots;
use aicd_core::jobs::{IssueRef, JobFilter, NewJob, Trigger};
use aicd_core::repos::{NewRepo, RepoSource};
use aicd_core::store::SqlStore;
use aicd_core::tenancy::{NewApiKey, NewOrg, Role};
use aicd_core::{Core, CoreOptions, Error};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("aicd.db");
    // Local repositories may be registered under the directories the operator chose.
    let repos = dir.path().canonicalize()?.join("repos");
    std::fs::create_dir_all(repos.join("widgets"))?;
    let init = std::process::Command::new("git")
        .args(["init", "-q", "-b", "main"])
        .current_dir(repos.join("widgets"))
        .status()?;
    anyhow::ensure!(init.success(), "git init failed");
    let options = CoreOptions {
        allow_local_repos: true,
        local_roots: LocalRoots::new([repos.clone()]),
        ..CoreOptions::default()
    };
    let core = Core::new(Arc::new(SqlStore::sqlite(&path).await?), options);
    println!("store: SQLite at {}", path.display());

    let (org, _, secret) =
        core.bootstrap_org(NewOrg { name: "Acme".into(), max_concurrent_jobs: None, settings: None }).await?;
    let admin = core.authenticate_api_key(&secret).await?;
    println!("org {} ({}) with an org_admin key {}…", org.name, org.id, &secret.expose()[..12]);

    let repo = core
        .create_repo(
            &admin,
            org.id,
            NewRepo {
                full_name: "acme/widgets".into(),
                source: RepoSource::Local { path: repos.join("widgets").display().to_string() },
                default_branch: None,
                settings: None,
            },
        )
        .await?;
    let issue = IssueRef {
        number: Some(1),
        title: "Add a greeting".into(),
        body: "```aicd:write hello.txt\nHello, world!\n```".into(),
        url: None,
        author: Some("octocat".into()),
    };
    let job = core
        .create_job(
            &admin,
            org.id,
            NewJob { repo_id: repo.id, issue, trigger: Trigger::Api, max_tokens: None, max_cost_micros: None },
        )
        .await?;
    println!("job {} is {}", job.id, job.state);

    let (_, viewer_secret) = core
        .create_api_key(&admin, org.id, NewApiKey { name: "dashboard".into(), role: Role::Viewer, expires_at: None })
        .await?;
    let viewer = core.authenticate_api_key(&viewer_secret).await?;
    let page = core.list_jobs(&viewer, org.id, JobFilter::default()).await?;
    println!("a viewer sees {} job(s)", page.items.len());
    match core.cancel_job(&viewer, org.id, job.id).await {
        Err(Error::Forbidden { permission }) => println!("a viewer may not cancel: {permission} is needed"),
        other => anyhow::bail!("a viewer cancelled a job: {other:?}"),
    }

    let (other, _, other_secret) =
        core.bootstrap_org(NewOrg { name: "Globex".into(), max_concurrent_jobs: None, settings: None }).await?;
    let outsider = core.authenticate_api_key(&other_secret).await?;
    match core.get_job(&outsider, org.id, job.id).await {
        Err(Error::NotFound { .. }) => println!("{} cannot see {}'s job: not found", other.name, org.name),
        other => anyhow::bail!("another org saw the job: {other:?}"),
    }

    let cancelled = core.cancel_job(&admin, org.id, job.id).await?;
    for event in core.list_events(&admin, org.id, cancelled.id, None, 100).await? {
        println!("  #{} {} {:<14} {}", event.id, event.at.format("%H:%M:%S%.3f"), event.kind.as_str(), event.message);
    }
    Ok(())
}
