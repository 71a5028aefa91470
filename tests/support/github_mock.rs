//! A fake GitHub (wiremock) that keeps state: the repository `acme/widgets` of installation 4242,
//! with its refs, commits, trees and blobs, the pull requests and issue comments the App creates,
//! and collaborators' permissions. It answers what `aicd_github::InstallationTokens` and
//! `aicd_github::GitHubForge` ask (the git data API, pulls, issue comments, permissions), shaped
//! like GitHub's documented answers, and refuses requests without the right credentials as GitHub
//! would: the token endpoint needs an RS256 JWT of the App, everything else the installation token.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{SecondsFormat, TimeDelta, Utc};
use serde_json::{Value, json};
use sha2::Digest;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The App's id.
pub(crate) const APP_ID: u64 = 123_456;
/// The App's slug; its bot user is `aicd-test[bot]`.
pub(crate) const APP_SLUG: &str = "aicd-test";
/// The installation that covers `acme/widgets`.
pub(crate) const INSTALLATION: u64 = 4242;
/// The repository's owner.
pub(crate) const OWNER: &str = "acme";
/// The repository.
pub(crate) const FULL_NAME: &str = "acme/widgets";
/// GitHub's id of the repository.
pub(crate) const REPO_ID: u64 = 9001;
/// The installation access token the fake mints.
pub(crate) const TOKEN: &str = "ghs_e2eTestInstallationToken0000000000000";
/// The addresses GitHub's answers name (the real ones, as GitHub writes them).
const API: &str = "https://api.github.com";
const WEB: &str = "https://github.com";
/// Where the repository's endpoints live.
const REPO_PATH: &str = "/repos/acme/widgets";
/// The first pull request number handed out (the tests' issues are numbered below it).
const FIRST_PULL: u64 = 101;
/// The first comment id handed out.
const FIRST_COMMENT: u64 = 2_000_000_001;

/// A pull request opened on the fake.
#[derive(Clone, Debug)]
pub(crate) struct Pull {
    /// Its number.
    pub(crate) number: u64,
    /// Its head branch.
    pub(crate) head: String,
    /// The head commit when it was opened.
    pub(crate) head_sha: String,
    /// Its base branch.
    pub(crate) base: String,
    /// Its title.
    pub(crate) title: String,
    /// Its body.
    pub(crate) body: String,
    /// `open` or `closed`.
    pub(crate) state: String,
}

impl Pull {
    /// Its web address.
    pub(crate) fn html_url(&self) -> String {
        format!("{WEB}/{FULL_NAME}/pull/{}", self.number)
    }
}

/// An issue comment created on the fake, with every text it has had.
#[derive(Clone, Debug)]
pub(crate) struct Comment {
    /// Its id.
    pub(crate) id: u64,
    /// The issue (or pull request) it is on.
    pub(crate) issue: u64,
    /// Its texts: the first as posted, then one per edit.
    pub(crate) bodies: Vec<String>,
}

impl Comment {
    /// Its current text.
    pub(crate) fn body(&self) -> &str {
        self.bodies.last().map(String::as_str).unwrap_or_default()
    }

    /// How many times it was edited.
    pub(crate) fn edits(&self) -> usize {
        self.bodies.len().saturating_sub(1)
    }
}

#[derive(Clone, Debug)]
struct Commit {
    tree: String,
    message: String,
    parents: Vec<String>,
}

/// A file of a tree: its mode, type and blob.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Leaf {
    mode: String,
    kind: String,
    sha: String,
}

/// Trees are kept flat: every file by its full path.
type Files = BTreeMap<String, Leaf>;

#[derive(Default)]
struct State {
    refs: BTreeMap<String, String>,
    commits: HashMap<String, Commit>,
    trees: HashMap<String, Files>,
    blobs: HashMap<String, Vec<u8>>,
    pulls: Vec<Pull>,
    comments: Vec<Comment>,
    permissions: HashMap<String, String>,
    /// Requests no route of the fake knows, as `METHOD /path?query`.
    unknown: Vec<String>,
}

/// The fake GitHub: a wiremock server with one stateful responder.
pub(crate) struct GitHubMock {
    server: MockServer,
    state: Arc<Mutex<State>>,
}

impl GitHubMock {
    /// Starts the fake with `main` at a commit holding `README.md` and `src/lib.rs`. The App's
    /// JWTs are checked against `app_public_key_pem` (PKCS#1). `monalisa` is an admin of the
    /// repository; any other user may only read it.
    pub(crate) async fn start(app_public_key_pem: &str) -> Self {
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
        Mock::given(any()).respond_with(FakeGitHub { state: state.clone(), key }).mount(&server).await;
        Self { server, state }
    }

    /// The REST API's base URL (`AICD_GITHUB_API_URL`).
    pub(crate) fn uri(&self) -> String {
        self.server.uri()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every request received, in order.
    pub(crate) async fn requests(&self) -> Vec<Request> {
        self.server.received_requests().await.unwrap_or_default()
    }

    /// How many `method` requests went to `path` (without the query).
    pub(crate) async fn count(&self, method: &str, path: &str) -> usize {
        self.requests().await.iter().filter(|r| r.method.as_str() == method && r.url.path() == path).count()
    }

    /// Every request received, one `METHOD /path?query` per line, for failure messages.
    pub(crate) async fn describe(&self) -> String {
        let lines: Vec<String> = self.requests().await.iter().map(describe).collect();
        let unknown = self.unknown_requests();
        format!(
            "--- requests to the fake GitHub ---\n{}\n--- of which no route of the fake knew ---\n{}",
            lines.join("\n"),
            unknown.join("\n")
        )
    }

    /// Requests no route of the fake knows (answered 404), as `METHOD /path?query`.
    pub(crate) fn unknown_requests(&self) -> Vec<String> {
        self.state().unknown.clone()
    }

    /// The JSON bodies of the `method` requests to `path`, in order.
    async fn bodies(&self, method: &str, path: &str) -> Vec<Value> {
        let requests = self.requests().await;
        let matching = requests.iter().filter(|r| r.method.as_str() == method && r.url.path() == path);
        matching.map(|r| r.body_json::<Value>().unwrap_or(Value::Null)).collect()
    }

    /// The `Authorization` headers of the installation token requests.
    pub(crate) async fn token_request_authorizations(&self) -> Vec<String> {
        let path = format!("/app/installations/{INSTALLATION}/access_tokens");
        let requests = self.requests().await;
        let matching = requests.iter().filter(|r| r.method.as_str() == "POST" && r.url.path() == path);
        matching.map(|r| header(r, "authorization").unwrap_or_default().to_owned()).collect()
    }

    /// The JSON bodies of `POST /repos/acme/widgets/git/refs` (branch creations).
    pub(crate) async fn created_refs(&self) -> Vec<Value> {
        self.bodies("POST", &format!("{REPO_PATH}/git/refs")).await
    }

    /// The JSON bodies of `POST /repos/acme/widgets/pulls`.
    pub(crate) async fn pull_request_posts(&self) -> Vec<Value> {
        self.bodies("POST", &format!("{REPO_PATH}/pulls")).await
    }

    /// The pull requests opened, in order.
    pub(crate) fn pulls(&self) -> Vec<Pull> {
        self.state().pulls.clone()
    }

    /// The comments created on issue `issue`, in order.
    pub(crate) fn comments_on(&self, issue: u64) -> Vec<Comment> {
        self.state().comments.iter().filter(|c| c.issue == issue).cloned().collect()
    }

    /// The content of `path` at the head of `branch`, if both exist.
    pub(crate) fn file(&self, branch: &str, path: &str) -> Option<Vec<u8>> {
        let state = self.state();
        let head = state.refs.get(branch)?;
        let tree = &state.commits.get(head)?.tree;
        let leaf = state.trees.get(tree)?.get(path)?;
        state.blobs.get(&leaf.sha).cloned()
    }

    /// How many commits `branch` is ahead of `main`, following first parents.
    pub(crate) fn commits_ahead_of_main(&self, branch: &str) -> Option<usize> {
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

fn describe(r: &Request) -> String {
    match r.url.query() {
        Some(q) => format!("{} {}?{q}", r.method, r.url.path()),
        None => format!("{} {}", r.method, r.url.path()),
    }
}

fn header<'a>(r: &'a Request, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

/// A git-like object id: 40 hex digits derived from `parts`.
fn object_id(parts: &[&[u8]]) -> String {
    let mut digest = sha2::Sha256::new();
    for part in parts {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    digest.finalize().iter().take(20).map(|b| format!("{b:02x}")).collect()
}

/// Standard base64, wrapped at 60 columns as GitHub sends blobs.
fn to_base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    let plain = base64::engine::general_purpose::STANDARD.encode(bytes);
    let lines: Vec<&str> = plain.as_bytes().chunks(60).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    lines.join("\n") + "\n"
}

fn from_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(compact).ok()
}

impl State {
    fn put_blob(&mut self, content: Vec<u8>) -> String {
        let sha = object_id(&[b"blob", &content]);
        self.blobs.insert(sha.clone(), content);
        sha
    }

    fn put_tree(&mut self, files: Files) -> String {
        let listing: Vec<String> = files.iter().map(|(p, l)| format!("{} {} {} {p}", l.mode, l.kind, l.sha)).collect();
        let sha = object_id(&[b"tree", listing.join("\n").as_bytes()]);
        self.trees.insert(sha.clone(), files);
        sha
    }

    fn put_commit(&mut self, commit: Commit) -> String {
        let parents = commit.parents.join(",");
        let sha = object_id(&[b"commit", commit.tree.as_bytes(), parents.as_bytes(), commit.message.as_bytes()]);
        self.commits.insert(sha.clone(), commit);
        sha
    }

    /// The tree of a commit or of a branch's head, or the tree of that sha.
    fn tree_of(&self, name: &str) -> String {
        let commit = if self.commits.contains_key(name) { Some(name) } else { self.refs.get(name).map(String::as_str) };
        commit.and_then(|c| self.commits.get(c)).map_or_else(|| name.to_owned(), |c| c.tree.clone())
    }
}

fn reply(status: u16, body: Value) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(body)
        .insert_header("x-github-media-type", "github.v3; format=json")
        .insert_header("x-ratelimit-limit", "5000")
        .insert_header("x-ratelimit-remaining", "4999")
        .insert_header("x-ratelimit-used", "1")
        .insert_header("x-ratelimit-resource", "core")
}

fn error(status: u16, message: &str, docs: &str) -> ResponseTemplate {
    let documentation_url = format!("https://docs.github.com/rest{docs}");
    reply(status, json!({ "message": message, "documentation_url": documentation_url, "status": status.to_string() }))
}

fn validation_failed(docs: &str, errors: Value) -> ResponseTemplate {
    let documentation_url = format!("https://docs.github.com/rest{docs}");
    reply(
        422,
        json!({ "message": "Validation Failed", "errors": errors, "documentation_url": documentation_url, "status": "422" }),
    )
}

fn not_found() -> ResponseTemplate {
    error(404, "Not Found", "")
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn bot() -> Value {
    json!({
        "login": format!("{APP_SLUG}[bot]"), "id": 41_898_282, "node_id": "BOT_kgDOAn9RKg",
        "avatar_url": "https://avatars.githubusercontent.com/in/123456?v=4", "gravatar_id": "",
        "url": format!("{API}/users/{APP_SLUG}%5Bbot%5D"), "html_url": format!("{WEB}/apps/{APP_SLUG}"),
        "type": "Bot", "user_view_type": "public", "site_admin": false
    })
}

fn user(login: &str) -> Value {
    json!({
        "login": login, "id": 583_231, "node_id": "MDQ6VXNlcjU4MzIzMQ==",
        "avatar_url": "https://avatars.githubusercontent.com/u/583231?v=4", "gravatar_id": "",
        "url": format!("{API}/users/{login}"), "html_url": format!("{WEB}/{login}"),
        "type": "User", "user_view_type": "public", "site_admin": false
    })
}

fn repository() -> Value {
    json!({
        "id": REPO_ID, "node_id": "R_kgDOAAAjKQ", "name": "widgets", "full_name": FULL_NAME, "private": true,
        "owner": { "login": OWNER, "id": 6_811_672, "type": "Organization", "url": format!("{API}/users/{OWNER}") },
        "html_url": format!("{WEB}/{FULL_NAME}"), "description": "Widgets of all kinds", "fork": false,
        "url": format!("{API}{REPO_PATH}"), "default_branch": "main", "visibility": "private",
        "created_at": "2024-05-02T10:16:35Z", "updated_at": "2024-05-02T10:16:35Z",
        "pushed_at": "2024-05-02T10:16:35Z",
        "permissions": { "admin": false, "maintain": false, "push": true, "triage": true, "pull": true }
    })
}

fn ref_json(branch: &str, sha: &str) -> Value {
    json!({
        "ref": format!("refs/heads/{branch}"), "node_id": "REF_kwDOAAAjKa9yZWZzL2hlYWRzL21haW4",
        "url": format!("{API}{REPO_PATH}/git/refs/heads/{branch}"),
        "object": { "sha": sha, "type": "commit", "url": format!("{API}{REPO_PATH}/git/commits/{sha}") }
    })
}

fn commit_json(sha: &str, commit: &Commit) -> Value {
    let person = json!({ "name": "AI-CD", "email": "aicd@example.com", "date": now() });
    let parents: Vec<Value> = commit
        .parents
        .iter()
        .map(|p| {
            json!({ "sha": p, "url": format!("{API}{REPO_PATH}/git/commits/{p}"),
                    "html_url": format!("{WEB}/{FULL_NAME}/commit/{p}") })
        })
        .collect();
    json!({
        "sha": sha, "node_id": "C_kwDOAAAjKdoAKDEyMzQ", "url": format!("{API}{REPO_PATH}/git/commits/{sha}"),
        "html_url": format!("{WEB}/{FULL_NAME}/commit/{sha}"),
        "author": person, "committer": person, "message": commit.message,
        "tree": { "sha": commit.tree, "url": format!("{API}{REPO_PATH}/git/trees/{}", commit.tree) },
        "parents": parents,
        "verification": { "verified": false, "reason": "unsigned", "signature": null, "payload": null, "verified_at": null }
    })
}

/// A tree as `GET .../git/trees/{sha}?recursive=1` lists it: directories and files by path.
fn tree_json(sha: &str, files: &Files, blobs: &HashMap<String, Vec<u8>>) -> Value {
    let mut entries: BTreeMap<String, Value> = BTreeMap::new();
    for (path, leaf) in files {
        let parts: Vec<&str> = path.split('/').collect();
        for depth in 1..parts.len() {
            let dir = parts[..depth].join("/");
            let dir_sha = object_id(&[b"dir", sha.as_bytes(), dir.as_bytes()]);
            let entry = json!({ "path": dir, "mode": "040000", "type": "tree", "sha": dir_sha,
                                "url": format!("{API}{REPO_PATH}/git/trees/{dir_sha}") });
            entries.entry(dir).or_insert(entry);
        }
        let size = blobs.get(&leaf.sha).map_or(0, Vec::len);
        let entry = json!({ "path": path, "mode": leaf.mode, "type": leaf.kind, "sha": leaf.sha, "size": size,
                            "url": format!("{API}{REPO_PATH}/git/blobs/{}", leaf.sha) });
        entries.insert(path.clone(), entry);
    }
    let tree: Vec<Value> = entries.into_values().collect();
    json!({ "sha": sha, "url": format!("{API}{REPO_PATH}/git/trees/{sha}"), "tree": tree, "truncated": false })
}

fn pull_json(pull: &Pull) -> Value {
    let n = pull.number;
    let side = |branch: &str, sha: &str| {
        json!({ "label": format!("{OWNER}:{branch}"), "ref": branch, "sha": sha,
                "user": { "login": OWNER, "type": "Organization" }, "repo": repository() })
    };
    let base_sha = "0000000000000000000000000000000000000000";
    json!({
        "url": format!("{API}{REPO_PATH}/pulls/{n}"), "id": 1_900_000_000 + n, "node_id": "PR_kwDOAAAjKc5xYz",
        "html_url": pull.html_url(), "diff_url": format!("{}.diff", pull.html_url()),
        "patch_url": format!("{}.patch", pull.html_url()), "issue_url": format!("{API}{REPO_PATH}/issues/{n}"),
        "number": n, "state": pull.state, "locked": false,
        "title": pull.title, "user": bot(), "body": pull.body,
        "created_at": now(), "updated_at": now(), "closed_at": null, "merged_at": null, "merge_commit_sha": null,
        "assignee": null, "assignees": [], "requested_reviewers": [], "requested_teams": [], "labels": [],
        "milestone": null, "draft": false,
        "commits_url": format!("{API}{REPO_PATH}/pulls/{n}/commits"),
        "review_comments_url": format!("{API}{REPO_PATH}/pulls/{n}/comments"),
        "comments_url": format!("{API}{REPO_PATH}/issues/{n}/comments"),
        "head": side(&pull.head, &pull.head_sha), "base": side(&pull.base, base_sha),
        "author_association": "NONE", "auto_merge": null, "active_lock_reason": null,
        "merged": false, "mergeable": null, "rebaseable": null, "mergeable_state": "unknown", "merged_by": null,
        "comments": 0, "review_comments": 0, "maintainer_can_modify": false, "commits": 1,
        "additions": 1, "deletions": 0, "changed_files": 1
    })
}

fn comment_json(comment: &Comment) -> Value {
    let id = comment.id;
    json!({
        "id": id, "node_id": "IC_kwDOAAAjKc6AbCdE", "url": format!("{API}{REPO_PATH}/issues/comments/{id}"),
        "html_url": format!("{WEB}/{FULL_NAME}/issues/{}#issuecomment-{id}", comment.issue),
        "issue_url": format!("{API}{REPO_PATH}/issues/{}", comment.issue),
        "body": comment.body(), "user": bot(), "created_at": now(), "updated_at": now(),
        "author_association": "NONE", "performed_via_github_app": null,
        "reactions": { "url": format!("{API}{REPO_PATH}/issues/comments/{id}/reactions"), "total_count": 0 }
    })
}

/// The responder behind every route.
struct FakeGitHub {
    state: Arc<Mutex<State>>,
    key: jsonwebtoken::DecodingKey,
}

impl Respond for FakeGitHub {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let path = request.url.path();
        if request.method.as_str() == "POST" && path == format!("/app/installations/{INSTALLATION}/access_tokens") {
            return self.mint(request);
        }
        if header(request, "authorization") != Some(&*format!("Bearer {TOKEN}")) {
            return error(401, "Bad credentials", "");
        }
        if request.method.as_str() == "GET" && path == "/installation/repositories" {
            return reply(
                200,
                json!({ "total_count": 1, "repository_selection": "selected", "repositories": [repository()] }),
            );
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let answer = path.strip_prefix(REPO_PATH).and_then(|rest| route(&mut state, rest, request));
        answer.unwrap_or_else(|| {
            state.unknown.push(describe(request));
            not_found()
        })
    }
}

impl FakeGitHub {
    /// `POST /app/installations/4242/access_tokens`, authenticated with the App's JWT.
    fn mint(&self, request: &Request) -> ResponseTemplate {
        let refused = || error(401, "A JSON web token could not be decoded", "");
        let Some(jwt) = header(request, "authorization").and_then(|h| h.strip_prefix("Bearer ")) else {
            return refused();
        };
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_required_spec_claims(&["exp", "iat", "iss"]);
        validation.set_issuer(&[APP_ID.to_string()]);
        if jsonwebtoken::decode::<Value>(jwt, &self.key, &validation).is_err() {
            return refused();
        }
        let expires_at = (Utc::now() + TimeDelta::hours(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
        reply(
            201,
            json!({
                "token": TOKEN, "expires_at": expires_at,
                "permissions": { "contents": "write", "issues": "write", "metadata": "read", "pull_requests": "write" },
                "repository_selection": "selected"
            }),
        )
    }
}

/// Answers a request to `/repos/acme/widgets{rest}`; `None` for a route the fake does not know.
fn route(state: &mut State, rest: &str, request: &Request) -> Option<ResponseTemplate> {
    let body = || request.body_json::<Value>().unwrap_or(Value::Null);
    let query = |name: &str| request.url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let answer = match (request.method.as_str(), segments.as_slice()) {
        ("GET", [""]) => reply(200, repository()),

        // References.
        ("GET", ["git", "ref", "heads", branch @ ..]) => {
            let branch = branch.join("/");
            match state.refs.get(&branch) {
                Some(sha) => reply(200, ref_json(&branch, sha)),
                None => not_found(),
            }
        }
        ("POST", ["git", "refs"]) => create_ref(state, &body()),
        ("PATCH", ["git", "refs", "heads", branch @ ..]) => update_ref(state, &branch.join("/"), &body()),

        // Commits.
        ("GET", ["git", "commits", sha]) => match state.commits.get(*sha) {
            Some(commit) => reply(200, commit_json(sha, commit)),
            None => not_found(),
        },
        ("POST", ["git", "commits"]) => {
            let body = body();
            let tree = body["tree"].as_str().unwrap_or_default().to_owned();
            let parents: Vec<String> = body["parents"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect();
            if !state.trees.contains_key(&tree) || parents.iter().any(|p| !state.commits.contains_key(p)) {
                return Some(error(422, "Tree SHA does not exist", "/git/commits#create-a-commit"));
            }
            let commit = Commit { tree, message: body["message"].as_str().unwrap_or_default().to_owned(), parents };
            let sha = state.put_commit(commit.clone());
            reply(201, commit_json(&sha, &commit))
        }

        // Trees (only recursive listings are served: the forge asks for nothing else).
        ("GET", ["git", "trees", name]) if query("recursive").is_some() => {
            let sha = state.tree_of(name);
            match state.trees.get(&sha) {
                Some(files) => reply(200, tree_json(&sha, files, &state.blobs)),
                None => not_found(),
            }
        }
        ("POST", ["git", "trees"]) => create_tree(state, &body()),

        // Blobs.
        ("GET", ["git", "blobs", sha]) => match state.blobs.get(*sha) {
            Some(content) => reply(
                200,
                json!({ "sha": sha, "node_id": "B_kwDOAAAjKdoAKDU", "size": content.len(),
                        "url": format!("{API}{REPO_PATH}/git/blobs/{sha}"),
                        "content": to_base64(content), "encoding": "base64" }),
            ),
            None => not_found(),
        },
        ("POST", ["git", "blobs"]) => {
            let body = body();
            let text = body["content"].as_str().unwrap_or_default();
            let content = match body["encoding"].as_str() {
                Some("base64") => match from_base64(text) {
                    Some(bytes) => bytes,
                    None => return Some(error(422, "Invalid base64 content", "/git/blobs#create-a-blob")),
                },
                _ => text.as_bytes().to_vec(),
            };
            let sha = state.put_blob(content);
            reply(201, json!({ "sha": sha, "url": format!("{API}{REPO_PATH}/git/blobs/{sha}") }))
        }

        // Pull requests.
        ("GET", ["pulls"]) => {
            let head = query("head");
            let wanted = query("state").unwrap_or_else(|| "open".into());
            let listed: Vec<Value> = state
                .pulls
                .iter()
                .filter(|p| head.as_deref().is_none_or(|h| h == format!("{OWNER}:{}", p.head)))
                .filter(|p| wanted == "all" || wanted == p.state)
                .map(pull_json)
                .collect();
            reply(200, Value::Array(listed))
        }
        ("POST", ["pulls"]) => create_pull(state, &body()),

        // Issue comments.
        ("POST", ["issues", number, "comments"]) => {
            let issue: u64 = number.parse().ok()?;
            let text = body()["body"].as_str().unwrap_or_default().to_owned();
            if text.trim().is_empty() {
                let errors = json!([{ "resource": "IssueComment", "code": "missing_field", "field": "body" }]);
                return Some(validation_failed("/issues/comments#create-an-issue-comment", errors));
            }
            let comment = Comment { id: FIRST_COMMENT + state.comments.len() as u64, issue, bodies: vec![text] };
            let answer = comment_json(&comment);
            state.comments.push(comment);
            reply(201, answer)
        }
        ("PATCH", ["issues", "comments", id]) => {
            let id: u64 = id.parse().ok()?;
            let text = body()["body"].as_str().unwrap_or_default().to_owned();
            match state.comments.iter_mut().find(|c| c.id == id) {
                Some(comment) => {
                    comment.bodies.push(text);
                    reply(200, comment_json(comment))
                }
                None => not_found(),
            }
        }

        // Collaborators.
        ("GET", ["collaborators", login, "permission"]) => {
            let permission = state.permissions.get(*login).cloned().unwrap_or_else(|| "read".into());
            let mut who = user(login);
            who["permissions"] = json!({
                "admin": permission == "admin", "maintain": permission == "admin",
                "push": permission != "read", "triage": permission != "read", "pull": true
            });
            who["role_name"] = json!(permission);
            reply(200, json!({ "permission": permission, "role_name": permission, "user": who }))
        }
        _ => return None,
    };
    Some(answer)
}

/// `POST .../git/refs`.
fn create_ref(state: &mut State, body: &Value) -> ResponseTemplate {
    const DOCS: &str = "/git/refs#create-a-reference";
    let (Some(name), Some(sha)) = (body["ref"].as_str(), body["sha"].as_str()) else {
        return error(422, "Invalid request.", DOCS);
    };
    let Some(branch) = name.strip_prefix("refs/heads/") else {
        return error(422, "Reference name is invalid", DOCS);
    };
    if state.refs.contains_key(branch) {
        return error(422, "Reference already exists", DOCS);
    }
    if !state.commits.contains_key(sha) {
        return error(422, "Object does not exist", DOCS);
    }
    state.refs.insert(branch.to_owned(), sha.to_owned());
    reply(201, ref_json(branch, sha))
}

/// `PATCH .../git/refs/heads/{branch}`: only fast-forwards, unless forced.
fn update_ref(state: &mut State, branch: &str, body: &Value) -> ResponseTemplate {
    const DOCS: &str = "/git/refs#update-a-reference";
    let Some(sha) = body["sha"].as_str() else { return error(422, "Invalid request.", DOCS) };
    let Some(current) = state.refs.get(branch).cloned() else { return not_found() };
    let Some(commit) = state.commits.get(sha) else { return error(422, "Object does not exist", DOCS) };
    let force = body["force"].as_bool().unwrap_or(false);
    if !force && sha != current && commit.parents.first() != Some(&current) {
        return error(422, "Update is not a fast forward", DOCS);
    }
    state.refs.insert(branch.to_owned(), sha.to_owned());
    reply(200, ref_json(branch, sha))
}

/// `POST .../git/trees`: `tree` entries on `base_tree`; a `sha: null` entry deletes the path.
fn create_tree(state: &mut State, body: &Value) -> ResponseTemplate {
    const DOCS: &str = "/git/trees#create-a-tree";
    let base = body["base_tree"].as_str().unwrap_or_default();
    let Some(mut files) = state.trees.get(base).cloned() else {
        return error(422, "base_tree is not a valid tree oid", DOCS);
    };
    for entry in body["tree"].as_array().into_iter().flatten() {
        let path = entry["path"].as_str().unwrap_or_default().to_owned();
        match entry["sha"].as_str() {
            Some(sha) if state.blobs.contains_key(sha) => {
                let mode = entry["mode"].as_str().unwrap_or("100644").to_owned();
                files.insert(path, Leaf { mode, kind: "blob".into(), sha: sha.to_owned() });
            }
            None if files.remove(&path).is_some() => {}
            _ => return error(422, "GitRPC::BadObjectState", DOCS),
        }
    }
    let sha = state.put_tree(files);
    let listing = tree_json(&sha, &state.trees[&sha], &state.blobs);
    reply(201, listing)
}

/// `POST .../pulls`: one open pull request per head branch, as GitHub enforces.
fn create_pull(state: &mut State, body: &Value) -> ResponseTemplate {
    const DOCS: &str = "/pulls/pulls#create-a-pull-request";
    let head = body["head"].as_str().unwrap_or_default().to_owned();
    let base = body["base"].as_str().unwrap_or_default().to_owned();
    if state.pulls.iter().any(|p| p.head == head && p.state == "open") {
        let message = format!("A pull request already exists for {OWNER}:{head}.");
        return validation_failed(DOCS, json!([{ "resource": "PullRequest", "code": "custom", "message": message }]));
    }
    let (Some(head_sha), true) = (state.refs.get(&head).cloned(), state.refs.contains_key(&base)) else {
        return validation_failed(DOCS, json!([{ "resource": "PullRequest", "field": "head", "code": "invalid" }]));
    };
    let pull = Pull {
        number: FIRST_PULL + state.pulls.len() as u64,
        head,
        head_sha,
        base,
        title: body["title"].as_str().unwrap_or_default().to_owned(),
        body: body["body"].as_str().unwrap_or_default().to_owned(),
        state: "open".into(),
    };
    let answer = pull_json(&pull);
    state.pulls.push(pull);
    reply(201, answer)
}
