//! Redis-backed signals: the doorbell and the event bus shared by every process using the same Redis
//! and namespace.
//!
//! Publishing goes through one shared multiplexed connection (`PUBLISH`s are pipelined on it; no
//! health check per use), opened on first use and again after it breaks. Receiving uses one
//! dedicated connection per [`RedisSignals`] (RESP3, so the server must be Redis 6 or newer) held
//! by a background task, which subscribes to `<namespace>doorbell` and `<namespace>events` and
//! forwards what it hears into an in-process [`LocalDoorbell`] and [`LocalEventBus`].
//!
//! Redis is never required to keep running: when it cannot be reached (at start with
//! [`RedisSignals::connect_lazy`], or later), the task keeps trying to subscribe with capped
//! exponential backoff, rings and events still reach this process's own waiters and subscribers,
//! and publishing is a quick, logged no-op: after a failure it is not tried again for a while, so
//! a job never waits on a Redis that is down for more than one short timeout now and then. Rings
//! and events meant for other processes are lost meanwhile, which the traits allow (polling and
//! the database timeline cover them). Warnings about it are logged at most every 30 seconds.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::{
    self, AsyncConnectionConfig, Client, FromRedisValue, IntoConnectionInfo, Msg, ProtocolVersion, PushInfo, PushKind,
};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use super::local::{LocalDoorbell, LocalEventBus};
use super::{Doorbell, EventBus};
use crate::Error;
use crate::jobs::JobEvent;

/// How long the first connection (and each reconnection attempt) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one command on the subscriber connection (`PING`, `SUBSCRIBE`) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one `PUBLISH` (or readiness `PING`) may take, opening the connection included.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long publishing rests after a failure; doubled after each further failure.
const PUBLISH_PAUSE_MIN: Duration = Duration::from_secs(1);
/// The longest rest after failures (it ends early once the subscription is back).
const PUBLISH_PAUSE_MAX: Duration = Duration::from_secs(30);
/// How long the subscription may stay silent before it is checked with a `PING`.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);
/// The first delay before reconnecting; doubled after every failed attempt.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest delay between reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The least time between two warnings of the same kind while Redis is down.
const WARN_EVERY: Duration = Duration::from_secs(30);
/// The payload of a doorbell message (its content is ignored by receivers).
const RING_PAYLOAD: &[u8] = b"ring";

/// A Redis-backed [`Doorbell`] and [`EventBus`] in one handle.
///
/// Everything published or rung through any handle connected to the same Redis with the same
/// namespace (in any process) reaches the waiters and subscribers of all of them, including the
/// handle that published it. Handles with different namespaces never hear each other.
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
    publisher: Publisher,
    /// Whether the subscription is currently live.
    subscribed: watch::Sender<bool>,
    /// Warnings about subscribing, and about publishing, while Redis is down.
    subscribe_warnings: Throttle,
    publish_warnings: Throttle,
}

impl Ctx {
    fn is_subscribed(&self) -> bool {
        *self.subscribed.borrow()
    }
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
            .field("subscribed", &ctx.is_subscribed())
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
    /// within a few seconds. Error messages and logs never contain the URL's password. Use
    /// [`RedisSignals::connect_lazy`] where Redis being down must not stop anything.
    ///
    /// Must be called within a Tokio runtime (the background task is spawned on it).
    pub async fn connect(url: &str, namespace: &str) -> crate::Result<Self> {
        let (client, ctx) = prepare(url, namespace)?;
        let first = match tokio::time::timeout(CONNECT_TIMEOUT, subscribe(&client, &ctx)).await {
            Ok(Ok(subscription)) => subscription,
            Ok(Err(e)) => return Err(unavailable(format!("cannot subscribe at {}: {e}", ctx.url))),
            Err(_) => {
                return Err(unavailable(format!("no answer from {} within {CONNECT_TIMEOUT:?}", ctx.url)));
            }
        };
        ctx.subscribed.send_replace(true);
        Ok(Self::start(client, ctx, Some(first)))
    }

    /// The same handle as [`RedisSignals::connect`], returned at once, whether Redis answers or
    /// not: the subscription is made in the background, retried with capped exponential backoff
    /// until Redis answers, and waiters are woken once when it is (rings may have been missed).
    /// Until then rings and events reach only this process's own waiters and subscribers, and
    /// [`RedisSignals::ping`] fails. Fails only with [`Error::InvalidInput`] for a malformed URL.
    ///
    /// Must be called within a Tokio runtime (the background task is spawned on it).
    pub fn connect_lazy(url: &str, namespace: &str) -> crate::Result<Self> {
        let (client, ctx) = prepare(url, namespace)?;
        Ok(Self::start(client, ctx, None))
    }

    fn start(client: Client, ctx: Arc<Ctx>, first: Option<Subscription>) -> Self {
        let task = tokio::spawn(run(client, Arc::clone(&ctx), first));
        Self { inner: Arc::new(Inner { ctx, task }) }
    }

    /// Whether the subscription is live right now.
    pub fn is_subscribed(&self) -> bool {
        self.inner.ctx.is_subscribed()
    }

    /// Waits up to `timeout` for the subscription to be live; whether it is.
    pub async fn wait_subscribed(&self, timeout: Duration) -> bool {
        let mut live = self.inner.ctx.subscribed.subscribe();
        matches!(tokio::time::timeout(timeout, live.wait_for(|live| *live)).await, Ok(Ok(_)))
    }

    /// For readiness checks: `Ok` if the subscription is live and Redis answers a `PING` on the
    /// publishing connection within a few seconds; [`Error::Unavailable`] otherwise.
    pub async fn ping(&self) -> crate::Result<()> {
        let ctx = &self.inner.ctx;
        if !ctx.is_subscribed() {
            return Err(unavailable(format!("the subscription at {} is down (reconnecting)", ctx.url)));
        }
        match ctx.publisher.query::<redis::Value>(&redis::cmd("PING"), true).await {
            Ok(_) => Ok(()),
            Err(e) => Err(unavailable(format!("PING to {} failed: {e}", ctx.url))),
        }
    }

    /// `PUBLISH`es `payload` on `channel` (see [`Publisher::query`]).
    async fn publish_raw(&self, channel: &str, payload: &[u8]) -> Result<(), String> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        self.inner.ctx.publisher.query::<i64>(&cmd, false).await.map(drop)
    }
}

/// The client, and the shared state of a handle not yet started.
fn prepare(url: &str, namespace: &str) -> crate::Result<(Client, Arc<Ctx>)> {
    let redacted = redact_url(url);
    let info = url.into_connection_info().map_err(|e| Error::invalid(format!("invalid Redis URL {redacted}: {e}")))?;
    // The subscriber receives messages as RESP3 pushes on an ordinary connection.
    let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
    let client = Client::open(info.set_redis_settings(settings))
        .map_err(|e| Error::invalid(format!("invalid Redis URL {redacted}: {e}")))?;
    let ctx = Arc::new(Ctx {
        url: redacted,
        namespace: namespace.to_owned(),
        doorbell_channel: format!("{namespace}doorbell"),
        events_channel: format!("{namespace}events"),
        bell: LocalDoorbell::new(),
        bus: LocalEventBus::new(),
        publisher: Publisher::new(client.clone()),
        subscribed: watch::Sender::new(false),
        subscribe_warnings: Throttle::default(),
        publish_warnings: Throttle::default(),
    });
    Ok((client, ctx))
}

#[async_trait]
impl Doorbell for RedisSignals {
    /// Publishes on `<namespace>doorbell`. If that fails (Redis down), logs a warning (at most
    /// every 30 s) and wakes this handle's own waiters directly, as it also does while the
    /// subscription is down, so workers in this process still wake.
    async fn ring(&self) {
        let ctx = &self.inner.ctx;
        let published = self.publish_raw(&ctx.doorbell_channel, RING_PAYLOAD).await;
        if let Err(error) = &published
            && let Some(held_back) = ctx.publish_warnings.allow()
        {
            tracing::warn!(redis = %ctx.url, namespace = %ctx.namespace, %error, held_back,
                "could not ring the Redis doorbell; waking this process's waiters only");
        }
        if published.is_err() || !ctx.is_subscribed() {
            ctx.bell.ring_now();
        }
    }

    /// Waits for a ring heard on `<namespace>doorbell`. After the subscription is established
    /// (by [`RedisSignals::connect_lazy`]) or re-established following a disconnection, waiters
    /// are woken once, since rings may have been lost meanwhile.
    async fn wait(&self, timeout: Duration) -> bool {
        self.inner.ctx.bell.wait(timeout).await
    }
}

#[async_trait]
impl EventBus for RedisSignals {
    /// Publishes the event as JSON on `<namespace>events`; a failure is logged (at most every
    /// 30 s) and the event dropped for other processes. While the subscription is down, this
    /// handle's own subscribers get the event directly. Events published one after the other
    /// (each `publish` awaited) are received in that order.
    async fn publish(&self, event: &JobEvent) {
        let ctx = &self.inner.ctx;
        if !ctx.is_subscribed() {
            ctx.bus.send(event.clone());
        }
        let payload = match serde_json::to_vec(event) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::warn!(job_id = %event.job_id, event_id = event.id, %error, "could not encode a job event");
                return;
            }
        };
        if let Err(error) = self.publish_raw(&ctx.events_channel, &payload).await
            && let Some(held_back) = ctx.publish_warnings.allow()
        {
            tracing::warn!(redis = %ctx.url, namespace = %ctx.namespace, job_id = %event.job_id,
                event_id = event.id, %error, held_back, "could not publish a job event on Redis; dropped");
        }
    }

    /// A receiver of every well-formed event heard on `<namespace>events` from now on. Malformed
    /// messages on the channel are logged and skipped.
    fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.inner.ctx.bus.subscribe()
    }
}

/// The publishing side: one multiplexed connection shared by every publish (opened on first use,
/// dropped and reopened after a failure), resting after failures.
struct Publisher {
    client: Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    rest: Mutex<Rest>,
}

/// When publishing may be tried again after failures.
#[derive(Default)]
struct Rest {
    until: Option<Instant>,
    /// The next rest's length.
    next: Duration,
}

impl Publisher {
    fn new(client: Client) -> Self {
        Self { client, conn: tokio::sync::Mutex::new(None), rest: Mutex::default() }
    }

    /// Runs `cmd` on the shared connection within [`PUBLISH_TIMEOUT`] (opening the connection
    /// included). After a failure, commands are refused at once, without touching the network,
    /// for a rest of 1 s doubling up to 30 s, unless `always`; a success or a restored
    /// subscription ends the rest.
    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd, always: bool) -> Result<T, String> {
        if !always && let Some(left) = self.resting() {
            return Err(format!("not sent: Redis failed moments ago (trying again in {:.1}s)", left.as_secs_f64()));
        }
        let attempt = async {
            let mut conn = self.connection().await?;
            cmd.query_async::<T>(&mut conn).await.map_err(|e| e.to_string())
        };
        let result = match tokio::time::timeout(PUBLISH_TIMEOUT, attempt).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {PUBLISH_TIMEOUT:?}")),
        };
        match &result {
            Ok(_) => self.resume(),
            Err(_) => {
                *self.conn.lock().await = None;
                self.rest_after_failure();
            }
        }
        result
    }

    /// The shared connection, opened if there is none.
    async fn connection(&self) -> Result<MultiplexedConnection, String> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(PUBLISH_TIMEOUT))
            .set_response_timeout(Some(PUBLISH_TIMEOUT));
        let conn =
            self.client.get_multiplexed_async_connection_with_config(&config).await.map_err(|e| e.to_string())?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// How much longer publishing rests, if it does.
    fn resting(&self) -> Option<Duration> {
        let rest = self.rest.lock().unwrap_or_else(PoisonError::into_inner);
        rest.until.and_then(|until| until.checked_duration_since(Instant::now())).filter(|left| !left.is_zero())
    }

    fn rest_after_failure(&self) {
        let mut rest = self.rest.lock().unwrap_or_else(PoisonError::into_inner);
        let length = rest.next.clamp(PUBLISH_PAUSE_MIN, PUBLISH_PAUSE_MAX);
        rest.until = Some(Instant::now() + length);
        rest.next = (length * 2).min(PUBLISH_PAUSE_MAX);
    }

    /// Ends the rest: the next command is sent.
    fn resume(&self) {
        *self.rest.lock().unwrap_or_else(PoisonError::into_inner) = Rest::default();
    }
}

/// Lets a repeated warning through at most once per [`WARN_EVERY`], counting the ones held back.
#[derive(Default)]
struct Throttle(Mutex<(Option<Instant>, u64)>);

impl Throttle {
    /// `Some(held_back)` when a warning may be logged now, `held_back` being how many were not
    /// since the last one; `None` to stay quiet.
    fn allow(&self) -> Option<u64> {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (last, held_back) = &mut *state;
        if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            Some(std::mem::take(held_back))
        } else {
            *held_back += 1;
            None
        }
    }

    /// Starts over, so the first warning of the next outage is logged at once.
    fn reset(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = (None, 0);
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

/// The background task: subscribes if `first` is not a live subscription already, forwards
/// messages, and resubscribes whenever the connection drops. Runs until aborted by the last
/// handle's drop.
async fn run(client: Client, ctx: Arc<Ctx>, first: Option<Subscription>) {
    let mut subscription = match first {
        Some(subscription) => subscription,
        None => establish(&client, &ctx, Duration::ZERO, "established").await,
    };
    loop {
        let reason = forward(&mut subscription, &ctx).await;
        ctx.subscribed.send_replace(false);
        drop(subscription);
        tracing::warn!(redis = %ctx.url, namespace = %ctx.namespace, %reason,
            "lost the Redis signals subscription; reconnecting");
        subscription = establish(&client, &ctx, BACKOFF_MIN, "restored").await;
    }
}

/// Subscribes (retrying until it works, the first attempt after `first_delay`), then marks the
/// subscription live, lets publishing resume and wakes waiters once, since rings may have been
/// lost meanwhile. `what` says what happened, for the log.
async fn establish(client: &Client, ctx: &Ctx, first_delay: Duration, what: &str) -> Subscription {
    let subscription = resubscribe(client, ctx, first_delay).await;
    // Publishing resumes before the subscription is reported live, so whoever sees it live (for
    // instance through `wait_subscribed`) can publish at once.
    ctx.publisher.resume();
    ctx.subscribe_warnings.reset();
    ctx.publish_warnings.reset();
    ctx.subscribed.send_replace(true);
    tracing::info!(redis = %ctx.url, namespace = %ctx.namespace, "Redis signals subscription {what}");
    ctx.bell.ring_now();
    subscription
}

/// The name of a namespace's subscriber connection: `aicd-signals:<namespace>`, with characters
/// Redis does not allow in client names (spaces, controls, non-ASCII) replaced by `_`.
fn client_name(namespace: &str) -> String {
    let namespace: String = namespace.chars().map(|c| if c.is_ascii_graphic() { c } else { '_' }).collect();
    format!("aicd-signals:{namespace}")
}

/// Retries subscribing with capped exponential backoff until it works, the first attempt after
/// `first_delay`. Failures are logged at warn at most every 30 s (and at debug otherwise), with
/// the attempt's number, counting from 1.
async fn resubscribe(client: &Client, ctx: &Ctx, first_delay: Duration) -> Subscription {
    let mut delay = first_delay;
    let mut attempt: u64 = 0;
    loop {
        tokio::time::sleep(delay).await;
        attempt += 1;
        let error = match tokio::time::timeout(CONNECT_TIMEOUT, subscribe(client, ctx)).await {
            Ok(Ok(subscription)) => return subscription,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {CONNECT_TIMEOUT:?}"),
        };
        delay = (delay * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
        match ctx.subscribe_warnings.allow() {
            Some(held_back) => tracing::warn!(redis = %ctx.url, namespace = %ctx.namespace, %error, attempt,
                held_back, retry_in = ?delay,
                "could not subscribe to Redis signals; workers poll the database until it answers"),
            None => tracing::debug!(redis = %ctx.url, namespace = %ctx.namespace, %error, attempt, retry_in = ?delay,
                "could not subscribe to Redis signals"),
        }
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
