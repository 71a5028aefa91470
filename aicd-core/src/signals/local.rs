//! In-process signals: the embedded default when no Redis is configured, and the local half of the
//! Redis-backed signals (which forward what they hear on Redis into these).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, broadcast};

use super::{Doorbell, EventBus};
use crate::jobs::JobEvent;

/// The capacity of a [`LocalEventBus`] made with [`LocalEventBus::new`] or `Default`.
pub const DEFAULT_EVENT_BUS_CAPACITY: usize = 1024;

/// An in-process [`Doorbell`]: a ring wakes every task currently in [`Doorbell::wait`] on any clone
/// of this doorbell; a ring while nobody waits is kept (once, not counted) for the next `wait`.
///
/// Clones share one doorbell.
#[derive(Clone, Default)]
pub struct LocalDoorbell {
    shared: Arc<BellShared>,
}

#[derive(Default)]
struct BellShared {
    notify: Notify,
    state: Mutex<BellState>,
}

#[derive(Default)]
struct BellState {
    /// Tasks currently inside `wait` (registered with `notify` before being counted).
    waiters: usize,
    /// A ring arrived while nobody waited; the next `wait` takes it.
    pending: bool,
    /// Counts rings delivered to waiters, so a waiter whose timeout races a ring still sees it.
    rings: u64,
}

impl BellShared {
    fn state(&self) -> MutexGuard<'_, BellState> {
        // Nothing panics while holding the lock, but never turn a poisoned lock into a panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for LocalDoorbell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.state();
        f.debug_struct("LocalDoorbell").field("waiters", &state.waiters).field("pending", &state.pending).finish()
    }
}

impl LocalDoorbell {
    /// A doorbell nobody has rung yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rings synchronously (what [`Doorbell::ring`] does; it never blocks).
    pub(crate) fn ring_now(&self) {
        let mut state = self.shared.state();
        if state.waiters > 0 {
            state.rings = state.rings.wrapping_add(1);
            self.shared.notify.notify_waiters();
        } else {
            state.pending = true;
        }
    }
}

/// Unregisters a waiter, also when its `wait` future is dropped half way.
struct WaiterGuard<'a> {
    shared: &'a BellShared,
    rings_at_start: u64,
    done: bool,
}

impl WaiterGuard<'_> {
    /// Unregisters and says whether a ring was delivered while registered.
    fn finish(mut self) -> bool {
        self.done = true;
        let mut state = self.shared.state();
        state.waiters -= 1;
        state.rings != self.rings_at_start
    }
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.shared.state().waiters -= 1;
        }
    }
}

#[async_trait]
impl Doorbell for LocalDoorbell {
    async fn ring(&self) {
        self.ring_now();
    }

    async fn wait(&self, timeout: Duration) -> bool {
        let shared = &*self.shared;
        let notified = shared.notify.notified();
        tokio::pin!(notified);
        // Register with `notify` before becoming visible as a waiter, so a ring that counts this
        // waiter always reaches it.
        notified.as_mut().enable();
        let guard = {
            let mut state = shared.state();
            if state.pending {
                state.pending = false;
                return true;
            }
            state.waiters += 1;
            WaiterGuard { shared, rings_at_start: state.rings, done: false }
        };
        let woke = tokio::time::timeout(timeout, notified).await.is_ok();
        // A ring that landed between the timeout firing and unregistering was meant for us too.
        guard.finish() || woke
    }
}

/// An in-process [`EventBus`] on a [`broadcast`] channel: every receiver from
/// [`EventBus::subscribe`] on any clone gets every event published afterwards, in publish order; a
/// receiver more than `capacity` events behind gets [`broadcast::error::RecvError::Lagged`].
///
/// Clones share one bus.
#[derive(Clone)]
pub struct LocalEventBus {
    sender: broadcast::Sender<JobEvent>,
}

impl std::fmt::Debug for LocalEventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEventBus").field("subscribers", &self.sender.receiver_count()).finish()
    }
}

impl Default for LocalEventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalEventBus {
    /// A bus buffering up to [`DEFAULT_EVENT_BUS_CAPACITY`] events per slow receiver.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_EVENT_BUS_CAPACITY)
    }

    /// A bus buffering up to `capacity` events per slow receiver (at least 1: zero is read as 1).
    pub fn with_capacity(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self { sender }
    }

    /// Delivers an owned event to the current subscribers (what [`EventBus::publish`] does).
    pub(crate) fn send(&self, event: JobEvent) {
        // An error only means nobody subscribes right now, which is not a failure.
        let _ = self.sender.send(event);
    }
}

#[async_trait]
impl EventBus for LocalEventBus {
    async fn publish(&self, event: &JobEvent) {
        self.send(event.clone());
    }

    fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.sender.subscribe()
    }
}
