"""Providers: one interface, an implementation per way out. Each `send` makes one real call
and classifies what happened: sent/delivered, a transient failure (retry, maybe on another
provider) or a permanent one (never retried: a bad address, a 4xx other than 408/429).

Email speaks SMTP; the webhook POSTs signed JSON; SMS has two providers with different HTTP
APIs (a Twilio-like form POST and a Vonage-like JSON one) so failover is real traffic."""

from __future__ import annotations

import json
import smtplib
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from notifications import signing
from notifications.netguard import PinnedTransport, Resolver, TargetRefused, resolve, target
from notifications.schedule import retry_after_seconds


class Outcome(StrEnum):
    SENT = "sent"  # handed to the provider (email, SMS): delivery is theirs now
    DELIVERED = "delivered"  # the receiver itself answered (webhook 2xx, in-app stored)
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    BOUNCED = "bounced"  # the address itself was refused


@dataclass(frozen=True)
class Message:
    delivery_id: str
    notification_id: str
    category: str
    user: dict[str, Any]
    content: dict[str, str]  # the rendered variant: subject, title, text, html
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    provider: str
    error: str | None = None
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in (Outcome.SENT, Outcome.DELIVERED)


class Provider(Protocol):
    name: str

    def send(self, message: Message) -> Result: ...

    def circuit(self, message: Message) -> str:
        """The circuit breaker this call counts against (the provider, or an endpoint)."""
        ...


class Named:
    """One circuit per provider."""

    name = "provider"

    def circuit(self, message: Message) -> str:
        return self.name


def classify_http(provider: str, resp: httpx.Response, ok: Outcome) -> Result:
    """2xx ok; 408, 429 and 5xx transient (Retry-After kept); any other 4xx permanent."""
    if 200 <= resp.status_code < 300:
        return Result(ok, provider)
    error = f"HTTP {resp.status_code}: {resp.text[:200]}"
    if resp.status_code in (408, 429) or resp.status_code >= 500:
        wait = retry_after_seconds(resp.headers.get("retry-after"), time.time())
        return Result(Outcome.TRANSIENT, provider, error, wait)
    return Result(Outcome.PERMANENT, provider, error)


def _transport_error(provider: str, exc: Exception) -> Result:
    return Result(Outcome.TRANSIENT, provider, f"{type(exc).__name__}: {exc}"[:300])


class SmtpEmail(Named):
    name = "smtp"

    def __init__(self, host: str, port: int, sender: str, timeout: float) -> None:
        self.host, self.port, self.sender, self.timeout = host, port, sender, timeout

    def send(self, message: Message) -> Result:
        address = message.user.get("email")
        if not address:
            return Result(Outcome.PERMANENT, self.name, "the user has no email address")
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = address
        mail["Subject"] = message.content.get("subject", message.category)
        mail["Message-ID"] = f"<{message.delivery_id}@notifications>"
        mail.set_content(message.content.get("text", ""))
        if message.content.get("html"):
            mail.add_alternative(message.content["html"], subtype="html")
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                smtp.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            outcome = Outcome.BOUNCED if all(c >= 500 for c in codes) else Outcome.TRANSIENT
            return Result(outcome, self.name, f"recipient refused: {exc.recipients}")
        except smtplib.SMTPResponseException as exc:
            outcome = Outcome.PERMANENT if exc.smtp_code >= 500 else Outcome.TRANSIENT
            return Result(outcome, self.name, f"SMTP {exc.smtp_code}: {exc.smtp_error!r}")
        except (OSError, smtplib.SMTPException) as exc:
            return _transport_error(self.name, exc)
        return Result(Outcome.SENT, self.name)


class Webhook:
    name = "webhook"

    def circuit(self, message: Message) -> str:
        """One circuit per endpoint: one customer's dead receiver must not stop the others'."""
        parts = urlsplit(str(message.user.get("webhook_url") or ""))
        return f"webhook:{parts.netloc}{parts.path}"[:200]

    def __init__(
        self, secret: str, timeout: float, *, allow_private: bool, resolver: Resolver = resolve
    ) -> None:
        self.secret = secret
        # The SSRF check happens in the transport, at connect time, on the address it uses.
        transport = PinnedTransport(allow_private=allow_private, resolver=resolver)
        self.client = httpx.Client(
            transport=transport, timeout=timeout, follow_redirects=False, trust_env=False
        )

    def send(self, message: Message) -> Result:
        url = message.user.get("webhook_url")
        if not url:
            return Result(Outcome.PERMANENT, self.name, "the user has no webhook URL")
        body = json.dumps(
            {
                "id": message.delivery_id,
                "notification_id": message.notification_id,
                "category": message.category,
                "user_id": message.user.get("id"),
                "content": message.content,
                "data": message.data,
            },
            separators=(",", ":"),
        ).encode()
        headers = {
            "content-type": "application/json",
            signing.SIGNATURE_HEADER: signing.sign(self.secret, body),
            signing.DELIVERY_HEADER: message.delivery_id,
        }
        try:
            target(url)  # http(s) only; the address is checked when the client connects
            resp = self.client.post(url, content=body, headers=headers)
        except TargetRefused as exc:
            return Result(Outcome.PERMANENT, self.name, f"target refused: {exc}")
        except httpx.HTTPError as exc:
            return _transport_error(self.name, exc)
        return classify_http(self.name, resp, Outcome.DELIVERED)


class SmsA(Named):
    """A Twilio-shaped API: form POST, 201 with a message sid."""

    name = "sms_a"

    def __init__(self, base_url: str, timeout: float) -> None:
        self.url = base_url.rstrip("/") + "/sms_a/Messages"
        self.client = httpx.Client(timeout=timeout)

    def send(self, message: Message) -> Result:
        phone = message.user.get("phone")
        if not phone:
            return Result(Outcome.PERMANENT, self.name, "the user has no phone number")
        form = {"To": phone, "Body": message.content.get("text", ""), "Ref": message.delivery_id}
        try:
            resp = self.client.post(self.url, data=form)
        except httpx.HTTPError as exc:
            return _transport_error(self.name, exc)
        return classify_http(self.name, resp, Outcome.SENT)


class SmsB(Named):
    """A Vonage-shaped API: JSON POST, 200 with a per-message status ("0" is success)."""

    name = "sms_b"

    def __init__(self, base_url: str, timeout: float) -> None:
        self.url = base_url.rstrip("/") + "/sms_b/send"
        self.client = httpx.Client(timeout=timeout)

    def send(self, message: Message) -> Result:
        phone = message.user.get("phone")
        if not phone:
            return Result(Outcome.PERMANENT, self.name, "the user has no phone number")
        payload = {"to": phone, "text": message.content.get("text", ""), "ref": message.delivery_id}
        try:
            resp = self.client.post(self.url, json=payload)
        except httpx.HTTPError as exc:
            return _transport_error(self.name, exc)
        result = classify_http(self.name, resp, Outcome.SENT)
        if result.ok and str(resp.json().get("status", "0")) != "0":
            return Result(Outcome.PERMANENT, self.name, f"refused: {resp.text[:200]}")
        return result
