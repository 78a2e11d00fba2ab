"""Fetch one entity's field schema from the portal: two ``batch`` requests, each through the shared limiter.

The first asks for ``crm.<entity>.fields``, ``crm.currency.list`` and, for deals, ``crm.category.list``
(the pipelines); the second for every status list the fields refer to (``crm.status.entity.items``: deal
stages per pipeline, sources, types, ...). Two requests per entity and refresh, whatever the number of
lists (up to 50 per batch). ``acquire`` is the caller's limiter (``redis.limits.Limiter.acquire``): this
module waits on it before each request and otherwise knows nothing of Redis.

Entities written with ``crm.item.*`` (quotes, smart invoices, smart processes: ``crm.EntitySpec``) ask
``crm.item.fields`` with their ``entityTypeId`` instead and get a schema keyed by camelCase names (what the
worker sends); those with pipelines also ask ``crm.category.list`` and then fetch one stage list per
pipeline (``DYNAMIC_<entityTypeId>_STAGE_<categoryId>``, ``SMART_INVOICE_STAGE_<categoryId>``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..crm import Api, EntitySpec, entity_spec
from ..errors import BitrixError
from ..schema import (
    ITEM_STAGE,
    EntitySchema,
    FieldSchema,
    parse_categories,
    parse_currencies,
    parse_default_category,
    parse_fields,
    parse_statuses,
    status_lists_needed,
)
from ..taxonomy import Classification, ErrorClass, Execution
from ..values import Clock
from .client import BitrixClient
from .methods import MAX_BATCH_COMMANDS, Command

ENTITY_TYPE_IDS = {"lead": 1, "deal": 2, "contact": 3, "company": 4}
SMART_INVOICE_TYPE_ID = 31
Acquire = Callable[[], Awaitable[Any]]


def _unexpected(method: str, problem: str) -> BitrixError:
    return BitrixError.for_classification(
        Classification(
            ErrorClass.SERVER_ERROR, Execution.EXECUTED, description=f"unexpected answer: {problem}"
        ),
        method,
    )


async def _batch(client: BitrixClient, acquire: Acquire, commands: Mapping[str, Command]) -> dict[str, Any]:
    """One batch; a failed command raises its own classified error (a schema is all or nothing)."""
    await acquire()
    result = await client.batch(commands, halt=True)
    for name, command in commands.items():
        if name in result.errors:
            raise BitrixError.for_classification(result.errors[name], command.method)
        if name not in result.results:
            raise _unexpected(command.method, "no result in the batch answer")
    return result.results


def item_stage_list(entity_type_id: int, category_id: int) -> str:
    """The stage list of one pipeline of a smart invoice or smart process (the default one too)."""
    if entity_type_id == SMART_INVOICE_TYPE_ID:
        return f"SMART_INVOICE_STAGE_{category_id}"
    return f"DYNAMIC_{entity_type_id}_STAGE_{category_id}"


def first_commands(spec: EntitySpec) -> dict[str, Command]:
    params = spec.base_params()  # {"entityTypeId": ...} for crm.item.fields, none for crm.<entity>.fields
    first = {
        "fields": Command(spec.method("fields"), params) if params else Command(spec.method("fields")),
        "currencies": Command("crm.currency.list"),
    }
    if spec.category_field is not None:
        first["categories"] = Command("crm.category.list", {"entityTypeId": spec.entity_type_id})
    return first


def _lists(
    spec: EntitySpec, fields: Mapping[str, FieldSchema], categories: Mapping[int, str]
) -> dict[int, str]:
    """crm.item.* entities with pipelines: pipeline -> stage list (empty for the others)."""
    if spec.api is not Api.ITEM or spec.category_field is None or ITEM_STAGE not in fields:
        return {}
    return {c: item_stage_list(spec.entity_type_id, c) for c in categories}


async def fetch_schema(
    client: BitrixClient,
    entity: str,
    *,
    acquire: Acquire,
    clock: Clock = time.time,
    first: Mapping[str, Any] | None = None,
) -> EntitySchema:
    """The schema as the portal describes it now; BitrixError (classified) when any part fails.

    ``first``: the answers to ``first_commands`` when a caller already has them (the start check asks
    them for deals, ``Portal.check``), so that only the status lists are asked here."""
    spec = entity_spec(entity)
    camel = spec.api is Api.ITEM
    answers = first if first is not None else await _batch(client, acquire, first_commands(spec))
    try:
        fields = parse_fields(answers["fields"], camel=camel)
        currencies = parse_currencies(answers["currencies"])
        categories = parse_categories(answers["categories"]) if "categories" in answers else {}
        default = parse_default_category(answers["categories"]) if "categories" in answers else 0
    except ValueError as exc:
        raise _unexpected(spec.method("fields"), str(exc)) from None
    stage_lists = _lists(spec, fields, categories)
    others = {k: v for k, v in fields.items() if not (stage_lists and k == ITEM_STAGE)}
    statuses: dict[str, dict[str, str]] = {}
    lists = [*stage_lists.values(), *status_lists_needed(others, categories if not camel else ())]
    for start in range(0, len(lists), MAX_BATCH_COMMANDS):
        chunk = {f"s{n}": name for n, name in enumerate(lists[start : start + MAX_BATCH_COMMANDS], start)}
        commands = {
            key: Command("crm.status.entity.items", {"entityId": name}) for key, name in chunk.items()
        }
        results = await _batch(client, acquire, commands)
        try:
            statuses.update({name: parse_statuses(results[key]) for key, name in chunk.items()})
        except ValueError as exc:
            raise _unexpected("crm.status.entity.items", str(exc)) from None
    return EntitySchema(entity, fields, statuses, categories, currencies, fetched_at=clock(),
                        stage_lists=stage_lists, default_category=default, camel=camel)  # fmt: skip
