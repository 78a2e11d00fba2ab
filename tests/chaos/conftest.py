"""Fixtures for the exactly-once and chaos tests.

The focused tests reuse the integration bench (``tests/integration/harness.py``): a real Redis, the
emulator in a thread on loopback and a SQLite mapping store. The chaos test runs the emulator and the
workers as separate processes.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))


@pytest.fixture
async def bench(redis_url: str, key_prefix: str, tmp_path: Path) -> AsyncIterator[Any]:
    """The worker test bench of ``harness.open_bench``."""
    from harness import open_bench

    async with open_bench(redis_url, key_prefix, tmp_path) as b:
        yield b


@pytest.fixture(autouse=True)
def _no_secret_in_anything_printed(capfd: pytest.CaptureFixture[str], tmp_path: Path) -> Iterator[None]:
    """Worker logs (in-process and the subprocesses' files under tmp_path) never carry the webhook secret."""
    yield
    out, err = capfd.readouterr()
    # The emulator's own log is not the worker's: it prints its webhook URL in full on start, by design (a
    # fixed local test secret, printed so it can be copied).
    logs = [log for log in tmp_path.rglob("*.log") if not log.name.startswith("emulator")]
    texts = [out, err, *(log.read_text(errors="replace") for log in logs)]
    assert not any("emulator-secret" in text for text in texts), "the webhook secret was printed"
    # Re-emit what was captured so `pytest -s` / failure reports still show it.
    print(out, end="")
