"""Pure builders and parsers for ``crm.item.*``, product rows (both APIs) and batch references.

Sibling of ``methods`` (same ``Command`` type, no I/O). Three groups:

- ``item_*``: ``crm.item.add|update|get|list|delete|fields`` with an ``entityTypeId`` and camelCase fields,
  and parsers for their ``{"item": ...}`` / ``{"items": [...]}`` answers;
- product rows: ``productrow_set``/``productrow_list`` (``crm.item.productrow.*``, owner code ``D``, ``L``,
  ``Q``, ``SI``, ``T<hex>``) and the deprecated ``deal_productrows_set``/``_get``
  (``crm.<deal|lead|quote>.productrows.*``), plus ``parse_product_rows``;
- references: ``ref("deal")`` is ``"$result[deal]"``, a value a later command of the same batch receives
  as the earlier command's result. ``build_chain`` builds such a batch and refuses one that could go
  wrong: every reference must name an *earlier* command, and the batch is always sent with ``halt=1`` —
  after a failed command a reference yields the earlier results instead, which the old API reads as id
  1 (another customer's deal).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from .methods import REFERENCE, Command, ListPage, build_batch, int_or_none, list_params

__all__ = [
    "OLD_ROW_OWNERS",
    "build_chain",
    "deal_productrows_get",
    "deal_productrows_set",
    "item_add",
    "item_delete",
    "item_fields",
    "item_get",
    "item_list",
    "item_update",
    "parse_item",
    "parse_items",
    "parse_product_rows",
    "productrow_list",
    "productrow_set",
    "ref",
    "references",
]

OLD_ROW_OWNERS: Final = frozenset({"deal", "lead", "quote"})
_OWNER = re.compile(r"D|L|Q|SI|T[0-9a-f]+")
_NAME = re.compile(r"[A-Za-z0-9_]+")
_REFERENCE = REFERENCE


def _type_id(entity_type_id: int) -> int:
    if isinstance(entity_type_id, bool) or not isinstance(entity_type_id, int) or entity_type_id <= 0:
        raise ValueError(f"entityTypeId must be a positive integer, got {entity_type_id!r}")
    return entity_type_id


def _id(value: int | str, what: str = "id") -> int | str:
    """A positive id, or a batch reference to one (``ref(...)``), which is resolved by the portal."""
    if isinstance(value, str) and _REFERENCE.fullmatch(value):
        return value
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    ident = int(value)
    if ident <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return ident


# -- crm.item.* -------------------------------------------------------------------------------------


def item_add(entity_type_id: int, fields: Mapping[str, Any]) -> Command:
    return Command("crm.item.add", {"entityTypeId": _type_id(entity_type_id), "fields": dict(fields)})


def item_update(entity_type_id: int, ident: int | str, fields: Mapping[str, Any]) -> Command:
    return Command(
        "crm.item.update",
        {"entityTypeId": _type_id(entity_type_id), "id": _id(ident), "fields": dict(fields)},
    )


def item_get(entity_type_id: int, ident: int | str) -> Command:
    return Command("crm.item.get", {"entityTypeId": _type_id(entity_type_id), "id": _id(ident)})


def item_delete(entity_type_id: int, ident: int | str) -> Command:
    return Command("crm.item.delete", {"entityTypeId": _type_id(entity_type_id), "id": _id(ident)})


def item_fields(entity_type_id: int) -> Command:
    return Command("crm.item.fields", {"entityTypeId": _type_id(entity_type_id)})


def item_list(
    entity_type_id: int,
    *,
    filter: Mapping[str, Any] | None = None,  # the Bitrix24 parameter name
    select: Iterable[str] | None = None,
    order: Mapping[str, str] | None = None,
    start: int | None = None,
) -> Command:
    body = {"entityTypeId": _type_id(entity_type_id), **list_params(filter, select, order, start)}
    return Command("crm.item.list", body)


def parse_item(result: Any) -> dict[str, Any]:
    """``crm.item.add|update|get`` answer ``{"item": {...}}``; the item must carry its integer ``id``."""
    item = result.get("item") if isinstance(result, Mapping) else None
    if not isinstance(item, Mapping) or int_or_none(item.get("id")) is None:
        raise ValueError("expected {'item': {...}} with an id")
    return dict(item)


def parse_items(result: Any, total: Any = None, next_start: Any = None) -> ListPage:
    """``crm.item.list`` answers ``{"items": [...]}`` with ``total``/``next`` beside ``result``."""
    items = result.get("items") if isinstance(result, Mapping) else None
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise ValueError("expected {'items': [...]} of objects")
    return ListPage([dict(i) for i in items], int_or_none(total), int_or_none(next_start))


# -- product rows -----------------------------------------------------------------------------------


def _rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(rows, str | bytes | Mapping) or not all(isinstance(r, Mapping) for r in rows):
        raise ValueError("product rows must be a list of objects")
    return [dict(r) for r in rows]


def productrow_set(owner_type: str, owner_id: int | str, rows: Sequence[Mapping[str, Any]]) -> Command:
    """``crm.item.productrow.set``: the owner's whole row set becomes ``rows`` (camelCase; ``[]`` clears).

    Inside a batch an empty list cannot be encoded (PHP query strings have no empty array) and the
    parameter would be missing, which this method refuses (error 100) rather than clearing: send a clear
    as its own call."""
    if not _OWNER.fullmatch(owner_type):
        raise ValueError(f"owner type must be D, L, Q, SI or T<hex entityTypeId>, got {owner_type!r}")
    return Command(
        "crm.item.productrow.set",
        {"ownerType": owner_type, "ownerId": _id(owner_id, "ownerId"), "productRows": _rows(rows)},
    )


def productrow_list(owner_type: str, owner_id: int, *, start: int | None = None) -> Command:
    if not _OWNER.fullmatch(owner_type):
        raise ValueError(f"owner type must be D, L, Q, SI or T<hex entityTypeId>, got {owner_type!r}")
    body: dict[str, Any] = {"filter": {"=ownerType": owner_type, "=ownerId": _id(owner_id, "ownerId")}}
    if start is not None:
        body["start"] = int(start)
    return Command("crm.item.productrow.list", body)


def deal_productrows_set(entity: str, ident: int | str, rows: Sequence[Mapping[str, Any]]) -> Command:
    """Deprecated ``crm.<deal|lead|quote>.productrows.set`` (UPPER_CASE rows, replace-all).

    An empty ``rows`` is refused here: the portal treats a *missing* ``rows`` as an empty set, and inside
    a batch an empty list is encoded as nothing, so a clear would look exactly like a forgotten parameter.
    """
    if entity not in OLD_ROW_OWNERS:
        raise ValueError(
            f"crm.{entity}.productrows.* does not exist; expected one of {sorted(OLD_ROW_OWNERS)}"
        )
    body = _rows(rows)
    if not body:
        raise ValueError(
            "refusing an empty rows set for the deprecated method: clear via crm.item.productrow.set"
        )
    return Command(f"crm.{entity}.productrows.set", {"id": _id(ident), "rows": body})


def deal_productrows_get(entity: str, ident: int | str) -> Command:
    if entity not in OLD_ROW_OWNERS:
        raise ValueError(
            f"crm.{entity}.productrows.* does not exist; expected one of {sorted(OLD_ROW_OWNERS)}"
        )
    return Command(f"crm.{entity}.productrows.get", {"id": _id(ident)})


def parse_product_rows(result: Any) -> list[dict[str, Any]]:
    """Rows from ``crm.item.productrow.set|list`` (``{"productRows": [...]}``) or the deprecated
    ``productrows.get`` (a bare list)."""
    rows = result.get("productRows") if isinstance(result, Mapping) else result
    if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
        raise ValueError("expected a list of product rows")
    return [dict(r) for r in rows]


# -- batch references -------------------------------------------------------------------------------


def ref(command: str, *path: str | int) -> str:
    """``"$result[command][path]..."``: in a batch, the value of an earlier command's result.

    Only use it as a whole parameter value (the portal then keeps its type); a reference embedded in a
    longer string is replaced only by a string or number."""
    parts = [command, *(str(p) for p in path)]
    for part in parts:
        if not _NAME.fullmatch(part):
            raise ValueError(f"reference parts must be letters, digits or _, got {part!r}")
    return "$result" + "".join(f"[{p}]" for p in parts)


def references(value: Any) -> set[str]:
    """Names of the commands a parameter value (nested dicts/lists) refers to."""
    if isinstance(value, Mapping):
        return set().union(*(references(v) for v in value.values())) if value else set()
    if isinstance(value, list | tuple):
        return set().union(*(references(v) for v in value)) if value else set()
    if isinstance(value, str) and "$" in value:
        return {m.group(2)[1:].split("]")[0] for m in _REFERENCE.finditer(value)}
    return set()


def _has_empty(value: Any) -> bool:
    """An empty list/object vanishes from a PHP query string, so the portal would see no parameter."""
    if isinstance(value, Mapping):
        return not value or any(_has_empty(v) for v in value.values())
    if isinstance(value, list | tuple):
        return not value or any(_has_empty(v) for v in value)
    return False


def build_chain(commands: Mapping[str, Command]) -> Command:
    """A ``batch`` whose commands may refer to earlier ones; always ``halt=1``.

    Raises ValueError if a command refers to itself, a later command or one not in the batch — the portal
    would substitute earlier results for it, without an error — or carries an empty list or object (a
    row set ``[]`` would arrive as a missing parameter)."""
    seen: set[str] = set()
    for name, command in commands.items():
        if any(_has_empty(v) for v in command.params.values()):
            raise ValueError(f"command {name!r} has an empty list or object, which a batch cannot encode")
        wanted = references(dict(command.params))
        unknown = wanted - seen
        if unknown:
            raise ValueError(f"command {name!r} refers to {sorted(unknown)}, which do not run before it")
        seen.add(name)
    return build_batch(commands, halt=True)
