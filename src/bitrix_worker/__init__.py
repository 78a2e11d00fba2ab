"""bitrix-worker: deliver CRM operations from a Redis Stream to Bitrix24, reliably and without waste."""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .config import Settings, load_settings
from .errors import (
    AuthError,
    BitrixError,
    BitrixWorkerError,
    ConfigError,
    LimitError,
    PermanentBitrixError,
    PoisonMessage,
    StoreError,
    TransientBitrixError,
)
from .operations import Entity, Operation, OpKind, decode_payload, encode_operation
from .taxonomy import Classification, ErrorClass, Execution, TimeInfo

if TYPE_CHECKING:
    from .keylookup import lookup, lookup_sync

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "BitrixError",
    "BitrixWorkerError",
    "Classification",
    "ConfigError",
    "Entity",
    "ErrorClass",
    "Execution",
    "LimitError",
    "OpKind",
    "Operation",
    "PermanentBitrixError",
    "PoisonMessage",
    "Settings",
    "StoreError",
    "TimeInfo",
    "TransientBitrixError",
    "__version__",
    "decode_payload",
    "encode_operation",
    "load_settings",
    "lookup",
    "lookup_sync",
]


_LAZY = {"lookup": "keylookup", "lookup_sync": "keylookup"}


def __getattr__(name: str) -> Any:
    """``lookup`` and ``lookup_sync`` load on first use: they bring Redis and SQLAlchemy, and importing the
    package (or one of its pure modules) must not."""
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
