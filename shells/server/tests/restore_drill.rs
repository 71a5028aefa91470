//! The restore drill, and the refusals of `scripts/backup` and `scripts/restore` (docs/backup.md).
//!
//! The drill fills a database the way a deployment does, through the `aicd-server` binary's API
//! (two organizations, an extra API key, a local repository, jobs that run to PR_OPEN with their
//! events and usage, a cancelled job), records what the API answers, backs the database up with
//! `scripts/backup`, restores it with `scripts/restore` into a fresh database on another
//! PostgreSQL server (a cluster of the test's own, which lacks the application role), and starts
//! a server on the copy. The copy must answer the same, hold the same rows (count and checksum
//! per table), keep row-level security enabled and forced, and keep the application role out of
//! another organization's rows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aicd_core::store::SqlStore;
use aicd_testkit::{PgCluster, TestPostgres};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, Row};

const BACKUP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/backup");
const RESTORE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/restore");

/// Runs a script of `scripts/` with `args` (stdin empty, not a terminal), without the operator's
/// backup settings.
fn script(path: &str, args: &[&str]) -> Output {
    Command::new(path)
        .args(args)
        .env_remove("AICD_BACKUP_DATABASE_URL")
        .env_remove("AICD_BACKUP_DIR")
        .env_remove("AICD_DATABASE_MIGRATION_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {path}: {e}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `scripts/backup` of `url` into `dir`, which must succeed; the backup's path.
fn backup(url: &str, dir: &Path, extra: &[&str]) -> PathBuf {
    let mut args = vec!["--url", url, "--dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = script(BACKUP, &args);
    assert!(out.status.success(), "backup failed: {}", stderr(&out));
    let path = PathBuf::from(stdout(&out).trim());
    assert!(path.is_file(), "the printed path {} is the backup", path.display());
    path
}

/// A running `aicd-server serve`, killed when dropped; its log is printed if the test fails.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
    http: reqwest::Client,
}

impl Server {
    /// Starts `aicd-server` on `database_url` (the application role), local repositories allowed
    /// under `repo_root`, with the embedded worker or without.
    async fn start(database_url: &str, repo_root: &Path, worker: bool, logs: &Path, name: &str) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = logs.join(format!("{name}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_aicd-server"));
        for (var, _) in std::env::vars() {
            if var.starts_with("AICD_") || var == "DATABASE_URL" || var == "REDIS_URL" || var.starts_with("OTEL_") {
                command.env_remove(var);
            }
        }
        let child = command
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("AICD_LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("AICD_EMBEDDED_WORKER", worker.to_string())
            .env("AICD_ALLOW_LOCAL_REPOS", "true")
            .env("AICD_LOCAL_REPO_ROOTS", repo_root)
            .env("AICD_POLL_INTERVAL_MS", "100")
            .env("AICD_SHUTDOWN_GRACE_SECS", "10")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("aicd-server starts");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let mut server = Server { child, base: format!("http://127.0.0.1:{port}"), log, http };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = server.http.get(format!("{}/ready", server.base)).send().await
                && r.status() == 200
            {
                return server;
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("{name} exited ({status}) while starting:\n{}", server.log());
            }
            assert!(Instant::now() < deadline, "{name} was not ready within 30 s:\n{}", server.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn call(&self, method: reqwest::Method, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// GET, which must answer 200.
    async fn get(&self, path: &str, key: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, path, key, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// POST, which must answer `expected`.
    async fn post(&self, path: &str, key: &str, body: Value, expected: u16) -> Value {
        let (status, body) = self.call(reqwest::Method::POST, path, key, Some(body)).await;
        assert_eq!(status, expected, "POST {path}: {body}");
        body
    }

    /// Polls a job until it is in `state`, within 60 s.
    async fn wait_for_state(&self, org: &str, job: &str, key: &str, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let current = self.get(&format!("/v1/orgs/{org}/jobs/{job}"), key).await;
            if current["state"] == state {
                return;
            }
            assert_ne!(current["state"], "failed", "the job failed: {current}\n{}", self.log());
            assert!(Instant::now() < deadline, "the job is not {state} after 60 s: {current}\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, and a clean exit within 30 s.
    async fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "the server exited with {status}:\n{}", self.log());
                return;
            }
            assert!(Instant::now() < deadline, "the server did not stop within 30 s:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- {} ---\n{}", self.log.display(), self.log());
        }
    }
}

/// `aicd-server admin bootstrap --org NAME --json` on `database_url`: (org id, admin key).
fn bootstrap(database_url: &str, name: &str) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_aicd-server"))
        .args(["admin", "bootstrap", "--org", name, "--json"])
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "bootstrap failed: {}", stderr(&out));
    let printed: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    (printed["org_id"].as_str().unwrap().to_owned(), printed["api_key"].as_str().unwrap().to_owned())
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A git repository with one commit on `main` at `dir`.
fn git_repo(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(dir.join("README.md"), "# Demo\n").unwrap();
    git(dir, &["add", "README.md"]);
    git(dir, &["commit", "--quiet", "-m", "Initial commit"]);
}

/// An issue the scripted agent resolves by writing `file`.
fn issue(number: u64, file: &str) -> Value {
    let body = format!("Please add {file}.\n\n```aicd:write {file}\nHello from issue {number}!\n```\n");
    json!({"title": format!("Add {file}"), "body": body, "number": number})
}

/// What an organization's API answers, by path, without what changes by itself (`last_used_at`
/// of API keys, recorded in the background as keys are used).
async fn answers(
    server: &Server,
    org: &str,
    key: &str,
    jobs: &[String],
    with_diff: &[String],
) -> BTreeMap<String, Value> {
    let mut paths = vec![
        "/v1/me".to_owned(),
        "/v1/orgs".to_owned(),
        format!("/v1/orgs/{org}"),
        format!("/v1/orgs/{org}/api-keys"),
        format!("/v1/orgs/{org}/repos"),
        format!("/v1/orgs/{org}/jobs"),
        format!("/v1/orgs/{org}/usage?{}", usage_window()),
    ];
    for job in jobs {
        paths.push(format!("/v1/orgs/{org}/jobs/{job}"));
        paths.push(format!("/v1/orgs/{org}/jobs/{job}/events?limit=500"));
    }
    for job in with_diff {
        paths.push(format!("/v1/orgs/{org}/jobs/{job}/diff"));
    }
    let mut answers = BTreeMap::new();
    for path in paths {
        let mut body = server.get(&path, key).await;
        strip_volatile(&mut body);
        answers.insert(path, body);
    }
    answers
}

/// A fixed usage period around today (a report's default ends now), at most a year long.
fn usage_window() -> &'static str {
    static WINDOW: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    WINDOW.get_or_init(|| {
        let today = chrono::Utc::now().date_naive();
        format!("from={}&to={}", today - chrono::Days::new(30), today + chrono::Days::new(2))
    })
}

fn strip_volatile(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("last_used_at");
            map.values_mut().for_each(strip_volatile);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_volatile),
        _ => {}
    }
}

/// Every table of `public` with its row count and a checksum of its rows, read as the
/// superuser (row-level security does not apply).
async fn fingerprints(owner_url: &str) -> BTreeMap<String, (i64, String)> {
    let mut conn = PgConnection::connect(owner_url).await.unwrap();
    let tables: Vec<String> =
        sqlx::query("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.get(0))
            .collect();
    let mut prints = BTreeMap::new();
    for table in tables {
        let sql = format!(
            "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM public.\"{table}\" t"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_one(&mut conn).await.unwrap();
        prints.insert(table, (row.get(0), row.get(1)));
    }
    let _ = conn.close().await;
    prints
}

/// Each table's (row security enabled, forced).
async fn row_security(owner_url: &str) -> BTreeMap<String, (bool, bool)> {
    let mut conn = PgConnection::connect(owner_url).await.unwrap();
    let rows = sqlx::query(
        "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    rows.into_iter().map(|r| (r.get(0), (r.get(1), r.get(2)))).collect()
}

/// The tables with an `org_id` column: the tenant tables.
async fn tenant_tables(owner_url: &str) -> Vec<String> {
    let mut conn = PgConnection::connect(owner_url).await.unwrap();
    let rows = sqlx::query(
        "SELECT c.relname::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attname = 'org_id' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    rows.into_iter().map(|r| r.get(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_a_new_server_with_the_same_answers_rows_and_isolation() {
    aicd_runtime::telemetry::install_crypto_provider();
    let work = tempfile::tempdir().unwrap();
    let logs = work.path().join("logs");
    let roots = work.path().join("repos").join("acme");
    std::fs::create_dir_all(&logs).unwrap();
    git_repo(&roots.join("demo"));
    let roots = roots.canonicalize().unwrap();
    let globex_root = roots.parent().unwrap().join("globex");
    git_repo(&globex_root.join("site"));
    let repo_root = roots.parent().unwrap().canonicalize().unwrap();

    // 1. The source: migrated, two organizations.
    let source = TestPostgres::new().await;
    SqlStore::migrate_postgres(&source.owner_url()).await.expect("migrations apply");
    let source_app = source.app_url("aicd_app").await;
    let (acme, acme_admin) = bootstrap(&source_app, "Acme");
    let (globex, globex_admin) = bootstrap(&source_app, "Globex");

    // 2. Without a worker: an extra key, the repositories, a job cancelled while queued, and
    //    the jobs to run.
    let server = Server::start(&source_app, &repo_root, false, &logs, "source-api").await;
    let ci = server
        .post(&format!("/v1/orgs/{acme}/api-keys"), &acme_admin, json!({"name": "ci", "role": "developer"}), 201)
        .await;
    let ci_key = ci["secret"].as_str().unwrap().to_owned();
    let repo = server
        .post(
            &format!("/v1/orgs/{acme}/repos"),
            &acme_admin,
            json!({"full_name": "acme/demo", "source": {"kind": "local", "path": roots.join("demo")}}),
            201,
        )
        .await;
    let globex_repo = server
        .post(
            &format!("/v1/orgs/{globex}/repos"),
            &globex_admin,
            json!({"full_name": "globex/site", "source": {"kind": "local", "path": globex_root.join("site")}}),
            201,
        )
        .await;
    let new_job = |repo: &Value, number, file| json!({"repo_id": repo["id"], "issue": issue(number, file)});
    let jobs_path = format!("/v1/orgs/{acme}/jobs");
    let cancelled = server.post(&jobs_path, &ci_key, new_job(&repo, 3, "never.txt"), 201).await;
    let cancelled = cancelled["id"].as_str().unwrap().to_owned();
    let answer = server.post(&format!("{jobs_path}/{cancelled}/cancel"), &ci_key, json!({}), 200).await;
    assert_eq!(answer["state"], "cancelled", "{answer}");
    let mut opened = Vec::new();
    for (number, file) in [(1, "docs/one.txt"), (2, "docs/two.txt")] {
        let job = server.post(&jobs_path, &ci_key, new_job(&repo, number, file), 201).await;
        opened.push(job["id"].as_str().unwrap().to_owned());
    }
    let globex_job =
        server.post(&format!("/v1/orgs/{globex}/jobs"), &globex_admin, new_job(&globex_repo, 1, "x.txt"), 201).await;
    let globex_job = globex_job["id"].as_str().unwrap().to_owned();
    server.stop().await;

    // 3. With the embedded worker: the jobs run to PR_OPEN, with their events and usage.
    let server = Server::start(&source_app, &repo_root, true, &logs, "source-worker").await;
    for job in &opened {
        server.wait_for_state(&acme, job, &ci_key, "pr_open").await;
    }
    server.wait_for_state(&globex, &globex_job, &globex_admin, "pr_open").await;
    let mut acme_jobs = opened.clone();
    acme_jobs.push(cancelled.clone());
    let before = answers(&server, &acme, &acme_admin, &acme_jobs, &opened).await;
    let globex_before = answers(&server, &globex, &globex_admin, std::slice::from_ref(&globex_job), &[]).await;
    let usage = &before[&format!("/v1/orgs/{acme}/usage?{}", usage_window())];
    assert!(usage["totals"]["calls"].as_u64() > Some(0), "usage was recorded: {usage}");
    server.stop().await;
    let source_prints = fingerprints(&source.owner_url()).await;
    for table in ["orgs", "api_keys", "repositories", "jobs", "job_events", "usage_records", "_sqlx_migrations"] {
        assert!(source_prints[table].0 > 0, "the source has {table} rows: {source_prints:?}");
    }
    let source_security = row_security(&source.owner_url()).await;

    // 4. Back up, and restore on another server, which has no application role yet.
    let dumps = work.path().join("backups");
    let dump = backup(&source.owner_url(), &dumps, &[]);
    assert!(PathBuf::from(format!("{}.sha256", dump.display())).is_file(), "a checksum beside the backup");
    let cluster = PgCluster::start();
    let target = TestPostgres::on_server(&cluster.url()).await;
    let out = script(RESTORE, &[dump.to_str().unwrap(), "--target-url", &target.owner_url(), "--yes"]);
    assert!(out.status.success(), "restore failed: {}\n{}", stdout(&out), stderr(&out));
    let report = stdout(&out);
    let jobs_line = format!("jobs {}", source_prints["jobs"].0);
    assert!(report.lines().any(|l| l == jobs_line), "row counts are printed: {report}");
    assert!(stderr(&out).contains("creating the application role aicd_app"), "{}", stderr(&out));

    // 5. The same rows, the same row-level security, on every tenant table.
    assert_eq!(fingerprints(&target.owner_url()).await, source_prints, "rows differ after the restore");
    let restored_security = row_security(&target.owner_url()).await;
    assert_eq!(restored_security, source_security);
    let tenants = tenant_tables(&target.owner_url()).await;
    assert!(tenants.len() >= 9, "{tenants:?}");
    for table in &tenants {
        assert_eq!(restored_security[table], (true, true), "row-level security enabled and forced on {table}");
    }

    // 6. The application role sees one organization's rows at a time, and none unscoped.
    let target_app = target.app_url("aicd_app").await;
    let mut app = PgConnection::connect(&target_app).await.unwrap();
    for table in &tenants {
        let column = if table == "orgs" { "id" } else { "org_id" };
        let unscoped = format!("SELECT count(*) FROM \"{table}\"");
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(unscoped)).fetch_one(&mut app).await.unwrap();
        assert_eq!(count, 0, "{table}: rows visible with no organization set");
        let mut tx = app.begin().await.unwrap();
        sqlx::query("SELECT set_config('app.org_id', $1, true)").bind(&acme).execute(&mut *tx).await.unwrap();
        let others = format!("SELECT count(*) FROM \"{table}\" WHERE {column} <> '{acme}'::uuid");
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(others)).fetch_one(&mut *tx).await.unwrap();
        assert_eq!(count, 0, "{table}: Acme's scope sees another organization's rows");
        tx.rollback().await.unwrap();
    }
    let mut tx = app.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.org_id', $1, true)").bind(&acme).execute(&mut *tx).await.unwrap();
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs").fetch_one(&mut *tx).await.unwrap();
    assert_eq!(visible, 3, "Acme's own jobs are visible");
    tx.rollback().await.unwrap();
    let _ = app.close().await;

    // 7. A server on the copy answers as the original did (it also checks the role and RLS as it
    //    starts).
    let server = Server::start(&target_app, &repo_root, false, &logs, "restored").await;
    let after = answers(&server, &acme, &acme_admin, &acme_jobs, &opened).await;
    for (path, answer) in &before {
        assert_eq!(&after[path], answer, "GET {path} answers differently after the restore");
    }
    assert_eq!(answers(&server, &globex, &globex_admin, std::slice::from_ref(&globex_job), &[]).await, globex_before);
    let (status, _) =
        server.call(reqwest::Method::GET, &format!("/v1/orgs/{globex}/jobs/{globex_job}"), &ci_key, None).await;
    assert_eq!(status, 404, "Acme's key cannot read Globex's job on the copy");
    server.stop().await;
}

/// A migrated database with one organization, backed up: (database, backup, backups' directory).
async fn small_backup() -> (TestPostgres, PathBuf, tempfile::TempDir) {
    let db = TestPostgres::new().await;
    SqlStore::migrate_postgres(&db.owner_url()).await.expect("migrations apply");
    bootstrap(&db.app_url("aicd_app").await, "Acme");
    let dir = tempfile::tempdir().unwrap();
    let dump = backup(&db.owner_url(), dir.path(), &[]);
    (db, dump, dir)
}

async fn table_count(url: &str) -> i64 {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let count = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    count
}

/// Drops a database the restore created (not one of the test kit's), also when a test fails.
struct CreatedDatabase {
    server: String,
    name: String,
}

impl Drop for CreatedDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-X", "-q", "-d", &self.server, "-c"])
            .arg(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
            .output();
    }
}

#[tokio::test]
async fn restore_creates_a_missing_database_and_refuses_a_live_one_without_force() {
    let (source, dump, _dir) = small_backup().await;
    let dump = dump.to_str().unwrap();
    let created = CreatedDatabase {
        server: source.owner_url().replace(&format!("/{}", source.name()), "/postgres"),
        name: format!("{}_restored", source.name()),
    };
    let target = source.owner_url().replace(source.name(), &created.name);

    let out = script(RESTORE, &[dump, "--target-url", &target, "--yes"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("into a new database"), "{}", stderr(&out));
    assert_eq!(fingerprints(&target).await, fingerprints(&source.owner_url()).await);

    let out = script(RESTORE, &[dump, "--target-url", &target, "--yes"]);
    assert_eq!(out.status.code(), Some(1), "a live database is refused: {}", stderr(&out));
    assert!(stderr(&out).contains("tables in public") && stderr(&out).contains("--force"), "{}", stderr(&out));

    // Something written after the backup is gone once it is restored over with --force.
    let mut conn = PgConnection::connect(&target).await.unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)")
        .execute(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    let out = script(RESTORE, &[dump, "--target-url", &target, "--yes", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fingerprints(&target).await, fingerprints(&source.owner_url()).await);
}

#[tokio::test]
async fn restore_refuses_without_yes_when_stdin_is_not_a_terminal() {
    let (_source, dump, _dir) = small_backup().await;
    let target = TestPostgres::new().await;
    let out = script(RESTORE, &[dump.to_str().unwrap(), "--target-url", &target.owner_url()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("stdin is not a terminal (pass --yes)"), "{}", stderr(&out));
    assert_eq!(table_count(&target.owner_url()).await, 0, "nothing was restored");
}

#[tokio::test]
async fn a_damaged_backup_is_refused() {
    let (_source, dump, _dir) = small_backup().await;
    let mut bytes = std::fs::read(&dump).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&dump, bytes).unwrap();
    let target = TestPostgres::new().await;
    let out = script(RESTORE, &[dump.to_str().unwrap(), "--target-url", &target.owner_url(), "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not match its checksum"), "{}", stderr(&out));
    assert_eq!(table_count(&target.owner_url()).await, 0, "nothing was restored");
}

#[tokio::test]
async fn backups_beyond_keep_are_deleted_oldest_first_and_a_failed_upload_fails() {
    let db = TestPostgres::new().await;
    SqlStore::migrate_postgres(&db.owner_url()).await.expect("migrations apply");
    // A password the server does not ask for (trust), which must never be printed.
    let url = db.owner_url().replacen("postgres@", "postgres:hunter2-secret@", 1);
    let dir = tempfile::tempdir().unwrap();
    let made: Vec<PathBuf> = (0..3).map(|_| backup(&url, dir.path(), &["--keep", "2"])).collect();
    let mut left: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    let name = |p: &PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
    let expected =
        [name(&made[1]), format!("{}.sha256", name(&made[1])), name(&made[2]), format!("{}.sha256", name(&made[2]))];
    assert_eq!(left, expected, "the two newest backups and their checksums stay");

    let out = script(BACKUP, &["--url", &url, "--dir", dir.path().to_str().unwrap(), "--upload", "exit 3"]);
    assert_eq!(out.status.code(), Some(1), "a failed upload fails the backup: {}", stderr(&out));
    assert!(stderr(&out).contains("the upload failed"), "{}", stderr(&out));
    let copy = dir.path().join("uploaded.dump");
    let upload = format!("cp \"$1\" {}", copy.display());
    let out = script(BACKUP, &["--url", &url, "--dir", dir.path().to_str().unwrap(), "--upload", &upload]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(stdout(&out).trim()).unwrap(), "the backup was uploaded");
    let unreachable = "postgres://postgres:hunter2-secret@127.0.0.1:1/aicd";
    for out in [&out, &script(BACKUP, &["--url", unreachable, "--dir", dir.path().to_str().unwrap()])] {
        assert!(!format!("{}{}", stdout(out), stderr(out)).contains("hunter2"), "the password was printed");
    }
}
