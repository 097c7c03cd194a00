"""The suite's one Celery factory: `create_celery(settings, name=..., include=[...])`.

    celery_app = create_celery(settings, name="task_queue", include=["task_queue.tasks"])

What every service's Celery app gets:
- broker on `settings.broker_url` when the settings have it (RabbitMQ `amqp://...` or another
  Redis), else on `settings.redis_url`; results on `settings.redis_url`;
- JSON only (no pickle: a message is data, never code);
- `acks_late` + `reject_on_worker_lost`: a message is acknowledged after its task ran, and
  put back when the worker process running it dies, so a crash loses nothing (at least once:
  tasks must tolerate running twice);
- prefetch 1: a worker process holds one message at a time, so long jobs never strand a
  backlog behind a busy process and priorities take effect at once;
- priorities 0-9 on both brokers (Redis: priority sub-queues; RabbitMQ: `x-max-priority`);
- the suite's structlog logging in workers, and the caller's `request_id` and OpenTelemetry
  context carried in message headers and bound while the task runs (`bind_task_context`).

Tests start real `celery worker` processes with `common/celery_workers.py: CeleryWorker`
(fixture `celery_worker_factory`), never eager mode.
"""

from __future__ import annotations

from typing import Any

import structlog
from celery import Celery, signals
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from common.logging import configure_logging
from common.settings import ServiceSettings

REQUEST_ID_HEADER = "request_id"
# Each pool process's own tracer provider (exporter threads do not survive a fork).
_tracer_provider: Any = None
log = structlog.get_logger("common.celery")


def broker_url_for(settings: ServiceSettings) -> str:
    """The broker: `<PREFIX>_BROKER_URL` when set, else the suite's Redis."""
    url = getattr(settings, "broker_url", None) or settings.redis_url
    if not url:
        raise ValueError("a broker is required: set <PREFIX>_BROKER_URL or REDIS_URL")
    return str(url)


def create_celery(
    settings: ServiceSettings,
    *,
    name: str,
    include: list[str] | None = None,
    visibility_timeout: float = 3600.0,
    **config: Any,
) -> Celery:
    """A Celery app with the suite's defaults; `config` overrides any Celery setting."""
    broker = broker_url_for(settings)
    app = Celery(name, broker=broker, backend=settings.redis_url or None, include=include or [])
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=False,
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a restarted broker is waited for, forever
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_default_priority=5,
        task_queue_max_priority=10,
        broker_transport_options={
            # Unacknowledged messages come back after this long (Redis only): a job that
            # runs longer than this is delivered twice. Keep ETAs well below it.
            "visibility_timeout": visibility_timeout,
            # ...and are looked for this often, by every worker (kombu's default: about every
            # 100 s), so a message a killed worker had taken but not started waits at most
            # the timeout plus this.
            "unacked_restore_interval": min(10.0, visibility_timeout),
            "unacked_restore_throttle": 1,
            # Redis emulates priorities with one list per step, polled in order.
            "queue_order_strategy": "priority",
            "priority_steps": list(range(10)),
        },
    )
    app.conf.update(config)
    app.conf.suite_settings = settings
    return app


def current_request_id() -> str | None:
    """The request id bound by the HTTP middleware (or by a task), if any."""
    value = structlog.contextvars.get_contextvars().get("request_id")
    return str(value) if value else None


@signals.before_task_publish.connect
def _add_context_headers(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """Caller side: put the request id and the trace context into the message."""
    if headers is None:
        return
    request_id = current_request_id()
    if request_id and REQUEST_ID_HEADER not in headers:
        headers[REQUEST_ID_HEADER] = request_id
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    for key, value in carrier.items():
        headers.setdefault(key, value)


def bind_task_context(request: Any) -> dict[str, Any]:
    """Worker side: the fields a running task's log lines carry (and binds them)."""
    fields: dict[str, Any] = {"task_id": getattr(request, "id", None)}
    request_id = getattr(request, REQUEST_ID_HEADER, None) or (
        (getattr(request, "headers", None) or {}).get(REQUEST_ID_HEADER)
    )
    if request_id:
        fields["request_id"] = request_id
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**fields)
    return fields


def _message_headers(request: Any) -> dict[str, Any]:
    # Celery merges custom message headers into the request's attributes.
    found = dict(getattr(request, "headers", None) or {})
    found.update({k: v for k, v in vars(request).items() if isinstance(v, str)})
    return found


@signals.task_prerun.connect
def _bind_context(task: Any = None, **_: Any) -> None:
    if task is None:
        return
    bind_task_context(task.request)
    # The caller's trace continues in the task: its context becomes current (log lines get
    # its trace_id), and with an exporter configured the task is a span of that trace.
    ctx = propagate.extract(_message_headers(task.request))
    span = None
    if _tracer_provider is not None:
        span = _tracer_provider.get_tracer("common.celery").start_span(
            f"run {task.name}",
            context=ctx,
            kind=trace.SpanKind.CONSUMER,
            attributes={"celery.task_id": str(task.request.id), "celery.task": task.name},
        )
        ctx = trace.set_span_in_context(span, ctx)
    task.request.otel = (otel_context.attach(ctx), span)


@signals.task_postrun.connect
def _unbind_context(task: Any = None, **_: Any) -> None:
    structlog.contextvars.clear_contextvars()
    held = getattr(getattr(task, "request", None), "otel", None)
    if held is not None:
        token, span = held
        if span is not None:
            span.end()
        otel_context.detach(token)


@signals.worker_process_init.connect
def _init_tracing(**_: Any) -> None:
    """In each pool process: export task spans over OTLP when an endpoint is configured."""
    global _tracer_provider
    from celery import current_app

    settings = getattr(current_app.conf, "suite_settings", None)
    endpoint = getattr(settings, "otel_exporter_otlp_endpoint", None)
    if not endpoint or not isinstance(settings, ServiceSettings):
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": f"{settings.service_name}-worker"})
    )
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces"))
    )
    _tracer_provider = provider


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    """Workers log through structlog like the HTTP services (JSON off a terminal)."""
    from celery import current_app

    settings = getattr(current_app.conf, "suite_settings", None)
    if isinstance(settings, ServiceSettings):
        configure_logging(
            f"{settings.service_name}-worker", settings.log_level, settings.log_format
        )
    else:
        configure_logging("celery-worker")
