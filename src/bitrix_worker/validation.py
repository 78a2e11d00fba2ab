"""Check one operation's fields against the portal's own schema before any call: pure, no I/O.

Bitrix24 answers "success" for data it then throws away (unknown or misspelt names, read-only fields,
``CATEGORY_ID`` on update, dates it cannot parse, arrays sent to single fields) and does not check list
values. ``validate`` finds all of that up front, so an operation that would lose data can be refused after
0 calls, with the exact field, the value and what was expected. What happens to each kind of finding
(reject, warn, drop) is the caller's choice (``decide``, settings ``BITRIX_WORKER_ON_<KIND>``).

Rules by operation kind: ``create`` checks required fields; ``update`` checks immutable fields;
``upsert`` that is not yet resolved to one of them checks neither (both depend on whether the entity
exists); ``delete`` carries no fields.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .fieldtypes import Accept, Context, Problem, check_for, is_ref, quick_accept
from .schema import EntitySchema, FieldSchema

VALUE_REPR_MAX = 80
_MULTI_KEYS = frozenset({"ID", "VALUE", "VALUE_TYPE", "DELETE", "TYPE_ID"})
VALUE_TYPES: dict[str, frozenset[str]] = {
    "PHONE": frozenset({"WORK", "MOBILE", "FAX", "HOME", "PAGER", "MAILING", "OTHER"}),
    "EMAIL": frozenset({"WORK", "HOME", "MAILING", "OTHER"}),
    "WEB": frozenset({"WORK", "HOME", "VK", "LIVEJOURNAL", "TWITTER", "OTHER"}),
    "IM": frozenset(
        {"TELEGRAM", "VK", "SKYPE", "VIBER", "BITRIX24", "OPENLINE", "IMOL", "ICQ", "MSN", "JABBER", "OTHER"}
    ),
}
_POSITIVE = re.compile(r"^[1-9]\d*$")
_ENTRY_SHAPE = 'a list of {"VALUE": ..., "VALUE_TYPE": ...} (new) or {"ID": ..., "VALUE": ...} (change)'


class FindingKind(StrEnum):
    UNKNOWN_FIELD = "unknown_field"  # no such field on the portal: it would be dropped silently
    READ_ONLY = "read_only"  # the portal ignores writes to it
    IMMUTABLE = "immutable"  # settable on create only (CATEGORY_ID): ignored on update
    REQUIRED_MISSING = "required_missing"  # required on create, or cleared on update
    WRONG_TYPE = "wrong_type"  # a value of the wrong shape or format for the field's type
    NOT_IN_LIST = "not_in_list"  # well-formed but not a list item / status / stage / currency / pipeline
    NOT_MULTIPLE = "not_multiple"  # several values for a single-value field: the portal keeps the first
    MULTIFIELD_DELETE = "multifield_delete"  # PHONE/EMAIL entry with ID but no VALUE: deletes that entry


SCHEMA_UNAVAILABLE = "schema_unavailable"  # metric kind: no schema could be had, sent unvalidated


class FindingAction(StrEnum):
    REJECT = "reject"  # dead-letter the operation as invalid_data, 0 calls
    WARN = "warn"  # send as is; log and count
    DROP = "drop"  # send without the field; recorded in the outcome


DEFAULT_ACTIONS: Mapping[FindingKind, FindingAction] = {
    FindingKind.UNKNOWN_FIELD: FindingAction.REJECT,
    FindingKind.READ_ONLY: FindingAction.REJECT,
    FindingKind.IMMUTABLE: FindingAction.REJECT,
    FindingKind.REQUIRED_MISSING: FindingAction.WARN,
    FindingKind.WRONG_TYPE: FindingAction.REJECT,
    FindingKind.NOT_IN_LIST: FindingAction.REJECT,
    FindingKind.NOT_MULTIPLE: FindingAction.REJECT,
    FindingKind.MULTIFIELD_DELETE: FindingAction.REJECT,
}


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= VALUE_REPR_MAX else text[: VALUE_REPR_MAX - 3] + "..."


@dataclass(frozen=True, slots=True)
class Finding:
    kind: FindingKind
    field: str
    value: str  # repr of the offending value, truncated
    expected: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {
            "kind": self.kind.value,
            "field": self.field,
            "value": self.value,
            "expected": self.expected,
            "message": self.message,
        }


def _finding(kind: FindingKind, name: str, value: Any, expected: str, message: str) -> Finding:
    return Finding(kind, name, short_repr(value), expected, message)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one operation's findings under the configured actions."""

    reject: tuple[Finding, ...] = ()
    warn: tuple[Finding, ...] = ()
    drop: tuple[Finding, ...] = ()
    drop_fields: frozenset[str] = field(default_factory=frozenset)

    def apply(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The fields to send when nothing is rejected: dropped ones removed."""
        return {k: v for k, v in fields.items() if k not in self.drop_fields}


CLEAN = Decision()
"""The decision on an operation without findings (immutable, shared: most operations have none)."""


def decide(findings: Iterable[Finding], actions: Mapping[FindingKind, FindingAction]) -> Decision:
    reject: list[Finding] = []
    warn: list[Finding] = []
    drop: list[Finding] = []
    for finding in findings:
        action = actions.get(finding.kind, DEFAULT_ACTIONS[finding.kind])
        {FindingAction.REJECT: reject, FindingAction.WARN: warn, FindingAction.DROP: drop}[action].append(
            finding
        )
    return Decision(tuple(reject), tuple(warn), tuple(drop), frozenset(f.field for f in drop))


def _unknown(name: str, value: Any, schema: EntitySchema) -> Finding:
    names = list(schema.fields)
    folded = {n.upper().replace("_", ""): n for n in names}  # camelCase and UPPER_CASE alike
    close = difflib.get_close_matches(name.upper().replace("_", ""), list(folded), n=1, cutoff=0.75)
    if close:
        spec = schema.fields[folded[close[0]]]
        expected = f"an existing field, e.g. {spec.name} ({spec.label!r})"
        message = f"{schema.entity} has no field {name}; did you mean {spec.name} ({spec.label!r})?"
    else:
        expected = f"one of the {len(names)} fields of {schema.entity} (bitrix-worker fields {schema.entity})"
        message = f"{schema.entity} has no field {name}: Bitrix24 would drop it silently"
    return _finding(FindingKind.UNKNOWN_FIELD, name, value, expected, message)


def _empty(value: Any, *, php: bool = False) -> bool:
    """No value. ``php``: crm.item.* also turns ``0``, ``"0"`` and ``false`` into null (PHP ``empty``)."""
    if php and (value is False or value == "0" or (type(value) in (int, float) and value == 0)):
        return True
    return value is None or value == "" or (type(value) in (list, dict) and not value)


def _problem_finding(spec: FieldSchema, value: Any, problem: Problem, where: str = "") -> Finding:
    kind = FindingKind.NOT_IN_LIST if problem.not_in_list else FindingKind.WRONG_TYPE
    what = "is not in the list" if problem.not_in_list else f"is not a valid {spec.type}"
    message = f"{spec.name}{where} = {short_repr(value)} {what}: expected {problem.expected}{problem.hint}"
    return _finding(kind, spec.name, value, problem.expected, message)


def _multifield(spec: FieldSchema, value: Any) -> Finding | None:
    """PHONE / EMAIL / WEB / IM: a list (or map) of entries; an ``ID`` without ``VALUE`` deletes."""
    entries = list(value.values()) if isinstance(value, Mapping) else value
    if not isinstance(entries, list):
        return _finding(
            FindingKind.WRONG_TYPE, spec.name, value, _ENTRY_SHAPE,
            f"{spec.name} = {short_repr(value)} is not a list of entries: expected {_ENTRY_SHAPE}",
        )  # fmt: skip
    for n, entry in enumerate(entries):
        where = f"{spec.name}[{n}]"
        if not isinstance(entry, Mapping) or not set(entry) <= _MULTI_KEYS:
            message = f"{where} = {short_repr(entry)}: expected {_ENTRY_SHAPE}"
            return _finding(FindingKind.WRONG_TYPE, spec.name, entry, _ENTRY_SHAPE, message)
        problem = _entry_problem(spec.name, where, entry)
        if problem is not None:
            kind, expected, message = problem
            return _finding(kind, spec.name, entry, expected, message)
    return None


def _entry_problem(name: str, where: str, entry: Mapping[str, Any]) -> tuple[FindingKind, str, str] | None:
    ident, text = entry.get("ID"), entry.get("VALUE")
    deleting = str(entry.get("DELETE", "")).upper() == "Y"
    value_type = entry.get("VALUE_TYPE")
    types = VALUE_TYPES.get(name)
    if ident is not None and (isinstance(ident, bool) or not _POSITIVE.match(str(ident))):
        return (
            FindingKind.WRONG_TYPE,
            "ID: a positive integer",
            f"{where}.ID = {short_repr(ident)}: not an id",
        )
    if ident is not None and _empty(text) and not deleting:
        expected = 'VALUE to change the entry, or "DELETE": "Y" to delete it on purpose'
        message = f"{where} has ID {ident} but no VALUE: Bitrix24 would delete that entry; send {expected}"
        return FindingKind.MULTIFIELD_DELETE, expected, message
    if ident is None and (_empty(text) or deleting):
        return (
            FindingKind.WRONG_TYPE,
            "VALUE for a new entry",
            f"{where} has no VALUE: Bitrix24 would skip it",
        )
    if text is not None and (isinstance(text, bool) or not isinstance(text, str | int)):
        return FindingKind.WRONG_TYPE, "VALUE: text", f"{where}.VALUE = {short_repr(text)}: expected text"
    if value_type is not None and types is not None and value_type not in types:
        expected = f"VALUE_TYPE one of {', '.join(sorted(types))}"
        return (
            FindingKind.NOT_IN_LIST,
            expected,
            f"{where}.VALUE_TYPE = {short_repr(value_type)}: expected {expected}",
        )
    return None


_SCALARS = (str, int, float, bool)


def _check_value(spec: FieldSchema, value: Any, ctx: Context) -> Finding | None:
    """One field's value; exact ``type()`` tests first, since payload values are plain JSON types."""
    check = check_for(spec.type)
    if type(value) in _SCALARS and spec.type != "crm_multifield":
        problem = check(value, spec, ctx)
        return None if problem is None else _problem_finding(spec, value, problem)
    if spec.type == "crm_multifield":
        return _multifield(spec, value)
    if isinstance(value, list | tuple):
        if not spec.multiple:
            expected = "a single value, not a list"
            fate = "keep only the first" if spec.user_field else 'store 1 or the text "Array"'
            message = f"{spec.name} takes one value, got a list of {len(value)}: Bitrix24 would {fate}"
            return _finding(FindingKind.NOT_MULTIPLE, spec.name, value, expected, message)
        for n, item in enumerate(value):
            problem = check(item, spec, ctx)
            if problem is not None:
                return _problem_finding(spec, item, problem, f"[{n}]")
        return None
    if isinstance(value, Mapping) and not is_ref(value):
        problem = Problem(f"a {spec.type} value, not an object")
    else:
        problem = check(value, spec, ctx)
    return None if problem is None else _problem_finding(spec, value, problem)


def _category(
    op_kind: str, fields: Mapping[str, Any], category_id: int | None, schema: EntitySchema
) -> int | None:
    """The pipeline whose stages apply: the caller's, else the one the fields name (``CATEGORY_ID``,
    ``categoryId``), else on create the default pipeline; None: unknown (every pipeline's stages)."""
    if category_id is not None:
        return category_id
    raw = fields.get("categoryId" if schema.camel else "CATEGORY_ID")
    if isinstance(raw, int | str) and not isinstance(raw, bool) and str(raw).isdigit():
        return int(raw)
    return schema.default_category if op_kind == "create" else None


def validate(
    op_kind: str,
    fields: Mapping[str, Any],
    schema: EntitySchema,
    *,
    category_id: int | None = None,
    quick: bool = True,
) -> list[Finding]:
    """Every finding for one operation (empty: safe to send). Never raises on any JSON-like input.

    ``quick``: values a per-field quick check accepts skip the full one (``fieldtypes.quick_accept``: same
    verdicts); False checks every value in full (the tests compare the two)."""
    if op_kind == "delete":
        return []
    category = _category(op_kind, fields, category_id, schema)
    accepts = _accepts(schema, op_kind, category) if quick else {}
    ctx: Context | None = None
    findings: list[Finding] = []
    for name, value in fields.items():
        accept = accepts.get(name)
        if accept is not None and accept(value):
            continue
        ctx = ctx or Context(schema, category)
        finding = _field_finding(op_kind, name, value, schema, ctx)
        if finding is not None:
            findings.append(finding)
    if op_kind == "create":
        findings.extend(
            _required(spec, None, clearing=False)
            for spec in schema.fields.values()
            if spec.required and not spec.read_only and spec.name not in fields
        )
    return findings


def _accepts(schema: EntitySchema, op_kind: str, category: int | None) -> Mapping[str, Accept]:
    """The quick checks of the fields a value may be written to, built once per schema and pipeline (a
    pipeline the schema does not know gets none: producers' numbers must not grow the memo)."""
    if category is not None and category not in schema.categories and category != schema.default_category:
        return {}
    update = op_kind == "update"  # the only rule by operation kind a value of a field can meet
    key = ("accepts", update, category)
    found: dict[str, Accept] | None = schema.compiled.get(key)
    if found is None:
        ctx = Context(schema, category)
        found = {}
        for name, spec in schema.fields.items():
            if spec.read_only or (spec.immutable and update):
                continue
            accept = quick_accept(spec, ctx)
            if accept is not None:
                found[name] = accept
        schema.compiled[key] = found
    return found


def _field_finding(op_kind: str, name: str, value: Any, schema: EntitySchema, ctx: Context) -> Finding | None:
    """The full check of one field's value."""
    spec = schema.fields.get(name)
    if spec is None:
        return _unknown(str(name), value, schema)
    if spec.read_only:
        return _finding(
            FindingKind.READ_ONLY,
            name,
            value,
            "no value (the portal sets it)",
            f"{name} ({spec.label!r}) is read-only: Bitrix24 would ignore it",
        )
    if spec.immutable and op_kind == "update":
        return _finding(
            FindingKind.IMMUTABLE,
            name,
            value,
            "no value on update (set it on create)",
            f"{name} ({spec.label!r}) can only be set on create: Bitrix24 ignores it on update",
        )
    if _empty(value, php=schema.camel):
        if spec.required and op_kind in ("create", "update"):
            return _required(spec, value, clearing=True)
        return None
    return _check_value(spec, value, ctx)


def _required(spec: FieldSchema, value: Any, *, clearing: bool) -> Finding:
    verb = "cleared" if clearing else "missing"
    return _finding(
        FindingKind.REQUIRED_MISSING,
        spec.name,
        value,
        f"a {spec.type} value",
        f"{spec.name} ({spec.label!r}) is required but {verb}",
    )
