//! The critic's output, and the feedback handed back to the coder.

use serde::{Deserialize, Serialize};

use crate::Changeset;

/// The critic's decision on a changeset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The changeset may be proposed as a pull request.
    Approve,
    /// The coder should try again, guided by the review's comments.
    RequestChanges,
}

/// A review of a changeset, produced by [`Agent::review`](crate::Agent::review).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Review {
    /// The decision.
    pub verdict: Verdict,
    /// A summary of the review, readable by a person.
    pub summary: String,
    /// Specific comments; with [`Verdict::RequestChanges`], what to fix.
    #[serde(default)]
    pub comments: Vec<String>,
}

impl Review {
    /// An approving review with no comments.
    pub fn approve(summary: impl Into<String>) -> Self {
        Self { verdict: Verdict::Approve, summary: summary.into(), comments: Vec::new() }
    }

    /// A review requesting the changes described by `comments`.
    pub fn request_changes(summary: impl Into<String>, comments: Vec<String>) -> Self {
        Self { verdict: Verdict::RequestChanges, summary: summary.into(), comments }
    }

    /// True when the verdict is [`Verdict::Approve`].
    pub fn is_approved(&self) -> bool {
        self.verdict == Verdict::Approve
    }
}

/// Feedback handed to the coder on a later round: the critic's comments or
/// the policy engine's violations, and the changeset they are about.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Feedback {
    /// The round the feedback was given in (the first coding round is 1).
    pub round: u32,
    /// What to fix, one note each, readable by a person.
    pub notes: Vec<String>,
    /// The changeset the feedback is about (the previous round's), when the orchestrator has it.
    /// A coder that builds on it works on the repository with these changes applied
    /// ([`ChangesetView`](crate::ChangesetView)) and returns a changeset that includes them, so
    /// what round one fixed survives what round two was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Changeset>,
}

impl Feedback {
    /// Feedback from `round` with `notes`.
    pub fn new(round: u32, notes: Vec<String>) -> Self {
        Self { round, notes, previous: None }
    }

    /// The same feedback about `changeset`.
    #[must_use]
    pub fn with_previous(mut self, changeset: Changeset) -> Self {
        self.previous = Some(changeset);
        self
    }

    /// Feedback from a review: its comments, or its summary when it has
    /// no comments.
    pub fn from_review(round: u32, review: &Review) -> Self {
        let notes = if review.comments.is_empty() { vec![review.summary.clone()] } else { review.comments.clone() };
        Self::new(round, notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_json_is_snake_case() {
        assert_eq!(serde_json::to_string(&Verdict::RequestChanges).unwrap(), "\"request_changes\"");
    }

    #[test]
    fn feedback_from_review() {
        let r = Review::request_changes("fix it", vec!["a".into(), "b".into()]);
        assert!(!r.is_approved());
        assert_eq!(Feedback::from_review(2, &r).notes, ["a", "b"]);
        let r = Review::request_changes("fix it", vec![]);
        assert_eq!(Feedback::from_review(1, &r), Feedback::new(1, vec!["fix it".into()]));
        assert!(Review::approve("ok").is_approved());
    }
}
