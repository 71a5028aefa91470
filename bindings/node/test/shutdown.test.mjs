// A worker in another process stopped by SIGTERM mid-job releases its lease at once, and
// another worker finishes the job.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { describe, it } from 'node:test';

import { Worker } from '../lib/sdk.mjs';
import { BACKENDS, FAST, freshStore, orgWithRepo, toyAgent } from './helpers.mjs';

const FIXTURE = path.join(import.meta.dirname, 'fixtures', 'blocking-worker.mjs');

for (const backend of BACKENDS) {
  describe(backend, () => {
    it('SIGTERM mid-job releases the lease; another worker finishes the job', async () => {
      const store = await freshStore(backend);
      try {
        const client = await store.open();
        const { session, repo } = await orgWithRepo(client, store.root);
        const job = await session.jobs.create({ repo_id: repo.id, issue: { title: 'Interrupted' } });

        const child = spawn(process.execPath, [FIXTURE, store.url, JSON.stringify(store.options)], {
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        let output = '';
        const blocked = new Promise((resolve, reject) => {
          child.stdout.on('data', (chunk) => {
            output += chunk;
            if (output.includes('blocked')) resolve();
          });
          child.on('exit', (code) => reject(new Error(`the worker exited early (${code}): ${output}`)));
        });
        await blocked;
        const held = await session.jobs.get(job.id);
        assert.equal(held.state, 'coding');
        assert.ok(held.lease, 'the child holds the lease while its agent works');

        const started = Date.now();
        const exited = once(child, 'exit');
        child.kill('SIGTERM');
        const [code] = await exited;
        assert.equal(code, 0, output);
        assert.match(output, /stopped/);
        const released = await session.jobs.get(job.id);
        assert.equal(released.lease, null, JSON.stringify(released));
        assert.ok(Date.now() - started < 10_000, 'released without waiting for the 120 s lease to expire');

        const agent = toyAgent();
        await new Worker(client, agent, FAST).runUntilIdle();
        const done = await session.jobs.get(job.id);
        assert.equal(done.state, 'pr_open', JSON.stringify(done));
        assert.equal(agent.calls.code, 1);
      } finally {
        await store.cleanup();
      }
    });
  });
}
