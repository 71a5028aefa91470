-- AI-CD: the GitHub integration's data (PostgreSQL).
--
-- github_installations  the GitHub App installations an organization has linked; a webhook names
--                       an installation, never an org, so the system scope may look one up by id
--                       (read only: every write happens in the installation's org scope).
-- github_commands       `/aicd run|cancel|retry` comments, recorded by the webhook and carried
--                       out later by a worker once it has checked the author's write access
--                       (a GitHub API call the webhook request must not make).
--
-- Both tables hold tenant rows: row-level security is enabled and forced, as for the foundation's
-- tables, and the narrow system-scope policies below are the only cross-org access.

CREATE TABLE github_installations (
    installation_id bigint PRIMARY KEY CHECK (installation_id > 0),
    org_id          uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    account_login   text,
    suspended       boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX github_installations_org_idx ON github_installations (org_id, installation_id);

CREATE TABLE github_commands (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id           uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    repo_id          uuid NOT NULL,
    issue_number     bigint NOT NULL CHECK (issue_number > 0),
    command          text NOT NULL CHECK (command IN ('run', 'cancel', 'retry')),
    login            text NOT NULL,
    comment_id       bigint NOT NULL CHECK (comment_id > 0),
    issue            jsonb,
    status           text NOT NULL CHECK (status IN ('pending', 'done', 'refused', 'failed')),
    error            text,
    attempts         integer NOT NULL DEFAULT 0,
    lease_owner      text,
    lease_expires_at timestamptz,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    -- A redelivered comment is the same command.
    UNIQUE (org_id, comment_id),
    CHECK (command <> 'run' OR issue IS NOT NULL),
    FOREIGN KEY (org_id, repo_id) REFERENCES repositories (org_id, id) ON DELETE CASCADE
);
-- Claiming: the oldest pending command.
CREATE INDEX github_commands_pending_idx ON github_commands (id) WHERE status = 'pending';

-- An issue's jobs, newest first (the active one, the latest one to retry).
CREATE INDEX jobs_org_repo_issue_idx ON jobs (org_id, repo_id, issue_number, id DESC)
    WHERE issue_number IS NOT NULL;
-- The jobs waiting on a pull request (closing or merging it ends them).
CREATE INDEX jobs_pr_open_idx ON jobs (org_id, repo_id) WHERE state = 'pr_open';
-- A repository by GitHub id within an org (webhooks name repositories by GitHub id).
CREATE INDEX repositories_org_github_idx ON repositories (org_id, github_repo_id) WHERE kind = 'github';

ALTER TABLE github_installations ENABLE ROW LEVEL SECURITY;
ALTER TABLE github_installations FORCE ROW LEVEL SECURITY;
CREATE POLICY github_installations_tenant ON github_installations
    USING (org_id = aicd_current_org()) WITH CHECK (org_id = aicd_current_org());
-- A webhook names an installation, not an org: the system scope may find which org it belongs to.
CREATE POLICY github_installations_system_read ON github_installations FOR SELECT
    USING (aicd_system_scope());

ALTER TABLE github_commands ENABLE ROW LEVEL SECURITY;
ALTER TABLE github_commands FORCE ROW LEVEL SECURITY;
CREATE POLICY github_commands_tenant ON github_commands
    USING (org_id = aicd_current_org()) WITH CHECK (org_id = aicd_current_org());
-- The command worker claims the oldest pending command of any org (reading it, and writing its
-- lease); everything else it does happens in the command's org scope.
CREATE POLICY github_commands_system_read ON github_commands FOR SELECT
    USING (aicd_system_scope());
CREATE POLICY github_commands_system_claim ON github_commands FOR UPDATE
    USING (aicd_system_scope()) WITH CHECK (aicd_system_scope());

GRANT SELECT, INSERT, UPDATE, DELETE ON github_installations, github_commands TO aicd_app;
