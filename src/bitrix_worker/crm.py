"""What the worker knows about each CRM entity: which API it writes with, and what that API calls things.

Pure (no I/O). One ``EntitySpec`` per entity the wire format can name — ``deal``, ``contact``, ``company``,
``lead``, ``quote``, ``smart_invoice`` and ``item:<entityTypeId>`` for smart processes — says:

- which API the worker uses (``crm.<entity>.*`` with UPPER_CASE names, or ``crm.item.*`` with camelCase
  names and an ``entityTypeId``) and why (docs/entities.md tells the story);
- the ``entityTypeId`` and whether the entity has product rows (and their owner code for
  ``crm.item.productrow.*``: ``D``, ``L``, ``Q``, ``SI``, ``T<hex>``);
- the origin fields the worker reconciles on (``ORIGINATOR_ID``/``ORIGIN_ID`` or ``originatorId``/
  ``originId``);
- how a pipeline change is made: ``crm.deal.update`` silently drops ``CATEGORY_ID`` (the field is immutable
  there), so a deal's move is a separate ``crm.item.update`` with ``categoryId``; ``crm.item.update`` moves
  the others itself.

Field names convert between the two spellings with the rules Bitrix24 documents (``STAGE_ID`` <->
``stageId``; ``DATE_CREATE`` <-> ``createdTime``; ``UF_CRM_10_DIGIT`` <-> ``ufCrm10Digit``; ...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

__all__ = [
    "SMART_PROCESS_HINT",
    "Api",
    "EntitySpec",
    "PipelineMove",
    "entity_spec",
    "is_smart_process_type",
    "known_entities",
    "owner_type_code",
    "split_pipeline_move",
    "to_camel",
    "to_item_fields",
    "to_upper",
]


class Api(StrEnum):
    """The two families of CRM methods."""

    OLD = "old"  # crm.<entity>.add|update|get|list|delete, UPPER_CASE fields: "development stopped", works
    ITEM = "item"  # crm.item.*, camelCase fields + entityTypeId: where Bitrix24 develops


@dataclass(frozen=True, slots=True)
class EntitySpec:
    """One CRM entity as the worker writes it."""

    name: str  # as in the wire format: "deal", "smart_invoice", "item:128"
    entity_type_id: int
    api: Api
    why: str  # one sentence: why this API for this entity
    owner_type: str | None  # product-row owner code for crm.item.productrow.*, None = no product rows
    category_field: str | None  # the pipeline field in this API's spelling, None = no pipelines

    @property
    def has_product_rows(self) -> bool:
        return self.owner_type is not None

    @property
    def origin_fields(self) -> tuple[str, ...]:
        """Field names that carry the producer's key, so an ambiguous create can be found again.

        The old API documents ``ORIGINATOR_ID`` + ``ORIGIN_ID`` for deals, contacts, companies and leads.
        For quotes, smart invoices and smart processes the documented crm.item.* fields have no such pair;
        smart invoices and smart processes document ``xmlId`` ("External code"), which then holds
        ``<originator>:<key>`` (see docs/entities.md: unconfirmed for quotes)."""
        return ("ORIGINATOR_ID", "ORIGIN_ID") if self.api is Api.OLD else (XML_ID,)

    def origin_values(self, originator: str, key: str) -> dict[str, str]:
        """The fields a create writes so that ``origin_filter`` finds the entity again."""
        if self.api is Api.OLD:
            return {"ORIGINATOR_ID": originator, "ORIGIN_ID": key}
        return {XML_ID: f"{originator}:{key}"}

    def origin_filter(self, originator: str, key: str) -> dict[str, str]:
        """The ``list`` filter that finds the entity a create with ``origin_values`` wrote."""
        return {f"={name}": value for name, value in self.origin_values(originator, key).items()}

    @property
    def origin_confirmed(self) -> bool:
        """Whether Bitrix24 documents the origin fields for this entity, so a lookup that finds nothing
        proves the create never happened. Not for quotes (``xmlId`` is the worker's unconfirmed choice):
        after an ambiguous quote create that the lookup does not find, the worker dead-letters it as
        "may have run" instead of risking a second quote."""
        return self.name != "quote"

    @property
    def id_field(self) -> str:
        return "ID" if self.api is Api.OLD else "id"

    @property
    def moves_pipeline_separately(self) -> bool:
        """True when this API's update ignores a pipeline change, so the move is its own crm.item.update."""
        return self.api is Api.OLD and self.category_field is not None

    def method(self, action: str) -> str:
        """``crm.deal.add`` or ``crm.item.add`` (``action``: add, update, get, list, delete, fields)."""
        prefix = f"crm.{self.name}" if self.api is Api.OLD else "crm.item"
        return f"{prefix}.{action}"

    def base_params(self) -> dict[str, Any]:
        """Parameters every call of this entity carries (``entityTypeId`` for crm.item.*)."""
        return {} if self.api is Api.OLD else {"entityTypeId": self.entity_type_id}


XML_ID: Final = "xmlId"
_OLD_WHY = (
    "crm.{name}.* is marked 'development stopped' but works; the worker's reconciliation by "
    "ORIGINATOR_ID/ORIGIN_ID, its tests and its producers' UPPER_CASE fields are built on it, and "
    "switching would change nothing a producer can see"
)
_ITEM_WHY = "{what}: crm.item.* with entityTypeId {etid} is the API Bitrix24 develops"

SYSTEM: Final[dict[str, EntitySpec]] = {
    "deal": EntitySpec("deal", 2, Api.OLD, _OLD_WHY.format(name="deal"), "D", "CATEGORY_ID"),
    "contact": EntitySpec("contact", 3, Api.OLD, _OLD_WHY.format(name="contact"), None, None),
    "company": EntitySpec("company", 4, Api.OLD, _OLD_WHY.format(name="company"), None, None),
    "lead": EntitySpec("lead", 1, Api.OLD, _OLD_WHY.format(name="lead"), "L", None),
    "quote": EntitySpec(
        "quote",
        7,
        Api.ITEM,
        _ITEM_WHY.format(what="crm.quote.* documents no ORIGINATOR_ID/ORIGIN_ID to reconcile with", etid=7),
        "Q",
        None,
    ),
    "smart_invoice": EntitySpec(
        "smart_invoice",
        31,
        Api.ITEM,
        _ITEM_WHY.format(what="smart invoices have no other API", etid=31),
        "SI",
        "categoryId",
    ),
}
SMART_PROCESS_HINT: Final = (
    "item:<entityTypeId> with a smart-process type id (128..192, or an even number from 1030)"
)
_ITEM_PREFIX = "item:"
MAX_ENTITY_TYPE_ID: Final = 2**31 - 1  # an int column in Bitrix24; also keeps keys named after it bounded
# crm.item.* with these ids reaches an entity the wire format names directly.
_BY_TYPE_ID = {spec.entity_type_id: name for name, spec in SYSTEM.items()}


def known_entities() -> tuple[str, ...]:
    return (*SYSTEM, f"{_ITEM_PREFIX}<entityTypeId>")


def is_smart_process_type(entity_type_id: int) -> bool:
    """The range ``crm.type.add`` accepts: 128..192, or an even number from 1030."""
    return 128 <= entity_type_id <= 192 or (entity_type_id >= 1030 and entity_type_id % 2 == 0)


def owner_type_code(entity_type_id: int) -> str | None:
    """Short owner code of product rows: ``D``, ``L``, ``Q``, ``SI``, ``T<hex>`` for smart processes."""
    fixed = {1: "L", 2: "D", 7: "Q", 31: "SI"}
    if entity_type_id in fixed:
        return fixed[entity_type_id]
    return f"T{entity_type_id:x}" if is_smart_process_type(entity_type_id) else None


def entity_spec(name: str) -> EntitySpec:
    """The spec for a wire-format entity name; ValueError with a reason a producer can act on."""
    if not isinstance(name, str):
        raise ValueError(f"entity must be a string, got {type(name).__name__}")
    spec = SYSTEM.get(name)
    if spec is not None:
        return spec
    if not name.startswith(_ITEM_PREFIX):
        raise ValueError(f"unknown entity {name!r}; expected one of {', '.join(known_entities())}")
    raw = name[len(_ITEM_PREFIX) :]
    if not raw.isdigit() or raw != str(int(raw)) or int(raw) > MAX_ENTITY_TYPE_ID:
        raise ValueError(f"entity {name!r}: expected {SMART_PROCESS_HINT}")
    type_id = int(raw)
    if type_id in _BY_TYPE_ID:
        raise ValueError(f"entity {name!r}: entityTypeId {type_id} is {_BY_TYPE_ID[type_id]!r}; name it so")
    if not is_smart_process_type(type_id):
        raise ValueError(f"entity {name!r}: expected {SMART_PROCESS_HINT}")
    why = _ITEM_WHY.format(what="smart processes have no other API", etid=type_id)
    return EntitySpec(name, type_id, Api.ITEM, why, owner_type_code(type_id), "categoryId")


# -- field names ------------------------------------------------------------------------------------

_TO_CAMEL_SPECIAL = {
    "DATE_CREATE": "createdTime",
    "DATE_MODIFY": "updatedTime",
    "CREATED_BY_ID": "createdBy",
    "MODIFY_BY_ID": "updatedBy",
    "MOVED_BY_ID": "movedBy",
    "MOVED_TIME": "movedTime",
}
_TO_UPPER_SPECIAL = {v: k for k, v in _TO_CAMEL_SPECIAL.items()}
# Leads and quotes call their stage STATUS_ID in the old API and stageId in crm.item.
_STATUS_AS_STAGE = frozenset({1, 7})
_LETTERS = re.compile(r"[A-Z]+(_[A-Z]+)*")
_TYPED_UF = re.compile(r"(\d+)_(.+)")
_PARENT = re.compile(r"PARENT_ID_(\d+)")


def _camel_words(words: list[str]) -> str:
    return words[0].lower() + "".join(w.capitalize() for w in words[1:])


def _uf_to_camel(rest: str) -> str:
    """``UF_CRM_<rest>`` -> camelCase, per the documented rules (type id, digits, simplified form)."""
    typed = _TYPED_UF.fullmatch(rest)
    if typed:
        type_id, tail = typed.groups()
        if tail.isdigit():
            return f"ufCrm{type_id}_{tail}"
        if _LETTERS.fullmatch(tail):
            return f"ufCrm{type_id}" + "".join(w.capitalize() for w in tail.split("_"))
        return f"ufCrm_{type_id}_{tail}"
    if _LETTERS.fullmatch(rest):
        return "ufCrm" + "".join(w.capitalize() for w in rest.split("_"))
    return f"ufCrm_{rest}"


def to_camel(name: str, entity_type_id: int = 0) -> str:
    """UPPER_CASE (old API) -> camelCase (crm.item.*). A name with lower-case letters is returned as is."""
    if name != name.upper():
        return name
    if name == "STATUS_ID" and entity_type_id in _STATUS_AS_STAGE:
        return "stageId"
    if name in _TO_CAMEL_SPECIAL:
        return _TO_CAMEL_SPECIAL[name]
    if name.startswith("UF_CRM_"):
        return _uf_to_camel(name[len("UF_CRM_") :])
    parent = _PARENT.fullmatch(name)
    if parent:
        return f"parentId{parent.group(1)}"
    return _camel_words(name.split("_"))


_CAMEL_SPLIT = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_UF_TYPED_DIGITS = re.compile(r"ufCrm(\d+)_(\d+)")
_UF_TYPED_WORDS = re.compile(r"ufCrm(\d+)([A-Z][A-Za-z]*)")
_UF_WORDS = re.compile(r"ufCrm([A-Z][A-Za-z]*)")


def _snake(camel: str) -> str:
    return "_".join(_CAMEL_SPLIT.split(camel)).upper()


def to_upper(name: str, entity_type_id: int = 0) -> str:  # noqa: PLR0911 - one return per naming rule
    """camelCase (crm.item.*) -> UPPER_CASE (old API); an UPPER_CASE name is returned as is."""
    if name == name.upper():
        return name
    if name == "stageId" and entity_type_id in _STATUS_AS_STAGE:
        return "STATUS_ID"
    if name in _TO_UPPER_SPECIAL:
        return _TO_UPPER_SPECIAL[name]
    if name.startswith("ufCrm_"):
        return "UF_CRM_" + name[len("ufCrm_") :]
    if m := _UF_TYPED_DIGITS.fullmatch(name):
        return f"UF_CRM_{m.group(1)}_{m.group(2)}"
    if m := _UF_TYPED_WORDS.fullmatch(name):
        return f"UF_CRM_{m.group(1)}_{_snake(m.group(2))}"
    if m := _UF_WORDS.fullmatch(name):
        return f"UF_CRM_{_snake(m.group(1))}"
    if name.startswith("parentId") and name[len("parentId") :].isdigit():
        return f"PARENT_ID_{name[len('parentId') :]}"
    return _snake(name)


def to_item_fields(fields: Mapping[str, Any], entity_type_id: int) -> dict[str, Any]:
    """Fields for crm.item.*: UPPER_CASE names become camelCase; camelCase names pass unchanged.

    Raises ValueError when two names land on the same camelCase name (``TITLE`` and ``title``), since one
    value would silently replace the other."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        camel = to_camel(name, entity_type_id)
        if camel in out:
            raise ValueError(f"fields {name!r} and {camel!r} name the same crm.item field")
        out[camel] = value
    return out


# -- pipelines --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PipelineMove:
    """A pipeline change the entity's own update would drop: send ``fields`` with ``crm.item.update``."""

    entity_type_id: int
    fields: dict[str, Any]  # camelCase: categoryId, and stageId when the update named a stage


def split_pipeline_move(
    spec: EntitySpec, fields: Mapping[str, Any]
) -> tuple[dict[str, Any], PipelineMove | None]:
    """Split an update's fields into what the entity's own update applies and a separate pipeline move.

    For a deal, ``CATEGORY_ID`` is dropped by ``crm.deal.update`` without an error, so it goes to a
    ``crm.item.update`` (entityTypeId 2) together with ``STAGE_ID`` (a stage belongs to one pipeline and
    would be refused or remapped if sent before the move). Entities written with crm.item.* move in their
    own update; entities without pipelines have nothing to split.
    """
    rest = dict(fields)
    if not spec.moves_pipeline_separately or spec.category_field not in rest:
        return rest, None
    move = {"categoryId": rest.pop(spec.category_field)}
    if "STAGE_ID" in rest:
        move["stageId"] = rest.pop("STAGE_ID")
    return rest, PipelineMove(spec.entity_type_id, move)
