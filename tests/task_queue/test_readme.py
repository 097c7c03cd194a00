"""The README's code runs: its job type example registers and validates as it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from task_queue.jobtypes import PermanentError, registry

README = Path(__file__).resolve().parents[2] / "task_queue" / "README.md"


def test_the_job_type_example_registers_a_validated_type() -> None:
    [snippet] = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    exec(compile(snippet, str(README), "exec"), {"__name__": "readme_example"})
    resize = registry.get("resize")
    assert resize is not None and resize.queue == "io" and resize.max_retries == 5
    assert (resize.backoff_base_seconds, resize.backoff_cap_seconds) == (0.5, 60)
    assert resize.validate({"url": "https://x/y.png"}) == {"url": "https://x/y.png", "width": 800}
    with pytest.raises(ValueError, match="width"):
        resize.validate({"url": "u", "width": "wide"})

    class Ctx:
        job_id, attempt = "j1", 1

        def progress(self, percent: float, message: str = "") -> None:
            assert 0 <= percent <= 100

    assert resize.fn(Ctx(), url="u", width=10) == {"width": 10}
    with pytest.raises(PermanentError):
        resize.fn(Ctx(), url="u", width=0)
    del registry.types["resize"]
