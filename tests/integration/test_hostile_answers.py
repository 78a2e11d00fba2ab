"""A portal (or a proxy) that trickles its answer or sends hundreds of megabytes: every request still ends,
within its deadline, holding at most the size cap. Real loopback HTTP against the emulator's fault modes.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import Bench

from bitrix_worker.bitrix import BitrixClient
from bitrix_worker.bitrix import methods as m
from bitrix_worker.bitrix.marking import marking_transport
from bitrix_worker.emulator import EmulatorAdmin, EmulatorConfig, EmulatorServer, FaultConfig
from bitrix_worker.errors import BitrixError, TransientBitrixError
from bitrix_worker.redaction import WebhookUrl
from bitrix_worker.taxonomy import ErrorClass, Execution

SECRET = "hostile-answers-secret"
ROOT = Path(__file__).resolve().parents[2]
CAP = 1 << 20


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    faults = FaultConfig(trickle_interval_s=0.2, huge_bytes=50_000_000)
    with EmulatorServer(EmulatorConfig(secret=SECRET, faults=faults, limits_enabled=False)) as server:
        yield server


@pytest.fixture(params=["httpx-client", "own-transport"])
async def client(
    emulator: EmulatorServer, admin: EmulatorAdmin, request: pytest.FixtureRequest
) -> AsyncIterator[BitrixClient]:
    """Both ways a request goes: through httpx's client, and straight to the worker's transport."""
    async with BitrixClient(
        WebhookUrl.parse(emulator.webhook_url),
        connect_timeout_s=2.0,
        read_timeout_s=5.0,  # each trickled byte comes well within this: only the deadline can end it
        request_deadline_s=1.0,
        max_response_bytes=CAP,
        transport=marking_transport(4) if request.param == "own-transport" else None,
    ) as client:
        yield client


async def _raises(coro: object) -> BitrixError:
    with pytest.raises(BitrixError) as info:
        await coro  # type: ignore[misc]
    assert info.value.__cause__ is None
    assert info.value.__context__ is None
    assert SECRET not in str(info.value)
    return info.value


async def test_a_trickling_answer_ends_at_the_deadline_as_an_ambiguous_timeout(
    client: BitrixClient, admin: EmulatorAdmin
) -> None:
    await admin.set_faults(rules=[{"method": "crm.deal.add", "kind": "trickle", "max_hits": 1}])
    started = time.monotonic()
    error = await _raises(client.add("deal", {"TITLE": "slow", "ORIGIN_ID": "t1"}))
    took = time.monotonic() - started
    assert isinstance(error, TransientBitrixError)
    c = error.classification
    assert (c.error_class, c.execution, c.http_status) == (ErrorClass.NETWORK, Execution.AMBIGUOUS, None)
    assert "RequestDeadline" in c.description
    assert 0.9 <= took < 3.0
    # the portal ran it (the worker must reconcile before a second create), and the pool is usable again
    assert [row["ORIGIN_ID"] for row in await admin.entities("deal")] == ["t1"]
    assert await client.add("deal", {"TITLE": "next"}) > 0


async def test_a_trickling_batch_answer_ends_the_whole_batch_at_the_deadline(
    client: BitrixClient, admin: EmulatorAdmin
) -> None:
    await admin.set_faults(rules=[{"method": "crm.deal.add", "scope": "command", "sequence": ["trickle"]}])
    commands = {f"c{i}": m.crm_add("deal", {"TITLE": f"b{i}"}) for i in range(3)}
    error = await _raises(client.batch(commands))
    c = error.classification
    assert (c.error_class, c.execution) == (ErrorClass.NETWORK, Execution.AMBIGUOUS)
    assert (await admin.stats())["entities"]["deal"] == 3  # all ran, then the answer crawled


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
async def test_an_answer_over_the_cap_is_cut_off_as_a_broken_answer(
    client: BitrixClient, admin: EmulatorAdmin, declared: bool
) -> None:
    await admin.set_faults(
        rules=[{"method": "crm.deal.add", "kind": "huge", "max_hits": 1}], huge_declared=declared
    )
    started = time.monotonic()
    error = await _raises(client.add("deal", {"TITLE": "big", "ORIGIN_ID": "h1"}))
    assert time.monotonic() - started < 1.0  # 50 MB were on offer: the cap stopped the read early
    c = error.classification
    assert (c.error_class, c.execution, c.http_status) == (ErrorClass.SERVER_ERROR, Execution.AMBIGUOUS, 200)
    assert "too large" in c.description
    assert ("Content-Length 50000000" in c.description) is declared
    assert await client.add("deal", {"TITLE": "next"}) > 0  # the cut connection was dropped, not reused


async def test_an_answer_under_the_cap_is_read_whole(client: BitrixClient, admin: EmulatorAdmin) -> None:
    await admin.set_faults(rules=[{"method": "crm.deal.add", "kind": "huge", "max_hits": 1}], huge_bytes=CAP)
    result = await client.call("crm.deal.add", {"fields": {"TITLE": "exactly at the cap"}})
    assert len(result.result["pad"]) == CAP - len('{"result":{"pad":""}}')


async def test_the_trickle_fault_sends_headers_at_once_then_one_byte_per_interval(
    emulator: EmulatorServer, admin: EmulatorAdmin
) -> None:
    await admin.set_faults(rules=[{"method": "crm.deal.add", "kind": "trickle"}])
    url = emulator.webhook_url + "crm.deal.add"
    async with httpx.AsyncClient(timeout=5.0) as raw:
        started = time.monotonic()
        async with raw.stream("POST", url, json={"fields": {"TITLE": "raw"}}) as response:
            assert response.status_code == 200
            assert time.monotonic() - started < 0.5
            arrivals = []
            async for chunk in response.aiter_raw():
                arrivals.append((time.monotonic(), chunk))
                if len(arrivals) == 4:
                    break
    assert b"".join(chunk for _, chunk in arrivals) == b'{"re'
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
    assert all(gap >= 0.15 for gap in gaps), gaps


def test_four_300_mb_answers_in_flight_stay_under_200_mb_rss(emulator: EmulatorServer) -> None:
    """The client runs in its own process (the emulator's memory is not counted) with the default settings."""

    async def arm() -> None:
        async with EmulatorAdmin(emulator.base_url) as admin:
            await admin.reset()
            await admin.set_faults(rules=[{"method": "crm.deal.add", "kind": "huge"}], huge_bytes=300_000_000)

    import asyncio

    asyncio.run(arm())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "bench.rss_huge_answers", emulator.webhook_url, "--calls", "4"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["outcomes"] == ["server_error/ambiguous"] * 4
    assert report["peak_rss_mb"] <= 200, report


# ---- end to end: the worker's batch ends, and the creates are neither lost nor duplicated ---------------


@pytest.mark.parametrize(
    ("kind", "faults"),
    [("trickle", {"trickle_interval_s": 0.3}), ("huge", {"huge_bytes": 50_000_000})],
)
async def test_the_worker_gets_past_a_hostile_batch_answer(
    bench: Bench, kind: str, faults: dict[str, Any]
) -> None:
    """Before: a trickled batch answer held its operations forever, and a huge one was read whole."""
    await bench.admin.set_faults(
        rules=[{"method": "batch", "scope": "request", "sequence": [kind]}], **faults
    )
    for key in ("h1", "h2", "h3"):
        await bench.enqueue("create", key, {"TITLE": key})
    started = time.monotonic()
    summary = await bench.run(timeout_s=30, request_deadline_s=1.0, max_response_bytes=CAP)
    assert time.monotonic() - started < 20
    assert summary.outcomes == {"applied": 3}
    assert sorted(row["ORIGIN_ID"] for row in await bench.entities()) == ["h1", "h2", "h3"]
    assert await bench.total_calls("crm.deal.add") == 3  # the ambiguous creates were looked up, not resent
