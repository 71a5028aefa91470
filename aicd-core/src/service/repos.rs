//! Repository registration.

use crate::repos::{NewRepo, RepoPatch, RepoSource, Repository};
use crate::tenancy::{Actor, Permission};
use crate::{Core, Error, OrgId, RepoId, Result};

impl Core {
    /// Registers a repository.
    ///
    /// A GitHub repository must name an App installation linked to the organization (or one
    /// tenant could act through another's installation). A local-disk repository needs
    /// [`crate::CoreOptions::allow_local_repos`] and a path under
    /// [`crate::CoreOptions::local_roots`]; it is registered at its canonical path, which no other
    /// organization may have registered. A path that cannot be used for any of these reasons is
    /// refused with the same [`Error::InvalidInput`], which never says why (the server's disk
    /// cannot be probed through it).
    pub async fn create_repo(&self, actor: &Actor, org: OrgId, mut repo: NewRepo) -> Result<Repository> {
        self.authorize(actor, org, Permission::RepoManage)?;
        match &repo.source {
            RepoSource::Local { path } => {
                if !self.options.allow_local_repos {
                    return Err(Error::invalid("local repositories are disabled on this deployment"));
                }
                let canonical = self.options.local_roots.resolve(path)?;
                let canonical = canonical.to_str().ok_or_else(|| Error::invalid("source.path must be valid UTF-8"))?;
                repo.source = RepoSource::Local { path: canonical.to_owned() };
            }
            RepoSource::Github { installation_id, .. } => {
                let linked = self.store.list_installations(org).await?;
                if !linked.iter().any(|i| i.installation_id == *installation_id) {
                    return Err(Error::invalid(format!(
                        "GitHub App installation {installation_id} is not linked to this organization"
                    )));
                }
            }
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
