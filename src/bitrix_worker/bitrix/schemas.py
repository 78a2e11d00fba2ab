"""Fetch one entity's field schema from the portal: two ``batch`` requests, each through the shared limiter.

The first asks for ``crm.<entity>.fields``, ``crm.currency.list`` and, for deals, ``crm.category.list``
(the pipelines); the second for every status list the fields refer to (``crm.status.entity.items``: deal
stages per pipeline, sources, types, ...). Two requests per entity and refresh, whatever the number of
lists (up to 50 per batch). ``acquire`` is the caller's limiter (``redis.limits.Limiter.acquire``): this
module waits on it before each request and otherwise knows nothing of Redis.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..errors import BitrixError
from ..schema import (
    EntitySchema,
    parse_categories,
    parse_currencies,
    parse_fields,
    parse_statuses,
    status_lists_needed,
)
from ..taxonomy import Classification, ErrorClass, Execution
from ..values import Clock
from .client import BitrixClient
from .methods import MAX_BATCH_COMMANDS, Command

ENTITY_TYPE_IDS = {"lead": 1, "deal": 2, "contact": 3, "company": 4}
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


async def fetch_schema(
    client: BitrixClient, entity: str, *, acquire: Acquire, clock: Clock = time.time
) -> EntitySchema:
    """The schema as the portal describes it now; BitrixError (classified) when any part fails."""
    first: dict[str, Command] = {
        "fields": Command(f"crm.{entity}.fields"),
        "currencies": Command("crm.currency.list"),
    }
    if entity == "deal":
        first["categories"] = Command("crm.category.list", {"entityTypeId": ENTITY_TYPE_IDS[entity]})
    answers = await _batch(client, acquire, first)
    try:
        fields = parse_fields(answers["fields"])
        currencies = parse_currencies(answers["currencies"])
        categories = parse_categories(answers["categories"]) if "categories" in answers else {}
    except ValueError as exc:
        raise _unexpected(f"crm.{entity}.fields", str(exc)) from None
    statuses: dict[str, dict[str, str]] = {}
    lists = status_lists_needed(fields, categories)
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
    return EntitySchema(entity, fields, statuses, categories, currencies, fetched_at=clock())
