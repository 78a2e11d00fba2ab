"""Start-up configuration of the emulator; limits and faults can be changed later via ``/_emulator/``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .faults import FaultConfig
from .oauth import OAuthConfig
from .schema import CURRENCIES

FieldType = Literal[
    "string", "integer", "double", "boolean", "date", "datetime", "enumeration", "money", "url", "address",
    "employee", "crm", "crm_status", "file", "iblock_element", "iblock_section",
]  # fmt: skip


class UserFieldConfig(BaseModel):
    """One user field (``UF_CRM_*``) of an entity; ``items`` are the list values of an enumeration,
    given as labels (IDs are assigned from 1000 up) or as ``{"ID": ..., "VALUE": ...}``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^UF_CRM_[A-Z0-9_]+$", max_length=50)
    type: FieldType = "string"
    label: str = ""
    multiple: bool = False
    required: bool = False
    items: list[str | dict[str, str]] = Field(default_factory=list)
    status_type: str | None = None  # crm_status user fields: which status list


class PipelineConfig(BaseModel):
    """An extra deal pipeline (category ``id`` > 0); its stage ids get the ``C<id>:`` prefix."""

    model_config = ConfigDict(extra="forbid")

    id: int = Field(ge=1)
    name: str = Field(min_length=1)
    stages: list[str] = Field(default_factory=lambda: ["NEW", "WORK", "WON", "LOSE"], min_length=1)


class SchemaConfig(BaseModel):
    """Per-portal field schema on top of the built-in standard fields."""

    model_config = ConfigDict(extra="forbid")

    user_fields: dict[Literal["deal", "contact", "company", "lead"], list[UserFieldConfig]] = Field(
        default_factory=dict
    )
    required: dict[Literal["deal", "contact", "company", "lead"], list[str]] = Field(default_factory=dict)
    pipelines: list[PipelineConfig] = Field(default_factory=list)
    currencies: list[str] = Field(default_factory=lambda: list(CURRENCIES), min_length=1)


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
    # what ``crm.item.fields`` / ``crm.category.list`` answer for it (emulator/itemschema.py)
    pipelines: dict[int, str] = Field(default_factory=lambda: {0: "General"}, min_length=1)
    user_fields: list[UserFieldConfig] = Field(default_factory=list)  # UF_CRM_<id>_... names
    required: list[str] = Field(default_factory=list)  # camelCase names made required

    @field_validator("entity_type_id")
    @classmethod
    def _in_range(cls, value: int) -> int:
        if not (128 <= value <= 192 or (value >= 1030 and value % 2 == 0)):
            raise ValueError("entityTypeId is out of allowed range (128..192, or an even number >= 1030)")
        return value


def _default_types() -> list[SmartProcessType]:
    return [SmartProcessType(id=1, entity_type_id=128, title="Delivery")]


class EmulatorConfig(BaseModel):
    """Portal identity, limits (defaults are the non-Enterprise cloud plan), faults and field schema.

    ``processing_s`` maps a method name (or a glob such as ``crm.deal.*``) to the simulated seconds each
    call of it takes; that time feeds the per-method operating budget and ``time.processing``, without
    actually sleeping (use ``faults.latency`` for real delay). ``smart_process_types`` are the smart
    processes the portal starts with (``crm.type.add`` adds more). With ``oauth`` the portal also answers
    calls of an OAuth application (``emulator/oauth.py``); the webhook keeps working beside it.
    """

    model_config = ConfigDict(extra="forbid")

    user_id: int = Field(default=1, ge=1)
    secret: str = Field(default="emulator-secret", min_length=1)
    burst: int = Field(default=50, ge=1)
    drain_per_s: float = Field(default=2.0, gt=0)
    drain_per_second: bool = False  # drain in whole-second steps (limits.LeakyBucket.per_second)
    operating_limit_s: float = Field(default=480.0, gt=0)
    operating_window_s: float = Field(default=600.0, gt=0)
    processing_s: dict[str, float] = Field(default_factory=dict)
    faults: FaultConfig = Field(default_factory=FaultConfig)
    seed: int | None = None
    limits_enabled: bool = True
    crm_schema: SchemaConfig = Field(default_factory=SchemaConfig)
    smart_process_types: list[SmartProcessType] = Field(default_factory=_default_types)
    oauth: OAuthConfig | None = None  # also serve an OAuth application: /rest/<method>?auth=, /oauth/token/


class LimitsUpdate(BaseModel):
    """Body of ``POST /_emulator/limits``: only the given fields change."""

    model_config = ConfigDict(extra="forbid")

    burst: int | None = Field(default=None, ge=1)
    drain_per_s: float | None = Field(default=None, gt=0)
    drain_per_second: bool | None = None
    operating_limit_s: float | None = Field(default=None, gt=0)
    operating_window_s: float | None = Field(default=None, gt=0)
    processing_s: dict[str, float] | None = None
    limits_enabled: bool | None = None
