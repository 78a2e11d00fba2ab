"""The dashboard's Starlette app: overview, find an operation, login; dead-letter pages in ``dead.py``.

Server-rendered pages (Jinja2, autoescaped); htmx refreshes the overview's live section every few seconds
and uPlot draws the per-minute chart, both vendored under ``static/vendor`` so the page works offline.
Every page carries a ``Server-Timing`` header with its render time (what ``bench/dashboard.py`` measures).
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..config import Settings
from ..errors import BitrixWorkerError
from ..keylookup import KeyReport, find_stream_id
from ..operations import Entity
from ..portal_access import portal_lookup
from ..redis.connection import RedisClient, client_for, safe_redis_url
from . import dead, portal, portals
from .data import ClassCache, gather_overview
from .pages import HERE, classes_of, problem, record_of, redis_of, render, settings_of, timeline_of
from .security import SECURITY_HEADERS, SESSION_COOKIE, Guard, csrf_ok
from .timeline import Timeline

OPEN_PATHS = ("/static/", "/login")
_STREAM_ID = re.compile(r"^\d{6,}(-\d+)?$")
Endpoint = Callable[[Request], Awaitable[Response]]


class Guarded(BaseHTTPMiddleware):
    """Authentication, security headers and the render time on every response."""

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        guard: Guard = request.app.state.guard
        if not request.url.path.startswith(OPEN_PATHS) and not guard.allows(request):
            if guard.basic:
                response: Response = Response(
                    "authentication required\n",
                    status_code=401,
                    headers={"WWW-Authenticate": 'Basic realm="bitrix-worker dashboard", charset="UTF-8"'},
                )
            else:
                response = RedirectResponse("/login", status_code=303)
        else:
            if not request.url.path.startswith(OPEN_PATHS):  # the nav's Portals link: registry portals?
                await request.app.state.directory.refresh(request.app.state.settings)
            response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response


async def overview(request: Request) -> Response:
    data = await gather_overview(
        redis_of(request), settings_of(request), timeline_of(request), classes_of(request)
    )
    return render(request, "overview.html", o=data)


async def live(request: Request) -> Response:
    data = await gather_overview(
        redis_of(request), settings_of(request), timeline_of(request), classes_of(request)
    )
    return render(request, "_live.html", o=data)


async def find(request: Request) -> Response:
    settings, client = settings_of(request), redis_of(request)
    q = request.query_params.get("q", "").strip()
    entity = request.query_params.get("entity", "deal")
    report: KeyReport | None = None
    note = ""
    if q and _STREAM_ID.match(q):
        target = await find_stream_id(client, settings, q, scan_cap=settings.dashboard_scan_cap)
        if target is None:
            note = f"No operation with stream id {q} in the stream, schedule, outcomes or dead letters."
        else:
            report = await portal_lookup(
                client, settings, record_of(request), *target, scan_cap=settings.dashboard_scan_cap
            )
            report.matched_id = q
    elif q:
        prefix, sep, rest = q.partition(":")
        if sep and prefix in {e.value for e in Entity} and rest:
            entity, q = prefix, rest
        if entity not in {e.value for e in Entity}:
            return problem(request, 400, "Unknown entity", "Use deal, contact, company or lead.")
        report = await portal_lookup(
            client, settings, record_of(request), entity, q, scan_cap=settings.dashboard_scan_cap
        )
    return render(request, "find.html", q=q, entity=entity, report=report, note=note)


async def login(request: Request) -> Response:
    guard: Guard = request.app.state.guard
    if request.method == "GET":
        return render(request, "login.html", error="", has_token=bool(guard.token))
    form = await request.form()
    if not csrf_ok(request, str(form.get("csrf", ""))):
        return problem(
            request, 403, "Refused", "The form's CSRF token is missing or wrong. Reload and retry."
        )
    if not guard.token_matches(str(form.get("token", ""))):
        return render(
            request, "login.html", 403, error="That token is not right.", has_token=bool(guard.token)
        )
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(SESSION_COOKIE, guard.session_value(), httponly=True, samesite="strict", path="/")
    return response


async def logout(request: Request) -> Response:
    form = await request.form()
    if not csrf_ok(request, str(form.get("csrf", ""))):
        return problem(request, 403, "Refused", "The form's CSRF token is missing or wrong.")
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def store_down(request: Request, exc: Exception) -> Response:
    detail = f"{exc} (REDIS_URL {safe_redis_url(settings_of(request).redis_url)})"
    return problem(request, 503, "Not available", detail)


def create_app(settings: Settings, *, redis: RedisClient | None = None) -> Starlette:
    """The dashboard for ``settings``. ``redis``: a client to use (else one is opened from REDIS_URL)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if redis is not None:
            yield
            return
        app.state.redis = client_for(settings.redis_url, name="bitrix-worker-dashboard", timeout_s=5.0)
        try:
            yield
        finally:
            await app.state.redis.aclose()

    pages = [
        Route("/", overview),
        Route("/live", live),
        Route("/find", find),
        *dead.routes(),
        *portal.routes(),
    ]
    routes = [
        *pages,
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        *portals.routes(pages),  # /portals, and the pages again under /p/<portal id>/
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={BitrixWorkerError: store_down},
    )
    app.add_middleware(Guarded)
    app.state.settings = settings
    if redis is not None:
        app.state.redis = redis
    app.state.guard = Guard.from_settings(settings)
    app.state.timeline = Timeline(settings.keys.outcomes)
    app.state.classes = ClassCache()
    app.state.directory = portals.Directory()
    return app
