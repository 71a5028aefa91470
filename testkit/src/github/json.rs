//! The fake GitHub's answers, shaped like GitHub's documented ones.

use std::collections::{BTreeMap, HashMap};

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::Digest;
use wiremock::ResponseTemplate;

use super::state::{Comment, Commit, Files, Pull};
use super::{APP_ID, APP_SLUG, FULL_NAME, INSTALLATION, OWNER, REPO_ID};

/// The addresses GitHub's answers name (the real ones, as GitHub writes them).
pub(super) const API: &str = "https://api.github.com";
pub(super) const WEB: &str = "https://github.com";
/// Where the repository's endpoints live.
pub(super) const REPO_PATH: &str = "/repos/acme/widgets";

/// A git-like object id: 40 hex digits derived from `parts`.
pub(super) fn object_id(parts: &[&[u8]]) -> String {
    let mut digest = sha2::Sha256::new();
    for part in parts {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part);
    }
    digest.finalize().iter().take(20).map(|b| format!("{b:02x}")).collect()
}

/// Standard base64, wrapped at 60 columns as GitHub sends blobs.
pub(super) fn to_base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    let plain = base64::engine::general_purpose::STANDARD.encode(bytes);
    let lines: Vec<&str> = plain.as_bytes().chunks(60).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    lines.join("\n") + "\n"
}

pub(super) fn from_base64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(compact).ok()
}

pub(super) fn reply(status: u16, body: Value) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(body)
        .insert_header("x-github-media-type", "github.v3; format=json")
        .insert_header("x-ratelimit-limit", "5000")
        .insert_header("x-ratelimit-remaining", "4999")
        .insert_header("x-ratelimit-used", "1")
        .insert_header("x-ratelimit-resource", "core")
}

pub(super) fn error(status: u16, message: &str, docs: &str) -> ResponseTemplate {
    let documentation_url = format!("https://docs.github.com/rest{docs}");
    reply(status, json!({ "message": message, "documentation_url": documentation_url, "status": status.to_string() }))
}

pub(super) fn validation_failed(docs: &str, errors: Value) -> ResponseTemplate {
    let documentation_url = format!("https://docs.github.com/rest{docs}");
    reply(
        422,
        json!({ "message": "Validation Failed", "errors": errors, "documentation_url": documentation_url, "status": "422" }),
    )
}

/// GitHub's 422 for a text over its length limit (`title is too long (maximum is 256 characters)`).
pub(super) fn too_long(resource: &str, field: &str, limit: usize, docs: &str) -> ResponseTemplate {
    let message = format!("{field} is too long (maximum is {limit} characters)");
    validation_failed(docs, json!([{ "resource": resource, "code": "custom", "field": field, "message": message }]))
}

pub(super) fn not_found() -> ResponseTemplate {
    error(404, "Not Found", "")
}

pub(super) fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(super) fn bot() -> Value {
    json!({
        "login": format!("{APP_SLUG}[bot]"), "id": 41_898_282, "node_id": "BOT_kgDOAn9RKg",
        "avatar_url": format!("https://avatars.githubusercontent.com/in/{APP_ID}?v=4"), "gravatar_id": "",
        "url": format!("{API}/users/{APP_SLUG}%5Bbot%5D"), "html_url": format!("{WEB}/apps/{APP_SLUG}"),
        "type": "Bot", "user_view_type": "public", "site_admin": false
    })
}

pub(super) fn user(login: &str, id: u64) -> Value {
    json!({
        "login": login, "id": id, "node_id": "MDQ6VXNlcjU4MzIzMQ==",
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"), "gravatar_id": "",
        "url": format!("{API}/users/{login}"), "html_url": format!("{WEB}/{login}"),
        "type": "User", "user_view_type": "public", "site_admin": false
    })
}

/// The organization account `acme` the App is installed on.
pub(super) fn owner() -> Value {
    json!({
        "login": OWNER, "id": 6_811_672, "node_id": "O_kgDOAGf4GA", "type": "Organization",
        "url": format!("{API}/users/{OWNER}"), "html_url": format!("{WEB}/{OWNER}"), "site_admin": false
    })
}

pub(super) fn repository() -> Value {
    json!({
        "id": REPO_ID, "node_id": "R_kgDOAAAjKQ", "name": "widgets", "full_name": FULL_NAME, "private": true,
        "owner": owner(),
        "html_url": format!("{WEB}/{FULL_NAME}"), "description": "Widgets of all kinds", "fork": false,
        "url": format!("{API}{REPO_PATH}"), "default_branch": "main", "visibility": "private",
        "created_at": "2024-05-02T10:16:35Z", "updated_at": "2024-05-02T10:16:35Z",
        "pushed_at": "2024-05-02T10:16:35Z",
        "permissions": { "admin": false, "maintain": false, "push": true, "triage": true, "pull": true }
    })
}

/// The installation as `GET /user/installations` lists it.
pub(super) fn installation() -> Value {
    json!({
        "id": INSTALLATION, "client_id": super::CLIENT_ID, "account": owner(),
        "repository_selection": "selected", "access_tokens_url": format!("{API}/app/installations/{INSTALLATION}/access_tokens"),
        "repositories_url": format!("{API}/installation/repositories"),
        "html_url": format!("{WEB}/organizations/{OWNER}/settings/installations/{INSTALLATION}"),
        "app_id": APP_ID, "app_slug": APP_SLUG, "target_id": 6_811_672, "target_type": "Organization",
        "permissions": { "contents": "write", "issues": "write", "metadata": "read", "pull_requests": "write", "members": "read" },
        "events": ["issues", "issue_comment", "pull_request"], "created_at": "2024-05-02T10:16:35Z",
        "updated_at": "2024-05-02T10:16:35Z", "single_file_name": null, "suspended_at": null, "suspended_by": null
    })
}

pub(super) fn ref_json(branch: &str, sha: &str) -> Value {
    json!({
        "ref": format!("refs/heads/{branch}"), "node_id": "REF_kwDOAAAjKa9yZWZzL2hlYWRzL21haW4",
        "url": format!("{API}{REPO_PATH}/git/refs/heads/{branch}"),
        "object": { "sha": sha, "type": "commit", "url": format!("{API}{REPO_PATH}/git/commits/{sha}") }
    })
}

pub(super) fn commit_json(sha: &str, commit: &Commit) -> Value {
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
pub(super) fn tree_json(sha: &str, files: &Files, blobs: &HashMap<String, Vec<u8>>) -> Value {
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

pub(super) fn pull_json(pull: &Pull) -> Value {
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

pub(super) fn comment_json(comment: &Comment) -> Value {
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
