"""Toy agents written in Python, for the tests."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Dict, Optional

import aicd

USAGE: Dict[str, Any] = {"input_tokens": 120, "output_tokens": 30, "cost_micros": 450, "model": "toy-1"}


class Greeter:
    """Plans one file, writes it from what the repository's README says, approves it."""

    name = "greeter"

    def __init__(self) -> None:
        self.calls: Dict[str, int] = {"plan": 0, "code": 0, "review": 0}

    async def plan(self, ctx: aicd.Context) -> Dict[str, Any]:
        self.calls["plan"] += 1
        assert ctx.repo.full_name == "acme/widgets"
        steps = [{"description": f"greet for: {ctx.issue['title']}", "path": "hello.txt"}]
        return {"value": {"summary": "Add a greeting", "steps": steps}, "usage": USAGE}

    async def code(self, ctx: aicd.Context, plan: Dict[str, Any], feedback: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        self.calls["code"] += 1
        readme = await ctx.repo.read_file("README.md")
        assert readme is not None
        assert await ctx.repo.list_files() == ["README.md"]
        assert await ctx.repo.read_file("missing.txt") is None
        text = f"Hello from {readme.splitlines()[0].lstrip('# ')}!\n"
        change = {"path": plan["steps"][0]["path"], "op": {"kind": "write", "content": {"text": text}}}
        return {"value": {"summary": "Add hello.txt", "changes": [change]}, "usage": USAGE}

    async def review(self, ctx: aicd.Context, plan: Dict[str, Any], changeset: Dict[str, Any]) -> Dict[str, Any]:
        self.calls["review"] += 1
        assert changeset["changes"][0]["path"] == "hello.txt"
        return {"value": {"verdict": "approve", "summary": "Looks right", "comments": []}, "usage": USAGE}


class FlakyCoder(Greeter):
    """Raises an ordinary exception at its first `code` call."""

    async def code(self, ctx: aicd.Context, plan: Dict[str, Any], feedback: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        if self.calls["code"] == 0:
            self.calls["code"] += 1
            raise ConnectionError("the model's server reset the connection")
        return await super().code(ctx, plan, feedback)


class Refuser(Greeter):
    """Refuses for good in `code`."""

    async def code(self, ctx: aicd.Context, plan: Dict[str, Any], feedback: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        self.calls["code"] += 1
        raise aicd.PermanentAgentError("this issue asks for something I will not write")


class Stuck(Greeter):
    """Writes `marker` when `code` starts, then never finishes."""

    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.marker = marker

    async def code(self, ctx: aicd.Context, plan: Dict[str, Any], feedback: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        self.marker.write_text(ctx.job_id)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")
