"""The emulator's field schemas over HTTP on loopback: the exact shapes of ``crm.deal.fields`` and the
value lists, and the portal's silent behaviour (unknown and read-only fields dropped, ``CATEGORY_ID``
ignored on update, unparsable dates dropped, ``ID`` without ``VALUE`` deletes a phone), so tests elsewhere
can prove the worker, not the portal, stops the loss."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from bitrix_worker.emulator import (
    EmulatorAdmin,
    EmulatorConfig,
    EmulatorServer,
    PipelineConfig,
    SchemaConfig,
    UserFieldConfig,
)

SCHEMA = SchemaConfig(
    user_fields={
        "deal": [
            UserFieldConfig(name="UF_CRM_PAYMENT_METHOD", type="enumeration", label="Payment method",
                            items=["Cash", "Card"]),
            UserFieldConfig(name="UF_CRM_DELIVERY_DATE", type="date", label="Delivery date"),
            UserFieldConfig(name="UF_CRM_TAGS", label="Tags", multiple=True),
        ]
    },
    required={"contact": ["LAST_NAME"]},
    pipelines=[PipelineConfig(id=1, name="Wholesale")],
)  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(crm_schema=SCHEMA, limits_enabled=False)) as srv:
        yield srv


@pytest.fixture
async def rest(server: EmulatorServer) -> AsyncIterator[Any]:
    async with (
        httpx.AsyncClient(base_url=server.webhook_url, timeout=5) as client,
        EmulatorAdmin(server.base_url) as admin,
    ):
        await admin.reset()

        async def call(method: str, **params: Any) -> Any:
            response = await client.post(method, json=params)
            return response.status_code, response.json()

        call.admin = admin  # type: ignore[attr-defined]
        yield call


async def test_fields_answer_in_the_portals_shape(rest: Any) -> None:
    status, body = await rest("crm.deal.fields")
    fields = body["result"]
    assert status == 200
    payment = fields["UF_CRM_PAYMENT_METHOD"]
    assert payment == {
        "type": "enumeration", "isRequired": False, "isReadOnly": False, "isImmutable": False,
        "isMultiple": False, "isDynamic": True, "title": "UF_CRM_PAYMENT_METHOD",
        "items": [{"ID": "1000", "VALUE": "Cash"}, {"ID": "1001", "VALUE": "Card"}],
        "listLabel": "Payment method", "formLabel": "Payment method", "filterLabel": "Payment method",
    }  # fmt: skip
    assert fields["STAGE_ID"]["statusType"] == "DEAL_STAGE"
    assert fields["CATEGORY_ID"]["isImmutable"] is True
    assert fields["ID"]["isReadOnly"] is True
    assert fields["CONTACT_ID"]["isDeprecated"] is True
    assert "isDeprecated" not in fields["TITLE"]
    _, contact = await rest("crm.contact.fields")
    assert contact["result"]["LAST_NAME"]["isRequired"] is True


async def test_pipelines_stages_statuses_and_currencies(rest: Any) -> None:
    _, cats = await rest("crm.category.list", entityTypeId=2)
    assert [(c["id"], c["name"], c["isDefault"]) for c in cats["result"]["categories"]] == [
        (0, "General", "Y"),
        (1, "Wholesale", "N"),
    ]
    _, stages = await rest("crm.status.entity.items", entityId="DEAL_STAGE_1")
    assert [s["STATUS_ID"] for s in stages["result"]] == ["C1:NEW", "C1:WORK", "C1:WON", "C1:LOSE"]
    _, listed = await rest("crm.status.list", filter={"ENTITY_ID": "SOURCE"})
    assert {r["ENTITY_ID"] for r in listed["result"]} == {"SOURCE"}
    assert "WEB" in {r["STATUS_ID"] for r in listed["result"]}
    _, currencies = await rest("crm.currency.list")
    assert [c["CURRENCY"] for c in currencies["result"]][:3] == ["RUB", "USD", "EUR"]


async def test_unknown_read_only_and_misspelt_fields_are_dropped_silently(rest: Any) -> None:
    fields = {
        "TITLE": "A",
        "TOTALLY_UNKNOWN_FIELD": "x",
        "UF_CRM_PAYMENT_METHD": "1000",  # misspelt
        "DATE_CREATE": "2020-01-01T00:00:00+00:00",  # read-only
        "UF_CRM_PAYMENT_METHOD": "9999",  # not an item: the portal does not check
    }
    status, body = await rest("crm.deal.add", fields=fields)
    assert (status, body["result"]) == (200, 1)
    _, got = await rest("crm.deal.get", id=1)
    row = got["result"]
    assert row["TITLE"] == "A"
    assert "TOTALLY_UNKNOWN_FIELD" not in row
    assert "UF_CRM_PAYMENT_METHD" not in row
    assert row["DATE_CREATE"] != "2020-01-01T00:00:00+00:00"
    deals = await rest.admin.entities("deal")
    assert deals[0]["UF_CRM_PAYMENT_METHOD"] == "9999"


async def test_category_is_ignored_on_update_and_bad_dates_are_dropped(rest: Any) -> None:
    await rest("crm.deal.add", fields={"TITLE": "A", "CATEGORY_ID": 1, "UF_CRM_DELIVERY_DATE": "2024-05-01"})
    status, body = await rest(
        "crm.deal.update", id=1, fields={"CATEGORY_ID": 0, "UF_CRM_DELIVERY_DATE": "next tuesday-ish"}
    )
    assert (status, body["result"]) == (200, True)
    row = (await rest.admin.entities("deal"))[0]
    assert (row["CATEGORY_ID"], row["UF_CRM_DELIVERY_DATE"]) == ("1", "2024-05-01")
    await rest("crm.deal.update", id=1, fields={"UF_CRM_DELIVERY_DATE": "2024-06-02"})
    assert (await rest.admin.entities("deal"))[0]["UF_CRM_DELIVERY_DATE"] == "2024-06-02"


async def test_a_list_for_a_single_field_is_not_stored_as_sent(rest: Any) -> None:
    fields = {"TITLE": ["Order 1", "x"], "COMPANY_ID": [5, 6], "UF_CRM_PAYMENT_METHOD": ["1001", "1000"]}
    await rest("crm.deal.add", fields=fields)
    row = (await rest.admin.entities("deal"))[0]
    assert (row["TITLE"], row["COMPANY_ID"], row["UF_CRM_PAYMENT_METHOD"]) == ("Array", "1", "1001")


async def test_required_field_missing_is_an_error(rest: Any) -> None:
    status, body = await rest("crm.contact.add", fields={"NAME": "Ann"})
    assert status == 400
    assert "Last name" in body["error_description"]
    status, _ = await rest("crm.contact.add", fields={"NAME": "Ann", "LAST_NAME": "Lee"})
    assert status == 200


async def test_an_id_without_value_deletes_a_phone(rest: Any) -> None:
    phones = [{"VALUE": "+491", "VALUE_TYPE": "WORK"}, {"VALUE": "+492", "VALUE_TYPE": "MOBILE"}]
    await rest("crm.contact.add", fields={"LAST_NAME": "Lee", "PHONE": phones})
    row = (await rest("crm.contact.get", id=1))[1]["result"]
    first, second = row["PHONE"]
    assert (first["VALUE"], second["VALUE_TYPE"], first["TYPE_ID"]) == ("+491", "MOBILE", "PHONE")
    # "change only the type" the naive way: ID + VALUE_TYPE, no VALUE -> the portal deletes the entry
    await rest("crm.contact.update", id=1, fields={"PHONE": [{"ID": first["ID"], "VALUE_TYPE": "HOME"}]})
    row = (await rest("crm.contact.get", id=1))[1]["result"]
    assert [p["VALUE"] for p in row["PHONE"]] == ["+492"]
    await rest("crm.contact.update", id=1, fields={"PHONE": [{"ID": second["ID"], "VALUE": "+493"}]})
    row = (await rest("crm.contact.get", id=1))[1]["result"]
    assert [(p["ID"], p["VALUE"]) for p in row["PHONE"]] == [(second["ID"], "+493")]


async def test_a_field_added_at_run_time_is_described_and_stored_until_reset(rest: Any) -> None:
    await rest("crm.deal.add", fields={"UF_CRM_COUPON": "X1"})
    assert "UF_CRM_COUPON" not in (await rest.admin.entities("deal"))[0]
    described = await rest.admin.add_field("deal", name="UF_CRM_COUPON", label="Coupon")
    assert described["listLabel"] == "Coupon"
    _, fields = await rest("crm.deal.fields")
    assert "UF_CRM_COUPON" in fields["result"]
    await rest("crm.deal.update", id=1, fields={"UF_CRM_COUPON": "X2"})
    assert (await rest.admin.entities("deal"))[0]["UF_CRM_COUPON"] == "X2"
    pipeline = await rest.admin.add_pipeline(2, "Retail", ["NEW", "PAID"])
    assert pipeline["stages"] == ["C2:NEW", "C2:PAID"]
    await rest.admin.reset()
    _, fields = await rest("crm.deal.fields")
    assert "UF_CRM_COUPON" not in fields["result"]
