//! What an agent is told about the task: the issue, the repository and the
//! budget.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Budget, NoProgress, ProgressSink, RepoView};

/// The issue an agent is asked to resolve.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Issue {
    /// The issue number in its tracker, if it has one.
    #[serde(default)]
    pub number: Option<u64>,
    /// The issue title.
    pub title: String,
    /// The issue body (Markdown), as written by its author.
    pub body: String,
    /// A link to the issue, if it has one.
    #[serde(default)]
    pub url: Option<String>,
    /// The login of the issue's author, if known.
    #[serde(default)]
    pub author: Option<String>,
}

impl Issue {
    /// An issue with a title and body and no number, link or author.
    pub fn new(title: impl Into<String>, body: impl Into<String>) -> Self {
        Self { number: None, title: title.into(), body: body.into(), url: None, author: None }
    }

    /// Sets the issue number.
    #[must_use]
    pub fn with_number(mut self, number: u64) -> Self {
        self.number = Some(number);
        self
    }

    /// Sets the issue link.
    #[must_use]
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Sets the issue author.
    #[must_use]
    pub fn with_author(mut self, author: impl Into<String>) -> Self {
        self.author = Some(author.into());
        self
    }
}

/// The coordinates of the repository being changed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RepoRef {
    /// `owner/name`, e.g. `"aicd-dev/aicd"`.
    pub full_name: String,
    /// The branch changes are based on and proposed against, e.g. `"main"`.
    pub default_branch: String,
}

impl RepoRef {
    /// A repository reference from its full name and default branch.
    pub fn new(full_name: impl Into<String>, default_branch: impl Into<String>) -> Self {
        Self { full_name: full_name.into(), default_branch: default_branch.into() }
    }
}

/// Everything an agent needs for one job.
///
/// Cloning is cheap (reference counts and a small `Copy` budget), so the
/// orchestrator can hand a copy to each step. The budget is a snapshot: the
/// orchestrator refreshes it with [`TaskContext::with_budget`] between calls.
#[derive(Clone)]
pub struct TaskContext {
    job_id: Arc<str>,
    issue: Arc<Issue>,
    repo: Arc<RepoRef>,
    budget: Budget,
    repo_view: Arc<dyn RepoView>,
    progress: Arc<dyn ProgressSink>,
}

impl TaskContext {
    /// A context for job `job_id` on `issue` in `repo`, with the read-only
    /// `repo_view` of the base commit.
    pub fn new(
        job_id: impl Into<String>,
        issue: Issue,
        repo: RepoRef,
        budget: Budget,
        repo_view: Arc<dyn RepoView>,
    ) -> Self {
        Self {
            job_id: Arc::from(job_id.into()),
            issue: Arc::new(issue),
            repo: Arc::new(repo),
            budget,
            repo_view,
            progress: Arc::new(NoProgress),
        }
    }

    /// The job's identifier, for logs and correlation.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The issue to resolve.
    pub fn issue(&self) -> &Issue {
        &self.issue
    }

    /// The repository being changed.
    pub fn repo(&self) -> &RepoRef {
        &self.repo
    }

    /// The budget as of when this context was made.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// The read-only view of the repository at the base commit.
    pub fn repo_view(&self) -> &Arc<dyn RepoView> {
        &self.repo_view
    }

    /// Where to report progress and spending during the step ([`ProgressSink`]); a sink that
    /// drops everything unless the caller gave one ([`TaskContext::with_progress`]).
    pub fn progress(&self) -> &dyn ProgressSink {
        self.progress.as_ref()
    }

    /// The same context reporting progress to `progress`.
    #[must_use]
    pub fn with_progress(mut self, progress: Arc<dyn ProgressSink>) -> Self {
        self.progress = progress;
        self
    }

    /// The same context with `budget` in place of the current one.
    #[must_use]
    pub fn with_budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }

    /// Replaces the budget in place.
    pub fn set_budget(&mut self, budget: Budget) {
        self.budget = budget;
    }
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("job_id", &self.job_id)
            .field("issue", &self.issue)
            .field("repo", &self.repo)
            .field("budget", &self.budget)
            .field("repo_view_limits", &self.repo_view.limits())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryRepoView;

    #[test]
    fn clones_share_data_and_budget_is_replaceable() {
        let issue = Issue::new("t", "b").with_number(7).with_url("https://example.invalid/7").with_author("octo");
        let ctx = TaskContext::new(
            "job-1",
            issue.clone(),
            RepoRef::new("o/r", "main"),
            Budget::new(10, 10),
            Arc::new(MemoryRepoView::new()),
        );
        let other = ctx.clone().with_budget(Budget::unlimited());
        assert!(std::ptr::eq(ctx.issue(), other.issue()));
        assert_eq!(ctx.issue(), &issue);
        assert_eq!(ctx.job_id(), "job-1");
        assert_eq!(ctx.repo().full_name, "o/r");
        assert_eq!(ctx.budget().max_tokens, 10);
        assert_eq!(other.budget(), &Budget::unlimited());
        assert!(format!("{ctx:?}").contains("job-1"));
    }

    #[test]
    fn issue_options_default_when_missing() {
        let issue: Issue = serde_json::from_str(r#"{"title":"t","body":"b"}"#).unwrap();
        assert_eq!(issue, Issue::new("t", "b"));
        let json = serde_json::to_string(&issue.clone().with_number(3)).unwrap();
        let back: Issue = serde_json::from_str(&json).unwrap();
        assert_eq!(back.number, Some(3));
    }
}
