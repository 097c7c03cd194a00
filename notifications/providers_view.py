"""What the API shows of the providers: each one's circuit, read from the Redis hashes the
workers' breakers write."""

from __future__ import annotations

from common.redis import AnyRedis
from notifications.breaker import describe, key
from notifications.schemas import ProviderRead
from notifications.settings import NotificationsSettings


def provider_channels(settings: NotificationsSettings) -> list[tuple[str, str]]:
    return [
        ("smtp", "email"),
        *[(name, "sms") for name in settings.sms_providers],
        ("webhook", "webhook"),
        ("inapp", "inapp"),
    ]


class ProvidersView:
    def __init__(self, settings: NotificationsSettings, redis: AnyRedis) -> None:
        self.settings, self.redis = settings, redis

    async def list(self) -> list[ProviderRead]:
        out = []
        for name, channel in provider_channels(self.settings):
            fields = await self.redis.hgetall(key(name))  # type: ignore[misc]
            out.append(ProviderRead(name=name, channel=channel, **describe(fields)))
        # Webhook circuits are per endpoint: the ones that have ever failed.
        found = [k async for k in self.redis.scan_iter(match="{breaker:webhook:*", count=500)]
        for raw in sorted(found)[:200]:
            name = (raw.decode() if isinstance(raw, bytes) else raw)[len("{breaker:") : -1]
            fields = await self.redis.hgetall(raw)  # type: ignore[misc]
            out.append(ProviderRead(name=name, channel="webhook", **describe(fields)))
        return out
