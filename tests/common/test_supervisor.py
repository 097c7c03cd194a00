"""common.supervisor on real child processes: one part exiting stops the rest; SIGTERM
stops all."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.support import ROOT, wait_for

SUPERVISOR = """
import os, sys
from common.supervisor import supervise
parts = {{"sleeper": ["-c", "import time; time.sleep(120)"], "other": ["-c", {other!r}]}}
sys.exit(supervise("demo", parts, dict(os.environ), banner="parts started", grace=10))
"""


def _start(other: str) -> subprocess.Popen[str]:
    code = SUPERVISOR.format(other=other)
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True
    )


def test_a_part_that_exits_stops_the_others_and_gives_its_code() -> None:
    started = time.monotonic()
    proc = _start("import sys, time; time.sleep(0.5); sys.exit(3)")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "demo: parts started" in err
    assert "demo: other exited with 3; stopping the rest" in err
    assert time.monotonic() - started < 60  # the sleeper (120 s) was stopped, not waited for


def test_sigterm_stops_every_part() -> None:
    proc = _start("import time; time.sleep(120)")
    stderr = proc.stderr
    assert stderr is not None
    wait_for(lambda: "parts started" in stderr.readline(), 30)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
