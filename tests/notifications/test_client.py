"""The typer client against a real server: the commands a user runs, and its exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.notifications.conftest import Stack
from tests.support import ROOT

pytestmark = pytest.mark.slow


def run(stack: Stack | None, *args: str) -> subprocess.CompletedProcess[str]:
    url = stack.api.url if stack else "http://127.0.0.1:9"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "notifications.client",
            "--url",
            url,
            "--api-key",
            "test-admin-key",
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_client_sets_up_sends_and_reads(stack: Stack) -> None:
    assert run(stack, "users", "cli-ada", "--email", "ada@example.com").returncode == 0
    put = run(
        stack, "templates", "put", "cli-hi", "--inapp", "Hi {{ name }}", "--example", "name=A"
    )
    assert put.returncode == 0 and "cli-hi v1" in put.stdout
    sent = run(stack, "--json", "send", "cli-hi", "name=Ada", "--user", "cli-ada", "--watch")
    assert sent.returncode == 0, sent.stderr
    body = json.loads(sent.stdout)
    assert body["status"] == "done" and body["deliveries"][0]["status"] == "delivered"
    inbox = run(stack, "inbox", "cli-ada")
    assert inbox.returncode == 0 and "Hi Ada" in inbox.stdout and "1 unread" in inbox.stdout
    assert (
        run(stack, "prefs", "cli-ada", "--quiet", "22:00-07:00", "--off", "ads:sms").returncode == 0
    )
    assert run(stack, "status", body["id"]).returncode == 0
    assert run(stack, "--json", "dead-letters").returncode == 0
    assert "smtp" in run(stack, "providers").stdout


def test_refusals_exit_1_and_an_unreachable_service_exits_2(stack: Stack) -> None:
    refused = run(stack, "templates", "put", "cli-bad", "--inapp", "{{ x", "--example", "a=1")
    assert refused.returncode == 1 and "422" in refused.stderr
    gone = run(None, "status", "x")
    assert gone.returncode == 2 and "make run-notifications" in gone.stderr
