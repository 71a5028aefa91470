-- AI-CD foundation schema (PostgreSQL).
--
-- Tenant isolation has two walls: every query of the application is scoped by org, and every
-- table holding tenant data has row-level security ENABLED and FORCED. The application connects
-- as a member of the role `aicd_app`, which owns nothing and cannot bypass RLS; migrations run as
-- the owner. Per transaction the application sets:
--   app.org_id     the organization it acts in (tenant data is visible only for that org)
--   app.user_id    the user whose own memberships may be listed across orgs
--   app.key_prefix the lookup prefix of a presented API key (finds that key before its org is known)
--   app.scope      'system' for the dispatcher's cross-org claim and lease reaping (jobs, orgs only)
-- With nothing set, no tenant row is visible.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'aicd_app') THEN
        CREATE ROLE aicd_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL; -- created concurrently by another migration run against the same cluster
END
$$;

CREATE FUNCTION aicd_current_org() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.org_id', true), '')::uuid $$;

CREATE FUNCTION aicd_current_user() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.user_id', true), '')::uuid $$;

CREATE FUNCTION aicd_system_scope() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(current_setting('app.scope', true), '') = 'system' $$;

CREATE TABLE orgs (
    id                  uuid PRIMARY KEY,
    name                text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    max_concurrent_jobs integer NOT NULL CHECK (max_concurrent_jobs BETWEEN 1 AND 1000),
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);

CREATE TABLE users (
    id         uuid PRIMARY KEY,
    subject    text NOT NULL UNIQUE,
    email      text,
    name       text,
    created_at timestamptz NOT NULL
);

CREATE TABLE memberships (
    org_id     uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text NOT NULL CHECK (role IN ('viewer', 'developer', 'org_admin')),
    created_at timestamptz NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_user_idx ON memberships (user_id);

CREATE TABLE repositories (
    id                     uuid PRIMARY KEY,
    org_id                 uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    kind                   text NOT NULL CHECK (kind IN ('github', 'local')),
    full_name              text NOT NULL,
    github_installation_id bigint,
    github_repo_id         bigint,
    local_path             text,
    default_branch         text NOT NULL,
    settings               jsonb NOT NULL DEFAULT '{}',
    created_at             timestamptz NOT NULL,
    updated_at             timestamptz NOT NULL,
    UNIQUE (org_id, full_name),
    UNIQUE (org_id, id),
    CHECK (kind <> 'github' OR (github_installation_id IS NOT NULL AND github_repo_id IS NOT NULL)),
    CHECK (kind <> 'local' OR local_path IS NOT NULL)
);
CREATE INDEX repositories_github_idx ON repositories (github_repo_id) WHERE kind = 'github';

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    org_id       uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name         text NOT NULL,
    role         text NOT NULL CHECK (role IN ('viewer', 'developer', 'org_admin')),
    prefix       text NOT NULL,
    key_hash     bytea NOT NULL,
    created_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_prefix_idx ON api_keys (prefix);
CREATE INDEX api_keys_org_idx ON api_keys (org_id, created_at);

CREATE TABLE jobs (
    id                uuid PRIMARY KEY,
    org_id            uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    repo_id           uuid NOT NULL,
    issue_number      bigint,
    issue_title       text NOT NULL,
    issue_body        text NOT NULL,
    issue_url         text,
    issue_author      text,
    trigger           text NOT NULL CHECK (trigger IN ('label', 'comment', 'assignment', 'api')),
    state             text NOT NULL CHECK (state IN ('queued', 'planning', 'coding', 'reviewing',
                                                     'pr_open', 'merged', 'closed', 'cancelled', 'failed')),
    attempts          jsonb NOT NULL DEFAULT '{}',
    review_round      integer NOT NULL DEFAULT 0,
    budget_tokens     bigint NOT NULL,
    budget_cost_micros bigint NOT NULL,
    spent_tokens      bigint NOT NULL DEFAULT 0,
    spent_cost_micros bigint NOT NULL DEFAULT 0,
    lease_owner       text,
    lease_expires_at  timestamptz,
    epoch             bigint NOT NULL DEFAULT 0,
    run_after         timestamptz NOT NULL,
    cancel_requested  boolean NOT NULL DEFAULT false,
    plan              jsonb,
    changeset         jsonb,
    review            jsonb,
    feedback          jsonb,
    pull_request      jsonb,
    progress_comment_id bigint,
    failure_reason    text,
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    finished_at       timestamptz,
    UNIQUE (org_id, id),
    FOREIGN KEY (org_id, repo_id) REFERENCES repositories (org_id, id) ON DELETE CASCADE
);
-- Claiming: the oldest runnable job that nobody holds.
CREATE INDEX jobs_runnable_idx ON jobs (run_after)
    WHERE lease_owner IS NULL AND state IN ('queued', 'planning', 'coding', 'reviewing');
-- Reaping: leases by expiry; the per-org concurrency count.
CREATE INDEX jobs_leased_idx ON jobs (lease_expires_at) WHERE lease_owner IS NOT NULL;
CREATE INDEX jobs_org_leased_idx ON jobs (org_id) WHERE lease_owner IS NOT NULL;
-- An org's jobs, newest first (ids are time-ordered UUIDv7).
CREATE INDEX jobs_org_newest_idx ON jobs (org_id, id DESC);
CREATE INDEX jobs_org_repo_idx ON jobs (org_id, repo_id, id DESC);
-- At most one active job per issue of a repository.
CREATE UNIQUE INDEX jobs_one_active_per_issue_idx ON jobs (repo_id, issue_number)
    WHERE issue_number IS NOT NULL AND state IN ('queued', 'planning', 'coding', 'reviewing');

CREATE TABLE job_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id     uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    job_id     uuid NOT NULL,
    at         timestamptz NOT NULL,
    actor      text NOT NULL,
    kind       text NOT NULL,
    from_state text,
    to_state   text,
    message    text NOT NULL,
    data       jsonb NOT NULL DEFAULT '{}',
    FOREIGN KEY (org_id, job_id) REFERENCES jobs (org_id, id) ON DELETE CASCADE
);
CREATE INDEX job_events_job_idx ON job_events (job_id, id);

CREATE TABLE usage_records (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    job_id        uuid REFERENCES jobs (id) ON DELETE SET NULL,
    repo_id       uuid,
    step          text NOT NULL,
    model         text NOT NULL,
    input_tokens  bigint NOT NULL CHECK (input_tokens >= 0),
    output_tokens bigint NOT NULL CHECK (output_tokens >= 0),
    cost_micros   bigint NOT NULL CHECK (cost_micros >= 0),
    at            timestamptz NOT NULL
);
CREATE INDEX usage_records_org_at_idx ON usage_records (org_id, at);

-- Not tenant data: a delivery arrives before its installation is mapped to an org.
CREATE TABLE webhook_deliveries (
    delivery_id     text PRIMARY KEY,
    event           text NOT NULL,
    action          text,
    installation_id bigint,
    status          text NOT NULL CHECK (status IN ('processing', 'processed', 'failed', 'ignored')),
    error           text,
    attempts        integer NOT NULL DEFAULT 1,
    received_at     timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);

-- Row-level security: enabled and forced on every table with tenant rows.
ALTER TABLE orgs ENABLE ROW LEVEL SECURITY;
ALTER TABLE orgs FORCE ROW LEVEL SECURITY;
CREATE POLICY orgs_tenant ON orgs
    USING (id = aicd_current_org() OR aicd_system_scope())
    WITH CHECK (id = aicd_current_org());
CREATE POLICY orgs_member_read ON orgs FOR SELECT
    USING (id IN (SELECT m.org_id FROM memberships m WHERE m.user_id = aicd_current_user()));

ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY memberships_tenant ON memberships
    USING (org_id = aicd_current_org()) WITH CHECK (org_id = aicd_current_org());
CREATE POLICY memberships_own_read ON memberships FOR SELECT
    USING (user_id = aicd_current_user());

ALTER TABLE repositories ENABLE ROW LEVEL SECURITY;
ALTER TABLE repositories FORCE ROW LEVEL SECURITY;
CREATE POLICY repositories_tenant ON repositories
    USING (org_id = aicd_current_org()) WITH CHECK (org_id = aicd_current_org());

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY api_keys_tenant ON api_keys
    USING (org_id = aicd_current_org()) WITH CHECK (org_id = aicd_current_org());
CREATE POLICY api_keys_lookup ON api_keys FOR SELECT
    USING (prefix = nullif(current_setting('app.key_prefix', true), ''));
CREATE POLICY api_keys_touch ON api_keys FOR UPDATE
    USING (prefix = nullif(current_setting('app.key_prefix', true), ''))
    WITH CHECK (prefix = nullif(current_setting('app.key_prefix', true), ''));

ALTER TABLE jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE jobs FORCE ROW LEVEL SECURITY;
CREATE POLICY jobs_tenant ON jobs
    USING (org_id = aicd_current_org() OR aicd_system_scope())
    WITH CHECK (org_id = aicd_current_org() OR aicd_system_scope());

ALTER TABLE job_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE job_events FORCE ROW LEVEL SECURITY;
CREATE POLICY job_events_tenant ON job_events
    USING (org_id = aicd_current_org()) WITH CHECK (org_id = aicd_current_org());

ALTER TABLE usage_records ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_records FORCE ROW LEVEL SECURITY;
CREATE POLICY usage_records_tenant ON usage_records
    USING (org_id = aicd_current_org()) WITH CHECK (org_id = aicd_current_org());

-- The application role may read and write rows, and nothing else.
GRANT USAGE ON SCHEMA public TO aicd_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON orgs, users, memberships, repositories, api_keys, jobs,
    job_events, usage_records, webhook_deliveries TO aicd_app;
GRANT EXECUTE ON FUNCTION aicd_current_org(), aicd_current_user(), aicd_system_scope() TO aicd_app;
