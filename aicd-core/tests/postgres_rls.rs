//! The second wall: PostgreSQL row-level security, proven with raw SQL run as the restricted
//! application role, and the store's refusal to start without it.

#[path = "support/mod.rs"]
mod support;

use aicd_core::Error;
use aicd_core::github::{CommandKind, CommandSource, NewCommand};
use aicd_core::github::{GithubRepoId, InstallationId};
use aicd_core::jobs::{IssueRef, NewJob, Trigger};
use aicd_core::repos::{NewRepo, RepoSource};
use aicd_core::store::{BillingStore, GithubStore, JobStore, PostgresOptions, RepoStore, SqlStore, TenancyStore};
use aicd_core::tenancy::{NewApiKey, Role};
use aicd_core::{JobId, OrgId};
use sqlx::{Connection, PgConnection, Row};

const TENANT_TABLES: [&str; 12] = [
    "orgs",
    "memberships",
    "repositories",
    "api_keys",
    "jobs",
    "job_events",
    "usage_records",
    "github_installations",
    "github_commands",
    "github_install_states",
    "billing_accounts",
    "billing_outbox",
];

/// Tables with an org id whose rows only the system scope sees (not tenant data: a provider's
/// event arrives before its organization is known).
const SYSTEM_TABLES: [&str; 1] = ["stripe_events"];

struct Fixture {
    harness: support::Harness,
    app_url: String,
    a: OrgId,
    b: OrgId,
    b_job: JobId,
    b_repo: aicd_core::RepoId,
}

async fn fixture() -> Fixture {
    let harness = support::postgres().await;
    let db = harness.postgres.as_ref().unwrap();
    let app_url = db.app_url("aicd_app").await;
    let mut ids = Vec::new();
    for (name, installation) in [("A", 101), ("B", 102)] {
        let (org, _, admin) = harness.org_with_admin(name).await;
        let installation = InstallationId::new(installation).unwrap();
        harness.store.link_installation(org.id, installation, Some(name.to_lowercase()), "operator").await.unwrap();
        let later = chrono::Utc::now() + chrono::Duration::minutes(5);
        harness.core.start_github_install(&admin, org.id, vec![installation.get() as u8; 32], later).await.unwrap();
        let repo = harness
            .store
            .create_repo(
                org.id,
                NewRepo {
                    full_name: format!("{name}/repo"),
                    source: RepoSource::Github {
                        installation_id: installation,
                        repo_id: GithubRepoId::new(2).unwrap(),
                    },
                    default_branch: None,
                    settings: None,
                },
            )
            .await
            .unwrap();
        let issue = IssueRef { number: Some(1), title: "t".into(), body: String::new(), url: None, author: None };
        let job = NewJob { repo_id: repo.id, issue, trigger: Trigger::Api, max_tokens: None, max_cost_micros: None };
        let job = harness.store.create_job(org.id, job, "test").await.unwrap();
        // A billing account, so that the usage below is metered into the outbox.
        let customer = format!("cus_{name}");
        harness.store.open_billing_account(org.id, aicd_core::billing::PricingMode::Tokens).await.unwrap();
        harness.store.set_billing_customer(org.id, &customer).await.unwrap();
        let paid = aicd_core::billing::AccountChange::PaymentSucceeded;
        harness
            .store
            .apply_billing_event(&format!("evt_{name}"), "invoice.paid", chrono::Utc::now(), &customer, paid)
            .await
            .unwrap();
        let usage = aicd_core::store::NewUsage {
            id: None,
            job_id: Some(job.id),
            step: "planning".into(),
            model: "m".into(),
            input_tokens: 1,
            output_tokens: 1,
            cost_micros: 1,
        };
        harness.store.record_usage(org.id, usage).await.unwrap();
        let command = NewCommand {
            repo_id: repo.id,
            issue_number: 1,
            command: CommandKind::Cancel,
            source: CommandSource::Comment { comment_id: 1 },
            login: "octocat".into(),
            author_login: None,
            issue: None,
        };
        harness.store.enqueue_command(org.id, command).await.unwrap();
        let key = NewApiKey { name: "k".into(), role: Role::Viewer, expires_at: None };
        harness.core.create_api_key(&admin, org.id, key).await.unwrap();
        ids.push((org.id, repo.id, job.id));
    }
    Fixture { app_url, a: ids[0].0, b: ids[1].0, b_repo: ids[1].1, b_job: ids[1].2, harness }
}

async fn app_connection(f: &Fixture) -> PgConnection {
    PgConnection::connect(&f.app_url).await.expect("the application role can log in")
}

async fn count(conn: &mut PgConnection, table: &str) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("count {table}: {e}"))
        .get(0)
}

async fn set_org(conn: &mut PgConnection, org: OrgId) {
    sqlx::query("SELECT set_config('app.org_id', $1, true)").bind(org.to_string()).execute(&mut *conn).await.unwrap();
}

#[tokio::test]
async fn rls_is_enabled_and_forced_on_every_table_with_an_org_id() {
    let f = fixture().await;
    let mut owner = PgConnection::connect(&f.harness.postgres.as_ref().unwrap().owner_url()).await.unwrap();
    let rows = sqlx::query(
        "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r' \
         AND (c.relname = 'orgs' OR EXISTS (SELECT 1 FROM information_schema.columns i \
              WHERE i.table_schema = 'public' AND i.table_name = c.relname AND i.column_name = 'org_id'))",
    )
    .fetch_all(&mut owner)
    .await
    .unwrap();
    let mut names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    names.sort();
    let mut expected: Vec<String> = TENANT_TABLES.iter().chain(&SYSTEM_TABLES).map(|t| t.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected);
    for row in rows {
        let (name, enabled, forced): (String, bool, bool) = (row.get(0), row.get(1), row.get(2));
        assert!(enabled && forced, "{name}: enabled={enabled} forced={forced}");
    }
}

#[tokio::test]
async fn the_application_role_owns_nothing_and_cannot_bypass_rls() {
    let f = fixture().await;
    let mut conn = app_connection(&f).await;
    let row = sqlx::query(
        "SELECT rolsuper, rolbypassrls, \
         (SELECT count(*) FROM pg_tables WHERE tableowner = current_user) FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(!row.get::<bool, _>(0), "not a superuser");
    assert!(!row.get::<bool, _>(1), "no BYPASSRLS");
    assert_eq!(row.get::<i64, _>(2), 0, "owns no table");
}

#[tokio::test]
async fn with_no_org_set_nothing_is_visible() {
    let f = fixture().await;
    let mut conn = app_connection(&f).await;
    for table in TENANT_TABLES.iter().chain(&SYSTEM_TABLES) {
        assert_eq!(count(&mut conn, table).await, 0, "{table}");
    }
}

#[tokio::test]
async fn raw_sql_as_the_application_role_sees_only_the_current_org() {
    let f = fixture().await;
    let mut conn = app_connection(&f).await;
    let mut tx = conn.begin().await.unwrap();
    set_org(&mut tx, f.a).await;
    for table in TENANT_TABLES {
        let total = count(&mut tx, table).await;
        let column = if table == "orgs" { "id" } else { "org_id" };
        let own: i64 = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table} WHERE {column} = $1")))
            .bind(f.a.as_uuid())
            .fetch_one(&mut *tx)
            .await
            .unwrap()
            .get(0);
        assert!(total > 0, "{table} shows org A's rows");
        assert_eq!(total, own, "{table} shows only org A's rows");
    }
    for table in SYSTEM_TABLES {
        assert_eq!(count(&mut tx, table).await, 0, "{table} is not visible in an org's scope");
    }
    // B's rows can be neither read, changed nor deleted, even by id.
    let seen =
        sqlx::query("SELECT id FROM jobs WHERE id = $1").bind(f.b_job.as_uuid()).fetch_all(&mut *tx).await.unwrap();
    assert!(seen.is_empty());
    let updated = sqlx::query("UPDATE jobs SET issue_title = 'pwned' WHERE id = $1")
        .bind(f.b_job.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 0);
    let deleted =
        sqlx::query("DELETE FROM repositories WHERE id = $1").bind(f.b_repo.as_uuid()).execute(&mut *tx).await.unwrap();
    assert_eq!(deleted.rows_affected(), 0);
    let orgs = sqlx::query("UPDATE orgs SET name = 'pwned' WHERE id = $1")
        .bind(f.b.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(orgs.rows_affected(), 0);
    tx.commit().await.unwrap();

    let b_job = f.harness.store.get_job(f.b, f.b_job).await.unwrap();
    assert_eq!(b_job.issue.title, "t");
    assert_eq!(f.harness.store.get_org(f.b).await.unwrap().name, "B");
}

#[tokio::test]
async fn cross_org_inserts_fail() {
    let f = fixture().await;
    let mut conn = app_connection(&f).await;
    let attempts = [
        (
            "repositories",
            "INSERT INTO repositories (id, org_id, kind, full_name, github_installation_id, github_repo_id, \
          default_branch, created_at, updated_at) VALUES (gen_random_uuid(), $1, 'github', 'x/y', 1, 2, 'main', now(), now())",
        ),
        (
            "job_events",
            "INSERT INTO job_events (org_id, job_id, at, actor, kind, message) \
          SELECT $1, id, now(), 'x', 'note', 'x' FROM jobs LIMIT 1",
        ),
        (
            "memberships",
            "INSERT INTO memberships (org_id, user_id, role, created_at) \
          SELECT $1, id, 'org_admin', now() FROM users LIMIT 1",
        ),
        (
            "orgs",
            "INSERT INTO orgs (id, name, max_concurrent_jobs, created_at, updated_at) VALUES ($1, 'x', 1, now(), now())",
        ),
        (
            "github_installations",
            "INSERT INTO github_installations (installation_id, org_id, created_at, updated_at) \
          VALUES (999, $1, now(), now())",
        ),
        (
            "github_commands",
            "INSERT INTO github_commands (org_id, repo_id, issue_number, command, source_key, login, comment_id, status, \
          created_at, updated_at) SELECT $1, id, 1, 'cancel', 'comment:99', 'x', 99, 'pending', now(), now() \
          FROM repositories LIMIT 1",
        ),
        (
            "github_install_states",
            "INSERT INTO github_install_states (nonce_hash, org_id, created_by, created_at, expires_at) \
          VALUES ('\\x00', $1, 'user:x', now(), now())",
        ),
    ];
    for (table, sql) in attempts {
        let mut tx = conn.begin().await.unwrap();
        set_org(&mut tx, f.a).await;
        let other = if table == "orgs" { OrgId::new() } else { f.b };
        let result = sqlx::query(sql).bind(other.as_uuid()).execute(&mut *tx).await;
        let err = result.expect_err(&format!("a row for another org in {table} must be refused"));
        assert!(err.to_string().contains("row-level security"), "{table}: {err}");
    }
}

#[tokio::test]
async fn the_system_scope_reads_installations_and_claims_commands_only() {
    let f = fixture().await;
    let mut conn = app_connection(&f).await;
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.scope', 'system', true)").execute(&mut *tx).await.unwrap();
    // A webhook finds any org's installation, and a worker any org's pending command.
    assert_eq!(count(&mut tx, "github_installations").await, 2);
    assert_eq!(count(&mut tx, "github_commands").await, 2);
    let claimed = sqlx::query("UPDATE github_commands SET lease_owner = 'w' WHERE status = 'pending'")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(claimed.rows_affected(), 2, "commands are claimed across orgs");
    // Installations are only read: writing them happens in their org's scope.
    let suspended = sqlx::query("UPDATE github_installations SET suspended = true").execute(&mut *tx).await.unwrap();
    assert_eq!(suspended.rows_affected(), 0);
    let deleted = sqlx::query("DELETE FROM github_installations").execute(&mut *tx).await.unwrap();
    assert_eq!(deleted.rows_affected(), 0);
    let deleted = sqlx::query("DELETE FROM github_commands").execute(&mut *tx).await.unwrap();
    assert_eq!(deleted.rows_affected(), 0);
    // Nor does the system scope see any other tenant table it has no policy for.
    for table in ["memberships", "repositories", "api_keys", "job_events", "usage_records"] {
        assert_eq!(count(&mut tx, table).await, 0, "{table}");
    }
    tx.rollback().await.unwrap();

    for (table, sql) in [
        (
            "github_installations",
            "INSERT INTO github_installations (installation_id, org_id, created_at, updated_at) \
             VALUES (999, $1, now(), now())",
        ),
        (
            "github_commands",
            "INSERT INTO github_commands (org_id, repo_id, issue_number, command, login, comment_id, status, \
             created_at, updated_at) VALUES ($1, $2, 1, 'cancel', 'x', 99, 'pending', now(), now())",
        ),
    ] {
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT set_config('app.scope', 'system', true)").execute(&mut *tx).await.unwrap();
        let result = sqlx::query(sql).bind(f.b.as_uuid()).bind(f.b_repo.as_uuid()).execute(&mut *tx).await;
        let err = result.expect_err(&format!("the system scope must not insert into {table}"));
        assert!(err.to_string().contains("row-level security"), "{table}: {err}");
    }

    // In org A's scope, B's installation is invisible even by id, and cannot be taken over.
    let mut tx = conn.begin().await.unwrap();
    set_org(&mut tx, f.a).await;
    let seen = sqlx::query("SELECT org_id FROM github_installations WHERE installation_id = 102")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert!(seen.is_empty());
    let moved = sqlx::query("UPDATE github_installations SET org_id = $1 WHERE installation_id = 102")
        .bind(f.a.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(moved.rows_affected(), 0);
    let moved = sqlx::query("UPDATE github_installations SET org_id = $1 WHERE installation_id = 101")
        .bind(f.b.as_uuid())
        .execute(&mut *tx)
        .await;
    let err = moved.expect_err("moving A's installation to B must be refused");
    assert!(err.to_string().contains("row-level security"), "{err}");
}

#[tokio::test]
async fn an_api_key_lookup_sees_only_keys_with_the_presented_prefix() {
    let f = fixture().await;
    let keys_a = f.harness.store.list_api_keys(f.a).await.unwrap();
    let prefix = keys_a[0].prefix.strip_prefix("aicd_").unwrap().to_owned();
    let mut conn = app_connection(&f).await;
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('app.key_prefix', $1, true)").bind(&prefix).execute(&mut *tx).await.unwrap();
    let rows = sqlx::query("SELECT org_id FROM api_keys").fetch_all(&mut *tx).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<uuid::Uuid, _>(0), f.a.as_uuid());
    assert_eq!(count(&mut tx, "jobs").await, 0, "a key lookup sees no other tenant data");
}

#[tokio::test]
async fn the_store_refuses_to_start_unless_rls_is_forced() {
    let f = fixture().await;
    let db = f.harness.postgres.as_ref().unwrap();
    let mut owner = PgConnection::connect(&db.owner_url()).await.unwrap();
    sqlx::query("ALTER TABLE jobs NO FORCE ROW LEVEL SECURITY").execute(&mut owner).await.unwrap();
    let err = SqlStore::postgres(&f.app_url, PostgresOptions::default()).await.unwrap_err();
    assert!(matches!(&err, Error::UnsafeDatabase(m) if m.contains("not forced on jobs")), "{err}");

    sqlx::query("ALTER TABLE jobs FORCE ROW LEVEL SECURITY").execute(&mut owner).await.unwrap();
    sqlx::query("ALTER TABLE usage_records DISABLE ROW LEVEL SECURITY").execute(&mut owner).await.unwrap();
    let err = SqlStore::postgres(&f.app_url, PostgresOptions::default()).await.unwrap_err();
    assert!(matches!(&err, Error::UnsafeDatabase(m) if m.contains("not enabled on usage_records")), "{err}");

    // A new tenant table without RLS is caught too.
    sqlx::query("ALTER TABLE usage_records ENABLE ROW LEVEL SECURITY").execute(&mut owner).await.unwrap();
    sqlx::query("CREATE TABLE notes (id int, org_id uuid)").execute(&mut owner).await.unwrap();
    let err = SqlStore::postgres(&f.app_url, PostgresOptions::default()).await.unwrap_err();
    assert!(matches!(&err, Error::UnsafeDatabase(m) if m.contains("notes")), "{err}");
    sqlx::query("DROP TABLE notes").execute(&mut owner).await.unwrap();
    SqlStore::postgres(&f.app_url, PostgresOptions::default()).await.expect("safe again");
}

#[tokio::test]
async fn the_store_refuses_to_run_as_a_superuser_or_table_owner() {
    let f = fixture().await;
    let owner_url = f.harness.postgres.as_ref().unwrap().owner_url();
    let err = SqlStore::postgres(&owner_url, PostgresOptions::default()).await.unwrap_err();
    assert!(matches!(&err, Error::UnsafeDatabase(m) if m.contains("superuser") && m.contains("owns tables")), "{err}");
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let f = fixture().await;
    let owner_url = f.harness.postgres.as_ref().unwrap().owner_url();
    SqlStore::migrate_postgres(&owner_url).await.expect("a second run is a no-op");
    assert_eq!(f.harness.store.list_repos(f.a).await.unwrap().len(), 1);
}
