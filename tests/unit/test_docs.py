"""Keep what the README documents true: every setting is in its table, and only real settings are."""

from __future__ import annotations

import re
from pathlib import Path

import bitrix_worker
from bitrix_worker.config import Settings, env_name

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_lists_every_setting_and_only_real_ones() -> None:
    text = README.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", text, flags=re.MULTILINE))
    actual = {env_name(name) for name in Settings.model_fields}
    assert documented == actual


def test_readme_defaults_match_the_code() -> None:
    text = README.read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| `([^`]*)` \|", text, flags=re.MULTILINE))
    for name, field in Settings.model_fields.items():
        env = env_name(name)
        if env not in rows or field.default_factory is not None or field.default is None:
            continue
        default = field.default
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        assert rows[env] == shown, env


def test_public_api_is_pinned() -> None:
    assert sorted(bitrix_worker.__all__) == sorted(
        [
            "AuthError", "BitrixError", "BitrixWorkerError", "Classification", "ConfigError", "Entity",
            "ErrorClass", "Execution", "LimitError", "NotReplicated", "OpKind", "Operation",
            "PermanentBitrixError", "PoisonMessage", "Settings", "StoreError", "TimeInfo",
            "TransientBitrixError", "__version__",
            "build_operation", "decode_payload", "encode_operation", "enqueue", "enqueue_many",
            "enqueue_many_sync", "enqueue_sync", "load_settings", "lookup", "lookup_sync",
        ]
    )  # fmt: skip
    for name in bitrix_worker.__all__:
        assert hasattr(bitrix_worker, name)


def test_importing_the_package_does_not_load_redis() -> None:
    """The producers are exported lazily: pure modules (plan, operations) must not pull in redis-py."""
    import subprocess
    import sys

    code = (
        "import sys, bitrix_worker, bitrix_worker.plan; from bitrix_worker import Operation; "
        "assert 'redis' not in sys.modules, 'redis loaded'; "
        "from bitrix_worker import enqueue_sync, enqueue; assert 'redis' in sys.modules; "
        "assert enqueue_sync.__module__ == 'bitrix_worker.sync_producer'; "
        "assert 'enqueue_sync' in dir(bitrix_worker)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
