//! Linking a GitHub App installation to an organization, over real HTTP against PostgreSQL and
//! the fake GitHub: only through the App's setup flow (a signed, expiring, single-use state, and
//! GitHub saying, to the user who came back with an OAuth code, that they administer the
//! installation's account), failing closed on every doubt.

mod support;

use aicd_core::github::InstallationId;
use aicd_core::store::GithubStore;
use aicd_testkit::github::{APP_ID, APP_SLUG, CLIENT_ID, CLIENT_SECRET, FULL_NAME, FakeGitHub, INSTALLATION};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Reply, TestServer, reply};

struct World {
    server: TestServer,
    github: FakeGitHub,
}

async fn world(extra: &[(&str, &str)]) -> World {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let keys = aicd_testkit::rsa_key_pair();
    let github = FakeGitHub::start(&keys.public_pem).await;
    let uri = github.uri();
    let app_id = APP_ID.to_string();
    let mut vars = vec![
        ("AICD_GITHUB_APP_ID", app_id.as_str()),
        ("AICD_GITHUB_PRIVATE_KEY", keys.private_pem.as_str()),
        ("AICD_GITHUB_API_URL", uri.as_str()),
        ("AICD_GITHUB_WEB_URL", uri.as_str()),
        ("AICD_GITHUB_APP_SLUG", APP_SLUG),
        ("AICD_GITHUB_CLIENT_ID", CLIENT_ID),
        ("AICD_GITHUB_CLIENT_SECRET", CLIENT_SECRET),
    ];
    vars.extend_from_slice(extra);
    World { server: TestServer::postgres(&vars).await, github }
}

impl World {
    /// An org admin's install link: the state in it.
    async fn state(&self, org: &str, key: &str) -> String {
        let r = self.server.post(&format!("/v1/orgs/{org}/github/install"), key, json!({})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let url = r.body["install_url"].as_str().unwrap();
        let prefix = format!("{}/github-apps/{APP_SLUG}/installations/new?state=", self.github.uri());
        assert!(url.starts_with(&prefix), "{url}");
        assert!(r.body["expires_at"].is_string(), "{}", r.text);
        url[prefix.len()..].to_owned()
    }

    /// GitHub's redirect to the setup URL, as the browser follows it (no credentials).
    async fn setup(&self, query: &str) -> Reply {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        reply(client.get(self.server.url(&format!("/github/setup?{query}"))).send().await.unwrap()).await
    }

    /// The redirect after installing, for `state`, with the code GitHub gave `login`.
    async fn come_back(&self, state: &str, login: &str) -> Reply {
        let code = format!("code-{}", uuid::Uuid::new_v4().simple());
        self.github.issue_code(&code, login);
        self.setup(&format!("installation_id={INSTALLATION}&setup_action=install&state={state}&code={code}")).await
    }

    async fn linked_org(&self) -> Option<aicd_core::OrgId> {
        let installation = InstallationId::from_u64(INSTALLATION).unwrap();
        self.server.store.find_installation(installation).await.unwrap().map(|i| i.org_id)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_setup_flow_links_an_installation_its_admin_proved_control_of() {
    let w = world(&[]).await;
    let (org, viewer, developer, admin) = w.server.org_with_keys("Acme").await;
    let org_id = org.id.to_string();
    for key in [&viewer, &developer] {
        let r = w.server.post(&format!("/v1/orgs/{org_id}/github/install"), key, json!({})).await;
        assert_eq!((r.status, r.error_code()), (StatusCode::FORBIDDEN, "forbidden"), "{}", r.text);
    }
    let state = w.state(&org_id, &admin).await;
    w.github.add_user("mona", 583_231, true, Some("admin"));

    let r = w.come_back(&state, "mona").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (r.body["installation_id"].as_u64(), r.body["org_id"].as_str()),
        (Some(INSTALLATION), Some(org_id.as_str()))
    );
    assert_eq!((r.body["account_login"].as_str(), r.body["linked_by"].as_str()), (Some("acme"), Some("github:mona")));
    assert_eq!(r.body["repositories_synced"], 1, "{}", r.text);
    assert_eq!(w.linked_org().await, Some(org.id));
    let repos = w.server.get(&format!("/v1/orgs/{org_id}/repos"), &viewer).await;
    assert_eq!(repos.body["items"][0]["full_name"], FULL_NAME, "{}", repos.text);
    // The user's token was used for the check only: revoked, never stored.
    assert_eq!((w.github.revoked_user_tokens().len(), w.github.live_user_tokens()), (1, 0));

    // The state is single use, even with a fresh code.
    let again = w.come_back(&state, "mona").await;
    assert_eq!((again.status, again.error_code()), (StatusCode::BAD_REQUEST, "invalid_state"), "{}", again.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installation_the_user_does_not_administer_is_not_linked() {
    let w = world(&[]).await;
    let (org, _, _, admin) = w.server.org_with_keys("Acme").await;
    let org_id = org.id.to_string();
    // GitHub does not list the installation among the user's...
    w.github.add_user("stranger", 1, false, None);
    let r = w.come_back(&w.state(&org_id, &admin).await, "stranger").await;
    assert_eq!((r.status, r.error_code()), (StatusCode::FORBIDDEN, "installation_not_verified"), "{}", r.text);
    let not_yours = r.body["error"]["message"].clone();
    // ...or does, but they are only a member of its organization, not an admin.
    w.github.add_user("member", 2, true, Some("member"));
    let r = w.come_back(&w.state(&org_id, &admin).await, "member").await;
    assert_eq!((r.status, r.error_code()), (StatusCode::FORBIDDEN, "installation_not_verified"), "{}", r.text);
    // A code GitHub never issued.
    let state = w.state(&org_id, &admin).await;
    let r = w.setup(&format!("installation_id={INSTALLATION}&setup_action=install&state={state}&code=made-up")).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::FORBIDDEN, "installation_not_verified"), "{}", r.text);
    assert_eq!(w.linked_org().await, None, "nothing is linked");

    // An installation linked to another organization is answered exactly like one that is not
    // the user's: its id tells nothing.
    let (first, _, _, first_admin) = w.server.org_with_keys("First").await;
    w.github.add_user("mona", 583_231, true, Some("admin"));
    let r = w.come_back(&w.state(&first.id.to_string(), &first_admin).await, "mona").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = w.come_back(&w.state(&org_id, &admin).await, "mona").await;
    assert_eq!((r.status, r.error_code()), (StatusCode::FORBIDDEN, "installation_not_verified"), "{}", r.text);
    assert_eq!(r.body["error"]["message"], not_yours);
    assert!(!r.text.contains(&first.id.to_string()) && !r.text.contains("First"), "{}", r.text);
    assert_eq!(w.linked_org().await, Some(first.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_linked_when_github_fails() {
    let w = world(&[]).await;
    let (org, _, _, admin) = w.server.org_with_keys("Acme").await;
    let org_id = org.id.to_string();
    w.github.add_user("mona", 583_231, true, Some("admin"));
    for (path, status) in [("/login/oauth", 503), ("/user/installations", 502), ("/user/memberships", 429)] {
        w.github.fail(path, status);
        let r = w.come_back(&w.state(&org_id, &admin).await, "mona").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{path} {status}: {}", r.text);
        assert_eq!(w.linked_org().await, None, "{path} {status}: nothing is linked");
        w.github.recover();
    }
    // Once GitHub answers again, a new installation attempt links.
    let r = w.come_back(&w.state(&org_id, &admin).await, "mona").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_forged_and_incomplete_redirects_are_refused() {
    let w = world(&[]).await;
    let (org, _, _, admin) = w.server.org_with_keys("Acme").await;
    let org_id = org.id.to_string();
    w.github.add_user("mona", 583_231, true, Some("admin"));
    let r = w.setup(&format!("installation_id={INSTALLATION}&setup_action=install&code=x")).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::BAD_REQUEST, "invalid_state"), "{}", r.text);
    for forged in ["nonsense", "v1.aaaa.bbbb.9999999999.cccc"] {
        let r = w.setup(&format!("installation_id={INSTALLATION}&state={forged}&code=x")).await;
        assert_eq!((r.status, r.error_code()), (StatusCode::BAD_REQUEST, "invalid_state"), "{forged}: {}", r.text);
    }
    // A genuine state moved to another organization no longer verifies.
    let state = w.state(&org_id, &admin).await;
    let (other, _, _, _) = w.server.org_with_keys("Other").await;
    let mut parts: Vec<String> = state.split('.').map(str::to_owned).collect();
    parts[1] = other.id.as_uuid().simple().to_string();
    let moved = parts.join(".");
    let r = w.setup(&format!("installation_id={INSTALLATION}&state={moved}&code=x")).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::BAD_REQUEST, "invalid_state"), "{}", r.text);
    // No installation id.
    let r = w.setup(&format!("setup_action=install&state={state}&code=x")).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::BAD_REQUEST, "bad_request"), "{}", r.text);
    // No code, and no public URL to send the user to authorize through.
    let r = w.setup(&format!("installation_id={INSTALLATION}&setup_action=install&state={state}")).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::BAD_REQUEST, "bad_request"), "{}", r.text);
    assert!(r.text.contains("Request user authorization"), "{}", r.text);
    assert_eq!(w.linked_org().await, None);
    // None of that used the state up.
    assert_eq!(w.come_back(&state, "mona").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_code_the_user_is_sent_to_authorize_first() {
    let w = world(&[("AICD_PUBLIC_URL", "http://aicd.example.test")]).await;
    let (org, _, _, admin) = w.server.org_with_keys("Acme").await;
    let state = w.state(&org.id.to_string(), &admin).await;
    let r = w.setup(&format!("installation_id={INSTALLATION}&setup_action=install&state={state}")).await;
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text);
    let location = r.headers.get("location").unwrap().to_str().unwrap();
    assert!(
        location.starts_with(&format!("{}/login/oauth/authorize?client_id={CLIENT_ID}&state=", w.github.uri())),
        "{location}"
    );
    assert!(
        location.contains("redirect_uri=http%3A%2F%2Faicd.example.test%2Fgithub%2Fsetup%3Finstallation_id%3D4242"),
        "{location}"
    );
    // GitHub comes back to that address with a code: linked.
    w.github.add_user("mona", 583_231, true, Some("admin"));
    w.github.issue_code("the-code", "mona");
    let r = w.setup(&format!("installation_id={INSTALLATION}&state={state}&code=the-code")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_apps_oauth_client_nothing_can_be_linked() {
    let server = TestServer::postgres(&[]).await;
    let (org, viewer, _, admin) = server.org_with_keys("Acme").await;
    let path = format!("/v1/orgs/{}/github/install", org.id);
    let r = server.post(&path, &admin, json!({})).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::SERVICE_UNAVAILABLE, "github_setup_unavailable"), "{}", r.text);
    assert!(r.text.contains("AICD_GITHUB_CLIENT_ID"), "{}", r.text);
    let r = server.post(&path, &viewer, json!({})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "the role is checked first: {}", r.text);
    let r = reply(server.http.get(server.url("/github/setup?installation_id=1&state=x&code=y")).send().await.unwrap())
        .await;
    assert_eq!((r.status, r.error_code()), (StatusCode::SERVICE_UNAVAILABLE, "github_setup_unavailable"), "{}", r.text);
    let _: Value = r.body;
}
