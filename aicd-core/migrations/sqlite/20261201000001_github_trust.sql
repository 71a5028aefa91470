-- AI-CD: GitHub trust (SQLite). Same tables and columns as the PostgreSQL migration of the same
-- name (see there); SQLite cannot relax a NOT NULL column, so github_commands is rebuilt.

CREATE TABLE github_install_states (
    nonce_hash BLOB PRIMARY KEY NOT NULL,
    org_id     BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT
) STRICT;
CREATE INDEX github_install_states_org_idx ON github_install_states (org_id, expires_at);

ALTER TABLE repositories ADD COLUMN detached_at TEXT;
-- The first registration of a local path keeps it; later ones (other organizations, allowed by
-- earlier versions) get a path that no longer opens.
UPDATE repositories SET local_path = local_path || '#duplicate-' || hex(id)
WHERE kind = 'local' AND EXISTS (
    SELECT 1 FROM repositories o
    WHERE o.kind = 'local' AND o.local_path = repositories.local_path
      AND (o.created_at < repositories.created_at OR (o.created_at = repositories.created_at AND o.id < repositories.id))
);
CREATE UNIQUE INDEX repositories_local_path_key ON repositories (local_path) WHERE kind = 'local';

ALTER TABLE github_installations ADD COLUMN linked_by TEXT;

ALTER TABLE webhook_deliveries ADD COLUMN body_sha256 BLOB;
CREATE UNIQUE INDEX webhook_deliveries_body_key ON webhook_deliveries (body_sha256);

CREATE TABLE github_commands_new (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id           BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    repo_id          BLOB NOT NULL,
    issue_number     INTEGER NOT NULL CHECK (issue_number > 0),
    command          TEXT NOT NULL CHECK (command IN ('run', 'cancel', 'retry')),
    trigger          TEXT NOT NULL DEFAULT 'comment' CHECK (trigger IN ('comment', 'label', 'assignment')),
    source_key       TEXT NOT NULL,
    login            TEXT NOT NULL,
    author_login     TEXT,
    comment_id       INTEGER CHECK (comment_id > 0),
    issue            TEXT,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'done', 'refused', 'failed')),
    error            TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (org_id, comment_id),
    UNIQUE (org_id, source_key),
    CHECK (command <> 'run' OR issue IS NOT NULL),
    CHECK (trigger <> 'comment' OR comment_id IS NOT NULL),
    FOREIGN KEY (org_id, repo_id) REFERENCES repositories (org_id, id) ON DELETE CASCADE
) STRICT;
INSERT INTO github_commands_new (id, org_id, repo_id, issue_number, command, trigger, source_key, login,
    comment_id, issue, status, error, attempts, lease_owner, lease_expires_at, created_at, updated_at)
SELECT id, org_id, repo_id, issue_number, command, 'comment', 'comment:' || comment_id, login,
    comment_id, issue, status, error, attempts, lease_owner, lease_expires_at, created_at, updated_at
FROM github_commands;
DROP TABLE github_commands;
ALTER TABLE github_commands_new RENAME TO github_commands;
CREATE INDEX github_commands_pending_idx ON github_commands (id) WHERE status = 'pending';
