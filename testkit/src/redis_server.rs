//! A private `redis-server` process, for tests that need Redis to be down at first, or to go away
//! and come back.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started server has to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` of this test's own on `127.0.0.1:<port>`, without persistence; killed (and
/// reaped) when dropped, also when the test panics.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// A local port nothing listens on right now: point code at it before any server runs there.
    pub fn free_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free local port");
        listener.local_addr().expect("a bound port").port()
    }

    /// The URL of a Redis on `port` of this machine (running or not).
    pub fn url_for(port: u16) -> String {
        format!("redis://127.0.0.1:{port}")
    }

    /// Starts `redis-server` on `port` and waits until it answers `PING`. Panics, saying why, if
    /// `redis-server` is not on `PATH` or does not answer within 10 seconds.
    pub async fn start(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server (is it on PATH?): {e}"));
        let server = Self { child, port };
        server.wait_until_it_answers().await;
        server
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its URL, `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        Self::url_for(self.port)
    }

    /// `INFO commandstats`' count of calls of `command` (lowercase, such as `ping`) since the
    /// server started; 0 if it was never called.
    pub async fn calls(&self, command: &str) -> u64 {
        let client = deadpool_redis::redis::Client::open(self.url()).expect("a valid URL");
        let mut conn = client.get_multiplexed_async_connection().await.expect("the server answers");
        let info: String = deadpool_redis::redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .expect("INFO commandstats answers");
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|calls| calls.parse().ok())
            .unwrap_or(0)
    }

    async fn wait_until_it_answers(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let client = deadpool_redis::redis::Client::open(self.url()).expect("a valid URL");
        loop {
            let ping = async {
                let mut conn = client.get_multiplexed_async_connection().await?;
                deadpool_redis::redis::cmd("PING").query_async::<String>(&mut conn).await
            };
            match tokio::time::timeout(Duration::from_secs(1), ping).await {
                Ok(Ok(_)) => return,
                Ok(Err(e)) if Instant::now() >= deadline => {
                    panic!("redis-server on port {} did not answer within {START_TIMEOUT:?}: {e}", self.port)
                }
                _ if Instant::now() >= deadline => {
                    panic!("redis-server on port {} did not answer within {START_TIMEOUT:?}", self.port)
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
