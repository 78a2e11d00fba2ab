"""A deal schema parsed from the emulator's own answers (in process, no HTTP), shared by the unit tests
of ``schema`` and ``validation``: one user field of each type the validator knows, a required field and
a second pipeline, so every rule has something to bite on."""

from __future__ import annotations

from typing import Any

from bitrix_worker.emulator import EmulatorConfig, PipelineConfig, SchemaConfig, UserFieldConfig
from bitrix_worker.emulator.portal import Portal
from bitrix_worker.schema import (
    EntitySchema,
    parse_categories,
    parse_currencies,
    parse_fields,
    parse_statuses,
    status_lists_needed,
)

USER_FIELDS = [
    UserFieldConfig(name="UF_CRM_PAYMENT_METHOD", type="enumeration", label="Payment method",
                    items=[{"ID": "79", "VALUE": "Cash"}, {"ID": "80", "VALUE": "Card"}]),
    UserFieldConfig(name="UF_CRM_CHANNELS", type="enumeration", label="Channels", multiple=True,
                    items=[{"ID": "81", "VALUE": "Web"}, {"ID": "82", "VALUE": "Phone"}]),
    UserFieldConfig(name="UF_CRM_WEIGHT", type="double", label="Weight"),
    UserFieldConfig(name="UF_CRM_PIECES", type="integer", label="Pieces"),
    UserFieldConfig(name="UF_CRM_BUDGET", type="money", label="Budget"),
    UserFieldConfig(name="UF_CRM_DELIVERY_AT", type="datetime", label="Delivery at"),
    UserFieldConfig(name="UF_CRM_GIFT", type="boolean", label="Gift"),
    UserFieldConfig(name="UF_CRM_TAGS", type="string", label="Tags", multiple=True),
    UserFieldConfig(name="UF_CRM_MANAGER", type="employee", label="Manager"),
    UserFieldConfig(name="UF_CRM_LINK", type="crm", label="Linked"),
    UserFieldConfig(name="UF_CRM_ORDER_NO", type="string", label="Order number", required=True),
]  # fmt: skip
CONFIG = EmulatorConfig(
    crm_schema=SchemaConfig(
        user_fields={"deal": USER_FIELDS},
        pipelines=[PipelineConfig(id=1, name="Wholesale", stages=["NEW", "PAID", "WON", "LOSE"])],
    )
)


def portal_schema(entity: str = "deal", config: EmulatorConfig = CONFIG) -> EntitySchema:
    portal = Portal(config)

    def call(method: str, **params: Any) -> Any:
        return portal.call(method, params)[0].value

    fields = parse_fields(call(f"crm.{entity}.fields"))
    categories = parse_categories(call("crm.category.list", entityTypeId=2)) if entity == "deal" else {}
    statuses = {
        name: parse_statuses(call("crm.status.entity.items", entityId=name))
        for name in status_lists_needed(fields, categories)
    }
    currencies = parse_currencies(call("crm.currency.list"))
    return EntitySchema(entity, fields, statuses, categories, currencies, fetched_at=1.0)
