// Not run in CI. What crossing the boundary costs:
// - jobs/s through a worker with an instant JavaScript agent vs the engine's scripted agent
//   (same jobs, same store), and the difference per agent call (three calls per job);
// - verifyWebhook vs an HMAC-SHA256 check with node:crypto.
//
//   node bench/bench.mjs [jobs=200]
import { execFileSync } from 'node:child_process';
import { createHmac, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { Client, Worker, verifyWebhook } from '../lib/sdk.mjs';

const JOBS = Number(process.argv[2] ?? 200);
const BODY = '```aicd:write hello.txt\nHello, world!\n```';

const instant = {
  name: 'instant',
  plan: async () => ({ value: { summary: 'greet', steps: [{ description: 'write hello.txt', path: 'hello.txt' }] } }),
  code: async () => ({
    value: { summary: 'hello', changes: [{ path: 'hello.txt', op: { kind: 'write', content: { text: 'Hello, world!\n' } } }] },
  }),
  review: async () => ({ value: { verdict: 'approve', summary: 'fine', comments: [] } }),
};

async function jobsPerSecond(agent) {
  const root = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'aicd-bench-')));
  const repoPath = path.join(root, 'widgets');
  fs.mkdirSync(repoPath);
  fs.writeFileSync(path.join(repoPath, 'README.md'), '# Widgets\n');
  const git = (...args) => execFileSync('git', ['-c', 'user.name=b', '-c', 'user.email=b@b', ...args], { cwd: repoPath });
  git('init', '-q', '-b', 'main');
  git('add', '-A');
  git('commit', '-q', '-m', 'init');
  const client = await Client.open(`sqlite:${path.join(root, 'aicd.db')}`, { localRoots: [root] });
  const session = await client.asKey((await client.bootstrap('Bench')).apiKey);
  const repo = await session.repos.create({ full_name: 'bench/widgets', source: { kind: 'local', path: repoPath } });
  for (let i = 0; i < JOBS; i++) {
    await session.jobs.create({ repo_id: repo.id, issue: { title: `Job ${i}`, body: BODY } });
  }
  const started = process.hrtime.bigint();
  await new Worker(client, agent, { concurrency: 4, pollIntervalMs: 20 }).runUntilIdle();
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const open = (await session.jobs.list({ state: 'pr_open', limit: 100 })).items.length;
  if (open === 0) throw new Error('no job reached PR_OPEN');
  await client.close();
  fs.rmSync(root, { recursive: true, force: true });
  return { seconds, perSecond: JOBS / seconds };
}

function opsPerSecond(f, n) {
  for (let i = 0; i < 1000; i++) f();
  const started = process.hrtime.bigint();
  for (let i = 0; i < n; i++) f();
  return n / (Number(process.hrtime.bigint() - started) / 1e9);
}

const scripted = await jobsPerSecond('scripted');
const js = await jobsPerSecond(instant);
const perCall = ((js.seconds - scripted.seconds) / (JOBS * 3)) * 1e6;
console.log(`jobs (${JOBS}, SQLite, concurrency 4, to PR_OPEN through a local git repository):`);
console.log(`  scripted agent (Rust):       ${scripted.perSecond.toFixed(1)} jobs/s`);
console.log(`  instant agent (JavaScript):  ${js.perSecond.toFixed(1)} jobs/s`);
console.log(`  difference per agent call:   ${perCall.toFixed(0)} µs (3 calls per job)`);

const secret = "It's a Secret to Everybody";
const payload = Buffer.from(JSON.stringify({ action: 'opened', issue: { title: 'x'.repeat(4000) } }));
const header = `sha256=${createHmac('sha256', secret).update(payload).digest('hex')}`;
const expected = Buffer.from(header.slice(7), 'hex');
const viaSdk = opsPerSecond(() => verifyWebhook(secret, payload, header), 50_000);
const viaNode = opsPerSecond(() => {
  const digest = createHmac('sha256', secret).update(payload).digest();
  return timingSafeEqual(digest, expected);
}, 50_000);
console.log(`webhook verification (${payload.length}-byte body):`);
console.log(`  verifyWebhook:               ${(viaSdk / 1000).toFixed(1)} k/s`);
console.log(`  node:crypto HMAC:            ${(viaNode / 1000).toFixed(1)} k/s`);
const tiny = Buffer.from('Hello, World!');
const tinyHeader = 'sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17';
const tinySdk = opsPerSecond(() => verifyWebhook(secret, tiny, tinyHeader), 50_000);
console.log(`  verifyWebhook, 13-byte body: ${(tinySdk / 1000).toFixed(1)} k/s (mostly the crossing)`);
console.log('(the addon is a debug build, as scripts/test builds it: its hashing is unoptimized)');
