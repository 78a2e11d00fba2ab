"""``bitrix-worker portal status|pause|resume|reset``: the portal gate, seen and controlled by an operator.

This is the default portal's gate (Redis, immediate), or with ``--portal <id>`` a registry portal's gate
under its own stream (docs/scaling.md "Many portals"). ``portals`` (``cli_portals``) manages the registry of
portals and their lasting state, and moves the same gates with it (``portal_access.gate_targets``).

The same functions the worker's gate uses (``gate.PortalGate``): a pause here stops every worker consuming
for the portal until ``resume``; ``reset`` also forgets the limiter's slow-down, for use after fixing what
made the portal refuse us (e.g. a corrected webhook: the workers resume at once, not after the cool-down).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import typer

from .cli import JsonFlag, Stream, err, out, print_json, run_async, settings_or_exit
from .config import Settings
from .portals.model import PortalRecord

portal_app = typer.Typer(help="See, pause, resume or reset the portal's gate.", no_args_is_help=True)
GatePortal = Annotated[
    str | None,
    typer.Option("--portal", help="This registry portal's gate, under its own stream."),
]


def resolved_or_exit(settings: Settings, portal_id: str) -> tuple[Settings, PortalRecord | None]:
    """The settings and record of a portal the registry knows (or the default), else one line naming
    ``--portal`` and exit 2."""
    from .portal_access import resolve_portal

    return run_async(lambda: resolve_portal(settings, portal_id))


def _gate_action(stream: str | None, action: str, portal: str | None, reason: str = "") -> dict[str, Any]:
    from .gate import PortalGate
    from .redis.connection import redis_connection
    from .redis.limits import Limiter

    settings = settings_or_exit(stream=stream, require_portal=portal is None)
    record = None
    targets = [settings]
    if portal is not None:
        from .portal_access import gate_targets

        _, record = resolved_or_exit(settings, portal)
        targets = gate_targets(settings, portal) if record is not None else [settings]

    async def go() -> dict[str, Any]:
        async with redis_connection(settings.redis_url) as client:
            for s in targets:
                gate = PortalGate.from_settings(client, s)
                if action == "pause":
                    await gate.pause(reason)
                elif action in ("resume", "reset"):
                    await gate.resume()
                if action == "reset":
                    await Limiter(client, s.keys.limiter(s.portal_name), rate_per_s=1, burst=1).reset()
            state = asdict(await PortalGate.from_settings(client, targets[0]).state())
            state["portal"] = targets[0].portal_name
            return state

    state = run_async(go)
    if record is not None and record.state != "active" and action != "status":
        err.print(
            f"note: the registry records portal {record.portal_id} as {record.state}; "
            f"`bitrix-worker portals {'resume' if action != 'pause' else 'pause'} {record.portal_id}` "
            "records the state too",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    return state


def _show(state: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(state)
        return
    from .views import gate_line

    out.print(f"portal {state['portal']}: {gate_line(state)}", highlight=False)


@portal_app.command("status")
def portal_status(as_json: JsonFlag = False, stream: Stream = None, portal: GatePortal = None) -> None:
    """Whether workers consume for the portal, and if not why and until when."""
    _show(_gate_action(stream, "status", portal), as_json)


@portal_app.command("pause")
def portal_pause(
    reason: Annotated[str, typer.Option(help="Shown in status and logs.")] = "paused by an operator",
    as_json: JsonFlag = False,
    stream: Stream = None,
    portal: GatePortal = None,
) -> None:
    """Stop every worker consuming for the portal until `portal resume` (nothing is lost or dead-lettered)."""
    _show(_gate_action(stream, "pause", portal, reason), as_json)


@portal_app.command("resume")
def portal_resume(as_json: JsonFlag = False, stream: Stream = None, portal: GatePortal = None) -> None:
    """Reopen the portal now, whatever paused it."""
    _show(_gate_action(stream, "resume", portal), as_json)


@portal_app.command("reset")
def portal_reset(as_json: JsonFlag = False, stream: Stream = None, portal: GatePortal = None) -> None:
    """Reopen now and forget the limiter's slow-down: after fixing the webhook or the portal."""
    _show(_gate_action(stream, "reset", portal), as_json)


store_app = typer.Typer(help="The mapping store as the stream knows it.", no_args_is_help=True)


@store_app.command("vouch")
def store_vouch(stream: Stream = None) -> None:
    """Say that the current mapping store holds every key ever created on this stream (after a new or
    restored store was noticed, creates of unknown keys are looked up first until you say so)."""
    from .redis.connection import redis_connection
    from .redis.stores import StoreRegistry

    settings = settings_or_exit(stream=stream)

    async def go() -> str:
        async with redis_connection(settings.redis_url) as client:
            registry = StoreRegistry(client, settings.keys)
            if await registry.read() is None:
                return "no mapping store recorded for this stream yet (a worker records it when it starts)"
            await registry.vouch()
            return "the mapping store vouches again: creates of unknown keys are no longer looked up first"

    out.print(run_async(go), highlight=False)
