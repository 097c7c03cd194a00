"""Command-line client: python -m task_queue.client submit|batch|status|watch|list|cancel|
retry|workflow|schedules|dead-letters|replay

    python -m task_queue.client submit sleep seconds=5 --watch
    python -m task_queue.client batch jobs.json    # [{"type": "noop"}, ...] or JSON lines
    python -m task_queue.client submit fetch url=https://example.com --key daily-fetch
    python -m task_queue.client list --status dead
    python -m task_queue.client workflow --chain add:value=1 add:value=10
    python -m task_queue.client schedules add noop --every 60
    python -m task_queue.client --json status j0190...

Global options come before the command (common/cli.py, the suite's convention): --url (env
TASK_QUEUE_URL), --api-key (env TASK_QUEUE_API_KEY) and --json. Exit status: 0 done, 1 the
service refused (its problem+json on stderr) or the watched job did not succeed, 2 the
service is unreachable.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import typer

from common.cli import Api, ServiceCli
from task_queue.settings import TaskQueueSettings

TERMINAL = {"succeeded", "failed", "cancelled", "dead"}

cli = ServiceCli(name="task_queue", title="task queue", settings=TaskQueueSettings)
app = cli.typer(help="Talk to a running task queue.")
schedules_app = typer.Typer(help="Recurring jobs (cron or every N seconds).", no_args_is_help=True)
app.add_typer(schedules_app, name="schedules")


def _call(method: str, path: str, **kwargs: Any) -> Any:
    """One request through the suite's CLI convention; the decoded JSON body."""
    resp = cli.api().call(method, path, **kwargs)
    return resp.json() if resp.content else None


def parse_args(pairs: list[str]) -> dict[str, Any]:
    """`name=value` pairs; values are JSON when they parse as JSON (5, true, [1,2]), else text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{pair!r}: expected name=value")
        try:
            out[name] = json.loads(raw)
        except ValueError:
            out[name] = raw
    return out


def _line(job: dict[str, Any]) -> str:
    progress = job["progress"]
    return (
        f"{job['id']}  {job['type']:<16} {job['status']:<10} "
        f"{progress['percent']:5.1f}%  attempts={len(job['attempts'])}  {progress['message']}"
    )


def _detail(job: dict[str, Any]) -> None:
    typer.echo(_line(job))
    for attempt in job["attempts"]:
        typer.echo(
            f"  attempt {attempt['number']}: {attempt['outcome']:<10} on {attempt['worker']}"
            + (f"  {attempt['error']}" if attempt["error"] else "")
        )
    if job["result"] is not None:
        typer.echo(f"  result: {json.dumps(job['result'])}")


def _lines(page: dict[str, Any]) -> None:
    for job in page["items"]:
        typer.echo(_line(job))


def _dead_lines(page: dict[str, Any]) -> None:
    for job in page["items"]:
        typer.echo(f"{_line(job)}  {job['error']}")


def _progress_bar(label: str, lines: Iterator[str]) -> None:
    """Move a progress bar with the stream's `progress` events until the stream ends."""
    done = 0
    with typer.progressbar(length=100, label=label) as bar:
        kind = ""
        for line in lines:
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "progress":
                percent = int(float(json.loads(line[6:])["percent"]))
                bar.update(max(0, percent - done))
                done = max(done, percent)


def _watch(api: Api, job_id: str) -> dict[str, Any]:
    """Follow the job's SSE stream with a progress bar; returns the final job."""
    try:
        with httpx.stream(
            "GET", f"{api.url.rstrip('/')}/api/jobs/{job_id}/events", timeout=None
        ) as resp:
            if resp.status_code >= 400:
                resp.read()
                api.fail(resp)
            _progress_bar(job_id, resp.iter_lines())
    except httpx.ConnectError:
        api.unreachable()
    return _call("GET", f"/api/jobs/{job_id}")  # type: ignore[no-any-return]


@app.command()
def submit(
    type: Annotated[str, typer.Argument(help="The job type (see GET /api/job-types).")],
    args: Annotated[list[str] | None, typer.Argument(help="name=value arguments.")] = None,
    queue: Annotated[str | None, typer.Option(help="Queue (default: the type's).")] = None,
    priority: Annotated[int, typer.Option(min=0, max=9, help="0-9, higher first.")] = 5,
    delay: Annotated[float | None, typer.Option(help="Run after this many seconds.")] = None,
    retries: Annotated[int | None, typer.Option(help="Max retries.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Soft timeout in seconds.")] = None,
    key: Annotated[str | None, typer.Option(help="Idempotency key.")] = None,
    watch: Annotated[bool, typer.Option(help="Follow its progress until it ends.")] = False,
) -> None:
    """Submit a job."""
    api = cli.api()
    body: dict[str, Any] = {"type": type, "args": parse_args(args or []), "priority": priority}
    for name, value in (
        ("queue", queue),
        ("delay_seconds", delay),
        ("max_retries", retries),
        ("timeout_seconds", timeout),
        ("idempotency_key", key),
    ):
        if value is not None:
            body[name] = value
    job = _call("POST", "/api/jobs", json=body)
    if watch:
        job = _watch(api, job["id"])
    api.show(job, _detail)
    if watch and job["status"] != "succeeded":
        raise typer.Exit(1)


def read_specs(text: str) -> list[dict[str, Any]]:
    """Jobs as `POST /api/jobs` takes them: a JSON list, `{"jobs": [...]}`, or one JSON
    object per line."""
    try:
        whole = json.loads(text)
    except ValueError:
        try:
            whole = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise typer.BadParameter(f"neither JSON nor JSON lines: {exc}") from None
    if isinstance(whole, dict) and isinstance(whole.get("jobs"), list):
        whole = whole["jobs"]
    elif isinstance(whole, dict):
        whole = [whole]
    if not isinstance(whole, list) or not all(isinstance(j, dict) for j in whole):
        raise typer.BadParameter('expected job objects ({"type": ..., "args": {...}})')
    return whole


@app.command()
def batch(
    file: Annotated[
        typer.FileText,
        typer.Argument(
            help="A JSON list of jobs as submit takes them, or JSON lines; - reads stdin."
        ),
    ],
) -> None:
    """Submit many jobs in one request (at most 500): all are recorded, or none (a bad item
    is refused with its index)."""
    api = cli.api()
    specs = read_specs(file.read())
    answer = _call("POST", "/api/jobs/batch", json={"jobs": specs})

    def human(body: dict[str, Any]) -> None:
        replayed = set(body["replayed"])
        for index, job in enumerate(body["jobs"]):
            typer.echo(
                _line(job) + ("  (idempotency key: existing job)" if index in replayed else "")
            )
        typer.echo(f"{body['created']} new, {len(replayed)} already there")

    api.show(answer, human)


@app.command()
def status(job_id: str) -> None:
    """A job's status, progress, attempts and result."""
    api = cli.api()
    api.show(_call("GET", f"/api/jobs/{job_id}"), _detail)


@app.command()
def watch(job_id: str) -> None:
    """A live progress bar until the job ends (exit 1 unless it succeeded)."""
    api = cli.api()
    job = _watch(api, job_id)
    api.show(job, _detail)
    if job["status"] != "succeeded":
        raise typer.Exit(1)


@app.command("list")
def list_jobs(
    status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
    type: Annotated[str | None, typer.Option(help="Only this type.")] = None,
    queue: Annotated[str | None, typer.Option(help="Only this queue.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
) -> None:
    """Recent jobs, newest first."""
    api = cli.api()
    params = {k: v for k, v in {"status": status, "type": type, "queue": queue}.items() if v}
    page = _call("GET", "/api/jobs", params={**params, "limit": limit})
    api.show(page, _lines)


@app.command()
def cancel(job_id: str) -> None:
    """Cancel a job: a waiting one never runs, a running one is stopped."""
    api = cli.api()
    api.show(_call("POST", f"/api/jobs/{job_id}/cancel"), _detail)


@app.command()
def retry(job_id: str) -> None:
    """Run a finished (failed, dead or cancelled) job again."""
    api = cli.api()
    api.show(_call("POST", f"/api/jobs/{job_id}/retry"), _detail)


def _step(spec: str) -> dict[str, Any]:
    type_name, _, rest = spec.partition(":")
    return {"type": type_name, "args": parse_args([p for p in rest.split(",") if p])}


@app.command()
def workflow(
    steps: Annotated[list[str], typer.Argument(help="Steps as type:name=value,name=value.")],
    group: Annotated[bool, typer.Option("--group/--chain", help="Parallel or in turn.")] = False,
    final: Annotated[str | None, typer.Option(help="A group's final step.")] = None,
) -> None:
    """Start a chain (each step gets the previous result) or a group (+ a final step)."""
    api = cli.api()
    body: dict[str, Any] = {"group" if group else "chain": [_step(s) for s in steps]}
    if final:
        body["final"] = _step(final)
    flow = _call("POST", "/api/workflows", json=body)

    def human(f: dict[str, Any]) -> None:
        typer.echo(f"{f['id']}  {f['kind']}  {f['status']}")
        for s in f["steps"]:
            typer.echo(f"  step {s['step']}: {s['type']:<16} {s['status']}")

    api.show(flow, human)


@app.command("dead-letters")
def dead_letters() -> None:
    """Jobs that exhausted their retries."""
    api = cli.api()
    page = _call("GET", "/api/dead-letters")
    api.show(page, _dead_lines)


@app.command()
def replay(job_id: str) -> None:
    """Send a dead letter back to the queue with a fresh set of retries."""
    api = cli.api()
    api.show(_call("POST", f"/api/dead-letters/{job_id}/replay"), _detail)


def _schedule_line(s: dict[str, Any]) -> None:
    when = s["cron"] or f"every {s['every_seconds']}s"
    state = "paused" if s["paused"] else f"next {s['next_run_at']}"
    typer.echo(f"{s['id']}  {s['type']:<16} {when:<16} runs={s['runs']}  {state}")


def _schedule_lines(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        _schedule_line(row)


@schedules_app.command("list")
def schedules_list() -> None:
    """Every schedule."""
    api = cli.api()
    api.show(_call("GET", "/api/schedules"), _schedule_lines)


@schedules_app.command("add")
def schedules_add(
    type: str,
    args: Annotated[list[str] | None, typer.Argument(help="name=value arguments.")] = None,
    cron: Annotated[str | None, typer.Option(help="A cron expression (UTC).")] = None,
    every: Annotated[float | None, typer.Option(help="Every N seconds.")] = None,
) -> None:
    """Add a recurring job."""
    api = cli.api()
    body = {"type": type, "args": parse_args(args or []), "cron": cron, "every_seconds": every}
    api.show(_call("POST", "/api/schedules", json=body), _schedule_line)


@schedules_app.command("pause")
def schedules_pause(schedule_id: str, resume: Annotated[bool, typer.Option()] = False) -> None:
    """Pause a schedule (--resume to start it again)."""
    api = cli.api()
    row = _call("PATCH", f"/api/schedules/{schedule_id}", json={"paused": not resume})
    api.show(row, _schedule_line)


@schedules_app.command("delete")
def schedules_delete(schedule_id: str) -> None:
    """Delete a schedule."""
    _call("DELETE", f"/api/schedules/{schedule_id}")


if __name__ == "__main__":
    app()
