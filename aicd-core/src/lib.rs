#![doc = include_str!("../README.md")]

pub mod billing;
pub mod deliveries;
pub mod diff;
pub mod embed;
mod error;
pub mod forge;
pub mod github;
mod ids;
pub mod jobs;
pub mod orchestrator;
pub mod policy;
pub mod repos;
mod service;
pub mod settings;
pub mod signals;
pub mod store;
pub mod tenancy;

pub use error::{Error, Result};
pub use ids::{ApiKeyId, JobId, OrgId, RepoId, UsageId, UserId};
pub use service::{Core, CoreOptions, KEY_USE_RESOLUTION, Limits};
