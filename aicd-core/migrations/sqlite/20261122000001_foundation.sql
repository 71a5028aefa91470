-- AI-CD foundation schema (SQLite, the embedded default).
-- Same tables and columns as the PostgreSQL schema: uuids are 16-byte BLOBs, timestamps are
-- RFC 3339 UTC text (which sorts in time order), JSON is text. SQLite has no row-level security:
-- isolation rests on the application scoping every query by org, which the shared conformance
-- suite proves for both backends.

CREATE TABLE orgs (
    id                  BLOB PRIMARY KEY NOT NULL,
    name                TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    max_concurrent_jobs INTEGER NOT NULL CHECK (max_concurrent_jobs BETWEEN 1 AND 1000),
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
) STRICT;

CREATE TABLE users (
    id         BLOB PRIMARY KEY NOT NULL,
    subject    TEXT NOT NULL UNIQUE,
    email      TEXT,
    name       TEXT,
    created_at TEXT NOT NULL
) STRICT;

CREATE TABLE memberships (
    org_id     BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('viewer', 'developer', 'org_admin')),
    created_at TEXT NOT NULL,
    PRIMARY KEY (org_id, user_id)
) STRICT;
CREATE INDEX memberships_user_idx ON memberships (user_id);

CREATE TABLE repositories (
    id                     BLOB PRIMARY KEY NOT NULL,
    org_id                 BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    kind                   TEXT NOT NULL CHECK (kind IN ('github', 'local')),
    full_name              TEXT NOT NULL,
    github_installation_id INTEGER,
    github_repo_id         INTEGER,
    local_path             TEXT,
    default_branch         TEXT NOT NULL,
    settings               TEXT NOT NULL DEFAULT '{}',
    created_at             TEXT NOT NULL,
    updated_at             TEXT NOT NULL,
    UNIQUE (org_id, full_name),
    UNIQUE (org_id, id),
    CHECK (kind <> 'github' OR (github_installation_id IS NOT NULL AND github_repo_id IS NOT NULL)),
    CHECK (kind <> 'local' OR local_path IS NOT NULL)
) STRICT;
CREATE INDEX repositories_github_idx ON repositories (github_repo_id) WHERE kind = 'github';

CREATE TABLE api_keys (
    id           BLOB PRIMARY KEY NOT NULL,
    org_id       BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('viewer', 'developer', 'org_admin')),
    prefix       TEXT NOT NULL,
    key_hash     BLOB NOT NULL,
    created_by   BLOB REFERENCES users (id) ON DELETE SET NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT,
    last_used_at TEXT,
    revoked_at   TEXT
) STRICT;
CREATE INDEX api_keys_prefix_idx ON api_keys (prefix);
CREATE INDEX api_keys_org_idx ON api_keys (org_id, created_at);

CREATE TABLE jobs (
    id                 BLOB PRIMARY KEY NOT NULL,
    org_id             BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    repo_id            BLOB NOT NULL,
    issue_number       INTEGER,
    issue_title        TEXT NOT NULL,
    issue_body         TEXT NOT NULL,
    issue_url          TEXT,
    issue_author       TEXT,
    trigger            TEXT NOT NULL CHECK (trigger IN ('label', 'comment', 'assignment', 'api')),
    state              TEXT NOT NULL CHECK (state IN ('queued', 'planning', 'coding', 'reviewing',
                                                      'pr_open', 'merged', 'closed', 'cancelled', 'failed')),
    attempts           TEXT NOT NULL DEFAULT '{}',
    review_round       INTEGER NOT NULL DEFAULT 0,
    budget_tokens      INTEGER NOT NULL,
    budget_cost_micros INTEGER NOT NULL,
    spent_tokens       INTEGER NOT NULL DEFAULT 0,
    spent_cost_micros  INTEGER NOT NULL DEFAULT 0,
    lease_owner        TEXT,
    lease_expires_at   TEXT,
    epoch              INTEGER NOT NULL DEFAULT 0,
    run_after          TEXT NOT NULL,
    cancel_requested   INTEGER NOT NULL DEFAULT 0,
    plan               TEXT,
    changeset          TEXT,
    review             TEXT,
    feedback           TEXT,
    pull_request       TEXT,
    progress_comment_id INTEGER,
    failure_reason     TEXT,
    created_by         TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    finished_at        TEXT,
    UNIQUE (org_id, id),
    FOREIGN KEY (org_id, repo_id) REFERENCES repositories (org_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX jobs_runnable_idx ON jobs (run_after)
    WHERE lease_owner IS NULL AND state IN ('queued', 'planning', 'coding', 'reviewing');
CREATE INDEX jobs_leased_idx ON jobs (lease_expires_at) WHERE lease_owner IS NOT NULL;
CREATE INDEX jobs_org_leased_idx ON jobs (org_id) WHERE lease_owner IS NOT NULL;
CREATE INDEX jobs_org_newest_idx ON jobs (org_id, id DESC);
CREATE INDEX jobs_org_repo_idx ON jobs (org_id, repo_id, id DESC);
CREATE UNIQUE INDEX jobs_one_active_per_issue_idx ON jobs (repo_id, issue_number)
    WHERE issue_number IS NOT NULL AND state IN ('queued', 'planning', 'coding', 'reviewing');

CREATE TABLE job_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id     BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    job_id     BLOB NOT NULL,
    at         TEXT NOT NULL,
    actor      TEXT NOT NULL,
    kind       TEXT NOT NULL,
    from_state TEXT,
    to_state   TEXT,
    message    TEXT NOT NULL,
    data       TEXT NOT NULL DEFAULT '{}',
    FOREIGN KEY (org_id, job_id) REFERENCES jobs (org_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX job_events_job_idx ON job_events (job_id, id);

CREATE TABLE usage_records (
    id            BLOB PRIMARY KEY NOT NULL,
    org_id        BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    job_id        BLOB REFERENCES jobs (id) ON DELETE SET NULL,
    repo_id       BLOB,
    step          TEXT NOT NULL,
    model         TEXT NOT NULL,
    input_tokens  INTEGER NOT NULL CHECK (input_tokens >= 0),
    output_tokens INTEGER NOT NULL CHECK (output_tokens >= 0),
    cost_micros   INTEGER NOT NULL CHECK (cost_micros >= 0),
    at            TEXT NOT NULL
) STRICT;
CREATE INDEX usage_records_org_at_idx ON usage_records (org_id, at);

CREATE TABLE webhook_deliveries (
    delivery_id     TEXT PRIMARY KEY NOT NULL,
    event           TEXT NOT NULL,
    action          TEXT,
    installation_id INTEGER,
    status          TEXT NOT NULL CHECK (status IN ('processing', 'processed', 'failed', 'ignored')),
    error           TEXT,
    attempts        INTEGER NOT NULL DEFAULT 1,
    received_at     TEXT NOT NULL,
    updated_at      TEXT NOT NULL
) STRICT;
