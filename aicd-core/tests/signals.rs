//! The doorbell and the event bus: one suite run against the in-process and the Redis-backed
//! implementations (Redis handles on one namespace stand for separate processes), plus the
//! Redis-only promises (isolation, malformed messages, reconnection, shutdown, failing fast).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aicd_core::Error;
use aicd_core::jobs::{EventKind, JobEvent, JobState};
use aicd_core::signals::{Doorbell, EventBus, LocalDoorbell, LocalEventBus, RedisSignals};
use aicd_core::{JobId, OrgId};
use aicd_testkit::{RedisServer, TestRedis};
use deadpool_redis::redis as rd;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

/// Long enough for anything that should happen to happen; only ever waited for in full on failure.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long to listen for something that must not happen.
const QUIET: Duration = Duration::from_millis(300);

#[derive(Clone, Copy, Debug)]
enum Backend {
    Local,
    Redis,
}

/// `n` handles on one doorbell and one bus: clones for Local, separate connections for Redis.
struct Fixture {
    bells: Vec<Arc<dyn Doorbell>>,
    buses: Vec<Arc<dyn EventBus>>,
    _redis: Option<TestRedis>,
}

async fn fixture(backend: Backend, n: usize) -> Fixture {
    match backend {
        Backend::Local => {
            let bell = LocalDoorbell::new();
            let bus = LocalEventBus::new();
            Fixture {
                bells: (0..n).map(|_| Arc::new(bell.clone()) as Arc<dyn Doorbell>).collect(),
                buses: (0..n).map(|_| Arc::new(bus.clone()) as Arc<dyn EventBus>).collect(),
                _redis: None,
            }
        }
        Backend::Redis => {
            let redis = TestRedis::new().await;
            let mut bells: Vec<Arc<dyn Doorbell>> = Vec::new();
            let mut buses: Vec<Arc<dyn EventBus>> = Vec::new();
            for _ in 0..n {
                let signals = connect(&redis).await;
                bells.push(Arc::new(signals.clone()));
                buses.push(Arc::new(signals));
            }
            Fixture { bells, buses, _redis: Some(redis) }
        }
    }
}

async fn connect(redis: &TestRedis) -> RedisSignals {
    RedisSignals::connect(redis.url(), redis.namespace()).await.expect("connect to the test Redis")
}

fn event(id: i64) -> JobEvent {
    JobEvent {
        id,
        job_id: JobId::new(),
        org_id: OrgId::new(),
        at: chrono::Utc::now(),
        actor: "worker:test".to_owned(),
        kind: EventKind::StateChanged,
        from_state: Some(JobState::Queued),
        to_state: Some(JobState::Planning),
        message: format!("event {id} — with ünïcode"),
        data: serde_json::json!({ "n": id, "nested": { "ok": true, "list": [1, 2, 3] } }),
    }
}

async fn recv(rx: &mut broadcast::Receiver<JobEvent>) -> JobEvent {
    tokio::time::timeout(PATIENCE, rx.recv()).await.expect("an event within 5 s").expect("a received event")
}

/// Lets spawned waiters register before the ring (the ring would be kept anyway; this makes the
/// test exercise the waking path).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

// ---------------------------------------------------------------------------------------------
// The suite every backend passes.

async fn ring_wakes_a_waiting_waiter(backend: Backend) {
    let f = fixture(backend, 2).await;
    let waiter = Arc::clone(&f.bells[1]);
    let started = Instant::now();
    let waiting = tokio::spawn(async move { waiter.wait(PATIENCE).await });
    settle().await;
    f.bells[0].ring().await;
    assert!(waiting.await.unwrap(), "the waiter should wake on the ring");
    assert!(started.elapsed() < Duration::from_secs(3), "woke only after {:?}", started.elapsed());
}

async fn wait_times_out_without_a_ring(backend: Backend) {
    let f = fixture(backend, 1).await;
    let started = Instant::now();
    assert!(!f.bells[0].wait(Duration::from_millis(200)).await, "nobody rang");
    assert!(started.elapsed() >= Duration::from_millis(150), "returned after only {:?}", started.elapsed());
}

async fn ring_while_nobody_waits_is_kept_once(backend: Backend) {
    let f = fixture(backend, 2).await;
    f.bells[0].ring().await;
    // Let the ring arrive (over Redis) while nobody waits.
    settle().await;
    let started = Instant::now();
    assert!(f.bells[1].wait(PATIENCE).await, "the kept ring should be taken by the next wait");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert!(!f.bells[1].wait(Duration::from_millis(200)).await, "one ring is kept once, not forever");
}

async fn one_ring_wakes_every_waiter(backend: Backend) {
    let f = fixture(backend, 3).await;
    let mut waiting = Vec::new();
    for bell in [&f.bells[1], &f.bells[1], &f.bells[1], &f.bells[2], &f.bells[2]] {
        let bell = Arc::clone(bell);
        waiting.push(tokio::spawn(async move { bell.wait(PATIENCE).await }));
    }
    settle().await;
    let started = Instant::now();
    f.bells[0].ring().await;
    for (i, w) in waiting.into_iter().enumerate() {
        assert!(w.await.unwrap(), "waiter {i} should wake on the one ring");
    }
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

async fn events_reach_every_subscriber_in_order(backend: Backend) {
    let f = fixture(backend, 3).await;
    let mut receivers = [f.buses[1].subscribe(), f.buses[1].subscribe(), f.buses[2].subscribe()];
    let sent: Vec<JobEvent> = (1..=5).map(event).collect();
    for e in &sent {
        f.buses[0].publish(e).await;
    }
    for (i, rx) in receivers.iter_mut().enumerate() {
        for expected in &sent {
            assert_eq!(&recv(rx).await, expected, "subscriber {i}");
        }
    }
}

async fn subscribers_only_hear_events_published_after_subscribing(backend: Backend) {
    let f = fixture(backend, 2).await;
    let early = event(1);
    f.buses[0].publish(&early).await;
    settle().await;
    let mut rx = f.buses[1].subscribe();
    let late = event(2);
    f.buses[0].publish(&late).await;
    assert_eq!(recv(&mut rx).await, late);
}

macro_rules! suite {
    ($($module:ident => $backend:expr),* $(,)?) => {$(
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ring_wakes_a_waiting_waiter() {
                super::ring_wakes_a_waiting_waiter($backend).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn wait_times_out_without_a_ring() {
                super::wait_times_out_without_a_ring($backend).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ring_while_nobody_waits_is_kept_once() {
                super::ring_while_nobody_waits_is_kept_once($backend).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn one_ring_wakes_every_waiter() {
                super::one_ring_wakes_every_waiter($backend).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn events_reach_every_subscriber_in_order() {
                super::events_reach_every_subscriber_in_order($backend).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn subscribers_only_hear_events_published_after_subscribing() {
                super::subscribers_only_hear_events_published_after_subscribing($backend).await;
            }
        }
    )*};
}

suite! {
    local => Backend::Local,
    redis => Backend::Redis,
}

// ---------------------------------------------------------------------------------------------
// Local only.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_bus_capacity_is_configurable_and_slow_receivers_lag() {
    let bus = LocalEventBus::with_capacity(2);
    let mut rx = bus.subscribe();
    for id in 1..=5 {
        bus.publish(&event(id)).await;
    }
    assert!(matches!(rx.recv().await, Err(RecvError::Lagged(3))));
    assert_eq!(rx.recv().await.unwrap().id, 4);
    assert_eq!(rx.recv().await.unwrap().id, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cancelled_wait_does_not_swallow_later_rings() {
    let bell = LocalDoorbell::default();
    // A wait abandoned half way must unregister, or the next ring would go to nobody.
    let _ = tokio::time::timeout(Duration::from_millis(50), bell.wait(PATIENCE)).await;
    bell.ring().await;
    assert!(bell.wait(Duration::from_millis(200)).await, "the ring should be kept for the next wait");
}

// ---------------------------------------------------------------------------------------------
// Redis only.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_namespaces_do_not_hear_each_other() {
    let (ra, rb) = (TestRedis::new().await, TestRedis::new().await);
    let (a, b) = (connect(&ra).await, connect(&rb).await);
    let (mut a_rx, mut b_rx) = (a.subscribe(), b.subscribe());

    a.ring().await;
    let e = event(1);
    a.publish(&e).await;

    assert!(a.wait(PATIENCE).await, "a hears its own ring");
    assert_eq!(recv(&mut a_rx).await, e, "a hears its own event");
    assert!(!b.wait(QUIET).await, "b must not hear a's ring");
    assert!(matches!(b_rx.try_recv(), Err(TryRecvError::Empty)), "b must not hear a's event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_malformed_events_are_skipped() {
    let redis = TestRedis::new().await;
    let signals = connect(&redis).await;
    let mut rx = signals.subscribe();

    let channel = redis.key("events");
    let mut conn = redis.pool().get().await.unwrap();
    let garbage: [&[u8]; 5] = [b"not json", b"{\"id\": \"seven\"}", b"", b"\xff\xfe\x00", b"null"];
    for payload in garbage {
        let _: i64 = rd::cmd("PUBLISH").arg(&channel).arg(payload).query_async(&mut conn).await.unwrap();
    }
    let good = event(42);
    signals.publish(&good).await;

    assert_eq!(recv(&mut rx).await, good, "the good event arrives, and first: garbage is skipped");
    // The subscription survived the garbage: more still arrives.
    let more = event(43);
    signals.publish(&more).await;
    assert_eq!(recv(&mut rx).await, more);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_connect_to_nothing_fails_fast_as_unavailable_without_leaking_the_password() {
    let started = Instant::now();
    let result = RedisSignals::connect("redis://user:hunter2@127.0.0.1:1", "aicd-test:nowhere:").await;
    let elapsed = started.elapsed();
    match result {
        Err(e @ Error::Unavailable { service: "redis", .. }) => {
            let message = e.to_string();
            assert!(!message.contains("hunter2"), "the password leaked: {message}");
            assert!(message.contains("127.0.0.1:1"), "say where: {message}");
        }
        other => panic!("expected Unavailable from redis, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(8), "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_connect_rejects_a_malformed_url() {
    let result = RedisSignals::connect("definitely not a url", "aicd-test:x:").await;
    assert!(matches!(result, Err(Error::InvalidInput(_))), "got {result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_ping_answers() {
    let redis = TestRedis::new().await;
    let signals = connect(&redis).await;
    signals.ping().await.expect("ping");
    let debug = format!("{signals:?}");
    assert!(debug.contains(redis.namespace()), "{debug}");
}

/// The ids of this namespace's subscriber connections, from `CLIENT LIST`.
async fn subscriber_ids(redis: &TestRedis) -> Vec<String> {
    let mut conn = redis.pool().get().await.unwrap();
    let list: String = rd::cmd("CLIENT").arg("LIST").query_async(&mut conn).await.unwrap();
    let name = format!("name=aicd-signals:{}", redis.namespace());
    list.lines()
        .filter(|line| line.split(' ').any(|field| field == name))
        .filter_map(|line| line.split(' ').find_map(|field| field.strip_prefix("id=")).map(str::to_owned))
        .collect()
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_resubscribes_after_the_connection_drops() {
    let redis = TestRedis::new().await;
    let (listener, speaker) = (connect(&redis).await, connect(&redis).await);
    let mut rx = listener.subscribe();
    let before = subscriber_ids(&redis).await;
    assert_eq!(before.len(), 2, "one subscriber connection per handle: {before:?}");

    // Kill both subscriber connections, as a Redis restart or a network blip would.
    let mut conn = redis.pool().get().await.unwrap();
    for id in &before {
        let _: rd::Value = rd::cmd("CLIENT").arg("KILL").arg("ID").arg(id).query_async(&mut conn).await.unwrap();
    }
    eventually("both handles resubscribed", || async {
        let now = subscriber_ids(&redis).await;
        now.len() == 2 && now.iter().all(|id| !before.contains(id))
    })
    .await;
    eventually("ping reports the subscription live", || async { listener.ping().await.is_ok() }).await;

    // Resubscribing wakes waiters once (rings may have been lost); drain that.
    while listener.wait(Duration::from_millis(200)).await {}

    let waiting = {
        let listener = listener.clone();
        tokio::spawn(async move { listener.wait(PATIENCE).await })
    };
    settle().await;
    speaker.ring().await;
    assert!(waiting.await.unwrap(), "rings cross again after reconnecting");
    let e = event(7);
    speaker.publish(&e).await;
    assert_eq!(recv(&mut rx).await, e, "events cross again after reconnecting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dropping_the_last_handle_stops_the_subscriber() {
    let redis = TestRedis::new().await;
    let signals = connect(&redis).await;
    let clone = signals.clone();
    let mut rx = signals.subscribe();
    assert_eq!(subscriber_ids(&redis).await.len(), 1);

    drop(signals);
    // A clone keeps it alive.
    clone.ping().await.expect("a clone keeps the subscription");
    assert_eq!(subscriber_ids(&redis).await.len(), 1);

    drop(clone);
    let closed = tokio::time::timeout(PATIENCE, rx.recv()).await.expect("the bus closes");
    assert!(matches!(closed, Err(RecvError::Closed)), "got {closed:?}");
    eventually("the subscriber connection is closed", || async { subscriber_ids(&redis).await.is_empty() }).await;
}

// ---------------------------------------------------------------------------------------------
// Redis down: a private `redis-server` on a port of the test's own, started late or stopped.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lazy_handle_works_while_nothing_listens_and_subscribes_once_redis_starts() {
    let port = RedisServer::free_port();
    let url = RedisServer::url_for(port);
    let namespace = "aicd-test:late:";
    let started = Instant::now();
    let early = RedisSignals::connect_lazy(&url, namespace).expect("a lazy handle needs no Redis");
    assert!(started.elapsed() < Duration::from_millis(500), "returned only after {:?}", started.elapsed());
    assert!(!early.is_subscribed());
    assert!(early.ping().await.is_err(), "ping says Redis is down");

    // A wait ends after its timeout, as a worker's poll interval does.
    let started = Instant::now();
    assert!(!early.wait(Duration::from_millis(200)).await, "nobody rang");
    assert!(started.elapsed() >= Duration::from_millis(150), "returned after only {:?}", started.elapsed());

    // Publishing and ringing neither fail nor hang, and this process still hears itself.
    let mut rx = early.subscribe();
    let started = Instant::now();
    for id in 1..=20 {
        early.publish(&event(id)).await;
        early.ring().await;
    }
    assert!(started.elapsed() < Duration::from_secs(3), "20 publishes and rings took {:?}", started.elapsed());
    assert_eq!(recv(&mut rx).await.id, 1, "the handle's own subscribers hear it while Redis is down");
    assert!(early.wait(PATIENCE).await, "its own waiters hear its rings");
    while rx.try_recv().is_ok() {}
    while early.wait(Duration::from_millis(50)).await {}

    // Redis starts: the handle subscribes by itself and wakes its waiters once.
    let server = RedisServer::start(port).await;
    assert!(early.wait_subscribed(PATIENCE * 3).await, "subscribed once Redis answers");
    assert!(early.wait(PATIENCE).await, "subscribing wakes waiters (rings may have been lost)");
    while early.wait(Duration::from_millis(200)).await {}
    eventually("ping reports Redis up", || async { early.ping().await.is_ok() }).await;

    // Rings and events cross processes both ways now.
    let other = RedisSignals::connect(&server.url(), namespace).await.expect("a second handle");
    let waiting = {
        let early = early.clone();
        tokio::spawn(async move { early.wait(PATIENCE).await })
    };
    settle().await;
    other.ring().await;
    assert!(waiting.await.unwrap(), "the late subscription delivers rings");
    let mut other_rx = other.subscribe();
    let e = event(99);
    other.publish(&e).await;
    assert_eq!(recv(&mut rx).await, e, "the late subscription delivers events");
    assert_eq!(recv(&mut other_rx).await, e, "the other handle hears itself");
    let e = event(100);
    early.publish(&e).await;
    assert_eq!(recv(&mut other_rx).await, e, "its publishing reaches Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_publishing_resumes_after_redis_restarts_and_is_quick_while_it_is_down() {
    let port = RedisServer::free_port();
    let server = RedisServer::start(port).await;
    let namespace = "aicd-test:restart:";
    let (speaker, listener) = (
        RedisSignals::connect(&server.url(), namespace).await.unwrap(),
        RedisSignals::connect(&server.url(), namespace).await.unwrap(),
    );
    let mut rx = listener.subscribe();
    speaker.publish(&event(1)).await;
    assert_eq!(recv(&mut rx).await.id, 1);

    drop(server);
    eventually("both handles notice Redis is gone", || async { !speaker.is_subscribed() && !listener.is_subscribed() })
        .await;
    let started = Instant::now();
    for id in 2..=50 {
        speaker.publish(&event(id)).await;
    }
    assert!(started.elapsed() < Duration::from_secs(3), "49 publishes while down took {:?}", started.elapsed());

    let _server = RedisServer::start(port).await;
    assert!(speaker.wait_subscribed(PATIENCE * 3).await && listener.wait_subscribed(PATIENCE * 3).await);
    while rx.try_recv().is_ok() {}
    let e = event(51);
    speaker.publish(&e).await;
    assert_eq!(recv(&mut rx).await, e, "publishing reconnects after Redis came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_publishing_does_not_ping_for_each_publish() {
    let server = RedisServer::start(RedisServer::free_port()).await;
    let signals = RedisSignals::connect(&server.url(), "aicd-test:pings:").await.unwrap();
    let pings_before = server.calls("ping").await;
    for id in 1..=50 {
        signals.publish(&event(id)).await;
        signals.ring().await;
    }
    assert_eq!(server.calls("publish").await, 100);
    let pings = server.calls("ping").await - pings_before;
    assert!(pings <= 1, "100 publishes cost {pings} PINGs");
}
