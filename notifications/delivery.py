"""The delivery engine the workers run, framework-free: claim a delivery, apply the user's
policies (quiet hours, digest window, rate limit), render, send through the channel's
providers (failover, circuit breakers), and record every step in the attempts trail.

A delivery is claimed with a conditional UPDATE, so a message delivered twice (a worker
killed mid-send, the sweeper handing out a lost one) runs once at a time; a claim expires
after `lease_seconds`, after which the sweeper hands the delivery out again."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from notifications import templates
from notifications.breaker import Breakers
from notifications.channels import Message, Outcome, Provider, Result
from notifications.errors import TemplateError
from notifications.schedule import backoff, quiet_until
from notifications.settings import NotificationsSettings
from notifications.store import Attempt, Delivery, Notification, Template, User

log = structlog.get_logger("notifications.delivery")
WAITING = ("queued", "retrying", "deferred", "digesting")
TERMINAL = ("sent", "delivered", "bounced", "failed", "dead", "cancelled")
RateCheck = Callable[[str, str], float]  # (user, channel) -> seconds to wait, 0 = go


def record(session: Session, delivery: Delivery, status: str, **fields: Any) -> None:
    """Set the delivery's status and append the matching attempt row."""
    now = time.time()
    delivery.status = status
    delivery.updated_at = now
    for name, value in fields.items():
        if name != "provider" or value:
            setattr(delivery, name, value)
    session.add(
        Attempt(
            delivery_id=delivery.id,
            status=status,
            provider=fields.get("provider"),
            error=fields.get("error"),
            at=now,
        )
    )


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "phone": user.phone,
        "webhook_url": user.webhook_url,
        "timezone": user.timezone,
    }


@dataclass
class DeliveryEngine:
    settings: NotificationsSettings
    sessions: sessionmaker[Session]
    providers: dict[str, list[Provider]]
    breakers: Breakers
    rate_check: RateCheck

    def run(self, delivery_id: str) -> str | None:
        """Deliver one delivery if it is due and unclaimed; returns its new status."""
        claimed = self._claim(delivery_id)
        if claimed is None:
            return None
        was, digest_key = claimed
        with self.sessions.begin() as session:
            delivery = session.get(Delivery, delivery_id)
            assert delivery is not None
            notification = session.scalars(
                select(Notification).where(Notification.id == delivery.notification_id)
            ).one()
            user = session.get(User, delivery.user_id)
            if user is None:
                record(session, delivery, "cancelled", error="the user was deleted")
                return "cancelled"
            held = self._hold(session, delivery, notification, user, was)
            if held:
                return held
            items = self._digest_items(session, delivery, digest_key) if was == "digesting" else []
            try:
                content = self._content(session, notification, delivery.channel, user)
                if items:
                    content = self._digest_content(session, content, items, user)
            except TemplateError as exc:
                record(session, delivery, "failed", error=f"template: {exc.detail}")
                return "failed"
            message = Message(
                delivery_id=delivery.id,
                notification_id=notification.id,
                category=delivery.category,
                user=user_json(user),
                content=content,
                data=notification.data,
            )
        # The call itself happens outside any transaction: a slow provider holds no lock.
        results, wait = self._send(delivery.channel, message)
        with self.sessions.begin() as session:
            delivery = session.get(Delivery, delivery_id)
            assert delivery is not None
            # The digest's other deliveries, in this session (they were loaded in another).
            attached = [session.get(Delivery, item.id) for item in items]
            return self._finish(session, delivery, results, wait, [i for i in attached if i])

    def _claim(self, delivery_id: str) -> tuple[str, str | None] | None:
        """Take the delivery if it waits and is due; None when it is not ours to send
        (terminal, another worker has it, or not due: the sweeper hands it out then)."""
        now = time.time()
        with self.sessions.begin() as session:
            d = session.get(Delivery, delivery_id)
            if d is None or d.status not in WAITING or d.next_at > now + 0.05:
                return None
            was, key = d.status, d.digest_key  # (the UPDATE below refreshes `d`)
            if was == "digesting" and key:
                # One flush per digest: only its lead (lowest id) claims; it takes the rest.
                lead = session.scalar(
                    select(func.min(Delivery.id)).where(
                        Delivery.digest_key == key,
                        Delivery.status.in_(("digesting", "sending")),
                    )
                )
                if lead != d.id:
                    return None
            claimed = session.execute(
                update(Delivery)
                .where(Delivery.id == d.id, Delivery.status == was)
                .where(Delivery.lease_until == d.lease_until)
                .values(status="sending", lease_until=now + self.settings.lease_seconds)
            ).rowcount  # type: ignore[attr-defined]
            return (was, key) if claimed else None

    def _defer(self, session: Session, delivery: Delivery, until: float, why: str) -> str:
        record(session, delivery, "deferred", next_at=until, lease_until=0.0, error=why)
        return "deferred"

    def _hold(
        self, session: Session, delivery: Delivery, n: Notification, user: User, was: str
    ) -> str | None:
        """Quiet hours, the digest window and the rate limit: each defers, none drops.
        `critical` skips the first two (never the rate limit: it protects the provider)."""
        now = time.time()
        prefs = user.preferences or {}
        critical = delivery.priority == "critical"
        quiet = prefs.get("quiet_hours")
        if quiet and not critical:
            until = quiet_until(now, user.timezone or "UTC", quiet["start"], quiet["end"])
            if until is not None:
                return self._defer(session, delivery, until, "quiet hours")
        window = (prefs.get("digest") or {}).get(delivery.category)
        if window and not critical and was != "digesting":
            key = f"{user.id}:{delivery.category}:{delivery.channel}"
            first = session.scalars(
                select(Delivery.next_at)
                .where(Delivery.digest_key == key, Delivery.status == "digesting")
                .order_by(Delivery.next_at)
                .limit(1)
            ).first()
            due = first if first is not None else now + float(window)
            record(
                session,
                delivery,
                "digesting",
                next_at=due,
                lease_until=0.0,
                digest_key=key,
                error=f"held for the {delivery.category} digest",
            )
            return "digesting"
        wait = self.rate_check(user.id, delivery.channel)
        if wait > 0:
            return self._defer(session, delivery, now + wait, "rate limited")
        return None

    def _content(
        self, session: Session, n: Notification, channel: str, user: User
    ) -> dict[str, str]:
        template = session.get(Template, (n.template, n.template_version))
        if template is None:
            raise TemplateError(f"template {n.template} v{n.template_version} is gone")
        variant = template.variants.get(channel) or template.variants.get("default")
        if variant is None:
            raise TemplateError(f"template {n.template} has no {channel} variant")
        return templates.render_variant(variant, templates.context(n.data, user_json(user)))

    def _digest_items(self, session: Session, lead: Delivery, key: str | None) -> list[Delivery]:
        """The other deliveries held in the same digest, each claimed with the same
        conditional UPDATE as a single one: a worker that claimed one of them first keeps it."""
        if not key:
            return []
        candidates = session.execute(
            select(Delivery.id, Delivery.lease_until).where(
                Delivery.digest_key == key,
                Delivery.status == "digesting",
                Delivery.id != lead.id,
            )
        ).all()
        until = time.time() + self.settings.lease_seconds
        taken = [
            row.id
            for row in candidates
            if session.execute(
                update(Delivery)
                .where(Delivery.id == row.id, Delivery.status == "digesting")
                .where(Delivery.lease_until == row.lease_until)
                .values(status="sending", lease_until=until)
            ).rowcount  # type: ignore[attr-defined]
        ]
        if not taken:
            return []
        rows = session.scalars(
            select(Delivery).where(Delivery.id.in_(taken)).order_by(Delivery.created_at)
        )
        return list(rows)

    def _digest_content(
        self, session: Session, first: dict[str, str], items: list[Delivery], user: User
    ) -> dict[str, str]:
        lines = [first.get("text", "")]
        for item in items:
            n = session.scalars(
                select(Notification).where(Notification.id == item.notification_id)
            ).one()
            lines.append(self._content(session, n, item.channel, user).get("text", ""))
        count = len(lines)
        return {
            "subject": f"{count} new notifications",
            "title": f"{count} new notifications",
            "text": "\n".join(f"- {line}" for line in lines),
        }

    def _send(self, channel: str, message: Message) -> tuple[list[Result], float]:
        """Try the channel's providers in order (failover); returns every call's result and,
        when every circuit was open, how long until one may be tried."""
        results: list[Result] = []
        wait = 0.0
        for provider in self.providers[channel]:
            circuit = provider.circuit(message)
            verdict = self.breakers.allow(circuit)
            if not verdict.allowed:
                wait = max(wait, verdict.wait_seconds) if wait else verdict.wait_seconds
                continue
            result = provider.send(message)
            results.append(result)
            if result.outcome == Outcome.TRANSIENT:
                self.breakers.failure(circuit)
                continue  # fail over to the next provider
            self.breakers.success(circuit)
            return results, 0.0
        return results, wait

    def _finish(
        self,
        session: Session,
        delivery: Delivery,
        results: list[Result],
        wait: float,
        items: list[Delivery],
    ) -> str:
        now = time.time()
        for failed in results[:-1]:  # calls a later provider took over from
            session.add(
                Attempt(
                    delivery_id=delivery.id,
                    status="failed",
                    provider=failed.provider,
                    error=failed.error,
                    at=now,
                )
            )
        last = results[-1] if results else None
        if last is not None and (last.ok or last.outcome != Outcome.TRANSIENT):
            status = {
                Outcome.SENT: "sent",
                Outcome.DELIVERED: "delivered",
                Outcome.BOUNCED: "bounced",
            }.get(last.outcome, "failed")
            delivery.attempts += 1
            record(session, delivery, status, provider=last.provider, error=last.error)
            for item in items:
                note = f"in digest {delivery.id}"
                record(session, item, status, provider=last.provider, error=note)
            return status
        for item in items:  # the digest failed: its items wait again with the lead one
            record(session, item, "digesting", lease_until=0.0)
        if last is None:  # every provider's circuit is open: wait, not an attempt
            # Spread over one reset period: a backlog must not all come due at the probe.
            spread = random.uniform(0, self.settings.breaker_reset_seconds)
            return self._defer(session, delivery, now + max(wait, 0.05) + spread, "circuit open")
        delivery.attempts += 1
        if delivery.attempts >= self.settings.max_attempts:
            record(session, delivery, "dead", provider=last.provider, error=last.error)
            return "dead"
        delay = backoff(
            delivery.attempts,
            base=self.settings.backoff_base_seconds,
            cap=self.settings.backoff_cap_seconds,
        )
        delay = max(delay, last.retry_after or 0.0)
        record(
            session,
            delivery,
            "digesting" if items else "retrying",
            provider=last.provider,
            error=last.error,
            next_at=now + delay,
            lease_until=0.0,
        )
        return "retrying"
