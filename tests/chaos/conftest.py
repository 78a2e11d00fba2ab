"""Fixtures for the exactly-once and chaos tests.

The focused tests reuse the integration bench (``tests/integration/harness.py``): a real Redis, the
emulator in a thread on loopback and a SQLite mapping store. The chaos test runs the emulator and the
workers as separate processes.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
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
