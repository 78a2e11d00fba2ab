"""Hostile answers: what a broken proxy or a misbehaving portal sends after the call has run.

* ``trickle``: the status line and headers at once, then the real JSON answer one byte every
  ``trickle_interval_s`` (chunked). Each read gets a byte well within any read timeout, so only an overall
  deadline on the request ends it.
* ``huge``: a 200 whose body is ``huge_bytes`` long (``{"result":{"pad":"xxxx…"}}``, valid JSON if read to
  the end), chunked, or with a ``Content-Length`` when ``huge_declared``. It is generated as it is sent from
  one reused block, so the emulator itself stays small while it sends 300 MB.

Both stop as soon as the client goes away (Starlette cancels the stream on ``http.disconnect``) or the
server stops (``Portal.stopping``), so neither holds a test's shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse

from .faults import FaultConfig

__all__ = ["HOSTILE_ANSWERS", "hostile_answer"]

HOSTILE_ANSWERS = frozenset({"trickle", "huge"})
_BLOCK_BYTES = 1 << 20
_HUGE_PREFIX = b'{"result":{"pad":"'
_HUGE_SUFFIX = b'"}}'


async def _trickle(body: bytes, interval_s: float, stopping: asyncio.Event) -> AsyncIterator[bytes]:
    for i in range(len(body)):
        yield body[i : i + 1]
        try:
            await asyncio.wait_for(stopping.wait(), interval_s)
        except TimeoutError:
            continue
        return


async def _huge(total: int, stopping: asyncio.Event) -> AsyncIterator[bytes]:
    block = b"x" * _BLOCK_BYTES
    pad = max(0, total - len(_HUGE_PREFIX) - len(_HUGE_SUFFIX))
    yield _HUGE_PREFIX
    while pad > 0 and not stopping.is_set():
        n = min(pad, _BLOCK_BYTES)
        yield block if n == _BLOCK_BYTES else block[:n]
        pad -= n
        await asyncio.sleep(0)  # let the disconnect listener run between blocks
    yield _HUGE_SUFFIX


def hostile_answer(kind: str, body: bytes, config: FaultConfig, stopping: asyncio.Event) -> StreamingResponse:
    """The answer for a ``trickle`` or ``huge`` fault; ``body`` is the real answer the call produced."""
    if kind == "trickle":
        return StreamingResponse(
            _trickle(body, config.trickle_interval_s, stopping), media_type="application/json"
        )
    total = max(config.huge_bytes, len(_HUGE_PREFIX) + len(_HUGE_SUFFIX))
    headers = {"content-length": str(total)} if config.huge_declared else None
    return StreamingResponse(_huge(total, stopping), media_type="application/json", headers=headers)
