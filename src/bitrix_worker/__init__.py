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
    NotReplicated,
    PermanentBitrixError,
    PoisonMessage,
    StoreError,
    TransientBitrixError,
)
from .operations import Entity, Operation, OpKind, decode_payload, encode_operation
from .taxonomy import Classification, ErrorClass, Execution, TimeInfo

if TYPE_CHECKING:
    from .keylookup import lookup, lookup_sync
    from .producer import build_operation, enqueue, enqueue_many
    from .sync_producer import enqueue_many_sync, enqueue_sync

__version__ = "0.1.0"

# Producers load redis-py, so they are imported on first use (PEP 562): ``import bitrix_worker.plan`` or
# ``from bitrix_worker import Operation`` stays light.
_LAZY = {
    "build_operation": "producer",
    "enqueue": "producer",
    "enqueue_many": "producer",
    "enqueue_sync": "sync_producer",
    "enqueue_many_sync": "sync_producer",
    "lookup": "keylookup",  # and SQLAlchemy: one key's story (docs/dashboard.md)
    "lookup_sync": "keylookup",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


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
    "NotReplicated",
    "OpKind",
    "Operation",
    "PermanentBitrixError",
    "PoisonMessage",
    "Settings",
    "StoreError",
    "TimeInfo",
    "TransientBitrixError",
    "__version__",
    "build_operation",
    "decode_payload",
    "encode_operation",
    "enqueue",
    "enqueue_many",
    "enqueue_many_sync",
    "enqueue_sync",
    "load_settings",
    "lookup",
    "lookup_sync",
]
