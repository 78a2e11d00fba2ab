"""Start-up configuration of the emulator; limits and faults can be changed later via ``/_emulator/``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .faults import FaultConfig


class SmartProcessType(BaseModel):
    """A smart-process type as ``crm.type.list`` shows it; ``id`` (the type's own id) is not the
    ``entityTypeId`` items are addressed with."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: int = Field(ge=1)
    entity_type_id: int = Field(alias="entityTypeId")
    title: str = Field(min_length=1)
    code: str = ""
    products: bool = Field(default=True, alias="isLinkWithProductsEnabled")
    categories: bool = Field(default=True, alias="isCategoriesEnabled")

    @field_validator("entity_type_id")
    @classmethod
    def _in_range(cls, value: int) -> int:
        if not (128 <= value <= 192 or (value >= 1030 and value % 2 == 0)):
            raise ValueError("entityTypeId is out of allowed range (128..192, or an even number >= 1030)")
        return value


def _default_types() -> list[SmartProcessType]:
    return [SmartProcessType(id=1, entity_type_id=128, title="Delivery")]


class EmulatorConfig(BaseModel):
    """Portal identity, limits (defaults are the non-Enterprise cloud plan) and faults.

    ``processing_s`` maps a method name (or a glob such as ``crm.deal.*``) to the simulated seconds each
    call of it takes; that time feeds the per-method operating budget and ``time.processing``, without
    actually sleeping (use ``faults.latency`` for real delay). ``smart_process_types`` are the smart
    processes the portal starts with (``crm.type.add`` adds more).
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
    smart_process_types: list[SmartProcessType] = Field(default_factory=_default_types)


class LimitsUpdate(BaseModel):
    """Body of ``POST /_emulator/limits``: only the given fields change."""

    model_config = ConfigDict(extra="forbid")

    burst: int | None = Field(default=None, ge=1)
    drain_per_s: float | None = Field(default=None, gt=0)
    operating_limit_s: float | None = Field(default=None, gt=0)
    operating_window_s: float | None = Field(default=None, gt=0)
    processing_s: dict[str, float] | None = None
    limits_enabled: bool | None = None
