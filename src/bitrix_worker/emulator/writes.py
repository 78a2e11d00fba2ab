"""What the portal does to ``fields`` on ``crm.<entity>.add`` / ``update``, silently.

As Bitrix24's old-API REST layer does, without an error: a name that is not in the entity's schema is
dropped (also a misspelt ``UF_CRM_*``), read-only fields are dropped, immutable ones (``CATEGORY_ID``) too on
update, a date it cannot parse is dropped; an array sent to a single-value user field keeps its first
element, one sent to a standard field becomes PHP's cast of an array (1, or the text "Array").
Invalid currencies and non-numbers in numeric fields are the few things that answer 400, as on a portal.
Multi-fields (PHONE, EMAIL) merge entry by entry: an entry with an ``ID`` but no ``VALUE`` deletes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .errors import bad_request
from .php import php_int
from .schema import DATE_TYPES, NUMERIC_TYPES, EntityFields, Field

_RU_DATE = re.compile(r"^(\d{2})\.(\d{2})\.(\d{4})$")
DROP = object()  # marker: the portal silently ignores this value


def wire(value: Any) -> Any:
    """Python value -> the string form the portal returns."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, list | tuple):
        return [wire(v) for v in value]
    if isinstance(value, dict):
        return {str(k): wire(v) for k, v in value.items()}
    return str(value)


def number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def _date(spec: Field, raw: Any) -> Any:
    """ISO 8601 (or the site format dd.mm.yyyy) -> stored; anything else is dropped; "" clears."""
    text = str(raw).strip()
    if text == "":
        return None
    match = _RU_DATE.match(text)
    try:
        if match:
            parsed = datetime(int(match[3]), int(match[2]), int(match[1]))
        else:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return DROP
    if spec.type == "date":
        return parsed.date().isoformat()
    return parsed.isoformat(timespec="seconds")


ID_TYPES = frozenset({"integer", "user", "crm_company", "crm_contact", "crm_lead", "crm_deal"})


def _cast_list(spec: Field, raw: list[Any] | tuple[Any, ...] | dict[str, Any], *, user_field: bool) -> Any:
    """A list or object sent to a single-value field: an id-like standard field gets PHP's ``(int)`` of it
    (1 when non-empty); a user field keeps a list's first element; another standard field gets the cast of
    an array, the text "Array"; a date is dropped."""
    if not user_field and spec.type in ID_TYPES:
        return str(php_int(raw))
    if isinstance(raw, dict):
        return raw
    if user_field or not raw:
        return raw[0] if raw else None
    if spec.type in DATE_TYPES:
        return DROP
    return 1 if spec.type in NUMERIC_TYPES else "Array"


def coerce(spec: Field, raw: Any, currencies: list[str], *, user_field: bool = False) -> Any:
    """One value as the portal stores it, ``DROP`` if it silently ignores it; ApiError for the few 400s."""
    if not spec.multiple and isinstance(raw, list | tuple | dict):
        raw = _cast_list(spec, raw, user_field=user_field)
        if raw is DROP:
            return DROP
    if raw in (None, ""):
        return None
    if spec.type in DATE_TYPES:
        return [_date(spec, v) for v in raw] if isinstance(raw, list) else _date(spec, raw)
    if spec.type == "crm_currency":
        if str(raw) not in currencies:
            raise bad_request(f'Invalid value for the "{spec.title}" field')
        return str(raw)
    if spec.type in ("double", "integer"):
        value = number(raw)
        if value is None:
            raise bad_request(f'Invalid value for the "{spec.title}" field')
        return f"{value:.2f}" if spec.type == "double" else str(int(value))
    return wire(raw)


def clean(
    known: EntityFields, fields: dict[str, Any], *, updating: bool, currencies: list[str]
) -> dict[str, Any]:
    """The values that reach the row; multi-field entries stay raw for ``merge_multifield``."""
    out: dict[str, Any] = {}
    for raw_name, raw in fields.items():
        name = str(raw_name).upper()
        spec = known.get(name)
        if spec is None or spec.read_only or (updating and spec.immutable):
            continue  # the portal silently ignores unknown, read-only and (on update) immutable fields
        if spec.type == "crm_multifield":
            out[name] = raw
            continue
        value = coerce(spec, raw, currencies, user_field=name.startswith("UF_"))
        if isinstance(value, list):
            value = [v for v in value if v is not DROP]
        if value is not DROP:
            out[name] = value
    return out


def _entries(raw: Any) -> list[dict[str, Any]]:
    if isinstance(raw, dict):
        raw = list(raw.values())
    if not isinstance(raw, list):
        return []  # a string where entries belong: no error, nothing saved
    return [e for e in raw if isinstance(e, dict)]


def merge_multifield(
    old: list[dict[str, Any]] | None, raw: Any, type_id: str, next_id: Callable[[], int]
) -> list[dict[str, Any]]:
    """Apply add / change / delete entries; entries not mentioned are left untouched."""
    rows = [dict(r) for r in old or []]
    for entry in _entries(raw):
        ident = str(entry.get("ID") or "").strip()
        value = entry.get("VALUE")
        value_type = str(entry.get("VALUE_TYPE") or "WORK")
        if ident:
            match = next((r for r in rows if r["ID"] == ident), None)
            if match is None:
                continue
            if value in (None, "") or str(entry.get("DELETE", "")).upper() == "Y":
                rows.remove(match)  # an ID without a VALUE deletes the entry
            else:
                match.update(VALUE=str(value), VALUE_TYPE=value_type)
        elif value not in (None, ""):
            new = {"ID": str(next_id()), "VALUE_TYPE": value_type, "VALUE": str(value), "TYPE_ID": type_id}
            rows.append(new)
    return rows
