// How an agent's exceptions end: anything thrown is retried as transient; PermanentAgentError
// fails the job with its message.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { PermanentAgentError, Worker } from '../lib/sdk.mjs';
import { BACKENDS, FAST, freshStore, orgWithRepo, toyAgent } from './helpers.mjs';

for (const backend of BACKENDS) {
  describe(backend, () => {
    it('a thrown error is retried; PermanentAgentError fails the job with its message', async () => {
      const store = await freshStore(backend);
      try {
        const client = await store.open();
        const { session, repo } = await orgWithRepo(client, store.root);

        const flaky = toyAgent({
          code: (n) => {
            if (n === 1) throw new Error('connection reset by the model provider');
          },
        });
        const retried = await session.jobs.create({ repo_id: repo.id, issue: { title: 'Flaky' } });
        await new Worker(client, flaky, FAST).runUntilIdle();
        const done = await session.jobs.get(retried.id);
        assert.equal(done.state, 'pr_open', JSON.stringify(done));
        assert.equal(flaky.calls.code, 2, 'the code step ran again after the exception');
        const events = await session.jobs.events(retried.id);
        assert.ok(
          JSON.stringify(events).includes('connection reset by the model provider'),
          'the transient failure is in the timeline',
        );

        const refusing = toyAgent({
          code: () => {
            throw new PermanentAgentError('this issue asks for the impossible');
          },
        });
        const failed = await session.jobs.create({ repo_id: repo.id, issue: { title: 'Impossible' } });
        await new Worker(client, refusing, FAST).runUntilIdle();
        const job = await session.jobs.get(failed.id);
        assert.equal(job.state, 'failed', JSON.stringify(job));
        assert.equal(refusing.calls.code, 1, 'a permanent failure is not retried');
        assert.match(job.failure_reason, /this issue asks for the impossible/);
        const timeline = JSON.stringify(await session.jobs.events(failed.id));
        assert.match(timeline, /this issue asks for the impossible/);
      } finally {
        await store.cleanup();
      }
    });
  });
}
