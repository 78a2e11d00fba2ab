"""Pure classification of Bitrix24 outcomes: (HTTP status, body, headers | transport error) -> Classification.

Lookup order (the order of b24pysdk's ``parse_response``, but returning values instead of raising):

1. the JSON ``error`` code, case-insensitive (``_BY_CODE``, then the ``CRM_FIELD_ERROR_*`` and
   ``*_DYNAMIC_ITEM_RESTRICTED`` families; ``ERROR_CORE`` depends on the status: 5xx ambiguous, else data);
2. for an empty code, the ``error_description`` (``"Not found"``, ``"Access denied."``, the list failure);
   any other empty-code description with HTTP 400 is ``invalid_data``;
3. the HTTP status (``_BY_STATUS``: 3xx redirect, 401/403/404/410 auth, 429, 5xx ...);
4. default: ``server_error`` / ``ambiguous``. Unrecognised codes are retried and kept in ``bitrix_code``.

Decisions where the sources conflict (see docs/errors.md, "How an answer is classified"):

* Auth codes are classified by code whatever the status (401 in the core, 403 in the docs, 500/410 for
  ``PORTAL_DELETED``). They are refused before the method runs: ``not_executed``.
* ``""`` + ``"Access denied."`` (a CRM permission problem, HTTP 400) is ``auth``, like ``ACCESS_DENIED``: the
  webhook owner's permissions are configuration, and the breaker must stop the backlog from draining into the
  dead-letter stream.
* A bare 429 (no Bitrix code) is ``method_limited`` as in b24pysdk/b24jssdk; a bare 503 is ``server_error``
  ``not_executed`` (gateway/maintenance refusal); bare 500/502/504 and HTML bodies are ``ambiguous``.
* Inside a batch, a command's ``server_error`` is ``ambiguous`` (a create may have been saved before a later
  handler failed); limit/auth codes and batch-structure codes are ``not_executed``; the rest ``executed``.

No I/O happens here; every description is redacted and truncated to ``DESCRIPTION_MAX_CHARS``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

from .defaults import DESCRIPTION_MAX_CHARS
from .redaction import redact
from .taxonomy import Classification, ErrorClass, Execution, TimeInfo

__all__ = [
    "classify_command_error",
    "classify_response",
    "classify_transport",
    "decode_answer",
    "parse_time",
]

_C = ErrorClass
_X = Execution
_Rule = tuple[ErrorClass, Execution]

CODE_MAX_CHARS: Final = 100

_AUTH: Final[_Rule] = (_C.AUTH, _X.NOT_EXECUTED)
_DATA: Final[_Rule] = (_C.INVALID_DATA, _X.EXECUTED)
_SERVER_AMBIGUOUS: Final[_Rule] = (_C.SERVER_ERROR, _X.AMBIGUOUS)
_DEFAULT: Final[_Rule] = _SERVER_AMBIGUOUS

# Keys are upper-cased: codes are matched case-insensitively.
_BY_CODE: Final[dict[str, _Rule]] = {
    # limits: refused before the method ran
    "QUERY_LIMIT_EXCEEDED": (_C.RATE_LIMITED, _X.NOT_EXECUTED),
    "OPERATION_TIME_LIMIT": (_C.METHOD_LIMITED, _X.NOT_EXECUTED),
    "OVERLOAD_LIMIT": (_C.BLOCKED, _X.NOT_EXECUTED),
    # server-side failures: may have run
    "INTERNAL_SERVER_ERROR": _SERVER_AMBIGUOUS,
    "ERROR_UNEXPECTED_ANSWER": _SERVER_AMBIGUOUS,
    # invalid data: Bitrix24 answered, retrying the same data cannot help
    "ERROR_ARGUMENT": _DATA,
    "WRONG_ENCODING": _DATA,
    "INVALID_ARG_VALUE": _DATA,
    "100": _DATA,
    "INTERNAL_WRONG_TRANSPORT": (_C.INVALID_DATA, _X.NOT_EXECUTED),
    "INTERNAL_WRONG_HANDLER_CLASS": (_C.INVALID_DATA, _X.NOT_EXECUTED),
    "ERROR_BATCH_LENGTH_EXCEEDED": (_C.INVALID_DATA, _X.NOT_EXECUTED),
    "ERROR_BATCH_METHOD_NOT_ALLOWED": (_C.INVALID_DATA, _X.NOT_EXECUTED),
    # not found
    "NOT_FOUND": (_C.NOT_FOUND, _X.EXECUTED),
    # auth / configuration: refused before the method ran
    "ERROR_METHOD_NOT_FOUND": _AUTH,
    "NO_AUTH_FOUND": _AUTH,
    "INVALID_CREDENTIALS": _AUTH,
    "INSUFFICIENT_SCOPE": _AUTH,
    "AUTHORIZATION_ERROR": _AUTH,
    "ACCESS_DENIED": _AUTH,
    "ACCESS_ERROR": _AUTH,
    "INVALID_REQUEST": _AUTH,
    "PORTAL_DELETED": _AUTH,
    "ALLOWED_ONLY_INTRANET_USER": _AUTH,
    # OAuth-app and OAuth-server codes (not expected from a webhook; still configuration)
    "EXPIRED_TOKEN": _AUTH,
    "INVALID_TOKEN": _AUTH,
    "USER_ACCESS_ERROR": _AUTH,
    "APPLICATION_NOT_FOUND": _AUTH,
    "ERROR_OAUTH": _AUTH,
    "PAYMENT_REQUIRED": _AUTH,
    "METHOD_CONFIRM_WAITING": _AUTH,
    "METHOD_CONFIRM_DENIED": _AUTH,
    "WRONG_AUTH_TYPE": _AUTH,
    "WRONG_CLIENT": _AUTH,
    "INVALID_CLIENT": _AUTH,
    "INVALID_GRANT": _AUTH,
    "INVALID_SCOPE": _AUTH,
    "ERROR_MANIFEST_IS_NOT_AVAILABLE": _AUTH,
}

_DATA_PREFIXES: Final = ("CRM_FIELD_ERROR_",)
_DATA_SUFFIXES: Final = ("_DYNAMIC_ITEM_RESTRICTED",)

# Empty-code descriptions, normalised (lower case, collapsed spaces, no trailing dot).
_BY_DESCRIPTION: Final[dict[str, _Rule]] = {
    "not found": (_C.NOT_FOUND, _X.EXECUTED),
    "item not found": (_C.NOT_FOUND, _X.EXECUTED),
    "element not found": (_C.NOT_FOUND, _X.EXECUTED),
    "access denied": _AUTH,
    "failed to get list. general error": (_C.SERVER_ERROR, _X.EXECUTED),
}

_REDIRECT: Final = frozenset({301, 302, 303, 307, 308})
_BY_STATUS: Final[dict[int, _Rule]] = {
    400: _DATA,
    401: _AUTH,
    403: _AUTH,
    404: _AUTH,  # a wrong webhook path; Bitrix24 never answers 404 for a missing entity
    405: _AUTH,
    408: (_C.SERVER_ERROR, _X.NOT_EXECUTED),
    410: _AUTH,  # b24pysdk: portal deleted
    413: _DATA,
    414: _DATA,
    422: _DATA,
    429: (_C.METHOD_LIMITED, _X.NOT_EXECUTED),
    500: _SERVER_AMBIGUOUS,
    502: _SERVER_AMBIGUOUS,
    503: (_C.SERVER_ERROR, _X.NOT_EXECUTED),
    504: _SERVER_AMBIGUOUS,
}

_WS = re.compile(r"\s+")
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")


def _clean(text: str, secrets: Iterable[str], limit: int = DESCRIPTION_MAX_CHARS) -> str:
    """Redact first (so a cut cannot expose part of a secret), then collapse whitespace and truncate."""
    text = _WS.sub(" ", redact(text, secrets)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _code_text(value: Any) -> str:
    """The raw ``error`` value as text; ``None`` and missing are the empty code."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    try:
        return json.dumps(value, ensure_ascii=False, default=repr)
    except ValueError:  # e.g. nested structures json cannot serialise
        return repr(value)


def _description_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return _code_text(value)


def _normalise_description(text: str) -> str:
    text = _WS.sub(" ", _TAG.sub(" ", text)).strip().lower()
    return text.rstrip(".!").strip()


def _rule_for_code(code: str, status: int | None) -> _Rule | None:
    key = code.upper()
    if key == "ERROR_CORE":
        return _SERVER_AMBIGUOUS if status is not None and status >= 500 else _DATA
    rule = _BY_CODE.get(key)
    if rule is not None:
        return rule
    if key.startswith(_DATA_PREFIXES) or key.endswith(_DATA_SUFFIXES):
        return _DATA
    return None


def _rule_for_status(status: int) -> _Rule | None:
    if status in _REDIRECT:
        return _AUTH  # portal moved (domain change) or licence redirect: fix the URL
    rule = _BY_STATUS.get(status)
    if rule is None and 500 <= status <= 599:
        return _SERVER_AMBIGUOUS
    return rule


def _rule_for_error(code: str, description: str, status: int | None) -> _Rule | None:
    """Steps 1 and 2 of the lookup: code, then description for the empty code."""
    if code:
        return _rule_for_code(code, status)
    rule = _BY_DESCRIPTION.get(_normalise_description(description))
    if rule is not None:
        return rule
    if status == 400:
        return _DATA
    return None


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Delta-seconds ``Retry-After`` (case-insensitive name); HTTP-dates are ignored (no clock here)."""
    if not headers:
        return None
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                seconds = float(str(value).strip())
            except ValueError:
                return None
            return seconds if math.isfinite(seconds) and seconds >= 0 else None
    return None


def _non_json_description(body: bytes, secrets: Iterable[str]) -> str:
    if not body.strip():
        return "empty body"
    match = _TITLE.search(body[:4096])
    snippet = match.group(1) if match else body[:400]
    text = _TAG.sub(" ", snippet.decode("utf-8", errors="replace"))
    return _clean(f"non-JSON body ({len(body)} bytes): {text}", secrets)


_DIGIT_RUNS: Final = bytes(48 if 48 <= b <= 57 else b if b == 46 else 32 for b in range(256))
"""``bytes.translate`` table: a digit becomes ``0``, a decimal point stays, anything else is a space."""
_LONG_RUN: Final = b"0" * 19


def _long_integer(body: bytes) -> bool:
    """Does the body hold 19 digits in a row that do not follow a decimal point: an integer that may not fit
    64 bits, which orjson reads as a float (json: an int)?

    A fraction's digits are left out: every answer's ``time`` block carries floats such as
    ``0.00020575523376464844`` (shortest repr: up to 17 significant digits after the zeros), which both
    read as the same float; counting them sent most answers to the ~5x slower ``json``. A translate and a
    substring search, not a regex: a regex scan of a 15 KB batch answer (mostly digits) cost more than
    orjson's decoding of it. The leftmost 19 zeros always start a run, so only that run's preceding byte
    needs a look; a later hit inside the same run (after a ``0``) is skipped."""
    runs = body.translate(_DIGIT_RUNS)
    at = runs.find(_LONG_RUN)
    while at >= 0:
        if at == 0 or runs[at - 1] == 32:  # after a non-digit other than ".": an integer (or an exponent)
            return True
        at = runs.find(_LONG_RUN, at + len(_LONG_RUN))
    return False


def decode_answer(body: bytes) -> tuple[bool, Any]:
    """(True, the JSON value) or (False, None) when the body is not JSON: decoded once per answer, for
    ``classify_response`` and for the caller that reads the result (a 50-command batch answer is ~13 KB)."""
    if not _long_integer(body):
        try:
            return True, orjson.loads(body)  # ~3x faster; it reads these bodies to the same values
        except ValueError:
            pass  # not UTF-8 JSON orjson takes (NaN, 1e400, a lone surrogate, UTF-16, depth): json decides
    try:
        return True, json.loads(body)
    except (ValueError, RecursionError):
        return False, None


def classify_response(
    status: int,
    body: bytes,
    *,
    headers: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
    decoded: tuple[bool, Any] | None = None,
) -> Classification | None:
    """Classify one HTTP answer; ``None`` means success (2xx JSON object without ``error``).

    ``decoded``: ``decode_answer(body)`` when the caller already has it."""
    ok, data = decoded if decoded is not None else decode_answer(body)
    is_object = ok and isinstance(data, dict)
    if 200 <= status <= 299 and is_object and data.get("error") is None and "error_description" not in data:
        return None  # before the headers are read: only a failure has a use for Retry-After
    secrets = tuple(secrets)
    retry_after = _retry_after(headers)

    code = description = ""
    rule: _Rule | None = None
    if is_object and ("error" in data or "error_description" in data):
        code = _code_text(data.get("error"))
        description = _description_text(data.get("error_description"))
        rule = _rule_for_error(code, description, status)
    elif not is_object:
        description = _non_json_description(body, secrets) if not ok else "unexpected JSON answer"
        if 200 <= status <= 299:
            rule = (_C.SERVER_ERROR, _X.AMBIGUOUS)  # ERROR_UNEXPECTED_ANSWER-like: it may have run
    else:
        description = "error answer without an error code"
    if rule is None:
        rule = _rule_for_status(status) or _DEFAULT
    return Classification(
        error_class=rule[0],
        execution=rule[1],
        http_status=status,
        bitrix_code=_clean(code, secrets, CODE_MAX_CHARS) or None,
        description=_clean(description, secrets),
        retry_after_s=retry_after,
    )


def classify_command_error(error: Mapping[str, Any], *, secrets: Iterable[str] = ()) -> Classification:
    """Classify one batch command's ``result_error`` entry (no per-command HTTP status exists)."""
    secrets = tuple(secrets)
    if not isinstance(error, Mapping):
        return Classification(
            _C.SERVER_ERROR, _X.AMBIGUOUS, description=_clean(f"malformed command error: {error!r}", secrets)
        )
    code = _code_text(error.get("error"))
    description = _description_text(error.get("error_description"))
    rule = _rule_for_error(code, description, None)
    if rule is None:
        # An empty code inside a batch is a crm.* RestException (nominally 400); an unknown code is retried.
        rule = _DATA if not code else _DEFAULT
    error_class, execution = rule
    return Classification(
        error_class=error_class,
        execution=execution,
        http_status=None,
        bitrix_code=_clean(code, secrets, CODE_MAX_CHARS) or None,
        description=_clean(description, secrets),
    )


def classify_transport(exc: BaseException, *, sent: bool, secrets: Iterable[str] = ()) -> Classification:
    """A failure below HTTP: ``sent=False`` (connect/DNS/pool) is not executed, otherwise ambiguous."""
    message = str(exc)
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return Classification(
        error_class=_C.NETWORK,
        execution=_X.AMBIGUOUS if sent else _X.NOT_EXECUTED,
        description=_clean(text, tuple(secrets)),
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return result if math.isfinite(result) else None


def parse_time(block: Any) -> TimeInfo | None:
    """The ``time`` block of an answer (or a batch command's ``result_time`` entry); None if absent."""
    if not isinstance(block, Mapping):
        return None
    info = TimeInfo(
        operating=_number(block.get("operating")),
        operating_reset_at=_number(block.get("operating_reset_at")),
        duration=_number(block.get("duration")),
        processing=_number(block.get("processing")),
    )
    if info == TimeInfo():
        return None
    return info
