"""PHP-style nested query strings, as Bitrix24 reads them (``http_build_query`` / ``parse_str``).

Batch commands carry their parameters as ``"method?fields[TITLE]=x&fields[UF_A][0]=1&id=5"``, so the
client needs an encoder and the emulator a parser that agree with PHP:

- ``True`` -> ``1``, ``False`` -> ``0``, ``None`` and empty lists/dicts are omitted (as PHP omits them);
- lists are indexed ``a[0]``, ``a[1]``; dicts nest as ``a[b][c]``;
- keys and values are ``urlencode``-d with ``+`` for spaces; structural brackets stay readable.

The parser returns strings for every scalar (PHP has no types in a query string); a nested mapping whose
keys are exactly ``0..n-1`` comes back as a list, and ``a[]=x`` appends.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote_plus, unquote_plus

__all__ = ["encode_query", "parse_query"]

_UNCHANGED = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch
"""Text ``quote_plus`` returns as it is (its always-safe characters): most names and values of a command."""


def _quote(text: str) -> str:
    if text.isalnum() and text.isascii():  # most names and values: ~3x cheaper than the regex
        return text
    return text if _UNCHANGED(text) else quote_plus(text)


def _text(key: Any) -> str:
    return key if type(key) is str else str(key)


def _scalar(value: Any) -> str:
    if value is True:
        return "1"
    if value is False:
        return "0"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _flatten(prefix: str, value: Any, out: list[str]) -> None:
    """The common types first, by exact type (no ABC checks): 50 commands of a batch pass through here."""
    kind = type(value)
    if kind is str:
        out.append(f"{prefix}={_quote(value)}")
    elif kind is int:  # digits and a sign, never quoted (a bool is not exactly an int: it goes to _scalar)
        out.append(f"{prefix}={value}")
    elif value is None:
        return
    elif kind is dict or isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}[{_quote(_text(key))}]", item, out)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _flatten(f"{prefix}[{index}]", item, out)
    else:
        out.append(f"{prefix}={_quote(_scalar(value))}")


def encode_query(params: Mapping[str, Any]) -> str:
    """Encode nested params like PHP ``http_build_query`` (brackets left unescaped for readability)."""
    out: list[str] = []
    for key, value in params.items():
        _flatten(_quote(_text(key)), value, out)
    return "&".join(out)


def _split_key(key: str) -> tuple[str, list[str]] | None:
    """``a[b][]`` -> ("a", ["b", ""]); None when the key has no usable base name."""
    open_at = key.find("[")
    if open_at <= 0:
        return (key, []) if key and open_at < 0 else None
    base, rest, parts = key[:open_at], key[open_at:], []
    while rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            break
        parts.append(rest[1:close])
        rest = rest[close + 1 :]
    return base, parts


def _next_index(node: dict[str, Any]) -> str:
    """PHP appends ``a[]`` at one past the largest integer key."""
    ints = [int(k) for k in node if k.isdigit()]
    return str(max(ints) + 1 if ints else 0)


def _listify(node: Any) -> Any:
    if isinstance(node, dict):
        for k, v in node.items():
            node[k] = _listify(v)
        if node and all(k == str(i) for i, k in enumerate(node)):
            return list(node.values())
    return node


def parse_query(qs: str) -> dict[str, Any]:
    """Parse a PHP-style query string into nested dicts/lists of strings (like PHP ``parse_str``)."""
    root: dict[str, Any] = {}
    for pair in qs.split("&"):
        if not pair:
            continue
        raw_key, _, raw_value = pair.partition("=")
        split = _split_key(unquote_plus(raw_key))
        if split is None:
            continue
        base, parts = split
        value = unquote_plus(raw_value)
        node, key = root, base
        for part in parts:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
            key = part if part != "" else _next_index(node)
        node[key] = value
    return {k: _listify(v) for k, v in root.items()}
