"""The page at `/` in headless Chromium: two people, two browser sessions, two instances."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import javascript_errors
from tests.chat.conftest import unique
from tests.chat.factories import PASSWORD, user
from tests.support import ServiceProcess

pytestmark = pytest.mark.slow
Pair = tuple[ServiceProcess, ServiceProcess]


def until(web: Any, check: Callable[[Any], Any], timeout: float = 10) -> Any:
    return WebDriverWait(web, timeout, poll_frequency=0.05).until(check)


def texts(web: Any, selector: str) -> list[str]:
    return [el.text for el in web.find_elements(By.CSS_SELECTOR, selector)]


def log_in(web: Any, base: str, name: str) -> None:
    web.get(base + "/")
    web.find_element(By.ID, "username").send_keys(name)
    web.find_element(By.ID, "password").send_keys(PASSWORD)
    web.find_element(By.ID, "signin").click()
    until(web, lambda w: w.find_element(By.ID, "me").text == name)


def open_room(web: Any, name: str) -> None:
    web.find_element(By.ID, "new-room").send_keys(name)
    web.find_element(By.ID, "create-room").click()
    until(web, lambda w: w.find_element(By.ID, "room-name").text == f"# {name}")


def say(web: Any, text: str) -> None:
    web.find_element(By.ID, "text").send_keys(text)
    web.find_element(By.ID, "send").click()


def test_two_people_talk_through_two_instances(
    pair: Pair, browser_factory: Callable[[], Any]
) -> None:
    a, b = pair
    alice, _ = user(a.url)
    bob, _ = user(a.url)
    room = unique("room")
    web_a, web_b = browser_factory(), browser_factory()
    log_in(web_a, a.url, alice)
    log_in(web_b, b.url, bob)
    open_room(web_a, room)
    open_room(web_b, room)
    for web in (web_a, web_b):
        until(web, lambda w: texts(w, "#online li") == sorted([alice, bob]))

    say(web_a, "hello bob")
    until(web_b, lambda w: texts(w, ".msg .text") == ["hello bob"])
    # Bob's page is visible, so it reads what it shows: Alice's tick turns to read.
    until(web_a, lambda w: w.find_element(By.CSS_SELECTOR, ".msg.mine .tick").get_attribute(
        "class") == "tick read")  # fmt: skip
    web_b.find_element(By.ID, "text").send_keys("hi")  # typing announces itself
    until(web_a, lambda w: w.find_element(By.ID, "typing").text == f"{bob} is typing…")
    web_b.find_element(By.ID, "send").click()
    until(web_a, lambda w: texts(w, ".msg .text") == ["hello bob", "hi"])

    # Bob's socket drops; Alice keeps talking; his page reconnects and resyncs by itself.
    web_b.execute_script("state.ws.close()")
    say(web_a, "while you were away")
    say(web_a, "and once more")
    until(web_b, lambda w: texts(w, ".msg .text")
          == ["hello bob", "hi", "while you were away", "and once more"])  # fmt: skip
    assert web_b.find_element(By.ID, "status").text == "online"
    seqs = [int(el.get_attribute("data-seq")) for el in
            web_b.find_elements(By.CSS_SELECTOR, ".msg")]  # fmt: skip
    assert seqs == [1, 2, 3, 4]
    for web in (web_a, web_b):
        errors = javascript_errors(web)
        assert errors == [], json.dumps(errors)
