//! A fresh PostgreSQL database per test.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The login role tests connect as when they need a restricted application role.
const APP_LOGIN: &str = "aicd_test_app";

/// A database created for one test and dropped (with any open connections) on drop.
#[derive(Debug)]
pub struct TestPostgres {
    server_url: url::Url,
    name: String,
}

impl TestPostgres {
    /// Creates a database with a unique name on the server of `AICD_TEST_DATABASE_URL`.
    ///
    /// Panics with instructions if no server can be reached.
    pub async fn new() -> Self {
        let configured = std::env::var("AICD_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        Self::on_server(&configured).await
    }

    /// Creates a database with a unique name on the server at `server_url`.
    ///
    /// Panics with instructions if no server can be reached there.
    pub async fn on_server(server_url: &str) -> Self {
        let server_url = server_url_or_fallback(server_url).await;
        let name = format!("aicd_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = connect(&server_url).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let _ = admin.close().await;
        Self { server_url, name }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A URL for the database as the server's administrative role (the schema owner in tests).
    pub fn owner_url(&self) -> String {
        let mut url = self.server_url.clone();
        url.set_path(&self.name);
        url.to_string()
    }

    /// A URL for the database as a login role that is a member of `group` and nothing more (no
    /// superuser, no BYPASSRLS, owns nothing). The role is created on first use; `group` must
    /// exist (the migrations create it).
    pub async fn app_url(&self, group: &str) -> String {
        let mut admin = connect(&self.server_url).await;
        // Roles are cluster-wide; serialize their creation across concurrently running tests.
        let setup = format!(
            "SELECT pg_advisory_lock(872301); \
             DO $$ BEGIN \
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_LOGIN}') THEN \
                 CREATE ROLE {APP_LOGIN} LOGIN PASSWORD '{APP_LOGIN}' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; \
               END IF; \
             END $$; \
             GRANT \"{group}\" TO {APP_LOGIN}; \
             SELECT pg_advisory_unlock(872301);"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(setup))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot set up the test application role: {e}"));
        let _ = admin.close().await;
        let mut url = self.server_url.clone();
        url.set_path(&self.name);
        let _ = url.set_username(APP_LOGIN);
        let _ = url.set_password(Some(APP_LOGIN));
        url.to_string()
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let server_url = self.server_url.clone();
        let name = self.name.clone();
        crate::block_on_cleanup(async move {
            let Ok(options) = PgConnectOptions::from_str(server_url.as_str()) else {
                return;
            };
            let Ok(mut admin) = options.connect().await else {
                return;
            };
            let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(drop)).execute(&mut admin).await {
                eprintln!("aicd-testkit: could not drop test database {name}: {e}");
            }
        });
    }
}

async fn connect(url: &url::Url) -> PgConnection {
    PgConnection::connect(url.as_str()).await.unwrap_or_else(|e| panic!("cannot connect to {}: {e}", redact(url)))
}

fn redact(url: &url::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

/// The server to create databases on: `AICD_TEST_DATABASE_URL`, or a container when that is
/// unreachable and the `docker` feature is on.
async fn server_url_or_fallback(configured: &str) -> url::Url {
    let url = url::Url::parse(configured).unwrap_or_else(|e| panic!("AICD_TEST_DATABASE_URL is not a valid URL: {e}"));
    let reachable = async {
        let options = PgConnectOptions::from_str(url.as_str())?;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(std::time::Duration::from_secs(3))
            .connect_with(options)
            .await?;
        pool.close().await;
        Ok::<_, sqlx::Error>(())
    }
    .await;
    match reachable {
        Ok(()) => url,
        Err(error) => fallback(&url, error).await,
    }
}

#[cfg(not(feature = "docker"))]
async fn fallback(url: &url::Url, error: sqlx::Error) -> url::Url {
    panic!(
        "no PostgreSQL answers at {} ({error}).\n\
         Start one (e.g. `pg_ctlcluster 15 main start`), point AICD_TEST_DATABASE_URL at a server \
         where this role may create databases and roles, or run the tests with \
         `--features aicd-testkit/docker` to start one in Docker.",
        redact(url)
    )
}

#[cfg(feature = "docker")]
async fn fallback(url: &url::Url, error: sqlx::Error) -> url::Url {
    use testcontainers::core::{IntoContainerPort, WaitFor};
    use testcontainers::runners::AsyncRunner;
    use testcontainers::{ContainerAsync, GenericImage, ImageExt};
    use tokio::sync::OnceCell;

    static CONTAINER: OnceCell<Result<(ContainerAsync<GenericImage>, u16), String>> = OnceCell::const_new();
    let started = CONTAINER
        .get_or_init(|| async {
            let container = GenericImage::new("postgres", "15-alpine")
                .with_exposed_port(5432.tcp())
                .with_wait_for(WaitFor::message_on_stderr("database system is ready to accept connections"))
                .with_env_var("POSTGRES_HOST_AUTH_METHOD", "trust")
                .start()
                .await
                .map_err(|e| e.to_string())?;
            let port = container.get_host_port_ipv4(5432.tcp()).await.map_err(|e| e.to_string())?;
            Ok((container, port))
        })
        .await;
    match started {
        Ok((_, port)) => url::Url::parse(&format!("postgres://postgres@127.0.0.1:{port}/postgres"))
            .unwrap_or_else(|e| panic!("container URL: {e}")),
        Err(docker) => panic!(
            "no PostgreSQL answers at {} ({error}), and none could be started in Docker ({docker}).\n\
             Start PostgreSQL or point AICD_TEST_DATABASE_URL at a server where this role may create \
             databases and roles.",
            redact(url)
        ),
    }
}
