-- Fair, index-driven claiming: each org's runnable, unheld jobs in claim order.
CREATE INDEX jobs_org_runnable_idx ON jobs (org_id, run_after, id)
    WHERE lease_owner IS NULL AND state IN ('queued', 'planning', 'coding', 'reviewing');
DROP INDEX jobs_runnable_idx;
CREATE INDEX jobs_org_state_idx ON jobs (org_id, state, id DESC);
-- The backlog gauge (`/metrics`) counts queued jobs only, not the whole table.
CREATE INDEX jobs_queued_idx ON jobs (run_after) WHERE state = 'queued';
