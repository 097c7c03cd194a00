"""The browser fixture itself: a page served over loopback runs its JavaScript and fetches."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import javascript_errors, screenshot

PAGE = b"""<!doctype html><html><body><p id="out">waiting</p>
<script>
fetch('/data').then(r => r.json()).then(d => {
  document.getElementById('out').textContent = 'got ' + d.n;
});
</script></body></html>"""


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body, kind = (
            (b'{"n": 42}', "application/json") if self.path == "/data" else (PAGE, "text/html")
        )
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_browser_runs_a_pages_javascript(browser: Any, site: str, tmp_path: Path) -> None:
    browser.get(site + "/")
    WebDriverWait(browser, 10).until(lambda web: web.find_element(By.ID, "out").text == "got 42")
    assert javascript_errors(browser) == []
    assert screenshot(browser, tmp_path / "page.png").stat().st_size > 1000
