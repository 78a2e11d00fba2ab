"""/metrics, /healthz, /readyz over real HTTP, served from a running worker on a real Redis and emulator."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from harness import Bench
from prometheus_client.parser import text_string_to_metric_families

from bitrix_worker.metrics import PrometheusEvents, method_label
from bitrix_worker.monitoring import HttpServer, Probes, create_app
from bitrix_worker.reasons import Reason
from bitrix_worker.redis.breaker import Breaker
from bitrix_worker.runner import run_worker
from bitrix_worker.taxonomy import ErrorClass
from bitrix_worker.worker import Worker


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@asynccontextmanager
async def serving(bench: Bench) -> AsyncIterator[tuple[str, Worker, PrometheusEvents]]:
    metrics = PrometheusEvents()
    async with Worker.open(bench.settings, events=metrics) as worker:
        task = asyncio.create_task(worker.run())
        probes = Probes(
            bench.settings, worker.reader, worker.store, worker.portal.gate, lambda: not task.done(), metrics
        )
        server = HttpServer(create_app(probes), "127.0.0.1", 0)
        await server.start()
        try:
            yield f"http://127.0.0.1:{server.port}", worker, metrics
        finally:
            worker.stop()
            await task
            await server.stop()


async def _until(predicate: object, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await predicate():  # type: ignore[operator]
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_metrics_follow_the_worker_and_gauges_are_read_from_redis(bench: Bench) -> None:
    bench.with_settings(retries_server_error=1)
    await bench.admin.set_faults(rules=[{"method": "crm.deal.add", "kind": "500"}])
    await bench.enqueue("create", "order-1", {"TITLE": "x"})
    async with serving(bench) as (url, _, metrics), httpx.AsyncClient(base_url=url) as http:
        await _until(lambda: _dead_count(bench, 1))
        await bench.admin.clear_faults()
        await bench.enqueue("create", "order-2", {"TITLE": "x", "CURRENCY_ID": "XXX"})
        await bench.enqueue_raw({"payload": "{broken"})
        await _until(lambda: _dead_count(bench, 3))
        response = await http.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        m = samples(response.text)
    ops = {k: v for k, v in m.items() if k[0] == "bitrix_worker_operations_total"}
    labels = [dict(k[1]) for k in ops]
    assert {(lab["outcome"], lab["reason"], lab["error_class"]) for lab in labels} >= {
        ("dead_lettered", "budget_spent", "server_error"),
        ("dead_lettered", "invalid_data", "invalid_data"),  # refused by field validation, 0 calls
        ("dead_lettered", "poison", "poison"),
    }
    finding = (("action", "reject"), ("entity", "deal"), ("kind", "not_in_list"))
    assert m["bitrix_worker_field_findings_total", finding] == 1
    assert m["bitrix_worker_dead_lettered_total", (("error_class", "server_error"),)] >= 1
    assert m["bitrix_worker_retries_scheduled_total", (("error_class", "server_error"),)] >= 1
    assert any(k[0] == "bitrix_worker_calls_total" and ("result", "server_error") in k[1] for k in m)
    assert m["bitrix_worker_call_duration_seconds_count", ()] >= 2
    assert m["bitrix_worker_end_to_end_seconds_count", ()] >= 2  # poison is not timed by the worker
    assert m["bitrix_worker_dead_letter_size", ()] == 3
    assert m["bitrix_worker_stream_length", ()] == 0
    assert m["bitrix_worker_breaker_open", ()] == 0
    assert ("bitrix_worker_lag_seconds", ()) in m
    assert all("order-" not in str(k) for k in m)  # keys never become labels
    assert metrics.registry is not PrometheusEvents().registry


async def _dead_count(bench: Bench, n: int) -> bool:
    return int(await bench.redis.xlen(bench.settings.dead_stream)) >= n


async def test_readyz_follows_redis_store_and_breaker_and_healthz_the_loop(bench: Bench) -> None:
    async with serving(bench) as (url, worker, _), httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/healthz")).json() == {"alive": True}
        ready = await http.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"ready": True})
        await Breaker(
            bench.redis,
            bench.settings.keys.breaker(bench.settings.webhook.portal),
            cooldown_s=60,
            max_cooldown_s=60,
        ).trip("auth: INVALID_CREDENTIALS")
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"ready": False, "reason": "breaker open: auth: INVALID_CREDENTIALS"}
        await worker.portal.gate.resume()
        await worker.store.close()  # the engine reconnects on use: readiness must still be true
        assert (await http.get("/readyz")).status_code == 200
        worker.stop()
        await _until(lambda: _status(http, "/healthz", 503))


async def _status(http: httpx.AsyncClient, path: str, code: int) -> bool:
    return (await http.get(path)).status_code == code


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_run_worker_serves_http_and_stops_on_sigterm(bench: Bench) -> None:
    port = _free_port()
    bench.with_settings(http_port=port)
    task = asyncio.create_task(run_worker(bench.settings))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

        async def up() -> bool:
            try:
                return (await http.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await _until(up)
        await bench.enqueue("create", "order-1", {"TITLE": "x"})
        await _until(lambda: _metric_at_least(http, "bitrix_worker_operations_total", 1))
        os.kill(os.getpid(), signal.SIGTERM)  # the worker's own handler: drain and stop
        summary = await asyncio.wait_for(task, 10)
    assert summary.outcomes == {"applied": 1}


async def _metric_at_least(http: httpx.AsyncClient, name: str, value: float) -> bool:
    m = samples((await http.get("/metrics")).text)
    return sum(v for k, v in m.items() if k[0] == name) >= value


async def test_run_worker_reports_a_taken_port_as_a_setting_error(bench: Bench) -> None:
    from bitrix_worker.errors import ConfigError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        bench.with_settings(http_port=s.getsockname()[1])
        with pytest.raises(ConfigError, match="cannot listen") as caught:
            await run_worker(bench.settings)
    assert caught.value.setting == "BITRIX_WORKER_HTTP_PORT"


def test_label_values_are_folded_into_a_fixed_set() -> None:
    assert method_label("crm.deal.update") == "crm.deal.update"
    assert method_label("crm.deal.update?id=5") == "other"
    events = PrometheusEvents()
    events.outcome("applied", Reason.CREATED, "order-77", ErrorClass.SERVER_ERROR)
    events.outcome("dead_lettered", Reason.BUDGET_SPENT, "deal", ErrorClass.SERVER_ERROR)
    events.call("user.current", "weird", 0.1)
    text = events.render().decode()
    assert "order-77" not in text
    assert 'entity="none"' in text
    assert 'method="other",result="other"' in text
    assert 'reason="budget_spent"' in text  # the code, never the sentence with its numbers


def test_field_findings_are_counted_by_kind_action_and_entity() -> None:
    events = PrometheusEvents()
    events.field_finding("unknown_field", "reject", "deal")
    events.field_finding("unknown_field", "reject", "deal")
    events.field_finding("UF_CRM_SECRET_NAME", "explode", "order-7")
    text = events.render().decode()
    assert (
        'bitrix_worker_field_findings_total{action="reject",entity="deal",kind="unknown_field"} 2.0' in text
    )
    assert 'bitrix_worker_field_findings_total{action="other",entity="none",kind="other"} 1.0' in text
    assert "UF_CRM_SECRET_NAME" not in text
