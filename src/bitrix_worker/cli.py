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

from .config import Settings, load_settings
from .errors import BitrixWorkerError, ConfigError

app = typer.Typer(
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
    err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True, soft_wrap=True)
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
) -> None:
    """Consume the stream and deliver operations to Bitrix24 until stopped (SIGTERM/SIGINT)."""
    settings = settings_or_exit(
        require_webhook=True, concurrency=concurrency, stream=stream, consumer=consumer, http_port=http_port
    )
    from .runner import run_worker

    summary = run_async(lambda: run_worker(settings, until_idle=until_idle))
    if until_idle:
        err.print(f"idle: {dict(summary.outcomes) or 'nothing to do'}", highlight=False)


@app.command()
def enqueue(
    op: Annotated[str, typer.Argument(help="create | update | upsert | delete")],
    entity: Annotated[str, typer.Argument(help="deal | contact | company | lead")],
    key: Annotated[str, typer.Argument(help="Your external id, e.g. order-42 (becomes ORIGIN_ID).")],
    fields: Annotated[str, typer.Option("--fields", "-f", help="Bitrix24 fields as a JSON object.")] = "{}",
    version: Annotated[
        int | None, typer.Option(help="Increasing per key; older versions are skipped.")
    ] = None,
    stream: Stream = None,
) -> None:
    """Append one operation to the stream (what a producer does with XADD)."""
    from .producer import build_operation
    from .producer import enqueue as do_enqueue

    settings = settings_or_exit(stream=stream)
    try:
        parsed = json.loads(fields)
    except json.JSONDecodeError as exc:
        fail(f"--fields is not JSON: {exc.msg}", 2)
    try:
        operation = build_operation(op, entity, key, parsed, version)
    except (ValueError, ValidationError) as exc:
        fail(f"invalid operation: {_first_error(exc)}", 2)

    async def go() -> str:
        from redis.asyncio import Redis

        client = Redis.from_url(settings.redis_url)
        try:
            return await do_enqueue(client, operation, stream=settings.stream)
        finally:
            await client.aclose()

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
        fail(f"bad emulator setting: {_first_error(exc)}", 2)
    err.print(f"emulator: webhook http://{host}:{port}/rest/{cfg.user_id}/***/ (admin: /_emulator/)")
    serve(cfg, host=host, port=port)


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        e = exc.errors(include_url=False, include_input=False)[0]
        return f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
    return str(exc)


def main() -> None:
    app()
