"""The workers' Celery app: one task, `notifications.deliver`, a thin wrapper over
`DeliveryEngine.run`. Each prefork pool process builds its own SQL engine, Redis client and
HTTP clients on its first task (connections must not cross a fork)."""

from __future__ import annotations

import os
from typing import Any

import redis as sync_redis
from celery import Celery
from sqlalchemy.orm import sessionmaker

from common.celery import create_celery
from common.redis import REDIS_DOWN
from notifications.breaker import Breakers
from notifications.channels import Provider, SmsA, SmsB, SmtpEmail, Webhook
from notifications.delivery import DeliveryEngine, RateCheck
from notifications.dispatch import TASK_NAME
from notifications.inapp import InApp
from notifications.settings import NotificationsSettings
from notifications.syncdb import create_sync_engine
from rate_limiter import Limit, SyncRateLimiter, SyncRedisBackend


def rate_check(settings: NotificationsSettings, redis: sync_redis.Redis) -> RateCheck:
    """Per user and channel, and per channel overall (GCRA in Redis through rate_limiter,
    shared by every worker): returns the seconds to wait, 0 when the send may go now."""
    backend = SyncRedisBackend(redis)
    per_user = (
        SyncRateLimiter(
            Limit.per_minute(settings.user_rate_per_minute, burst=settings.user_rate_burst),
            backend,
        )
        if settings.user_rate_per_minute
        else None
    )
    per_channel = (
        SyncRateLimiter(Limit.per_second(settings.channel_rate_per_second), backend)
        if settings.channel_rate_per_second
        else None
    )

    def check(user_id: str, channel: str) -> float:
        try:
            for limiter, key in (
                (per_channel, f"notif:channel:{channel}"),
                (per_user, f"notif:user:{channel}:{user_id}"),
            ):
                if limiter is None:
                    continue
                decision = limiter.acquire(key)
                if not decision.allowed:
                    return max(decision.retry_after, 0.01)
        except REDIS_DOWN:
            return 0.0  # fail open: a limit is a courtesy, the message is the point
        return 0.0

    return check


def build_engine(settings: NotificationsSettings) -> DeliveryEngine:
    assert settings.redis_url
    redis = sync_redis.Redis.from_url(settings.redis_url, socket_timeout=2)
    sessions = sessionmaker(create_sync_engine(settings.database()), expire_on_commit=False)
    timeout = settings.send_timeout_seconds
    sms: dict[str, Provider] = {
        "sms_a": SmsA(settings.sms_a_url, timeout),
        "sms_b": SmsB(settings.sms_b_url, timeout),
    }
    providers: dict[str, list[Provider]] = {
        "email": [SmtpEmail(settings.smtp_host, settings.smtp_port, settings.email_from, timeout)],
        "webhook": [
            Webhook(settings.webhook_secret, timeout, allow_private=settings.allow_private_webhooks)
        ],
        "sms": [sms[name] for name in settings.sms_providers],
        "inapp": [InApp(sessions, redis)],
    }
    return DeliveryEngine(
        settings=settings,
        sessions=sessions,
        providers=providers,
        breakers=Breakers(
            redis,
            failures=settings.breaker_failures,
            reset_seconds=settings.breaker_reset_seconds,
            enabled=settings.breaker_enabled,
        ),
        rate_check=rate_check(settings, redis),
    )


def create_worker_app(settings: NotificationsSettings) -> Celery:
    app = create_celery(
        settings, name="notifications", visibility_timeout=settings.lease_seconds * 4
    )
    state: dict[str, Any] = {}

    def engine() -> DeliveryEngine:
        if state.get("pid") != os.getpid():
            state.update(pid=os.getpid(), engine=build_engine(settings))
        return state["engine"]  # type: ignore[no-any-return]

    @app.task(name=TASK_NAME)
    def deliver(delivery_id: str) -> str | None:
        return engine().run(delivery_id)

    return app
