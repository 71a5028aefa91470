//! Behaviour of the agents in `aicd_agent_api::testing`.

use std::sync::Arc;
use std::time::Duration;

use aicd_agent_api::testing::{
    CountingAgent, FailingAgent, FlakyAgent, OverspendingAgent, RejectingAgent, SlowAgent, Step, task_context,
};
use aicd_agent_api::{Agent, Budget, Changeset, Feedback, Plan, ScriptedAgent, Verdict};

const BODY: &str = "```aicd:write a.txt\nA\n```\n";

#[tokio::test]
async fn flaky_fails_n_times_per_step_then_delegates() {
    let flaky = FlakyAgent::new(ScriptedAgent::new(), 2)
        .with_failures(Step::Review, 1)
        .with_retry_after(Duration::from_millis(10));
    let counts = flaky.counts();
    let agent: Arc<dyn Agent> = Arc::new(flaky);
    assert_eq!(agent.name(), "flaky(scripted)");
    let ctx = task_context(BODY);

    for _ in 0..2 {
        let err = agent.plan(&ctx).await.unwrap_err();
        assert!(err.is_transient());
        assert_eq!(err.retry_after(), Some(Duration::from_millis(10)));
    }
    let plan = agent.plan(&ctx).await.unwrap().value;
    // Code failures are counted separately from plan failures.
    assert!(agent.code(&ctx, &plan, None).await.unwrap_err().is_transient());
    assert!(agent.code(&ctx, &plan, None).await.is_err());
    let changeset = agent.code(&ctx, &plan, None).await.unwrap().value;
    assert!(agent.review(&ctx, &plan, &changeset).await.is_err());
    assert!(agent.review(&ctx, &plan, &changeset).await.is_ok());
    assert!(agent.plan(&ctx).await.is_ok());

    assert_eq!((counts.plan(), counts.code(), counts.review()), (4, 3, 2));
    assert_eq!(counts.total(), 9);
}

#[tokio::test]
async fn flaky_clones_share_counts() {
    let a = FlakyAgent::new(ScriptedAgent::new(), 1);
    let b = a.clone();
    let ctx = task_context(BODY);
    assert!(a.plan(&ctx).await.is_err());
    assert!(b.plan(&ctx).await.is_ok());
    assert_eq!(a.counts().plan(), 2);
}

#[tokio::test]
async fn failing_always_fails_permanently() {
    let failing = FailingAgent::new("model refused");
    let counts = failing.counts();
    let ctx = task_context(BODY);
    let plan = Plan::default();
    let errors = [
        failing.plan(&ctx).await.unwrap_err(),
        failing.code(&ctx, &plan, None).await.unwrap_err(),
        failing.review(&ctx, &plan, &Changeset::default()).await.unwrap_err(),
    ];
    for err in errors {
        assert!(err.is_permanent());
        assert_eq!(err.message(), "model refused");
    }
    assert_eq!(failing.name(), "failing");
    assert_eq!(counts.total(), 3);
}

#[tokio::test]
async fn rejecting_requests_changes_then_delegates() {
    let rejecting = RejectingAgent::new(ScriptedAgent::new(), 2).with_comment("add tests");
    let counts = rejecting.counts();
    let ctx = task_context(BODY);
    let plan = rejecting.plan(&ctx).await.unwrap().value;
    let changeset = rejecting.code(&ctx, &plan, None).await.unwrap().value;
    for round in 1..=2 {
        let review = rejecting.review(&ctx, &plan, &changeset).await.unwrap();
        assert_eq!(review.value.verdict, Verdict::RequestChanges, "round {round}");
        assert_eq!(review.value.comments, ["add tests"]);
        assert_eq!(review.usage.total_tokens(), 0);
    }
    let review = rejecting.review(&ctx, &plan, &changeset).await.unwrap();
    assert_eq!(review.value.verdict, Verdict::Approve);
    assert_eq!((counts.plan(), counts.code(), counts.review()), (1, 1, 3));
}

#[tokio::test]
async fn slow_sleeps_before_each_call() {
    let delay = Duration::from_millis(50);
    let slow = SlowAgent::new(ScriptedAgent::new(), delay);
    let counts = slow.counts();
    let ctx = task_context(BODY);
    let start = tokio::time::Instant::now();
    let plan = slow.plan(&ctx).await.unwrap().value;
    slow.code(&ctx, &plan, None).await.unwrap();
    assert!(start.elapsed() >= 2 * delay);
    // A timeout shorter than the delay fires first.
    let timed_out = tokio::time::timeout(Duration::from_millis(5), slow.plan(&ctx)).await;
    assert!(timed_out.is_err());
    assert_eq!(counts.plan(), 2);
    assert_eq!(counts.code(), 1);
}

#[tokio::test]
async fn overspending_inflates_usage_past_the_budget() {
    let over = OverspendingAgent::new(ScriptedAgent::new(), 1_000_000_000, u64::MAX);
    let counts = over.counts();
    let ctx = task_context(BODY);
    let out = over.plan(&ctx).await.unwrap();
    assert!(out.usage.output_tokens >= 1_000_000_000);
    assert_eq!(out.usage.cost_micros, u64::MAX);
    assert_eq!(out.usage.model, "scripted");
    let budget = Budget::new(1_000_000, 1_000_000);
    assert!(budget.would_exceed(&out.usage));
    // Errors pass through untouched.
    let empty = task_context("nothing");
    assert!(over.plan(&empty).await.unwrap_err().is_permanent());
    assert_eq!(counts.plan(), 2);
}

#[tokio::test]
async fn counting_records_calls_and_feedback() {
    let counting = CountingAgent::new(FailingAgent::new("boom"));
    let counts = counting.counts();
    let agent: Arc<dyn Agent> = Arc::new(counting.clone());
    let ctx = task_context(BODY);
    let plan = Plan::default();
    let feedback = Feedback::new(2, vec!["fix the typo".into()]);
    assert!(agent.code(&ctx, &plan, None).await.is_err());
    assert!(agent.code(&ctx, &plan, Some(&feedback)).await.is_err());
    assert!(agent.plan(&ctx).await.is_err());
    assert_eq!(counting.feedback_log(), [None, Some(feedback)]);
    assert_eq!((counts.plan(), counts.code(), counts.review()), (1, 2, 0));
    assert_eq!(counting.inner().counts().code(), 2);
    assert_eq!(agent.name(), "counting(failing)");
}

#[tokio::test]
async fn wrappers_compose() {
    let agent: Arc<dyn Agent> = Arc::new(FlakyAgent::new(RejectingAgent::new(ScriptedAgent::new(), 1), 1));
    assert_eq!(agent.name(), "flaky(rejecting(scripted))");
    let boxed: Box<dyn Agent> = Box::new(Arc::clone(&agent));
    assert_eq!(boxed.name(), agent.name());
}
