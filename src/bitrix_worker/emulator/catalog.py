"""One portal's schema: the standard fields plus its user fields, required flags, pipelines with their
stages, status lists and currencies, answering ``crm.category.list``, ``crm.status.list``,
``crm.status.entity.items`` and ``crm.currency.list`` in the portal's shapes.

It is mutable on purpose: a test adds a user field or a pipeline at run time (``/_emulator/fields``,
``/_emulator/pipelines``) to prove the worker picks the change up without a restart.
"""

from __future__ import annotations

from typing import Any

from .config import PipelineConfig, SchemaConfig, UserFieldConfig
from .errors import bad_request
from .schema import DEAL_STAGES, FIELDS, STATUS_LISTS, EntityFields, Field

ENTITY_TYPE_IDS = {"lead": 1, "deal": 2, "contact": 3, "company": 4}
_FIRST_ITEM_ID = 1000
_STATUS_ID_MAX = 21  # Bitrix24 truncates generated STATUS_IDs at 21 characters


def stage_list_id(category_id: int) -> str:
    """``DEAL_STAGE`` for the default pipeline, ``DEAL_STAGE_<id>`` for the others (never ``_0``)."""
    return "DEAL_STAGE" if category_id == 0 else f"DEAL_STAGE_{category_id}"


class PortalSchema:
    def __init__(self, config: SchemaConfig) -> None:
        self.fields: dict[str, EntityFields] = {e: f.copy_with({}) for e, f in FIELDS.items()}
        self.pipelines: dict[int, str] = {0: "General"}
        self.statuses: dict[str, list[tuple[str, str, str]]] = {
            "DEAL_STAGE": list(DEAL_STAGES),
            **{k: [(s, n, "") for s, n in v] for k, v in STATUS_LISTS.items()},
        }
        self.currencies = list(config.currencies)
        self._next_item = _FIRST_ITEM_ID
        for entity, names in config.required.items():
            for name in names:
                self._require(entity, name)
        for entity, user_fields in config.user_fields.items():
            for uf in user_fields:
                self.add_user_field(entity, uf)
        for pipeline in config.pipelines:
            self.add_pipeline(pipeline)

    def _require(self, entity: str, name: str) -> None:
        spec = self.fields[entity].get(name.upper())
        if spec is None:
            raise ValueError(f"{entity} has no field {name!r} to make required")
        self.fields[entity][name.upper()] = spec.with_required()

    def add_user_field(self, entity: str, uf: UserFieldConfig) -> dict[str, Any]:
        """Add (or replace) one user field; returns its descriptor as ``crm.<entity>.fields`` shows it."""
        if entity not in self.fields:
            raise ValueError(f"unknown entity {entity!r}")
        items: list[tuple[str, str]] = []
        for item in uf.items:
            if isinstance(item, dict):
                items.append((str(item["ID"]), str(item["VALUE"])))
            else:
                items.append((str(self._next_item), item))
                self._next_item += 1
        spec = Field(
            uf.type,
            uf.label or uf.name,
            multiple=uf.multiple,
            required=uf.required,
            items=tuple(items),
            label=uf.label or None,
            status_type=uf.status_type if uf.type == "crm_status" else None,
        )
        self.fields[entity][uf.name] = spec
        if not spec.multiple:
            self.fields[entity].defaults.setdefault(uf.name, None)
        return spec.describe(uf.name)

    def add_pipeline(self, pipeline: PipelineConfig) -> dict[str, Any]:
        prefix = f"C{pipeline.id}:"
        stages = [(f"{prefix}{s}"[:_STATUS_ID_MAX], s.title(), _semantics(s)) for s in pipeline.stages]
        self.pipelines[pipeline.id] = pipeline.name
        self.statuses[stage_list_id(pipeline.id)] = stages
        return {"id": pipeline.id, "name": pipeline.name, "stages": [s for s, _, _ in stages]}

    def stage_ids(self, category_id: int) -> set[str]:
        return {s for s, _, _ in self.statuses.get(stage_list_id(category_id), [])}

    # -- methods ----------------------------------------------------------------------------------------

    def category_list(self, params: dict[str, Any]) -> Any:
        raw = params.get("entityTypeId", params.get("ENTITY_TYPE_ID"))
        type_id = int(raw) if isinstance(raw, int | str) and str(raw).strip().isdigit() else 0
        if type_id == ENTITY_TYPE_IDS["deal"]:
            pipelines = sorted(self.pipelines.items())
        elif type_id in (ENTITY_TYPE_IDS["contact"], ENTITY_TYPE_IDS["company"]):
            pipelines = [(0, "General")]
        else:
            raise bad_request("Entity type does not support categories")
        categories = [
            {"id": i, "name": n, "sort": (k + 1) * 100, "entityTypeId": type_id, "isDefault": "N"}
            for k, (i, n) in enumerate(pipelines)
        ]
        categories[0]["isDefault"] = "Y"
        return {"categories": categories}

    def _rows(self, entity_id: str) -> list[dict[str, Any]]:
        category = int(entity_id.rsplit("_", 1)[1]) if entity_id.startswith("DEAL_STAGE_") else 0
        return [
            {
                "ENTITY_ID": entity_id,
                "STATUS_ID": status,
                "NAME": name,
                "SORT": str((n + 1) * 10),
                "SYSTEM": "Y" if semantics in ("success", "failure") else "N",
                "CATEGORY_ID": str(category) if entity_id.startswith("DEAL_STAGE") else None,
                "SEMANTICS": {"success": "S", "failure": "F", "apology": "F"}.get(semantics),
                "EXTRA": {"SEMANTICS": semantics} if semantics else None,
            }
            for n, (status, name, semantics) in enumerate(self.statuses.get(entity_id, []))
        ]

    def status_list(self, params: dict[str, Any]) -> Any:
        flt = params.get("filter")
        wanted = flt.get("ENTITY_ID") if isinstance(flt, dict) else None
        ids = [str(wanted)] if wanted is not None else sorted(self.statuses)
        rows = [row for entity_id in ids for row in self._rows(entity_id)]
        return [{"ID": str(n + 1)} | row for n, row in enumerate(rows)]

    def status_entity_items(self, params: dict[str, Any]) -> Any:
        entity_id = params.get("entityId", params.get("ENTITY_ID"))
        if not entity_id:
            raise bad_request("The parameter entityId is not defined.")
        keep = ("NAME", "SORT", "STATUS_ID", "SEMANTICS")
        return [{k: row[k] for k in keep} for row in self._rows(str(entity_id))]

    def currency_list(self, params: dict[str, Any]) -> Any:
        return [
            {"CURRENCY": c, "AMOUNT_CNT": 1, "AMOUNT": "1.0000", "SORT": str((n + 1) * 100),
             "BASE": "Y" if n == 0 else "N", "FULL_NAME": c, "LID": "en", "FORMAT_STRING": f"# {c}"}
            for n, c in enumerate(self.currencies)
        ]  # fmt: skip


def _semantics(stage: str) -> str:
    return {"WON": "success", "LOSE": "failure"}.get(stage.upper(), "process")
