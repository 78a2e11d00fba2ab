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

from ..config import Settings
from ..errors import ConfigError
from ..gate import PortalGate
from ..portal_access import gate_targets
from ..redis.limits import Limiter
from . import pages as web

MAX_REASON_CHARS = 200


class Gates:
    """Every gate of the page's portal: the default portal's one, or each a registry portal has
    (``portal_access.gate_targets``, as ``bitrix-worker portal ... --portal`` moves them)."""

    def __init__(self, request: Request, targets: list[Settings]) -> None:
        self.targets = targets
        self.redis = web.redis_of(request)

    async def pause(self, reason: str) -> None:
        for s in self.targets:
            await PortalGate.from_settings(self.redis, s).pause(reason)

    async def resume(self) -> None:
        for s in self.targets:
            await PortalGate.from_settings(self.redis, s).resume()

    async def reset_limiters(self) -> None:
        for s in self.targets:
            await Limiter(self.redis, s.keys.limiter(s.portal_name), rate_per_s=1, burst=1).reset()


def _gate(request: Request) -> Gates | Response:
    settings = web.settings_of(request)
    try:
        settings.portal_name  # noqa: B018 - raises ConfigError when no portal is configured
    except ConfigError:
        return web.problem(request, 400, "No portal", "Set BITRIX_WEBHOOK_URL for the dashboard to name it.")
    record = web.record_of(request)
    if record is None:
        return Gates(request, [settings])
    return Gates(request, gate_targets(request.app.state.settings, record.portal_id))


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
        await gate.reset_limiters()
        message += " The limiter's slow-down is forgotten: full rate again."
    return web.render(request, "done.html", message=message, replayed=False, entries=[], ident="")


def routes() -> list[Route]:
    return [
        Route("/portal/pause", pause, methods=["POST"]),
        Route("/portal/resume", resume, methods=["POST"]),
        Route("/portal/reset", resume, methods=["POST"]),
    ]
