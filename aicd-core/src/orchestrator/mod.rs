//! The orchestrator: workers that claim jobs and drive them QUEUED -> PLANNING -> CODING ->
//! REVIEWING -> PR_OPEN by calling the agent, checking its changes with the policy engine, and
//! publishing through the forge.
//!
//! Durability comes from the store: every step's output is checkpointed in the same transaction as
//! the transition that follows it, every write is fenced by the lease's epoch, and a crashed
//! worker's job is re-queued by the reaper and resumed by another worker at the step it was in.

mod activity;
mod backoff;
mod observer;
mod policy_gate;
mod progress;
mod run;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use aicd_agent_api::Agent;

pub use backoff::Backoff;
pub use observer::{StepObserver, StepOutcome, StepReport};
pub use worker::WorkerHandle;

use crate::forge::Forge;
use crate::jobs::JobState;
use crate::policy::PolicyConfig;
use crate::signals::{Doorbell, EventBus};
use crate::store::Store;

/// How workers behave.
#[derive(Clone, Debug)]
pub struct OrchestratorConfig {
    /// This worker's identity, recorded as the lease holder (unique per process).
    pub worker_id: String,
    /// How many jobs this worker runs at once.
    pub concurrency: usize,
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// How often a held job's lease is extended (well under `lease`).
    pub heartbeat_every: Duration,
    /// How long an idle worker waits for the doorbell before polling the database anyway.
    pub poll_interval: Duration,
    /// Attempts per step before the job fails (crashes and transient errors both count).
    pub max_attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
    /// How many times the critic may send the coder back before the job fails.
    pub max_review_rounds: u32,
    /// When the policy engine blocks a changeset, hand the violations back to the coder once
    /// instead of failing at once.
    pub policy_feedback: bool,
    /// The deployment's policy defaults, under each organization's `settings.policy`, the
    /// repository's settings and its `.aicd.toml` (each adds to them; see
    /// [`PolicyConfig::merge`]).
    pub policy: PolicyConfig,
    /// How long each step may take before it is abandoned and retried.
    pub step_timeouts: StepTimeouts,
}

/// How long one attempt's agent call, or one forge call of publishing, may take. A call that takes
/// longer is abandoned (its future dropped) and the step is retried after the backoff, as after a
/// transient error; the attempt counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepTimeouts {
    /// [`Agent::plan`] (default 15 minutes).
    pub planning: Duration,
    /// [`Agent::code`] (default 15 minutes).
    pub coding: Duration,
    /// [`Agent::review`] (default 15 minutes).
    pub reviewing: Duration,
    /// Each forge call while publishing: creating the branch, committing, opening the pull
    /// request (default 2 minutes).
    pub forge: Duration,
}

impl Default for StepTimeouts {
    fn default() -> Self {
        let agent = Duration::from_secs(15 * 60);
        Self { planning: agent, coding: agent, reviewing: agent, forge: Duration::from_secs(2 * 60) }
    }
}

impl StepTimeouts {
    /// The limit of the agent call made in `state`: PLANNING's, CODING's, or else REVIEWING's.
    pub(crate) fn agent_call(&self, state: JobState) -> Duration {
        match state {
            JobState::Planning => self.planning,
            JobState::Coding => self.coding,
            _ => self.reviewing,
        }
    }
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            worker_id: format!("worker-{}", uuid::Uuid::new_v4().simple()),
            concurrency: 4,
            lease: Duration::from_secs(30),
            heartbeat_every: Duration::from_secs(10),
            poll_interval: Duration::from_secs(2),
            max_attempts: 5,
            backoff: Backoff::default(),
            max_review_rounds: 3,
            policy_feedback: false,
            policy: PolicyConfig::default(),
            step_timeouts: StepTimeouts::default(),
        }
    }
}

/// A live count of running jobs ([`Orchestrator::running_jobs`]). Cheap to clone; clones read the
/// same count, which holds no reference to the orchestrator.
#[derive(Clone, Debug, Default)]
pub struct RunningJobs(pub(crate) Arc<std::sync::atomic::AtomicUsize>);

impl RunningJobs {
    /// The number of jobs running now.
    pub fn get(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Everything a worker needs. Cheap to clone.
#[derive(Clone)]
pub struct Orchestrator {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) agent: Arc<dyn Agent>,
    pub(crate) forge: Arc<dyn Forge>,
    pub(crate) doorbell: Arc<dyn Doorbell>,
    pub(crate) bus: Arc<dyn EventBus>,
    pub(crate) config: Arc<OrchestratorConfig>,
    pub(crate) policies: Arc<policy_gate::PolicyCache>,
    pub(crate) observer: Option<Arc<dyn StepObserver>>,
    /// Jobs this orchestrator's workers are running now (shared by clones).
    pub(crate) running: RunningJobs,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("config", &self.config)
            .field("observed", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

impl Orchestrator {
    /// An orchestrator over these parts.
    pub fn new(
        store: Arc<dyn Store>,
        agent: Arc<dyn Agent>,
        forge: Arc<dyn Forge>,
        doorbell: Arc<dyn Doorbell>,
        bus: Arc<dyn EventBus>,
        config: OrchestratorConfig,
    ) -> Self {
        Self {
            store,
            agent,
            forge,
            doorbell,
            bus,
            config: Arc::new(config),
            policies: Arc::default(),
            observer: None,
            running: RunningJobs::default(),
        }
    }

    /// This orchestrator, telling `observer` how every attempt at a step ends (replacing any
    /// observer set before).
    pub fn with_observer(mut self, observer: Arc<dyn StepObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &OrchestratorConfig {
        &self.config
    }

    /// A live count of the jobs the workers of this orchestrator (and of its clones) hold and run:
    /// each is counted from its claim until its run has ended.
    pub fn running_jobs(&self) -> RunningJobs {
        self.running.clone()
    }
}
