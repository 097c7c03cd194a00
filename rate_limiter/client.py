"""Command-line client: python -m rate_limiter.client check|release|rules|usage ...

    python -m rate_limiter.client check api api_key=k1 route="POST /api/links" --cost 2
    python -m rate_limiter.client release api upload_user=u1 --lease 3f2a...e1.1
    python -m rate_limiter.client usage api api_key=k1
    python -m rate_limiter.client rules

Exit status of `check`: 0 allowed, 1 refused (so shell scripts can branch on it), 2 errors.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import httpx
import typer

app = typer.Typer(help="Talk to a running rate limiter service.", no_args_is_help=True)
DEFAULT_URL = os.environ.get("RATE_LIMITER_URL", "http://127.0.0.1:8004")
UrlOpt = Annotated[str, typer.Option("--url", help="Service URL (env RATE_LIMITER_URL).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the raw JSON response.")]


def _entries(pairs: list[str]) -> list[dict[str, str]]:
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r}: descriptors are key=value")
        out.append({"key": key, "value": value})
    return out


def _call(method: str, url: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        resp = httpx.request(method, url.rstrip("/") + path, timeout=10, **kwargs)
    except httpx.HTTPError as exc:
        typer.echo(f"error: cannot reach {url}: {exc}", err=True)
        raise typer.Exit(2) from None
    if resp.status_code >= 400:
        try:
            detail = resp.json().get("detail") or resp.json().get("title")
        except ValueError:
            detail = resp.text[:200]
        typer.echo(f"error: {resp.status_code}: {detail}", err=True)
        raise typer.Exit(2)
    return resp


def _show(body: dict[str, Any]) -> None:
    verdict = "ALLOWED" if body["allowed"] else "REFUSED"
    typer.echo(verdict if body["decisions"] else f"{verdict} (no rule applies)")
    for d in body["decisions"]:
        retry = d["retry_after"]
        wait = "never fits" if retry is None else f"retry after {retry:.3f}s"
        flags = " [shadow]" if d["shadow_mode"] else ""
        flags += " [degraded]" if d["degraded"] else ""
        typer.echo(
            f"  {d['rule']}: {'allowed' if d['allowed'] else 'refused'}{flags}, "
            f"{d['remaining']}/{d['limit']} left, full in {d['reset_after']:.3f}s"
            + ("" if d["allowed"] else f", {wait}")
            + (f", lease {d['lease']}" if d.get("lease") else "")
        )


@app.command()
def check(
    domain: str,
    descriptors: Annotated[list[str], typer.Argument(help="key=value entries, in order.")],
    cost: Annotated[int, typer.Option(min=1)] = 1,
    url: UrlOpt = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Ask for `cost` units under the domain's rules (this consumes quota)."""
    body = {"domain": domain, "descriptors": _entries(descriptors), "cost": cost}
    result = _call("POST", url, "/api/check", json=body).json()
    typer.echo(json.dumps(result, indent=2)) if as_json else _show(result)
    raise typer.Exit(0 if result["allowed"] else 1)


@app.command()
def release(
    domain: str,
    descriptors: Annotated[list[str], typer.Argument(help="key=value entries, as checked.")],
    lease: Annotated[str, typer.Option(help="The lease id the check handed out.")],
    url: UrlOpt = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Give back a concurrency lease taken by `check` (exit 1 when nothing held it)."""
    body = {"domain": domain, "descriptors": _entries(descriptors), "lease": lease}
    result = _call("POST", url, "/api/release", json=body).json()
    released = result["released"]
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(f"released from {released} rule(s)" if released else "nothing held that lease")
    raise typer.Exit(0 if released else 1)


@app.command()
def usage(
    domain: str,
    descriptors: Annotated[list[str], typer.Argument(help="key=value entries, in order.")],
    url: UrlOpt = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Show what is left for the descriptors, consuming nothing."""
    entries = _entries(descriptors)
    params: list[tuple[str, str]] = [("domain", domain)]
    for e in entries:
        params += [("key", e["key"]), ("value", e["value"])]
    result = _call("GET", url, "/api/usage", params=params).json()
    typer.echo(json.dumps(result, indent=2)) if as_json else _show(result)


@app.command()
def rules(url: UrlOpt = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """List the rules in force (and the last rejected edit, if any)."""
    body = _call("GET", url, "/api/rules").json()
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    typer.echo(f"rules from {body['path']} (reloaded {body['reloads']} times)")
    if body["last_error"]:
        typer.echo(f"  last edit REJECTED: {body['last_error']}")
    for domain in body["domains"]:
        typer.echo(f"domain {domain['domain']} ({domain['source']})")
        for r in domain["rules"]:
            if r["unlimited"]:
                what = "unlimited"
            elif r.get("blocks"):
                what = f"0/{r['unit']} (refuses every request)"
            else:
                what = f"{r['requests_per_unit']}/{r['unit']} {r['algorithm']}"
                what += f" burst {r['burst']}" if r["burst"] else ""
                what += " prefetch" if r.get("prefetch") else ""
            what += f" replaces {', '.join(r['replaces'])}" if r.get("replaces") else ""
            what += " [shadow]" if r["shadow_mode"] else ""
            typer.echo(f"  {r['descriptor']:<40} {what}   ({r['name']})")
        for path in domain.get("allowlisted", ()):
            typer.echo(f"  {path:<40} no limit (allowlist entry)")


if __name__ == "__main__":
    app()
