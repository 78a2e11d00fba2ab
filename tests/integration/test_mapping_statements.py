"""The mapping store's cached statements and runners (issue 14's cost work), on SQLite and PostgreSQL.

What the cheaper path must not change: results across chunk sizes and entities, the primary-key search on
SQLite, and surviving connections the server dropped now that nothing pings them before use.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.dialects import sqlite as sqlite_dialect

from bitrix_worker.mapping import CHUNK_ROWS, Mapping, MappingStore, _build_table
from bitrix_worker.mapping_sql import StatementCache


async def test_many_rows_across_chunks_and_entities(mapping_store: MappingStore) -> None:
    n = 2 * CHUNK_ROWS + 37  # three statements per call, of three different row counts
    rows = [Mapping("deal" if i % 3 else "lead", f"k{i}", 10_000 + i, i, "active", 4) for i in range(n)]
    assert await mapping_store.record_many(rows) == [True] * n
    found = await mapping_store.get_many([(r.entity, r.key) for r in rows] + [("contact", "k1")])
    assert found == {(r.entity, r.key): r for r in rows}
    # again with a lower fence for every second row: only the others apply, per row, across chunks
    again = [Mapping(r.entity, r.key, None, r.version, "deleted", 4 - (i % 2)) for i, r in enumerate(rows)]
    assert await mapping_store.record_many(again) == [i % 2 == 0 for i in range(n)]
    assert await mapping_store.count("deleted") == (n + 1) // 2


async def test_no_write_is_skipped_when_only_the_fence_changes(mapping_store: MappingStore) -> None:
    """Each batch writes with a new fencing token, so an otherwise unchanged row must still be written:
    the stored fence is what refuses a zombie holding an older token."""
    assert await mapping_store.record_applied("deal", "k", bitrix_id=5, version=None, fence=10)
    assert await mapping_store.record_applied("deal", "k", bitrix_id=5, version=None, fence=12)
    assert not await mapping_store.record_applied("deal", "k", bitrix_id=6, version=None, fence=11)
    assert await mapping_store.get("deal", "k") == Mapping("deal", "k", 5, None, "active", 12)


def test_sqlite_read_searches_the_primary_key(tmp_path: Path) -> None:
    """Regression: ``(entity, key) IN (VALUES ...)`` made SQLite scan the whole table for every batch."""
    table = _build_table("bitrix_mapping")
    engine = create_engine(f"sqlite:///{tmp_path / 'plan.sqlite3'}")
    table.metadata.create_all(engine)
    engine.dispose()
    cache = StatementCache(table, sqlite_dialect.dialect())
    with sqlite3.connect(tmp_path / "plan.sqlite3") as conn:
        for n in (1, 50):
            stmt = cache.select(n)
            params = stmt.params([("deal", f"k{i}") for i in range(n)])
            plan = " ".join(str(row[-1]) for row in conn.execute("EXPLAIN QUERY PLAN " + stmt.sql, params))
            assert "SEARCH" in plan
            assert "SCAN" not in plan


def test_statement_cache_keeps_a_bounded_number_of_sizes() -> None:
    cache = StatementCache(_build_table("t"), sqlite_dialect.dialect(), size=2)
    first = cache.upsert(3)
    assert cache.upsert(3) is first  # rendered once, reused
    cache.upsert(4)
    cache.select(5)  # a third entry: the least recently used (upsert of 3) goes
    assert cache.upsert(3) is not first
    assert cache.upsert(3).sql == first.sql
    assert first.sql.count("?") == 3 * 7
    assert first.picks[:8] == ((0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (0, 6), (1, 0))


async def test_in_memory_sqlite_is_one_database() -> None:
    store = await MappingStore.connect("sqlite://")
    try:
        rows = [Mapping("deal", f"k{i}", i, None, "active", 1) for i in range(20)]
        results = await asyncio.gather(*(store.record_many([r]) for r in rows))
        assert results == [[True]] * 20
        assert await store.count() == 20
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgres_connection_dropped_by_the_server_is_replaced(postgres_url: str) -> None:
    """Nothing pings a pooled connection before use any more: a dead one fails on use and the operation
    is retried once on a fresh connection, for reads and for writes."""
    import uuid

    from conftest import drop_table

    table = f"bitrix_mapping_test_{uuid.uuid4().hex[:12]}"
    store = await MappingStore.connect(postgres_url, table=table)
    try:
        assert await store.record_applied("deal", "k", bitrix_id=1, version=1, fence=1)
        for op in ("read", "write"):
            pid = await store._runner.read(lambda c: c.execute(text("SELECT pg_backend_pid()")).scalar_one())
            admin = await asyncpg.connect(postgres_url)
            try:
                assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            finally:
                await admin.close()
            if op == "read":
                assert await store.get("deal", "k") == Mapping("deal", "k", 1, 1, "active", 1)
            else:
                assert await store.record_applied("deal", "k", bitrix_id=1, version=2, fence=2)
        assert await store.get("deal", "k") == Mapping("deal", "k", 1, 2, "active", 2)
    finally:
        await store.close()
        await drop_table(postgres_url, table)


async def test_closed_store_reconnects_on_use(mapping_store: MappingStore) -> None:
    """``close`` releases connections (and SQLite's threads) but, like an engine's dispose, the store
    stays usable: the worker's readiness probe pings it after shutdown began."""
    assert await mapping_store.record_applied("deal", "k", bitrix_id=1, version=1, fence=1)
    await mapping_store.close()
    assert await mapping_store.ping()
    assert await mapping_store.get("deal", "k") == Mapping("deal", "k", 1, 1, "active", 1)
