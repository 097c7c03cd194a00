"""The command-line client against a real service process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rate_limiter.client import app
from tests.rate_limiter.factories import write_rules
from tests.support import ServiceProcess

RULES = """\
domain: api
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 2, algorithm: sliding_log}
  - key: tenant
    rate_limit: {unit: second, requests_per_unit: 5000, prefetch: true}
  - key: address
    value: 198.51.100.7
    rate_limit: {unit: day, requests_per_unit: 0}
  - key: address
    value: 198.51.100.8
  - key: upload
    rate_limit: {unit: minute, requests_per_unit: 1, algorithm: concurrency}
"""


@pytest.mark.slow
def test_check_usage_and_rules(
    tmp_path: Path, redis_url: str, service_factory: Callable[..., ServiceProcess]
) -> None:
    rules = write_rules(tmp_path, RULES)
    svc = service_factory("rate_limiter", {"RATE_LIMITER_RULES": str(rules),
                                           "RATE_LIMITER_REDIS_URL": redis_url,
                                           "RATE_LIMITER_GRPC_PORT": "0"})  # fmt: skip
    runner = CliRunner()
    url = ["--url", svc.url]  # global options come before the command (common/cli.py)

    first = runner.invoke(app, [*url, "check", "api", "user=alice"])
    assert first.exit_code == 0, first.output
    assert "ALLOWED" in first.output and "api.user: allowed, 1/2 left" in first.output
    runner.invoke(app, [*url, "check", "api", "user=alice"])
    refused = runner.invoke(app, [*url, "check", "api", "user=alice"])
    assert (
        refused.exit_code == 1 and "REFUSED" in refused.output and "retry after" in refused.output
    )
    big = runner.invoke(app, [*url, "check", "api", "user=bob", "--cost", "3"])
    assert big.exit_code == 1 and "never fits" in big.output

    usage = runner.invoke(app, [*url, "usage", "api", "user=alice"])
    assert usage.exit_code == 0 and "0/2 left" in usage.output
    as_json = runner.invoke(app, [*url, "--json", "usage", "api", "user=carol"])
    assert '"remaining": 2' in as_json.output

    listed = runner.invoke(app, [*url, "rules"])
    assert listed.exit_code == 0
    assert "user=*" in listed.output and "2/hour sliding_log   (" in listed.output
    assert "5000/second gcra prefetch   (api.tenant)" in listed.output
    assert "0/day (refuses every request)   (api.address_198.51.100.7)" in listed.output
    assert "address=198.51.100.8" in listed.output and "no limit (allowlist entry)" in listed.output

    # A concurrency lease: taken by check, shown, given back by release.
    held = runner.invoke(app, [*url, "check", "api", "upload=u1"])
    assert held.exit_code == 0 and ", lease " in held.output
    lease = held.output.rsplit(", lease ", 1)[1].split()[0]
    assert runner.invoke(app, [*url, "check", "api", "upload=u1"]).exit_code == 1
    freed = runner.invoke(app, [*url, "release", "api", "upload=u1", "--lease", lease])
    assert freed.exit_code == 0 and "released from 1 rule(s)" in freed.output
    again = runner.invoke(app, [*url, "release", "api", "upload=u1", "--lease", lease])
    assert again.exit_code == 1 and "nothing held that lease" in again.output
    assert runner.invoke(app, [*url, "check", "api", "upload=u1"]).exit_code == 0

    # An unknown domain has no rules: allowed, as Envoy answers OK.
    unknown = runner.invoke(app, [*url, "check", "nope", "user=x"])
    assert unknown.exit_code == 0 and "no rule applies" in unknown.output
    bad = runner.invoke(app, [*url, "check", "api", "user"])
    assert bad.exit_code == 2 and "key=value" in bad.output
    down = runner.invoke(app, ["--url", "http://127.0.0.1:9", "rules"])
    assert down.exit_code == 2 and "cannot connect" in down.output
    assert "make run-rate_limiter" in down.output
