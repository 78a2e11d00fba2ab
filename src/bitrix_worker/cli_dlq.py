"""``bitrix-worker dlq list|show|replay|purge``: the dead-letter stream for operators."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

import typer

from .cli import JsonFlag, PortalOpt, Stream, fail, out, print_json, run_async, settings_or_exit
from .cli_support import HelpGroup, enum_choice
from .taxonomy import ErrorClass

T = TypeVar("T")

dlq = typer.Typer(
    cls=HelpGroup, help="Inspect, replay and purge the dead-letter stream.", no_args_is_help=True
)
ClassOpt = Annotated[str | None, typer.Option("--class", help="Only entries of this error class.")]
IdsArg = Annotated[list[str] | None, typer.Argument(help="Dead-letter entry ids.", show_default=False)]


def _dead_letters(
    stream: str | None, action: Callable[[Any], Coroutine[Any, Any, T]], portal: str | None = None
) -> T:
    from .redis.connection import redis_connection
    from .redis.deadletter import DeadLetters

    settings = settings_or_exit(stream=stream, of_portal=portal)

    async def go() -> T:
        async with redis_connection(settings.redis_url) as client:
            return await action(DeadLetters(client, settings.keys))

    return run_async(go)


def _check_class(error_class: str | None) -> None:

    # "unknown": dead letters whose error record is unreadable are listed under it.
    problem = error_class and enum_choice("--class", error_class, ErrorClass, "unknown")
    if problem:
        fail(problem, 2)


def _ids(raw: list[str] | None) -> list[str]:
    from .redis.deadletter import parse_id

    try:
        return [parse_id(i) for i in raw or []]
    except ValueError as exc:
        fail(str(exc), 2)


def _one_selector(ids: list[str], error_class: str | None, everything: bool) -> None:
    _check_class(error_class)
    if sum([bool(ids), error_class is not None, everything]) != 1:
        fail("say which entries: ids, --class CLASS or --all (exactly one)", 2)


def parse_rate(raw: str) -> float:
    """``50/s``, ``50`` or ``3000/min`` -> per second."""
    text = raw.strip().lower()
    number, _, unit = text.partition("/")
    per = {"": 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0}.get(unit)
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if per is None or value <= 0:
        fail(f"--rate {raw!r}: expected e.g. 50/s or 600/min", 2)
    return value / per


@dlq.command("list")
def dlq_list(
    error_class: ClassOpt = None,
    limit: Annotated[int, typer.Option(help="At most this many entries.")] = 50,
    oldest: Annotated[bool, typer.Option("--oldest", help="Oldest first (default: newest first).")] = False,
    key: Annotated[
        str | None, typer.Option(help="Only this key: entity:key (deal:order-42) or the bare key (order-42).")
    ] = None,
    as_json: JsonFlag = False,
    stream: Stream = None,
    portal: PortalOpt = None,
) -> None:
    """List dead-lettered operations with their error class and description."""
    _check_class(error_class)
    entries = _dead_letters(
        stream,
        lambda d: d.entries(newest=not oldest, error_class=error_class, limit=limit, key=key),
        portal,
    )
    if as_json:
        print_json([e.summary() for e in entries])
        return
    from .views import dead_table

    out.print(dead_table(entries) if entries else "no dead letters", highlight=False)


@dlq.command("show")
def dlq_show(
    entry_id: Annotated[str, typer.Argument(help="Dead-letter entry id.")],
    as_json: JsonFlag = False,
    stream: Stream = None,
    portal: PortalOpt = None,
) -> None:
    """One entry in full: the original payload and the error history."""
    (wanted,) = _ids([entry_id])
    entry = _dead_letters(stream, lambda d: d.get(wanted), portal)
    if entry is None:
        fail(f"no dead-letter entry {wanted}")
    if as_json:
        print_json(entry.as_json())
        return
    from .views import dead_entry_view

    head, history = dead_entry_view(entry)
    out.print(head, highlight=False)
    # The payload as one unwrapped line, so that it can be copied whole at any terminal width.
    out.print("payload:", style="bold", highlight=False)
    out.print(entry.payload, markup=False, highlight=False, soft_wrap=True)
    out.print(history, highlight=False)


@dlq.command("replay")
def dlq_replay(
    ids: IdsArg = None,
    error_class: ClassOpt = None,
    everything: Annotated[bool, typer.Option("--all", help="Every entry.")] = False,
    rate: Annotated[str, typer.Option(help="Pace, e.g. 50/s or 600/min.")] = "50/s",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report what would be replayed.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replay even what would roll its key back.")] = False,
    as_json: JsonFlag = False,
    stream: Stream = None,
    portal: PortalOpt = None,
) -> None:
    """Put entries back on the stream (history kept, fresh retry budget), oldest first, at a limited rate.

    An entry whose key has moved on since (a newer version, or a later write) is skipped with the reason
    unless --force: replaying it would roll the key back."""
    from .mapping import DEFAULT_TABLE
    from .portal_layout import portal_table
    from .status import replay_hazards

    wanted = _ids(ids)
    _one_selector(wanted, error_class, everything)
    per_s = parse_rate(rate)
    settings = settings_or_exit(stream=stream, of_portal=portal)
    default = settings_or_exit(stream=stream).default_portal
    table = portal_table(DEFAULT_TABLE, portal, default)  # the portal's own mapping table

    async def action(d: Any) -> Any:
        chosen, missing = await d.select(ids=wanted, error_class=error_class, everything=everything)
        hazards = {} if force else await replay_hazards(settings.database_url, chosen, table=table)
        report = await d.replay([e for e in chosen if e.id not in hazards], rate_per_s=per_s, dry_run=dry_run)
        report.missing[:0] = missing
        report.skipped = [(e.id, hazards[e.id]) for e in chosen if e.id in hazards]
        return report

    report = _dead_letters(stream, action, portal)
    if as_json:
        print_json(report.as_json())
    else:
        from .views import replay_view

        out.print(replay_view(report), highlight=False)
    if wanted and report.missing:
        raise typer.Exit(1)


@dlq.command("purge")
def dlq_purge(
    ids: IdsArg = None,
    error_class: ClassOpt = None,
    everything: Annotated[bool, typer.Option("--all", help="Every entry (needs --yes).")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm purging every entry.")] = False,
    as_json: JsonFlag = False,
    stream: Stream = None,
    portal: PortalOpt = None,
) -> None:
    """Delete entries for good (after they were fixed some other way, or are not wanted)."""
    wanted = _ids(ids)
    _one_selector(wanted, error_class, everything)
    if everything and not yes:
        fail("purging every dead letter cannot be undone: add --yes", 2)

    async def action(d: Any) -> tuple[int, list[str]]:
        chosen, missing = await d.select(ids=wanted, error_class=error_class, everything=everything)
        return await d.purge(chosen), missing

    deleted, missing = _dead_letters(stream, action, portal)
    if as_json:
        print_json({"purged": deleted, "missing": missing})
    else:
        out.print(f"purged {deleted} entries" + (f"; not found: {', '.join(missing)}" if missing else ""))
    if missing:
        raise typer.Exit(1)
