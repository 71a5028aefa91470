// Shared by the tests: a fresh store per test on PostgreSQL and on SQLite, local git
// repositories in a temporary directory, and a small agent written in JavaScript.
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { AicdError, Client, PermanentAgentError } from '../lib/sdk.mjs';

const PG_SERVER = process.env.AICD_TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const APP_LOGIN = 'aicd_test_app';

function psql(sql) {
  execFileSync('psql', [PG_SERVER, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, PGOPTIONS: '-c client_min_messages=warning' },
  });
}

function dbUrl(name, login) {
  const url = new URL(PG_SERVER);
  url.pathname = `/${name}`;
  if (login) {
    url.username = login;
    url.password = login;
  }
  return url.toString();
}

/** A git repository on `main` with one commit under `root`; its real path. */
export function localRepo(root, name = 'widgets') {
  const dir = path.join(root, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'README.md'), '# Widgets\n');
  git(dir, 'init', '-q', '-b', 'main');
  git(dir, 'add', '-A');
  git(dir, 'commit', '-q', '-m', 'Initial commit');
  return fs.realpathSync(dir);
}

export function git(dir, ...args) {
  return execFileSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@t', ...args], {
    cwd: dir,
    env: { ...process.env, GIT_CONFIG_GLOBAL: '/dev/null' },
    encoding: 'utf8',
  });
}

/**
 * A fresh store: `{url, options, root, open(), cleanup()}`; `root` is a temporary directory
 * local repositories may be registered under.
 */
export async function freshStore(backend) {
  const root = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'aicd-node-')));
  const clients = [];
  let url;
  let options = { localRoots: [root] };
  let drop = () => {};
  if (backend === 'sqlite') {
    url = `sqlite:${path.join(root, 'aicd.db')}`;
  } else {
    const name = `aicd_test_${randomUUID().replaceAll('-', '')}`;
    psql(`CREATE DATABASE "${name}"`);
    const owner = dbUrl(name);
    // The engine refuses to run as the schema's owner (it bypasses row-level security), but it
    // migrates first: the migrations create the aicd_app group the login role joins.
    await Client.open(owner, { migrate: true }).then(
      (c) => c.close(),
      (e) => {
        if (!(e instanceof AicdError) || e.code !== 'unsafe_database') throw e;
      },
    );
    psql(
      `SELECT pg_advisory_lock(872301); ` +
        `DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${APP_LOGIN}') THEN ` +
        `CREATE ROLE ${APP_LOGIN} LOGIN PASSWORD '${APP_LOGIN}' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; END IF; END $$; ` +
        `GRANT aicd_app TO ${APP_LOGIN}; SELECT pg_advisory_unlock(872301);`,
    );
    url = dbUrl(name, APP_LOGIN);
    options = { ...options, migrate: true, ownerUrl: owner };
    drop = () => psql(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  }
  return {
    url,
    options,
    root,
    async open() {
      const client = await Client.open(url, options);
      clients.push(client);
      return client;
    },
    async cleanup() {
      for (const c of clients) await c.close();
      drop();
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

export const BACKENDS = ['postgres', 'sqlite'];

/** Bootstraps an organization and registers a local repository: `{boot, session, repo}`. */
export async function orgWithRepo(client, root, orgName = 'Acme') {
  const boot = await client.bootstrap(orgName);
  const session = await client.asKey(boot.apiKey);
  const repoPath = localRepo(root, `widgets-${orgName.toLowerCase()}`);
  const repo = await session.repos.create({
    full_name: `${orgName.toLowerCase()}/widgets`,
    source: { kind: 'local', path: repoPath },
  });
  return { boot, session, repo, repoPath };
}

export const USAGE = { input_tokens: 100, output_tokens: 20, cost_micros: 7, model: 'toy-model' };

/** A JavaScript agent writing `hello.txt`; `hooks.code` may replace its code step. */
export function toyAgent(hooks = {}) {
  const calls = { plan: 0, code: 0, review: 0 };
  const agent = {
    name: 'toy',
    calls,
    async plan(ctx) {
      calls.plan += 1;
      const files = await ctx.repo.listFiles();
      const readme = await ctx.repo.readFile('README.md');
      const missing = await ctx.repo.readFile('nope.txt');
      const prefixed = await ctx.repo.listFiles('READ');
      // What the context must hold; a permanent failure would show in the tests' job states.
      if (typeof ctx.repo.full_name !== 'string' || typeof ctx.job_id !== 'string' || readme !== '# Widgets\n') {
        throw new PermanentAgentError(`unexpected context: ${JSON.stringify(ctx)}`);
      }
      if (missing !== null || JSON.stringify(prefixed) !== '["README.md"]' || ctx.budget.remaining_tokens <= 0) {
        throw new PermanentAgentError(`unexpected repository view: ${missing} ${prefixed}`);
      }
      return {
        value: {
          summary: `greet (${files.length} files, readme ${readme.length} bytes, missing ${missing})`,
          steps: [{ description: 'write hello.txt', path: 'hello.txt' }],
        },
        usage: USAGE,
      };
    },
    async code(ctx, plan, feedback) {
      calls.code += 1;
      if (hooks.code) await hooks.code(calls.code, ctx, plan, feedback);
      return {
        value: {
          summary: 'add hello.txt',
          changes: [{ path: 'hello.txt', op: { kind: 'write', content: { text: `Hello from ${ctx.issue.title}\n` } } }],
        },
        usage: USAGE,
      };
    },
    async review() {
      calls.review += 1;
      return { value: { verdict: 'approve', summary: 'fine', comments: [] }, usage: USAGE };
    },
  };
  return agent;
}

export const FAST = { pollIntervalMs: 50, retryDelayMs: 10 };
