"""The emulator over real HTTP on loopback: webhook routes, CRUD shapes, batch, auth errors, admin API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from bitrix_worker.bitrix.querystring import encode_query
from bitrix_worker.emulator import (
    EmulatorAdmin,
    EmulatorConfig,
    EmulatorServer,
    SchemaConfig,
    UserFieldConfig,
)
from bitrix_worker.errors import EmulatorError

TIME_KEYS = {
    "start",
    "finish",
    "duration",
    "processing",
    "date_start",
    "date_finish",
    "operating",
    "operating_reset_at",
}

#: The portal keeps only user fields it has; these tests write one multiple field.
TAGS = SchemaConfig(user_fields={"company": [UserFieldConfig(name="UF_CRM_TAGS", multiple=True)]})


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(user_id=7, secret="s3cret", crm_schema=TAGS)) as srv:
        yield srv


@pytest.fixture
async def client(server: EmulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.webhook_url, timeout=5) as c:
        yield c


@pytest.fixture
async def admin(server: EmulatorServer) -> AsyncIterator[EmulatorAdmin]:
    async with EmulatorAdmin(server.base_url) as a:
        yield a


def test_urls(server: EmulatorServer) -> None:
    assert server.port > 0
    assert server.base_url == f"http://127.0.0.1:{server.port}"
    assert server.webhook_url == f"http://127.0.0.1:{server.port}/rest/7/s3cret/"


async def test_crud_round_trip(client: httpx.AsyncClient) -> None:
    fields = {"TITLE": "Big deal", "OPPORTUNITY": 1500.5, "CURRENCY_ID": "USD", "ORIGINATOR_ID": "w"}
    r = await client.post("crm.deal.add.json", json={"fields": fields})
    assert r.status_code == 200
    assert r.json()["result"] == 1
    assert set(r.json()["time"]) == TIME_KEYS
    r = await client.post("crm.deal.get", json={"id": 1})
    deal = r.json()["result"]
    assert (deal["ID"], deal["TITLE"], deal["OPPORTUNITY"], deal["CURRENCY_ID"]) == (
        "1",
        "Big deal",
        "1500.50",
        "USD",
    )
    assert (deal["ORIGINATOR_ID"], deal["ORIGIN_ID"]) == ("w", None)
    r = await client.post("crm.deal.update", json={"id": 1, "fields": {"ORIGIN_ID": "e1", "TITLE": "x"}})
    assert r.json()["result"] is True
    r = await client.post("crm.deal.list", json={"filter": {"=ORIGINATOR_ID": "w", "=ORIGIN_ID": "e1"}})
    body = r.json()
    assert [d["ID"] for d in body["result"]] == ["1"]
    assert body["total"] == 1
    assert "next" not in body
    r = await client.post("crm.deal.delete", json={"id": 1})
    assert r.json()["result"] is True
    r = await client.post("crm.deal.get", json={"id": 1})
    assert (r.status_code, r.json()) == (400, {"error": "", "error_description": "Not found"})


async def test_get_query_and_form_bodies(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "crm.company.add",
        content=encode_query({"fields": {"TITLE": "ACME", "UF_CRM_TAGS": ["a", "b"]}}),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.json()["result"] == 1
    r = await client.get("crm.company.get", params={"id": "1"})
    assert r.json()["result"]["TITLE"] == "ACME"
    assert r.json()["result"]["UF_CRM_TAGS"] == ["a", "b"]
    r = await client.get(f"crm.company.list?{encode_query({'filter': {'%TITLE': 'cm'}, 'select': ['ID']})}")
    assert r.json()["result"] == [{"ID": "1"}]
    r = await client.post("crm.company.fields")
    assert r.json()["result"]["TITLE"]["type"] == "string"


async def test_errors_have_no_time_block(client: httpx.AsyncClient, server: EmulatorServer) -> None:
    r = await client.post("crm.deal.update", json={"id": 1, "fields": "nope"})
    assert (r.status_code, r.json()) == (400, {"error": "", "error_description": "Not found"})
    r = await client.post("crm.deal.add", json={"fields": "nope"})
    assert r.json() == {"error": "", "error_description": "Parameter 'fields' must be array."}
    r = await client.post("crm.deal.add", json={"fields": {"CURRENCY_ID": "GBP"}})
    assert r.json() == {"error": "", "error_description": 'Invalid value for the "Currency" field'}
    r = await client.post("crm.deal.get", json={"id": -1})
    assert r.json() == {"error": "", "error_description": "ID is not defined or invalid."}
    r = await client.post("crm.nothing.here", json={})
    assert (r.status_code, r.json()) == (
        404,
        {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"},
    )
    r = await client.post(f"{server.base_url}/rest/s3cret/crm.deal.add", json={})
    assert (r.status_code, r.json()["error_description"]) == (404, "Method not found!")
    r = await client.post(f"{server.base_url}/rest/crm.deal.add", json={})
    assert (r.status_code, r.json()["error"]) == (401, "NO_AUTH_FOUND")
    for url in (
        f"{server.base_url}/rest/7/wrong/crm.deal.add",
        f"{server.base_url}/rest/8/s3cret/crm.deal.add",
    ):
        r = await client.post(url, json={"fields": {}})
        assert r.status_code == 401
        assert r.json() == {
            "error": "INVALID_CREDENTIALS",
            "error_description": "Invalid request credentials",
        }


async def test_batch_over_http(client: httpx.AsyncClient, admin: EmulatorAdmin) -> None:
    cmd = {
        f"u{i}": "crm.deal.add?" + encode_query({"fields": {"TITLE": f"t{i}", "ORIGIN_ID": f"o{i}"}})
        for i in range(3)
    }
    cmd["bad"] = "crm.deal.update?" + encode_query({"id": 99, "fields": {"TITLE": "z"}})
    cmd["find"] = "crm.deal.list?" + encode_query({"filter": {"=ORIGIN_ID": "o1"}, "select": ["ID"]})
    r = await client.post("batch", json={"halt": False, "cmd": cmd})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"result", "time"}
    inner = body["result"]
    assert inner["result"] == {"u0": 1, "u1": 2, "u2": 3, "find": [{"ID": "2"}]}
    assert inner["result_error"] == {"bad": {"error": "", "error_description": "Not found"}}
    assert inner["result_total"] == {"find": 1}
    assert inner["result_next"] == []
    assert set(inner["result_time"]["u0"]) == TIME_KEYS
    r = await client.post(
        "batch", json={"halt": 1, "cmd": ["crm.deal.get?id=42", "crm.deal.add?fields[TITLE]=n"]}
    )
    inner = r.json()["result"]
    assert inner["result"] == []
    assert inner["result_error"] == [
        {"error": "", "error_description": "Not found"}
    ]  # PHP: keys 0..n-1 -> list
    stats = await admin.stats()
    assert stats["requests"] == 2
    assert stats["calls"]["batch"] == {"ok": 2}
    assert stats["calls"]["crm.deal.add"] == {"ok": 3}
    assert stats["calls"]["crm.deal.update"] == {"Not found": 1}
    assert stats["calls"]["crm.deal.get"] == {"Not found": 1}
    assert stats["entities"]["deal"] == 3


async def test_admin_entities_delete_reset_limits(client: httpx.AsyncClient, admin: EmulatorAdmin) -> None:
    for i in range(2):
        await client.post("crm.deal.add", json={"fields": {"TITLE": f"d{i}"}})
    rows = await admin.entities("deal")
    assert [r["TITLE"] for r in rows] == ["d0", "d1"]
    assert await admin.delete_entity("deal", 1) is True
    assert await admin.delete_entity("deal", 1) is False
    r = await client.post("crm.deal.update", json={"id": 1, "fields": {"TITLE": "x"}})
    assert r.json()["error_description"] == "Not found"
    stats = await admin.stats()
    assert stats["calls"] == {
        "crm.deal.add": {"ok": 2},
        "crm.deal.update": {"Not found": 1},
    }  # admin delete: no call
    with pytest.raises(EmulatorError):
        await admin.entities("spaceship")

    limits = await admin.set_limits(burst=250, drain_per_s=5)
    assert (limits["burst"], limits["drain_per_s"]) == (250, 5)
    assert (await admin.limits())["operating_limit_s"] == 480
    with pytest.raises(EmulatorError):
        await admin.set_limits(burst=0)

    await admin.set_faults(rules=[{"method": "crm.lead.add", "kind": "500"}])
    await admin.reset(keep_faults=True)
    assert (await admin.stats())["requests"] == 0
    assert (await admin.limits())["burst"] == 50  # start-up limits are back
    assert len((await admin.faults())["rules"]) == 1
    r = await client.post("crm.deal.add", json={"fields": {"TITLE": "again"}})
    assert r.json()["result"] == 1  # IDs restart from 1
    await admin.reset()
    assert (await admin.faults())["rules"] == []


def test_sync_context_manager_and_restart_free_port() -> None:
    with EmulatorServer() as first:
        port = first.port
        r = httpx.post(first.webhook_url + "crm.lead.add", json={"fields": {"TITLE": "x"}})
        assert r.json()["result"] == 1
    with pytest.raises(RuntimeError):
        _ = first.port
    with EmulatorServer(port=port) as again:
        assert again.port == port
