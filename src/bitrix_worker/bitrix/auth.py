"""How a request to a portal proves who sent it: a webhook's secret path, or an OAuth access token.

``BitrixClient`` asks its ``RequestAuth`` for the URL of a method and for the parameters to add to the body,
and, when the portal answers that the credentials are stale (``expired_token``; or ``invalid_token`` for an
access token another process's refresh just replaced), whether to send the same request again. A stale
token ran nothing, so sending again duplicates nothing, and it spends no retry budget: the operation never
sees the refusal. Pure: the OAuth side delegates to a ``TokenSource`` (``portals.tokens.TokenManager``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ..redaction import WebhookUrl

__all__ = ["Credentials", "OAuthAuth", "Renewal", "RequestAuth", "TokenSource", "WebhookAuth"]

#: Error codes (upper case, as the classifier keeps them) after which fresh credentials may help.
STALE_CODES = frozenset({"EXPIRED_TOKEN", "INVALID_TOKEN"})


@dataclass(frozen=True, slots=True)
class Credentials:
    """What one attempt was sent with: extra body parameters and the secret they carry."""

    params: Mapping[str, str] = field(default_factory=dict, repr=False)
    secret: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class Renewal:
    """The answer to "the portal said my credentials are stale": send again, or fail with ``note``."""

    resend: bool
    note: str = ""  # why not, for the failure's description (no secret in it)
    transient: bool = False  # the token endpoint or the registry could not be reached: try again later


class RequestAuth(Protocol):
    @property
    def portal(self) -> str: ...

    def method_url(self, method: str) -> str: ...

    def secrets(self) -> tuple[str, ...]:
        """Known secrets to mask in any text built from an answer."""
        ...

    async def credentials(self) -> Credentials: ...

    async def renew(self, used: Credentials, code: str) -> Renewal: ...


class WebhookAuth:
    """The secret is in the URL; nothing to add, nothing to renew."""

    def __init__(self, webhook: WebhookUrl) -> None:
        self.webhook = webhook

    @property
    def portal(self) -> str:
        return self.webhook.portal

    def method_url(self, method: str) -> str:
        return self.webhook.method_url(method)

    def secrets(self) -> tuple[str, ...]:
        return (self.webhook.secret,)

    async def credentials(self) -> Credentials:
        return Credentials()

    async def renew(self, used: Credentials, code: str) -> Renewal:
        return Renewal(False)

    def __repr__(self) -> str:
        return f"WebhookAuth({self.webhook})"


class TokenSource(Protocol):
    async def access_token(self) -> str: ...

    async def renew(self, used_access_token: str, code: str) -> Renewal: ...


class OAuthAuth:
    """``<client_endpoint><method>`` with ``auth=<access token>`` in the body (never in the URL, which
    proxies and httpx's own log line would keep)."""

    def __init__(self, portal: str, client_endpoint: str, tokens: TokenSource) -> None:
        self._portal = portal
        self._endpoint = client_endpoint if client_endpoint.endswith("/") else client_endpoint + "/"
        self._tokens = tokens
        self._seen: str = ""

    @property
    def portal(self) -> str:
        return self._portal

    def method_url(self, method: str) -> str:
        return f"{self._endpoint}{method}"

    def secrets(self) -> tuple[str, ...]:
        return (self._seen,) if self._seen else ()

    async def credentials(self) -> Credentials:
        token = await self._tokens.access_token()
        self._seen = token
        return Credentials({"auth": token}, token)

    async def renew(self, used: Credentials, code: str) -> Renewal:
        if code.upper() not in STALE_CODES:
            return Renewal(False)
        return await self._tokens.renew(used.secret, code.lower())

    def __repr__(self) -> str:
        return f"OAuthAuth({self._portal}, {self._endpoint})"
