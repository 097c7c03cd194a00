"""The command-line client as users run it: a subprocess against the real stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT
from tests.task_queue.conftest import Stack


def cli(stack: Stack, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TASK_QUEUE_")},
        "TASK_QUEUE_URL": stack.api.url,
        "TASK_QUEUE_API_KEY": "test-admin-key",
        "COLUMNS": "200",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "task_queue.client", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    return proc


def test_submit_watch_status_list(stack: Stack) -> None:
    out = cli(stack, "submit", "sleep", "seconds=1.5", "--watch").stdout
    assert "succeeded" in out and "attempt 1: succeeded" in out
    job = json.loads(cli(stack, "--json", "submit", "add", "value=2").stdout)
    stack.wait(job["id"])
    assert '"result": 2' in cli(stack, "--json", "status", job["id"]).stdout
    assert job["id"] in cli(stack, "list", "--type", "add").stdout


def test_cancel_retry_dead_letters_replay(stack: Stack) -> None:
    job = json.loads(cli(stack, "--json", "submit", "noop", "--delay", "30").stdout)
    assert "cancelled" in cli(stack, "cancel", job["id"]).stdout
    # A worker may take the job before the answer is read: queued, running or done.
    retried = json.loads(cli(stack, "--json", "retry", job["id"]).stdout)
    assert retried["status"] in {"queued", "running", "succeeded"}
    assert stack.wait(job["id"])["status"] == "succeeded"
    dead = json.loads(cli(stack, "--json", "submit", "always_fail", "--retries", "0").stdout)
    stack.wait(dead["id"])
    assert dead["id"] in cli(stack, "dead-letters").stdout
    replayed = json.loads(cli(stack, "--json", "replay", dead["id"]).stdout)
    assert replayed["status"] in {"queued", "running", "dead"}
    assert len(stack.wait(dead["id"], {"dead"})["attempts"]) == 2


def test_workflow_and_schedules(stack: Stack) -> None:
    out = cli(stack, "workflow", "add:value=1", "add:value=2").stdout
    assert "chain" in out and "step 1: add" in out
    row = json.loads(cli(stack, "--json", "schedules", "add", "noop", "--every", "3600").stdout)
    assert row["id"] in cli(stack, "schedules", "list").stdout
    assert "paused" in cli(stack, "schedules", "pause", row["id"]).stdout
    cli(stack, "schedules", "delete", row["id"])
    assert row["id"] not in cli(stack, "schedules", "list").stdout


def test_errors_exit_1_and_unreachable_exits_2(stack: Stack) -> None:
    err = cli(stack, "submit", "nope", code=1).stderr
    assert "Error 422" in err and "unknown job type" in err
    assert "Error 404" in cli(stack, "status", "jnope", code=1).stderr
    watched = cli(stack, "submit", "permanent_error", "--watch", code=1)
    assert "failed" in watched.stdout
    env_url = "http://127.0.0.1:9"
    proc = subprocess.run(
        [sys.executable, "-m", "task_queue.client", "--url", env_url, "list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "make run-task_queue" in proc.stderr


def test_batch_submits_a_file_of_jobs_all_or_nothing(stack: Stack, tmp_path: Path) -> None:
    listed = tmp_path / "jobs.json"
    listed.write_text(json.dumps([{"type": "add", "args": {"value": i}} for i in range(3)]))
    answer = json.loads(cli(stack, "--json", "batch", str(listed)).stdout)
    assert answer["created"] == 3 and [j["type"] for j in answer["jobs"]] == ["add"] * 3
    assert [stack.wait(j["id"])["result"] for j in answer["jobs"]] == [0, 1, 2]
    lines = tmp_path / "jobs.jsonl"
    lines.write_text('{"type": "noop", "idempotency_key": "cli-batch"}\n{"type": "noop"}\n')
    out = cli(stack, "batch", str(lines)).stdout
    assert "2 new, 0 already there" in out and out.count("noop") == 2
    again = cli(stack, "batch", str(lines)).stdout
    assert "1 new, 1 already there" in again and "existing job" in again
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"type": "noop", "idempotency_key": "cli-bad"}, {"type": "nope"}]))
    err = cli(stack, "batch", str(bad), code=1).stderr
    assert "Error 422" in err and "jobs[1]" in err
    assert "cli-bad" not in cli(stack, "--json", "list", "--type", "noop").stdout
    bad.write_text("not json")
    assert "JSON" in cli(stack, "batch", str(bad), code=2).stderr
