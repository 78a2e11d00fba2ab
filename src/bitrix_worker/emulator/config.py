"""Start-up configuration of the emulator; limits and faults can be changed later via ``/_emulator/``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .faults import FaultConfig


class EmulatorConfig(BaseModel):
    """Portal identity, limits (defaults are the non-Enterprise cloud plan) and faults.

    ``processing_s`` maps a method name (or a glob such as ``crm.deal.*``) to the simulated seconds each
    call of it takes; that time feeds the per-method operating budget and ``time.processing``, without
    actually sleeping (use ``faults.latency`` for real delay).
    """

    model_config = ConfigDict(extra="forbid")

    user_id: int = Field(default=1, ge=1)
    secret: str = Field(default="emulator-secret", min_length=1)
    burst: int = Field(default=50, ge=1)
    drain_per_s: float = Field(default=2.0, gt=0)
    operating_limit_s: float = Field(default=480.0, gt=0)
    operating_window_s: float = Field(default=600.0, gt=0)
    processing_s: dict[str, float] = Field(default_factory=dict)
    faults: FaultConfig = Field(default_factory=FaultConfig)
    seed: int | None = None
    limits_enabled: bool = True


class LimitsUpdate(BaseModel):
    """Body of ``POST /_emulator/limits``: only the given fields change."""

    model_config = ConfigDict(extra="forbid")

    burst: int | None = Field(default=None, ge=1)
    drain_per_s: float | None = Field(default=None, gt=0)
    operating_limit_s: float | None = Field(default=None, gt=0)
    operating_window_s: float | None = Field(default=None, gt=0)
    processing_s: dict[str, float] | None = None
    limits_enabled: bool | None = None
