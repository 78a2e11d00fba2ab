"""One OAuth refresh per expiry, across every process and host that serves a portal.

Bitrix24 refresh tokens are single-use and rotate: a refresh returns a new pair and kills the old refresh
token *and the access token issued with it*. Two processes that refresh at once therefore lose: the second
gets ``invalid_grant``, and whoever stored the wrong pair leaves a dead token behind. The protocol:

1. A call is refused with ``expired_token`` (or ``invalid_token``) for access token ``T``.
2. In this process, one task works on it (an ``asyncio.Lock``); the others wait and then use its result.
3. Re-read the stored pair (the registry is the truth). If its access token is no longer ``T``, someone
   refreshed already: use it. Nothing else to do.
4. Otherwise take the portal's refresh lock in Redis (``redis/tokenlock.py``). Losers do **not** refresh:
   they poll the lock until it is free and go back to 3, where they find the new pair.
5. The winner re-reads the pair under the lock (a refresh may have finished between 3 and 4), refreshes
   only if it is still ``T``, stores the new pair by compare-and-set on its version, then frees the lock.
6. The refused call is sent again with the new token; no retry budget is spent (``bitrix/client.py``).

``invalid_grant`` (or ``invalid_client``) means the chain is dead: the portal is marked ``auth_broken`` in
the registry, ``on_broken`` pauses its gate (nothing is dead-lettered; the backlog waits for a reinstall),
an error is logged and the ``token_refresh`` event says ``invalid_grant``. A token endpoint that cannot be
reached is transient: the call fails as not executed and is tried again later.

One manager per portal (no module state), so a multi-portal worker makes one per registry row.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from ..bitrix.auth import Renewal
from ..bitrix.oauth import TokenEndpoint
from ..errors import RegistryError, StoreError, TokenRefreshError
from ..events import WorkerEvents
from ..redis.tokenlock import RefreshLock
from .model import OAuthTokens
from .registry import PortalRegistry

__all__ = ["TokenManager"]

WAIT_FOR_REFRESH_S = 30.0
"""How long a process waits for another's refresh before giving up on this call (it is retried later)."""
POLL_S = 0.05
STORE_ATTEMPTS = 5
"""A refreshed pair that cannot be stored is lost for good (the old refresh token is dead): insist."""


class TokenManager:
    """The access token of one OAuth portal, renewed by the protocol in the module docstring."""

    def __init__(
        self,
        portal_id: str,
        *,
        registry: PortalRegistry,
        lock: RefreshLock,
        endpoint: TokenEndpoint,
        client_id: str,
        client_secret: str,
        on_broken: Callable[[str], Awaitable[None]] | None = None,
        events: WorkerEvents | None = None,
        wait_s: float = WAIT_FOR_REFRESH_S,
        poll_s: float = POLL_S,
    ) -> None:
        self.portal_id = portal_id
        self._registry = registry
        self._lock = lock
        self._endpoint = endpoint
        self._client_id = client_id
        self._client_secret = client_secret
        self._on_broken = on_broken
        self._events = events or WorkerEvents()
        self._wait_s = wait_s
        self._poll_s = poll_s
        self._current: OAuthTokens | None = None
        self._local = asyncio.Lock()
        self._log = structlog.get_logger("bitrix_worker.tokens").bind(portal=portal_id)
        self.refreshes = 0  # refreshes this process performed (tests and the demo read it)

    async def access_token(self) -> str:
        if self._current is None:
            async with self._local:
                if self._current is None:
                    self._current, _ = await self._registry.tokens(self.portal_id)
        return self._current.access_token

    async def renew(self, used_access_token: str, code: str) -> Renewal:
        """Make a fresh access token current (see the module docstring); whether to resend."""
        async with self._local:
            if self._current is not None and self._current.access_token != used_access_token:
                return Renewal(True)  # another task of this process renewed it meanwhile
            try:
                return await self._renew(used_access_token, code)
            except (StoreError, RegistryError) as exc:
                self._log.warning("could not renew the access token", error=str(exc))
                return Renewal(False, f"token renewal failed: {exc}", transient=True)

    async def _renew(self, used: str, code: str) -> Renewal:
        deadline = time.monotonic() + self._wait_s
        while True:
            if time.monotonic() > deadline:
                return Renewal(False, "timed out waiting for another process's token refresh", True)
            stored, state = await self._registry.tokens(self.portal_id)
            if state == "auth_broken":
                return Renewal(False, "portal is auth_broken: its refresh token was refused")
            if stored.access_token != used:
                self._current = stored
                self._events.token_refresh(self.portal_id, "reused")
                return Renewal(True)
            if code != "expired_token":
                return Renewal(False)  # a token that was never valid: refreshing would not help
            held = await self._lock.acquire()
            if held is not None:
                try:
                    return await self._refresh_locked(used)
                finally:
                    if not await self._lock.release(held):
                        self._log.warning("refresh lock expired before it was released", key=self._lock.key)
            await self._wait_while_held(deadline)  # another process refreshes: wait for its new pair

    async def refresh_now(self) -> Renewal:
        """Refresh the stored pair now, under the same lock (``portals refresh``: an idle portal's refresh
        token is kept alive; older Bitrix24 pages give it 28 days). Workers using the old access token get
        ``expired_token`` and pick up the new pair by the protocol above."""
        async with self._local:
            deadline = time.monotonic() + self._wait_s
            try:
                while (held := await self._lock.acquire()) is None:
                    if time.monotonic() > deadline:
                        return Renewal(False, "another process kept the refresh lock", transient=True)
                    await self._wait_while_held(deadline)
                try:
                    stored, _ = await self._registry.tokens(self.portal_id)
                    return await self._refresh_locked(stored.access_token)
                finally:
                    await self._lock.release(held)
            except (StoreError, RegistryError) as exc:
                return Renewal(False, f"token refresh failed: {exc}", transient=True)

    async def _wait_while_held(self, deadline: float) -> None:
        """Poll the lock (not the registry: cheap, and the pair only changes while it is held)."""
        while True:
            await asyncio.sleep(self._poll_s)
            if time.monotonic() > deadline or not await self._lock.held():
                return

    async def _refresh_locked(self, used: str) -> Renewal:
        stored, state = await self._registry.tokens(self.portal_id)  # re-read under the lock
        if state == "auth_broken":
            return Renewal(False, "portal is auth_broken: its refresh token was refused")
        if stored.access_token != used:
            self._current = stored
            self._events.token_refresh(self.portal_id, "reused")
            return Renewal(True)
        try:
            pair = await self._endpoint.refresh(self._client_id, self._client_secret, stored.refresh_token)
        except TokenRefreshError as exc:
            if exc.permanent:
                await self._broken(exc)
                return Renewal(False, f"refresh refused: {exc.code}; portal marked auth_broken and paused")
            self._events.token_refresh(self.portal_id, "failed")
            self._log.warning("token refresh failed; will try again", error=str(exc))
            return Renewal(False, str(exc), transient=True)
        new = OAuthTokens(pair.access_token, pair.refresh_token, pair.expires_at, stored.version + 1)
        await self._store(new, stored.version)
        self._current = new
        self.refreshes += 1
        self._events.token_refresh(self.portal_id, "refreshed")
        self._log.info("access token refreshed", version=new.version)
        return Renewal(True)

    async def _store(self, new: OAuthTokens, expected: int) -> None:
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                if await self._registry.store_tokens(self.portal_id, new, expected_version=expected):
                    return
                stored, _ = await self._registry.tokens(self.portal_id)
                if stored.access_token != new.access_token:
                    # Only possible if our lock expired and another process refreshed too: its pair and
                    # ours cannot both be live; the registry keeps the first one stored.
                    self._log.error("a concurrent refresh stored its pair first", version=expected + 1)
                return  # else an earlier attempt did commit (its answer was lost): stored already
            except StoreError:
                if attempt == STORE_ATTEMPTS:
                    self._log.error("refreshed pair could not be stored: the portal will need reinstalling")
                    raise
                await asyncio.sleep(0.2 * attempt)

    async def _broken(self, exc: TokenRefreshError) -> None:
        reason = f"OAuth refresh refused ({exc.code}): reinstall the app or add fresh tokens"
        self._events.token_refresh(self.portal_id, exc.code if exc.code == "invalid_grant" else "refused")
        self._log.error("portal auth broken: refresh token refused; pausing the portal", code=exc.code)
        try:  # stop the traffic first (the gate, in Redis), then record why (the registry)
            if self._on_broken is not None:
                await self._on_broken(reason)
        finally:
            await self._registry.set_state(self.portal_id, "auth_broken", reason)
