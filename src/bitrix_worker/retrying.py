"""Writes that must happen once the portal has answered: retried until the store answers again.

A batch whose requests Bitrix24 has answered must never be treated as failed because Redis or the mapping
store blinked while its outcome was being written: that would send its calls again. So the write is retried
(0.2 s, doubling to 2 s) until it goes through; shutdown's grace period is what bounds it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .errors import StoreError

FIRST_S = 0.2
MAX_S = 2.0
T = TypeVar("T")


async def until_written(what: str, write: Callable[[], Awaitable[T]], log: Any) -> T:
    delay = FIRST_S
    while True:
        try:
            return await write()
        except StoreError as exc:
            log.warning(
                "could not write; keeping the portal's answers and retrying",
                what=what,
                error=str(exc),
                retry_in_s=delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_S)
