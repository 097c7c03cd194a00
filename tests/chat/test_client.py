"""The terminal client, run as a user runs it: `python -m chat.client ...` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.chat.conftest import unique
from tests.chat.factories import PASSWORD, auth, user
from tests.support import ROOT, ServiceProcess

pytestmark = pytest.mark.slow
Pair = tuple[ServiceProcess, ServiceProcess]


def run(cwd: Path, base: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "CHAT_URL": base, "CHAT_PASSWORD": PASSWORD, "PYTHONPATH": path}
    env.pop("CHAT_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "chat.client", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_users_login_rooms_and_chat(pair: Pair, tmp_path: Path) -> None:
    base = pair[0].url
    name, room = unique(), unique("room")
    created = run(tmp_path, base, "users", "create", name)
    assert created.returncode == 0 and f"created user {name}" in created.stdout
    again = run(tmp_path, base, "users", "create", name)
    assert again.returncode == 1 and "already taken" in again.stderr
    logged = run(tmp_path, base, "login", name)
    assert logged.returncode == 0, logged.stderr
    assert (tmp_path / ".data" / "chat.token").exists()
    # Someone else is in the room on the other instance.
    other, tok = user(pair[1].url)
    session = run(tmp_path, base, "--room", room, stdin="hello from the terminal\n/who\n/quit\n")
    assert session.returncode == 0, session.stderr
    assert f"{name}: hello from the terminal" in session.stdout
    assert f"* online: {name}" in session.stdout
    listed = run(tmp_path, base, "--json", "rooms")
    assert listed.returncode == 0 and room in listed.stdout
    rooms = httpx.get(f"{base}/api/rooms", params={"name": room}, headers=auth(tok)).json()
    rid = rooms["rooms"][0]["id"]
    hist = httpx.get(f"{base}/api/rooms/{rid}/messages", headers=auth(tok)).json()["messages"]
    assert [(m["user"], m["text"]) for m in hist] == [(name, "hello from the terminal")]
    assert other


def test_unreachable_service_exits_2(tmp_path: Path) -> None:
    result = run(tmp_path, "http://127.0.0.1:9", "users", "create", "x")
    assert result.returncode == 2 and "make run-chat" in result.stderr
