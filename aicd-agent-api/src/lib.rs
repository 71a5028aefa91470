#![doc = include_str!("../README.md")]

mod agent;
mod budget;
mod changeset;
mod context;
mod error;
pub mod host;
#[cfg(feature = "llm")]
pub mod llm;
mod plan;
mod progress;
mod repo_view;
mod review;
mod scripted;
pub mod testing;
mod usage;

pub use agent::{Agent, Output};
/// Re-export of the attribute macro implementors of [`Agent`] and
/// [`RepoView`] put on their `impl` blocks, so they need not depend on
/// `async-trait` themselves.
pub use async_trait::async_trait;
pub use budget::Budget;
pub use changeset::{ChangeOp, Changeset, FileChange};
pub use context::{Issue, RepoRef, TaskContext};
pub use error::{AgentError, Result};
pub use plan::{Plan, PlanStep};
pub use progress::{NoProgress, ProgressSink, RecordedProgress};
pub use repo_view::{ChangesetView, MemoryRepoView, RepoView, RepoViewError, RepoViewLimits, validate_repo_path};
pub use review::{Feedback, Review, Verdict};
pub use scripted::{DELETE_DIRECTIVE, ScriptError, ScriptedAgent, WRITE_DIRECTIVE, parse_script};
pub use usage::Usage;
