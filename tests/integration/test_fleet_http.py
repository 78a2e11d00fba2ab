"""A multi-portal worker process's HTTP endpoints (``BITRIX_WORKER_PORTALS``), over real HTTP on loopback,
a real Redis and emulated portals (``MultiPortalServer``, one loopback address per portal):

* ``run_worker`` in fleet mode serves /metrics with the per-portal series labelled ``portal``, counting each
  portal's deliveries apart; past ``BITRIX_WORKER_METRICS_PORTALS`` the rest is summed as ``other``;
* /healthz names a stuck portal (and says 503 once the fleet has ended); /readyz stays 200 with a portal
  whose auth is broken, listing it;
* the install callback registers a portal and the fleet serves it from its next heartbeat;
* a taken port is a setting error, as for one portal.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from harness import FAST
from prometheus_client.parser import text_string_to_metric_families

from bitrix_worker.config import Settings, load_settings
from bitrix_worker.emulator import EmulatorAdmin, EmulatorConfig
from bitrix_worker.emulator.multi import MultiPortalServer
from bitrix_worker.emulator.oauth import OAuthConfig
from bitrix_worker.errors import ConfigError
from bitrix_worker.fleet import PortalFleet, portal_settings
from bitrix_worker.gate import PortalGate
from bitrix_worker.mapping import MappingStore
from bitrix_worker.metrics import PrometheusEvents
from bitrix_worker.monitoring import FleetProbes, HttpServer, create_app
from bitrix_worker.operations import Entity, OpKind
from bitrix_worker.portals.model import PlanLimits, PortalRecord
from bitrix_worker.portals.registry import PortalRegistry
from bitrix_worker.portals.secrets import SecretBox, new_key
from bitrix_worker.producer import build_operation, enqueue_many
from bitrix_worker.redis.gauges import QueueReader
from bitrix_worker.runner import run_worker

pytestmark = pytest.mark.timeout(120)

HOSTS = {"p-a": "127.0.0.2", "p-b": "127.0.0.3", "p-c": "127.0.0.4"}
INSTALL_HOST = "127.0.0.5"  # an OAuth portal that is only registered by the install callback
FAST_PLAN = PlanLimits("test", 1000, 1000.0)
APP_TOKEN = "install-app-token-0123456789"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Fleet:
    settings: Settings
    server: MultiPortalServer
    redis: aioredis.Redis
    registry: PortalRegistry
    oauth: OAuthConfig

    def deals(self, host: str) -> list[dict[str, Any]]:
        return self.server.apps[host].portal.store.all("deal")

    async def enqueue(self, pid: str, n: int) -> None:
        ops = [
            build_operation(OpKind.CREATE, Entity.DEAL, f"{pid}-{i}", {"TITLE": f"{pid}:{i}"})
            for i in range(n)
        ]
        await enqueue_many(self.redis, ops, stream=self.settings.stream, portal=pid)

    def with_settings(self, **overrides: Any) -> Settings:
        data = {**self.settings.model_dump(), **overrides}
        for name, value in data.items():
            if hasattr(value, "get_secret_value"):
                data[name] = value.get_secret_value()
        self.settings = load_settings(**data)
        return self.settings


@pytest.fixture
async def fleet(redis_url: str, key_prefix: str, tmp_path: Path) -> AsyncIterator[Fleet]:
    oauth = OAuthConfig()
    configs = {h: EmulatorConfig(seed=7, burst=1000, drain_per_s=1000) for h in HOSTS.values()}
    configs[INSTALL_HOST] = EmulatorConfig(seed=7, burst=1000, drain_per_s=1000, oauth=oauth)
    async with MultiPortalServer(configs) as server:
        key = new_key()
        database_url = f"sqlite+aiosqlite:///{tmp_path / 'mapping.sqlite3'}"
        settings = load_settings(
            portals="all",
            secrets_key=key,
            redis_url=redis_url,
            database_url=database_url,
            stream=f"{key_prefix}:ops",
            dead_stream=f"{key_prefix}:dead",
            group="g",
            consumer=f"{key_prefix}-w",
            **{**FAST, "http_port": _free_port()},
        )
        registry = await PortalRegistry.connect(database_url, box=SecretBox([key]))
        for pid, host in HOSTS.items():
            url = server.webhook_url(host)
            endpoint = url.split("/rest/", maxsplit=1)[0] + "/rest/"
            await registry.add(PortalRecord(pid, "webhook", endpoint, plan=FAST_PLAN, webhook_url=url))
        client = aioredis.Redis.from_url(redis_url)
        try:
            yield Fleet(settings, server, client, registry, oauth)
        finally:
            await registry.close()
            keys = [k async for k in client.scan_iter(match=f"*{key_prefix}*", count=500)]
            if keys:
                await client.delete(*keys)
            await client.aclose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def samples(text: str) -> Samples:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def by_portal(m: Samples, name: str, **labels: str) -> dict[str, float]:
    """``name``'s samples matching ``labels``, summed per ``portal`` label."""
    out: dict[str, float] = {}
    for (n, lab), value in m.items():
        d = dict(lab)
        if n == name and all(d.get(k) == v for k, v in labels.items()):
            out[d["portal"]] = out.get(d["portal"], 0.0) + value
    return out


async def _until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.1)


async def _answers(http: httpx.AsyncClient, path: str, status: int = 200) -> bool:
    try:
        return (await http.get(path)).status_code == status
    except httpx.TransportError:
        return False


async def _serves(http: httpx.AsyncClient, n: int) -> bool:
    ready = await http.get("/readyz")
    return ready.status_code == 200 and ready.json()["portals"] == n


async def _scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics")
    assert response.status_code == 200
    return samples(response.text)


async def _stop(task: asyncio.Task[Any]) -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # the process's own handler: every loop drains and stops
    await asyncio.wait_for(task, 30)


async def test_a_fleet_serves_its_endpoints_with_metrics_labelled_by_portal(fleet: Fleet) -> None:
    f = fleet
    sent = {"p-a": 5, "p-b": 3, "p-c": 2}
    task = asyncio.create_task(run_worker(f.settings))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{f.settings.http_port}") as http:
        try:
            await _until(lambda: _answers(http, "/healthz"))
            for pid, n in sent.items():
                await f.enqueue(pid, n)

            async def all_applied() -> bool:
                ops = by_portal(await _scrape(http), "bitrix_worker_operations_total", outcome="applied")
                return sum(ops.values()) >= sum(sent.values())

            await _until(all_applied)
            await asyncio.sleep(1.1)  # the gauges are read at most once a second
            text = (await http.get("/metrics")).text
            health, ready = await http.get("/healthz"), await http.get("/readyz")
        finally:
            await _stop(task)
    m = samples(text)
    assert by_portal(m, "bitrix_worker_operations_total", outcome="applied", reason="created") == sent
    assert set(by_portal(m, "bitrix_worker_calls_total", result="ok")) == set(sent)
    assert all(v >= 1 for v in by_portal(m, "bitrix_worker_calls_total").values())
    assert set(by_portal(m, "bitrix_worker_call_duration_seconds_count")) == set(sent)
    assert set(by_portal(m, "bitrix_worker_limiter_wait_seconds_total")) <= set(sent)  # only who waited
    for gauge in (
        "stream_length",
        "pending",
        "scheduled",
        "dead_letter_size",
        "waiting_for_refs",
        "lag_seconds",
    ):
        assert by_portal(m, f"bitrix_worker_{gauge}") == dict.fromkeys(sent, 0.0), gauge
    assert by_portal(m, "bitrix_worker_breaker_open") == dict.fromkeys(sent, 0.0)
    assert m["bitrix_worker_end_to_end_seconds_count", ()] == sum(sent.values())  # process-wide, unlabelled
    assert (health.status_code, health.json()) == (200, {"alive": True, "portals": 3})
    assert (ready.status_code, ready.json()) == (200, {"ready": True, "portals": 3, "breaker_open": {}})
    for host in HOSTS.values():  # no webhook secret, no key becomes a label or a value
        assert f.server.configs[host].secret not in text
    assert "p-a-0" not in text
    assert len({d["TITLE"] for h in HOSTS.values() for d in f.deals(h)}) == sum(sent.values())


async def test_portals_past_the_label_cap_are_summed_as_other(fleet: Fleet) -> None:
    f = fleet
    settings = f.with_settings(metrics_portals=2)
    sent = {"p-a": 1, "p-b": 2, "p-c": 3}
    task = asyncio.create_task(run_worker(settings))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}") as http:
        try:
            await _until(lambda: _answers(http, "/healthz"))
            for pid, n in sent.items():
                await f.enqueue(pid, n)

            async def applied() -> bool:
                ops = by_portal(await _scrape(http), "bitrix_worker_operations_total", outcome="applied")
                return sum(ops.values()) >= 6

            await _until(applied)
            await asyncio.sleep(1.1)  # the gauges are read at most once a second
            m = await _scrape(http)
        finally:
            await _stop(task)
    # the first two loops to start take the two labels; the third portal's series are "other"
    labels = set(by_portal(m, "bitrix_worker_stream_length"))
    assert "other" in labels
    assert len(labels) == 3
    (folded,) = set(sent) - labels
    expected = {pid: n for pid, n in sent.items() if pid != folded} | {"other": sent[folded]}
    assert by_portal(m, "bitrix_worker_operations_total", outcome="applied") == expected
    assert {dict(lab).get("portal") for _, lab in m} == {None, *labels}


@dataclass
class Served:
    fleet: PortalFleet
    task: asyncio.Task[None]
    http: httpx.AsyncClient


@asynccontextmanager
async def _serving(f: Fleet, settings: Settings) -> AsyncIterator[Served]:
    """The fleet and its endpoints, put together as ``run_fleet`` does, for a test to stop it at will."""
    metrics = PrometheusEvents(portals=settings.metrics_portals)
    store = await MappingStore.connect(settings.database_url)
    fl = PortalFleet(settings, f.redis, store, f.registry, metrics)
    task = asyncio.create_task(fl.run())
    probes = FleetProbes(
        settings,
        QueueReader(f.redis, settings.keys, settings.group),
        store,
        f.registry,
        lambda: {pid: s.worker for pid, s in fl.served.items()},
        lambda: not task.done(),
        metrics,
    )
    server = HttpServer(create_app(probes), "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            yield Served(fl, task, http)
    finally:
        fl.stop()
        await asyncio.wait_for(task, 30)
        await server.stop()
        await store.close()


async def test_healthz_names_a_stuck_portal_and_readyz_lists_a_broken_one(fleet: Fleet) -> None:
    f = fleet
    settings = f.with_settings(read_timeout_s=10.0, stall_after_s=0.5)
    await f.registry.set_state("p-c", "auth_broken", "invalid_grant")  # its loop starts paused
    admin = EmulatorAdmin(f.server.base_url(HOSTS["p-a"]))
    await admin.set_faults(latency={"dist": "fixed", "s": 2.5})
    async with _serving(f, settings) as s:
        await _until(lambda: _serves(s.http, 3))  # the loops start one after another
        ready = await s.http.get("/readyz")
        assert ready.json() == {
            "ready": True,
            "portals": 3,
            "breaker_open": {"p-c": "auth_broken: invalid_grant"},
        }
        assert (await s.http.get("/healthz")).json() == {"alive": True, "portals": 3}
        await f.enqueue("p-c", 2)  # held by its shut gate: not stuck
        await f.enqueue("p-a", 1)  # its request takes 2.5 s: no progress for longer than 0.5 s
        await _until(lambda: _answers(s.http, "/healthz", 503), 10)
        health = (await s.http.get("/healthz")).json()
        assert health["alive"] is False
        assert list(health["stuck"]) == ["p-a"]
        assert health["stuck"]["p-a"].startswith("stuck: holds 1 entries and made no progress for")
        assert health["reason"] == f"portal p-a: {health['stuck']['p-a']}"
        assert (await s.http.get("/readyz")).status_code == 200  # the process still serves the others
        m = await _scrape(s.http)
        assert by_portal(m, "bitrix_worker_breaker_open") == {"p-a": 0, "p-b": 0, "p-c": 1}
        assert by_portal(m, "bitrix_worker_stream_length")["p-c"] == 2
        await _until(lambda: _answers(s.http, "/healthz", 200), 10)  # the request ended: progress again
        s.fleet.stop()
        await asyncio.wait_for(s.task, 30)
        health, ready = await s.http.get("/healthz"), await s.http.get("/readyz")
        assert (health.status_code, health.json()) == (
            503,
            {"alive": False, "reason": "the portal fleet has stopped"},
        )
        assert (ready.status_code, ready.json()["reason"]) == (503, "the portal fleet has stopped")
    await admin.aclose()


def _install_form(f: Fleet, pid: str) -> dict[str, str]:
    base = f.server.base_url(INSTALL_HOST)
    return {
        "event": "ONAPPINSTALL",
        "auth[domain]": pid,
        "auth[access_token]": f.oauth.access_token,
        "auth[refresh_token]": f.oauth.refresh_token,
        "auth[expires_in]": "3600",
        "auth[client_endpoint]": f"{base}/rest/",
        "auth[server_endpoint]": f"{base}/rest/",
        "auth[member_id]": f.oauth.member_id,
        "auth[application_token]": APP_TOKEN,
    }


async def test_an_install_in_fleet_mode_registers_a_portal_the_fleet_then_serves(fleet: Fleet) -> None:
    f = fleet
    settings = f.with_settings(
        install_enabled=True,
        install_application_token=APP_TOKEN,
        oauth_client_id=f.oauth.client_id,
        oauth_client_secret=f.oauth.client_secret,
    )
    task = asyncio.create_task(run_worker(settings))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.http_port}") as http:
        try:
            await _until(lambda: _answers(http, "/healthz"))
            refused = await http.post(
                "/install", data={**_install_form(f, "p-new"), "auth[application_token]": "x"}
            )
            assert (refused.status_code, refused.json()) == (401, {"error": "forbidden"})
            assert await f.registry.find("p-new") is None
            answer = await http.post("/install", data=_install_form(f, "p-new"))
            assert (answer.status_code, answer.json()) == (200, {"ok": True, "portal": "p-new"})
            record = await f.registry.find("p-new")
            assert record is not None
            assert (record.auth, record.state) == ("oauth", "active")
            await f.enqueue("p-new", 4)

            async def served() -> bool:
                health = (await http.get("/healthz")).json()
                return health.get("portals") == 4 and len(f.deals(INSTALL_HOST)) >= 4

            await _until(served)
            # its refresh token dies (what the token manager does): paused; a re-install reopens its gate,
            # which lives in Redis under the portal's stream whichever process serves it
            await f.registry.set_state("p-new", "auth_broken", "invalid_grant")
            gate = PortalGate.from_settings(f.redis, portal_settings(settings, "p-new", None))
            await gate.pause("auth_broken: invalid_grant")
            ready = (await http.get("/readyz")).json()
            assert ready["breaker_open"] == {"p-new": "auth_broken: invalid_grant"}
            assert (await http.post("/install", data=_install_form(f, "p-new"))).status_code == 200
            assert (await http.get("/readyz")).json()["breaker_open"] == {}
            await f.enqueue("p-new", 6)  # keys p-new-4, p-new-5 are new
            await _until(lambda: _deals_at_least(f, 6))
            m = await _scrape(http)
            text = (await http.get("/metrics")).text
        finally:
            await _stop(task)
    assert by_portal(m, "bitrix_worker_operations_total", outcome="applied").get("p-new", 0) >= 4
    assert "p-new" in by_portal(m, "bitrix_worker_stream_length")
    assert f.oauth.refresh_token not in text
    assert f.oauth.access_token not in text
    assert f.oauth.client_secret not in text
    assert APP_TOKEN not in text


async def _deals_at_least(f: Fleet, n: int) -> bool:
    return len(f.deals(INSTALL_HOST)) >= n


async def test_a_fleet_reports_a_taken_port_as_a_setting_error(fleet: Fleet) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        settings = fleet.with_settings(http_port=s.getsockname()[1])
        with pytest.raises(ConfigError, match="cannot listen") as caught:
            await asyncio.wait_for(run_worker(settings), 30)
    assert caught.value.setting == "BITRIX_WORKER_HTTP_PORT"


async def test_the_scrape_bench_runs_and_cleans_up(redis_url: str, capfd: pytest.CaptureFixture[str]) -> None:
    import argparse
    import re

    from bench.scrape import main

    await main(argparse.Namespace(portals=5, scrapes=2, redis=redis_url))
    out = capfd.readouterr().out
    bounded = re.search(r"5 portals, 32 at a time: .* (\d+) Redis commands per scrape", out)
    assert bounded is not None, out
    assert int(bounded.group(1)) >= 8 * 5  # counted server-wide: the shared test Redis adds others'
    assert "5 portals, one after another: " in out
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert [k async for k in client.scan_iter(match=f"bench-scrape-{os.getpid()}*", count=1000)] == []
    finally:
        await client.aclose()
