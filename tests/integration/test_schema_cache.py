"""The shared schema cache on real Redis, fetching from the emulator over HTTP: a handful of calls per
entity and TTL, shared by all workers, refreshed early after a field is added on the portal mid-run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from bitrix_worker.bitrix.client import BitrixClient
from bitrix_worker.bitrix.schemas import fetch_schema
from bitrix_worker.defaults import StreamKeys
from bitrix_worker.emulator import (
    EmulatorAdmin,
    EmulatorConfig,
    EmulatorServer,
    PipelineConfig,
    SchemaConfig,
    UserFieldConfig,
)
from bitrix_worker.errors import BitrixError
from bitrix_worker.redaction import WebhookUrl
from bitrix_worker.redis.limits import Limiter
from bitrix_worker.redis.schemas import SchemaCache
from bitrix_worker.schema import EntitySchema
from bitrix_worker.validation import FindingKind, validate

CONFIG = EmulatorConfig(
    crm_schema=SchemaConfig(
        user_fields={
            "deal": [
                UserFieldConfig(
                    name="UF_CRM_PAYMENT_METHOD",
                    type="enumeration",
                    label="Payment method",
                    items=["Cash", "Card"],
                )
            ]
        },
        pipelines=[PipelineConfig(id=1, name="Wholesale")],
    )
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(CONFIG) as server:
        yield server


@pytest.fixture
async def parts(
    emulator: EmulatorServer, redis_client: aioredis.Redis, key_prefix: str
) -> AsyncIterator[Any]:
    keys = StreamKeys(stream=f"{key_prefix}:ops", dead=f"{key_prefix}:dead")
    clock = Clock()
    async with (
        EmulatorAdmin(emulator.base_url) as admin,
        BitrixClient(
            WebhookUrl.parse(emulator.webhook_url), connect_timeout_s=5, read_timeout_s=10
        ) as client,
    ):
        await admin.reset()
        limiter = Limiter(redis_client, keys.limiter("emulator"), rate_per_s=50, burst=50)
        acquired: list[float] = []

        async def acquire() -> None:
            acquired.append(await limiter.acquire())

        def fetch(entity: str) -> Any:
            return lambda: fetch_schema(client, entity, acquire=acquire, clock=clock)

        def cache() -> SchemaCache:
            return SchemaCache(redis_client, keys, "emulator", ttl_s=3600, clock=clock)

        yield admin, fetch, cache, clock, acquired, keys


async def _calls(admin: EmulatorAdmin) -> int:
    stats = await admin.stats()
    return int(stats["requests"])


async def test_fetch_parses_fields_pipelines_stages_and_currencies(parts: Any) -> None:
    admin, fetch, _, _, acquired, _ = parts
    schema: EntitySchema = await fetch("deal")()
    assert schema.fields["UF_CRM_PAYMENT_METHOD"].label == "Payment method"
    assert schema.categories == {0: "General", 1: "Wholesale"}
    assert set(schema.statuses) == {"DEAL_STAGE", "DEAL_STAGE_1", "SOURCE", "DEAL_TYPE"}
    assert "C1:WON" in schema.statuses["DEAL_STAGE_1"]
    assert "EUR" in schema.currencies
    assert await _calls(admin) == 2  # two batch requests, each after the shared limiter
    assert len(acquired) == 2


async def test_workers_share_one_fetch_until_the_ttl(parts: Any) -> None:
    admin, fetch, cache, clock, _, _ = parts
    first, second = cache(), cache()  # two workers
    a = await first.load("deal", fetch("deal"))
    b = await second.load("deal", fetch("deal"))
    assert a == b
    assert await _calls(admin) == 2
    clock.now += 3599
    await second.load("deal", fetch("deal"))
    assert await _calls(admin) == 2
    clock.now += 2  # stale: one refetch, the other worker keeps the copy while the claim is held
    await first.load("deal", fetch("deal"))
    assert await _calls(admin) == 4
    assert (await second.get("deal")).fresh  # type: ignore[union-attr]


async def test_a_field_added_mid_run_is_accepted_after_one_refresh(parts: Any) -> None:
    admin, fetch, cache, _, _, _ = parts
    worker = cache()
    schema = await worker.load("deal", fetch("deal"))
    (finding,) = validate("update", {"UF_CRM_COUPON": "X1"}, schema)
    assert finding.kind is FindingKind.UNKNOWN_FIELD
    await admin.add_field("deal", name="UF_CRM_COUPON", label="Coupon")
    assert (await worker.load("deal", fetch("deal"))) == schema  # cached: still the old one
    refreshed = await worker.load("deal", fetch("deal"), refresh=True)
    assert validate("update", {"UF_CRM_COUPON": "X1"}, refreshed) == []
    assert (await cache().load("deal", fetch("deal"))) == refreshed  # every worker sees it now


async def test_an_early_refresh_waits_until_the_shared_copy_is_old_enough(parts: Any) -> None:
    """Many workers surprised at once: the first refreshes, the others find a young copy and fetch nothing."""
    admin, fetch, cache, clock, _, _ = parts
    first, second = cache(), cache()
    await first.load("deal", fetch("deal"))
    assert await _calls(admin) == 2
    clock.now += 30
    await first.load("deal", fetch("deal"), refresh=True, refresh_older_than=60)
    assert await _calls(admin) == 2  # 30 s old: too young for an early refresh
    clock.now += 31
    await first.load("deal", fetch("deal"), refresh=True, refresh_older_than=60)
    assert await _calls(admin) == 4  # 61 s old: refreshed
    await second.load("deal", fetch("deal"), refresh=True, refresh_older_than=60)
    assert await _calls(admin) == 4  # the copy the first worker just shared is young


async def test_unreadable_or_invalidated_entries_are_refetched(
    parts: Any, redis_client: aioredis.Redis
) -> None:
    admin, fetch, cache, _, _, keys = parts
    worker = cache()
    await worker.load("contact", fetch("contact"))
    assert await worker.invalidate("contact")
    assert await worker.get("contact") is None
    keys_found = [k async for k in redis_client.scan_iter(match="*schema:emulator:contact*")]
    assert keys_found == []
    schema = await worker.load("contact", fetch("contact"))
    assert "PHONE" in schema.fields
    await redis_client.set(keys.schema("emulator", "contact"), "not json")
    assert await worker.get("contact") is None
    before = await _calls(admin)
    assert await cache().load("contact", fetch("contact")) == schema  # another worker: no memo yet
    assert await _calls(admin) == before + 2


async def test_each_process_memoises_its_last_read_for_a_few_seconds(parts: Any) -> None:
    admin, fetch, cache, clock, _, _ = parts
    worker, other = cache(), cache()
    schema = await worker.load("deal", fetch("deal"))
    await admin.add_field("deal", name="UF_CRM_COUPON", label="Coupon")
    refreshed = await other.load("deal", fetch("deal"), refresh=True)
    assert "UF_CRM_COUPON" in refreshed.fields
    assert await worker.load("deal", fetch("deal")) is schema  # its memo: no Redis read, no call
    clock.now += 10
    assert await worker.load("deal", fetch("deal")) == refreshed


async def test_a_failing_fetch_raises_a_classified_error(parts: Any) -> None:
    admin, fetch, _, _, _, _ = parts
    await admin.set_faults(rules=[{"kind": "500", "method": "crm.currency.list"}])
    with pytest.raises(BitrixError):
        await fetch("deal")()


async def test_a_failing_refresh_keeps_the_stale_copy_and_retries_once_per_claim(
    parts: Any, redis_client: aioredis.Redis
) -> None:
    admin, fetch, cache, _, _, keys = parts
    worker = cache()
    schema = await worker.load("deal", fetch("deal"))
    await admin.set_faults(rules=[{"kind": "500", "method": "crm.currency.list"}])
    before = await _calls(admin)
    assert await worker.load("deal", fetch("deal"), refresh=True) == schema
    assert await _calls(admin) == before + 1  # the first batch failed: no second one
    assert await cache().load("deal", fetch("deal"), refresh=True) == schema
    assert await _calls(admin) == before + 1  # the claim is still held: nobody hammers a failing portal
    await admin.clear_faults()
    await admin.add_field("deal", name="UF_CRM_COUPON", label="Coupon")
    await redis_client.delete(keys.schema_refresh("emulator", "deal"))  # as if its 30 s had passed
    refreshed = await cache().load("deal", fetch("deal"), refresh=True)
    assert "UF_CRM_COUPON" in refreshed.fields
