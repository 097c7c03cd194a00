"""Command-line client: python -m rate_limiter.client check|release|rules|usage ...

    python -m rate_limiter.client check api api_key=k1 route="POST /api/links" --cost 2
    python -m rate_limiter.client release api upload_user=u1 --lease 3f2a...e1.1
    python -m rate_limiter.client usage api api_key=k1
    python -m rate_limiter.client rules

Global options come before the command (the suite's one convention, common/cli.py): --url
(env RATE_LIMITER_URL; default http://127.0.0.1:<RATE_LIMITER_PORT>) and --json.
Exit status: 0 done (for `check`: allowed), 1 refused (the service's problem+json, or a
`check` over the limit, so shell scripts can branch on it), 2 unreachable or a usage error.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from common.cli import REFUSED, ServiceCli
from rate_limiter.settings import RateLimiterSettings

cli = ServiceCli(
    name="rate_limiter", title="rate limiter", settings=RateLimiterSettings, admin_key_field=None
)
app = cli.typer(help="Talk to a running rate limiter service.")


def _entries(pairs: list[str]) -> list[dict[str, str]]:
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r}: descriptors are key=value")
        out.append({"key": key, "value": value})
    return out


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
) -> None:
    """Ask for `cost` units under the domain's rules (this consumes quota)."""
    api = cli.api()
    body = {"domain": domain, "descriptors": _entries(descriptors), "cost": cost}
    result = api.call("POST", "/api/check", json=body).json()
    api.show(result, _show)
    raise typer.Exit(0 if result["allowed"] else REFUSED)


@app.command()
def release(
    domain: str,
    descriptors: Annotated[list[str], typer.Argument(help="key=value entries, as checked.")],
    lease: Annotated[str, typer.Option(help="The lease id the check handed out.")],
) -> None:
    """Give back a concurrency lease taken by `check` (exit 1 when nothing held it)."""
    api = cli.api()
    body = {"domain": domain, "descriptors": _entries(descriptors), "lease": lease}
    result = api.call("POST", "/api/release", json=body).json()
    released = result["released"]
    api.show(
        result,
        lambda _: typer.echo(
            f"released from {released} rule(s)" if released else "nothing held that lease"
        ),
    )
    raise typer.Exit(0 if released else REFUSED)


@app.command()
def usage(
    domain: str,
    descriptors: Annotated[list[str], typer.Argument(help="key=value entries, in order.")],
) -> None:
    """Show what is left for the descriptors, consuming nothing."""
    api = cli.api()
    entries = _entries(descriptors)
    params: list[tuple[str, str]] = [("domain", domain)]
    for e in entries:
        params += [("key", e["key"]), ("value", e["value"])]
    result = api.call("GET", "/api/usage", params=params).json()
    api.show(result, _show)


@app.command()
def rules() -> None:
    """List the rules in force (and the last rejected edit, if any)."""
    api = cli.api()
    api.show(api.call("GET", "/api/rules").json(), _show_rules)


def _show_rules(body: dict[str, Any]) -> None:
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
