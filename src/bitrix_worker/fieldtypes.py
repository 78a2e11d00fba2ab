"""Value checks per Bitrix24 field type: pure functions ``(value, spec, context) -> problem | None``.

Each check answers for one scalar value (``validation`` handles single vs multiple). The accepted forms
are the ones the old-API ``crm.<entity>.*`` methods store unchanged; anything the portal would silently
drop, truncate or cast into another value is a problem. Types we do not model (file, location, iblock,
app-defined types) accept anything: a false refusal would cost more than it saves.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from .schema import EntitySchema, FieldSchema

_INT = re.compile(r"^[+-]?\d+$")
_POSITIVE = re.compile(r"^[1-9]\d*$")
_DECIMAL = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_MONEY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))\|([A-Z]{3})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$"
)
_CRM_BINDING = re.compile(r"^(L|C|CO|D|Q|SI|T[0-9a-fA-F]+)_[1-9]\d*$")
_LINKED_ENTITY = {"crm_company": "company", "crm_contact": "contact", "crm_lead": "lead", "crm_deal": "deal"}


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong with one value: ``not_in_list`` for a well-formed value of no list, else a type error."""

    expected: str
    not_in_list: bool = False
    hint: str = ""


@dataclass(frozen=True, slots=True)
class Context:
    schema: EntitySchema
    category_id: int | None


Check = Callable[[Any, FieldSchema, Context], Problem | None]
Accept = Callable[[Any], bool]


def is_ref(value: Any) -> bool:
    """``{"$ref": ...}`` (exactly that one key): the id of an entity the worker itself creates, resolved
    before sending. Accepted wherever a user or CRM link id is; what it points at is the resolver's
    business (an unresolvable one fails there, still before any call), so it is not checked here."""
    return isinstance(value, Mapping) and len(value) == 1 and "$ref" in value


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def check_string(value: Any, spec: FieldSchema, ctx: Context) -> Problem | None:
    return None if _scalar(value) else Problem("text (a string or a number)")


def check_char(value: Any, spec: FieldSchema, ctx: Context) -> Problem | None:
    return None if value in ("Y", "N") else Problem('"Y" or "N"')


def check_boolean(value: Any, spec: FieldSchema, ctx: Context) -> Problem | None:
    if ctx.schema.camel:  # crm.item.*: only true/"true"/"y"/"Y" are true, and 1 or "1" would be stored false
        text = value.upper() if isinstance(value, str) else None
        ok = isinstance(value, bool) or text in ("Y", "N", "TRUE", "FALSE")
        return None if ok else Problem('true/false or "Y"/"N" (crm.item.* stores 1 as false)')
    ok = value in ("Y", "N", "0", "1") or isinstance(value, bool) or (type(value) is int and value in (0, 1))
    return None if ok else Problem('true/false, 1/0 or "Y"/"N"')


def check_integer(value: Any, spec: FieldSchema, ctx: Context) -> Problem | None:
    if type(value) is int or (type(value) is float and value.is_integer()):
        return None
    return None if isinstance(value, str) and _INT.match(value) else Problem("an integer")


def check_double(value: Any, spec: FieldSchema, ctx: Context) -> Problem | None:
    if type(value) is int:  # never through float: math.isfinite(10**400) raises OverflowError
        return None
    if type(value) is float:
        return None if math.isfinite(value) else Problem("a finite number")
    ok = isinstance(value, str) and _DECIMAL.match(value)
    return None if ok else Problem('a number (decimal point ".", no thousands separators)')


def check_money(value: Any, spec: FieldSchema, ctx: Context) -> Problem | None:
    match = _MONEY.match(value) if isinstance(value, str) else None
    if match is None:
        return Problem('"<amount>|<currency>", e.g. "100.50|EUR"')
    currencies = ctx.schema.currencies
    if currencies and match[2] not in currencies:
        return Problem(f"a currency of the portal: {', '.join(currencies)}", not_in_list=True)
    return None


def _calendar(text: str) -> bool:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00")) if "T" in text or " " in text else None
        day = parsed.date() if parsed else date.fromisoformat(text[:10])
    except ValueError:
        return False
    return day.year >= 1000


def check_date(value: Any, spec: FieldSchema, ctx: Context) -> Problem | None:
    pattern = _DATE if spec.type == "date" else _DATETIME
    text = value if isinstance(value, str) else ""
    if pattern.match(text) and _calendar(text):
        return None
    shape = "YYYY-MM-DD" if spec.type == "date" else "YYYY-MM-DDThh:mm:ss+hh:mm (ISO 8601)"
    return Problem(f"a real calendar {spec.type} as {shape}")


def check_enumeration(value: Any, spec: FieldSchema, ctx: Context) -> Problem | None:
    ids = [i for i, _ in spec.items]
    text = str(value) if _scalar(value) else None
    if text is not None and text in ids:
        return None
    listed = ", ".join(f"{i} ({v})" for i, v in spec.items[:10]) + (", ..." if len(ids) > 10 else "")
    hint = next(
        (f"; {value!r} is the label of item {i}: send its ID" for i, v in spec.items if v == text), ""
    )
    return Problem(f"an item ID of the list: {listed or 'the list is empty'}", not_in_list=True, hint=hint)


def check_status(value: Any, spec: FieldSchema, ctx: Context) -> Problem | None:
    lists = ctx.schema.status_lists(spec, ctx.category_id)
    known = [ctx.schema.statuses[name] for name in lists if name in ctx.schema.statuses]
    if not known:
        return None if _scalar(value) else Problem("a status id")  # list not fetched: cannot judge
    if isinstance(value, str) and any(value in statuses for statuses in known):
        return None
    ids = [s for statuses in known for s in statuses]
    shown = ", ".join(ids[:12]) + (", ..." if len(ids) > 12 else "")
    hint = next(
        (
            f"; {value!r} is the name of {s}: send the STATUS_ID"
            for st in known
            for s, n in st.items()
            if n == value
        ),
        "",
    )
    where = " or ".join(lists)
    return Problem(f"a STATUS_ID of {where}: {shown}", not_in_list=True, hint=hint)


def check_category(value: Any, spec: FieldSchema, ctx: Context) -> Problem | None:
    text = str(value) if type(value) is int or isinstance(value, str) else ""
    if not _INT.match(text):
        return Problem("a pipeline id (integer)")
    categories = ctx.schema.categories
    if categories and int(text) not in categories:
        shown = ", ".join(f"{i} ({n})" for i, n in categories.items())
        return Problem(f"a pipeline id of the portal: {shown}", not_in_list=True)
    return None


def check_currency(value: Any, spec: FieldSchema, ctx: Context) -> Problem | None:
    currencies = ctx.schema.currencies
    if isinstance(value, str) and (value in currencies or (not currencies and len(value) == 3)):
        return None
    return Problem(f"a currency of the portal: {', '.join(currencies) or 'ISO code'}", not_in_list=True)


def _positive_id(value: Any) -> bool:
    return (type(value) is int and value > 0) or (isinstance(value, str) and bool(_POSITIVE.match(value)))


def check_user(value: Any, spec: FieldSchema, ctx: Context) -> Problem | None:
    return (
        None
        if _positive_id(value) or is_ref(value)
        else Problem('a user id (positive integer) or a {"$ref": ...}')
    )


def check_link(value: Any, spec: FieldSchema, ctx: Context) -> Problem | None:
    entity = _LINKED_ENTITY.get(spec.type)
    if is_ref(value) or _positive_id(value):
        return None
    return Problem(f'a {entity or "CRM"} id (positive integer) or {{"$ref": "{entity or "<entity>"}:<key>"}}')


def check_binding(value: Any, spec: FieldSchema, ctx: Context) -> Problem | None:
    """UF type ``crm``: ``"C_2"``, ``"CO_3"``, ``"D_1"``, ``"L_4"``, ``"SI_7"``, ``"T80_6"``, or a bare id."""
    if is_ref(value) or _positive_id(value) or (isinstance(value, str) and _CRM_BINDING.match(value)):
        return None
    return Problem('a CRM binding such as "C_2", "CO_3", "D_1", "L_4", a positive id, or a {"$ref": ...}')


def check_anything(value: Any, spec: FieldSchema, ctx: Context) -> Problem | None:
    return None


CHECKS: dict[str, Check] = {
    "string": check_string,
    "text": check_string,
    "url": check_string,
    "address": check_string,
    "char": check_char,
    "boolean": check_boolean,
    "integer": check_integer,
    "double": check_double,
    "money": check_money,
    "date": check_date,
    "datetime": check_date,
    "enumeration": check_enumeration,
    "crm_status": check_status,
    "crm_category": check_category,
    "crm_currency": check_currency,
    "user": check_user,
    "employee": check_user,
    "crm_company": check_link,
    "crm_contact": check_link,
    "crm_lead": check_link,
    "crm_deal": check_link,
    "crm_quote": check_link,
    "crm_entity": check_link,
    "crm": check_binding,
}


def check_for(field_type: str) -> Check:
    return CHECKS.get(field_type, check_anything)


def quick_accept(spec: FieldSchema, ctx: Context) -> Accept | None:
    """A test true only of values ``validation`` lets through for this field: filled plain ``str``/``int``/
    ``float`` values the field's check accepts; None for types without one (their values take the full check).

    Why: nearly every value a worker sends is such a value of a handful of types (text, a status, a list
    item, an id), and the full path (emptiness, ``_check_value``, the check, a status lookup through every
    pipeline's list) cost more per field than the rest of planning. ``validation`` builds these once per
    schema and pipeline; a value they do not accept goes through the full check, so verdicts and their texts
    stay exactly the full check's (tests/unit/test_quick_accept.py compares the two on generated values).
    """
    if spec.type == "crm_multifield":  # entries, whatever the value: ``validation._multifield``
        return None
    build = _QUICK.get(check_for(spec.type))
    return None if build is None else build(spec, ctx)


def _quick_status(spec: FieldSchema, ctx: Context) -> Accept:
    lists = ctx.schema.status_lists(spec, ctx.category_id)
    known = [ctx.schema.statuses[name] for name in lists if name in ctx.schema.statuses]
    camel = ctx.schema.camel
    return _among([s for statuses in known for s in statuses], camel) if known else _filled(camel)


def _quick_double(spec: FieldSchema, ctx: Context) -> Accept:
    camel = ctx.schema.camel
    return lambda value: (
        (type(value) is int or (type(value) is float and math.isfinite(value))) and not (camel and value == 0)
    )


def _quick_integer(spec: FieldSchema, ctx: Context) -> Accept:
    camel = ctx.schema.camel
    return lambda value: type(value) is int and not (camel and value == 0)


def _quick_currency(spec: FieldSchema, ctx: Context) -> Accept | None:
    return _among(ctx.schema.currencies, ctx.schema.camel) if ctx.schema.currencies else None


_QUICK: dict[Check, Callable[[FieldSchema, Context], Accept | None]] = {
    check_string: lambda spec, ctx: _filled(ctx.schema.camel),
    check_anything: lambda spec, ctx: _filled(ctx.schema.camel),
    check_status: _quick_status,
    check_enumeration: lambda spec, ctx: _among([i for i, _ in spec.items], ctx.schema.camel),
    check_char: lambda spec, ctx: _among(("Y", "N"), ctx.schema.camel),
    check_integer: _quick_integer,
    check_double: _quick_double,
    check_currency: _quick_currency,
    check_user: lambda spec, ctx: _positive_id,
    check_link: lambda spec, ctx: _positive_id,
}
"""The quick check of each field check that has one (``quick_accept``)."""


def _filled(camel: bool) -> Accept:
    """Any text or number but an empty one (``""``; with crm.item.*'s PHP ``empty`` also ``"0"`` and 0)."""
    blank = ("", "0") if camel else ("",)

    def accept(value: Any) -> bool:
        kind = type(value)
        if kind is str:
            return value not in blank
        return (kind is int or kind is float) and not (camel and value == 0)

    return accept


def _among(ids: Iterable[str], camel: bool) -> Accept:
    """One of ``ids`` as a string (an empty one is left to the full check: it may be a required field's)."""
    allowed = frozenset(ids) - {"", "0" if camel else ""}
    return lambda value: type(value) is str and value in allowed
