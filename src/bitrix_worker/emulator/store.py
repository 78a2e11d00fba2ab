"""In-memory CRM tables (deal, contact, company, lead) answering like ``crm.<entity>.*`` on a portal.

Values are stored already in their wire form (strings, ``None`` for unset) so ``get``/``list`` are a dict
copy. Per the fact sheet: unknown fields are ignored on write, errors are HTTP 400 with ``error`` = "",
``list`` pages are fixed at 50 with ``total`` and ``next`` only when more rows follow. ``ORIGIN_ID`` and
``ID`` equality filters use an index, so the worker's duplicate check stays O(1) on a large store.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .errors import ApiError, bad_request
from .php import php_int
from .schema import CURRENCIES, FIELDS, NUMERIC_TYPES, Field

PAGE_SIZE = 50
ENTITIES = tuple(FIELDS)
_FILTER_OPS = (">=", "<=", "!=", "!@", "=%", "%=", ">", "<", "=", "!", "@", "%")
_ID_TYPES = frozenset({"integer", "user", "crm_company", "crm_contact", "crm_lead", "crm_deal"})
NOT_RETURNED = frozenset({"CONTACT_IDS"})  # accepted by add/update, absent from get/list (docs)

_stamp_cache: tuple[int, str] = (0, "")


def portal_time(now: float | None = None) -> str:
    """ISO-8601 with the local offset, as the portal writes DATE_CREATE (cached per second)."""
    global _stamp_cache  # noqa: PLW0603 - a one-slot cache: formatting dominates the write path otherwise
    now = time.time() if now is None else now
    second = int(now)
    if _stamp_cache[0] != second:
        _stamp_cache = (second, datetime.fromtimestamp(second).astimezone().isoformat(timespec="seconds"))
    return _stamp_cache[1]


@dataclass(slots=True)
class Result:
    """A method's answer: ``value`` goes to ``result``; list methods add ``total``/``next``."""

    value: Any
    total: int | None = None
    next: int | None = None


@dataclass(slots=True)
class Table:
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_id: int = 1
    by_origin: dict[str, set[int]] = field(default_factory=dict)

    def index(self, row_id: int, old: str | None, new: str | None) -> None:
        if old == new:
            return
        if old is not None:
            ids = self.by_origin.get(old)
            if ids is not None:
                ids.discard(row_id)
                if not ids:
                    del self.by_origin[old]
        if new is not None:
            self.by_origin.setdefault(new, set()).add(row_id)


def _wire(value: Any) -> Any:
    """Python value -> the string form the portal returns."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, list | tuple):
        return [_wire(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _wire(v) for k, v in value.items()}
    return str(value)


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def _positive_id(params: dict[str, Any]) -> int:
    """``(int)$params['id']`` as the old API reads it: an array (a batch reference to a failed command)
    becomes 1, so such a call lands on entity 1 — the portal's behaviour, reproduced on purpose."""
    value = php_int(params.get("id", params.get("ID")))
    if value <= 0:
        raise bad_request("ID is not defined or invalid.")
    return value


def _array(params: dict[str, Any], name: str, *, required: bool) -> dict[str, Any]:
    """PHP "array" params: a JSON object, or a list (empty -> {}); anything else is the portal's error."""
    value = params.get(name)
    if value is None and not required:
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    raise bad_request(f"Parameter '{name}' must be array.")


def _contacts(values: dict[str, Any]) -> dict[str, Any]:
    """``CONTACT_IDS`` replaces the contact set and its first is the (deprecated) ``CONTACT_ID``; a lone
    ``CONTACT_ID`` makes a set of one."""
    if "CONTACT_IDS" in values:
        ids = values["CONTACT_IDS"]
        ids = [str(php_int(i)) for i in (ids if isinstance(ids, list) else [ids]) if php_int(i) > 0]
        values["CONTACT_IDS"] = ids
        values["CONTACT_ID"] = ids[0] if ids else None
    elif values.get("CONTACT_ID") not in (None, "", "0"):
        values["CONTACT_IDS"] = [values["CONTACT_ID"]]
    return values


def _stage_prefix(category: Any) -> str:
    number = php_int(category)
    return f"C{number}:" if number > 0 else ""


def _default_stage(row: dict[str, Any]) -> None:
    """A deal created in pipeline N without a stage starts at ``CN:NEW``."""
    if "CATEGORY_ID" in row and "STAGE_ID" in row and ":" not in str(row["STAGE_ID"] or ""):
        row["STAGE_ID"] = _stage_prefix(row["CATEGORY_ID"]) + str(row["STAGE_ID"] or "NEW")


def _move_stage(row: dict[str, Any]) -> None:
    """A pipeline move keeps the stage's meaning: ``C1:WON`` -> ``C2:WON`` (the portal picks the first stage
    of the new pipeline with the same semantics)."""
    stage = str(row.get("STAGE_ID") or "NEW").rpartition(":")[2]
    row["STAGE_ID"] = _stage_prefix(row["CATEGORY_ID"]) + stage


class CrmStore:
    """All four entity tables plus the method implementations."""

    def __init__(self, user_id: int = 1) -> None:
        self.user_id = str(user_id)
        self.tables: dict[str, Table] = {e: Table() for e in ENTITIES}
        self.on_remove: Callable[[str, int], None] | None = None  # product rows go with their owner

    def reset(self) -> None:
        self.tables = {e: Table() for e in ENTITIES}

    # -- writes -------------------------------------------------------------------------------------

    def _clean(self, entity: str, fields: dict[str, Any], *, update: bool = False) -> dict[str, Any]:
        """Fields as the old API stores them; on update it also drops immutable ones (``CATEGORY_ID``)."""
        known = FIELDS[entity]
        out: dict[str, Any] = {}
        for raw_name, raw in fields.items():
            name = str(raw_name).upper()
            spec = known.get(name)
            if spec is None:
                if name.startswith("UF_"):
                    out[name] = _wire(raw)
                continue  # the portal silently ignores unknown fields
            if spec.read_only or (update and spec.immutable):
                continue
            out[name] = self._value(spec, raw)
        return _contacts(out)

    @staticmethod
    def _value(spec: Field, raw: Any) -> Any:
        if spec.type in _ID_TYPES and not spec.multiple and isinstance(raw, list | dict):
            return str(php_int(raw))  # the proxies cast non-scalars for id-like fields
        if spec.type == "crm_currency" and raw not in (None, ""):
            if str(raw) not in CURRENCIES:
                raise bad_request(f'Invalid value for the "{spec.title}" field')
            return str(raw)
        if spec.type == "double" and raw not in (None, ""):
            number = _number(raw)
            if number is None:
                raise bad_request(f'Invalid value for the "{spec.title}" field')
            return f"{number:.2f}"
        if spec.type == "integer" and raw not in (None, ""):
            number = _number(raw)
            if number is None:
                raise bad_request(f'Invalid value for the "{spec.title}" field')
            return str(int(number))
        return _wire(raw)

    def add(self, entity: str, params: dict[str, Any]) -> Result:
        values = self._clean(entity, _array(params, "fields", required=True))
        _array(params, "params", required=False)
        table = self.tables[entity]
        row_id = table.next_id
        table.next_id += 1
        stamp = portal_time()
        row = dict(FIELDS[entity].defaults)
        row.update(values)
        _default_stage(row)
        row.update(
            ID=str(row_id),
            DATE_CREATE=stamp,
            DATE_MODIFY=stamp,
            CREATED_BY_ID=self.user_id,
            MODIFY_BY_ID=self.user_id,
        )
        row.setdefault("ASSIGNED_BY_ID", self.user_id)
        if row.get("ASSIGNED_BY_ID") is None:
            row["ASSIGNED_BY_ID"] = self.user_id
        table.rows[row_id] = row
        table.index(row_id, None, row.get("ORIGIN_ID"))
        return Result(row_id)

    def _row(self, entity: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        row_id = _positive_id(params)
        row = self.tables[entity].rows.get(row_id)
        if row is None:
            raise bad_request("Not found")
        return row_id, row

    def update(self, entity: str, params: dict[str, Any], *, move: bool = False) -> Result:
        """``crm.<entity>.update``; ``move=True`` is crm.item.update's path, where a pipeline change works."""
        row_id, row = self._row(entity, params)
        values = self._clean(entity, _array(params, "fields", required=True), update=not move)
        _array(params, "params", required=False)
        old_origin = row.get("ORIGIN_ID")
        moved = "CATEGORY_ID" in values and values["CATEGORY_ID"] != row.get("CATEGORY_ID")
        row.update(values)
        if moved and "STAGE_ID" not in values:
            _move_stage(row)
        row["DATE_MODIFY"] = portal_time()
        row["MODIFY_BY_ID"] = self.user_id
        self.tables[entity].index(row_id, old_origin, row.get("ORIGIN_ID"))
        return Result(True)

    def delete(self, entity: str, params: dict[str, Any]) -> Result:
        row_id, _ = self._row(entity, params)
        self.remove(entity, row_id)
        return Result(True)

    def remove(self, entity: str, row_id: int) -> bool:
        """Delete without an API call (a user deleting the deal in the Bitrix24 UI)."""
        table = self.tables[entity]
        row = table.rows.pop(row_id, None)
        if row is None:
            return False
        table.index(row_id, row.get("ORIGIN_ID"), None)
        if self.on_remove is not None:
            self.on_remove(entity, row_id)
        return True

    # -- reads --------------------------------------------------------------------------------------

    def get(self, entity: str, params: dict[str, Any]) -> Result:
        _, row = self._row(entity, params)
        return Result({k: v for k, v in row.items() if k not in NOT_RETURNED})

    def all(self, entity: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.tables[entity].rows.values()]

    def fields(self, entity: str) -> Result:
        return Result({name: spec.describe() for name, spec in FIELDS[entity].items()})

    def list(self, entity: str, params: dict[str, Any]) -> Result:
        table = self.tables[entity]
        tests, candidates = _compile_filter(entity, table, _array(params, "filter", required=False))
        order = _array(params, "order", required=False)
        rows: Iterable[dict[str, Any]] = (
            table.rows.values() if candidates is None else (r for i in candidates if (r := table.rows.get(i)))
        )
        matched = [r for r in rows if all(t(r) for t in tests)]
        if candidates is not None:
            matched.sort(key=lambda r: int(r["ID"]))
        for name, direction in reversed(list(order.items())):
            key = _sort_key(entity, str(name).upper())
            matched.sort(key=key, reverse=str(direction).upper() == "DESC")
        start = max(0, int(_number(params.get("start")) or 0))
        page = matched[start : start + PAGE_SIZE]
        project = _projector(entity, params.get("select"))
        after = start + PAGE_SIZE
        return Result([project(r) for r in page], len(matched), after if after < len(matched) else None)


def _projector(entity: str, select: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    names = [str(s).upper() for s in select] if isinstance(select, list) and select else ["*"]
    standard = "*" in names
    user = "UF_*" in names
    wanted = ["ID"] + [n for n in names if n not in ("*", "UF_*", "ID")]
    fields = FIELDS[entity]

    def project(row: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if standard:
            out.update(
                (n, row.get(n))
                for n in fields
                if (not fields[n].multiple or n in row) and n not in NOT_RETURNED
            )
        if user:
            out.update((n, v) for n, v in row.items() if n.startswith("UF_"))
        for n in wanted:
            out[n] = row.get(n)
        return out

    return project


def _sort_key(entity: str, name: str) -> Callable[[dict[str, Any]], tuple[int, float, str]]:
    spec = FIELDS[entity].get(name)
    numeric = spec is not None and spec.type in NUMERIC_TYPES

    def key(row: dict[str, Any]) -> tuple[int, float, str]:
        value = row.get(name)
        if value is None:
            return (0, 0.0, "")
        if numeric:
            return (1, _number(value) or 0.0, "")
        return (1, 0.0, str(value).lower())

    return key


def _like(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(p) for p in pattern.split("%")), re.IGNORECASE | re.DOTALL)


def _compile_filter(
    entity: str, table: Table, flt: dict[str, Any]
) -> tuple[list[Callable[[dict[str, Any]], bool]], list[int] | None]:
    """Filter dict -> row predicates, plus candidate IDs when an indexed equality narrows the scan."""
    tests: list[Callable[[dict[str, Any]], bool]] = []
    candidates: set[int] | None = None
    for raw_key, want in flt.items():
        key = str(raw_key)
        op = next((o for o in _FILTER_OPS if key.startswith(o)), "=")
        name = key[len(op) :].upper() if key.startswith(op) else key.upper()
        spec = FIELDS[entity].get(name)
        if spec is None and not name.startswith("UF_"):
            continue  # as on the portal, filter keys that are no field are ignored
        numeric = spec is not None and spec.type in NUMERIC_TYPES
        tests.append(_predicate(op, name, want, numeric))
        if op == "=" and not isinstance(want, list | dict) and want not in (None, ""):
            hits: set[int] | None = None
            if name == "ID":
                number = _number(want)
                hits = {int(number)} if number is not None and number.is_integer() else set()
            elif name == "ORIGIN_ID":
                hits = table.by_origin.get(str(want), set())
            if hits is not None:
                candidates = set(hits) if candidates is None else candidates & hits
    return tests, (sorted(candidates) if candidates is not None else None)


def _predicate(op: str, name: str, want: Any, numeric: bool) -> Callable[[dict[str, Any]], bool]:
    def norm(value: Any) -> Any:
        if value is None or value == "":
            return None
        if numeric:
            return _number(value)
        return str(value) if not isinstance(value, bool) else ("Y" if value else "N")

    def values(row: dict[str, Any]) -> list[Any]:
        value = row.get(name)
        if isinstance(value, list):
            return [norm(v) for v in value] or [None]
        return [norm(value)]

    if op in ("=", "!", "!=", "@", "!@"):
        wanted = {norm(w) for w in want} if isinstance(want, list) else {norm(want)}
        negate = op in ("!", "!=", "!@")
        return lambda row: any(v in wanted for v in values(row)) != negate
    if op in ("%", "=%", "%="):
        regex = _like(f"%{want}%" if op == "%" else str(want))
        return lambda row: any(v is not None and regex.fullmatch(str(v)) for v in values(row))
    target = norm(want)
    if target is None:
        return lambda row: False
    if not numeric and _number(target) is not None:
        numeric_target: float | None = _number(target)
    else:
        numeric_target = None

    def compare(value: Any) -> bool:
        if value is None:
            return False
        left, right = value, target
        if numeric_target is not None and _number(value) is not None:
            left, right = _number(value), numeric_target
        if op == ">":
            return bool(left > right)
        if op == ">=":
            return bool(left >= right)
        if op == "<":
            return bool(left < right)
        return bool(left <= right)

    return lambda row: any(compare(v) for v in values(row))


__all__ = ["ENTITIES", "PAGE_SIZE", "ApiError", "CrmStore", "Result", "portal_time"]
