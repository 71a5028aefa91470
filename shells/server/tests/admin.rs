//! The server binary's database commands, run as a real process.

use std::process::Command;
use std::sync::Arc;

use aicd_core::store::{PostgresOptions, SqlStore};
use aicd_core::tenancy::{ApiKeySecret, Role};
use aicd_core::{Core, CoreOptions};
use aicd_testkit::{TestPostgres, TestSqlite};

fn server() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aicd-server"));
    for (var, _) in std::env::vars() {
        if (var.starts_with("AICD_") && !var.starts_with("AICD_TEST_")) || var == "DATABASE_URL" || var == "REDIS_URL" {
            cmd.env_remove(var);
        }
    }
    cmd
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the server binary runs");
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn parse(line: &str) -> (String, String) {
    let json: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
    (json["org_id"].as_str().unwrap().to_owned(), json["api_key"].as_str().unwrap().to_owned())
}

async fn assert_key_is_org_admin(core: &Core, org_id: &str, key: &str) {
    let actor = core.authenticate_api_key(&ApiKeySecret::new(key)).await.expect("the printed key works");
    assert_eq!(actor.org_id.to_string(), org_id);
    assert_eq!(actor.role, Role::OrgAdmin);
}

#[tokio::test]
async fn bootstrap_on_the_embedded_database_prints_a_working_admin_key() {
    let data = TestSqlite::new();
    let out = run(server().env("AICD_DATA_DIR", data.dir()).args(["admin", "bootstrap", "--org", "Acme", "--json"]));
    let (org_id, key) = parse(&out);
    assert!(key.starts_with("aicd_"));
    let store = SqlStore::sqlite(data.dir().join("aicd.db")).await.unwrap();
    assert_key_is_org_admin(&Core::new(Arc::new(store), CoreOptions::default()), &org_id, &key).await;
}

#[tokio::test]
async fn migrate_then_bootstrap_on_postgres_as_the_restricted_role() {
    let db = TestPostgres::new().await;
    run(server()
        .args(["migrate"])
        .env("AICD_DATABASE_MIGRATION_URL", db.owner_url())
        .env("DATABASE_URL", db.owner_url()));
    let app_url = db.app_url("aicd_app").await;
    let out = run(server().env("DATABASE_URL", &app_url).args(["admin", "bootstrap", "--org", "Acme", "--json"]));
    let (org_id, key) = parse(&out);
    let store = SqlStore::postgres(&app_url, PostgresOptions::default()).await.unwrap();
    assert_key_is_org_admin(&Core::new(Arc::new(store), CoreOptions::default()), &org_id, &key).await;
}

#[test]
fn bad_configuration_names_the_variable_and_hides_the_secret() {
    let out = server().env("DATABASE_URL", "mysql://u:hunter2@db/x").arg("migrate").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DATABASE_URL must be a postgres:// URL"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn bootstrapping_as_a_superuser_is_refused() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestPostgres::new());
    run(server()
        .args(["migrate"])
        .env("AICD_DATABASE_MIGRATION_URL", db.owner_url())
        .env("DATABASE_URL", db.owner_url()));
    let out = server().env("DATABASE_URL", db.owner_url()).args(["admin", "bootstrap", "--org", "X"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unsafe database configuration"), "{stderr}");
    drop(db);
}

#[test]
fn the_readme_table_and_env_example_list_every_variable() {
    let out = run(server().args(["config", "variables"]));
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme.find("<!-- variables:start -->\n").expect("README has the variables table") + 25;
    let end = readme.find("<!-- variables:end -->").unwrap();
    assert_eq!(
        &readme[start..end],
        out,
        "the README's configuration table is stale: paste `aicd-server config variables` between the markers"
    );
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.env.example")).unwrap();
    for line in out.lines().skip(2) {
        let name = line.split('`').nth(1).unwrap();
        assert!(example.contains(&format!("{name}=")), ".env.example does not mention {name}");
    }
}

#[test]
fn config_check_names_every_problem_and_hides_secrets() {
    let out = server()
        .args(["config", "check"])
        .env("AICD_ENV", "production")
        .env("DATABASE_URL", "postgres://app:hunter2@db/aicd")
        .env("AICD_WORKER_CONCURRENCY", "0")
        .env("AICD_GITHUB_WEBHOOK_SECRET", "changeme")
        .env("AICD_CORS_ORIGINS", "http://app.example.com")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for name in
        ["DATABASE_URL", "REDIS_URL", "AICD_WORKER_CONCURRENCY", "AICD_GITHUB_WEBHOOK_SECRET", "AICD_CORS_ORIGINS"]
    {
        assert!(err.contains(name), "{name} is not named:\n{err}");
    }
    assert!(err.contains("sslmode"), "the TLS rule is explained:\n{err}");
    assert!(!err.contains("hunter2"), "a secret leaked:\n{err}");

    let data = TestSqlite::new();
    let out = run(server().args(["config", "check"]).env("AICD_DATA_DIR", data.dir()).env("DATABASE_URL", ""));
    assert!(out.starts_with("configuration OK (development environment)"), "{out}");
    assert!(out.contains("AICD_LISTEN_ADDR=127.0.0.1:8080"), "{out}");
}
