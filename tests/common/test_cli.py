"""The one CLI convention (common/cli.py), through both clients as users run them: defaults
read from the server's own settings, the same global options, exit codes and errors."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from common.redis_server import free_port
from tests.support import ROOT, ServiceProcess

pytestmark = pytest.mark.slow


def run(module: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("URL_SHORTENER_", "RATE_"))}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**clean, "COLUMNS": "200", "NO_COLOR": "1", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_defaults_come_from_the_servers_own_settings(
    redis_url: str, service_factory: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    svc = service_factory(
        "url_shortener",
        {
            "URL_SHORTENER_REDIS_URL": redis_url,
            "URL_SHORTENER_DATA_DIR": str(tmp_path),
            "URL_SHORTENER_ADMIN_KEY": "test-admin-key",
        },
    )
    # Configured like the server (its port and admin key), no client variables at all.
    server_env = {"URL_SHORTENER_PORT": str(svc.port), "URL_SHORTENER_ADMIN_KEY": "test-admin-key"}
    made = run("url_shortener.client", "--json", "shorten", "https://example.com/a", **server_env)
    assert made.returncode == 0, made.stderr
    # <PREFIX>_URL and <PREFIX>_API_KEY win over the server's settings.
    wrong_key = run(
        "url_shortener.client",
        "list",
        **server_env,
        URL_SHORTENER_URL=svc.url,
        URL_SHORTENER_API_KEY="not-a-key",
    )
    assert wrong_key.returncode == 1, wrong_key.stderr
    assert wrong_key.stderr.startswith("Error 401 "), wrong_key.stderr


@pytest.mark.parametrize(
    ("module", "command", "service"),
    [
        ("url_shortener.client", ["list"], "url_shortener"),
        ("rate_limiter.client", ["rules"], "rate_limiter"),
    ],
)
def test_an_unreachable_service_exits_2_with_the_make_hint(
    module: str, command: list[str], service: str
) -> None:
    port = free_port()  # nothing listens there
    proc = run(module, "--url", f"http://127.0.0.1:{port}", *command)
    assert proc.returncode == 2
    assert "cannot connect" in proc.stderr and f"make run-{service}" in proc.stderr


@pytest.mark.parametrize("module", ["url_shortener.client", "rate_limiter.client"])
def test_usage_errors_exit_2_and_every_client_has_the_global_options(module: str) -> None:
    assert run(module, "--no-such-option").returncode == 2
    helped = run(module, "--help")
    assert helped.returncode == 0
    for option in ("--url", "--api-key", "--json"):
        assert option in helped.stdout, helped.stdout
