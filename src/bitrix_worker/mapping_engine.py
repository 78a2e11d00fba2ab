"""Where the mapping store's SQL runs: each store operation is one call, on the event loop or in a thread.

A store operation (read many keys, write many rows, create the table) is a plain function over a SQLAlchemy
``Connection``; a runner executes it whole, inside a connection (reads) or a transaction (writes):

* **PostgreSQL** runs it on the event loop through SQLAlchemy's asyncio bridge (asyncpg, no thread).
  Reads and single-statement writes run in autocommit (one statement is atomic on its own and needs no
  ``BEGIN``/``COMMIT``) and no connection is pinged
  before use: each round trip to the server costs the loop ~0.1-0.25 ms of CPU, and a read-and-write
  pair cost 12 of them. A connection the server dropped is found on use instead, and the operation is
  retried once on a fresh one (``MappingStore``): the read is harmless and the upsert idempotent.
* **SQLite** runs it in a small thread pool on a synchronous engine (the standard ``sqlite3`` module):
  one hop between the loop and a thread per operation. Through aiosqlite every cursor call was a hop of its
  own (cursor, execute, fetch, close, commit, reset: 5-6 per operation), and those hops cost the loop more
  CPU than SQLite spent executing the statements. A write that waits for another process's lock (up to
  ``SQLITE_BUSY_TIMEOUT_MS``) blocks one pool thread, never the loop.

The worker's own batches need one statement each (one entity's keys, one round of rows): ``fetch`` runs such a
statement, already rendered (``mapping_sql``), on the driver's connection itself, without SQLAlchemy's
result machinery and, on PostgreSQL, without its asyncio bridge: asyncpg's ``fetch`` with its statement
cache (``python -m bench.cost_micro`` measures a read plus a write per batch). The connection still comes
from (and goes back to) SQLAlchemy's pool, and a driver error still becomes SQLAlchemy's ``DBAPIError``;
one that cost the connection invalidates it, as SQLAlchemy would.

A caller cancelled while its operation runs in a thread does not stop it: the operation finishes (or rolls
back on error) on its own, as a statement already sent to PostgreSQL would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Protocol, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Dialect, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from .extras import require

__all__ = ["PG_CONNECT_TIMEOUT_S", "SQLITE_BUSY_TIMEOUT_MS", "Runner", "open_runner"]

SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for another process's write lock before failing."""
SQLITE_POOL = {"pool_size": 4, "max_overflow": 8, "pool_timeout": 60}
PG_CONNECT_TIMEOUT_S = 10.0

T = TypeVar("T")


class Runner(Protocol):
    dialect: Dialect

    async def read(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def write(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def fetch(self, sql: str, params: Sequence[Any], *, write: bool) -> list[Sequence[Any]]:
        """One rendered statement on the driver's connection (committed when ``write``); its rows."""
        ...

    async def close(self) -> None: ...


class AsyncRunner:
    """On the event loop: one greenlet hop per operation (``run_sync``), asyncpg underneath."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        async with self.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            return await conn.run_sync(fn, *args)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        async with self.engine.begin() as conn:
            return await conn.run_sync(fn, *args)

    async def fetch(self, sql: str, params: Sequence[Any], *, write: bool) -> list[Sequence[Any]]:
        # outside any transaction: one statement commits on its own (``write`` needs nothing more)
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            try:
                return list(await driver.fetch(sql, *params))  # type: ignore[union-attr]
            except Exception as exc:  # asyncpg's errors, OSError, TimeoutError
                lost = not isinstance(exc, self._server_error) or driver.is_closed()  # type: ignore[union-attr]
                if lost:
                    raw.invalidate(exc)  # the retry (MappingStore._run) gets a new connection
                raise DBAPIError(None, None, exc, connection_invalidated=lost) from exc

    @property
    def _server_error(self) -> type[Exception]:
        import asyncpg  # type: ignore[import-untyped]  # the postgres extra: present with this runner

        error: type[Exception] = asyncpg.PostgresError
        return error

    async def close(self) -> None:
        await self.engine.dispose()


class ThreadRunner:
    """In a thread pool as large as the connection pool: one hop per operation."""

    def __init__(self, engine: Engine, threads: int) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self._size = threads
        self._threads = self._pool()

    def _pool(self) -> ThreadPoolExecutor:
        # starts no thread until the first operation
        return ThreadPoolExecutor(max_workers=self._size, thread_name_prefix="mapping-store")

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._run(partial(self._read, fn, *args))

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._run(partial(self._write, fn, *args))

    async def fetch(self, sql: str, params: Sequence[Any], *, write: bool) -> list[Sequence[Any]]:
        return await self._run(partial(self._fetch, sql, params, write))

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, call)

    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        with self.engine.connect() as conn:
            return fn(conn, *args)

    def _write(self, fn: Callable[..., T], *args: Any) -> T:
        with self.engine.begin() as conn:
            return fn(conn, *args)

    def _fetch(self, sql: str, params: Sequence[Any], write: bool) -> list[Sequence[Any]]:
        with self.engine.begin() if write else self.engine.connect() as conn:
            driver = conn.connection.driver_connection
            try:
                return list(driver.execute(sql, params).fetchall())  # type: ignore[union-attr]
            except self.dialect.loaded_dbapi.Error as exc:  # sqlite3.Error; a file is never "disconnected"
                raise DBAPIError(None, None, exc) from exc

    def _close(self) -> None:
        # Like AsyncEngine.dispose(): the connections and threads go, the runner stays usable (it reconnects
        # and starts threads again on the next operation), as the readiness probe relies on.
        threads, self._threads = self._threads, self._pool()
        threads.shutdown(wait=True)
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def open_runner(url: URL) -> Runner:
    """The runner for a ``sqlite``/``postgresql`` URL (any driver suffix; see ``mapping._database_url``)."""
    if url.get_backend_name() == "sqlite":
        sync_url = url.set(drivername="sqlite")
        if url.database in (None, "", ":memory:"):
            # one in-memory database shared by every thread: one connection, one thread
            engine = create_engine(sync_url, poolclass=StaticPool, connect_args={"check_same_thread": False})
            threads = 1
        else:
            engine = create_engine(sync_url, **SQLITE_POOL)
            threads = SQLITE_POOL["pool_size"] + SQLITE_POOL["max_overflow"]
        event.listen(engine, "connect", _sqlite_pragmas)
        return ThreadRunner(engine, threads)
    require("asyncpg", extra="postgres", feature="a PostgreSQL mapping store (DATABASE_URL)")
    return AsyncRunner(
        create_async_engine(
            url.set(drivername="postgresql+asyncpg"),
            pool_size=5,
            max_overflow=10,
            connect_args={"timeout": PG_CONNECT_TIMEOUT_S},
        )
    )
