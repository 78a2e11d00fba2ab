"""A feature whose optional extra is missing says which one to install, in one line (no ImportError trace).

The missing package is simulated by ``sys.modules[name] = None``, which makes ``import name`` fail exactly as
it does when the package is not installed.
"""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from bitrix_worker.cli import app
from bitrix_worker.errors import BitrixWorkerError, MissingExtra
from bitrix_worker.extras import require
from bitrix_worker.mapping import MappingStore


def test_require_returns_the_module_when_installed() -> None:
    assert require("json", extra="x", feature="y") is sys.modules["json"]


def test_require_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    with pytest.raises(MissingExtra) as caught:
        require("asyncpg", extra="postgres", feature="a PostgreSQL mapping store")
    assert isinstance(caught.value, BitrixWorkerError)
    assert str(caught.value) == (
        "a PostgreSQL mapping store needs the [postgres] extra: pip install 'bitrix-worker[postgres]'"
    )


async def test_postgres_mapping_store_without_asyncpg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    with pytest.raises(MissingExtra, match=r"pip install 'bitrix-worker\[postgres\]'"):
        await MappingStore.connect("postgresql://root@127.0.0.1:5432/test")


def test_demo_without_fakeredis_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fakeredis", None)
    result = CliRunner().invoke(app, ["demo", "--backend", "fakeredis", "--orders", "10"])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        "error: `bitrix-worker demo` needs the [demo] extra: pip install 'bitrix-worker[demo]'"
    ]
    assert "Traceback" not in result.output
