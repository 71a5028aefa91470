//! A fake GitHub (wiremock) that keeps state and enforces GitHub's documented rules, for every
//! crate's tests and the forge conformance suite.
//!
//! It serves the repository `acme/widgets` (id [`REPO_ID`]) of the organization `acme`, reached
//! through installation [`INSTALLATION`] of App [`APP_ID`], with its refs, commits, trees and
//! blobs, the pull requests and issue comments the App creates, and collaborators' permissions.
//! It answers what `aicd_github` asks, shaped like GitHub's documented answers, and refuses as
//! GitHub would:
//!
//! - the token endpoint needs an RS256 JWT of the App; every mint returns a new token, narrowed to
//!   the `repository_ids` and `permissions` asked for ([`FakeGitHub::token_grants`]), and a
//!   narrowed token only reaches what it was granted (404 for another repository, 403 "Resource
//!   not accessible by integration" for a missing permission);
//! - pull request titles over 256 characters and bodies or comments over 65,536 are 422
//!   (`title is too long (maximum is 256 characters)`);
//! - the App's OAuth flow: codes issued with [`FakeGitHub::issue_code`] are exchanged once at
//!   `POST /login/oauth/access_token` (checking [`CLIENT_ID`] and [`CLIENT_SECRET`]), and the user
//!   token answers `GET /user`, `GET /user/installations` and `GET /user/memberships/orgs/acme` as
//!   configured with [`FakeGitHub::add_user`];
//! - [`FakeGitHub::fail`] makes paths answer an error status, as GitHub does when it is down.
//!
//! The web pages (OAuth) and the REST API are served from the same address ([`FakeGitHub::uri`]).

mod json;
mod routes;
mod state;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::Value;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request};

pub use self::state::{Comment, Pull, TokenGrant};
use self::state::{Commit, Files, Leaf, State, User};

/// The App's id.
pub const APP_ID: u64 = 123_456;
/// The App's slug; its bot user is `aicd-test[bot]`.
pub const APP_SLUG: &str = "aicd-test";
/// The App's OAuth client id.
pub const CLIENT_ID: &str = "Iv23liFakeClientId0001";
/// The App's OAuth client secret.
pub const CLIENT_SECRET: &str = "fake-client-secret-0123456789abcdef0123";
/// The installation that covers `acme/widgets`.
pub const INSTALLATION: u64 = 4242;
/// The repository's owner, an organization.
pub const OWNER: &str = "acme";
/// The repository.
pub const FULL_NAME: &str = "acme/widgets";
/// GitHub's id of the repository.
pub const REPO_ID: u64 = 9001;
/// What every installation token the fake mints starts with.
pub const TOKEN_PREFIX: &str = "ghs_fakeInstallationToken";
/// GitHub's limit on pull request titles, in characters.
pub const MAX_TITLE_CHARS: usize = 256;
/// GitHub's limit on pull request bodies and comments, in characters.
pub const MAX_BODY_CHARS: usize = 65_536;
/// The first pull request number handed out (the tests' issues are numbered below it).
const FIRST_PULL: u64 = 101;
/// The first comment id handed out.
const FIRST_COMMENT: u64 = 2_000_000_001;

/// The fake GitHub: a wiremock server with one stateful responder.
pub struct FakeGitHub {
    server: MockServer,
    state: Arc<Mutex<State>>,
}

impl FakeGitHub {
    /// Starts the fake with `main` at a commit holding `README.md` and `src/lib.rs`. The App's
    /// JWTs are checked against `app_public_key_pem` (PKCS#1). `monalisa` is an admin of the
    /// repository; any other user may only read it.
    pub async fn start(app_public_key_pem: &str) -> Self {
        let mut state = State::default();
        let mut files = Files::new();
        for (path, content) in [("README.md", "# Widgets\n"), ("src/lib.rs", "//! Widgets.\n")] {
            let sha = state.put_blob(content.as_bytes().to_vec());
            files.insert(path.to_owned(), Leaf { mode: "100644".into(), kind: "blob".into(), sha });
        }
        let tree = state.put_tree(files);
        let base = state.put_commit(Commit { tree, message: "Initial commit\n".into(), parents: vec![] });
        state.refs.insert("main".into(), base);
        state.permissions.insert("monalisa".into(), "admin".into());

        let state = Arc::new(Mutex::new(state));
        let server = MockServer::start().await;
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(app_public_key_pem.as_bytes()).expect("a PKCS#1 public key");
        Mock::given(any()).respond_with(routes::Responder { state: state.clone(), key }).mount(&server).await;
        Self { server, state }
    }

    /// The address of both the REST API (`AICD_GITHUB_API_URL`) and the web pages
    /// (`AICD_GITHUB_WEB_URL`).
    pub fn uri(&self) -> String {
        self.server.uri()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // --- configuration -----------------------------------------------------------------------

    /// Gives `login` a permission on the repository (`admin`, `maintain`, `write`, `triage`,
    /// `read`, `none`).
    pub fn set_permission(&self, login: &str, permission: &str) {
        self.state().permissions.insert(login.to_owned(), permission.to_owned());
    }

    /// A GitHub user of the OAuth flow: `sees_installation` whether `GET /user/installations`
    /// lists the App's installation for them, `org_role` their role in `acme` (`admin`,
    /// `member`, or `None` for not a member).
    pub fn add_user(&self, login: &str, id: u64, sees_installation: bool, org_role: Option<&str>) {
        let user = User { id, sees_installation, org_role: org_role.map(str::to_owned) };
        self.state().users.insert(login.to_owned(), user);
    }

    /// An OAuth authorization code for `login` (as GitHub hands one to the App's callback),
    /// exchangeable once.
    pub fn issue_code(&self, code: &str, login: &str) {
        self.state().codes.insert(code.to_owned(), login.to_owned());
    }

    /// Makes `main` hold exactly `files` (one new root commit); other branches are removed.
    pub fn reset_main(&self, files: impl IntoIterator<Item = (String, Vec<u8>)>) {
        let mut state = self.state();
        let mut tree = Files::new();
        for (path, content) in files {
            let sha = state.put_blob(content);
            tree.insert(path, Leaf { mode: "100644".into(), kind: "blob".into(), sha });
        }
        let tree = state.put_tree(tree);
        let head = state.put_commit(Commit { tree, message: "Seed\n".into(), parents: vec![] });
        state.refs.clear();
        state.refs.insert("main".into(), head);
    }

    /// Makes every request whose path starts with `prefix` answer `status` (`""`: every request).
    pub fn fail(&self, prefix: &str, status: u16) {
        self.state().failing.push((prefix.to_owned(), status));
    }

    /// Undoes [`FakeGitHub::fail`].
    pub fn recover(&self) {
        self.state().failing.clear();
    }

    // --- inspection --------------------------------------------------------------------------

    /// Every request received, in order.
    pub async fn requests(&self) -> Vec<Request> {
        self.server.received_requests().await.unwrap_or_default()
    }

    /// How many `method` requests went to `path` (without the query).
    pub async fn count(&self, method: &str, path: &str) -> usize {
        self.requests().await.iter().filter(|r| r.method.as_str() == method && r.url.path() == path).count()
    }

    /// How many requests minted installation tokens.
    pub async fn token_requests(&self) -> usize {
        self.count("POST", &format!("/app/installations/{INSTALLATION}/access_tokens")).await
    }

    /// Every request received, one `METHOD /path?query` per line, for failure messages.
    pub async fn describe(&self) -> String {
        let lines: Vec<String> = self.requests().await.iter().map(routes::describe).collect();
        let unknown = self.unknown_requests();
        format!(
            "--- requests to the fake GitHub ---\n{}\n--- of which no route of the fake knew ---\n{}",
            lines.join("\n"),
            unknown.join("\n")
        )
    }

    /// Requests no route of the fake knows (answered 404), as `METHOD /path?query`.
    pub fn unknown_requests(&self) -> Vec<String> {
        self.state().unknown.clone()
    }

    /// The JSON bodies of the `method` requests to `path`, in order.
    pub async fn bodies(&self, method: &str, path: &str) -> Vec<Value> {
        let requests = self.requests().await;
        let matching = requests.iter().filter(|r| r.method.as_str() == method && r.url.path() == path);
        matching.map(|r| r.body_json::<Value>().unwrap_or(Value::Null)).collect()
    }

    /// What each installation token mint asked for, in order.
    pub fn token_grants(&self) -> Vec<TokenGrant> {
        self.state().grants.clone()
    }

    /// Whether `token` is one the fake minted (installation tokens start with [`TOKEN_PREFIX`]).
    pub fn is_minted_token(&self, token: &str) -> bool {
        self.state().tokens.contains_key(token)
    }

    /// The `Authorization` headers of the installation token requests.
    pub async fn token_request_authorizations(&self) -> Vec<String> {
        let path = format!("/app/installations/{INSTALLATION}/access_tokens");
        let requests = self.requests().await;
        let matching = requests.iter().filter(|r| r.method.as_str() == "POST" && r.url.path() == path);
        matching.map(|r| routes::header(r, "authorization").unwrap_or_default().to_owned()).collect()
    }

    /// User tokens revoked through `DELETE /applications/{client_id}/token`.
    pub fn revoked_user_tokens(&self) -> Vec<String> {
        self.state().revoked.clone()
    }

    /// User tokens handed out and not revoked.
    pub fn live_user_tokens(&self) -> usize {
        self.state().user_tokens.len()
    }

    /// The JSON bodies of `POST /repos/acme/widgets/git/refs` (branch creations).
    pub async fn created_refs(&self) -> Vec<Value> {
        self.bodies("POST", &format!("{}/git/refs", json::REPO_PATH)).await
    }

    /// The JSON bodies of `POST /repos/acme/widgets/pulls`.
    pub async fn pull_request_posts(&self) -> Vec<Value> {
        self.bodies("POST", &format!("{}/pulls", json::REPO_PATH)).await
    }

    /// The pull requests opened, in order.
    pub fn pulls(&self) -> Vec<Pull> {
        self.state().pulls.clone()
    }

    /// The comments created on issue `issue`, in order.
    pub fn comments_on(&self, issue: u64) -> Vec<Comment> {
        self.state().comments.iter().filter(|c| c.issue == issue).cloned().collect()
    }

    /// The branches, by name, with their head commit.
    pub fn branches(&self) -> Vec<(String, String)> {
        self.state().refs.iter().map(|(b, s)| (b.clone(), s.clone())).collect()
    }

    /// Every file at the head of `branch`, if it exists.
    pub fn branch_files(&self, branch: &str) -> Option<std::collections::BTreeMap<String, Vec<u8>>> {
        let state = self.state();
        let head = state.refs.get(branch)?;
        let tree = state.trees.get(&state.commits.get(head)?.tree)?;
        tree.iter().map(|(path, leaf)| Some((path.clone(), state.blobs.get(&leaf.sha)?.clone()))).collect()
    }

    /// The content of `path` at the head of `branch`, if both exist.
    pub fn file(&self, branch: &str, path: &str) -> Option<Vec<u8>> {
        let state = self.state();
        let head = state.refs.get(branch)?;
        let tree = &state.commits.get(head)?.tree;
        let leaf = state.trees.get(tree)?.get(path)?;
        state.blobs.get(&leaf.sha).cloned()
    }

    /// How many commits `branch` is ahead of `main`, following first parents.
    pub fn commits_ahead_of_main(&self, branch: &str) -> Option<usize> {
        let state = self.state();
        let main = state.refs.get("main")?;
        let mut at = state.refs.get(branch)?.clone();
        let mut count = 0;
        while &at != main {
            at = state.commits.get(&at)?.parents.first()?.clone();
            count += 1;
        }
        Some(count)
    }
}
