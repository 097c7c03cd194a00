"""One command-line convention for every service's client (`python -m <service>.client`).

    cli = ServiceCli(name="url_shortener", title="URL shortener", settings=UrlShortenerSettings)
    app = cli.typer(help="Talk to a running URL shortener.")

    @app.command()
    def get(code: str) -> None:
        api = cli.api()
        link = api.call("GET", f"/api/links/{code}").json()
        api.show(link, lambda body: api.out.print(body["url"]))

Every client gets the same global options, before the command: `--url` (env `<PREFIX>_URL`),
`--api-key` (env `<PREFIX>_API_KEY`, sent as `X-API-Key`) and `--json` (raw JSON out).
Their defaults come from the service's own settings, read the way the server reads them
(environment and `.env`): `http://127.0.0.1:<PREFIX>_PORT` and `<PREFIX>_ADMIN_KEY`, so a
client on the server's machine needs no options at all.

Exit status, the same everywhere: 0 done; 1 the service refused (its problem+json is shown on
stderr as `Error <status> <title>: <detail>`); 2 the service could not be reached (with the
`make run-<service>` hint) or the command line is wrong (typer's own usage errors are 2).
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, NoReturn

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console

from common.settings import ServiceSettings

DONE, REFUSED, UNREACHABLE = 0, 1, 2


@dataclass
class Api:
    """What every command needs: where the service is, how to authenticate, how to print."""

    url: str
    api_key: str | None
    as_json: bool
    service: str = "service"
    title: str = "service"
    timeout: float = 30.0
    out: Console = field(default_factory=lambda: Console(highlight=False, soft_wrap=True))
    err: Console = field(
        default_factory=lambda: Console(stderr=True, highlight=False, soft_wrap=True)
    )

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; a problem+json answer exits 1, an unreachable service exits 2."""
        resp = self.send(method, path, **kwargs)
        if resp.status_code >= 400:
            self.fail(resp)
        return resp

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, returned whatever its status (transport failures exit 2)."""
        headers = dict(kwargs.pop("headers", {}))
        if self.api_key:
            headers.setdefault("x-api-key", self.api_key)
        try:
            return httpx.request(
                method, self.url.rstrip("/") + path, headers=headers, timeout=self.timeout, **kwargs
            )
        except httpx.ConnectError:
            self.unreachable()
        except httpx.HTTPError as exc:
            self.err.print(f"Error: no answer from {self.url}: {exc!r}", markup=False)
            raise typer.Exit(UNREACHABLE) from None

    def unreachable(self) -> NoReturn:
        prefix = self.service.upper()
        self.err.print(
            f"Error: cannot connect to the {self.title} at {self.url}. Is it running? "
            f"Start it with `make run-{self.service}`, or point --url ({prefix}_URL) "
            "at a running one.",
            markup=False,
        )
        raise typer.Exit(UNREACHABLE)

    def fail(self, resp: httpx.Response) -> NoReturn:
        self.err.print(f"Error {resp.status_code} {problem_text(resp)}", markup=False)
        raise typer.Exit(REFUSED)

    def dump(self, body: Any) -> None:
        self.out.print(json.dumps(body, indent=2), markup=False)

    def show(self, body: Any, human: Callable[[Any], None]) -> None:
        """Print `body` as JSON under `--json`, else as `human` renders it."""
        if self.as_json:
            self.dump(body)
        else:
            human(body)


def problem_text(resp: httpx.Response) -> str:
    """`<title>: <detail>` from a problem+json body (plain text when the body is not JSON)."""
    try:
        body = resp.json()
    except ValueError:
        return resp.reason_phrase + (f": {resp.text[:200]}" if resp.text else "")
    if not isinstance(body, dict):
        return f"{resp.reason_phrase}: {body}"
    title = body.get("title") or resp.reason_phrase
    detail = body.get("detail")
    if not detail and body.get("errors"):
        detail = "; ".join(
            f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg')}" for e in body["errors"]
        )
    text = f"{title}: {detail}" if detail else str(title)
    retry = resp.headers.get("retry-after")
    return text + (f" (retry after {retry}s)" if retry else "")


@dataclass
class ServiceCli:
    """A service's client: its name, how people call it, and the settings its server reads."""

    name: str
    title: str
    settings: type[ServiceSettings]
    # The settings field holding the development admin key (None: the service has no keys).
    admin_key_field: str | None = "admin_key"
    _current: Api | None = field(default=None, init=False, repr=False)

    @property
    def prefix(self) -> str:
        return self.name.upper()

    def defaults(self) -> tuple[str, str | None]:
        """(URL, API key) as the server on this machine would be configured."""
        try:
            settings = self.settings()
            port = settings.port
            key = getattr(settings, self.admin_key_field) if self.admin_key_field else None
        except ValidationError:
            # A broken server setting is the server's problem: fall back to the defaults.
            fields = self.settings.model_fields
            port = fields["port"].default
            key = fields[self.admin_key_field].default if self.admin_key_field else None
        return f"http://127.0.0.1:{port}", key

    def typer(self, *, help: str) -> typer.Typer:
        """A typer app whose callback takes the global options and keeps an `Api`."""
        app = typer.Typer(help=help, no_args_is_help=True)
        prefix = self.prefix

        @app.callback()
        def options(
            ctx: typer.Context,
            url: Annotated[
                str | None,
                typer.Option(
                    "--url",
                    envvar=f"{prefix}_URL",
                    help=f"Service URL (default: http://127.0.0.1:<{prefix}_PORT>).",
                ),
            ] = None,
            api_key: Annotated[
                str | None,
                typer.Option(
                    "--api-key",
                    envvar=f"{prefix}_API_KEY",
                    help=f"Sent as X-API-Key (default: {prefix}_ADMIN_KEY, as the server has it).",
                ),
            ] = None,
            as_json: Annotated[
                bool, typer.Option("--json", help="Print the raw JSON responses.")
            ] = False,
        ) -> None:
            default_url, default_key = self.defaults()
            ctx.obj = self._current = Api(
                url=url or default_url,
                api_key=api_key or default_key,
                as_json=as_json,
                service=self.name,
                title=self.title,
            )

        return app

    def api(self) -> Api:
        """The running command's `Api` (the global options' callback made it)."""
        if self._current is None:  # pragma: no cover - only outside a typer run
            raise RuntimeError("no command is running")
        return self._current
