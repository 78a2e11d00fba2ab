"""Command line, continued: ``lookup`` and ``dashboard`` (registered on the same typer app as the rest)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .cli import JsonFlag, Stream, app, err, fail, out, print_json, run_async, settings_or_exit
from .errors import ConfigError


@app.command("lookup")
def lookup_cmd(
    entity: Annotated[
        str, typer.Argument(help="deal | contact | company | lead, or `id` to search a stream id.")
    ],
    key: Annotated[str, typer.Argument(help="Your external id (e.g. order-42), or a stream id after `id`.")],
    scan_cap: Annotated[int, typer.Option(help="Entries each stream scan reads at most.")] = 20_000,
    as_json: JsonFlag = False,
    stream: Stream = None,
    portal: Annotated[
        str | None,
        typer.Option("--portal", help="This registry portal's stream and mapping table."),
    ] = None,
) -> None:
    """One key's story: Bitrix24 id, every outcome, what still waits, its dead letters."""
    from .cli_portal import resolved_or_exit
    from .keylookup import find_stream_id
    from .operations import Entity
    from .portal_access import portal_lookup
    from .redis.connection import redis_connection
    from .redis.deadletter import parse_id

    settings, record = settings_or_exit(stream=stream), None
    if portal is not None:
        settings, record = resolved_or_exit(settings, portal)
    by_id = entity == "id"
    if by_id:
        try:
            key = parse_id(key)
        except ValueError as exc:
            fail(str(exc), 2)
    elif entity not in {e.value for e in Entity} and not entity.startswith("item:"):
        fail(f"entity {entity!r}: use {', '.join(e.value for e in Entity)}, item:<entityTypeId> or id", 2)

    async def go() -> Any:
        async with redis_connection(settings.redis_url) as client:
            target = (
                await find_stream_id(client, settings, key, scan_cap=scan_cap) if by_id else (entity, key)
            )
            if target is None:
                return None
            report = await portal_lookup(client, settings, record, *target, scan_cap=scan_cap)
            report.matched_id = key if by_id else None
            return report

    report = run_async(go)
    if report is None:
        fail(f"stream id {key} not found in the stream, schedule, outcomes or dead letters")
    if as_json:
        print_json(report.as_json())
        return
    from .lookup_view import lookup_view

    out.print(lookup_view(report), highlight=False)


@app.command()
def dashboard(
    host: Annotated[
        str | None, typer.Option(help="Interface (BITRIX_WORKER_DASHBOARD_HOST, 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (BITRIX_WORKER_DASHBOARD_PORT, 9410).")] = None,
    read_only: Annotated[
        bool | None, typer.Option("--read-only/--read-write", help="Hide every action (default: setting).")
    ] = None,
    stream: Stream = None,
) -> None:
    """Serve the web dashboard: overview, find an operation, dead letters (see docs/dashboard.md)."""
    from .dashboard import check_bind, serve

    settings = settings_or_exit(
        stream=stream, dashboard_host=host, dashboard_port=port, dashboard_read_only=read_only
    )
    try:
        check_bind(settings, settings.dashboard_host)
    except ConfigError as exc:
        fail(f"bad setting {exc}", 2)
    url = f"http://{settings.dashboard_host}:{settings.dashboard_port}/"
    mode = " (read-only)" if settings.dashboard_read_only else ""
    err.print(f"dashboard: {url}{mode} for stream {settings.stream}; Ctrl-C stops it", highlight=False)
    try:
        serve(settings)
    except OSError as exc:
        fail(f"cannot listen on {settings.dashboard_host}:{settings.dashboard_port}: {exc.strerror or exc}")
