"""Command-line client: python -m url_shortener.client shorten|get|stats|list|delete|qr|bulk|keys

    python -m url_shortener.client shorten https://example.com/a/long/page --expires-in 2d
    python -m url_shortener.client list --tag launch --all
    python -m url_shortener.client stats abc1234 --csv visits.csv
    python -m url_shortener.client --json get abc1234
    python -m url_shortener.client keys create ci-bot
    python -m url_shortener.client keys revoke 3

Global options come before the command (the suite's one convention, common/cli.py): --url
(env URL_SHORTENER_URL; default http://127.0.0.1:<URL_SHORTENER_PORT>), --api-key (env
URL_SHORTENER_API_KEY; default URL_SHORTENER_ADMIN_KEY, as the server reads it) and --json.
Exit status: 0 done, 1 the service refused (its problem+json is shown on stderr, or some
`bulk` lines failed), 2 the service could not be reached or the command line is wrong.
"""

from __future__ import annotations

import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from common.cli import Api, ServiceCli
from url_shortener.settings import UrlShortenerSettings

BULK_CHUNK = 1000  # the API's limit per bulk request
STATUSES = (301, 302, 307, 308)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+)([smhdw])")

cli = ServiceCli(name="url_shortener", title="URL shortener", settings=UrlShortenerSettings)
app = cli.typer(help="Talk to a running URL shortener.")
keys_app = typer.Typer(help="Management API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

CodeArg = Annotated[str, typer.Argument(help="The link's short code (or alias).")]


def parse_duration(value: str) -> timedelta:
    """`90s`, `30m`, `1h`, `2d`, `1w` or combinations such as `1d12h`."""
    text = value.strip().lower()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise typer.BadParameter(f"{value!r}: use a duration like 90s, 30m, 1h, 2d, 1w or 1d12h")
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise typer.BadParameter(f"{value!r}: the duration must be positive")
    return timedelta(seconds=seconds)


def _cell(value: Any) -> Text:
    """User data as literal text (no rich markup), `-` for nothing."""
    if value is None or value == [] or value == "":
        return Text("-", style="dim")
    if isinstance(value, list):
        value = ", ".join(map(str, value))
    return Text(str(value))


def _when(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    except ValueError:
        return value


def _show_link(api: Api, link: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    rows: list[tuple[str, Any]] = [
        ("code", link["code"]),
        ("short url", link["short_url"]),
        ("target", link["url"]),
        ("redirect", link["redirect_status"]),
        ("created", _when(link["created_at"])),
        ("expires", _when(link["expires_at"])),
        ("max visits", link["max_visits"]),
        ("visits", link["visits"]),
        ("tags", link["tags"]),
        ("password", "yes" if link["has_password"] else "no"),
    ]
    for name, value in rows:
        table.add_row(name, _cell(value))
    api.out.print(table)


def _links_table(links: list[dict[str, Any]]) -> Table:
    table = Table(show_lines=False)
    table.add_column("code", no_wrap=True, style="bold")
    table.add_column("target", overflow="fold")
    table.add_column("visits", justify="right")
    table.add_column("tags", overflow="fold")
    table.add_column("expires")
    for link in links:
        table.add_row(
            _cell(link["code"]),
            _cell(link["url"]),
            _cell(link["visits"]),
            _cell(link["tags"]),
            _cell(_when(link["expires_at"])),
        )
    return table


def _counts_table(title: str, key: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(key, overflow="fold")
    table.add_column("visits", justify="right")
    for row in rows:
        table.add_row(_cell(row[key]), _cell(row["visits"]))
    return table


@app.command()
def shorten(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="The long URL (http or https).")],
    alias: Annotated[
        str | None, typer.Option(help="A custom code instead of a generated one.")
    ] = None,
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="Lifetime: 90s, 30m, 1h, 2d, 1w, 1d12h.")
    ] = None,
    max_visits: Annotated[
        int | None, typer.Option("--max-visits", min=1, help="Stop redirecting after N visits.")
    ] = None,
    status: Annotated[int, typer.Option(help="Redirect status: 301, 302, 307 or 308.")] = 302,
    password: Annotated[str | None, typer.Option(help="Ask visitors for this password.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="A tag (repeatable).")] = None,
) -> None:
    """Create a short link and print it."""
    api: Api = ctx.obj
    if status not in STATUSES:
        raise typer.BadParameter(
            f"{status} is not one of 301, 302, 307, 308", param_hint="--status"
        )
    body: dict[str, Any] = {"url": url, "redirect_status": status, "tags": tag or []}
    if alias is not None:
        body["alias"] = alias
    if expires_in is not None:
        try:
            lifetime = parse_duration(expires_in)
        except typer.BadParameter as exc:
            exc.param_hint = "--expires-in"
            raise
        body["expires_at"] = (datetime.now(UTC) + lifetime).isoformat()
    if max_visits is not None:
        body["max_visits"] = max_visits
    if password is not None:
        body["password"] = password
    link = api.call("POST", "/api/links", json=body).json()
    if api.as_json:
        api.dump(link)
        return
    api.out.print(Text(link["short_url"], style="bold green"))
    api.out.print(Text(f"  -> {link['url']}", style="dim"))
    details = [f"code {link['code']}", f"{link['redirect_status']} redirect"]
    if link["expires_at"]:
        details.append(f"expires {_when(link['expires_at'])}")
    if link["max_visits"]:
        details.append(f"at most {link['max_visits']} visits")
    if link["has_password"]:
        details.append("password protected")
    if link["tags"]:
        details.append("tags " + ", ".join(link["tags"]))
    api.out.print(Text("  " + "; ".join(details), style="dim"))


@app.command()
def get(ctx: typer.Context, code: CodeArg) -> None:
    """Show one link."""
    api: Api = ctx.obj
    link = api.call("GET", f"/api/links/{code}").json()
    api.dump(link) if api.as_json else _show_link(api, link)


@app.command()
def stats(
    ctx: typer.Context,
    code: CodeArg,
    csv: Annotated[
        Path | None,
        typer.Option("--csv", help="Save every raw visit as CSV to this file ('-' for stdout)."),
    ] = None,
) -> None:
    """Visit statistics of a link, or its raw visits as CSV."""
    api: Api = ctx.obj
    if csv is not None:
        data = api.call("GET", f"/api/links/{code}/stats", params={"format": "csv"}).content
        if str(csv) == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            return
        csv.write_bytes(data)
        rows = max(data.count(b"\r\n") - 1, 0)
        api.out.print(f"Wrote {rows} visits to {csv}", markup=False)
        return
    body = api.call("GET", f"/api/links/{code}/stats").json()
    if api.as_json:
        api.dump(body)
        return
    summary = Table(show_header=False, box=None, pad_edge=False, title=f"Link {body['code']}")
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    for name in ("total", "unique_visitors", "humans", "bots"):
        summary.add_row(name.replace("_", " "), str(body[name]))
    api.out.print(summary)
    for title, key, rows_ in (
        ("Per day", "day", body["per_day"]),
        ("Top referrers", "referrer", body["top_referrers"]),
        ("Browsers", "browser", body["browsers"]),
    ):
        if rows_:
            api.out.print(_counts_table(title, key, rows_))


@app.command("list")
def list_links(
    ctx: typer.Context,
    tag: Annotated[str | None, typer.Option(help="Only links with this tag.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="Links per page.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="Start after this cursor.")] = None,
    all_pages: Annotated[
        bool, typer.Option("--all", help="Follow the cursors to the last page.")
    ] = False,
) -> None:
    """List links, newest first, one page (or every page with --all)."""
    api: Api = ctx.obj
    items: list[dict[str, Any]] = []
    while True:
        params: dict[str, Any] = {"limit": limit}
        if tag:
            params["tag"] = tag
        if cursor:
            params["cursor"] = cursor
        page = api.call("GET", "/api/links", params=params).json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if not all_pages or not cursor:
            break
    if api.as_json:
        api.dump({"items": items, "next_cursor": cursor})
        return
    if not items:
        api.out.print("No links" + (f" tagged {tag}." if tag else "."), markup=False)
        return
    api.out.print(_links_table(items))
    more = f"; more with --all or --cursor {cursor}" if cursor else ""
    api.out.print(f"{len(items)} links{more}", markup=False, style="dim")


@app.command()
def delete(ctx: typer.Context, code: CodeArg) -> None:
    """Delete a link (its code then answers 404)."""
    api: Api = ctx.obj
    api.call("DELETE", f"/api/links/{code}")
    if api.as_json:
        api.dump({"deleted": code})
    else:
        api.out.print(f"Deleted {code}.", markup=False)


@app.command()
def qr(
    ctx: typer.Context,
    code: CodeArg,
    out: Annotated[Path, typer.Option("--out", help="File to write the image to.")],
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="svg or png (default: from --out's suffix, else svg)."),
    ] = None,
    size: Annotated[int, typer.Option(help="Width and height of the image in pixels.")] = 256,
) -> None:
    """Save a QR code of the short URL."""
    api: Api = ctx.obj
    suffix = out.suffix.lower().lstrip(".")
    suffix = suffix if suffix in ("svg", "png") else ""
    fmt = (fmt or suffix or "svg").lower()
    if fmt not in ("svg", "png"):
        raise typer.BadParameter(f"{fmt!r} is not svg or png", param_hint="--format")
    if suffix and suffix != fmt:
        raise typer.BadParameter(
            f"{out.name!r} says .{suffix} but --format is {fmt}", param_hint="--out/--format"
        )
    data = api.call("GET", f"/api/links/{code}/qr", params={"format": fmt, "size": size}).content
    out.write_bytes(data)
    if api.as_json:
        api.dump({"code": code, "file": str(out), "format": fmt, "bytes": len(data)})
    else:
        api.out.print(f"Wrote {out} ({fmt}, {size}px, {len(data)} bytes)", markup=False)


def _read_urls(file: Path) -> list[tuple[int, str]]:
    """(line number, URL) for each non-blank, non-comment line ('-' reads stdin)."""
    text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    lines = ((n, line.strip()) for n, line in enumerate(text.splitlines(), start=1))
    return [(n, line) for n, line in lines if line and not line.startswith("#")]


def _post_bulk(api: Api, chunk: list[tuple[int, str]]) -> dict[str, Any]:
    """One bulk request, waiting out 429s (Retry-After) a few times before giving up."""
    body = {"links": [{"url": url} for _, url in chunk]}
    for _ in range(5):
        resp = api.send("POST", "/api/links/bulk", json=body)
        if resp.status_code != 429:
            break
        wait = float(resp.headers.get("retry-after") or 1)
        api.err.print(f"Rate limited; retrying in {wait:g}s", markup=False, style="yellow")
        time.sleep(min(wait, 60))
    if resp.status_code >= 400:
        api.fail(resp)
    result: dict[str, Any] = resp.json()
    return result


@app.command()
def bulk(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="One URL per line ('#' comments; '-' = stdin).")],
) -> None:
    """Shorten every URL in a file, 1000 per request; failures are reported by line."""
    api: Api = ctx.obj
    if str(file) != "-" and not file.is_file():
        raise typer.BadParameter(f"{file} is not a readable file", param_hint="FILE")
    urls = _read_urls(file)
    if not urls:
        api.err.print(f"No URLs in {file}.", markup=False)
        raise typer.Exit(1)
    created, failed, results = 0, 0, []
    for start in range(0, len(urls), BULK_CHUNK):
        chunk = urls[start : start + BULK_CHUNK]
        answer = _post_bulk(api, chunk)
        created += answer["created"]
        failed += answer["failed"]
        for item in answer["results"]:
            line, url = chunk[item["index"]]
            results.append({**item, "index": start + item["index"], "line": line, "url": url})
            if api.as_json:
                continue
            if item["status"] == 201:
                typer.echo(f"{item['link']['short_url']}\t{url}")  # tab-separated, for scripts
            else:
                error = item.get("error") or {}
                detail = error.get("detail") or "; ".join(
                    f"{'.'.join(e.get('loc', []))}: {e.get('msg')}" for e in error.get("errors", [])
                )
                api.err.print(
                    f"line {line}: {url}: Error {item['status']} {error.get('title', '')}"
                    + (f": {detail}" if detail else ""),
                    markup=False,
                )
    if api.as_json:
        api.dump({"created": created, "failed": failed, "results": results})
    else:
        style = "bold red" if failed else "bold green"
        api.err.print(f"Created {created}, failed {failed}.", markup=False, style=style)
    if failed:
        raise typer.Exit(1)


@keys_app.command("create")
def keys_create(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="What the key is for.")]
) -> None:
    """Mint a management API key (shown only once)."""
    api: Api = ctx.obj
    body = api.call("POST", "/api/keys", json={"name": name}).json()
    if api.as_json:
        api.dump(body)
        return
    api.out.print(Text(body["key"], style="bold green"))
    api.err.print(
        f"Key {body['name']!r} (id {body['id']}, prefix {body['prefix']}) created. "
        "Store it now: it is shown only once; only its hash is kept.",
        markup=False,
        style="yellow",
    )


@keys_app.command("list")
def keys_list(ctx: typer.Context) -> None:
    """The working keys (admin key only): id, name, prefix, created, last used; no secrets."""
    api: Api = ctx.obj
    keys = api.call("GET", "/api/keys").json()
    if api.as_json:
        api.dump(keys)
        return
    if not keys:
        api.out.print("No keys (only the admin key works).", markup=False)
        return
    table = Table()
    for column in ("id", "name", "prefix", "created", "last used"):
        table.add_column(column)
    for key in keys:
        table.add_row(
            str(key["id"]),
            key["name"],
            key["prefix"] + "…",
            key["created_at"][:19].replace("T", " "),
            (key["last_used_at"] or "never")[:19].replace("T", " "),
        )
    api.out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context, key_id: Annotated[int, typer.Argument(help="The key's id.", min=1)]
) -> None:
    """Revoke a key (admin key only); it stops working at once."""
    api: Api = ctx.obj
    api.call("DELETE", f"/api/keys/{key_id}")
    if api.as_json:
        api.dump({"revoked": key_id})
    else:
        api.out.print(f"Revoked key {key_id}.", markup=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
