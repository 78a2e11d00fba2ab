"""What ``bitrix-worker fields`` and ``bitrix-worker check`` do, below the thin typer commands.

``fields`` shows the schema the workers validate with: the shared cached copy, or one fetched now (through
the shared limiter, then cached for everyone). ``check`` validates one operation payload without sending it,
against that schema or against a file written by ``fields --json`` (so a producer's CI needs no portal).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from .bitrix.schemas import fetch_schema
from .calls import fields_for
from .config import Settings
from .errors import PoisonMessage
from .operations import Operation, decode_payload
from .redis.connection import redis_connection
from .redis.limits import Limiter
from .redis.schemas import SchemaCache
from .schema import EntitySchema
from .spelling import respell
from .validation import Finding, validate

VALUES_SHOWN = 8


class BadInput(ValueError):
    """A payload or schema file that cannot be used: exit 2, one line."""


async def cached_schema(
    settings: Settings, entity: str, *, refresh: bool = False, portal: str | None = None
) -> EntitySchema:
    """The shared cached schema of ``entity`` (fetched and cached when absent, stale or ``refresh``), of the
    default portal or of the registry portal ``portal`` (through its webhook or OAuth app)."""
    from .portal_access import portal_client

    options = {"connect_timeout_s": settings.connect_timeout_s, "read_timeout_s": settings.read_timeout_s}
    async with (
        redis_connection(settings.redis_url, name="bitrix-worker-cli") as redis,
        portal_client(settings, redis, portal, **options) as (own, client),
    ):
        name = own.portal_name
        limiter = Limiter(
            redis,
            own.keys.limiter(name),
            rate_per_s=own.rate_per_s,
            burst=own.limiter_burst,
            safety=own.rate_safety,
        )
        cache = SchemaCache(redis, own.keys, name, ttl_s=own.schema_ttl_s)
        return await cache.load(
            entity, lambda: fetch_schema(client, entity, acquire=limiter.acquire), refresh=refresh
        )


def read_payload(path: str) -> Operation:
    """One operation payload from a file (``-``: stdin is read by the caller and passed as text)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {path}: {exc}") from None
    return parse_payload(text)


def parse_payload(text: str) -> Operation:
    try:
        return decode_payload(text)
    except PoisonMessage as exc:
        raise BadInput(f"not an operation payload: {exc.reason}") from None


def load_check(text: str | None, path: str, schema_path: str | None) -> tuple[Operation, EntitySchema | None]:
    """The operation (from ``text`` if given, else the file) and the offline schema if one was named."""
    operation = parse_payload(text) if text is not None else read_payload(path)
    entity = operation.entity.value
    return operation, read_schema_file(schema_path, entity) if schema_path else None


def read_schema_file(path: str, entity: str) -> EntitySchema:
    try:
        schema = EntitySchema.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BadInput(
            f"--schema {path}: {exc} (write one with: bitrix-worker fields {entity} --json)"
        ) from None
    if schema.entity != entity:
        raise BadInput(f"--schema {path} is the schema of {schema.entity}, the payload is a {entity}")
    return schema


@dataclass(frozen=True, slots=True)
class CheckResult:
    operation: Operation
    findings: list[Finding]

    def lines(self) -> list[str]:
        """One line per finding, whatever the message holds."""
        return [f"{f.kind.value} {f.field}: {f.message}".replace("\n", " ") for f in self.findings]

    def as_json(self) -> dict[str, Any]:
        return {
            "op": self.operation.op.value,
            "entity": self.operation.entity.value,
            "key": self.operation.key,
            "valid": not self.findings,
            "findings": [f.as_json() for f in self.findings],
        }


def check(operation: Operation, schema: EntitySchema, category_id: int | None = None) -> CheckResult:
    """As the worker screens it: crm.item.* entities with the fields as sent (camelCase), findings named
    as the payload spells them."""
    spec = operation.entity.spec
    sent = fields_for(spec, operation.fields)
    found = validate(operation.op.value, sent, schema, category_id=category_id)
    return CheckResult(operation, respell(found, spec, operation.fields))


def check_report(
    operation: Operation, schema: EntitySchema, category_id: int | None, *, as_json: bool
) -> tuple[str, str, int]:
    """(stdout text, stderr note, exit code): 0 valid, 1 findings."""
    result = check(operation, schema, category_id)
    text = (
        json.dumps(result.as_json(), indent=2) + "\n"
        if as_json
        else "".join(f"{x}\n" for x in result.lines())
    )
    note = (
        ""
        if result.findings or as_json
        else f"valid: {operation.op.value} {operation.entity.value} {operation.key}"
    )
    return text, note, 1 if result.findings else 0


def _values(schema: EntitySchema, name: str) -> str:
    spec = schema.fields[name]
    if spec.items:
        shown = [f"{i}={v}" for i, v in spec.items]
    elif spec.status_type is not None:
        shown = [s for lst in schema.status_lists(spec, None) for s in schema.statuses.get(lst, {})]
    elif spec.type == "crm_currency":
        shown = list(schema.currencies)
    elif spec.type == "crm_category":
        shown = [f"{i}={n}" for i, n in schema.categories.items()]
    else:
        return ""
    return ", ".join(shown[:VALUES_SHOWN]) + (f", … ({len(shown)})" if len(shown) > VALUES_SHOWN else "")


def schema_table(schema: EntitySchema) -> Table:
    table = Table(box=None, title=f"{schema.entity} fields")
    for column in ("field", "type", "label"):
        table.add_column(column, no_wrap=True)
    for column in ("flags", "values"):
        table.add_column(column)  # these wrap, so a narrow terminal still shows every field on one line
    for name, spec in schema.fields.items():
        flags = [
            flag
            for flag, on in (
                ("required", spec.required),
                ("read-only", spec.read_only),
                ("immutable", spec.immutable),
                ("multiple", spec.multiple),
                ("deprecated", spec.deprecated),
            )
            if on
        ]
        cells = (name, spec.type, spec.label, " ".join(flags), _values(schema, name))
        table.add_row(*(Text(c) for c in cells))  # labels come from the portal: never rich markup
    return table
