"""A Bitrix24 portal emulator (Starlette + uvicorn) for tests, benchmarks and the demo.

Faithful to Bitrix24 (docs/errors.md): webhook URLs, crm.<entity>.* shapes and errors, ``batch``, the leaky
bucket (503 QUERY_LIMIT_EXCEEDED), the per-method operating budget (429 OPERATION_TIME_LIMIT), plus
injectable faults and ``/_emulator/`` admin endpoints.
"""

from .admin import EmulatorAdmin
from .app import create_app
from .config import EmulatorConfig, LimitsUpdate
from .faults import AuthOutage, FaultConfig, FaultKind, FaultRule, Latency
from .limits import LeakyBucket, OperatingBudget
from .server import EmulatorServer, serve

__all__ = [
    "AuthOutage",
    "EmulatorAdmin",
    "EmulatorConfig",
    "EmulatorServer",
    "FaultConfig",
    "FaultKind",
    "FaultRule",
    "Latency",
    "LeakyBucket",
    "LimitsUpdate",
    "OperatingBudget",
    "create_app",
    "serve",
]
