"""``bitrix-worker fields <entity>`` and ``bitrix-worker check <payload.json>``: the portal's field schema
as the workers validate with it, and one operation checked against it without sending it (docs/fields.md).
The work is in ``fieldcheck``; these are the thin typer commands."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .cli import JsonFlag, err, fail, out, print_json, run_async, settings_or_exit
from .cli_support import enum_choice
from .config import Settings
from .operations import Entity, EntityName

ITEM_FORM = "item:<entityTypeId>"
CallPortal = Annotated[
    str | None,
    typer.Option("--portal", help="This registry portal (its webhook or OAuth app), not the default one."),
]


def _settings(portal: str | None) -> Settings:
    """The settings to call the default portal, or a registry portal whose client may log a token refresh
    (on stderr, never in ``--json``)."""
    settings = settings_or_exit(require_portal=portal is None)
    if portal is not None:
        from .logs import configure_logging

        configure_logging(fmt=settings.log_format, level=settings.log_level)
    return settings


def fields(
    entity: Annotated[str, typer.Argument(help=" | ".join([*(e.value for e in Entity), ITEM_FORM]))],
    as_json: JsonFlag = False,
    refresh: Annotated[bool, typer.Option("--refresh", help="Fetch from the portal now.")] = False,
    portal: CallPortal = None,
) -> None:
    """The entity's field schema the workers validate with, with labels (cached in Redis, else fetched)."""
    from .fieldcheck import cached_schema, schema_table

    problem = None if entity.startswith("item:") else enum_choice("entity", entity, Entity, ITEM_FORM)
    if problem is not None:
        fail(problem, 2)
    try:
        EntityName.parse(entity)  # item:<entityTypeId> with a smart-process type id
    except ValueError as exc:
        fail(str(exc), 2)
    settings = _settings(portal)
    schema = run_async(lambda: cached_schema(settings, entity, refresh=refresh, portal=portal))
    print_json(schema.as_json()) if as_json else out.print(schema_table(schema))


def check(
    payload: Annotated[str, typer.Argument(help="File with one operation payload (JSON); - for stdin.")],
    schema: Annotated[
        str | None, typer.Option(help="Validate offline against a `fields --json` file.")
    ] = None,
    category: Annotated[
        int | None, typer.Option(help="The pipeline, for a stage on update (STAGE_ID, stageId).")
    ] = None,
    as_json: JsonFlag = False,
    portal: CallPortal = None,
) -> None:
    """Validate one operation without sending it: exit 0 valid, 1 findings (one line each), 2 bad input."""
    from .fieldcheck import BadInput, cached_schema, check_report, load_check

    if schema is not None and portal is not None:
        fail("--schema validates offline against its file and --portal names a portal to ask: give one", 2)
    try:
        operation, known = load_check(sys.stdin.read() if payload == "-" else None, payload, schema)
    except BadInput as exc:
        fail(str(exc), 2)
    if known is None:
        settings = _settings(portal)
        known = run_async(lambda: cached_schema(settings, operation.entity.value, portal=portal))
    text, note, code = check_report(operation, known, category, as_json=as_json)
    sys.stdout.write(text)
    if note:
        err.print(note, markup=False, highlight=False)
    raise typer.Exit(code)
