//! The forge the binaries assemble from their configuration: GitHub repositories through the
//! configured GitHub App (against a mock GitHub at `AICD_GITHUB_API_URL`), local repositories
//! outside production, and readable, permanent refusals for what the deployment cannot serve.

use aicd_core::Error;
use aicd_core::forge::Forge;
use aicd_core::repos::{RepoSource, Repository};
use aicd_runtime::assemble::{NO_GITHUB_APP, NO_LOCAL_REPOS, build_forge};
use aicd_runtime::config::{Config, Environment};
use chrono::Utc;
use serde_json::json;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const APP_ID: &str = "123456";
const INSTALLATION: i64 = 42;
const TOKEN: &str = "ghs_16C7e42F292c6912E7710c838347Ae178B4a";

/// A PKCS#1 PEM RSA private key, made once per test binary.
fn private_key_pem() -> &'static str {
    &aicd_testkit::rsa_key_pair().private_pem
}

fn config(vars: &[(&str, &str)]) -> Config {
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    Config::from_lookup(move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        .expect("a valid configuration")
}

fn repository(source: RepoSource) -> Repository {
    Repository {
        id: aicd_core::RepoId::new(),
        org_id: aicd_core::OrgId::new(),
        full_name: "octo/hello".into(),
        source,
        default_branch: "main".into(),
        settings: json!({}),
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

fn github_repo() -> Repository {
    repository(RepoSource::Github { installation_id: INSTALLATION, repo_id: 7 })
}

/// A local repository with one commit of `README.md` on `main`.
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
    let github = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/app/installations/{INSTALLATION}/access_tokens")))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "token": TOKEN,
            "expires_at": "2999-01-01T00:00:00Z",
            "permissions": { "contents": "write" }
        })))
        .expect(1)
        .mount(&github)
        .await;
    Mock::given(method("GET"))
        .and(path("/repos/octo/hello/git/trees/main"))
        .and(query_param("recursive", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "sha": "root", "truncated": false,
            "tree": [{ "path": "README.md", "mode": "100644", "type": "blob", "sha": "readme-sha", "size": 8 }]
        })))
        .expect(1)
        .mount(&github)
        .await;
    let config = config(&[
        ("AICD_GITHUB_APP_ID", APP_ID),
        ("AICD_GITHUB_PRIVATE_KEY", private_key_pem()),
        ("AICD_GITHUB_API_URL", &github.uri()),
    ]);

    let forge = build_forge(&config).unwrap();
    assert!(forge.serves_github() && forge.serves_local(), "{forge:?}");
    let view = forge.repo_view(&github_repo()).await.unwrap();
    assert_eq!(view.list_files().await.unwrap(), ["README.md"]);

    let requests = github.received_requests().await.unwrap();
    let seen: Vec<(String, String)> =
        requests.iter().map(|r| (r.method.to_string(), r.url.path().to_owned())).collect();
    assert_eq!(
        seen,
        [
            ("POST".to_owned(), format!("/app/installations/{INSTALLATION}/access_tokens")),
            ("GET".to_owned(), "/repos/octo/hello/git/trees/main".to_owned()),
        ]
    );
    let bearer = |i: usize| requests[i].headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let app_jwt = bearer(0).unwrap();
    assert!(app_jwt.starts_with("Bearer ey") && app_jwt.matches('.').count() == 2, "the App's JWT: {app_jwt}");
    assert_eq!(bearer(1).as_deref(), Some(format!("Bearer {TOKEN}").as_str()), "the installation token");
}

#[tokio::test]
async fn without_an_app_github_repositories_are_refused_and_local_ones_served() {
    let (local, _dir) = local_repo();
    let forge = build_forge(&config(&[])).unwrap();
    assert!(!forge.serves_github() && forge.serves_local(), "{forge:?}");
    assert_rejected(forge.repo_view(&github_repo()).await, "github", NO_GITHUB_APP);
    assert_eq!(
        NO_GITHUB_APP,
        "this deployment has no GitHub App configured (AICD_GITHUB_APP_ID, AICD_GITHUB_PRIVATE_KEY)"
    );
    assert_rejected(forge.create_branch(&github_repo(), "aicd/issue-1").await, "github", NO_GITHUB_APP);

    let view = forge.repo_view(&local).await.unwrap();
    assert_eq!(view.list_files().await.unwrap(), ["README.md"]);
    let branch = forge.create_branch(&local, "aicd/issue-1").await.unwrap();
    assert_eq!(branch.name, "aicd/issue-1");

    // A standalone worker on PostgreSQL does not allow registering local repositories, but
    // serves the ones that exist outside production.
    let mut worker = config(&[]);
    worker.server.allow_local_repos = false;
    assert!(build_forge(&worker).unwrap().serves_local());
}

#[tokio::test]
async fn production_refuses_local_repositories() {
    let (local, _dir) = local_repo();
    let mut production = config(&[]);
    production.environment = Environment::Production;
    production.server.allow_local_repos = false;
    let forge = build_forge(&production).unwrap();
    assert!(!forge.serves_local(), "{forge:?}");
    assert_rejected(forge.repo_view(&local).await, "forge", NO_LOCAL_REPOS);
    assert_rejected(forge.create_branch(&local, "aicd/issue-1").await, "forge", NO_LOCAL_REPOS);
}

#[test]
fn an_unusable_private_key_fails_naming_the_variable_without_quoting_the_key() {
    let key = "-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END RSA PRIVATE KEY-----";
    let config = config(&[("AICD_GITHUB_APP_ID", APP_ID), ("AICD_GITHUB_PRIVATE_KEY", key)]);
    let err = format!("{:#}", build_forge(&config).unwrap_err());
    assert!(err.starts_with("AICD_GITHUB_PRIVATE_KEY"), "{err}");
    assert!(!err.contains("c2VjcmV0"), "{err}");
}
