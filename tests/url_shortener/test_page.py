"""The web page at / and the offline /docs, in headless Chromium (the `browser` fixture),
against a real server and a real visit writer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.browser import javascript_errors
from tests.support import ServiceProcess, wait_for

pytestmark = pytest.mark.slow
Start = Callable[..., ServiceProcess]


def test_create_a_link_on_the_page_follow_it_and_see_the_visit_in_the_chart(
    browser: Any, shortener: Start, visit_writer: Start, redis_url: str
) -> None:
    from selenium.webdriver.common.by import By

    # The target is the server's own /healthz (loopback: allowed for this deployment), so
    # following the link works with no network.
    svc = shortener(
        redis_url,
        URL_SHORTENER_ALLOW_PRIVATE_TARGETS="true",
        URL_SHORTENER_VISIT_FLUSH_INTERVAL="0.1",
    )
    visit_writer(redis_url)
    target = f"{svc.url}/healthz?from=page"
    browser.get(svc.url + "/")
    assert browser.title == "URL shortener"
    find = browser.find_element
    find(By.ID, "key").send_keys("test-admin-key")
    find(By.ID, "url").send_keys(target)
    find(By.ID, "alias").send_keys("from-the-page")
    find(By.ID, "max").send_keys("5")
    find(By.CSS_SELECTOR, "#shorten button[type=submit]").click()
    wait_for(lambda: find(By.ID, "message").text, timeout=10)
    assert find(By.ID, "message").text.startswith("Created https://sho.rt/from-the-page")
    row = wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, 'tr[data-code="from-the-page"]'),
        timeout=10,
    )[0]
    link = row.find_element(By.TAG_NAME, "a")
    assert link.text.endswith("/from-the-page")

    link.click()  # follow it: a real redirect, a real visit
    wait_for(lambda: "/healthz" in browser.current_url, timeout=10)
    assert '"status"' in browser.page_source
    javascript_errors(browser)  # the JSON page's own favicon request is not the page's

    api = {"x-api-key": "test-admin-key"}
    stats = f"{svc.url}/api/links/from-the-page/stats"
    wait_for(lambda: httpx.get(stats, headers=api).json()["total"] == 1, timeout=15)
    browser.get(svc.url + "/")  # the key is remembered (localStorage)
    button = wait_for(
        lambda: browser.find_elements(
            By.CSS_SELECTOR, 'tr[data-code="from-the-page"] button.show-stats'
        ),
        timeout=10,
    )[0]
    button.click()
    bars = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#chart rect"), timeout=10)
    assert [bar.get_attribute("data-visits") for bar in bars] == ["1"]
    assert "1 visits" in find(By.ID, "stats-total").text
    # Headless Chromium says so in its User-Agent ("HeadlessChrome"): counted as a bot.
    assert find(By.ID, "browsers").text == "Bot: 1"
    assert javascript_errors(browser) == []


def test_docs_work_offline(browser: Any, shortener: Start, redis_url: str) -> None:
    """Swagger UI's files come from the service itself: nothing is fetched elsewhere."""
    from selenium.webdriver.common.by import By

    svc = shortener(redis_url)
    html = httpx.get(f"{svc.url}/docs").text
    assert "/docs/assets/swagger-ui-bundle.js" in html and "cdn" not in html.lower()
    assert httpx.get(f"{svc.url}/docs/assets/swagger-ui-bundle.js").status_code == 200
    browser.get(svc.url + "/docs")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".opblock"), timeout=15)
    assert "/api/links" in browser.page_source
    assert javascript_errors(browser) == []
