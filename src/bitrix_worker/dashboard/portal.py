"""Portal controls: pause and resume consumption through the portal gate (``bitrix_worker.gate``).

Pausing opens the portal's breaker by hand: every worker stops consuming for this portal and nothing probes
until someone resumes. Resuming reopens the portal at once, whatever shut it, so it also resets a breaker
that an auth failure or OVERLOAD_LIMIT tripped; reset also forgets the limiter's slow-down after refusals
(what ``bitrix-worker portal pause|resume|reset`` do). All are confirmed two-step POSTs like every action.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import ConfigError
from ..gate import PortalGate
from ..redis.limits import Limiter
from . import pages as web

MAX_REASON_CHARS = 200


def _gate(request: Request) -> PortalGate | Response:
    settings = web.settings_of(request)
    try:
        settings.portal_name  # noqa: B018 - raises ConfigError when no portal is configured
    except ConfigError:
        return web.problem(request, 400, "No portal", "Set BITRIX_WEBHOOK_URL for the dashboard to name it.")
    return PortalGate.from_settings(web.redis_of(request), settings)


async def pause(request: Request) -> Response:
    form = await web.checked_form(request)
    if isinstance(form, Response):
        return form
    gate = _gate(request)
    if isinstance(gate, Response):
        return gate
    reason = " ".join(str(form.get("reason", "")).split())[:MAX_REASON_CHARS] or "paused from the dashboard"
    if form.get("confirm") != "yes":
        return web.render(request, "confirm_portal.html", action="pause", reason=reason)
    await gate.pause(reason)
    message = f"Paused: no worker consumes for this portal until it is resumed ({reason})."
    return web.render(request, "done.html", message=message, replayed=False, entries=[], ident="")


async def resume(request: Request) -> Response:
    """Resume, or (``reset``) resume and forget the limiter's slow-down, as ``bitrix-worker portal``."""
    form = await web.checked_form(request)
    if isinstance(form, Response):
        return form
    gate = _gate(request)
    if isinstance(gate, Response):
        return gate
    action = "reset" if request.url.path.endswith("/reset") else "resume"
    if form.get("confirm") != "yes":
        return web.render(request, "confirm_portal.html", action=action, reason="")
    await gate.resume()
    message = "Resumed: the portal is open again and its breaker is reset; workers consume at once."
    if action == "reset":
        settings = web.settings_of(request)
        portal_name = settings.portal_name
        await Limiter(
            web.redis_of(request), settings.keys.limiter(portal_name), rate_per_s=1, burst=1
        ).reset()
        message += " The limiter's slow-down is forgotten: full rate again."
    return web.render(request, "done.html", message=message, replayed=False, entries=[], ident="")


def routes() -> list[Route]:
    return [
        Route("/portal/pause", pause, methods=["POST"]),
        Route("/portal/resume", resume, methods=["POST"]),
        Route("/portal/reset", resume, methods=["POST"]),
    ]
