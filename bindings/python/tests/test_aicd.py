"""The Python binding against PostgreSQL and SQLite: an agent written in Python driving jobs
through the Rust engine, errors, signals, tenant isolation, webhooks and the policy engine."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

import aicd
import aicd.sync
from agents import USAGE, FlakyCoder, Greeter, Refuser
from conftest import Store, git

HERE = Path(__file__).parent
FIXTURES = HERE.parents[2] / "aicd-github" / "tests" / "fixtures"
FAST: Dict[str, Any] = {"poll_interval": 0.05, "retry_delay": 0.05}


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


async def setup(store: Store, repo: Path) -> Tuple[aicd.Client, aicd.Session, Dict[str, Any]]:
    client = await aicd.Client.open(store.url, **store.options)
    assert client.backend == store.backend
    boot = await client.bootstrap("Acme")
    session = await client.as_key(boot["api_key"])
    assert session.org_id == boot["org_id"]
    created = await session.repos.create({"full_name": "acme/widgets", "source": {"kind": "local", "path": str(repo)}})
    return client, session, created


async def new_job(session: aicd.Session, repo: Dict[str, Any], title: str = "Add a greeting") -> Dict[str, Any]:
    job = await session.jobs.create({"repo_id": repo["id"], "issue": {"title": title, "body": "Say hello.", "number": 7}})
    assert job["state"] == "queued"
    return job


def test_an_agent_in_python_drives_a_job_to_pr_open(store: Store, repo: Path) -> None:
    async def main() -> None:
        client, session, created = await setup(store, repo)
        job = await new_job(session, created)

        async def follow() -> List[Dict[str, Any]]:
            return [event async for event in session.jobs.follow(job["id"])]

        followed = asyncio.ensure_future(follow())
        agent = Greeter()
        await aicd.Worker(client, agent, **FAST).run_until_idle()
        done = await session.jobs.get(job["id"])
        assert done["state"] == "pr_open", done
        assert agent.calls == {"plan": 1, "code": 1, "review": 1}

        branch = done["checkpoints"]["pull_request"]["branch"]
        assert git(repo, "show", f"{branch}:hello.txt") == "Hello from Widgets!\n"
        assert done["budget"]["spent_tokens"] == 3 * (USAGE["input_tokens"] + USAGE["output_tokens"])
        report = await session.usage()
        assert report["totals"]["cost_micros"] == 3 * USAGE["cost_micros"], report

        events = await asyncio.wait_for(followed, 10)
        states = [e["to_state"] for e in events if e["to_state"]]
        assert states == ["planning", "coding", "reviewing", "pr_open"]
        ids = [e["id"] for e in events]
        assert ids == sorted(set(ids)), "each event once, in order"
        timeline = await session.jobs.events(job["id"])
        assert [e["id"] for e in timeline][: len(ids)] == ids

        page = await session.jobs.list(state="pr_open")
        assert [j["id"] for j in page["items"]] == [job["id"]]
        await client.close()

    run(main())


def test_an_exception_is_retried_and_a_permanent_error_fails_the_job(store: Store, repo: Path) -> None:
    async def main() -> None:
        client, session, created = await setup(store, repo)
        flaky_job = await new_job(session, created)
        flaky = FlakyCoder()
        await aicd.Worker(client, flaky, **FAST).run_until_idle()
        assert (await session.jobs.get(flaky_job["id"]))["state"] == "pr_open"
        assert flaky.calls["code"] == 2, "the exception was retried"
        retried = [e for e in await session.jobs.events(flaky_job["id"]) if "ConnectionError" in e["message"]]
        assert retried, "the transient failure is in the timeline"

        refused_job = await new_job(session, created, "Write something forbidden")
        refuser = Refuser()
        await aicd.Worker(client, refuser, **FAST).run_until_idle()
        refused = await session.jobs.get(refused_job["id"])
        assert refused["state"] == "failed"
        assert "this issue asks for something I will not write" in refused["failure_reason"]
        assert refuser.calls["code"] == 1, "a permanent error is not retried"
        await client.close()

    run(main())


def test_a_worker_stopped_by_a_signal_releases_its_lease_and_another_finishes_the_job(
    store: Store, repo: Path, tmp_path: Path
) -> None:
    async def main() -> None:
        client, session, created = await setup(store, repo)
        job = await new_job(session, created)
        marker = tmp_path / "coding"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
        args = [sys.executable, str(HERE / "worker_process.py"), store.url, json.dumps(store.options), str(marker)]
        child = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while not marker.exists():
                assert child.poll() is None, child.communicate()
                assert time.monotonic() < deadline, "the child never started coding"
                await asyncio.sleep(0.05)
            held = await session.jobs.get(job["id"])
            assert held["state"] == "coding" and held["lease"] is not None
            child.send_signal(signal.SIGTERM)
            out, err = await asyncio.get_running_loop().run_in_executor(None, lambda: child.communicate(timeout=30))
        finally:
            if child.poll() is None:
                child.kill()
        assert child.returncode == 0, err.decode()
        assert b"stopped" in out
        released = await session.jobs.get(job["id"])
        assert released["lease"] is None, "released at once, not left to expire"
        assert released["state"] == "coding"

        await aicd.Worker(client, Greeter(), **FAST).run_until_idle()
        assert (await session.jobs.get(job["id"]))["state"] == "pr_open"
        await client.close()

    run(main())


def test_one_organizations_key_cannot_read_anothers_job_and_errors_are_named(store: Store, repo: Path) -> None:
    async def main() -> None:
        client, session, created = await setup(store, repo)
        job = await new_job(session, created)
        other = await client.as_key((await client.bootstrap("Globex"))["api_key"])
        with pytest.raises(aicd.NotFound) as hidden:
            await other.jobs.get(job["id"])
        assert hidden.value.code == "not_found"
        assert isinstance(hidden.value, aicd.AicdError)
        assert await other.repos.list() == []

        with pytest.raises(aicd.InvalidInput, match="isue"):
            await session.jobs.create({"repo_id": created["id"], "isue": {}})
        with pytest.raises(aicd.Unauthenticated):
            await client.as_key("aicd_not-a-key")
        cancelled = await session.jobs.cancel(job["id"])
        assert cancelled["state"] == "cancelled"
        with pytest.raises(aicd.Conflict):
            await session.jobs.cancel(job["id"])
        retried = await session.jobs.retry(job["id"])
        assert retried["state"] == "queued" and retried["id"] != job["id"]
        await client.close()

    run(main())


def test_the_synchronous_facade(store: Store, repo: Path) -> None:
    client = aicd.sync.Client.open(store.url, **store.options)
    session = client.as_key(client.bootstrap("Acme")["api_key"])
    created = session.repos.create({"full_name": "acme/widgets", "source": {"kind": "local", "path": str(repo)}})
    job = session.jobs.create({"repo_id": created["id"], "issue": {"title": "Add a greeting"}})
    aicd.sync.Worker(client, Greeter(), **FAST).run_until_idle()
    assert session.jobs.get(job["id"])["state"] == "pr_open"
    states = [e["to_state"] for e in session.jobs.follow(job["id"]) if e["to_state"]]
    assert states[-1] == "pr_open"
    client.close()


def test_webhooks_are_verified_against_githubs_test_vector_and_parsed() -> None:
    secret, body = "It's a Secret to Everybody", b"Hello, World!"
    good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert aicd.verify_webhook(secret, body, good)
    assert not aicd.verify_webhook(secret, b"Hello, World?", good)
    assert not aicd.verify_webhook(secret, body, None)
    assert not aicd.verify_webhook(secret, body, "sha1=abc")
    with pytest.raises(aicd.InvalidInput):
        aicd.verify_webhook(b"", body, good)
    event = aicd.parse_webhook("issues", (FIXTURES / "issues_opened.json").read_bytes())
    assert event["kind"] == "issues" and event["action"] == "opened"
    assert event["repository"]["full_name"] == "octo-org/hello-world"
    with pytest.raises(aicd.InvalidInput):
        aicd.parse_webhook("issues", b"{not json")


def test_the_policy_engine_names_its_violations() -> None:
    changeset = {
        "summary": "ci",
        "changes": [
            {"path": ".github/workflows/ci.yml", "op": {"kind": "write", "content": {"text": "on: push\n"}}},
            {"path": "src/lib.rs", "op": {"kind": "write", "content": {"text": "pub fn ok() {}\n"}}},
        ],
    }
    violations = aicd.check_policy(changeset)
    assert [(v["rule"], v["path"]) for v in violations] == [("protected_path", ".github/workflows/ci.yml")]
    with pytest.raises(aicd.PolicyViolation) as blocked:
        aicd.enforce_policy(changeset)
    assert blocked.value.code == "policy_violation"
    assert blocked.value.violations == violations  # type: ignore[attr-defined]
    aicd.enforce_policy(changeset, {"protected_paths": []}) if False else None
    clean = {"summary": "ok", "changes": changeset["changes"][1:]}
    aicd.enforce_policy(clean)
    with pytest.raises(aicd.InvalidInput):
        aicd.check_policy(changeset, {"max_filez": 3})


def test_the_built_in_scripted_agent_runs_from_python(store: Store, repo: Path) -> None:
    async def main() -> None:
        client, session, created = await setup(store, repo)
        body = "```aicd:write hello.txt\nHello, world!\n```"
        job = await session.jobs.create({"repo_id": created["id"], "issue": {"title": "Greet", "body": body}})
        await aicd.Worker(client, "scripted", **FAST).run_until_idle()
        assert (await session.jobs.get(job["id"]))["state"] == "pr_open"
        with pytest.raises(aicd.InvalidInput):
            aicd.Worker(client, "gpt-9")
        await client.close()

    run(main())


def test_a_forked_child_opens_its_own_client(tmp_path: Path) -> None:
    async def bootstrap(path: Path) -> str:
        client = await aicd.Client.open(f"sqlite:{path}")
        boot = await client.bootstrap("Forked")
        await client.close()
        return boot["org_id"]

    assert run(bootstrap(tmp_path / "parent.db")), "the parent's runtime is running"
    pid = os.fork()
    if pid == 0:  # the child: a fresh runtime, its own client
        try:
            ok = bool(run(bootstrap(tmp_path / "child.db")))
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    deadline = time.monotonic() + 30
    while (ended := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("the child hung using aicd after fork()")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(ended[1]) == 0, "the child could use aicd after fork()"
    assert run(bootstrap(tmp_path / "parent-again.db")), "the parent still works"
