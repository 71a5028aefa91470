-- AI-CD: billing (SQLite). Same tables and columns as the PostgreSQL migration of the same name
-- (see there).

CREATE TABLE billing_accounts (
    org_id              BLOB PRIMARY KEY NOT NULL,
    mode                TEXT NOT NULL CHECK (mode IN ('tokens', 'cost', 'pull_requests', 'merged_pull_requests')),
    customer_id         TEXT UNIQUE,
    subscription_id     TEXT,
    subscription_status TEXT,
    subscription_prices TEXT,
    current_period_end  TEXT,
    subscription_at     TEXT,
    payment_failed_at   TEXT,
    spend_cap_micros    INTEGER CHECK (spend_cap_micros >= 0),
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
) STRICT;

CREATE TABLE billing_outbox (
    id               BLOB PRIMARY KEY NOT NULL,
    org_id           BLOB NOT NULL,
    job_id           BLOB,
    meter            TEXT NOT NULL CHECK (meter IN ('input_tokens', 'output_tokens', 'cost_micros',
                                                    'pull_requests', 'merged_pull_requests')),
    value            INTEGER NOT NULL,
    source_key       TEXT NOT NULL,
    occurred_at      TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'sent', 'parked')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    run_after        TEXT NOT NULL,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    epoch            INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    sent_at          TEXT,
    first_sent_at    TEXT,
    UNIQUE (org_id, source_key)
) STRICT;
CREATE INDEX billing_outbox_due_idx ON billing_outbox (run_after) WHERE status = 'pending';
CREATE INDEX billing_outbox_org_open_idx ON billing_outbox (org_id, status) WHERE status <> 'sent';

CREATE TABLE stripe_events (
    event_id    TEXT PRIMARY KEY NOT NULL,
    kind        TEXT NOT NULL,
    org_id      BLOB,
    received_at TEXT NOT NULL
) STRICT;
