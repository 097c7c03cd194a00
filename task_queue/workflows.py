"""Workflows: a chain (each step whose type declares a `previous`
parameter gets the previous step's result in it) or a group
(steps in parallel, then a final step getting all their results as a list: Celery's chord).

Stages advance when a step finishes, in the worker that ran it; the SQL counter of finished
group steps is incremented inside a transaction, so exactly one worker starts the final step.
"""

from __future__ import annotations

import time
from typing import Any

from task_queue.dispatch import Dispatcher
from task_queue.jobtypes import registry
from task_queue.ledger import Ledger
from task_queue.states import JobStatus


def start_step(
    ledger: Ledger,
    dispatcher: Dispatcher,
    *,
    workflow_id: str,
    step: int,
    spec: dict[str, Any],
    queue: str,
    previous: Any,
    timeout: float,
    max_retries: int,
) -> None:
    args = dict(spec.get("args") or {})
    job_type = registry.get(spec["type"])
    if previous is not None and job_type is not None and "previous" in job_type.model.model_fields:
        args["previous"] = previous  # only types that declare `previous` receive it
    job = ledger.add_job(
        type=spec["type"],
        args=args,
        queue=spec.get("queue") or queue,
        priority=5,
        status=JobStatus.QUEUED,
        max_retries=max_retries,
        timeout_seconds=timeout,
        workflow_id=workflow_id,
        step=step,
        dispatch=1,
        queued_at=time.time(),
    )
    dispatcher.send_job(job)


def advance(
    ledger: Ledger,
    dispatcher: Dispatcher,
    workflow_id: str,
    job_id: str,
    status: JobStatus,
    result: Any,
) -> None:
    """Called when a workflow's job has finished for good."""
    if status != JobStatus.SUCCEEDED:
        ledger.set_workflow_status(workflow_id, "failed")  # a failed step stops the workflow
        return
    counted = ledger.workflow_step_done(workflow_id)
    if counted is None:
        return
    flow, jobs = counted
    settings = dispatcher.settings

    def start(step: int, spec: dict[str, Any], previous: Any) -> None:
        start_step(
            ledger,
            dispatcher,
            workflow_id=workflow_id,
            step=step,
            spec=spec,
            queue=flow.queue,
            previous=previous,
            timeout=settings.default_timeout_seconds,
            max_retries=registry.max_retries(spec["type"], settings.default_max_retries),
        )

    finished = next(j for j in jobs if j.id == job_id)
    total = len(flow.steps)
    if flow.kind == "chain":
        nxt = (finished.step or 0) + 1
        if nxt < total:
            start(nxt, flow.steps[nxt], result)
        else:
            ledger.set_workflow_status(workflow_id, "succeeded")
        return
    # group: the final step starts when the last parallel step is counted
    if finished.step == total:  # the final step itself
        ledger.set_workflow_status(workflow_id, "succeeded")
    elif flow.done == total:
        results = [
            j.result for j in sorted(jobs, key=lambda j: j.step or 0) if (j.step or 0) < total
        ]
        if flow.final:
            start(total, flow.final, results)
        else:
            ledger.set_workflow_status(workflow_id, "succeeded")
