"""The install callback: Bitrix24 POSTs ``ONAPPINSTALL`` with the new portal's tokens; we register it.

Off by default (``BITRIX_WORKER_INSTALL_ENABLED``); served at ``POST /install`` on the worker's HTTP port.
The form (``application/x-www-form-urlencoded``) carries ``event=ONAPPINSTALL`` and ``auth[domain]``,
``auth[access_token]``, ``auth[refresh_token]``, ``auth[expires_in]``, ``auth[client_endpoint]``,
``auth[server_endpoint]``, ``auth[member_id]``, ``auth[application_token]``.

Anyone can POST to a URL, so a callback is accepted only when its ``application_token`` equals the
configured ``BITRIX_WORKER_INSTALL_APPLICATION_TOKEN`` (compared in constant time); anything else is a bare
401 that says nothing about why. A re-install replaces the portal's row whole: fresh tokens repair an
``auth_broken`` portal. Parsing is pure (``parse_install``); ``install_route`` is the thin HTTP part.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..config import Settings
from ..errors import BitrixWorkerError, ConfigError
from ..gate import PortalGate
from .forms import PortalForm, build_record
from .model import DEFAULT_TOKEN_URL, PortalRecord
from .registry import PortalRegistry
from .secrets import SecretBox

__all__ = ["InstallRefused", "install_route", "install_route_for", "parse_install"]

MAX_FORM_BYTES = 16_384


class InstallRefused(ValueError):
    """A callback we do not accept; ``status`` is the HTTP answer (401: not verified, 400: malformed)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _token_url(server_endpoint: str | None) -> str:
    """``https://oauth.bitrix.info/rest/`` -> ``https://oauth.bitrix.info/oauth/token/``."""
    if not server_endpoint:
        return DEFAULT_TOKEN_URL
    parts = urlsplit(server_endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return DEFAULT_TOKEN_URL
    return f"{parts.scheme}://{parts.netloc}/oauth/token/"


def parse_install(
    form: Mapping[str, str], *, application_token: str, client_id: str, client_secret: str, now: float
) -> PortalRecord:
    """The portal an ``ONAPPINSTALL`` callback registers, or ``InstallRefused``."""
    given = form.get("auth[application_token]", "")
    if not given or not hmac.compare_digest(given.encode(), application_token.encode()):
        raise InstallRefused(401, "application_token does not match")
    if form.get("event", "").upper() != "ONAPPINSTALL":
        raise InstallRefused(400, "expected event=ONAPPINSTALL")
    domain = form.get("auth[domain]", "")
    expires_in = form.get("auth[expires_in]", "")
    try:
        return build_record(
            PortalForm(
                domain,
                client_id=client_id,
                client_secret=client_secret,
                access_token=form.get("auth[access_token]"),
                refresh_token=form.get("auth[refresh_token]"),
                endpoint=form.get("auth[client_endpoint]") or None,
                token_url=_token_url(form.get("auth[server_endpoint]")),
                member_id=form.get("auth[member_id]") or None,
                application_token=given,
                expires_at=int(now + int(expires_in)) if expires_in.isdigit() else None,
            )
        )
    except ValueError as exc:
        message = (
            str(exc)
            .replace("--access-token", "auth[access_token]")
            .replace("--refresh-token", "auth[refresh_token]")
        )
        raise InstallRefused(400, message) from None


def install_route(
    registry: PortalRegistry,
    *,
    application_token: str,
    client_id: str,
    client_secret: str,
    on_registered: Callable[[PortalRecord], Awaitable[None]] | None = None,
) -> Route:
    """``on_registered`` runs when a re-install repaired an ``auth_broken`` portal (fresh tokens)."""
    log = structlog.get_logger("bitrix_worker.install")

    async def install(request: Request) -> Response:
        if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
            return JSONResponse({"error": "too large"}, status_code=413)
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        try:
            record = parse_install(
                fields,
                application_token=application_token,
                client_id=client_id,
                client_secret=client_secret,
                now=time.time(),
            )
        except InstallRefused as exc:
            log.warning(
                "install callback refused", status=exc.status, reason=str(exc) if exc.status != 401 else ""
            )
            body = {"error": "forbidden"} if exc.status == 401 else {"error": str(exc)}
            return JSONResponse(body, status_code=exc.status)
        try:
            previous = await registry.find(record.portal_id)
            await registry.add(record, replace=True)
            if on_registered is not None and previous is not None and previous.state == "auth_broken":
                await on_registered(record)
        except BitrixWorkerError as exc:
            log.error(
                "install callback: could not register the portal", portal=record.portal_id, error=str(exc)
            )
            return JSONResponse({"error": "could not register the portal"}, status_code=503)
        log.info("portal installed", portal=record.portal_id, member_id=record.member_id)
        return JSONResponse({"ok": True, "portal": record.portal_id})

    return Route("/install", install, methods=["POST"])


@asynccontextmanager
async def install_route_for(
    settings: Settings, gate_of: Callable[[str], PortalGate | None]
) -> AsyncIterator[Route]:
    """The worker's install route, with its own registry connection. A re-install that repairs an
    ``auth_broken`` portal reopens the gate ``gate_of(portal id)`` gives: a single-portal worker's own
    portal's; in a multi-portal process any portal's (its gate is in Redis, whichever process serves it)."""
    app_token, client_id, client_secret = _install_settings(settings)
    key = settings.secrets_key.get_secret_value() if settings.secrets_key else None
    box = SecretBox.from_setting(key)  # ConfigError naming the setting when it is missing
    registry = await PortalRegistry.connect(settings.database_url, box=box, table=settings.portals_table)

    async def repaired(record: PortalRecord) -> None:
        gate = gate_of(record.portal_id)
        if gate is not None:
            await gate.resume()

    try:
        yield install_route(
            registry,
            application_token=app_token,
            client_id=client_id,
            client_secret=client_secret,
            on_registered=repaired,
        )
    finally:
        await registry.close()


def _install_settings(settings: Settings) -> tuple[str, str, str]:
    """(application token, client id, client secret); ``Settings`` already refuses to start without them."""
    token, secret = settings.install_application_token, settings.oauth_client_secret
    if token is None or secret is None or not settings.oauth_client_id:
        raise ConfigError("BITRIX_WORKER_INSTALL_ENABLED", "needs the application token and the OAuth client")
    return token.get_secret_value(), settings.oauth_client_id, secret.get_secret_value()
