//! What the tests against a mock GitHub (wiremock) share: the App's keys and token mint, a forge
//! over a store with one linked repository, and request helpers.
#![allow(dead_code)]

use std::sync::Arc;

use aicd_core::github::{GithubRepoId, GithubRepoInfo, InstallationId};
use aicd_core::repos::Repository;
use aicd_github::{AppCredentials, GitHubForge, InstallationTokens, TokenPurpose, TokenScope};
use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub(crate) const APP_ID: u64 = 123456;
pub(crate) const INSTALLATION: u64 = 42;
pub(crate) const TOKEN: &str = "ghs_16C7e42F292c6912E7710c838347Ae178B4a";
pub(crate) const REPO: &str = "/repos/octo/hello";
pub(crate) const BRANCH: &str = "aicd/issue-7-0c9f3e2a";

/// One RSA key pair per test binary: (PKCS#1 private PEM, PKCS#1 public PEM).
pub(crate) fn key_pair() -> (&'static str, &'static str) {
    let keys = aicd_testkit::rsa_key_pair();
    (&keys.private_pem, &keys.public_pem)
}

pub(crate) fn credentials() -> AppCredentials {
    AppCredentials::new(APP_ID, key_pair().0).unwrap()
}

pub(crate) async fn github() -> (MockServer, InstallationTokens) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = MockServer::start().await;
    let tokens = InstallationTokens::new(credentials(), &server.uri()).unwrap();
    (server, tokens)
}

pub(crate) fn token_body(token: &str, expires_in: TimeDelta) -> Value {
    json!({
        "token": token,
        "expires_at": (Utc::now() + expires_in).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "permissions": { "contents": "write", "issues": "write", "pull_requests": "write", "metadata": "read" },
        "repository_selection": "selected"
    })
}

pub(crate) async fn mount_token(server: &MockServer, installation: u64, expires_in: TimeDelta) {
    Mock::given(method("POST"))
        .and(path(format!("/app/installations/{installation}/access_tokens")))
        .respond_with(ResponseTemplate::new(201).set_body_json(token_body(TOKEN, expires_in)))
        .mount(server)
        .await;
}

/// A token scope for installation `installation` (the repository `octo/hello`, id 7).
pub(crate) fn scope(installation: u64) -> TokenScope {
    TokenScope::repository(
        InstallationId::from_u64(installation).unwrap(),
        GithubRepoId::new(7).unwrap(),
        TokenPurpose::Push,
    )
}

/// A forge over `tokens` whose store has `octo/hello` (GitHub id 7) registered through
/// installation 42, linked to an organization.
pub(crate) struct Setup {
    pub(crate) forge: GitHubForge,
    pub(crate) repo: Repository,
    pub(crate) _db: aicd_testkit::TestSqlite,
    /// The core over the store the repository is registered in.
    pub(crate) core: aicd_core::Core,
}

pub(crate) async fn setup(tokens: &InstallationTokens) -> Setup {
    let db = aicd_testkit::TestSqlite::new();
    let store = Arc::new(aicd_core::store::SqlStore::sqlite(db.path()).await.unwrap());
    let core = aicd_core::Core::new(store.clone(), aicd_core::CoreOptions::default());
    let org = aicd_core::tenancy::NewOrg { name: "Octo".into(), max_concurrent_jobs: None, settings: None };
    let (org, _, _) = core.bootstrap_org(org).await.unwrap();
    let intake = core.github_intake();
    let installation = InstallationId::from_u64(INSTALLATION).unwrap();
    intake.link_installation(org.id, installation, Some("octo".into()), "operator").await.unwrap();
    let info =
        GithubRepoInfo { repo_id: GithubRepoId::new(7).unwrap(), full_name: "octo/hello".into(), default_branch: None };
    let repo = intake.sync_github_repos(org.id, installation, &[info], &[]).await.unwrap().upserted.remove(0);
    Setup { forge: GitHubForge::new(tokens.clone(), store), repo, _db: db, core }
}

/// The requests GitHub received other than token mints, as (method, path and query, JSON body).
pub(crate) async fn api_calls(server: &MockServer) -> Vec<(String, String, Value)> {
    let requests = server.received_requests().await.unwrap();
    requests
        .iter()
        .filter(|r| !r.url.path().starts_with("/app/"))
        .map(|r| {
            let target = match r.url.query() {
                Some(q) => format!("{}?{q}", r.url.path()),
                None => r.url.path().to_owned(),
            };
            (r.method.to_string(), target, r.body_json().unwrap_or(Value::Null))
        })
        .collect()
}

pub(crate) async fn mints(server: &MockServer) -> usize {
    let requests = server.received_requests().await.unwrap();
    requests.iter().filter(|r| r.url.path().ends_with("/access_tokens")).count()
}

pub(crate) fn json_response(status: u16, body: Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(body)
}

pub(crate) async fn mock(server: &MockServer, verb: &str, at: &str, response: ResponseTemplate) {
    Mock::given(method(verb)).and(path(at)).respond_with(response).mount(server).await;
}
