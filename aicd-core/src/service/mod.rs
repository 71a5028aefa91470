//! [`Core`]: the services the shells call. Every tenant-scoped operation takes the [`Actor`]
//! authenticated at the edge, checks its permission against the role table, and only then touches
//! the store, scoped to the organization.

mod jobs;
mod repos;
mod tenancy;

pub use tenancy::KEY_USE_RESOLUTION;

use std::sync::Arc;

use crate::signals::{Doorbell, EventBus};
use crate::store::Store;
use crate::tenancy::{Actor, Permission, authorize};
use crate::{OrgId, Result};

/// Settings of the core services.
#[derive(Clone, Debug, Default)]
pub struct CoreOptions {
    /// Whether repositories on the local disk may be registered. The embedded default allows them;
    /// a shared deployment must not (they would let a tenant read the server's disk).
    pub allow_local_repos: bool,
    /// Where local repositories may be registered (none by default): a path is registered in its
    /// canonical form, under one of these, and belongs to one organization.
    pub local_roots: crate::forge::LocalRoots,
    /// What the deployment's operator allows every organization; tenants cannot raise these.
    pub limits: Limits,
    /// How the deployment bills; `None`: nothing is metered or refused for payment.
    pub billing: Option<crate::billing::BillingOptions>,
}

/// Limits set by the deployment's operator, not by tenants. Requests beyond them are refused
/// with the limit named: [`crate::Error::Invalid`] for a value above one, and
/// [`crate::Error::Conflict`] when an organization or user already has as much as allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The highest concurrency limit an organization may set (at most 1000; default 1000).
    pub max_concurrent_jobs: u32,
    /// The largest token budget of one job (default 20,000,000); a job asking for none gets the
    /// default budget, lowered to this if it is lower.
    pub max_job_tokens: u64,
    /// The largest cost budget of one job, in micro-units (default 200,000,000: 200 units).
    pub max_job_cost_micros: u64,
    /// How many QUEUED jobs an organization may have (default 10,000); a job created by the API
    /// beyond it is refused. Concurrent creations may pass it by a few.
    pub max_queued_jobs: u64,
    /// How many organizations a user may administer when creating another (default 20).
    pub max_orgs_per_user: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_concurrent_jobs: 1000,
            max_job_tokens: 20_000_000,
            max_job_cost_micros: 200_000_000,
            max_queued_jobs: 10_000,
            max_orgs_per_user: 20,
        }
    }
}

/// The core services over a [`Store`]. Cheap to clone.
#[derive(Clone)]
pub struct Core {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) options: CoreOptions,
    doorbell: Option<Arc<dyn Doorbell>>,
    pub(crate) bus: Option<Arc<dyn EventBus>>,
    pub(crate) key_uses: Arc<tenancy::KeyUses>,
    pub(crate) billing: Option<Arc<dyn crate::billing::Billing>>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("options", &self.options).finish_non_exhaustive()
    }
}

impl Core {
    /// Core services over `store`.
    pub fn new(store: Arc<dyn Store>, options: CoreOptions) -> Self {
        Self { store, options, doorbell: None, bus: None, key_uses: Arc::default(), billing: None }
    }

    /// Rings `doorbell` whenever a job is queued, so idle workers start at once instead of at
    /// their next poll.
    pub fn with_doorbell(mut self, doorbell: Arc<dyn Doorbell>) -> Self {
        self.doorbell = Some(doorbell);
        self
    }

    /// Publishes the events this service appends (a cancellation, say) on `bus`, for live
    /// streams; the workers publish theirs.
    pub fn with_event_bus(mut self, bus: Arc<dyn EventBus>) -> Self {
        self.bus = Some(bus);
        self
    }

    pub(crate) async fn publish(&self, events: &[crate::jobs::JobEvent]) {
        if let Some(bus) = &self.bus {
            for event in events {
                bus.publish(event).await;
            }
        }
    }

    pub(crate) async fn job_queued(&self) {
        if let Some(doorbell) = &self.doorbell {
            doorbell.ring().await;
        }
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether `actor` holds `permission` in `org` by the role table: `Ok`, or the error every
    /// service would answer ([`crate::Error::NotFound`] for another org's actor,
    /// [`crate::Error::Forbidden`] for too low a role). For a shell that must refuse before it
    /// does anything else (such as saying what is not configured).
    pub fn check_permission(&self, actor: &Actor, org: OrgId, permission: Permission) -> Result<()> {
        self.authorize(actor, org, permission)
    }

    pub(crate) fn authorize(&self, actor: &Actor, org: OrgId, permission: Permission) -> Result<()> {
        let result = authorize(actor, org, permission);
        if let Err(err) = &result {
            tracing::debug!(actor = %actor.principal.label(), %org, %permission, %err, "denied");
        }
        result
    }
}
