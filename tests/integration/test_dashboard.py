"""The dashboard's HTTP contract without a browser: authentication, CSRF, headers, filters, paging, refusals.

Requests go through httpx's ASGI transport to the real app, on a real Redis (the browser tests cover what
a person does; these cover what a script or an attacker could send).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from harness import Bench
from typer.testing import CliRunner

from bitrix_worker.cli import app as cli_app
from bitrix_worker.config import load_settings
from bitrix_worker.dashboard import check_bind, create_app
from bitrix_worker.errors import ConfigError

SECRET = "emulator-secret"


@pytest.fixture
async def client(bench: Bench) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(bench) as c:
        yield c


def _client(bench: Bench, **overrides: Any) -> httpx.AsyncClient:
    settings = bench.with_settings(**overrides).settings if overrides else bench.settings
    transport = httpx.ASGITransport(app=create_app(settings, redis=bench.redis))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


async def _seed(bench: Bench, rows: list[tuple[str, str, str]]) -> list[str]:
    ids = []
    for entity, key, cls in rows:
        payload = json.dumps({"op": "update", "entity": entity, "key": key, "fields": {}})
        error = json.dumps({"class": cls, "description": f"{cls} {key}", "attempts": 1, "history": []})
        raw = await bench.redis.xadd(bench.settings.dead_stream, {"payload": payload, "error": error})
        ids.append(raw.decode())
    return ids


async def test_pages_carry_security_headers_and_never_the_secret(
    bench: Bench, client: httpx.AsyncClient
) -> None:
    await bench.enqueue("create", "order-1", {"TITLE": "one"})
    await bench.run()
    (dead_id,) = await _seed(bench, [("deal", "order-2", "auth")])
    cookie = (await client.get("/")).headers["set-cookie"]
    assert "bw_csrf=" in cookie
    assert "HttpOnly" in cookie
    assert "samesite=strict" in cookie.lower()
    for path in ("/", "/live", "/find?q=order-1", "/find?q=deal:order-2", "/dead", f"/dead/{dead_id}"):
        response = await client.get(path)
        assert response.status_code == 200, path
        assert SECRET not in response.text, path
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["server-timing"].startswith("app;dur=")


async def test_dead_letter_filters_and_paging(bench: Bench, client: httpx.AsyncClient) -> None:
    rows = [("deal", f"k{i}", "auth" if i % 2 else "invalid_data") for i in range(120)] + [
        ("lead", "k7", "auth")
    ]
    ids = await _seed(bench, rows)
    first = (await client.get("/dead")).text
    assert ids[-1] in first
    assert ids[-50] in first
    assert ids[-51] not in first
    older = re.search(r'id="older" href="([^"]+)"', first)
    assert older
    second = (await client.get(older.group(1).replace("&amp;", "&"))).text
    assert ids[-51] in second
    assert ids[-1] not in second
    by_key = (await client.get("/dead", params={"key": "k7"})).text
    assert ids[7] in by_key
    assert ids[-1] in by_key
    assert ids[17] not in by_key
    lead = (await client.get("/dead", params={"key": "k7", "entity": "lead"})).text
    assert ids[-1] in lead
    assert ids[7] not in lead
    invalid = (await client.get("/dead", params={"class": "invalid_data"})).text
    assert ids[118] in invalid
    assert ids[119] not in invalid
    later = (await client.get("/dead", params={"since": "2999-01-01T00:00"})).text
    assert "no dead letters match this filter" in later
    bad = await client.get("/dead", params={"since": "yesterday"})
    assert bad.status_code == 400
    assert "not a time" in bad.text


async def test_filter_replay_confirms_exact_ids_and_is_capped(
    bench: Bench, client: httpx.AsyncClient
) -> None:
    from bitrix_worker.dashboard.dead import ACTION_CAP

    ids = await _seed(bench, [("deal", f"k{i}", "auth") for i in range(ACTION_CAP + 5)])
    csrf = _csrf((await client.get("/dead")).text)
    form = {"csrf": csrf, "action": "replay", "scope": "filter", "class": "auth", "confirm": "yes"}
    step1 = await client.post("/dead/action", data=form)
    assert step1.status_code == 200
    assert f"Replay {ACTION_CAP} dead letters?" in step1.text
    assert "More entries may match" in step1.text
    assert await bench.redis.xlen(bench.settings.stream) == 0  # a filter is never acted on unconfirmed
    confirmed = re.findall(r'name="id" value="([^"]+)"', step1.text)
    assert confirmed == ids[:ACTION_CAP]  # oldest first
    await _seed(bench, [("deal", "late", "auth")])  # arrives between the two steps: not touched
    step2 = await client.post(
        "/dead/action",
        data={"csrf": csrf, "action": "replay", "scope": "ids", "confirm": "yes", "id": confirmed[:3]},
    )
    assert "Replayed 3 of 3" in step2.text
    assert await bench.redis.xlen(bench.settings.stream) == 3
    assert await bench.redis.xlen(bench.settings.dead_stream) == ACTION_CAP + 5 + 1 - 3


async def test_token_login_sets_a_session_that_is_not_the_token(bench: Bench) -> None:
    async with _client(bench, dashboard_token="t0ken-xyz") as c:
        assert (await c.get("/")).headers["location"] == "/login"
        assert (await c.get("/dead")).status_code == 303
        login = await c.get("/login")
        csrf = _csrf(login.text)
        wrong = await c.post("/login", data={"csrf": csrf, "token": "nope"})
        assert wrong.status_code == 403
        assert "not right" in wrong.text
        ok = await c.post("/login", data={"csrf": csrf, "token": "t0ken-xyz"})
        assert ok.status_code == 303
        session = c.cookies["bw_session"]
        assert "t0ken-xyz" not in session
        page = await c.get("/")
        assert page.status_code == 200
        assert "t0ken-xyz" not in page.text
        await c.post("/logout", data={"csrf": csrf})
        assert (await c.get("/")).status_code == 303
    async with _client(bench) as bearer:
        bearer.headers["authorization"] = "Bearer t0ken-xyz"
        assert (await bearer.get("/live")).status_code == 200
        bearer.headers["authorization"] = "Bearer t0ken-xy"
        assert (await bearer.get("/live")).status_code == 303


async def test_basic_auth(bench: Bench) -> None:
    async with _client(bench, dashboard_user="ops", dashboard_password="pa55") as c:
        refused = await c.get("/")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Basic")

        def basic(user: str, password: str) -> dict[str, str]:
            return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

        assert (await c.get("/", headers=basic("ops", "pa55"))).status_code == 200
        assert (await c.get("/", headers=basic("ops", "pa56"))).status_code == 401
        assert (await c.get("/", headers=basic("op", "pa55"))).status_code == 401
        assert (await c.get("/", headers={"authorization": "Basic !!"})).status_code == 401
        assert (await c.get("/static/dashboard.css")).status_code == 200  # assets need no login


def test_no_exposed_bind_without_authentication() -> None:
    open_settings = load_settings()
    check_bind(open_settings, "127.0.0.1")
    check_bind(open_settings, "::1")
    for host in ("0.0.0.0", "192.0.2.1", "dashboard.example.com"):
        with pytest.raises(ConfigError, match="BITRIX_WORKER_DASHBOARD_TOKEN"):
            check_bind(open_settings, host)
    check_bind(load_settings(dashboard_token="x"), "0.0.0.0")
    with pytest.raises(ConfigError, match="DASHBOARD_PASSWORD"):
        load_settings(dashboard_user="ops")
    result = CliRunner().invoke(
        cli_app, ["dashboard", "--host", "0.0.0.0"], env={"BITRIX_WORKER_DASHBOARD_TOKEN": ""}
    )
    assert result.exit_code == 2
    assert "not a loopback address" in result.stderr
    assert "Traceback" not in result.output


async def test_redis_down_is_a_page_not_a_traceback(bench: Bench) -> None:
    import redis.asyncio as aioredis

    down = aioredis.Redis.from_url("redis://:pw@127.0.0.1:1/0", socket_connect_timeout=0.5)
    app = create_app(load_settings(redis_url="redis://:pw@127.0.0.1:1/0"), redis=down)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as c:
        for path in ("/", "/dead", "/find?q=k"):
            response = await c.get(path)
            assert response.status_code == 503, path
            assert "Not available" in response.text
            assert "pw@" not in response.text
    await down.aclose()


def test_config_never_prints_the_dashboard_secrets() -> None:
    env = {"BITRIX_WORKER_DASHBOARD_TOKEN": "t0k3n-s3cret", "BITRIX_WORKER_DASHBOARD_USER": "ops",
           "BITRIX_WORKER_DASHBOARD_PASSWORD": "pa55-s3cret"}  # fmt: skip
    for args in (["config"], ["config", "--json"]):
        result = CliRunner().invoke(cli_app, args, env=env)
        assert result.exit_code == 0, result.output
        assert "s3cret" not in result.output
        assert "dashboard_token" in result.output


async def test_replay_guard_leaves_an_entry_that_would_roll_its_key_back(
    bench: Bench, client: httpx.AsyncClient
) -> None:
    await bench.enqueue("create", "order-g", {"TITLE": "new"}, version=1)
    await bench.enqueue("update", "order-g", {"STAGE_ID": "WON"}, version=3)
    await bench.run()
    old = json.dumps(
        {"op": "update", "entity": "deal", "key": "order-g", "fields": {"STAGE_ID": "NEW"}, "version": 2}
    )
    error = json.dumps({"class": "server_error", "description": "x", "attempts": 6, "history": []})
    dead_id = (await bench.redis.xadd(bench.settings.dead_stream, {"payload": old, "error": error})).decode()
    csrf = _csrf((await client.get("/dead")).text)
    form = {"csrf": csrf, "action": "replay", "scope": "ids", "id": dead_id}
    step1 = await client.post("/dead/action", data=form)
    assert "the key is at version 3, this operation is version 2" in step1.text
    step2 = await client.post("/dead/action", data={**form, "confirm": "yes"})
    assert "Replayed 0 of 1" in step2.text
    assert "roll their key back" in step2.text
    assert await bench.redis.xlen(bench.settings.dead_stream) == 1
    forced = await client.post("/dead/action", data={**form, "confirm": "yes", "force": "yes"})
    assert "Replayed 1 of 1" in forced.text
    assert await bench.redis.xlen(bench.settings.dead_stream) == 0


async def test_portal_reset_resumes_and_forgets_the_slow_down(
    bench: Bench, client: httpx.AsyncClient
) -> None:
    from bitrix_worker.gate import PortalGate

    gate = PortalGate.from_settings(bench.redis, bench.settings)
    await gate.pause("maintenance")
    csrf = _csrf((await client.get("/")).text)
    first = await client.post("/portal/reset", data={"csrf": csrf})
    assert "Reset the portal?" in first.text
    assert (await gate.state()).open
    done = await client.post("/portal/reset", data={"csrf": csrf, "confirm": "yes"})
    assert "full rate again" in done.text
    assert not (await gate.state()).open
    refused = await client.post("/portal/pause", data={"confirm": "yes", "reason": "x"})
    assert refused.status_code == 403
    assert not (await gate.state()).open
