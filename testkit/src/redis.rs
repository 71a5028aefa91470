//! A Redis namespace per test.

use deadpool_redis::redis::AsyncCommands;
use deadpool_redis::{Config, Pool, Runtime};

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// A connection pool and a key prefix of this test's own; every key under the prefix is deleted
/// on drop.
pub struct TestRedis {
    url: String,
    pool: Pool,
    namespace: String,
}

impl std::fmt::Debug for TestRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRedis").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

impl TestRedis {
    /// Connects to `AICD_TEST_REDIS_URL` and picks a new namespace. Panics, saying how to provide
    /// Redis, if none answers.
    pub async fn new() -> Self {
        let url = std::env::var("AICD_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        let pool = Config::from_url(&url)
            .create_pool(Some(Runtime::Tokio1))
            .unwrap_or_else(|e| panic!("AICD_TEST_REDIS_URL={url} is not a valid Redis URL: {e}"));
        let ping: Result<String, _> = async {
            let mut conn = pool.get().await.map_err(|e| e.to_string())?;
            deadpool_redis::redis::cmd("PING").query_async::<String>(&mut conn).await.map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = ping {
            panic!(
                "no Redis answers at {url} ({e}).\n\
                 Start one (`redis-server --daemonize yes --port 6379 --save '' --appendonly no`) \
                 or point AICD_TEST_REDIS_URL at one."
            );
        }
        let namespace = format!("aicd-test:{}:", uuid::Uuid::new_v4().simple());
        Self { url, pool, namespace }
    }

    /// The Redis URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// This test's key prefix, ending in `:`.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A key inside this test's namespace.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.namespace)
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let url = self.url.clone();
        let pattern = format!("{}*", self.namespace);
        crate::block_on_cleanup(async move {
            // The pool's connections belong to the test's runtime; clean up on a fresh one.
            let Ok(client) = deadpool_redis::redis::Client::open(url.as_str()) else {
                return;
            };
            let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                return;
            };
            let keys: Vec<String> = conn.keys(&pattern).await.unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = conn.del(keys).await;
            }
        });
    }
}
