// What needs no store: webhook verification and parsing, the policy check.
import assert from 'node:assert/strict';
import { it } from 'node:test';

import { AicdError, checkPolicy, enforcePolicy, parseWebhook, verifyWebhook } from '../lib/sdk.mjs';

// GitHub's documented test vector ("Validating webhook deliveries").
const SECRET = "It's a Secret to Everybody";
const BODY = 'Hello, World!';
const SIGNATURE = 'sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17';

it("verifyWebhook accepts GitHub's test vector and nothing else", () => {
  assert.equal(verifyWebhook(SECRET, BODY, SIGNATURE), true);
  assert.equal(verifyWebhook(SECRET, Buffer.from(BODY), SIGNATURE), true);
  assert.equal(verifyWebhook(SECRET, new TextEncoder().encode(BODY), SIGNATURE), true);
  assert.equal(verifyWebhook(SECRET, 'Hello, World?', SIGNATURE), false);
  assert.equal(verifyWebhook('another secret', BODY, SIGNATURE), false);
  assert.equal(verifyWebhook(SECRET, BODY, SIGNATURE.replace('757', '758')), false);
  assert.equal(verifyWebhook(SECRET, BODY, 'sha1=abc'), false);
  assert.equal(verifyWebhook(SECRET, BODY, undefined), false);
  assert.throws(() => verifyWebhook('', BODY, SIGNATURE), (e) => e instanceof AicdError && e.code === 'invalid_input');
  assert.throws(() => verifyWebhook(SECRET, 42, SIGNATURE), (e) => e instanceof AicdError && e.code === 'invalid_input');
});

const ISSUE_OPENED = {
  action: 'opened',
  issue: {
    id: 1,
    number: 1347,
    title: 'Add a greeting',
    body: 'Please add hello.txt',
    state: 'open',
    html_url: 'https://github.com/octo-org/hello-world/issues/1347',
    user: { login: 'octocat', id: 1, type: 'User' },
    labels: [],
  },
  repository: {
    id: 1296269,
    name: 'hello-world',
    full_name: 'octo-org/hello-world',
    private: false,
    default_branch: 'main',
    owner: { login: 'octo-org', id: 6811672, type: 'Organization' },
  },
  sender: { login: 'octocat', id: 1, type: 'User' },
  installation: { id: 42 },
};

it("parseWebhook reads an issues-opened delivery as kind 'issues', action 'opened'", () => {
  const event = parseWebhook('issues', JSON.stringify(ISSUE_OPENED));
  assert.equal(event.kind, 'issues', JSON.stringify(event));
  assert.equal(event.action, 'opened');
  assert.throws(() => parseWebhook('issues', '{not json'), (e) => e instanceof AicdError && e.code === 'invalid_input');
});

const WORKFLOW = {
  summary: 'tweak CI',
  changes: [{ path: '.github/workflows/ci.yml', op: { kind: 'write', content: { text: 'on: push\n' } } }],
};
const HARMLESS = {
  summary: 'docs',
  changes: [{ path: 'docs/hello.md', op: { kind: 'write', content: { text: 'Hello\n' } } }],
};

it('checkPolicy lists a write to a workflow; enforcePolicy throws policy_violation', () => {
  const violations = checkPolicy(WORKFLOW);
  assert.ok(violations.some((v) => v.path === '.github/workflows/ci.yml'), JSON.stringify(violations));
  for (const v of violations) assert.deepEqual(Object.keys(v).sort(), ['line', 'message', 'path', 'rule']);
  assert.throws(
    () => enforcePolicy(WORKFLOW),
    (e) => e instanceof AicdError && e instanceof Error && e.code === 'policy_violation' && e.violations.length === violations.length,
  );
  assert.deepEqual(checkPolicy(HARMLESS), []);
  enforcePolicy(HARMLESS);
  // A configuration tightens the policy; a malformed one is invalid_input.
  assert.ok(checkPolicy(HARMLESS, { protected_paths: ['docs/**'] }).length > 0);
  assert.throws(() => checkPolicy(HARMLESS, { protected_pathz: [] }), (e) => e.code === 'invalid_input');
  assert.throws(() => checkPolicy({ summary: 'x' }), (e) => e.code === 'invalid_input');
});
