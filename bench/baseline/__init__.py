"""The mapping store as it was before the statement cache, for side-by-side cost measurements only.

The baseline is the worker as of commit 37ab23b (the last commit before issue 14's cost work) where it
differs in cost: ``mapping_37ab23b.py`` is ``src/bitrix_worker/mapping.py`` byte for byte as of that commit
(Core statements built and compiled for every batch, reads by ``(entity, key) IN (VALUES ...)``, every
cursor call a hop to aiosqlite's thread), and redis-py parses replies in pure Python, as it did before
``hiredis`` became a dependency. ``bench.cost`` starts one worker process with this installed and one
without, against the same emulator, stream and database, so the ratio between them is measured in one run
on one machine state.

    python -c "from bench.baseline import install; install(); from bitrix_worker.cli import main; main()" run

Nothing else of the worker is replaced: every other module is the current one.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

FROZEN = Path(__file__).with_name("mapping_37ab23b.py")
SOURCE_COMMIT = "37ab23b"


def install() -> None:
    """Load the frozen module as ``bitrix_worker.mapping`` before anything imports the current one, and
    hide ``hiredis`` from redis-py (it picks its parser when first imported)."""
    if "redis" in sys.modules:
        raise RuntimeError("redis was imported before the baseline could hide hiredis")
    sys.modules["hiredis"] = None  # type: ignore[assignment]  # "import hiredis" now raises ImportError
    import bitrix_worker

    if "bitrix_worker.mapping" in sys.modules:
        raise RuntimeError("bitrix_worker.mapping was imported before the baseline could replace it")
    spec = importlib.util.spec_from_file_location("bitrix_worker.mapping", FROZEN)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {FROZEN}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bitrix_worker.mapping"] = module
    spec.loader.exec_module(module)
    from .shim import identity

    module.MappingStore.identity = identity  # called once at start, not on the measured path
    bitrix_worker.mapping = module  # type: ignore[attr-defined]
