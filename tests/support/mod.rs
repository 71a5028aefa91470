//! The world an end-to-end test runs in: a fresh PostgreSQL database and Redis namespace, the fake
//! GitHub, and the real `aicd-server` and `aicd-worker` processes configured as a GitHub App
//! deployment, with helpers to call the API and deliver signed webhooks.

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
}

impl Processes {
    /// Both logs.
    pub(crate) fn logs(&self) -> String {
        format!("{}\n{}", self.server.log(), self.worker.log())
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
    _logs: tempfile::TempDir,
    _redis: TestRedis,
    _postgres: TestPostgres,
}

impl World {
    /// A fresh database (migrated with `aicd-server migrate`) and Redis namespace, the fake
    /// GitHub, an organization from `aicd-server admin bootstrap`, and the server (without an
    /// embedded worker) and a worker, both ready.
    pub(crate) async fn start() -> Self {
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
        let mut worker_env = env;
        set(&mut worker_env, "AICD_WORKER_LISTEN_ADDR", &format!("127.0.0.1:{worker_port}"));
        set(&mut worker_env, "AICD_WORKER_ID", "e2e-worker");
        let processes = Processes {
            server: Process::spawn("aicd-server", &binary("aicd-server"), &server_env, &logs.path().join("server.log")),
            worker: Process::spawn("aicd-worker", &binary("aicd-worker"), &worker_env, &logs.path().join("worker.log")),
        };

        let world = Self {
            processes,
            github,
            org,
            key,
            base: format!("http://127.0.0.1:{server_port}"),
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("an HTTP client"),
            secret,
            _logs: logs,
            _redis: redis,
            _postgres: postgres,
        };
        world.wait_ready(&format!("{}/ready", world.base), "the server").await;
        world.wait_ready(&format!("http://127.0.0.1:{worker_port}/ready"), "the worker").await;
        world
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

    /// Delivers a webhook with `signature` as its `X-Hub-Signature-256` (none if `None`).
    pub(crate) async fn deliver_raw(
        &self,
        event: &str,
        delivery: &str,
        body: Vec<u8>,
        signature: Option<&str>,
    ) -> StatusCode {
        let mut request = self
            .http
            .post(format!("{}/webhooks/github", self.base))
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/8f2b4e1")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("x-github-hook-id", "500000001")
            .header("x-github-hook-installation-target-id", APP_ID.to_string())
            .header("x-github-hook-installation-target-type", "integration")
            .body(body);
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
