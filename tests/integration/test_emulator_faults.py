"""Every fault kind over real HTTP: what the client sees and whether the write was committed."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bitrix_worker.emulator import EmulatorAdmin, EmulatorConfig, EmulatorServer, FaultConfig

ADD = {"fields": {"TITLE": "t", "ORIGIN_ID": "ext-1"}}


@pytest.fixture
async def server() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(EmulatorConfig(seed=42, faults=FaultConfig(hang_s=5.0))) as srv:
        yield srv


@pytest.fixture
async def client(server: EmulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.webhook_url, timeout=2.0) as c:
        yield c


@pytest.fixture
async def admin(server: EmulatorServer) -> AsyncIterator[EmulatorAdmin]:
    async with EmulatorAdmin(server.base_url) as a:
        yield a


async def _deals(admin: EmulatorAdmin) -> int:
    return len(await admin.entities("deal"))


@pytest.mark.parametrize(
    ("kind", "status", "body"),
    [
        ("500", 500, {"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"}),
        ("auth", 401, {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"}),
        (
            "overload",
            503,
            {"error": "OVERLOAD_LIMIT", "error_description": "REST API is blocked due to overload."},
        ),
        ("rate_limit", 503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}),
        (
            "method_limit",
            429,
            {
                "error": "OPERATION_TIME_LIMIT",
                "error_description": "Method is blocked due to operation time limit.",
            },
        ),
        ("not_found", 400, {"error": "", "error_description": "Not found"}),
        ("invalid", 400, {"error": "", "error_description": 'Invalid value for the "Currency" field'}),
    ],
)
async def test_json_faults_are_not_executed(
    kind: str, status: int, body: dict[str, Any], client: httpx.AsyncClient, admin: EmulatorAdmin
) -> None:
    await admin.set_faults(rules=[{"method": "crm.deal.add", "kind": kind}])
    r = await client.post("crm.deal.add", json=ADD)
    assert (r.status_code, r.json()) == (status, body)
    assert await _deals(admin) == 0
    stats = await admin.stats()
    assert stats["faults_injected"] == {kind: 1}


async def test_500_after_commit(client: httpx.AsyncClient, admin: EmulatorAdmin) -> None:
    await admin.set_faults(rules=[{"method": "crm.deal.add", "sequence": ["500_after_commit"]}])
    r = await client.post("crm.deal.add", json=ADD)
    assert (r.status_code, r.json()["error"]) == (500, "INTERNAL_SERVER_ERROR")
    assert await _deals(admin) == 1  # ambiguous: it was written
    assert (await admin.stats())["calls"]["crm.deal.add"] == {"FAULT_500_AFTER_COMMIT": 1}


@pytest.mark.parametrize(
    ("kind", "title"),
    [
        ("502", "502 Bad Gateway"),
        ("503", "503 Service Temporarily Unavailable"),
        ("504", "504 Gateway Time-out"),
    ],
)
async def test_gateway_html(kind: str, title: str, client: httpx.AsyncClient, admin: EmulatorAdmin) -> None:
    await admin.set_faults(rules=[{"method": "crm.deal.*", "kind": kind}])
    r = await client.post("crm.deal.add", json=ADD)
    assert r.status_code == int(kind)
    assert r.headers["content-type"].startswith("text/html")
    assert title in r.text
    assert await _deals(admin) == 0


async def test_html_503_is_answered_before_the_bucket_counts_the_request(
    client: httpx.AsyncClient, admin: EmulatorAdmin
) -> None:
    """An outage page comes from the web server in front of the portal: a full bucket does not turn it into
    QUERY_LIMIT_EXCEEDED, and the bucket does not fill up with requests the portal never saw."""
    await admin.set_limits(limits_enabled=True, burst=2, drain_per_s=0.001)
    await admin.set_faults(rules=[{"method": "*", "scope": "request", "kind": "503"}])
    for _ in range(5):
        r = await client.post("crm.deal.fields")
        assert r.status_code == 503
        assert r.headers["content-type"].startswith("text/html")
    await admin.set_faults(rules=[])
    assert (await client.post("crm.deal.fields")).status_code == 200  # the bucket still has its room
    assert (await client.post("crm.deal.fields")).status_code == 200
    assert (await client.post("crm.deal.fields")).json()["error"] == "QUERY_LIMIT_EXCEEDED"


async def test_timeout_commit_commits_and_the_client_times_out(
    client: httpx.AsyncClient, admin: EmulatorAdmin
) -> None:
    await admin.set_faults(rules=[{"method": "crm.deal.add", "sequence": ["timeout_commit"]}])
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        await client.post("crm.deal.add", json=ADD, timeout=0.5)
    assert time.monotonic() - started < 2
    rows = await admin.entities("deal")
    assert [r["ORIGIN_ID"] for r in rows] == ["ext-1"]
    # the worker's duplicate check finds it
    r = await client.post("crm.deal.list", json={"filter": {"=ORIGIN_ID": "ext-1"}, "select": ["ID"]})
    assert r.json()["result"] == [{"ID": "1"}]


async def test_timeout_hangs_without_commit(client: httpx.AsyncClient, admin: EmulatorAdmin) -> None:
    await admin.set_faults(rules=[{"method": "crm.deal.add", "sequence": ["timeout"]}])
    with pytest.raises(httpx.ReadTimeout):
        await client.post("crm.deal.add", json=ADD, timeout=0.3)
    assert await _deals(admin) == 0


async def test_timeout_answers_504_after_hang(client: httpx.AsyncClient, admin: EmulatorAdmin) -> None:
    await admin.set_faults(rules=[{"method": "crm.deal.add", "sequence": ["timeout"]}], hang_s=0.2)
    r = await client.post("crm.deal.add", json=ADD)
    assert r.status_code == 504
    assert await _deals(admin) == 0


async def test_reset_gives_a_connection_error(client: httpx.AsyncClient, admin: EmulatorAdmin) -> None:
    await admin.set_faults(rules=[{"method": "crm.deal.add", "sequence": ["reset"]}])
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)) as info:
        await client.post("crm.deal.add", json=ADD)
    assert info.value is not None
    assert await _deals(admin) == 0
    r = await client.post("crm.deal.add", json=ADD)  # the client recovers on a new connection
    assert r.json()["result"] == 1
    assert (await admin.stats())["calls"]["crm.deal.add"] == {"FAULT_RESET": 1, "ok": 1}


def test_reset_is_a_real_tcp_rst(server: EmulatorServer) -> None:
    """Seen from a plain socket: ECONNRESET, not an orderly close and not an HTTP answer."""
    httpx.post(f"{server.base_url}/_emulator/faults", json={"rules": [{"kind": "reset"}]})
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(
            b"POST /rest/1/emulator-secret/crm.deal.fields HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        )
        with pytest.raises(ConnectionResetError):
            sock.recv(1024)


async def test_sequence_is_consumed_call_by_call(client: httpx.AsyncClient, admin: EmulatorAdmin) -> None:
    await admin.set_faults(
        rules=[{"method": "crm.deal.get", "sequence": ["500", "ok", "502", None, "not_found"]}]
    )
    await client.post("crm.deal.add", json=ADD)
    statuses = [(await client.post("crm.deal.get", json={"id": 1})).status_code for _ in range(6)]
    assert statuses == [500, 200, 502, 200, 400, 200]
    state = (await admin.faults())["state"]
    assert state["sequence_positions"] == [5]


async def test_latency(client: httpx.AsyncClient, admin: EmulatorAdmin) -> None:
    await admin.set_faults(latency={"dist": "uniform", "min_s": 0.15, "max_s": 0.2, "method": "crm.*"})
    started = time.monotonic()
    await client.post("crm.deal.fields")
    assert time.monotonic() - started >= 0.15
    started = time.monotonic()
    await admin.stats()
    assert time.monotonic() - started < 0.15


async def test_batch_sub_command_faults_go_to_result_error(
    client: httpx.AsyncClient, admin: EmulatorAdmin
) -> None:
    await admin.set_faults(
        rules=[
            {
                "method": "crm.deal.update",
                "scope": "command",
                "sequence": ["500", "500_after_commit", "auth"],
            },
        ]
    )
    await client.post("crm.deal.add", json=ADD)
    cmd = {f"c{i}": f"crm.deal.update?id=1&fields[TITLE]=v{i}" for i in range(4)}
    r = await client.post("batch", json={"cmd": cmd})
    inner = r.json()["result"]
    assert r.status_code == 200
    assert inner["result"] == {"c3": True}
    assert {k: v["error"] for k, v in inner["result_error"].items()} == {
        "c0": "INTERNAL_SERVER_ERROR",
        "c1": "INTERNAL_SERVER_ERROR",  # 500_after_commit: it did run
        "c2": "INVALID_CREDENTIALS",
    }
    assert (await admin.entities("deal"))[0]["TITLE"] == "v3"
    # a direct (request-scope) call is not affected by a command-scope rule
    await admin.set_faults(rules=[{"method": "crm.deal.update", "scope": "command", "kind": "500"}])
    r = await client.post("crm.deal.update", json={"id": 1, "fields": {"TITLE": "direct"}})
    assert r.json()["result"] is True


async def test_outer_batch_faults(client: httpx.AsyncClient, admin: EmulatorAdmin) -> None:
    cmd = [f"crm.deal.add?fields[ORIGIN_ID]=b{i}" for i in range(3)]
    await admin.set_faults(
        rules=[{"method": "batch", "scope": "request", "sequence": ["500", "500_after_commit"]}]
    )
    r = await client.post("batch", json={"cmd": cmd})
    assert r.status_code == 500
    assert await _deals(admin) == 0  # 500: nothing ran
    r = await client.post("batch", json={"cmd": cmd})
    assert r.status_code == 500
    assert await _deals(admin) == 3  # after commit: the whole batch ran
    await admin.set_faults(rules=[{"method": "batch", "kind": "timeout_commit", "max_hits": 1}])
    with pytest.raises(httpx.ReadTimeout):
        await client.post("batch", json={"cmd": cmd}, timeout=0.3)
    assert await _deals(admin) == 6


async def test_sub_command_transport_fault_takes_down_the_batch(
    client: httpx.AsyncClient, admin: EmulatorAdmin
) -> None:
    await admin.set_faults(
        rules=[{"method": "crm.lead.add", "scope": "command", "sequence": [None, "reset"]}]
    )
    cmd = [f"crm.lead.add?fields[TITLE]=l{i}" for i in range(4)]
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        await client.post("batch", json={"cmd": cmd})
    assert len(await admin.entities("lead")) == 1  # the first command had run, the rest never did
    await admin.set_faults(
        rules=[{"method": "crm.lead.add", "scope": "command", "sequence": [None, "timeout_commit"]}]
    )
    with pytest.raises(httpx.ReadTimeout):
        await client.post("batch", json={"cmd": cmd}, timeout=0.3)
    assert len(await admin.entities("lead")) == 5  # timeout_commit: the portal finished the whole batch


async def test_auth_outage_window(client: httpx.AsyncClient, admin: EmulatorAdmin) -> None:
    await admin.set_faults(auth_outage={"start_s": 0.3, "duration_s": 0.4})
    assert (await client.post("crm.deal.fields")).status_code == 200
    await asyncio.sleep(0.35)
    r = await client.post("crm.deal.fields")
    assert (r.status_code, r.json()["error"]) == (401, "INVALID_CREDENTIALS")
    await asyncio.sleep(0.4)
    assert (await client.post("crm.deal.fields")).status_code == 200
    await admin.set_faults(auth_outage=True)
    assert (await client.post("crm.deal.fields")).status_code == 401
    assert (await admin.faults())["state"]["auth_outage_active"] is True
    await admin.set_faults(auth_outage=False)
    assert (await client.post("crm.deal.fields")).status_code == 200


async def test_faults_from_start_config_and_seeded_probability() -> None:
    faults = FaultConfig.model_validate(
        {"rules": [{"method": "crm.deal.fields", "kind": "502", "probability": 0.5}]}
    )

    async def pattern() -> list[int]:
        async with (
            EmulatorServer(EmulatorConfig(seed=123, faults=faults)) as srv,
            httpx.AsyncClient(base_url=srv.webhook_url) as c,
        ):
            return [(await c.post("crm.deal.fields")).status_code for _ in range(20)]

    first = await pattern()
    assert first == await pattern()
    assert 200 in first
    assert 502 in first


async def test_stop_does_not_wait_for_hanging_requests() -> None:
    config = EmulatorConfig(faults=FaultConfig.model_validate({"rules": [{"kind": "timeout"}], "hang_s": 30}))
    server = EmulatorServer(config)
    await asyncio.to_thread(server.start)
    async with httpx.AsyncClient(base_url=server.webhook_url, timeout=10) as client:
        request = asyncio.ensure_future(client.post("crm.deal.fields"))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await asyncio.to_thread(server.stop)
        assert time.monotonic() - started < 3
        response = await request
        assert response.status_code == 504
