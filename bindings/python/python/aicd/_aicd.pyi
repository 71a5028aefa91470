"""The native module (Rust). Use the :mod:`aicd` package instead; values cross as JSON text."""

from typing import Any, Awaitable, List, Optional, Tuple

from typing_extensions import final

__all__ = [
    "AicdError",
    "Conflict",
    "Engine",
    "Follow",
    "InvalidInput",
    "NotFound",
    "PaymentRequired",
    "PermissionDenied",
    "PolicyViolation",
    "RepoView",
    "Session",
    "Unauthenticated",
    "Unavailable",
    "Worker",
    "check_policy",
    "time_agent_calls",
    "parse_webhook",
    "verify_webhook",
]

class AicdError(Exception):
    code: str

class NotFound(AicdError): ...
class PermissionDenied(AicdError): ...
class Unauthenticated(AicdError): ...
class InvalidInput(AicdError): ...
class Conflict(AicdError): ...
class PolicyViolation(AicdError): ...
class Unavailable(AicdError): ...
class PaymentRequired(AicdError): ...

@final
class Engine:
    @staticmethod
    def open(
        url: str,
        migrate: bool = False,
        owner_url: Optional[str] = None,
        local_roots: List[str] = ...,
        redis_url: Optional[str] = None,
    ) -> Awaitable[Engine]: ...
    @property
    def backend(self) -> str: ...
    def bootstrap(self, name: str) -> Awaitable[Tuple[str, str]]: ...
    def session(self, api_key: str) -> Awaitable[Session]: ...
    def close(self) -> Awaitable[None]: ...

@final
class Session:
    @property
    def org_id(self) -> str: ...
    def call(self, op: str, args: str) -> Awaitable[str]: ...
    def follow(self, job_id: str) -> Follow: ...

@final
class Follow:
    def next(self) -> Awaitable[Optional[str]]: ...

@final
class RepoView:
    def list_files(self, prefix: Optional[str] = None) -> Awaitable[List[str]]: ...
    def read_bytes(self, path: str) -> Awaitable[Optional[bytes]]: ...

@final
class Worker:
    def __new__(
        cls,
        engine: Engine,
        bridge: Optional[Any],
        name: str,
        concurrency: int = 4,
        poll_interval_ms: int = 2000,
        lease_ms: int = 30000,
        max_attempts: int = 5,
        retry_delay_ms: int = 2000,
    ) -> Worker: ...
    def run_until_idle(self) -> Awaitable[None]: ...
    def start(self) -> None: ...
    def stop(self, grace_ms: int = 30000) -> Awaitable[None]: ...

def verify_webhook(secret: bytes, body: bytes, signature_header: Optional[str]) -> bool: ...
def parse_webhook(event_name: str, body: bytes) -> str: ...
def check_policy(changeset: str, config: Optional[str] = None) -> str: ...
def time_agent_calls(bridge: Any, calls: int) -> Awaitable[float]: ...
