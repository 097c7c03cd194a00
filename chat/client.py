"""Terminal client: python -m chat.client [--room NAME] | users create | login | rooms

    python -m chat.client users create alice          # asks for a password
    python -m chat.client login alice                 # keeps the token in .data/chat.token
    python -m chat.client rooms                       # your rooms, with unread counts
    python -m chat.client --room general              # chat: type lines; /sync, /who, /quit

The suite's client convention (common/cli.py): global options first, --url (env CHAT_URL,
default from CHAT_PORT), --json; here --token (env CHAT_TOKEN; else the saved one) instead
of an API key. Exit status: 0 done, 1 the service refused (its problem+json on stderr),
2 the service could not be reached.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from chat.settings import ChatSettings
from common.cli import Api, ServiceCli

TOKEN_FILE = Path(".data") / "chat.token"

app = typer.Typer(help="Talk to a running chat service.", invoke_without_command=True)
users_app = typer.Typer(help="Accounts.", no_args_is_help=True)
app.add_typer(users_app, name="users")


CLI = ServiceCli(name="chat", title="chat service", settings=ChatSettings, admin_key_field=None)


class ChatApi(Api):
    """The suite's client convention (common/cli.py) with the user's bearer token."""

    token: str | None = None

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self.token:
            kwargs["headers"] = {
                "authorization": f"Bearer {self.token}",
                **kwargs.get("headers", {}),
            }
        return super().send(method, path, **kwargs)

    def json_call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.call(method, path, **kwargs).json()

    def text(self, data: Any, human: str) -> None:
        self.show(data, lambda _: self.out.print(human, markup=False))


def fail(message: str, code: int) -> NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


def _api(ctx: typer.Context) -> ChatApi:
    api: ChatApi = ctx.obj
    return api


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            envvar="CHAT_URL", help="Service URL (default: http://127.0.0.1:<CHAT_PORT>)."
        ),
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="CHAT_TOKEN", help="Access token (default: the saved one).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON responses.")] = False,
    room: Annotated[str | None, typer.Option(help="Chat in this room (made if missing).")] = None,
) -> None:
    if token is None and TOKEN_FILE.exists():
        token = TOKEN_FILE.read_text().strip() or None
    default_url, _ = CLI.defaults()
    ctx.obj = ChatApi(url=url or default_url, api_key=None, as_json=as_json, service=CLI.name,
                      title=CLI.title)  # fmt: skip
    ctx.obj.token = token
    if ctx.invoked_subcommand is None:
        if room is None:
            typer.echo(ctx.get_help())
            raise typer.Exit(0)
        if not ctx.obj.token:
            fail("log in first: python -m chat.client login <username>", 1)
        asyncio.run(chat(ctx.obj, room))


@users_app.command("create")
def users_create(
    ctx: typer.Context,
    username: str,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, envvar="CHAT_PASSWORD")],
) -> None:
    """Create an account."""
    api = _api(ctx)
    user = api.json_call("POST", "/api/users", json={"username": username, "password": password})
    api.text(user, f"created user {user['username']}")


@app.command()
def login(
    ctx: typer.Context,
    username: str,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, envvar="CHAT_PASSWORD")],
) -> None:
    """Get a token and keep it in .data/chat.token for the other commands."""
    api = _api(ctx)
    tok = api.json_call("POST", "/api/token", json={"username": username, "password": password})
    TOKEN_FILE.parent.mkdir(parents=True, exist_ok=True)
    TOKEN_FILE.write_text(tok["access_token"])
    os.chmod(TOKEN_FILE, 0o600)
    api.text(tok, f"logged in as {username} (token valid {tok['expires_in']} s)")


@app.command()
def rooms(ctx: typer.Context) -> None:
    """Your rooms, with unread counts."""
    api = _api(ctx)
    data = api.json_call("GET", "/api/rooms")
    lines = [
        f"{r['id']:>5}  {r['name']:<24} {'private' if r['private'] else 'public ':<8} "
        f"unread {r['unread']}"
        for r in data["rooms"]
    ]
    api.text(data, "\n".join(lines) or "no rooms yet")


def _room_id(api: ChatApi, name: str) -> int:
    if name.isdigit():
        return int(name)
    found = api.json_call("GET", "/api/rooms", params={"name": name})["rooms"]
    if found:
        return int(found[0]["id"])
    return int(api.json_call("POST", "/api/rooms", json={"name": name})["id"])


def _line(frame: dict[str, Any]) -> str | None:
    kind = frame.get("type")
    if kind == "message":
        text = "(deleted)" if frame.get("deleted") else frame["text"]
        return f"[{frame['seq']}] {frame['user']}: {text}"
    if kind == "presence":
        return f"* online: {', '.join(frame['users'])}"
    if kind == "typing":
        return f"* {frame['user']} is typing"
    if kind == "error":
        return f"! {frame['code']}: {frame['detail']}"
    if kind == "synced":
        return f"* synced up to {frame['seq']}"
    return None


async def chat(api: ChatApi, room_name: str) -> None:
    """Type lines to send them; messages arrive live. Reconnects and resyncs by itself."""
    room = _room_id(api, room_name)
    ws_url = api.url.replace("http", "ws", 1).rstrip("/") + "/ws"
    last = 0
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    async def read_stdin() -> None:
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            await lines.put(line.rstrip("\n") if line else None)
            if not line:
                return

    async def receive(ws: ClientConnection) -> None:
        nonlocal last
        async for raw in ws:
            frame = json.loads(raw)
            if frame.get("type") == "message" and frame["room"] == room:
                last = max(last, frame["seq"])
            if frame.get("type") == "presence" and frame["room"] != room:
                continue
            text = _line(frame)
            if text:
                typer.echo(text)

    reader = asyncio.create_task(read_stdin())
    protocols = [Subprotocol("chat"), Subprotocol(api.token or "")]
    typer.echo(f"* room {room_name}: type to send; /sync, /who, /quit")
    try:
        while True:
            try:
                async with connect(ws_url, subprotocols=protocols, proxy=None) as ws:
                    await ws.send(json.dumps({"type": "join", "room": room, "after_seq": last}))
                    receiver = asyncio.create_task(receive(ws))
                    try:
                        if await _send_lines(api, ws, room, lines, lambda: last):
                            await asyncio.sleep(0.3)  # let the last acks arrive
                            return
                    finally:
                        receiver.cancel()
            except (ConnectionClosed, OSError) as exc:
                code = getattr(getattr(exc, "rcvd", None), "code", None)
                if code == 1008:
                    fail("the token was refused or expired: log in again", 1)
                typer.echo("* disconnected; reconnecting", err=True)
                await asyncio.sleep(1)
    finally:
        reader.cancel()


async def _send_lines(
    api: ChatApi, ws: ClientConnection, room: int, lines: asyncio.Queue[str | None], last: Any
) -> bool:
    """Send typed lines until end of input or /quit (True), or until the socket drops."""
    while True:
        line = await lines.get()
        if line is None or line == "/quit":
            return True
        if not line.strip():
            continue
        if line == "/sync":
            await ws.send(json.dumps({"type": "sync", "room": room, "after_seq": last()}))
        elif line == "/who":
            users = api.json_call("GET", f"/api/rooms/{room}/presence")["users"]
            typer.echo(f"* online: {', '.join(users)}")
        else:
            frame = {"type": "send", "room": room, "text": line, "client_id": uuid.uuid4().hex}
            await ws.send(json.dumps(frame))


if __name__ == "__main__":
    app()
