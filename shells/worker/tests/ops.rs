//! The `aicd-worker` binary's operational endpoints and its refusal of an unsafe production
//! configuration, as a real process on the embedded SQLite database.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running worker, killed when dropped; its stderr goes to a file, printed if a test fails.
struct Worker {
    child: Child,
    log: PathBuf,
    _data: tempfile::TempDir,
}

impl Worker {
    /// Starts the worker on a fresh SQLite database with `env` on top of a clean environment.
    fn start(env: &[(&str, &str)]) -> Worker {
        let data = tempfile::Builder::new().prefix("aicd-worker-ops-").tempdir().unwrap();
        let log = data.path().join("stderr.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_aicd-worker"));
        command
            .env_clear()
            .env("AICD_DATA_DIR", data.path().join("data"))
            .env("AICD_POLL_INTERVAL_MS", "100")
            .env("AICD_SHUTDOWN_GRACE_SECS", "2")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        let child = command.spawn().expect("the worker starts");
        Worker { child, log, _data: data }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has a line containing `needle`, and returns that line.
    async fn log_line(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the worker exited ({status}) before logging `{needle}`:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "no `{needle}` in the log within {within:?}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits (at most 15 s) for a clean exit.
    async fn terminate(&mut self) {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status}\n{}", self.log());
                return;
            }
            assert!(Instant::now() < deadline, "the worker did not exit after SIGTERM:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- worker log ---\n{}", self.log());
        }
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn client() -> reqwest::Client {
    aicd_runtime::telemetry::install_crypto_provider();
    reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap()
}

/// GETs `url` until it answers (the worker may still be opening its database).
async fn get_when_up(client: &reqwest::Client, url: &str) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.get(url).send().await {
            Ok(response) => return response,
            Err(e) => assert!(Instant::now() < deadline, "{url} never answered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn health_ready_and_metrics_are_served_on_the_worker_listen_addr() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut worker = Worker::start(&[("AICD_WORKER_LISTEN_ADDR", &addr)]);
    let client = client();

    let health = get_when_up(&client, &format!("http://{addr}/health")).await;
    assert_eq!(health.status(), 200);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ok", "{body}");
    assert!(body["version"].is_string() && body["uptime_secs"].is_u64(), "{body}");

    let ready = client.get(format!("http://{addr}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let report: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(report["ready"], true, "{report}");
    assert_eq!(report["checks"][0]["name"], "database", "{report}");

    let metrics = client.get(format!("http://{addr}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let content_type = metrics.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, aicd_runtime::metrics::CONTENT_TYPE);
    let text = metrics.text().await.unwrap();
    assert!(text.lines().any(|l| l == "aicd_jobs_queued 0"), "{text}");
    for step in ["planning", "coding", "reviewing", "publishing"] {
        let line = format!("aicd_step_timeouts_total{{step=\"{step}\"}} 0");
        assert!(text.lines().any(|l| l == line), "{line} is missing:\n{text}");
    }

    let line = worker.log_line("ops listening", Duration::from_secs(5)).await;
    assert!(line.contains(&format!("addr={addr}")), "{line}");
    worker.terminate().await;
    assert!(client.get(format!("http://{addr}/health")).send().await.is_err(), "the ops server stopped");
    let log = worker.log();
    assert!(log.contains("SIGTERM") && log.contains("worker exited"), "{log}");
}

/// The worker's `/ready` report once `done` holds for it, within 20 s.
async fn ready_once(
    client: &reqwest::Client,
    addr: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = get_when_up(client, &format!("http://{addr}/ready")).await;
        assert_eq!(ready.status(), 200, "Redis is not required to be ready");
        let report: serde_json::Value = ready.json().await.unwrap();
        if done(&report) {
            return report;
        }
        assert!(Instant::now() < deadline, "/ready never got there: {report}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn with_redis_down_the_worker_starts_degraded_and_subscribes_once_redis_answers() {
    let addr = format!("127.0.0.1:{}", free_port());
    let redis_port = aicd_testkit::RedisServer::free_port();
    let redis_url = aicd_testkit::RedisServer::url_for(redis_port);
    let mut worker = Worker::start(&[
        ("AICD_WORKER_LISTEN_ADDR", &addr),
        ("REDIS_URL", &redis_url),
        ("AICD_REDIS_NAMESPACE", "aicd-test:worker-late:"),
    ]);
    let client = client();

    let report = ready_once(&client, &addr, |_| true).await;
    assert_eq!((&report["ready"], &report["degraded"]), (&true.into(), &true.into()), "{report}");
    let redis = report["checks"].as_array().unwrap().iter().find(|c| c["name"] == "redis").unwrap().clone();
    assert_eq!((&redis["ok"], &redis["required"]), (&false.into(), &false.into()), "{report}");
    worker.log_line("worker started", Duration::from_secs(10)).await;
    let warning = worker.log_line("could not subscribe to Redis signals", Duration::from_secs(10)).await;
    assert!(warning.contains("attempt=1"), "attempts count from 1: {warning}");

    let _redis = aicd_testkit::RedisServer::start(redis_port).await;
    ready_once(&client, &addr, |report| report["degraded"] == false).await;
    worker.log_line("Redis signals subscription established", Duration::from_secs(5)).await;
    worker.terminate().await;
}

#[tokio::test]
async fn port_0_listens_on_a_free_port_and_logs_it() {
    let mut worker = Worker::start(&[("AICD_WORKER_LISTEN_ADDR", "127.0.0.1:0")]);
    let line = worker.log_line("ops listening", Duration::from_secs(30)).await;
    let addr = line.split("addr=").nth(1).and_then(|rest| rest.split_whitespace().next()).expect("an address");
    assert!(!addr.ends_with(":0"), "the bound port is logged: {line}");
    let health = get_when_up(&client(), &format!("http://{addr}/health")).await;
    assert_eq!(health.status(), 200);
    worker.terminate().await;
}

/// Runs the worker with `env` until it exits (at most 30 s); returns its exit code and stderr.
async fn run_to_exit(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut worker = Worker::start(env);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = worker.child.try_wait().unwrap() {
            return (status.code(), worker.log());
        }
        assert!(Instant::now() < deadline, "the worker did not give up:\n{}", worker.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn production_without_a_database_url_exits_2_naming_it() {
    let (code, stderr) = run_to_exit(&[("AICD_ENV", "production")]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.lines().any(|l| l.trim_start().starts_with("- DATABASE_URL")), "{stderr}");
    assert!(stderr.lines().any(|l| l.trim_start().starts_with("- REDIS_URL")), "{stderr}");
}

#[tokio::test]
async fn a_port_in_use_fails_naming_the_variable() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = run_to_exit(&[("AICD_WORKER_LISTEN_ADDR", &addr)]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("AICD_WORKER_LISTEN_ADDR"), "{stderr}");
}

#[tokio::test]
async fn the_worker_gauges_are_read_at_the_scrape() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut worker = Worker::start(&[("AICD_WORKER_LISTEN_ADDR", &addr), ("AICD_WORKER_CONCURRENCY", "6")]);
    let text = get_when_up(&client(), &format!("http://{addr}/metrics")).await.text().await.unwrap();
    let value = |line: &str| text.lines().find_map(|l| l.strip_prefix(line)?.trim().parse::<f64>().ok());
    assert_eq!(value("aicd_worker_slots "), Some(6.0), "{text}");
    assert_eq!(value("aicd_worker_jobs_running "), Some(0.0), "{text}");
    assert_eq!(value("aicd_jobs{state=\"queued\"} "), Some(0.0), "{text}");
    assert_eq!(value("aicd_queue_oldest_age_seconds "), Some(0.0), "{text}");
    assert_eq!(value("aicd_jobs_lease_expired "), Some(0.0), "{text}");
    assert!(value("aicd_db_pool_max_connections ").is_some_and(|n| n >= 1.0), "{text}");
    worker.terminate().await;
}
