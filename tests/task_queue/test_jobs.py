"""Submitting and reading jobs on a real API, real workers and a real Redis broker."""

from __future__ import annotations

import concurrent.futures
import uuid

import httpx

from tests.task_queue.conftest import ADMIN, Stack, assert_problem


def test_a_job_runs_and_its_record_says_so(stack: Stack) -> None:
    job = stack.submit("sleep", {"seconds": 0.5})
    assert job["status"] == "queued" and job["type"] == "sleep"
    done = stack.wait(job["id"])
    assert done["status"] == "succeeded", done
    assert done["result"] == {"slept": 0.5}
    assert done["progress"]["percent"] == 100
    [attempt] = done["attempts"]
    assert attempt["outcome"] == "succeeded" and attempt["worker"]
    assert done["started_at"] and done["finished_at"]


def test_unknown_type_and_bad_args_are_422_at_submit(stack: Stack) -> None:
    with stack.http as c:
        unknown = c.post("/api/jobs", json={"type": "nope", "args": {}}, headers=ADMIN)
        assert "unknown job type" in assert_problem(unknown, 422)["detail"]
        extra = c.post("/api/jobs", json={"type": "sleep", "args": {"secs": 1}}, headers=ADMIN)
        assert "secs" in assert_problem(extra, 422)["detail"]
        wrong = c.post("/api/jobs", json={"type": "sleep", "args": {"seconds": "x"}}, headers=ADMIN)
        assert_problem(wrong, 422)
        missing = c.post("/api/jobs", json={"type": "fetch", "args": {}}, headers=ADMIN)
        assert "url" in assert_problem(missing, 422)["detail"]
        queue = c.post("/api/jobs", json={"type": "noop", "queue": "nowhere"}, headers=ADMIN)
        assert_problem(queue, 422)
        both = c.post(
            "/api/jobs",
            json={"type": "noop", "delay_seconds": 1, "run_at": "2030-01-01T00:00:00Z"},
            headers=ADMIN,
        )
        assert_problem(both, 422)
        malformed = c.post(
            "/api/jobs", content=b"{", headers={**ADMIN, "content-type": "application/json"}
        )
        assert_problem(malformed, 400)
        big = {"type": "sleep", "args": {"seconds": 1, "pad": "x" * 70_000}}
        assert c.post("/api/jobs", json=big, headers=ADMIN).status_code in (413, 422)
        huge = c.post("/api/jobs", content=b"x" * 2_000_000, headers=ADMIN)
        assert_problem(huge, 413)


def test_writes_need_the_api_key(stack: Stack) -> None:
    with stack.http as c:
        assert_problem(c.post("/api/jobs", json={"type": "noop"}), 401)
        assert_problem(c.post("/api/jobs", json={"type": "noop"}, headers={"x-api-key": "no"}), 401)
        assert c.get("/api/jobs").status_code == 200


def test_missing_job_is_404(stack: Stack) -> None:
    with stack.http as c:
        assert_problem(c.get("/api/jobs/jnope"), 404)
        assert_problem(c.post("/api/jobs/jnope/cancel", headers=ADMIN), 404)


def test_the_same_idempotency_key_returns_the_same_job(stack: Stack) -> None:
    key = uuid.uuid4().hex
    first = stack.submit("noop", idempotency_key=key)
    with stack.http as c:
        again = c.post(
            "/api/jobs", json={"type": "noop"}, headers={**ADMIN, "Idempotency-Key": key}
        )
    assert again.status_code == 202 and again.json()["id"] == first["id"]
    assert again.headers["idempotent-replayed"] == "true"
    with stack.http as c:
        metrics = c.get("/metrics").text
    assert 'task_queue_jobs_submitted_total{type="noop"}' in metrics
    [deduplicated] = [
        float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("task_queue_jobs_deduplicated_total ")
    ]
    assert deduplicated >= 1


def test_concurrent_submits_with_one_key_make_one_job(stack: Stack) -> None:
    key = uuid.uuid4().hex

    def submit(_: int) -> str:
        with httpx.Client(base_url=stack.api.url, timeout=10) as c:
            resp = c.post("/api/jobs", json={"type": "noop", "idempotency_key": key}, headers=ADMIN)
            assert resp.status_code == 202, resp.text
            return str(resp.json()["id"])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(submit, range(16)))
    assert len(ids) == 1
    with stack.http as c:
        listed = c.get("/api/jobs", params={"type": "noop", "limit": 200}).json()["items"]
    assert sum(1 for j in listed if j["idempotency_key"] == key) == 1
    assert stack.wait(ids.pop())["status"] == "succeeded"


def test_list_filters_and_pages_with_a_cursor(stack: Stack) -> None:
    ids = [stack.submit("add", {"value": i})["id"] for i in range(5)]
    for job_id in ids:
        stack.wait(job_id)
    seen: list[str] = []
    cursor = None
    with stack.http as c:
        while True:
            params: dict[str, str | int] = {"type": "add", "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = c.get("/api/jobs", params=params).json()
            seen += [j["id"] for j in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert all(
            len(c.get("/api/jobs", params={"type": "add"}).json()["items"]) >= 5 for _ in [0]
        )
        assert_problem(c.get("/api/jobs", params={"cursor": "../x"}), 422)
        assert_problem(c.get("/api/jobs", params={"status": "bogus"}), 422)
        succeeded = c.get("/api/jobs", params={"status": "succeeded", "type": "add"}).json()
    assert seen[:5] == sorted(ids, reverse=True)[:5] or set(ids) <= set(seen)
    assert set(ids) <= set(seen) and len(seen) == len(set(seen))
    assert all(j["status"] == "succeeded" for j in succeeded["items"])


def test_flaky_job_is_retried_with_backoff_then_succeeds(stack: Stack) -> None:
    job = stack.submit("flaky", {"failures": 2}, max_retries=3)
    done = stack.wait(job["id"])
    assert done["status"] == "succeeded" and done["result"] == {"attempts": 3}
    outcomes = [a["outcome"] for a in done["attempts"]]
    assert outcomes == ["error", "error", "succeeded"]


def test_permanent_errors_are_not_retried(stack: Stack) -> None:
    job = stack.submit("permanent_error", {"message": "nope"}, max_retries=5)
    done = stack.wait(job["id"])
    assert done["status"] == "failed" and done["error"] == "nope"
    assert [a["outcome"] for a in done["attempts"]] == ["permanent"]


def test_exhausted_retries_make_a_dead_letter_that_can_be_replayed_or_deleted(
    stack: Stack,
) -> None:
    job = stack.submit("always_fail", max_retries=1)
    dead = stack.wait(job["id"])
    assert dead["status"] == "dead" and len(dead["attempts"]) == 2
    with stack.http as c:
        letters = c.get("/api/dead-letters").json()["items"]
        assert job["id"] in [j["id"] for j in letters]
        replayed = c.post(f"/api/dead-letters/{job['id']}/replay", headers=ADMIN)
        assert replayed.status_code == 202, replayed.text
        again = stack.wait(job["id"], {"dead"}, timeout=30)
        assert len(again["attempts"]) == 4  # a replay gets a fresh set of retries
        assert c.delete(f"/api/dead-letters/{job['id']}", headers=ADMIN).status_code == 204
        assert_problem(c.get(f"/api/jobs/{job['id']}"), 404)
        ok = stack.submit("noop")
        stack.wait(ok["id"])
        assert_problem(c.post(f"/api/dead-letters/{ok['id']}/replay", headers=ADMIN), 404)
        assert_problem(c.delete(f"/api/dead-letters/{ok['id']}", headers=ADMIN), 404)


def test_retry_runs_a_finished_job_again(stack: Stack) -> None:
    job = stack.submit("permanent_error")
    stack.wait(job["id"])
    with stack.http as c:
        resp = c.post(f"/api/jobs/{job['id']}/retry", headers=ADMIN)
        assert resp.status_code == 202, resp.text
        again = stack.wait(job["id"], {"failed"})
        assert len(again["attempts"]) == 2
        running = stack.submit("sleep", {"seconds": 3})
        stack.wait(running["id"], {"running"})
        assert_problem(c.post(f"/api/jobs/{running['id']}/retry", headers=ADMIN), 409)


def test_cpu_and_fetch_types(stack: Stack) -> None:
    cpu = stack.wait(stack.submit("cpu", {"rounds": 20_000})["id"])
    assert cpu["status"] == "succeeded" and cpu["result"]["rounds"] == 20_000
    fetched = stack.wait(stack.submit("fetch", {"url": f"{stack.api.url}/healthz"})["id"])
    assert fetched["status"] == "succeeded" and fetched["result"]["status"] == 200
    missing = stack.wait(stack.submit("fetch", {"url": f"{stack.api.url}/nothing"})["id"])
    assert missing["status"] == "failed" and "404" in missing["error"]


def test_job_types_are_listed_with_their_schema(stack: Stack) -> None:
    with stack.http as c:
        types = {t["name"]: t for t in c.get("/api/job-types").json()}
    assert {"sleep", "flaky", "always_fail", "cpu", "permanent_error", "fetch"} <= set(types)
    assert "seconds" in types["sleep"]["args_schema"]["properties"]
