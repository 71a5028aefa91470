"""The Python binding's overhead, measured on one machine in one run (not part of the tests).

- jobs/s of an instant agent written in Python against the engine's built-in (Rust) scripted
  agent, through the same binding, store and worker; the difference per agent call is what
  crossing the boundary costs (three calls per job);
- webhook verification: ``aicd.verify_webhook`` against Python's own ``hmac`` + ``compare_digest``.

    python bindings/python/bench/bench.py [--jobs 400] [--concurrency 8] [--url sqlite:/tmp/x.db]
"""

import argparse
import asyncio
import hashlib
import hmac
import json
import subprocess
import tempfile
import time
from pathlib import Path

import aicd

BODY = "```aicd:write hello.txt\nHello, world!\n```"
USAGE = {"input_tokens": 1, "output_tokens": 1, "cost_micros": 0, "model": "instant"}


class Instant:
    name = "instant"

    async def plan(self, ctx):
        return {"value": {"summary": "s", "steps": [{"description": "d", "path": "hello.txt"}]}, "usage": USAGE}

    async def code(self, ctx, plan, feedback):
        change = {"path": "hello.txt", "op": {"kind": "write", "content": {"text": "Hello, world!\n"}}}
        return {"value": {"summary": "c", "changes": [change]}, "usage": USAGE}

    async def review(self, ctx, plan, changeset):
        return {"value": {"verdict": "approve", "summary": "ok", "comments": []}, "usage": USAGE}


def git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@b", *args], cwd=cwd, check=True, capture_output=True)


async def jobs_per_second(url, root, agent, jobs, concurrency):
    repo = root / f"repo-{time.monotonic_ns()}"
    repo.mkdir()
    (repo / "README.md").write_text("# bench\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    client = await aicd.Client.open(url, local_roots=[root])
    session = await client.as_key((await client.bootstrap(f"bench-{time.monotonic_ns()}"))["api_key"])
    created = await session.repos.create({"full_name": "bench/repo", "source": {"kind": "local", "path": str(repo)}})
    for i in range(jobs):
        await session.jobs.create({"repo_id": created["id"], "issue": {"title": f"job {i}", "body": BODY}})
    started = time.perf_counter()
    await aicd.Worker(client, agent, concurrency=concurrency, poll_interval=0.05).run_until_idle()
    elapsed = time.perf_counter() - started
    done = await session.jobs.list(state="pr_open", limit=1)
    assert done["items"], "jobs reached PR_OPEN"
    await client.close()
    return jobs / elapsed


async def agent_call_cost(n=2000):
    """Microseconds per `plan` call made from Rust into an instant Python agent and back."""
    seconds = await aicd._aicd.time_agent_calls(aicd._Bridge(Instant()), n)
    return seconds / n * 1e6


def verify_throughput(n=20000):
    secret = b"It's a Secret to Everybody"
    body = json.dumps({"action": "opened", "issue": {"body": "x" * 6000}}).encode()
    header = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    started = time.perf_counter()
    for _ in range(n):
        assert aicd.verify_webhook(secret, body, header)
    ours = n / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(n):
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(expected, header)
    theirs = n / (time.perf_counter() - started)
    return ours, theirs, len(body)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--url", default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="aicd-bench-")).resolve()
    url = args.url or f"sqlite:{root / 'bench.db'}"
    rust = await jobs_per_second(url, root, "scripted", args.jobs, args.concurrency)
    python = await jobs_per_second(url, root, Instant(), args.jobs, args.concurrency)
    print(f"jobs/s, {args.jobs} jobs at concurrency {args.concurrency} ({url.split(':')[0]}):")
    print(f"  Rust scripted agent {rust:8.1f}   Python agent {python:8.1f}   ratio {python / rust:.2f}")
    print(f"one agent call from Rust into Python and back (instant agent): {await agent_call_cost():.1f} us")
    ours, theirs, size = verify_throughput()
    print(f"webhook verification of a {size}-byte body: aicd {ours:,.0f}/s, hmac {theirs:,.0f}/s ({ours / theirs:.2f}x)")


asyncio.run(main())
