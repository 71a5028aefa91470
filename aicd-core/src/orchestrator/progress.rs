//! The text of the progress comment on the issue, and of the pull request.

use aicd_agent_api::{Plan, Review};

use crate::jobs::{Job, JobState};

/// The one comment on the issue, rewritten at every state change.
pub(crate) fn comment(job: &Job) -> String {
    let status = match job.state {
        JobState::Queued => "⏳ Queued".to_owned(),
        JobState::Planning => "🧭 Planning the change".to_owned(),
        JobState::Coding if job.review_round > 0 => format!("🛠️ Revising the change (round {})", job.review_round + 1),
        JobState::Coding => "🛠️ Writing the change".to_owned(),
        JobState::Reviewing => "🔎 Reviewing the change".to_owned(),
        JobState::PrOpen | JobState::Merged | JobState::Closed => match &job.checkpoints.pull_request {
            Some(pr) => format!("✅ Pull request opened: {}", pr.url),
            None => "✅ Pull request opened".to_owned(),
        },
        JobState::Cancelled => "🛑 Cancelled".to_owned(),
        JobState::Failed => {
            format!("❌ Failed: {}", job.failure_reason.as_deref().unwrap_or("no reason was recorded"))
        }
    };
    format!("**AI-CD** · job `{}`\n\n{status}\n", job.id)
}

/// The pull request's body: the issue it closes, the plan, the critic's verdict, and the spend.
pub(crate) fn pull_request_body(job: &Job, plan: &Plan, review: &Review) -> String {
    let mut body = String::new();
    if let Some(n) = job.issue.number {
        body.push_str(&format!("Closes #{n}\n\n"));
    }
    body.push_str(&format!("## Plan\n\n{}\n\n", plan.summary));
    for step in &plan.steps {
        body.push_str(&format!("- {}\n", step.description));
    }
    body.push_str(&format!("\n## Review\n\n{}\n", review.summary));
    for comment in &review.comments {
        body.push_str(&format!("- {comment}\n"));
    }
    body.push_str(&format!(
        "\n---\nJob `{}` · {} tokens · cost {}.{:06}\n",
        job.id,
        job.budget.spent_tokens,
        job.budget.spent_cost_micros / 1_000_000,
        job.budget.spent_cost_micros % 1_000_000
    ));
    body
}

/// The branch a job publishes to: derived from the job, so a retry finds the same one.
pub(crate) fn branch_name(job: &Job) -> String {
    // The last characters of a UUIDv7 are random; the first are a timestamp shared by neighbours.
    let id = job.id.as_uuid().simple().to_string();
    let short = &id[id.len() - 8..];
    match job.issue.number {
        Some(n) => format!("aicd/issue-{n}-{short}"),
        None => format!("aicd/job-{short}"),
    }
}
