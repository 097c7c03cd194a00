"""The dashboard at `/` in headless Chromium: queues, workers, recent jobs with live
progress, and a dead letter replayed with its button."""

from __future__ import annotations

from typing import Any

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import javascript_errors
from tests.task_queue.conftest import Stack


def test_dashboard_shows_the_queue_and_replays_a_dead_letter(stack: Stack, browser: Any) -> None:
    dead = stack.submit("always_fail", max_retries=0)
    stack.wait(dead["id"])
    running = stack.submit("sleep", {"seconds": 4})
    browser.get(stack.api.url + "/")
    wait = WebDriverWait(browser, 15)

    def text(selector: str) -> str:
        # Read in one script call: the tables are re-rendered every second.
        script = "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';"
        return str(browser.execute_script(script, selector))

    wait.until(lambda _: "default" in text("#queues tbody"))
    wait.until(lambda _: stack.workers[0].hostname in text("#workers tbody"))
    assert "consuming" in text("#workers tbody")
    # A running job's progress moves on the page without a reload.
    row = f'#jobs tr[data-job="{running["id"]}"]'
    wait.until(lambda _: "running" in text(row))
    first = text(row)
    wait.until(lambda _: text(row) != first)
    # Replay the dead letter (the key field is what the API checks).
    wait.until(lambda _: dead["id"] in text("#dead tbody"))
    browser.find_element(By.ID, "key").send_keys("test-admin-key")
    # Click in the page's own turn, so a re-render cannot swap the button in between.
    browser.execute_script(
        "document.querySelector(`button[data-replay='${arguments[0]}']`).click();", dead["id"]
    )
    WebDriverWait(browser, 15).until(lambda _: len(stack.job(dead["id"])["attempts"]) == 2)
    assert javascript_errors(browser) == []
