//! The planner's output: what the coder should do.

use serde::{Deserialize, Serialize};

/// A plan for resolving an issue, produced by [`Agent::plan`](crate::Agent::plan)
/// and handed to the coder and the critic.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Plan {
    /// A one-paragraph summary of the approach, readable by a person.
    pub summary: String,
    /// The steps, in order.
    pub steps: Vec<PlanStep>,
}

impl Plan {
    /// A plan with a summary and steps.
    pub fn new(summary: impl Into<String>, steps: Vec<PlanStep>) -> Self {
        Self { summary: summary.into(), steps }
    }
}

/// One step of a [`Plan`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PlanStep {
    /// What to do, readable by a person.
    pub description: String,
    /// The file the step is about, if it is about one file.
    #[serde(default)]
    pub path: Option<String>,
}

impl PlanStep {
    /// A step about no particular file.
    pub fn new(description: impl Into<String>) -> Self {
        Self { description: description.into(), path: None }
    }

    /// A step about the file at `path`.
    pub fn for_path(description: impl Into<String>, path: impl Into<String>) -> Self {
        Self { description: description.into(), path: Some(path.into()) }
    }
}
