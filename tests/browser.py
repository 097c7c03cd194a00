"""Headless Chromium for the page tests: Debian's `chromium` driven through its
`chromedriver` by Selenium (no browser download anywhere).

Every service's page tests use the `browser` fixture (one window) or `browser_factory` (several
independent sessions, e.g. two chat users); both live in tests/conftest.py and come from here.
`.ci/run` installs the two Debian packages when they are missing; elsewhere the page tests are
skipped with the command that installs them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = ("chromium", "chromium-browser")
CHROMEDRIVER = ("chromedriver",)
INSTALL = "apt-get install chromium chromium-driver"


def _which(names: tuple[str, ...]) -> str | None:
    return next((path for name in names if (path := shutil.which(name))), None)


def require_chromium() -> tuple[str, str]:
    """Paths of chromium and chromedriver; fails under CI, skips elsewhere, when missing."""
    binary, driver = _which(CHROMIUM), _which(CHROMEDRIVER)
    if binary and driver:
        return binary, driver
    message = f"headless Chromium is not installed ({INSTALL})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def new_driver(binary: str, driver: str, *, width: int = 1280, height: int = 900) -> Any:
    """A headless Chrome session (Selenium WebDriver), loopback only."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",  # tests run as root here
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    # Page tests read the console to fail on JavaScript errors.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    web = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    web.set_page_load_timeout(30)
    return web


@contextmanager
def browsers() -> Iterator[Callable[[], Any]]:
    """A factory of independent browser sessions, all closed on exit."""
    binary, driver = require_chromium()
    opened: list[Any] = []

    def make() -> Any:
        web = new_driver(binary, driver)
        opened.append(web)
        return web

    try:
        yield make
    finally:
        for web in opened:
            web.quit()


def javascript_errors(web: Any) -> list[str]:
    """SEVERE console entries since the last call (uncaught errors, failed requests)."""
    return [e["message"] for e in web.get_log("browser") if e.get("level") == "SEVERE"]


def screenshot(web: Any, path: Path) -> Path:
    """Save what the page looks like (a PNG to look at when a page test fails or changes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    web.save_screenshot(str(path))
    return path
