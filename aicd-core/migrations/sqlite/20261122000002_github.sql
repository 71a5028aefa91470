-- AI-CD: the GitHub integration's data (SQLite). Same tables and columns as the PostgreSQL
-- migration of the same name; SQLite has no row-level security, so isolation rests on every
-- query being scoped by org.

CREATE TABLE github_installations (
    installation_id INTEGER PRIMARY KEY NOT NULL CHECK (installation_id > 0),
    org_id          BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    account_login   TEXT,
    suspended       INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
) STRICT;
CREATE INDEX github_installations_org_idx ON github_installations (org_id, installation_id);

CREATE TABLE github_commands (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id           BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    repo_id          BLOB NOT NULL,
    issue_number     INTEGER NOT NULL CHECK (issue_number > 0),
    command          TEXT NOT NULL CHECK (command IN ('run', 'cancel', 'retry')),
    login            TEXT NOT NULL,
    comment_id       INTEGER NOT NULL CHECK (comment_id > 0),
    issue            TEXT,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'done', 'refused', 'failed')),
    error            TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (org_id, comment_id),
    CHECK (command <> 'run' OR issue IS NOT NULL),
    FOREIGN KEY (org_id, repo_id) REFERENCES repositories (org_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX github_commands_pending_idx ON github_commands (id) WHERE status = 'pending';

CREATE INDEX jobs_org_repo_issue_idx ON jobs (org_id, repo_id, issue_number, id DESC)
    WHERE issue_number IS NOT NULL;
CREATE INDEX jobs_pr_open_idx ON jobs (org_id, repo_id) WHERE state = 'pr_open';
CREATE INDEX repositories_org_github_idx ON repositories (org_id, github_repo_id) WHERE kind = 'github';
