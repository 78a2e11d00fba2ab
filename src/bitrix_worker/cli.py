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
PortalOpt = Annotated[
    str | None,
    typer.Option("--portal", help="This registry portal's stream (default: the default portal's)."),
]


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr; the message is shown as is (``[postgres]`` is text, not rich markup)."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def settings_or_exit(
    *,
    require_portal: bool = False,
    of_portal: str | None = None,
    **overrides: Any,
) -> Settings:
    """``require_portal``: commands that name or call the default portal (a webhook, or
    ``BITRIX_WORKER_PORTAL`` in the registry); ``of_portal``: the settings of that portal's stream
    (``--portal``, docs/scaling.md "Many portals")."""
    try:
        settings = load_settings(**overrides)
        if of_portal is not None:
            from .fleet import portal_settings
            from .portals.model import check_portal_id

            try:
                check_portal_id(of_portal)
            except ValueError as exc:
                raise ConfigError("--portal", str(exc)) from None
            settings = portal_settings(settings, of_portal, None)
        if require_portal:
            settings.portal_name  # noqa: B018 - raises ConfigError naming BITRIX_WEBHOOK_URL
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
    portals: Annotated[
        str | None, typer.Option(help="Serve many registry portals: all | id,id (one stream each).")
    ] = None,
) -> None:
    """Consume the stream and deliver operations to Bitrix24 until stopped (SIGTERM/SIGINT)."""
    settings = settings_or_exit(
        concurrency=concurrency,
        stream=stream,
        consumer=consumer,
        http_port=http_port,
        portals=portals,
    )
    try:
        _ = settings.portals or settings.portal_name  # one portal: a webhook or BITRIX_WORKER_PORTAL
    except ConfigError as exc:
        fail(f"bad setting {exc}", 2)
    from .runner import run_worker
    from .tuning import tune_process

    tune_process()  # garbage collector and log records for a long run (tuning.py)
    summary = run_async(lambda: run_worker(settings, until_idle=until_idle, check=check))
    if until_idle:
        err.print(run_summary(summary.outcomes), highlight=False)


@app.command()
def enqueue(
    op: Annotated[str, typer.Argument(help="create | update | upsert | delete")],
    entity: Annotated[
        str, typer.Argument(help=" | ".join(e.value for e in Entity) + " | item:<entityTypeId>")
    ],
    key: Annotated[str, typer.Argument(help="Your external id, e.g. order-42 (becomes ORIGIN_ID).")],
    fields: Annotated[str, typer.Option("--fields", "-f", help="Bitrix24 fields as a JSON object.")] = "{}",
    products: Annotated[
        str | None, typer.Option(help="The whole product-row set as a JSON list ([] clears it).")
    ] = None,
    version: Annotated[
        int | None, typer.Option(help="Increasing per key; older versions are skipped.")
    ] = None,
    op_id: Annotated[
        str | None,
        typer.Option(help="Your id for this change: a repeat within the dedupe window adds nothing."),
    ] = None,
    stream: Stream = None,
    portal: PortalOpt = None,
) -> None:
    """Append one operation to the stream (what a producer does with XADD); --portal: to that portal's."""
    from .operations import Entity, OpKind
    from .producer import build_operation, check_op_id
    from .producer import enqueue as do_enqueue

    smart_process = entity.startswith("item:")  # checked by build_operation
    for problem in (
        enum_choice("op", op, OpKind),
        None if smart_process else enum_choice("entity", entity, Entity),
    ):
        if problem:
            fail(problem, 2)
    parsed = json_object("--fields", fields)
    if isinstance(parsed, str):
        fail(parsed, 2)
    try:
        rows = json.loads(products) if products is not None else None
    except ValueError:
        fail("--products: not JSON (a list of row objects)", 2)
    settings = settings_or_exit(stream=stream)
    default = settings.default_portal
    try:
        operation = build_operation(op, entity, key, parsed, version, products=rows)
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
            return await do_enqueue(
                client, operation, stream=settings.stream, op_id=op_id, portal=portal, default_portal=default
            )

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
    drain_per_second: Annotated[
        bool,
        typer.Option(
            "--drain-per-second", help="Drain the bucket once a second (by --drain), not continuously."
        ),
    ] = False,
    latency: Annotated[
        float, typer.Option(help="Seconds every request waits before the portal sees it (fixed).", min=0)
    ] = 0.0,
    no_limits: Annotated[bool, typer.Option("--no-limits", help="Disable rate and time limits.")] = False,
    faults: Annotated[str | None, typer.Option(help="Fault config as JSON (see docs).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for fault randomness.")] = None,
    oauth_lifetime_s: Annotated[
        float | None, typer.Option(help="Also serve an OAuth app whose access tokens live this long.")
    ] = None,
) -> None:
    """Run the Bitrix24 emulator: webhook http://HOST:PORT/rest/1/emulator-secret/ ."""
    from .emulator import EmulatorConfig, serve
    from .emulator.oauth import OAuthConfig

    try:
        cfg = EmulatorConfig(
            burst=burst,
            drain_per_s=drain,
            drain_per_second=drain_per_second,
            limits_enabled=not no_limits,
            faults=_with_latency(json.loads(faults) if faults else {}, latency),
            seed=seed,
            oauth=OAuthConfig(access_lifetime_s=oauth_lifetime_s) if oauth_lifetime_s is not None else None,
        )
    except (ValueError, ValidationError) as exc:
        fail(f"bad emulator setting: {first_error(exc)}", 2)
    if cfg.oauth is not None:  # fixed local test values, printed so they can be copied (docs/portals.md)
        o = cfg.oauth
        err.print(
            f"emulator: OAuth client_endpoint http://{host}:{port}/rest/ token endpoint "
            f"http://{host}:{port}/oauth/token/ client {o.client_id} / {o.client_secret}, "
            f"tokens {o.access_token} / {o.refresh_token}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    # Printed in full: the emulator's secret is a fixed local test value, and the URL is there to be copied.
    err.print(
        f"emulator: webhook http://{host}:{port}/rest/{cfg.user_id}/{cfg.secret}/ (admin: /_emulator/)",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    serve(cfg, host=host, port=port)


def _with_latency(faults: Any, latency_s: float) -> Any:
    """``--latency`` as the fault config's fixed latency (a ``latency`` in ``--faults`` wins)."""
    if latency_s > 0 and isinstance(faults, dict) and "latency" not in faults:
        return {**faults, "latency": {"dist": "fixed", "s": latency_s}}
    return faults


@app.command()
def status(
    as_json: JsonFlag = False,
    stream: Stream = None,
    scan_cap: Annotated[
        int, typer.Option(help="Dead letters scanned for the by-class counts (newest first).")
    ] = 100_000,
    portal: PortalOpt = None,
) -> None:
    """Stream, pending, retries, dead letters, breaker, limiter, counters and live workers at a glance."""
    from .redis.connection import redis_connection
    from .status import gather_status

    settings = settings_or_exit(stream=stream, of_portal=portal)  # checks the id's spelling
    base = settings_or_exit(stream=stream)

    async def go() -> Any:
        from .mapping import DEFAULT_TABLE
        from .portal_access import status_target

        target, table = (settings, DEFAULT_TABLE) if portal is None else await status_target(base, portal)
        async with redis_connection(target.redis_url) as client:
            return await gather_status(client, target, scan_cap=scan_cap, table=table)

    result = run_async(go)
    if as_json:
        print_json(result.as_json())
        return
    from .views import status_view

    out.print(status_view(result))


@app.command()
def demo(
    orders: Annotated[int, typer.Option(help="Orders to simulate (each: a create and two updates).")] = 120,
    backend: Annotated[
        str, typer.Option(help="auto | external (REDIS_URL) | valkey (embedded) | fakeredis (in-process).")
    ] = "auto",
    workers: Annotated[int, typer.Option(help="Worker processes (fakeredis: always 1, in-process).")] = 2,
    seed: Annotated[int, typer.Option(help="Seed for the fault mix and the data.")] = 7,
    prefix: Annotated[str | None, typer.Option(hidden=True, help="Stream name prefix (tests).")] = None,
    dashboard: Annotated[
        bool, typer.Option("--dashboard", help="Keep the web dashboard up at the end (Ctrl-C ends it).")
    ] = False,
    dashboard_port: Annotated[int, typer.Option(help="Port for --dashboard (0: any free port).")] = 9410,
) -> None:
    """A self-contained tour: emulated Bitrix24 with faults, embedded Redis, two workers, final report."""
    from .demo import DemoOptions, run_demo

    if backend not in ("auto", "external", "valkey", "fakeredis"):
        fail(f"--backend {backend!r}: use auto, external, valkey or fakeredis", 2)
    if orders < 10 or workers < 1:
        fail("--orders must be >= 10 and --workers >= 1", 2)
    code = run_async(
        lambda: run_demo(
            DemoOptions(
                orders=orders,
                backend=backend,
                workers=workers,
                seed=seed,
                prefix=prefix,
                dashboard_port=dashboard_port if dashboard else None,
            ),
            out,
        )
    )
    raise typer.Exit(code)


def main() -> None:
    app()


def _add_portal_commands() -> None:
    from . import cli_ops  # noqa: F401 - registers `lookup` and `dashboard` on `app`
    from .cli_dlq import dlq
    from .cli_portal import portal_app, store_app
    from .cli_portals import portals_app

    app.add_typer(dlq, name="dlq")
    app.add_typer(portal_app, name="portal")
    app.add_typer(portals_app, name="portals")
    app.add_typer(store_app, name="store")


_add_portal_commands()


def _add_field_commands() -> None:
    from .cli_fields import check, fields

    app.command()(fields)
    app.command()(check)


_add_field_commands()
