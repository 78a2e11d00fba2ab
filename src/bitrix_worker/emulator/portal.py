"""One emulated portal: the store, both limits, the faults and the call statistics, without any HTTP.

``call`` runs one method the way the REST module does: operating-time check first (429 without running),
then the method, then its simulated processing time is charged to that method. ``batch`` runs sub-commands
through the same path, so each nested command is charged to its own method (current docs: "Nested calls
are executed as separate methods"); the outer ``batch`` is not charged (docs: "An external call to
``batch`` is not accounted for in ``operating``") and counts once for the leaky bucket (app.py). A
command's parameters may refer to earlier results (``$result[name][field]``, substitution.py).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import partial
from typing import Any

from ..bitrix.querystring import parse_query
from .config import EmulatorConfig, LimitsUpdate
from .errors import (
    ApiError,
    batch_length_exceeded,
    batch_method_not_allowed,
    method_not_found,
    operation_time_limit,
)
from .faults import COMMIT_THEN_ANSWER, TRANSPORT_KINDS, FaultEngine, fault_error
from .items import ItemStore
from .limits import LeakyBucket, OperatingBudget
from .oauth import OAuthServer
from .rows import ProductRows
from .store import ENTITIES, CrmStore, Result, portal_time
from .substitution import substitute

BATCH_MAX = 50
_CATALOG = {
    "crm.category.list": "category_list",
    "crm.status.list": "status_list",
    "crm.status.entity.items": "status_entity_items",
    "crm.currency.list": "currency_list",
}
Handler = Callable[[dict[str, Any]], Result]


def truthy(value: Any) -> bool:
    """PHP ``(bool)`` as the batch reads ``halt``: only ``""`` and ``"0"`` are false among strings, so a
    form-encoded ``halt=false`` *halts* (send 0/1 or a JSON boolean)."""
    if isinstance(value, str):
        return value not in ("", "0")
    return bool(value)


def php_section(items: dict[str, Any]) -> Any:
    """PHP ``json_encode`` of an array: ``[]`` when empty, a list for keys 0..n-1, else an object."""
    if not items:
        return []
    if all(k == str(i) for i, k in enumerate(items)):
        return list(items.values())
    return items


READ_SUFFIXES = (".fields", ".list", ".get", ".items")


def _reads_only(spec: str) -> bool:
    return spec.partition("?")[0].strip().lower().removesuffix(".json").endswith(READ_SUFFIXES)


@dataclass(slots=True)
class Stats:
    requests: int = 0
    calls: dict[str, dict[str, int]] = field(default_factory=dict)
    batch_sizes: dict[int, int] = field(default_factory=dict)  # commands per executed batch -> batches
    read_batches: int = 0  # batches whose every command only reads (a field schema, lists, a lookup)
    read_batch_commands: int = 0  # the commands in those

    def count(self, method: str, outcome: str) -> None:
        per = self.calls.get(method)
        if per is None:
            per = self.calls[method] = {}
        per[outcome] = per.get(outcome, 0) + 1


@dataclass(slots=True)
class BatchRun:
    body: dict[str, Any]
    fault: str | None = None  # a transport fault raised by a sub-command, applied to the whole request


class Portal:
    def __init__(self, config: EmulatorConfig, clock: Callable[[], float] = time.time) -> None:
        self.initial = config
        self.user_id = str(config.user_id)
        self.clock = clock
        self._stop: asyncio.Event | None = None
        self.store = CrmStore(config.user_id, config.crm_schema)
        self.handlers: dict[str, Handler] = {"profile": self._profile}
        for method, name in _CATALOG.items():
            self.handlers[method] = partial(self._catalog, name)
        for entity in ENTITIES:
            for op in ("add", "update", "get", "list", "delete"):
                self.handlers[f"crm.{entity}.{op}"] = partial(getattr(self.store, op), entity)
            self.handlers[f"crm.{entity}.fields"] = partial(self._fields, entity)
        self.items = ItemStore(self.store, config.smart_process_types)
        self.rows = ProductRows(self.items)
        self.handlers.update(self.items.handlers())
        self.handlers.update(self.rows.handlers())
        self.stats = Stats()
        self.bucket = LeakyBucket(config.burst, config.drain_per_s, per_second=config.drain_per_second)
        self.budget = OperatingBudget(config.operating_limit_s, config.operating_window_s)
        self.limits_enabled = config.limits_enabled
        self.processing_s: dict[str, float] = {}
        self._processing_cache: dict[str, float] = {}
        self.faults = FaultEngine(config.faults, config.seed, clock())
        # tokens survive ``reset``: clients holding them would otherwise all fail at once
        self.oauth = OAuthServer(config.oauth, clock) if config.oauth is not None else None
        self.reset(keep_faults=True, keep_limits=False)

    def stopping(self) -> asyncio.Event:
        """Set when the server shuts down, so hanging fault requests end at once (call in the loop)."""
        if self._stop is None:
            self._stop = asyncio.Event()
        return self._stop

    def release_hangs(self) -> None:
        self.stopping().set()

    # -- admin ----------------------------------------------------------------------------------------

    def reset(self, *, keep_faults: bool, keep_limits: bool) -> None:
        """Back to the start-up state: empty store (IDs from 1), zero stats and limit counters."""
        self.store.reset()
        self.items.reset()
        self.rows.reset()
        self.stats = Stats()
        self.bucket.reset()
        self.budget.reset()
        if not keep_limits:
            cfg = self.initial
            self.set_limits(
                LimitsUpdate(
                    burst=cfg.burst,
                    drain_per_s=cfg.drain_per_s,
                    drain_per_second=cfg.drain_per_second,
                    operating_limit_s=cfg.operating_limit_s,
                    operating_window_s=cfg.operating_window_s,
                    processing_s=cfg.processing_s,
                    limits_enabled=cfg.limits_enabled,
                )
            )
        if not keep_faults:
            self.faults = FaultEngine(self.initial.faults, self.initial.seed, self.clock())

    def set_limits(self, update: LimitsUpdate) -> dict[str, Any]:
        if update.burst is not None:
            self.bucket.burst = update.burst
        if update.drain_per_s is not None:
            self.bucket.drain_per_s = update.drain_per_s
        if update.drain_per_second is not None:
            self.bucket.current(self.clock())  # settle the drain so far under the old mode
            self.bucket.per_second = update.drain_per_second
        if update.operating_limit_s is not None:
            self.budget.limit_s = update.operating_limit_s
        if update.operating_window_s is not None and update.operating_window_s != self.budget.window_s:
            self.budget.window_s = update.operating_window_s
            self.budget.reset()  # baskets of another width cannot be carried over
        if update.processing_s is not None:
            self.processing_s = dict(update.processing_s)
            self._processing_cache = {}
        if update.limits_enabled is not None:
            self.limits_enabled = update.limits_enabled
        return self.limits()

    def limits(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "burst": self.bucket.burst,
            "drain_per_s": self.bucket.drain_per_s,
            "drain_per_second": self.bucket.per_second,
            "bucket_level": round(self.bucket.current(now), 3),
            "operating_limit_s": self.budget.limit_s,
            "operating_window_s": self.budget.window_s,
            "processing_s": dict(self.processing_s),
            "limits_enabled": self.limits_enabled,
        }

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "requests": self.stats.requests,
            "calls": {m: dict(c) for m, c in self.stats.calls.items()},
            "batch_sizes": {str(k): v for k, v in sorted(self.stats.batch_sizes.items())},
            "read_batches": self.stats.read_batches,
            "read_batch_commands": self.stats.read_batch_commands,
            "faults_injected": dict(self.faults.injected),
            "entities": {e: len(t.rows) for e, t in self.store.tables.items()},
            "items": {str(etid): len(t.rows) for etid, t in self.items.tables.items()},
            "product_rows": len(self.rows.table.rows),
            "limits": self.limits(),
            "operating": {m: self.budget.operating(m, now) for m in self.budget.methods()},
        }

    # -- calls ----------------------------------------------------------------------------------------

    def _profile(self, params: dict[str, Any]) -> Result:
        return Result({"ID": str(self.initial.user_id), "ADMIN": True, "NAME": "Emulator", "LAST_NAME": ""})

    def _fields(self, entity: str, params: dict[str, Any]) -> Result:
        return self.store.fields(entity)

    def _catalog(self, name: str, params: dict[str, Any]) -> Result:
        """Pipelines, status lists and currencies: read from the schema current at call time."""
        return Result(getattr(self.store.schema, name)(params))

    def processing(self, method: str) -> float:
        """Simulated seconds one call of ``method`` takes (exact name first, then globs)."""
        cached = self._processing_cache.get(method)
        if cached is None:
            cached = self.processing_s.get(method)
            if cached is None:
                cached = next((s for p, s in self.processing_s.items() if fnmatchcase(method, p)), 0.0)
            self._processing_cache[method] = cached
        return cached

    def time_block(self, method: str, start: float, processing: float) -> dict[str, Any]:
        finish = self.clock()
        return {
            "start": start,
            "finish": finish,
            "duration": finish - start,
            "processing": processing,
            "date_start": portal_time(start),
            "date_finish": portal_time(finish),
            "operating": round(self.budget.operating(method, finish), 6),
            "operating_reset_at": math.ceil(self.budget.reset_at(method, finish)),
        }

    def call(self, method: str, params: dict[str, Any]) -> tuple[Result, float]:
        """Run one method (not ``batch``); returns the result and the processing time to report."""
        handler = self.handlers.get(method)
        if handler is None:
            raise method_not_found()
        now = self.clock()
        if self.limits_enabled and self.budget.blocked(method, now):
            raise operation_time_limit()
        simulated = self.processing(method)
        started = time.perf_counter()
        try:
            result = handler(params)
        finally:
            if self.limits_enabled:
                self.budget.record(method, simulated, now)
        return result, simulated or (time.perf_counter() - started)

    def _command(
        self, n: int, method: str, query: str, sections: dict[str, dict[str, Any]]
    ) -> tuple[str | None, Result, float]:
        """One batch sub-command: (transport fault to apply to the whole request, result, processing)."""
        if n >= BATCH_MAX:
            raise batch_length_exceeded()
        if method == "batch":
            raise batch_method_not_allowed()
        if method not in self.handlers:
            raise method_not_found()
        fault = self.faults.pick(method, command=True)
        if fault is not None and fault in TRANSPORT_KINDS and fault not in COMMIT_THEN_ANSWER:
            self.stats.count(method, f"FAULT_{fault.upper()}")
            return fault, Result(None), 0.0
        if fault is not None and fault not in TRANSPORT_KINDS and fault != "500_after_commit":
            raise fault_error(fault)
        params = parse_query(query)
        if "$" in query or "%24" in query:  # only a command with a reference needs the walk
            params = substitute(params, sections)
        res, processing = self.call(method, params)
        if fault == "500_after_commit":
            raise fault_error("500")
        # timeout_commit, trickle, huge: the portal finishes the whole batch, then the answer goes wrong
        return fault, res, processing

    def batch(self, params: dict[str, Any]) -> BatchRun:
        """Run a ``batch``: sections as the portal returns them; stops at the first error with ``halt``."""
        raw = params.get("cmd")
        commands = (
            [(str(k), v) for k, v in raw.items()]
            if isinstance(raw, dict)
            else [(str(i), v) for i, v in enumerate(raw)]
            if isinstance(raw, list)
            else []
        )
        halt = truthy(params.get("halt", False))
        self.stats.batch_sizes[len(commands)] = self.stats.batch_sizes.get(len(commands), 0) + 1
        if commands and all(isinstance(c, str) and _reads_only(c) for _, c in commands):
            self.stats.read_batches += 1
            self.stats.read_batch_commands += len(commands)
        result: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        totals: dict[str, Any] = {}
        nexts: dict[str, Any] = {}
        times: dict[str, Any] = {}
        escalated: str | None = None
        sections = {"result": result, "next": nexts, "total": totals, "time": times, "error": errors}
        for n, (key, spec) in enumerate(commands):
            if not isinstance(spec, str):
                continue  # e.g. an SDK-style {method, params} object: skipped without result or error
            start = self.clock()
            method, _, query = spec.partition("?")
            method = method.strip().lower().removesuffix(".json")
            try:
                fault, res, processing = self._command(n, method, query, sections)
            except ApiError as exc:
                self.stats.count(method or "?", exc.outcome)
                errors[key] = exc.body()
                if halt:
                    break
                continue
            if fault is not None:
                escalated = fault
                if fault not in COMMIT_THEN_ANSWER:
                    break  # the request dies here: this and later commands never run
            self.stats.count(method, "ok")
            result[key] = res.value
            times[key] = self.time_block(method, start, processing)
            if res.total is not None:
                totals[key] = res.total
            if res.next is not None:
                nexts[key] = res.next
        body = {
            "result": php_section(result),
            "result_error": php_section(errors),
            "result_total": php_section(totals),
            "result_next": php_section(nexts),
            "result_time": php_section(times),
        }
        return BatchRun(body, escalated)
