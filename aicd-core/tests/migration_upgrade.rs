//! Upgrading a database that already holds data: the GitHub trust migration backfills and
//! tightens tables that earlier versions filled, as a schema owner that is not a superuser (row
//! level security is forced on its own tables, as on a managed database).

use std::borrow::Cow;

use aicd_core::store::SqlStore;
use aicd_testkit::TestPostgres;
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection, Row};

/// The first migration this test upgrades across.
const UPGRADE: i64 = 20261201000001;
/// A schema owner with no superuser power (and so subject to forced row-level security).
const OWNER: &str = "aicd_test_owner";

/// The migrations in `dir` before [`UPGRADE`].
async fn before_upgrade(dir: &str) -> Migrator {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(dir);
    let mut migrator = Migrator::new(path).await.unwrap();
    let earlier: Vec<_> = migrator.migrations.iter().filter(|m| m.version < UPGRADE).cloned().collect();
    assert!(!earlier.is_empty() && earlier.len() < migrator.migrations.len());
    migrator.migrations = Cow::Owned(earlier);
    migrator
}

/// A database owned by [`OWNER`]; its URL as that owner.
async fn owned_database(db: &TestPostgres) -> String {
    let mut admin = PgConnection::connect(&db.owner_url()).await.unwrap();
    let setup = format!(
        "SELECT pg_advisory_lock(872302); \
         DO $$ BEGIN \
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{OWNER}') THEN \
             CREATE ROLE {OWNER} LOGIN PASSWORD '{OWNER}' NOSUPERUSER NOBYPASSRLS CREATEROLE; \
           END IF; \
         END $$; \
         SELECT pg_advisory_unlock(872302); \
         ALTER DATABASE \"{}\" OWNER TO {OWNER}; \
         ALTER SCHEMA public OWNER TO {OWNER};",
        db.name()
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(setup)).execute(&mut admin).await.unwrap();
    let _ = admin.close().await;
    // `postgres://<user>@host/...` → `postgres://<owner>:<password>@host/...`
    let url = db.owner_url();
    let (scheme, rest) = url.split_once("://").unwrap();
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{OWNER}:{OWNER}@{host}")
}

#[tokio::test]
async fn postgres_upgrades_with_commands_and_shared_local_paths_as_a_plain_owner() {
    let db = TestPostgres::new().await;
    let owner_url = owned_database(&db).await;
    let mut conn = PgConnection::connect(&owner_url).await.unwrap();
    before_upgrade("postgres").await.run(&mut conn).await.unwrap();

    // What earlier versions allowed: two organizations registering one local path, and a
    // recorded comment command. Written as each organization, as the store did.
    let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let (a_repo, b_repo, a_gh) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    for (org, repos) in [(a, vec![(a_repo, "local"), (a_gh, "github")]), (b, vec![(b_repo, "local")])] {
        sqlx::query("SELECT set_config('app.org_id', $1, false)")
            .bind(org.to_string())
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO orgs (id, name, max_concurrent_jobs, created_at, updated_at) VALUES ($1, 'o', 4, now(), now())")
            .bind(org)
            .execute(&mut conn)
            .await
            .unwrap();
        for (id, kind) in repos {
            let (path, installation, repo_id) =
                if kind == "local" { (Some("/srv/git/shared"), None, None) } else { (None, Some(42_i64), Some(7_i64)) };
            sqlx::query(
                "INSERT INTO repositories (id, org_id, kind, full_name, github_installation_id, github_repo_id, \
                 local_path, default_branch, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'main', clock_timestamp(), clock_timestamp())",
            )
            .bind(id)
            .bind(org)
            .bind(kind)
            .bind(format!("{kind}-{id}"))
            .bind(installation)
            .bind(repo_id)
            .bind(path)
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
    sqlx::query("SELECT set_config('app.org_id', $1, false)").bind(a.to_string()).execute(&mut conn).await.unwrap();
    sqlx::query(
        "INSERT INTO github_commands (org_id, repo_id, issue_number, command, login, comment_id, status, \
         created_at, updated_at) VALUES ($1, $2, 3, 'cancel', 'octocat', 991, 'done', now(), now())",
    )
    .bind(a)
    .bind(a_gh)
    .execute(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;

    SqlStore::migrate_postgres(&owner_url).await.expect("the upgrade applies as a plain owner");

    let mut admin = PgConnection::connect(&db.owner_url()).await.unwrap();
    let paths: Vec<(uuid::Uuid, String)> =
        sqlx::query("SELECT id, local_path FROM repositories WHERE kind = 'local' ORDER BY created_at")
            .fetch_all(&mut admin)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    assert_eq!(paths[0], (a_repo, "/srv/git/shared".to_owned()), "the first registration keeps the path");
    assert_eq!(paths[1], (b_repo, format!("/srv/git/shared#duplicate-{b_repo}")), "a later one no longer opens");
    let command = sqlx::query("SELECT source_key, trigger FROM github_commands").fetch_one(&mut admin).await.unwrap();
    assert_eq!((command.get::<String, _>(0), command.get::<String, _>(1)), ("comment:991".into(), "comment".into()));
    let forced: Vec<bool> = sqlx::query(
        "SELECT relforcerowsecurity FROM pg_class WHERE relname IN ('repositories', 'github_commands') ORDER BY relname",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap()
    .into_iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(forced, [true, true], "row-level security is forced again");
}

#[tokio::test]
async fn sqlite_upgrades_with_shared_local_paths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aicd.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
    before_upgrade("sqlite").await.run(&mut conn).await.unwrap();
    let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let (a_repo, b_repo) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    for (n, (org, repo)) in [(a, a_repo), (b, b_repo)].into_iter().enumerate() {
        let at = format!("2026-11-2{n}T00:00:00Z");
        sqlx::query(
            "INSERT INTO orgs (id, name, max_concurrent_jobs, created_at, updated_at) VALUES (?, 'o', 4, ?, ?)",
        )
        .bind(org)
        .bind(&at)
        .bind(&at)
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO repositories (id, org_id, kind, full_name, local_path, default_branch, created_at, updated_at) \
             VALUES (?, ?, 'local', 'shared', '/srv/git/shared', 'main', ?, ?)",
        )
        .bind(repo)
        .bind(org)
        .bind(&at)
        .bind(&at)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let _ = conn.close().await;

    drop(SqlStore::sqlite(&path).await.expect("the upgrade applies"));

    let mut conn = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
    let kept: String = sqlx::query("SELECT local_path FROM repositories WHERE id = ?")
        .bind(a_repo)
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    let moved: String = sqlx::query("SELECT local_path FROM repositories WHERE id = ?")
        .bind(b_repo)
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, "/srv/git/shared");
    assert!(moved.starts_with("/srv/git/shared#duplicate-"), "{moved}");
}

/// Records a migration of a later release in `_sqlx_migrations`, as that release's `migrate`
/// would have.
const LATER_RELEASE_MIGRATION: &str = "INSERT INTO _sqlx_migrations \
     (version, description, success, checksum, execution_time) \
     VALUES (29991231000001, 'a later release', true, '\\x00', 0)";
/// The same, in SQLite's spelling of a blob.
const LATER_RELEASE_MIGRATION_SQLITE: &str = "INSERT INTO _sqlx_migrations \
     (version, description, success, checksum, execution_time) \
     VALUES (29991231000001, 'a later release', true, x'00', 0)";

#[tokio::test]
async fn after_a_rollback_this_release_migrates_and_opens_a_schema_a_later_release_migrated() {
    // PostgreSQL: migrating again (a no-op) succeeds, and the store opens.
    let db = TestPostgres::new().await;
    SqlStore::migrate_postgres(&db.owner_url()).await.unwrap();
    let mut owner = PgConnection::connect(&db.owner_url()).await.unwrap();
    sqlx::raw_sql(LATER_RELEASE_MIGRATION).execute(&mut owner).await.unwrap();
    SqlStore::migrate_postgres(&db.owner_url()).await.expect("the earlier release still migrates");
    let app = db.app_url("aicd_app").await;
    SqlStore::postgres(&app, Default::default()).await.expect("and opens").ping().await.unwrap();

    // SQLite, which migrates on open.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aicd.db");
    SqlStore::sqlite(&path).await.unwrap().close().await;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    sqlx::raw_sql(LATER_RELEASE_MIGRATION_SQLITE).execute(&mut conn).await.unwrap();
    let _ = conn.close().await;
    SqlStore::sqlite(&path).await.expect("the earlier release still opens").ping().await.unwrap();
}
