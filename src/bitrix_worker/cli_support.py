"""Pure helpers for the command line: input checks that turn into one clear line, help without type noise,
and the end-of-run summary. No I/O here; ``cli`` prints what these return.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

from pydantic import ValidationError
from typer.core import TyperGroup


def choices(values: Iterable[str]) -> str:
    """``a, b or c``: how an error names the allowed values (never an enum's repr)."""
    items = list(values)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def enum_choice(name: str, raw: str, kind: type[Enum], *also: str) -> str | None:
    """None when ``raw`` is one of ``kind``'s values (or ``also``), else the line to print."""
    allowed = [str(m.value) for m in kind] + list(also)
    return None if raw in allowed else f"{name} {raw!r}: use {choices(allowed)}"


def json_object(option: str, raw: str) -> dict[str, Any] | str:
    """The parsed object, or the one line to print: ``-f`` must hold Bitrix24 fields as a JSON object.

    ``[1]``, ``null`` and ``"ab"`` are valid JSON but not fields; catching them here beats a traceback or an
    empty create reaching the stream.
    """
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        return f"{option} is not JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
    if not isinstance(value, dict):
        return f'{option} must be a JSON object like \'{{"TITLE": "Order 42"}}\', got {_json_kind(value)}'
    return value


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array"


def first_error(exc: Exception) -> str:
    """The first problem of a pydantic error (``op: Input should be 'create', ...``), else the message."""
    if isinstance(exc, ValidationError):
        e = exc.errors(include_url=False, include_input=False)[0]
        return f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
    return str(exc)


def run_summary(outcomes: Mapping[str, int]) -> str:
    """``idle: 12 operations — applied 10, dead_lettered 2`` (or ``nothing to do``), for ``--until-idle``."""
    total = sum(outcomes.values())
    if not total:
        return "idle: nothing to do"
    parts = ", ".join(f"{name} {n}" for name, n in sorted(outcomes.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"idle: {total} operation{'s' if total != 1 else ''} — {parts}"


def _hide_flag_metavars(command: Any, ctx: Any) -> None:
    """An on/off flag takes no value, so its help line shows none (typer labels every option ``<bool>``).

    Duck-typed: typer has shipped both click's classes and its own copy of them.
    """
    for param in [*command.params, command.get_help_option(ctx)]:
        if getattr(param, "is_flag", False) and getattr(param, "metavar", "") is None:
            param.metavar = ""


class HelpGroup(TyperGroup):
    """A typer group whose commands' help lines show no ``<bool>`` for flags."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _hide_flag_metavars(command, ctx)
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _hide_flag_metavars(self, ctx)
        super().format_help(ctx, formatter)
