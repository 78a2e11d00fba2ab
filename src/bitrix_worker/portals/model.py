"""What the registry knows about one portal, as plain values: auth, plan limits and state.

Pure: no I/O. ``registry.PortalRegistry`` stores these (secrets encrypted), the CLI shows them (secrets as
``set`` and a fingerprint only), the token manager updates the OAuth pair.

States: ``active`` (served), ``paused`` (an operator or the worker stopped it; ``resume`` reopens it) and
``auth_broken`` (its refresh token is dead: only a new install or ``portals add`` with fresh tokens repairs
it; nothing of its backlog is dead-lettered meanwhile).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from typing import Literal

__all__ = [
    "PLANS",
    "AuthKind",
    "OAuthTokens",
    "PlanLimits",
    "PortalRecord",
    "PortalState",
    "check_portal_id",
    "fingerprint",
]

AuthKind = Literal["webhook", "oauth"]
PortalState = Literal["active", "paused", "auth_broken"]
STATES: tuple[PortalState, ...] = ("active", "paused", "auth_broken")
DEFAULT_TOKEN_URL = "https://oauth.bitrix.info/oauth/token/"  # noqa: S105 - a URL, not a password
"""Where refresh requests go unless the portal's ``server_endpoint`` says otherwise."""

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")


def check_portal_id(value: str) -> str:
    """A portal id is a short name without spaces or slashes (it ends up in Redis key names and URLs)."""
    if not _ID.fullmatch(value):
        raise ValueError(
            f"portal id {value[:40]!r}: use 1-200 letters, digits, '.', '_', ':' or '-' (e.g. the domain)"
        )
    return value


def fingerprint(secret: str | None) -> str | None:
    """Eight hex digits of the secret's SHA-256: enough to tell two secrets apart, useless for guessing."""
    if not secret:
        return None
    return hashlib.sha256(secret.encode()).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class PlanLimits:
    """The portal's request bucket: ``burst`` requests at once, drained at ``rate_per_s``."""

    name: str
    burst: int
    rate_per_s: float


PLANS: dict[str, PlanLimits] = {
    "standard": PlanLimits("standard", 50, 2.0),
    "enterprise": PlanLimits("enterprise", 250, 5.0),
}


@dataclass(frozen=True, slots=True)
class OAuthTokens:
    """The current OAuth pair. ``version`` grows with every stored refresh (compare-and-set: Fernet tokens
    differ on every encryption, so the stored ciphertext cannot say whether the pair changed)."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: int | None = None  # unix seconds, as the token endpoint said; advisory only
    version: int = 0


@dataclass(frozen=True, slots=True)
class PortalRecord:
    """One portal. Its secrets (``webhook_url``, ``client_secret``, the tokens) never print: ``repr`` hides
    them."""

    portal_id: str
    auth: AuthKind
    endpoint: str  # REST base: the webhook URL's host part for a webhook, ``client_endpoint`` for OAuth
    plan: PlanLimits = PLANS["standard"]
    state: PortalState = "active"
    state_reason: str = ""
    webhook_url: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    tokens: OAuthTokens | None = field(default=None, repr=False)
    token_url: str = DEFAULT_TOKEN_URL
    member_id: str | None = None
    application_token: str | None = field(default=None, repr=False)

    def with_state(self, state: PortalState, reason: str = "") -> PortalRecord:
        return replace(self, state=state, state_reason=reason)

    def public(self) -> dict[str, object]:
        """What ``portals show`` prints: every secret as a fingerprint, never its value."""
        tokens = self.tokens
        return {
            "portal": self.portal_id,
            "auth": self.auth,
            "endpoint": self.endpoint,
            "plan": self.plan.name,
            "burst": self.plan.burst,
            "rate_per_s": self.plan.rate_per_s,
            "state": self.state,
            "state_reason": self.state_reason,
            "webhook_url": _shown(self.webhook_url),
            "client_id": self.client_id,
            "client_secret": _shown(self.client_secret),
            "access_token": _shown(tokens.access_token if tokens else None),
            "refresh_token": _shown(tokens.refresh_token if tokens else None),
            "token_expires_at": tokens.expires_at if tokens else None,
            "token_version": tokens.version if tokens else None,
            "token_url": self.token_url if self.auth == "oauth" else None,
            "member_id": self.member_id,
            "application_token": _shown(self.application_token),
        }


def _shown(secret: str | None) -> str | None:
    return None if not secret else f"set (sha256:{fingerprint(secret)})"
