// A toy agent written in JavaScript driving a job to PR_OPEN on a local git repository, with
// the engine on SQLite in a temporary directory.
//
//   npm install ./bindings/node      (after building it: see bindings/node/README.md)
//   node examples/node/agent_in_js.mjs
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { Client, PermanentAgentError, Worker, enforcePolicy } from '@aicd/sdk';

const root = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'aicd-example-')));
const repoPath = path.join(root, 'widgets');
fs.mkdirSync(repoPath);
fs.writeFileSync(path.join(repoPath, 'README.md'), '# Widgets\n');
const git = (...args) =>
  execFileSync('git', ['-c', 'user.name=example', '-c', 'user.email=example@example.com', ...args], {
    cwd: repoPath,
    encoding: 'utf8',
  });
git('init', '-q', '-b', 'main');
git('add', '-A');
git('commit', '-q', '-m', 'Initial commit');

// The agent: three async methods, each returning {value, usage}.
const agent = {
  name: 'greeter',
  async plan(ctx) {
    const readme = await ctx.repo.readFile('README.md');
    if (readme === null) throw new PermanentAgentError('this repository has no README.md');
    return {
      value: { summary: `Greet the readers of ${ctx.repo.full_name}`, steps: [{ description: 'write GREETING.md', path: 'GREETING.md' }] },
      usage: { input_tokens: readme.length, output_tokens: 12, cost_micros: 0, model: 'toy' },
    };
  },
  async code(ctx, plan, feedback) {
    const changeset = {
      summary: plan.summary,
      changes: [{ path: 'GREETING.md', op: { kind: 'write', content: { text: `Hello! (${ctx.issue.title})\n` } } }],
    };
    enforcePolicy(changeset); // vet it before handing it over (the engine checks it again)
    return { value: changeset, usage: { input_tokens: 40, output_tokens: 10, model: 'toy' } };
  },
  async review(ctx, plan, changeset) {
    return { value: { verdict: 'approve', summary: `${changeset.changes.length} file(s), fine`, comments: [] } };
  },
};

const client = await Client.open(`sqlite:${path.join(root, 'aicd.db')}`, { localRoots: [root] });
const { apiKey } = await client.bootstrap('Acme');
const session = await client.asKey(apiKey);
const repo = await session.repos.create({ full_name: 'acme/widgets', source: { kind: 'local', path: fs.realpathSync(repoPath) } });
const job = await session.jobs.create({ repo_id: repo.id, issue: { title: 'Add a greeting' } });

const worker = new Worker(client, agent, { pollIntervalMs: 100 });
const running = worker.runUntilIdle();
for await (const event of session.jobs.follow(job.id)) {
  console.log(`${event.kind}${event.to_state ? ` -> ${event.to_state}` : ''}`);
}
await running;

const done = await session.jobs.get(job.id);
console.log(`job ${done.state}: branch ${done.checkpoints.pull_request.branch}, ${done.budget.spent_tokens} tokens`);
console.log(git('log', '--oneline', done.checkpoints.pull_request.branch).trim());
await client.close();
fs.rmSync(root, { recursive: true, force: true });
