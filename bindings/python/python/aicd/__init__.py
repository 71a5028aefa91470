"""AI-CD from Python: drive the engine (organizations, repositories, jobs and their live
timelines, usage), and write the agent itself in Python.

Everything here is a thin layer over the Rust engine (``aicd._aicd``): arguments and results are
the HTTP API's JSON shapes as dicts, agent values are the agent contract's shapes, and every error
is an :class:`AicdError` subclass with a stable ``code``. See ``bindings/python/README.md``.
"""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import datetime
from typing import Any, AsyncIterator, Dict, List, Optional, Protocol, Sequence, Union

from . import _aicd
from ._aicd import (
    AicdError,
    Conflict,
    InvalidInput,
    NotFound,
    PaymentRequired,
    PermissionDenied,
    PolicyViolation,
    Unauthenticated,
    Unavailable,
)

__all__ = [
    "Agent",
    "AicdError",
    "BudgetExhausted",
    "Client",
    "Conflict",
    "Context",
    "InvalidInput",
    "Jobs",
    "NotFound",
    "PaymentRequired",
    "PermanentAgentError",
    "PermissionDenied",
    "PolicyViolation",
    "Repo",
    "Repos",
    "Session",
    "Unauthenticated",
    "Unavailable",
    "Worker",
    "check_policy",
    "enforce_policy",
    "parse_webhook",
    "verify_webhook",
]

Json = Any


class PermanentAgentError(Exception):
    """Raised by an agent's step: the job fails with this message, without a retry."""


class BudgetExhausted(Exception):
    """Raised by an agent's step: the job's budget is used up; the job stops."""


class Repo:
    """``ctx.repo``: the repository a step works on, read-only, as of the job's base commit."""

    def __init__(self, coordinates: Dict[str, Any], view: _aicd.RepoView) -> None:
        self.full_name: str = coordinates["full_name"]
        self.default_branch: str = coordinates["default_branch"]
        self._view = view

    async def list_files(self, prefix: Optional[str] = None) -> List[str]:
        """Every file path (under ``prefix``, if given), sorted; bounded by the view's limits."""
        return await self._view.list_files(prefix)

    async def read_bytes(self, path: str) -> Optional[bytes]:
        """The file's bytes, or ``None`` if there is no such file."""
        return await self._view.read_bytes(path)

    async def read_file(self, path: str) -> Optional[str]:
        """The file's text (invalid UTF-8 replaced), or ``None`` if there is no such file."""
        data = await self._view.read_bytes(path)
        return None if data is None else data.decode("utf-8", errors="replace")


class Context:
    """What an agent's step is given: the job, its issue, the repository and the budget left."""

    def __init__(self, ctx: Dict[str, Any], view: _aicd.RepoView) -> None:
        self.job_id: str = ctx["job_id"]
        self.issue: Dict[str, Any] = ctx["issue"]
        self.repo = Repo(ctx["repo"], view)
        self.budget: Dict[str, int] = ctx["budget"]


class Agent(Protocol):
    """An agent: each method returns ``{"value": ..., "usage": {...}}``."""

    async def plan(self, ctx: Context) -> Dict[str, Any]: ...

    async def code(self, ctx: Context, plan: Dict[str, Any], feedback: Optional[Dict[str, Any]]) -> Dict[str, Any]: ...

    async def review(self, ctx: Context, plan: Dict[str, Any], changeset: Dict[str, Any]) -> Dict[str, Any]: ...


class _Bridge:
    """What the engine calls: runs one of the agent's steps and reports how it ended."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    async def call(self, method: str, args_json: str, view: _aicd.RepoView) -> str:
        args = json.loads(args_json)
        ctx = Context(args[0], view)
        try:
            answer = await getattr(self._agent, method)(ctx, *args[1:])
        except PermanentAgentError as e:
            return json.dumps({"failure": "permanent", "message": str(e)})
        except BudgetExhausted as e:
            return json.dumps({"failure": "budget", "message": str(e)})
        except Exception as e:  # any other exception is transient: the step is retried
            return json.dumps({"failure": "raised", "message": f"{type(e).__name__}: {e}"})
        try:
            return json.dumps({"ok": answer})
        except (TypeError, ValueError) as e:
            return json.dumps({"failure": "permanent", "message": f"the agent's {method}() returned {e}"})


class Client:
    """The engine over one store. Open it with :meth:`Client.open`."""

    def __init__(self, engine: _aicd.Engine) -> None:
        self._engine = engine

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        migrate: bool = False,
        owner_url: Optional[str] = None,
        local_roots: Sequence[str] = (),
        redis_url: Optional[str] = None,
    ) -> "Client":
        """Opens ``postgres://…`` (as a role that cannot bypass row-level security; with
        ``migrate=True`` the schema is migrated first, as ``owner_url`` if given) or
        ``sqlite:<path>`` (created and migrated if need be). Local repositories may be
        registered under ``local_roots`` only."""
        engine = await _aicd.Engine.open(url, migrate, owner_url, [str(r) for r in local_roots], redis_url)
        return cls(engine)

    @property
    def backend(self) -> str:
        """``postgres`` or ``sqlite``."""
        return self._engine.backend

    async def bootstrap(self, org_name: str) -> Dict[str, str]:
        """Creates an organization with a first org_admin API key: ``{"org_id", "api_key"}``
        (the key is shown this once)."""
        org_id, api_key = await self._engine.bootstrap(org_name)
        return {"org_id": org_id, "api_key": api_key}

    async def as_key(self, api_key: str) -> "Session":
        """Acts as the holder of ``api_key``, with the HTTP API's authorization."""
        return Session(await self._engine.session(api_key))

    async def close(self) -> None:
        """Closes the store's connections."""
        await self._engine.close()


class Session:
    """An API key's view of its organization."""

    def __init__(self, session: _aicd.Session) -> None:
        self._session = session
        self.repos = Repos(self)
        self.jobs = Jobs(self)

    @property
    def org_id(self) -> str:
        """The key's organization."""
        return self._session.org_id

    async def _call(self, op: str, args: Optional[Dict[str, Any]] = None) -> Json:
        args = {k: v for k, v in (args or {}).items() if v is not None}
        return json.loads(await self._session.call(op, json.dumps(args, default=_encode)))

    async def orgs(self) -> List[Dict[str, Any]]:
        """The key's organization and role: ``[{"org", "role"}]``."""
        return await self._call("orgs.list")

    async def usage(
        self, from_: Union[datetime, str, None] = None, to: Union[datetime, str, None] = None
    ) -> Dict[str, Any]:
        """The usage report over ``[from_, to)`` (default: the last 30 days)."""
        return await self._call("usage", {"from": from_, "to": to})


class Repos:
    """``session.repos``."""

    def __init__(self, session: Session) -> None:
        self._s = session

    async def create(self, body: Dict[str, Any]) -> Dict[str, Any]:
        """Registers ``{"full_name", "source": {"kind": "local", "path"}, ...}``."""
        return await self._s._call("repos.create", body)

    async def list(self) -> List[Dict[str, Any]]:
        """The organization's repositories."""
        return await self._s._call("repos.list")

    async def get(self, repo_id: str) -> Dict[str, Any]:
        """A repository."""
        return await self._s._call("repos.get", {"repo_id": repo_id})


class Jobs:
    """``session.jobs``."""

    def __init__(self, session: Session) -> None:
        self._s = session

    async def create(self, body: Dict[str, Any]) -> Dict[str, Any]:
        """Starts ``{"repo_id", "issue": {"title", "body", "number"?}, ...}``; it is queued."""
        return await self._s._call("jobs.create", body)

    async def list(
        self,
        state: Optional[str] = None,
        repo_id: Optional[str] = None,
        cursor: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> Dict[str, Any]:
        """A page of jobs, newest first: ``{"items", "next_cursor"}``."""
        return await self._s._call("jobs.list", {"state": state, "repo_id": repo_id, "cursor": cursor, "limit": limit})

    async def get(self, job_id: str) -> Dict[str, Any]:
        """A job: its state, checkpoints, attempts, spend and pull request."""
        return await self._s._call("jobs.get", {"job_id": job_id})

    async def cancel(self, job_id: str) -> Dict[str, Any]:
        """Cancels a job that has not opened its pull request."""
        return await self._s._call("jobs.cancel", {"job_id": job_id})

    async def retry(self, job_id: str) -> Dict[str, Any]:
        """Starts a new job for a failed or cancelled one's issue."""
        return await self._s._call("jobs.retry", {"job_id": job_id})

    async def events(self, job_id: str, after: Optional[int] = None, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """The job's timeline, oldest first."""
        return await self._s._call("jobs.events", {"job_id": job_id, "after": after, "limit": limit})

    async def follow(self, job_id: str) -> AsyncIterator[Dict[str, Any]]:
        """Every event of the job's timeline, in order and live, ending after PR_OPEN or an end."""
        follow = self._s._session.follow(job_id)
        while True:
            event = await follow.next()
            if event is None:
                return
            yield json.loads(event)


class Worker:
    """Runs the Rust orchestrator with ``agent`` (see :class:`Agent`) on ``client``'s store.
    ``agent="scripted"`` runs the engine's built-in scripted agent instead (which follows
    ``aicd:write`` directives in the issue's text), for comparisons and smoke tests."""

    def __init__(
        self,
        client: Client,
        agent: Union[Agent, str],
        *,
        concurrency: int = 4,
        poll_interval: float = 2.0,
        lease: float = 30.0,
        max_attempts: int = 5,
        retry_delay: float = 2.0,
    ) -> None:
        if isinstance(agent, str) and agent != "scripted":
            raise InvalidInput(f"unknown built-in agent {agent!r}; the built-in one is 'scripted'")
        name = agent if isinstance(agent, str) else getattr(agent, "name", None) or type(agent).__name__
        self._worker = _aicd.Worker(
            client._engine,
            None if isinstance(agent, str) else _Bridge(agent),
            str(name),
            concurrency,
            int(poll_interval * 1000),
            int(lease * 1000),
            max_attempts,
            int(retry_delay * 1000),
        )
        self._stopping: Optional[asyncio.Event] = None

    async def run_until_idle(self) -> None:
        """Runs jobs until none is left to run (for scripts and tests)."""
        await self._worker.run_until_idle()

    async def run(self, *, grace: float = 30.0) -> None:
        """Runs jobs until :meth:`stop`, SIGINT or SIGTERM; then stops claiming, and running jobs
        stop at their next checkpoint and release their leases (waiting up to ``grace`` s)."""
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        handled = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._stopping.set)
                handled.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread, or no signals here: stop() still works
        self._worker.start()
        try:
            await self._stopping.wait()
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
            await self._worker.stop(int(grace * 1000))

    def stop(self) -> None:
        """Asks :meth:`run` to stop."""
        if self._stopping is not None:
            self._stopping.set()


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _bytes(value: Union[bytes, bytearray, str]) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def verify_webhook(secret: Union[str, bytes], body: Union[bytes, str], signature_header: Optional[str]) -> bool:
    """Whether ``signature_header`` (``X-Hub-Signature-256``) signs ``body`` (the raw bytes)
    with ``secret``, compared in constant time. :class:`InvalidInput` for an empty secret."""
    return _aicd.verify_webhook(_bytes(secret), _bytes(body), signature_header)


def parse_webhook(event_name: str, body: Union[bytes, str]) -> Dict[str, Any]:
    """A GitHub delivery as one dict: ``kind`` (``issues``, ``issue_comment``, ``pull_request``,
    ``installation``, ``installation_repositories``, ``ping`` or ``ignored``) and its fields."""
    return json.loads(_aicd.parse_webhook(event_name, _bytes(body)))


def check_policy(changeset: Dict[str, Any], config: Optional[Dict[str, Any]] = None) -> List[Dict[str, Any]]:
    """The policy engine's violations of ``changeset`` (``{"summary", "changes": [...]}``) under
    ``config`` (the ``[policy]`` settings), each ``{"rule", "path", "line", "message"}``."""
    return json.loads(_aicd.check_policy(json.dumps(changeset), None if config is None else json.dumps(config)))


def enforce_policy(changeset: Dict[str, Any], config: Optional[Dict[str, Any]] = None) -> None:
    """Like :func:`check_policy`, raising :class:`PolicyViolation` (with ``violations``) if any."""
    violations = check_policy(changeset, config)
    if violations:
        error = PolicyViolation("; ".join(v["message"] for v in violations))
        error.violations = violations  # type: ignore[attr-defined]
        raise error
