//! Fixed-window request rate limits per key (API key, user or client IP).
//!
//! Each key gets a counter per 60-second window aligned to the Unix clock, so replicas sharing a
//! Redis agree on the windows. Without Redis, or while Redis fails, counters live in this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deadpool_redis::redis::Client;
use deadpool_redis::redis::aio::MultiplexedConnection;

/// The window length.
const WINDOW: Duration = Duration::from_secs(60);
/// How long a Redis round trip may take before the local limiter answers instead.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// The shortest interval between two warnings about Redis failing.
const WARN_EVERY: Duration = Duration::from_secs(30);
/// At this many local counters, counters of past windows are dropped.
const PRUNE_AT: usize = 10_000;
/// The most local counters kept; new keys beyond it are let through uncounted.
const MAX_ENTRIES: usize = 100_000;

/// Whether a request may proceed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Go ahead; `remaining` more requests fit in this window.
    Allowed {
        /// Requests left in the current window.
        remaining: u32,
    },
    /// Over the limit until the window ends.
    Limited {
        /// Time until the current window ends (at least one second).
        retry_after: Duration,
    },
}

/// Counts requests per key; cheap to clone (clones share their counters).
#[derive(Clone)]
pub(crate) struct RateLimiter {
    redis: Option<Arc<RedisBackend>>,
    local: Arc<LocalCounters>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("redis_namespace", &self.redis.as_ref().map(|r| r.namespace.as_str()))
            .finish_non_exhaustive()
    }
}

/// Counters in Redis, over one multiplexed connection shared by every request (opened on first
/// use, reopened after a failure): a count is one round trip, with no `PING` before it.
struct RedisBackend {
    client: Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    namespace: String,
    last_warning: Mutex<Option<Instant>>,
}

/// A moment expressed as a window number and the time left in that window.
#[derive(Clone, Copy)]
struct Now {
    window: u64,
    left: Duration,
}

impl Now {
    fn get() -> Self {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let window = since_epoch.as_secs() / WINDOW.as_secs();
        let window_end = Duration::from_secs((window + 1) * WINDOW.as_secs());
        Self { window, left: window_end.saturating_sub(since_epoch) }
    }

    fn retry_after(self) -> Duration {
        self.left.max(Duration::from_secs(1))
    }
}

impl RateLimiter {
    /// Counters in this process only.
    pub(crate) fn local() -> Self {
        Self { redis: None, local: Arc::new(LocalCounters::default()) }
    }

    /// Counters in Redis at `url` under `namespace` (a key prefix), shared by every replica
    /// using the same Redis and namespace. Connects on first use; an error only for a URL that is
    /// not a Redis URL (it never contains the URL, which may hold a password).
    pub(crate) fn redis(url: &str, namespace: String) -> Result<Self, String> {
        let client = Client::open(url).map_err(|_| "not a Redis URL (redis:// or rediss://)".to_owned())?;
        let backend =
            RedisBackend { client, conn: tokio::sync::Mutex::new(None), namespace, last_warning: Mutex::new(None) };
        Ok(Self { redis: Some(Arc::new(backend)), local: Arc::new(LocalCounters::default()) })
    }

    /// Counts one request for `key` and decides whether it may proceed: at most
    /// `limit_per_minute` requests per window (a limit of 0 limits every request). When Redis
    /// fails the local counters decide, and a warning is logged at most every 30 seconds.
    pub(crate) async fn check(&self, key: &str, limit_per_minute: u32) -> Decision {
        let now = Now::get();
        if limit_per_minute == 0 {
            return Decision::Limited { retry_after: now.retry_after() };
        }
        let count = match &self.redis {
            Some(redis) => match redis.incr(key, now).await {
                Ok(count) => count,
                Err(error) => {
                    redis.warn(&error);
                    self.local.incr(key, now)
                }
            },
            None => self.local.incr(key, now),
        };
        decide(count, limit_per_minute, now)
    }
}

impl RateLimiter {
    /// Whether one more request for `key` would be over `limit_per_minute`, without counting
    /// it: for limits counted only on failure (bad signatures), checked before the work.
    pub(crate) async fn peek(&self, key: &str, limit_per_minute: u32) -> Decision {
        let now = Now::get();
        let count = match &self.redis {
            Some(redis) => match redis.get(key, now).await {
                Ok(count) => count,
                Err(error) => {
                    redis.warn(&error);
                    self.local.get(key, now)
                }
            },
            None => self.local.get(key, now),
        };
        decide(count.saturating_add(1), limit_per_minute, now)
    }
}

fn decide(count: u64, limit: u32, now: Now) -> Decision {
    match u64::from(limit).checked_sub(count) {
        Some(remaining) => Decision::Allowed { remaining: u32::try_from(remaining).unwrap_or(u32::MAX) },
        None => Decision::Limited { retry_after: now.retry_after() },
    }
}

impl RedisBackend {
    /// Increments the key's counter for this window and returns it.
    async fn incr(&self, key: &str, now: Now) -> Result<u64, String> {
        let redis_key = format!("{}ratelimit:{key}:{}", self.namespace, now.window);
        // The counter outlives its window by a little, for clocks slightly behind.
        let ttl_ms = u64::try_from((now.left + Duration::from_secs(5)).as_millis()).unwrap_or(u64::MAX);
        let round_trip = async {
            let mut conn = self.connection().await?;
            let (count,): (u64,) = deadpool_redis::redis::pipe()
                .atomic()
                .cmd("INCR")
                .arg(&redis_key)
                .cmd("PEXPIRE")
                .arg(&redis_key)
                .arg(ttl_ms)
                .ignore()
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok(count)
        };
        self.within_timeout(round_trip).await
    }

    /// This window's count for the key, without changing it.
    async fn get(&self, key: &str, now: Now) -> Result<u64, String> {
        let redis_key = format!("{}ratelimit:{key}:{}", self.namespace, now.window);
        let round_trip = async {
            let mut conn = self.connection().await?;
            let count: Option<u64> = deadpool_redis::redis::cmd("GET")
                .arg(&redis_key)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok(count.unwrap_or(0))
        };
        self.within_timeout(round_trip).await
    }

    /// Runs `round_trip` within [`REDIS_TIMEOUT`]; after a failure the shared connection is
    /// dropped, so the next request opens a new one.
    async fn within_timeout(&self, round_trip: impl Future<Output = Result<u64, String>>) -> Result<u64, String> {
        let result = match tokio::time::timeout(REDIS_TIMEOUT, round_trip).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {REDIS_TIMEOUT:?}")),
        };
        if result.is_err() {
            *self.conn.lock().await = None;
        }
        result
    }

    /// The shared connection, opened if there is none.
    async fn connection(&self) -> Result<MultiplexedConnection, String> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = deadpool_redis::redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let conn =
            self.client.get_multiplexed_async_connection_with_config(&config).await.map_err(|e| e.to_string())?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    fn warn(&self, error: &str) {
        let mut last = self.last_warning.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(%error, "rate limiting in Redis failed; counting in this process instead");
        }
    }
}

/// In-process counters: key → (window, count).
#[derive(Default)]
struct LocalCounters {
    counters: Mutex<LocalState>,
}

#[derive(Default)]
struct LocalState {
    counts: HashMap<String, (u64, u64)>,
    /// The window of the last pruning (pruning more than once per window could not free more).
    pruned_in: Option<u64>,
}

/// Removes the half of `counts` with the lowest counts.
fn evict_least_counted(counts: &mut HashMap<String, (u64, u64)>) {
    let mut values: Vec<u64> = counts.values().map(|(_, count)| *count).collect();
    let half = values.len() / 2;
    let (_, threshold, _) = values.select_nth_unstable(half);
    let threshold = *threshold;
    let mut to_remove = half;
    counts.retain(|_, (_, count)| {
        if to_remove > 0 && *count <= threshold {
            to_remove -= 1;
            false
        } else {
            true
        }
    });
}

/// The part of a client address a rate limit counts: an IPv4 address whole (also when written
/// as an IPv4-mapped IPv6 address), an IPv6 address by its /64 (one subscriber's network: a
/// client holds a whole /64 and could otherwise rotate through it); anything else as given.
pub(crate) fn address_key(address: &str) -> String {
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Ok(ip) => ip.to_string(),
        Err(_) => address.to_owned(),
    }
}

impl LocalCounters {
    fn incr(&self, key: &str, now: Now) -> u64 {
        let mut state = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((window, count)) = state.counts.get_mut(key) {
            if *window == now.window {
                *count += 1;
            } else {
                *window = now.window;
                *count = 1;
            }
            return *count;
        }
        if state.counts.len() >= PRUNE_AT && state.pruned_in != Some(now.window) {
            state.counts.retain(|_, (window, _)| *window == now.window);
            state.pruned_in = Some(now.window);
        }
        if state.counts.len() >= MAX_ENTRIES {
            // Too many keys this window: forget the half counted least (the furthest from any
            // limit), so every new key is still counted and the work is spread over many keys.
            evict_least_counted(&mut state.counts);
        }
        state.counts.insert(key.to_owned(), (now.window, 1));
        1
    }

    fn get(&self, key: &str, now: Now) -> u64 {
        let state = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        match state.counts.get(key) {
            Some((window, count)) if *window == now.window => *count,
            _ => 0,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.counters.lock().unwrap_or_else(PoisonError::into_inner).counts.len()
    }
}

#[cfg(test)]
mod tests {
    use aicd_testkit::TestRedis;

    use super::*;

    fn allowed(decision: Decision) -> bool {
        matches!(decision, Decision::Allowed { .. })
    }

    async fn limits_after(limiter: &RateLimiter, key: &str, limit: u32) {
        for i in 0..limit {
            assert_eq!(limiter.check(key, limit).await, Decision::Allowed { remaining: limit - i - 1 }, "request {i}");
        }
        match limiter.check(key, limit).await {
            Decision::Limited { retry_after } => {
                assert!(retry_after >= Duration::from_secs(1) && retry_after <= WINDOW, "{retry_after:?}")
            }
            other => panic!("expected Limited, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn local_limits_after_n() {
        let limiter = RateLimiter::local();
        limits_after(&limiter, "key:a", 5).await;
        // A clone shares the counters.
        assert!(!allowed(limiter.clone().check("key:a", 5).await));
    }

    #[tokio::test]
    async fn keys_are_independent() {
        let limiter = RateLimiter::local();
        limits_after(&limiter, "ip:1", 3).await;
        limits_after(&limiter, "ip:2", 3).await;
        assert!(allowed(limiter.check("ip:3", 3).await));
    }

    #[tokio::test]
    async fn peeking_does_not_count() {
        let limiter = RateLimiter::local();
        for _ in 0..10 {
            assert!(allowed(limiter.peek("bad:1", 2).await));
        }
        limiter.check("bad:1", 2).await;
        assert!(allowed(limiter.peek("bad:1", 2).await));
        limiter.check("bad:1", 2).await;
        assert!(!allowed(limiter.peek("bad:1", 2).await));
        let redis = TestRedis::new().await;
        let shared = RateLimiter::redis(redis.url(), redis.namespace().to_owned()).unwrap();
        assert!(allowed(shared.peek("bad:2", 1).await));
        shared.check("bad:2", 1).await;
        assert!(!allowed(shared.peek("bad:2", 1).await));
    }

    #[tokio::test]
    async fn zero_limit_blocks() {
        assert!(!allowed(RateLimiter::local().check("k", 0).await));
    }

    #[test]
    fn a_new_window_resets_the_count() {
        let counters = LocalCounters::default();
        let now = Now::get();
        assert_eq!(counters.incr("k", now), 1);
        assert_eq!(counters.incr("k", now), 2);
        let next = Now { window: now.window + 1, left: WINDOW };
        assert_eq!(counters.incr("k", next), 1);
    }

    #[test]
    fn local_counters_are_pruned() {
        let counters = LocalCounters::default();
        let old = Now { window: 1, left: WINDOW };
        for i in 0..PRUNE_AT {
            counters.incr(&format!("old:{i}"), old);
        }
        assert_eq!(counters.len(), PRUNE_AT);
        let now = Now { window: 2, left: WINDOW };
        counters.incr("new", now);
        assert_eq!(counters.len(), 1);
    }

    #[test]
    fn local_counters_are_bounded() {
        let counters = LocalCounters::default();
        let now = Now { window: 1, left: WINDOW };
        for i in 0..MAX_ENTRIES + 10 {
            counters.incr(&format!("k:{i}"), now);
        }
        assert!(counters.len() <= MAX_ENTRIES, "{}", counters.len());
        // A key counted often is kept through evictions and still counts; every new key is
        // counted (none goes through uncounted).
        let busy = Now { window: 2, left: WINDOW };
        for _ in 0..5 {
            counters.incr("busy", busy);
        }
        for i in 0..MAX_ENTRIES * 2 {
            assert_eq!(counters.incr(&format!("new:{i}"), busy), 1);
            assert!(counters.len() <= MAX_ENTRIES);
        }
        assert_eq!(counters.incr("busy", busy), 6, "the busiest key survives evictions");
        let last = format!("new:{}", MAX_ENTRIES * 2 - 1);
        assert_eq!(counters.incr(&last, busy), 2, "the newest keys are still counted");
    }

    #[test]
    fn addresses_are_counted_per_ipv4_address_and_ipv6_slash_64() {
        assert_eq!(address_key("203.0.113.7"), "203.0.113.7");
        assert_eq!(address_key("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(address_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(address_key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64");
        assert_ne!(address_key("2001:db8:1:3::1"), address_key("2001:db8:1:2::1"));
        assert_eq!(address_key("unknown"), "unknown");
    }

    #[test]
    fn retry_after_is_at_least_a_second() {
        let now = Now { window: 1, left: Duration::from_millis(10) };
        assert_eq!(decide(2, 1, now), Decision::Limited { retry_after: Duration::from_secs(1) });
        assert_eq!(decide(1, 1, now), Decision::Allowed { remaining: 0 });
    }

    #[tokio::test]
    async fn redis_counters_are_shared() {
        let redis = TestRedis::new().await;
        let first = RateLimiter::redis(redis.url(), redis.namespace().to_owned()).unwrap();
        let second = RateLimiter::redis(redis.url(), redis.namespace().to_owned()).unwrap();
        for i in 0..3 {
            assert_eq!(first.check("user:1", 4).await, Decision::Allowed { remaining: 3 - i });
        }
        assert_eq!(second.check("user:1", 4).await, Decision::Allowed { remaining: 0 });
        assert!(!allowed(first.check("user:1", 4).await));
        assert!(!allowed(second.check("user:1", 4).await));
        assert!(allowed(second.check("user:2", 4).await));

        // The counter lives under the namespace and expires.
        let mut conn = redis.pool().get().await.unwrap();
        let key = redis.key(&format!("ratelimit:user:1:{}", Now::get().window));
        let ttl: i64 = deadpool_redis::redis::cmd("PTTL").arg(&key).query_async(&mut conn).await.unwrap();
        // (Skip the check in the unlikely case the window turned over mid-test.)
        if ttl != -2 {
            assert!(ttl > 0 && ttl <= 65_000, "ttl {ttl}");
        }

        // Another namespace is independent.
        let other = RateLimiter::redis(redis.url(), redis.key("other:")).unwrap();
        assert!(allowed(other.check("user:1", 4).await));
    }

    #[tokio::test]
    async fn unreachable_redis_falls_back_to_local() {
        let limiter = RateLimiter::redis("redis://127.0.0.1:1", "aicd-test-unreachable:".to_owned()).unwrap();
        let started = Instant::now();
        limits_after(&limiter, "ip:9", 3).await;
        assert!(started.elapsed() < Duration::from_secs(5), "fallback took {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn counting_is_one_round_trip_without_a_ping() {
        let server = aicd_testkit::RedisServer::start(aicd_testkit::RedisServer::free_port()).await;
        let limiter = RateLimiter::redis(&server.url(), "aicd-test-pings:".to_owned()).unwrap();
        let pings = server.calls("ping").await;
        for _ in 0..50 {
            assert!(allowed(limiter.check("user:1", 1000).await));
        }
        assert_eq!(server.calls("incr").await, 50);
        assert_eq!(server.calls("ping").await, pings, "no PING per request");
    }

    #[test]
    fn a_bad_url_is_refused_without_showing_it() {
        let error = RateLimiter::redis("http://user:hunter2@example.com", String::new()).unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
    }
}
