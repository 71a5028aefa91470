//! The worker loop: claim, run, heartbeat, reap, and stop gracefully.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::Orchestrator;
use super::run::{Interrupt, JobRun};
use crate::jobs::{Fence, Job};
use crate::{Error, JobId, OrgId};

/// A running worker. Dropping it does not stop it; call [`WorkerHandle::shutdown`].
#[derive(Debug)]
pub struct WorkerHandle {
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl WorkerHandle {
    /// Stops claiming, asks running jobs to stop at their next checkpoint and release their
    /// leases, and waits up to `grace` for them. Jobs still running after that are abandoned;
    /// their leases lapse and another worker resumes them.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        if tokio::time::timeout(grace + Duration::from_millis(250), self.task).await.is_err() {
            tracing::warn!("worker did not stop within its grace period");
        }
    }

    /// Stops the worker at once, as a crash would: nothing is released.
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Most jobs one claim takes.
const MAX_CLAIM_BATCH: usize = 64;

type Interrupts = Arc<Mutex<HashMap<JobId, watch::Sender<Interrupt>>>>;

/// Raises an interrupt unless a more important one is already raised (lease lost > cancel >
/// shutdown).
fn raise(tx: &watch::Sender<Interrupt>, interrupt: Interrupt) {
    let rank = |i: Interrupt| match i {
        Interrupt::None => 0,
        Interrupt::Shutdown => 1,
        Interrupt::Cancel => 2,
        Interrupt::LeaseLost => 3,
    };
    tx.send_if_modified(|current| {
        if rank(interrupt) > rank(*current) {
            *current = interrupt;
            true
        } else {
            false
        }
    });
}

impl Orchestrator {
    /// Starts a worker on the current Tokio runtime with `config.concurrency` executors.
    pub fn spawn_worker(&self) -> WorkerHandle {
        let (shutdown, rx) = watch::channel(false);
        let this = self.clone();
        let span = tracing::info_span!("worker", worker_id = %self.config.worker_id);
        let task = tokio::spawn(async move { this.run_worker(rx).await }.instrument(span));
        WorkerHandle { shutdown, task }
    }

    /// Runs a worker until `shutdown` becomes `true`, then stops as [`WorkerHandle::shutdown`]
    /// describes (waiting for running jobs without a time limit).
    pub async fn run_worker(&self, mut shutdown: watch::Receiver<bool>) {
        let config = self.config.clone();
        let lease = chrono::Duration::from_std(config.lease).unwrap_or(chrono::Duration::seconds(30));
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        let interrupts: Interrupts = Arc::default();
        let mut running = JoinSet::new();
        let mut last_reap: Option<Instant> = None;
        tracing::info!(concurrency = config.concurrency, "worker started");
        while !*shutdown.borrow() {
            while running.try_join_next().is_some() {}
            if last_reap.is_none_or(|at| at.elapsed() >= config.lease / 2) {
                last_reap = Some(Instant::now());
                self.reap().await;
            }
            // Wait for a free slot, then take every free slot (up to a batch) and claim that many
            // jobs in one round: claiming is never one job per round trip.
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                _ = shutdown.changed() => break,
            };
            let mut permits = vec![first];
            while permits.len() < MAX_CLAIM_BATCH {
                match slots.clone().try_acquire_owned() {
                    Ok(permit) => permits.push(permit),
                    Err(_) => break,
                }
            }
            match self.store.claim(&config.worker_id, lease, permits.len()).await {
                Ok(jobs) if !jobs.is_empty() => {
                    for job in jobs {
                        let Some(permit) = permits.pop() else { break };
                        let this = self.clone();
                        let interrupts = interrupts.clone();
                        running.spawn(async move {
                            this.run_claimed(job, interrupts).await;
                            drop(permit);
                        });
                    }
                    // Unused slots go back; the loop claims again at once.
                    drop(permits);
                }
                Ok(_) => {
                    drop(permits);
                    tokio::select! {
                        _ = self.doorbell.wait(config.poll_interval) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(e) => {
                    drop(permits);
                    tracing::warn!(error = %e, "claiming failed; retrying after the poll interval");
                    tokio::select! {
                        _ = tokio::time::sleep(config.poll_interval) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
        let held = interrupts.lock().map(|m| m.len()).unwrap_or(0);
        tracing::info!(held, "worker stopping; running jobs stop at their next checkpoint");
        if let Ok(map) = interrupts.lock() {
            map.values().for_each(|tx| raise(tx, Interrupt::Shutdown));
        }
        while running.join_next().await.is_some() {}
        tracing::info!("worker stopped");
    }

    async fn reap(&self) {
        match self.store.reap_expired_leases().await {
            Ok(events) if !events.is_empty() => {
                tracing::info!(count = events.len(), "re-queued jobs whose lease expired");
                for event in &events {
                    self.bus.publish(event).await;
                }
                self.doorbell.ring().await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reaping expired leases failed"),
        }
    }

    async fn run_claimed(&self, job: Job, interrupts: Interrupts) {
        let (tx, rx) = watch::channel(if job.cancel_requested { Interrupt::Cancel } else { Interrupt::None });
        let (org, id) = (job.org_id, job.id);
        let span = tracing::info_span!("job", job_id = %id, org_id = %org, state = %job.state);
        let run = JobRun::new(self.clone(), job, rx);
        let fence = run.fence().clone();
        if let Ok(mut map) = interrupts.lock() {
            map.insert(id, tx.clone());
        }
        let heartbeat = tokio::spawn(self.clone().heartbeat(org, id, fence, tx));
        run.drive().instrument(span).await;
        heartbeat.abort();
        if let Ok(mut map) = interrupts.lock() {
            map.remove(&id);
        }
    }

    async fn heartbeat(self, org: OrgId, job: JobId, fence: Fence, tx: watch::Sender<Interrupt>) {
        let lease = chrono::Duration::from_std(self.config.lease).unwrap_or(chrono::Duration::seconds(30));
        let mut tick = tokio::time::interval(self.config.heartbeat_every);
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.store.heartbeat(org, job, &fence, lease).await {
                Ok(true) => raise(&tx, Interrupt::Cancel),
                Ok(false) => {}
                Err(Error::LeaseLost { .. }) => {
                    raise(&tx, Interrupt::LeaseLost);
                    return;
                }
                Err(e) => tracing::warn!(%job, error = %e, "heartbeat failed; retrying"),
            }
        }
    }
}
