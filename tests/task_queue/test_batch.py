"""Batch submit (`POST /api/jobs/batch`) on a real API, real workers and a real Redis broker,
on SQLite and (with TEST_DATABASE_URL) PostgreSQL."""

from __future__ import annotations

import concurrent.futures
import uuid
from typing import Any

import httpx

from tests.task_queue.conftest import ADMIN, Stack, assert_problem


def post_batch(stack: Stack, jobs: list[dict[str, Any]]) -> httpx.Response:
    with stack.http as c:
        return c.post("/api/jobs/batch", json={"jobs": jobs}, headers=ADMIN)


def jobs_with_key(stack: Stack, key: str) -> list[dict[str, Any]]:
    with stack.http as c:
        items = c.get("/api/jobs", params={"limit": 200}).json()["items"]
    return [j for j in items if j["idempotency_key"] == key]


def test_a_batch_records_and_runs_every_job_in_order(stack: Stack) -> None:
    specs: list[dict[str, Any]] = [{"type": "add", "args": {"value": i}} for i in range(40)]
    specs.append({"type": "noop", "delay_seconds": 1})
    specs.append({"type": "flaky_fast", "args": {"failures": 1}, "priority": 9})
    resp = post_batch(stack, specs)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["created"] == len(specs) and body["replayed"] == []
    jobs = body["jobs"]
    assert [j["type"] for j in jobs] == [s["type"] for s in specs]
    assert [j["args"]["value"] for j in jobs[:40]] == list(range(40))  # args as checked
    assert len({j["id"] for j in jobs}) == len(specs)
    assert all(j["status"] == "queued" for j in jobs[:40])
    assert jobs[40]["status"] == "scheduled" and jobs[40]["run_at"]
    assert jobs[41]["priority"] == 9
    for spec, job in zip(specs, jobs, strict=True):
        done = stack.wait(job["id"], timeout=60)
        assert done["status"] == "succeeded", done
        if spec["type"] == "add":
            assert done["result"] == spec["args"]["value"]
            assert len(done["attempts"]) == 1
    assert len(stack.job(jobs[41]["id"])["attempts"]) == 2  # retried like any job


def test_idempotency_keys_inside_a_batch_and_across_single_submits(stack: Stack) -> None:
    single_key, batch_key, other_key = (uuid.uuid4().hex for _ in range(3))
    single = stack.submit("noop", idempotency_key=single_key)
    resp = post_batch(
        stack,
        [
            {"type": "noop", "idempotency_key": single_key},  # held by a single submit
            {"type": "noop", "idempotency_key": batch_key},
            {"type": "noop", "idempotency_key": batch_key},  # held by item 1
            {"type": "noop"},
            {"type": "add", "args": {"value": 1}, "idempotency_key": other_key},
        ],
    )
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["replayed"] == [0, 2] and body["created"] == 3
    jobs = body["jobs"]
    assert jobs[0]["id"] == single["id"]
    assert jobs[1]["id"] == jobs[2]["id"] and jobs[1]["idempotency_key"] == batch_key
    assert len({jobs[0]["id"], jobs[1]["id"], jobs[3]["id"], jobs[4]["id"]}) == 4
    # A single submit with a key a batch holds gets the batch's job.
    with stack.http as c:
        again = c.post(
            "/api/jobs", json={"type": "noop", "idempotency_key": batch_key}, headers=ADMIN
        )
    assert again.status_code == 202 and again.json()["id"] == jobs[1]["id"]
    assert again.headers["idempotent-replayed"] == "true"
    # The same batch again makes only the key-less item anew.
    repeat = post_batch(
        stack,
        [{"type": "noop", "idempotency_key": batch_key}, {"type": "noop"}],
    ).json()
    assert repeat["replayed"] == [0] and repeat["jobs"][0]["id"] == jobs[1]["id"]
    for key in (single_key, batch_key, other_key):
        [job] = jobs_with_key(stack, key)
        done = stack.wait(job["id"])
        assert done["status"] == "succeeded" and len(done["attempts"]) == 1


def test_concurrent_batches_with_the_same_keys_make_one_job_per_key(stack: Stack) -> None:
    keys = [uuid.uuid4().hex for _ in range(20)]
    specs = [{"type": "noop", "idempotency_key": k} for k in keys]

    def submit(_: int) -> list[str]:
        with httpx.Client(base_url=stack.api.url, timeout=30) as c:
            resp = c.post("/api/jobs/batch", json={"jobs": specs}, headers=ADMIN)
        assert resp.status_code == 202, resp.text
        return [j["id"] for j in resp.json()["jobs"]]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(submit, range(4)))
    assert all(ids == answers[0] for ids in answers)
    assert len(set(answers[0])) == len(keys)
    for key in keys[:3]:
        assert len(jobs_with_key(stack, key)) == 1


def test_a_bad_item_refuses_the_whole_batch_naming_its_index(stack: Stack) -> None:
    key = uuid.uuid4().hex
    good = {"type": "noop", "idempotency_key": key}
    cases: list[tuple[list[dict[str, Any]], int, str]] = [
        ([good, {"type": "noop"}, {"type": "nope"}], 2, "unknown job type"),
        ([good, {"type": "sleep", "args": {"secs": 1}}], 1, "secs"),
        ([{"type": "noop", "queue": "nowhere"}, good], 0, "nowhere"),
        (
            [good, good, {"type": "noop", "delay_seconds": 1, "run_at": "2030-01-01T00:00:00Z"}],
            2,
            "not both",
        ),
        ([good, {"type": "noop", "run_at": "2030-01-01T00:00:00"}], 1, "timezone"),
    ]
    for jobs, index, words in cases:
        problem = assert_problem(post_batch(stack, jobs), 422)
        assert problem["index"] == index, problem
        assert problem["detail"].startswith(f"jobs[{index}]: ") and words in problem["detail"]
    # Refused by the schema: the validation error's location names the item.
    problem = assert_problem(post_batch(stack, [good, {"type": "noop", "priority": 42}]), 422)
    assert any(e["loc"][:4] == ["body", "jobs", "1", "priority"] for e in problem["errors"])
    assert "jobs.1.priority" in problem["detail"]
    # Nothing of a refused batch was recorded: its key is still free.
    assert jobs_with_key(stack, key) == []
    fresh = stack.submit("noop", idempotency_key=key)
    assert stack.wait(fresh["id"])["status"] == "succeeded"


def test_an_empty_oversize_or_unauthenticated_batch_is_refused(stack: Stack) -> None:
    too_many = post_batch(stack, [{"type": "noop"}] * 501)
    problem = assert_problem(too_many, 422)
    assert any(e["loc"] == ["body", "jobs"] and e["type"] == "too_long" for e in problem["errors"])
    assert_problem(post_batch(stack, []), 422)
    huge = [{"type": "sleep", "args": {"seconds": 1, "pad": "x" * 60_000}}] * 20
    assert_problem(post_batch(stack, huge), 413)  # over TASK_QUEUE_MAX_BODY_BYTES
    with stack.http as c:
        assert_problem(c.post("/api/jobs/batch", json={"jobs": [{"type": "noop"}]}), 401)
        assert_problem(c.post("/api/jobs/batch", json=[{"type": "noop"}], headers=ADMIN), 422)
        schema = c.get("/openapi.json").json()
    batch = schema["paths"]["/api/jobs/batch"]["post"]
    assert {"202", "401", "413", "422"} <= set(batch["responses"])
    jobs_schema = schema["components"]["schemas"]["JobBatchCreate"]["properties"]["jobs"]
    assert jobs_schema["maxItems"] == 500 and jobs_schema["minItems"] == 1


def test_the_batch_counts_in_the_submit_metrics(stack: Stack) -> None:
    def counted(text: str, name: str) -> float:
        return sum(float(line.split()[1]) for line in text.splitlines() if line.startswith(name))

    with stack.http as c:
        before = c.get("/metrics").text
    key = uuid.uuid4().hex
    specs = [{"type": "cpu", "args": {"rounds": 10}, "idempotency_key": key}] * 3
    assert post_batch(stack, specs).status_code == 202
    with stack.http as c:
        after = c.get("/metrics").text
    name = 'task_queue_jobs_submitted_total{type="cpu"}'
    assert counted(after, name) - counted(before, name) == 1
    dedup = "task_queue_jobs_deduplicated_total "
    assert counted(after, dedup) - counted(before, dedup) == 2
