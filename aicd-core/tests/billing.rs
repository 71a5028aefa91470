//! Billing against real stores (PostgreSQL and SQLite): facts metered into the outbox in the
//! transaction that records them, the dispatcher's exactly-once sending across retries and a
//! crashed dispatcher, parking and reconciliation, provider events applied once, entitlements
//! (free allowance, subscription, spend cap, failed payments) and outcome pricing.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use aicd_agent_api::ScriptedAgent;
use aicd_core::billing::{
    AccountChange, BillingError, BillingOptions, BillingStore, EventOutcome, MemoryBilling, Meter, MeterDispatcher,
    OutboxStatus, PricingMode, Settlement, Subscription,
};
use aicd_core::forge::MemoryForge;
use aicd_core::github::{GithubRepoId, InstallationId};
use aicd_core::jobs::{IssueRef, Job, JobState, NewJob, Trigger};
use aicd_core::orchestrator::{Backoff, Orchestrator, OrchestratorConfig};
use aicd_core::repos::{NewRepo, RepoSource, Repository};
use aicd_core::signals::{LocalDoorbell, LocalEventBus};
use aicd_core::store::{JobStore, NewUsage};
use aicd_core::tenancy::Actor;
use aicd_core::{Core, CoreOptions, Error, OrgId, UsageId};

const REPO: &str = "acme/widgets";

struct World {
    h: support::Harness,
    core: Core,
    provider: Arc<MemoryBilling>,
    org: OrgId,
    admin: Actor,
    repo: Repository,
}

fn options() -> BillingOptions {
    BillingOptions {
        default_mode: PricingMode::Tokens,
        free_jobs_per_month: Some(3),
        free_cost_micros_per_month: None,
        grace_period: Duration::from_secs(3 * 24 * 3600),
        plan_spend_cap_micros: Some(50_000_000),
        ..BillingOptions::default()
    }
}

async fn world(postgres: bool) -> World {
    let h = if postgres { support::postgres().await } else { support::sqlite().await };
    let provider = Arc::new(MemoryBilling::new());
    let core =
        Core::new(h.store.clone(), CoreOptions { billing: Some(options()), ..support::local_options(h.repos.path()) })
            .with_billing(provider.clone());
    let (org, _, admin) = h.org_with_admin("Acme").await;
    core.github_intake().link_installation(org.id, InstallationId::new(1).unwrap(), None, "operator").await.unwrap();
    let repo = NewRepo {
        full_name: REPO.into(),
        source: RepoSource::Github {
            installation_id: InstallationId::new(1).unwrap(),
            repo_id: GithubRepoId::new(1).unwrap(),
        },
        default_branch: None,
        settings: None,
    };
    let repo = core.create_repo(&admin, org.id, repo).await.unwrap();
    World { h, core, provider, org: org.id, admin, repo }
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::world(true).await).await })*
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::world(false).await).await })*
        }
    };
}

on_both_backends!(
    usage_is_metered_per_pricing_mode_with_the_usage_record,
    the_dispatcher_sends_every_fact_once_across_retries_and_a_crashed_dispatcher,
    refused_events_are_parked_with_their_reason_and_reconciled,
    provider_events_apply_once_and_unknown_customers_change_nothing,
    the_free_allowance_then_a_subscription_then_the_spend_cap_decide_new_jobs,
    a_failed_payment_refuses_new_jobs_after_the_grace_period_until_paid,
    merged_pull_requests_are_billed_once_and_closed_ones_never,
    opened_pull_requests_are_billed_once_per_job,
);

impl World {
    async fn job(&self, number: u64) -> Result<Job, Error> {
        let issue = IssueRef {
            number: Some(number),
            title: format!("Issue {number}"),
            body: "```aicd:write src/hello.txt\nHello\n```\n".into(),
            url: None,
            author: Some("octocat".into()),
        };
        let job =
            NewJob { repo_id: self.repo.id, issue, trigger: Trigger::Label, max_tokens: None, max_cost_micros: None };
        self.core.create_job(&self.admin, self.org, job).await
    }

    async fn spend(&self, job: &Job, id: UsageId, tokens: (u64, u64), cost: u64) {
        let usage = NewUsage {
            id: Some(id),
            job_id: Some(job.id),
            step: "coding".into(),
            model: "test-model".into(),
            input_tokens: tokens.0,
            output_tokens: tokens.1,
            cost_micros: cost,
        };
        self.h.store.record_usage(self.org, usage).await.unwrap();
    }

    fn dispatcher(&self, name: &str) -> MeterDispatcher {
        MeterDispatcher::new(self.core.clone(), name).unwrap().with_lease(Duration::from_secs(1))
    }

    async fn outbox(&self) -> Vec<(Meter, i64, OutboxStatus)> {
        self.h.store.list_outbox(self.org).await.unwrap().into_iter().map(|e| (e.meter, e.value, e.status)).collect()
    }

    async fn customer(&self) -> String {
        self.core.billing_customer(self.org).await.unwrap()
    }

    async fn subscribe(&self, event: &str, status: &str) -> EventOutcome {
        let subscription = Subscription {
            id: "sub_1MowQVLkdIwHu7ixeRlqHVzs".into(),
            status: status.into(),
            current_period_end: None,
            prices: vec![],
        };
        let customer = self.customer().await;
        self.h
            .store
            .apply_billing_event(
                event,
                "customer.subscription.updated",
                chrono::Utc::now(),
                &customer,
                AccountChange::Subscription(subscription),
            )
            .await
            .unwrap()
    }

    fn orchestrator(&self, forge: &MemoryForge) -> Orchestrator {
        let config = OrchestratorConfig {
            concurrency: 2,
            lease: Duration::from_secs(3),
            heartbeat_every: Duration::from_millis(300),
            poll_interval: Duration::from_millis(100),
            backoff: Backoff { base: Duration::from_millis(40), max: Duration::from_millis(200) },
            ..OrchestratorConfig::default()
        };
        Orchestrator::new(
            self.h.store.clone(),
            Arc::new(ScriptedAgent::new()),
            Arc::new(forge.clone()),
            Arc::new(LocalDoorbell::new()),
            Arc::new(LocalEventBus::new()),
            config,
        )
    }

    async fn pr_open(&self, number: u64) -> Job {
        let forge = MemoryForge::new();
        forge.add_repo(REPO, "main", [("README.md", "# Widgets\n")]);
        let worker = self.orchestrator(&forge).spawn_worker();
        let job = self.job(number).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let job = loop {
            let current = self.h.store.get_job(self.org, job.id).await.unwrap();
            if current.state == JobState::PrOpen || current.state.is_terminal() {
                break current;
            }
            assert!(tokio::time::Instant::now() < deadline, "the job did not settle: {current:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        worker.shutdown(Duration::from_secs(5)).await;
        assert_eq!(job.state, JobState::PrOpen, "{job:#?}");
        job
    }
}

async fn usage_is_metered_per_pricing_mode_with_the_usage_record(w: World) {
    let job = w.job(1).await.unwrap();
    // The job's creation opened the account in the deployment's default mode (tokens).
    w.spend(&job, UsageId::new(), (120, 30), 900).await;
    let repeated = UsageId::new();
    w.spend(&job, repeated, (0, 7), 50).await;
    // The same spending recorded again (a retried write) is metered once.
    w.spend(&job, repeated, (0, 7), 50).await;
    use Meter::*;
    use OutboxStatus::Pending;
    assert_eq!(
        w.outbox().await,
        [(InputTokens, 120, Pending), (OutputTokens, 30, Pending), (OutputTokens, 7, Pending)]
    );

    w.h.store.set_pricing_mode(w.org, PricingMode::Cost).await.unwrap();
    w.spend(&job, UsageId::new(), (5, 5), 1_250).await;
    assert_eq!(w.outbox().await.last(), Some(&(CostMicros, 1_250, Pending)));

    // An organization without a billing account (a deployment that does not bill) meters nothing.
    let (other, _, other_admin) = w.h.org_with_admin("Unbilled").await;
    let plain = support::core(&w.h.store, w.h.repos.path());
    let path = w.h.local_path("unbilled");
    let repo = plain
        .create_repo(
            &other_admin,
            other.id,
            NewRepo {
                full_name: "local/unbilled".into(),
                source: RepoSource::Local { path },
                default_branch: None,
                settings: None,
            },
        )
        .await
        .unwrap();
    let issue = IssueRef { number: None, title: "t".into(), body: "b".into(), url: None, author: None };
    let job = plain
        .create_job(
            &other_admin,
            other.id,
            NewJob { repo_id: repo.id, issue, trigger: Trigger::Api, max_tokens: None, max_cost_micros: None },
        )
        .await
        .unwrap();
    let usage = NewUsage {
        id: None,
        job_id: Some(job.id),
        step: "planning".into(),
        model: "m".into(),
        input_tokens: 10,
        output_tokens: 10,
        cost_micros: 10,
    };
    w.h.store.record_usage(other.id, usage).await.unwrap();
    assert!(w.h.store.list_outbox(other.id).await.unwrap().is_empty());
    assert!(w.h.store.billing_account(other.id).await.unwrap().is_none());
}

async fn the_dispatcher_sends_every_fact_once_across_retries_and_a_crashed_dispatcher(w: World) {
    let job = w.job(1).await.unwrap();
    w.spend(&job, UsageId::new(), (100, 10), 0).await;
    w.spend(&job, UsageId::new(), (200, 20), 0).await;

    // A dispatcher claims the rows, sends them (the provider records them) and dies before it
    // records the acknowledgement.
    let lease = chrono::Duration::seconds(1);
    let claimed = w.h.store.claim_outbox("dead-dispatcher", lease, 10).await.unwrap();
    assert_eq!(claimed.len(), 4);
    let customer = w.customer().await;
    for entry in &claimed {
        let event = aicd_core::billing::MeterEvent {
            event_name: aicd_core::billing::MeterNames::default().name(entry.meter).to_owned(),
            customer: customer.clone(),
            value: entry.value,
            identifier: entry.identifier(),
            timestamp: entry.occurred_at,
        };
        aicd_core::billing::Billing::send_meter_event(&*w.provider, &event).await.unwrap();
    }
    // While its lease runs, nobody else sends them.
    let live = w.dispatcher("live");
    assert_eq!(live.run_once().await.unwrap().claimed, 0);
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    // After the lease, another dispatcher sends them again under the same identifiers; a
    // transient failure (after the provider received the event) is retried with the same one.
    w.provider.fail_next([BillingError::Transient { message: "timed out".into(), retry_after: None }]);
    let report = live.run_once().await.unwrap();
    assert_eq!((report.claimed, report.sent, report.retried), (4, 3, 1), "{report:?}");
    // The dead dispatcher's late acknowledgement is fenced off.
    let late: Vec<_> = claimed.iter().map(|e| (e.clone(), Settlement::Sent)).collect();
    assert_eq!(w.h.store.settle_outbox("dead-dispatcher", &late).await.unwrap(), 0);

    // The retried row is due again after its backoff.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while w.outbox().await.iter().any(|(_, _, status)| *status != OutboxStatus::Sent) {
        assert!(tokio::time::Instant::now() < deadline, "the retried row was not sent: {:?}", w.outbox().await);
        live.run_once().await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Four facts, each counted once: 300 input and 30 output tokens, whatever the sends.
    assert_eq!(w.provider.events().len(), 4);
    assert_eq!(w.provider.total("aicd_input_tokens", &customer), 100 + 200);
    assert_eq!(w.provider.total("aicd_output_tokens", &customer), 10 + 20);
    assert_eq!(w.provider.calls(), 4 + 4 + 1, "every row sent twice, the failed one three times");
    assert_eq!(w.provider.customer(w.org).as_deref(), Some(customer.as_str()));
    assert!(w.h.store.reconcile_outbox().await.unwrap().is_empty());
    // Each row's first send is recorded (the provider's deduplication window counts from it).
    assert!(w.h.store.list_outbox(w.org).await.unwrap().iter().all(|e| e.first_sent_at.is_some()));
}

async fn refused_events_are_parked_with_their_reason_and_reconciled(w: World) {
    let job = w.job(1).await.unwrap();
    w.spend(&job, UsageId::new(), (40, 0), 0).await;
    w.spend(&job, UsageId::new(), (2, 0), 0).await;
    w.provider.fail_next([BillingError::Permanent { message: "No active meter found for event_name".into() }]);
    let report = w.dispatcher("d").run_once().await.unwrap();
    assert_eq!((report.sent, report.parked), (1, 1), "{report:?}");
    let parked: Vec<_> =
        w.h.store.list_outbox(w.org).await.unwrap().into_iter().filter(|e| e.status == OutboxStatus::Parked).collect();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].last_error.as_deref(), Some("No active meter found for event_name"));
    // A parked row is not sent again.
    assert_eq!(w.dispatcher("d").run_once().await.unwrap().claimed, 0);

    // Two more facts not yet sent: reconciliation lists them with the parked one, per meter.
    w.spend(&job, UsageId::new(), (5, 0), 0).await;
    w.spend(&job, UsageId::new(), (6, 0), 0).await;
    let lines = w.h.store.reconcile_outbox().await.unwrap();
    let summary: Vec<_> = lines.iter().map(|l| (l.org_id, l.meter, l.status, l.rows, l.total)).collect();
    let parked_value = parked[0].value;
    assert_eq!(
        summary,
        [
            (w.org, Meter::InputTokens, OutboxStatus::Parked, 1, parked_value),
            (w.org, Meter::InputTokens, OutboxStatus::Pending, 2, 11),
        ]
    );
    assert_eq!(lines[0].last_error.as_deref(), Some("No active meter found for event_name"));
}

async fn provider_events_apply_once_and_unknown_customers_change_nothing(w: World) {
    assert_eq!(w.subscribe("evt_1", "active").await, EventOutcome::Applied { org: w.org });
    let account = w.h.store.billing_account(w.org).await.unwrap().unwrap();
    assert!(account.subscribed());
    // The same event again (a redelivery) changes nothing, even if the account moved on since.
    w.h.store
        .apply_billing_event(
            "evt_2",
            "invoice.payment_failed",
            chrono::Utc::now(),
            &w.customer().await,
            AccountChange::PaymentFailed { at: chrono::Utc::now() },
        )
        .await
        .unwrap();
    assert_eq!(w.subscribe("evt_1", "canceled").await, EventOutcome::Duplicate);
    let again = w.h.store.billing_account(w.org).await.unwrap().unwrap();
    assert_eq!(again.subscription.as_ref().map(|s| s.status.as_str()), Some("active"));
    assert!(again.payment_failed_at.is_some());

    // An older subscription event delivered late does not undo a newer one.
    let stale = Subscription {
        id: "sub_1MowQVLkdIwHu7ixeRlqHVzs".into(),
        status: "incomplete".into(),
        current_period_end: None,
        prices: vec![],
    };
    let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let customer = w.customer().await;
    let late = AccountChange::Subscription(stale);
    w.h.store
        .apply_billing_event("evt_old", "customer.subscription.created", an_hour_ago, &customer, late)
        .await
        .unwrap();
    let account = w.h.store.billing_account(w.org).await.unwrap().unwrap();
    assert_eq!(account.subscription.as_ref().map(|s| s.status.as_str()), Some("active"));

    let unknown =
        w.h.store
            .apply_billing_event(
                "evt_3",
                "customer.deleted",
                chrono::Utc::now(),
                "cus_nobody",
                AccountChange::CustomerDeleted,
            )
            .await
            .unwrap();
    assert_eq!(unknown, EventOutcome::UnknownCustomer);
    assert!(w.h.store.record_billing_event("evt_4", "charge.succeeded").await.unwrap());
    assert!(!w.h.store.record_billing_event("evt_4", "charge.succeeded").await.unwrap());

    let deleted =
        w.h.store
            .apply_billing_event(
                "evt_5",
                "customer.deleted",
                chrono::Utc::now(),
                &w.customer().await,
                AccountChange::CustomerDeleted,
            )
            .await
            .unwrap();
    assert_eq!(deleted, EventOutcome::Applied { org: w.org });
    let account = w.h.store.billing_account(w.org).await.unwrap().unwrap();
    assert_eq!((account.customer_id, account.subscription), (None, None));
}

fn refusal_code(result: Result<Job, Error>) -> &'static str {
    match result {
        Err(Error::PaymentRequired { code, .. }) => code,
        other => panic!("expected a payment refusal, got {other:?}"),
    }
}

async fn the_free_allowance_then_a_subscription_then_the_spend_cap_decide_new_jobs(w: World) {
    for n in 1..=3 {
        w.job(n).await.unwrap();
    }
    let before = w.h.store.count_queued_jobs(w.org).await.unwrap();
    assert_eq!(refusal_code(w.job(4).await), "quota_exceeded");
    assert_eq!(w.h.store.count_queued_jobs(w.org).await.unwrap(), before, "nothing was enqueued");
    let status = w.core.billing_status(&w.admin, w.org).await.unwrap();
    assert_eq!((status.period_jobs, status.free_jobs_left, status.accepting_jobs), (3, Some(0), false));
    assert!(status.refusal.unwrap().contains("free allowance of 3 jobs"));

    w.subscribe("evt_active", "active").await;
    let job = w.job(4).await.unwrap();
    assert!(w.core.billing_status(&w.admin, w.org).await.unwrap().accepting_jobs);

    // The org admin caps this month's spending; above the deployment's cap is refused.
    let too_high = w.core.set_spend_cap(&w.admin, w.org, Some(60_000_000)).await;
    assert!(matches!(too_high, Err(Error::InvalidInput(ref m)) if m.contains("spend_cap_micros")), "{too_high:?}");
    w.core.set_spend_cap(&w.admin, w.org, Some(1_000_000)).await.unwrap();
    w.spend(&job, UsageId::new(), (1, 1), 999_999).await;
    w.job(5).await.unwrap();
    w.spend(&job, UsageId::new(), (1, 1), 1).await;
    assert_eq!(refusal_code(w.job(6).await), "quota_exceeded");
    let status = w.core.billing_status(&w.admin, w.org).await.unwrap();
    assert!(status.refusal.unwrap().contains("spend cap of 1.00"));
    w.core.set_spend_cap(&w.admin, w.org, None).await.unwrap();
    w.job(6).await.unwrap();

    // Viewers and developers do not manage billing.
    let developer = Actor::user(w.h.user("dev").await, w.org, aicd_core::tenancy::Role::Developer);
    assert!(matches!(w.core.billing_status(&developer, w.org).await, Err(Error::Forbidden { .. })));
}

async fn a_failed_payment_refuses_new_jobs_after_the_grace_period_until_paid(w: World) {
    w.subscribe("evt_active", "active").await;
    let customer = w.customer().await;
    let recently = chrono::Utc::now() - chrono::Duration::days(1);
    w.h.store
        .apply_billing_event(
            "evt_failed",
            "invoice.payment_failed",
            chrono::Utc::now(),
            &customer,
            AccountChange::PaymentFailed { at: recently },
        )
        .await
        .unwrap();
    w.job(1).await.expect("still within the grace period");

    // A payment that failed four days ago (grace: three) refuses new work.
    let (other, _, other_admin) = w.h.org_with_admin("Late payer").await;
    let w = World { org: other.id, admin: other_admin, repo: w.repo.clone(), ..w };
    let repo = w
        .core
        .create_repo(
            &w.admin,
            w.org,
            NewRepo {
                full_name: "local/late".into(),
                source: RepoSource::Local { path: w.h.local_path("late") },
                default_branch: None,
                settings: None,
            },
        )
        .await
        .unwrap();
    let w = World { repo, ..w };
    w.subscribe("evt_active_2", "active").await;
    let long_ago = chrono::Utc::now() - chrono::Duration::days(4);
    let customer = w.customer().await;
    w.h.store
        .apply_billing_event(
            "evt_failed_2",
            "invoice.payment_failed",
            chrono::Utc::now(),
            &customer,
            AccountChange::PaymentFailed { at: long_ago },
        )
        .await
        .unwrap();
    assert_eq!(refusal_code(w.job(1).await), "payment_required");
    w.h.store
        .apply_billing_event("evt_paid", "invoice.paid", chrono::Utc::now(), &customer, AccountChange::PaymentSucceeded)
        .await
        .unwrap();
    w.job(1).await.expect("accepted once paid");
}

async fn merged_pull_requests_are_billed_once_and_closed_ones_never(w: World) {
    w.core.billing_account(w.org).await.unwrap();
    w.h.store.set_pricing_mode(w.org, PricingMode::MergedPullRequests).await.unwrap();
    let merged = w.pr_open(1).await;
    let closed = w.pr_open(2).await;
    let intake = w.core.github_intake();
    let number = |job: &Job| job.checkpoints.pull_request.as_ref().unwrap().number;
    // Each `pull_request.closed` delivery twice (a redelivery).
    for _ in 0..2 {
        intake.close_pull_request(w.org, w.repo.id, number(&merged), true).await.unwrap();
        intake.close_pull_request(w.org, w.repo.id, number(&closed), false).await.unwrap();
    }
    let outbox = w.h.store.list_outbox(w.org).await.unwrap();
    let prs: Vec<_> = outbox.iter().filter(|e| e.meter == Meter::MergedPullRequests).collect();
    assert_eq!(prs.len(), 1, "{outbox:#?}");
    assert_eq!((prs[0].job_id, prs[0].value), (Some(merged.id), 1));
    assert!(outbox.iter().all(|e| e.meter == Meter::MergedPullRequests), "only merges are metered: {outbox:#?}");
    w.dispatcher("d").run_once().await.unwrap();
    assert_eq!(w.provider.total("aicd_merged_pull_requests", &w.customer().await), 1);
}

async fn opened_pull_requests_are_billed_once_per_job(w: World) {
    w.core.billing_account(w.org).await.unwrap();
    w.h.store.set_pricing_mode(w.org, PricingMode::PullRequests).await.unwrap();
    let job = w.pr_open(1).await;
    let outbox = w.h.store.list_outbox(w.org).await.unwrap();
    assert_eq!(
        outbox.iter().map(|e| (e.meter, e.value, e.job_id)).collect::<Vec<_>>(),
        [(Meter::PullRequests, 1, Some(job.id))]
    );
    w.core
        .github_intake()
        .close_pull_request(w.org, w.repo.id, job.checkpoints.pull_request.unwrap().number, true)
        .await
        .unwrap();
    assert_eq!(w.h.store.list_outbox(w.org).await.unwrap().len(), 1, "a merge is not a second pull request");
}
