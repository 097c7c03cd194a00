"""The load scenario runs clean: locust headless against a real API process."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.support import ROOT
from tests.task_queue.conftest import Stack

# Run as a process, never imported here: importing locust monkey-patches this process.
LOCUST = Path(sys.executable).parent / "locust"


def test_locust_scenario_runs_without_failures(
    stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    api = stack_factory()  # the API alone: submitted jobs wait in the broker
    prefix = tmp_path / "load"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TASK_QUEUE_", "LOCUST_"))},
        "TASK_QUEUE_API_KEY": "test-admin-key",
    }
    proc = subprocess.run(
        [
            str(LOCUST), "-f", "task_queue/locustfile.py", "--headless",
            "-u", "4", "-r", "4", "-t", "5s", "--host", api.api.url,
            "--only-summary", "--exit-code-on-error", "1", "--csv", str(prefix),
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert int(rows["/api/jobs [submit]"]["Request Count"]) > 5
    assert int(rows["/api/jobs/{id}"]["Request Count"]) > 5
