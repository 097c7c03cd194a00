"""The typer client against a real server: the commands a user runs, and its exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from notifications.stack import Stack
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


def test_the_readmes_first_block_delivers_on_every_channel(stack: Stack) -> None:
    # notifications/README.md's commands, with this stack's receiver in --webhook.
    hook = stack.hook_url("demo")
    made = run(
        stack,
        "users",
        "ada",
        "--email",
        "ada@example.com",
        "--phone",
        "+15550001111",
        "--webhook",
        hook,
    )
    assert made.returncode == 0, made.stderr
    put = run(
        stack,
        "templates", "put", "welcome",
        "--inapp", "Hi {{ name }}",
        "--sms", "Hi {{ name }}",
        "--email-text", "Hello {{ name }}",
        "--webhook", "hi {{ name }}",
        "--example", "name=A",
    )  # fmt: skip
    assert put.returncode == 0 and "welcome v1" in put.stdout
    sent = run(stack, "send", "welcome", "name=Ada", "--user", "ada", "--watch")
    assert sent.returncode == 0, sent.stderr
    for channel, status in (
        ("email", "sent"),
        ("sms", "sent"),
        ("webhook", "delivered"),
        ("inapp", "delivered"),
    ):
        assert f"ada {channel:8} {status}" in sent.stdout, sent.stdout
    assert any(m["text"] == "Hi Ada" for m in stack.received("sms"))
    assert any(m["name"] == "demo" for m in stack.received("webhook"))


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
