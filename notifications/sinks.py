"""python -m notifications.sinks: the local stand-ins for the outside world, started by
`make run-notifications` and by the tests, so every channel sends real traffic.

- SMTP (aiosmtpd) on --smtp-port: accepts every mail; recipients containing "bounce" are
  refused with 550 (a bounce), and a `fail` mode answers 451 (try later).
- HTTP on --http-port: the two SMS providers' APIs (`POST /sms_a/Messages`, a Twilio-like
  form; `POST /sms_b/send`, a Vonage-like JSON), a webhook receiver (`POST /webhook/{name}`),
  `GET /messages?kind=email|sms|webhook` (what arrived), `DELETE /messages`, and
  `POST /control {"target": "sms_a", "mode": "fail", ...}` to make one target misbehave:
  ok | fail (503, optional retry_after) | fail_n (the next `count` calls fail) | timeout
  (never answers in time) | reject (400, permanent) | flaky (records the call, then fails
  with probability `rate`: the receiver did the work but the sender sees an error).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import threading
import time
import uuid
from email import message_from_bytes
from email.message import Message
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

MESSAGES: list[dict[str, Any]] = []
MODES: dict[str, dict[str, Any]] = {}
LOCK = threading.Lock()


def _record(kind: str, **fields: Any) -> dict[str, Any]:
    entry = {"kind": kind, "at": time.time(), **fields}
    with LOCK:
        MESSAGES.append(entry)
    return entry


def _text(mail: Message) -> str:
    part = mail.get_body(("plain",)) if hasattr(mail, "get_body") else None  # type: ignore[attr-defined]
    payload = (part or mail).get_payload(decode=True)
    return payload.decode(errors="replace") if isinstance(payload, bytes) else str(payload or "")


class SmtpHandler:
    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if "bounce" in address:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if _decide("smtp") is not None:
            return "451 4.3.0 try again later"
        from email import policy

        raw = envelope.content if isinstance(envelope.content, bytes) else b""
        mail = message_from_bytes(raw, policy=policy.default)
        _record(
            "email",
            to=list(envelope.rcpt_tos),
            sender=envelope.mail_from,
            subject=str(mail.get("Subject", "")),
            message_id=str(mail.get("Message-ID", "")),
            text=_text(mail),
        )
        return "250 OK"


def _decide(target: str) -> int | None:
    """The failure status to answer for `target` now, or None to succeed."""
    mode = MODES.get(target, {"mode": "ok"})
    kind = mode["mode"]
    if kind == "fail":
        return 503
    if kind == "reject":
        return 400
    if kind == "fail_n":
        with LOCK:
            if mode.get("count", 0) > 0:
                mode["count"] -= 1
                return 503
        return None
    return None


async def _misbehave(target: str) -> Response | None:
    mode = MODES.get(target, {"mode": "ok"})
    if mode["mode"] == "timeout":
        await asyncio.sleep(float(mode.get("delay", 60)))
    if mode["mode"] == "slow":
        await asyncio.sleep(float(mode.get("delay", 0.5)))
        return None
    status = _decide(target)
    if status is None:
        return None
    headers = {}
    if mode.get("retry_after") is not None:
        headers["Retry-After"] = str(mode["retry_after"])
    return JSONResponse(
        {"error": f"{target} is {mode['mode']}"}, status_code=status, headers=headers
    )


def http_app() -> FastAPI:
    app = FastAPI(title="notification sinks")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/sms_a/Messages")
    async def sms_a(request: Request) -> Response:
        refused = await _misbehave("sms_a")
        if refused is not None:
            return refused
        # Parsed by hand: Starlette's form parser needs python-multipart.
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        if not str(form.get("To", "")).startswith("+"):
            return JSONResponse({"code": 21211, "message": "invalid To"}, status_code=400)
        sid = "SM" + uuid.uuid4().hex
        _record(
            "sms", provider="sms_a", to=form.get("To"), text=form.get("Body"), ref=form.get("Ref")
        )
        return JSONResponse({"sid": sid, "status": "queued"}, status_code=201)

    @app.post("/sms_b/send")
    async def sms_b(request: Request) -> Response:
        refused = await _misbehave("sms_b")
        if refused is not None:
            return refused
        body = await request.json()
        if not str(body.get("to", "")).startswith("+"):
            return JSONResponse({"status": "3", "error-text": "invalid to"})
        _record(
            "sms", provider="sms_b", to=body.get("to"), text=body.get("text"), ref=body.get("ref")
        )
        return JSONResponse({"status": "0", "message-id": uuid.uuid4().hex})

    @app.post("/webhook/{name}")
    async def webhook(name: str, request: Request) -> Response:
        target = f"webhook:{name}"
        mode = MODES.get(target, {"mode": "ok"})
        body = await request.body()
        entry = {"name": name, "headers": dict(request.headers), "body": body.decode()}
        if mode["mode"] in ("flaky", "slow"):
            # The receiver does the work first, then fails or is slow to answer: the sender
            # cannot tell, retries, and the receiver sees the delivery id again.
            _record("webhook", **entry)
            if mode["mode"] == "slow":
                await asyncio.sleep(float(mode.get("delay", 0.5)))
            elif random.random() < float(mode.get("rate", 0.3)):
                return JSONResponse({"error": "flaky"}, status_code=503)
            return Response(status_code=204)
        refused = await _misbehave(target)
        if refused is not None:
            return refused
        _record("webhook", **entry)
        return Response(status_code=204)

    @app.get("/messages")
    async def messages(kind: str | None = None) -> list[dict[str, Any]]:
        with LOCK:
            return [m for m in MESSAGES if kind is None or m["kind"] == kind]

    @app.delete("/messages", status_code=204)
    async def clear() -> Response:
        with LOCK:
            MESSAGES.clear()
        return Response(status_code=204)

    @app.post("/control")
    async def control(request: Request) -> dict[str, Any]:
        body = await request.json()
        MODES[str(body["target"])] = {k: v for k, v in body.items() if k != "target"}
        return {"modes": MODES}

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--smtp-port", type=int, default=8025)
    parser.add_argument("--http-port", type=int, default=8026)
    args = parser.parse_args(argv)
    smtp = Controller(SmtpHandler(), hostname=args.host, port=args.smtp_port)
    smtp.start()
    print(
        f"sinks: SMTP on {args.host}:{args.smtp_port}, HTTP on {args.host}:{args.http_port}",
        flush=True,
    )
    try:
        # A receiver told to hang (`timeout` mode) must not hold its own shutdown for a minute.
        uvicorn.run(
            http_app(),
            host=args.host,
            port=args.http_port,
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
    finally:
        smtp.stop()


if __name__ == "__main__":
    main()
