//! Redis-backed signals: the doorbell and the event bus shared by every process using the same Redis
//! and namespace.
//!
//! Publishing goes through a small connection pool (`PUBLISH`). Receiving uses one dedicated
//! connection per [`RedisSignals`] (RESP3, so the server must be Redis 6 or newer) held by a
//! background task, which subscribes to `<namespace>doorbell` and `<namespace>events` and forwards
//! what it hears into an in-process [`LocalDoorbell`] and [`LocalEventBus`]. When that connection
//! drops, the task reconnects with capped exponential backoff; meanwhile rings and events are lost,
//! which the traits allow (polling and the database timeline cover them).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{
    self, AsyncConnectionConfig, Client, IntoConnectionInfo, Msg, ProtocolVersion, PushInfo, PushKind,
};
use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use super::local::{LocalDoorbell, LocalEventBus};
use super::{Doorbell, EventBus};
use crate::Error;
use crate::jobs::JobEvent;

/// How long the first connection (and each reconnection attempt) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one command (`PUBLISH`, `PING`, `SUBSCRIBE`) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the subscription may stay silent before it is checked with a `PING`.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);
/// The first delay before reconnecting; doubled after every failed attempt.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest delay between reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Connections in the publishing pool.
const POOL_SIZE: usize = 8;
/// The payload of a doorbell message (its content is ignored by receivers).
const RING_PAYLOAD: &[u8] = b"ring";

/// A Redis-backed [`Doorbell`] and [`EventBus`] in one handle.
///
/// Everything published or rung through any handle connected to the same Redis with the same
/// namespace (in any process) reaches the waiters and subscribers of all of them, including the
/// handle that published it. Handles made with [`RedisSignals::connect`] and different namespaces
/// never hear each other.
///
/// The subscriber connection is named `aicd-signals:<namespace>` in `CLIENT LIST` (when the
/// server's ACL allows `CLIENT SETNAME`).
///
/// Clones share one subscription; dropping the last clone stops its background task and closes
/// its connections. Receivers handed out by [`EventBus::subscribe`] then see the channel close.
#[derive(Clone)]
pub struct RedisSignals {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    ctx: Arc<Ctx>,
    task: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the background task and the handles share.
struct Ctx {
    /// The URL with its credentials redacted, for logs and errors.
    url: String,
    namespace: String,
    doorbell_channel: String,
    events_channel: String,
    bell: LocalDoorbell,
    bus: LocalEventBus,
    /// Whether the subscription is currently live.
    subscribed: AtomicBool,
}

/// A live subscription: the dedicated connection and the messages it pushes.
struct Subscription {
    conn: MultiplexedConnection,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
}

impl std::fmt::Debug for RedisSignals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ctx = &self.inner.ctx;
        f.debug_struct("RedisSignals")
            .field("url", &ctx.url)
            .field("namespace", &ctx.namespace)
            .field("subscribed", &ctx.subscribed.load(Ordering::Relaxed))
            .finish()
    }
}

impl RedisSignals {
    /// Connects to the Redis at `url` (`redis://[user:password@]host[:port][/db]`, or `rediss://`
    /// if the crate's TLS features are enabled) and subscribes to the channels `<namespace>doorbell`
    /// and `<namespace>events` (`namespace` is a prefix such as `aicd:`).
    ///
    /// Returns only once the subscription is active, so a ring or an event published right after
    /// is not lost. Fails with [`Error::InvalidInput`] for a malformed URL and with
    /// [`Error::Unavailable`] (`service: "redis"`) if Redis cannot be reached and subscribed to
    /// within a few seconds. Error messages and logs never contain the URL's password.
    ///
    /// Must be called within a Tokio runtime (the background task is spawned on it).
    pub async fn connect(url: &str, namespace: &str) -> crate::Result<Self> {
        let redacted = redact_url(url);
        let info =
            url.into_connection_info().map_err(|e| Error::invalid(format!("invalid Redis URL {redacted}: {e}")))?;
        // The subscriber receives messages as RESP3 pushes on an ordinary connection.
        let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        let client = Client::open(info.set_redis_settings(settings))
            .map_err(|e| Error::invalid(format!("invalid Redis URL {redacted}: {e}")))?;

        let mut config = deadpool_redis::Config::from_url(url);
        config.pool = Some(PoolConfig {
            max_size: POOL_SIZE,
            timeouts: Timeouts {
                wait: Some(COMMAND_TIMEOUT),
                create: Some(CONNECT_TIMEOUT),
                recycle: Some(COMMAND_TIMEOUT),
            },
            ..PoolConfig::default()
        });
        let pool = config
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| Error::invalid(format!("invalid Redis URL {redacted}: {e}")))?;

        let ctx = Arc::new(Ctx {
            url: redacted,
            namespace: namespace.to_owned(),
            doorbell_channel: format!("{namespace}doorbell"),
            events_channel: format!("{namespace}events"),
            bell: LocalDoorbell::new(),
            bus: LocalEventBus::new(),
            subscribed: AtomicBool::new(false),
        });
        let first = match tokio::time::timeout(CONNECT_TIMEOUT, subscribe(&client, &ctx)).await {
            Ok(Ok(subscription)) => subscription,
            Ok(Err(e)) => return Err(unavailable(format!("cannot subscribe at {}: {e}", ctx.url))),
            Err(_) => {
                return Err(unavailable(format!("no answer from {} within {CONNECT_TIMEOUT:?}", ctx.url)));
            }
        };
        ctx.subscribed.store(true, Ordering::Relaxed);
        let task = tokio::spawn(run(client, Arc::clone(&ctx), first));
        Ok(Self { inner: Arc::new(Inner { pool, ctx, task }) })
    }

    /// For readiness checks: `Ok` if Redis answers a `PING` on the publishing pool within a few
    /// seconds and the subscription is live; [`Error::Unavailable`] otherwise.
    pub async fn ping(&self) -> crate::Result<()> {
        let inner = &*self.inner;
        let attempt = async {
            let mut conn = inner.pool.get().await.map_err(|e| e.to_string())?;
            redis::cmd("PING").query_async::<redis::Value>(&mut conn).await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, attempt).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(unavailable(format!("PING to {} failed: {e}", inner.ctx.url))),
            Err(_) => return Err(unavailable(format!("PING to {} timed out", inner.ctx.url))),
        }
        if inner.ctx.subscribed.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(unavailable(format!("the subscription at {} is down (reconnecting)", inner.ctx.url)))
        }
    }

    /// `PUBLISH`es `payload` on `channel` through the pool, within [`COMMAND_TIMEOUT`].
    async fn publish_raw(&self, channel: &str, payload: &[u8]) -> Result<(), String> {
        let attempt = async {
            let mut conn = self.inner.pool.get().await.map_err(|e| e.to_string())?;
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async::<i64>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, attempt).await {
            Ok(result) => result.map(drop),
            Err(_) => Err(format!("timed out after {COMMAND_TIMEOUT:?}")),
        }
    }
}

#[async_trait]
impl Doorbell for RedisSignals {
    /// Publishes on `<namespace>doorbell`. If that fails (Redis down), logs a warning and wakes
    /// this handle's own waiters directly, so workers in this process still wake.
    async fn ring(&self) {
        let ctx = &self.inner.ctx;
        if let Err(error) = self.publish_raw(&ctx.doorbell_channel, RING_PAYLOAD).await {
            tracing::warn!(redis = %ctx.url, namespace = %ctx.namespace, %error,
                "could not ring the Redis doorbell; waking this process's waiters only");
            ctx.bell.ring_now();
        }
    }

    /// Waits for a ring heard on `<namespace>doorbell`. After the subscription is re-established
    /// following a disconnection, waiters are woken once, since rings may have been lost meanwhile.
    async fn wait(&self, timeout: Duration) -> bool {
        self.inner.ctx.bell.wait(timeout).await
    }
}

#[async_trait]
impl EventBus for RedisSignals {
    /// Publishes the event as JSON on `<namespace>events`; a failure is logged and dropped.
    /// Events published one after the other (each `publish` awaited) are received in that order.
    async fn publish(&self, event: &JobEvent) {
        let ctx = &self.inner.ctx;
        let payload = match serde_json::to_vec(event) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::warn!(job_id = %event.job_id, event_id = event.id, %error, "could not encode a job event");
                return;
            }
        };
        if let Err(error) = self.publish_raw(&ctx.events_channel, &payload).await {
            tracing::warn!(redis = %ctx.url, namespace = %ctx.namespace, job_id = %event.job_id,
                event_id = event.id, %error, "could not publish a job event on Redis; dropped");
        }
    }

    /// A receiver of every well-formed event heard on `<namespace>events` from now on. Malformed
    /// messages on the channel are logged and skipped.
    fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.inner.ctx.bus.subscribe()
    }
}

fn unavailable(message: String) -> Error {
    Error::Unavailable { service: "redis", message, retry_after: None }
}

/// Opens a dedicated connection whose pushes go to a channel, and subscribes it to both channels.
async fn subscribe(client: &Client, ctx: &Ctx) -> redis::RedisResult<Subscription> {
    let (sender, pushes) = mpsc::unbounded_channel();
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_push_sender(sender);
    let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
    // Names the connection for `CLIENT LIST`; best effort, since some ACLs deny `CLIENT`.
    let name = client_name(&ctx.namespace);
    if let Err(error) = redis::cmd("CLIENT").arg("SETNAME").arg(&name).query_async::<redis::Value>(&mut conn).await {
        tracing::debug!(redis = %ctx.url, %error, "could not name the Redis signals connection");
    }
    conn.subscribe(&[ctx.doorbell_channel.as_str(), ctx.events_channel.as_str()]).await?;
    Ok(Subscription { conn, pushes })
}

/// The background task: forwards messages, and resubscribes whenever the connection drops. Runs
/// until aborted by the last handle's drop.
async fn run(client: Client, ctx: Arc<Ctx>, mut subscription: Subscription) {
    loop {
        let reason = forward(&mut subscription, &ctx).await;
        ctx.subscribed.store(false, Ordering::Relaxed);
        drop(subscription);
        tracing::warn!(redis = %ctx.url, namespace = %ctx.namespace, %reason,
            "lost the Redis signals subscription; reconnecting");
        subscription = resubscribe(&client, &ctx).await;
        ctx.subscribed.store(true, Ordering::Relaxed);
        tracing::info!(redis = %ctx.url, namespace = %ctx.namespace, "Redis signals subscription restored");
        // Rings may have been lost while disconnected: let waiters re-check the database.
        ctx.bell.ring_now();
    }
}

/// The name of a namespace's subscriber connection: `aicd-signals:<namespace>`, with characters
/// Redis does not allow in client names (spaces, controls, non-ASCII) replaced by `_`.
fn client_name(namespace: &str) -> String {
    let namespace: String = namespace.chars().map(|c| if c.is_ascii_graphic() { c } else { '_' }).collect();
    format!("aicd-signals:{namespace}")
}

/// Retries subscribing with capped exponential backoff until it works.
async fn resubscribe(client: &Client, ctx: &Ctx) -> Subscription {
    let mut delay = BACKOFF_MIN;
    loop {
        tokio::time::sleep(delay).await;
        let error = match tokio::time::timeout(CONNECT_TIMEOUT, subscribe(client, ctx)).await {
            Ok(Ok(subscription)) => return subscription,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {CONNECT_TIMEOUT:?}"),
        };
        delay = (delay * 2).min(BACKOFF_MAX);
        tracing::warn!(redis = %ctx.url, namespace = %ctx.namespace, %error, retry_in = ?delay,
            "could not resubscribe to Redis signals");
    }
}

/// Forwards pushed messages until the connection is lost; returns why it was lost.
async fn forward(subscription: &mut Subscription, ctx: &Ctx) -> String {
    loop {
        match tokio::time::timeout(HEARTBEAT_EVERY, subscription.pushes.recv()).await {
            Ok(Some(push)) if push.kind == PushKind::Disconnection => return "connection closed".to_owned(),
            Ok(Some(push)) => {
                // Subscription confirmations and other pushes are not messages: ignore them.
                if let Some(msg) = Msg::from_push_info(push) {
                    dispatch(ctx, &msg);
                }
            }
            Ok(None) => return "connection closed".to_owned(),
            Err(_) => {
                // Quiet for a while: check that the connection is still alive, since a half-open
                // one would silently hear nothing.
                let cmd = redis::cmd("PING");
                let ping = cmd.query_async::<redis::Value>(&mut subscription.conn);
                match tokio::time::timeout(COMMAND_TIMEOUT, ping).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return format!("heartbeat failed: {e}"),
                    Err(_) => return "heartbeat timed out".to_owned(),
                }
            }
        }
    }
}

/// Routes one message to the local doorbell or bus.
fn dispatch(ctx: &Ctx, msg: &Msg) {
    let channel = msg.get_channel_name();
    if channel == ctx.doorbell_channel {
        ctx.bell.ring_now();
    } else if channel == ctx.events_channel {
        let payload = msg.get_payload_bytes();
        match serde_json::from_slice::<JobEvent>(payload) {
            Ok(event) => ctx.bus.send(event),
            Err(error) => tracing::warn!(channel, bytes = payload.len(), %error, "skipped a malformed job event"),
        }
    } else {
        tracing::debug!(channel, "ignored a message on an unexpected channel");
    }
}

/// The URL with its password (and any credential in the query) replaced by `***`, for logs.
/// Errs on the side of hiding: userinfo without a `:` is redacted whole (some providers put a
/// token there), and everything before the last `@` counts as userinfo.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    let after_userinfo = match rest.rfind('@') {
        Some(at) => {
            let (userinfo, after) = rest.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _password)) if !user.contains(['/', '?', '#']) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                _ => out.push_str("***"),
            }
            after
        }
        None => rest,
    };
    match after_userinfo.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let (query, fragment) = match query.split_once('#') {
                Some((query, fragment)) => (query, Some(fragment)),
                None => (query, None),
            };
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) if is_secret_param(key) => format!("{key}=***"),
                    _ => param.to_owned(),
                })
                .collect();
            out.push_str(&params.join("&"));
            if let Some(fragment) = fragment {
                out.push('#');
                out.push_str(fragment);
            }
        }
        None => out.push_str(after_userinfo),
    }
    out
}

fn is_secret_param(key: &str) -> bool {
    ["pass", "password", "token", "secret"].iter().any(|secret| key.eq_ignore_ascii_case(secret))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redacts_credentials() {
        assert_eq!(redact_url("redis://127.0.0.1:6379/0"), "redis://127.0.0.1:6379/0");
        assert_eq!(redact_url("redis://user:s3cr@t@host:6379"), "redis://user:***@host:6379");
        assert_eq!(redact_url("rediss://:hunter2@host/1"), "rediss://:***@host/1");
        assert_eq!(redact_url("redis://token@host"), "redis://***@host");
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock?db=1&pass=hunter2#x"),
            "redis+unix:///run/redis.sock?db=1&pass=***#x"
        );
        assert_eq!(redact_url("redis://:pa/ss?w#rd@host:6379"), "redis://:***@host:6379");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
