//! A real server per test, over real HTTP, on a fresh PostgreSQL database and its own Redis
//! namespace (or a fresh SQLite file), plus a core over the same store for fixtures.

#![allow(dead_code, unreachable_pub)]

pub mod jwt;

use std::sync::Arc;
use std::time::Duration;

use aicd_core::forge::LocalRoots;
use aicd_core::store::{PostgresOptions, SqlStore};
use aicd_core::tenancy::{Actor, ApiKeySecret, NewApiKey, NewOrg, Org, Role};
use aicd_core::{Core, CoreOptions};
use aicd_runtime::config::Config;
use aicd_server::{Server, ServerOptions};
use aicd_testkit::{TestPostgres, TestRedis, TestSqlite};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub base: String,
    vars: Vec<(String, String)>,
    pub http: reqwest::Client,
    pub core: Core,
    pub store: Arc<SqlStore>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _postgres: Option<TestPostgres>,
    _redis: Option<TestRedis>,
    _sqlite: Option<TestSqlite>,
}

/// The answer to a request: status, headers and the body as JSON (or `Value::Null`).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl TestServer {
    /// PostgreSQL + Redis, no embedded worker, local repositories allowed, plus `extra` variables.
    pub async fn postgres(extra: &[(&str, &str)]) -> Self {
        Self::postgres_with(extra, ServerOptions::default()).await
    }

    pub async fn postgres_with(extra: &[(&str, &str)], options: ServerOptions) -> Self {
        let db = TestPostgres::new().await;
        SqlStore::migrate_postgres(&db.owner_url()).await.expect("migrations apply");
        let app_url = db.app_url("aicd_app").await;
        let redis = TestRedis::new().await;
        let mut vars: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), app_url.clone()),
            ("REDIS_URL".into(), redis.url().to_owned()),
            ("AICD_REDIS_NAMESPACE".into(), redis.namespace().to_owned()),
            ("AICD_EMBEDDED_WORKER".into(), "false".into()),
            ("AICD_ALLOW_LOCAL_REPOS".into(), "true".into()),
            ("AICD_LOCAL_REPO_ROOTS".into(), repo_root().display().to_string()),
            ("RUST_LOG".into(), "warn".into()),
        ];
        vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let store = Arc::new(SqlStore::postgres(&app_url, PostgresOptions::default()).await.expect("store opens"));
        let mut server = Self::start(vars, options, store).await;
        server._postgres = Some(db);
        server._redis = Some(redis);
        server
    }

    /// The embedded default: SQLite, in-process worker and signals.
    pub async fn sqlite(extra: &[(&str, &str)]) -> Self {
        let db = TestSqlite::new();
        let mut vars: Vec<(String, String)> = vec![
            ("AICD_DATA_DIR".into(), db.dir().display().to_string()),
            ("AICD_LOCAL_REPO_ROOTS".into(), repo_root().display().to_string()),
            ("AICD_POLL_INTERVAL_MS".into(), "50".into()),
            ("RUST_LOG".into(), "warn".into()),
        ];
        vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let config = config(&vars);
        let server = Server::build(&config).await.expect("server builds");
        // A second handle on the same file for fixtures (SQLite allows several with WAL).
        let store = Arc::new(SqlStore::sqlite(&db.dir().join("aicd.db")).await.expect("store opens"));
        let mut server = Self::serve(server, store).await;
        server._sqlite = Some(db);
        server
    }

    async fn start(vars: Vec<(String, String)>, options: ServerOptions, store: Arc<SqlStore>) -> Self {
        let config = config(&vars);
        let server = Server::build_with(&config, options).await.expect("server builds");
        let mut server = Self::serve(server, store).await;
        server.vars = vars;
        server
    }

    /// Another replica on the same database and Redis namespace, with `extra` variables on top.
    /// Drop it before the first one (which owns the database).
    pub async fn replica(&self, extra: &[(&str, &str)]) -> Self {
        let mut vars = self.vars.clone();
        vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        Self::start(vars, ServerOptions::default(), self.store.clone()).await
    }

    async fn serve(server: Server, store: Arc<SqlStore>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async move {
            let _ = stopped.await;
        }));
        let options = CoreOptions {
            allow_local_repos: true,
            local_roots: LocalRoots::new([repo_root()]),
            ..CoreOptions::default()
        };
        let core = Core::new(store.clone(), options);
        Self {
            base,
            vars: Vec::new(),
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap(),
            core,
            store,
            stop: Some(stop),
            task: Some(task),
            _postgres: None,
            _redis: None,
            _sqlite: None,
        }
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server stops cleanly");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        reply(request.send().await.expect("the server answers")).await
    }

    /// `/ready` once it reports nothing degraded (Redis subscribed), within 15 s.
    pub async fn wait_until_ready_with_redis(&self) -> Reply {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let ready = self.call(Method::GET, "/ready", None, None).await;
            if ready.status == StatusCode::OK && ready.body["degraded"] == false {
                return ready;
            }
            assert!(tokio::time::Instant::now() < deadline, "/ready stayed degraded: {}", ready.text);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    /// Registers the local repository at `path` as `acme/demo` in `org` with the org_admin key
    /// `admin`, and returns its id.
    pub async fn local_repo(&self, org: &Org, admin: &str, path: &std::path::Path) -> Value {
        let body = serde_json::json!({"full_name": "acme/demo", "source": {"kind": "local", "path": path.display().to_string()}});
        let created = self.post(&format!("/v1/orgs/{}/repos", org.id), admin, body).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        created.body["id"].clone()
    }

    /// A new org with an API key of each role: (org, viewer, developer, org_admin).
    pub async fn org_with_keys(&self, name: &str) -> (Org, String, String, String) {
        let (org, _, admin) = self
            .core
            .bootstrap_org(NewOrg { name: name.into(), max_concurrent_jobs: None, settings: None })
            .await
            .unwrap();
        let admin_actor = self.core.authenticate_api_key(&admin).await.unwrap();
        let viewer = self.key(&admin_actor, org.id, Role::Viewer).await;
        let developer = self.key(&admin_actor, org.id, Role::Developer).await;
        (org, viewer, developer, admin.expose().to_owned())
    }

    pub async fn key(&self, admin: &Actor, org: aicd_core::OrgId, role: Role) -> String {
        let key = NewApiKey { name: format!("{role} key"), role, expires_at: None };
        let (_, secret): (_, ApiKeySecret) = self.core.create_api_key(admin, org, key).await.unwrap();
        secret.expose().to_owned()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply { status, headers, body, text }
}

/// Where the test servers let local repositories be: the system's temporary directory, under
/// which every test makes its repositories (`git_repo`, [`local_dir`]).
pub fn repo_root() -> std::path::PathBuf {
    std::fs::canonicalize(std::env::temp_dir()).expect("a temporary directory")
}

/// A new, empty directory under [`repo_root`], for a repository registered without git.
/// A directory under the repository roots shaped like a repository's top (with a `.git`
/// directory), which registration accepts; the forge checks it with git when it opens it.
pub fn local_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir_in(repo_root()).expect("a directory for a repository");
    std::fs::create_dir_all(dir.path().join(".git")).expect("its .git directory");
    dir
}

pub fn config(vars: &[(String, String)]) -> Config {
    let owned = vars.to_vec();
    Config::from_lookup(move |name| owned.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        .unwrap_or_else(|problems| panic!("test configuration is invalid:\n{problems}"))
}

impl Reply {
    /// Asserts the error shape and returns the code.
    pub fn error_code(&self) -> &str {
        let error = &self.body["error"];
        assert!(error.is_object(), "not in the error shape: {} {}", self.status, self.text);
        for field in ["code", "message", "details", "request_id"] {
            assert!(error.get(field).is_some(), "error without `{field}`: {}", self.text);
        }
        error["code"].as_str().expect("code is a string")
    }
}

/// One Server-Sent Event: its id and its data as JSON.
#[derive(Debug)]
pub struct SseEvent {
    pub id: i64,
    pub data: Value,
}

/// Reads a job's event stream until an event moves the job to `until`, or the stream ends;
/// returns the events read.
pub async fn read_stream(
    server: &TestServer,
    path: &str,
    token: &str,
    last_event_id: Option<i64>,
    until: &str,
) -> Vec<SseEvent> {
    use futures_util::StreamExt;
    let mut request = server.http.get(server.url(path)).bearer_auth(token);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    let response = request.send().await.expect("the stream opens");
    assert_eq!(response.status(), StatusCode::OK);
    let mut bytes = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    loop {
        let chunk =
            tokio::time::timeout(Duration::from_secs(30), bytes.next()).await.expect("the stream keeps talking");
        let Some(chunk) = chunk else { return events };
        buffer.push_str(&String::from_utf8_lossy(&chunk.expect("the stream reads")));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let id = frame.lines().find_map(|l| l.strip_prefix("id:")).map(|v| v.trim().parse::<i64>().unwrap());
            let data: Option<Value> =
                frame.lines().find_map(|l| l.strip_prefix("data:")).map(|v| serde_json::from_str(v.trim()).unwrap());
            if let (Some(id), Some(data)) = (id, data) {
                let done = data["to_state"] == until;
                events.push(SseEvent { id, data });
                if done {
                    return events;
                }
            }
        }
    }
}

/// A git repository with one commit on `main`, in a temporary directory.
pub fn git_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir.path())
            .args(args)
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.com")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.com")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    git(&["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(dir.path().join("README.md"), "# Demo\n").unwrap();
    git(&["add", "README.md"]);
    git(&["commit", "--quiet", "-m", "Initial commit"]);
    dir
}
