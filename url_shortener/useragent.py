"""Just enough User-Agent parsing for analytics: the browser family, and bot or human.

Real analytics products use large regex databases (ua-parser, Matomo's DeviceDetector). The
few rules below cover the browsers and crawlers that make up nearly all real traffic; order
matters because every Chromium browser also says "Chrome" and "Safari".
"""

from __future__ import annotations

import re
from functools import lru_cache

_BOT = re.compile(
    r"bot|crawl|spider|slurp|preview|facebookexternalhit|embedly|whatsapp|telegram|"
    r"curl/|wget/|python-requests|python-httpx|httpx|go-http-client|java/|okhttp|"
    r"headlesschrome|lighthouse|pingdom|uptime|monitor|scan|fetch|locust",
    re.IGNORECASE,
)
_BROWSERS = (
    ("Edge", re.compile(r"Edg(e|A|iOS)?/")),
    ("Opera", re.compile(r"OPR/|Opera")),
    ("Samsung Internet", re.compile(r"SamsungBrowser/")),
    ("Firefox", re.compile(r"Firefox/|FxiOS/")),
    ("Chrome", re.compile(r"Chrome/|CriOS/")),
    # No ".*" between two tokens: that backtracks quadratically on hostile input.
    ("Safari", re.compile(r"Version/[\d.]+ (?:Mobile/\S+ )?Safari/")),
)


@lru_cache(maxsize=4096)
def classify(user_agent: str) -> tuple[str, bool]:
    """(browser family, is bot), cached: real traffic repeats a few thousand UA strings.
    Callers pass at most MAX_UA characters, which bounds the cache's memory too."""
    return browser(user_agent), is_bot(user_agent)


def is_bot(user_agent: str) -> bool:
    """Crawlers, link-preview fetchers, scripts and monitors; an empty UA counts as a bot."""
    return not user_agent or bool(_BOT.search(user_agent))


def browser(user_agent: str) -> str:
    """The browser family, 'Bot' for bots, 'Other' when unknown."""
    if is_bot(user_agent):
        return "Bot"
    for name, pattern in _BROWSERS:
        if pattern.search(user_agent):
            return name
    return "Other"
