#![doc = include_str!("../README.md")]

pub mod app;
pub mod client;
pub mod commands;
mod error;
pub mod forge;
pub mod intake;
pub mod setup;
pub mod webhooks;

pub use app::{AppCredentials, DEFAULT_API_URL, InstallationToken, InstallationTokens, TokenPurpose, TokenScope};
pub use client::{InstallationClient, InstallationRepository, RepoPermission};
pub use commands::CommandProcessor;
pub use error::{Error, Result};
pub use forge::GitHubForge;
pub use intake::{Intake, VerifiedDelivery};
pub use setup::{InstallFlow, SetupSettings};
