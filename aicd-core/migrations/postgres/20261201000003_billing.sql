-- AI-CD: billing (PostgreSQL).
--
-- billing_accounts  one row per organization that is billed: how it is priced, its customer and
--                   subscription at the payment provider (as the provider's latest event about it
--                   said: `subscription_at` is that event's time, so an older event delivered
--                   late changes nothing; `subscription_prices`: its price ids, comma-separated),
--                   a failed payment not yet settled, and the monthly spend cap its admin set.
-- billing_outbox    every billable fact, one row per meter event to send, written in the same
--                   transaction as the usage record or state change it counts. A dispatcher
--                   claims due rows under a fenced lease (`epoch`) and marks them `sent` once the
--                   provider acknowledged them; the provider deduplicates on the row's id, so a
--                   row sent twice (a timeout, a crash before the acknowledgement was recorded)
--                   is counted once. `parked` rows were refused for good, with the reason, or
--                   still failed when the provider could no longer recognise a repeat
--                   (`first_sent_at` is when the row was first sent).
-- stripe_events     provider webhook events already applied (deduplication by event id).
--
-- Neither billing table references orgs: what an organization owes outlives the organization.

CREATE TABLE billing_accounts (
    org_id              uuid PRIMARY KEY,
    mode                text NOT NULL CHECK (mode IN ('tokens', 'cost', 'pull_requests', 'merged_pull_requests')),
    customer_id         text UNIQUE,
    subscription_id     text,
    subscription_status text,
    subscription_prices text,
    current_period_end  timestamptz,
    subscription_at     timestamptz,
    payment_failed_at   timestamptz,
    spend_cap_micros    bigint CHECK (spend_cap_micros >= 0),
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);

CREATE TABLE billing_outbox (
    id               uuid PRIMARY KEY,
    org_id           uuid NOT NULL,
    job_id           uuid,
    meter            text NOT NULL CHECK (meter IN ('input_tokens', 'output_tokens', 'cost_micros',
                                                    'pull_requests', 'merged_pull_requests')),
    value            bigint NOT NULL,
    source_key       text NOT NULL,
    occurred_at      timestamptz NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'sent', 'parked')),
    attempts         integer NOT NULL DEFAULT 0,
    run_after        timestamptz NOT NULL,
    lease_owner      text,
    lease_expires_at timestamptz,
    epoch            bigint NOT NULL DEFAULT 0,
    last_error       text,
    sent_at          timestamptz,
    first_sent_at    timestamptz,
    UNIQUE (org_id, source_key)
);
-- Claiming: pending rows by when they are due.
CREATE INDEX billing_outbox_due_idx ON billing_outbox (run_after) WHERE status = 'pending';
-- Reconciliation: what an organization has not had acknowledged.
CREATE INDEX billing_outbox_org_open_idx ON billing_outbox (org_id, status) WHERE status <> 'sent';

CREATE TABLE stripe_events (
    event_id    text PRIMARY KEY,
    kind        text NOT NULL,
    org_id      uuid,
    received_at timestamptz NOT NULL
);

ALTER TABLE billing_accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing_accounts FORCE ROW LEVEL SECURITY;
-- The system scope finds an account by its customer (a provider webhook) and the dispatcher reads
-- the accounts of the rows it sends.
CREATE POLICY billing_accounts_tenant ON billing_accounts
    USING (org_id = aicd_current_org() OR aicd_system_scope())
    WITH CHECK (org_id = aicd_current_org() OR aicd_system_scope());

ALTER TABLE billing_outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing_outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY billing_outbox_tenant ON billing_outbox
    USING (org_id = aicd_current_org() OR aicd_system_scope())
    WITH CHECK (org_id = aicd_current_org() OR aicd_system_scope());

-- Not tenant data (an event arrives before its account is known): only the system scope sees it.
ALTER TABLE stripe_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE stripe_events FORCE ROW LEVEL SECURITY;
CREATE POLICY stripe_events_system ON stripe_events
    USING (aicd_system_scope()) WITH CHECK (aicd_system_scope());

GRANT SELECT, INSERT, UPDATE, DELETE ON billing_accounts, billing_outbox, stripe_events TO aicd_app;
