"""The load scenario runs clean: locust headless against a real server process."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import ROOT, ServiceProcess

pytestmark = pytest.mark.slow

# Run as a process, never imported here: importing locust monkey-patches this whole process
# with gevent.
LOCUST = Path(sys.executable).parent / "locust"


def test_locust_scenario_runs_without_failures(
    redis_url: str, shortener: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    # A low creation limit, so the scenario meets 429s too (expected, not failures).
    svc = shortener(redis_url, URL_SHORTENER_CREATE_RATE_PER_MINUTE="3")
    prefix = tmp_path / "load"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("URL_SHORTENER_", "LOCUST_"))},
        # No URL_SHORTENER_API_KEY: the key comes from the setting the server reads, here
        # a non-default admin key (what `make load-url_shortener` does on a configured host).
        "URL_SHORTENER_ADMIN_KEY": "test-admin-key",
        "URL_SHORTENER_LOAD_POOL": "300",
    }
    proc = subprocess.run(
        [
            str(LOCUST), "-f", "url_shortener/locustfile.py", "--headless",
            "-u", "5", "-r", "5", "-t", "6s", "--host", svc.url,
            "--only-summary", "--exit-code-on-error", "1", "--csv", str(prefix),
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]

    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    counts = {name: int(row["Request Count"]) for name, row in rows.items()}
    failures = {name: int(row["Failure Count"]) for name, row in rows.items()}
    assert failures["Aggregated"] == 0, (failures, Path(f"{prefix}_failures.csv").read_text())
    assert counts["/api/links/bulk (pool)"] == 1  # one shared pool per locust process
    assert counts["/{code}"] > 100
    assert counts["/api/links"] > 0 and counts["/api/links/{code}/stats"] > 0
    assert counts["/api/links [429 rate limited]"] > 0
    # the mix: redirects dominate, creates and stats reads are the minority
    creates = counts["/api/links"] + counts["/api/links [429 rate limited]"]
    assert counts["/{code}"] > 5 * (creates + counts["/api/links/{code}/stats"])
    assert Path(f"{prefix}_exceptions.csv").read_text().count("\n") <= 1  # header only
