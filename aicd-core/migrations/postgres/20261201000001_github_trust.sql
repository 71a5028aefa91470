-- AI-CD: GitHub trust (PostgreSQL).
--
-- github_install_states  the single-use half of the App's setup flow: an org admin asks for an
--                        install URL, and its signed `state` names one of these rows, which the
--                        setup redirect consumes (once, before it expires) to link the
--                        installation to that org.
-- repositories           `detached_at`: the repository's installation was unlinked, or no longer
--                        grants access to it; it keeps its jobs' history and no forge call reaches
--                        GitHub for it until an installation covering it is linked again.
--                        A local path belongs to one organization.
-- github_installations   `linked_by`: who proved control of the installation (an operator, or
--                        the GitHub user of the setup flow).
-- webhook_deliveries     `body_sha256`: a signed body replayed under another delivery id is the
--                        same delivery.
-- github_commands        every trigger that needs its sender's permission checked before a job
--                        starts: comments (`/aicd run|cancel|retry`), labels and assignments.
--                        `source_key` deduplicates (a comment id, or a delivery id);
--                        `author_login` is the issue's author when an opened issue carried the
--                        trigger label, who must be trusted too.

CREATE TABLE github_install_states (
    nonce_hash bytea PRIMARY KEY,
    org_id     uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX github_install_states_org_idx ON github_install_states (org_id, expires_at);

ALTER TABLE github_install_states ENABLE ROW LEVEL SECURITY;
ALTER TABLE github_install_states FORCE ROW LEVEL SECURITY;
CREATE POLICY github_install_states_tenant ON github_install_states
    USING (org_id = aicd_current_org()) WITH CHECK (org_id = aicd_current_org());
GRANT SELECT, INSERT, UPDATE, DELETE ON github_install_states TO aicd_app;

ALTER TABLE repositories ADD COLUMN detached_at timestamptz;
-- Backfills below run as the schema's owner, whom FORCE ROW LEVEL SECURITY would otherwise limit
-- to no organization (and so to no row); it is restored right after.
ALTER TABLE repositories NO FORCE ROW LEVEL SECURITY;
-- Earlier versions let two organizations register the same local path. The first registration
-- keeps it; later ones get a path that no longer opens (register them again at a path of their
-- own), so that a path belongs to one organization from here on.
UPDATE repositories r SET local_path = r.local_path || '#duplicate-' || r.id, updated_at = now()
WHERE r.kind = 'local' AND EXISTS (
    SELECT 1 FROM repositories o
    WHERE o.kind = 'local' AND o.local_path = r.local_path AND (o.created_at, o.id) < (r.created_at, r.id)
);
ALTER TABLE repositories FORCE ROW LEVEL SECURITY;
CREATE UNIQUE INDEX repositories_local_path_key ON repositories (local_path) WHERE kind = 'local';

ALTER TABLE github_installations ADD COLUMN linked_by text;

ALTER TABLE webhook_deliveries ADD COLUMN body_sha256 bytea;
CREATE UNIQUE INDEX webhook_deliveries_body_key ON webhook_deliveries (body_sha256);

ALTER TABLE github_commands ADD COLUMN trigger text NOT NULL DEFAULT 'comment'
    CHECK (trigger IN ('comment', 'label', 'assignment'));
ALTER TABLE github_commands ADD COLUMN source_key text;
ALTER TABLE github_commands ADD COLUMN author_login text;
ALTER TABLE github_commands NO FORCE ROW LEVEL SECURITY;
UPDATE github_commands SET source_key = 'comment:' || comment_id;
ALTER TABLE github_commands FORCE ROW LEVEL SECURITY;
ALTER TABLE github_commands ALTER COLUMN source_key SET NOT NULL;
ALTER TABLE github_commands ALTER COLUMN comment_id DROP NOT NULL;
ALTER TABLE github_commands ADD CONSTRAINT github_commands_source_key UNIQUE (org_id, source_key);
ALTER TABLE github_commands ADD CONSTRAINT github_commands_comment_has_id CHECK (trigger <> 'comment' OR comment_id IS NOT NULL);
