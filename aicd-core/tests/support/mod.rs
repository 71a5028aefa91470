//! A store per test: a fresh PostgreSQL database (migrated as the owner, used as the restricted
//! application role) or a fresh SQLite file.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use aicd_core::forge::LocalRoots;
use aicd_core::store::{PostgresOptions, SqlStore};
use aicd_core::tenancy::{Actor, NewOrg, NewUser, Org, Role};
use aicd_core::{Core, CoreOptions, UserId};
use aicd_testkit::{TestPostgres, TestSqlite};

pub struct Harness {
    pub store: Arc<SqlStore>,
    pub core: Core,
    pub postgres: Option<TestPostgres>,
    _sqlite: Option<TestSqlite>,
    /// The one directory local repositories may be registered under.
    pub repos: tempfile::TempDir,
}

pub async fn postgres() -> Harness {
    let db = TestPostgres::new().await;
    SqlStore::migrate_postgres(&db.owner_url()).await.expect("migrations apply");
    let app_url = db.app_url("aicd_app").await;
    let store = Arc::new(SqlStore::postgres(&app_url, PostgresOptions::default()).await.expect("store opens"));
    let repos = tempfile::tempdir().expect("a directory for repositories");
    Harness { core: core(&store, repos.path()), store, postgres: Some(db), _sqlite: None, repos }
}

pub async fn sqlite() -> Harness {
    let db = TestSqlite::new();
    let store = Arc::new(SqlStore::sqlite(db.path()).await.expect("store opens"));
    let repos = tempfile::tempdir().expect("a directory for repositories");
    Harness { core: core(&store, repos.path()), store, postgres: None, _sqlite: Some(db), repos }
}

/// Core over `store`, allowing local repositories under `repos`.
pub fn core(store: &Arc<SqlStore>, repos: &std::path::Path) -> Core {
    Core::new(store.clone(), local_options(repos))
}

/// Options allowing local repositories under `repos`.
pub fn local_options(repos: &std::path::Path) -> CoreOptions {
    CoreOptions {
        allow_local_repos: true,
        local_roots: LocalRoots::new([repos.to_path_buf()]),
        ..CoreOptions::default()
    }
}

impl Harness {
    /// A user who is org_admin of a new org, and the actor for it.
    pub async fn org_with_admin(&self, name: &str) -> (Org, UserId, Actor) {
        let user = self.user(&format!("{name}-admin")).await;
        let org = self
            .core
            .create_org(user, NewOrg { name: name.into(), max_concurrent_jobs: None, settings: None })
            .await
            .unwrap();
        (org.clone(), user, Actor::user(user, org.id, Role::OrgAdmin))
    }

    /// A directory `name` under the repository root, created, as registered (canonical).
    /// A directory shaped like a repository's top (with a `.git` directory) under the roots.
    pub fn local_path(&self, name: &str) -> String {
        let dir = self.repos.path().join(name);
        std::fs::create_dir_all(dir.join(".git")).unwrap();
        std::fs::canonicalize(dir).unwrap().display().to_string()
    }

    pub async fn user(&self, subject: &str) -> UserId {
        let subject = format!("https://idp.example|{subject}-{}", uuid::Uuid::new_v4());
        self.core.sign_in(NewUser { subject, email: None, name: None }).await.unwrap().id
    }
}

/// Generates one `#[tokio::test]` per suite function for each backend.
#[macro_export]
macro_rules! conformance {
    ($suite:ident: $($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let harness = $crate::support::postgres().await;
                    $crate::$suite::$name(&harness).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let harness = $crate::support::sqlite().await;
                    $crate::$suite::$name(&harness).await;
                }
            )*
        }
    };
}
