"""A toy agent written in Python, driving a job to PR_OPEN on a local git repository.

The Rust engine claims the job, checkpoints every step, runs the policy engine and opens the pull
request (a branch in the local repository); the agent only plans, codes and reviews. Everything
is stored in a SQLite file in a temporary directory.

    pip install ./bindings/python        # or: cd bindings/python && maturin develop
    python examples/python/agent_in_python.py
"""

import asyncio
import subprocess
import tempfile
from pathlib import Path

import aicd


class Greeter:
    """Plans one file, writes a greeting into it, and approves its own work."""

    name = "greeter"

    async def plan(self, ctx):
        files = await ctx.repo.list_files()
        steps = [{"description": f"add a greeting next to {', '.join(files)}", "path": "hello.txt"}]
        return {"value": {"summary": ctx.issue["title"], "steps": steps}, "usage": usage(40, 12)}

    async def code(self, ctx, plan, feedback):
        readme = await ctx.repo.read_file("README.md") or ""
        text = f"Hello from {readme.splitlines()[0].lstrip('# ') if readme else ctx.repo.full_name}!\n"
        change = {"path": plan["steps"][0]["path"], "op": {"kind": "write", "content": {"text": text}}}
        changeset = {"summary": "Add hello.txt", "changes": [change]}
        aicd.enforce_policy(changeset)  # the engine checks again before publishing
        return {"value": changeset, "usage": usage(80, 30)}

    async def review(self, ctx, plan, changeset):
        return {"value": {"verdict": "approve", "summary": "One file, as planned.", "comments": []}, "usage": usage(60, 8)}


def usage(input_tokens, output_tokens):
    return {"input_tokens": input_tokens, "output_tokens": output_tokens, "cost_micros": 0, "model": "greeter-1"}


def git(cwd, *args):
    command = ["git", "-c", "user.name=Example", "-c", "user.email=example@example.com", *args]
    return subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True).stdout


async def main():
    root = Path(tempfile.mkdtemp(prefix="aicd-example-")).resolve()
    repo = root / "widgets"
    repo.mkdir()
    (repo / "README.md").write_text("# Widgets\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Initial commit")

    client = await aicd.Client.open(f"sqlite:{root / 'aicd.db'}", local_roots=[root])
    boot = await client.bootstrap("Acme")
    session = await client.as_key(boot["api_key"])
    registered = await session.repos.create({"full_name": "acme/widgets", "source": {"kind": "local", "path": str(repo)}})
    job = await session.jobs.create({"repo_id": registered["id"], "issue": {"title": "Add a greeting", "body": "Say hello."}})
    print(f"job {job['id']} is {job['state']}")

    async def follow():
        async for event in session.jobs.follow(job["id"]):
            print(f"  #{event['id']} {event['kind']:<14} {event['message']}")

    following = asyncio.ensure_future(follow())
    await aicd.Worker(client, Greeter(), poll_interval=0.1).run_until_idle()
    await following

    done = await session.jobs.get(job["id"])
    branch = done["checkpoints"]["pull_request"]["branch"]
    print(f"job is {done['state']}; {done['budget']['spent_tokens']} tokens spent")
    print(f"branch {branch}: hello.txt = {git(repo, 'show', f'{branch}:hello.txt').strip()!r}")
    assert done["state"] == "pr_open"
    await client.close()


if __name__ == "__main__":
    asyncio.run(main())
