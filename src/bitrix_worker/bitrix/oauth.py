"""The OAuth server's token endpoint: one refresh request, its answer parsed, its refusals classified.

A refresh is a form POST of ``grant_type=refresh_token``, the application's ``client_id``/``client_secret``
and the current ``refresh_token`` (secrets in the body, never in the URL). The answer carries the new pair
and ``client_endpoint``, where REST calls go. A refusal is permanent when the OAuth server names the grant
or the client (``invalid_grant``: the refresh token is dead or was already used; ``invalid_client``: the app
is gone); anything else (no connection, 5xx, an answer that is not the expected JSON) is transient. Which
HTTP status goes with which error differs between SDKs, so the ``error`` code decides.

Like the REST client, httpx exceptions are never chained (their text can carry URLs) and messages are
redacted of every secret sent.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import httpx

from ..errors import TokenRefreshError
from ..redaction import redact

__all__ = ["PERMANENT_CODES", "RefreshedPair", "TokenEndpoint"]

PERMANENT_CODES = frozenset({"invalid_grant", "invalid_client", "wrong_client", "not_installed"})


@dataclass(frozen=True, slots=True)
class RefreshedPair:
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: int | None
    client_endpoint: str | None


class TokenEndpoint:
    """One OAuth server's ``/oauth/token/``; share one per process (it pools connections)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            transport=transport,
            headers={"Accept": "application/json"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def refresh(self, client_id: str, client_secret: str, refresh_token: str) -> RefreshedPair:
        """The new pair; ``TokenRefreshError`` (``permanent`` or not) on any failure."""
        secrets = (client_secret, refresh_token)
        form = {
            "grant_type": "refresh_token",
            "client_id": client_id,
            "client_secret": client_secret,
            "refresh_token": refresh_token,
        }
        failure: str | None = None
        try:
            response = await self._http.post(self.url, data=form)
        except httpx.HTTPError as exc:
            failure = f"{type(exc).__name__}: {redact(str(exc), secrets)[:200]}"
        if failure is not None:
            raise TokenRefreshError("unreachable", failure, permanent=False)
        try:
            data = json.loads(response.content)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            status = f"HTTP {response.status_code}"
            raise TokenRefreshError(status, "answer is not a JSON object", permanent=False)
        if "error" in data or response.status_code >= 400:
            code = str(data.get("error") or f"HTTP {response.status_code}")
            description = redact(str(data.get("error_description") or ""), secrets)[:200]
            raise TokenRefreshError(code, description, permanent=code.lower() in PERMANENT_CODES)
        return _pair(data)


def _pair(data: dict[str, object]) -> RefreshedPair:
    access, refresh = data.get("access_token"), data.get("refresh_token")
    if not isinstance(access, str) or not access or not isinstance(refresh, str) or not refresh:
        raise TokenRefreshError("bad answer", "no access_token/refresh_token in the answer", permanent=False)
    expires = data.get("expires")
    expires_in = data.get("expires_in")
    expires_at: int | None = None
    if isinstance(expires, int | float):
        expires_at = int(expires)
    elif isinstance(expires_in, int | float):
        expires_at = int(time.time() + expires_in)
    endpoint = data.get("client_endpoint")
    return RefreshedPair(access, refresh, expires_at, endpoint if isinstance(endpoint, str) else None)
