"""The sender's refusal loop on a real Redis limiter and the emulator over loopback: a QUERY_LIMIT_EXCEEDED
is waited out inside the request, counted towards each operation's cap, and handed back once the cap is
reached; every other failure is handed back at once."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from harness import Bench
from redis.exceptions import NoScriptError

from bitrix_worker.bitrix import BitrixClient
from bitrix_worker.bitrix import methods as m
from bitrix_worker.config import load_settings
from bitrix_worker.emulator import EmulatorAdmin, EmulatorConfig, EmulatorServer
from bitrix_worker.events import WorkerEvents
from bitrix_worker.policy import RetryPolicy
from bitrix_worker.redaction import WebhookUrl
from bitrix_worker.redis.limits import Limiter, MethodPauses
from bitrix_worker.sending import Answered, Failed, Sender
from bitrix_worker.taxonomy import ErrorClass


class Calls(WorkerEvents):
    def __init__(self) -> None:
        self.results: list[str] = []

    def call(self, method: str, result: str, seconds: float) -> None:
        self.results.append(result)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig()) as server:
        yield server


@pytest.fixture
async def sender(
    emulator: EmulatorServer, redis_client: aioredis.Redis, key_prefix: str
) -> AsyncIterator[tuple[Sender, Calls]]:
    settings = load_settings(
        rate_limit_backoff_base_s=0.01, backoff_base_s=0.01, backoff_max_s=0.05, retries_rate_limited=3
    )
    client = BitrixClient(WebhookUrl.parse(emulator.webhook_url), connect_timeout_s=2, read_timeout_s=5)
    calls = Calls()
    limiter = Limiter(redis_client, f"{key_prefix}:limiter", rate_per_s=100, burst=100)
    pauses = MethodPauses(redis_client, f"{key_prefix}:pauses", budget_s=480, safety=0.9)
    policy = RetryPolicy.from_settings(settings)
    yield (
        Sender(client, limiter=limiter, pauses=pauses, events=calls, policy=policy, rng=random.Random(3)),
        calls,
    )
    await client.aclose()


FIELDS = {"fields": {"TITLE": "x"}}


async def test_refusals_are_waited_out_and_reported(
    sender: tuple[Sender, Calls], admin: EmulatorAdmin
) -> None:
    s, calls = sender
    await admin.set_faults(rules=[{"method": "crm.deal.add", "sequence": ["rate_limit", "rate_limit", "ok"]}])
    answer = await s.send({"c0": m.Command("crm.deal.add", FIELDS)})
    assert isinstance(answer, Answered)
    assert answer.refusals == 2
    assert calls.results == ["rate_limited", "rate_limited", "ok"]


@pytest.mark.parametrize(("refused_before", "sent"), [(0, 4), (2, 2), (3, 1)])
async def test_the_cap_counts_refusals_the_operation_met_before(
    sender: tuple[Sender, Calls], admin: EmulatorAdmin, refused_before: int, sent: int
) -> None:
    """Cap 3: an operation refused twice already gets one more refusal waited out, then it is handed back."""
    s, calls = sender
    await admin.set_faults(rules=[{"method": "crm.deal.add", "sequence": ["rate_limit"] * 10}])
    answer = await s.send({"c0": m.Command("crm.deal.add", FIELDS)}, refused_before=refused_before)
    assert isinstance(answer, Failed)
    assert answer.classification.error_class is ErrorClass.RATE_LIMITED
    assert len(calls.results) == sent
    assert answer.refusals == sent - 1


async def test_other_failures_are_handed_back_at_once(
    sender: tuple[Sender, Calls], admin: EmulatorAdmin
) -> None:
    s, calls = sender
    await admin.set_faults(rules=[{"method": "crm.deal.add", "sequence": ["500", "ok"]}])
    answer = await s.send({"c0": m.Command("crm.deal.add", FIELDS)})
    assert isinstance(answer, Failed)
    assert (answer.classification.error_class, answer.refusals) == (ErrorClass.SERVER_ERROR, 0)
    assert calls.results == ["server_error"]


async def test_a_refused_connection_gives_its_limiter_slot_back(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """A request that never reached the portal was not counted by it; the shared limiter must not count it
    either, or the drain after an outage starts without the portal's fresh burst."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    url = f"http://127.0.0.1:{port}/rest/1/secret-refused/"
    client = BitrixClient(WebhookUrl.parse(url), connect_timeout_s=1, read_timeout_s=1)
    limiter = Limiter(redis_client, f"{key_prefix}:limiter", rate_per_s=2, burst=5)
    pauses = MethodPauses(redis_client, f"{key_prefix}:pauses", budget_s=480, safety=0.9)
    policy = RetryPolicy.from_settings(load_settings())
    sender = Sender(
        client, limiter=limiter, pauses=pauses, events=Calls(), policy=policy, rng=random.Random(1)
    )
    try:
        for _ in range(10):  # twice the burst: were they counted, the bucket would be booked seconds ahead
            answer = await sender.send({"c0": m.Command("crm.deal.add", FIELDS)})
            assert isinstance(answer, Failed)
            assert answer.classification.execution.value == "not_executed"
    finally:
        await client.aclose()
    assert (await limiter.state()).next_free_s == 0


async def test_the_pause_check_books_the_slot_its_request_then_uses(
    sender: tuple[Sender, Calls], redis_client: aioredis.Redis, key_prefix: str
) -> None:
    """``paused_for`` books the limiter's slot in its round trip; the ``send`` after it asks the limiter
    nothing more (one slot per request, as before), and a ``send`` without it books its own."""
    s, _ = sender
    assert await s.paused_for(["crm.deal.add"]) == {}
    booked = await redis_client.hget(f"{key_prefix}:limiter", "tat")
    assert booked is not None
    asked: list[str] = []
    acquire = s.limiter.acquire

    async def counting() -> float:
        asked.append("acquire")
        return await acquire()

    s.limiter.acquire = counting  # type: ignore[method-assign]
    assert isinstance(await s.send({"c0": m.Command("crm.deal.add", FIELDS)}), Answered)
    assert asked == []
    assert await redis_client.hget(f"{key_prefix}:limiter", "tat") == booked
    assert isinstance(await s.send({"c0": m.Command("crm.deal.add", FIELDS)}), Answered)
    assert asked == ["acquire"]  # the booking was taken once


async def test_a_pause_check_that_holds_back_every_method_gives_the_slot_back(
    sender: tuple[Sender, Calls], redis_client: aioredis.Redis, key_prefix: str
) -> None:
    s, _ = sender
    slow = Limiter(redis_client, f"{key_prefix}:limiter", rate_per_s=1, burst=1)
    s.limiter = slow
    await s.pauses.pause("crm.deal.add", time.time() + 60)
    paused = await s.paused_for(["crm.deal.add", "crm.deal.update"])
    assert list(paused) == ["crm.deal.add"]
    assert 59 < paused["crm.deal.add"] <= 60
    assert (await slow.state()).next_free_s > 0.5  # crm.deal.update will be sent: its slot is booked
    assert isinstance(await s.send({"c0": m.Command("crm.deal.update", {"id": 1, **FIELDS})}), Answered)
    await redis_client.delete(f"{key_prefix}:limiter")
    assert list(await s.paused_for(["crm.deal.add"])) == ["crm.deal.add"]
    assert (await slow.state()).next_free_s == 0  # nothing will be sent: given back
    # a script Redis does not know (NOSCRIPT in the pipeline) books nothing: ``send`` asks the limiter
    assert Limiter.reserved_from(NoScriptError("NOSCRIPT")) is None
    assert Limiter.reserved_from(b"-1500") is None  # booked too far ahead: nothing booked, ask again
    assert Limiter.reserved_from(b"250") == 0.25


async def test_a_worker_holds_the_updates_of_a_paused_method_and_sends_nothing(bench: Bench) -> None:
    """End to end through the delivery: the pause check that books the slot holds the update back (retry,
    ``method_paused``), nothing reaches the portal, and the update goes once the pause is over."""
    await bench.enqueue("create", "held-1", {"TITLE": "x"})
    await bench.run()
    settings = bench.settings
    pauses = MethodPauses(bench.redis, settings.keys.method_pause(settings.portal_name), budget_s=1, safety=1)
    await pauses.pause("crm.deal.update", time.time() + 2)
    await bench.enqueue("update", "held-1", {"TITLE": "y"})
    with contextlib.suppress(TimeoutError):  # the held update waits out the pause: the run need not end
        await bench.run(timeout_s=1.0)
    assert await bench.total_calls("crm.deal.update") == 0
    assert (await bench.entities())[0]["TITLE"] == "x"
    summary = await bench.run(timeout_s=20.0)
    assert summary.outcomes["applied"] == 1
    assert (await bench.entities())[0]["TITLE"] == "y"
