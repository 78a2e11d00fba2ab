"""``bitrix-worker portals add|list|show|pause|resume|remove|refresh|rotate-secrets|new-key``: the registry.

``portals`` manages the registry (which portals exist, how they authenticate, their plan and their lasting
state, in the database); ``portal`` (singular, ``cli_portal``) is the gate of the running workers (a pause
in Redis that stops consuming at once). ``portals pause|resume`` does both for a registered portal: it
records the state and shuts or reopens that portal's gate on the configured stream.

Secrets are taken from options that read environment variables (``BITRIX_PORTAL_CLIENT_SECRET``,
``BITRIX_PORTAL_ACCESS_TOKEN``, ``BITRIX_PORTAL_REFRESH_TOKEN``, ``BITRIX_PORTAL_WEBHOOK_URL``) so they need
not appear in shell history or ``ps``; they are never printed: ``show`` says ``set`` and a fingerprint.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from .cli import JsonFlag, Stream, fail, out, print_json, run_async, settings_or_exit
from .config import Settings

portals_app = typer.Typer(
    help="The portal registry: portals, their auth (webhook or OAuth), plan limits and state.",
    no_args_is_help=True,
)
T = TypeVar("T")
PortalId = Annotated[str, typer.Argument(help="The portal's id in the registry (e.g. its domain).")]


def _with_registry(settings: Settings, action: Callable[[Any], Awaitable[T]], *, need_key: bool = True) -> T:
    from .portals.registry import PortalRegistry
    from .portals.secrets import SecretBox

    key = settings.secrets_key.get_secret_value() if settings.secrets_key else None

    async def go() -> T:
        box = SecretBox.from_setting(key) if (need_key or key) else None  # a ConfigError: one line, exit 2
        registry = await PortalRegistry.connect(settings.database_url, box=box, table=settings.portals_table)
        try:
            return await action(registry)
        finally:
            await registry.close()

    return run_async(go)


def _settings(stream: str | None = None) -> Settings:
    return settings_or_exit(stream=stream)


def _checked_id(portal_id: str) -> str:
    from .portals.model import check_portal_id

    try:
        return check_portal_id(portal_id)
    except ValueError as exc:
        fail(str(exc), 2)


@portals_app.command("add")
def portals_add(
    portal_id: PortalId,
    webhook: Annotated[
        str | None,
        typer.Option(envvar="BITRIX_PORTAL_WEBHOOK_URL", help="Inbound webhook URL (webhook auth)."),
    ] = None,
    client_id: Annotated[str | None, typer.Option(help="OAuth application client id (OAuth auth).")] = None,
    client_secret: Annotated[
        str | None, typer.Option(envvar="BITRIX_PORTAL_CLIENT_SECRET", help="OAuth client secret.")
    ] = None,
    access_token: Annotated[
        str | None, typer.Option(envvar="BITRIX_PORTAL_ACCESS_TOKEN", help="Current OAuth access token.")
    ] = None,
    refresh_token: Annotated[
        str | None, typer.Option(envvar="BITRIX_PORTAL_REFRESH_TOKEN", help="Current OAuth refresh token.")
    ] = None,
    endpoint: Annotated[
        str | None, typer.Option(help="OAuth client_endpoint (default https://<portal id>/rest/).")
    ] = None,
    token_url: Annotated[str | None, typer.Option(help="OAuth token endpoint.")] = None,
    plan: Annotated[
        str, typer.Option(help="standard (50 burst, 2/s) or enterprise (250, 5/s).")
    ] = "standard",
    burst: Annotated[int | None, typer.Option(help="Override the plan's burst.")] = None,
    rate: Annotated[float | None, typer.Option(help="Override the plan's requests per second.")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite a registered portal.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Register a portal with a webhook (--webhook) or an OAuth app (--client-id and the tokens)."""
    from .portals.forms import PortalForm, build_record

    pid = _checked_id(portal_id)
    settings = _settings()
    form = PortalForm(
        pid,
        webhook,
        client_id,
        client_secret,
        access_token,
        refresh_token,
        endpoint,
        token_url,
        plan,
        burst,
        rate,
    )
    try:
        record = build_record(form)
    except ValueError as exc:
        fail(str(exc), 2)

    async def add(registry: Any) -> dict[str, Any]:
        await registry.add(record, replace=replace)
        shown: dict[str, Any] = record.public()
        return shown

    shown = _with_registry(settings, add)
    if as_json:
        print_json(shown)
        return
    verb = "replaced" if replace else "added"
    out.print(f"{verb} portal {pid} ({record.auth}, plan {record.plan.name})", highlight=False)
    if replace:
        out.print(f"if its gate is paused, reopen it: bitrix-worker portals resume {pid}", highlight=False)


@portals_app.command("list")
def portals_list(as_json: JsonFlag = False) -> None:
    """Every registered portal: id, auth, plan limits and state (no key needed, no secret shown)."""
    settings = _settings()

    async def rows(registry: Any) -> list[dict[str, Any]]:
        return [
            {
                "portal": r.portal_id,
                "auth": r.auth,
                "endpoint": r.endpoint,
                "plan": r.plan.name,
                "burst": r.plan.burst,
                "rate_per_s": r.plan.rate_per_s,
                "state": r.state,
                "state_reason": r.state_reason,
            }
            for r in await registry.records()
        ]

    data = _with_registry(settings, rows, need_key=False)
    if as_json:
        print_json(data)
        return
    if not data:
        out.print("no portals registered (bitrix-worker portals add ...)", highlight=False)
        return
    from rich.table import Table

    table = Table("portal", "auth", "plan", "burst", "rate/s", "state", "reason", box=None)
    for r in data:
        table.add_row(
            r["portal"],
            r["auth"],
            r["plan"],
            str(r["burst"]),
            f"{r['rate_per_s']:g}",
            r["state"],
            r["state_reason"],
        )
    out.print(table)


@portals_app.command("show")
def portals_show(portal_id: PortalId, as_json: JsonFlag = False) -> None:
    """One portal in full; each secret as "set" with a fingerprint, never its value."""
    settings = _settings()

    async def show(registry: Any) -> dict[str, Any]:
        shown: dict[str, Any] = (await registry.get(portal_id)).public()
        return shown

    data = _with_registry(settings, show)
    if as_json:
        print_json(data)
        return
    from rich.table import Table

    table = Table("field", "value", box=None)
    for name, value in data.items():
        table.add_row(name, "" if value is None else str(value))
    out.print(table)


def _gate(settings: Settings, portal_id: str, action: str, reason: str) -> None:
    """Every gate the portal has (``portal_access.gate_targets``): the one under its own stream (a
    multi-portal worker's, docs/scaling.md "Many portals") and the one under the stream, when another."""
    from .gate import PortalGate
    from .portal_access import gate_targets
    from .redis.connection import redis_connection

    async def go() -> None:
        async with redis_connection(settings.redis_url) as client:
            for s in gate_targets(settings, portal_id):
                gate = PortalGate.from_settings(client, s)
                await (gate.pause(reason) if action == "pause" else gate.resume())

    run_async(go)


def _done(data: dict[str, Any], as_json: bool, said: str) -> None:
    if as_json:
        print_json(data)
    else:
        out.print(f"portal {data['portal']}: {said}", highlight=False)


@portals_app.command("pause")
def portals_pause(
    portal_id: PortalId,
    reason: Annotated[
        str, typer.Option(help="Shown in list, show and the gate's status.")
    ] = "paused by an operator",
    as_json: JsonFlag = False,
    stream: Stream = None,
) -> None:
    """Record the portal as paused and shut its gate: workers stop consuming for it (nothing is lost)."""
    settings = _settings(stream)
    _with_registry(settings, lambda r: r.set_state(portal_id, "paused", reason), need_key=False)
    _gate(settings, portal_id, "pause", reason)
    _done({"portal": portal_id, "state": "paused", "reason": reason}, as_json, f"paused ({reason})")


@portals_app.command("resume")
def portals_resume(portal_id: PortalId, as_json: JsonFlag = False, stream: Stream = None) -> None:
    """Record the portal as active and reopen its gate. An auth_broken portal needs fresh tokens first."""
    settings = _settings(stream)

    async def resume(registry: Any) -> None:
        from .errors import RegistryError

        current = [r for r in await registry.records() if r.portal_id == portal_id]
        if current and current[0].state == "auth_broken":
            raise RegistryError(
                f"portal {portal_id} is auth_broken (its refresh token was refused): reinstall the app or "
                f"store fresh tokens with `bitrix-worker portals add {portal_id} --replace ...`, then resume"
            )
        await registry.set_state(portal_id, "active")

    _with_registry(settings, resume, need_key=False)
    _gate(settings, portal_id, "resume", "")
    _done({"portal": portal_id, "state": "active"}, as_json, "active")


@portals_app.command("remove")
def portals_remove(
    portal_id: PortalId,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete the portal and its secrets from the registry (its stream entries are not touched)."""
    settings = _settings()
    if not yes and not typer.confirm(f"remove portal {portal_id} and its stored secrets?"):
        fail("not removed", 1)
    if not _with_registry(settings, lambda r: r.remove(portal_id), need_key=False):
        fail(f"no portal {portal_id!r} in the registry")
    _done({"portal": portal_id, "removed": True}, as_json, "removed")


@portals_app.command("refresh")
def portals_refresh(
    portal_id: Annotated[str | None, typer.Argument(help="The portal to refresh (default: --all).")] = None,
    all_portals: Annotated[
        bool, typer.Option("--all", help="Every OAuth portal that is not auth_broken.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Refresh OAuth tokens now, coordinated with running workers (for idle portals: run it weekly)."""
    if (portal_id is None) == (not all_portals):
        fail("give a portal id or --all", 2)
    settings = _settings()
    from .logs import configure_logging
    from .portals.refreshing import refresh_portals

    configure_logging(fmt=settings.log_format, level=settings.log_level)  # log lines on stderr, not in --json

    results = _with_registry(settings, lambda r: refresh_portals(r, settings, portal_id))
    if as_json:
        print_json(results)
    else:
        for row in results:
            out.print(f"portal {row['portal']}: {row['result']}", highlight=False)
    if any(row["result"] != "refreshed" for row in results):
        raise typer.Exit(1)


@portals_app.command("rotate-secrets")
def portals_rotate() -> None:
    """Re-encrypt every stored secret with the newest key of BITRIX_WORKER_SECRETS_KEY (key rotation)."""
    settings = _settings()
    done = _with_registry(settings, lambda r: r.rotate_secrets())
    out.print(f"re-encrypted the secrets of {done} portal(s) with the newest key", highlight=False)


@portals_app.command("new-key")
def portals_new_key() -> None:
    """Print a new random key for BITRIX_WORKER_SECRETS_KEY (put it first to rotate)."""
    from .portals.secrets import new_key

    out.print(new_key(), highlight=False)
