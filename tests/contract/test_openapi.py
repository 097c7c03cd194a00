"""Every service's `/openapi.json` tells the truth: schemathesis against a real server
process of each service.

For each operation of the schema, `st run` (schemathesis's CLI, the same run a user would
make) sends a small, bounded number of requests: the schema's examples, the coverage phase's
boundary and negative cases, then `CONTRACT_EXAMPLES` fuzzed cases (10 here; `make fuzz`
runs many more), from a fixed seed unless `CONTRACT_SEED` says otherwise. Every response is
checked: no 5xx; no status, content type or header the schema does not document; bodies
match their schemas; invalid input is refused with a 4xx; a missing API key is refused; a
405 names every method of its path in `Allow`; and input the schema allows is not refused
(`hooks.py`), except for the rules a service's schema states in words because JSON Schema
cannot express them (listed per service below).

How a new service joins, the day it lands: one line in `SERVICES`,

    Service("task_queue", {"TASK_QUEUE_REDIS_URL": "{redis_url}"}, API_KEY_HEADER),

naming its module (`python -m <module>`), the environment that starts it on the test's own
Redis (`{redis_url}`) and SQL database (`{database_url}`), the headers its schema's security
scheme needs, and (rarely) the refusals the schema can only state in words (see `hooks.py`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from tests.support import ROOT, ServiceProcess

pytestmark = pytest.mark.slow

ADMIN_KEY = "test-admin-key"
API_KEY_HEADER = {"X-API-Key": ADMIN_KEY}
EXAMPLES = os.environ.get("CONTRACT_EXAMPLES", "10")
SEED = os.environ.get("CONTRACT_SEED", "1")
TIME_LIMIT = int(os.environ.get("CONTRACT_TIMEOUT", "300"))
# Every check but `positive_data_acceptance` (hooks.py has ours) and the stateful ones
# (`use_after_free`, `ensure_resource_availability`, `object_level_authorization`: the
# stateful phase is not run).
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "missing_required_header",
        "unsupported_method",
        "allow_header_conformance",
        "ignored_auth",
        "refused_only_for_stated_reasons",
    ]
)


@dataclass(frozen=True)
class Service:
    module: str
    env: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    stated_refusals: tuple[str, ...] = ()
    # Headers that need the running server first (a bearer token from its own login).
    login: Callable[[str], dict[str, str]] | None = None


SHORTENER_ENV = {
    "URL_SHORTENER_REDIS_URL": "{redis_url}",
    "URL_SHORTENER_DATABASE_URL": "{database_url}",
    "URL_SHORTENER_ADMIN_KEY": ADMIN_KEY,
    "URL_SHORTENER_BASE_URL": "https://sho.rt",
    "URL_SHORTENER_CREATE_RATE_PER_MINUTE": "0",
    "URL_SHORTENER_UNLOCK_RATE_PER_MINUTE": "0",
}


def chat_login(url: str) -> dict[str, str]:
    """An account on the running chat service and its bearer token."""
    import httpx

    account = {"username": "contract", "password": "contract-password"}
    httpx.post(f"{url}/api/users", json=account).raise_for_status()
    token = httpx.post(f"{url}/api/token", json=account).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


TASK_QUEUE_ENV = {
    "TASK_QUEUE_REDIS_URL": "{redis_url}",
    "TASK_QUEUE_DATABASE_URL": "{database_url}",
    "TASK_QUEUE_ADMIN_KEY": ADMIN_KEY,
    "TASK_QUEUE_ACCESS_LOG": "false",
}

SERVICES = [
    # expires_at in the past (invalid-link); a cursor the API did not hand out.
    Service("url_shortener", SHORTENER_ENV, API_KEY_HEADER, ("invalid-link", "invalid-cursor")),
    # /api/usage: one value per key; /api/check: a cost of 3.0 is refused (strict integers),
    # while to JSON Schema it is an integer.
    Service(
        "rate_limiter",
        {"RATE_LIMITER_REDIS_URL": "{redis_url}", "RATE_LIMITER_GRPC_PORT": "0"},
        {},
        ("invalid-request", "validation-failed:int_type"),
    ),
    # A room name or username taken (409), a direct room with oneself (422: invalid-request).
    Service(
        "chat",
        {
            "CHAT_REDIS_URL": "{redis_url}",
            "CHAT_DATABASE_URL": "{database_url}",
            "CHAT_JWT_SECRET": "contract-jwt-secret-0123456789-abcdef",
        },
        {},
        ("invalid-request",),
        login=chat_login,
    ),
    # A job's args must fit its type's signature (listed by /api/job-types), its queue must
    # be configured and a cron expression must parse: checked at submit, stated in words.
    Service("task_queue", TASK_QUEUE_ENV, API_KEY_HEADER, ("invalid-job", "invalid-cursor")),
    # A template or user the body names must exist (invalid-notification) and the template
    # must render with the data (template-does-not-render); a reused Idempotency-Key with
    # another body; time zones and "user_id or topic" are rules in words (value_error).
    Service(
        "notifications",
        {
            "NOTIFICATIONS_REDIS_URL": "{redis_url}",
            "NOTIFICATIONS_DATABASE_URL": "{database_url}",
            "NOTIFICATIONS_ADMIN_KEY": ADMIN_KEY,
            # The inbox's SSE stream ends after this, so each request to it has an end.
            "NOTIFICATIONS_STREAM_LIFETIME_SECONDS": "0.3",
        },
        API_KEY_HEADER,
        (
            "invalid-notification",
            "template-does-not-render",
            "idempotency-key-reused",
            "invalid-cursor",
            "validation-failed:value_error",
        ),
    ),
]


def schemathesis_run(
    url: str, service: Service, *, examples: str, seed: str, report: Path
) -> subprocess.CompletedProcess[str]:
    """`st run` against a running service; its output is the report a person would read."""
    command = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{url}/openapi.json",
        "--checks", CHECKS,
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", examples,
        "--workers", "1",
        "--no-color",
        "--continue-on-failure",
        "--generation-database", "none",
        "--report", "junit",
        "--report-junit-path", str(report),
    ]  # fmt: skip
    if seed:
        command += ["--seed", seed]
    for name, value in service.headers.items():
        command += ["-H", f"{name}: {value}"]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.contract.hooks",
        "CONTRACT_STATED_REFUSALS": ",".join(service.stated_refusals),
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIME_LIMIT
    )


@pytest.mark.timeout(TIME_LIMIT + 60)
@pytest.mark.parametrize("service", SERVICES, ids=lambda s: getattr(s, "module", None))
def test_schema_tells_the_truth(
    service: Service,
    service_factory: Callable[..., ServiceProcess],
    redis_url: str,
    tmp_path: Path,
) -> None:
    values = {"redis_url": redis_url, "database_url": f"sqlite:///{tmp_path / 'contract.db'}"}
    prefix = service.module.upper()
    env = {k: v.format(**values) for k, v in service.env.items()}
    env |= {f"{prefix}_DATA_DIR": str(tmp_path / "data"), f"{prefix}_LOG_LEVEL": "WARNING"}
    server = service_factory(service.module, env)
    if service.login is not None:
        service = replace(service, headers={**service.headers, **service.login(server.url)})
    result = schemathesis_run(
        server.url, service, examples=EXAMPLES, seed=SEED, report=tmp_path / "junit.xml"
    )
    summary = "\n".join(result.stdout.splitlines()[-60:])
    assert result.returncode == 0, f"schemathesis found problems:\n{result.stdout}{result.stderr}"
    assert " passed" in summary and "Tested:" in summary, summary
