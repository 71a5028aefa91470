//! The job state machine. The transition table below is the one place that decides what may
//! follow what; the store's compare-and-set and the orchestrator both consult it.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Where a job is in its life.
///
/// ```text
/// QUEUED -> PLANNING -> CODING -> REVIEWING -> PR_OPEN -> (MERGED | CLOSED)
///                         ^          |
///                         +----------+   the critic sends the coder back
/// QUEUED, PLANNING, CODING, REVIEWING -> CANCELLED | FAILED
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a worker.
    Queued,
    /// The planner is working.
    Planning,
    /// The coder is working (or the policy engine is checking its changes).
    Coding,
    /// The critic is reviewing; on approval the change is published.
    Reviewing,
    /// A pull request is open; the job waits for it to be merged or closed.
    PrOpen,
    /// The pull request was merged.
    Merged,
    /// The pull request was closed without merging.
    Closed,
    /// A person cancelled the job.
    Cancelled,
    /// The job failed; its failure reason says why.
    Failed,
}

/// The transition table: each state and the states that may follow it.
pub const TRANSITIONS: &[(JobState, &[JobState])] = {
    use JobState::*;
    &[
        (Queued, &[Planning, Cancelled, Failed]),
        (Planning, &[Coding, Cancelled, Failed]),
        // Coding -> Coding: the policy engine hands its violations back to the coder once.
        (Coding, &[Reviewing, Coding, Cancelled, Failed]),
        (Reviewing, &[PrOpen, Coding, Cancelled, Failed]),
        (PrOpen, &[Merged, Closed]),
        (Merged, &[]),
        (Closed, &[]),
        (Cancelled, &[]),
        (Failed, &[]),
    ]
};

impl JobState {
    /// Every state, in the order of a job's life.
    pub const ALL: [JobState; 9] = [
        JobState::Queued,
        JobState::Planning,
        JobState::Coding,
        JobState::Reviewing,
        JobState::PrOpen,
        JobState::Merged,
        JobState::Closed,
        JobState::Cancelled,
        JobState::Failed,
    ];

    /// The stable snake_case name used in the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Planning => "planning",
            JobState::Coding => "coding",
            JobState::Reviewing => "reviewing",
            JobState::PrOpen => "pr_open",
            JobState::Merged => "merged",
            JobState::Closed => "closed",
            JobState::Cancelled => "cancelled",
            JobState::Failed => "failed",
        }
    }

    /// The states that may follow this one.
    pub fn successors(self) -> &'static [JobState] {
        TRANSITIONS.iter().find(|(s, _)| *s == self).map_or(&[], |(_, next)| next)
    }

    /// Whether the table allows `self -> to`.
    pub fn can_transition_to(self, to: JobState) -> bool {
        self.successors().contains(&to)
    }

    /// `Ok` if the table allows `self -> to`, else [`Error::IllegalTransition`].
    pub fn check_transition(self, to: JobState) -> Result<()> {
        if self.can_transition_to(to) { Ok(()) } else { Err(Error::IllegalTransition { from: self, to }) }
    }

    /// Nothing may follow a terminal state.
    pub fn is_terminal(self) -> bool {
        self.successors().is_empty()
    }

    /// States in which a worker has work to do (and may hold a lease).
    pub fn is_runnable(self) -> bool {
        matches!(self, JobState::Queued | JobState::Planning | JobState::Coding | JobState::Reviewing)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| Error::invalid(format!("unknown job state `{s}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_exactly_one_row_in_the_table() {
        for state in JobState::ALL {
            assert_eq!(TRANSITIONS.iter().filter(|(s, _)| *s == state).count(), 1, "{state}");
        }
    }

    #[test]
    fn the_happy_path_is_allowed() {
        use JobState::*;
        for pair in [Queued, Planning, Coding, Reviewing, PrOpen, Merged].windows(2) {
            assert!(pair[0].can_transition_to(pair[1]), "{} -> {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn terminal_states_have_no_successors() {
        use JobState::*;
        for s in [Merged, Closed, Cancelled, Failed] {
            assert!(s.is_terminal());
            for to in JobState::ALL {
                assert!(s.check_transition(to).is_err());
            }
        }
        assert!(!PrOpen.is_terminal() && !PrOpen.is_runnable());
    }

    #[test]
    fn names_round_trip() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn any_state() -> impl Strategy<Value = JobState> {
        proptest::sample::select(JobState::ALL.to_vec())
    }

    proptest! {
        /// Whatever is requested, the states a job passes through are linked by table rows only,
        /// and once terminal it never moves again.
        #[test]
        fn no_sequence_of_requests_leaves_the_table(requests in proptest::collection::vec(any_state(), 0..64)) {
            let mut state = JobState::Queued;
            let mut terminal_at = None;
            for (i, to) in requests.into_iter().enumerate() {
                match state.check_transition(to) {
                    Ok(()) => {
                        prop_assert!(TRANSITIONS.iter().any(|(from, next)| *from == state && next.contains(&to)));
                        prop_assert!(terminal_at.is_none(), "moved after reaching a terminal state");
                        state = to;
                        if state.is_terminal() {
                            terminal_at = Some(i);
                        }
                    }
                    Err(Error::IllegalTransition { from, to: refused }) => {
                        prop_assert_eq!((from, refused), (state, to));
                    }
                    Err(other) => prop_assert!(false, "unexpected error {other}"),
                }
            }
        }
    }
}
