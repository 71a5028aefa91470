//! The world an end-to-end test runs in: a fresh PostgreSQL database and Redis namespace, the fake
//! GitHub, and the real `aicd-server` and `aicd-worker` processes configured as a GitHub App
//! deployment, with helpers to call the API and deliver signed webhooks.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

pub(crate) mod payloads;

use std::process::Output;
use std::time::{Duration, Instant};

use aicd_github::webhooks::WebhookSecret;
use aicd_testkit::process::{Process, binary, free_port};
use aicd_testkit::{TestPostgres, TestRedis};
use reqwest::StatusCode;
use serde_json::Value;

use aicd_testkit::github::{APP_ID, APP_SLUG, CLIENT_ID, CLIENT_SECRET, FakeGitHub};

/// One RSA key pair per test binary: (PKCS#1 private PEM, PKCS#1 public PEM).
fn app_key_pair() -> (&'static str, &'static str) {
    let keys = aicd_testkit::rsa_key_pair();
    (&keys.private_pem, &keys.public_pem)
}

/// The claims of `jwt` if it is an RS256 JWT signed with the App's key, with `iat`, `exp` and
/// `iss` (the App's id); panics otherwise.
pub(crate) fn verify_app_jwt(jwt: &str) -> Value {
    let header = jsonwebtoken::decode_header(jwt).expect("a JWT");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(app_key_pair().1.as_bytes()).expect("a public key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.set_issuer(&[APP_ID.to_string()]);
    jsonwebtoken::decode::<Value>(jwt, &key, &validation).expect("signed with the App's key").claims
}

/// Runs `aicd-server <args>` to completion; panics with its output if it fails.
fn run_server_command(args: &[&str], env: &[(String, String)]) -> Output {
    aicd_testkit::process::run(&binary("aicd-server"), args, env)
}

/// The server and the worker; their logs are printed when a test fails while they are alive.
pub(crate) struct Processes {
    /// `aicd-server serve`.
    pub(crate) server: Process,
    /// `aicd-worker`.
    pub(crate) worker: Process,
    /// Workers replaced by [`World::replace_worker`], kept for their logs.
    retired: Vec<Process>,
}

impl Processes {
    /// Every log: the server's, the retired workers' and the worker's.
    pub(crate) fn logs(&self) -> String {
        let mut logs = vec![self.server.log()];
        logs.extend(self.retired.iter().map(Process::log));
        logs.push(self.worker.log());
        logs.join("\n")
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// Everything a test talks to. Dropping it kills the processes, then removes the database and
/// the Redis keys.
pub(crate) struct World {
    /// The processes (first, so they are killed before the database is dropped).
    pub(crate) processes: Processes,
    /// The fake GitHub.
    pub(crate) github: FakeGitHub,
    /// The organization bootstrapped for the test.
    pub(crate) org: String,
    /// Its org_admin API key.
    pub(crate) key: String,
    base: String,
    http: reqwest::Client,
    secret: WebhookSecret,
    /// The processes' environment (as the application role), without their listen addresses.
    env: Vec<(String, String)>,
    owner_url: String,
    logs: tempfile::TempDir,
    _redis: TestRedis,
    _postgres: TestPostgres,
}

impl World {
    /// A fresh database (migrated with `aicd-server migrate`) and Redis namespace, the fake
    /// GitHub, an organization from `aicd-server admin bootstrap`, and the server (without an
    /// embedded worker) and a worker, both ready.
    pub(crate) async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// [`World::start`] with `extra` added to (or replacing) the environment of the processes
    /// and of every `aicd-server` command, migrations and bootstrap included.
    pub(crate) async fn start_with(extra: &[(&str, &str)]) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (private_key, public_key) = app_key_pair();
        let github = FakeGitHub::start(public_key).await;
        let postgres = TestPostgres::new().await;
        let redis = TestRedis::new().await;
        let webhook_secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let secret = WebhookSecret::new(webhook_secret.clone()).expect("a usable secret");

        let owner_url = postgres.owner_url();
        let mut env: Vec<(String, String)> = [
            ("DATABASE_URL", owner_url.as_str()),
            ("AICD_DATABASE_MIGRATION_URL", owner_url.as_str()),
            ("REDIS_URL", redis.url()),
            ("AICD_REDIS_NAMESPACE", redis.namespace()),
            ("AICD_POLL_INTERVAL_MS", "50"),
            ("AICD_SHUTDOWN_GRACE_SECS", "10"),
            ("AICD_GITHUB_APP_ID", &APP_ID.to_string()),
            ("AICD_GITHUB_PRIVATE_KEY", private_key),
            ("AICD_GITHUB_WEBHOOK_SECRET", &webhook_secret),
            ("AICD_GITHUB_API_URL", &github.uri()),
            ("AICD_GITHUB_APP_SLUG", APP_SLUG),
            ("AICD_GITHUB_CLIENT_ID", CLIENT_ID),
            ("AICD_GITHUB_CLIENT_SECRET", CLIENT_SECRET),
            ("AICD_GITHUB_WEB_URL", &github.uri()),
            ("RUST_LOG", "info,aicd_server=debug,aicd_github=debug,aicd_worker=debug"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (name, value) in extra {
            set(&mut env, name, value);
        }

        // The schema, as its owner; then the application role the processes use.
        run_server_command(&["migrate"], &env);
        let app_url = postgres.app_url("aicd_app").await;
        set(&mut env, "DATABASE_URL", &app_url);

        let out = run_server_command(&["admin", "bootstrap", "--org", "Acme", "--json"], &env);
        let printed: Value = serde_json::from_slice(&out.stdout).expect("bootstrap prints one JSON line");
        let org = printed["org_id"].as_str().expect("an org_id").to_owned();
        let key = printed["api_key"].as_str().expect("an api_key").to_owned();

        let logs = tempfile::Builder::new().prefix("aicd-e2e-").tempdir().expect("a log directory");
        let (server_port, worker_port) = (free_port(), free_port());
        let mut server_env = env.clone();
        set(&mut server_env, "AICD_LISTEN_ADDR", &format!("127.0.0.1:{server_port}"));
        set(&mut server_env, "AICD_EMBEDDED_WORKER", "false");
        // The test polls the API often; keep it clear of the rate limits.
        set(&mut server_env, "AICD_RATE_LIMIT_PER_MINUTE", "100000");
        set(&mut server_env, "AICD_IP_RATE_LIMIT_PER_MINUTE", "100000");
        let mut worker_env = env.clone();
        set(&mut worker_env, "AICD_WORKER_LISTEN_ADDR", &format!("127.0.0.1:{worker_port}"));
        set(&mut worker_env, "AICD_WORKER_ID", "e2e-worker");
        let processes = Processes {
            server: Process::spawn("aicd-server", &binary("aicd-server"), &server_env, &logs.path().join("server.log")),
            worker: Process::spawn("aicd-worker", &binary("aicd-worker"), &worker_env, &logs.path().join("worker.log")),
            retired: Vec::new(),
        };

        let world = Self {
            processes,
            github,
            org,
            key,
            base: format!("http://127.0.0.1:{server_port}"),
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("an HTTP client"),
            secret,
            env,
            owner_url,
            logs,
            _redis: redis,
            _postgres: postgres,
        };
        world.wait_ready(&format!("{}/ready", world.base), "the server").await;
        world.wait_ready(&format!("http://127.0.0.1:{worker_port}/ready"), "the worker").await;
        world
    }

    /// Starts another `aicd-worker` named `worker_id` (its own ops port and log) in place of the
    /// current one, which is kept for its log and must have exited already (see
    /// [`Process::kill`]); returns once the new one is ready.
    pub(crate) async fn replace_worker(&mut self, worker_id: &str) {
        assert!(self.processes.worker.exit_status().is_some(), "the worker being replaced is still running");
        let port = free_port();
        let mut env = self.env.clone();
        set(&mut env, "AICD_WORKER_LISTEN_ADDR", &format!("127.0.0.1:{port}"));
        set(&mut env, "AICD_WORKER_ID", worker_id);
        let log = self.logs.path().join(format!("{worker_id}.log"));
        let worker = Process::spawn(worker_id, &binary("aicd-worker"), &env, &log);
        let old = std::mem::replace(&mut self.processes.worker, worker);
        self.processes.retired.push(old);
        self.wait_ready(&format!("http://127.0.0.1:{port}/ready"), worker_id).await;
    }

    /// Runs `aicd-server <args>` to completion with the processes' environment; panics with its
    /// output if it fails.
    pub(crate) fn server_command(&self, args: &[&str]) -> Output {
        run_server_command(args, &self.env)
    }

    /// The test database's URL as its owner (a superuser: row-level security does not apply).
    pub(crate) fn owner_database_url(&self) -> &str {
        &self.owner_url
    }

    /// The test database's URL as the application role the processes use.
    pub(crate) fn app_database_url(&self) -> &str {
        self.env.iter().find(|(k, _)| k == "DATABASE_URL").map(|(_, v)| v.as_str()).expect("DATABASE_URL is set")
    }

    async fn wait_ready(&self, url: &str, what: &str) {
        self.wait_until(&format!("{what} to be ready"), Duration::from_secs(30), || async {
            let response = self.http.get(url).send().await.ok()?;
            (response.status() == StatusCode::OK).then_some(())
        })
        .await;
    }

    /// Polls `check` every 100 ms until it returns something, and returns that; panics after
    /// `within`, or as soon as the server or the worker has exited.
    pub(crate) async fn wait_until<T, F, Fut>(&self, what: &str, within: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + within;
        loop {
            if let Some(found) = check().await {
                return found;
            }
            for process in [&self.processes.server, &self.processes.worker] {
                if let Some(status) = process.exit_status() {
                    panic!("{} exited ({status}) while waiting for {what}", process.name());
                }
            }
            if Instant::now() >= deadline {
                panic!("timed out after {within:?} waiting for {what}\n{}", self.github.describe().await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET {path}` with the API key: the status and the body as JSON (`Null` if it is not).
    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.key).send().await;
        read(response.expect("the server answers")).await
    }

    /// `GET {path}` without credentials, as a browser GitHub redirected would: the status, the
    /// `Location` header and the body as JSON.
    pub(crate) async fn browse(&self, path: &str) -> (StatusCode, Option<String>, Value) {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("a client");
        let response = client.get(format!("{}{path}", self.base)).send().await.expect("the server answers");
        let location = response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (status, body) = read(response).await;
        (status, location, body)
    }

    /// `POST {path}` with the API key and a JSON body.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.key).json(body).send().await;
        read(response.expect("the server answers")).await
    }

    /// The `X-Hub-Signature-256` GitHub would send for `body`.
    pub(crate) fn sign(&self, body: &[u8]) -> String {
        self.secret.sign(body)
    }

    /// Delivers a webhook as GitHub does, signed with the webhook secret; returns the status.
    pub(crate) async fn deliver(&self, event: &str, delivery: &str, payload: &Value) -> StatusCode {
        let body = serde_json::to_vec(payload).expect("the payload serializes");
        let signature = self.sign(&body);
        self.deliver_raw(event, delivery, body, Some(&signature)).await
    }

    /// [`World::deliver`], also returning the server's answer (`status`: `processed`, `ignored`
    /// or `duplicate`, and its `detail`).
    pub(crate) async fn deliver_for_reply(&self, event: &str, delivery: &str, payload: &Value) -> (StatusCode, Value) {
        let body = serde_json::to_vec(payload).expect("the payload serializes");
        let signature = self.sign(&body);
        let request = self.webhook_request(event, delivery, body).header("x-hub-signature-256", signature);
        read(request.send().await.expect("the server answers")).await
    }

    /// `POST {path}` without credentials, with `headers` and `body` as they are (a provider's
    /// webhook): the status and the body as JSON.
    pub(crate) async fn post_raw(&self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (StatusCode, Value) {
        let mut request = self.http.post(format!("{}{path}", self.base)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        read(request.send().await.expect("the server answers")).await
    }

    /// Delivers a webhook with `signature` as its `X-Hub-Signature-256` (none if `None`).
    pub(crate) async fn deliver_raw(
        &self,
        event: &str,
        delivery: &str,
        body: Vec<u8>,
        signature: Option<&str>,
    ) -> StatusCode {
        let mut request = self.webhook_request(event, delivery, body);
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            eprintln!("webhook {event} {delivery}: {status} {text}");
        }
        status
    }

    /// A delivery of `event` to `/webhooks/github` with GitHub's headers, unsigned.
    fn webhook_request(&self, event: &str, delivery: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/webhooks/github", self.base))
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/8f2b4e1")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-github-hook-id", "500000001")
            .header("x-github-hook-installation-target-id", APP_ID.to_string())
            .header("x-github-hook-installation-target-type", "integration")
            .body(body)
    }

    /// The organization's jobs for issue `number` of any repository, newest first.
    pub(crate) async fn jobs_of_issue(&self, number: u64) -> Vec<Value> {
        let (status, page) = self.get(&format!("/v1/orgs/{}/jobs?limit=100", self.org)).await;
        assert_eq!(status, StatusCode::OK, "listing jobs: {page}");
        let items = page["items"].as_array().cloned().unwrap_or_default();
        items.into_iter().filter(|job| job["issue"]["number"] == number).collect()
    }

    /// Waits (at most `within`) until issue `number` has a job in state `state`, and returns it.
    /// Panics at once if the job fails.
    pub(crate) async fn wait_for_issue_job(&self, number: u64, state: &str, within: Duration) -> Value {
        let what = format!("the job of issue #{number} to be {state}");
        self.wait_until(&what, within, || async {
            let jobs = self.jobs_of_issue(number).await;
            if let Some(failed) = jobs.iter().find(|j| j["state"] == "failed") {
                panic!("the job of issue #{number} failed: {}", failed["failure_reason"]);
            }
            jobs.into_iter().find(|j| j["state"] == state)
        })
        .await
    }

    /// Waits (at most `within`) until job `id` is in state `state`, and returns it.
    pub(crate) async fn wait_for_job(&self, id: &str, state: &str, within: Duration) -> Value {
        let path = format!("/v1/orgs/{}/jobs/{id}", self.org);
        self.wait_until(&format!("job {id} to be {state}"), within, || async {
            let (status, job) = self.get(&path).await;
            assert_eq!(status, StatusCode::OK, "reading job {id}: {job}");
            (job["state"] == state).then_some(job)
        })
        .await
    }
}

fn set(env: &mut Vec<(String, String)>, name: &str, value: &str) {
    env.retain(|(k, _)| k != name);
    env.push((name.to_owned(), value.to_owned()));
}

async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A new `X-GitHub-Delivery` id (GitHub's are UUIDs).
pub(crate) fn delivery_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
