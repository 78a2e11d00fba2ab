"""Fault injection: which call fails how, decided per call from seeded randomness or a scripted sequence.

A rule matches methods by a case-insensitive glob (``crm.deal.*``; ``batch`` is the outer batch request)
and a ``scope``: ``request`` (top-level HTTP calls, incl. the outer batch), ``command`` (batch
sub-commands) or ``any``. Rules are tried in order; the first that fires wins and later rules are not
consulted (so their sequences are not consumed). A ``sequence`` is consumed one element per matching call
(``null``/``"ok"`` = no fault) and the rule goes quiet when it runs out; otherwise ``kind`` fires with
``probability``. ``max_hits`` caps how often a rule fires.

Kinds and what the emulator does (see app.py): ``500`` not executed, JSON INTERNAL_SERVER_ERROR;
``500_after_commit`` executed then 500; ``502``/``504`` not executed, HTML body; ``503`` an HTML page
answered before the leaky bucket counts the request (the portal behind nginx is down); ``timeout`` hangs
``hang_s`` without executing (then 504); ``timeout_commit`` executes, hangs, then answers normally;
``reset`` closes the TCP connection with RST; ``auth``/``overload``/``rate_limit``/``method_limit``/
``not_found``/``invalid`` answer that Bitrix24 error without executing; ``trickle`` executes, then sends
the headers and the answer one byte every ``trickle_interval_s``; ``huge`` executes, then answers a 200 of
``huge_bytes`` (with a ``Content-Length`` when ``huge_declared``). See hostile.py. Like ``timeout_commit``,
these two on a batch sub-command let the whole batch run and then spoil its answer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import ApiError, bad_request, internal_error, invalid_credentials, operation_time_limit, overload
from .errors import query_limit as query_limit_error

FaultKind = Literal[
    "500",
    "500_after_commit",
    "502",
    "503",
    "504",
    "timeout",
    "timeout_commit",
    "reset",
    "auth",
    "overload",
    "rate_limit",
    "method_limit",
    "not_found",
    "invalid",
    "trickle",
    "huge",
]
# Kinds that break the HTTP exchange itself; inside a batch they take the whole batch request down.
TRANSPORT_KINDS = frozenset({"502", "503", "504", "timeout", "timeout_commit", "reset", "trickle", "huge"})
# Transport kinds that let the request run to the end first, then spoil the answer.
COMMIT_THEN_ANSWER = frozenset({"timeout_commit", "trickle", "huge"})
# Refusals at the portal's front door: answered before the leaky bucket counts the request.
FRONT_DOOR_KINDS = frozenset({"auth", "overload", "rate_limit"})


_FAULT_ERRORS: dict[str, Callable[[], ApiError]] = {
    "auth": invalid_credentials,
    "overload": overload,
    "rate_limit": query_limit_error,
    "method_limit": operation_time_limit,
    "not_found": lambda: bad_request("Not found"),
    "invalid": lambda: bad_request('Invalid value for the "Currency" field'),
}


def fault_error(kind: str) -> ApiError:
    """The JSON error a non-transport fault answers with (500 and anything else: INTERNAL_SERVER_ERROR)."""
    return _FAULT_ERRORS.get(kind, internal_error)()


class FaultRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = "*"
    kind: FaultKind | None = None
    probability: float = Field(default=1.0, ge=0, le=1)
    sequence: list[FaultKind | None] | None = None
    scope: Literal["any", "request", "command"] = "any"
    max_hits: int | None = Field(default=None, ge=0)

    @field_validator("sequence", mode="before")
    @classmethod
    def _ok_is_none(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [None if v in ("ok", "") else v for v in value]
        return value

    @model_validator(mode="after")
    def _has_effect(self) -> FaultRule:
        if self.kind is None and self.sequence is None:
            raise ValueError("a fault rule needs `kind` (with `probability`) or `sequence`")
        return self


class Latency(BaseModel):
    """Added delay per request: fixed ``s``, uniform(``min_s``, ``max_s``) or lognormal(median, sigma)."""

    model_config = ConfigDict(extra="forbid")

    dist: Literal["fixed", "uniform", "lognormal"] = "fixed"
    s: float = Field(default=0.0, ge=0)
    min_s: float = Field(default=0.0, ge=0)
    max_s: float = Field(default=0.0, ge=0)
    median_s: float = Field(default=0.05, gt=0)
    sigma: float = Field(default=0.5, ge=0)
    cap_s: float = Field(default=30.0, ge=0)
    method: str = "*"


class AuthOutage(BaseModel):
    """Every REST call answers INVALID_CREDENTIALS from ``start_s`` after it was set, for ``duration_s``
    (``None`` = until switched off). ``true``/``false`` are accepted as on-now / off."""

    model_config = ConfigDict(extra="forbid")

    start_s: float = Field(default=0.0, ge=0)
    duration_s: float | None = Field(default=None, ge=0)


class FaultConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[FaultRule] = Field(default_factory=list)
    latency: Latency | None = None
    auth_outage: AuthOutage | None = None
    hang_s: float = Field(default=30.0, ge=0)
    trickle_interval_s: float = Field(default=2.0, gt=0)
    huge_bytes: int = Field(default=300_000_000, ge=0)
    huge_declared: bool = False

    @field_validator("auth_outage", mode="before")
    @classmethod
    def _toggle(cls, value: Any) -> Any:
        if value is True:
            return AuthOutage()
        if value is False:
            return None
        return value


class FaultEngine:
    """Runtime state of a FaultConfig: sequence positions, hit counts, the outage's absolute window."""

    def __init__(self, config: FaultConfig, seed: int | None, now: float) -> None:
        self.rng = random.Random(seed)  # reproducible chaos, not cryptography
        self.config = FaultConfig()
        self.positions: list[int] = []
        self.hits: list[int] = []
        self.outage: tuple[float, float] | None = None
        self.injected: dict[str, int] = {}
        self.update(config, now, replace=True)

    def update(self, config: FaultConfig, now: float, *, replace: bool = False) -> None:
        """Apply the parts of ``config`` that were given (all of them with ``replace``)."""
        given = config.model_fields_set if not replace else set(FaultConfig.model_fields)
        merged = self.config.model_copy(update={k: getattr(config, k) for k in given})
        if "rules" in given:
            self.positions = [0] * len(merged.rules)
            self.hits = [0] * len(merged.rules)
        if "auth_outage" in given:
            outage = merged.auth_outage
            if outage is None:
                self.outage = None
            else:
                end = math.inf if outage.duration_s is None else now + outage.start_s + outage.duration_s
                self.outage = (now + outage.start_s, end)
        self.config = merged

    def auth_down(self, now: float) -> bool:
        return self.outage is not None and self.outage[0] <= now < self.outage[1]

    def pick(self, method: str, *, command: bool) -> str | None:
        """The fault this call suffers, or None. Consumes sequence steps of the rules it reaches."""
        for i, rule in enumerate(self.config.rules):
            if rule.scope == ("request" if command else "command"):
                continue
            if not fnmatchcase(method, rule.method.lower()):
                continue
            if rule.max_hits is not None and self.hits[i] >= rule.max_hits:
                continue
            kind: str | None
            if rule.sequence is not None:
                if self.positions[i] >= len(rule.sequence):
                    continue
                kind = rule.sequence[self.positions[i]]
                self.positions[i] += 1
            else:
                fires = rule.probability >= 1 or self.rng.random() < rule.probability
                kind = rule.kind if fires else None
            if kind is not None:
                self.hits[i] += 1
                self.injected[kind] = self.injected.get(kind, 0) + 1
                return kind
        return None

    def latency(self, method: str) -> float:
        lat = self.config.latency
        if lat is None or not fnmatchcase(method, lat.method.lower()):
            return 0.0
        if lat.dist == "fixed":
            value = lat.s
        elif lat.dist == "uniform":
            value = self.rng.uniform(lat.min_s, max(lat.min_s, lat.max_s))
        else:
            value = self.rng.lognormvariate(math.log(lat.median_s), lat.sigma)
        return min(value, lat.cap_s)

    def snapshot(self, now: float) -> dict[str, Any]:
        """Current config plus runtime state, for ``GET /_emulator/faults``."""
        data = self.config.model_dump(mode="json")
        data["state"] = {
            "sequence_positions": list(self.positions),
            "hits": list(self.hits),
            "auth_outage_active": self.auth_down(now),
            "injected": dict(self.injected),
        }
        return data
