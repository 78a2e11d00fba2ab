"""The mapping store's two hot statements, rendered by SQLAlchemy once per row count and then reused.

Why: building the multi-row ``INSERT ... ON CONFLICT DO UPDATE ... WHERE ... RETURNING`` as a Core expression
and compiling it for every batch was most of the worker's CPU per operation (7.7 ms CPU for a 50-row write
on SQLite, against ~1 ms for executing it). The statement's text depends only on the dialect, the table and
the number of rows, so SQLAlchemy renders it once per row count (the dialect still decides quoting,
placeholders and casts) and the store executes the cached text with a flat tuple of parameters.

Reads select ``entity = ? AND key IN (?, ...)`` per entity rather than ``(entity, key) IN (VALUES ...)``:
SQLite does not use the primary key for a row-value ``IN`` and scanned the whole table for every batch.

Pure logic: no I/O here; ``MappingStore`` executes what this module renders.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from operator import itemgetter
from typing import Any

from sqlalchemy import Table, and_, bindparam, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

__all__ = ["ROW_COLUMNS", "SELECT_COLUMNS", "Rendered", "StatementCache", "upsert_statement"]

ROW_COLUMNS = ("entity", "key", "bitrix_id", "version", "state", "fence", "updated_at")
"""The columns one upserted row binds, in the order of the value tuples handed to ``Rendered.params``."""
SELECT_COLUMNS = ("entity", "key", "bitrix_id", "version", "state", "fence")
"""The columns a read returns, in ``Mapping``'s field order."""
CACHED_SIZES = 64
"""Row counts kept rendered per statement kind (the worker's batches hold at most 50 rows)."""

_BIND = re.compile(r"^p_(\d+)_(\d+)$")


@dataclass(frozen=True, slots=True)
class Rendered:
    """A statement's SQL text and, for each positional placeholder, the (row, column) value it takes.

    ``width``: the columns of each row of values (``ROW_COLUMNS`` for an upsert; entity and key for a
    read). The parameters are picked from the values laid end to end, by index, all in C (``itemgetter``):
    picking them one by one in Python was ~0.5 µs per row written or read."""

    sql: str
    picks: tuple[tuple[int, int], ...]
    width: int
    quiet: str = ""  # an upsert without its RETURNING clause (same placeholders; ``MappingStore``)
    _pick: Callable[[Sequence[Any]], Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        indexes = [r * self.width + c for r, c in self.picks]
        pick = itemgetter(*indexes) if len(indexes) > 1 else (lambda flat: (flat[indexes[0]],))
        object.__setattr__(self, "_pick", pick)

    def params(self, values: Sequence[Sequence[Any]]) -> tuple[Any, ...]:
        """The flat parameter tuple for ``values`` (one sequence of ``width`` columns per row)."""
        flat = list(chain.from_iterable(values))
        if len(flat) != len(values) * self.width:
            raise ValueError(f"every row of values must have {self.width} columns")
        picked: tuple[Any, ...] = self._pick(flat)
        return picked


def _bind(row: int, col: int) -> Any:
    # Names encode where the value comes from, so the placeholder order the dialect chose can be mapped
    # back to the rows whatever it is (see _render).
    return bindparam(f"p_{row}_{col}")


def upsert_statement(table: Table, rows: int, dialect: Dialect, *, returning: bool = True) -> Any:
    """The fenced, versioned upsert of ``rows`` rows with named placeholders (see ``MappingStore``),
    returning the keys of the rows it applied (``returning``)."""
    t = table
    insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    stmt = insert(t).values([{name: _bind(i, j) for j, name in enumerate(ROW_COLUMNS)} for i in range(rows)])
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
    )
    return upsert.returning(t.c.entity, t.c.key) if returning else upsert


def select_statement(table: Table, keys: int) -> Any:
    """The stored rows of one entity for ``keys`` keys: values are (entity, key) pairs, entity from row 0."""
    t = table
    columns = [t.c[name] for name in SELECT_COLUMNS]
    one = keys == 1
    cond = t.c.key == _bind(0, 1) if one else t.c.key.in_([_bind(i, 1) for i in range(keys)])
    return select(*columns).where(and_(t.c.entity == _bind(0, 0), cond))


def _render(stmt: Any, dialect: Dialect, width: int) -> Rendered:
    compiled = stmt.compile(dialect=dialect)
    names = compiled.positiontup
    if names is None:  # pragma: no cover - both supported dialects use positional placeholders
        raise NotImplementedError(f"{dialect.name}: named placeholders are not supported")
    picks = []
    for name in names:
        match = _BIND.match(name)
        if match is None:  # pragma: no cover - every bind above is named p_<row>_<col>
            raise NotImplementedError(f"unexpected placeholder {name!r}")
        picks.append((int(match[1]), int(match[2])))
    return Rendered(str(compiled), tuple(picks), width)


class StatementCache:
    """Rendered upserts and reads per row count for one table and dialect (least recently used dropped)."""

    def __init__(self, table: Table, dialect: Dialect, *, size: int = CACHED_SIZES) -> None:
        self._table = table
        self._dialect = dialect
        self._size = size
        self._cache: OrderedDict[tuple[str, int], Rendered] = OrderedDict()
        self._lock = threading.Lock()  # SQLite's store operations run in several threads at once
        stamp = table.c.updated_at.type.dialect_impl(dialect).bind_processor(dialect)
        self._stamp: Callable[[Any], Any] = stamp or (lambda value: value)
        for name in ROW_COLUMNS[:-1]:
            column = table.c[name]
            if column.type.dialect_impl(dialect).bind_processor(dialect) is not None:
                # Only the timestamp is converted (once per write); a type that needs converting per row
                # would need it here too.
                raise NotImplementedError(f"{dialect.name}: column {name} needs a bind processor")

    def upsert(self, rows: int) -> Rendered:
        return self._get("upsert", rows)

    def select(self, keys: int) -> Rendered:
        return self._get("select", keys)

    def stamp(self, now: datetime) -> Any:
        """``updated_at`` as the driver takes it (SQLite stores text, asyncpg takes the datetime)."""
        return self._stamp(now)

    def _get(self, kind: str, n: int) -> Rendered:
        key = (kind, n)
        with self._lock:
            found = self._cache.get(key)
            if found is not None:
                self._cache.move_to_end(key)
                return found
        if kind == "upsert":
            rendered = self._upsert(n)
        else:
            rendered = _render(select_statement(self._table, n), self._dialect, 2)
        with self._lock:
            self._cache[key] = rendered
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return rendered

    def _upsert(self, rows: int) -> Rendered:
        full = _render(upsert_statement(self._table, rows, self._dialect), self._dialect, len(ROW_COLUMNS))
        bare = upsert_statement(self._table, rows, self._dialect, returning=False)
        quiet = _render(bare, self._dialect, len(ROW_COLUMNS))
        if quiet.picks != full.picks:  # pragma: no cover - RETURNING binds nothing
            raise NotImplementedError(f"{self._dialect.name}: RETURNING moved the placeholders")
        return Rendered(full.sql, full.picks, full.width, quiet.sql)
