"""What the frozen mapping store lacks that today's worker calls at start (not on the hot path, so it does
not change the cost being compared): the store's identity (``MappingStore.identity``)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Column, String, Table, func, select


async def identity(self: Any) -> tuple[str, int]:
    metadata = self._table.metadata
    name = f"{self._table.name}_meta"
    meta = metadata.tables.get(name)
    if meta is None:
        meta = Table(
            name, metadata, Column("name", String(64), primary_key=True), Column("value", String(255))
        )
    async with self._transaction("identity") as conn:
        await conn.run_sync(lambda sync: meta.create(sync, checkfirst=True))
        read = select(meta.c.value).where(meta.c.name == "store_id")
        found = (await conn.execute(read)).scalar()
        if found is None:
            await conn.execute(meta.insert().values(name="store_id", value=uuid.uuid4().hex))
            found = (await conn.execute(read)).scalar_one()
        fence = (await conn.execute(select(func.max(self._table.c.fence)))).scalar()
    return str(found), int(fence or 0)
