"""Starlette routes: ``/rest/<user>/<secret>/<method>`` like a Bitrix24 webhook, ``/_emulator/*`` for tests.

Order of checks for a REST request, mirroring where the portal does them:
credentials / auth outage (401) -> front-door faults (auth, overload, rate_limit; an injected HTML 503)
-> unknown method (404) -> leaky bucket (503, not counted when refused) -> other injected faults ->
operating budget (429) -> execution -> after-commit faults. Error answers carry no ``time`` block.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..bitrix.querystring import parse_query
from .config import EmulatorConfig, LimitsUpdate, PipelineConfig, UserFieldConfig
from .errors import ApiError, invalid_credentials, method_not_found, query_limit
from .faults import COMMIT_THEN_ANSWER, FRONT_DOOR_KINDS, FaultConfig, fault_error
from .hostile import HOSTILE_ANSWERS, hostile_answer
from .items import SHARED
from .portal import Portal
from .store import ENTITIES

_GATEWAY_HTML = (
    "<html>\r\n<head><title>{code} {text}</title></head>\r\n<body>\r\n<center><h1>{code} {text}</h1></center>"
    "\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_GATEWAY = {"502": "Bad Gateway", "503": "Service Temporarily Unavailable", "504": "Gateway Time-out"}
_SEND_KEY = "bitrix_worker.emulator.send"
_TRANSPORT_BEFORE = frozenset({"502", "503", "504", "timeout", "reset"})  # the request never runs
_AFTER_COMMIT = COMMIT_THEN_ANSWER | {"500_after_commit"}  # it runs, then the answer goes wrong


class EmulatorApp(Starlette):
    """Starlette that remembers the server's own ``send`` so a ``reset`` fault can reach the TCP socket."""

    portal: Portal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[_SEND_KEY] = send
        await super().__call__(scope, receive, send)


def _portal(request: Request) -> Portal:
    app: EmulatorApp = request.app
    return app.portal


def _gateway(code: str) -> HTMLResponse:
    return HTMLResponse(_GATEWAY_HTML.format(code=code, text=_GATEWAY[code]), status_code=int(code))


async def _params(request: Request) -> dict[str, Any]:
    """Query string, then a JSON or form body on top (PHP merges GET and POST the same way)."""
    params = parse_query(request.url.query) if request.url.query else {}
    if request.method == "POST":
        body = await request.body()
        if body:
            if "json" in request.headers.get("content-type", "") or body[:1] in (b"{", b"["):
                try:
                    data = json.loads(body)
                except ValueError:
                    data = None  # PHP sees no params at all; the method then complains about them
                if isinstance(data, dict):
                    params.update(data)
            else:
                params.update(parse_query(body.decode("utf-8", "replace")))
    return params


async def _hang(request: Request, portal: Portal) -> None:
    """Hold the request for ``hang_s`` (or until the client goes away or the server stops)."""

    async def client_gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    tasks = [asyncio.ensure_future(portal.stopping().wait()), asyncio.ensure_future(client_gone())]
    try:
        await asyncio.wait(tasks, timeout=portal.faults.config.hang_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _reset(request: Request) -> Response:
    """Abort the TCP connection with RST (SO_LINGER 0): the client gets ECONNRESET and no response.

    uvicorn keeps the transport on the bound ``send`` of its request cycle; if that is not reachable
    (another server), fall back to an empty 500 with ``Connection: close``.
    """
    cycle = getattr(request.scope.get(_SEND_KEY), "__self__", None)
    transport = getattr(cycle, "transport", None)
    if not isinstance(transport, asyncio.Transport):
        return Response(status_code=500, headers={"connection": "close"})
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    for _ in range(3):
        await asyncio.sleep(0)  # let uvicorn see the connection lost, so it drops what we send below
    return Response(status_code=500)


async def _admit(
    request: Request, portal: Portal, method: str, start: float
) -> tuple[dict[str, Any], str | None]:
    """Everything before execution: credentials, latency, front-door faults, method, leaky bucket."""
    path = request.path_params
    if not method:
        raise method_not_found()  # e.g. the secret without ``<user_id>/``: the path no longer parses
    if "secret" not in path:  # /rest/<method>: an OAuth application's call (``auth=<access token>``)
        params = await _params(request)
        if portal.oauth is None or portal.faults.auth_down(start):
            raise ApiError(401, "NO_AUTH_FOUND", "Wrong authorization data")
        portal.oauth.check(params)
        params.pop("auth", None)
    elif (
        path["user_id"] != portal.user_id
        or path["secret"] != portal.initial.secret
        or portal.faults.auth_down(start)
    ):
        raise invalid_credentials()
    else:
        params = await _params(request)
    fault = portal.faults.pick(method, command=False)
    delay = portal.faults.latency(method)
    if delay > 0:
        await asyncio.sleep(delay)
    if fault in FRONT_DOOR_KINDS:
        raise fault_error(fault)
    if fault == "503":
        return params, fault  # the web server's own page: the portal behind it (and its bucket) never saw it
    if method != "batch" and method not in portal.handlers:
        raise method_not_found()
    if portal.limits_enabled and not portal.bucket.try_acquire(portal.clock()):
        raise query_limit()
    return params, fault


def _execute(
    portal: Portal, method: str, params: dict[str, Any], start: float
) -> tuple[dict[str, Any], str | None]:
    """Run the call; returns the success body and a transport fault raised by a batch sub-command."""
    if method == "batch":
        run = portal.batch(params)
        return {
            "result": run.body,
            "time": portal.time_block("batch", start, portal.clock() - start),
        }, run.fault
    result, processing = portal.call(method, params)
    body: dict[str, Any] = {"result": result.value}
    if result.total is not None:
        body["total"] = result.total
    if result.next is not None:
        body["next"] = result.next
    body["time"] = portal.time_block(method, start, processing)
    return body, None


async def no_auth(request: Request) -> Response:
    """``/rest/<method>``: no auth handler recognises it; ``/rest/<secret>/<method>`` no longer parses."""
    _portal(request).stats.requests += 1
    if "/" in str(request.path_params["rest"]).strip("/"):
        error = method_not_found()
    else:
        error = ApiError(401, "NO_AUTH_FOUND", "Wrong authorization data")
    return JSONResponse(error.body(), status_code=error.status)


async def rest(request: Request) -> Response:
    portal = _portal(request)
    start = portal.clock()
    method = request.path_params["method"].strip("/").lower().removesuffix(".json")
    portal.stats.requests += 1
    try:
        params, fault = await _admit(request, portal, method, start)
        if fault in _TRANSPORT_BEFORE:
            return await _transport_fault(request, portal, method, fault)
        if fault is not None and fault not in _AFTER_COMMIT:
            raise fault_error(fault)
        body, inner = _execute(portal, method, params, start)
    except ApiError as exc:
        portal.stats.count(method, exc.outcome)
        return JSONResponse(exc.body(), status_code=exc.status)
    if inner is not None and inner not in COMMIT_THEN_ANSWER:
        return await _transport_fault(request, portal, method, inner)
    fault = fault or inner
    if fault in HOSTILE_ANSWERS:
        portal.stats.count(method, f"FAULT_{fault.upper()}")
        return hostile_answer(fault, json.dumps(body).encode(), portal.faults.config, portal.stopping())
    if fault == "500_after_commit":
        portal.stats.count(method, "FAULT_500_AFTER_COMMIT")
        error = fault_error("500")
        return JSONResponse(error.body(), status_code=error.status)
    if fault == "timeout_commit":
        portal.stats.count(method, "FAULT_TIMEOUT_COMMIT")
        await _hang(request, portal)
    else:
        portal.stats.count(method, "ok")
    return JSONResponse(body)


async def _transport_fault(request: Request, portal: Portal, method: str, fault: str) -> Response:
    portal.stats.count(method, f"FAULT_{fault.upper()}")
    if fault == "reset":
        return await _reset(request)
    if fault == "timeout":
        await _hang(request, portal)
        return _gateway("504")
    return _gateway(fault)


async def oauth_token(request: Request) -> Response:
    """The OAuth server's ``/oauth/token/`` (Bitrix24 runs it at oauth.bitrix.info; here on the portal)."""
    portal = _portal(request)
    if portal.oauth is None:
        return JSONResponse({"error": "not_found", "error_description": "no OAuth app"}, status_code=404)
    base = str(request.base_url).rstrip("/")
    try:
        answer = portal.oauth.token(await _params(request), f"{base}/rest/", f"{base}/oauth/rest/")
    except ApiError as exc:
        return JSONResponse(exc.body(), status_code=exc.status)
    return JSONResponse(answer)


# -- admin ------------------------------------------------------------------------------------------


async def oauth_admin(request: Request) -> Response:
    """``GET``: refresh counters; ``POST {"expire_now": true}``: every live access token expires at once."""
    portal = _portal(request)
    if portal.oauth is None:
        return JSONResponse({"error": "no OAuth app configured"}, status_code=404)
    if request.method == "POST":
        try:
            body = await _json_body(request)
        except ValueError as exc:
            return _bad(exc)
        if body.get("expire_now"):
            portal.oauth.expire_now()
        if "access_lifetime_s" in body:
            portal.oauth.config.access_lifetime_s = float(body["access_lifetime_s"])
    return JSONResponse(portal.oauth.snapshot())


async def _json_body(request: Request) -> dict[str, Any]:
    body = await request.body()
    if not body.strip():
        return {}
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    return data


def _bad(exc: Exception) -> JSONResponse:
    detail: Any = exc.errors(include_url=False) if isinstance(exc, ValidationError) else str(exc)
    return JSONResponse({"error": "invalid", "detail": detail}, status_code=422)


def _entity(request: Request) -> str | None:
    entity = str(request.path_params["entity"]).lower()
    return entity if entity in ENTITIES else None


async def stats(request: Request) -> Response:
    return JSONResponse(_portal(request).snapshot())


async def entities(request: Request) -> Response:
    entity = _entity(request)
    if entity is None:
        return JSONResponse({"error": "unknown entity", "entities": list(ENTITIES)}, status_code=404)
    items = _portal(request).store.all(entity)
    return JSONResponse({"entity": entity, "count": len(items), "items": items})


async def items(request: Request) -> Response:
    """Items of one entityTypeId as ``crm.item.get`` shows them (deals, smart invoices, processes...)."""
    portal = _portal(request)
    etid = int(request.path_params["etid"])
    if etid not in portal.items.tables and etid not in SHARED:
        return JSONResponse({"error": "unknown entityTypeId"}, status_code=404)
    found = portal.items.all(etid)
    return JSONResponse({"entityTypeId": etid, "count": len(found), "items": found})


async def product_rows(request: Request) -> Response:
    """Every product row (camelCase, with its owner), or one owner's with ``?ownerType=D&ownerId=5``."""
    portal = _portal(request)
    rows = portal.rows.all_rows()
    owner_type, owner_id = request.query_params.get("ownerType"), request.query_params.get("ownerId")
    if owner_type is not None:
        rows = [r for r in rows if r["ownerType"] == owner_type.upper()]
    if owner_id is not None:
        rows = [r for r in rows if str(r["ownerId"]) == owner_id]
    rows.sort(key=lambda r: (r["ownerType"], r["ownerId"], r["sort"], r["id"]))
    return JSONResponse({"count": len(rows), "rows": rows})


async def delete_entity(request: Request) -> Response:
    entity = _entity(request)
    if entity is None:
        return JSONResponse({"error": "unknown entity", "entities": list(ENTITIES)}, status_code=404)
    deleted = _portal(request).store.remove(entity, int(request.path_params["id"]))
    return JSONResponse({"deleted": deleted}, status_code=200 if deleted else 404)


async def reset(request: Request) -> Response:
    try:
        body = await _json_body(request)
    except ValueError as exc:
        return _bad(exc)
    _portal(request).reset(
        keep_faults=bool(body.get("keep_faults", False)), keep_limits=bool(body.get("keep_limits", False))
    )
    return JSONResponse({"ok": True})


async def faults(request: Request) -> Response:
    portal = _portal(request)
    if request.method == "POST":
        try:
            portal.faults.update(FaultConfig.model_validate(await _json_body(request)), portal.clock())
        except (ValueError, ValidationError) as exc:
            return _bad(exc)
    return JSONResponse(portal.faults.snapshot(portal.clock()))


async def limits(request: Request) -> Response:
    portal = _portal(request)
    if request.method == "POST":
        try:
            return JSONResponse(portal.set_limits(LimitsUpdate.model_validate(await _json_body(request))))
        except (ValueError, ValidationError) as exc:
            return _bad(exc)
    return JSONResponse(portal.limits())


async def add_field(request: Request) -> Response:
    """Add a user field at run time: the next ``crm.<entity>.fields`` shows it, writes keep it."""
    entity = _entity(request)
    if entity is None:
        return JSONResponse({"error": "unknown entity", "entities": list(ENTITIES)}, status_code=404)
    try:
        spec = UserFieldConfig.model_validate(await _json_body(request))
    except (ValueError, ValidationError) as exc:
        return _bad(exc)
    return JSONResponse(_portal(request).store.schema.add_user_field(entity, spec))


async def add_pipeline(request: Request) -> Response:
    try:
        spec = PipelineConfig.model_validate(await _json_body(request))
    except (ValueError, ValidationError) as exc:
        return _bad(exc)
    return JSONResponse(_portal(request).store.schema.add_pipeline(spec))


def create_app(config: EmulatorConfig | None = None) -> Starlette:
    """A fresh emulated portal behind a Starlette app (the portal is ``app.portal``)."""
    routes = [
        Route("/rest/{user_id}/{secret}/{method:path}", rest, methods=["GET", "POST"]),
        Route("/rest/{method}", rest, methods=["GET", "POST"]),
        Route("/rest/{rest:path}", no_auth, methods=["GET", "POST"]),
        Route("/oauth/token/", oauth_token, methods=["GET", "POST"]),
        Route("/oauth/token", oauth_token, methods=["GET", "POST"]),
        Route("/_emulator/oauth", oauth_admin, methods=["GET", "POST"]),
        Route("/_emulator/stats", stats, methods=["GET"]),
        Route("/_emulator/entities/{entity}", entities, methods=["GET"]),
        Route("/_emulator/items/{etid:int}", items, methods=["GET"]),
        Route("/_emulator/productrows", product_rows, methods=["GET"]),
        Route("/_emulator/entities/{entity}/{id:int}/delete", delete_entity, methods=["POST"]),
        Route("/_emulator/entities/{entity}/{id:int}", delete_entity, methods=["DELETE"]),
        Route("/_emulator/reset", reset, methods=["POST"]),
        Route("/_emulator/faults", faults, methods=["GET", "POST"]),
        Route("/_emulator/limits", limits, methods=["GET", "POST"]),
        Route("/_emulator/fields/{entity}", add_field, methods=["POST"]),
        Route("/_emulator/pipelines", add_pipeline, methods=["POST"]),
    ]
    app = EmulatorApp(routes=routes)
    app.portal = Portal(config or EmulatorConfig())
    return app
