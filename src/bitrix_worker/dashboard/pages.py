"""What every page handler shares: the templates, the render helper, the refusal page, the checked form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from ..config import Settings
from ..operations import Entity
from ..portals.model import PortalRecord
from ..redis.connection import RedisClient
from .data import ClassCache, ago, utc
from .security import CSRF_COOKIE, SESSION_COOKIE, csrf_ok, csrf_token
from .timeline import Timeline

HERE = Path(__file__).parent


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(ago=ago, utc=utc)
    return Jinja2Templates(env=env)


TEMPLATES = _templates()


def settings_of(request: Request) -> Settings:
    """The settings of the portal the page is about: a registry portal's under ``/p/<id>/``, else the
    dashboard's own (the default portal)."""
    view = getattr(request.state, "portal", None)
    settings: Settings = view.settings if view is not None else request.app.state.settings
    return settings


def timeline_of(request: Request) -> Timeline:
    view = getattr(request.state, "portal", None)
    timeline: Timeline = view.timeline if view is not None else request.app.state.timeline
    return timeline


def classes_of(request: Request) -> ClassCache:
    view = getattr(request.state, "portal", None)
    classes: ClassCache = view.classes if view is not None else request.app.state.classes
    return classes


def record_of(request: Request) -> PortalRecord | None:
    """The registry record of the page's portal (None: the default portal)."""
    view = getattr(request.state, "portal", None)
    return None if view is None else view.record


def redis_of(request: Request) -> RedisClient:
    client: RedisClient = request.app.state.redis
    return client


def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    """A page with the context every template uses; sets this browser's CSRF cookie when it has none."""
    settings = settings_of(request)
    token = csrf_token(request)
    view = getattr(request.state, "portal", None)
    context.update(
        base=view.base if view is not None else "",
        portal_id=view.portal_id if view is not None else None,
        portals_nav=bool(request.app.state.directory.records),
        csrf=token,
        read_only=settings.dashboard_read_only,
        refresh_ms=int(settings.dashboard_refresh_s * 1000),
        stream=settings.stream,
        logged_in=bool(request.cookies.get(SESSION_COOKIE)),
        entities=[e.value for e in Entity],
    )
    response = TEMPLATES.TemplateResponse(request, name, context, status_code=status)
    if request.cookies.get(CSRF_COOKIE) != token:
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", path="/")
    return response


def problem(request: Request, status: int, title: str, detail: str) -> Response:
    return render(request, "problem.html", status, title=title, detail=detail)


async def checked_form(request: Request) -> FormData | Response:
    """The POSTed form, or the refusal page: read-only mode, or a missing/wrong CSRF token."""
    if settings_of(request).dashboard_read_only:
        return problem(request, 403, "Read-only", "This dashboard is read-only: nothing can be changed here.")
    form = await request.form()
    if not csrf_ok(request, str(form.get("csrf", ""))):
        detail = (
            "The form's CSRF token is missing or does not match this browser's. Reload the page and retry."
        )
        return problem(request, 403, "Refused", detail)
    return form
