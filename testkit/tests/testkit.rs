//! Test support behaves as promised: fresh, separate, cleaned-up databases and namespaces.

use aicd_testkit::{TestPostgres, TestRedis, TestSqlite};
use deadpool_redis::redis::AsyncCommands;
use sqlx::{Connection, PgConnection, Row};

const ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn admin_url() -> String {
    std::env::var("AICD_TEST_DATABASE_URL").unwrap_or_else(|_| ADMIN.to_owned())
}

async fn database_exists(name: &str) -> bool {
    let mut conn = PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::query("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get::<i64, _>(0)
        == 1
}

#[tokio::test]
async fn each_test_gets_a_fresh_database_that_is_dropped_afterwards() {
    let a = TestPostgres::new().await;
    let b = TestPostgres::new().await;
    assert_ne!(a.name(), b.name());
    let mut conn = PgConnection::connect(&a.owner_url()).await.unwrap();
    let tables: i64 = sqlx::query("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "a new database is empty");
    conn.close().await.unwrap();
    let name = a.name().to_owned();
    assert!(database_exists(&name).await);
    drop(a);
    assert!(!database_exists(&name).await, "dropped with the guard");
    assert!(database_exists(b.name()).await);
}

#[tokio::test]
async fn an_unreachable_server_fails_the_test_with_instructions() {
    let result = tokio::spawn(TestPostgres::on_server("postgres://postgres@127.0.0.1:1/postgres")).await;
    let panic = result.expect_err("no server, no test database").into_panic();
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("no PostgreSQL answers"), "{message}");
    assert!(message.contains("AICD_TEST_DATABASE_URL"), "{message}");
}

#[tokio::test]
async fn redis_namespaces_are_separate_and_cleaned_up() {
    let a = TestRedis::new().await;
    let b = TestRedis::new().await;
    assert_ne!(a.namespace(), b.namespace());
    let mut conn = a.pool().get().await.unwrap();
    let key = a.key("doorbell");
    assert!(key.starts_with(a.namespace()));
    let _: () = conn.set(&key, "ring").await.unwrap();
    let seen: Option<String> = conn.get(b.key("doorbell")).await.unwrap();
    assert_eq!(seen, None, "b does not see a's keys");
    drop(conn);
    drop(a);
    let mut conn = b.pool().get().await.unwrap();
    let left: Option<String> = conn.get(&key).await.unwrap();
    assert_eq!(left, None, "a's keys are gone with it");
}

#[test]
fn sqlite_files_live_in_their_own_directory() {
    let a = TestSqlite::new();
    let b = TestSqlite::new();
    assert_ne!(a.path(), b.path());
    assert!(!a.path().exists(), "the file is created by whoever opens it");
    let dir = a.dir().to_owned();
    drop(a);
    assert!(!dir.exists());
}
