//! Authentication over real HTTP: OIDC JWTs checked against a JWKS served by a mock identity
//! provider (ES256, RS256, rotation, expiry, issuer, audience), and API keys (revoked, expired).

mod support;

use std::time::Duration;

use aicd_core::tenancy::{NewApiKey, Role};
use aicd_server::ServerOptions;
use reqwest::{Method, StatusCode};
use serde_json::json;
use support::TestServer;
use support::jwt::TestIssuer;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const AUDIENCE: &str = "aicd-api";

struct Idp {
    mock: MockServer,
    issuer: String,
}

async fn idp(keys: &TestIssuer) -> Idp {
    let mock = MockServer::start().await;
    let issuer = mock.uri();
    mount_jwks(&mock, keys).await;
    Idp { mock, issuer }
}

async fn mount_jwks(mock: &MockServer, keys: &TestIssuer) {
    mock.reset().await;
    Mock::given(method("GET"))
        .and(path("/.well-known/jwks.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(keys.jwks()))
        .mount(mock)
        .await;
}

async fn server_for(idp: &Idp) -> TestServer {
    TestServer::postgres_with(
        &[("AICD_OIDC_ISSUER", &idp.issuer), ("AICD_OIDC_AUDIENCE", AUDIENCE)],
        ServerOptions { jwks_min_refetch: Duration::ZERO },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_administers_at_most_the_operators_number_of_orgs() {
    let keys = TestIssuer::new().with_rsa();
    let idp = idp(&keys).await;
    let server = TestServer::postgres_with(
        &[("AICD_OIDC_ISSUER", &idp.issuer), ("AICD_OIDC_AUDIENCE", AUDIENCE), ("AICD_LIMIT_MAX_ORGS_PER_USER", "2")],
        ServerOptions { jwks_min_refetch: Duration::ZERO },
    )
    .await;
    let alice = keys.token("r1", TestIssuer::claims(&idp.issuer, AUDIENCE, "alice"));
    for name in ["One", "Two"] {
        let created = server.post("/v1/orgs", &alice, json!({"name": name})).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    }
    let third = server.post("/v1/orgs", &alice, json!({"name": "Three"})).await;
    assert_eq!(third.status, StatusCode::CONFLICT, "{}", third.text);
    assert!(third.text.contains("you administer 2 organizations, this deployment's limit (2)"), "{}", third.text);
    let too_busy = server.post("/v1/orgs", &alice, json!({"name": "Big", "max_concurrent_jobs": 1001})).await;
    assert_eq!(too_busy.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", too_busy.text);
    // Another user has their own count.
    let bob = keys.token("r1", TestIssuer::claims(&idp.issuer, AUDIENCE, "bob"));
    assert_eq!(server.post("/v1/orgs", &bob, json!({"name": "Bob's"})).await.status, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_jwt_subject_becomes_a_user_who_creates_an_org_and_administers_it() {
    let keys = TestIssuer::new().with_rsa();
    let idp = idp(&keys).await;
    let server = server_for(&idp).await;

    let mut claims = TestIssuer::claims(&idp.issuer, AUDIENCE, "alice");
    claims["email"] = json!("alice@example.com");
    let es256 = keys.token("k1", claims);
    let me = server.get("/v1/me", &es256).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    assert_eq!(me.body["kind"], "user");
    assert_eq!(me.body["user"]["email"], "alice@example.com");
    assert_eq!(me.body["orgs"], json!([]));
    let user_id = me.body["user"]["id"].clone();

    let created = server.post("/v1/orgs", &es256, json!({"name": "Acme"})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let org = created.body["id"].as_str().unwrap().to_owned();

    // The same subject with an RS256 token is the same user, now org_admin of Acme.
    let rs256 = keys.token("r1", TestIssuer::claims(&idp.issuer, AUDIENCE, "alice"));
    let orgs = server.get("/v1/orgs", &rs256).await;
    assert_eq!(orgs.status, StatusCode::OK, "{}", orgs.text);
    assert_eq!(orgs.body["items"][0]["id"], org.as_str());
    assert_eq!(orgs.body["items"][0]["role"], "org_admin");
    let members = server.get(&format!("/v1/orgs/{org}/members"), &rs256).await;
    assert_eq!(members.body["items"][0]["user_id"], user_id);
    assert_eq!(members.body["items"][0]["role"], "org_admin");

    // Another subject is another user, who cannot see Acme.
    let bob = keys.token("k1", TestIssuer::claims(&idp.issuer, AUDIENCE, "bob"));
    let reply = server.get(&format!("/v1/orgs/{org}"), &bob).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_fetched_on_its_first_use() {
    let mut keys = TestIssuer::new();
    let idp = idp(&keys).await;
    let server = server_for(&idp).await;
    let before = keys.token("k1", TestIssuer::claims(&idp.issuer, AUDIENCE, "carol"));
    assert_eq!(server.get("/v1/me", &before).await.status, StatusCode::OK);

    let kid = keys.rotate();
    mount_jwks(&idp.mock, &keys).await;
    let after = keys.token(&kid, TestIssuer::claims(&idp.issuer, AUDIENCE, "carol"));
    let reply = server.get("/v1/me", &after).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let fetches = idp.mock.received_requests().await.unwrap().len();
    assert_eq!(fetches, 1, "exactly one refetch after the rotation");

    // A kid nobody published is refused after one more look.
    let mut stranger = TestIssuer::new();
    stranger.rotate();
    let unpublished = stranger.rotate();
    let forged = stranger.token(&unpublished, TestIssuer::claims(&idp.issuer, AUDIENCE, "carol"));
    let reply = server.get("/v1/me", &forged).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_wrong_issuer_wrong_audience_and_tampered_tokens_are_401() {
    let keys = TestIssuer::new();
    let idp = idp(&keys).await;
    let server = server_for(&idp).await;
    let now = chrono::Utc::now().timestamp();

    let mut expired = TestIssuer::claims(&idp.issuer, AUDIENCE, "dave");
    expired["iat"] = json!(now - 3600);
    expired["exp"] = json!(now - 600);
    let mut no_exp = TestIssuer::claims(&idp.issuer, AUDIENCE, "dave");
    no_exp.as_object_mut().unwrap().remove("exp");
    let wrong_issuer = TestIssuer::claims("https://evil.example", AUDIENCE, "dave");
    let wrong_audience = TestIssuer::claims(&idp.issuer, "someone-else", "dave");
    let good = keys.token("k1", TestIssuer::claims(&idp.issuer, AUDIENCE, "dave"));
    let mut tampered = good.clone();
    tampered.pop();
    tampered.push(if good.ends_with('A') { 'B' } else { 'A' });

    for (what, token) in [
        ("expired", keys.token("k1", expired)),
        ("without exp", keys.token("k1", no_exp)),
        ("wrong issuer", keys.token("k1", wrong_issuer)),
        ("wrong audience", keys.token("k1", wrong_audience)),
        ("tampered", tampered),
        ("garbage", "not.a.jwt".to_owned()),
        ("unknown API key", "aicd_0000000000000000000000000000000000000".to_owned()),
    ] {
        let reply = server.get("/v1/me", &token).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}: {}", reply.text);
        assert_eq!(reply.error_code(), "unauthenticated", "{what}");
        assert_eq!(reply.headers["www-authenticate"], "Bearer", "{what}");
    }
    for header in ["Basic abc", "Bearer", "Bearer    "] {
        let reply = reply_with_header(&server, header).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{header}: {}", reply.text);
    }
    assert_eq!(server.get("/v1/me", &good).await.status, StatusCode::OK);
}

async fn reply_with_header(server: &TestServer, value: &str) -> support::Reply {
    let response = server.http.get(server.url("/v1/me")).header("authorization", value).send().await.unwrap();
    support::reply(response).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_identity_provider_only_api_keys_work() {
    let server = TestServer::postgres(&[]).await;
    let keys = TestIssuer::new();
    let token = keys.token("k1", TestIssuer::claims("https://idp.example", AUDIENCE, "erin"));
    let reply = server.get("/v1/me", &token).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_identity_provider_is_503_not_401() {
    let keys = TestIssuer::new();
    let mock = MockServer::start().await;
    Mock::given(method("GET")).respond_with(ResponseTemplate::new(500)).mount(&mock).await;
    let idp = Idp { issuer: mock.uri(), mock };
    let server = server_for(&idp).await;
    let token = keys.token("k1", TestIssuer::claims(&idp.issuer, AUDIENCE, "frank"));
    let reply = server.get("/v1/me", &token).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.text);
    assert_eq!(reply.error_code(), "unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_api_keys_are_401() {
    let server = TestServer::postgres(&[]).await;
    let (org, viewer, _, admin) = server.org_with_keys("acme").await;
    assert_eq!(server.get("/v1/me", &viewer).await.status, StatusCode::OK);

    // Revoke the viewer's key through the API.
    let keys = server.get(&format!("/v1/orgs/{}/api-keys", org.id), &admin).await;
    let viewer_key = keys.body["items"].as_array().unwrap().iter().find(|k| k["role"] == "viewer").unwrap().clone();
    assert!(keys.text.contains("prefix") && !keys.text.contains(&viewer), "secrets never listed");
    let revoked = server
        .call(
            Method::DELETE,
            &format!("/v1/orgs/{}/api-keys/{}", org.id, viewer_key["id"].as_str().unwrap()),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.text);
    let reply = server.get("/v1/me", &viewer).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);

    // A key that expires in a second stops working after it.
    let admin_actor =
        server.core.authenticate_api_key(&aicd_core::tenancy::ApiKeySecret::new(admin.clone())).await.unwrap();
    let expires_at = Some(chrono::Utc::now() + chrono::Duration::milliseconds(1200));
    let (_, short) = server
        .core
        .create_api_key(&admin_actor, org.id, NewApiKey { name: "short".into(), role: Role::Viewer, expires_at })
        .await
        .unwrap();
    assert_eq!(server.get("/v1/me", short.expose()).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reply = server.get("/v1/me", short.expose()).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);

    // The secret of a new key appears in the POST response only.
    let created =
        server.post(&format!("/v1/orgs/{}/api-keys", org.id), &admin, json!({"name": "ci", "role": "developer"})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let secret = created.body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("aicd_"));
    let listed = server.get(&format!("/v1/orgs/{}/api-keys", org.id), &admin).await;
    assert!(!listed.text.contains(&secret));
    assert_eq!(server.get("/v1/me", &secret).await.body["role"], "developer");
}
