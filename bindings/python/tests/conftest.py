"""Fixtures: a fresh store per test on PostgreSQL and on SQLite, and a local git repository."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

SERVER_URL = os.environ.get("AICD_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
APP_LOGIN = "aicd_test_app"


def psql(sql: str, database: str = "postgres") -> None:
    url = urlsplit(SERVER_URL)
    target = urlunsplit((url.scheme, url.netloc, "/" + database, url.query, ""))
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", target, "-c", sql], check=True, capture_output=True)


def with_database(name: str, user: str | None = None) -> str:
    url = urlsplit(SERVER_URL)
    netloc = url.netloc if user is None else f"{user}:{user}@{url.hostname}:{url.port or 5432}"
    return urlunsplit((url.scheme, netloc, "/" + name, url.query, ""))


class Store:
    """Where a test's client opens: ``url`` and the options of ``Client.open``."""

    def __init__(self, backend: str, url: str, options: dict) -> None:
        self.backend = backend
        self.url = url
        self.options = options


@pytest.fixture(params=["postgres", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    roots = [str(tmp_path.resolve())]
    if request.param == "sqlite":
        yield Store("sqlite", f"sqlite:{tmp_path / 'aicd.db'}", {"local_roots": roots})
        return
    name = f"aicd_py_{uuid.uuid4().hex}"
    psql(f'CREATE DATABASE "{name}"')
    # The application role: a member of the migrations' group role, no superuser, no BYPASSRLS.
    psql(
        "SELECT pg_advisory_lock(872301); DO $$ BEGIN "
        "IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'aicd_app') THEN CREATE ROLE aicd_app NOLOGIN; END IF; "
        f"IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_LOGIN}') THEN "
        f"CREATE ROLE {APP_LOGIN} LOGIN PASSWORD '{APP_LOGIN}' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE; END IF; "
        f"END $$; GRANT aicd_app TO {APP_LOGIN}; SELECT pg_advisory_unlock(872301);"
    )
    options = {"migrate": True, "owner_url": with_database(name), "local_roots": roots}
    try:
        yield Store("postgres", with_database(name, APP_LOGIN), options)
    finally:
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null"}
    out = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, env=env, check=True, capture_output=True
    )
    return out.stdout.decode()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository on `main` with one commit (README.md), under the store's local roots."""
    path = tmp_path / "widgets"
    path.mkdir()
    (path / "README.md").write_text("# Widgets\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "Initial commit")
    return path.resolve()
