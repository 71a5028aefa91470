//! The whole authorization matrix over real HTTP against PostgreSQL + Redis: every route × every
//! role (and no credentials), and another organization's key on this organization's ids.

mod support;

use aicd_core::jobs::{IssueRef, NewJob, Trigger};
use aicd_core::repos::{NewRepo, RepoSource};
use aicd_core::tenancy::{NewApiKey, NewUser, Role};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::TestServer;

/// Who calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Nobody,
    Viewer,
    Developer,
    Admin,
}

/// Everything a route needs to name, created fresh for each call so destructive routes can succeed.
struct Fixture {
    org: String,
    repo: String,
    job: String,
    member: String,
    key_id: String,
    /// A GitHub App installation linked to the org (ids are unique per org: an installation
    /// belongs to one org).
    installation: i64,
    /// A directory to register as another local repository.
    other_dir: String,
    _dirs: [tempfile::TempDir; 2],
    viewer: String,
    developer: String,
    admin: String,
}

async fn fixture(server: &TestServer, name: &str) -> Fixture {
    let (org, viewer, developer, admin) = server.org_with_keys(name).await;
    let (dir, other) = (support::local_dir(), support::local_dir());
    let actor = server.core.authenticate_api_key(&aicd_core::tenancy::ApiKeySecret::new(admin.clone())).await.unwrap();
    let repo = server
        .core
        .create_repo(
            &actor,
            org.id,
            NewRepo {
                full_name: format!("{name}/repo"),
                source: RepoSource::Local { path: dir.path().display().to_string() },
                default_branch: None,
                settings: None,
            },
        )
        .await
        .unwrap();
    let issue = IssueRef { number: Some(1), title: "Fix it".into(), body: String::new(), url: None, author: None };
    let job = server
        .core
        .create_job(
            &actor,
            org.id,
            NewJob { repo_id: repo.id, issue, trigger: Trigger::Api, max_tokens: None, max_cost_micros: None },
        )
        .await
        .unwrap();
    // Cancelled, so retry is allowed and the live stream ends by itself.
    server.core.cancel_job(&actor, org.id, job.id).await.unwrap();
    let user = server
        .core
        .sign_in(NewUser { subject: format!("idp|{}", uuid::Uuid::new_v4()), email: None, name: None })
        .await
        .unwrap();
    server.core.add_member(&actor, org.id, user.id, Role::Viewer).await.unwrap();
    let (key, _) = server
        .core
        .create_api_key(&actor, org.id, NewApiKey { name: "spare".into(), role: Role::Viewer, expires_at: None })
        .await
        .unwrap();
    let installation = unique_installation(&org.id.to_string());
    let id = aicd_core::github::InstallationId::new(installation).unwrap();
    server.core.github_intake().link_installation(org.id, id, None, "operator").await.unwrap();
    Fixture {
        org: org.id.to_string(),
        repo: repo.id.to_string(),
        job: job.id.to_string(),
        member: user.id.to_string(),
        key_id: key.id.to_string(),
        installation,
        other_dir: other.path().display().to_string(),
        _dirs: [dir, other],
        viewer,
        developer,
        admin,
    }
}

/// An even installation id derived from the org id, so fixtures never share one.
fn unique_installation(org: &str) -> i64 {
    i64::from_str_radix(&org.replace('-', "")[..12], 16).unwrap() * 2 + 2
}

/// A route: method, path (with `{org}`, `{repo}`, `{job}`, `{member}`, `{key}`), body, the least
/// role allowed (`None`: any authenticated caller), and the status on success.
struct Route {
    method: Method,
    path: &'static str,
    body: Option<fn(&Fixture) -> Value>,
    least: Option<Who>,
    ok: StatusCode,
}

fn routes() -> Vec<Route> {
    use Who::*;
    let r =
        |method: Method, path, body: Option<fn(&Fixture) -> Value>, least, ok| Route { method, path, body, least, ok };
    vec![
        r(Method::GET, "/v1/me", None, None, StatusCode::OK),
        r(Method::GET, "/v1/orgs", None, None, StatusCode::OK),
        r(Method::GET, "/v1/orgs/{org}", None, Some(Viewer), StatusCode::OK),
        r(Method::PATCH, "/v1/orgs/{org}", Some(|_| json!({"name": "Renamed"})), Some(Admin), StatusCode::OK),
        r(Method::DELETE, "/v1/orgs/{org}", None, Some(Admin), StatusCode::NO_CONTENT),
        r(Method::GET, "/v1/orgs/{org}/members", None, Some(Viewer), StatusCode::OK),
        r(
            Method::POST,
            "/v1/orgs/{org}/members",
            Some(|_| json!({"user_id": uuid::Uuid::nil(), "role": "viewer"})),
            Some(Admin),
            // The nil user does not exist: an authorized caller gets past the role check to 404.
            StatusCode::NOT_FOUND,
        ),
        r(
            Method::PATCH,
            "/v1/orgs/{org}/members/{member}",
            Some(|_| json!({"role": "developer"})),
            Some(Admin),
            StatusCode::OK,
        ),
        r(Method::DELETE, "/v1/orgs/{org}/members/{member}", None, Some(Admin), StatusCode::NO_CONTENT),
        r(Method::GET, "/v1/orgs/{org}/api-keys", None, Some(Admin), StatusCode::OK),
        r(
            Method::POST,
            "/v1/orgs/{org}/api-keys",
            Some(|_| json!({"name": "ci", "role": "viewer"})),
            Some(Admin),
            StatusCode::CREATED,
        ),
        r(Method::DELETE, "/v1/orgs/{org}/api-keys/{key}", None, Some(Admin), StatusCode::NO_CONTENT),
        r(Method::GET, "/v1/orgs/{org}/repos", None, Some(Viewer), StatusCode::OK),
        r(
            Method::POST,
            "/v1/orgs/{org}/repos",
            Some(|f| json!({"full_name": "acme/other", "source": {"kind": "local", "path": f.other_dir}})),
            Some(Admin),
            StatusCode::CREATED,
        ),
        r(Method::GET, "/v1/orgs/{org}/repos/{repo}", None, Some(Viewer), StatusCode::OK),
        r(
            Method::PATCH,
            "/v1/orgs/{org}/repos/{repo}",
            Some(|_| json!({"default_branch": "trunk"})),
            Some(Admin),
            StatusCode::OK,
        ),
        r(Method::DELETE, "/v1/orgs/{org}/repos/{repo}", None, Some(Admin), StatusCode::NO_CONTENT),
        r(Method::GET, "/v1/orgs/{org}/jobs", None, Some(Viewer), StatusCode::OK),
        r(
            Method::POST,
            "/v1/orgs/{org}/jobs",
            Some(|f| json!({"repo_id": f.repo, "issue": {"title": "Add a greeting", "body": "please"}})),
            Some(Developer),
            StatusCode::CREATED,
        ),
        r(Method::GET, "/v1/orgs/{org}/jobs/{job}", None, Some(Viewer), StatusCode::OK),
        // Already cancelled: an authorized caller gets past the role check to 409.
        r(Method::POST, "/v1/orgs/{org}/jobs/{job}/cancel", None, Some(Developer), StatusCode::CONFLICT),
        r(Method::POST, "/v1/orgs/{org}/jobs/{job}/retry", None, Some(Developer), StatusCode::CREATED),
        r(Method::GET, "/v1/orgs/{org}/jobs/{job}/events", None, Some(Viewer), StatusCode::OK),
        r(Method::GET, "/v1/orgs/{org}/jobs/{job}/events/stream", None, Some(Viewer), StatusCode::OK),
        // No changeset yet: an authorized caller gets past the role check to 409.
        r(Method::GET, "/v1/orgs/{org}/jobs/{job}/diff", None, Some(Viewer), StatusCode::CONFLICT),
        r(Method::GET, "/v1/orgs/{org}/usage", None, Some(Viewer), StatusCode::OK),
        // This deployment does not bill: an authorized caller gets past the role check to 404.
        r(Method::GET, "/v1/orgs/{org}/billing", None, Some(Admin), StatusCode::NOT_FOUND),
        r(
            Method::PATCH,
            "/v1/orgs/{org}/billing",
            Some(|_| json!({"spend_cap_micros": 1})),
            Some(Admin),
            StatusCode::NOT_FOUND,
        ),
        r(Method::POST, "/v1/orgs/{org}/billing/portal", None, Some(Admin), StatusCode::NOT_FOUND),
        r(Method::GET, "/v1/orgs/{org}/github/installations", None, Some(Viewer), StatusCode::OK),
        r(Method::POST, "/v1/orgs/{org}/github/install", None, Some(Admin), StatusCode::CREATED),
        // A state that is not the caller's: an authorized caller gets past the role check to 400.
        r(
            Method::POST,
            "/v1/orgs/{org}/github/setup",
            Some(|_| json!({"installation_id": 1, "state": "v1.x", "code": "c"})),
            Some(Admin),
            StatusCode::BAD_REQUEST,
        ),
        r(
            Method::DELETE,
            "/v1/orgs/{org}/github/installations/{installation}",
            None,
            Some(Admin),
            StatusCode::NO_CONTENT,
        ),
    ]
}

fn path(route: &Route, f: &Fixture) -> String {
    route
        .path
        .replace("{org}", &f.org)
        .replace("{repo}", &f.repo)
        .replace("{job}", &f.job)
        .replace("{member}", &f.member)
        .replace("{key}", &f.key_id)
        .replace("{installation}", &f.installation.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_role_as_the_role_table_says() {
    let app_id = aicd_testkit::github::APP_ID.to_string();
    let server = TestServer::postgres(&[
        ("AICD_RATE_LIMIT_PER_MINUTE", "100000"),
        ("AICD_IP_RATE_LIMIT_PER_MINUTE", "100000"),
        // The App's setup flow, so that starting an installation can succeed.
        ("AICD_GITHUB_APP_ID", &app_id),
        ("AICD_GITHUB_PRIVATE_KEY", &aicd_testkit::rsa_key_pair().private_pem),
        ("AICD_GITHUB_APP_SLUG", aicd_testkit::github::APP_SLUG),
        ("AICD_GITHUB_CLIENT_ID", aicd_testkit::github::CLIENT_ID),
        ("AICD_GITHUB_CLIENT_SECRET", aicd_testkit::github::CLIENT_SECRET),
    ])
    .await;
    let mut failures = Vec::new();
    let mut n = 0;
    for route in routes() {
        for who in [Who::Nobody, Who::Viewer, Who::Developer, Who::Admin] {
            let f = fixture(&server, &format!("org{n}")).await;
            n += 1;
            let token = match who {
                Who::Nobody => None,
                Who::Viewer => Some(f.viewer.as_str()),
                Who::Developer => Some(f.developer.as_str()),
                Who::Admin => Some(f.admin.as_str()),
            };
            let body = route.body.map(|b| b(&f));
            let reply = server.call(route.method.clone(), &path(&route, &f), token, body).await;
            let expected = match (who, route.least) {
                (Who::Nobody, _) => StatusCode::UNAUTHORIZED,
                (_, None) => route.ok,
                (who, Some(least)) if rank(who) >= rank(least) => route.ok,
                _ => StatusCode::FORBIDDEN,
            };
            if reply.status != expected {
                failures.push(format!(
                    "{} {} as {who:?}: {} (expected {expected}) {}",
                    route.method, route.path, reply.status, reply.text
                ));
            } else if !expected.is_success() {
                let code = reply.error_code();
                let want = match expected {
                    StatusCode::UNAUTHORIZED => "unauthenticated",
                    StatusCode::FORBIDDEN => "forbidden",
                    StatusCode::NOT_FOUND => "not_found",
                    StatusCode::BAD_REQUEST => "invalid_state",
                    _ => "conflict",
                };
                if code != want {
                    failures.push(format!("{} {} as {who:?}: code {code}, expected {want}", route.method, route.path));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {n} calls answered wrongly:\n{}", failures.len(), failures.join("\n"));
}

fn rank(who: Who) -> u8 {
    match who {
        Who::Nobody => 0,
        Who::Viewer => 1,
        Who::Developer => 2,
        Who::Admin => 3,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_orgs_admin_gets_404_on_every_route_that_names_this_org() {
    let server = TestServer::postgres(&[]).await;
    let (_, _, _, outsider) = server.org_with_keys("globex").await;
    let mut failures = Vec::new();
    for route in routes().into_iter().filter(|r| r.path.contains("{org}")) {
        let f = fixture(&server, "acme").await;
        let body = route.body.map(|b| b(&f));
        let reply = server.call(route.method.clone(), &path(&route, &f), Some(&outsider), body).await;
        if reply.status != StatusCode::NOT_FOUND || reply.error_code() != "not_found" {
            failures.push(format!("{} {}: {} {}", route.method, route.path, reply.status, reply.text));
        }
        // And nothing changed: the org's admin still sees its job and repository.
        let job = server.get(&format!("/v1/orgs/{}/jobs/{}", f.org, f.job), &f.admin).await;
        assert_eq!(job.status, StatusCode::OK, "{} {} changed the victim's data", route.method, route.path);
    }
    assert!(failures.is_empty(), "cross-org calls that did not answer 404:\n{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_do_not_exist_or_are_malformed_answer_404_in_the_error_shape() {
    let server = TestServer::postgres(&[]).await;
    let f = fixture(&server, "acme").await;
    for path in [
        format!("/v1/orgs/{}", uuid::Uuid::now_v7()),
        format!("/v1/orgs/{}/jobs/{}", f.org, uuid::Uuid::now_v7()),
        format!("/v1/orgs/{}/repos/{}", f.org, uuid::Uuid::now_v7()),
        format!("/v1/orgs/{}/jobs/not-a-uuid", f.org),
        "/v1/orgs/not-a-uuid".to_owned(),
        "/v1/nothing-here".to_owned(),
    ] {
        let reply = server.get(&path, &f.admin).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}: {}", reply.text);
        assert_eq!(reply.error_code(), "not_found", "{path}");
    }
}
