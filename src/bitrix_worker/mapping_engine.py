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
one that cost the connection invalidates it, as SQLAlchemy would. On SQLite a batch's write (``upsert``)
learns that every row applied from the count of rows changed rather than from a row per key.

A caller cancelled while its operation runs in a thread does not stop it: the operation finishes (or rolls
back on error) on its own, as a statement already sent to PostgreSQL would.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
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

    async def upsert(
        self, sql: str, quiet: str, params: Sequence[Any], rows: int
    ) -> list[Sequence[Any]] | None:
        """A rendered upsert of ``rows`` distinct keys, committed: ``sql`` returns the keys it applied,
        ``quiet`` is the same statement without RETURNING. None when every row applied."""
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

    async def upsert(
        self, sql: str, quiet: str, params: Sequence[Any], rows: int
    ) -> list[Sequence[Any]] | None:
        # asyncpg receives every returned row in one message: nothing to save by counting
        return await self.fetch(sql, params, write=True)

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

    def _pool(self) -> StoreThreads:
        # starts no thread until the first operation
        return StoreThreads(self._size, "mapping-store")

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._run(partial(self._read, fn, *args))

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._run(partial(self._write, fn, *args))

    async def fetch(self, sql: str, params: Sequence[Any], *, write: bool) -> list[Sequence[Any]]:
        return await self._run(partial(self._fetch, sql, params, write))

    async def upsert(
        self, sql: str, quiet: str, params: Sequence[Any], rows: int
    ) -> list[Sequence[Any]] | None:
        return await self._run(partial(self._upsert, sql, quiet, params, rows))

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    async def _run(self, call: Callable[[], T]) -> T:
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._threads.submit(done, call)
        return await done

    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        with self.engine.connect() as conn:
            return fn(conn, *args)

    def _write(self, fn: Callable[..., T], *args: Any) -> T:
        with self.engine.begin() as conn:
            return fn(conn, *args)

    def _fetch(self, sql: str, params: Sequence[Any], write: bool) -> list[Sequence[Any]]:
        # The pool's connection itself, without a SQLAlchemy Connection around it (a third of this hop's
        # CPU): sqlite3 begins the transaction before the statement, as it does under engine.begin(), and
        # the pool rolls back whatever an error left open when the connection goes back.
        pooled = self.engine.raw_connection()
        try:
            driver = pooled.driver_connection
            rows: list[Sequence[Any]] = driver.execute(sql, params).fetchall()  # type: ignore[union-attr]
            if write:
                driver.commit()  # type: ignore[union-attr]
        except self.dialect.loaded_dbapi.Error as exc:  # sqlite3.Error; a file is never "disconnected"
            raise DBAPIError(None, None, exc) from exc
        finally:
            pooled.close()
        return rows

    def _upsert(self, sql: str, quiet: str, params: Sequence[Any], rows: int) -> list[Sequence[Any]] | None:
        """Nearly always every row applies, and then the count of rows changed says so: the keys of a
        RETURNING clause were one more step of SQLite per row, each releasing and taking back the GIL.
        When fewer applied (a higher fence or version won), the write is rolled back and made again
        returning the keys: what the count does not say is which."""
        pooled = self.engine.raw_connection()
        try:
            driver: Any = pooled.driver_connection
            if driver.execute(quiet, params).rowcount == rows:  # sqlite3_changes(): rows inserted or updated
                driver.commit()
                return None
            driver.rollback()
            found: list[Sequence[Any]] = driver.execute(sql, params).fetchall()
            driver.commit()
        except self.dialect.loaded_dbapi.Error as exc:
            raise DBAPIError(None, None, exc) from exc
        finally:
            pooled.close()
        return found

    def _close(self) -> None:
        # Like AsyncEngine.dispose(): the connections and threads go, the runner stays usable (it reconnects
        # and starts threads again on the next operation), as the readiness probe relies on.
        threads, self._threads = self._threads, self._pool()
        threads.shutdown()
        self.engine.dispose()


class StoreThreads:
    """Up to ``size`` threads, each started when a call finds no idle one, taking calls from one queue and
    handing each result to its event loop.

    Why not ``loop.run_in_executor``: with a ``ThreadPoolExecutor`` each hop built a
    ``concurrent.futures.Future`` (a ``Condition``), took two locks and a Python semaphore and chained the
    future to an asyncio one: ``ThreadPoolExecutor.submit`` was the largest single item of the event loop
    thread's profile (~5% of its samples). Here a hop is a put on a C queue and a ``call_soon_threadsafe``
    back (about a third less CPU per hop, both threads counted). Like the executor, a call
    cancelled before a thread takes it never runs; one already running finishes.
    """

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._idle: queue.SimpleQueue[None] = queue.SimpleQueue()  # a token per call finished, as the
        self._threads: list[threading.Thread] = []  # executor's idle semaphore counts them

    def submit(self, done: asyncio.Future[T], call: Callable[[], T]) -> None:
        try:
            self._idle.get_nowait()
        except queue.Empty:
            if len(self._threads) < self._size:
                name = f"{self._name}_{len(self._threads)}"
                thread = threading.Thread(target=self._work, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)
        self._calls.put((done, call))

    def shutdown(self) -> None:
        """Let every thread finish what it runs and stop; wait for them."""
        for _ in self._threads:
            self._calls.put(None)
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while (item := self._calls.get()) is not None:
            done, call = item
            if not done.cancelled():  # a benign race, as the executor's: at worst it runs, unawaited
                try:
                    outcome: tuple[Callable[..., None], Any] = (_succeed, call())
                except BaseException as exc:  # delivered to the caller, as the executor does
                    outcome = (_fail, exc)
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for this any more
                    done.get_loop().call_soon_threadsafe(outcome[0], done, outcome[1])
            del item, done, call
            self._idle.put(None)


_Call = tuple["asyncio.Future[Any]", Callable[[], Any]]


def _succeed(done: asyncio.Future[Any], result: Any) -> None:
    if not done.cancelled():
        done.set_result(result)


def _fail(done: asyncio.Future[Any], exc: BaseException) -> None:
    if not done.cancelled():
        done.set_exception(exc)


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
