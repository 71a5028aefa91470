//! The GitHub integration's storage port, [`GithubStore`], and its implementation for
//! [`SqlStore`].
//!
//! Installations are read across organizations in the system scope only; every write to them
//! happens in a second transaction scoped to the installation's org (so the system scope's
//! policy on PostgreSQL is read-only). Commands are claimed in the system scope like jobs are
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL, the single writer on SQLite).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::{
    Command, CommandId, CommandSource, CommandStatus, GithubAccess, GithubRepoId, GithubRepoInfo, InstallState,
    Installation, InstallationId, NewCommand, RepoSync, SkippedRepo, StartOutcome,
};
use crate::jobs::{IssueRef, Job, JobEvent, JobState, Lease, NewEvent, NewJob};
use crate::repos::{NewRepo, RepoSource, Repository};
use crate::store::connect::Scope;
use crate::store::jobs::{fetch_job, insert_event, lock_job};
use crate::store::rows::{JobRow, RepoRow, job_columns, repo_columns};
use crate::store::sql::{One, Tx, constraint_error, q};
use crate::store::{JobStore, SqlStore, now};
use crate::{Error, OrgId, RepoId, Result};

/// The GitHub integration: installations, the repositories that follow them, issue triggers and
/// comment commands (see [`crate::github`]).
///
/// Installations are looked up by id across organizations (a webhook names an installation, not
/// an org) and commands are claimed across organizations; every other method is scoped to an org.
#[async_trait]
pub trait GithubStore: Send + Sync {
    /// Links an installation to `org`, recording the account's login if given and who proved
    /// control of it (`linked_by`). Linking it again to the same org succeeds and changes nothing
    /// but the login and `linked_by`; [`crate::Error::Conflict`] if it is linked to another
    /// organization (which one is not revealed).
    async fn link_installation(
        &self,
        org: OrgId,
        installation_id: InstallationId,
        account_login: Option<String>,
        linked_by: &str,
    ) -> Result<Installation>;
    /// The organization's installations, by id.
    async fn list_installations(&self, org: OrgId) -> Result<Vec<Installation>>;
    /// Unlinks one of the organization's installations and detaches its repositories (kept, with
    /// their jobs' history), which are returned. [`crate::Error::NotFound`] if it is not linked to
    /// `org`.
    async fn unlink_installation(&self, org: OrgId, installation_id: InstallationId) -> Result<Vec<Repository>>;
    /// The installation with this id, whatever its organization (for webhooks); `None` if it is
    /// not linked.
    async fn find_installation(&self, installation_id: InstallationId) -> Result<Option<Installation>>;
    /// Marks an installation suspended or not; `None` if it is not linked.
    async fn set_installation_suspended(
        &self,
        installation_id: InstallationId,
        suspended: bool,
    ) -> Result<Option<Installation>>;
    /// Unlinks an installation whatever its organization (the App was uninstalled) and returns it
    /// with the repositories it detached. `None` if it was not linked.
    async fn remove_installation(
        &self,
        installation_id: InstallationId,
    ) -> Result<Option<(Installation, Vec<Repository>)>>;

    /// Records a pending link of an installation to `org` (the setup flow's state), by
    /// `created_by`, identified by the SHA-256 of its secret nonce; expired states of the org are
    /// pruned on the way.
    async fn create_install_state(
        &self,
        org: OrgId,
        nonce_hash: Vec<u8>,
        created_by: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<InstallState>;
    /// A pending link that may still be used: in `org`, not used, not expired. `None` otherwise.
    async fn find_install_state(&self, org: OrgId, nonce_hash: &[u8]) -> Result<Option<InstallState>>;
    /// Uses up a pending link started by `created_by` and links the installation as
    /// [`GithubStore::link_installation`] does, in one transaction: either both happen or
    /// neither (an installation linked elsewhere leaves the state usable, and fails with
    /// [`crate::Error::Conflict`]). `None`, linking nothing, when the state is not in `org`, was
    /// used, has expired, or was started by someone else.
    async fn link_installation_with_state(
        &self,
        org: OrgId,
        nonce_hash: &[u8],
        created_by: &str,
        installation_id: InstallationId,
        account_login: Option<String>,
        linked_by: &str,
    ) -> Result<Option<Installation>>;

    /// Brings the organization's repositories in line with an installation's: `added` ones are
    /// registered (or renamed, moved to this installation and reattached, if the org already has
    /// them by GitHub id), `removed` ones (GitHub ids) of this installation are detached (kept,
    /// with their jobs' history). Runs in one transaction, serialized per installation.
    /// [`crate::Error::NotFound`] if the installation is not linked to `org`.
    async fn sync_github_repos(
        &self,
        org: OrgId,
        installation_id: InstallationId,
        added: &[GithubRepoInfo],
        removed: &[GithubRepoId],
    ) -> Result<RepoSync>;
    /// The organization's repository with this GitHub id, if it has one.
    async fn find_github_repo(&self, org: OrgId, github_repo_id: GithubRepoId) -> Result<Option<Repository>>;
    /// How the organization's repository may be reached on GitHub now: its installation must be
    /// linked to `org` and not suspended, and the repository must not be detached.
    /// [`crate::Error::Rejected`] (`service` `github`) otherwise, saying which, so whoever was
    /// about to mint a token stops; [`crate::Error::NotFound`] if the org has no such repository.
    async fn github_access(&self, org: OrgId, repo: RepoId) -> Result<GithubAccess>;
    /// The repository's jobs that still have work to do (QUEUED to REVIEWING), oldest first.
    async fn unfinished_repo_jobs(&self, org: OrgId, repo: RepoId) -> Result<Vec<Job>>;

    /// The issue's active job (see [`crate::github::ACTIVE_STATES`]), if it has one.
    async fn active_issue_job(&self, org: OrgId, repo: RepoId, issue_number: u64) -> Result<Option<Job>>;
    /// The issue's most recent job, whatever its state.
    async fn latest_issue_job(&self, org: OrgId, repo: RepoId, issue_number: u64) -> Result<Option<Job>>;
    /// Queues a job for an issue (`job.issue.number` is required) unless the issue has an active
    /// job, which is returned instead. Safe under concurrency: of several calls racing for the
    /// same issue, one creates the job and the others get it as [`StartOutcome::AlreadyActive`].
    async fn start_issue_job(&self, org: OrgId, job: NewJob, created_by: &str) -> Result<StartOutcome>;
    /// Ends the repository's job in PR_OPEN whose pull request is `pr_number`: MERGED if `merged`,
    /// CLOSED otherwise, with a `state_changed` event by `actor`. `None` if no such job.
    async fn close_pull_request(
        &self,
        org: OrgId,
        repo: RepoId,
        pr_number: u64,
        merged: bool,
        actor: &str,
    ) -> Result<Option<(Job, JobEvent)>>;

    /// Records a comment command as pending; recording the same comment again returns the command
    /// already recorded. [`crate::Error::NotFound`] if the repository is not the org's.
    async fn enqueue_command(&self, org: OrgId, command: NewCommand) -> Result<Command>;
    /// Reads a command.
    async fn get_command(&self, org: OrgId, command: CommandId) -> Result<Command>;
    /// Claims the oldest pending command of any organization that no worker holds (or whose
    /// holder's lease expired): it is leased to `worker` for `lease` and its attempts counted.
    /// `None` when there is nothing to do.
    async fn claim_pending_command(&self, worker: &str, lease: chrono::Duration) -> Result<Option<Command>>;
    /// Records how a pending command ended (`status` must not be pending) and releases its lease.
    /// [`crate::Error::Conflict`] if it has already ended.
    async fn finish_command(
        &self,
        org: OrgId,
        command: CommandId,
        status: CommandStatus,
        error: Option<&str>,
    ) -> Result<Command>;
}

/// The states of [`crate::github::ACTIVE_STATES`], as an SQL list.
macro_rules! active_states_sql {
    () => {
        "('queued', 'planning', 'coding', 'reviewing', 'pr_open')"
    };
}

#[derive(sqlx::FromRow)]
struct InstallationRow {
    installation_id: i64,
    org_id: Uuid,
    account_login: Option<String>,
    suspended: bool,
    linked_by: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

macro_rules! installation_columns {
    () => {
        "installation_id, org_id, account_login, suspended, linked_by, created_at, updated_at"
    };
}

impl TryFrom<InstallationRow> for Installation {
    type Error = Error;
    fn try_from(r: InstallationRow) -> Result<Self> {
        Ok(Installation {
            installation_id: InstallationId::new(r.installation_id)
                .map_err(|_| Error::Corrupt(format!("installation id {}", r.installation_id)))?,
            org_id: r.org_id.into(),
            account_login: r.account_login,
            suspended: r.suspended,
            linked_by: r.linked_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct CommandRow {
    id: i64,
    org_id: Uuid,
    repo_id: Uuid,
    issue_number: i64,
    command: String,
    trigger: String,
    source_key: String,
    login: String,
    author_login: Option<String>,
    issue: Option<Json<IssueRef>>,
    status: String,
    error: Option<String>,
    attempts: i32,
    lease_owner: Option<String>,
    lease_expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

macro_rules! command_columns {
    () => {
        "id, org_id, repo_id, issue_number, command, trigger, source_key, login, author_login, issue, status, \
         error, attempts, lease_owner, lease_expires_at, created_at, updated_at"
    };
}

impl TryFrom<CommandRow> for Command {
    type Error = Error;
    fn try_from(r: CommandRow) -> Result<Self> {
        let corrupt =
            |what: &str, value: &dyn std::fmt::Display| Error::Corrupt(format!("command {}: {what} {value}", r.id));
        Ok(Command {
            id: CommandId(r.id),
            org_id: r.org_id.into(),
            repo_id: r.repo_id.into(),
            issue_number: u64::try_from(r.issue_number).map_err(|_| corrupt("issue number", &r.issue_number))?,
            command: r.command.parse().map_err(|_| corrupt("unknown command", &r.command))?,
            source: CommandSource::from_stored(&r.trigger, &r.source_key)
                .ok_or_else(|| corrupt("unknown source", &r.source_key))?,
            login: r.login,
            author_login: r.author_login,
            issue: r.issue.map(|j| j.0),
            status: r.status.parse().map_err(|_| corrupt("unknown status", &r.status))?,
            error: r.error,
            attempts: u32::try_from(r.attempts).map_err(|_| corrupt("attempts", &r.attempts))?,
            lease: match (r.lease_owner, r.lease_expires_at) {
                (Some(owner), Some(expires_at)) => Some(Lease { owner, expires_at }),
                _ => None,
            },
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// Links an installation to `org` within `tx` (see [`GithubStore::link_installation`]).
async fn link_in(
    tx: &mut Tx,
    org: OrgId,
    installation_id: InstallationId,
    account_login: Option<String>,
    linked_by: &str,
) -> Result<Installation> {
    let account_login =
        account_login.filter(|l| !l.trim().is_empty()).map(|l| crate::github::validate_login(l.trim())).transpose()?;
    let at = now();
    // The primary key spans every org: an installation linked elsewhere makes the insert do
    // nothing, and the org-scoped update below then finds no row of this org.
    let inserted: Option<InstallationRow> = tx
        .fetch_optional(
            q(concat!(
                "INSERT INTO github_installations (installation_id, org_id, account_login, suspended, \
                 linked_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) \
                 ON CONFLICT (installation_id) DO NOTHING RETURNING ",
                installation_columns!()
            ))
            .arg(installation_id)
            .arg(org)
            .arg(account_login.clone())
            .arg(false)
            .arg(linked_by)
            .arg(at),
        )
        .await
        .map_err(|e| constraint_error(e, "this installation is already linked", "organization"))?;
    let row = match inserted {
        Some(row) => row,
        None => tx
            .fetch_optional(
                q(concat!(
                    "UPDATE github_installations SET account_login = COALESCE($3, account_login), \
                     linked_by = $5, updated_at = $4 WHERE org_id = $1 AND installation_id = $2 RETURNING ",
                    installation_columns!()
                ))
                .arg(org)
                .arg(installation_id)
                .arg(account_login)
                .arg(at)
                .arg(linked_by),
            )
            .await?
            .ok_or_else(|| {
                Error::Conflict("this GitHub App installation is linked to another organization".to_owned())
            })?,
    };
    row.try_into()
}

#[derive(sqlx::FromRow)]
struct InstallStateRow {
    created_by: String,
    expires_at: DateTime<Utc>,
}

/// An issue number as stored (checked positive and in range).
fn issue_number(n: u64) -> Result<i64> {
    i64::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| Error::invalid("issue number must be a positive number"))
}

#[async_trait]
impl GithubStore for SqlStore {
    async fn link_installation(
        &self,
        org: OrgId,
        installation_id: InstallationId,
        account_login: Option<String>,
        linked_by: &str,
    ) -> Result<Installation> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let installation = link_in(&mut tx, org, installation_id, account_login, linked_by).await?;
        tx.commit().await?;
        Ok(installation)
    }

    async fn list_installations(&self, org: OrgId) -> Result<Vec<Installation>> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let rows: Vec<InstallationRow> = tx
            .fetch_all(
                q(concat!(
                    "SELECT ",
                    installation_columns!(),
                    " FROM github_installations WHERE org_id = $1 ORDER BY installation_id"
                ))
                .arg(org),
            )
            .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn unlink_installation(&self, org: OrgId, installation_id: InstallationId) -> Result<Vec<Repository>> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let deleted = tx
            .execute(
                q("DELETE FROM github_installations WHERE org_id = $1 AND installation_id = $2")
                    .arg(org)
                    .arg(installation_id),
            )
            .await?;
        if deleted == 0 {
            return Err(Error::not_found("installation"));
        }
        let detached = detach_repos(&mut tx, org, installation_id, None).await?;
        tx.commit().await?;
        Ok(detached)
    }

    async fn find_installation(&self, installation_id: InstallationId) -> Result<Option<Installation>> {
        let mut tx = self.begin(Scope::System).await?;
        let row: Option<InstallationRow> = tx
            .fetch_optional(
                q(concat!("SELECT ", installation_columns!(), " FROM github_installations WHERE installation_id = $1"))
                    .arg(installation_id),
            )
            .await?;
        row.map(TryInto::try_into).transpose()
    }

    async fn set_installation_suspended(
        &self,
        installation_id: InstallationId,
        suspended: bool,
    ) -> Result<Option<Installation>> {
        let Some(found) = self.find_installation(installation_id).await? else { return Ok(None) };
        let org = found.org_id;
        let mut tx = self.begin(Scope::Org(org)).await?;
        let row: Option<InstallationRow> = tx
            .fetch_optional(
                q(concat!(
                    "UPDATE github_installations SET suspended = $3, updated_at = $4 \
                     WHERE org_id = $1 AND installation_id = $2 RETURNING ",
                    installation_columns!()
                ))
                .arg(org)
                .arg(installation_id)
                .arg(suspended)
                .arg(now()),
            )
            .await?;
        tx.commit().await?;
        row.map(TryInto::try_into).transpose()
    }

    async fn remove_installation(
        &self,
        installation_id: InstallationId,
    ) -> Result<Option<(Installation, Vec<Repository>)>> {
        let Some(found) = self.find_installation(installation_id).await? else { return Ok(None) };
        let org = found.org_id;
        let mut tx = self.begin(Scope::Org(org)).await?;
        let row: Option<InstallationRow> = tx
            .fetch_optional(
                q(concat!(
                    "DELETE FROM github_installations WHERE org_id = $1 AND installation_id = $2 RETURNING ",
                    installation_columns!()
                ))
                .arg(org)
                .arg(installation_id),
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let detached = detach_repos(&mut tx, org, installation_id, None).await?;
        tx.commit().await?;
        Ok(Some((row.try_into()?, detached)))
    }

    async fn create_install_state(
        &self,
        org: OrgId,
        nonce_hash: Vec<u8>,
        created_by: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<InstallState> {
        let at = now();
        let mut tx = self.begin(Scope::Org(org)).await?;
        // States linger a day after they expire (for a reader of the table), then go.
        tx.execute(
            q("DELETE FROM github_install_states WHERE org_id = $1 AND expires_at < $2")
                .arg(org)
                .arg(at - chrono::Duration::days(1)),
        )
        .await?;
        tx.execute(
            q("INSERT INTO github_install_states (nonce_hash, org_id, created_by, created_at, expires_at) \
               VALUES ($1, $2, $3, $4, $5)")
            .arg(nonce_hash)
            .arg(org)
            .arg(created_by)
            .arg(at)
            .arg(expires_at),
        )
        .await?;
        tx.commit().await?;
        Ok(InstallState { org_id: org, created_by: created_by.to_owned(), expires_at })
    }

    async fn find_install_state(&self, org: OrgId, nonce_hash: &[u8]) -> Result<Option<InstallState>> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let row: Option<InstallStateRow> = tx
            .fetch_optional(
                q("SELECT created_by, expires_at FROM github_install_states \
                   WHERE org_id = $1 AND nonce_hash = $2 AND used_at IS NULL AND expires_at > $3")
                .arg(org)
                .arg(nonce_hash.to_vec())
                .arg(now()),
            )
            .await?;
        tx.commit().await?;
        Ok(row.map(|r| InstallState { org_id: org, created_by: r.created_by, expires_at: r.expires_at }))
    }

    async fn link_installation_with_state(
        &self,
        org: OrgId,
        nonce_hash: &[u8],
        created_by: &str,
        installation_id: InstallationId,
        account_login: Option<String>,
        linked_by: &str,
    ) -> Result<Option<Installation>> {
        let at = now();
        let mut tx = self.begin(Scope::Org(org)).await?;
        let used: Option<InstallStateRow> = tx
            .fetch_optional(
                q("UPDATE github_install_states SET used_at = $3 \
                   WHERE org_id = $1 AND nonce_hash = $2 AND created_by = $4 AND used_at IS NULL AND expires_at > $3 \
                   RETURNING created_by, expires_at")
                .arg(org)
                .arg(nonce_hash.to_vec())
                .arg(at)
                .arg(created_by),
            )
            .await?;
        if used.is_none() {
            return Ok(None);
        }
        // Dropping `tx` on an error rolls the state back to usable.
        let installation = link_in(&mut tx, org, installation_id, account_login, linked_by).await?;
        tx.commit().await?;
        Ok(Some(installation))
    }

    async fn sync_github_repos(
        &self,
        org: OrgId,
        installation_id: InstallationId,
        added: &[GithubRepoInfo],
        removed: &[GithubRepoId],
    ) -> Result<RepoSync> {
        let at = now();
        let mut sync = RepoSync::default();
        let mut tx = self.begin(Scope::Org(org)).await?;
        // Takes the installation's row lock (PostgreSQL) or the write lock (SQLite): syncs of one
        // installation run one after the other, so a repository is never registered twice.
        let locked = tx
            .execute(
                q("UPDATE github_installations SET updated_at = $3 WHERE org_id = $1 AND installation_id = $2")
                    .arg(org)
                    .arg(installation_id)
                    .arg(at),
            )
            .await?;
        if locked == 0 {
            return Err(Error::not_found("installation"));
        }
        for info in added {
            let checked = NewRepo {
                full_name: info.full_name.clone(),
                source: RepoSource::Github { installation_id, repo_id: info.repo_id },
                default_branch: info.default_branch.clone(),
                settings: None,
            }
            .validate();
            let repo = match checked {
                Ok(repo) => repo,
                Err(err) => {
                    sync.skipped.push(SkippedRepo { repo: info.clone(), reason: err.to_string() });
                    continue;
                }
            };
            let existing = github_repo(&mut tx, org, info.repo_id).await?;
            let name_taken: Option<One<Uuid>> = tx
                .fetch_optional(
                    q("SELECT id FROM repositories WHERE org_id = $1 AND full_name = $2 AND ($3 IS NULL OR id <> $3)")
                        .arg(org)
                        .arg(repo.full_name.as_str())
                        .arg(existing.as_ref().map(|r| r.id)),
                )
                .await?;
            if name_taken.is_some() {
                let reason = format!("another repository of the organization is named {}", repo.full_name);
                sync.skipped.push(SkippedRepo { repo: info.clone(), reason });
                continue;
            }
            let row: RepoRow = match existing {
                Some(existing) => {
                    tx.fetch_one(
                        q(concat!(
                            "UPDATE repositories SET full_name = $3, github_installation_id = $4, detached_at = NULL, \
                             updated_at = $5 WHERE org_id = $1 AND id = $2 RETURNING ",
                            repo_columns!()
                        ))
                        .arg(org)
                        .arg(existing.id)
                        .arg(repo.full_name)
                        .arg(installation_id)
                        .arg(at),
                    )
                    .await?
                }
                None => {
                    tx.fetch_one(
                        q(concat!(
                            "INSERT INTO repositories (id, org_id, kind, full_name, github_installation_id, \
                             github_repo_id, local_path, default_branch, settings, created_at, updated_at) \
                             VALUES ($1, $2, 'github', $3, $4, $5, NULL, $6, $7, $8, $8) RETURNING ",
                            repo_columns!()
                        ))
                        .arg(RepoId::new())
                        .arg(org)
                        .arg(repo.full_name)
                        .arg(installation_id)
                        .arg(info.repo_id)
                        .arg(repo.default_branch)
                        .arg(repo.settings)
                        .arg(at),
                    )
                    .await?
                }
            };
            sync.upserted.push(row.try_into()?);
        }
        if !removed.is_empty() {
            sync.detached = detach_repos(&mut tx, org, installation_id, Some(removed)).await?;
        }
        tx.commit().await?;
        Ok(sync)
    }

    async fn find_github_repo(&self, org: OrgId, github_repo_id: GithubRepoId) -> Result<Option<Repository>> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        github_repo(&mut tx, org, github_repo_id).await
    }

    async fn github_access(&self, org: OrgId, repo: RepoId) -> Result<GithubAccess> {
        #[derive(sqlx::FromRow)]
        struct AccessRow {
            kind: String,
            full_name: String,
            github_installation_id: Option<i64>,
            github_repo_id: Option<i64>,
            detached: bool,
            linked: bool,
            suspended: Option<bool>,
        }
        let mut tx = self.begin(Scope::Org(org)).await?;
        // Under row-level security another org's installation is invisible, and the join names
        // the org anyway: an installation linked elsewhere reads as not linked.
        let row: Option<AccessRow> = tx
            .fetch_optional(
                q("SELECT r.kind, r.full_name, r.github_installation_id, r.github_repo_id, \
                   r.detached_at IS NOT NULL AS detached, i.installation_id IS NOT NULL AS linked, i.suspended \
                   FROM repositories r LEFT JOIN github_installations i \
                   ON i.installation_id = r.github_installation_id AND i.org_id = r.org_id \
                   WHERE r.org_id = $1 AND r.id = $2")
                .arg(org)
                .arg(repo),
            )
            .await?;
        let row = row.ok_or(Error::not_found("repository"))?;
        let refuse = |message: String| Err(Error::Rejected { service: "github", message });
        let name = &row.full_name;
        let (Some(installation), Some(github_repo)) = (row.github_installation_id, row.github_repo_id) else {
            return refuse(format!("`{name}` is not a GitHub repository ({})", row.kind));
        };
        if row.detached {
            return refuse(format!(
                "`{name}` is detached from GitHub: its installation was unlinked or no longer grants access to it \
                 (link an installation that covers it to use it again)"
            ));
        }
        if !row.linked {
            return refuse(format!("the GitHub App installation of `{name}` is not linked to this organization"));
        }
        if row.suspended == Some(true) {
            return refuse(format!("the GitHub App installation of `{name}` is suspended on GitHub"));
        }
        let corrupt = |_| Error::Corrupt(format!("repository {repo} has an invalid GitHub id"));
        Ok(GithubAccess {
            installation_id: InstallationId::new(installation).map_err(corrupt)?,
            repo_id: GithubRepoId::new(github_repo).map_err(corrupt)?,
            full_name: row.full_name,
        })
    }

    async fn unfinished_repo_jobs(&self, org: OrgId, repo: RepoId) -> Result<Vec<Job>> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let rows: Vec<JobRow> = tx
            .fetch_all(
                q(concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs WHERE org_id = $1 AND repo_id = $2 \
                     AND state IN ('queued', 'planning', 'coding', 'reviewing') ORDER BY id"
                ))
                .arg(org)
                .arg(repo),
            )
            .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn active_issue_job(&self, org: OrgId, repo: RepoId, issue_number: u64) -> Result<Option<Job>> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let row: Option<JobRow> = tx
            .fetch_optional(
                q(concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs WHERE org_id = $1 AND repo_id = $2 AND issue_number = $3 AND state IN ",
                    active_states_sql!(),
                    " ORDER BY id DESC LIMIT 1"
                ))
                .arg(org)
                .arg(repo)
                .arg(self::issue_number(issue_number)?),
            )
            .await?;
        row.map(TryInto::try_into).transpose()
    }

    async fn latest_issue_job(&self, org: OrgId, repo: RepoId, issue_number: u64) -> Result<Option<Job>> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let row: Option<JobRow> = tx
            .fetch_optional(
                q(concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs WHERE org_id = $1 AND repo_id = $2 AND issue_number = $3 ORDER BY id DESC LIMIT 1"
                ))
                .arg(org)
                .arg(repo)
                .arg(self::issue_number(issue_number)?),
            )
            .await?;
        row.map(TryInto::try_into).transpose()
    }

    async fn start_issue_job(&self, org: OrgId, mut job: NewJob, created_by: &str) -> Result<StartOutcome> {
        job.issue = job.issue.validate()?;
        let Some(number) = job.issue.number else {
            return Err(Error::invalid("issue.number is required to start a job for an issue"));
        };
        // The partial unique index on jobs admits one job per issue in QUEUED to REVIEWING; a job
        // reaches PR_OPEN only from REVIEWING, so a job found in none of the active states here
        // cannot become one before the insert, and a racing insert loses on the index.
        for _ in 0..3 {
            if let Some(active) = self.active_issue_job(org, job.repo_id, number).await? {
                return Ok(StartOutcome::AlreadyActive(active));
            }
            match self.create_job(org, job.clone(), created_by).await {
                Ok(created) => return Ok(StartOutcome::Created(created)),
                // Another delivery created the issue's job first: report that one.
                Err(Error::Conflict(_)) => continue,
                Err(err) => return Err(err),
            }
        }
        Err(Error::Conflict(format!("issue #{number} already has an active job")))
    }

    async fn close_pull_request(
        &self,
        org: OrgId,
        repo: RepoId,
        pr_number: u64,
        merged: bool,
        actor: &str,
    ) -> Result<Option<(Job, JobEvent)>> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        // A repository has few jobs waiting on a pull request; the number is matched here rather
        // than in JSON SQL, which the two databases spell differently.
        let rows: Vec<JobRow> = tx
            .fetch_all(
                q(concat!(
                    "SELECT ",
                    job_columns!(),
                    " FROM jobs WHERE org_id = $1 AND repo_id = $2 AND state = 'pr_open' ORDER BY id"
                ))
                .arg(org)
                .arg(repo),
            )
            .await?;
        let mut found = None;
        for row in rows {
            let job: Job = row.try_into()?;
            if job.checkpoints.pull_request.as_ref().is_some_and(|pr| pr.number == pr_number) {
                found = Some(job.id);
                break;
            }
        }
        let Some(job) = found else { return Ok(None) };
        let current = lock_job(&mut tx, org, job).await?;
        if current.state != JobState::PrOpen {
            return Ok(None); // closed by a concurrent delivery
        }
        let to = if merged { JobState::Merged } else { JobState::Closed };
        current.state.check_transition(to)?;
        let at = now();
        tx.execute(
            q("UPDATE jobs SET state = $3, finished_at = $4, updated_at = $4 \
               WHERE org_id = $1 AND id = $2 AND state = 'pr_open'")
            .arg(org)
            .arg(job)
            .arg(to.as_str())
            .arg(at),
        )
        .await?;
        let verb = if merged { "merged" } else { "closed without merging" };
        let mut event = NewEvent::state_changed(actor, current.state, to)
            .with_data(serde_json::json!({ "pull_request": pr_number, "merged": merged }));
        event.message = format!("{} -> {}: pull request #{pr_number} {verb}", current.state, to);
        let event = insert_event(&mut tx, org, job, event).await?;
        if merged {
            crate::billing::enqueue_pull_request(&mut tx, org, job, crate::billing::Meter::MergedPullRequests, at)
                .await?;
        }
        let job = fetch_job(&mut tx, org, job).await?;
        tx.commit().await?;
        Ok(Some((job, event)))
    }

    async fn enqueue_command(&self, org: OrgId, command: NewCommand) -> Result<Command> {
        let command = command.validate()?;
        let source_key = command.source.key();
        let issue = command
            .issue
            .as_ref()
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| Error::invalid(format!("the issue cannot be stored: {e}")))?;
        let at = now();
        let mut tx = self.begin(Scope::Org(org)).await?;
        let inserted: Option<CommandRow> = tx
            .fetch_optional(
                q(concat!(
                    "INSERT INTO github_commands (org_id, repo_id, issue_number, command, trigger, source_key, login, \
                     author_login, comment_id, issue, status, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', $11, $11) \
                     ON CONFLICT DO NOTHING RETURNING ",
                    command_columns!()
                ))
                .arg(org)
                .arg(command.repo_id)
                .arg(issue_number(command.issue_number)?)
                .arg(command.command.as_str())
                .arg(command.source.trigger().as_str())
                .arg(source_key.as_str())
                .arg(command.login)
                .arg(command.author_login)
                .arg(command.source.comment_id())
                .arg(issue)
                .arg(at),
            )
            .await
            .map_err(|e| constraint_error(e, "this comment's command is already recorded", "repository"))?;
        let row = match inserted {
            Some(row) => row,
            None => {
                tx.fetch_one(
                    q(concat!(
                        "SELECT ",
                        command_columns!(),
                        " FROM github_commands WHERE org_id = $1 AND source_key = $2"
                    ))
                    .arg(org)
                    .arg(source_key.as_str()),
                )
                .await?
            }
        };
        tx.commit().await?;
        row.try_into()
    }

    async fn get_command(&self, org: OrgId, command: CommandId) -> Result<Command> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let row: Option<CommandRow> = tx
            .fetch_optional(
                q(concat!("SELECT ", command_columns!(), " FROM github_commands WHERE org_id = $1 AND id = $2"))
                    .arg(org)
                    .arg(command.0),
            )
            .await?;
        row.ok_or(Error::not_found("command"))?.try_into()
    }

    async fn claim_pending_command(&self, worker: &str, lease: chrono::Duration) -> Result<Option<Command>> {
        let at = now();
        let mut tx = self.begin(Scope::System).await?;
        let candidate_sql = match tx {
            // SKIP LOCKED: concurrent claimers pass over each other's candidates instead of waiting.
            Tx::Postgres(_) => {
                "SELECT id FROM github_commands WHERE status = 'pending' \
                 AND (lease_owner IS NULL OR lease_expires_at < $1) ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
            }
            // SQLite has one writer: the transaction alone serializes claims.
            Tx::Sqlite(_) => {
                "SELECT id FROM github_commands WHERE status = 'pending' \
                 AND (lease_owner IS NULL OR lease_expires_at < $1) ORDER BY id LIMIT 1"
            }
        };
        let candidate: Option<One<i64>> = tx.fetch_optional(q(candidate_sql).arg(at)).await?;
        let Some(One(id)) = candidate else { return Ok(None) };
        let row: CommandRow = tx
            .fetch_one(
                q(concat!(
                    "UPDATE github_commands SET lease_owner = $2, lease_expires_at = $3, attempts = attempts + 1, \
                     updated_at = $4 WHERE id = $1 RETURNING ",
                    command_columns!()
                ))
                .arg(id)
                .arg(worker)
                .arg(at + lease)
                .arg(at),
            )
            .await?;
        tx.commit().await?;
        row.try_into().map(Some)
    }

    async fn finish_command(
        &self,
        org: OrgId,
        command: CommandId,
        status: CommandStatus,
        error: Option<&str>,
    ) -> Result<Command> {
        if status == CommandStatus::Pending {
            return Err(Error::invalid("a command cannot be finished as pending"));
        }
        let mut tx = self.begin(Scope::Org(org)).await?;
        let row: Option<CommandRow> = tx
            .fetch_optional(
                q(concat!(
                    "UPDATE github_commands SET status = $3, error = $4, lease_owner = NULL, lease_expires_at = NULL, \
                     updated_at = $5 WHERE org_id = $1 AND id = $2 AND status = 'pending' RETURNING ",
                    command_columns!()
                ))
                .arg(org)
                .arg(command.0)
                .arg(status.as_str())
                .arg(error)
                .arg(now()),
            )
            .await?;
        let Some(row) = row else {
            let current: Option<One<String>> = tx
                .fetch_optional(
                    q("SELECT status FROM github_commands WHERE org_id = $1 AND id = $2").arg(org).arg(command.0),
                )
                .await?;
            return Err(match current {
                Some(One(status)) => Error::Conflict(format!("command {command} has already ended ({status})")),
                None => Error::not_found("command"),
            });
        };
        tx.commit().await?;
        row.try_into()
    }
}

/// Detaches the repositories of `installation` in `org` (only those of `only`, GitHub ids, if
/// given) that are not detached yet, and returns them as detached.
async fn detach_repos(
    tx: &mut Tx,
    org: OrgId,
    installation: InstallationId,
    only: Option<&[GithubRepoId]>,
) -> Result<Vec<Repository>> {
    let at = now();
    let mut rows: Vec<RepoRow> = Vec::new();
    match only {
        None => {
            rows = tx
                .fetch_all(
                    q(concat!(
                        "UPDATE repositories SET detached_at = $3, updated_at = $3 WHERE org_id = $1 \
                         AND kind = 'github' AND github_installation_id = $2 AND detached_at IS NULL RETURNING ",
                        repo_columns!()
                    ))
                    .arg(org)
                    .arg(installation)
                    .arg(at),
                )
                .await?;
        }
        Some(ids) => {
            for id in ids {
                rows.extend(
                    tx.fetch_all::<RepoRow>(
                        q(concat!(
                            "UPDATE repositories SET detached_at = $3, updated_at = $3 WHERE org_id = $1 \
                             AND kind = 'github' AND github_installation_id = $2 AND github_repo_id = $4 \
                             AND detached_at IS NULL RETURNING ",
                            repo_columns!()
                        ))
                        .arg(org)
                        .arg(installation)
                        .arg(at)
                        .arg(*id),
                    )
                    .await?,
                );
            }
        }
    }
    let mut detached = rows.into_iter().map(Repository::try_from).collect::<Result<Vec<_>>>()?;
    detached.sort_by_key(|r| r.id);
    Ok(detached)
}

/// The org's repository with this GitHub id (the oldest, should an org have registered one twice
/// by hand).
async fn github_repo(tx: &mut Tx, org: OrgId, github_repo_id: GithubRepoId) -> Result<Option<Repository>> {
    let row: Option<RepoRow> = tx
        .fetch_optional(
            q(concat!(
                "SELECT ",
                repo_columns!(),
                " FROM repositories WHERE org_id = $1 AND kind = 'github' AND github_repo_id = $2 ORDER BY id LIMIT 1"
            ))
            .arg(org)
            .arg(github_repo_id),
        )
        .await?;
    row.map(TryInto::try_into).transpose()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sql_list_of_active_states_matches_the_constant() {
        let listed: Vec<String> = crate::github::ACTIVE_STATES.iter().map(|s| format!("'{}'", s.as_str())).collect();
        assert_eq!(active_states_sql!(), format!("({})", listed.join(", ")));
    }
}
