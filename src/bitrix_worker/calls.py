"""Pure: the Bitrix24 commands that write one entity, whichever API it is written with, and their answers.

``crm.py`` says which API each entity uses; this module turns that into commands: ``crm.deal.add`` with
UPPER_CASE fields and ``ORIGINATOR_ID``/``ORIGIN_ID``, or ``crm.item.add`` with an ``entityTypeId``,
camelCase fields and ``xmlId``; the lookup that finds an ambiguous create again; product rows
(``crm.item.productrow.set`` for every entity with rows) and a deal's pipeline move. The answers differ
too (``crm.deal.add`` answers the id, ``crm.item.add`` ``{"item": {"id": ...}}``), so the parsers live
here beside the builders. No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .bitrix.items import item_add, item_delete, item_list, item_update, parse_item, productrow_set
from .bitrix.methods import Command, crm_add, crm_delete, crm_list, crm_update, int_or_none, parse_id
from .crm import Api, EntitySpec, PipelineMove, to_item_fields


def fields_for(spec: EntitySpec, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Field names as the entity's API spells them (camelCase for crm.item.*)."""
    return dict(fields) if spec.api is Api.OLD else to_item_fields(fields, spec.entity_type_id)


def create(spec: EntitySpec, fields: Mapping[str, Any]) -> Command:
    """The create; ``fields`` are in the API's spelling and carry ``spec.origin_values`` (``plan``)."""
    if spec.api is Api.OLD:
        return crm_add(spec.name, fields)
    return item_add(spec.entity_type_id, fields)


def update(spec: EntitySpec, bitrix_id: int | str, fields: Mapping[str, Any]) -> Command:
    """An update; ``fields`` are in the API's spelling (``fields_for``)."""
    if spec.api is Api.OLD:
        return crm_update(spec.name, bitrix_id, fields)
    return item_update(spec.entity_type_id, bitrix_id, fields)


def delete(spec: EntitySpec, bitrix_id: int) -> Command:
    if spec.api is Api.OLD:
        return crm_delete(spec.name, bitrix_id)
    return item_delete(spec.entity_type_id, bitrix_id)


def lookup(spec: EntitySpec, *, originator: str, key: str) -> Command:
    """Find the entities a create of ``key`` made (oldest first), by the origin fields it wrote; the
    answer carries those fields too, so ``found_ids`` can check them."""
    where = spec.origin_filter(originator, key)
    select = [spec.id_field, *spec.origin_fields]
    if spec.api is Api.OLD:
        return crm_list(spec.name, filter=where, select=select, order={"ID": "ASC"})
    return item_list(spec.entity_type_id, filter=where, select=select, order={"id": "ASC"})


def found_ids(spec: EntitySpec, result: Any, *, originator: str, key: str) -> list[int]:
    """The ids in a ``lookup`` answer (a list for the old API, ``{"items": [...]}`` for crm.item.list)
    whose origin fields really are this key's: a portal that ignored a filter it does not know would
    otherwise hand over another entity to adopt."""
    rows = result.get("items") if isinstance(result, Mapping) else result
    if not isinstance(rows, list):
        return []
    want = spec.origin_values(originator, key)
    ids = [
        int_or_none(row.get(spec.id_field))
        for row in rows
        if isinstance(row, Mapping) and all(str(row.get(k)) == v for k, v in want.items())
    ]
    return [i for i in ids if i is not None and i > 0]


def created_id(spec: EntitySpec, result: Any) -> int:
    """The new id a create answered; ValueError on any other shape."""
    if spec.api is Api.OLD:
        return parse_id(result)
    return parse_id(parse_item(result)["id"])


def id_path(spec: EntitySpec) -> tuple[str, ...]:
    """Where a create's answer holds the new id, for a batch reference (``$result[c][item][id]``)."""
    return () if spec.api is Api.OLD else ("item", "id")


def rows(spec: EntitySpec, owner_id: int | str, products: Sequence[Mapping[str, Any]]) -> Command:
    """``crm.item.productrow.set``: the entity's whole row set (camelCase row fields; ``[]`` clears)."""
    if spec.owner_type is None:
        raise ValueError(f"a {spec.name} has no product rows")
    return productrow_set(spec.owner_type, owner_id, [to_item_fields(r, 0) for r in products])


def move(step: PipelineMove, bitrix_id: int) -> Command:
    """A pipeline change the entity's own update would drop (a deal's ``CATEGORY_ID``)."""
    return item_update(step.entity_type_id, bitrix_id, step.fields)
