//! Linking a GitHub App installation to an organization, over real HTTP against PostgreSQL and
//! the fake GitHub: only through the App's setup flow (a signed, expiring, single-use state bound
//! to the org admin who asked for it, completed by that same caller, and GitHub saying, to the
//! user who came back with an OAuth code, that they administer the installation's account),
//! failing closed on every doubt.

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
    async fn landing(&self, query: &str) -> Reply {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        reply(client.get(self.server.url(&format!("/github/setup?{query}"))).send().await.unwrap()).await
    }

    /// The web app handing the redirect's query to the API, as `key` in `org`.
    async fn complete(&self, org: &str, key: &str, body: Value) -> Reply {
        self.server.post(&format!("/v1/orgs/{org}/github/setup"), key, body).await
    }

    /// The whole way back after installing, for `state`, with a code GitHub gave `login`: this
    /// server's landing page links nothing and shows nothing of the redirect, and the web app's
    /// setup page (which GitHub would send the browser to instead) posts the query as `key` in
    /// `org`.
    async fn come_back(&self, org: &str, key: &str, state: &str, login: &str) -> Reply {
        let code = format!("code-{}", uuid::Uuid::new_v4().simple());
        self.github.issue_code(&code, login);
        let query = format!("installation_id={INSTALLATION}&setup_action=install&state={state}&code={code}");
        let landing = self.landing(&query).await;
        assert_eq!(landing.status, StatusCode::OK, "{}", landing.text);
        assert_eq!(landing.body["status"], "not_linked", "{}", landing.text);
        assert!(!landing.text.contains(&code) && !landing.text.contains(state), "never echoed: {}", landing.text);
        let body = json!({ "installation_id": INSTALLATION.to_string(), "setup_action": "install", "state": state, "code": code });
        self.complete(org, key, body).await
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

    let r = w.come_back(&org_id, &admin, &state, "mona").await;
    assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("linked")), "{}", r.text);
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
    let again = w.come_back(&org_id, &admin, &state, "mona").await;
    assert_eq!((again.status, again.error_code()), (StatusCode::BAD_REQUEST, "invalid_state"), "{}", again.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installation_the_user_does_not_administer_is_not_linked() {
    let w = world(&[]).await;
    let (org, _, _, admin) = w.server.org_with_keys("Acme").await;
    let org_id = org.id.to_string();
    // GitHub does not list the installation among the user's...
    w.github.add_user("stranger", 1, false, None);
    let r = w.come_back(&org_id, &admin, &w.state(&org_id, &admin).await, "stranger").await;
    assert_eq!((r.status, r.error_code()), (StatusCode::FORBIDDEN, "installation_not_verified"), "{}", r.text);
    let not_yours = r.body["error"]["message"].clone();
    // ...or does, but they are only a member of its organization, not an admin.
    w.github.add_user("member", 2, true, Some("member"));
    let r = w.come_back(&org_id, &admin, &w.state(&org_id, &admin).await, "member").await;
    assert_eq!((r.status, r.error_code()), (StatusCode::FORBIDDEN, "installation_not_verified"), "{}", r.text);
    // A code GitHub never issued.
    let state = w.state(&org_id, &admin).await;
    let made_up =
        json!({ "installation_id": INSTALLATION, "setup_action": "install", "state": state, "code": "made-up" });
    let r = w.complete(&org_id, &admin, made_up).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::FORBIDDEN, "installation_not_verified"), "{}", r.text);
    assert_eq!(w.linked_org().await, None, "nothing is linked");

    // An installation linked to another organization is answered exactly like one that is not
    // the user's: its id tells nothing.
    let (first, _, _, first_admin) = w.server.org_with_keys("First").await;
    w.github.add_user("mona", 583_231, true, Some("admin"));
    let first_id = first.id.to_string();
    let r = w.come_back(&first_id, &first_admin, &w.state(&first_id, &first_admin).await, "mona").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = w.come_back(&org_id, &admin, &w.state(&org_id, &admin).await, "mona").await;
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
    let state = w.state(&org_id, &admin).await;
    for (path, status) in [("/login/oauth", 503), ("/user/installations", 502), ("/user/memberships", 429)] {
        w.github.fail(path, status);
        let r = w.come_back(&org_id, &admin, &state, "mona").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{path} {status}: {}", r.text);
        assert_eq!(w.linked_org().await, None, "{path} {status}: nothing is linked");
        w.github.recover();
    }
    // Once GitHub answers again, the same install link completes: failures did not use it up.
    let r = w.come_back(&org_id, &admin, &state, "mona").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_link_completed_by_anyone_else_links_nothing() {
    // An attacker (org admin of their own AI-CD org) starts an install link and gets a victim,
    // an admin of the GitHub organization, to install the App through it. The victim's browser
    // comes back with a code proving the victim's control, but nobody other than the person who
    // started the link can complete it.
    let w = world(&[]).await;
    let (attacker_org, _, _, attacker) = w.server.org_with_keys("Mallory").await;
    let attacker_org = attacker_org.id.to_string();
    let state = w.state(&attacker_org, &attacker).await;
    w.github.add_user("victim", 583_231, true, Some("admin"));
    let code = "victims-code";
    w.github.issue_code(code, "victim");
    let query = format!("installation_id={INSTALLATION}&setup_action=install&state={state}&code={code}");
    let body =
        json!({ "installation_id": INSTALLATION.to_string(), "setup_action": "install", "state": state, "code": code });

    // The redirect alone (an unauthenticated browser) links nothing, and hands the victim
    // nothing to forward: the code is not on the page.
    let landing = w.landing(&query).await;
    assert_eq!(landing.status, StatusCode::OK, "{}", landing.text);
    assert!(!landing.text.contains(code), "{}", landing.text);
    assert_eq!(w.linked_org().await, None);
    // The victim, signed in to their own org, cannot complete a state of another org...
    let (victim_org, _, _, victim) = w.server.org_with_keys("Acme").await;
    let victim_org = victim_org.id.to_string();
    let r = w.complete(&victim_org, &victim, body.clone()).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::BAD_REQUEST, "invalid_state"), "{}", r.text);
    // ...and another admin of the attacker's org cannot complete the attacker's.
    let admin =
        w.server.core.authenticate_api_key(&aicd_core::tenancy::ApiKeySecret::new(attacker.clone())).await.unwrap();
    let accomplice = w.server.key(&admin, admin.org_id, aicd_core::tenancy::Role::OrgAdmin).await;
    let r = w.complete(&attacker_org, &accomplice, body.clone()).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::BAD_REQUEST, "invalid_state"), "{}", r.text);
    // Nor can a developer or an unauthenticated caller.
    let r = reply(
        w.server
            .http
            .post(w.server.url(&format!("/v1/orgs/{attacker_org}/github/setup")))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(w.linked_org().await, None, "nothing is linked");
    assert!(w.github.revoked_user_tokens().is_empty(), "the code was never even traded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_forged_and_incomplete_redirects_are_refused() {
    let w = world(&[]).await;
    let (org, _, _, admin) = w.server.org_with_keys("Acme").await;
    let org_id = org.id.to_string();
    w.github.add_user("mona", 583_231, true, Some("admin"));
    let r = w.landing(&format!("installation_id={INSTALLATION}&setup_action=install&code=x")).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::BAD_REQUEST, "invalid_state"), "{}", r.text);
    let r = w.complete(&org_id, &admin, json!({ "installation_id": INSTALLATION, "code": "x" })).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::BAD_REQUEST, "invalid_state"), "{}", r.text);
    for forged in ["nonsense", "v1.aaaa.bbbb.9999999999.cccc"] {
        let r = w.landing(&format!("installation_id={INSTALLATION}&state={forged}&code=x")).await;
        assert_eq!((r.status, r.error_code()), (StatusCode::BAD_REQUEST, "invalid_state"), "{forged}: {}", r.text);
        let forged = json!({ "installation_id": INSTALLATION, "state": forged, "code": "x" });
        let r = w.complete(&org_id, &admin, forged).await;
        assert_eq!((r.status, r.error_code()), (StatusCode::BAD_REQUEST, "invalid_state"), "{}", r.text);
    }
    // An unknown field in the body is refused.
    let r = w.complete(&org_id, &admin, json!({ "state": "x", "org": "y" })).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    // A genuine state moved to another organization no longer verifies.
    let state = w.state(&org_id, &admin).await;
    let (other, _, _, _) = w.server.org_with_keys("Other").await;
    let mut parts: Vec<String> = state.split('.').map(str::to_owned).collect();
    parts[1] = other.id.as_uuid().simple().to_string();
    let moved = parts.join(".");
    let r = w.landing(&format!("installation_id={INSTALLATION}&state={moved}&code=x")).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::BAD_REQUEST, "invalid_state"), "{}", r.text);
    // No installation id.
    let r = w.landing(&format!("setup_action=install&state={state}&code=x")).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::BAD_REQUEST, "bad_request"), "{}", r.text);
    let r = w.complete(&org_id, &admin, json!({ "state": state, "code": "x" })).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::BAD_REQUEST, "bad_request"), "{}", r.text);
    // No code, and no callback URL to send the user to authorize through.
    let r = w.landing(&format!("installation_id={INSTALLATION}&setup_action=install&state={state}")).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::BAD_REQUEST, "bad_request"), "{}", r.text);
    assert!(r.text.contains("Request user authorization"), "{}", r.text);
    assert_eq!(w.linked_org().await, None);
    // None of that used the state up.
    assert_eq!(w.come_back(&org_id, &admin, &state, "mona").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_code_the_user_is_sent_to_authorize_first() {
    let w = world(&[("AICD_PUBLIC_URL", "http://aicd.example.test")]).await;
    // A web app's own setup page is the App's callback URL when configured.
    let custom = world(&[("AICD_GITHUB_CALLBACK_URL", "https://app.example.test/github/done?from=aicd")]).await;
    let (custom_org, _, _, custom_admin) = custom.server.org_with_keys("Acme").await;
    let custom_state = custom.state(&custom_org.id.to_string(), &custom_admin).await;
    let r = custom.landing(&format!("installation_id={INSTALLATION}&state={custom_state}")).await;
    let location = r.headers.get("location").unwrap().to_str().unwrap();
    assert!(
        location.contains(
            "redirect_uri=https%3A%2F%2Fapp.example.test%2Fgithub%2Fdone%3Ffrom%3Daicd%26installation_id%3D4242"
        ),
        "{location}"
    );
    let (org, _, _, admin) = w.server.org_with_keys("Acme").await;
    let state = w.state(&org.id.to_string(), &admin).await;
    let r = w.landing(&format!("installation_id={INSTALLATION}&setup_action=install&state={state}")).await;
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
    // The web app handing over a redirect without a code is told the same.
    let org_id = org.id.to_string();
    let r = w.complete(&org_id, &admin, json!({ "installation_id": INSTALLATION, "state": state })).await;
    assert_eq!((r.status, r.body["status"].as_str()), (StatusCode::OK, Some("authorize")), "{}", r.text);
    assert_eq!(r.body["authorize_url"].as_str(), Some(location), "{}", r.text);
    // GitHub comes back to that address with a code: linked.
    w.github.add_user("mona", 583_231, true, Some("admin"));
    let r = w.come_back(&org_id, &admin, &state, "mona").await;
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
    let body = json!({ "installation_id": 1, "state": "x", "code": "y" });
    let r = server.post(&format!("/v1/orgs/{}/github/setup", org.id), &admin, body.clone()).await;
    assert_eq!((r.status, r.error_code()), (StatusCode::SERVICE_UNAVAILABLE, "github_setup_unavailable"), "{}", r.text);
    let r = server.post(&format!("/v1/orgs/{}/github/setup", org.id), &viewer, body).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "the role is checked first: {}", r.text);
    let _: Value = r.body;
}
