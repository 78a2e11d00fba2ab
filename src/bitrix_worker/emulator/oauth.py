"""The emulated portal as an OAuth application sees it: access tokens that expire, and a token endpoint
that rotates refresh tokens.

What it enforces, as Bitrix24 documents it:

* a REST call at ``/rest/<method>`` carries ``auth=<access_token>``; an access token older than
  ``access_lifetime_s`` is answered ``401 expired_token``, an unknown one ``401 invalid_token``;
* ``/oauth/token/?grant_type=refresh_token&client_id=…&client_secret=…&refresh_token=…`` answers a new pair;
  the refresh token used and the access token issued with it are dead from then on ("without branching"),
  so a second refresh with the same refresh token gets ``400 invalid_grant``. A call with an access token
  a refresh killed is answered ``expired_token`` like an old one (a worker that kept it must re-read the
  stored pair, not refresh again). That is exactly the failure a
  careless multi-process client meets, and what the counters below let a test assert never happens.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .errors import ApiError

__all__ = ["OAuthConfig", "OAuthServer"]


class OAuthConfig(BaseModel):
    """An OAuth application installed on the emulated portal, with its first token pair."""

    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(default="local.emulator.app", min_length=1)
    client_secret: str = Field(default="emulator-client-secret", min_length=1)
    access_lifetime_s: float = Field(default=3600.0, gt=0)
    access_token: str = Field(default="emulator-access-0", min_length=1)
    refresh_token: str = Field(default="emulator-refresh-0", min_length=1)
    application_token: str = Field(default="emulator-application-token", min_length=1)
    member_id: str = Field(default="emulator-member", min_length=1)
    scope: str = "crm"


@dataclass(slots=True)
class OAuthStats:
    refreshes: int = 0
    invalid_grant: int = 0
    expired: int = 0
    invalid_token: int = 0
    early: int = 0  # refreshes of a pair whose access token had not expired yet (a wasteful client)
    expired_tokens: set[str] = field(default_factory=set)  # distinct tokens answered expired_token: expiries


@dataclass(slots=True)
class _Pair:
    access_token: str
    issued_at: float


@dataclass(slots=True)
class OAuthServer:
    config: OAuthConfig
    clock: Callable[[], float] = time.time
    stats: OAuthStats = field(default_factory=OAuthStats)
    _live: dict[str, _Pair] = field(default_factory=dict)  # refresh token -> its (live) access token
    _access: dict[str, float] = field(default_factory=dict)  # live access token -> issued at
    _used: set[str] = field(default_factory=set)
    _killed: set[str] = field(default_factory=set)  # access tokens a refresh made invalid
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        now = self.clock()
        self.stats = OAuthStats()
        self._live = {self.config.refresh_token: _Pair(self.config.access_token, now)}
        self._access = {self.config.access_token: now}
        self._used = set()
        self._killed = set()

    def check(self, params: dict[str, Any]) -> None:
        """Raise the portal's 401 unless ``auth`` is a live, unexpired access token."""
        token = params.get("auth")
        if not isinstance(token, str) or not token:
            raise ApiError(401, "NO_AUTH_FOUND", "Wrong authorization data")
        issued = self._access.get(token)
        if issued is None and token in self._killed:
            issued = float("-inf")
        if issued is None:
            self.stats.invalid_token += 1
            raise ApiError(401, "invalid_token", "Unable to get application by token")
        if self.clock() - issued >= self.config.access_lifetime_s:
            self.stats.expired += 1
            self.stats.expired_tokens.add(token)
            raise ApiError(401, "expired_token", "The access token provided has expired.")

    def expire_now(self) -> None:
        """Make every live access token expired (tests: force a refresh without waiting)."""
        for token in self._access:
            self._access[token] = float("-inf")

    def token(self, params: dict[str, Any], client_endpoint: str, server_endpoint: str) -> dict[str, Any]:
        """``/oauth/token/``: the refresh grant (authorization codes are not emulated)."""
        if params.get("grant_type") != "refresh_token":
            raise ApiError(400, "invalid_request", 'Only grant_type "refresh_token" is emulated')
        if params.get("client_id") != self.config.client_id or (
            params.get("client_secret") != self.config.client_secret
        ):
            raise ApiError(401, "invalid_client", "The application may not be installed")
        refresh = params.get("refresh_token")
        if not isinstance(refresh, str) or not refresh:
            raise ApiError(400, "invalid_request", 'No "refresh_token" parameter found')
        pair = self._live.pop(refresh, None)
        if pair is None:
            self.stats.invalid_grant += 1
            raise ApiError(400, "invalid_grant", "Invalid refresh token")
        self._used.add(refresh)
        issued = self._access.get(pair.access_token, float("-inf"))
        if self.clock() - issued < self.config.access_lifetime_s:
            self.stats.early += 1
        self._access.pop(pair.access_token, None)  # issued together, dead together
        self._killed.add(pair.access_token)
        n = next(self._serial)
        access, new_refresh = f"acc-{n}-{secrets.token_hex(8)}", f"ref-{n}-{secrets.token_hex(8)}"
        now = self.clock()
        self._live[new_refresh] = _Pair(access, now)
        self._access[access] = now
        self.stats.refreshes += 1
        lifetime = self.config.access_lifetime_s
        return {
            "access_token": access,
            "client_endpoint": client_endpoint,
            "domain": "oauth.bitrix.info",
            "expires": int(now + lifetime),
            "expires_in": int(lifetime),
            "member_id": self.config.member_id,
            "refresh_token": new_refresh,
            "scope": self.config.scope,
            "server_endpoint": server_endpoint,
            "status": "L",
            "user_id": 1,
        }

    def snapshot(self) -> dict[str, Any]:
        return {
            "refreshes": self.stats.refreshes,
            "invalid_grant": self.stats.invalid_grant,
            "expired": self.stats.expired,
            "invalid_token": self.stats.invalid_token,
            "early_refreshes": self.stats.early,
            "expiries_seen": len(self.stats.expired_tokens),
            "live_refresh_tokens": len(self._live),
            "access_lifetime_s": self.config.access_lifetime_s,
        }
