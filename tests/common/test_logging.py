import json
import logging

import pytest
import structlog

from common.logging import configure_logging


def test_structlog_and_stdlib_lines_are_json_with_the_service(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("demo", "INFO", "json")
    structlog.contextvars.bind_contextvars(request_id="r1")
    try:
        structlog.get_logger("x").info("hello", n=1)
        logging.getLogger("uvicorn.error").info("Started server process")
        logging.getLogger("noisy").debug("not shown at INFO")
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]
    assert len(lines) == 2
    ours, theirs = lines
    assert ours["service"] == "demo" and ours["event"] == "hello" and ours["n"] == 1
    assert ours["request_id"] == "r1" and ours["level"] == "info" and ours["timestamp"]
    assert theirs["service"] == "demo" and theirs["logger"] == "uvicorn.error"
    assert theirs["event"] == "Started server process"
