"""Live events over SSE, workflows, and the queues/workers/readiness views."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from tests.support import wait_for
from tests.task_queue.conftest import ADMIN, Stack, assert_problem


def _read_events(
    client: httpx.Client,
    path: str,
    headers: dict[str, str] | None = None,
    stop_after: int | None = None,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with client.stream("GET", path, headers=headers or {}, timeout=30) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        for line in resp.iter_lines():
            if not line:
                if current:
                    out.append(current)
                    current = {}
                    if stop_after and len(out) >= stop_after:
                        break
                continue
            field, _, value = line.partition(": ")
            current[field] = value
    return out


def test_sse_streams_status_and_progress_until_the_job_ends(stack: Stack) -> None:
    job = stack.submit("sleep", {"seconds": 2.5})
    with stack.http as c:
        events = _read_events(c, f"/api/jobs/{job['id']}/events")
    kinds = [e["event"] for e in events]
    assert kinds[0] == "snapshot"
    statuses = [json.loads(e["data"])["status"] for e in events if e["event"] == "status"]
    assert statuses[0] == "queued" and "running" in statuses and statuses[-1] == "succeeded"
    assert sum(1 for k in kinds if k == "progress") >= 2
    assert all("id" in e for e in events[1:])


def test_a_reconnect_with_last_event_id_misses_nothing(stack: Stack) -> None:
    job = stack.submit("sleep", {"seconds": 2.5})
    with stack.http as c:
        first = _read_events(c, f"/api/jobs/{job['id']}/events", stop_after=3)
        last_id = first[-1]["id"]
        rest = _read_events(c, f"/api/jobs/{job['id']}/events", headers={"Last-Event-ID": last_id})
        everything = _read_events(c, f"/api/jobs/{job['id']}/events")
    ids_seen = [e["id"] for e in first[1:] + rest[1:]]
    ids_all = [e["id"] for e in everything[1:]]
    assert ids_seen == ids_all  # no gap, no duplicate
    with stack.http as c:
        bad = c.get(f"/api/jobs/{job['id']}/events", headers={"Last-Event-ID": "x"})
        assert_problem(bad, 422)
        assert_problem(c.get("/api/jobs/jnope/events"), 404)


def test_a_chain_passes_each_result_on(stack: Stack) -> None:
    with stack.http as c:
        body = {"chain": [{"type": "add", "args": {"value": v}} for v in (1, 10, 100)]}
        resp = c.post("/api/workflows", json=body, headers=ADMIN)
        assert resp.status_code == 202, resp.text
        flow_id = resp.json()["id"]

        def finished() -> dict[str, Any] | None:
            flow = c.get(f"/api/workflows/{flow_id}").json()
            return flow if flow["status"] != "running" else None

        flow = wait_for(finished, 30, interval=0.2)
    assert flow["status"] == "succeeded"
    assert [s["result"] for s in flow["steps"]] == [1, 11, 111]


def test_a_failed_step_stops_its_chain(stack: Stack) -> None:
    with stack.http as c:
        body = {
            "chain": [
                {"type": "add", "args": {"value": 1}},
                {"type": "permanent_error", "args": {}},
                {"type": "add", "args": {"value": 1}},
            ]
        }
        flow_id = c.post("/api/workflows", json=body, headers=ADMIN).json()["id"]
        flow = wait_for(
            lambda: (f := c.get(f"/api/workflows/{flow_id}").json())["status"] != "running" and f,
            30,
            interval=0.2,
        )
    assert flow["status"] == "failed"
    assert [s["status"] for s in flow["steps"]] == ["succeeded", "failed", "skipped"]


def test_a_group_then_a_final_step_with_all_results(stack: Stack) -> None:
    with stack.http as c:
        body = {
            "group": [{"type": "add", "args": {"value": v}} for v in (1, 2, 3, 4)],
            "final": {"type": "add", "args": {"value": 1000}},
        }
        flow_id = c.post("/api/workflows", json=body, headers=ADMIN).json()["id"]
        flow = wait_for(
            lambda: (f := c.get(f"/api/workflows/{flow_id}").json())["status"] != "running" and f,
            30,
            interval=0.2,
        )
        assert flow["status"] == "succeeded"
        assert flow["steps"][-1]["result"] == 1010
        bodies: list[dict[str, Any]] = [
            {"chain": []},
            {"group": [{"type": "noop"}], "chain": [{"type": "noop"}]},
            {"chain": [{"type": "nope"}]},
            {"chain": [{"type": "noop"}], "final": {"type": "noop"}},
        ]
        for body in bodies:
            assert_problem(c.post("/api/workflows", json=body, headers=ADMIN), 422)
        assert_problem(c.get("/api/workflows/wnope"), 404)


def test_queues_and_workers_report_what_is_running(stack: Stack) -> None:
    job = stack.submit("sleep", {"seconds": 2})
    stack.wait(job["id"], {"running"})
    with stack.http as c:
        workers = c.get("/api/workers").json()
        queues = {q["name"]: q for q in c.get("/api/queues").json()}
        ready = c.get("/readyz")
    mine = [w for w in workers if w["hostname"] == stack.workers[0].hostname]
    assert mine and mine[0]["alive"] and mine[0]["consuming"]
    assert job["id"] in mine[0]["current_jobs"]
    assert queues["default"]["consumers"] >= 2 and queues["default"]["depth"] >= 0
    assert ready.status_code == 200
    assert ready.json()["dependencies"]["workers"]["status"] == "up"
    stack.wait(job["id"])

    def processed() -> int:
        with stack.http as c:
            rows = c.get("/api/workers").json()
        return sum(w["processed"] for w in rows if w["hostname"] == stack.workers[0].hostname)

    assert wait_for(processed, 5) >= 1


def test_a_worker_that_stopped_is_reported_unhealthy(stack_factory: Any) -> None:
    s = stack_factory()
    worker = s.start_worker(concurrency=1)
    with s.http as c:
        assert wait_for(
            lambda: c.get("/readyz").json()["dependencies"]["workers"]["status"] == "up", 10
        )
        worker.kill()
        s.workers.remove(worker)
        time.sleep(1.5)  # 3 missed heartbeats (0.3 s each) and then some
        [gone] = [w for w in c.get("/api/workers").json() if w["hostname"] == worker.hostname]
        assert gone["alive"] is False and gone["consuming"] is False
        checks = c.get("/readyz").json()
    assert checks["dependencies"]["workers"]["status"] == "down"
    assert checks["status"] == "degraded"  # the API still takes jobs; nothing runs them


def test_a_quick_jobs_events_come_once_sql_has_it(stack: Stack) -> None:
    """A job of a few milliseconds reaches SQL with its recorder's batch, and its `running`
    and `succeeded` events only after that commit: whoever saw `succeeded` reads it."""
    for _ in range(5):
        job = stack.submit("noop")
        with stack.http as c:
            events = _read_events(c, f"/api/jobs/{job['id']}/events")
            after = c.get(f"/api/jobs/{job['id']}").json()
        statuses = [json.loads(e["data"]) for e in events if e["event"] == "status"]
        assert [s["status"] for s in statuses] == ["queued", "running", "succeeded"]
        assert after["status"] == "succeeded", after
        [attempt] = after["attempts"]
        assert attempt["outcome"] == "succeeded"
        assert attempt["worker"] == statuses[1]["worker"] == after["worker"]
