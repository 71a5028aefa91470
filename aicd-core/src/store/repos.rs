//! [`RepoStore`] for [`SqlStore`].

use async_trait::async_trait;

use super::connect::Scope;
use super::rows::{RepoRow, repo_columns};
use super::sql::{constraint_error, is_unique_violation, q};
use super::{RepoStore, SqlStore, now};
use crate::repos::{NewRepo, RepoPatch, RepoSource, Repository};
use crate::{Error, OrgId, RepoId, Result};

#[async_trait]
impl RepoStore for SqlStore {
    async fn create_repo(&self, org: OrgId, repo: NewRepo) -> Result<Repository> {
        let repo = repo.validate()?;
        let (installation, github_id, path) = match &repo.source {
            RepoSource::Github { installation_id, repo_id } => (Some(*installation_id), Some(*repo_id), None),
            RepoSource::Local { path } => (None, None, Some(path.clone())),
        };
        let repo_path = path.clone();
        let at = now();
        let mut tx = self.begin(Scope::Org(org)).await?;
        let row: RepoRow = tx
            .fetch_one(
                q(concat!(
                    "INSERT INTO repositories (id, org_id, kind, full_name, github_installation_id, github_repo_id, \
                     local_path, default_branch, settings, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING ",
                    repo_columns!()
                ))
                .arg(RepoId::new())
                .arg(org)
                .arg(repo.source.kind())
                .arg(repo.full_name)
                .arg(installation)
                .arg(github_id)
                .arg(path)
                .arg(repo.default_branch)
                .arg(repo.settings)
                .arg(at),
            )
            .await
            .map_err(|e| {
                // A local path belongs to one organization: its conflict says no more than that the
                // path cannot be used (another org's use of it is not for this one to learn).
                if is_unique_violation(&e) && e.to_string().contains("local_path") {
                    let path = repo_path.as_deref().unwrap_or_default();
                    return Error::invalid(format!(
                        "`{path}` is not an accessible repository under this server's repository roots"
                    ));
                }
                constraint_error(e, "a repository with this name is already registered", "organization")
            })?;
        tx.commit().await?;
        row.try_into()
    }

    async fn get_repo(&self, org: OrgId, repo: RepoId) -> Result<Repository> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let row: Option<RepoRow> = tx
            .fetch_optional(
                q(concat!("SELECT ", repo_columns!(), " FROM repositories WHERE org_id = $1 AND id = $2"))
                    .arg(org)
                    .arg(repo),
            )
            .await?;
        row.ok_or(Error::not_found("repository"))?.try_into()
    }

    async fn list_repos(&self, org: OrgId) -> Result<Vec<Repository>> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let rows: Vec<RepoRow> = tx
            .fetch_all(
                q(concat!("SELECT ", repo_columns!(), " FROM repositories WHERE org_id = $1 ORDER BY full_name"))
                    .arg(org),
            )
            .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn update_repo(&self, org: OrgId, repo: RepoId, patch: RepoPatch) -> Result<Repository> {
        let patch = patch.validate()?;
        let mut tx = self.begin(Scope::Org(org)).await?;
        let row: Option<RepoRow> = tx
            .fetch_optional(
                q(concat!(
                    "UPDATE repositories SET default_branch = COALESCE($3, default_branch), \
                     settings = COALESCE($4, settings), updated_at = $5 \
                     WHERE org_id = $1 AND id = $2 RETURNING ",
                    repo_columns!()
                ))
                .arg(org)
                .arg(repo)
                .arg(patch.default_branch)
                .arg(patch.settings)
                .arg(now()),
            )
            .await?;
        tx.commit().await?;
        row.ok_or(Error::not_found("repository"))?.try_into()
    }

    async fn delete_repo(&self, org: OrgId, repo: RepoId) -> Result<()> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let deleted =
            tx.execute(q("DELETE FROM repositories WHERE org_id = $1 AND id = $2").arg(org).arg(repo)).await?;
        if deleted == 0 {
            return Err(Error::not_found("repository"));
        }
        tx.commit().await
    }
}
