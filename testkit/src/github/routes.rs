//! The fake GitHub's routes: the App's token endpoint, the installation's repository, and the
//! user-to-server endpoints of the App's OAuth flow.

use std::sync::{Arc, Mutex, PoisonError};

use chrono::{SecondsFormat, TimeDelta, Utc};
use serde_json::{Value, json};
use wiremock::{Request, Respond, ResponseTemplate};

use super::json::{
    REPO_PATH, comment_json, commit_json, error, from_base64, installation, not_found, pull_json, ref_json, reply,
    repository, to_base64, too_long, tree_json, user, validation_failed,
};
use super::state::{Comment, Commit, Leaf, State, TokenGrant};
use super::{
    APP_ID, CLIENT_ID, CLIENT_SECRET, FIRST_COMMENT, FIRST_PULL, INSTALLATION, MAX_BODY_CHARS, MAX_TITLE_CHARS, OWNER,
};

/// The responder behind every route.
pub(super) struct Responder {
    pub(super) state: Arc<Mutex<State>>,
    pub(super) key: jsonwebtoken::DecodingKey,
}

pub(super) fn describe(r: &Request) -> String {
    match r.url.query() {
        Some(q) => format!("{} {}?{q}", r.method, r.url.path()),
        None => format!("{} {}", r.method, r.url.path()),
    }
}

pub(super) fn header<'a>(r: &'a Request, name: &str) -> Option<&'a str> {
    r.headers.get(name).and_then(|v| v.to_str().ok())
}

fn bearer(request: &Request) -> Option<&str> {
    header(request, "authorization").and_then(|h| h.strip_prefix("Bearer "))
}

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let path = request.url.path();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, status)) = state.failing.iter().find(|(prefix, _)| path.starts_with(prefix.as_str())) {
            return error(*status, "Service Unavailable", "");
        }
        match (request.method.as_str(), path) {
            ("POST", "/login/oauth/access_token") => return exchange_code(&mut state, request),
            ("POST", p) if p.starts_with("/app/installations/") && p.ends_with("/access_tokens") => {
                return self.mint(&mut state, request);
            }
            ("DELETE", p) if p == format!("/applications/{CLIENT_ID}/token") => return revoke(&mut state, request),
            (_, p) if p == "/user" || p.starts_with("/user/") => return user_route(&state, request),
            _ => {}
        }
        let Some(grant) = bearer(request).and_then(|t| state.tokens.get(t)).cloned() else {
            return error(401, "Bad credentials", "");
        };
        if request.method.as_str() == "GET" && path == "/installation/repositories" {
            let listed: Vec<Value> = if grant.reaches_repository() { vec![repository()] } else { vec![] };
            let count = listed.len();
            return reply(
                200,
                json!({ "total_count": count, "repository_selection": "selected", "repositories": listed }),
            );
        }
        let Some(rest) = path.strip_prefix(REPO_PATH) else {
            state.unknown.push(describe(request));
            return not_found();
        };
        // A token narrowed to other repositories does not see this one at all.
        if !grant.reaches_repository() {
            return not_found();
        }
        let (permission, level) = needed_permission(request.method.as_str(), rest);
        if !grant.allows(permission, level) {
            return error(403, "Resource not accessible by integration", "");
        }
        route(&mut state, rest, request).unwrap_or_else(|| {
            state.unknown.push(describe(request));
            not_found()
        })
    }
}

/// What a repository route needs of a token: the permission and `read` or `write`.
fn needed_permission(method: &str, rest: &str) -> (&'static str, &'static str) {
    let level = if method == "GET" { "read" } else { "write" };
    let first = rest.trim_start_matches('/').split('/').next().unwrap_or_default();
    match first {
        "git" | "contents" => ("contents", level),
        "pulls" => ("pull_requests", level),
        "issues" => ("issues", level),
        _ => ("metadata", "read"),
    }
}

impl Responder {
    /// `POST /app/installations/{id}/access_tokens`, authenticated with the App's JWT: a new token
    /// per request, narrowed as asked.
    fn mint(&self, state: &mut State, request: &Request) -> ResponseTemplate {
        let refused = || error(401, "A JSON web token could not be decoded", "");
        let Some(jwt) = bearer(request) else { return refused() };
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_required_spec_claims(&["exp", "iat", "iss"]);
        validation.set_issuer(&[APP_ID.to_string()]);
        if jsonwebtoken::decode::<Value>(jwt, &self.key, &validation).is_err() {
            return refused();
        }
        if request.url.path() != format!("/app/installations/{INSTALLATION}/access_tokens") {
            return not_found();
        }
        let grant = TokenGrant::from_request(&request.body_json::<Value>().unwrap_or(Value::Null));
        if grant.repository_ids.as_ref().is_some_and(|ids| ids.iter().any(|id| *id != super::REPO_ID)) {
            let message =
                "There is at least one repository that does not exist or is not accessible to the parent installation.";
            return error(422, message, "/apps/apps#create-an-installation-access-token-for-an-app");
        }
        let token = format!("{}{:04}", super::TOKEN_PREFIX, state.grants.len() + 1);
        state.tokens.insert(token.clone(), grant.clone());
        state.grants.push(grant.clone());
        let expires_at = (Utc::now() + TimeDelta::hours(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
        let permissions = if grant.permissions.is_empty() {
            json!({ "contents": "write", "issues": "write", "metadata": "read", "pull_requests": "write" })
        } else {
            json!(grant.permissions)
        };
        reply(
            201,
            json!({ "token": token, "expires_at": expires_at, "permissions": permissions, "repository_selection": "selected" }),
        )
    }
}

/// `POST /login/oauth/access_token`: a code the fake issued, once, for the App's OAuth client.
fn exchange_code(state: &mut State, request: &Request) -> ResponseTemplate {
    let body = request.body_json::<Value>().unwrap_or(Value::Null);
    let field = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
    let oauth_error = |error: &str, description: &str| {
        reply(
            200,
            json!({ "error": error, "error_description": description,
                           "error_uri": "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors" }),
        )
    };
    if field("client_id").as_deref() != Some(CLIENT_ID) || field("client_secret").as_deref() != Some(CLIENT_SECRET) {
        return oauth_error("incorrect_client_credentials", "The client_id and/or client_secret passed are incorrect.");
    }
    let Some(login) = field("code").and_then(|code| state.codes.remove(&code)) else {
        return oauth_error("bad_verification_code", "The code passed is incorrect or expired.");
    };
    let token = format!("ghu_fakeUserToken{:04}", state.user_tokens.len() + 1);
    state.user_tokens.insert(token.clone(), login);
    reply(
        200,
        json!({ "access_token": token, "expires_in": 28_800, "refresh_token": "ghr_fakeRefresh", "refresh_token_expires_in": 15_897_600, "scope": "", "token_type": "bearer" }),
    )
}

/// `DELETE /applications/{client_id}/token`, with the client's basic credentials.
fn revoke(state: &mut State, request: &Request) -> ResponseTemplate {
    use base64::Engine as _;
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    if header(request, "authorization") != Some(&*format!("Basic {expected}")) {
        return error(404, "Not Found", "");
    }
    let token = request.body_json::<Value>().ok().and_then(|b| b["access_token"].as_str().map(str::to_owned));
    match token.filter(|t| state.user_tokens.remove(t).is_some()) {
        Some(token) => {
            state.revoked.push(token);
            ResponseTemplate::new(204)
        }
        None => error(404, "Not Found", ""),
    }
}

/// `/user`, `/user/installations` and `/user/memberships/orgs/{org}`, as the user of a token.
fn user_route(state: &State, request: &Request) -> ResponseTemplate {
    let Some(login) = bearer(request).and_then(|t| state.user_tokens.get(t)) else {
        return error(401, "Bad credentials", "");
    };
    let Some(who) = state.users.get(login) else { return error(401, "Bad credentials", "") };
    match (request.method.as_str(), request.url.path()) {
        ("GET", "/user") => reply(200, user(login, who.id)),
        ("GET", "/user/installations") => {
            let page = request.url.query_pairs().find(|(k, _)| k == "page").and_then(|(_, v)| v.parse::<u32>().ok());
            let listed: Vec<Value> =
                if who.sees_installation && page.unwrap_or(1) == 1 { vec![installation()] } else { vec![] };
            reply(200, json!({ "total_count": listed.len(), "installations": listed }))
        }
        ("GET", path) if path == format!("/user/memberships/orgs/{OWNER}") => match &who.org_role {
            Some(role) => reply(
                200,
                json!({ "url": format!("https://api.github.com/orgs/{OWNER}/memberships/{login}"), "state": "active",
                        "role": role, "organization": super::json::owner(), "user": user(login, who.id) }),
            ),
            None => not_found(),
        },
        _ => not_found(),
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
        ("DELETE", ["git", "refs", "heads", branch @ ..]) => {
            if state.refs.remove(&branch.join("/")).is_some() {
                ResponseTemplate::new(204)
            } else {
                error(422, "Reference does not exist", "/git/refs#delete-a-reference")
            }
        }

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
                        "url": format!("https://api.github.com{REPO_PATH}/git/blobs/{sha}"),
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
            reply(201, json!({ "sha": sha, "url": format!("https://api.github.com{REPO_PATH}/git/blobs/{sha}") }))
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
            const DOCS: &str = "/issues/comments#create-an-issue-comment";
            let issue: u64 = number.parse().ok()?;
            let text = body()["body"].as_str().unwrap_or_default().to_owned();
            if text.trim().is_empty() {
                let errors = json!([{ "resource": "IssueComment", "code": "missing_field", "field": "body" }]);
                return Some(validation_failed(DOCS, errors));
            }
            if text.chars().count() > MAX_BODY_CHARS {
                return Some(too_long("IssueComment", "body", MAX_BODY_CHARS, DOCS));
            }
            let comment = Comment { id: FIRST_COMMENT + state.comments.len() as u64, issue, bodies: vec![text] };
            let answer = comment_json(&comment);
            state.comments.push(comment);
            reply(201, answer)
        }
        ("PATCH", ["issues", "comments", id]) => {
            const DOCS: &str = "/issues/comments#update-an-issue-comment";
            let id: u64 = id.parse().ok()?;
            let text = body()["body"].as_str().unwrap_or_default().to_owned();
            if text.chars().count() > MAX_BODY_CHARS {
                return Some(too_long("IssueComment", "body", MAX_BODY_CHARS, DOCS));
            }
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
            let mut who = user(login, 583_231);
            who["permissions"] = json!({
                "admin": permission == "admin", "maintain": permission == "admin" || permission == "maintain",
                "push": matches!(permission.as_str(), "admin" | "maintain" | "write"),
                "triage": permission != "read" && permission != "none", "pull": permission != "none"
            });
            who["role_name"] = json!(permission);
            let base = match permission.as_str() {
                "maintain" => "write",
                "triage" => "read",
                other => other,
            };
            reply(200, json!({ "permission": base, "role_name": permission, "user": who }))
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

/// `POST .../pulls`: one open pull request per head branch, titles and bodies within GitHub's
/// limits, as GitHub enforces.
fn create_pull(state: &mut State, body: &Value) -> ResponseTemplate {
    const DOCS: &str = "/pulls/pulls#create-a-pull-request";
    let head = body["head"].as_str().unwrap_or_default().to_owned();
    let base = body["base"].as_str().unwrap_or_default().to_owned();
    let title = body["title"].as_str().unwrap_or_default().to_owned();
    let text = body["body"].as_str().unwrap_or_default().to_owned();
    if title.chars().count() > MAX_TITLE_CHARS {
        return too_long("Issue", "title", MAX_TITLE_CHARS, DOCS);
    }
    if text.chars().count() > MAX_BODY_CHARS {
        return too_long("Issue", "body", MAX_BODY_CHARS, DOCS);
    }
    if state.pulls.iter().any(|p| p.head == head && p.state == "open") {
        let message = format!("A pull request already exists for {OWNER}:{head}.");
        return validation_failed(DOCS, json!([{ "resource": "PullRequest", "code": "custom", "message": message }]));
    }
    let (Some(head_sha), true) = (state.refs.get(&head).cloned(), state.refs.contains_key(&base)) else {
        return validation_failed(DOCS, json!([{ "resource": "PullRequest", "field": "head", "code": "invalid" }]));
    };
    let pull = super::Pull {
        number: FIRST_PULL + state.pulls.len() as u64,
        head,
        head_sha,
        base,
        title,
        body: text,
        state: "open".into(),
    };
    let answer = pull_json(&pull);
    state.pulls.push(pull);
    reply(201, answer)
}
