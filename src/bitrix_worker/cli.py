"""Command line: a thin typer app that parses, builds objects and delegates.

Every failure we expect (bad setting, Redis down, bad input) prints one line and exits non-zero; no
tracebacks. Read commands take ``--json``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from .cli_support import HelpGroup, enum_choice, first_error, json_object, run_summary
from .config import Settings, load_settings
from .errors import BitrixWorkerError, ConfigError
from .operations import Entity

app = typer.Typer(
    cls=HelpGroup,
    name="bitrix-worker",
    help="Deliver CRM operations from a Redis Stream to Bitrix24, reliably and without waste.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()
T = TypeVar("T")

Stream = Annotated[str | None, typer.Option(help="Stream name (BITRIX_WORKER_STREAM).")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr; the message is shown as is (``[postgres]`` is text, not rich markup)."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def settings_or_exit(*, require_webhook: bool = False, **overrides: Any) -> Settings:
    try:
        settings = load_settings(**overrides)
        if require_webhook:
            settings.webhook  # noqa: B018 - raises ConfigError naming BITRIX_WEBHOOK_URL
    except ConfigError as exc:
        fail(f"bad setting {exc}", 2)
    return settings


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(factory())
    except ConfigError as exc:
        fail(f"bad setting {exc}", 2)
    except BitrixWorkerError as exc:
        fail(str(exc))


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@app.command()
def run(
    concurrency: Annotated[int | None, typer.Option(help="Batch calls in flight in this process.")] = None,
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Exit 0 once stream, pending list and schedule are empty.")
    ] = False,
    stream: Stream = None,
    consumer: Annotated[str | None, typer.Option(help="Consumer name (default host-pid).")] = None,
    http_port: Annotated[
        int | None, typer.Option(help="Port for /metrics, /healthz, /readyz (0: off).")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Test the webhook with one read-only call first.")
    ] = True,
) -> None:
    """Consume the stream and deliver operations to Bitrix24 until stopped (SIGTERM/SIGINT)."""
    settings = settings_or_exit(
        require_webhook=True, concurrency=concurrency, stream=stream, consumer=consumer, http_port=http_port
    )
    from .runner import run_worker

    summary = run_async(lambda: run_worker(settings, until_idle=until_idle, check=check))
    if until_idle:
        err.print(run_summary(summary.outcomes), highlight=False)


@app.command()
def enqueue(
    op: Annotated[str, typer.Argument(help="create | update | upsert | delete")],
    entity: Annotated[str, typer.Argument(help=" | ".join(e.value for e in Entity))],
    key: Annotated[str, typer.Argument(help="Your external id, e.g. order-42 (becomes ORIGIN_ID).")],
    fields: Annotated[str, typer.Option("--fields", "-f", help="Bitrix24 fields as a JSON object.")] = "{}",
    version: Annotated[
        int | None, typer.Option(help="Increasing per key; older versions are skipped.")
    ] = None,
    op_id: Annotated[
        str | None,
        typer.Option(help="Your id for this change: a repeat within the dedupe window adds nothing."),
    ] = None,
    stream: Stream = None,
) -> None:
    """Append one operation to the stream (what a producer does with XADD)."""
    from .operations import Entity, OpKind
    from .producer import build_operation, check_op_id
    from .producer import enqueue as do_enqueue

    for problem in (enum_choice("op", op, OpKind), enum_choice("entity", entity, Entity)):
        if problem:
            fail(problem, 2)
    parsed = json_object("--fields", fields)
    if isinstance(parsed, str):
        fail(parsed, 2)
    settings = settings_or_exit(stream=stream)
    try:
        operation = build_operation(op, entity, key, parsed, version)
    except (ValueError, ValidationError) as exc:
        fail(f"invalid operation: {first_error(exc)}", 2)
    try:
        if op_id is not None:
            check_op_id(op_id)
    except ValueError as exc:
        fail(f"--op-id: {exc}", 2)

    async def go() -> str:
        from .redis.connection import redis_connection

        async with redis_connection(settings.redis_url) as client:
            return await do_enqueue(client, operation, stream=settings.stream, op_id=op_id)

    out.print(run_async(go), highlight=False)


@app.command()
def config(as_json: JsonFlag = False) -> None:
    """Show the effective settings (the webhook secret is redacted)."""
    settings = settings_or_exit()
    data = settings.redacted()
    if as_json:
        print_json(data)
        return
    from rich.table import Table

    table = Table("setting", "value", box=None)
    for name, value in data.items():
        table.add_row(name, str(value))
    out.print(table)


@app.command()
def emulator(
    port: Annotated[int, typer.Option(help="Port to listen on (127.0.0.1).")] = 9424,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    burst: Annotated[int, typer.Option(help="Leaky bucket size.")] = 50,
    drain: Annotated[float, typer.Option(help="Leaky bucket drain per second.")] = 2.0,
    no_limits: Annotated[bool, typer.Option("--no-limits", help="Disable rate and time limits.")] = False,
    faults: Annotated[str | None, typer.Option(help="Fault config as JSON (see docs).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for fault randomness.")] = None,
) -> None:
    """Run the Bitrix24 emulator: webhook http://HOST:PORT/rest/1/emulator-secret/ ."""
    from .emulator import EmulatorConfig, serve

    try:
        cfg = EmulatorConfig(
            burst=burst,
            drain_per_s=drain,
            limits_enabled=not no_limits,
            faults=json.loads(faults) if faults else {},
            seed=seed,
        )
    except (ValueError, ValidationError) as exc:
        fail(f"bad emulator setting: {first_error(exc)}", 2)
    # Printed in full: the emulator's secret is a fixed local test value, and the URL is there to be copied.
    err.print(
        f"emulator: webhook http://{host}:{port}/rest/{cfg.user_id}/{cfg.secret}/ (admin: /_emulator/)",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    serve(cfg, host=host, port=port)


@app.command()
def status(
    as_json: JsonFlag = False,
    stream: Stream = None,
    scan_cap: Annotated[
        int, typer.Option(help="Dead letters scanned for the by-class counts (newest first).")
    ] = 100_000,
) -> None:
    """Stream, pending, retries, dead letters, breaker, limiter, counters and live workers at a glance."""
    from .redis.connection import redis_connection
    from .status import gather_status

    settings = settings_or_exit(stream=stream)

    async def go() -> Any:
        async with redis_connection(settings.redis_url) as client:
            return await gather_status(client, settings, scan_cap=scan_cap)

    result = run_async(go)
    if as_json:
        print_json(result.as_json())
        return
    from .views import status_view

    out.print(status_view(result))


dlq = typer.Typer(
    cls=HelpGroup, help="Inspect, replay and purge the dead-letter stream.", no_args_is_help=True
)
app.add_typer(dlq, name="dlq")
ClassOpt = Annotated[str | None, typer.Option("--class", help="Only entries of this error class.")]
IdsArg = Annotated[list[str] | None, typer.Argument(help="Dead-letter entry ids.", show_default=False)]


def _dead_letters(stream: str | None, action: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    from .redis.connection import redis_connection
    from .redis.deadletter import DeadLetters

    settings = settings_or_exit(stream=stream)

    async def go() -> T:
        async with redis_connection(settings.redis_url) as client:
            return await action(DeadLetters(client, settings.keys))

    return run_async(go)


def _check_class(error_class: str | None) -> None:
    from .taxonomy import ErrorClass

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
) -> None:
    """List dead-lettered operations with their error class and description."""
    _check_class(error_class)
    entries = _dead_letters(
        stream, lambda d: d.entries(newest=not oldest, error_class=error_class, limit=limit, key=key)
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
) -> None:
    """One entry in full: the original payload and the error history."""
    (wanted,) = _ids([entry_id])
    entry = _dead_letters(stream, lambda d: d.get(wanted))
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
) -> None:
    """Put entries back on the stream (history kept, fresh retry budget), oldest first, at a limited rate.

    An entry whose key has moved on since (a newer version, or a later write) is skipped with the reason
    unless --force: replaying it would roll the key back."""
    from .status import replay_hazards

    wanted = _ids(ids)
    _one_selector(wanted, error_class, everything)
    per_s = parse_rate(rate)
    settings = settings_or_exit(stream=stream)

    async def action(d: Any) -> Any:
        chosen, missing = await d.select(ids=wanted, error_class=error_class, everything=everything)
        hazards = {} if force else await replay_hazards(settings.database_url, chosen)
        report = await d.replay([e for e in chosen if e.id not in hazards], rate_per_s=per_s, dry_run=dry_run)
        report.missing[:0] = missing
        report.skipped = [(e.id, hazards[e.id]) for e in chosen if e.id in hazards]
        return report

    report = _dead_letters(stream, action)
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
) -> None:
    """Delete entries for good (after they were fixed some other way, or are not wanted)."""
    wanted = _ids(ids)
    _one_selector(wanted, error_class, everything)
    if everything and not yes:
        fail("purging every dead letter cannot be undone: add --yes", 2)

    async def action(d: Any) -> tuple[int, list[str]]:
        chosen, missing = await d.select(ids=wanted, error_class=error_class, everything=everything)
        return await d.purge(chosen), missing

    deleted, missing = _dead_letters(stream, action)
    if as_json:
        print_json({"purged": deleted, "missing": missing})
    else:
        out.print(f"purged {deleted} entries" + (f"; not found: {', '.join(missing)}" if missing else ""))
    if missing:
        raise typer.Exit(1)


@app.command()
def demo(
    orders: Annotated[int, typer.Option(help="Orders to simulate (each: a create and two updates).")] = 120,
    backend: Annotated[
        str, typer.Option(help="auto | external (REDIS_URL) | valkey (embedded) | fakeredis (in-process).")
    ] = "auto",
    workers: Annotated[int, typer.Option(help="Worker processes (fakeredis: always 1, in-process).")] = 2,
    seed: Annotated[int, typer.Option(help="Seed for the fault mix and the data.")] = 7,
    prefix: Annotated[str | None, typer.Option(hidden=True, help="Stream name prefix (tests).")] = None,
) -> None:
    """A self-contained tour: emulated Bitrix24 with faults, embedded Redis, two workers, final report."""
    from .demo import DemoOptions, run_demo

    if backend not in ("auto", "external", "valkey", "fakeredis"):
        fail(f"--backend {backend!r}: use auto, external, valkey or fakeredis", 2)
    if orders < 10 or workers < 1:
        fail("--orders must be >= 10 and --workers >= 1", 2)
    code = run_async(
        lambda: run_demo(
            DemoOptions(orders=orders, backend=backend, workers=workers, seed=seed, prefix=prefix), out
        )
    )
    raise typer.Exit(code)


def main() -> None:
    app()


def _add_portal_commands() -> None:
    from .cli_portal import portal_app

    app.add_typer(portal_app, name="portal")


_add_portal_commands()
