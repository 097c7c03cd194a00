"""Dependency aliases, so routes read like prose."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Security

from common.deps import from_state
from common.openapi import API_KEY
from common.redis import AnyRedis
from task_queue.errors import Unauthorized
from task_queue.metrics import QueueMetrics
from task_queue.service import JobService
from task_queue.settings import TaskQueueSettings

JobsDep = Annotated[JobService, Depends(from_state("jobs"))]
SettingsDep = Annotated[TaskQueueSettings, Depends(from_state("settings"))]
MetricsDep = Annotated[QueueMetrics, Depends(from_state("metrics"))]
RedisDep = Annotated[AnyRedis, Depends(from_state("redis"))]


async def _writer(settings: SettingsDep, api_key: Annotated[str | None, Security(API_KEY)]) -> str:
    if not api_key or not hmac.compare_digest(api_key, settings.admin_key):
        raise Unauthorized("writes need a valid X-API-Key header")
    return "admin"


# A caller allowed to change things (checked X-API-Key).
WriterDep = Annotated[str, Depends(_writer)]
