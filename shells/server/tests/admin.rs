//! The server binary's database commands, run as a real process.

use std::process::Command;
use std::sync::Arc;

use aicd_core::store::{PostgresOptions, SqlStore};
use aicd_core::tenancy::{ApiKeySecret, Role};
use aicd_core::{Core, CoreOptions};
use aicd_testkit::{TestPostgres, TestSqlite};

fn server() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aicd-server"));
    for var in ["DATABASE_URL", "AICD_DATABASE_MIGRATION_URL", "AICD_DATA_DIR"] {
        cmd.env_remove(var);
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
