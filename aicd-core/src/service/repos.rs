//! Repository registration.

use crate::repos::{NewRepo, RepoPatch, RepoSource, Repository};
use crate::tenancy::{Actor, Permission};
use crate::{Core, Error, OrgId, RepoId, Result};

impl Core {
    /// Registers a repository. Local-disk repositories need [`crate::CoreOptions::allow_local_repos`].
    pub async fn create_repo(&self, actor: &Actor, org: OrgId, repo: NewRepo) -> Result<Repository> {
        self.authorize(actor, org, Permission::RepoManage)?;
        if matches!(repo.source, RepoSource::Local { .. }) && !self.options.allow_local_repos {
            return Err(Error::invalid("local repositories are disabled on this deployment"));
        }
        self.store.create_repo(org, repo).await
    }

    /// Reads a repository.
    pub async fn get_repo(&self, actor: &Actor, org: OrgId, repo: RepoId) -> Result<Repository> {
        self.authorize(actor, org, Permission::RepoRead)?;
        self.store.get_repo(org, repo).await
    }

    /// Lists an organization's repositories.
    pub async fn list_repos(&self, actor: &Actor, org: OrgId) -> Result<Vec<Repository>> {
        self.authorize(actor, org, Permission::RepoRead)?;
        self.store.list_repos(org).await
    }

    /// Changes a repository's settings.
    pub async fn update_repo(&self, actor: &Actor, org: OrgId, repo: RepoId, patch: RepoPatch) -> Result<Repository> {
        self.authorize(actor, org, Permission::RepoManage)?;
        self.store.update_repo(org, repo, patch).await
    }

    /// Removes a repository and its jobs.
    pub async fn delete_repo(&self, actor: &Actor, org: OrgId, repo: RepoId) -> Result<()> {
        self.authorize(actor, org, Permission::RepoManage)?;
        self.store.delete_repo(org, repo).await
    }
}
