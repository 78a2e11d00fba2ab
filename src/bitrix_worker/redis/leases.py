"""Per-key create leases with fencing tokens.

The per-key turn (claim.lua) already keeps two live units of one key apart. A lease closes the remaining gap:
a worker that stalls past the reclaim idle time (GC pause, frozen VM) while its entry is reclaimed by another.
Before a create, each worker takes ``SET lease NX PX ttl`` with a token from one ``INCR``; the mapping store
refuses writes whose token is lower than the last one written, so a zombie can neither create concurrently
with its successor (it finds the lease taken) nor overwrite its successor's mapping. The worker's heartbeat
renews its leases on the same schedule as it keeps its pending entries fresh, and the TTL equals the reclaim
idle time: a worker's leases lapse when its entries become reclaimable, not later.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..config import Settings
from ..defaults import StreamKeys
from ..errors import StoreError
from .connection import RedisClient
from .errors import translated
from .scripts import register


def lease_ttl_ms(settings: Settings) -> int:
    """A dead worker's create may still be running on the portal for up to the read timeout: its lease must
    outlive that, or a successor's lookup could miss an entity that is about to be committed."""
    longest_s = max(settings.read_timeout_s, settings.portal_request_timeout_s) + 5
    return max(settings.claim_idle_ms, int(longest_s * 1000))


class Leases:
    def __init__(self, client: RedisClient, keys: StreamKeys, *, ttl_ms: int) -> None:
        self._client = client
        self._keys = keys
        self._ttl_ms = ttl_ms
        self._script = register(client, "leases")
        self._held: dict[str, int] = {}
        self._highest = 0
        self._unsure: dict[str, int] = {}  # ident -> token of a lease we may hold (its answer was lost)

    async def token(self) -> int:
        """A fencing token greater than every token handed out before, across all workers.

        Never one this process already took, even if Redis lost increments: a Redis Cluster failover can lose
        the last writes a primary acknowledged but had not yet replicated, the counter then restarts below
        tokens that were handed out (and written to the mapping store, which would refuse the lower ones).
        The counter is moved past what this process knows of instead.
        """
        with translated("fencing token"):
            token = int(await self._client.incr(self._keys.fence))
            if token <= self._highest:
                token = int(await self._client.incrby(self._keys.fence, self._highest - token + 1))
        self._highest = max(self._highest, token)
        return token

    async def adopt(self, token: int) -> int:
        """``token`` if it may serve as a new fencing token (taken elsewhere by INCR, e.g. by the claim),
        else a fresh one: never one at or below a token this process already took (see ``token``)."""
        if token > self._highest:
            self._highest = token
            return token
        return await self.token()

    async def acquire(self, idents: Sequence[str], token: int) -> dict[str, int]:
        """Try to lease each key; returns the idents that are busy, with the ms until their lease ends."""
        if not idents:
            return {}
        await self._drop_unsure(idents, token)
        try:
            return await self._acquire(idents, token)
        except StoreError:
            self._unsure.update(dict.fromkeys(idents, token))
            raise

    async def _drop_unsure(self, idents: Sequence[str], token: int) -> None:
        """Release the leases an earlier attempt of ours may have taken without hearing back (Redis went away
        mid-write): a batch tried again would otherwise find its own lease and wait it out as busy."""
        by_token: dict[int, list[str]] = {}
        for ident in idents:
            old = self._unsure.pop(ident, None)
            if old is not None and old != token:
                by_token.setdefault(old, []).append(ident)
        for old, mine in by_token.items():
            await self.release(mine, old)

    async def _acquire(self, idents: Sequence[str], token: int) -> dict[str, int]:
        with translated("lease"):
            async with self._client.pipeline(transaction=False) as pipe:
                for ident in idents:
                    pipe.set(self._keys.lease(ident), token, nx=True, px=self._ttl_ms)
                got = await pipe.execute()
                busy = [ident for ident, ok in zip(idents, got, strict=True) if not ok]
                for ident in busy:
                    pipe.pttl(self._keys.lease(ident))
                ttls = await pipe.execute() if busy else []
        for ident in idents:
            if ident not in busy:
                self._held[ident] = token
        return {ident: max(1, int(ttl)) for ident, ttl in zip(busy, ttls, strict=True)}

    async def confirm(self, idents: Sequence[str], token: int) -> set[str]:
        """Renew each lease that still carries ``token``; returns the idents whose lease was lost.

        Called right before a create is sent: a worker that stalled past its lease (and whose entry was
        reclaimed meanwhile) must not send a create its successor may already have made.
        """
        if not idents:
            return set()
        with translated("lease check"):
            keys = [self._keys.lease(i) for i in idents]
            renewed = await self._script(keys=keys, args=[token, "confirm", self._ttl_ms])
        lost = {ident for ident, n in zip(idents, renewed, strict=True) if not int(n)}
        for ident in lost:
            if self._held.get(ident) == token:
                del self._held[ident]
        return lost

    async def release(self, idents: Sequence[str], token: int) -> None:
        if not idents:
            return
        for ident in idents:
            if self._held.get(ident) == token:
                del self._held[ident]
        try:
            with translated("lease release"):
                await self._script(keys=[self._keys.lease(i) for i in idents], args=[token, "release", 0])
        except StoreError:
            self._unsure.update(dict.fromkeys(idents, token))  # released when the key comes back here
            raise

    async def renew(self) -> None:
        """Extend every lease this process holds (called by the worker's heartbeat)."""
        by_token: dict[int, list[str]] = {}
        for ident, token in list(self._held.items()):
            by_token.setdefault(token, []).append(ident)
        with translated("lease renewal"):
            for token, idents in by_token.items():
                keys = [self._keys.lease(i) for i in idents]
                await self._script(keys=keys, args=[token, "renew", self._ttl_ms])
