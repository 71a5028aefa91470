//! The text of the progress comment on the issue, and of the pull request.

use aicd_agent_api::{Plan, Review};

use crate::forge::rules::{MAX_MESSAGE_BYTES, fit_body, fit_title};
use crate::jobs::{Job, JobState};

/// What a text cut to fit a forge's limit points to.
const SEE_TIMELINE: &str = "The rest is in the job's timeline in AI-CD.";

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
    fit_body(&format!("**AI-CD** · job `{}`\n\n{status}\n", job.id), SEE_TIMELINE)
}

/// The pull request's title: the issue's title and number, fitted to the forges' limit (the
/// number always shows).
pub(crate) fn pull_request_title(job: &Job) -> String {
    match job.issue.number {
        Some(n) => fit_title(&job.issue.title, &format!(" (#{n})")),
        None => fit_title(&job.issue.title, ""),
    }
}

/// A commit message within the forges' limit, cut on a character boundary.
pub(crate) fn fit_commit_message(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.to_owned();
    }
    let mut end = MAX_MESSAGE_BYTES - 4;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n…\n", &message[..end])
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
    fit_body(&body, SEE_TIMELINE)
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
