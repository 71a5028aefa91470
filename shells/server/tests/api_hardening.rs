//! The edges of the API over real HTTP: body limits, rate limits, bad input in the error shape,
//! security headers, request ids, CORS, health, readiness, metrics and the OpenAPI document.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_413_in_the_error_shape() {
    let server = TestServer::postgres(&[("AICD_MAX_BODY_BYTES", "2048")]).await;
    let (org, _, developer, _) = server.org_with_keys("acme").await;
    let big = json!({"repo_id": uuid::Uuid::nil(), "issue": {"title": "t", "body": "x".repeat(4096)}});
    let reply = server.post(&format!("/v1/orgs/{}/jobs", org.id), &developer, big).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", reply.text);
    assert_eq!(reply.error_code(), "payload_too_large");

    // Also without a Content-Length (chunked).
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..8).map(|_| Ok(vec![b' '; 1024])).collect();
    let response = server
        .http
        .post(server.url(&format!("/v1/orgs/{}/jobs", org.id)))
        .bearer_auth(&developer)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    let reply = support::reply(response).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", reply.text);
    assert_eq!(reply.error_code(), "payload_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_over_their_rate_limit_get_429_with_retry_after_shared_through_redis() {
    let server = TestServer::postgres(&[("AICD_RATE_LIMIT_PER_MINUTE", "5")]).await;
    let (_, viewer, developer, _) = server.org_with_keys("acme").await;
    for _ in 0..5 {
        assert_eq!(server.get("/v1/me", &viewer).await.status, StatusCode::OK);
    }
    let reply = server.get("/v1/me", &viewer).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{}", reply.text);
    assert_eq!(reply.error_code(), "rate_limited");
    let retry_after: u64 = reply.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Another key has its own budget.
    assert_eq!(server.get("/v1/me", &developer).await.status, StatusCode::OK);
    let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("aicd_rate_limited_total"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_limits_bind_every_organization_and_name_the_limit() {
    let server = TestServer::postgres(&[
        ("AICD_LIMIT_MAX_CONCURRENT_JOBS", "8"),
        ("AICD_LIMIT_MAX_JOB_TOKENS", "50000"),
        ("AICD_LIMIT_MAX_JOB_COST_MICROS", "900000"),
        ("AICD_LIMIT_MAX_QUEUED_JOBS", "2"),
    ])
    .await;
    let (org, _, developer, admin) = server.org_with_keys("acme").await;
    // An org admin cannot raise its own concurrency past the operator's limit.
    let path = format!("/v1/orgs/{}", org.id);
    let raised = server.call(Method::PATCH, &path, Some(&admin), Some(json!({"max_concurrent_jobs": 9}))).await;
    assert_eq!(raised.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", raised.text);
    assert!(raised.text.contains("at most 8"), "{}", raised.text);
    let within = server.call(Method::PATCH, &path, Some(&admin), Some(json!({"max_concurrent_jobs": 8}))).await;
    assert_eq!(within.status, StatusCode::OK, "{}", within.text);

    let repo = support::git_repo();
    let repo_id = server.local_repo(&org, &admin, repo.path()).await;
    let jobs = format!("/v1/orgs/{}/jobs", org.id);
    let job = |number: u64, budget: Value| {
        let mut body = json!({"repo_id": repo_id, "issue": {"number": number, "title": "Work"}});
        if let Value::Object(extra) = budget {
            body.as_object_mut().unwrap().extend(extra);
        }
        body
    };
    // A budget above the limit is refused, naming it; none given is the default lowered to it.
    let greedy = server.post(&jobs, &developer, job(1, json!({"max_tokens": 50001}))).await;
    assert_eq!(greedy.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", greedy.text);
    assert!(greedy.text.contains("max_tokens must be at most 50000"), "{}", greedy.text);
    let costly = server.post(&jobs, &developer, job(1, json!({"max_cost_micros": 900001}))).await;
    assert!(costly.text.contains("max_cost_micros must be at most 900000"), "{}", costly.text);
    let first = server.post(&jobs, &developer, job(1, json!({}))).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.body["budget"]["max_tokens"], 50000, "{}", first.text);
    assert_eq!(first.body["budget"]["max_cost_micros"], 900000, "{}", first.text);
    // Two queued jobs are the limit: the third is refused until one starts.
    assert_eq!(server.post(&jobs, &developer, job(2, json!({}))).await.status, StatusCode::CREATED);
    let third = server.post(&jobs, &developer, job(3, json!({}))).await;
    assert_eq!(third.status, StatusCode::CONFLICT, "{}", third.text);
    assert!(third.text.contains("2 queued jobs, this deployment's limit (2)"), "{}", third.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_has_one_bucket_for_all_its_callers_beside_each_callers_own() {
    let server =
        TestServer::postgres(&[("AICD_RATE_LIMIT_PER_MINUTE", "100"), ("AICD_ORG_RATE_LIMIT_PER_MINUTE", "4")]).await;
    let (org, viewer, developer, admin) = server.org_with_keys("acme").await;
    let (other, other_viewer, _, _) = server.org_with_keys("other").await;
    let jobs = format!("/v1/orgs/{}/jobs", org.id);
    for key in [&viewer, &developer, &admin, &viewer] {
        assert_eq!(server.get(&jobs, key).await.status, StatusCode::OK);
    }
    let reply = server.get(&jobs, &developer).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "the org's bucket is shared: {}", reply.text);
    assert!(reply.headers.contains_key("retry-after"));
    // Another org, and routes outside any org, are not affected; an outsider does not spend it.
    assert_eq!(server.get(&format!("/v1/orgs/{}/jobs", other.id), &other_viewer).await.status, StatusCode::OK);
    assert_eq!(server.get("/v1/me", &viewer).await.status, StatusCode::OK);
    assert_eq!(server.get(&jobs, &other_viewer).await.status, StatusCode::NOT_FOUND);
    let metrics = server.http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"aicd_rate_limited_total{scope="org"} 1"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_over_its_rate_limit_gets_429_even_without_credentials() {
    let server = TestServer::postgres(&[("AICD_IP_RATE_LIMIT_PER_MINUTE", "3")]).await;
    for _ in 0..3 {
        assert_eq!(server.call(Method::GET, "/v1/me", None, None).await.status, StatusCode::UNAUTHORIZED);
    }
    let reply = server.call(Method::GET, "/v1/me", None, None).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{}", reply.text);
    assert!(reply.headers.contains_key("retry-after"));
    // Health checks are never limited.
    assert_eq!(server.call(Method::GET, "/health", None, None).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_4xx_in_the_error_shape_never_500() {
    let server = TestServer::postgres(&[]).await;
    let (org, _, _, admin) = server.org_with_keys("acme").await;
    let repos = format!("/v1/orgs/{}/repos", org.id);
    let raw = |body: &'static str, content_type: &'static str| {
        let request = server.http.post(server.url(&repos)).bearer_auth(&admin).header("content-type", content_type);
        async move { support::reply(request.body(body).send().await.unwrap()).await }
    };
    let cases = [
        ("malformed JSON", raw("{\"full_name\": ", "application/json").await, StatusCode::BAD_REQUEST, "bad_request"),
        ("not an object", raw("[1, 2]", "application/json").await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input"),
        (
            "unknown field",
            raw(
                r#"{"full_name": "a/b", "source": {"kind": "local", "path": "/x"}, "colour": "red"}"#,
                "application/json",
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            "wrong type",
            raw(r#"{"full_name": 7, "source": {"kind": "local", "path": "/x"}}"#, "application/json").await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            "unknown source kind",
            raw(r#"{"full_name": "a/b", "source": {"kind": "svn", "path": "/x"}}"#, "application/json").await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            "missing field",
            raw(r#"{"source": {"kind": "local", "path": "/x"}}"#, "application/json").await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            "no JSON content type",
            raw(r#"{"full_name": "a/b", "source": {"kind": "local", "path": "/x"}}"#, "text/plain").await,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
    ];
    for (what, reply, status, code) in cases {
        assert_eq!(reply.status, status, "{what}: {}", reply.text);
        assert_eq!(reply.error_code(), code, "{what}");
        assert!(reply.body["error"]["request_id"].is_string(), "{what}: {}", reply.text);
    }
    // Values the core refuses.
    for (path, body) in [
        (format!("/v1/orgs/{}", org.id), json!({"name": ""})),
        (format!("/v1/orgs/{}/jobs", org.id), json!({"repo_id": uuid::Uuid::nil(), "issue": {"title": ""}})),
        (format!("/v1/orgs/{}/api-keys", org.id), json!({"name": "k", "role": "emperor"})),
        (
            format!("/v1/orgs/{}/api-keys", org.id),
            json!({"name": "k", "role": "viewer", "expires_at": "2001-01-01T00:00:00Z"}),
        ),
    ] {
        let method = if path.ends_with(&org.id.to_string()) { Method::PATCH } else { Method::POST };
        let reply = server.call(method, &path, Some(&admin), Some(body.clone())).await;
        assert!(reply.status.is_client_error(), "{path} {body}: {} {}", reply.status, reply.text);
        reply.error_code();
    }
    // Bad query strings.
    for query in ["limit=0", "limit=101", "state=sleeping", "cursor=zzz", "colour=red"] {
        let reply = server.get(&format!("/v1/orgs/{}/jobs?{query}", org.id), &admin).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {}", reply.text);
    }
    let reply = server.get(&format!("/v1/orgs/{}/usage?from=yesterday", org.id), &admin).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.text);
    let reply = server.get(&format!("/v1/orgs/{}/usage?from=2026-02-01&to=2026-01-01", org.id), &admin).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.text);
    // A method the route does not have.
    let reply = server.call(Method::PUT, &format!("/v1/orgs/{}", org.id), Some(&admin), None).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{}", reply.text);
    reply.error_code();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organizations_policy_is_stored_and_an_invalid_one_is_422_naming_the_field() {
    let server = TestServer::postgres(&[]).await;
    let (org, _, _, admin) = server.org_with_keys("acme").await;
    let path = format!("/v1/orgs/{}", org.id);
    let policy = json!({ "protected_paths": ["deploy/**"], "max_files": 20 });
    let reply =
        server.call(Method::PATCH, &path, Some(&admin), Some(json!({ "settings": { "policy": policy } }))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["settings"]["policy"], policy, "{}", reply.text);
    for (bad, field) in [
        (json!({ "max_file": 3 }), "settings.policy.max_file"),
        (json!({ "max_files": "many" }), "settings.policy.max_files"),
        (json!({ "protected_paths": "deploy/**" }), "settings.policy.protected_paths"),
        (json!({ "protected_paths": ["bad/[z-"] }), "settings.policy.protected_paths"),
        (json!({ "secret_patterns": ["(unclosed"] }), "settings.policy.secret_patterns"),
        (json!(["deploy/**"]), "settings.policy"),
    ] {
        let body = json!({ "settings": { "policy": bad.clone() } });
        let reply = server.call(Method::PATCH, &path, Some(&admin), Some(body)).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {}", reply.text);
        assert_eq!(reply.error_code(), "invalid_input", "{bad}");
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{bad}: {message}");
    }
    // What was refused changed nothing.
    let reply = server.get(&path, &admin).await;
    assert_eq!(reply.body["settings"]["policy"], policy, "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_repositories_are_refused_unless_allowed() {
    let server = TestServer::postgres(&[("AICD_ALLOW_LOCAL_REPOS", "false")]).await;
    let (org, _, _, admin) = server.org_with_keys("acme").await;
    let body = json!({"full_name": "a/b", "source": {"kind": "local", "path": "/etc"}});
    let reply = server.post(&format!("/v1/orgs/{}/repos", org.id), &admin, body).await;
    assert!(reply.status.is_client_error(), "{}", reply.text);
    assert!(reply.body["error"]["message"].as_str().unwrap().contains("local"), "{}", reply.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_carry_security_headers_and_the_request_id() {
    let server = TestServer::postgres(&[("AICD_CORS_ORIGINS", "https://app.example.com")]).await;
    let (_, viewer, _, _) = server.org_with_keys("acme").await;
    let response = server
        .http
        .get(server.url("/v1/me"))
        .bearer_auth(&viewer)
        .header("x-request-id", "trace-42")
        .send()
        .await
        .unwrap();
    let headers = response.headers();
    assert_eq!(headers["x-request-id"], "trace-42");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(!headers.contains_key("strict-transport-security"), "no HSTS without TLS");

    // A generated id appears in both the header and the error body.
    let reply = server.call(Method::GET, "/v1/me", None, None).await;
    let id = reply.headers["x-request-id"].to_str().unwrap().to_owned();
    assert!(id.len() >= 16);
    assert_eq!(reply.body["error"]["request_id"], id.as_str());
    // An id with odd characters is replaced, not echoed.
    let response = server.http.get(server.url("/health")).header("x-request-id", "a b<script>").send().await.unwrap();
    assert_ne!(response.headers()["x-request-id"], "a b<script>");

    // CORS: the configured origin may call, others get no CORS headers.
    let preflight = |origin: &'static str| {
        server
            .http
            .request(Method::OPTIONS, server.url("/v1/me"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example.com");
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(!refused.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_is_sent_when_the_public_url_is_https() {
    let server = TestServer::postgres(&[("AICD_PUBLIC_URL", "https://aicd.example.com")]).await;
    let response = server.http.get(server.url("/health")).send().await.unwrap();
    assert!(response.headers()["strict-transport-security"].to_str().unwrap().contains("max-age="));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics() {
    let server = TestServer::postgres(&[]).await;
    let health = server.call(Method::GET, "/health", None, None).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "ok");
    assert!(health.body["version"].is_string() && health.body["uptime_secs"].is_u64(), "{}", health.text);

    let ready = server.call(Method::GET, "/ready", None, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    let checks: Vec<&str> =
        ready.body["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(checks, ["database", "redis"]);

    let (org, viewer, _, _) = server.org_with_keys("acme").await;
    server.get(&format!("/v1/orgs/{}/jobs", org.id), &viewer).await;
    let metrics = server.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, StatusCode::OK);
    for name in [
        "aicd_http_requests_total",
        "aicd_http_request_duration_seconds",
        "aicd_jobs_queued",
        "aicd_step_timeouts_total",
    ] {
        assert!(metrics.text.contains(name), "{name} missing:\n{}", metrics.text);
    }
    assert!(metrics.text.contains("route=\"/v1/orgs/{org_id}/jobs\""), "routes are templates:\n{}", metrics.text);
    assert!(!metrics.text.contains(&org.id.to_string()), "no ids in labels");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_metrics_token_metrics_need_it_and_health_does_not() {
    const TOKEN: &str = "e72d4b09c1a58f3e6b0d2c9a7f41e835";
    let server = TestServer::postgres(&[("AICD_METRICS_TOKEN", TOKEN)]).await;
    let refused = server.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.text);
    assert_eq!(refused.body["error"]["code"], "unauthenticated", "{}", refused.text);
    let wrong =
        server.http.get(server.url("/metrics")).bearer_auth("e72d4b09c1a58f3e6b0d2c9a7f41e836").send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let scraped = server.http.get(server.url("/metrics")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(scraped.status(), StatusCode::OK);
    assert!(scraped.text().await.unwrap().contains("aicd_jobs_queued"));
    assert_eq!(server.call(Method::GET, "/health", None, None).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_valid_and_lists_every_route() {
    let server = TestServer::postgres(&[]).await;
    let reply = server.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let spec: oas3::OpenApiV3Spec = oas3::from_json(&reply.text).expect("a valid OpenAPI 3.1 document");
    assert!(spec.openapi.starts_with("3.1"), "{}", spec.openapi);
    let doc: Value = reply.body;
    let expected = [
        ("get", "/health"),
        ("get", "/ready"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
        ("get", "/docs"),
        ("get", "/v1/me"),
        ("get", "/v1/orgs"),
        ("post", "/v1/orgs"),
        ("get", "/v1/orgs/{org_id}"),
        ("patch", "/v1/orgs/{org_id}"),
        ("delete", "/v1/orgs/{org_id}"),
        ("get", "/v1/orgs/{org_id}/members"),
        ("post", "/v1/orgs/{org_id}/members"),
        ("patch", "/v1/orgs/{org_id}/members/{user_id}"),
        ("delete", "/v1/orgs/{org_id}/members/{user_id}"),
        ("get", "/v1/orgs/{org_id}/api-keys"),
        ("post", "/v1/orgs/{org_id}/api-keys"),
        ("delete", "/v1/orgs/{org_id}/api-keys/{key_id}"),
        ("get", "/v1/orgs/{org_id}/repos"),
        ("post", "/v1/orgs/{org_id}/repos"),
        ("get", "/v1/orgs/{org_id}/repos/{repo_id}"),
        ("patch", "/v1/orgs/{org_id}/repos/{repo_id}"),
        ("delete", "/v1/orgs/{org_id}/repos/{repo_id}"),
        ("get", "/v1/orgs/{org_id}/jobs"),
        ("post", "/v1/orgs/{org_id}/jobs"),
        ("get", "/v1/orgs/{org_id}/jobs/{job_id}"),
        ("post", "/v1/orgs/{org_id}/jobs/{job_id}/cancel"),
        ("post", "/v1/orgs/{org_id}/jobs/{job_id}/retry"),
        ("get", "/v1/orgs/{org_id}/jobs/{job_id}/events"),
        ("get", "/v1/orgs/{org_id}/jobs/{job_id}/events/stream"),
        ("get", "/v1/orgs/{org_id}/jobs/{job_id}/diff"),
        ("get", "/v1/orgs/{org_id}/usage"),
        ("get", "/v1/orgs/{org_id}/github/installations"),
        ("delete", "/v1/orgs/{org_id}/github/installations/{installation_id}"),
        ("post", "/v1/orgs/{org_id}/github/install"),
        ("post", "/v1/orgs/{org_id}/github/setup"),
        ("get", "/github/setup"),
        ("post", "/webhooks/github"),
        ("get", "/v1/orgs/{org_id}/billing"),
        ("patch", "/v1/orgs/{org_id}/billing"),
        ("post", "/v1/orgs/{org_id}/billing/portal"),
        ("post", "/webhooks/stripe"),
    ];
    let mut documented = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented += 1;
            assert!(expected.contains(&(method.as_str(), path.as_str())), "undocumented extra {method} {path}");
        }
    }
    for (method, path) in expected {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} is not in the document");
    }
    assert_eq!(documented, expected.len());
    // Every reference resolves.
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &reference[..reference.find('"').unwrap()];
        assert!(doc["components"]["schemas"][name].is_object(), "dangling reference to {name}");
    }
    // Every route the server serves answers something other than "no such route".
    for (method, path) in expected {
        let concrete = path
            .replace("{org_id}", &uuid::Uuid::nil().to_string())
            .replace("{user_id}", &uuid::Uuid::nil().to_string())
            .replace("{key_id}", &uuid::Uuid::nil().to_string())
            .replace("{repo_id}", &uuid::Uuid::nil().to_string())
            .replace("{job_id}", &uuid::Uuid::nil().to_string())
            .replace("{installation_id}", "1");
        let reply = server.call(method.to_uppercase().parse().unwrap(), &concrete, None, None).await;
        assert!(
            reply.body["error"]["message"] != "no such route" && reply.status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} is documented but not served"
        );
    }
    let docs = server.call(Method::GET, "/docs", None, None).await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(docs.text.contains("/v1/orgs/{org_id}/jobs/{job_id}/events/stream"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reports_redis_degraded_when_it_goes_away_and_the_api_keeps_serving() {
    let redis = aicd_testkit::TestRedis::new().await;
    let mut proxy = aicd_testkit::TcpProxy::redis(redis.url()).await;
    let url = format!("redis://127.0.0.1:{}", proxy.port());
    let server = TestServer::postgres(&[("REDIS_URL", &url)]).await;
    let ready = server.wait_until_ready_with_redis().await;
    assert_eq!(ready.body["degraded"], false, "{}", ready.text);
    proxy.cut();
    let ready = server.call(Method::GET, "/ready", None, None).await;
    assert_degraded_by_redis(&ready);
    // Liveness is unaffected, and so is the API.
    assert_eq!(server.call(Method::GET, "/health", None, None).await.status, StatusCode::OK);
    let (org, viewer, _, _) = server.org_with_keys("acme").await;
    assert_eq!(server.get(&format!("/v1/orgs/{}/jobs", org.id), &viewer).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_starts_while_redis_is_down_and_subscribes_once_it_answers() {
    let port = aicd_testkit::RedisServer::free_port();
    let url = aicd_testkit::RedisServer::url_for(port);
    let server = TestServer::postgres(&[("REDIS_URL", &url)]).await;
    let ready = server.call(Method::GET, "/ready", None, None).await;
    assert_degraded_by_redis(&ready);
    let (org, viewer, _, _) = server.org_with_keys("acme").await;
    assert_eq!(server.get(&format!("/v1/orgs/{}/jobs", org.id), &viewer).await.status, StatusCode::OK);

    let _redis = aicd_testkit::RedisServer::start(port).await;
    let ready = server.wait_until_ready_with_redis().await;
    assert_eq!(ready.body["degraded"], false, "{}", ready.text);
}

/// `/ready` answered 200, ready but degraded: the database is fine, Redis is not.
fn assert_degraded_by_redis(ready: &support::Reply) {
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_eq!((&ready.body["ready"], &ready.body["degraded"]), (&true.into(), &true.into()), "{}", ready.text);
    let check =
        |name: &str| ready.body["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone();
    let redis = check("redis");
    assert_eq!((&redis["ok"], &redis["required"]), (&false.into(), &false.into()), "{}", ready.text);
    assert!(redis["error"].is_string(), "{}", ready.text);
    assert_eq!(check("database")["ok"], true, "{}", ready.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_repository_must_name_an_installation_linked_to_the_org() {
    let server = TestServer::postgres(&[]).await;
    let (victim, _, _, victim_admin) = server.org_with_keys("victim").await;
    let (org, _, _, admin) = server.org_with_keys("acme").await;
    let victim_actor =
        server.core.authenticate_api_key(&aicd_core::tenancy::ApiKeySecret::new(victim_admin)).await.unwrap();
    let installation = aicd_core::github::InstallationId::new(777).unwrap();
    server
        .core
        .github_intake()
        .link_installation(victim.id, installation, Some("victim".into()), "operator")
        .await
        .unwrap();
    let body = json!({"full_name": "victim/app", "source": {"kind": "github", "installation_id": 777, "repo_id": 1}});
    let reply = server.post(&format!("/v1/orgs/{}/repos", org.id), &admin, body.clone()).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.text);
    assert!(reply.text.contains("not linked"), "{}", reply.text);
    let reply =
        server.post(&format!("/v1/orgs/{}/repos", victim.id), &server_admin(&server, &victim_actor).await, body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
}

async fn server_admin(server: &TestServer, actor: &aicd_core::tenancy::Actor) -> String {
    server.key(actor, actor.org_id, aicd_core::tenancy::Role::OrgAdmin).await
}
