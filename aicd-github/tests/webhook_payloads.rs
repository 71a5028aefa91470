//! Reading complete webhook payloads shaped like GitHub's documented examples (with the many
//! fields AI-CD ignores), their variants with nulls, and what is not handled.

use aicd_github::webhooks::{
    Command, CommentAction, InstallationAction, IssuesAction, PullRequestAction, RepoSummary, RepositoriesAction,
    WebhookEvent, WebhookSecret, parse_command, parse_delivery, parse_event,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse(event: &str, name: &str) -> WebhookEvent {
    parse_event(event, &fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn hello_world(id: u64) -> RepoSummary {
    RepoSummary { id, full_name: "octo-org/hello-world".into() }
}

#[test]
fn ping() {
    let WebhookEvent::Ping(ping) = parse("ping", "ping.json") else { panic!() };
    assert_eq!(ping.zen.as_deref(), Some("Keep it logically awesome."));
    assert_eq!(ping.hook_id, Some(109948940));
}

#[test]
fn installation_events() {
    let WebhookEvent::Installation(created) = parse("installation", "installation_created.json") else { panic!() };
    assert_eq!(created.action, InstallationAction::Created);
    assert_eq!(created.installation_id, 2311213);
    assert_eq!(created.account_login.as_deref(), Some("octo-org"));
    assert_eq!(created.sender_login.as_deref(), Some("monalisa"));
    assert_eq!(
        created.repositories,
        vec![hello_world(1296269), RepoSummary { id: 1296270, full_name: "octo-org/spoon-knife".into() }]
    );

    // `repositories: null` on uninstall.
    let WebhookEvent::Installation(deleted) = parse("installation", "installation_deleted.json") else { panic!() };
    assert_eq!(deleted.action, InstallationAction::Deleted);
    assert!(deleted.repositories.is_empty());

    let WebhookEvent::Installation(suspended) = parse("installation", "installation_suspend.json") else { panic!() };
    assert_eq!(suspended.action, InstallationAction::Suspend);

    let WebhookEvent::Installation(other) = parse("installation", "installation_new_permissions_accepted.json") else {
        panic!()
    };
    assert_eq!(other.action, InstallationAction::Other("new_permissions_accepted".into()));

    let unsuspend = br#"{"action":"unsuspend","installation":{"id":5,"account":null}}"#;
    let WebhookEvent::Installation(unsuspend) = parse_event("installation", unsuspend).unwrap() else { panic!() };
    assert_eq!(
        (unsuspend.action, unsuspend.installation_id, unsuspend.account_login),
        (InstallationAction::Unsuspend, 5, None)
    );
}

#[test]
fn installation_repositories_events() {
    let WebhookEvent::InstallationRepositories(added) =
        parse("installation_repositories", "installation_repositories_added.json")
    else {
        panic!()
    };
    assert_eq!(added.action, RepositoriesAction::Added);
    assert_eq!(added.installation_id, 2311213);
    assert_eq!(added.added, vec![RepoSummary { id: 1296271, full_name: "octo-org/octo-app".into() }]);
    assert!(added.removed.is_empty());

    let WebhookEvent::InstallationRepositories(removed) =
        parse("installation_repositories", "installation_repositories_removed.json")
    else {
        panic!()
    };
    assert_eq!(removed.action, RepositoriesAction::Removed);
    assert_eq!(removed.removed, vec![RepoSummary { id: 1296270, full_name: "octo-org/spoon-knife".into() }]);

    let unknown = br#"{"action":"renamed","installation":{"id":1}}"#;
    let WebhookEvent::Ignored(ignored) = parse_event("installation_repositories", unknown).unwrap() else { panic!() };
    assert_eq!(ignored.action.as_deref(), Some("renamed"));
}

#[test]
fn issues_events() {
    let WebhookEvent::Issues(opened) = parse("issues", "issues_opened.json") else { panic!() };
    assert_eq!(opened.action, IssuesAction::Opened);
    assert_eq!(opened.installation_id, Some(2311213));
    assert_eq!(opened.repository.id, 1296269);
    assert_eq!(opened.repository.full_name, "octo-org/hello-world");
    assert_eq!(opened.repository.default_branch.as_deref(), Some("main"));
    assert_eq!(opened.issue.number, 1347);
    assert_eq!(opened.issue.title, "Add a greeting");
    assert!(opened.issue.body.contains("```aicd:write hello.txt"));
    assert_eq!(opened.issue.html_url, "https://github.com/octo-org/hello-world/issues/1347");
    assert_eq!(opened.issue.user_login.as_deref(), Some("monalisa"));
    assert_eq!(opened.issue.labels, ["bug"]);
    assert_eq!(opened.issue.state, "open");
    assert!(!opened.issue.is_pull_request);
    assert_eq!(opened.sender_login.as_deref(), Some("monalisa"));
    assert_eq!((opened.label, opened.assignee), (None, None));

    let WebhookEvent::Issues(labeled) = parse("issues", "issues_labeled.json") else { panic!() };
    assert_eq!(labeled.action, IssuesAction::Labeled);
    assert_eq!(labeled.label.as_deref(), Some("aicd"));
    assert_eq!(labeled.issue.labels, ["bug", "aicd"]);

    let WebhookEvent::Issues(assigned) = parse("issues", "issues_assigned.json") else { panic!() };
    assert_eq!(assigned.action, IssuesAction::Assigned);
    assert_eq!(assigned.assignee.as_deref(), Some("aicd-app[bot]"));

    let WebhookEvent::Issues(closed) = parse("issues", "issues_closed.json") else { panic!() };
    assert_eq!(closed.action, IssuesAction::Closed);
    assert_eq!(closed.issue.state, "closed");

    let WebhookEvent::Issues(pinned) = parse("issues", "issues_pinned.json") else { panic!() };
    assert_eq!(pinned.action, IssuesAction::Other("pinned".into()));
}

#[test]
fn issues_events_with_nulls() {
    // body, user, assignee and installation null; no labels.
    let WebhookEvent::Issues(opened) = parse("issues", "issues_opened_nulls.json") else { panic!() };
    assert_eq!(opened.installation_id, None);
    assert_eq!(opened.issue.body, "");
    assert_eq!(opened.issue.user_login, None);
    assert!(opened.issue.labels.is_empty());

    let WebhookEvent::Issues(labeled) = parse("issues", "issues_labeled_null_label.json") else { panic!() };
    assert_eq!((labeled.action, labeled.label), (IssuesAction::Labeled, None));

    let WebhookEvent::Issues(assigned) = parse("issues", "issues_assigned_null_assignee.json") else { panic!() };
    assert_eq!((assigned.action, assigned.assignee), (IssuesAction::Assigned, None));
}

#[test]
fn issue_comment_events() {
    let WebhookEvent::IssueComment(created) = parse("issue_comment", "issue_comment_created.json") else { panic!() };
    assert_eq!(created.action, CommentAction::Created);
    assert_eq!(created.installation_id, Some(2311213));
    assert_eq!(created.repository.full_name, "octo-org/hello-world");
    assert_eq!(created.issue.number, 1347);
    assert_eq!(created.comment.id, 1234567);
    assert_eq!(created.comment.user_login.as_deref(), Some("monalisa"));
    assert_eq!(created.comment.author_association.as_deref(), Some("OWNER"));
    assert_eq!(parse_command(&created.comment.body), Some(Command::Run));

    let WebhookEvent::IssueComment(on_pr) = parse("issue_comment", "issue_comment_on_pull_request.json") else {
        panic!()
    };
    assert!(on_pr.issue.is_pull_request);
    assert_eq!(parse_command(&on_pr.comment.body), None, "a quoted command does not count");

    let WebhookEvent::IssueComment(nulls) = parse("issue_comment", "issue_comment_nulls.json") else { panic!() };
    assert_eq!(nulls.installation_id, None);
    assert_eq!(nulls.comment.body, "");
    assert_eq!(nulls.comment.user_login, None);
    assert_eq!(nulls.issue.user_login, None);
    assert_eq!(nulls.sender_login, None);

    let WebhookEvent::IssueComment(edited) = parse("issue_comment", "issue_comment_edited.json") else { panic!() };
    assert_eq!(edited.action, CommentAction::Other("edited".into()));
}

#[test]
fn pull_request_events() {
    let WebhookEvent::PullRequest(opened) = parse("pull_request", "pull_request_opened.json") else { panic!() };
    assert_eq!(opened.action, PullRequestAction::Opened);
    assert_eq!(opened.number, 1348);
    assert!(!opened.merged);
    assert_eq!(opened.head_ref, "aicd/issue-1347-0c9f3e2a");
    assert_eq!(opened.html_url, "https://github.com/octo-org/hello-world/pull/1348");
    assert_eq!(opened.installation_id, Some(2311213));

    let WebhookEvent::PullRequest(merged) = parse("pull_request", "pull_request_closed_merged.json") else { panic!() };
    assert_eq!((merged.action, merged.merged), (PullRequestAction::Closed, true));

    let WebhookEvent::PullRequest(closed) = parse("pull_request", "pull_request_closed_null_merged.json") else {
        panic!()
    };
    assert_eq!((closed.action, closed.merged), (PullRequestAction::Closed, false));
}

#[test]
fn unknown_events_and_unusable_payloads_are_ignored_with_a_reason() {
    let WebhookEvent::Ignored(star) = parse("star", "star_created.json") else { panic!() };
    assert_eq!(star.event, "star");
    assert_eq!(star.action.as_deref(), Some("created"));

    // Well-formed JSON is never an error, whatever it holds.
    for (event, body) in [
        ("issues", &br#"{"action":"opened","issue":{"number":1}}"#[..]),
        ("issues", br#"{"action":"opened","repository":{"id":1,"full_name":"o/r"},"issue":null}"#),
        ("issues", br#"{"repository":{"id":1,"full_name":"o/r"},"issue":{"number":1}}"#),
        ("issue_comment", br#"{"action":"created","repository":{"id":1,"full_name":"o/r"},"issue":{"number":1}}"#),
        ("installation", br#"{"action":"created","installation":null}"#),
        ("pull_request", br#"{"action":"closed","repository":{"id":"1","full_name":"o/r"},"number":2}"#),
        ("issues", b"[]"),
        ("issues", b"null"),
    ] {
        let parsed =
            parse_event(event, body).unwrap_or_else(|e| panic!("{event} {}: {e}", String::from_utf8_lossy(body)));
        let WebhookEvent::Ignored(ignored) = parsed else { panic!("{event}: {parsed:?}") };
        assert!(!ignored.reason.is_empty());
    }

    // Fields of surprising types read as absent rather than failing.
    let odd =
        br#"{"action":"opened","installation":{"id":"7"},"repository":{"id":1,"full_name":"o/r","default_branch":null},
        "issue":{"number":3,"title":null,"body":42,"labels":[null,{"name":"x"},"y"],"user":[]},"sender":"bob"}"#;
    let WebhookEvent::Issues(issue) = parse_event("issues", odd).unwrap() else { panic!() };
    assert_eq!(issue.installation_id, None);
    assert_eq!(issue.repository.default_branch, None);
    assert_eq!((issue.issue.title.as_str(), issue.issue.body.as_str()), ("", ""));
    assert_eq!(issue.issue.labels, ["x", "y"]);
    assert_eq!((issue.issue.user_login, issue.sender_login), (None, None));
}

#[test]
fn malformed_json_is_an_error() {
    for body in [&b""[..], b"{", b"{\"action\":", b"not json", b"{\"a\":1}trailing"] {
        assert!(parse_event("issues", body).is_err(), "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn a_signed_fixture_verifies_before_it_is_read() {
    let secret = WebhookSecret::new("webhook secret").unwrap();
    let body = fixture("issues_opened.json");
    let signature = secret.sign(&body);
    secret.verify(&body, Some(&signature)).unwrap();
    let mut tampered = body.clone();
    tampered[10] ^= 1;
    assert!(secret.verify(&tampered, Some(&signature)).is_err());
}

#[test]
fn a_delivery_keeps_its_action_and_installation_even_when_not_handled() {
    let pinned = parse_delivery("issues", &fixture("issues_pinned.json")).unwrap();
    assert_eq!(pinned.event, parse("issues", "issues_pinned.json"));
    assert_eq!((pinned.action.as_deref(), pinned.installation_id), (Some("pinned"), Some(2_311_213)));
    let star = parse_delivery("star", &fixture("star_created.json")).unwrap();
    assert_eq!((star.action.as_deref(), star.installation_id), (Some("created"), None));
    let odd = parse_delivery("issues", br#"{"action": 5, "installation": {"id": "x"}}"#).unwrap();
    assert_eq!((odd.action, odd.installation_id), (None, None));
    assert!(parse_delivery("issues", b"{not json").is_err());
}

#[test]
fn events_serialize_as_one_object_named_by_kind_with_githubs_action_names() {
    let opened = serde_json::to_value(parse("issues", "issues_opened.json")).unwrap();
    assert_eq!(opened["kind"], "issues");
    assert_eq!(opened["action"], "opened");
    assert_eq!(opened["repository"]["full_name"], "octo-org/hello-world");
    assert!(opened["issue"]["number"].is_u64());
    let pinned = serde_json::to_value(parse("issues", "issues_pinned.json")).unwrap();
    assert_eq!(pinned["action"], "pinned", "an action AI-CD does not act on keeps its name");
    let ping = serde_json::to_value(parse("ping", "ping.json")).unwrap();
    assert_eq!(ping, serde_json::json!({"kind": "ping", "zen": "Keep it logically awesome.", "hook_id": 109948940}));
    let ignored = serde_json::to_value(parse_event("star", b"{\"action\": \"created\"}").unwrap()).unwrap();
    assert_eq!(ignored["kind"], "ignored");
    assert_eq!(ignored["event"], "star");
}
