"""The load scenario runs clean: locust headless against a real server process."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chat.conftest import Start
from tests.support import ROOT

pytestmark = pytest.mark.slow
# Run as a process, never imported here: importing locust monkey-patches with gevent.
LOCUST = Path(sys.executable).parent / "locust"


def test_locust_scenario_reports_fanout_without_failures(
    chat: Start, redis_url: str, tmp_path: Path
) -> None:
    svc = chat(redis_url)
    prefix = tmp_path / "load"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHAT_", "LOCUST_"))}
    env["CHAT_LOAD_ROOMS"] = "1"
    proc = subprocess.run(
        [
            str(LOCUST), "-f", "chat/locustfile.py", "--headless", "-u", "4", "-r", "4",
            "-t", "6s", "--host", svc.url, "--only-summary", "--exit-code-on-error", "1",
            "--csv", str(prefix),
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert int(rows["fanout"]["Request Count"]) > 0
    assert int(rows["send (ack)"]["Request Count"]) > 0
