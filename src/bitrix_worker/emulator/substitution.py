"""``batch`` references (``$result[cmd][field]``) resolved the way the portal's batch engine does it.

Every parameter value of a command (after ``parse_str``) is searched for ``$result``, ``$next``, ``$total``,
``$time`` or ``$error`` followed by non-space text; the ``[key]`` segments of that text walk the results of
the commands that ran before. The walk stops at the first missing (or null) key and keeps the last value it
reached — so a reference to a command that *failed* (it has no entry under ``result``) yields the whole map
of earlier successful results, or an empty one. A reference that is the whole value is replaced by what the
walk found, with its type (a number, an array...); one embedded in a longer string is replaced only by a
string or number (numbers become strings) and otherwise stays as literal text. Parameter names are not
searched here (the portal does, with no usable effect).

This is the trap the worker must never fall into: ``crm.deal.productrows.set?id=$result[add_deal]`` after
a failed ``add_deal`` in a ``halt=0`` batch sends an array as ``id``, which the old API casts to ``1``.
"""

from __future__ import annotations

import re
from typing import Any

from .php import is_numeric, is_set, php_string

SECTIONS = ("result", "next", "total", "time", "error")
_REFERENCE = re.compile(r"\$(" + "|".join(SECTIONS) + r")([^\s]*)", re.IGNORECASE)
_SEGMENT = re.compile(r"\[([^\]]+)\]")


def substitute(params: Any, sections: dict[str, dict[str, Any]]) -> Any:
    """Resolve references in every string value of ``params`` (nested dicts/lists), given the results so
    far: ``sections`` maps ``result``/``next``/``total``/``time``/``error`` to ``{command: value}``."""
    if isinstance(params, dict):
        return {key: substitute(value, sections) for key, value in params.items()}
    if isinstance(params, list):
        return [substitute(value, sections) for value in params]
    if isinstance(params, str) and "$" in params:
        return _element(params, sections)
    return params


def _walk(section: Any, path: str) -> Any:
    value = section
    for key in _SEGMENT.findall(path):
        present, inner = is_set(value, key)
        if not present:
            break
        value = inner
    return value


def _element(query: str, sections: dict[str, dict[str, Any]]) -> Any:
    result: Any = query
    for match in _REFERENCE.finditer(query):
        path = match.group(2)
        if not _SEGMENT.search(path):
            continue  # no [key] at all: the portal leaves the text alone
        # PHP looks the section up by the text as written, so ``$RESULT[...]`` finds nothing (null).
        found = _walk(sections.get(match.group(1)), path)
        if match.group(0) == query:
            result = found
        elif isinstance(result, str):
            if is_numeric(found):
                found = php_string(found)
            if isinstance(found, str):
                result = result.replace(match.group(0), found)
    return result
