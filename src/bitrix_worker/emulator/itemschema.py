"""Fields, pipelines and stages of the entities with their own tables: smart invoices and smart processes.

``crm.item.fields`` answers ``{"fields": {camelName: descriptor + "upperName"}}`` with real types (so a
client can validate against it), required flags and the user fields a smart-process type is configured
with (``UF_CRM_<typeId>_...`` -> ``ufCrm<typeId>...``). Each entity has pipelines (``crm.category.list``
with its ``entityTypeId``; one is ``isDefault``) and per pipeline a stage list named
``DYNAMIC_<entityTypeId>_STAGE_<categoryId>`` or ``SMART_INVOICE_STAGE_<categoryId>``, served by the
portal's ``crm.status.*`` like any other list. Stage ids are ``DT<entityTypeId>_<categoryId>:<code>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..crm import to_camel
from .config import SmartProcessType, UserFieldConfig
from .schema import Field

SMART_INVOICE = 31
INVOICE_STAGES = (("N", "New", "process"), ("S", "Sent", "process"), ("P", "Paid", "success"),
                  ("D", "Declined", "failure"))  # fmt: skip
PROCESS_STAGES = (("NEW", "New", "process"), ("PREPARATION", "Preparation", "process"),
                  ("CLIENT", "Client", "process"), ("SUCCESS", "Success", "success"),
                  ("FAIL", "Failure", "failure"))  # fmt: skip

BASE_FIELDS: dict[str, tuple[str, Field]] = {  # camelName -> (upperName, descriptor)
    "id": ("ID", Field("integer", "ID", read_only=True)),
    "xmlId": ("XML_ID", Field("string", "External code")),
    "title": ("TITLE", Field("string", "Name")),
    "createdBy": ("CREATED_BY", Field("user", "Created by", read_only=True)),
    "updatedBy": ("UPDATED_BY", Field("user", "Modified by", read_only=True)),
    "createdTime": ("CREATED_TIME", Field("datetime", "Created on", read_only=True)),
    "updatedTime": ("UPDATED_TIME", Field("datetime", "Modified on", read_only=True)),
    "assignedById": ("ASSIGNED_BY_ID", Field("user", "Responsible person")),
    "opened": ("OPENED", Field("boolean", "Available to everyone")),
    "categoryId": ("CATEGORY_ID", Field("crm_category", "Pipeline")),
    "stageId": ("STAGE_ID", Field("crm_status", "Stage")),
    "currencyId": ("CURRENCY_ID", Field("crm_currency", "Currency")),
    "opportunity": ("OPPORTUNITY", Field("double", "Amount")),
    "isManualOpportunity": ("IS_MANUAL_OPPORTUNITY", Field("boolean", "Manual amount")),
    "companyId": ("COMPANY_ID", Field("crm_company", "Company", settings={"parentEntityTypeId": 4})),
    "contactId": ("CONTACT_ID", Field("crm_contact", "Contact", deprecated=True)),
    "contactIds": ("CONTACT_IDS", Field("crm_contact", "Contacts", multiple=True)),
}
_FIRST_ITEM_ID = 5000


def stage_list_id(entity_type_id: int, category_id: int) -> str:
    """The status list of one pipeline's stages (the default pipeline too: no ``DEAL_STAGE`` exception)."""
    if entity_type_id == SMART_INVOICE:
        return f"SMART_INVOICE_STAGE_{category_id}"
    return f"DYNAMIC_{entity_type_id}_STAGE_{category_id}"


def stage_id(entity_type_id: int, category_id: int, code: str) -> str:
    return f"DT{entity_type_id}_{category_id}:{code}"


@dataclass(slots=True)
class ItemType:
    """One entity's fields (camelCase) and pipelines."""

    entity_type_id: int
    fields: dict[str, tuple[str, Field]]
    pipelines: dict[int, str]
    default_category: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def stages(self, category_id: int) -> list[tuple[str, str, str]]:
        codes = INVOICE_STAGES if self.entity_type_id == SMART_INVOICE else PROCESS_STAGES
        return [(stage_id(self.entity_type_id, category_id, c), n, s) for c, n, s in codes]

    def status_lists(self) -> dict[str, list[tuple[str, str, str]]]:
        return {stage_list_id(self.entity_type_id, c): self.stages(c) for c in self.pipelines}

    def describe(self) -> dict[str, Any]:
        """``crm.item.fields``: the stage field names the default pipeline's list, as the portal does."""
        out: dict[str, Any] = {}
        default_list = stage_list_id(self.entity_type_id, self.default_category)
        for name, (upper, spec) in self.fields.items():
            shown = replace(spec, status_type=default_list) if name == "stageId" else spec
            out[name] = shown.describe(upper) | {"upperName": upper}
        return out

    def category_list(self) -> dict[str, Any]:
        categories = [
            {"id": i, "name": n, "sort": (k + 1) * 100, "entityTypeId": self.entity_type_id,
             "isDefault": "Y" if i == self.default_category else "N"}
            for k, (i, n) in enumerate(sorted(self.pipelines.items()))
        ]  # fmt: skip
        return {"categories": categories}


def _user_field(uf: UserFieldConfig, next_item: int) -> tuple[Field, int]:
    items: list[tuple[str, str]] = []
    for item in uf.items:
        if isinstance(item, dict):
            items.append((str(item["ID"]), str(item["VALUE"])))
        else:
            items.append((str(next_item), item))
            next_item += 1
    spec = Field(uf.type, uf.label or uf.name, multiple=uf.multiple, required=uf.required,
                 items=tuple(items), label=uf.label or None,
                 status_type=uf.status_type if uf.type == "crm_status" else None)  # fmt: skip
    return spec, next_item


def item_type(smart: SmartProcessType | None) -> ItemType:
    """The smart invoice (``None``) or a configured smart-process type."""
    if smart is None:
        return ItemType(SMART_INVOICE, dict(BASE_FIELDS), {0: "General"})
    fields = dict(BASE_FIELDS)
    next_item = _FIRST_ITEM_ID + smart.id * 100
    for uf in smart.user_fields:
        spec, next_item = _user_field(uf, next_item)
        fields[to_camel(uf.name, smart.entity_type_id)] = (uf.name, spec)
    for name in smart.required:
        if name not in fields:
            raise ValueError(f"smart process {smart.entity_type_id} has no field {name!r} to make required")
        upper, spec = fields[name]
        fields[name] = (upper, spec.with_required())
    pipelines = dict(smart.pipelines) if smart.categories else {min(smart.pipelines): "General"}
    return ItemType(smart.entity_type_id, fields, pipelines, default_category=min(pipelines))
