"""The file watcher: the rules in force, swapped for new ones when the files change."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from rate_limiter.errors import RulesError
from rate_limiter.rules_files import fingerprint, load_rules

log = structlog.get_logger("rate_limiter.rules_watcher")


class RulesWatcher:
    """Holds the current rules and swaps in a new set when the files change.

    A bad edit is logged and kept out: the previous rules stay in force. The swap is one
    reference assignment, so requests in flight are never dropped."""

    def __init__(self, path: Path, *, interval: float = 1.0, merge_domains: bool = False) -> None:
        self.path = path
        self.interval = interval
        self.merge_domains = merge_domains
        self.current = load_rules(path, merge_domains=merge_domains)
        self.last_error: str | None = None
        self.reloads = 0

    def reload_if_changed(self) -> bool:
        try:
            fp = fingerprint(self.path)
        except OSError as exc:
            self.last_error = f"{self.path}: {exc}"
            return False
        if fp == self.current.fingerprint:
            return False
        try:
            rules = load_rules(self.path, merge_domains=self.merge_domains)
        except RulesError as exc:
            if self.last_error != exc.detail:
                log.error("rules_rejected", error=exc.detail)
            self.last_error = exc.detail
            return False
        self.current = rules
        self.last_error = None
        self.reloads += 1
        log.info("rules_reloaded", path=str(self.path), domains=sorted(rules.domains))
        return True

    async def watch(self) -> None:
        """Poll forever; nothing a file holds can stop it (the last good rules stay)."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await asyncio.to_thread(self.reload_if_changed)
            except Exception as exc:  # a bug, not a bad file: log it and keep watching
                detail = f"{self.path}: cannot reload: {type(exc).__name__}: {exc}"
                if self.last_error != detail:
                    log.exception("rules_reload_failed", error=detail)
                self.last_error = detail
