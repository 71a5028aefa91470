-- Fair, index-driven claiming: each org's runnable, unheld jobs in claim order.
CREATE INDEX jobs_org_runnable_idx ON jobs (org_id, run_after, id)
    WHERE lease_owner IS NULL AND state IN ('queued', 'planning', 'coding', 'reviewing');
DROP INDEX jobs_runnable_idx;
CREATE INDEX jobs_org_state_idx ON jobs (org_id, state, id DESC);
