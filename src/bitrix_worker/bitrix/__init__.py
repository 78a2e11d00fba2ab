"""Bitrix24 REST: the HTTP client (one attempt per call), request builders and response parsers.

The client (and so httpx) loads only when ``BitrixClient`` or ``CallResult`` is first asked for: the pure
builders in ``methods`` are used by the pure core, which must not pull in an HTTP library.
"""

from typing import TYPE_CHECKING, Any

from .methods import MAX_BATCH_COMMANDS, BatchResult, Command, ListPage

if TYPE_CHECKING:
    from .client import BitrixClient, CallResult

__all__ = ["MAX_BATCH_COMMANDS", "BatchResult", "BitrixClient", "CallResult", "Command", "ListPage"]


def __getattr__(name: str) -> Any:
    if name in ("BitrixClient", "CallResult"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
