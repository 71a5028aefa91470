// A job driven to PR_OPEN by an agent written in JavaScript, followed live, with its usage
// recorded, and hidden from another organization.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { AicdError, Worker } from '../lib/sdk.mjs';
import { BACKENDS, FAST, USAGE, freshStore, git, orgWithRepo, toyAgent } from './helpers.mjs';

for (const backend of BACKENDS) {
  describe(backend, () => {
    it('a JavaScript agent drives a job to PR_OPEN, followed live, with its usage recorded', async () => {
      const store = await freshStore(backend);
      try {
        const client = await store.open();
        assert.equal(client.backend, backend);
        const { session, repo, repoPath } = await orgWithRepo(client, store.root);
        const orgs = await session.orgs();
        assert.equal(orgs[0].org.name, 'Acme');
        assert.equal(orgs[0].role, 'org_admin');
        assert.equal((await session.repos.get(repo.id)).full_name, 'acme/widgets');
        assert.equal((await session.repos.list()).length, 1);

        const job = await session.jobs.create({ repo_id: repo.id, issue: { title: 'Add a greeting' } });
        assert.equal(job.state, 'queued');
        const followed = (async () => {
          const events = [];
          for await (const event of session.jobs.follow(job.id)) events.push(event);
          return events;
        })();

        const agent = toyAgent();
        await new Worker(client, agent, FAST).runUntilIdle();

        const done = await session.jobs.get(job.id);
        assert.equal(done.state, 'pr_open', JSON.stringify(done));
        const branch = done.checkpoints.pull_request.branch;
        assert.ok(git(repoPath, 'branch', '--list', branch).includes(branch), `branch ${branch} exists`);
        assert.equal(git(repoPath, 'show', `${branch}:hello.txt`), 'Hello from Add a greeting\n');
        assert.deepEqual(agent.calls, { plan: 1, code: 1, review: 1 });

        // Every state change, in order, each once; the iterator ends at PR_OPEN.
        const events = await followed;
        const states = events.filter((e) => e.to_state).map((e) => e.to_state);
        assert.deepEqual(states, ['planning', 'coding', 'reviewing', 'pr_open']);
        const ids = events.map((e) => e.id);
        assert.ok(ids.every((id, i) => i === 0 || ids[i - 1] < id), `in order: ${ids}`);
        const timeline = await session.jobs.events(job.id);
        assert.deepEqual(timeline.slice(0, ids.length).map((e) => e.id), ids);

        // The agent's three steps are what the job spent and what the usage report shows.
        assert.equal(done.budget.spent_tokens, 3 * (USAGE.input_tokens + USAGE.output_tokens), JSON.stringify(done.budget));
        assert.equal(done.budget.spent_cost_micros, 3 * USAGE.cost_micros);
        const usage = await session.usage({ to: new Date(Date.now() + 60_000) });
        assert.equal(usage.totals.input_tokens, 3 * USAGE.input_tokens, JSON.stringify(usage));
        assert.equal(usage.totals.output_tokens, 3 * USAGE.output_tokens);

        const page = await session.jobs.list({ state: 'pr_open' });
        assert.equal(page.items.length, 1);
      } finally {
        await store.cleanup();
      }
    });

    it("another organization's key cannot read the job: not_found", async () => {
      const store = await freshStore(backend);
      try {
        const client = await store.open();
        const { session, repo } = await orgWithRepo(client, store.root, 'Acme');
        const job = await session.jobs.create({ repo_id: repo.id, issue: { title: 'Secret work' } });
        const other = await client.asKey((await client.bootstrap('Globex')).apiKey);
        await assert.rejects(other.jobs.get(job.id), (e) => e instanceof AicdError && e.code === 'not_found');
        await assert.rejects(other.repos.get(repo.id), (e) => e instanceof AicdError && e.code === 'not_found');
        assert.deepEqual(await other.repos.list(), []);
        // Other failures are AicdErrors with their codes too.
        await assert.rejects(client.asKey('aicd_not-a-key'), (e) => e instanceof AicdError && e.code === 'unauthenticated');
        await assert.rejects(session.call('jobs.explode'), (e) => e instanceof AicdError && e.code === 'invalid_input');
        await assert.rejects(
          session.jobs.create({ repo_id: repo.id, isue: {} }),
          (e) => e.code === 'invalid_input' && e.message.includes('isue'),
        );
      } finally {
        await store.cleanup();
      }
    });
  });
}
