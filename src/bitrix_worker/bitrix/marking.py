"""Runs a batch's "about to send" step right before its first request leaves for the portal.

The poison cap counts only deliveries whose batch was actually sent (issue: a worker killed while its batch
waited for the shared limiter sent nothing, yet every such death counted, until healthy operations were
dead-lettered as "keeps failing a worker"). The mark must be written after the limiter granted the slot and
immediately before the bytes leave, and the one place every request passes at that moment is the HTTP
transport. The batch is known to the task that handles it, so it is passed down in a context variable: each
asyncio task has its own copy, and concurrent batches never see each other's.

If the step fails (Redis is unreachable), the request is not sent: an unmarked send would not count.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar

import httpx

BeforeSend = Callable[[], Awaitable[None]]

_pending: ContextVar[list[BeforeSend] | None] = ContextVar("bitrix_worker_before_send", default=None)


@contextlib.contextmanager
def before_first_request(step: BeforeSend) -> Iterator[None]:
    """Within this block (in this task), ``step`` runs once, right before the first request is sent."""
    token = _pending.set([step])
    try:
        yield
    finally:
        _pending.reset(token)


def pending_steps() -> list[BeforeSend] | None:
    """This task's pending step (the list itself, or None): a request another task sends on this task's
    behalf (``packing``) runs it with ``run_steps`` before it leaves."""
    return _pending.get()


async def run_steps(steps: list[BeforeSend] | None) -> None:
    if steps:
        await steps[-1]()
        steps.pop()  # only once it succeeded: a failed step fails this request, the next one tries again


async def _run_pending() -> None:
    await run_steps(_pending.get())


class MarkingTransport(httpx.AsyncBaseTransport):
    """Wraps the real transport; runs the current task's pending step before passing a request on."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await _run_pending()
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def marking_transport(max_connections: int) -> MarkingTransport:
    """The transport ``BitrixClient`` would build itself (HTTP/1.1, this many connections), wrapped."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return MarkingTransport(httpx.AsyncHTTPTransport(http1=True, http2=False, limits=limits))
