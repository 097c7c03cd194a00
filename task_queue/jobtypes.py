"""Job types: plain functions registered with a decorator.

    @registry.job(queue="io", max_retries=5, backoff_base_seconds=0.5, backoff_cap_seconds=30)
    def thumbnail(ctx: JobContext, url: str, width: int = 200) -> dict: ...

The function's signature is the type's schema: `args` that do not bind to it (unknown names,
missing ones, wrong types) are refused at submit with a 422, not discovered by a worker later.
`ctx.progress(percent, message)` reports progress; raising `PermanentError` fails the job at
once; any other exception is retried after a full-jitter backoff (the type's own base and cap,
else the settings') until the type's retries run out.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError, create_model


class PermanentError(Exception):
    """A failure retrying cannot fix (bad input, a 404): the job fails without retries."""


class JobContext(Protocol):
    job_id: str
    attempt: int

    def progress(self, percent: float, message: str = "") -> None: ...


@dataclass(frozen=True)
class JobType:
    name: str
    fn: Callable[..., Any]
    model: type[BaseModel]
    queue: str
    max_retries: int | None
    timeout_seconds: float | None
    description: str
    # The type's own retry backoff (full jitter); None: the service's settings.
    backoff_base_seconds: float | None = None
    backoff_cap_seconds: float | None = None

    def validate(self, args: dict[str, Any]) -> dict[str, Any]:
        """The args as the function will receive them; raises ValueError when they do not fit."""
        try:
            return self.model.model_validate(args).model_dump()
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "args"
            raise ValueError(f"args.{where}: {first['msg']}") from exc


def _model_for(name: str, fn: Callable[..., Any]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    params = list(inspect.signature(fn, eval_str=True).parameters.values())[1:]  # skip ctx
    for param in params:
        annotation = Any if param.annotation is inspect.Parameter.empty else param.annotation
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    config = ConfigDict(extra="forbid", strict=False)
    return create_model(f"{name}_args", __config__=config, **fields)


@dataclass
class Registry:
    types: dict[str, JobType] = field(default_factory=dict)

    def job(
        self,
        name: str | None = None,
        *,
        queue: str = "default",
        max_retries: int | None = None,
        timeout_seconds: float | None = None,
        backoff_base_seconds: float | None = None,
        backoff_cap_seconds: float | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            type_name = name or fn.__name__
            self.types[type_name] = JobType(
                name=type_name,
                fn=fn,
                model=_model_for(type_name, fn),
                queue=queue,
                max_retries=max_retries,
                timeout_seconds=timeout_seconds,
                description=(fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "",
                backoff_base_seconds=backoff_base_seconds,
                backoff_cap_seconds=backoff_cap_seconds,
            )
            return fn

        return register

    def get(self, name: str) -> JobType | None:
        return self.types.get(name)

    def max_retries(self, name: str, default: int) -> int:
        """The type's own retry count, else `default` (the settings')."""
        job_type = self.types.get(name)
        return default if job_type is None or job_type.max_retries is None else job_type.max_retries


registry = Registry()


@registry.job()
def sleep(ctx: JobContext, seconds: float = 1.0) -> dict[str, Any]:
    """Sleeps, reporting progress each second (the job to watch)."""
    if seconds < 0 or seconds > 3600:
        raise PermanentError("seconds must be between 0 and 3600")
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        ctx.progress(100 * elapsed / seconds if seconds else 100, f"{elapsed:.0f}s of {seconds}s")
        time.sleep(min(1.0, seconds - elapsed))
    ctx.progress(100, "done")
    return {"slept": seconds}


@registry.job()
def flaky(ctx: JobContext, failures: int = 1) -> dict[str, Any]:
    """Fails its first `failures` attempts, then succeeds (retries with backoff at work)."""
    if ctx.attempt <= failures:
        raise RuntimeError(f"flaky: attempt {ctx.attempt} of {failures} planned failures")
    return {"attempts": ctx.attempt}


@registry.job(max_retries=4, backoff_base_seconds=0.05, backoff_cap_seconds=0.1)
def flaky_fast(ctx: JobContext, failures: int = 1) -> dict[str, Any]:
    """Like flaky, with its own retry policy: 4 retries, backoff capped at 0.1 s."""
    return flaky(ctx, failures)


@registry.job()
def always_fail(ctx: JobContext, message: str = "always fails") -> None:
    """Fails every attempt: ends as a dead letter."""
    raise RuntimeError(message)


@registry.job()
def permanent_error(ctx: JobContext, message: str = "bad input") -> None:
    """Fails with a permanent error: never retried."""
    raise PermanentError(message)


@registry.job(queue="cpu")
def cpu(ctx: JobContext, rounds: int = 100_000) -> dict[str, Any]:
    """CPU-bound: hashes `rounds` times (the reason workers are processes, not threads)."""
    if rounds < 0 or rounds > 50_000_000:
        raise PermanentError("rounds must be between 0 and 50,000,000")
    digest = b"seed"
    step = max(rounds // 10, 1)
    for i in range(rounds):
        digest = hashlib.sha256(digest).digest()
        if i % step == 0:
            ctx.progress(100 * i / rounds, f"{i} rounds")
    return {"rounds": rounds, "digest": digest.hex()}


@registry.job(queue="io", max_retries=5)
def fetch(ctx: JobContext, url: str, timeout: float = 10.0) -> dict[str, Any]:
    """Fetches a URL: a 4xx is permanent, a 5xx or network error is retried."""
    if not url.startswith(("http://", "https://")):
        raise PermanentError("url must be http(s)")
    response = httpx.get(url, timeout=timeout, follow_redirects=True)
    if 400 <= response.status_code < 500:
        raise PermanentError(f"{url} answered {response.status_code}")
    response.raise_for_status()
    return {"status": response.status_code, "bytes": len(response.content)}


@registry.job()
def noop(ctx: JobContext) -> None:
    """Does nothing (benchmarks measure the queue itself)."""


@registry.job()
def add(ctx: JobContext, value: float = 0, previous: float | list[float] | None = None) -> float:
    """Adds `value` to the previous step's result (or to the sum of a group's results)."""
    if isinstance(previous, list):
        return value + sum(previous)
    return value + (previous or 0)


@registry.job()
def stubborn(ctx: JobContext, seconds: float = 10.0) -> None:
    """Swallows the soft timeout and keeps going: only the hard limit stops it."""
    deadline = time.monotonic() + min(seconds, 3600)
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except Exception:
            continue
