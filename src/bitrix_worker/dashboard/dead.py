"""Dead-letter pages: list with filters, one entry, and the actions (replay, edit and replay, purge).

Every action goes through ``DeadLetters`` exactly as ``bitrix-worker dlq`` does (``select`` by id, then
``replay`` at the CLI's default pace, ``purge``, and ``replay_edited`` for a corrected payload) and is a
two-step POST: the first renders what would happen with the exact entry ids as hidden fields, the second
(``confirm=yes``) does it to those ids only, so entries that arrive in between are never touched. A
selection by filter is capped at ``ACTION_CAP`` entries per confirmation (oldest first).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import PoisonMessage
from ..mapping import DEFAULT_TABLE
from ..operations import decode_payload
from ..portal_layout import portal_table
from ..redis.deadletter import DeadEntry, DeadLetters, parse_id
from ..status import replay_hazards
from ..taxonomy import ErrorClass
from . import pages as web
from .deadlist import DeadFilter, dead_page, select

ACTION_CAP = 200
REPLAY_RATE_PER_S = 50.0  # the CLI's default pace
MAX_PAYLOAD_CHARS = 1_000_000


def _dead(request: Request) -> DeadLetters:
    return DeadLetters(web.redis_of(request), web.settings_of(request).keys)


def _table(request: Request) -> str:
    """The mapping table of the page's portal (its own for a registry portal)."""
    record = web.record_of(request)
    return DEFAULT_TABLE if record is None else portal_table(DEFAULT_TABLE, record.portal_id, None)


def _classes() -> list[str]:
    return [c.value for c in ErrorClass]


async def dead_list(request: Request) -> Response:
    f = DeadFilter.from_params(request.query_params)
    before = request.query_params.get("before") or None
    try:
        if before:
            before = parse_id(before)
        f.bounds()
    except ValueError as exc:
        return web.problem(request, 400, "Bad filter", str(exc))
    settings = web.settings_of(request)
    page = await dead_page(
        web.redis_of(request), settings.dead_stream, f, before=before, scan_cap=settings.dashboard_scan_cap
    )
    total = await _dead(request).size()
    older = urlencode({**f.query(), "before": page.next_before or ""})
    return web.render(
        request, "dead_list.html", f=f, page=page, total=total, classes=_classes(), older_query=older
    )


async def _entry(request: Request) -> DeadEntry | Response:
    try:
        entry_id = parse_id(request.path_params["entry_id"])
    except ValueError as exc:
        return web.problem(request, 400, "Bad id", str(exc))
    entry = await _dead(request).get(entry_id)
    if entry is None:
        return web.problem(request, 404, "Not found", f"No dead letter {entry_id} (replayed or purged?).")
    return entry


async def dead_show(request: Request) -> Response:
    entry = await _entry(request)
    if isinstance(entry, Response):
        return entry
    return web.render(request, "dead_show.html", e=entry, payload=_pretty(entry.payload), error="")


def _pretty(payload: str) -> str:
    try:
        return json.dumps(json.loads(payload), indent=2, ensure_ascii=False)
    except ValueError:
        return payload


async def _chosen(request: Request, form: Any) -> tuple[list[DeadEntry], list[str], bool] | Response:
    """The entries a form names: explicit ids, or (first step only) the current filter's matches."""
    dl = _dead(request)
    if form.get("scope") == "filter":
        f = DeadFilter.from_params(form)
        try:
            chosen, more = await select(
                web.redis_of(request),
                dl.keys.dead,
                f,
                limit=ACTION_CAP,
                scan_cap=web.settings_of(request).dashboard_scan_cap,
            )
        except ValueError as exc:
            return web.problem(request, 400, "Bad filter", str(exc))
        return chosen, [], more
    try:
        ids = [parse_id(str(i)) for i in form.getlist("id")]
    except ValueError as exc:
        return web.problem(request, 400, "Bad id", str(exc))
    if not ids:
        return web.problem(request, 400, "Nothing selected", "Tick at least one dead letter first.")
    chosen, missing = await dl.select(ids=ids[:ACTION_CAP])
    return chosen, missing, len(ids) > ACTION_CAP


async def dead_action(request: Request) -> Response:
    form = await web.checked_form(request)
    if isinstance(form, Response):
        return form
    action = str(form.get("action", ""))
    if action not in ("replay", "purge"):
        return web.problem(request, 400, "Unknown action", "Use replay or purge.")
    picked = await _chosen(request, form)
    if isinstance(picked, Response):
        return picked
    chosen, missing, more = picked
    force = form.get("force") == "yes"
    hazards = {}
    if action == "replay" and not force:  # the CLI's guard: never roll a key back unless forced
        hazards = await replay_hazards(web.settings_of(request).database_url, chosen, table=_table(request))
    if form.get("confirm") != "yes" or form.get("scope") == "filter":
        return web.render(
            request,
            "confirm.html",
            action=action,
            entries=chosen,
            missing=missing,
            more=more,
            hazards=hazards,
        )
    dl = _dead(request)
    web.classes_of(request).at = -1e9  # the breakdown changes: recount on the next refresh
    if action == "replay":
        safe = [e for e in chosen if e.id not in hazards]
        report = await dl.replay(safe, rate_per_s=REPLAY_RATE_PER_S)
        message = f"Replayed {len(report.replayed)} of {len(chosen)} dead letters."
        if hazards:
            message += f" {len(hazards)} left in place: replaying them would roll their key back."
        gone = missing + report.missing
    else:
        purged = await dl.purge(chosen)
        message = f"Purged {purged} dead letters."
        gone = missing
    if gone:
        message += f" {len(gone)} were already gone (replayed or purged by someone else)."
    return web.render(
        request, "done.html", message=message, replayed=action == "replay", entries=chosen, ident=""
    )


async def dead_edit(request: Request) -> Response:
    form = await web.checked_form(request)
    if isinstance(form, Response):
        return form
    entry = await _entry(request)
    if isinstance(entry, Response):
        return entry
    entry_id = entry.id
    payload = str(form.get("payload", ""))
    try:
        if len(payload) > MAX_PAYLOAD_CHARS:
            raise PoisonMessage(f"payload longer than {MAX_PAYLOAD_CHARS} characters")
        operation = decode_payload(payload)
    except PoisonMessage as exc:
        return web.render(request, "dead_show.html", 400, e=entry, payload=payload, error=exc.reason)
    compact = json.dumps(json.loads(payload), separators=(",", ":"), ensure_ascii=False)
    if form.get("confirm") != "yes":
        return web.render(request, "confirm_edit.html", e=entry, payload=compact, new=_pretty(compact))
    new_id = await _dead(request).replay_edited(entry, compact, by="dashboard")
    if new_id is None:
        return web.problem(request, 409, "Already gone", f"{entry_id} was replayed or purged meanwhile.")
    message = f"Replayed {entry_id} with the edited payload as {new_id}; the original is kept in its history."
    return web.render(request, "done.html", message=message, replayed=True, entries=[], ident=operation.ident)


def routes() -> list[Route]:
    return [
        Route("/dead", dead_list),
        Route("/dead/action", dead_action, methods=["POST"]),
        Route("/dead/{entry_id}", dead_show),
        Route("/dead/{entry_id}/edit", dead_edit, methods=["POST"]),
    ]
