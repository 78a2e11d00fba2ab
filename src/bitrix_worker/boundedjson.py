"""Pure: JSON read from a stream entry with limits, so no input can raise ``RecursionError`` or take
unbounded memory and time, and every string in it is valid Unicode.

Python's ``json`` recurses once per nesting level: a payload nested ~1,000 levels deep raises
``RecursionError`` (not ``ValueError``), and one that decodes can still exhaust the stack later, in the
query-string encoder or the model dump. It also accepts what the portal cannot take: ``NaN``/``Infinity``,
``1e400`` (read as infinity) and a ``\\ud800`` escape without its pair (a lone UTF-16 surrogate, which
JavaScript emits for a truncated emoji and which no UTF-8 encoder accepts). Here all of those are refused up
front with a reason a producer can act on.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

MAX_DEPTH = 32
"""Nesting levels of arrays and objects, the payload object itself being the first."""

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


class UnreadableJson(ValueError):
    """The text is not JSON the worker accepts; ``str(exc)`` is the reason, without the input."""


def loads(raw: str | bytes, *, max_bytes: int, max_depth: int = MAX_DEPTH, what: str = "payload") -> Any:
    """Parse ``raw`` within ``max_bytes`` (UTF-8) and ``max_depth``; every failure is ``UnreadableJson``.

    Every payload passes here, so the checks that walk the text or the value run only when they can find
    something: the depth scan when there are more brackets than levels allowed, the walk for lone
    surrogates and non-finite numbers when the text has a ``\\u`` escape or a surrogate of its own, or a
    number was read as infinite.
    """
    surrogates = False
    if isinstance(raw, bytes):
        size = len(raw)
    else:
        try:
            size = len(raw.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate in the text itself
            size, surrogates = len(raw.encode("utf-8", errors="surrogatepass")), True
    if size > max_bytes:
        raise UnreadableJson(f"{what} is {size} bytes, more than the {max_bytes} allowed")
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw  # strict: no surrogate comes from bytes
    except UnicodeDecodeError as exc:
        raise UnreadableJson(f"{what} is not UTF-8: {exc.reason} at byte {exc.start}") from None
    if text.count("[") + text.count("{") > max_depth and _depth(text) > max_depth:
        raise UnreadableJson(f"{what} is nested more than {max_depth} levels deep")
    walk = surrogates or "\\u" in text
    # without a surrogate in it, ``text`` encodes
    value = _REFUSED if walk else _plain(raw if isinstance(raw, bytes) else text.encode("utf-8"))
    if value is not _REFUSED:
        return value
    try:
        if text.startswith("\ufeff"):  # as json.loads says it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        try:
            value = _DECODER.decode(text)
        except _Infinite:  # read again keeping the infinity, for the walk to say where it is
            value, walk = json.loads(text, parse_constant=_no_constant), True
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise UnreadableJson(f"{what} is not JSON: {exc.msg} at {where}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer beyond Python's digit limit
        raise UnreadableJson(f"{what} is not JSON: {str(exc)[:120]}") from None
    problem = _invalid(value) if walk else None
    if problem:
        raise UnreadableJson(f"{what}: {problem}")
    return value


class _Infinite(Exception):  # a signal inside loads, never raised out of it
    """A number too large to be finite (``1e400``) was read."""


def _finite_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise _Infinite
    return number


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)
"""One decoder for every call (configured once, never changed): ``json.loads`` with these arguments
builds a new one per payload."""


_REFUSED = object()
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19
"""An integer of 19 digits or more may not fit in 64 bits, which orjson reads as a float (``json``: exact)."""


def _plain(data: bytes) -> Any:
    """``data`` (UTF-8) read by orjson, or ``_REFUSED`` when it must take the ``json`` path.

    Why: ``json`` took about 2 µs of the ~7 µs it took to read a payload; orjson reads it in 0.4. It gives
    the same value for every text it accepts, but for an integer beyond 64 bits (a float), so a text with
    a run of 19 digits goes to ``json`` (found by ``bytes.translate``: a regular expression costs as much
    as the parse); everything orjson refuses (a lone surrogate, ``NaN``, ``1e400``, a BOM, malformed
    text) does too, where the refusal is worded as before (tests/unit/test_boundedjson.py compares the two
    on generated texts)."""
    if _LONG_NUMBER in data.translate(_DIGITS_AS_ZERO):
        return _REFUSED
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _REFUSED


def _depth(text: str) -> int:
    """The deepest nesting of brackets outside strings (an upper bound for malformed text)."""
    if text.count("[") + text.count("{") <= 1:
        return text.count("[") + text.count("{")
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _invalid(value: Any) -> str | None:
    """The first lone surrogate or non-finite number, with where it is (iterative: depth is bounded, but
    this must not rely on it)."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, dict):
            for name, child in item.items():
                if _lone_surrogate(name):
                    inside = where or "the object"
                    return f"a name in {inside} holds a lone UTF-16 surrogate: not valid Unicode"
                stack.append((child, _short(f"{where}.{name}" if where else name)))
        elif isinstance(item, list):
            stack.extend((child, _short(f"{where}[{i}]")) for i, child in enumerate(item))
        elif isinstance(item, str) and _lone_surrogate(item):
            return f"{where or 'a string'} holds a lone UTF-16 surrogate (half an emoji?): not valid Unicode"
        elif isinstance(item, float) and not math.isfinite(item):
            return f"{where or 'a number'} is out of range (read as {item})"
    return None


def _short(where: str) -> str:
    return where if len(where) <= 80 else where[:77] + "..."


def _lone_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
