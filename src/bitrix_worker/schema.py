"""A portal's field schema for one entity, parsed from its own answers: pure, no I/O.

Bitrix24 silently drops what it does not understand (unknown names, read-only fields, ``CATEGORY_ID`` on
update, dates it cannot parse), so the worker checks every operation against what the portal itself says
its fields are: ``crm.<entity>.fields`` (a map ``NAME -> descriptor``) or ``crm.item.fields`` (``{"fields":
{camelName: descriptor with upperName}}``), the pipelines (``crm.category.list``), the status lists that
enumerate ``STAGE_ID``, ``SOURCE_ID``, ``TYPE_ID``, ... (``crm.status.entity.items``) and the currencies
(``crm.currency.list``). The parsed ``EntitySchema`` round-trips through JSON for the shared cache.

Entities written with ``crm.item.*`` (quotes, smart invoices, smart processes) are keyed by their camelCase
names, the names the worker sends; their stage lists are one per pipeline (``stage_lists``:
``DYNAMIC_<entityTypeId>_STAGE_<categoryId>``, ``SMART_INVOICE_STAGE_<categoryId>``), whatever list the
stage field's own ``statusType`` names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SCHEMA_FORMAT = 1  # bump when the JSON layout changes: a cached schema of another format is refetched
DEAL_STAGE = "DEAL_STAGE"
ITEM_STAGE = "stageId"  # the stage field of crm.item.*: its list depends on the pipeline


@dataclass(frozen=True, slots=True)
class FieldSchema:
    """One field as the portal describes it; ``name`` is the name ``crm.<entity>.*`` writes take."""

    name: str
    type: str
    label: str
    required: bool = False
    read_only: bool = False
    immutable: bool = False
    multiple: bool = False
    deprecated: bool = False
    status_type: str | None = None
    items: tuple[tuple[str, str], ...] = ()  # enumeration: (ID, VALUE)
    parent_entity_type_id: int | None = None

    @property
    def user_field(self) -> bool:
        return self.name.startswith(("UF_", "ufCrm"))

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "label": self.label}
        for flag in ("required", "read_only", "immutable", "multiple", "deprecated"):
            if getattr(self, flag):
                out[flag] = True
        if self.status_type is not None:
            out["status_type"] = self.status_type
        if self.items:
            out["items"] = [{"id": i, "value": v} for i, v in self.items]
        if self.parent_entity_type_id is not None:
            out["parent_entity_type_id"] = self.parent_entity_type_id
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FieldSchema:
        return cls(
            name=str(data["name"]),
            type=str(data["type"]),
            label=str(data.get("label") or data["name"]),
            required=bool(data.get("required")),
            read_only=bool(data.get("read_only")),
            immutable=bool(data.get("immutable")),
            multiple=bool(data.get("multiple")),
            deprecated=bool(data.get("deprecated")),
            status_type=data.get("status_type"),
            items=tuple((str(i["id"]), str(i["value"])) for i in data.get("items", ())),
            parent_entity_type_id=data.get("parent_entity_type_id"),
        )


@dataclass(frozen=True, slots=True)
class EntitySchema:
    """Fields of one entity plus the value lists their types refer to."""

    entity: str
    fields: Mapping[str, FieldSchema]
    statuses: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # list id -> STATUS_ID -> NAME
    categories: Mapping[int, str] = field(default_factory=dict)  # pipeline id -> name
    currencies: tuple[str, ...] = ()
    fetched_at: float = 0.0
    stage_lists: Mapping[int, str] = field(default_factory=dict)  # crm.item.*: pipeline -> its stage list
    default_category: int = 0  # the pipeline a create without one lands in
    camel: bool = False  # written with crm.item.* (camelCase names; "empty" values become null)
    compiled: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    """What ``validation`` derives from this schema once (per-field quick checks): a schema never changes,
    a newer one is another object, so the memo lives and goes with it."""

    def stage_list(self, category_id: int) -> str:
        """``DEAL_STAGE`` for the default pipeline, ``DEAL_STAGE_<id>`` for the others (never ``_0``)."""
        if self.stage_lists:
            return self.stage_lists.get(category_id, f"(no pipeline {category_id})")
        return DEAL_STAGE if category_id == 0 else f"{DEAL_STAGE}_{category_id}"

    def status_lists(self, spec: FieldSchema, category_id: int | None) -> list[str]:
        """The status lists a ``crm_status`` field's value must come from.

        Deal stages depend on the pipeline: ``crm.deal.fields`` says ``DEAL_STAGE`` whatever the pipeline,
        so the list is picked by ``category_id``; unknown pipeline (an update that does not say) -> every
        pipeline's list, which still catches a stage of no pipeline at all.
        """
        if spec.status_type is None:
            return []
        if self.stage_lists and spec.name == ITEM_STAGE:
            if category_id is None:
                return list(self.stage_lists.values())
            return [self.stage_list(category_id)]
        if spec.status_type != DEAL_STAGE or not self.categories:
            return [spec.status_type]
        if category_id is None:
            return [self.stage_list(c) for c in self.categories]
        return [self.stage_list(category_id)]

    def as_json(self) -> dict[str, Any]:
        return {
            "format": SCHEMA_FORMAT,
            "entity": self.entity,
            "fetched_at": self.fetched_at,
            "fields": [f.as_json() for f in self.fields.values()],
            "statuses": {k: dict(v) for k, v in self.statuses.items()},
            "categories": {str(k): v for k, v in self.categories.items()},
            "currencies": list(self.currencies),
            "stage_lists": {str(k): v for k, v in self.stage_lists.items()},
            "default_category": self.default_category,
            "camel": self.camel,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EntitySchema:
        """Inverse of ``as_json``; ValueError for another format or a broken document."""
        if not isinstance(data, Mapping) or data.get("format") != SCHEMA_FORMAT:
            raise ValueError(f"not a schema document of format {SCHEMA_FORMAT}")
        try:
            specs = [FieldSchema.from_json(f) for f in data["fields"]]
            return cls(
                entity=str(data["entity"]),
                fields={f.name: f for f in specs},
                statuses={
                    str(k): {str(s): str(n) for s, n in v.items()} for k, v in data["statuses"].items()
                },
                categories={int(k): str(v) for k, v in data["categories"].items()},
                currencies=tuple(str(c) for c in data["currencies"]),
                fetched_at=float(data.get("fetched_at") or 0.0),
                stage_lists={int(k): str(v) for k, v in data.get("stage_lists", {}).items()},
                default_category=int(data.get("default_category") or 0),
                camel=bool(data.get("camel")),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"broken schema document: {type(exc).__name__}: {exc}") from None


def _label(name: str, info: Mapping[str, Any]) -> str:
    """User fields of the old API have ``title`` = the code; their human label is in the *Label keys."""
    for key in ("formLabel", "listLabel", "filterLabel", "title"):
        value = info.get(key)
        if isinstance(value, str) and value.strip() and value != name:
            return value
    return name


def _items(raw: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, list):
        return ()
    return tuple((str(i.get("ID")), str(i.get("VALUE"))) for i in raw if isinstance(i, Mapping) and "ID" in i)


def _parent(info: Mapping[str, Any]) -> int | None:
    settings = info.get("settings")
    raw = settings.get("parentEntityTypeId") if isinstance(settings, Mapping) else None
    return int(raw) if isinstance(raw, int | str) and str(raw).isdigit() else None


def parse_fields(result: Any, *, camel: bool = False) -> dict[str, FieldSchema]:
    """``crm.<entity>.fields`` or ``crm.item.fields`` answer -> fields keyed by their write name: the
    ``upperName`` of a ``crm.item.fields`` answer, or with ``camel`` its own (camelCase) key, the name
    ``crm.item.add``/``update`` take."""
    if not isinstance(result, Mapping):
        raise ValueError(f"field list must be an object, got {type(result).__name__}")
    item_style = set(result) == {"fields"} and isinstance(result["fields"], Mapping)
    raw = result["fields"] if item_style else result
    out: dict[str, FieldSchema] = {}
    for key, info in raw.items():
        if not isinstance(info, Mapping) or not isinstance(info.get("type"), str):
            raise ValueError(f"field {key!r} has no type")
        name = str(info.get("upperName") or key) if item_style and not camel else str(key)
        out[name] = FieldSchema(
            name=name,
            type=str(info["type"]),
            label=_label(name, info),
            required=bool(info.get("isRequired")),
            read_only=bool(info.get("isReadOnly")),
            immutable=bool(info.get("isImmutable")),
            multiple=bool(info.get("isMultiple")),
            deprecated=bool(info.get("isDeprecated")),
            status_type=str(info["statusType"]) if info.get("statusType") else None,
            items=_items(info.get("items")),
            parent_entity_type_id=_parent(info),
        )
    return out


def parse_categories(result: Any) -> dict[int, str]:
    """``crm.category.list`` -> pipeline id -> name."""
    rows = result.get("categories") if isinstance(result, Mapping) else None
    if not isinstance(rows, list):
        raise ValueError("category list must be {'categories': [...]}")
    return {int(r["id"]): str(r.get("name") or r["id"]) for r in rows if isinstance(r, Mapping) and "id" in r}


def parse_default_category(result: Any) -> int:
    """The pipeline ``crm.category.list`` marks ``isDefault``; 0 when none is (or the list is empty)."""
    rows = result.get("categories") if isinstance(result, Mapping) else None
    for r in rows if isinstance(rows, list) else []:
        if isinstance(r, Mapping) and str(r.get("isDefault", "")).upper() == "Y" and "id" in r:
            return int(r["id"])
    return 0


def parse_statuses(result: Any) -> dict[str, str]:
    """``crm.status.entity.items`` (or ``crm.status.list`` rows) -> STATUS_ID -> NAME, in portal order."""
    if not isinstance(result, list):
        raise ValueError("status list must be an array")
    return {
        str(r["STATUS_ID"]): str(r.get("NAME") or "")
        for r in result
        if isinstance(r, Mapping) and "STATUS_ID" in r
    }


def parse_currencies(result: Any) -> tuple[str, ...]:
    """``crm.currency.list`` -> currency codes."""
    if not isinstance(result, list):
        raise ValueError("currency list must be an array")
    return tuple(str(r["CURRENCY"]) for r in result if isinstance(r, Mapping) and "CURRENCY" in r)


def status_lists_needed(fields: Mapping[str, FieldSchema], categories: Iterable[int]) -> list[str]:
    """Every status list the fields refer to; ``DEAL_STAGE`` expands to one list per pipeline."""
    wanted: list[str] = []
    for spec in fields.values():
        if spec.status_type is None:
            continue
        names = (
            [DEAL_STAGE if c == 0 else f"{DEAL_STAGE}_{c}" for c in categories] or [DEAL_STAGE]
            if spec.status_type == DEAL_STAGE
            else [spec.status_type]
        )
        wanted.extend(n for n in names if n not in wanted)
    return wanted
