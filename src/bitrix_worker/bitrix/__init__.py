"""Bitrix24 REST: the HTTP client (one attempt per call), request builders and response parsers."""

from .client import BitrixClient, CallResult
from .methods import MAX_BATCH_COMMANDS, BatchResult, Command, ListPage

__all__ = ["MAX_BATCH_COMMANDS", "BatchResult", "BitrixClient", "CallResult", "Command", "ListPage"]
