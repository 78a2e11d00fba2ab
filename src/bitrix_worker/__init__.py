"""bitrix-worker: deliver CRM operations from a Redis Stream to Bitrix24, reliably and without waste."""

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
from .lookup import lookup, lookup_sync
from .operations import Entity, Operation, OpKind, decode_payload, encode_operation
from .taxonomy import Classification, ErrorClass, Execution, TimeInfo

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
