"""Fixtures for the integration tests: a mapping store on SQLite (a tmp file) and on PostgreSQL.

PostgreSQL is the server at BITRIX_WORKER_TEST_POSTGRES_URL (default ``postgresql://root@127.0.0.1:5432/test``,
then the same with user ``postgres``); when none answers, PostgreSQL cases are skipped with the reason shown.
Each PostgreSQL test gets its own table name and drops it afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bitrix_worker.mapping import MappingStore

DEFAULT_POSTGRES_URL = "postgresql://root@127.0.0.1:5432/test"


async def _pg_answers(url: str) -> str | None:
    """None when the server answers, else why not."""
    u = make_url(url)
    try:
        conn = await asyncpg.connect(
            host=u.host,
            port=u.port or 5432,
            user=u.username,
            password=u.password,
            database=u.database,
            timeout=3,
        )
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A PostgreSQL URL that answers, or skip."""
    configured = os.environ.get("BITRIX_WORKER_TEST_POSTGRES_URL")
    candidates = [configured] if configured else []
    candidates += [DEFAULT_POSTGRES_URL, DEFAULT_POSTGRES_URL.replace("root@", "postgres@")]
    reasons = []
    for url in candidates:
        problem = asyncio.run(_pg_answers(url))
        if problem is None:
            return url
        reasons.append(f"{make_url(url).render_as_string(hide_password=True)}: {problem}")
    pytest.skip("PostgreSQL not reachable (set BITRIX_WORKER_TEST_POSTGRES_URL): " + "; ".join(reasons))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'mapping.sqlite3'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_target(request: pytest.FixtureRequest, sqlite_url: str) -> tuple[str, str, str]:
    """(backend, database URL, table name) for one mapping-store test."""
    if request.param == "sqlite":
        return "sqlite", sqlite_url, "bitrix_mapping"
    url: str = request.getfixturevalue("postgres_url")
    return "postgres", url, f"bitrix_mapping_test_{uuid.uuid4().hex[:12]}"


async def drop_table(url: str, table: str) -> None:
    engine = create_async_engine(make_url(url).set(drivername="postgresql+asyncpg"))
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP TABLE IF EXISTS "{table}"'))
    finally:
        await engine.dispose()


@pytest.fixture
async def mapping_store(store_target: tuple[str, str, str]) -> AsyncIterator[MappingStore]:
    """A fresh MappingStore on each backend; on PostgreSQL in a unique table that is dropped afterwards."""
    backend, url, table = store_target
    store = await MappingStore.connect(url, table=table)
    try:
        yield store
    finally:
        await store.close()
        if backend == "postgres":
            await drop_table(url, table)


@pytest.fixture
async def admin(emulator: Any) -> AsyncIterator[Any]:
    """The admin API of the test module's own ``emulator`` fixture, reset before each test."""
    from bitrix_worker.emulator import EmulatorAdmin

    async with EmulatorAdmin(emulator.base_url) as client:
        await client.reset()
        yield client


@pytest.fixture
async def bench(redis_url: str, key_prefix: str, tmp_path: Path) -> AsyncIterator[Any]:
    """The worker test bench of ``harness.open_bench``."""
    from harness import open_bench

    async with open_bench(redis_url, key_prefix, tmp_path) as b:
        yield b


#: The webhook secret every emulator in these tests uses (EmulatorConfig's default).
WEBHOOK_SECRET = "emulator-secret"


@pytest.fixture(autouse=True)
def _no_secret_in_anything_printed(capfd: pytest.CaptureFixture[str], tmp_path: Path) -> Iterator[None]:
    """Everything the worker printed during the test (in-process logs, CLI output, and the log files of
    worker subprocesses under tmp_path) must be free of the webhook secret."""
    yield
    out, err = capfd.readouterr()
    printed = {"stdout": out, "stderr": err}
    for log in tmp_path.rglob("*.log"):
        # The emulator's own log (bench: emulator-<port>.log) is not the worker's: the emulator prints its
        # webhook URL in full on start, by design (a fixed local test secret, printed so it can be copied).
        if not log.name.startswith("emulator"):
            printed[str(log)] = log.read_text(errors="replace")
    leaked = [where for where, text in printed.items() if WEBHOOK_SECRET in text]
    assert not leaked, f"the webhook secret was printed to {leaked}"
