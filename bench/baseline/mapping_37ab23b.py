"""The mapping store: (entity, key) -> Bitrix24 id, last applied version, state and fencing token.

It is how the worker knows whether a key was already created (so a retried ``create`` becomes an update
instead of a duplicate), and how it refuses stale overwrites and zombie writers:

* **versioned**: a write carrying ``version`` is refused when the stored version is higher;
* **fenced**: a write carrying ``fence`` (the token of the lease its writer holds) is refused when a higher
  token has already written the row, so a worker that lost its lease cannot clobber its successor.

Every write is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` statement (batched writes: one statement
per chunk, one transaction), so concurrent writers in many processes are safe without explicit locks.
SQLite (the default, via aiosqlite) runs in WAL mode with a busy timeout so several worker processes can
share one file; PostgreSQL goes through asyncpg. Driver errors become ``StoreError`` here, with the
database password hidden.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

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
    event,
    func,
    or_,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from .errors import StoreError
from .redaction import redact

__all__ = ["DEFAULT_TABLE", "Mapping", "MappingStore", "State"]

State = Literal["active", "deleted", "unknown"]
"""``unknown``: a create may or may not have happened (it was given up after an ambiguous failure); the
next create of the key looks it up by ORIGIN_ID first."""

DEFAULT_TABLE = "bitrix_mapping"
SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite writer waits for another process's write lock before failing."""
PG_CONNECT_TIMEOUT_S = 10.0
CHUNK_ROWS = 500
"""Rows per statement in get_many/record_many: far below SQLite's and asyncpg's bound-parameter limits."""
_CREATE_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Mapping:
    """One row of the store; also the input row of ``MappingStore.record_many``."""

    entity: str
    key: str
    bitrix_id: int | None
    version: int | None
    state: State = "active"
    fence: int = 0


def _async_url(database_url: str) -> URL:
    """``postgresql://`` -> asyncpg, ``sqlite:///`` -> aiosqlite; other drivers are refused."""
    try:
        url = make_url(database_url)
    except ArgumentError as exc:
        raise StoreError("mapping store: DATABASE_URL is not a valid URL") from exc
    backend = url.get_backend_name()
    if backend == "postgresql" or url.drivername == "postgres":
        return url.set(drivername="postgresql+asyncpg")
    if backend == "sqlite":
        return url.set(drivername="sqlite+aiosqlite")
    raise StoreError(f"mapping store: unsupported database {url.drivername!r} (use sqlite or postgresql)")


def _build_table(name: str) -> Table:
    return Table(
        name,
        MetaData(),
        Column("entity", String(64), nullable=False),
        Column("key", String(255), nullable=False),
        Column("bitrix_id", BigInteger().with_variant(Integer(), "sqlite"), nullable=True),
        Column("version", BigInteger().with_variant(Integer(), "sqlite"), nullable=True),
        Column("state", String(16), nullable=False, server_default="active"),
        Column("fence", BigInteger().with_variant(Integer(), "sqlite"), nullable=False, server_default="0"),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        PrimaryKeyConstraint("entity", "key", name=f"{name}_pk"),
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


class MappingStore:
    """Fenced, versioned (entity, key) -> Bitrix id store over SQLAlchemy async."""

    def __init__(self, engine: AsyncEngine, table: Table, safe_url: str, password: str | None) -> None:
        self._engine = engine
        self._table = table
        self._safe_url = safe_url
        self._secrets = [password] if password else []
        insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._insert = insert

    # -- lifecycle ---------------------------------------------------------------------------------------

    @classmethod
    async def connect(cls, database_url: str, *, table: str = DEFAULT_TABLE) -> MappingStore:
        """Create the engine and the table if missing; raises ``StoreError`` if the database is unusable."""
        url = _async_url(database_url)
        safe_url = url.render_as_string(hide_password=True)
        try:
            engine = cls._create_engine(url)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"mapping store {safe_url}: cannot create engine: {type(exc).__name__}") from exc
        store = cls(engine, _build_table(table), safe_url, url.password)
        try:
            await store._create_table()
        except BaseException:
            await engine.dispose()
            raise
        return store

    @staticmethod
    def _create_engine(url: URL) -> AsyncEngine:
        if url.get_backend_name() == "sqlite":
            in_memory = url.database in (None, "", ":memory:")
            pool: dict[str, Any] = (
                {} if in_memory else {"pool_size": 4, "max_overflow": 8, "pool_timeout": 60}
            )
            engine = create_async_engine(url, **pool)
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            return engine
        return create_async_engine(
            url,
            pool_size=5,
            max_overflow=10,
            pool_pre_ping=True,
            connect_args={"timeout": PG_CONNECT_TIMEOUT_S},
        )

    async def _create_table(self) -> None:
        # Two processes starting together may both see the table missing; the loser's CREATE fails.
        for attempt in range(1, _CREATE_ATTEMPTS + 1):
            try:
                async with self._engine.begin() as conn:
                    await conn.run_sync(self._table.metadata.create_all)
                return
            except (SQLAlchemyError, OSError, TimeoutError) as exc:
                if attempt == _CREATE_ATTEMPTS or not await self.ping():
                    raise self._error("create table", exc) from exc
                await asyncio.sleep(0.05 * attempt)

    async def close(self) -> None:
        await self._engine.dispose()

    async def ping(self) -> bool:
        """True when the database answers a trivial query (for /readyz)."""
        try:
            async with self._engine.connect() as conn:
                await conn.execute(select(1))
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
        """The stored rows for ``pairs`` (missing keys are absent); one query per ``CHUNK_ROWS`` pairs."""
        wanted = list(dict.fromkeys(pairs))
        result: dict[tuple[str, str], Mapping] = {}
        if not wanted:
            return result
        t = self._table
        columns = (t.c.entity, t.c.key, t.c.bitrix_id, t.c.version, t.c.state, t.c.fence)
        async with self._connection("get_many") as conn:
            for start in range(0, len(wanted), CHUNK_ROWS):
                chunk = wanted[start : start + CHUNK_ROWS]
                if len(chunk) == 1:
                    cond = and_(t.c.entity == chunk[0][0], t.c.key == chunk[0][1])
                else:
                    cond = tuple_(t.c.entity, t.c.key).in_(chunk)
                rows = await conn.execute(select(*columns).where(cond))
                for row in rows:
                    m = Mapping(row.entity, row.key, row.bitrix_id, row.version, row.state, row.fence)
                    result[(m.entity, m.key)] = m
        return result

    async def count(self, state: State | None = None) -> int:
        stmt = select(func.count()).select_from(self._table)
        if state is not None:
            stmt = stmt.where(self._table.c.state == state)
        async with self._connection("count") as conn:
            return int((await conn.execute(stmt)).scalar_one())

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
        ``CHUNK_ROWS`` rows per statement.
        """
        applied = [False] * len(rows)
        if not rows:
            return applied
        now = datetime.now(UTC)
        async with self._transaction("record_many") as conn:
            for round_ in _rounds(rows):
                for start in range(0, len(round_), CHUNK_ROWS):
                    chunk = round_[start : start + CHUNK_ROWS]
                    done = await self._upsert(conn, [rows[i] for i in chunk], now)
                    for i in chunk:
                        applied[i] = (rows[i].entity, rows[i].key) in done
        return applied

    async def forget(self, entity: str, key: str) -> None:
        """Delete the row outright (tests and admin; the worker tombstones with ``mark_deleted``)."""
        t = self._table
        async with self._transaction("forget") as conn:
            await conn.execute(t.delete().where(and_(t.c.entity == entity, t.c.key == key)))

    async def _upsert(
        self, conn: AsyncConnection, rows: list[Mapping], now: datetime
    ) -> set[tuple[str, str]]:
        t = self._table
        values = [
            {
                "entity": r.entity,
                "key": r.key,
                "bitrix_id": r.bitrix_id,
                "version": r.version,
                "state": r.state,
                "fence": r.fence,
                "updated_at": now,
            }
            for r in rows
        ]
        stmt = self._insert(t).values(values)
        new = stmt.excluded
        # Under the WHERE below, the incoming fence is >= the stored one and, when both versions are
        # known, the incoming version is >= the stored one: so "incoming, else stored" is the max.
        upsert = stmt.on_conflict_do_update(
            index_elements=[t.c.entity, t.c.key],
            set_={
                "bitrix_id": func.coalesce(new.bitrix_id, t.c.bitrix_id),
                "version": func.coalesce(new.version, t.c.version),
                "state": new.state,
                "fence": new.fence,
                "updated_at": new.updated_at,
            },
            where=and_(
                new.fence >= t.c.fence,
                or_(new.version.is_(None), t.c.version.is_(None), new.version >= t.c.version),
            ),
        ).returning(t.c.entity, t.c.key)
        result = await conn.execute(upsert)
        return {(r.entity, r.key) for r in result}

    # -- error boundary ----------------------------------------------------------------------------------

    @asynccontextmanager
    async def _connection(self, what: str) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.connect() as conn:
                yield conn
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise self._error(what, exc) from exc

    @asynccontextmanager
    async def _transaction(self, what: str) -> AsyncIterator[AsyncConnection]:
        try:
            async with self._engine.begin() as conn:
                yield conn
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            raise self._error(what, exc) from exc

    def _error(self, what: str, exc: BaseException) -> StoreError:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0] if str(exc) else ""
        message = f"mapping store {self._safe_url}: {what} failed: {type(exc).__name__}"
        if detail:
            message += f": {detail[:300]}"
        return StoreError(redact(message, self._secrets))


def _rounds(rows: Sequence[Mapping]) -> list[list[int]]:
    """Split row indexes so no key repeats within a round (one upsert cannot touch a row twice)."""
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
