"""The rules watcher: good edits reloaded, bad ones kept out, the watcher never stops."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from rate_limiter import rules_files
from rate_limiter.rules import Domain
from rate_limiter.rules_files import fingerprint
from rate_limiter.rules_watcher import RulesWatcher
from tests.rate_limiter.test_rules_yaml import ENVOY_FILE


def test_watcher_reloads_good_edits_and_keeps_old_rules_on_bad_ones(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(ENVOY_FILE)
    watcher = RulesWatcher(path, interval=0.05)
    assert not watcher.reload_if_changed()
    path.write_text(ENVOY_FILE.replace("500", "7", 1))
    os.utime(path)
    assert watcher.reload_if_changed()
    [m] = watcher.current.domains["mongo_cps"].match([("database", "users")])
    assert m.rule.limit and m.rule.limit.rate == 7
    path.write_text(ENVOY_FILE + "  - key: [oops\n")
    assert not watcher.reload_if_changed()
    assert watcher.last_error and "rules.yaml:" in watcher.last_error
    [m] = watcher.current.domains["mongo_cps"].match([("database", "users")])
    assert m.rule.limit and m.rule.limit.rate == 7  # still the last good rules
    assert watcher.reloads == 1


GOOD = (
    "domain: api\ndescriptors:\n  - key: user\n"
    "    rate_limit: {unit: hour, requests_per_unit: %d}\n"
)
BAD_EDITS = [
    GOOD.replace("%d", "!!int ten"),
    GOOD.replace("%d", "!!python/name:os.system 5"),
    "domain: api\x0c\ndescriptors: []\n",
]


def rate_in_force(watcher: RulesWatcher) -> int:
    [m] = watcher.current.domains["api"].match([("user", "u")])
    assert m.rule.limit is not None
    return m.rule.limit.rate


@pytest.mark.parametrize("bad", BAD_EDITS, ids=["bad-int", "unsafe-tag", "control-char"])
async def test_the_watcher_survives_any_bad_edit_and_takes_the_next_good_one(
    tmp_path: Path, bad: str
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD % 5)
    watcher = RulesWatcher(path, interval=0.02)
    task = asyncio.create_task(watcher.watch())
    try:
        path.write_text(bad)
        for _ in range(100):
            await asyncio.sleep(0.02)
            if watcher.last_error:
                break
        assert not task.done()
        assert watcher.last_error and watcher.last_error.startswith(f"{path}:")
        assert rate_in_force(watcher) == 5  # the last good rules stay
        path.write_text(GOOD % 7)
        for _ in range(100):
            await asyncio.sleep(0.02)
            if rate_in_force(watcher) == 7:
                break
        assert rate_in_force(watcher) == 7 and watcher.last_error is None
        assert not task.done()
    finally:
        task.cancel()


def test_an_edit_landing_during_a_reload_is_picked_up_by_the_next_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD % 5)
    watcher = RulesWatcher(path)
    path.write_text(GOOD % 6)
    real_parse = rules_files.parse_text

    def parse_then_edit(text: str, source: str = "<rules>") -> Domain:
        # A second edit lands right after the reload read the file (a real write, once).
        domain = real_parse(text, source)
        monkeypatch.setattr(rules_files, "parse_text", real_parse)
        path.write_text(GOOD % 7)
        return domain

    monkeypatch.setattr(rules_files, "parse_text", parse_then_edit)
    assert watcher.reload_if_changed()
    assert rate_in_force(watcher) == 6  # what was read
    assert watcher.current.fingerprint != fingerprint(path)  # ...and it knows the file moved on
    assert watcher.reload_if_changed()
    assert rate_in_force(watcher) == 7
