//! What an agent reports while it works: short notes for the job's timeline, and what it spends
//! as it spends it.

use std::sync::Arc;

use crate::Usage;

/// Where an agent reports progress during a step, given in the [`TaskContext`](crate::TaskContext)
/// ([`TaskContext::progress`](crate::TaskContext::progress)).
///
/// Both methods return at once and never fail: reporting is best effort and must not slow the
/// agent down (the orchestrator queues notes and writes them to the job's timeline in the
/// background). Implementations must be cheap to call many times per step.
pub trait ProgressSink: Send + Sync {
    /// A short, human-readable line about what the agent is doing, shown live in the job's
    /// timeline: `"read src/parser.rs:1-120"`, `"searched \`fn parse\`"`, `"edit rejected: no
    /// match in src/lib.rs"`. Keep it to one line; long lines may be shortened.
    fn note(&self, message: &str);

    /// Usage the step has just consumed (one model call, say). The step's
    /// [`Output::usage`](crate::Output::usage) must still include it: a step that succeeds is
    /// charged its output's usage; one that fails is charged the sum of what it reported here.
    /// So an agent that calls a paid model several times per step should report each call as it
    /// completes, or a failure after ten calls would be free.
    fn spend(&self, usage: &Usage);
}

/// A sink that drops everything: the default of a [`TaskContext`](crate::TaskContext).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn note(&self, _message: &str) {}

    fn spend(&self, _usage: &Usage) {}
}

/// A sink that keeps what it is told, for tests and for callers that read the notes themselves.
#[derive(Debug, Default)]
pub struct RecordedProgress {
    state: std::sync::Mutex<(Vec<String>, Usage)>,
}

impl RecordedProgress {
    /// An empty record, shared.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The notes so far, in order.
    pub fn notes(&self) -> Vec<String> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0.clone()
    }

    /// The sum of the usage spent so far.
    pub fn spent(&self) -> Usage {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1.clone()
    }
}

impl ProgressSink for RecordedProgress {
    fn note(&self, message: &str) {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0.push(message.to_owned());
    }

    fn spend(&self, usage: &Usage) {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1.accumulate(usage);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_progress_keeps_notes_and_sums_spending() {
        let progress = RecordedProgress::new();
        progress.note("read a.txt");
        progress.spend(&Usage::new("m", 10, 2, 5));
        progress.spend(&Usage::new("m", 1, 1, 1));
        assert_eq!(progress.notes(), ["read a.txt"]);
        assert_eq!(progress.spent(), Usage::new("m", 11, 3, 6));
        NoProgress.note("dropped");
    }
}
