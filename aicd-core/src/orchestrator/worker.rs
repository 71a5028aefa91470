//! The worker loop: claim, run, heartbeat, reap, and stop gracefully.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// The longest panic message kept in a job's timeline.
const MAX_PANIC_CHARS: usize = 500;

/// A task that is aborted when this is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One job counted in [`Orchestrator::running_jobs`] until dropped (however its task ends).
struct Running(Arc<AtomicUsize>);

impl Running {
    fn start(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(count))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a panic said, cut to [`MAX_PANIC_CHARS`] characters.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(text) => (*text).to_owned(),
            Err(_) => "(no message)".to_owned(),
        },
    };
    if text.chars().count() <= MAX_PANIC_CHARS {
        text
    } else {
        format!("{}...", text.chars().take(MAX_PANIC_CHARS).collect::<String>())
    }
}

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
                        let counted = Running::start(&self.running.0);
                        running.spawn(async move {
                            this.run_claimed(job, interrupts).await;
                            drop(counted);
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

    /// Runs a worker until there is nothing left to do: no job running here and none active in
    /// the store (queued, planning, coding or reviewing, in any organization; a job waiting for
    /// its next attempt counts). Then stops it as [`WorkerHandle::shutdown`] does. For scripts and
    /// tests; a service runs [`Orchestrator::run_worker`] until it is told to stop. Fails only if
    /// the store cannot say how many jobs are active (the worker is stopped first).
    pub async fn run_until_idle(&self) -> crate::Result<()> {
        /// How often the store is asked whether anything is left.
        const CHECK_EVERY: Duration = Duration::from_millis(50);
        let (stop, rx) = watch::channel(false);
        let this = self.clone();
        let worker = tokio::spawn(async move { this.run_worker(rx).await });
        let outcome = loop {
            tokio::time::sleep(CHECK_EVERY).await;
            if self.running.get() > 0 {
                continue;
            }
            match self.store.queue_stats().await {
                Ok(stats) if stats.queued + stats.planning + stats.coding + stats.reviewing == 0 => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        let _ = stop.send(true);
        let _ = worker.await;
        outcome
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
        let epoch = fence.epoch;
        // Both tasks stop when this function returns, however it returns (or is aborted).
        let _heartbeat = AbortOnDrop(tokio::spawn(self.clone().heartbeat(org, id, fence, tx)));
        // The run is a task of its own so that a panic in it (the agent's, say) ends that task only.
        let mut drive = AbortOnDrop(tokio::spawn(run.drive().instrument(span.clone())));
        if let Err(ended) = (&mut drive.0).await
            && ended.is_panic()
        {
            let panic = panic_message(ended.into_panic());
            self.recover_from_panic(org, id, epoch, &panic).instrument(span).await;
        }
        if let Ok(mut map) = interrupts.lock() {
            map.remove(&id);
        }
    }

    /// After the run of job `id` (claimed at `epoch`) panicked: releases the job for a retry
    /// through the run's own transient-failure path (the attempt was counted before the step ran),
    /// if this worker still holds it and it is still runnable. Bounded by the lease period; if the
    /// release cannot be written, the heartbeat stops anyway, the lease lapses and the reaper
    /// re-queues the job.
    async fn recover_from_panic(&self, org: OrgId, id: JobId, epoch: i64, panic: &str) {
        tracing::error!(job_id = %id, %panic, "a job's step panicked; releasing the job for a retry");
        let release = self.release_after_panic(org, id, epoch, panic);
        let outcome = match tokio::time::timeout(self.config.lease, release).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {:?}", self.config.lease),
        };
        tracing::warn!(job_id = %id, error = %outcome,
            "could not release the job after a panic; its lease lapses and the reaper re-queues it");
    }

    async fn release_after_panic(&self, org: OrgId, id: JobId, epoch: i64, panic: &str) -> crate::Result<()> {
        let job = self.store.get_job(org, id).await?;
        let held = job.epoch == epoch && job.lease.as_ref().is_some_and(|lease| lease.owner == self.config.worker_id);
        if !held || !job.state.is_runnable() {
            return Ok(());
        }
        JobRun::retry_after_panic(self.clone(), job, panic).await
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
