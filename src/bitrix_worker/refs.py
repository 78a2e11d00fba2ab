"""Pure: references by external key, ``{"$ref": "<entity>:<key>"}``, in an operation's fields and rows.

A producer that creates a contact under ``customer-7`` and a deal for it does not know the contact's
Bitrix24 id; it writes ``"CONTACT_ID": {"$ref": "contact:customer-7"}`` (also inside a list:
``"CONTACT_IDS": [{"$ref": "contact:customer-7"}]``, and in product rows). The worker replaces each
reference with the id the mapping store holds for that key, right before sending.

The rule that matters: a reference is never resolved to a wrong or empty id. A key without a live
Bitrix24 id (its create was dead-lettered, never sent, or the entity was deleted) leaves the reference
unresolved, and the operation is dead-lettered naming it (``Unresolved``), never sent with a guess.

Shape errors are found when the entry is read (``check``): a ``$ref`` that is not exactly
``{"$ref": "<entity>:<key>"}``, an entity the worker does not know, or a key referring to itself.
No I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .crm import entity_spec
from .values import Mapping as StoreRow

REF = "$ref"
MAX_REF_KEY_LENGTH = 200  # operations.MAX_KEY_LENGTH (imported there from here would be circular)
_ITEM_PREFIX = "item:"
_SCALARS = frozenset({str, int, float, bool, type(None)})
"""Exact types that are never a reference and hold none: skipped before the ``Mapping`` checks (an ABC's
``isinstance`` is slow, and almost every value of an operation is one of these)."""


@dataclass(frozen=True, slots=True)
class Ref:
    """One reference: the entity and key whose Bitrix24 id it stands for."""

    entity: str
    key: str

    @property
    def ident(self) -> str:
        return f"{self.entity}:{self.key}"

    @property
    def pair(self) -> tuple[str, str]:
        """The mapping store's key for it."""
        return self.entity, self.key

    def __str__(self) -> str:
        return f'{{"$ref": "{self.ident}"}}'


class Unresolved(ValueError):
    """A reference whose target has no live Bitrix24 id in the mapping store."""

    def __init__(self, ref: Ref, state: str | None) -> None:
        self.ref = ref
        self.state = state
        super().__init__(f"reference {ref} is unresolved: {_why(state)}")


def _why(state: str | None) -> str:
    if state in ("failed", "unknown"):
        return "its create was dead-lettered; replay it first, then this operation"
    if state == "deleted":
        return "it was deleted in Bitrix24"
    return "it has no Bitrix24 id yet (never created)"


def is_ref_like(value: Any) -> bool:
    """An object carrying ``$ref`` at all: it must then be a well-formed reference."""
    return isinstance(value, Mapping) and REF in value


def parse_ref(value: Mapping[str, Any]) -> Ref:
    """``{"$ref": "<entity>:<key>"}`` -> Ref; ValueError with a reason a producer can act on.

    ``<entity>`` is any entity the wire format names (``item:<entityTypeId>`` included, so
    ``item:128:parcel-9`` is key ``parcel-9`` of smart process 128); the key follows the rules of an
    operation's key."""
    if len(value) != 1 or not isinstance(value.get(REF), str):
        raise ValueError(
            f'malformed reference {_short(value)}: expected exactly {{"$ref": "<entity>:<key>"}}'
        )
    parts = split_ident(value[REF])
    if parts is None:
        raise ValueError(f'malformed reference {_short(value)}: expected "<entity>:<key>"')
    entity, key = parts
    try:
        entity_spec(entity)
    except ValueError as exc:
        raise ValueError(f"reference {_short(value)} names an unknown entity type: {exc}") from None
    if len(key) > MAX_REF_KEY_LENGTH or key != key.strip() or any(ord(ch) < 32 for ch in key):
        raise ValueError(
            f"malformed reference {_short(value)}: the key must be 1-{MAX_REF_KEY_LENGTH} characters "
            "without surrounding spaces or control characters"
        )
    return Ref(entity, key)


def split_ident(text: str) -> tuple[str, str] | None:
    """``entity:key`` -> (entity, key); ``item:128:k`` is key ``k`` of smart process 128 (a key may hold
    colons, an entity name other than ``item:<id>`` never does). None without both parts."""
    if text.startswith(_ITEM_PREFIX):
        type_id, sep, key = text[len(_ITEM_PREFIX) :].partition(":")
        entity = _ITEM_PREFIX + type_id
    else:
        entity, sep, key = text.partition(":")
    return (entity, key) if sep and entity and key else None


def _short(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def walk(value: Any) -> Iterator[Ref]:
    """Every reference in a JSON-like value (objects and lists, any depth), in order; raises ValueError at
    the first malformed one."""
    if type(value) in _SCALARS:
        return
    if is_ref_like(value):
        yield parse_ref(value)
    elif isinstance(value, Mapping):
        for inner in value.values():
            yield from walk(inner)
    elif isinstance(value, list | tuple):
        for inner in value:
            yield from walk(inner)


def collect(*values: Any) -> list[Ref]:
    """The distinct references in ``values``, in first-seen order (ValueError on a malformed one).

    What ``walk`` yields, gathered without a generator per level (this runs for every operation read)."""
    found: dict[Ref, None] = {}
    for value in values:
        _gather(value, found)
    return list(found)


def _gather(value: Any, found: dict[Ref, None]) -> None:
    kind = type(value)
    if kind in _SCALARS:
        return
    if kind is dict and REF not in value:  # what JSON gives, without the ABC checks below
        for inner in value.values():
            if type(inner) not in _SCALARS:
                _gather(inner, found)
        return
    if is_ref_like(value):
        ref = parse_ref(value)
        if ref not in found:
            found[ref] = None
    elif isinstance(value, Mapping):
        for inner in value.values():
            _gather(inner, found)
    elif isinstance(value, list | tuple):
        for inner in value:
            _gather(inner, found)


def check(entity: str, key: str, *values: Any) -> list[Ref]:
    """The references of one operation; ValueError for a malformed one or one naming the operation itself
    (its own id does not exist before it is created, and after that the reference is pointless)."""
    found = collect(*values)
    for ref in found:
        if ref.pair == (entity, key):
            raise ValueError(f"reference {ref} refers to the operation's own key")
    return found


def live_id(row: StoreRow | None) -> int | None:
    """The id a reference may resolve to: only an ``active`` row's positive id."""
    if row is None or row.state != "active" or row.bitrix_id is None or row.bitrix_id <= 0:
        return None
    return row.bitrix_id


def plain(fields: Mapping[str, Any]) -> bool:
    """Every value a scalar (no object or list): ``fields`` holds no reference and ``substitute`` of it
    would only copy it."""
    return all(type(value) in _SCALARS for value in fields.values())


def substitute(value: Any, known: Mapping[tuple[str, str], StoreRow]) -> Any:
    """``value`` with every reference replaced by its target's Bitrix24 id (an int).

    ``known``: the mapping store's rows of the targets (a missing one was never created). Raises
    ``Unresolved`` for the first target without a live id."""
    if type(value) in _SCALARS:
        return value
    if is_ref_like(value):
        ref = parse_ref(value)
        row = known.get(ref.pair)
        ident = live_id(row)
        if ident is None:
            raise Unresolved(ref, row.state if row is not None else None)
        return ident
    if isinstance(value, Mapping):
        return {name: substitute(inner, known) for name, inner in value.items()}
    if isinstance(value, list | tuple):
        return [substitute(inner, known) for inner in value]
    return value


def targets_of(units: Iterable[Any]) -> list[tuple[str, str]]:
    """The mapping-store keys every reference of these work units names (looked up with their own keys)."""
    return [
        ref.pair
        for unit in units
        for m in unit.members
        for ref in collect(m.operation.fields, m.operation.products)
    ]
