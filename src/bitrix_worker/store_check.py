"""At start: which mapping store is this, and can it vouch for keys it does not know (``vouching``)?"""

from __future__ import annotations

from typing import Any

from .config import Settings
from .defaults import LIVE_HEARTBEATS
from .errors import ConfigError
from .mapping import MappingStore
from .redis.stores import StoreRegistry
from .redis.workers import WorkerRegistry
from .vouching import StoreUse, sqlite_on_several_hosts, store_verdict


async def check_store(
    store: MappingStore,
    stores: StoreRegistry,
    workers: WorkerRegistry,
    settings: Settings,
    *,
    now_ms: int,
    log: Any,
) -> tuple[str, bool]:
    """Record this worker's store; returns (store id, whether it vouches). ConfigError (naming
    DATABASE_URL) when another live worker on the stream uses a different store, or when workers on
    different hosts (``StoreRegistry.host``) share the stream and one of them uses SQLite."""
    consumer = settings.consumer
    live_window_ms = LIVE_HEARTBEATS * settings.heartbeat_interval_s * 1000
    store_id, fence = await store.identity()
    seen = await workers.last_seen()
    live = {c for c, at in seen.items() if c != consumer and now_ms - at <= live_window_ms}
    their_stores = await stores.worker_stores()
    live_stores = {c: their_stores[c] for c in live if c in their_stores}
    me = StoreUse(store_id, stores.host, settings.database_url.startswith("sqlite"))
    refusal = sqlite_on_several_hosts(me, live_stores)
    if refusal is not None:
        raise ConfigError("DATABASE_URL", refusal)
    verdict = store_verdict(
        await stores.read(),
        store_id,
        fence,
        stream_has_history=await stores.stream_has_history(),
        live_other_stores={c: use.store_id for c, use in live_stores.items()},
    )
    if verdict.refuse is not None:
        raise ConfigError("DATABASE_URL", verdict.refuse)
    if verdict.record is not None:
        await stores.write(verdict.record)
    if verdict.note:
        log.warning(verdict.note, store_id=store_id)
    await stores.register(consumer, me)
    return store_id, verdict.vouched
