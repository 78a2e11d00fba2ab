"""The mapping store on SQLite and PostgreSQL: versioned, fenced upserts that hold under concurrency."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from bitrix_worker.errors import StoreError
from bitrix_worker.mapping import Mapping, MappingStore


async def test_round_trip(mapping_store: MappingStore) -> None:
    assert await mapping_store.get("deal", "k1") is None
    assert await mapping_store.ping()
    assert await mapping_store.record_applied("deal", "k1", bitrix_id=42, version=3, fence=1)
    assert await mapping_store.get("deal", "k1") == Mapping("deal", "k1", 42, 3, "active", 1)
    assert await mapping_store.count() == 1
    await mapping_store.forget("deal", "k1")
    assert await mapping_store.get("deal", "k1") is None
    assert await mapping_store.count() == 0


async def test_get_many(mapping_store: MappingStore) -> None:
    rows = [Mapping("contact", f"k{i}", 1000 + i, i, "active", 1) for i in range(300)]
    assert await mapping_store.record_many(rows) == [True] * 300
    wanted = [("contact", f"k{i}") for i in range(0, 300, 2)] + [("contact", "missing"), ("deal", "k1")]
    found = await mapping_store.get_many(wanted)
    assert set(found) == {("contact", f"k{i}") for i in range(0, 300, 2)}
    assert found[("contact", "k10")].bitrix_id == 1010
    assert await mapping_store.get_many([]) == {}
    big = [("contact", f"k{i}") for i in range(300)] * 3  # duplicates and more than one chunk
    assert len(await mapping_store.get_many(big)) == 300


async def test_record_many_same_key_applies_in_order(mapping_store: MappingStore) -> None:
    rows = [
        Mapping("deal", "a", 1, 1, "active", 1),
        Mapping("deal", "a", None, 5, "active", 1),
        Mapping("deal", "a", 9, 2, "active", 1),  # stale: refused
        Mapping("deal", "b", 2, 1, "active", 1),
    ]
    assert await mapping_store.record_many(rows) == [True, True, False, True]
    assert await mapping_store.get("deal", "a") == Mapping("deal", "a", 1, 5, "active", 1)


async def test_one_batch_applies_some_rows_and_refuses_others(mapping_store: MappingStore) -> None:
    """A batch of distinct keys is one statement; SQLite learns which rows applied from the count of rows
    changed, and only when some were refused writes again returning their keys: either way the refused
    rows, and their time of last write (the replay guard's), are untouched."""
    seed = [Mapping("deal", "a", 1, 5, "active", 3), Mapping("deal", "b", 2, 1, "active", 3),
            Mapping("deal", "c", 3, None, "active", 9)]  # fmt: skip
    assert await mapping_store.record_many(seed) == [True] * 3
    before = await mapping_store.last_writes([("deal", "a"), ("deal", "c")])
    await asyncio.sleep(0.01)
    batch = [
        Mapping("deal", "a", 1, 4, "active", 3),  # stale version
        Mapping("deal", "b", 2, 2, "active", 3),
        Mapping("deal", "c", 3, None, "deleted", 8),  # lower fence
        Mapping("deal", "d", 4, None, "active", 3),  # new
    ]
    assert await mapping_store.record_many(batch) == [False, True, False, True]
    found = await mapping_store.get_many([("deal", k) for k in "abcd"])
    assert found == {("deal", m.key): m for m in (seed[0], batch[1], seed[2], batch[3])}
    assert await mapping_store.last_writes([("deal", "a"), ("deal", "c")]) == before
    newer = [Mapping("deal", k, 7, 9, "active", 9) for k in "abcd"]
    assert await mapping_store.record_many(newer) == [True] * 4  # all applied: the count alone says so
    found = await mapping_store.get_many([("deal", k) for k in "abcd"])
    assert found == {("deal", m.key): m for m in newer}


async def test_stale_version_refused(mapping_store: MappingStore) -> None:
    assert await mapping_store.record_applied("deal", "k", bitrix_id=1, version=10, fence=1)
    assert not await mapping_store.record_applied("deal", "k", bitrix_id=2, version=9, fence=1)
    assert await mapping_store.get("deal", "k") == Mapping("deal", "k", 1, 10, "active", 1)
    assert await mapping_store.record_applied("deal", "k", bitrix_id=None, version=10, fence=1)
    # a write without a version applies (version kept), as does one against an unversioned row
    assert await mapping_store.record_applied("deal", "k", bitrix_id=None, version=None, fence=1)
    assert (await mapping_store.get("deal", "k")) == Mapping("deal", "k", 1, 10, "active", 1)


async def test_lower_fence_refused(mapping_store: MappingStore) -> None:
    assert await mapping_store.record_applied("deal", "k", bitrix_id=1, version=1, fence=5)
    # a zombie holding an older lease token cannot write, even with a newer version
    assert not await mapping_store.record_applied("deal", "k", bitrix_id=2, version=2, fence=4)
    assert not await mapping_store.mark_deleted("deal", "k", fence=4)
    assert await mapping_store.get("deal", "k") == Mapping("deal", "k", 1, 1, "active", 5)


async def test_equal_and_higher_fence_ok(mapping_store: MappingStore) -> None:
    assert await mapping_store.record_applied("deal", "k", bitrix_id=1, version=1, fence=5)
    assert await mapping_store.record_applied("deal", "k", bitrix_id=1, version=2, fence=5)
    assert await mapping_store.record_applied("deal", "k", bitrix_id=1, version=3, fence=7)
    assert await mapping_store.get("deal", "k") == Mapping("deal", "k", 1, 3, "active", 7)


async def test_bitrix_id_kept_when_none(mapping_store: MappingStore) -> None:
    assert await mapping_store.record_applied("lead", "k", bitrix_id=77, version=1, fence=1)
    assert await mapping_store.record_applied("lead", "k", bitrix_id=None, version=2, fence=1)
    got = await mapping_store.get("lead", "k")
    assert got is not None
    assert (got.bitrix_id, got.version) == (77, 2)


async def test_deleted_state(mapping_store: MappingStore) -> None:
    assert await mapping_store.record_applied("deal", "k", bitrix_id=5, version=4, fence=2)
    assert await mapping_store.mark_deleted("deal", "k", fence=2)
    assert await mapping_store.get("deal", "k") == Mapping("deal", "k", 5, 4, "deleted", 2)
    # a late stale update cannot resurrect the tombstone
    assert not await mapping_store.record_applied("deal", "k", bitrix_id=5, version=3, fence=2)
    assert await mapping_store.count("deleted") == 1
    assert await mapping_store.count("active") == 0
    assert await mapping_store.mark_deleted("deal", "never-created", fence=1)
    assert await mapping_store.count("deleted") == 2


async def test_concurrent_writers_keep_max_version(mapping_store: MappingStore) -> None:
    rng = random.Random(7)
    versions = [rng.randrange(1, 10_000) for _ in range(50)]
    results = await asyncio.gather(
        *(mapping_store.record_applied("deal", "hot", bitrix_id=9, version=v, fence=1) for v in versions)
    )
    assert any(results)
    got = await mapping_store.get("deal", "hot")
    assert got is not None
    assert got.version == max(versions)


async def test_two_engines_share_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.sqlite3'}"
    first, second = await asyncio.gather(MappingStore.connect(url), MappingStore.connect(url))
    try:
        rng = random.Random(11)

        async def writes(store: MappingStore, fence: int) -> None:
            for batch in range(10):
                rows = [
                    Mapping("deal", f"k{rng.randrange(40)}", batch, rng.randrange(1000), "active", fence)
                    for _ in range(20)
                ]
                await store.record_many(rows)
                await store.record_applied("deal", "hot", bitrix_id=1, version=rng.randrange(1000), fence=1)

        await asyncio.gather(*(writes(s, 1) for s in (first, second) for _ in range(4)))
        assert await first.count() == await second.count() > 0
    finally:
        await first.close()
        await second.close()


@pytest.mark.postgres
async def test_unreachable_postgres_raises_store_error_without_password() -> None:
    url = "postgresql://admin:hunter2-secret@127.0.0.1:1/nope"
    with pytest.raises(StoreError) as info:
        await MappingStore.connect(url)
    assert "hunter2-secret" not in str(info.value)
    assert "***" in str(info.value)
    assert info.value.__cause__ is not None


async def test_unsupported_url_is_store_error() -> None:
    with pytest.raises(StoreError, match="unsupported"):
        await MappingStore.connect("mysql://u:p@localhost/db")
