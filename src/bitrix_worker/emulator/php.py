"""The few PHP conversions whose quirks reach a REST client, so the emulator makes the same mistakes.

Bitrix24's old ``crm.*`` proxies read ids with ``(int)$value``, and the batch engine turns numbers into
strings before splicing them into a longer parameter. Both matter to a client: after a failed batch command,
a ``$result[...]`` reference can hand an *array* to ``crm.deal.productrows.set?id=...``, and PHP casts a
non-empty array to ``1`` — the emulator must target deal 1 then, exactly as a portal would, so a test can
prove the worker never builds such a chain.
"""

from __future__ import annotations

import math
import re
from typing import Any

_NUMERIC = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")
_LEADING = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def php_int(value: Any) -> int:  # noqa: PLR0911 - one return per PHP type rule
    """PHP 8 ``(int)$value``: arrays give 0 when empty and 1 otherwise; strings use their numeric prefix."""
    if isinstance(value, str) and value.isdigit():  # the common case, first: every id of every call
        return int(value)
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) else 0
    if isinstance(value, list | tuple | dict):
        return 1 if value else 0
    match = _LEADING.match(str(value))
    if match is None:
        return 0
    number = float(match.group(0))
    return int(number) if math.isfinite(number) else 0


def is_numeric(value: Any) -> bool:
    """PHP ``is_numeric``: ints, floats and numeric strings (booleans are not numeric)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return isinstance(value, str) and _NUMERIC.match(value) is not None


def php_string(value: Any) -> str:
    """PHP ``(string)`` of a scalar: ``1.0`` -> ``"1"``, ``True`` -> ``"1"``, ``None``/``False`` -> ``""``."""
    if value is None or value is False:
        return ""
    if value is True:
        return "1"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    return str(value)


def is_set(container: Any, key: str) -> tuple[bool, Any]:
    """PHP ``isset($container[$key])`` and the value: a null value counts as not set, and a string can be
    indexed by a digit key (``"abc"[1]`` is ``"b"``)."""
    if isinstance(container, dict):
        value = container.get(key)
        if value is None and key.lstrip("-").isdigit():
            value = container.get(int(key))
        return value is not None, value
    if isinstance(container, list) and key.isdigit() and int(key) < len(container):
        value = container[int(key)]
        return value is not None, value
    if isinstance(container, str) and key.isdigit() and int(key) < len(container):
        return True, container[int(key)]
    return False, None
