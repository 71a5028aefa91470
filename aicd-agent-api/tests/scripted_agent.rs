//! End-to-end behaviour of the scripted agent through the public API.

use std::sync::Arc;

use aicd_agent_api::testing::task_context;
use aicd_agent_api::{Agent, AgentError, ChangeOp, Changeset, FileChange, Plan, ScriptedAgent, Usage, Verdict};

const BODY: &str = "Two changes please.

```aicd:write src/greeting.rs
pub fn greeting() -> &'static str {
    \"hi\"
}
```

~~~aicd:delete src/old.rs
~~~
";

fn agent() -> Arc<dyn Agent> {
    Arc::new(ScriptedAgent::new())
}

#[tokio::test]
async fn plan_lists_one_step_per_block() {
    let out = agent().plan(&task_context(BODY)).await.unwrap();
    let plan = out.value;
    assert!(plan.summary.contains("2 scripted changes"), "{}", plan.summary);
    let steps: Vec<(&str, Option<&str>)> =
        plan.steps.iter().map(|s| (s.description.as_str(), s.path.as_deref())).collect();
    assert_eq!(steps, [("write src/greeting.rs", Some("src/greeting.rs")), ("delete src/old.rs", Some("src/old.rs"))]);
    assert_eq!(out.usage.model, "scripted");
    assert_eq!(out.usage.input_tokens, BODY.len().div_ceil(4) as u64);
    assert_eq!(out.usage.cost_micros, 0);
}

#[tokio::test]
async fn code_returns_the_blocks_and_review_approves() {
    let ctx = task_context(BODY);
    let agent = agent();
    assert_eq!(agent.name(), "scripted");
    let plan = agent.plan(&ctx).await.unwrap().value;
    let code = agent.code(&ctx, &plan, None).await.unwrap();
    let changeset: Changeset = code.value;
    assert_eq!(
        changeset.changes,
        [
            FileChange::write("src/greeting.rs", "pub fn greeting() -> &'static str {\n    \"hi\"\n}\n"),
            FileChange::delete("src/old.rs"),
        ]
    );
    assert_eq!(code.usage.output_tokens, changeset.total_bytes().div_ceil(4) as u64);
    let review = agent.review(&ctx, &plan, &changeset).await.unwrap();
    assert_eq!(review.value.verdict, Verdict::Approve);
    assert!(review.value.summary.contains("src/greeting.rs"));
}

#[tokio::test]
async fn single_change_summary_is_singular() {
    let ctx = task_context("```aicd:write a.txt\nA\n```");
    let plan = agent().plan(&ctx).await.unwrap().value;
    assert!(plan.summary.contains("1 scripted change "), "{}", plan.summary);
}

#[tokio::test]
async fn malformed_issues_fail_permanently_with_readable_messages() {
    let cases = [
        ("No blocks here.", "nothing to do"),
        ("```aicd:write a.txt\nnever closed\n", "line 1: the code block"),
        ("```aicd:write\nx\n```", "needs a path"),
        ("```aicd:delete a.txt\nx\n```", "must be empty"),
    ];
    for (body, expected) in cases {
        let ctx = task_context(body);
        for result in
            [agent().plan(&ctx).await.map(|_| ()), agent().code(&ctx, &Plan::default(), None).await.map(|_| ())]
        {
            let err = result.unwrap_err();
            assert!(matches!(err, AgentError::Permanent { .. }), "{body}: {err:?}");
            assert!(
                err.message().starts_with(expected) || err.message().contains(expected),
                "{body}: {}",
                err.message()
            );
        }
    }
}

#[tokio::test]
async fn binary_free_round_trip_through_json_checkpoint() {
    let ctx = task_context(BODY);
    let out = agent().code(&ctx, &Plan::default(), None).await.unwrap();
    let json = serde_json::to_string(&out).unwrap();
    let back: aicd_agent_api::Output<Changeset> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, out);
    assert!(matches!(back.value.changes[1].op, ChangeOp::Delete));
    let usage: Usage = back.usage;
    assert_eq!(usage, out.usage);
}
