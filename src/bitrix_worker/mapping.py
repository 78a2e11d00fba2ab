"""The mapping store: (entity, key) -> Bitrix24 id, last applied version, state and fencing token.

It is how the worker knows whether a key was already created (so a retried ``create`` becomes an update
instead of a duplicate), and how it refuses stale overwrites and zombie writers:

* **versioned**: a write carrying ``version`` is refused when the stored version is higher;
* **fenced**: a write carrying ``fence`` (the token of the lease its writer holds) is refused when a higher
  token has already written the row, so a worker that lost its lease cannot clobber its successor.

Every write is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` statement (batched writes: one statement
per chunk, one transaction), so concurrent writers in many processes are safe without explicit locks. The
statement text is rendered by SQLAlchemy once per row count and reused (``mapping_sql``): building it per
batch used to be half of the worker's CPU.
SQLite (the default) runs in WAL mode with a busy timeout so several worker processes can share one file;
each store operation runs whole in a thread (``mapping_engine``). PostgreSQL goes through asyncpg. Driver
errors become ``StoreError`` here, with the database password hidden.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    and_,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.sql import Executable

from .errors import StoreError
from .mapping_engine import Runner, open_runner
from .mapping_sql import StatementCache
from .redaction import redact, redact_url
from .values import LastWrite, Mapping, State

__all__ = ["DEFAULT_TABLE", "Mapping", "MappingStore", "State"]

DEFAULT_TABLE = "bitrix_mapping"
CHUNK_ROWS = 500
"""Rows per statement in get_many/record_many: far below SQLite's and asyncpg's bound-parameter limits."""
_CREATE_ATTEMPTS = 3

T = TypeVar("T")


def _database_url(database_url: str) -> URL:
    """``postgresql://`` -> asyncpg, ``sqlite:///`` -> the standard sqlite3 module in a thread pool (any
    driver suffix given, such as ``sqlite+aiosqlite``, is accepted and replaced); other databases are
    refused."""
    try:
        url = make_url(database_url)
    except ArgumentError as exc:
        raise StoreError("mapping store: DATABASE_URL is not a valid URL") from exc
    backend = url.get_backend_name()
    if backend == "postgresql" or url.drivername == "postgres":
        return url.set(drivername="postgresql+asyncpg")
    if backend == "sqlite":
        return url.set(drivername="sqlite")
    raise StoreError(f"mapping store: unsupported database {url.drivername!r} (use sqlite or postgresql)")


def _meta_table(name: str, metadata: MetaData) -> Table:
    """One row per fact about the store itself; today only ``store_id``, a random id made when the store was
    created, so Redis can tell this store from a new, different or restored one (``vouching``)."""
    return Table(
        f"{name}_meta",
        metadata,
        Column("name", String(64), primary_key=True),
        Column("value", String(255), nullable=False),
    )


def _build_table(name: str) -> Table:
    metadata = MetaData()
    _meta_table(name, metadata)
    return Table(
        name,
        metadata,
        Column("entity", String(64), nullable=False),
        Column("key", String(255), nullable=False),
        Column("bitrix_id", BigInteger().with_variant(Integer(), "sqlite"), nullable=True),
        Column("version", BigInteger().with_variant(Integer(), "sqlite"), nullable=True),
        Column("state", String(16), nullable=False, server_default="active"),
        Column("fence", BigInteger().with_variant(Integer(), "sqlite"), nullable=False, server_default="0"),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("entity", "key", name=f"{name}_pk"),
    )


class MappingStore:
    """Fenced, versioned (entity, key) -> Bitrix id store over SQLAlchemy (see ``mapping_engine``)."""

    def __init__(self, runner: Runner, table: Table, safe_url: str, password: str | None) -> None:
        self._runner = runner
        self._table = table
        self._safe_url = safe_url
        self._secrets = [password] if password else []
        self._sql = StatementCache(table, runner.dialect)
        self._owns_runner = True

    # -- lifecycle ---------------------------------------------------------------------------------------

    @classmethod
    async def connect(cls, database_url: str, *, table: str = DEFAULT_TABLE) -> MappingStore:
        """Create the engine and the table if missing; raises ``StoreError`` if the database is unusable."""
        url = _database_url(database_url)
        safe_url = redact_url(url.render_as_string(hide_password=False))  # password and ?password= masked
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            Path(str(url.database)).parent.mkdir(parents=True, exist_ok=True)  # the default's data directory
        try:
            runner = open_runner(url)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"mapping store {safe_url}: cannot create engine: {type(exc).__name__}") from exc
        store = cls(runner, _build_table(table), safe_url, url.password)
        try:
            await store._create_table()
        except BaseException:
            await runner.close()
            raise
        return store

    async def _create_table(self) -> None:
        # Two processes starting together may both see the table missing; the loser's CREATE fails.
        for attempt in range(1, _CREATE_ATTEMPTS + 1):
            try:
                await self._runner.write(self._table.metadata.create_all)
                return
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                if attempt == _CREATE_ATTEMPTS or not await self.ping():
                    raise self._error("create table", exc) from exc
                await asyncio.sleep(0.05 * attempt)

    async def sibling(self, table: str) -> MappingStore:
        """The same database through the same engine (one pool for every portal of a multi-portal worker),
        another table, created if missing; closing it leaves the engine to this store."""
        store = MappingStore(self._runner, _build_table(table), self._safe_url, None)
        store._secrets = self._secrets
        store._owns_runner = False
        await store._create_table()
        return store

    async def close(self) -> None:
        if self._owns_runner:
            await self._runner.close()

    async def ping(self) -> bool:
        """True when the database answers a trivial query (for /readyz)."""
        try:
            await self._runner.read(_execute, select(1))
        except (SQLAlchemyError, OSError, TimeoutError):
            return False
        return True

    @property
    def table_name(self) -> str:
        return self._table.name

    # -- reads -------------------------------------------------------------------------------------------

    async def get(self, entity: str, key: str) -> Mapping | None:
        found = await self.get_many([(entity, key)])
        return found.get((entity, key))

    async def get_many(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Mapping]:
        """The stored rows for ``pairs`` (missing keys are absent); a query per entity per ``CHUNK_ROWS``."""
        wanted = list(dict.fromkeys(pairs))
        if not wanted:
            return {}
        entity = wanted[0][0]
        if len(wanted) <= CHUNK_ROWS and all(pair[0] == entity for pair in wanted):  # a worker's batch
            stmt = self._sql.select(len(wanted))
            rows = await self._run("get_many", self._runner.fetch, stmt.sql, stmt.params(wanted), write=False)
            found = [Mapping(*row) for row in rows]  # columns in Mapping's order (SELECT_COLUMNS)
            return {(m.entity, m.key): m for m in found}
        return await self._run("get_many", self._runner.read, self._select, wanted)

    def _select(self, conn: Connection, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], Mapping]:
        by_entity: dict[str, list[tuple[str, str]]] = {}
        for pair in wanted:
            by_entity.setdefault(pair[0], []).append(pair)
        result: dict[tuple[str, str], Mapping] = {}
        for pairs in by_entity.values():
            for start in range(0, len(pairs), CHUNK_ROWS):
                chunk = pairs[start : start + CHUNK_ROWS]
                stmt = self._sql.select(len(chunk))
                for row in conn.exec_driver_sql(stmt.sql, stmt.params(chunk)):
                    m = Mapping(row[0], row[1], row[2], row[3], row[4], row[5])
                    result[(m.entity, m.key)] = m
        return result

    async def last_writes(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], LastWrite]:
        """State, version and time of each key's last write (for the replay guard; missing keys absent)."""
        wanted = list(dict.fromkeys(pairs))
        if not wanted:
            return {}
        return await self._run("last_writes", self._runner.read, self._last_writes, wanted)

    def _last_writes(
        self, conn: Connection, wanted: list[tuple[str, str]]
    ) -> dict[tuple[str, str], LastWrite]:
        t = self._table
        found: dict[tuple[str, str], LastWrite] = {}
        for entity, key in wanted:
            stmt = select(t.c.state, t.c.version, t.c.updated_at).where(
                and_(t.c.entity == entity, t.c.key == key)
            )
            row = conn.execute(stmt).first()
            if row is not None:
                at = row.updated_at if row.updated_at.tzinfo else row.updated_at.replace(tzinfo=UTC)
                found[(entity, key)] = LastWrite(row.state, row.version, int(at.timestamp() * 1000))
        return found

    async def identity(self) -> tuple[str, int]:
        """(this store's id, the highest fencing token it holds): its id is made once, when it is created."""
        return await self._run("identity", self._runner.write, self._identity)

    def _identity(self, conn: Connection) -> tuple[str, int]:
        meta = self._table.metadata.tables[f"{self._table.name}_meta"]
        read = select(meta.c.value).where(meta.c.name == "store_id")
        found = conn.execute(read).scalar()
        if found is None:  # two workers starting together: the second insert does nothing
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            new = insert(meta).values(name="store_id", value=uuid.uuid4().hex)
            conn.execute(new.on_conflict_do_nothing(index_elements=["name"]))
            found = conn.execute(read).scalar_one()
        fence = conn.execute(select(func.max(self._table.c.fence))).scalar()
        return str(found), int(fence or 0)

    async def count(self, state: State | None = None) -> int:
        stmt = select(func.count()).select_from(self._table)
        if state is not None:
            stmt = stmt.where(self._table.c.state == state)
        return int(await self._run("count", self._runner.read, _scalar, stmt))

    # -- writes ------------------------------------------------------------------------------------------

    async def record_applied(
        self,
        entity: str,
        key: str,
        *,
        bitrix_id: int | None,
        version: int | None,
        fence: int,
        state: State = "active",
    ) -> bool:
        """Upsert one row unless a higher fence or a higher version already wrote it; True if applied."""
        row = Mapping(entity, key, bitrix_id, version, state, fence)
        return (await self.record_many([row]))[0]

    async def mark_deleted(self, entity: str, key: str, *, fence: int) -> bool:
        """Tombstone the key (kept so a late stale update cannot resurrect it); True if applied."""
        return await self.record_applied(
            entity, key, bitrix_id=None, version=None, fence=fence, state="deleted"
        )

    async def record_many(self, rows: Sequence[Mapping]) -> list[bool]:
        """``record_applied`` for each row, in one transaction; returns whether each row applied.

        Rows for the same key apply in order (one statement per occurrence round), the rest in chunks of
        ``CHUNK_ROWS`` rows per statement. A worker's batch is one statement, atomic on its own.
        """
        if not rows:
            return []
        stamp = self._sql.stamp(datetime.now(UTC))
        rounds = _rounds(rows)
        if len(rounds) == 1 and len(rows) <= CHUNK_ROWS:  # a worker's batch: one statement, atomic alone
            stmt = self._sql.upsert(len(rows))
            params = stmt.params([_values(row, stamp) for row in rows])
            found = await self._run(
                "record_many", self._runner.upsert, stmt.sql, stmt.quiet, params, len(rows)
            )
            if found is None:  # every row applied
                return [True] * len(rows)
            done = {(r[0], r[1]) for r in found}
            return [(row.entity, row.key) in done for row in rows]
        return await self._run("record_many", self._runner.write, self._write, rows, rounds, stamp)

    async def forget(self, entity: str, key: str) -> None:
        """Delete the row outright (tests and admin; the worker tombstones with ``mark_deleted``)."""
        t = self._table
        stmt = t.delete().where(and_(t.c.entity == entity, t.c.key == key))
        await self._run("forget", self._runner.write, _execute, stmt)

    def _write(
        self, conn: Connection, rows: Sequence[Mapping], rounds: list[list[int]], stamp: Any
    ) -> list[bool]:
        applied = [False] * len(rows)
        for round_ in rounds:
            for start in range(0, len(round_), CHUNK_ROWS):
                chunk = round_[start : start + CHUNK_ROWS]
                values = [_values(rows[i], stamp) for i in chunk]
                stmt = self._sql.upsert(len(chunk))
                done = {(r[0], r[1]) for r in conn.exec_driver_sql(stmt.sql, stmt.params(values))}
                for i in chunk:
                    applied[i] = (rows[i].entity, rows[i].key) in done
        return applied

    # -- error boundary ----------------------------------------------------------------------------------

    async def _run(
        self,
        what: str,
        how: Callable[..., Awaitable[T]],
        *args: Any,
        **kwargs: Any,
    ) -> T:
        """``how`` (the runner's read, write or fetch) of ``args``, driver errors turned into ``StoreError``.

        Retried once when the connection turned out to be dead (the server restarted, a proxy dropped it):
        SQLAlchemy then discards every pooled connection older than the failure, so the retry gets a fresh
        one. Safe to repeat: reads change nothing and the upsert is idempotent (a repeat of a committed
        write carries the same fence and version, so it applies the same values again).
        """
        for attempt in (1, 2):
            try:
                return await how(*args, **kwargs)
            except DBAPIError as exc:
                if attempt == 1 and exc.connection_invalidated:
                    continue
                raise self._error(what, exc) from exc
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                raise self._error(what, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _error(self, what: str, exc: BaseException) -> StoreError:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0] if str(exc) else ""
        message = f"mapping store {self._safe_url}: {what} failed: {type(exc).__name__}"
        if detail:
            message += f": {detail[:300]}"
        return StoreError(redact(message, self._secrets))


def _execute(conn: Connection, stmt: Executable) -> None:
    conn.execute(stmt)


def _scalar(conn: Connection, stmt: Executable) -> Any:
    return conn.execute(stmt).scalar_one()


def _values(row: Mapping, stamp: Any) -> tuple[Any, ...]:
    """One row's values in ``mapping_sql.ROW_COLUMNS`` order."""
    return (row.entity, row.key, row.bitrix_id, row.version, row.state, row.fence, stamp)


def _rounds(rows: Sequence[Mapping]) -> list[list[int]]:
    """Split row indexes so no key repeats within a round (one upsert cannot touch a row twice)."""
    if len({(row.entity, row.key) for row in rows}) == len(rows):  # a worker's batch: one round
        return [list(range(len(rows)))]
    rounds: list[list[int]] = []
    seen: dict[tuple[str, str], int] = {}
    for i, row in enumerate(rows):
        k = (row.entity, row.key)
        n = seen.get(k, 0)
        seen[k] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(i)
    return rounds
