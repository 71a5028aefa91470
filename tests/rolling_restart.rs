//! Zero downtime through a rolling restart: two `aicd-server` replicas and one `aicd-worker` on
//! PostgreSQL and Redis, behind the test kit's load balancer (each connection to a healthy
//! replica, round-robin, the next one when a connect fails), under a steady load of reads and job
//! creations. Each replica in turn gets SIGTERM, drains, exits and is started again; then the
//! worker gets SIGTERM while a job is mid-run, and a new worker is started. No request may fail
//! (a connection error, a 5xx or any other unexpected status counts), and every job created must
//! reach PR_OPEN.
//!
//! Clients open one connection per request (`Connection: close`, no pooling). A kept-alive
//! connection is pinned to one replica, and a request sent on it just as a draining replica
//! closes it idle is lost without an answer; only a client that retries such a request could
//! hide that, and that is not safe for a POST. The load balancer only retries a connect, before
//! any byte is sent. The server's part: from SIGTERM on, `/ready` answers 503 while the replica
//! keeps accepting and serving for `AICD_SHUTDOWN_DRAIN_SECS`, so the balancer takes it out of
//! rotation before it stops accepting (a connection accepted by the kernel but not yet by the
//! server would be reset when the listener closes); then in-flight requests finish.
//!
//! The binaries must be built (`cargo build -p aicd-server -p aicd-worker`; `cargo test
//! --workspace` builds them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aicd_testkit::process::{Process, binary, free_port, run};
use aicd_testkit::{LoadBalancer, TestPostgres, TestRedis};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Clients driving the load at once.
const CLIENTS: usize = 4;
/// Jobs the load creates at most.
const MAX_JOBS: usize = 60;
/// How often each client creates a job.
const CREATE_EVERY: Duration = Duration::from_millis(1500);
/// The replicas' drain delay: far longer than the balancer's health-check interval.
const DRAIN_SECS: u64 = 2;
const HEALTH_INTERVAL: Duration = Duration::from_millis(100);

/// What the load did: every failure, described, and the jobs it created.
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    requests: AtomicU64,
    failures: Mutex<Vec<String>>,
    jobs: Mutex<Vec<String>>,
}

impl Load {
    fn fail(&self, started: Instant, what: String) {
        let at = started.elapsed().as_millis();
        self.failures.lock().unwrap().push(format!("+{at} ms: {what}"));
    }

    fn jobs(&self) -> Vec<String> {
        self.jobs.lock().unwrap().clone()
    }
}

/// What every client needs to call the API through the balancer.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    org: String,
    key: String,
}

impl Api {
    fn new(base: String, org: String, key: String) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::CONNECTION, reqwest::header::HeaderValue::from_static("close"));
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .default_headers(headers)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client");
        Self { http, base, org, key }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}/v1/orgs/{}{path}", self.base, self.org)).bearer_auth(&self.key)
    }

    fn post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http.post(format!("{}/v1/orgs/{}{path}", self.base, self.org)).bearer_auth(&self.key).json(body)
    }
}

/// Sends `request`; its JSON body if it answers `expected`, else the failure is recorded.
async fn call(
    load: &Load,
    started: Instant,
    what: &str,
    request: reqwest::RequestBuilder,
    expected: StatusCode,
) -> Option<Value> {
    load.requests.fetch_add(1, Ordering::Relaxed);
    match request.send().await {
        Err(e) => {
            load.fail(started, format!("{what}: {e:?}"));
            None
        }
        Ok(response) => {
            let status = response.status();
            let text = response.text().await;
            match text {
                Ok(text) if status == expected => serde_json::from_str(&text).ok(),
                Ok(text) => {
                    load.fail(started, format!("{what}: {status} {text}"));
                    None
                }
                Err(e) => {
                    load.fail(started, format!("{what}: {status}, then the body failed: {e:?}"));
                    None
                }
            }
        }
    }
}

/// One client: creates a job every [`CREATE_EVERY`] (up to [`MAX_JOBS`] in all), and in between
/// reads a job and lists jobs, until told to stop.
async fn client(index: usize, api: Api, repo: String, load: Arc<Load>, started: Instant) {
    let mut last_create: Option<Instant> = None;
    let mut round = 0usize;
    while !load.stop.load(Ordering::Relaxed) {
        round += 1;
        if last_create.is_none_or(|at| at.elapsed() >= CREATE_EVERY) && load.jobs.lock().unwrap().len() < MAX_JOBS {
            last_create = Some(Instant::now());
            let n = index * 1000 + round;
            let body = json!({
                "repo_id": repo,
                "issue": {"number": n, "title": format!("File {n}"), "body": format!("```aicd:write f{n}.txt\nfile {n}\n```\n")},
            });
            if let Some(job) = call(&load, started, "create a job", api.post("/jobs", &body), StatusCode::CREATED).await
            {
                load.jobs.lock().unwrap().push(job["id"].as_str().expect("a job id").to_owned());
            }
        }
        let known = load.jobs();
        if !known.is_empty() {
            let id = &known[round % known.len()];
            call(&load, started, "read a job", api.get(&format!("/jobs/{id}")), StatusCode::OK).await;
        }
        call(&load, started, "list jobs", api.get("/jobs?limit=20"), StatusCode::OK).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A process of the deployment, restartable with the same settings.
struct Service {
    name: String,
    binary: PathBuf,
    env: Vec<(String, String)>,
    /// Where it serves `/ready`.
    addr: SocketAddr,
    logs: PathBuf,
    process: Process,
}

impl Service {
    fn start(name: &str, binary: PathBuf, env: Vec<(String, String)>, addr: SocketAddr, logs: &Path) -> Self {
        let process = Process::spawn(name, &binary, &env, &logs.join(format!("{name}.log")));
        Self { name: name.to_owned(), binary, env, addr, logs: logs.to_owned(), process }
    }

    /// Starts it again (its log continues in the same file).
    fn restart(&mut self) {
        self.process =
            Process::spawn(&self.name, &self.binary, &self.env, &self.logs.join(format!("{}.log", self.name)));
    }

    /// Waits (at most 30 s) until its `/ready` answers 200.
    async fn wait_ready(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = http.get(format!("http://{}/ready", self.addr)).send().await
                && response.status() == StatusCode::OK
            {
                return;
            }
            if let Some(status) = self.process.exit_status() {
                panic!("{} exited ({status}) before it was ready\n{}", self.name, self.process.log());
            }
            assert!(Instant::now() < deadline, "{} was not ready within 30 s\n{}", self.name, self.process.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits (at most 30 s) for a clean exit.
    async fn stop(&mut self) {
        self.process.terminate();
        match self.process.wait(Duration::from_secs(30)).await {
            Some(status) => assert!(status.success(), "{} exited with {status}\n{}", self.name, self.process.log()),
            None => panic!("{} did not exit within 30 s of SIGTERM\n{}", self.name, self.process.log()),
        }
    }
}

fn set(env: &mut Vec<(String, String)>, name: &str, value: &str) {
    env.retain(|(k, _)| k != name);
    env.push((name.to_owned(), value.to_owned()));
}

/// Waits (at most 20 s) until the balancer sees `addr` healthy.
async fn wait_healthy(balancer: &LoadBalancer, addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !balancer.is_healthy(addr) {
        assert!(Instant::now() < deadline, "the balancer never saw {addr} healthy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_replicas_and_worker_fails_no_request_and_loses_no_job() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let postgres = TestPostgres::new().await;
    let redis = TestRedis::new().await;
    let logs = tempfile::Builder::new().prefix("aicd-rolling-").tempdir().expect("a log directory");
    let roots = tempfile::Builder::new().prefix("aicd-rolling-repos-").tempdir().expect("a repository root");
    let roots_path = roots.path().canonicalize().expect("a canonical root");
    let checkout = roots_path.join("demo");
    std::fs::create_dir(&checkout).expect("a checkout");
    std::fs::write(checkout.join("README.md"), "# Demo\n").expect("a file");
    aicd_testkit::files::commit_all(&checkout, "Initial commit");

    let owner_url = postgres.owner_url();
    let mut env: Vec<(String, String)> = [
        ("DATABASE_URL", owner_url.as_str()),
        ("AICD_DATABASE_MIGRATION_URL", owner_url.as_str()),
        ("REDIS_URL", redis.url()),
        ("AICD_REDIS_NAMESPACE", redis.namespace()),
        ("AICD_ALLOW_LOCAL_REPOS", "true"),
        ("AICD_LOCAL_REPO_ROOTS", roots_path.to_str().expect("a UTF-8 path")),
        ("AICD_POLL_INTERVAL_MS", "100"),
        ("AICD_SHUTDOWN_GRACE_SECS", "15"),
        ("RUST_LOG", "info"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let server_bin = binary("aicd-server");
    run(&server_bin, &["migrate"], &env);
    set(&mut env, "DATABASE_URL", &postgres.app_url("aicd_app").await);
    let out = run(&server_bin, &["admin", "bootstrap", "--org", "Acme", "--json"], &env);
    let printed: Value = serde_json::from_slice(&out.stdout).expect("bootstrap prints one JSON line");
    let org = printed["org_id"].as_str().expect("an org_id").to_owned();
    let key = printed["api_key"].as_str().expect("an api_key").to_owned();

    let mut replicas: Vec<Service> = (0..2)
        .map(|n| {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let mut env = env.clone();
            set(&mut env, "AICD_LISTEN_ADDR", &addr.to_string());
            set(&mut env, "AICD_EMBEDDED_WORKER", "false");
            set(&mut env, "AICD_SHUTDOWN_DRAIN_SECS", &DRAIN_SECS.to_string());
            set(&mut env, "AICD_RATE_LIMIT_PER_MINUTE", "1000000");
            set(&mut env, "AICD_IP_RATE_LIMIT_PER_MINUTE", "1000000");
            Service::start(&format!("server-{}", n + 1), server_bin.clone(), env, addr, logs.path())
        })
        .collect();
    let worker_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut worker_env = env.clone();
    set(&mut worker_env, "AICD_WORKER_LISTEN_ADDR", &worker_addr.to_string());
    set(&mut worker_env, "AICD_WORKER_ID", "rolling-1");
    set(&mut worker_env, "AICD_SCRIPTED_AGENT_DELAY_MS", "200");
    let mut worker = Service::start("worker-1", binary("aicd-worker"), worker_env.clone(), worker_addr, logs.path());

    let direct = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("an HTTP client");
    for service in replicas.iter_mut().chain([&mut worker]) {
        service.wait_ready(&direct).await;
    }
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let balancer = LoadBalancer::start(&addrs, "/ready", HEALTH_INTERVAL).await;
    for addr in &addrs {
        wait_healthy(&balancer, *addr).await;
    }

    let api = Api::new(balancer.url(), org, key);
    let path = checkout.to_str().expect("a UTF-8 path");
    let repo = json!({"full_name": "acme/demo", "source": {"kind": "local", "path": path}});
    let response = api.post("/repos", &repo).send().await.expect("the balancer answers");
    assert_eq!(response.status(), StatusCode::CREATED, "{}", response.text().await.unwrap_or_default());
    let repo: Value = response.json().await.expect("a repository");
    let repo = repo["id"].as_str().expect("a repository id").to_owned();

    let started = Instant::now();
    let load = Arc::new(Load::default());
    let clients: Vec<_> =
        (0..CLIENTS).map(|i| tokio::spawn(client(i, api.clone(), repo.clone(), load.clone(), started))).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    for replica in &mut replicas {
        let (forwarded, requests) = (balancer.forwarded(replica.addr), load.requests.load(Ordering::Relaxed));
        assert!(forwarded > 0, "{} got no connections before its restart", replica.name);
        replica.process.terminate();
        // Draining: still up, not ready, until it stops accepting.
        let deadline = Instant::now() + Duration::from_secs(DRAIN_SECS + 10);
        let report = loop {
            let response = direct.get(format!("http://{}/ready", replica.addr)).send().await;
            if let Ok(response) = response
                && response.status() == StatusCode::SERVICE_UNAVAILABLE
            {
                let connection = response.headers().get("connection").and_then(|v| v.to_str().ok());
                assert_eq!(connection, Some("close"), "a draining replica closes kept-alive connections");
                break response.json::<Value>().await.expect("a readiness report");
            }
            assert!(
                replica.process.exit_status().is_none(),
                "{} exited without reporting itself draining",
                replica.name
            );
            assert!(Instant::now() < deadline, "{} never reported itself draining", replica.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!((&report["ready"], &report["draining"]), (&json!(false), &json!(true)), "{report}");
        match replica.process.wait(Duration::from_secs(30)).await {
            Some(status) => {
                assert!(status.success(), "{} exited with {status}\n{}", replica.name, replica.process.log())
            }
            None => panic!("{} did not exit within 30 s of SIGTERM\n{}", replica.name, replica.process.log()),
        }
        replica.restart();
        replica.wait_ready(&direct).await;
        wait_healthy(&balancer, replica.addr).await;
        let back = balancer.forwarded(replica.addr);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(load.requests.load(Ordering::Relaxed) > requests, "the load went on during the restart");
        assert!(balancer.forwarded(replica.addr) > back, "{} got connections again after its restart", replica.name);
        assert!(back >= forwarded);
    }

    // The worker: SIGTERM while a job is planning (two agent calls of 200 ms still ahead of it),
    // so the job is left mid-run for the next worker.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mid_run = loop {
        let response = api.get("/jobs?state=planning&limit=1").send().await.expect("the balancer answers");
        let page: Value = response.json().await.expect("a page of jobs");
        if let Some(id) = page["items"][0]["id"].as_str() {
            break id.to_owned();
        }
        assert!(Instant::now() < deadline, "no job was ever seen planning");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    worker.stop().await;
    set(&mut worker_env, "AICD_WORKER_ID", "rolling-2");
    let mut worker = Service::start("worker-2", binary("aicd-worker"), worker_env, worker_addr, logs.path());
    worker.wait_ready(&direct).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    load.stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("a client ran to its end");
    }
    let failures = load.failures.lock().unwrap().clone();
    let show_logs =
        || replicas.iter().map(|r| r.process.log()).chain([worker.process.log()]).collect::<Vec<_>>().join("\n");
    assert!(failures.is_empty(), "{} requests failed:\n{}\n{}", failures.len(), failures.join("\n"), show_logs());

    // Every job created reaches PR_OPEN.
    let jobs = load.jobs();
    assert!(jobs.len() >= 8, "the load created only {} jobs", jobs.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &jobs {
        loop {
            let response = api.get(&format!("/jobs/{id}")).send().await.expect("the balancer answers");
            let job: Value = response.json().await.expect("a job");
            assert_ne!(job["state"], "failed", "job {id} failed: {job}\n{}", show_logs());
            if job["state"] == "pr_open" {
                break;
            }
            assert!(Instant::now() < deadline, "job {id} is still {} after the load\n{}", job["state"], show_logs());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let response = api.get(&format!("/jobs/{mid_run}/events?limit=500")).send().await.expect("the balancer answers");
    let events: Value = response.json().await.expect("a timeline");
    let actors: Vec<&str> =
        events["items"].as_array().expect("events").iter().filter_map(|e| e["actor"].as_str()).collect();
    for worker in ["worker:rolling-1", "worker:rolling-2"] {
        assert!(actors.contains(&worker), "job {mid_run} was not run by {worker}: {actors:?}");
    }
    println!(
        "rolling restart: {} requests, none failed; {} jobs, all at PR_OPEN; forwarded {:?}",
        load.requests.load(Ordering::Relaxed),
        jobs.len(),
        addrs.iter().map(|a| balancer.forwarded(*a)).collect::<Vec<_>>()
    );
}
