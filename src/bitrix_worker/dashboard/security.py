"""Who may see the dashboard and which POSTs are genuine: authentication, CSRF, response headers.

* **Authentication** is optional on loopback and required anywhere else (``server.check_bind``). Two kinds,
  both from the environment and both compared with ``hmac.compare_digest``:
  a token (``Authorization: Bearer <token>`` for scripts, or typed once into ``/login``, which sets a
  session cookie) and HTTP basic auth (user + password, the browser's own prompt). The session cookie holds
  an HMAC of the token, never the token, so neither appears in a page, a URL or a log line.
* **CSRF**: every state change is a POST whose form carries the value of the ``bw_csrf`` cookie
  (double submit). The cookie is ``SameSite=Strict`` and ``HttpOnly``; a page from another site can neither
  read it nor make the browser send it, so it cannot forge a matching form.
* **Headers**: a strict Content-Security-Policy (scripts and styles only from the dashboard itself, no
  inline script), no framing, no referrer, no caching of pages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from starlette.requests import Request

from ..config import Settings

SESSION_COOKIE = "bw_session"
CSRF_COOKIE = "bw_csrf"
CSRF_FIELD = "csrf"
_SESSION_CONTEXT = b"bitrix-worker dashboard session v1"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True, slots=True)
class Guard:
    """The configured credentials; ``enabled`` False: open to anyone who can reach the dashboard."""

    token: str | None = None
    user: str | None = None
    password: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Guard:
        token = settings.dashboard_token.get_secret_value() if settings.dashboard_token else None
        password = settings.dashboard_password.get_secret_value() if settings.dashboard_password else None
        return cls(token or None, settings.dashboard_user or None, password or None)

    @property
    def enabled(self) -> bool:
        return bool(self.token) or bool(self.user and self.password)

    @property
    def basic(self) -> bool:
        return bool(self.user and self.password)

    def session_value(self) -> str:
        """What the session cookie holds: an HMAC keyed by the token (the token itself never leaves)."""
        return hmac.new((self.token or "").encode(), _SESSION_CONTEXT, hashlib.sha256).hexdigest()

    def token_matches(self, given: str) -> bool:
        return bool(self.token) and _same(given, self.token or "")

    def allows(self, request: Request) -> bool:
        if not self.enabled:
            return True
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.token_matches(value.strip()):
            return True
        if scheme.lower() == "basic" and self.basic and self._basic_matches(value.strip()):
            return True
        cookie = request.cookies.get(SESSION_COOKIE, "")
        return bool(self.token) and bool(cookie) and _same(cookie, self.session_value())

    def _basic_matches(self, encoded: str) -> bool:
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        # Both comparisons always run: the time taken does not tell which half was wrong.
        ok_user = _same(user, self.user or "")
        ok_password = _same(password, self.password or "")
        return bool(sep) and ok_user and ok_password


def csrf_token(request: Request) -> str:
    """This browser's CSRF token: the cookie's value, or a new one (the response then sets the cookie)."""
    token = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "new_csrf", None)
    if not token:
        token = secrets.token_urlsafe(32)
        request.state.new_csrf = token
    return str(token)


def csrf_ok(request: Request, submitted: str) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return bool(cookie) and bool(submitted) and _same(submitted, cookie)
