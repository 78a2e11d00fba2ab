"""The wire format producers write, in any language: one stream entry per operation.

    XADD bitrix:operations * payload '{"op":"update","entity":"deal","key":"order-42",
                                      "fields":{"STAGE_ID":"WON"},"version":7}'

``entity`` is one of ``Entity`` or ``item:<entityTypeId>`` (a smart process); ``fields`` may hold
references by external key (``{"$ref": "contact:customer-7"}``, ``refs``); ``products`` sets the whole
product-row set of an entity that has rows.

``decode_payload`` turns anything malformed into ``PoisonMessage`` with a reason a producer can act on;
the worker dead-letters it and never crashes on input (limits: ``MAX_PAYLOAD_BYTES``, ``boundedjson``'s
depth, ``MAX_VERSION``; lone surrogates and non-finite numbers refused).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import core_schema

from . import boundedjson, refs
from .crm import Api, EntitySpec, entity_spec, to_item_fields
from .errors import PoisonMessage
from .values import PAYLOAD_FIELD

MAX_KEY_LENGTH = 200
MAX_PAYLOAD_BYTES = 1 << 20
"""A payload larger than this (UTF-8 bytes) is poison; redis/lua/turns.lua does not even read it."""
MAX_VERSION = 2**63 - 1
"""The largest ``version`` the mapping store holds (a signed 64-bit column); larger ones are poison before
anything is sent, never an overflow after the portal applied them."""


_CONTROL = re.compile(r"[\x00-\x1f]").search
"""A control character (code point below 32), found without a Python loop over the key."""


class OpKind(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    UPSERT = "upsert"
    DELETE = "delete"


class Entity(StrEnum):
    """The entities named by a fixed word; smart processes are ``item:<entityTypeId>`` (``EntityName``)."""

    DEAL = "deal"
    CONTACT = "contact"
    COMPANY = "company"
    LEAD = "lead"
    QUOTE = "quote"
    SMART_INVOICE = "smart_invoice"


ITEM_LABEL = "item"
"""The metric label of every smart process (``item:<entityTypeId>``): labels stay a bounded set."""


class EntityName(str):
    """An operation's ``entity``: an ``Entity`` word or ``item:<entityTypeId>``, checked by ``crm``.

    A ``str`` (it compares equal to ``Entity.DEAL``) with ``.value`` like an enum member, so code written
    for the enum keeps working; ``spec`` says how the entity is written."""

    __slots__ = ()

    @property
    def value(self) -> str:
        return str(self)

    @property
    def spec(self) -> EntitySpec:
        return entity_spec(str(self))

    @property
    def label(self) -> str:
        """Bounded metric label: the word itself, ``item`` for any smart process."""
        return ITEM_LABEL if self.startswith(f"{ITEM_LABEL}:") else str(self)

    @classmethod
    def parse(cls, value: Any) -> EntityName:
        if not isinstance(value, str):
            raise ValueError(f"entity must be a string, got {type(value).__name__}")
        return cls(entity_spec(str(value)).name)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return core_schema.no_info_plain_validator_function(
            cls.parse, serialization=core_schema.plain_serializer_function_ser_schema(str)
        )


PORTAL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"
"""A registry portal id (``portals.model.check_portal_id``): it names Redis keys, so no braces or spaces."""


class Operation(BaseModel):
    """One CRM operation. ``key`` is the producer's external id (becomes ``ORIGIN_ID``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    op: OpKind
    entity: EntityName
    key: str = Field(min_length=1, max_length=MAX_KEY_LENGTH)
    fields: dict[str, Any] = Field(default_factory=dict)
    products: list[Any] | None = None  # the whole row set (``[]`` clears it); absent: rows untouched
    version: int | None = Field(default=None, ge=0, le=MAX_VERSION)
    portal: str | None = Field(default=None, pattern=PORTAL_ID_PATTERN)  # absent: the default portal

    @field_validator("key")
    @classmethod
    def _key_is_printable(cls, value: str) -> str:
        if value != value.strip() or _CONTROL(value):
            raise ValueError("must not have surrounding spaces or control characters")
        return value

    @field_validator("fields")
    @classmethod
    def _field_names_are_strings(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not name:
                raise ValueError("field names must be non-empty")
        return value

    @model_validator(mode="after")
    def _orders_are_sound(self) -> Operation:
        _check_orders(self.op, self.entity.spec, self.key, self.fields, self.products)
        return self

    @property
    def ident(self) -> str:
        """``entity:key``: the unit of ordering, leases and mapping."""
        return f"{self.entity.value}:{self.key}"


def _check_orders(
    op: OpKind, spec: EntitySpec, key: str, fields: dict[str, Any], products: list[Any] | None
) -> None:
    """Bad input is refused before any call: rows where the entity has none, a row that is not an
    object, a malformed reference, one to an unknown entity type, or one to the operation itself."""
    if products is not None:
        if op is OpKind.DELETE:
            raise ValueError("products: a delete carries no product rows")
        if not spec.has_product_rows:
            raise ValueError(f"products: a {spec.name} has no product rows")
        for n, row in enumerate(products):
            if not isinstance(row, dict):
                raise ValueError(f"products[{n}]: a product row must be an object, got {_kind(row)}")
    refs.check(spec.name, key, fields, *([] if products is None else [products]))
    if spec.api is Api.ITEM:
        to_item_fields(fields, spec.entity_type_id)  # two spellings of one field: refused


_KINDS = {kind.value: kind for kind in OpKind}
_NAMES = frozenset(Operation.model_fields)
_PORTAL_ID = re.compile(PORTAL_ID_PATTERN[1:-1]).fullmatch  # pydantic's ``$`` never matches before a "\n"
_new = object.__setattr__  # how pydantic itself fills a frozen model (``model_construct``)


def _common(data: dict[str, Any]) -> Operation | None:
    """The operation of a parsed JSON object of the common shape, checked here exactly as the model checks
    it, or None for anything else: the model then judges it, and its error is the dead letter's reason.

    Why: the model was about 4 µs of the ~7 µs it took to read a payload (bench.cost_micro,
    ``claim_to_units``). The common shape is plain JSON types with no product rows; any other value of any
    field, and any failed check, goes to the model, so this never accepts what the model refuses nor
    refuses anything itself (tests/unit/test_operations.py compares the two on generated payloads).
    """
    op, entity, key = data.get("op"), data.get("entity"), data.get("key")
    fields, version, portal = data.get("fields", {}), data.get("version"), data.get("portal")
    plain = (
        data.keys() <= _NAMES
        and data.get("products") is None
        and type(op) is str
        and type(entity) is str
        and type(key) is str
        and type(fields) is dict
        and "" not in fields  # a JSON object's names are all str
        and 0 < len(key) <= MAX_KEY_LENGTH
        and key == key.strip()
        and not _CONTROL(key)
        and (version is None or (type(version) is int and 0 <= version <= MAX_VERSION))
        and (portal is None or (type(portal) is str and _PORTAL_ID(portal) is not None))
    )
    kind = _KINDS.get(op) if plain else None  # type: ignore[arg-type]
    if kind is None:
        return None
    try:
        spec = entity_spec(entity)  # type: ignore[arg-type]
        fields = dict(fields)  # a copy, as the model keeps
        _check_orders(kind, spec, key, fields, None)  # type: ignore[arg-type]
    except ValueError:
        return None
    operation = Operation.__new__(Operation)
    name = EntityName(spec.name)
    values = {"op": kind, "entity": name, "key": key, "fields": fields, "products": None, "version": version}
    values["portal"] = portal  # the fields in the model's order, as its __dict__ holds them
    _new(operation, "__dict__", values)
    _new(operation, "__pydantic_fields_set__", set(data))
    _new(operation, "__pydantic_extra__", None)
    _new(operation, "__pydantic_private__", None)
    return operation


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
    common = _common(data)
    if common is not None:
        return common
    try:
        return Operation.model_validate(data)
    except ValidationError as exc:
        raise PoisonMessage(_describe(exc)) from None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
