"""The wire format producers write, in any language: one stream entry per operation.

    XADD bitrix:operations * payload '{"op":"update","entity":"deal","key":"order-42",
                                      "fields":{"STAGE_ID":"WON"},"version":7}'

``decode_payload`` turns anything malformed into ``PoisonMessage`` with a reason a producer can act on;
the worker dead-letters it and never crashes on input (limits: ``MAX_PAYLOAD_BYTES``, ``boundedjson``'s
depth, ``MAX_VERSION``; lone surrogates and non-finite numbers refused).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import boundedjson
from .errors import PoisonMessage
from .values import PAYLOAD_FIELD

MAX_KEY_LENGTH = 200
MAX_PAYLOAD_BYTES = 1 << 20
"""A payload larger than this (UTF-8 bytes) is poison; redis/lua/turns.lua does not even read it."""
MAX_VERSION = 2**63 - 1
"""The largest ``version`` the mapping store holds (a signed 64-bit column); larger ones are poison before
anything is sent, never an overflow after the portal applied them."""


class OpKind(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    UPSERT = "upsert"
    DELETE = "delete"


class Entity(StrEnum):
    DEAL = "deal"
    CONTACT = "contact"
    COMPANY = "company"
    LEAD = "lead"


class Operation(BaseModel):
    """One CRM operation. ``key`` is the producer's external id (becomes ``ORIGIN_ID``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    op: OpKind
    entity: Entity
    key: str = Field(min_length=1, max_length=MAX_KEY_LENGTH)
    fields: dict[str, Any] = Field(default_factory=dict)
    version: int | None = Field(default=None, ge=0, le=MAX_VERSION)

    @field_validator("key")
    @classmethod
    def _key_is_printable(cls, value: str) -> str:
        if value != value.strip() or any(ord(ch) < 32 for ch in value):
            raise ValueError("must not have surrounding spaces or control characters")
        return value

    @field_validator("fields")
    @classmethod
    def _field_names_are_strings(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not name:
                raise ValueError("field names must be non-empty")
        return value

    @property
    def ident(self) -> str:
        """``entity:key``: the unit of ordering, leases and mapping."""
        return f"{self.entity.value}:{self.key}"


def encode_operation(operation: Operation) -> str:
    return operation.model_dump_json(exclude_none=True)


def decode_payload(raw: bytes | str | None) -> Operation:
    """Parse one stream entry's ``payload``; every failure is a PoisonMessage with a reason."""
    if raw is None:
        raise PoisonMessage(f"entry has no {PAYLOAD_FIELD!r} field")
    try:
        data = boundedjson.loads(raw, max_bytes=MAX_PAYLOAD_BYTES)
    except boundedjson.UnreadableJson as exc:
        raise PoisonMessage(str(exc)) from None
    if not isinstance(data, dict):
        raise PoisonMessage(f"payload must be a JSON object, got {type(data).__name__}")
    try:
        return Operation.model_validate(data)
    except ValidationError as exc:
        raise PoisonMessage(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
