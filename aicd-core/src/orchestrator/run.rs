//! Driving one claimed job until it ends, waits (PR_OPEN), or gives its lease up.

use std::sync::Arc;
use std::time::Instant;

use aicd_agent_api::{
    AgentError, Changeset, Feedback, Issue, Output, Plan, RepoRef, RepoView, Review, TaskContext, Usage, Verdict,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::activity::{self, CallActivity};
use super::policy_gate::{self, GateError};
use super::{Orchestrator, StepOutcome, StepReport, progress};
use crate::forge::NewPullRequest;
use crate::jobs::{EventKind, Fence, Job, JobState, JobUpdate, NewEvent, StepAttempts};
use crate::policy::PolicyBlocked;
use crate::repos::Repository;
use crate::store::{NewUsage, now};
use crate::{Error, Result};

/// What the heartbeat learned, or the worker was told, while a step ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interrupt {
    None,
    /// A person asked to cancel the job.
    Cancel,
    /// The worker is shutting down: stop at the next checkpoint and release the lease.
    Shutdown,
    /// The lease is gone: write nothing more.
    LeaseLost,
}

/// How a step ended, short of moving on.
enum Stop {
    /// A failure that may pass: retry later.
    Transient { message: String, retry_after: Option<std::time::Duration> },
    /// A failure that won't: the job fails with this reason.
    Permanent(String),
    /// Not really attempted (the agent's provider is paused): try again later without counting
    /// the attempt.
    Paused { message: String, retry_after: std::time::Duration },
    /// Interrupted (see [`Interrupt`]).
    Interrupted(Interrupt),
}

impl From<AgentError> for Stop {
    fn from(err: AgentError) -> Self {
        match err {
            AgentError::Transient { message, retry_after } => Stop::Transient { message, retry_after },
            AgentError::Paused { message, retry_after } => Stop::Paused { message, retry_after },
            AgentError::BudgetExhausted { message } => Stop::Permanent(format!("budget exhausted: {message}")),
            other => Stop::Permanent(other.message().to_owned()),
        }
    }
}

impl From<Error> for Stop {
    fn from(err: Error) -> Self {
        match err {
            Error::LeaseLost { .. } => Stop::Interrupted(Interrupt::LeaseLost),
            Error::Unavailable { service, message, retry_after } => {
                Stop::Transient { message: format!("{service}: {message}"), retry_after }
            }
            Error::Database(e) => Stop::Transient { message: format!("database: {e}"), retry_after: None },
            Error::Rejected { service, message } => Stop::Permanent(format!("{service}: {message}")),
            other => Stop::Permanent(other.to_string()),
        }
    }
}

type StepResult<T> = std::result::Result<T, Stop>;

/// Why an agent call was given up before it returned.
enum CutShort {
    Interrupted(Interrupt),
    /// It took longer than its step's timeout.
    TimedOut,
}

/// One claimed job being driven by one worker.
pub(crate) struct JobRun {
    orch: Orchestrator,
    job: Job,
    fence: Fence,
    interrupt: watch::Receiver<Interrupt>,
    repo: Option<Repository>,
    view: Option<Arc<dyn RepoView>>,
    /// The effective policy the coding step checked the changeset under, reused for the texts
    /// publishing writes in the same run (a resumed run computes it again).
    policy: Option<Arc<crate::policy::Policy>>,
    /// What the current attempt's agent call spent, for the observer.
    usage: Option<Usage>,
    /// The progress sink of the agent call being prepared ([`JobRun::context`] makes it,
    /// [`JobRun::call`] finishes it).
    activity: Option<(Arc<CallActivity>, activity::Writer)>,
    /// How the last agent call's result was produced ([`aicd_agent_api::Output::meta`]).
    meta: std::collections::BTreeMap<String, String>,
    /// Whether the policy engine blocked the current attempt, for the observer.
    blocked: bool,
    /// Usage spent but not yet written: it goes with the next fenced write, so a step's cost is
    /// recorded exactly once, in the transaction that records its result.
    unrecorded: Vec<NewUsage>,
    /// The step whose attempt the last transition already counted (see [`JobRun::write`]).
    counted: Option<JobState>,
    /// Activity notes of the last agent call not yet written: they go first in the next write.
    unwritten: Vec<NewEvent>,
}

/// What reviewing ended with.
enum Reviewed {
    /// The critic requested changes; the job went back to CODING.
    SentBack,
    /// Approved (now or in an earlier attempt) and checkpointed: ready to publish.
    Approved { plan: Plan, changeset: Changeset, review: Review },
}

impl JobRun {
    /// A run of `job`, just claimed, listening to `interrupt`.
    pub(crate) fn new(orch: Orchestrator, job: Job, interrupt: watch::Receiver<Interrupt>) -> Self {
        let fence = Fence { worker: orch.config.worker_id.clone(), epoch: job.epoch, state: job.state };
        Self {
            orch,
            job,
            fence,
            interrupt,
            repo: None,
            policy: None,
            view: None,
            usage: None,
            activity: None,
            meta: Default::default(),
            blocked: false,
            unrecorded: Vec::new(),
            counted: None,
            unwritten: Vec::new(),
        }
    }

    pub(crate) fn fence(&self) -> &Fence {
        &self.fence
    }

    /// Runs steps until the job leaves the runnable states or this worker has to let go.
    pub(crate) async fn drive(mut self) {
        loop {
            let state = self.job.state;
            if !state.is_runnable() {
                return;
            }
            let interrupt = *self.interrupt.borrow();
            let result = match interrupt {
                Interrupt::None => self.step().await,
                other => Err(Stop::Interrupted(other)),
            };
            let stop = match result {
                Ok(()) => continue,
                Err(stop) => stop,
            };
            let outcome = match stop {
                Stop::Interrupted(Interrupt::LeaseLost) => {
                    tracing::warn!(job_id = %self.job.id, "lease lost; leaving the job to its new holder");
                    self.record_unrecorded().await;
                    return;
                }
                Stop::Interrupted(Interrupt::Cancel) => self.finish(JobState::Cancelled, None).await,
                Stop::Interrupted(_) => self.release(None, Vec::new()).await,
                Stop::Transient { message, retry_after } => self.retry_later(message, retry_after).await,
                Stop::Paused { message, retry_after } => self.pause(message, retry_after).await,
                Stop::Permanent(reason) => self.finish(JobState::Failed, Some(reason)).await,
            };
            if let Err(e) = outcome {
                tracing::warn!(job_id = %self.job.id, error = %e, "could not record how the step ended");
                self.record_unrecorded().await;
            }
            return;
        }
    }

    async fn step(&mut self) -> StepResult<()> {
        let started = Instant::now();
        match self.job.state {
            JobState::Queued => self.start().await,
            JobState::Planning => {
                let result = self.plan().await;
                self.observe(JobState::Planning, started, &result);
                result
            }
            JobState::Coding => {
                let result = self.code().await;
                self.observe(JobState::Coding, started, &result);
                result
            }
            JobState::Reviewing => self.review_and_publish().await,
            _ => Ok(()),
        }
    }

    /// Tells the observer, if any, how the attempt at `step` begun at `started` ended.
    fn observe<T>(&mut self, step: JobState, started: Instant, result: &StepResult<T>) {
        let usage = self.usage.take();
        let blocked = std::mem::take(&mut self.blocked);
        let Some(observer) = &self.orch.observer else { return };
        let outcome = match result {
            _ if blocked => StepOutcome::Blocked,
            Ok(_) => StepOutcome::Succeeded,
            Err(Stop::Transient { .. } | Stop::Paused { .. }) => StepOutcome::Retrying,
            Err(Stop::Permanent(_)) => StepOutcome::Failed,
            Err(Stop::Interrupted(Interrupt::Cancel)) => StepOutcome::Cancelled,
            Err(Stop::Interrupted(_)) => StepOutcome::Retrying,
        };
        let report = StepReport {
            org: self.job.org_id,
            job: self.job.id,
            step,
            outcome,
            elapsed: started.elapsed(),
            usage: usage.as_ref(),
        };
        observer.step_finished(&report);
    }

    // --- steps -------------------------------------------------------------------------------

    async fn start(&mut self) -> StepResult<()> {
        self.write(JobUpdate { state: Some(JobState::Planning), ..Default::default() }).await
    }

    async fn plan(&mut self) -> StepResult<()> {
        self.begin_attempt(|a| &mut a.planning).await?;
        let ctx = self.context().await?;
        let agent = self.orch.agent.clone();
        let out = self.call("planning", agent.plan(&ctx)).await?;
        let plan = out.value;
        let summary = format!("planned {} step(s): {}", plan.steps.len(), plan.summary);
        self.write(JobUpdate {
            state: Some(JobState::Coding),
            plan: Some(to_json(&plan)),
            events: vec![self.result_event(summary)],
            ..Default::default()
        })
        .await
    }

    async fn code(&mut self) -> StepResult<()> {
        self.begin_attempt(|a| &mut a.coding).await?;
        let plan: Plan = self.checkpoint(self.job.checkpoints.plan.clone(), "plan")?;
        let feedback: Option<Feedback> =
            self.job.checkpoints.feedback.clone().map(|f| self.checkpoint(Some(f), "feedback")).transpose()?;
        let ctx = self.context().await?;
        let agent = self.orch.agent.clone();
        let out = self.call("coding", agent.code(&ctx, &plan, feedback.as_ref())).await?;
        let changeset = out.value;
        if changeset.is_empty() {
            return Err(Stop::Permanent("the coder produced no changes".into()));
        }
        let repo = self.repo().await?;
        let view = self.view().await?;
        // Read at every check, so a policy the organization just tightened applies at once.
        let org = self.orch.store.get_org(self.job.org_id).await?;
        let cache = &self.orch.policies;
        let gate = async {
            let policy =
                policy_gate::effective(cache, &self.orch.config.policy, &org.settings, &repo, view.as_ref()).await?;
            let violations = policy_gate::evaluate_changeset(&policy, view.as_ref(), &changeset).await?;
            Ok::<_, GateError>((policy, violations))
        };
        let violations = match gate.await {
            Ok((policy, violations)) => {
                self.policy = Some(policy);
                violations
            }
            Err(GateError::Config(message)) => return Err(Stop::Permanent(format!("policy: {message}"))),
            Err(GateError::Read(e)) => return Err(AgentError::from(e).into()),
        };
        if !violations.is_empty() {
            return self.policy_blocked(PolicyBlocked::new(violations), changeset).await;
        }
        let summary = format!("changed {} file(s): {}", changeset.changes.len(), changeset.summary);
        self.write(JobUpdate {
            state: Some(JobState::Reviewing),
            changeset: Some(Some(to_json(&changeset))),
            review: Some(None),
            events: vec![self.result_event(summary)],
            ..Default::default()
        })
        .await
    }

    async fn policy_blocked(&mut self, blocked: PolicyBlocked, changeset: Changeset) -> StepResult<()> {
        self.blocked = true;
        let data = serde_json::json!({ "violations": blocked.violations() });
        let event = self.step_event(EventKind::PolicyBlocked, blocked.to_string()).with_data(data);
        if self.orch.config.policy_feedback && self.job.attempts.policy_blocks == 0 {
            let notes = blocked.violations().iter().map(ToString::to_string).collect();
            let mut attempts = self.job.attempts;
            attempts.policy_blocks += 1;
            return self
                .write(JobUpdate {
                    state: Some(JobState::Coding),
                    feedback: Some(Some(to_json(
                        &Feedback::new(self.job.review_round, notes)
                            .with_previous(without_violations(changeset, &blocked)),
                    ))),
                    attempts: Some(attempts),
                    events: vec![event],
                    ..Default::default()
                })
                .await;
        }
        self.write(JobUpdate { events: vec![event], ..Default::default() }).await?;
        Err(Stop::Permanent(format!("the policy engine blocked the change:\n{blocked}")))
    }

    /// Reviews (unless an earlier attempt's approval is checkpointed), then publishes. The
    /// observer hears of the review and of publishing as two steps.
    async fn review_and_publish(&mut self) -> StepResult<()> {
        let resumed = self.job.checkpoints.review.is_some();
        let started = Instant::now();
        let reviewed = self.review().await;
        if !resumed {
            self.observe(JobState::Reviewing, started, &reviewed);
        }
        let Reviewed::Approved { plan, changeset, review } = reviewed? else { return Ok(()) };
        let started = if resumed { started } else { Instant::now() };
        let published = self.publish(plan, changeset, review).await;
        self.observe(JobState::PrOpen, started, &published);
        published
    }

    async fn review(&mut self) -> StepResult<Reviewed> {
        self.begin_attempt(|a| &mut a.reviewing).await?;
        let plan: Plan = self.checkpoint(self.job.checkpoints.plan.clone(), "plan")?;
        let changeset: Changeset = self.checkpoint(self.job.checkpoints.changeset.clone(), "changeset")?;
        let review: Review = match self.job.checkpoints.review.clone() {
            Some(review) => self.checkpoint(Some(review), "review")?,
            None => {
                let ctx = self.context().await?;
                let agent = self.orch.agent.clone();
                let review = self.call("reviewing", agent.review(&ctx, &plan, &changeset)).await?.value;
                if review.verdict == Verdict::RequestChanges {
                    self.send_back(review, changeset).await?;
                    return Ok(Reviewed::SentBack);
                }
                let event = self.result_event(format!("approved: {}", review.summary));
                self.write(JobUpdate {
                    review: Some(Some(to_json(&review))),
                    events: vec![event],
                    ..Default::default()
                })
                .await?;
                review
            }
        };
        Ok(Reviewed::Approved { plan, changeset, review })
    }

    /// Branch, commit and pull request through the forge, each idempotent, then PR_OPEN. A
    /// permanent failure after the branch was created deletes the branch again (a transient one
    /// leaves it for the retry to reuse), and the failure reason says which.
    async fn publish(&mut self, plan: Plan, changeset: Changeset, review: Review) -> StepResult<()> {
        self.checkpoint_reached()?;
        let repo = self.repo().await?;
        let forge = self.orch.forge.clone();
        let branch = progress::branch_name(&self.job);
        let title = progress::pull_request_title(&self.job);
        let message = format!("{title}\n\n{}\n\nAI-CD job {}", changeset.summary, self.job.id);
        let message = progress::fit_commit_message(&message);
        let body = progress::pull_request_body(&self.job, &plan, &review);
        self.check_published_texts(
            &repo,
            &[("commit message", &message), ("pull request title", &title), ("pull request body", &body)],
        )
        .await?;
        self.forge_call("creating the branch", forge.create_branch(&repo, &branch)).await?;
        let published = async {
            self.checkpoint_reached()?;
            let commit = forge.commit_changes(&repo, &branch, &changeset, &message);
            let head = self.forge_call("committing", commit).await?;
            self.checkpoint_reached()?;
            let pr = NewPullRequest { branch: branch.clone(), title, body, issue_number: self.job.issue.number };
            let pr = self.forge_call("opening the pull request", forge.open_pull_request(&repo, &pr)).await?;
            Ok::<_, Stop>((head, pr))
        }
        .await;
        let (head, pr) = match published {
            Err(Stop::Permanent(reason)) => {
                let limit = self.orch.config.step_timeouts.forge;
                let cleaned = match tokio::time::timeout(limit, forge.delete_branch(&repo, &branch)).await {
                    Ok(Ok(())) => format!("the branch `{branch}` it had created was deleted"),
                    Ok(Err(e)) => format!("the branch `{branch}` it had created could not be deleted ({e})"),
                    Err(_) => format!(
                        "the branch `{branch}` it had created could not be deleted (no answer within {})",
                        describe_duration(limit)
                    ),
                };
                return Err(Stop::Permanent(format!("{reason}; {cleaned}")));
            }
            other => other?,
        };
        let event = self
            .step_event(EventKind::StepSucceeded, format!("opened pull request #{} ({})", pr.number, pr.url))
            .with_data(serde_json::json!({ "branch": branch, "commit": head.head, "url": pr.url }));
        self.write(JobUpdate {
            state: Some(JobState::PrOpen),
            pull_request: Some(pr),
            events: vec![event],
            ..Default::default()
        })
        .await
    }

    /// The secret rule over what publishing writes besides the files (the commit message, the
    /// pull request's title and body, which carry the plan's and the review's text), under the
    /// same effective policy as the changeset (the one the coding step used, when it ran in this
    /// run): a secret there fails the job before anything is pushed, with the finding redacted.
    async fn check_published_texts(&mut self, repo: &Repository, texts: &[(&str, &str)]) -> StepResult<()> {
        let policy = match self.policy.clone() {
            Some(policy) => policy,
            None => {
                let view = self.view().await?;
                let org = self.orch.store.get_org(self.job.org_id).await?;
                let defaults = &self.orch.config.policy;
                match policy_gate::effective(&self.orch.policies, defaults, &org.settings, repo, view.as_ref()).await {
                    Ok(policy) => policy,
                    Err(GateError::Config(message)) => return Err(Stop::Permanent(format!("policy: {message}"))),
                    Err(GateError::Read(e)) => return Err(AgentError::from(e).into()),
                }
            }
        };
        let violations = crate::policy::evaluate_texts(texts, &policy);
        if violations.is_empty() {
            return Ok(());
        }
        self.blocked = true;
        let blocked = PolicyBlocked::new(violations);
        let data = serde_json::json!({ "violations": blocked.violations() });
        let event = self.step_event(EventKind::PolicyBlocked, blocked.to_string()).with_data(data);
        self.write(JobUpdate { events: vec![event], ..Default::default() }).await?;
        Err(Stop::Permanent(format!("the policy engine blocked the pull request's text:\n{blocked}")))
    }

    async fn send_back(&mut self, review: Review, changeset: Changeset) -> StepResult<()> {
        let round = self.job.review_round + 1;
        if round > self.orch.config.max_review_rounds {
            let reason = format!(
                "the critic requested changes {round} times (the limit is {}); last review: {}",
                self.orch.config.max_review_rounds, review.summary
            );
            return Err(Stop::Permanent(reason));
        }
        let event = self.result_event(format!("changes requested: {}", review.summary));
        self.write(JobUpdate {
            state: Some(JobState::Coding),
            review_round: Some(round),
            feedback: Some(Some(to_json(&Feedback::from_review(round, &review).with_previous(changeset)))),
            changeset: Some(None),
            events: vec![event],
            ..Default::default()
        })
        .await
    }

    // --- endings -----------------------------------------------------------------------------

    async fn finish(&mut self, state: JobState, reason: Option<String>) -> Result<()> {
        if let Some(reason) = &reason {
            tracing::info!(job_id = %self.job.id, %reason, "job failed");
        }
        let update = JobUpdate { state: Some(state), failure_reason: reason, ..Default::default() };
        self.write_raw(update).await?;
        self.post_progress().await;
        Ok(())
    }

    async fn release(&mut self, run_after: Option<chrono::DateTime<chrono::Utc>>, events: Vec<NewEvent>) -> Result<()> {
        self.write_raw(JobUpdate { release: true, run_after, events, ..Default::default() }).await
    }

    async fn retry_later(&mut self, message: String, retry_after: Option<std::time::Duration>) -> Result<()> {
        // Counted from 1: a step that failed before its attempt was counted (between steps, or
        // when counting it failed) was on its first attempt at least. Starting a job (QUEUED)
        // has no attempts of its own.
        let attempt = self.current_attempts().max(1);
        let delay = self.orch.config.backoff.delay(attempt, retry_after);
        let counted = match self.job.state {
            JobState::Queued => String::new(),
            _ => format!(" (attempt {attempt} of {})", self.orch.config.max_attempts),
        };
        let note = format!("{} failed{counted}: {message}; retrying in {:.1}s", self.job.state, delay.as_secs_f64());
        let event = self.step_event(EventKind::StepFailed, note);
        let run_after = now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        self.write_raw(JobUpdate {
            release: true,
            run_after: Some(run_after),
            failure_reason: Some(message),
            events: vec![event],
            ..Default::default()
        })
        .await
    }

    /// Releases `job` after the run driving it panicked, as a transient failure of its current
    /// step: a `step_failed` event saying the step panicked (with `panic`, the panic's message),
    /// and a retry after the backoff. `job` must be as just read back from the store, still held
    /// by this worker under the run's epoch (the write is fenced by it). The attempt was counted
    /// before the step ran, so a step that always panics still runs out of attempts.
    pub(crate) async fn retry_after_panic(orch: Orchestrator, job: Job, panic: &str) -> Result<()> {
        let (_, interrupt) = watch::channel(Interrupt::None);
        let mut run = JobRun::new(orch, job, interrupt);
        let message = format!("the {} step panicked: {panic}", run.job.state);
        run.retry_later(message, None).await
    }

    /// Re-queues the step after `retry_after` and gives its attempt back: the agent made no
    /// real attempt (what it depends on is known to be down).
    async fn pause(&mut self, message: String, retry_after: std::time::Duration) -> Result<()> {
        let mut attempts = self.job.attempts;
        let counter = match self.job.state {
            JobState::Planning => &mut attempts.planning,
            JobState::Coding => &mut attempts.coding,
            _ => &mut attempts.reviewing,
        };
        *counter = counter.saturating_sub(1);
        let note = format!(
            "{} paused: {message}; trying again in {:.1}s (not counted as an attempt)",
            self.job.state,
            retry_after.as_secs_f64()
        );
        let event = self.step_event(EventKind::StepFailed, note);
        let run_after = now() + chrono::Duration::from_std(retry_after).unwrap_or(chrono::Duration::MAX);
        self.write_raw(JobUpdate {
            release: true,
            run_after: Some(run_after),
            attempts: Some(attempts),
            failure_reason: Some(message),
            events: vec![event],
            ..Default::default()
        })
        .await
    }

    // --- helpers -----------------------------------------------------------------------------

    fn current_attempts(&self) -> u32 {
        match self.job.state {
            JobState::Planning => self.job.attempts.planning,
            JobState::Coding => self.job.attempts.coding,
            _ => self.job.attempts.reviewing,
        }
    }

    /// Counts an attempt at the current step before doing it, so a job that crashes its worker
    /// every time still runs out of attempts.
    async fn begin_attempt(&mut self, counter: fn(&mut StepAttempts) -> &mut u32) -> StepResult<()> {
        if self.counted.take() == Some(self.job.state) {
            // The transition into this step counted it, in the same write.
            return Ok(());
        }
        let mut attempts = self.job.attempts;
        let n = counter(&mut attempts);
        if *n >= self.orch.config.max_attempts {
            let last = self.job.failure_reason.clone().unwrap_or_else(|| "the worker stopped mid-step".into());
            return Err(Stop::Permanent(format!(
                "{} did not succeed in {} attempts; last error: {last}",
                self.job.state, self.orch.config.max_attempts
            )));
        }
        *n += 1;
        self.write(JobUpdate { attempts: Some(attempts), ..Default::default() }).await
    }

    fn checkpoint_reached(&self) -> StepResult<()> {
        match *self.interrupt.borrow() {
            Interrupt::None => Ok(()),
            other => Err(Stop::Interrupted(other)),
        }
    }

    /// Calls the agent, racing it against interruptions and the step's timeout, and records what
    /// it spent: its output's usage when it succeeds, and what it reported through the call's
    /// progress sink when it fails (or is interrupted, or times out). A timeout is a transient
    /// failure.
    async fn call<T>(
        &mut self,
        step: &str,
        call: impl Future<Output = std::result::Result<Output<T>, AgentError>>,
    ) -> StepResult<Output<T>> {
        let activity = self.activity.take();
        self.checkpoint_reached()?;
        if self.job.budget.is_exhausted() {
            return Err(Stop::Permanent(self.budget_message()));
        }
        let limit = self.orch.config.step_timeouts.agent_call(self.job.state);
        let mut interrupt = self.interrupt.clone();
        let span = tracing::info_span!("agent_call", job_id = %self.job.id, org_id = %self.job.org_id, step);
        let result = tokio::select! {
            result = tracing::Instrument::instrument(call, span) => Ok(result),
            which = interrupt.wait_for(|i| *i != Interrupt::None) => {
                // A closed channel means the worker is gone: treat it as a shutdown.
                Err(CutShort::Interrupted(which.map(|i| *i).unwrap_or(Interrupt::Shutdown)))
            }
            () = tokio::time::sleep(limit) => Err(CutShort::TimedOut),
        };
        let mut spent = Usage::default();
        if let Some((sink, writer)) = activity {
            let notes;
            (spent, notes) = sink.finish();
            writer.flush().await;
            self.unwritten.extend(notes);
        }
        let out = match result {
            Ok(Ok(out)) => out,
            Ok(Err(error)) => {
                self.charge(step, spent).await?;
                return Err(error.into());
            }
            Err(CutShort::Interrupted(which)) => {
                self.charge(step, spent).await?;
                return Err(Stop::Interrupted(which));
            }
            Err(CutShort::TimedOut) => {
                self.charge(step, spent).await?;
                return Err(self.timed_out(step, self.job.state, limit));
            }
        };
        let spent = out.usage.clone();
        self.usage = Some(spent.clone());
        self.meta = out.meta.clone();
        self.record_usage(step, &spent).await?;
        if self.job.budget.spent_tokens > self.job.budget.max_tokens
            || self.job.budget.spent_cost_micros > self.job.budget.max_cost_micros
        {
            return Err(Stop::Permanent(self.budget_message()));
        }
        Ok(out)
    }

    /// `call`, a forge call of publishing (`what` it does), abandoned as a transient failure after
    /// the forge's timeout.
    async fn forge_call<T>(&self, what: &str, call: impl Future<Output = Result<T>>) -> StepResult<T> {
        let limit = self.orch.config.step_timeouts.forge;
        match tokio::time::timeout(limit, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(self.timed_out(&format!("publishing ({what})"), JobState::PrOpen, limit)),
        }
    }

    /// The transient failure of a call of `step` (in `state`) abandoned after `limit`, logged at
    /// warn and told to the observer: a job stuck on a call is something an operator wants to
    /// see.
    fn timed_out(&self, step: &str, state: JobState, limit: std::time::Duration) -> Stop {
        let message = format!("{step} timed out after {}", describe_duration(limit));
        tracing::warn!(job_id = %self.job.id, org_id = %self.job.org_id, step, limit_ms = limit.as_millis() as u64,
            "{message}; the step is retried");
        if let Some(observer) = &self.orch.observer {
            observer.step_timed_out(state, limit);
        }
        Stop::Transient { message, retry_after: None }
    }

    /// Records what a call that did not succeed spent, if anything.
    async fn charge(&mut self, step: &str, spent: Usage) -> StepResult<()> {
        if spent.total_tokens() > 0 || spent.cost_micros > 0 {
            self.usage = Some(spent.clone());
            self.record_usage(step, &spent).await?;
        }
        Ok(())
    }

    /// The event of a step's result: its summary, with what the call spent and how it was
    /// produced in `data`.
    fn result_event(&self, summary: String) -> NewEvent {
        let mut data = serde_json::Map::new();
        if let Some(usage) = &self.usage {
            data.insert("usage".into(), to_json(usage));
        }
        if !self.meta.is_empty() {
            data.insert("agent".into(), to_json(&self.meta));
        }
        self.step_event(EventKind::StepSucceeded, summary).with_data(serde_json::Value::Object(data))
    }

    fn budget_message(&self) -> String {
        let b = &self.job.budget;
        format!(
            "budget exhausted: spent {} of {} tokens and {} of {} micro-units of cost",
            b.spent_tokens, b.max_tokens, b.spent_cost_micros, b.max_cost_micros
        )
    }

    /// Adds what a call spent to the job's budget and to the usage the next write records.
    async fn record_usage(&mut self, step: &str, usage: &Usage) -> Result<()> {
        self.unrecorded.push(NewUsage {
            // Fixed now, so recording it again after a write of unknown outcome stores it once.
            id: Some(crate::UsageId::new()),
            job_id: Some(self.job.id),
            step: step.to_owned(),
            model: usage.model.clone(),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cost_micros: usage.cost_micros,
        });
        let b = &mut self.job.budget;
        b.spent_tokens = b.spent_tokens.saturating_add(usage.input_tokens.saturating_add(usage.output_tokens));
        b.spent_cost_micros = b.spent_cost_micros.saturating_add(usage.cost_micros);
        Ok(())
    }

    /// Records usage no fenced write could carry (the lease was lost, or the last write
    /// failed): money spent is recorded even when the result is not.
    async fn record_unrecorded(&mut self) {
        let notes = std::mem::take(&mut self.unwritten);
        if !notes.is_empty()
            && let Ok(events) = self.orch.store.append_events(self.job.org_id, self.job.id, notes).await
        {
            for event in &events {
                self.orch.bus.publish(event).await;
            }
        }
        for usage in std::mem::take(&mut self.unrecorded) {
            if let Err(e) = self.orch.store.record_usage(self.job.org_id, usage).await {
                tracing::warn!(job_id = %self.job.id, error = %e, "could not record the usage of a step");
            }
        }
    }

    fn step_event(&self, kind: EventKind, message: impl Into<String>) -> NewEvent {
        NewEvent::new(format!("worker:{}", self.fence.worker), kind, message)
    }

    /// A fenced write of a step's result. A transition into a step also counts that step's
    /// attempt (unless it has none left, which the step itself then reports), so the next step
    /// starts without a write of its own; and the job's first transition posts the progress
    /// comment first and records it in the same write.
    async fn write(&mut self, mut update: JobUpdate) -> StepResult<()> {
        let Some(to) = update.state else {
            self.write_raw(update).await?;
            return Ok(());
        };
        let mut counted = None;
        let mut attempts = update.attempts.unwrap_or(self.job.attempts);
        let counter = match to {
            JobState::Planning => Some(&mut attempts.planning),
            JobState::Coding => Some(&mut attempts.coding),
            JobState::Reviewing => Some(&mut attempts.reviewing),
            _ => None,
        };
        if let Some(n) = counter.filter(|n| **n < self.orch.config.max_attempts) {
            *n += 1;
            update.attempts = Some(attempts);
            counted = Some(to);
        }
        let first_comment = self.job.checkpoints.progress_comment.is_none() && to.is_runnable();
        if first_comment && let Some(id) = self.post_first_comment(to).await {
            update.progress_comment = Some(id);
        }
        self.write_raw(update).await?;
        self.counted = counted;
        if !first_comment {
            self.post_progress().await;
        }
        Ok(())
    }

    /// Posts the progress comment as it will read once the job is in `state`. Best effort.
    async fn post_first_comment(&mut self, state: JobState) -> Option<u64> {
        let issue = self.job.issue.number?;
        let repo = self.repo().await.ok()?;
        let mut preview = self.job.clone();
        preview.state = state;
        let body = progress::comment(&preview);
        match self.orch.forge.post_comment(&repo, issue, &body).await {
            Ok(id) => Some(id.0),
            Err(e) => {
                tracing::warn!(job_id = %self.job.id, error = %e, "could not post the progress comment");
                None
            }
        }
    }

    /// A fenced write; on success the run continues with the job as written.
    async fn write_raw(&mut self, mut update: JobUpdate) -> Result<()> {
        update.usage = std::mem::take(&mut self.unrecorded);
        let notes = std::mem::take(&mut self.unwritten);
        let carried = (update.usage.clone(), notes.clone());
        update.events.splice(0..0, notes);
        let (job, events) = match self.orch.store.update_job(self.job.org_id, self.job.id, &self.fence, update).await {
            Ok(written) => written,
            Err(e) => {
                // Not written: keep the usage and notes for the next write (or on their own).
                (self.unrecorded, self.unwritten) = carried;
                return Err(e);
            }
        };
        self.fence.state = job.state;
        self.job = job;
        for event in &events {
            self.orch.bus.publish(event).await;
        }
        Ok(())
    }

    /// Posts or edits the progress comment. Best effort: a forge hiccup here never fails the job.
    async fn post_progress(&mut self) {
        let Some(issue) = self.job.issue.number else { return };
        let Ok(repo) = self.repo().await else { return };
        let body = progress::comment(&self.job);
        let forge = self.orch.forge.clone();
        match self.job.checkpoints.progress_comment {
            Some(id) => {
                if let Err(e) = forge.update_comment(&repo, issue, crate::forge::CommentId(id), &body).await {
                    tracing::warn!(job_id = %self.job.id, error = %e, "could not update the progress comment");
                }
            }
            None => match forge.post_comment(&repo, issue, &body).await {
                Ok(id) if self.job.state.is_runnable() => {
                    let update = JobUpdate { progress_comment: Some(id.0), ..Default::default() };
                    if let Err(e) = self.write_raw(update).await {
                        tracing::warn!(job_id = %self.job.id, error = %e, "could not record the progress comment");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(job_id = %self.job.id, error = %e, "could not post the progress comment"),
            },
        }
    }

    async fn repo(&mut self) -> StepResult<Repository> {
        if let Some(repo) = &self.repo {
            return Ok(repo.clone());
        }
        let repo = self.orch.store.get_repo(self.job.org_id, self.job.repo_id).await?;
        self.repo = Some(repo.clone());
        Ok(repo)
    }

    async fn view(&mut self) -> StepResult<Arc<dyn RepoView>> {
        if let Some(view) = &self.view {
            return Ok(view.clone());
        }
        let repo = self.repo().await?;
        let view = self.orch.forge.repo_view(&repo).await?;
        self.view = Some(view.clone());
        Ok(view)
    }

    /// The agent's context for the next call, with a fresh progress sink for it.
    async fn context(&mut self) -> StepResult<TaskContext> {
        let repo = self.repo().await?;
        let view = self.view().await?;
        let issue = &self.job.issue;
        let mut agent_issue = Issue::new(issue.title.clone(), issue.body.clone());
        agent_issue.number = issue.number;
        agent_issue.url = issue.url.clone();
        agent_issue.author = issue.author.clone();
        let (sink, writer) = CallActivity::start(
            self.orch.store.clone(),
            self.orch.bus.clone(),
            self.job.org_id,
            self.job.id,
            format!("agent:{}", self.orch.agent.name()),
        );
        self.activity = Some((sink.clone(), writer));
        Ok(TaskContext::new(
            self.job.id.to_string(),
            agent_issue,
            RepoRef::new(repo.full_name.clone(), repo.default_branch.clone()),
            self.job.budget,
            view,
        )
        .with_progress(sink))
    }

    fn checkpoint<T: DeserializeOwned>(&self, value: Option<serde_json::Value>, what: &str) -> StepResult<T> {
        let value = value.ok_or_else(|| Stop::Permanent(format!("the {what} checkpoint is missing")))?;
        serde_json::from_value(value).map_err(|e| Stop::Permanent(format!("the {what} checkpoint is unreadable: {e}")))
    }
}

/// `changeset` without its changes to the paths the policy engine blocked: a coder building on
/// it starts from what was acceptable (a protected file it deleted is back, say), and is told
/// about the rest in the feedback.
fn without_violations(mut changeset: Changeset, blocked: &PolicyBlocked) -> Changeset {
    let paths: Vec<&str> = blocked.violations().iter().filter_map(|v| v.path.as_deref()).collect();
    changeset.changes.retain(|change| !paths.contains(&change.path.as_str()));
    changeset
}

/// `d` for people: whole seconds (`900 s`), or milliseconds under ten seconds (`200 ms`).
fn describe_duration(d: std::time::Duration) -> String {
    if d < std::time::Duration::from_secs(10) && d.subsec_millis() != 0 {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} s", d.as_secs())
    }
}

fn to_json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}
