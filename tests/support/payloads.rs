//! Webhook payloads as GitHub sends them, from the recorded examples in `tests/fixtures/` (GitHub's
//! documented examples, moved to installation 4242 and the repository `acme/widgets`, id 9001),
//! adapted per delivery.

use serde_json::{Value, json};

use aicd_testkit::github::Pull;

const INSTALLATION_REPOSITORIES_ADDED: &str = include_str!("../fixtures/installation_repositories_added.json");
const ISSUES_LABELED: &str = include_str!("../fixtures/issues_labeled.json");
const PULL_REQUEST_CLOSED_MERGED: &str = include_str!("../fixtures/pull_request_closed_merged.json");
const ISSUE_COMMENT_CREATED: &str = include_str!("../fixtures/issue_comment_created.json");

fn parse(text: &str) -> Value {
    serde_json::from_str(text).expect("a fixture is JSON")
}

/// `installation_repositories.added`: `monalisa` added `acme/widgets` (id 9001) to installation
/// 4242.
pub(crate) fn installation_repositories_added() -> Value {
    parse(INSTALLATION_REPOSITORIES_ADDED)
}

/// `issues.labeled`: `monalisa` put the `aicd` label on issue `number` of `acme/widgets`, whose
/// title and body are these.
pub(crate) fn issue_labeled(number: u64, title: &str, body: &str) -> Value {
    let text = ISSUES_LABELED.replace("/issues/7", &format!("/issues/{number}"));
    let mut payload = parse(&text);
    let issue = &mut payload["issue"];
    issue["number"] = json!(number);
    issue["id"] = json!(2_400_000_000 + number);
    issue["title"] = json!(title);
    issue["body"] = json!(body);
    payload
}

/// `pull_request.closed` with `merged: true`: `monalisa` merged `pull`.
pub(crate) fn pull_request_merged(pull: &Pull) -> Value {
    let text = PULL_REQUEST_CLOSED_MERGED
        .replace("/1348", &format!("/{}", pull.number))
        .replace("aicd/issue-7-0c9f3e2a", &pull.head);
    let mut payload = parse(&text);
    payload["number"] = json!(pull.number);
    let pr = &mut payload["pull_request"];
    pr["number"] = json!(pull.number);
    pr["title"] = json!(pull.title);
    pr["body"] = json!(pull.body);
    pr["head"]["ref"] = json!(pull.head);
    pr["head"]["sha"] = json!(pull.head_sha);
    pr["base"]["ref"] = json!(pull.base);
    pr["merged"] = json!(true);
    pr["state"] = json!("closed");
    payload
}

/// `pull_request.closed` with `merged: false`: `monalisa` closed `pull` without merging it (GitHub
/// then sends no `merged_at` nor `merged_by`).
pub(crate) fn pull_request_closed_unmerged(pull: &Pull) -> Value {
    let mut payload = pull_request_merged(pull);
    let pr = &mut payload["pull_request"];
    pr["merged"] = json!(false);
    pr["merged_at"] = Value::Null;
    pr["merged_by"] = Value::Null;
    payload
}

/// `issue_comment.created`: `login` commented `body` (comment `comment_id`) on issue `number`,
/// titled `title`.
pub(crate) fn issue_comment_created(number: u64, title: &str, comment_id: u64, login: &str, body: &str) -> Value {
    let text = ISSUE_COMMENT_CREATED.replace("/issues/9", &format!("/issues/{number}"));
    let mut payload = parse(&text);
    payload["issue"]["number"] = json!(number);
    payload["issue"]["id"] = json!(2_400_000_000 + number);
    payload["issue"]["title"] = json!(title);
    let comment = &mut payload["comment"];
    comment["id"] = json!(comment_id);
    comment["body"] = json!(body);
    comment["author_association"] = json!("CONTRIBUTOR");
    become_user(&mut comment["user"], login);
    become_user(&mut payload["sender"], login);
    payload
}

/// Makes the user object `user` that of `login`.
fn become_user(user: &mut Value, login: &str) {
    user["login"] = json!(login);
    user["id"] = json!(9_100_000 + login.len() as u64);
    for field in ["url", "html_url", "followers_url", "repos_url"] {
        if let Some(url) = user[field].as_str() {
            user[field] = json!(url.replace("monalisa", login));
        }
    }
}
