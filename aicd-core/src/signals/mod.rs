//! Signals between processes: the doorbell that wakes idle workers, and the bus that fans job
//! events out to every server replica for live streams.
//!
//! Neither is a ledger: the database is the source of truth. A lost ring only delays a job until
//! the next poll; a lost event is still in the job's timeline. With Redis configured both cross
//! processes; without it (the embedded default) they are in-process.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::jobs::JobEvent;

mod local;
mod redis;

pub use local::{DEFAULT_EVENT_BUS_CAPACITY, LocalDoorbell, LocalEventBus};
pub use redis::RedisSignals;

/// Wakes idle workers when a job becomes runnable.
#[async_trait]
pub trait Doorbell: Send + Sync {
    /// Rings: every waiting worker (in any process sharing the doorbell) wakes. Best effort: a
    /// failure is logged, never returned, since polling covers it.
    async fn ring(&self);

    /// Waits until the doorbell rings or `timeout` passes; `true` if it rang. A ring that arrives
    /// while nobody waits is kept until the next `wait`, so a worker that was busy does not miss
    /// it.
    async fn wait(&self, timeout: Duration) -> bool;
}

/// Fans job events out to every subscriber (in any process sharing the bus).
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Publishes an event. Best effort: a failure is logged, never returned.
    async fn publish(&self, event: &JobEvent);

    /// A receiver of every event published from now on, by any publisher. Slow receivers may
    /// miss events ([`broadcast::error::RecvError::Lagged`]) and should re-read the timeline.
    fn subscribe(&self) -> broadcast::Receiver<JobEvent>;
}
