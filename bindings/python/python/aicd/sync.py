"""A synchronous facade for scripts: the same API as :mod:`aicd`, each call run to completion on
the facade's own event loop.

    from aicd.sync import Client
    client = Client.open("sqlite:aicd.db")
    session = client.as_key(client.bootstrap("Acme")["api_key"])
    print(session.jobs.list())

``jobs.follow`` returns the list of events up to the job's end; workers run with
``Worker(client, agent).run_until_idle()`` (the agent's methods stay ``async``).
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import aicd

__all__ = ["Client", "Worker"]

_loop = asyncio.new_event_loop()


def _run(value: Any) -> Any:
    if inspect.isasyncgen(value):
        return _run(_collect(value))
    if inspect.isawaitable(value):
        value = _loop.run_until_complete(value)
    if isinstance(value, (aicd.Client, aicd.Session, aicd.Repos, aicd.Jobs, aicd.Worker)):
        return _Sync(value)
    return value


async def _collect(items: Any) -> list:
    return [item async for item in items]


class _Sync:
    """Wraps an object of :mod:`aicd`, running what its methods return to completion."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if callable(attribute):
            return lambda *args, **kwargs: _run(attribute(*args, **kwargs))
        return _run(attribute)

    @property
    def inner(self) -> Any:
        """The wrapped asynchronous object."""
        return self._inner


class Client:
    """:class:`aicd.Client`, synchronously."""

    @staticmethod
    def open(url: str, **options: Any) -> Any:
        """See :meth:`aicd.Client.open`."""
        return _run(aicd.Client.open(url, **options))


def Worker(client: Any, agent: Any, **options: Any) -> Any:  # noqa: N802 (a class to its callers)
    """:class:`aicd.Worker`, synchronously; ``client`` is a client of this facade."""
    inner = client.inner if isinstance(client, _Sync) else client
    return _Sync(aicd.Worker(inner, agent, **options))
