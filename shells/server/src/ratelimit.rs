//! Fixed-window request rate limits per key (API key, user or client IP).
//!
//! Each key gets a counter per 60-second window aligned to the Unix clock, so replicas sharing a
//! Redis agree on the windows. Without Redis, or while Redis fails, counters live in this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use deadpool_redis::Pool;

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

struct RedisBackend {
    pool: Pool,
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

    /// Counters in Redis under `namespace` (a key prefix), shared by every replica using the
    /// same Redis and namespace.
    pub(crate) fn redis(pool: Pool, namespace: String) -> Self {
        Self {
            redis: Some(Arc::new(RedisBackend { pool, namespace, last_warning: Mutex::new(None) })),
            local: Arc::new(LocalCounters::default()),
        }
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
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
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
        match tokio::time::timeout(REDIS_TIMEOUT, round_trip).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {REDIS_TIMEOUT:?}")),
        }
    }

    /// This window's count for the key, without changing it.
    async fn get(&self, key: &str, now: Now) -> Result<u64, String> {
        let redis_key = format!("{}ratelimit:{key}:{}", self.namespace, now.window);
        let round_trip = async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            let count: Option<u64> = deadpool_redis::redis::cmd("GET")
                .arg(&redis_key)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok(count.unwrap_or(0))
        };
        match tokio::time::timeout(REDIS_TIMEOUT, round_trip).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {REDIS_TIMEOUT:?}")),
        }
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
            // Too many keys this window to track them all; let new ones through uncounted.
            return 1;
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
        let shared = RateLimiter::redis(redis.pool().clone(), redis.namespace().to_owned());
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
        assert_eq!(counters.len(), MAX_ENTRIES);
        // Keys already tracked still count.
        assert_eq!(counters.incr("k:0", now), 2);
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
        let first = RateLimiter::redis(redis.pool().clone(), redis.namespace().to_owned());
        let second = RateLimiter::redis(redis.pool().clone(), redis.namespace().to_owned());
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
        let other = RateLimiter::redis(redis.pool().clone(), redis.key("other:"));
        assert!(allowed(other.check("user:1", 4).await));
    }

    #[tokio::test]
    async fn unreachable_redis_falls_back_to_local() {
        let pool = deadpool_redis::Config::from_url("redis://127.0.0.1:1")
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .unwrap();
        let limiter = RateLimiter::redis(pool, "aicd-test-unreachable:".to_owned());
        let started = Instant::now();
        limits_after(&limiter, "ip:9", 3).await;
        assert!(started.elapsed() < Duration::from_secs(5), "fallback took {:?}", started.elapsed());
    }
}
