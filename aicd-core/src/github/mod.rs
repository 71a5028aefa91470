//! The GitHub integration's data and services: App installations linked to organizations, the
//! repositories that follow them, what starts a job for an issue, and `/aicd` commands (and other
//! triggers) waiting for their author's permission check.
//!
//! - [`domain`](self#types): the records ([`Installation`], [`Command`], ...) and their rules;
//! - the trigger settings ([`TriggerSettings`]) resolved from a repository's and its
//!   organization's settings;
//! - the services: organization admins list and unlink installations through [`crate::Core`]
//!   (permission [`crate::tenancy::Permission::IntegrationManage`]); the webhook intake and the
//!   command worker use [`GithubIntake`], which acts without an [`crate::tenancy::Actor`] and
//!   must only be handed verified webhook data;
//! - the storage port [`GithubStore`] and its SQL implementation.
//!
//! Everything here touches the database only (no GitHub API call), so a webhook request can
//! persist and enqueue within GitHub's 10 seconds.
//!
//! An issue has at most one *active* job (see [`ACTIVE_STATES`]): a trigger on an issue that has
//! one gets [`StartOutcome::AlreadyActive`], even when two deliveries race.

mod domain;
mod ids;
mod service;
mod store;
mod triggers;

pub use domain::*;
pub use ids::{GithubRepoId, InstallationId};
pub use service::GithubIntake;
pub use store::GithubStore;
pub use triggers::{DEFAULT_TRIGGER_LABEL, TriggerSettings};
