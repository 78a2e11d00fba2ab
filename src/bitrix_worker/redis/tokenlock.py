"""The per-portal refresh lock: at most one process refreshes a portal's OAuth pair at a time.

redis-py's ``Lock`` (``SET NX PX`` to take it, a compare-and-delete script to release it, so a holder whose
lock expired cannot release its successor's). The time-to-live bounds how long a holder that died mid-refresh
blocks the others; it must exceed one token-endpoint request plus the registry write (``REFRESH_LOCK_S``).
Waiters do not queue on the lock: they poll ``held()`` and re-read the registry when it is free
(``portals.tokens``), because what they wait for is the new token, not their own turn to refresh.
"""

from __future__ import annotations

from redis.asyncio.lock import Lock
from redis.exceptions import LockError

from .connection import RedisClient
from .errors import translated

__all__ = ["RefreshLock"]


class RefreshLock:
    def __init__(self, client: RedisClient, key: str, *, ttl_s: float) -> None:
        self._client = client
        self.key = key
        self._ttl_s = ttl_s

    def _lock(self) -> Lock:
        return Lock(self._client, self.key, timeout=self._ttl_s, blocking=False, thread_local=False)

    async def acquire(self) -> Lock | None:
        """The held lock, or None when another process holds it."""
        lock = self._lock()
        with translated("refresh lock"):
            return lock if await lock.acquire() else None

    async def release(self, lock: Lock) -> bool:
        """False when the lock had already expired (another process may hold it now)."""
        with translated("refresh lock"):
            try:
                await lock.release()
            except LockError:
                return False
        return True

    async def held(self) -> bool:
        with translated("refresh lock"):
            return bool(await self._client.exists(self.key))
