"""The command-line client as users run it: a real subprocess against a real server process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer

from common.redis_server import free_port
from tests.support import ROOT, ServiceProcess, wait_for
from url_shortener.client import parse_duration

pytestmark = pytest.mark.slow

ADMIN_KEY = "test-admin-key"  # what the shortener fixture configures
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


class Cli:
    """Runs `python -m url_shortener.client ...` with the service's URL and key in the env."""

    def __init__(self, url: str, api_key: str = ADMIN_KEY) -> None:
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("URL_SHORTENER_")},
            "URL_SHORTENER_URL": url,
            "URL_SHORTENER_API_KEY": api_key,
            "COLUMNS": "200",  # rich wraps at 80 columns when stdout is not a terminal
            "NO_COLOR": "1",
        }

    def __call__(
        self, *args: str, code: int = 0, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "url_shortener.client", *args],
            env=self.env,
            cwd=ROOT,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self("--json", *args).stdout)


def test_link_lifecycle_and_errors(
    redis_url: str, shortener: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    svc = shortener(redis_url)
    cli = Cli(svc.url)

    # shorten: every option, the short URL on its own first line
    out = cli(
        "shorten", "https://example.com/docs", "--alias", "docs-home", "--expires-in", "2d",
        "--max-visits", "5", "--status", "301", "--password", "s3cret",
        "--tag", "launch", "--tag", "docs",
    ).stdout  # fmt: skip
    assert out.splitlines()[0] == "https://sho.rt/docs-home"
    assert "301 redirect" in out and "at most 5 visits" in out and "password protected" in out
    protected = cli.json("get", "docs-home")
    expires = datetime.fromisoformat(protected["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=2))) < timedelta(minutes=1)
    assert protected["max_visits"] == 5 and protected["redirect_status"] == 301
    assert protected["has_password"] and sorted(protected["tags"]) == ["docs", "launch"]

    # get, readable
    shown = cli("get", "docs-home").stdout
    for expected in ("https://example.com/docs", "https://sho.rt/docs-home", "launch", "301"):
        assert expected in shown
    assert any(line.split() == ["password", "yes"] for line in shown.splitlines())

    # stats: visits made over HTTP show up in the summary, the tables and the CSV export
    plain = cli.json("shorten", "https://example.org/page")
    code = plain["code"]
    assert plain["short_url"] == f"https://sho.rt/{code}" and plain["redirect_status"] == 302
    for referer in ("https://news.ycombinator.com/item", "https://news.ycombinator.com/x"):
        resp = httpx.get(f"{svc.url}/{code}", headers={"user-agent": FIREFOX, "referer": referer})
        assert resp.status_code == 302
    api = httpx.Client(base_url=svc.url, headers={"x-api-key": ADMIN_KEY})
    wait_for(lambda: api.get(f"/api/links/{code}/stats").json()["total"] == 2, timeout=10)
    report = cli("stats", code).stdout
    assert "total" in report and "news.ycombinator.com" in report and "Firefox" in report
    csv_file = tmp_path / "visits.csv"
    assert f"Wrote 2 visits to {csv_file}" in cli("stats", code, "--csv", str(csv_file)).stdout
    lines = csv_file.read_text().splitlines()
    assert lines[0].startswith("timestamp,referrer_host,browser") and len(lines) == 3
    assert "Firefox" in lines[1]

    # list: one page with a hint, every page with --all, by tag
    for n in range(3):
        body = {"url": f"https://example.net/{n}", "tags": ["batch"]}
        assert api.post("/api/links", json=body).status_code == 201
    page = cli("list", "--limit", "2").stdout
    assert "more with --all or --cursor" in page
    every = cli.json("list", "--all", "--limit", "2")
    assert len(every["items"]) == 5 and every["next_cursor"] is None
    assert len({link["code"] for link in every["items"]}) == 5
    tagged = cli("list", "--tag", "batch", "--all").stdout
    assert "example.net/0" in tagged and "example.net/2" in tagged
    assert "example.org" not in tagged and "3 links" in tagged

    # qr: png and svg, the format taken from --format or the file's suffix
    png, svg = tmp_path / "code.png", tmp_path / "code.img"
    assert "png, 128px" in cli("qr", code, "--out", str(png), "--size", "128").stdout
    assert png.read_bytes().startswith(b"\x89PNG")
    cli("qr", code, "--out", str(svg), "--format", "svg")
    assert b"<svg" in svg.read_bytes()[:300]
    # an --out whose extension says another format than --format is refused, nothing written
    clash = cli("qr", code, "--out", str(tmp_path / "c.png"), "--format", "svg", code=2)
    assert "c.png" in clash.stderr and "--format is svg" in clash.stderr
    assert not (tmp_path / "c.png").exists()

    # delete, then the documented errors: 404 (exit 1, problem shown on stderr)
    assert cli("delete", code).stdout.strip() == f"Deleted {code}."
    missing = cli("get", code, code=1)
    assert missing.stderr.startswith("Error 404 Link not found: ") and code in missing.stderr
    assert missing.stdout == ""
    assert cli("delete", code, code=1).stderr.startswith("Error 404 Link not found")

    # 422 from the service: a bad alias, a refused URL; 409 a taken alias; 401 a wrong key
    bad = cli("shorten", "https://example.com", "--alias", "a b", code=1).stderr
    assert bad.startswith("Error 422 Alias refused: An alias is 3 to 64 characters")
    reserved = cli("shorten", "https://example.com", "--alias", "api", code=1).stderr
    assert reserved.startswith("Error 422 Alias refused: 'api' is a reserved word.")
    taken = cli("shorten", "https://example.com", "--alias", "docs-home", code=1).stderr
    assert taken.startswith("Error 409 Alias already taken")
    assert cli("--api-key", "wrong", "list", code=1).stderr.startswith("Error 401")

    # usage errors are caught before any request (exit 2)
    assert "--status" in cli("shorten", "https://example.com", "--status", "200", code=2).stderr
    assert "1d12h" in cli("shorten", "https://example.com", "--expires-in", "soon", code=2).stderr
    api.close()


def test_bulk_and_keys(
    redis_url: str, shortener: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    svc = shortener(redis_url)
    cli = Cli(svc.url)

    # 1003 URLs: two requests (1000 + 3); the failures are reported with their line numbers
    urls = [f"https://example.com/item/{n}" for n in range(1001)]
    lines = ["# links for the launch", "", *urls[:500], "ftp://example.com/nope", *urls[500:]]
    lines += ["", "https://sho.rt/loop"]
    path = tmp_path / "urls.txt"
    path.write_text("\n".join(lines) + "\n")
    result = cli("bulk", str(path), code=1)
    created = result.stdout.splitlines()
    assert len(created) == 1001
    short, target = created[0].split("\t")
    assert short.startswith("https://sho.rt/") and target == urls[0]
    assert created[-1].endswith("\t" + urls[-1])
    errors = result.stderr
    assert "line 503: ftp://example.com/nope: Error 422 URL refused: Only http" in errors
    assert f"line {len(lines)}: https://sho.rt/loop: Error 422 URL refused" in errors
    assert "Created 1001, failed 2." in errors
    listed = cli.json("list", "--all", "--limit", "200")
    assert len(listed["items"]) == 1001

    # JSON output, and stdin; a clean file exits 0
    answer = json.loads(
        cli("--json", "bulk", "-", stdin="https://example.com/a\nhttps://example.com/b\n").stdout
    )
    assert answer["created"] == 2 and answer["failed"] == 0
    assert [r["line"] for r in answer["results"]] == [1, 2]

    # keys: printed once with a warning; the new key works, via --api-key and via the env
    made = cli("keys", "create", "ci-bot")
    key = made.stdout.strip()
    assert len(key) > 20 and "shown only once" in made.stderr and "ci-bot" in made.stderr
    own = Cli(svc.url, api_key=key)
    assert own.json("shorten", "https://example.com/mine")["url"] == "https://example.com/mine"
    assert cli("--api-key", key, "--json", "list", "--limit", "1").returncode == 0
    meta = cli.json("keys", "create", "other")
    assert meta["name"] == "other" and meta["key"] and meta["prefix"]
    # keys list: names, prefixes, when created and last used; never a secret
    listed = cli("keys", "list").stdout
    assert "ci-bot" in listed and "other" in listed and meta["prefix"] in listed
    assert key not in listed and meta["key"] not in listed and "never" in listed
    used = {k["name"]: k["last_used_at"] for k in cli.json("keys", "list")}
    assert used["ci-bot"] is not None and used["other"] is None
    assert "403" in own("keys", "list", code=1).stderr
    # Only the admin key mints and revokes; a revoked key stops working at once.
    assert "403" in own("keys", "create", "nope", code=1).stderr
    revoked = cli("keys", "revoke", str(meta["id"]))
    assert f"Revoked key {meta['id']}" in revoked.stdout
    assert "401" in Cli(svc.url, api_key=meta["key"])("list", code=1).stderr


def test_durations() -> None:
    assert parse_duration("90s") == timedelta(seconds=90)
    assert parse_duration("1d12h") == timedelta(hours=36)
    assert parse_duration("1W") == timedelta(weeks=1)
    for bad in ("", "0s", "1y", "h1", "1h 2m", "-1h"):
        with pytest.raises(typer.BadParameter):
            parse_duration(bad)


def test_unreachable_service_exits_2() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    cli = Cli("http://unused.invalid")
    down = cli("--url", url, "get", "abc1234", code=2)
    assert f"cannot connect to the URL shortener at {url}" in down.stderr
    assert "make run-url_shortener" in down.stderr
    # the env var is the default for --url
    assert "make run-url_shortener" in Cli(url)("list", code=2).stderr
