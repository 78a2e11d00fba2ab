""" "No duplicates" must not depend on a local file: a lost, different or restored mapping store is noticed,
and keys it does not know are looked up before their first create; the normal case spends no extra call."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from harness import Bench

from bitrix_worker.errors import ConfigError
from bitrix_worker.worker import Worker


def _store(bench: Bench, name: str) -> str:
    return f"sqlite+aiosqlite:///{bench.tmp / name}"


async def test_a_second_store_on_the_same_stream_looks_keys_up_instead_of_duplicating(bench: Bench) -> None:
    """`upsert deal order-D` run from two directories made two deals (two relative SQLite files)."""
    await bench.enqueue("upsert", "order-D", {"TITLE": "first"})
    await bench.run(database_url=_store(bench, "a.sqlite3"))
    assert await bench.total_calls("crm.deal.list") == 0  # the normal case: no extra call
    await bench.enqueue("upsert", "order-D", {"TITLE": "second"})
    await bench.run(database_url=_store(bench, "b.sqlite3"))  # another store, nobody else running
    deals = await bench.entities()
    assert [d["ORIGIN_ID"] for d in deals] == ["order-D"]
    assert deals[0]["TITLE"] == "second"
    assert await bench.total_calls("crm.deal.list") == 1  # looked up, adopted, updated


async def test_a_store_restored_from_a_backup_looks_up_what_it_lost(bench: Bench) -> None:
    a = bench.tmp / "a.sqlite3"
    await bench.enqueue("create", "before-backup", {"TITLE": "x"})
    await bench.run(database_url=_store(bench, "a.sqlite3"))
    await asyncio.sleep(0.1)
    shutil.copy(a, bench.tmp / "backup.sqlite3")
    await bench.enqueue("create", "after-backup", {"TITLE": "x"})
    await bench.run(database_url=_store(bench, "a.sqlite3"))  # its last heartbeat records the fence
    for suffix in ("", "-wal", "-shm"):
        Path(f"{a}{suffix}").unlink(missing_ok=True)  # noqa: ASYNC240 - test set-up
    shutil.copy(bench.tmp / "backup.sqlite3", a)  # restored: it does not know after-backup any more
    await bench.enqueue("create", "after-backup", {"TITLE": "again"})
    await bench.run(database_url=_store(bench, "a.sqlite3"))
    origins = sorted(d["ORIGIN_ID"] for d in await bench.entities())
    assert origins == ["after-backup", "before-backup"]  # 0 duplicates


async def test_two_live_workers_with_separate_sqlite_files_are_refused(bench: Bench) -> None:
    first = bench.settings.model_copy(
        update={"database_url": _store(bench, "a.sqlite3"), "consumer": "host-1"}
    )
    second = bench.settings.model_copy(
        update={"database_url": _store(bench, "b.sqlite3"), "consumer": "host-2"}
    )
    async with Worker.open(first) as w1:
        task = asyncio.create_task(w1.run())
        await asyncio.sleep(0.5)  # registered and beating
        async with Worker.open(second) as w2:
            with pytest.raises(ConfigError, match="use PostgreSQL") as refused:
                await asyncio.wait_for(w2.run(), 10)
        assert refused.value.setting == "DATABASE_URL"
        w1.stop()
        await asyncio.wait_for(task, 10)


async def test_a_copy_of_one_sqlite_file_on_two_hosts_is_refused(bench: Bench) -> None:
    """The same store id (a SQLite file baked into each host's image) on two hosts at once: two copies that
    drift apart, each vouching for keys only the other knows. Refused, naming DATABASE_URL."""
    await bench.run(database_url=_store(bench, "a.sqlite3"))  # the file now has its store id
    shutil.copy(bench.tmp / "a.sqlite3", bench.tmp / "b.sqlite3")
    first = bench.settings.model_copy(update={"database_url": _store(bench, "a.sqlite3"), "consumer": "w1"})
    second = bench.settings.model_copy(update={"database_url": _store(bench, "b.sqlite3"), "consumer": "w2"})
    async with Worker.open(first) as w1:
        w1.stores.host = "host-a"
        task = asyncio.create_task(w1.run())
        await asyncio.sleep(0.5)  # registered and beating
        async with Worker.open(second) as w2:
            w2.stores.host = "host-b"
            with pytest.raises(ConfigError, match=r"host host-a .* use PostgreSQL") as refused:
                await asyncio.wait_for(w2.run(), 10)
        assert refused.value.setting == "DATABASE_URL"
        async with Worker.open(first.model_copy(update={"consumer": "w3"})) as w3:  # same host, same file
            w3.stores.host = "host-a"
            w3.stop()
            await asyncio.wait_for(w3.run(), 10)  # starts (and stops): one file on one host is fine
        w1.stop()
        await asyncio.wait_for(task, 10)
