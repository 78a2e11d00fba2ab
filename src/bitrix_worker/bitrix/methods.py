"""Pure request builders and response parsers for ``crm.<entity>.*`` and ``batch``.

Nothing here does I/O: builders return a ``Command`` (method + params) that the client POSTs as JSON, or that
``build_batch`` encodes as one ``"method?query"`` string per command (PHP-style query string, see
``bitrix.querystring``). Parsers turn the ``result`` part of an answer into typed values and raise
``ValueError`` on a shape Bitrix24 never sends, which the client reports as an unexpected answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ..classify import classify_command_error, parse_time
from ..operations import Entity
from ..taxonomy import Classification, TimeInfo
from .querystring import encode_query

__all__ = [
    "ENTITIES",
    "MAX_BATCH_COMMANDS",
    "BatchResult",
    "Command",
    "ListPage",
    "build_batch",
    "crm_add",
    "crm_delete",
    "crm_fields",
    "crm_get",
    "crm_list",
    "crm_update",
    "encode_command",
    "parse_batch",
    "parse_bool",
    "parse_id",
    "parse_item",
    "parse_list",
]

ENTITIES: Final = frozenset(e.value for e in Entity)
MAX_BATCH_COMMANDS: Final = 50


@dataclass(slots=True)
class Command:
    """One REST call: ``method`` (e.g. ``crm.deal.add``) and its JSON-serialisable params.

    Not frozen, though nothing changes one (one is built per operation sent, and a frozen dataclass's
    ``__init__`` costs about twice a plain one's); its params dict never let it be hashed anyway."""

    method: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of ``crm.<entity>.list``: at most 50 items; ``next`` is the next ``start`` or None."""

    items: list[dict[str, Any]]
    total: int | None
    next: int | None


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Per-command outcome of one ``batch`` call. A command is in exactly one of results/errors/not_run."""

    results: dict[str, Any]
    errors: dict[str, Classification]
    not_run: set[str]
    times: Mapping[str, TimeInfo]  # each command's own ``time`` block (``result_time``), read on first use
    totals: dict[str, int]
    nexts: dict[str, int]
    time: TimeInfo | None = None


def _entity(entity: str) -> str:
    name = str(entity).lower()
    if name not in ENTITIES:
        raise ValueError(f"unknown CRM entity {entity!r}; expected one of {sorted(ENTITIES)}")
    return name


# ``$result[cmd][path]``: in a batch, a later command's parameter taken from an earlier command's result.
REFERENCE: Final = re.compile(r"\$(result|next|total|time|error)((?:\[[^\]\s]+\])+)", re.IGNORECASE)


def _id(value: int | str) -> int | str:
    """A positive id, or a batch reference to one (``bitrix.items.ref``) that the portal resolves."""
    if isinstance(value, str) and REFERENCE.fullmatch(value):
        return value
    ident = int(value)
    if ident <= 0 or isinstance(value, bool):
        raise ValueError(f"CRM id must be a positive integer, got {value!r}")
    return ident


def crm_add(entity: str, fields: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> Command:
    body: dict[str, Any] = {"fields": dict(fields)}
    if params:
        body["params"] = dict(params)
    return Command(f"crm.{_entity(entity)}.add", body)


def crm_update(
    entity: str, ident: int | str, fields: Mapping[str, Any], params: Mapping[str, Any] | None = None
) -> Command:
    body: dict[str, Any] = {"id": _id(ident), "fields": dict(fields)}
    if params:
        body["params"] = dict(params)
    return Command(f"crm.{_entity(entity)}.update", body)


def crm_get(entity: str, ident: int | str) -> Command:
    return Command(f"crm.{_entity(entity)}.get", {"id": _id(ident)})


def crm_delete(entity: str, ident: int | str) -> Command:
    return Command(f"crm.{_entity(entity)}.delete", {"id": _id(ident)})


def crm_fields(entity: str) -> Command:
    return Command(f"crm.{_entity(entity)}.fields", {})


def crm_list(
    entity: str,
    *,
    filter: Mapping[str, Any] | None = None,  # the Bitrix24 parameter name
    select: Iterable[str] | None = None,
    order: Mapping[str, str] | None = None,
    start: int | None = None,
) -> Command:
    return Command(f"crm.{_entity(entity)}.list", list_params(filter, select, order, start))


def list_params(
    filter: Mapping[str, Any] | None,
    select: Iterable[str] | None,
    order: Mapping[str, str] | None,
    start: int | None,
) -> dict[str, Any]:
    """The parameters every ``*.list`` method takes (old API and ``crm.item.list`` alike)."""
    body: dict[str, Any] = {}
    if filter:
        body["filter"] = dict(filter)
    if select:
        body["select"] = list(select)
    if order:
        body["order"] = dict(order)
    if start is not None:
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        body["start"] = int(start)
    return body


def encode_command(command: Command) -> str:
    """``"method?query"`` as a batch ``cmd`` value (just ``method`` when there are no params)."""
    if not command.method or "?" in command.method:
        raise ValueError(f"invalid method name {command.method!r}")
    query = encode_query(command.params)
    return f"{command.method}?{query}" if query else command.method


def build_batch(commands: Mapping[str, Command], *, halt: bool = False) -> Command:
    """The ``batch`` call for at most 50 named commands; more raises ValueError (never truncates)."""
    if not commands:
        raise ValueError("a batch needs at least one command")
    if len(commands) > MAX_BATCH_COMMANDS:
        raise ValueError(f"a batch holds at most {MAX_BATCH_COMMANDS} commands, got {len(commands)}")
    cmd: dict[str, str] = {}
    for name, command in commands.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"batch command names must be non-empty strings, got {name!r}")
        if command.method == "batch":
            raise ValueError("nested batch is not allowed")
        cmd[name] = encode_command(command)
    return Command("batch", {"halt": 1 if halt else 0, "cmd": cmd})


class _CommandTimes(Mapping[str, TimeInfo]):
    """The commands' ``time`` blocks, parsed when first read: the worker reads only the whole request's
    ``time`` (``Sender``), and parsing 50 blocks into ``TimeInfo`` cost ~1.5 µs per command for nothing."""

    __slots__ = ("_names", "_parsed", "_raw")

    def __init__(self, raw: Mapping[str, Any], names: Sequence[str]) -> None:
        self._raw, self._names = raw, names
        self._parsed: dict[str, TimeInfo] | None = None

    def _all(self) -> dict[str, TimeInfo]:
        if self._parsed is None:
            raw = self._raw
            self._parsed = {n: i for n in self._names if (i := parse_time(raw.get(n))) is not None}
            self._raw, self._names = {}, ()
        return self._parsed

    def __getitem__(self, name: str) -> TimeInfo:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __repr__(self) -> str:
        return repr(self._all())


def _section(value: Any, name: str) -> dict[str, Any]:
    """A batch section keyed by command name. PHP sends an empty one as ``[]``, and a section whose keys
    are 0..n-1 as a JSON list. A decoded JSON object is used as it is (its keys are strings)."""
    if value is None:
        return {}
    if type(value) is dict and all(type(k) is str for k in value):
        return value
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    raise ValueError(f"batch section {name!r} is a {type(value).__name__}")


def int_or_none(value: Any) -> int | None:
    """Bitrix24 sends counts and ids as ints or digit strings; anything else is absent."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def parse_batch(
    result: Any, sent: Iterable[str], *, time: TimeInfo | None = None, secrets: Iterable[str] = ()
) -> BatchResult:
    """Split a batch answer's ``result`` into per-command results, classified errors and skipped commands.

    ``sent`` are the command names in the request; a command in neither ``result`` nor ``result_error``
    did not run (``halt`` stopped the chain before it).
    """
    if isinstance(result, list) and not result:
        result = {}
    if not isinstance(result, Mapping):
        raise ValueError(f"batch result is a {type(result).__name__}, not an object")
    names = list(sent)
    secrets = tuple(secrets)
    ok = _section(result.get("result"), "result")
    failed = _section(result.get("result_error"), "result_error")
    timing = _section(result.get("result_time"), "result_time")
    totals_raw = _section(result.get("result_total"), "result_total")
    nexts_raw = _section(result.get("result_next"), "result_next")

    results: dict[str, Any] = {}
    errors: dict[str, Classification] = {}
    not_run: set[str] = set()
    ran: list[str] = []
    for name in names:
        if name in failed:
            errors[name] = classify_command_error(failed[name], secrets=secrets)
        elif name in ok:
            results[name] = ok[name]
        else:
            not_run.add(name)
            continue
        ran.append(name)
    times = _CommandTimes(timing, ran)
    totals = _counts(totals_raw, ran)
    nexts = _counts(nexts_raw, ran)
    return BatchResult(results, errors, not_run, times, totals, nexts, time)


def _counts(section: dict[str, Any], names: list[str]) -> dict[str, int]:
    """``result_total`` / ``result_next`` of the commands that ran (only list commands have them)."""
    if not section:
        return {}
    return {n: c for n in names if (c := int_or_none(section.get(n))) is not None}


def parse_id(result: Any) -> int:
    """``crm.<entity>.add`` answers the new id (an int; older portals a numeric string)."""
    ident = int_or_none(result)
    if ident is None or ident <= 0:
        raise ValueError(f"expected a new id, got {type(result).__name__}")
    return ident


def parse_bool(result: Any) -> bool:
    """``update``/``delete`` answer ``true``; anything else falsy is reported as False."""
    if isinstance(result, bool):
        return result
    if isinstance(result, int | str):
        return str(result).lower() in {"1", "true", "y"}
    raise ValueError(f"expected a boolean, got {type(result).__name__}")


def parse_item(result: Any) -> dict[str, Any]:
    if not isinstance(result, Mapping):
        raise ValueError(f"expected an object, got {type(result).__name__}")
    return dict(result)


def parse_list(result: Any, total: Any = None, next_start: Any = None) -> ListPage:
    if isinstance(result, Mapping):  # crm.item.list shape: {"items": [...]}
        result = result.get("items", [])
    if not isinstance(result, list) or not all(isinstance(item, Mapping) for item in result):
        raise ValueError("expected a list of objects")
    return ListPage([dict(item) for item in result], int_or_none(total), int_or_none(next_start))
