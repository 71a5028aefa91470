//! The forge the binaries assemble from their configuration: GitHub repositories through the
//! configured GitHub App (against the fake GitHub at `AICD_GITHUB_API_URL`), local repositories
//! under `AICD_LOCAL_REPO_ROOTS` outside production, and readable, permanent refusals for what
//! the deployment cannot serve.

use std::sync::Arc;

use aicd_core::Error;
use aicd_core::forge::Forge;
use aicd_core::github::{GithubRepoId, GithubRepoInfo, InstallationId};
use aicd_core::repos::{RepoSource, Repository};
use aicd_core::store::SqlStore;
use aicd_core::tenancy::NewOrg;
use aicd_core::{Core, CoreOptions};
use aicd_runtime::assemble::{NO_GITHUB_APP, NO_LOCAL_REPOS, NO_LOCAL_ROOTS, build_forge, github_tokens};
use aicd_runtime::config::{Config, Environment};
use aicd_testkit::TestSqlite;
use aicd_testkit::github::{APP_ID, FULL_NAME, FakeGitHub, INSTALLATION, REPO_ID};
use chrono::Utc;

fn config(vars: &[(&str, &str)]) -> Config {
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    Config::from_lookup(move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        .expect("a valid configuration")
}

fn repository(source: RepoSource) -> Repository {
    Repository {
        id: aicd_core::RepoId::new(),
        org_id: aicd_core::OrgId::new(),
        full_name: FULL_NAME.into(),
        source,
        default_branch: "main".into(),
        settings: Default::default(),
        detached_at: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

/// A store with `acme/widgets` registered through installation 4242, linked to an organization.
async fn store_with_github_repo() -> (Arc<SqlStore>, Repository, TestSqlite) {
    let db = TestSqlite::new();
    let store = Arc::new(SqlStore::sqlite(db.path()).await.unwrap());
    let core = Core::new(store.clone(), CoreOptions::default());
    let org = NewOrg { name: "Acme".into(), max_concurrent_jobs: None, settings: None };
    let (org, _, _) = core.bootstrap_org(org).await.unwrap();
    let installation = InstallationId::from_u64(INSTALLATION).unwrap();
    let intake = core.github_intake();
    intake.link_installation(org.id, installation, None, "operator").await.unwrap();
    let info = GithubRepoInfo {
        repo_id: GithubRepoId::from_u64(REPO_ID).unwrap(),
        full_name: FULL_NAME.into(),
        default_branch: None,
    };
    let repo = intake.sync_github_repos(org.id, installation, &[info], &[]).await.unwrap().upserted.remove(0);
    (store, repo, db)
}

/// A local repository with one commit of `README.md` on `main`, under a root of its own.
fn local_repo() -> (Repository, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git").current_dir(dir.path()).args(args).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(dir.path().join("README.md"), "# Local\n").unwrap();
    git(&["add", "-A"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "Initial commit"]);
    let path = dir.path().canonicalize().unwrap().to_str().unwrap().to_owned();
    (repository(RepoSource::Local { path }), dir)
}

#[track_caller]
fn assert_rejected<T>(result: aicd_core::Result<T>, expected_service: &str, expected_message: &str) {
    match result {
        Err(Error::Rejected { service, message }) => {
            assert_eq!((service, message.as_str()), (expected_service, expected_message));
        }
        Err(e) => panic!("unexpected error {e:?}"),
        Ok(_) => panic!("unexpectedly succeeded"),
    }
}

#[tokio::test]
async fn a_github_repository_is_read_through_the_configured_app_and_api_url() {
    aicd_runtime::telemetry::install_crypto_provider();
    let keys = aicd_testkit::rsa_key_pair();
    let github = FakeGitHub::start(&keys.public_pem).await;
    let config = config(&[
        ("AICD_GITHUB_APP_ID", &APP_ID.to_string()),
        ("AICD_GITHUB_PRIVATE_KEY", &keys.private_pem),
        ("AICD_GITHUB_API_URL", &github.uri()),
        ("AICD_GITHUB_APP_SLUG", "aicd-test"),
    ]);
    let (store, repo, _db) = store_with_github_repo().await;
    let tokens = github_tokens(&config).unwrap().expect("the App is configured");
    let forge = build_forge(&config, store, Some(&tokens));
    assert!(forge.serves_github() && forge.serves_local(), "{forge:?}");
    let view = forge.repo_view(&repo).await.unwrap();
    assert_eq!(view.list_files().await.unwrap(), ["README.md", "src/lib.rs"]);

    // One token, narrowed to the repository and to reading it, minted with the App's JWT.
    let grants = github.token_grants();
    assert_eq!(grants.len(), 1, "{grants:#?}");
    assert_eq!(grants[0].repository_ids, Some(vec![REPO_ID]));
    assert_eq!(grants[0].permissions.get("contents").map(String::as_str), Some("read"));
    let app_jwt = &github.token_request_authorizations().await[0];
    assert!(app_jwt.starts_with("Bearer ey") && app_jwt.matches('.').count() == 2, "the App's JWT: {app_jwt}");
    for request in github.requests().await {
        let agent = request.headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(agent.starts_with("aicd-test (aicd/"), "requests name the App: {agent}");
    }
}

#[tokio::test]
async fn without_an_app_github_repositories_are_refused_and_local_ones_served_under_the_roots() {
    let (local, dir) = local_repo();
    let root = dir.path().to_str().unwrap();
    let (store, github_repo, _db) = store_with_github_repo().await;
    let with_root = config(&[("AICD_LOCAL_REPO_ROOTS", root)]);
    let forge = build_forge(&with_root, store.clone(), None);
    assert!(!forge.serves_github() && forge.serves_local(), "{forge:?}");
    assert_rejected(forge.repo_view(&github_repo).await, "github", NO_GITHUB_APP);
    assert_eq!(
        NO_GITHUB_APP,
        "this deployment has no GitHub App configured (AICD_GITHUB_APP_ID, AICD_GITHUB_PRIVATE_KEY)"
    );
    assert_rejected(forge.create_branch(&github_repo, "aicd/issue-1").await, "github", NO_GITHUB_APP);

    let view = forge.repo_view(&local).await.unwrap();
    assert_eq!(view.list_files().await.unwrap(), ["README.md"]);
    let branch = forge.create_branch(&local, "aicd/issue-1").await.unwrap();
    assert_eq!(branch.name, "aicd/issue-1");

    // A repository outside the roots is not served (the embedded default's root is its data
    // directory), and the refusal names the path, not the reason.
    let elsewhere = build_forge(&config(&[]), store.clone(), None);
    match elsewhere.repo_view(&local).await {
        Err(Error::Rejected { service: "forge", message }) => {
            assert!(message.contains("not an accessible repository"), "{message}");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }

    // A standalone worker on PostgreSQL does not allow registering local repositories, but
    // serves the ones that exist under its roots outside production; without roots, none.
    let mut worker = config(&[("AICD_LOCAL_REPO_ROOTS", root)]);
    worker.server.allow_local_repos = false;
    assert!(build_forge(&worker, store.clone(), None).serves_local());
    worker.server.local_repo_roots.clear();
    let rootless = build_forge(&worker, store, None);
    assert_rejected(rootless.repo_view(&local).await, "forge", NO_LOCAL_ROOTS);
}

#[tokio::test]
async fn production_refuses_local_repositories() {
    let (local, _dir) = local_repo();
    let (store, _, _db) = store_with_github_repo().await;
    let mut production = config(&[]);
    production.environment = Environment::Production;
    production.server.allow_local_repos = false;
    let forge = build_forge(&production, store, None);
    assert!(!forge.serves_local(), "{forge:?}");
    assert_rejected(forge.repo_view(&local).await, "forge", NO_LOCAL_REPOS);
    assert_rejected(forge.create_branch(&local, "aicd/issue-1").await, "forge", NO_LOCAL_REPOS);
}

#[test]
fn an_unusable_private_key_fails_naming_the_variable_without_quoting_the_key() {
    let key = "-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END RSA PRIVATE KEY-----";
    let config = config(&[("AICD_GITHUB_APP_ID", &APP_ID.to_string()), ("AICD_GITHUB_PRIVATE_KEY", key)]);
    let err = format!("{:#}", github_tokens(&config).unwrap_err());
    assert!(err.starts_with("AICD_GITHUB_PRIVATE_KEY"), "{err}");
    assert!(!err.contains("c2VjcmV0"), "{err}");
}
