"""Command-line client: python -m notifications.client send|status|inbox|prefs|templates|
dead-letters|replay|users|subscribe|providers

    python -m notifications.client users ada --email ada@example.com --phone +15550001111
    python -m notifications.client templates put welcome --inapp "Hi {{ name }}" --example name=A
    python -m notifications.client send welcome --user ada name=Ada --key signup-ada --watch
    python -m notifications.client inbox ada
    python -m notifications.client prefs ada --quiet 22:00-07:00 --digest news=3600 --off ads:sms
    python -m notifications.client --json dead-letters

Global options come before the command: --url (env NOTIFICATIONS_URL), --api-key (env
NOTIFICATIONS_API_KEY) and --json. Exit status: 0 done, 1 refused (problem+json on
stderr), 2 unreachable.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from common.cli import ServiceCli
from notifications.settings import NotificationsSettings

cli = ServiceCli(name="notifications", title="notification service", settings=NotificationsSettings)
app = cli.typer(help="Talk to a running notification service.")
templates_app = typer.Typer(help="Templates: put, show, preview.", no_args_is_help=True)
app.add_typer(templates_app, name="templates")


def _pairs(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected key=value, got {item!r}")
        out[key] = value
    return out


def _trail(n: dict[str, Any]) -> None:
    out = cli.api().out
    out.print(
        f"{n['id']}  {n['status']}  template {n['template']} v{n['template_version']}", markup=False
    )
    for d in n["deliveries"]:
        out.print(
            f"  {d['user_id']} {d['channel']:8} {d['status']:10} {d['provider'] or ''}",
            markup=False,
        )
        for a in d["trail"]:
            when = time.strftime("%H:%M:%S", time.localtime(a["at"]))
            error = f"  {a['error']}" if a["error"] else ""
            out.print(f"      {when} {a['status']:10} {a['provider'] or ''}{error}", markup=False)


@app.command()
def users(
    user_id: str,
    email: Annotated[str | None, typer.Option()] = None,
    phone: Annotated[str | None, typer.Option()] = None,
    webhook: Annotated[str | None, typer.Option(help="The user's webhook URL")] = None,
    timezone: Annotated[str, typer.Option()] = "UTC",
) -> None:
    """Create or replace a user."""
    api = cli.api()
    body = {"email": email, "phone": phone, "webhook_url": webhook, "timezone": timezone}
    user = api.call("PUT", f"/api/users/{user_id}", json=body).json()
    api.show(user, lambda u: api.out.print(f"{u['id']} saved", markup=False))


@app.command()
def send(
    template: str,
    data: Annotated[list[str] | None, typer.Argument(help="key=value pairs")] = None,
    user: Annotated[str | None, typer.Option(help="A user id")] = None,
    topic: Annotated[str | None, typer.Option(help="A topic: every subscriber")] = None,
    category: Annotated[str, typer.Option()] = "general",
    channel: Annotated[list[str] | None, typer.Option(help="Only these channels")] = None,
    priority: Annotated[str, typer.Option()] = "normal",
    key: Annotated[str | None, typer.Option(help="Idempotency-Key")] = None,
    watch: Annotated[bool, typer.Option(help="Wait until every delivery is final")] = False,
) -> None:
    """Send a notification to a user or a topic."""
    api = cli.api()
    body: dict[str, Any] = {
        "template": template,
        "data": _pairs(data or []),
        "category": category,
        "priority": priority,
        "user_id": user,
        "topic": topic,
    }
    if channel:
        body["channels"] = channel
    headers = {"Idempotency-Key": key} if key else {}
    n = api.call("POST", "/api/notifications", json=body, headers=headers).json()
    while watch and n["status"] != "done":
        time.sleep(0.5)
        n = api.call("GET", f"/api/notifications/{n['id']}").json()
    api.show(n, _trail)


@app.command()
def status(notification_id: str) -> None:
    """Every delivery of a notification, with its attempts."""
    api = cli.api()
    api.show(api.call("GET", f"/api/notifications/{notification_id}").json(), _trail)


@app.command()
def inbox(
    user_id: str,
    filter: Annotated[str, typer.Option(help="all, unread or archived")] = "all",
    read: Annotated[int | None, typer.Option(help="Mark this item read")] = None,
) -> None:
    """A user's in-app inbox (newest first)."""
    api = cli.api()
    if read is not None:
        api.call("POST", f"/api/users/{user_id}/inbox/{read}/read")
    page = api.call("GET", f"/api/users/{user_id}/inbox", params={"filter": filter}).json()

    def human(p: dict[str, Any]) -> None:
        api.out.print(f"{p['unread']} unread", markup=False)
        for i in p["items"]:
            mark = " " if i["read"] else "*"
            api.out.print(f"{mark} {i['id']:>5}  {i['title']}: {i['body']}", markup=False)

    api.show(page, human)


@app.command()
def prefs(
    user_id: str,
    quiet: Annotated[str | None, typer.Option(help="Quiet hours, e.g. 22:00-07:00")] = None,
    digest: Annotated[list[str] | None, typer.Option(help="category=seconds")] = None,
    off: Annotated[list[str] | None, typer.Option(help="category:channel to turn off")] = None,
) -> None:
    """Set a user's preferences (replaces them)."""
    api = cli.api()
    body: dict[str, Any] = {"channels": {}, "digest": {}}
    if quiet:
        start, _, end = quiet.partition("-")
        body["quiet_hours"] = {"start": start, "end": end}
    for item in digest or []:
        category, _, seconds = item.partition("=")
        body["digest"][category] = int(seconds)
    for item in off or []:
        category, _, channel = item.partition(":")
        body["channels"].setdefault(category, {})[channel] = False
    saved = api.call("PUT", f"/api/users/{user_id}/preferences", json=body).json()
    api.show(saved, lambda p: api.out.print(f"{user_id}: {p}", markup=False))


@app.command()
def subscribe(topic: str, user_ids: list[str]) -> None:
    """Subscribe users to a topic."""
    api = cli.api()
    subs = api.call("POST", f"/api/topics/{topic}/subscribers", json={"user_ids": user_ids}).json()
    api.show(
        subs, lambda s: api.out.print(f"{topic}: {len(s['user_ids'])} subscribers", markup=False)
    )


@templates_app.command("put")
def templates_put(
    name: str,
    inapp: Annotated[str | None, typer.Option(help="In-app text")] = None,
    sms: Annotated[str | None, typer.Option(help="SMS text")] = None,
    email_subject: Annotated[str | None, typer.Option()] = None,
    email_text: Annotated[str | None, typer.Option()] = None,
    webhook: Annotated[str | None, typer.Option(help="Webhook text")] = None,
    example: Annotated[
        list[str] | None, typer.Option(help="key=value the template renders with")
    ] = None,
) -> None:
    """Save a new version of a template (refused if it does not render with --example)."""
    api = cli.api()
    variants: dict[str, dict[str, str]] = {}
    if inapp:
        variants["inapp"] = {"title": name, "text": inapp}
    if sms:
        variants["sms"] = {"text": sms}
    if webhook:
        variants["webhook"] = {"text": webhook}
    if email_text:
        variants["email"] = {"subject": email_subject or name, "text": email_text}
    body = {"variants": variants, "example": _pairs(example or [])}
    t = api.call("PUT", f"/api/templates/{name}", json=body).json()
    api.show(t, lambda t: api.out.print(f"{t['name']} v{t['version']}", markup=False))


@templates_app.command("show")
def templates_show(name: str) -> None:
    api = cli.api()
    api.show(api.call("GET", f"/api/templates/{name}").json(), lambda t: api.out.print(t))


@templates_app.command("preview")
def templates_preview(
    name: str, data: Annotated[list[str] | None, typer.Argument()] = None
) -> None:
    api = cli.api()
    out = api.call("POST", f"/api/templates/{name}/preview", json={"data": _pairs(data or [])})
    api.show(out.json(), lambda p: api.out.print(p["rendered"]))


@app.command("dead-letters")
def dead_letters() -> None:
    """Deliveries that ran out of retries or failed permanently."""
    api = cli.api()

    def human(page: dict[str, Any]) -> None:
        for d in page["items"]:
            api.out.print(f"{d['id']}  {d['channel']:8} {d['status']:6} {d['error']}", markup=False)

    api.show(api.call("GET", "/api/dead-letters").json(), human)


@app.command()
def replay(delivery_id: str) -> None:
    """Send a dead letter again."""
    api = cli.api()
    api.show(
        api.call("POST", f"/api/dead-letters/{delivery_id}/replay").json(),
        lambda b: api.out.print(f"{b['id']} queued", markup=False),
    )


@app.command()
def providers() -> None:
    """Each provider's circuit breaker."""
    api = cli.api()

    def human(rows: list[dict[str, Any]]) -> None:
        for p in rows:
            api.out.print(
                f"{p['name']:30} {p['channel']:8} {p['state']:10} failures {p['failures']}",
                markup=False,
            )

    api.show(api.call("GET", "/api/providers").json(), human)


if __name__ == "__main__":
    app()
